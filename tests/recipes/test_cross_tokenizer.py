"""The codegen recipe's cross-tokenizer parts: text blocks, bits per byte, the student's run, the arguments."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch
from transformers import default_data_collator

from hf_distill import DistillationTrainer, DistillationTrainingArguments, cli
from hf_distill.cache.codec import TopkCodec
from hf_distill.cache.compact import CROSS_TOKENIZER
from hf_distill.recipes.cross_tokenizer import (
    bits_per_byte,
    cache_for_students,
    join_cache,
    run_cross_tokenizer_students,
    text_blocks,
)
from hf_distill.recipes.student_arguments import StudentArguments
from hf_distill.token_alignment import OFFSETS_COLUMN, TEXT_COLUMN
from tests.helpers.paths import RECIPES
from tests.helpers.xtok import TEXTS, byte_level_tokenizer, metaspace_tokenizer, tiny_gpt2


class Uniform(torch.nn.Module):
    """Logits of zeros: every next token has probability 1 / V."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab, self.weight = vocab, torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None):
        return type("Out", (), {"logits": torch.zeros(*input_ids.shape, self.vocab)})()


def test_text_blocks_keep_the_text_their_tokens_cover():
    tokenizer = metaspace_tokenizer()
    blocks = text_blocks(TEXTS[3:20], tokenizer, block_size=3)
    assert len(blocks) > 10 and all(len(ids) == 3 for ids in blocks["input_ids"])
    for ids, offsets, text in zip(blocks["input_ids"], blocks[OFFSETS_COLUMN], blocks[TEXT_COLUMN]):
        assert tokenizer.decode(ids) == text  # the block's text is exactly what its tokens spell
        assert offsets[0][0] == 0 and offsets[-1][1] == len(text)
        assert [tokenizer.decode([i]) for i in ids] == [text[s:e] for s, e in offsets]


@pytest.mark.parametrize("make", [byte_level_tokenizer, metaspace_tokenizer])
def test_bits_per_byte_of_a_uniform_model_by_hand(make):
    # Uniform over V tokens: each predicted token costs log2(V) bits; the bytes are those the predicted tokens
    # cover (a block's text after its first token, or all of it behind a BOS).
    tokenizer = make()
    texts = TEXTS[:4]
    got = bits_per_byte(Uniform(len(tokenizer)), tokenizer, texts, block_size=6, batch_size=3)
    tokens, scored = 0, 0
    for text in texts:
        encoded = tokenizer(text, return_offsets_mapping=True)
        for start in range(0, len(encoded["input_ids"]), 6):
            ends = [e for _, e in encoded["offset_mapping"][start : start + 6]]
            if len(ends) < 2:
                continue
            tokens += len(ends) - 1
            scored += len(text[ends[0] : ends[-1]].encode())
    assert got["tokens"] == tokens and got["bytes"] == scored
    assert got["bits_per_byte"] == pytest.approx(tokens * math.log2(len(tokenizer)) / scored)
    assert got["perplexity"] == pytest.approx(len(tokenizer))


def test_cross_tokenizer_students_train_from_one_cache(tmp_path):
    teacher_tokenizer, tokenizer = byte_level_tokenizer(), metaspace_tokenizer()
    teacher = tiny_gpt2(len(teacher_tokenizer), seed=1)
    args = DistillationTrainingArguments(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, max_steps=2, per_device_train_batch_size=4,
        per_device_eval_batch_size=4, save_strategy="no", temperature=1.0, disable_tqdm=True,
    )  # fmt: skip
    entries = run_cross_tokenizer_students(
        teacher, teacher_tokenizer, tokenizer, TEXTS[3:20], TEXTS[:3], args, tmp_path,
        block_size=8, n_layer=1, overrides={"n_embd": 16, "n_head": 2, "n_positions": 64},
        losses=("aligned", "uld", None), top_k=4,
    )  # fmt: skip
    assert [e["cross_tokenizer_loss"] for e in entries] == ["aligned", "uld", None]
    assert all(math.isfinite(e["bits_per_byte"]) and e["bits_per_byte"] > 0 for e in entries)
    assert len({round(e["bits_per_byte"], 6) for e in entries}) == 3  # three different trainings
    assert (tmp_path / "students" / "gpt2-tokenizer-1L-aligned" / "config.json").is_file()


def test_student_tokenizer_loss_is_checked():
    with pytest.raises(ValueError, match="student_tokenizer_loss='kl'.*'aligned'.*'uld'"):
        StudentArguments(student_tokenizer_loss="kl")


def test_the_recipe_cache_is_compact_and_trains_like_the_float32_one(tmp_path):
    # The in-memory cache holds 6-bit codes (no float32 top-k column). The aligned loss from it stays near the
    # float32 cache's on the same batches, and the error is quantisation: 8-bit codes come closer. (This tiny
    # teacher, made confident, is a hard case: on SmolLM2-135M's top-32 over code the 6-bit error is ~4e-4 on
    # losses near 5.)
    teacher_tokenizer, tokenizer = byte_level_tokenizer(), metaspace_tokenizer()
    teacher = tiny_gpt2(len(teacher_tokenizer), seed=1)
    with torch.no_grad():  # a confident teacher, so the KD term is far above float rounding
        teacher.transformer.ln_f.weight.mul_(20.0)
    blocks = text_blocks(TEXTS[3:], tokenizer, block_size=6)
    settings = dict(top_k=8, temperature=2.0)
    caches = {
        "compact": cache_for_students(teacher, teacher_tokenizer, blocks[TEXT_COLUMN], **settings),
        "float32": cache_for_students(
            teacher, teacher_tokenizer, blocks[TEXT_COLUMN], **settings, codec=None
        ),
        "8-bit": cache_for_students(
            teacher, teacher_tokenizer, blocks[TEXT_COLUMN], **settings, codec=TopkCodec(value_bits=8)
        ),
    }
    names = CROSS_TOKENIZER
    assert set(names.stored) <= set(caches["compact"].column_names)
    assert names.decoded[0] not in caches["compact"].column_names
    assert names.decoded[0] in caches["float32"].column_names
    args = DistillationTrainingArguments(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, per_device_train_batch_size=4,
        temperature=2.0, alpha=1.0, cross_tokenizer_loss="aligned", disable_tqdm=True,
    )  # fmt: skip
    losses = {}
    for name, cache in caches.items():
        trainer = DistillationTrainer(
            model=tiny_gpt2(len(tokenizer), seed=2), teacher_model=None, args=args,
            train_dataset=join_cache(blocks, cache), data_collator=default_data_collator,
            processing_class=tokenizer, teacher_processing_class=teacher_tokenizer,
        )  # fmt: skip
        batch = trainer.data_collator([dict(trainer.train_dataset[i]) for i in range(4)])
        losses[name] = trainer.compute_loss(trainer.model, batch).item()
    assert losses["float32"] > 0.1
    error, finer = (abs(losses[n] - losses["float32"]) for n in ("compact", "8-bit"))
    assert 0 < error < 5e-3 * losses["float32"]
    assert finer < error


@pytest.mark.parametrize("entry", ["cli", "script"])
def test_student_tokenizer_in_the_codegen_run_of_the_cli_and_the_script(tmp_path, entry):
    # `hf-distill train codegen` and `recipes/codegen.py` take --student_tokenizer alike: the report gets the
    # GPT-2-tokenizer students (distilled and not) and bits per byte of every model, teacher included.
    teacher_tokenizer, tokenizer = byte_level_tokenizer(), metaspace_tokenizer()
    tiny_gpt2(len(teacher_tokenizer), seed=1).save_pretrained(tmp_path / "teacher")
    teacher_tokenizer.save_pretrained(tmp_path / "teacher")
    tokenizer.save_pretrained(tmp_path / "student")
    flags = {
        "teacher_model_name_or_path": tmp_path / "teacher", "student_tokenizer": tmp_path / "student",
        "student_init": "gpt2", "student_num_layers": 1,
        "student_config_overrides": '{"n_embd": 16, "n_head": 2, "n_positions": 64}',
        "output_dir": tmp_path / "run", "max_files": 6, "max_train_samples": 4, "max_test_samples": 2,
        "max_length": 16, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4, "max_steps": 1,
        "report_to": "none", "save_strategy": "no", "use_cpu": "true", "latency_rounds": 1,
        "generation_prompts": 0, "split_seed": 1,
    }  # fmt: skip
    argv = [part for key, value in flags.items() for part in (f"--{key}", str(value))]
    if entry == "cli":
        report = cli.train("codegen", argv)
    else:
        spec = importlib.util.spec_from_file_location("codegen_script", RECIPES / "codegen.py")
        script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(script)
        report = script.main(argv)
    models = report["cross_tokenizer"]["models"]
    names = [m["name"] for m in models]
    assert names[:2] == ["gpt2-tokenizer-1L-aligned", "gpt2-tokenizer-1L-no_kd"] and "teacher" in names
    assert all(math.isfinite(m["bits_per_byte"]) and m["bits_per_byte"] > 0 for m in models)
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert [m["name"] for m in saved["cross_tokenizer"]["models"]] == names
