"""Classification metrics as pure functions on numpy arrays.

Layered as in clean-fid: small functions (``confusion_counts``, ``per_class_prf``,
``expected_calibration_error``) under one summary (``classification_metrics``) that train_oracle.py
and evaluate.py (RCA) both call. No torch, no sklearn here: the tests check these against sklearn.
"""

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits))


def cross_entropy(y_true: np.ndarray, logits: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class (no label smoothing: the test loss of Table 1)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    return float(-log_softmax(logits)[np.arange(len(y_true)), y_true].mean())


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``C[i, j]`` = number of samples of true class ``i`` predicted as ``j`` (rows: truth)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def normalise_rows(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its support (recall on the diagonal); rows without samples stay zero."""
    counts = np.asarray(counts, dtype=np.float64)
    support = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, support, out=np.zeros_like(counts), where=support > 0)


def per_class_prf(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix.

    A ratio with a zero denominator is 0, as sklearn's ``zero_division=0``.
    """
    counts = np.asarray(counts, dtype=np.float64)
    tp = np.diag(counts)
    predicted = counts.sum(axis=0)
    support = counts.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def expected_calibration_error(confidences: np.ndarray, correct: np.ndarray, num_bins: int = 15) -> float:
    """ECE of Guo et al. (2017), eq. 3: ``sum_b |B_b|/n * |acc(B_b) - conf(B_b)|``.

    ``confidences`` is the top-class probability, ``correct`` whether that class is the true one. Bins
    are equal-width on (0, 1], each bin ``(lo, hi]`` (a confidence of exactly 0 joins the first bin).
    """
    confidences = np.asarray(confidences, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if confidences.size == 0:
        return 0.0
    # ceil(conf * B) - 1 puts conf in (b/B, (b+1)/B] into bin b
    bins = np.clip(np.ceil(confidences * num_bins).astype(np.int64) - 1, 0, num_bins - 1)
    count = np.bincount(bins, minlength=num_bins)
    conf_sum = np.bincount(bins, weights=confidences, minlength=num_bins)
    acc_sum = np.bincount(bins, weights=correct, minlength=num_bins)
    return float(np.abs(acc_sum - conf_sum).sum() / confidences.size)


def classification_metrics(y_true: np.ndarray, logits: np.ndarray, class_names: list[str],
                           ece_bins: int = 15) -> dict:
    """Everything the oracle reports on one split, JSON-ready (lists, floats, ints)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    logits = np.asarray(logits, dtype=np.float64)
    num_classes = len(class_names)
    probs = softmax(logits)
    y_pred = probs.argmax(axis=1)
    counts = confusion_counts(y_true, y_pred, num_classes)
    prf = per_class_prf(counts)
    support = prf["support"]
    weights = support / max(support.sum(), 1)
    per_class = {
        name: {"precision": float(prf["precision"][i]), "recall": float(prf["recall"][i]),
               "f1": float(prf["f1"][i]), "support": int(support[i])}
        for i, name in enumerate(class_names)
    }
    best, worst = int(np.argmax(prf["f1"])), int(np.argmin(prf["f1"]))
    return {
        "num_samples": int(len(y_true)),
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else 0.0,
        "loss": cross_entropy(y_true, logits) if len(y_true) else 0.0,
        "macro_f1": float(prf["f1"].mean()),
        "weighted_f1": float((prf["f1"] * weights).sum()),
        "ece": expected_calibration_error(probs.max(axis=1), y_pred == y_true, num_bins=ece_bins),
        "ece_bins": int(ece_bins),
        "best_class": {"name": class_names[best], "f1": float(prf["f1"][best])},
        "worst_class": {"name": class_names[worst], "f1": float(prf["f1"][worst])},
        "per_class": per_class,
        "class_names": list(class_names),
        "confusion_matrix": counts.tolist(),
        "confusion_matrix_normalised": normalise_rows(counts).tolist(),
    }
