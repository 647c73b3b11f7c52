"""Relative Classification Accuracy (RCA): an oracle's accuracy on generated images over its accuracy on
real test images. The arithmetic is kface's (``kface.rca.relative_classification_accuracy``), the same
function evaluate.py calls, so the two always agree."""

import datasets
import evaluate

from kface.rca import relative_classification_accuracy

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
        out = relative_classification_accuracy(predictions, references, class_names=class_names,
                                               real_predictions=real_predictions, real_references=real_references,
                                               real_accuracy=real_accuracy)
        per_class = out["per_class"]
        result = {"rca": out["rca"], "accuracy_gen": out["accuracy_gen"], "accuracy_real": out["accuracy_real"]}
        for key in ("precision", "recall", "f1"):
            result[key] = {n: m["gen"][key] for n, m in per_class.items()}
        if real_accuracy is None:
            result["class_rca"] = {n: m["class_rca"] for n, m in per_class.items()}
            for key in ("precision", "recall", "f1"):
                result[f"real_{key}"] = {n: m["real"][key] for n, m in per_class.items()}
        return result
