"""Entity-level precision, recall and F1 of tag sequences (``seqeval``, CoNLL scoring), as an ``evaluate`` module.

Loaded offline with ``evaluate.load(path_to_this_folder)`` (see ``hf_distill.training.metrics.load_metric``). An entity
counts as found only when its type and its whole span match; scores are micro-averaged over entities.
"""

import datasets
import evaluate
from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

_DESCRIPTION = "Entity-level precision, recall, F1 (seqeval, micro over entities) and token accuracy."
_KWARGS = """
Args:
    predictions (list of list of str): predicted IOB tags, one list per sentence.
    references (list of list of str): gold IOB tags, same lengths.
Returns:
    precision, recall, f1 (float): over whole entities (type and span must match).
    accuracy (float): share of tags equal to the gold tag.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class SeqevalEntities(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
            reference_urls=["https://github.com/chakki-works/seqeval"],
        )

    def _compute(self, predictions, references):
        return {
            "precision": float(precision_score(references, predictions, zero_division=0)),
            "recall": float(recall_score(references, predictions, zero_division=0)),
            "f1": float(f1_score(references, predictions, zero_division=0)),
            "accuracy": float(accuracy_score(references, predictions)),
        }
