"""Tiny models and data shared by the tests of hf_distill.modes (random BERT / GPT-2, random token ids).

The models come from ``tests/helpers/tiny_models.py``, with these tests' sizes and vocabulary.
"""

from __future__ import annotations

from functools import partial

import torch
from datasets import Dataset

from tests.helpers import tiny_models
from tests.helpers.tiny_models import CONFIG_DEFAULT_DROPOUT, tiny_bert_classifier

VOCAB = 50


# The mode tests' own sizes and vocabulary, with the configs' default dropout they were written against.
tiny_bert = partial(
    tiny_bert_classifier, vocab_size=VOCAB, hidden=16, positions=32, dropout=CONFIG_DEFAULT_DROPOUT
)
tiny_gpt2 = partial(
    tiny_models.tiny_gpt2,
    vocab_size=VOCAB,
    hidden=16,
    bos_token_id=1,
    eos_token_id=2,
    dropout=CONFIG_DEFAULT_DROPOUT,
)


def classification_data(n: int = 16, length: int = 8, num_labels: int = 3, seed: int = 0) -> Dataset:
    """Random token ids with a label that depends on the first token, and one padded position per row."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, VOCAB, (n, length), generator=generator)
    attention_mask = torch.ones(n, length, dtype=torch.long)
    attention_mask[:, -1] = 0
    input_ids[:, -1] = 0
    labels = input_ids[:, 0] % num_labels
    return Dataset.from_dict(
        {
            "input_ids": input_ids.tolist(),
            "attention_mask": attention_mask.tolist(),
            "labels": labels.tolist(),
        }
    )


def batch_of(dataset: Dataset) -> dict[str, torch.Tensor]:
    return {k: torch.tensor(dataset[k]) for k in dataset.column_names}
