"""Relative Classification Accuracy (RCA): an oracle's accuracy on generated images over its accuracy on
real test images.

Self-contained, as a metric module loaded from the Hub must be (``evaluate.load`` copies this file alone):
numpy, datasets and evaluate only. Its arithmetic is written here a second time, independently of
``kface.eval.rca`` (which evaluate.py uses); kface's tests check that the two agree.
"""

import datasets
import evaluate
import numpy as np


def _confusion(references, predictions, k: int) -> np.ndarray:
    """``C[true, predicted]`` counts."""
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (references, predictions), 1)
    return counts


def _div(num: float, den: float) -> float | None:
    return None if den == 0 else float(num) / float(den)


def _prf(counts: np.ndarray, i: int) -> dict:
    """Precision, recall, F1 of class ``i`` (0 for a zero denominator, as sklearn's zero_division=0)."""
    tp, predicted, support = counts[i, i], counts[:, i].sum(), counts[i].sum()
    precision, recall = _div(tp, predicted) or 0.0, _div(tp, support) or 0.0
    f1 = _div(2 * precision * recall, precision + recall) or 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": int(support)}


def relative_classification_accuracy(predictions, references, class_names=None, real_predictions=None,
                                     real_references=None, real_accuracy=None) -> dict:
    """RCA = accuracy_gen / accuracy_real (None when accuracy_real is 0); per class, class RCA =
    recall_gen / recall_real (None without generated images of the class or with real recall 0)."""
    pred, ref = np.asarray(predictions, dtype=np.int64), np.asarray(references, dtype=np.int64)
    if pred.shape != ref.shape:
        raise ValueError(f"predictions ({pred.shape}) and references ({ref.shape}) differ in length")
    have_real = real_predictions is not None or real_references is not None
    if have_real == (real_accuracy is not None):
        raise ValueError("give real_predictions and real_references, or real_accuracy (exactly one of the two)")
    arrays = [pred, ref]
    if have_real:
        rp, rr = np.asarray(real_predictions, dtype=np.int64), np.asarray(real_references, dtype=np.int64)
        if rp.shape != rr.shape:
            raise ValueError(f"real_predictions ({rp.shape}) and real_references ({rr.shape}) differ in length")
        arrays += [rp, rr]
    k = len(class_names) if class_names is not None else 1 + max(int(a.max()) for a in arrays if a.size)
    if any(a.size and (a.min() < 0 or a.max() >= k) for a in arrays):
        raise ValueError(f"labels must lie in [0, {k}) for {k} classes")
    names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(k)]
    gen = _confusion(ref, pred, k)
    acc_gen = _div(np.trace(gen), gen.sum())
    real = _confusion(rr, rp, k) if have_real else None
    acc_real = float(real_accuracy) if real is None else _div(np.trace(real), real.sum())
    out = {"rca": _div(acc_gen or 0.0, acc_real or 0.0), "accuracy_gen": acc_gen or 0.0,
           "accuracy_real": acc_real or 0.0}
    gen_prf = [_prf(gen, i) for i in range(k)]
    for key in ("precision", "recall", "f1"):
        out[key] = {n: m[key] for n, m in zip(names, gen_prf)}
    if real is not None:
        real_prf = [_prf(real, i) for i in range(k)]
        out["class_rca"] = {n: _div(g["recall"], r["recall"]) if g["support"] else None
                            for n, g, r in zip(names, gen_prf, real_prf)}
        for key in ("precision", "recall", "f1"):
            out[f"real_{key}"] = {n: m[key] for n, m in zip(names, real_prf)}
    return out

_DESCRIPTION = """
Relative Classification Accuracy (RCA) = Accuracy_gen / Accuracy_real. An oracle classifier trained on
real data labels generated images; Accuracy_gen is its accuracy against the class each image was
conditioned on, Accuracy_real its accuracy on the real test split. Per class, class RCA =
recall_gen / recall_real. RCA calibrates the Classification Accuracy Score (CAS) by the oracle's own
difficulty on real data.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): the oracle's predicted class for each generated image.
    references (list of int): the class each generated image was conditioned on.
    real_predictions (list of int, optional): the oracle's predictions on the real test images.
    real_references (list of int, optional): the true classes of the real test images.
    real_accuracy (float, optional): the oracle's real test accuracy, instead of the two lists above
        (then `class_rca` and the real per-class metrics are absent).
    class_names (list of str, optional): names of classes 0..K-1 (default "0".."K-1").
Returns:
    rca (float or None): accuracy_gen / accuracy_real (None when accuracy_real is 0).
    accuracy_gen (float), accuracy_real (float).
    class_rca (dict name -> float or None): recall_gen / recall_real per class.
    precision, recall, f1 (dict name -> float): generated images, per class.
    real_precision, real_recall, real_f1 (dict name -> float): real images, per class (with real lists).
Examples:
    >>> rca = evaluate.load("metrics/relative_classification_accuracy")
    >>> out = rca.compute(predictions=[0, 1, 1, 1], references=[0, 0, 1, 1],
    ...                   real_predictions=[0, 0, 1, 0], real_references=[0, 0, 1, 1])
    >>> out["rca"], out["accuracy_gen"], out["accuracy_real"], out["class_rca"]
    (1.0, 0.75, 0.75, {'0': 0.5, '1': 2.0})
"""

_CITATION = """
@misc{lin_rca,
  title  = {Relative Classification Accuracy: A Calibrated Metric for Identity Consistency in
            Fine-Grained K-pop Face Generation},
  author = {Lin, Sylve and Vasistha, Erranki}
}
@inproceedings{ravuri2019cas,
  title     = {Classification Accuracy Score for Conditional Generative Models},
  author    = {Ravuri, Suman and Vinyals, Oriol},
  booktitle = {Advances in Neural Information Processing Systems},
  year      = {2019}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RelativeClassificationAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}),
            reference_urls=["https://arxiv.org/abs/1905.10887"])

    def _compute(self, predictions, references, real_predictions=None, real_references=None,
                 real_accuracy=None, class_names=None):
        return relative_classification_accuracy(predictions, references, class_names=class_names,
                                                real_predictions=real_predictions, real_references=real_references,
                                                real_accuracy=real_accuracy)
