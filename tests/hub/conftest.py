"""Fixtures of the hub tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def saved_student(tmp_path_factory) -> Path:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=2,
    )
    folder = tmp_path_factory.mktemp("student")
    student = BertForSequenceClassification(config)
    # The record every student saved by hf_distill carries (a push refuses a model without it).
    student.config.distillation = {"teacher": "someone/teacher", "init": "random"}
    student.save_pretrained(folder)
    return folder
