"""NER transfer sets: sentences without tags that the distilled student learns from through the teacher alone.

A token-classification transfer row is a list of words, like a labeled NER sentence, whose every label is -100:
the teacher scores every sub-token position it covers (the KD term of :mod:`hf_distill.terms.logits` applies at
each attended position of a row without labels), the task term none. Where the words come from:

* ``--transfer_samples N`` alone: the training sentences past ``max_train_samples``, tags dropped (the same
  corpus; :func:`.data_transfer.rows_past`);
* ``--transfer_file FILE`` (``--text_column``, default ``text``): any text, one example per row or line, read by
  :func:`.data_transfer.load_transfer_file`;
* ``--transfer_source NAME``: English text that is on every machine (:data:`TRANSFER_SOURCES`): ``reviews``, the
  Rotten Tomatoes snippets of the offline sentiment data; ``docstrings``, paragraphs of the Python standard
  library's docstrings.

Text is split into words by the ``tokenizers`` library's ``Whitespace`` pre-tokenizer (runs of word characters,
runs of punctuation), the way the tweets of the offline NER corpus are split (``great !!!``, ``T ...``). The
words then go through the same tokenizing as the labeled sentences; for a WordPiece teacher the split does not
change the sub-tokens at all, for a byte-level BPE one it decides where a word starts.

Neither the teacher's fine-tune nor the no-KD baseline sees these rows (:func:`.training.train_student`).
"""

from __future__ import annotations

from datasets import Dataset, Features, List, Value
from tokenizers.pre_tokenizers import Whitespace

from hf_distill.recipes.data_code import stdlib_docstrings
from hf_distill.recipes.data_common import check_not_empty
from hf_distill.recipes.data_sentiment import load_rotten_tomatoes
from hf_distill.recipes.data_transfer import load_transfer_file, rows_past

# --transfer_source: offline English text, and what each is.
TRANSFER_SOURCES = {
    "reviews": "Rotten Tomatoes review snippets (the sentiment recipe's offline training split)",
    "docstrings": "paragraphs of the Python standard library's docstrings",
}

_WORDS = Whitespace()
# The tags are never read (the caller sets every label to -100); int64 holds the -100 a ClassLabel cannot.
_UNTAGGED = Features({"tokens": List(Value("string")), "ner_tags": List(Value("int64"))})


def check_transfer_source(transfer_source: str | None, transfer_file: str | None = None) -> None:
    """Refuses an unknown ``transfer_source`` and a source given beside a ``transfer_file``.

    Raises:
        ValueError: naming the sources to choose from, or the flag to drop.
    """
    if transfer_source is not None and transfer_source not in TRANSFER_SOURCES:
        raise ValueError(
            f"transfer_source={transfer_source!r} is not an offline text source; choose one of "
            f"{sorted(TRANSFER_SOURCES)} or give your own text with --transfer_file."
        )
    if transfer_source is not None and transfer_file is not None:
        raise ValueError(
            f"both transfer_file={transfer_file!r} and transfer_source={transfer_source!r} were given: the "
            "transfer set comes from one of them; drop one flag."
        )


def split_words(text: str) -> list[str]:
    """``text`` as words: runs of word characters and runs of punctuation, whitespace dropped.

    Args:
        text (str): any text.

    Returns:
        list[str]: its words, in order (empty for whitespace-only text).
    """
    return [word for word, _ in _WORDS.pre_tokenize_str(text)]


def source_texts(source: str, samples: int | None = None) -> Dataset:
    """The texts of a named offline source (:data:`TRANSFER_SOURCES`) as a ``text`` column, the first
    ``samples`` of them.

    Raises:
        ValueError: ``source`` is not one of :data:`TRANSFER_SOURCES`.
    """
    check_transfer_source(source)
    if source == "reviews":
        texts = load_rotten_tomatoes()["train"].select_columns(["text"])
    else:
        texts = Dataset.from_dict({"text": stdlib_docstrings(samples)})
    if samples is not None and samples < len(texts):
        texts = texts.select(range(samples))
    return texts


def word_rows(texts: Dataset) -> Dataset:
    """Untagged sentences from a ``text`` column: ``tokens`` (the words of :func:`split_words`) and ``ner_tags``
    all -100 (no tag: the rows are for the KD term only); texts without a word are dropped."""
    sentences = [words for words in (split_words(text) for text in texts["text"]) if words]
    rows = Dataset.from_dict(
        {"tokens": sentences, "ner_tags": [[-100] * len(words) for words in sentences]},
        features=_UNTAGGED,
    )
    check_not_empty(rows, "transfer")
    return rows


def ner_transfer_sentences(
    train: Dataset,
    labeled_rows: int | None,
    *,
    transfer_file: str | None = None,
    text_column: str | None = None,
    transfer_source: str | None = None,
    samples: int | None = None,
) -> Dataset | None:
    """The NER transfer set as sentences (``tokens``, ``ner_tags``), or None when none is asked for.

    Args:
        train (Dataset): the full training split (before the cut to ``labeled_rows``).
        labeled_rows (int | None): ``max_train_samples``; without a file or source the sentences past it are the
            transfer set.
        transfer_file (str | None): a file of text (:func:`.data_transfer.load_transfer_file`).
        text_column (str | None): its text column (default ``text``).
        transfer_source (str | None): a name of :data:`TRANSFER_SOURCES`.
        samples (int | None): the first ``samples`` texts (``--transfer_samples``).

    Returns:
        Dataset | None: sentences whose tags are never read (the caller sets every label to -100).

    Raises:
        ValueError: both a file and a source were given, the source is unknown, or the file holds no text.
    """
    check_transfer_source(transfer_source, transfer_file)
    if transfer_file is None and transfer_source is None:
        return rows_past(train, labeled_rows, samples, "ner")
    if transfer_file is not None:
        texts = load_transfer_file(transfer_file, text_column)
        if samples is not None and samples < len(texts):
            texts = texts.select(range(samples))
    else:
        texts = source_texts(transfer_source, samples)
    return word_rows(texts)
