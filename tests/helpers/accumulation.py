"""Tiny dropout-free models, random rows of uneven length and a gradient recorder, for the tests that split one
global batch differently (gradient accumulation, several processes) and expect the same step."""

from __future__ import annotations

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    GPT2Config,
    GPT2LMHeadModel,
    TrainerCallback,
)

RTOL, ATOL = 1e-4, 1e-6
# Logged loss parts near 0 (loss_kd of a student close to its teacher) are float32 differences of nearly equal
# sums: another summation order moves them by ~1e-8 absolute, beyond RTOL of their size.
ATOL_LOSS = 1e-7
VOCAB = 40
SPLITS = [(8, 1), (2, 4), (1, 8)]  # (per-device batch, accumulation steps): global batch 8 each


def bert(kind, hidden: int, layers: int, seed: int):
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=32,
        num_labels=3,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return kind(config)


def gpt2(hidden: int, layers: int, seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=VOCAB, n_embd=hidden, n_layer=layers, n_head=2, n_positions=32, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    return GPT2LMHeadModel(config)


def rows(task: str, n: int = 8, seed: int = 0) -> list[dict]:
    """Random rows of 3..12 tokens; token labels are -100 on about a third of the tokens (sub-words)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(3, 13, (1,), generator=g))
        ids = torch.randint(1, VOCAB, (length,), generator=g)
        row = {"input_ids": ids.tolist()}
        if task == "sequence":
            row["labels"] = int(torch.randint(0, 3, (1,), generator=g))
        elif task == "token":
            labels = torch.randint(0, 3, (length,), generator=g)
            row["labels"] = labels.masked_fill(torch.rand(length, generator=g) < 0.35, -100).tolist()
        out.append(row)
    return out


def collate(batch: list[dict]) -> dict[str, torch.Tensor]:
    """Right-pads each micro-batch to its own longest row (so micro-batches differ in width)."""
    width = max(len(r["input_ids"]) for r in batch)
    ids = torch.zeros((len(batch), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    token_labels = torch.full_like(ids, -100)
    for i, r in enumerate(batch):
        n = len(r["input_ids"])
        ids[i, :n], mask[i, :n] = torch.tensor(r["input_ids"]), 1
        if isinstance(r.get("labels"), list):
            token_labels[i, :n] = torch.tensor(r["labels"])
    out = {"input_ids": ids, "attention_mask": mask}
    if "labels" not in batch[0]:
        out["labels"] = ids.masked_fill(mask == 0, -100)  # causal LM: predict the real tokens only
    elif isinstance(batch[0]["labels"], list):
        out["labels"] = token_labels
    else:
        out["labels"] = torch.tensor([r["labels"] for r in batch])
    return out


def models(task: str):
    if task == "causal":
        return gpt2(16, 2, seed=2), gpt2(32, 4, seed=1)
    kind = BertForSequenceClassification if task == "sequence" else BertForTokenClassification
    return bert(kind, 16, 2, seed=2), bert(kind, 32, 4, seed=1)


class GradientGrab(TrainerCallback):
    """Copies every gradient the optimizer is about to apply (student and projections)."""

    def __init__(self):
        self.grads: list[torch.Tensor] = []

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.grads = [p.grad.detach().clone() for g in optimizer.param_groups for p in g["params"]]
