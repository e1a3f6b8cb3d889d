"""Shared fixtures. The tiny models and the tokenizer are built in ``tiny_models.py``."""

from __future__ import annotations

import pytest
from tiny_models import make_wordpiece_tokenizer
from transformers import PreTrainedTokenizerFast


@pytest.fixture(scope="session")
def wordpiece_tokenizer() -> PreTrainedTokenizerFast:
    return make_wordpiece_tokenizer()
