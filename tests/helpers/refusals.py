"""Tiny models, a word-level tokenizer, short rows and one-step arguments for the bad-input tests, the non-finite
values every finite check must refuse, and the check that a refusal came before any optimizer step."""

from __future__ import annotations

import math

import pytest
import torch
from tokenizers import Tokenizer, models
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.trainer import DistillationTrainer

NON_FINITE = [math.nan, math.inf, -math.inf]


def args(tmp_path, **kw) -> DistillationTrainingArguments:
    return DistillationTrainingArguments(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, max_steps=1, per_device_train_batch_size=2,
        save_strategy="no", disable_tqdm=True, **kw,
    )  # fmt: skip


def bert(seed: int = 0, hidden: int = 16, layers: int = 2, num_labels: int = 3, **kw):
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=2 * hidden, max_position_embeddings=16, num_labels=num_labels, **kw,
    )  # fmt: skip
    return BertForSequenceClassification(config)


def gpt2(vocab_size: int, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_embd=16, n_layer=2, n_head=2, n_positions=16))


def tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(["[UNK]", "[PAD]", *words])}
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="[UNK]")),
        unk_token="[UNK]",
        pad_token="[PAD]",
    )


def rows(n: int = 4) -> list[dict]:
    return [{"input_ids": [2, 3, 4, 5][: 2 + i % 3], "labels": i % 3} for i in range(n)]


def collate(batch: list[dict]) -> dict[str, torch.Tensor]:
    width = max(len(r["input_ids"]) for r in batch)
    ids = torch.tensor([r["input_ids"] + [0] * (width - len(r["input_ids"])) for r in batch])
    return {
        "input_ids": ids,
        "attention_mask": (ids != 0).long(),
        "labels": torch.tensor([r["labels"] for r in batch]),
    }


def train_and_expect(trainer: DistillationTrainer, error, match: str) -> None:
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(error, match=match):
        trainer.train()
    assert trainer.state.global_step == 0
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, before[key]), key
