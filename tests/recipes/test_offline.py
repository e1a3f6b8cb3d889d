"""GPT-2's own tokenizer, offline: built from the BPE ranks the openai-whisper package ships."""

from __future__ import annotations

import importlib.util

import pytest

from tests.helpers.xtok import TEXTS

gpt2_asset = pytest.mark.skipif(
    importlib.util.find_spec("whisper") is None or importlib.util.find_spec("tiktoken") is None,
    reason="GPT-2's tokenizer is built from the openai-whisper package (make install puts it in OFFLINE_ASSETS) "
    "read with tiktoken; one of them is not installed",
)


@gpt2_asset
def test_gpt2_tokenizer_offline_has_gpt2_ids(tmp_path):
    from transformers import AutoTokenizer

    from hf_distill.recipes.offline import gpt2_tokenizer_folder

    tokenizer = AutoTokenizer.from_pretrained(gpt2_tokenizer_folder(tmp_path))
    assert tokenizer.is_fast and len(tokenizer) == 50257
    assert tokenizer("def")["input_ids"] == [4299]
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.eos_token_id == 50256
    # Known GPT-2 ids: "Hello world" -> [15496, 995], " the" -> 262, "\n" -> 198.
    assert tokenizer("Hello world")["input_ids"] == [15496, 995]
    assert tokenizer(" the")["input_ids"] == [262] and tokenizer("\n")["input_ids"] == [198]
    for text in TEXTS:
        assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    # Offsets for the alignment: the token " the" covers the space.
    assert tokenizer(" the", return_offsets_mapping=True)["offset_mapping"] == [(0, 4)]
