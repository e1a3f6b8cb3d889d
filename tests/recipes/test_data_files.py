"""Your own data for every recipe task, read from files the tests write: sentiment from CSV / TSV / JSON Lines /
Parquet, NER from CoNLL (real analyser exports too) or JSON Lines, code from a folder or JSON Lines; missing
splits cut from training (seeded, reported); and the data check printed before training."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from datasets import ClassLabel, Dataset
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from tokenizers.processors import TemplateProcessing
from transformers import PreTrainedTokenizerFast

from hf_distill.recipes.data_arguments import DataArguments
from hf_distill.recipes.data_code import load_code_files
from hf_distill.recipes.data_files import builder_for, carve_indices
from hf_distill.recipes.data_ner import load_ner, read_conll
from hf_distill.recipes.data_sanity import (
    TRUNCATED_WARNING_SHARE,
    UNK_WARNING_SHARE,
    DataCheck,
    check_data,
    report_data_check,
)
from hf_distill.recipes.data_sentiment import load_sentiment
from hf_distill.recipes.tasks import prepare_code, prepare_ner, prepare_sentiment

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "bad", "film", "plot", "tokyo", "is", "big", "def", "x"]


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    """A WordPiece tokenizer with a hand-written vocabulary, so every [UNK] and every length is known."""
    backend = Tokenizer(models.WordPiece({t: i for i, t in enumerate(VOCAB)}, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )
    tok.eos_token = "[SEP]"
    return tok


def _reviews(n: int) -> list[dict]:
    return [{"review": f"good film {i}" if i % 2 else f"bad plot {i}", "verdict": "pos" if i % 2 else "neg"}
            for i in range(n)]  # fmt: skip


def _write_csv(path: Path, rows: list[dict], sep: str = ",") -> Path:
    lines = [sep.join(rows[0])] + [sep.join(str(v) for v in row.values()) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------- sentiment


def test_sentiment_csv_with_named_columns_cuts_and_reports_the_missing_splits(tmp_path, capsys):
    train = _write_csv(tmp_path / "reviews.csv", _reviews(30))
    kwargs = dict(train_file=train, text_column="review", label_column="verdict", seed=7)
    data = load_sentiment(**kwargs)
    assert {k: len(v) for k, v in data.items()} == {"train": 24, "validation": 3, "test": 3}
    assert data["train"].features["label"] == ClassLabel(names=["neg", "pos"])
    assert data["train"].column_names == ["text", "label"]
    # Every row keeps its own label: "good film" reviews are "pos" (id 1), "bad plot" ones "neg" (id 0).
    for split in data.values():
        for row in split:
            assert row["label"] == (1 if row["text"].startswith("good") else 0)
    texts = [t for split in data.values() for t in split["text"]]
    assert sorted(texts) == sorted(r["review"] for r in _reviews(30))  # nothing lost, nothing twice
    out = capsys.readouterr().out
    assert (
        f"data: validation = 3 of the 30 rows of {train} (10%), cut out of training with split_seed=7" in out
    )
    assert "data: test = 3 of the 30 rows" in out
    assert load_sentiment(**kwargs)["test"]["text"] == data["test"]["text"]  # the seed decides the cut
    assert load_sentiment(**{**kwargs, "seed": 8})["test"]["text"] != data["test"]["text"]


def test_sentiment_jsonl_parquet_and_tsv_with_star_ratings(tmp_path):
    rows = [{"text": f"film {i}", "label": 1 + i % 5} for i in range(20)]
    train = _write_jsonl(tmp_path / "train.jsonl", rows)
    test = tmp_path / "test.parquet"
    Dataset.from_list(rows[:5]).to_parquet(str(test))
    with pytest.raises(
        ValueError, match=r"reads \.csv, \.json, \.jsonl, \.parquet, \.tsv files, and every split"
    ):
        load_sentiment(train_file=train, test_file=test)
    Dataset.from_list(rows[:5]).to_json(str(tmp_path / "test.jsonl"))
    data = load_sentiment(train_file=train, test_file=tmp_path / "test.jsonl", validation_size=0.25)
    # Ratings 1..5 become ids 0..4 named "1".."5": ids always start at 0, whatever values the file uses.
    assert data["train"].features["label"].names == ["1", "2", "3", "4", "5"]
    assert {k: len(v) for k, v in data.items()} == {"train": 15, "validation": 5, "test": 5}
    assert data["test"]["label"] == [0, 1, 2, 3, 4]
    Dataset.from_list(rows).to_parquet(str(tmp_path / "train.parquet"))
    assert len(load_sentiment(train_file=tmp_path / "train.parquet", test_size=0.5)["test"]) == 10
    tsv = _write_csv(tmp_path / "train.tsv", [{"text": f"a, b {i}", "label": i % 2} for i in range(10)], "\t")
    assert load_sentiment(train_file=tsv, validation_size=0, test_size=0.2)["test"]["text"][0].startswith(
        "a, b"
    )


def test_sentiment_dataset_name_names_the_builder(tmp_path):
    train = _write_csv(
        tmp_path / "train.txt", [{"sentence": "good", "label": "pos"}, {"sentence": "bad", "label": "neg"}]
    )
    data = load_sentiment("csv", train_file=train, validation_size=0, test_size=0.5)
    assert data["test"].features["label"].names == ["neg", "pos"]
    with pytest.raises(
        ValueError, match="dataset_name='imdb' with data files: the sentiment recipe reads csv"
    ):
        load_sentiment("imdb", train_file=train)


@pytest.mark.parametrize(
    ("content", "kwargs", "error", "match"),
    [
        ("text,label\ngood,pos\n", {"text_column": "review"}, ValueError,
         r"the train split of .* has no column 'review' \(it has \['text', 'label'\]\); name the text and label columns with --text_column"),  # noqa: E501
        ("body,label\ngood,pos\n", {}, ValueError,
         r"has no text column \(looked for text, sentence, review, content .*or name it with --text_column"),
        ("text,label\ngood,pos\nbad,\nok,neg\n", {}, ValueError,
         "1 rows of the train split of .* have no label: every review needs a text and a label"),
        ('text,label\n"good,pos\n', {}, ValueError, r"the csv reader could not read \[.*bad\.csv'\]"),
    ],
)  # fmt: skip
def test_sentiment_file_errors(tmp_path, content, kwargs, error, match):
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(error, match=match):
        load_sentiment(train_file=path, **kwargs)


def test_file_arguments_fail_before_anything_is_loaded(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"train_file '.*nope\.csv' does not exist: .*\(--train_file\)"
    ):
        DataArguments(train_file=str(tmp_path / "nope.csv"))
    with pytest.raises(ValueError, match="validation_file/test_file were given without train_file"):
        DataArguments(test_file=str(_write_csv(tmp_path / "t.csv", [{"text": "a", "label": 0}])))
    with pytest.raises(ValueError, match=r"is a file, but dataset_name takes a Hub dataset.*--train_file"):
        DataArguments(dataset_name=str(tmp_path / "t.csv"))
    with pytest.raises(ValueError, match=r"test_size=1\.5 is not a fraction in \[0, 1\)"):
        DataArguments(test_size=1.5)
    files = {"train": tmp_path / "a.xlsx"}
    with pytest.raises(ValueError, match=r"reads \.csv, \.json, \.jsonl, \.parquet, \.tsv files"):
        builder_for(files, None, ("csv", "json", "parquet"), "sentiment")


def test_carve_indices_is_group_split_by_row_and_refuses_too_few_rows(capsys):
    indices = carve_indices(10, missing={"validation": 0.2, "test": 0.1}, seed=1, source="f.csv")
    assert sorted(len(v) for v in indices.values()) == [1, 2, 7]
    assert sorted(i for rows in indices.values() for i in rows) == list(range(10))
    assert "validation = 2 of the 10 rows of f.csv (20%)" in capsys.readouterr().out
    with pytest.raises(ValueError, match="the split left no rows for training"):
        carve_indices(2, missing={"validation": 0.1, "test": 0.1}, seed=1, source="f.csv")


# ------------------------------------------------------------------------------------------------- NER

# A real analyser export: 10 tab-separated columns (token first, IOB2 tag last), 12 where the analyser adds
# two readings; an ideographic space (U+3000) is a token inside a location.
ANALYSER_EXPORT = (
    "東京\t名詞\t固有名詞\t地域\t一般\t*\t*\t東京\tトウキョウ\tB-LOC\n"
    "\u3000\t記号\t空白\t*\t*\t*\t*\t\u3000\t\u3000\tI-LOC\n"
    "タワー\t名詞\t一般\t*\t*\t*\t*\tタワー\tタワー\t*\t*\tI-LOC\n"
    "へ\t助詞\t格助詞\t一般\t*\t*\t*\tへ\tエ\tO\n"
    "\n"
    "山田\t名詞\t固有名詞\t人名\t姓\t*\t*\t山田\tヤマダ\tB-PER\n"
    "です\t助動詞\t*\t*\t*\t特殊・デス\t基本形\tです\tデス\t*\t*\tO\n"
)


def test_read_conll_reads_an_analyser_export_with_varying_widths_and_whitespace_tokens(tmp_path):
    path = tmp_path / "export.conll"
    path.write_text(ANALYSER_EXPORT, encoding="utf-8")
    assert read_conll(path) == [
        {"tokens": ["東京", "\u3000", "タワー", "へ"], "ner_tags": ["B-LOC", "I-LOC", "I-LOC", "O"]},
        {"tokens": ["山田", "です"], "ner_tags": ["B-PER", "O"]},
    ]
    # The reading column (9) as the token: a position counted from 1.
    assert read_conll(path, token_column=9)[1]["tokens"] == ["ヤマダ", "デス"]


def test_read_conll_token_and_tag_positions(tmp_path):
    path = tmp_path / "three.conll"
    path.write_text("Ann\tB-PER\tNNP\nsings\tO\tVBZ\n", encoding="utf-8")
    assert read_conll(path, tag_column=2) == [{"tokens": ["Ann", "sings"], "ner_tags": ["B-PER", "O"]}]
    assert read_conll(path, token_column="-3", tag_column="-2")[0]["tokens"] == ["Ann", "sings"]
    with pytest.raises(ValueError, match=r"line 1: .*the tag 'NNP' is not O, B-type or I-type"):
        read_conll(path)
    with pytest.raises(ValueError, match=r"line 1: .*it has 3 columns where the column positions need 5"):
        read_conll(path, tag_column=5)
    with pytest.raises(ValueError, match=r"token_column=0: columns are counted from 1"):
        read_conll(path, token_column=0)
    with pytest.raises(ValueError, match=r"tag_column='ner_tags': in a CoNLL file the columns have no names"):
        read_conll(path, tag_column="ner_tags")


def _ner_rows(n: int) -> list[dict]:
    return [{"words": ["Ann", "in", f"city{i}"], "labels": ["B-PER", "O", "B-LOC"]} for i in range(n)]


def test_load_ner_from_json_lines_with_named_columns(tmp_path, capsys):
    train = _write_jsonl(tmp_path / "train.jsonl", _ner_rows(20))
    ner = load_ner(train_file=train, validation_size=0.1, test_size=0.2, seed=0)
    assert ner.label_list == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert {k: len(v) for k, v in ner.dataset.items()} == {"train": 14, "validation": 2, "test": 4}
    row = ner.dataset["test"][0]
    assert row["tokens"][:2] == ["Ann", "in"] and row["ner_tags"] == [3, 0, 1]
    assert "data: test = 4 of the 20 rows" in capsys.readouterr().out
    renamed = _write_jsonl(
        tmp_path / "named.jsonl", [{"w": r["words"], "t": r["labels"]} for r in _ner_rows(4)]
    )
    same = load_ner(
        "json", train_file=renamed, token_column="w", tag_column="t", validation_size=0, test_size=0.25
    )
    assert same.dataset["test"][0]["ner_tags"] == [3, 0, 1]
    with pytest.raises(ValueError, match=r"has no column 'w' .*name the columns with --token_column"):
        load_ner(train_file=train, token_column="w")


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ({"tokens": ["Ann", "x"], "ner_tags": ["PER", "O"]}, r"row 0 of the train split .* has the tag 'PER', which is not O"),
        ({"tokens": ["Ann", "x"], "ner_tags": ["O"]}, r"row 0 of the train split .* has 2 tokens but 1 tags"),
    ],
)  # fmt: skip
def test_load_ner_json_errors(tmp_path, row, match):
    path = _write_jsonl(tmp_path / "bad.jsonl", [row])
    with pytest.raises(ValueError, match=match):
        load_ner(train_file=path, validation_size=0, test_size=0)


def test_prepare_ner_on_the_analyser_export_reports_words_without_sub_tokens(tmp_path, tokenizer, capsys):
    train, test = tmp_path / "train.conll", tmp_path / "test.conll"
    train.write_text(
        ANALYSER_EXPORT + "\n" + ANALYSER_EXPORT, encoding="utf-8"
    )  # a blank line between copies
    test.write_text(ANALYSER_EXPORT, encoding="utf-8")
    args = DataArguments(train_file=str(train), test_file=str(test), validation_size=0.0, max_length=16)
    check = prepare_ner(args, tokenizer).data_check
    # Training: the two sentences twice, 2 x (4 + 2) = 12 words. The U+3000 tokens give no sub-token; every
    # other word is [UNK] under the English vocabulary, one per kanji (the normaliser splits CJK ideographs:
    # 東京 and 山田 are two each) and one per kana word: 2 x ((2 + 1 + 1) + (2 + 1)) = 14 sub-tokens.
    assert (check.examples, check.words, check.empty_words) == (4, 12, 2)
    assert (check.subtokens, check.unknown, check.truncated) == (14, 14, 0)
    out = capsys.readouterr().out
    assert "data check (teacher's tokenizer, 4 training examples): [UNK] 100.0% of 14 sub-tokens" in out
    assert "2 of 12 words have no sub-token (not trained or scored)" in out


# ------------------------------------------------------------------------------------------------ code


def test_code_folder_one_example_per_file(tmp_path, capsys):
    folder = tmp_path / "src"
    (folder / "pkg").mkdir(parents=True)
    sources = {f"pkg/m{i}.py": f"def f{i}():\n    return {i}\n\n" for i in range(10)}
    for name, text in sources.items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / "notes.txt").write_text("not code", encoding="utf-8")
    corpus = load_code_files(folder, seed=3)
    assert {k: len(v) for k, v in corpus.items()} == {"train": 8, "validation": 1, "test": 1}
    # Whole files, line breaks kept; the .txt file is not matched by the default glob.
    assert sorted(t for ds in corpus.values() for t in ds["text"]) == sorted(sources.values())
    assert f"of the 10 rows of {folder}" in capsys.readouterr().out
    assert len(load_code_files(folder, source_glob="*.txt", validation_size=0, test_size=0)["train"]) == 1
    with pytest.raises(ValueError, match=r"has no file matching '\*\*/\*\.js'.*--source_glob"):
        load_code_files(folder, source_glob="**/*.js")
    with pytest.raises(ValueError, match="some are folders and some files"):
        load_code_files(folder, test_file=folder / "notes.txt")


def test_code_json_lines_text_column_and_prepare_code(tmp_path, tokenizer):
    rows = [{"content": "def x ( ) : return x " * (i + 1), "repo": "r"} for i in range(10)]
    train = _write_jsonl(tmp_path / "code.jsonl", rows)
    corpus = load_code_files(train, validation_size=0.1, test_size=0.1)
    assert corpus["train"].column_names == ["text"]
    with pytest.raises(
        ValueError, match=r"has none of the columns \('body',\) \(it has \['content', 'repo'\]\)"
    ):
        load_code_files(train, text_column="body")
    args = DataArguments(train_file=str(train), max_length=8)
    task = prepare_code(args, tokenizer)
    assert task.dataset_label == str(train) and len(task.train[0]["input_ids"]) == 8
    assert task.data_check.truncated is None and task.data_check.unknown > 0  # "(", ")", ":", "return"


# ---------------------------------------------------------------------------------------------- check


def test_check_data_counts_unknown_and_truncated_by_hand(tokenizer):
    texts = ["good film", "good plot is big", "ça va très bien"]
    check = check_data(texts, tokenizer, max_length=5)
    # Sub-tokens without [CLS]/[SEP]: 2 + 4 + 4 (ça, va, tres, bien: all unknown) = 10, of which 4 [UNK];
    # with [CLS]/[SEP] the lengths are 4, 6, 6: two rows exceed 5.
    assert (check.examples, check.subtokens, check.unknown, check.truncated) == (3, 10, 4, 2)
    assert check.unk_share == pytest.approx(0.4) and check.truncated_share == pytest.approx(2 / 3)
    assert check.line() == (
        "data check (teacher's tokenizer, 3 training examples): [UNK] 40.0% of 10 sub-tokens; "
        "66.7% of examples longer than max_length=5 (cut)."
    )
    assert len(check.warnings()) == 2


def test_data_check_warns_only_above_its_thresholds(caplog):
    def check(unknown: int, truncated: int) -> DataCheck:
        return DataCheck(
            examples=100, subtokens=100, unknown=unknown, truncated=truncated, max_length=8, unk_token="[UNK]"
        )

    assert check(int(UNK_WARNING_SHARE * 100), int(TRUNCATED_WARNING_SHARE * 100)).warnings() == []
    with caplog.at_level("WARNING"):
        report_data_check(check(24, 11))
    assert re.search(
        r"24\.0% of the training sub-tokens are \[UNK\] .*Use a teacher whose tokenizer", caplog.text
    )
    assert "11.0% of the training examples are longer than max_length=8" in caplog.text
    byte_level = DataCheck(examples=2, subtokens=9, unknown=None, truncated=None, max_length=8)
    assert byte_level.line().endswith("no unknown token (byte-level vocabulary) in 9 sub-tokens.")
    assert byte_level.warnings() == []


def test_prepare_sentiment_from_a_csv_takes_label_names_from_the_data(tmp_path, tokenizer, capsys):
    train = _write_csv(tmp_path / "reviews.csv", _reviews(20))
    args = DataArguments(train_file=str(train), text_column="review", label_column="verdict", max_length=4)
    task = prepare_sentiment(args, tokenizer)
    assert task.label_kwargs["id2label"] == {0: "neg", 1: "pos"}
    assert task.dataset_label == str(train)
    # "good film 3" is [CLS] good film [UNK] [SEP]: 5 tokens, over max_length=4 like every row.
    assert task.data_check.truncated_share == 1.0 and task.data_check.unk_share == pytest.approx(1 / 3)
    assert "data check (teacher's tokenizer, 16 training examples)" in capsys.readouterr().out


def test_hf_distill_train_on_a_csv_of_reviews(tmp_path, wordpiece_tokenizer, capsys):
    """The issue's user: a CSV of reviews with their own column names, through the command, no Hub."""
    from transformers import AutoConfig, BertForSequenceClassification

    from hf_distill import cli
    from hf_distill.reports.report import load_report
    from tests.helpers.recipes import save_tiny_teacher, tiny_flags

    teacher = save_tiny_teacher(
        tmp_path / "teacher", BertForSequenceClassification, wordpiece_tokenizer, num_labels=2
    )
    reviews = [
        {"review": f"the cat sat on the mat {i}", "verdict": "pos" if i % 3 else "neg"} for i in range(60)
    ]
    train = _write_csv(tmp_path / "reviews.csv", reviews)
    flags = tiny_flags(tmp_path / "run", teacher_model_name_or_path=teacher, train_file=train)
    flags += ["--run_baseline", "false", "--fine_tune_teacher", "always"]
    assert (
        cli.main(["train", "sentiment", *flags, "--text_column", "review", "--label_column", "verdict"]) == 0
    )
    report = load_report(tmp_path / "run")
    assert report["data"] == {"dataset": str(train), "train_size": 32, "validation_size": 6, "test_size": 6}
    out = capsys.readouterr().out
    assert "data: validation = 6 of the 60 rows" in out
    assert "data check (teacher's tokenizer, 32 training examples)" in out
    # The teacher is fine-tuned on the file's labels; the student built from its layers keeps their names.
    student = AutoConfig.from_pretrained(report["students"][0]["output_dir"])
    assert student.id2label == {0: "neg", 1: "pos"}
