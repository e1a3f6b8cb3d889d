"""Task preprocessing for a ``DistillationTrainer``: tokenizing texts for sequence classification, aligning word
labels to sub-tokens for token classification (and checking the tokenizer can), and cutting texts into
fixed-size blocks for a causal LM. The recipes' data loaders feed these, and so can any user's own datasets.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict

from hf_distill.losses.divergences import IGNORE_INDEX


def _byte_level_without_prefix_space(tokenizer: Any) -> bool:
    """True when the backend pre-tokenizer is byte-level BPE that does not add a space before each word.

    The backend is what counts: in transformers 5 a generic tokenizer stores ``add_prefix_space=True`` as an
    attribute without changing its pre-tokenizer, and only the backend decides how words are split.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    found: list[bool] = []

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "ByteLevel":
                found.append(bool(node.get("add_prefix_space", False)))
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(json.loads(backend.to_str()).get("pre_tokenizer"))
    return bool(found) and not any(found)


def check_token_classification_tokenizer(tokenizer: Any) -> None:
    """Raise when ``tokenizer`` cannot align word labels: it must be fast and, if byte-level, add prefix spaces.

    Without a prefix space a byte-level BPE tokenizer (GPT-2, RoBERTa) encodes each pre-split word as if it
    began the text, a different token from the one it is in running text, so the model sees inputs unlike
    those it was trained on.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"{type(tokenizer).__name__} is not a fast tokenizer: label alignment needs `word_ids()`, which only "
            "fast (Rust `tokenizers`) tokenizers provide; load it with AutoTokenizer.from_pretrained(..., use_fast=True)."
        )
    if _byte_level_without_prefix_space(tokenizer):
        raise ValueError(
            f"{type(tokenizer).__name__} is a byte-level BPE tokenizer without add_prefix_space=True: it would encode "
            "each pre-split word as if it started the text; load it with "
            "AutoTokenizer.from_pretrained(..., add_prefix_space=True) (or, for a tokenizer class that ignores that "
            "argument, set a ByteLevel(add_prefix_space=True) pre-tokenizer on tokenizer.backend_tokenizer)."
        )


def tokenize_and_align_labels(
    examples: dict[str, list],
    tokenizer: Any,
    label_all_tokens: bool = False,
    max_length: int = 128,
    *,
    label_list: Sequence[str] | None = None,
    tokens_column: str = "tokens",
    tags_column: str = "ner_tags",
) -> dict[str, list]:
    """Tokenize pre-split words and give each sub-token its word's label; a batched ``Dataset.map`` function.

    Use as ``dataset.map(tokenize_and_align_labels, batched=True, fn_kwargs={"tokenizer": tok, ...},
    remove_columns=...)``. Labels follow ``word_ids()``: the first sub-token of a word gets the word's tag id
    and special tokens get -100 (ignored by the loss).

    Args:
        examples (dict[str, list]): a batch of rows: ``examples[tokens_column]`` holds each row's words,
            ``examples[tags_column]`` each word's tag id.
        tokenizer (PreTrainedTokenizerFast): a fast tokenizer (``word_ids()`` is needed); a byte-level BPE
            one must add a prefix space, or each word would be encoded as if it began the text.
        label_all_tokens (bool): False gives later sub-tokens of a word -100; True gives them the ``I-`` form
            of the word's tag (``B-PER`` -> ``I-PER``, so a word is never counted as two entities), other tags
            unchanged. Default False.
        max_length (int): tokens per row, special tokens included; words past it are truncated away.
            Default 128.
        label_list (Sequence[str] | None): the tag names in id order; needed with ``label_all_tokens=True`` to
            find each ``I-`` id.
        tokens_column (str): the column of words. Default ``"tokens"``.
        tags_column (str): the column of tag ids. Default ``"ner_tags"``.

    Returns:
        BatchEncoding: the tokenizer's columns (``input_ids``, ``attention_mask``, ...) for each row, not
        padded, plus ``labels``: one id (or -100) per token.

    Raises:
        ValueError: a slow tokenizer, a byte-level tokenizer without prefix spaces, ``label_all_tokens=True``
            without ``label_list``, or a ``B-`` tag whose ``I-`` form is not in ``label_list``.
    """
    check_token_classification_tokenizer(tokenizer)
    continuation: dict[int, int] = {}
    if label_all_tokens:
        if label_list is None:
            raise ValueError(
                "label_all_tokens=True needs label_list: later sub-tokens get the I- form of a B- tag, found by "
                "name; pass label_list=ner_data.label_list."
            )
        label2id = {label: i for i, label in enumerate(label_list)}
        for i, label in enumerate(label_list):
            if label.startswith("B-"):
                if "I-" + label[2:] not in label2id:
                    raise ValueError(
                        f"label_list has {label!r} but not {'I-' + label[2:]!r}: label_all_tokens gives later "
                        "sub-tokens the I- form; add it to the label list (ner_label_list does)."
                    )
                continuation[i] = label2id["I-" + label[2:]]
    encoding = tokenizer(
        examples[tokens_column], is_split_into_words=True, truncation=True, max_length=max_length
    )
    all_labels = []
    for batch_index, word_tags in enumerate(examples[tags_column]):
        labels, previous_word = [], None
        for word in encoding.word_ids(batch_index=batch_index):
            if word is None:
                labels.append(IGNORE_INDEX)
            elif word != previous_word:
                labels.append(word_tags[word])
            else:
                tag = word_tags[word]
                labels.append(continuation.get(tag, tag) if label_all_tokens else IGNORE_INDEX)
            previous_word = word
        all_labels.append(labels)
    encoding["labels"] = all_labels
    return encoding


def tokenize_for_classification(
    dataset_dict: DatasetDict,
    tokenizer: Any,
    text_column: str = "text",
    max_length: int = 128,
    *,
    label_column: str = "label",
) -> DatasetDict:
    """Tokenize every split for sequence classification, keeping only the model inputs and ``labels``.

    Truncates to ``max_length`` and does not pad: ``DataCollatorWithPadding`` pads each batch to its own
    longest row, which is far cheaper than padding everything to ``max_length``.

    Args:
        dataset_dict (DatasetDict): the splits; each needs ``text_column`` and ``label_column``.
        tokenizer (PreTrainedTokenizerBase): the student's tokenizer.
        text_column (str): the column of texts. Default ``"text"``.
        max_length (int): tokens per row after truncation, in ``1..tokenizer.model_max_length``. Default 128.
        label_column (str): the column of class ids, renamed to ``labels``. Default ``"label"``.

    Returns:
        DatasetDict: the same splits with the tokenizer's columns (``input_ids``, ``attention_mask``, ...)
        and ``labels``; every other column is dropped.

    Raises:
        ValueError: ``max_length`` out of range, or a split without the text or label column.
    """
    if not 1 <= max_length <= tokenizer.model_max_length:
        raise ValueError(
            f"max_length={max_length} is outside 1..{tokenizer.model_max_length} (the tokenizer's model_max_length): "
            "longer inputs would overflow the model's position embeddings; lower max_length."
        )
    for split, ds in dataset_dict.items():
        for column in (text_column, label_column):
            if column not in ds.column_names:
                raise ValueError(
                    f"split {split!r} has no column {column!r} (it has {ds.column_names}): the text and labels "
                    "are read from it; pass text_column=/label_column= with the right names."
                )

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        return tokenizer(batch[text_column], truncation=True, max_length=max_length)

    tokenized = {}
    for split, ds in dataset_dict.items():
        ds = ds.map(tokenize, batched=True, remove_columns=[c for c in ds.column_names if c != label_column])
        tokenized[split] = ds.rename_column(label_column, "labels") if label_column != "labels" else ds
    return DatasetDict(tokenized)


def chunk_for_causal_lm(
    dataset: Dataset,
    tokenizer: Any,
    block_size: int = 128,
    stride: int | None = None,
    *,
    text_column: str = "text",
) -> Dataset:
    """Tokenize each text, join them with EOS after each, and cut the stream into blocks of ``block_size``.

    The EOS after each text tells the model where one text (e.g. a file) ends, so it does not learn to
    continue one into the next. The tail shorter than a block is dropped, so every block is full and no
    padding is needed.

    Args:
        dataset (Dataset): rows with a text column.
        tokenizer (PreTrainedTokenizerBase): a tokenizer with an EOS token; texts are encoded without special
            tokens.
        block_size (int): tokens per block, in ``2..tokenizer.model_max_length``. Default 128.
        stride (int | None): tokens between block starts, in ``1..block_size``. None means ``block_size``
            (no overlap); a smaller stride makes overlapping blocks, more training windows from the same
            text, but then a perplexity over the blocks counts the overlapped tokens more than once.
        text_column (str): the column of texts. Default ``"text"``.

    Returns:
        Dataset: one row per block with ``input_ids`` (``block_size`` ids), ``attention_mask`` (all ones) and
        ``labels`` (a copy of ``input_ids``: the model shifts them itself).

    Raises:
        ValueError: ``block_size`` or ``stride`` out of range, a tokenizer without EOS, a missing text column,
            or texts shorter in all than one block.
    """
    if block_size < 2:
        raise ValueError(
            f"block_size={block_size} is below 2: a block needs at least one token to predict from another; "
            "pass block_size >= 2 (typically 128-1024)."
        )
    if block_size > tokenizer.model_max_length:
        raise ValueError(
            f"block_size={block_size} exceeds the tokenizer's model_max_length={tokenizer.model_max_length}: the "
            "model has no positions past that; pass block_size <= model_max_length."
        )
    stride = block_size if stride is None else stride
    if not 1 <= stride <= block_size:
        raise ValueError(
            f"stride={stride} is outside 1..block_size={block_size}: it is the step between block starts, and a "
            "larger step would skip tokens; pass a stride in that range, or None for non-overlapping blocks."
        )
    if tokenizer.eos_token_id is None:
        raise ValueError(
            f"{type(tokenizer).__name__} has no eos token: the files are joined with EOS so the model learns "
            "where a file ends; set one, e.g. tokenizer.eos_token = '<|endoftext|>' (a token in its vocabulary)."
        )
    if text_column not in dataset.column_names:
        raise ValueError(
            f"the dataset has no column {text_column!r} (it has {dataset.column_names}): the code is read from "
            "it; pass text_column= with the right name."
        )
    # verbose=False: whole files are longer than model_max_length on purpose; they are cut into blocks below.
    encoded = tokenizer(list(dataset[text_column]), add_special_tokens=False, verbose=False)["input_ids"]
    eos = np.array([tokenizer.eos_token_id], dtype=np.int64)
    stream = np.concatenate(
        [part for ids in encoded for part in (np.asarray(ids, dtype=np.int64), eos)] or [eos[:0]]
    )
    if len(stream) < block_size:
        raise ValueError(
            f"the texts give {len(stream)} tokens, fewer than one block of block_size={block_size}: there "
            "would be no training blocks; add files or lower block_size."
        )
    starts = np.arange(0, len(stream) - block_size + 1, stride)
    blocks = np.stack([stream[s : s + block_size] for s in starts]).tolist()
    return Dataset.from_dict(
        {
            "input_ids": blocks,
            "attention_mask": [[1] * block_size for _ in blocks],
            "labels": [list(b) for b in blocks],
        }
    )


# Bookkeeping columns of windowed evaluation rows (not model inputs): the sentence a window came from, and per
# position the sentence's word index where that word is scored in this window, else -1.
WINDOW_SENTENCE, WINDOW_WORDS = "window_sentence", "window_words"


def word_windows(counts: Sequence[int], budget: int) -> list[tuple[int, int]]:
    """Word ranges ``[start, end)`` covering a sentence whose words have ``counts`` sub-tokens, each range
    within ``budget`` sub-tokens (a single word over it gets a range of its own), consecutive ranges
    overlapping by about half: the next range starts at the middle word of the previous one."""
    windows, start, n = [], 0, len(counts)
    while True:
        end, used = start, 0
        while end < n and used + counts[end] <= budget:
            used, end = used + counts[end], end + 1
        end = max(end, start + 1)  # one word longer than the budget: alone, and cut by the tokenizer
        windows.append((start, end))
        if end >= n:
            return windows
        start = max(start + 1, (start + end) // 2)


def home_windows(windows: Sequence[tuple[int, int]], n_words: int) -> list[int]:
    """For each word, the window in which it is most central (the most words on its shorter side; the first
    such window on a tie): its prediction is taken there, where it has the most context on both sides."""
    home, best = [0] * n_words, [-1] * n_words
    for index, (start, end) in enumerate(windows):
        for word in range(start, end):
            centrality = min(word - start, end - 1 - word)
            if centrality > best[word]:
                home[word], best[word] = index, centrality
    return home


def tokenize_windows_and_align_labels(
    examples: dict[str, list],
    indices: Sequence[int],
    tokenizer: Any,
    max_length: int = 128,
    *,
    tokens_column: str = "tokens",
    tags_column: str = "ner_tags",
) -> dict[str, list]:
    """Like :func:`tokenize_and_align_labels` for evaluation, but nothing is cut: a sentence longer than
    ``max_length`` sub-tokens becomes overlapping windows of whole words (:func:`word_windows`), and each word
    is labelled (first sub-token) in the one window where it is most central (:func:`home_windows`), so every
    word and every gold entity is scored exactly once. A batched ``Dataset.map(..., with_indices=True)``
    function; rows are windows, with ``WINDOW_SENTENCE`` (the sentence's index) and ``WINDOW_WORDS`` (per
    position the sentence's word index where the word is labelled, else -1), which
    :func:`regroup_windows` uses to put the predictions back into whole sentences.
    """
    check_token_classification_tokenizer(tokenizer)
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    if budget < 1:
        raise ValueError(
            f"max_length={max_length} leaves no room for a word beside the tokenizer's special tokens; raise it."
        )
    full = tokenizer(examples[tokens_column], is_split_into_words=True, truncation=False, verbose=False)
    window_words, owners, spans = [], [], []
    for row, words in enumerate(examples[tokens_column]):
        counts = [0] * len(words)
        for word in full.word_ids(batch_index=row):
            if word is not None:
                counts[word] += 1
        windows = word_windows(counts, budget) if words else [(0, 0)]
        home = home_windows(windows, len(words))
        for index, (start, end) in enumerate(windows):
            window_words.append(list(words[start:end]))
            owners.append((row, index, home))
            spans.append(start)
    encoding = tokenizer(window_words, is_split_into_words=True, truncation=True, max_length=max_length)
    labels, positions = [], []
    for window, ((row, index, home), start) in enumerate(zip(owners, spans)):
        row_labels, row_words, previous = [], [], None
        for local in encoding.word_ids(batch_index=window):
            word = None if local is None else start + local
            scored = word is not None and word != previous and home[word] == index
            row_labels.append(examples[tags_column][row][word] if scored else IGNORE_INDEX)
            row_words.append(word if scored else -1)
            previous = word
        labels.append(row_labels)
        positions.append(row_words)
    encoding["labels"] = labels
    encoding[WINDOW_SENTENCE] = [indices[row] for row, _, _ in owners]
    encoding[WINDOW_WORDS] = positions
    return encoding


def regroup_windows(
    predictions: np.ndarray, sentences: Sequence[int], words: Sequence[Sequence[int]], labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Window-level ``predictions (W, T, C)`` and ``labels (W, T)`` (padded with -100 past each window) back
    into sentence-level arrays ``(S, max words, C)`` and ``(S, max words)`` in word order, from the columns
    of :func:`tokenize_windows_and_align_labels`; positions no window scored stay -100."""
    scored = [
        (sentences[w], word, w, p) for w, row in enumerate(words) for p, word in enumerate(row) if word >= 0
    ]
    n_sentences = max(sentences) + 1 if len(sentences) else 0
    n_words = max((word for _, word, _, _ in scored), default=-1) + 1
    out_predictions = np.zeros((n_sentences, n_words, predictions.shape[-1]), dtype=predictions.dtype)
    out_labels = np.full((n_sentences, n_words), IGNORE_INDEX, dtype=np.int64)
    for sentence, word, w, p in scored:
        out_predictions[sentence, word] = predictions[w, p]
        out_labels[sentence, word] = labels[w, p]
    return out_predictions, out_labels
