"""Relative Classification Accuracy (RCA) and the identity metrics around it, as pure numpy functions.

RCA (the paper's eq. 5) = Accuracy_gen / Accuracy_real: the oracle's accuracy on generated images (the
target is the class each image was conditioned on) over its accuracy on the real test split. Per class,
accuracy becomes recall (class-conditional accuracy), so class RCA = recall_gen / recall_real.

Balanced RCA = mean per-class recall on generated / mean per-class recall on real (balanced accuracy, as
scikit-learn's ``balanced_accuracy_score``, on each side). The two differ when the real test split is
imbalanced while the generated set has equal counts per class: recalls 0.9 on 100 real images and 0.5 on 10,
with the same recalls on 100 generated images each, give RCA (0.7 / 0.864) = 0.81 but balanced RCA 1.0.

Both evaluate.py and the HF ``evaluate`` module (metrics/relative_classification_accuracy) call
:func:`relative_classification_accuracy`; the confusion-matrix arithmetic is kface.eval.classification's.
"""

import warnings

import numpy as np

from ..utils.errors import InputError
from .classification import confusion_counts, normalise_rows, per_class_prf


def _ratio(num, den):
    """``num / den`` elementwise, NaN where ``den`` is 0 (an RCA against a zero baseline is undefined)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den > 0)


def accuracy_from_counts(counts: np.ndarray) -> np.ndarray:
    """Accuracy of one confusion matrix, or of a stack ``(..., K, K)`` of them."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum(axis=(-2, -1))
    return _ratio(np.trace(counts, axis1=-2, axis2=-1), total)


def recall_from_counts(counts: np.ndarray) -> np.ndarray:
    """Per-class recall of ``(..., K, K)`` confusion matrices (NaN for a class without samples)."""
    counts = np.asarray(counts, dtype=np.float64)
    return _ratio(np.diagonal(counts, axis1=-2, axis2=-1), counts.sum(axis=-1))


def balanced_accuracy(recalls: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Mean recall over the ``classes`` (bool mask over the last axis) of ``(..., K)`` recalls."""
    recalls = np.asarray(recalls, dtype=np.float64)
    if not classes.any():
        return np.full(recalls.shape[:-1], np.nan)
    return recalls[..., classes].mean(axis=-1)


def compared_classes(gen_counts: np.ndarray, real_counts: np.ndarray) -> np.ndarray:
    """Classes with images on both sides: the ones a balanced (class-averaged) ratio can average over."""
    return (np.asarray(gen_counts).sum(axis=-1) > 0) & (np.asarray(real_counts).sum(axis=-1) > 0)


def identity_loss(gen_counts: np.ndarray, real_counts: np.ndarray | None, class_names: list[str]) -> dict:
    """Per class: the label the oracle most often gives the class's generated images when it is wrong, the
    share of the class's generated images that get it, and the share of its real test images that get it.

    A generator that draws class ``c`` as its look-alike ``d`` shows as ``d`` with a generated share far above
    the real one. Ties go to the lower class id; a class with no wrong generated image has ``None``.
    """
    gen = np.asarray(gen_counts, dtype=np.int64)
    out = {}
    for c, name in enumerate(class_names):
        wrong = gen[c].copy()
        wrong[c] = 0
        if wrong.sum() == 0:
            out[name] = {"label": None, "share_gen": 0.0, "share_real": None}
            continue
        j = int(wrong.argmax())
        share_real = None
        if real_counts is not None and np.asarray(real_counts)[c].sum() > 0:
            share_real = float(np.asarray(real_counts)[c, j] / np.asarray(real_counts)[c].sum())
        out[name] = {"label": class_names[j], "share_gen": float(gen[c, j] / gen[c].sum()), "share_real": share_real}
    return out


def _json_float(x) -> float | None:
    x = float(x)
    return None if np.isnan(x) else x


def identity_metrics(gen_counts: np.ndarray, class_names: list[str], real_counts: np.ndarray | None = None,
                     real_accuracy: float | None = None) -> dict:
    """RCA, accuracies and per-class P/R/F1 (real and generated) and class RCA from confusion matrices.

    Give ``real_counts`` (the oracle on the real test split) or only ``real_accuracy`` (then class RCA,
    which needs per-class real recall, is absent). Undefined ratios (zero denominators) are ``None``.
    """
    if (real_counts is None) == (real_accuracy is None):
        raise ValueError("give exactly one of real_counts and real_accuracy")
    gen_counts = np.asarray(gen_counts, dtype=np.int64)
    gen_prf = per_class_prf(gen_counts)
    acc_gen = float(accuracy_from_counts(gen_counts))
    acc_real = float(real_accuracy) if real_counts is None else float(accuracy_from_counts(real_counts))
    out = {"rca": _json_float(_ratio(acc_gen, acc_real)), "accuracy_gen": acc_gen, "accuracy_real": acc_real,
           "num_gen": int(gen_counts.sum()), "class_names": list(class_names), "per_class": {}}
    real_prf = per_class_prf(real_counts) if real_counts is not None else None
    # a class without generated images (sample.py --classes) has no class RCA, rather than 0
    gen_recall = np.where(gen_prf["support"] > 0, gen_prf["recall"], np.nan)
    class_rca = _ratio(gen_recall, real_prf["recall"]) if real_prf is not None else None
    for i, name in enumerate(class_names):
        row = {"gen": {k: float(gen_prf[k][i]) for k in ("precision", "recall", "f1")}}
        row["gen"]["support"] = int(gen_prf["support"][i])
        if real_prf is not None:
            row["real"] = {k: float(real_prf[k][i]) for k in ("precision", "recall", "f1")}
            row["real"]["support"] = int(real_prf["support"][i])
            row["class_rca"] = _json_float(class_rca[i])
        out["per_class"][name] = row
    if real_prf is not None:
        both = compared_classes(gen_counts, real_counts)
        bal_gen = balanced_accuracy(gen_prf["recall"], both)
        bal_real = balanced_accuracy(real_prf["recall"], both)
        out.update({"balanced_rca": _json_float(_ratio(bal_gen, bal_real)), "balanced_accuracy_gen": _json_float(bal_gen),
                    "balanced_accuracy_real": _json_float(bal_real)})
    out["identity_loss"] = identity_loss(gen_counts, real_counts, out["class_names"])
    out["confusion_gen"] = gen_counts.tolist()
    out["confusion_gen_normalised"] = normalise_rows(gen_counts).tolist()
    if real_counts is not None:
        out["num_real"] = int(np.asarray(real_counts).sum())
        out["confusion_real"] = np.asarray(real_counts, dtype=np.int64).tolist()
        out["confusion_real_normalised"] = normalise_rows(real_counts).tolist()
    return out


def relative_classification_accuracy(predictions, references, class_names: list[str] | None = None,
                                     real_predictions=None, real_references=None,
                                     real_accuracy: float | None = None) -> dict:
    """:func:`identity_metrics` from label arrays: the entry point of evaluate.py and the HF module.

    ``predictions``/``references``: the oracle's class and the conditioning class of each generated image.
    ``real_predictions``/``real_references`` (the oracle on real test images) or ``real_accuracy``.
    Without ``class_names`` the classes are ``"0".."K-1"``, K = 1 + the largest label seen.
    """
    pred, ref = np.asarray(predictions, dtype=np.int64), np.asarray(references, dtype=np.int64)
    if pred.shape != ref.shape:
        raise ValueError(f"predictions ({pred.shape}) and references ({ref.shape}) differ in length")
    have_real = real_predictions is not None or real_references is not None
    if have_real == (real_accuracy is not None):
        raise ValueError("give real_predictions and real_references, or real_accuracy (exactly one of the two)")
    labels = [pred, ref]
    if have_real:
        rp, rr = np.asarray(real_predictions, dtype=np.int64), np.asarray(real_references, dtype=np.int64)
        if rp.shape != rr.shape:
            raise ValueError(f"real_predictions ({rp.shape}) and real_references ({rr.shape}) differ in length")
        labels += [rp, rr]
    k = len(class_names) if class_names is not None else 1 + max(int(a.max()) for a in labels if a.size)
    if any(a.size and (a.min() < 0 or a.max() >= k) for a in labels):
        raise ValueError(f"labels must lie in [0, {k}) for {k} classes")
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    real_counts = confusion_counts(rr, rp, k) if have_real else None
    return identity_metrics(confusion_counts(ref, pred, k), names, real_counts=real_counts,
                            real_accuracy=real_accuracy)


def bootstrap_confusions(counts: np.ndarray, num_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``(B, K, K)`` confusion matrices of ``B`` class-stratified bootstrap resamples.

    Resampling the ``n_c`` images of true class ``c`` with replacement changes the metrics only through
    row ``c`` of the confusion matrix, and that row is then Multinomial(n_c, row_c / n_c). Drawing the
    rows directly is the same distribution as index resampling, at O(B K^2) instead of O(B N): 1000
    resamples of 50k images take milliseconds.
    """
    counts = np.asarray(counts, dtype=np.int64)
    support = counts.sum(axis=1)
    pvals = normalise_rows(counts)
    pvals[support == 0] = np.eye(len(counts))[support == 0]  # empty rows draw 0 samples anyway
    return rng.multinomial(support, pvals, size=(num_resamples, len(counts)))


# Each tail of a 95% percentile interval holds 2.5% of the resamples: at 100 resamples that is 2.5 of them, below
# it the end points are single extreme draws (at 1 resample the "interval" is one number and need not even
# contain the estimate). Every bootstrap in kface.eval refuses fewer.
MIN_RESAMPLES = 100


def check_resamples(num_resamples: int) -> None:
    """An :class:`InputError` for a resample count too small for a 95% percentile interval (0 is no interval)."""
    if num_resamples < MIN_RESAMPLES:
        raise InputError(f"num_resamples {num_resamples}: a 95% percentile interval needs at least {MIN_RESAMPLES} "
                         "bootstrap resamples (0: no interval)")


def _interval(samples: np.ndarray, level: float) -> np.ndarray:
    """Percentile interval along axis 0, ignoring resamples where the ratio is undefined."""
    alpha = (1 - level) / 2 * 100
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: a class RCA that is undefined
        return np.nanpercentile(samples, [alpha, 100 - alpha], axis=0)


def bootstrap_rca(gen_counts: np.ndarray, real_counts: np.ndarray, num_resamples: int = 1000, seed: int = 0,
                  level: float = 0.95) -> dict:
    """Percentile confidence intervals of global and per-class RCA (and both accuracies).

    Both sets are resampled, independently, stratified by true class (each class keeps its size, as the
    generated set is fixed per class by design); see :func:`bootstrap_confusions`.
    """
    check_resamples(num_resamples)
    rng = np.random.default_rng(seed)
    gen_b = bootstrap_confusions(gen_counts, num_resamples, rng)
    real_b = bootstrap_confusions(real_counts, num_resamples, rng)
    acc_gen, acc_real = accuracy_from_counts(gen_b), accuracy_from_counts(real_b)
    rca = _ratio(acc_gen, acc_real)
    recall_gen, recall_real = recall_from_counts(gen_b), recall_from_counts(real_b)
    class_rca = _ratio(recall_gen, recall_real)
    # each class keeps its size in every resample, so the classes compared are the point estimate's
    both = compared_classes(gen_counts, real_counts)
    balanced = _ratio(balanced_accuracy(recall_gen, both), balanced_accuracy(recall_real, both))

    def pair(a):
        return [_json_float(a[0]), _json_float(a[1])]

    cls = _interval(class_rca, level)
    # a resample whose real accuracy (recall) is 0 has no ratio; the interval is over the others only, and
    # it can be far narrower than the truth when many are dropped (1 of 10 real right: 35% of them)
    dropped_cls = np.isnan(class_rca).sum(axis=0)
    return {"num_resamples": int(num_resamples), "seed": int(seed), "level": float(level),
            "method": "percentile, class-stratified, real and generated resampled independently",
            "rca": pair(_interval(rca, level)), "balanced_rca": pair(_interval(balanced, level)),
            "accuracy_gen": pair(_interval(acc_gen, level)),
            "accuracy_real": pair(_interval(acc_real, level)),
            "class_rca": [pair(cls[:, i]) for i in range(cls.shape[1])],
            "dropped": {"why": "real accuracy (recall) 0 in the resample: the ratio is undefined, and the "
                               "interval is over the remaining resamples",
                        "rca": int(np.isnan(rca).sum()), "balanced_rca": int(np.isnan(balanced).sum()),
                        "class_rca": [int(n) for n in dropped_cls]}}
