"""The NER transfer set of other text (a file, an offline source): split into words, every label -100, seen by the
distilled student's KD term only, never by the teacher's fine-tune or the no-KD baseline."""

from __future__ import annotations

import pytest
import transformers
from datasets import Dataset
from transformers import BertForTokenClassification

from hf_distill.recipes.data_arguments import DataArguments
from hf_distill.recipes.data_transfer import refuse_transfer_source
from hf_distill.recipes.ner_transfer import (
    TRANSFER_SOURCES,
    ner_transfer_sentences,
    source_texts,
    split_words,
    word_rows,
)
from hf_distill.recipes.tasks import prepare_ner
from tests.helpers.recipes import (
    needs_rotten_tomatoes,
    needs_wnut,
    run_recipe,
    save_tiny_teacher,
    tiny_flags,
    write_conll,
)

TEXTS = ["The film's plot -- dull!!! See http://x.co", "great cast", "   ", "not worth it ..."]


def test_text_is_split_into_runs_of_word_characters_and_of_punctuation():
    assert split_words("The film's plot -- dull!!!") == ["The", "film", "'", "s", "plot", "--", "dull", "!!!"]
    assert split_words("See http://x.co") == ["See", "http", "://", "x", ".", "co"]
    assert split_words("  a\tb\n") == ["a", "b"]
    assert split_words(" \t ") == []


def test_word_rows_are_untagged_sentences_and_blank_texts_are_dropped():
    rows = word_rows(Dataset.from_dict({"text": TEXTS}))
    assert rows["tokens"] == [split_words(t) for t in TEXTS if t.strip()]
    assert all(tags == [-100] * len(words) for words, tags in zip(rows["tokens"], rows["ner_tags"]))
    with pytest.raises(ValueError, match="transfer"):
        word_rows(Dataset.from_dict({"text": ["  ", "\t"]}))


def write_text(tmp_path, kind: str = "txt"):
    if kind == "txt":
        path = tmp_path / "other.txt"
        path.write_text("\n".join(TEXTS) + "\n")
    else:
        path = tmp_path / "other.csv"
        path.write_text("review,stars\n" + "\n".join(f'"{t}",3' for t in TEXTS) + "\n")
    return path


@pytest.mark.parametrize("kind", ["txt", "csv"])
def test_a_transfer_file_gives_sentences_capped_by_transfer_samples(tmp_path, kind):
    column = "review" if kind == "csv" else None
    rows = ner_transfer_sentences(Dataset.from_dict({"tokens": [["x"]]}), None, transfer_file=str(write_text(tmp_path, kind)), text_column=column)  # fmt: skip
    assert rows["tokens"] == [split_words(t) for t in TEXTS if t.strip()]
    capped = ner_transfer_sentences(
        Dataset.from_dict({"tokens": [["x"]]}), None, transfer_file=str(write_text(tmp_path, kind)),
        text_column=column, samples=2,
    )  # fmt: skip
    assert capped["tokens"] == [split_words(t) for t in TEXTS[:2]]


def test_without_file_or_source_the_corpus_sentences_past_the_labeled_ones_stay_the_transfer_set():
    train = Dataset.from_dict({"tokens": [[f"w{i}"] for i in range(6)], "ner_tags": [[0]] * 6})
    rows = ner_transfer_sentences(train, 4, samples=5)
    assert rows["tokens"] == [["w4"], ["w5"]]
    assert ner_transfer_sentences(train, 4) is None


def test_docstrings_source_is_prose_of_the_standard_library():
    rows = source_texts("docstrings", 5)
    assert len(rows) == 5 and all(any(c.isalpha() for c in text) for text in rows["text"])
    assert not any(text.startswith(">>>") for text in rows["text"])


@needs_rotten_tomatoes
def test_reviews_source_is_the_review_snippets():
    from hf_distill.recipes.data_sentiment import load_rotten_tomatoes

    rows = source_texts("reviews", 3)
    assert rows["text"] == load_rotten_tomatoes()["train"]["text"][:3]


def test_bad_transfer_settings_are_refused_with_what_to_do(tmp_path):
    train = Dataset.from_dict({"tokens": [["x"]]})
    path = str(write_text(tmp_path, "csv"))
    with pytest.raises(
        ValueError, match="both transfer_file=.* and transfer_source='reviews'.*drop one flag"
    ):
        ner_transfer_sentences(train, None, transfer_file=path, transfer_source="reviews")
    with pytest.raises(
        ValueError, match="both transfer_file=.* and transfer_source='reviews'.*drop one flag"
    ):
        DataArguments(transfer_file=path, transfer_source="reviews")
    with pytest.raises(
        ValueError, match="transfer_source='tweets' is not an offline text source.*--transfer_file"
    ):
        DataArguments(transfer_source="tweets")
    with pytest.raises(
        ValueError, match="transfer_source='tweets' is not an offline text source.*--transfer_file"
    ):
        source_texts("tweets")
    with pytest.raises(
        ValueError, match="has no column 'text' \\(it has \\['review', 'stars'\\]\\).*--text_column"
    ):
        ner_transfer_sentences(train, None, transfer_file=path)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(ValueError, match="holds no text in column 'text'"):
        ner_transfer_sentences(train, None, transfer_file=str(empty))
    for task in ("sentiment", "codegen"):
        with pytest.raises(
            ValueError, match=f"read by the NER recipe only.*the {task} recipe takes --transfer_file"
        ):
            refuse_transfer_source("reviews", task)
    assert set(TRANSFER_SOURCES) == {"reviews", "docstrings"}


@needs_wnut
def test_prepare_ner_keeps_transfer_rows_out_of_the_labeled_training_set(tmp_path, wordpiece_tokenizer):
    train = write_conll(tmp_path / "train.conll")
    args = DataArguments(
        train_file=str(train), max_train_samples=24, transfer_file=str(write_text(tmp_path)), max_length=16
    )
    task = prepare_ner(args, wordpiece_tokenizer)
    assert len(task.train) == 24 and len(task.transfer) == 3
    assert all(any(label != -100 for label in labels) for labels in task.train["labels"])
    assert all(set(labels) == {-100} for labels in task.transfer["labels"])
    # The sub-tokens of the words, as the tokenizer gives them for the whole text: the teacher scores each one.
    expected = wordpiece_tokenizer(TEXTS[0], truncation=True, max_length=16)["input_ids"]
    assert task.transfer["input_ids"][0] == expected


@needs_wnut
def test_ner_recipe_transfer_rows_reach_only_the_distilled_student(
    tmp_path, wordpiece_tokenizer, monkeypatch
):
    """Every Trainer of the run is recorded with its training rows: the teacher's fine-tune and the no-KD
    baseline get the 24 labeled sentences, the distilled student those and the 3 untagged ones."""
    seen = []
    train_method = transformers.Trainer.train

    def recording(self, *args, **kwargs):
        labels = self.train_dataset["labels"]
        seen.append((type(self).__name__, len(labels), sum(set(row) == {-100} for row in labels)))
        return train_method(self, *args, **kwargs)

    monkeypatch.setattr(transformers.Trainer, "train", recording)
    teacher = save_tiny_teacher(
        tmp_path / "teacher",
        BertForTokenClassification,
        wordpiece_tokenizer,
        id2label={0: "O", 1: "B-x", 2: "I-x"},
    )
    out = tmp_path / "run"
    flags = tiny_flags(
        out, teacher_model_name_or_path=teacher, train_file=write_conll(tmp_path / "train.conll"),
        max_train_samples=24, transfer_file=write_text(tmp_path), baseline_steps="epochs",
    )  # fmt: skip
    report = run_recipe("ner", flags)
    assert seen == [("Trainer", 24, 0), ("DistillationTrainer", 27, 3), ("Trainer", 24, 0)]
    assert report["task"] == "token_classification" and report["data"]["train_size"] == 24
