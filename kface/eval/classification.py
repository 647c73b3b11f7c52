"""Classification metrics as pure functions on numpy arrays.

Layered as in clean-fid: small functions (``confusion_counts``, ``per_class_prf``,
``expected_calibration_error``) under one summary (``classification_metrics``) that train_oracle.py
and evaluate.py (RCA) both call. The confusion matrix and P/R/F1 are sklearn's, softmax scipy's; ECE is
written here because neither library has it (sklearn's ``calibration_curve`` bins differently and stops
short of the weighted gap).
"""

import numpy as np
from scipy.special import log_softmax, softmax

from ..utils.errors import InputError


def cross_entropy(y_true: np.ndarray, logits: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class (no label smoothing: the test loss of Table 1).

    From log-softmax rather than sklearn's ``log_loss``, which clips probabilities: a confident wrong answer
    (logit gap 100) then costs ~36 instead of ~100."""
    y_true = np.asarray(y_true, dtype=np.int64)
    return float(-log_softmax(np.asarray(logits, dtype=np.float64), axis=1)[np.arange(len(y_true)), y_true].mean())


def _check_labels(name: str, labels: np.ndarray, num_classes: int) -> None:
    # sklearn drops labels outside `labels=` silently; a label out of range is a caller's bug, not a sample to skip
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise InputError(f"{name}: labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}")


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``C[i, j]`` = number of samples of true class ``i`` predicted as ``j`` (rows: truth).

    sklearn's ``confusion_matrix`` over all ``num_classes`` labels; no samples give the all-zero matrix
    (sklearn refuses empty input)."""
    from sklearn.metrics import confusion_matrix

    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise InputError(f"y_true ({y_true.shape}) and y_pred ({y_pred.shape}) differ in length")
    _check_labels("y_true", y_true, num_classes)
    _check_labels("y_pred", y_pred, num_classes)
    if not y_true.size:
        return np.zeros((num_classes, num_classes), dtype=np.int64)
    return confusion_matrix(y_true, y_pred, labels=np.arange(num_classes)).astype(np.int64)


def normalise_rows(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its support (recall on the diagonal); rows without samples stay zero.

    sklearn's ``normalize="true"`` does this from labels; here it works on counts, also on a stack of
    bootstrap matrices (kface.eval.rca)."""
    counts = np.asarray(counts, dtype=np.float64)
    support = counts.sum(axis=-1, keepdims=True)
    return np.divide(counts, support, out=np.zeros_like(counts), where=support > 0)


def per_class_prf(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix.

    sklearn's ``precision_recall_fscore_support`` with ``zero_division=0`` (a ratio with a zero denominator is
    0). It takes labels, and RCA works on counts: each cell ``(i, j)`` becomes one (true ``i``, predicted
    ``j``) sample weighted by its count, which gives the same sums as the samples themselves."""
    from sklearn.metrics import precision_recall_fscore_support

    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise InputError(f"counts: a square confusion matrix is needed, got shape {counts.shape}")
    k = len(counts)
    if not counts.sum():  # sklearn needs one sample of positive weight; with none every ratio is 0
        zeros = np.zeros(k)
        return {"precision": zeros, "recall": zeros.copy(), "f1": zeros.copy(), "support": np.zeros(k, np.int64)}
    true, pred = np.divmod(np.arange(k * k), k)
    precision, recall, f1, _ = precision_recall_fscore_support(
        true, pred, labels=np.arange(k), sample_weight=counts.ravel(), zero_division=0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": counts.sum(axis=1)}


def expected_calibration_error(confidences: np.ndarray, correct: np.ndarray, *, num_bins: int = 15) -> float:
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
    conf_sum = np.bincount(bins, weights=confidences, minlength=num_bins)
    acc_sum = np.bincount(bins, weights=correct, minlength=num_bins)
    return float(np.abs(acc_sum - conf_sum).sum() / confidences.size)


def classification_metrics(y_true: np.ndarray, logits: np.ndarray, class_names: list[str], *,
                           ece_bins: int = 15) -> dict:
    """Everything the oracle reports on one split, JSON-ready (lists, floats, ints)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    logits = np.asarray(logits, dtype=np.float64)
    num_classes = len(class_names)
    probs = softmax(logits, axis=1)
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
        "num_samples": len(y_true),
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
