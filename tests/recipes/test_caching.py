"""`hf-distill cache-teacher codegen`: a compact sharded cache, and a cross-tokenizer cache with
`--teacher_tokenizer` that trains a student of another tokenizer without the teacher, as the live teacher does."""

from __future__ import annotations

import pytest
import torch
from transformers import DataCollatorForLanguageModeling

from hf_distill import DistillationTrainer, DistillationTrainingArguments, cli
from hf_distill.cache.build import XTOK_ALL_COLUMNS
from hf_distill.cache.compact import CROSS_TOKENIZER, SAME_TOKENIZER
from hf_distill.cache.shards import load_teacher_cache
from tests.helpers.xtok import byte_level_tokenizer, metaspace_tokenizer, tiny_gpt2

DATA = ["--max_files", "6", "--max_train_samples", "6", "--max_length", "16", "--split_seed", "1"]
RUN = [
    "--use_cpu",
    "true",
    "--report_to",
    "none",
    "--per_device_eval_batch_size",
    "4",
    "--temperature",
    "2.0",
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    teacher_tokenizer, student_tokenizer = byte_level_tokenizer(), metaspace_tokenizer()
    teacher = tiny_gpt2(len(teacher_tokenizer), seed=1)
    with torch.no_grad():  # a confident teacher, so the KD term is far above float rounding
        teacher.transformer.ln_f.weight.mul_(10.0)
    teacher.save_pretrained(root / "teacher")
    teacher_tokenizer.save_pretrained(root / "teacher")
    student_tokenizer.save_pretrained(root / "student")
    return root


def test_cache_teacher_codegen_writes_compact_shards(folders, tmp_path):
    flags = ["--teacher_model_name_or_path", str(folders / "teacher"), "--top_k", "8"]
    flags += ["--cache_dir", str(tmp_path / "c"), "--output_dir", str(tmp_path / "o"), *DATA, *RUN]
    assert cli.main(["cache-teacher", "codegen", *flags]) == 0
    rows = load_teacher_cache(tmp_path / "c")
    assert len(rows) == 6 and SAME_TOKENIZER.codes in rows.column_names
    assert len(rows[0][SAME_TOKENIZER.codes]) == 16 * 8 and rows[0]["teacher_temperature"] == 2.0


def test_cache_teacher_with_teacher_tokenizer_trains_like_the_live_teacher(folders, tmp_path):
    teacher_dir, student_dir = str(folders / "teacher"), str(folders / "student")
    flags = ["--teacher_model_name_or_path", teacher_dir, "--teacher_tokenizer", teacher_dir]
    flags += ["--student_tokenizer", student_dir, "--top_k", "320", "--cache_dir", str(tmp_path / "c")]
    assert (
        cli.main(["cache-teacher", "codegen", *flags, "--output_dir", str(tmp_path / "o"), *DATA, *RUN]) == 0
    )
    rows = load_teacher_cache(tmp_path / "c")
    assert len(rows) == 6 and CROSS_TOKENIZER.codes in rows.column_names
    assert rows[0]["xtok_teacher_fingerprint"] and "input_ids" in rows.column_names
    student_tokenizer, teacher_tokenizer = metaspace_tokenizer(), byte_level_tokenizer()
    from transformers import AutoModelForCausalLM

    def trainer(train, teacher):
        args = DistillationTrainingArguments(
            output_dir=str(tmp_path / "t"), report_to="none", use_cpu=True, temperature=2.0, alpha=1.0,
            cross_tokenizer_loss="aligned", per_device_train_batch_size=3, max_steps=1, save_strategy="no",
        )  # fmt: skip
        return DistillationTrainer(
            model=tiny_gpt2(len(student_tokenizer), seed=2),
            teacher_model=teacher,
            args=args,
            train_dataset=train,
            data_collator=DataCollatorForLanguageModeling(student_tokenizer, mlm=False),
            processing_class=student_tokenizer,
            teacher_processing_class=teacher_tokenizer,
        )

    cached = trainer(rows, None)
    stored = [c for c in rows.column_names if c in XTOK_ALL_COLUMNS]
    live = trainer(rows.remove_columns(stored), AutoModelForCausalLM.from_pretrained(teacher_dir))
    live.model.load_state_dict(cached.model.state_dict())
    for batch in ([0, 1, 2], [3, 4, 5]):
        got = cached.compute_loss(cached.model, cached.data_collator([dict(rows[i]) for i in batch]))
        want = live.compute_loss(live.model, live.data_collator([dict(live.train_dataset[i]) for i in batch]))
        assert want.item() > 0.05
        assert got.item() == pytest.approx(want.item(), rel=1e-3)


def test_cache_teacher_refusals(folders, tmp_path):
    flags = ["--teacher_model_name_or_path", str(folders / "teacher"), "--cache_dir", str(tmp_path / "c")]
    flags += ["--output_dir", str(tmp_path / "o"), *RUN]
    with pytest.raises(ValueError, match="writes a cross-tokenizer cache, which is for causal LMs"):
        cli.cache_teacher("sentiment", [*flags, "--teacher_tokenizer", str(folders / "teacher")])
    with pytest.raises(ValueError, match="cache_format='zip' is not one of"):
        cli.cache_teacher("codegen", [*flags, "--cache_format", "zip"])
    with pytest.raises(ValueError, match="value_bits=12: a top-k value is stored as a code of 2 to 8 bits"):
        cli.cache_teacher("codegen", [*flags, "--value_bits", "12"])
