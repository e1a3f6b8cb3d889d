"""Trainer arguments and small datasets shared by the trainer, fused-loss and cache tests."""

from __future__ import annotations

import torch
from datasets import Dataset

from hf_distill.arguments import DistillationTrainingArguments
from tests.helpers.tiny_models import make_sentences


def make_args(tmp_path, **kw) -> DistillationTrainingArguments:
    defaults = dict(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=8,
        max_steps=4,
        learning_rate=1e-3,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        seed=0,
        data_seed=0,
        disable_tqdm=True,
    )
    defaults.update(kw)
    return DistillationTrainingArguments(**defaults)


def lm_dataset(n: int = 32, length: int = 16, vocab: int = 60, seed: int = 0) -> Dataset:
    """Random token rows with right padding of varying length (labels -100 on padding)."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, vocab, (n, length), generator=g)
    attention = torch.ones(n, length, dtype=torch.long)
    for i in range(n):
        attention[i, length - i % 4 :] = 0
    labels = input_ids.masked_fill(attention == 0, -100)
    return Dataset.from_dict(
        {"input_ids": input_ids.tolist(), "attention_mask": attention.tolist(), "labels": labels.tolist()}
    )


def classification_rows(tokenizer, n=12):
    texts = make_sentences(n, seed=4)
    encoded = tokenizer(texts, truncation=True, max_length=16)
    return Dataset.from_dict({**encoded, "labels": [len(t.split()) % 3 for t in texts]})
