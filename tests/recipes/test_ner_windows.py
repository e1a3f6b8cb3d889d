"""NER evaluation scores whole sentences: a sentence longer than max_length is cut into overlapping windows,
every word is scored once (where it is most central), and an entity at the end is scored; what stays
unscored is counted. References: seqeval on the untouched sentence, and windows worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, List, Value
from seqeval.metrics import f1_score, recall_score
from torch import nn

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.training.metrics import seqeval_metrics
from hf_distill.training.preprocessing import (
    IGNORE_INDEX,
    WINDOW_SENTENCE,
    WINDOW_WORDS,
    home_windows,
    regroup_windows,
    tokenize_and_align_labels,
    tokenize_windows_and_align_labels,
    word_windows,
)

LABELS = ["O", "B-x", "I-x"]
# 14 words; entities at words 1-2 and at the very end (12-13), past a max_length of 10 sub-tokens.
LONG = "the movie actor was great and the plot was long but the story loved".split()
LONG_TAGS = [0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2]
SHORT = "a good film".split()
SHORT_TAGS = [0, 1, 0]


def test_word_windows_and_their_most_central_word_by_hand():
    windows = word_windows([1] * 10, budget=4)
    # Each window takes 4 one-token words; the next starts at the middle of the last one.
    assert windows == [(0, 4), (2, 6), (4, 8), (6, 10)]
    home = home_windows(windows, 10)
    # Word 3: centrality min(3-0, 3-3)=0 in window 0, min(1, 2)=1 in window 1 -> window 1.
    assert home == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3]
    # A word longer than the budget gets a window of its own (the tokenizer cuts it).
    assert word_windows([2, 9, 1], budget=4) == [(0, 1), (1, 2), (2, 3)]
    assert word_windows([1, 1], budget=4) == [(0, 2)]


def _windowed(tokenizer, max_length=10):
    batch = {"tokens": [LONG, SHORT], "ner_tags": [LONG_TAGS, SHORT_TAGS]}
    return tokenize_windows_and_align_labels(batch, [0, 1], tokenizer, max_length)


def test_every_word_of_a_long_sentence_is_labelled_once_and_the_last_entity_is_kept(wordpiece_tokenizer):
    out = _windowed(wordpiece_tokenizer)
    assert all(len(ids) <= 10 for ids in out["input_ids"])
    long_rows = [i for i, s in enumerate(out[WINDOW_SENTENCE]) if s == 0]
    assert len(long_rows) > 1, "the long sentence became several windows"
    scored = sorted(w for i in long_rows for w in out[WINDOW_WORDS][i] if w >= 0)
    assert scored == list(range(len(LONG))), "each word scored exactly once"
    labels = {w: out["labels"][i][p] for i in long_rows for p, w in enumerate(out[WINDOW_WORDS][i]) if w >= 0}
    assert [labels[w] for w in range(len(LONG))] == LONG_TAGS
    # The old truncating path drops the end, and with it the last gold entity.
    cut = tokenize_and_align_labels(
        {"tokens": [LONG], "ner_tags": [LONG_TAGS]}, wordpiece_tokenizer, max_length=10
    )
    assert 1 not in [t for t in cut["labels"][0] if t != IGNORE_INDEX][3:]
    # The short sentence is one window, labelled as before.
    (short_row,) = [i for i, s in enumerate(out[WINDOW_SENTENCE]) if s == 1]
    plain = tokenize_and_align_labels({"tokens": [SHORT], "ner_tags": [SHORT_TAGS]}, wordpiece_tokenizer)
    assert out["labels"][short_row] == plain["labels"][0]


def _one_hot(labels):
    logits = np.zeros((*labels.shape, len(LABELS)), dtype=np.float32)
    for index in np.ndindex(labels.shape):
        logits[index + (max(int(labels[index]), 0),)] = 1.0
    return logits


def test_regrouped_predictions_score_like_the_whole_sentence(wordpiece_tokenizer):
    out = _windowed(wordpiece_tokenizer)
    width = max(len(r) for r in out["labels"])
    labels = np.array([r + [IGNORE_INDEX] * (width - len(r)) for r in out["labels"]])
    predictions = _one_hot(labels)
    # Miss the last entity: predict O at the last word (wherever its window is).
    for i, (sentence, words) in enumerate(zip(out[WINDOW_SENTENCE], out[WINDOW_WORDS])):
        for p, w in enumerate(words):
            if sentence == 0 and w == len(LONG) - 2:
                predictions[i, p] = _one_hot(np.array([0]))[0]
    sentence_logits, sentence_labels = regroup_windows(
        predictions, out[WINDOW_SENTENCE], out[WINDOW_WORDS], labels
    )
    assert sentence_labels.shape == (2, len(LONG))
    assert sentence_labels[0].tolist() == LONG_TAGS
    metrics = seqeval_metrics(LABELS)((sentence_logits, sentence_labels))
    gold = [[LABELS[t] for t in LONG_TAGS], [LABELS[t] for t in SHORT_TAGS]]
    predicted = [list(gold[0]), list(gold[1])]
    predicted[0][-2] = "O"  # the reference: the same miss on the untouched sentence
    assert metrics["recall"] == pytest.approx(recall_score(gold, predicted)) == pytest.approx(2 / 3)
    assert metrics["f1"] == pytest.approx(f1_score(gold, predicted))


class _Oracle(nn.Module):
    """Returns one-hot logits of the labels it is given: a perfect tagger, to check that nothing is lost."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None, labels=None, **kwargs):
        logits = torch.nn.functional.one_hot(labels.clamp_min(0), len(LABELS)).float()
        return {"loss": self.weight.sum(), "logits": logits}


def test_prepare_ner_scores_long_test_sentences_whole_and_counts_coverage(
    tmp_path, wordpiece_tokenizer, capsys
):
    from hf_distill.recipes.data_arguments import DataArguments
    from hf_distill.recipes.tasks import prepare_ner

    rows = []
    for i in range(12):
        words, tags = (LONG, LONG_TAGS) if i % 3 == 0 else (SHORT, SHORT_TAGS)
        rows += [f"{w}\t{LABELS[t]}" for w, t in zip(words, tags)] + [""]
    conll = tmp_path / "train.conll"
    conll.write_text("\n".join(rows), encoding="utf-8")
    test = tmp_path / "test.conll"
    test.write_text("\n".join(rows[: len(LONG) + 1 + len(SHORT) + 1]), encoding="utf-8")
    task = prepare_ner(
        DataArguments(train_file=str(conll), test_file=str(test), max_length=10), wordpiece_tokenizer
    )
    assert max(len(ids) for ids in task.train["input_ids"]) <= 10
    counts = task.eval_coverage["test"]
    assert counts["sentences"] == 2 and counts["long_sentences"] == 1 and counts["windows"] > 2
    assert counts["words"] == len(LONG) + len(SHORT) and counts["unscored_words"] == 0
    assert counts["entities"] == 3 and counts["unscored_entities"] == 0
    assert "1 of 2 sentences longer than max_length=10 scored whole" in capsys.readouterr().out
    args = DistillationTrainingArguments(output_dir=str(tmp_path / "eval"), report_to="none", use_cpu=True)
    metrics = task.evaluate(_Oracle(), task.test, args)
    assert metrics["f1"] == 1.0 and metrics["recall"] == 1.0


def test_words_without_a_sub_token_are_counted_as_unscored(tmp_path, wordpiece_tokenizer):
    from hf_distill.recipes.ner_windows import windowed_coverage

    features = Features({"tokens": List(Value("string")), "ner_tags": List(ClassLabel(names=LABELS))})
    raw = Dataset.from_dict(
        {"tokens": [["the", "\u3000", "movie"]], "ner_tags": [[0, 1, 0]]}, features=features
    )
    windows = raw.map(
        tokenize_windows_and_align_labels,
        batched=True,
        with_indices=True,
        fn_kwargs={"tokenizer": wordpiece_tokenizer, "max_length": 10},
        remove_columns=raw.column_names,
    )
    counts = windowed_coverage({"test": raw}, {"test": windows}, 10)["test"]
    assert counts["unscored_words"] == 1 and counts["unscored_entities"] == 1 and counts["entities"] == 1
