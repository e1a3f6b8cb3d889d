"""NER scored on whole sentences: the evaluator that puts windowed predictions back together, and the count of
what evaluation covers.

Training rows are cut at ``max_length`` sub-tokens; evaluation rows are not. A validation or test sentence
longer than that becomes overlapping windows of whole words
(:func:`hf_distill.training.preprocessing.tokenize_windows_and_align_labels`), each word is predicted in the window
where it is most central, and :func:`windowed_evaluator` regroups the predictions into sentences before
seqeval scores them, so an entity at the end of a long sentence is scored like any other. What is still not
scored (words the tokenizer gives no sub-token, such as a lone U+3000) is counted and reported
(:func:`windowed_coverage`: printed, and under ``data.eval_coverage`` in ``report.json``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from datasets import DatasetDict
from torch import nn

from hf_distill.recipes.data_common import notice
from hf_distill.training.prediction import predict_in_order
from hf_distill.training.preprocessing import WINDOW_SENTENCE, WINDOW_WORDS, regroup_windows


def windowed_evaluator(compute_metrics: Callable, collator: Callable) -> Callable:
    """Scores a token classifier with ``Trainer.predict`` on window rows (in their order:
    :func:`~hf_distill.training.prediction.predict_in_order`), regrouped into sentences first
    (datasets without the window columns are scored row by row, as before). Returns what ``compute_metrics``
    returns for ``(predictions, labels)``: a dict of metrics, or the per-sentence
    :class:`~hf_distill.training.metrics.ExampleScores` the scorecard resamples."""

    def evaluate(model: nn.Module, dataset: Any, training_args: Any) -> Any:
        columns = [c for c in (WINDOW_SENTENCE, WINDOW_WORDS) if c in dataset.column_names]
        output = predict_in_order(model, training_args, dataset.remove_columns(columns), collator)
        predictions, labels = output.predictions, output.label_ids
        if isinstance(predictions, (tuple, list)):
            predictions = predictions[0]
        if columns:
            predictions, labels = regroup_windows(
                predictions, dataset[WINDOW_SENTENCE], dataset[WINDOW_WORDS], labels
            )
        return compute_metrics((predictions, labels))

    return evaluate


def _entities(tag_ids: list[int], names: list[str]) -> list[tuple[str, int, int]]:
    """The gold entities ``(type, first word, last word)`` of one sentence, as seqeval reads BIO tags."""
    from seqeval.metrics.sequence_labeling import get_entities

    return get_entities([names[i] for i in tag_ids])


def windowed_coverage(
    splits: DatasetDict, tokenized: DatasetDict, max_length: int
) -> dict[str, dict[str, int]]:
    """Per evaluation split (all but ``train``): sentences, those longer than ``max_length`` (scored through
    windows), window rows, and the words and gold entities that no window scores; printed as one line."""
    coverage: dict[str, dict[str, int]] = {}
    for name, rows in tokenized.items():
        if name == "train" or WINDOW_SENTENCE not in rows.column_names:
            continue
        names = splits[name].features["ner_tags"].feature.names
        scored: dict[int, set[int]] = {}
        windows: dict[int, int] = {}
        for sentence, words in zip(rows[WINDOW_SENTENCE], rows[WINDOW_WORDS]):
            scored.setdefault(sentence, set()).update(w for w in words if w >= 0)
            windows[sentence] = windows.get(sentence, 0) + 1
        tags = splits[name]["ner_tags"]
        coverage[name] = {
            "sentences": len(tags),
            "long_sentences": sum(n > 1 for n in windows.values()),
            "windows": len(rows),
            "words": sum(len(t) for t in tags),
            "unscored_words": sum(len(t) - len(scored.get(i, ())) for i, t in enumerate(tags)),
            "entities": sum(len(_entities(t, names)) for t in tags),
            "unscored_entities": sum(
                any(w not in scored.get(i, ()) for w in range(start, end + 1))
                for i, t in enumerate(tags)
                for _, start, end in _entities(t, names)
            ),
        }
        notice(coverage_line(name, coverage[name], max_length))
    return coverage


def coverage_line(split: str, counts: dict[str, int], max_length: int) -> str:
    """``"NER evaluation (test): 12 of 360 sentences longer than max_length=64 scored whole through 31
    windows; 0 of 5,210 words and 0 of 412 gold entities not scored."``"""
    return (
        f"NER evaluation ({split}): {counts['long_sentences']:,} of {counts['sentences']:,} sentences longer than "
        f"max_length={max_length} scored whole through {counts['windows'] - counts['sentences']:,} extra "
        f"overlapping window(s); {counts['unscored_words']:,} of {counts['words']:,} words and "
        f"{counts['unscored_entities']:,} of {counts['entities']:,} gold entities not scored (words the "
        "tokenizer gives no sub-token)."
    )
