"""Accuracy and macro F1 of class predictions, over scikit-learn, as an ``evaluate`` module.

Loaded offline with ``evaluate.load(path_to_this_folder)`` (see ``hf_distill.training.metrics.load_metric``). Macro F1
weighs every class equally, so a model that ignores the smaller class cannot hide behind accuracy.
"""

import datasets
import evaluate
from sklearn.metrics import accuracy_score, f1_score

_DESCRIPTION = "Accuracy and macro F1 (scikit-learn) of integer class predictions against integer labels."
_KWARGS = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): gold class ids.
Returns:
    accuracy (float): share of predictions equal to their reference.
    f1 (float): unweighted mean over classes of the per-class F1 (0 for a class never predicted nor seen).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class AccuracyF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/model_evaluation.html"],
        )

    def _compute(self, predictions, references):
        return {
            "accuracy": float(accuracy_score(references, predictions)),
            "f1": float(f1_score(references, predictions, average="macro", zero_division=0)),
        }
