"""Shared fixtures. The tiny models and the tokenizer are built in ``tests/helpers/tiny_models.py``."""

from __future__ import annotations

import pytest
from transformers import PreTrainedTokenizerFast

from tests.helpers.tiny_models import make_wordpiece_tokenizer


@pytest.fixture(scope="session")
def wordpiece_tokenizer() -> PreTrainedTokenizerFast:
    return make_wordpiece_tokenizer()
