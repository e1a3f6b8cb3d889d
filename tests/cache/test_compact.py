"""The compact top-k cache: the codec (hand-checked, error bound), training from it against the float32
cache, Parquet shards written batch by batch, old caches, and refusals of corrupted or mismatched caches."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import default_data_collator

from hf_distill import DistillationTrainer
from hf_distill.cache.build import INPUT_HASH, cache_teacher_outputs
from hf_distill.cache.codec import TopkCodec, codec_from_name
from hf_distill.cache.collator import TeacherCacheCollator
from hf_distill.cache.compact import SAME_TOKENIZER
from hf_distill.cache.shards import MANIFEST, load_teacher_cache
from hf_distill.cache.writer import write_teacher_cache
from hf_distill.losses.topk import per_position_topk
from tests.helpers.tiny_models import tiny_gpt2
from tests.helpers.training import lm_dataset, make_args

# ---- the codec ----------------------------------------------------------------------------------------------


def test_codec_hand_checked_example():
    # One position, k=3, vocabulary 1000, T=1: ids 7, 2, 300 with logits 3, 1, 2 and tail logit 0.5.
    codec = TopkCodec(value_bits=6, scale=4.0)
    encoded = codec.encode(np.array([[3.0, 1.0, 2.0]]), np.array([[7, 2, 300]]), np.array([0.5]), 1.0, 1000)
    # Sorted ids 2, 7, 300 -> gaps 2, 5, 293 = 1 * 256 + 37.
    assert encoded.ids_lo.tolist() == [[2, 5, 37]] and encoded.ids_hi.tolist() == [[0, 0, 1]]
    # d = 3 - z in the ids' order: 2, 0, 1 -> round(63 * (1 - exp(-d / 4))) = round(24.79), 0, round(13.94).
    assert encoded.codes.tolist() == [[25, 0, 14]]
    assert encoded.tail_rel.tolist() == [-2.5]
    values, ids, tail = codec.decode(encoded, temperature=1.0)
    assert ids.tolist() == [[2, 7, 300]] and tail.tolist() == [-2.5]
    # d_hat = -4 ln(1 - q / 63): 2.02219, 0, 1.00526 (true d: 2, 0, 1); values = -d_hat.
    want = [-4 * math.log(63 / 38), 0.0, -4 * math.log(63 / 49)]
    assert values[0].tolist() == pytest.approx(want, abs=1e-6)
    assert want[0] == pytest.approx(-2.02219, abs=1e-5) and want[2] == pytest.approx(-1.00526, abs=1e-5)


@pytest.mark.parametrize("bits", [4, 6, 8])
def test_codec_round_trip_within_the_stated_error(bits):
    g = np.random.default_rng(bits)
    codec, n, k, vocab, temperature = TopkCodec(value_bits=bits, scale=4.0), 200, 16, 50_000, 2.0
    values = g.normal(size=(n, k)) * 4
    indices = np.stack([g.choice(vocab, k, replace=False) for _ in range(n)])
    tail = g.normal(size=n)
    encoded = codec.encode(values, indices, tail, temperature, vocab)
    decoded, ids, tail_back = codec.decode(encoded, temperature)
    order = np.argsort(indices, axis=1)
    assert np.array_equal(ids, np.take_along_axis(indices, order, 1))  # ids exact
    top = values.max(1, keepdims=True) / temperature
    d = np.take_along_axis(top - values / temperature, order, 1)
    d_hat = -decoded / temperature
    assert np.all(d_hat[d == 0] == 0)  # the maximum is exact
    # |d_hat - d| <= -s ln(1 - exp(d / s) / (2 L)) below the last bin (module docstring).
    half_step = np.exp(d / codec.scale) / (2 * codec.levels)
    inside = half_step < 0.5
    bound = -codec.scale * np.log1p(-half_step[inside])
    assert np.all(np.abs(d_hat - d)[inside] <= bound * (1 + 1e-6) + 1e-6)
    assert np.allclose(tail_back, tail - top[:, 0], atol=1e-5)


def test_float16_codec_and_a_vocabulary_beyond_16_bits():
    g = np.random.default_rng(0)
    codec, vocab = TopkCodec(value_bits=16), 200_000
    indices = np.stack([g.choice(vocab, 8, replace=False) for _ in range(5)])
    values = g.normal(size=(5, 8)) * 3
    encoded = codec.encode(values, indices, np.zeros(5), 1.0, vocab)
    assert encoded.ids_hi.dtype == np.uint16 and encoded.codes.dtype == np.uint16
    decoded, ids, _ = codec.decode(encoded, 1.0)
    order = np.argsort(indices, axis=1)
    assert np.array_equal(ids, np.take_along_axis(indices, order, 1))
    d = np.take_along_axis(values.max(1, keepdims=True) - values, order, 1)
    assert np.all(np.abs(-decoded - d) <= d * 2**-11 + 1e-7)


def test_codec_refusals():
    codec = TopkCodec()
    ok = (np.zeros((1, 2)), np.array([[1, 2]]), np.zeros(1), 1.0, 10)
    with pytest.raises(FloatingPointError, match="hold NaN or \\+inf"):
        codec.encode(np.array([[np.nan, 0.0]]), *ok[1:])
    with pytest.raises(FloatingPointError, match="no finite logit"):
        codec.encode(np.full((1, 2), -np.inf), *ok[1:])
    with pytest.raises(ValueError, match="ids span \\[1, 12\\] but the vocabulary has 10 rows"):
        codec.encode(ok[0], np.array([[1, 12]]), *ok[2:])
    with pytest.raises(ValueError, match="repeat an id"):
        codec.encode(ok[0], np.array([[3, 3]]), *ok[2:])
    with pytest.raises(ValueError, match="value_bits=9: a top-k value is stored as a code of 2 to 8 bits"):
        TopkCodec(value_bits=9)
    with pytest.raises(ValueError, match="scale=0 must be a positive number"):
        TopkCodec(scale=0)
    with pytest.raises(ValueError, match="A value code is 80, above the 63 of 6-bit codes: .*corrupted"):
        codec.dequantise(np.array([80]))
    with pytest.raises(ValueError, match="codec 'topk0'.*reads 'topk1'"):
        codec_from_name("topk0 bits=6 scale=4 k=8")
    with pytest.raises(ValueError, match="codec string 'topk1 bits=6' cannot be read"):
        codec_from_name("topk1 bits=6")


# ---- training from a compact cache --------------------------------------------------------------------------


def _train(tmp_path, dataset, name, teacher=None, **kw):
    trainer = DistillationTrainer(
        model=tiny_gpt2(seed=2, hidden=16, layers=1),
        teacher_model=teacher,
        args=make_args(
            tmp_path / name, **{"max_steps": 3, "per_device_train_batch_size": 4, "temperature": 2.0, **kw}
        ),
        train_dataset=dataset,
    )
    trainer.train()
    return [log["loss_kd"] for log in trainer.state.log_history if "loss_kd" in log]


@pytest.mark.parametrize("implementation", ["plain", "fused"])
def test_compact_cache_trains_within_1e_3_of_the_float32_cache(tmp_path, implementation):
    teacher, dataset = tiny_gpt2(seed=1), lm_dataset(n=8)
    with torch.no_grad():  # a confident teacher, so the KD term is far above float rounding
        teacher.transformer.ln_f.weight.mul_(20.0)
    settings = dict(top_k=16, temperature=2.0, batch_size=4)
    float32 = cache_teacher_outputs(teacher, dataset, **settings)
    compact = cache_teacher_outputs(teacher, dataset, codec=TopkCodec(value_bits=6), **settings)
    kw = dict(kd_loss_implementation=implementation, kd_chunk_size=7, alpha=1.0)
    want, got = _train(tmp_path, float32, "f32", **kw), _train(tmp_path, compact, "compact", **kw)
    assert want[0] > 0.01 and len(got) == len(want) == 3
    assert got == pytest.approx(want, rel=1e-3)
    assert got != want  # quantised: close, not identical


def test_compact_batch_decodes_to_the_quantised_float32_batch():
    # The collator's decoded batch (ids in ascending order) against the float32 batch quantised here by hand.
    teacher, dataset = tiny_gpt2(seed=1), lm_dataset(n=4)
    float32 = cache_teacher_outputs(teacher, dataset, top_k=16, temperature=2.0)
    compact = cache_teacher_outputs(teacher, dataset, top_k=16, temperature=2.0, codec=TopkCodec(8))
    collate = TeacherCacheCollator(default_data_collator)
    a, b = collate([float32[i] for i in range(4)]), collate([compact[i] for i in range(4)])
    student = torch.randn(4, 16, 60, generator=torch.Generator().manual_seed(0)) * 3
    names = SAME_TOKENIZER.decoded
    want = per_position_topk(student, *(a[n] for n in names), temperature=2.0)
    got = per_position_topk(student, *(b[n] for n in names), temperature=2.0)
    assert torch.equal(b[names[1]], a[names[1]].sort(-1).values.long())
    values, tail = a[names[0]].double(), a[names[2]].double()
    top = values.max(-1, keepdim=True).values / 2.0
    q = torch.round(255 * (1 - torch.exp(-(top - values / 2.0) / 4.0)))
    quantised = 2.0 * 4.0 * torch.log1p(-q.clamp_max(254.5) / 255)  # -T * d_hat
    reference = per_position_topk(student, quantised, a[names[1]], tail - top[..., 0], temperature=2.0)
    torch.testing.assert_close(got.double(), reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.double(), want.double(), rtol=1e-2, atol=1e-4)  # and near the float32 loss


# ---- shards -------------------------------------------------------------------------------------------------


def test_shards_written_batch_by_batch_equal_one_shard_and_the_in_memory_cache(tmp_path):
    teacher, dataset = tiny_gpt2(seed=1), lm_dataset(n=10)
    settings = dict(top_k=8, temperature=2.0, batch_size=4)
    many = write_teacher_cache(teacher, dataset, tmp_path / "many", rows_per_shard=3, **settings)
    one = write_teacher_cache(teacher, dataset, tmp_path / "one", rows_per_shard=100, **settings)
    assert [s["rows"] for s in many["shards"]] == [3, 3, 3, 1] and len(one["shards"]) == 1
    in_memory = cache_teacher_outputs(teacher, dataset, codec=TopkCodec(), **settings)
    loaded = [load_teacher_cache(tmp_path / name) for name in ("many", "one")]
    assert loaded[0].column_names == loaded[1].column_names == in_memory.column_names
    for i in range(10):
        assert loaded[0][i] == loaded[1][i] == in_memory[i]
    streamed = list(load_teacher_cache(tmp_path / "many", streaming=True))
    assert streamed == [loaded[1][i] for i in range(10)]


def test_a_sharded_cache_trains_like_the_in_memory_one_also_streamed(tmp_path):
    teacher, dataset = tiny_gpt2(seed=1), lm_dataset(n=8)
    settings = dict(top_k=16, temperature=2.0, batch_size=4)
    write_teacher_cache(teacher, dataset, tmp_path / "c", rows_per_shard=3, **settings)
    in_memory = cache_teacher_outputs(teacher, dataset, codec=TopkCodec(), **settings)
    want = _train(tmp_path, in_memory, "mem")
    assert _train(tmp_path, load_teacher_cache(tmp_path / "c"), "disk") == pytest.approx(want, rel=1e-6)
    streamed = load_teacher_cache(tmp_path / "c", streaming=True)
    assert len(_train(tmp_path, streamed, "stream")) == 3


def test_old_float32_caches_still_load_and_train(tmp_path):
    teacher, dataset = tiny_gpt2(seed=1), lm_dataset(n=8)
    old = cache_teacher_outputs(teacher, dataset, top_k=16, temperature=2.0)
    old.save_to_disk(str(tmp_path / "old"))
    loaded = load_teacher_cache(tmp_path / "old")
    assert loaded[3] == old[3]
    float32_shards = write_teacher_cache(
        teacher, dataset, tmp_path / "f32", top_k=16, temperature=2.0, codec=None
    )
    assert float32_shards["settings"]["codec"] is None
    want = _train(tmp_path, old, "old")
    assert _train(tmp_path, load_teacher_cache(tmp_path / "f32"), "f32") == pytest.approx(want, rel=1e-6)


def test_classifier_outputs_in_shards(tmp_path, wordpiece_tokenizer):
    from tests.helpers.tiny_models import tiny_bert_classifier
    from tests.helpers.training import classification_rows

    teacher, dataset = tiny_bert_classifier(seed=1), classification_rows(wordpiece_tokenizer)
    manifest = write_teacher_cache(teacher, dataset, tmp_path / "c", batch_size=5)
    assert manifest["settings"]["codec"] is None and manifest["rows"] == len(dataset)
    loaded, in_memory = load_teacher_cache(tmp_path / "c"), cache_teacher_outputs(teacher, dataset)
    assert np.allclose(loaded[4]["teacher_logits"], in_memory[4]["teacher_logits"], atol=1e-6)
    assert loaded.features["labels"] == dataset.features["labels"]


# ---- refusals -----------------------------------------------------------------------------------------------


@pytest.fixture
def written(tmp_path):
    write_teacher_cache(tiny_gpt2(seed=1), lm_dataset(n=6), tmp_path / "c", top_k=8, rows_per_shard=4)
    return tmp_path / "c"


def test_a_corrupted_shard_is_refused(written):
    shard = written / "shard-00001.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="shard-00001.parquet does not match its BLAKE2b hash.*corrupted"):
        load_teacher_cache(written)
    shard.write_bytes(bytes(data[:-10]))
    with pytest.raises(ValueError, match="has \\d+ bytes, the manifest says \\d+"):
        load_teacher_cache(written, check_hashes=False)
    shard.unlink()
    with pytest.raises(ValueError, match="shard-00001.parquet is missing"):
        load_teacher_cache(written)


def test_an_unfinished_or_foreign_cache_is_refused(written, tmp_path):
    manifest = json.loads((written / MANIFEST).read_text())
    (written / MANIFEST).write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(ValueError, match="version 99; this version of hf_distill reads"):
        load_teacher_cache(written)
    (written / MANIFEST).unlink()
    with pytest.raises(ValueError, match="has no teacher_cache.json: .*did not finish"):
        load_teacher_cache(written)


def test_writing_into_a_used_folder_is_refused_before_the_teacher_runs(written):
    teacher = tiny_gpt2(seed=1)
    calls = []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    with pytest.raises(ValueError, match="already exists and is not an empty folder"):
        write_teacher_cache(teacher, lm_dataset(n=2), written, top_k=8)
    with pytest.raises(ValueError, match="top_k=None: a causal LM's full logits"):
        write_teacher_cache(teacher, lm_dataset(n=2), written.parent / "new")
    assert calls == [] and not (written.parent / "new").exists()


def test_codec_refused_for_a_classifier(wordpiece_tokenizer):
    from tests.helpers.tiny_models import tiny_bert_classifier
    from tests.helpers.training import classification_rows

    with pytest.raises(ValueError, match="compresses a causal LM's top-k logits, but the teacher is a seq"):
        cache_teacher_outputs(
            tiny_bert_classifier(), classification_rows(wordpiece_tokenizer), codec=TopkCodec()
        )
    with pytest.raises(TypeError, match="codec must be a hf_distill.cache.codec.TopkCodec"):
        cache_teacher_outputs(tiny_gpt2(), lm_dataset(n=2), top_k=2, codec="q6")


def test_a_compact_cache_of_other_data_or_temperature_is_refused(tmp_path, written):
    cached = load_teacher_cache(written)
    other = cached.map(lambda r: {"input_ids": r["input_ids"][::-1]})
    with pytest.raises(ValueError, match="differ from those the teacher cache was computed on"):
        _train(tmp_path, other, "other", temperature=1.0)
    with pytest.raises(ValueError, match="computed at temperature 1.0, but training uses temperature=2.0"):
        _train(tmp_path, cached, "temperature")
    assert INPUT_HASH in cached.column_names


def test_a_truncated_row_is_refused(written):
    row = dict(load_teacher_cache(written)[0])
    row[SAME_TOKENIZER.codes] = row[SAME_TOKENIZER.codes][:-3]
    with pytest.raises(ValueError, match="holds 125 entries, but its 16 positions at k=8 need 128"):
        TeacherCacheCollator(default_data_collator)([row])


def test_rows_of_two_codecs_are_refused(written, tmp_path):
    other = cache_teacher_outputs(tiny_gpt2(seed=1), lm_dataset(n=2), top_k=8, codec=TopkCodec(4))
    rows = [dict(load_teacher_cache(written)[0]), dict(other[0])]
    with pytest.raises(ValueError, match="mixes rows of different top-k codecs"):
        TeacherCacheCollator(default_data_collator)(rows)
    assert isinstance(other, Dataset)


def test_a_compact_cross_tokenizer_cache_of_another_text_or_tokenizer_is_refused(tmp_path):
    from hf_distill.cache.compact import CROSS_TOKENIZER
    from hf_distill.token_alignment import TEXT_COLUMN, prepare_cross_tokenizer_dataset
    from tests.helpers.xtok import (
        byte_level_tokenizer,
        first_batch,
        metaspace_tokenizer,
        texts_dataset,
        trainer_for,
    )
    from tests.helpers.xtok import tiny_gpt2 as xtok_gpt2

    teacher_tokenizer, student_tokenizer = byte_level_tokenizer(), metaspace_tokenizer()
    cache = cache_teacher_outputs(
        xtok_gpt2(len(teacher_tokenizer), seed=1), texts_dataset(4), teacher_tokenizer=teacher_tokenizer,
        top_k=8, temperature=2.0, codec=TopkCodec(),
    )  # fmt: skip
    assert CROSS_TOKENIZER.codes in cache.column_names
    rows = prepare_cross_tokenizer_dataset(cache, student_tokenizer, text_column=TEXT_COLUMN)
    edited = rows.map(lambda row: {TEXT_COLUMN: row[TEXT_COLUMN] + " edited"})
    trainer = trainer_for(tmp_path / "a", student_tokenizer, teacher_tokenizer, edited, teacher=None)
    with pytest.raises(
        ValueError, match="other than the one the cross-tokenizer teacher cache was computed on"
    ):
        trainer.compute_loss(trainer.model, first_batch(trainer, [0, 1]))
    other = byte_level_tokenizer(vocab_size=300)
    trainer = trainer_for(tmp_path / "b", student_tokenizer, other, rows, teacher=None)
    with pytest.raises(ValueError, match="made with the teacher tokenizer.*fingerprint.*Pass the tokenizer"):
        trainer.compute_loss(trainer.model, first_batch(trainer, [0, 1]))
    trainer = trainer_for(tmp_path / "c", student_tokenizer, teacher_tokenizer, rows, teacher=None)
    assert torch.isfinite(trainer.compute_loss(trainer.model, first_batch(trainer, [0, 1])))
