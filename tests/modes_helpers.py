"""Tiny models and data shared by the tests of hf_distill.modes (random BERT / GPT-2, random token ids)."""

from __future__ import annotations

import torch
from datasets import Dataset
from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel

VOCAB = 50


def tiny_bert(seed: int = 0, hidden: int = 16, layers: int = 2, heads: int = 2, num_labels: int = 3, **kw):
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 2,
        max_position_embeddings=32,
        num_labels=num_labels,
        **kw,
    )
    return BertForSequenceClassification(config)


def tiny_gpt2(seed: int = 0, hidden: int = 16, layers: int = 2):
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=VOCAB,
        n_embd=hidden,
        n_layer=layers,
        n_head=2,
        n_positions=64,
        bos_token_id=1,
        eos_token_id=2,
    )
    return GPT2LMHeadModel(config)


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
