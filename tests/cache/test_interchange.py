"""Our teacher cache in Axolotl's and DistillKit's logit-dataset formats, and theirs in ours.

The references are written here from the formats' definitions (Axolotl's KD columns and alignment;
DistillKit's compressed rows, decoded bit by bit with ``struct``), independent of the module's code: the
teacher's distribution comes straight from the teacher's logits, and a foreign dataset built by hand the way
those tools write it trains here exactly like our own cache of the same teacher.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch
from datasets import Dataset

from hf_distill import DistillationTrainer
from hf_distill.cache.axolotl import from_axolotl, to_axolotl
from hf_distill.cache.build import TAIL_LOGIT, TOPK_INDICES, TOPK_LOGITS, cache_teacher_outputs
from hf_distill.cache.codec import TopkCodec
from hf_distill.cache.distillkit import (
    LogprobCompression,
    compress_logprobs,
    decompress_logprobs,
    from_distillkit,
    pack_bits,
    to_distillkit,
)
from tests.helpers.tiny_models import tiny_gpt2
from tests.helpers.training import lm_dataset, make_args

K, VOCAB = 8, 60


@pytest.fixture(scope="module")
def teacher():
    model = tiny_gpt2(seed=1)
    with torch.no_grad():  # a confident teacher: most mass in the top-k, the tail still visible
        model.transformer.ln_f.weight.mul_(6.0)
    return model.eval()


def teacher_logprobs(teacher, row, temperature: float) -> torch.Tensor:
    """Reference: the teacher's full log-probabilities at ``temperature`` for one row, float64."""
    with torch.no_grad():
        logits = teacher(
            torch.tensor([row["input_ids"]]), attention_mask=torch.tensor([row["attention_mask"]])
        )
    return torch.log_softmax(logits.logits[0].double() / temperature, -1)


def coarse(row, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """Reference: a float32 cache row's ids (sorted) and the probabilities ``softmax([z / T, tail])``."""
    values, ids, tail = (np.asarray(row[c], np.float64) for c in (TOPK_LOGITS, TOPK_INDICES, TAIL_LOGIT))
    full = np.concatenate([values / temperature, tail[:, None]], -1)
    probs = np.exp(full - np.logaddexp.reduce(full, -1, keepdims=True))
    order = np.argsort(ids, -1)
    return np.take_along_axis(ids, order, -1), np.concatenate(
        [np.take_along_axis(probs[:, :-1], order, -1), probs[:, -1:]], -1
    )


def kd_losses(tmp_path, dataset, name: str, temperature: float) -> list[float]:
    trainer = DistillationTrainer(
        model=tiny_gpt2(seed=2, hidden=16, layers=1),
        args=make_args(tmp_path / name, max_steps=2, per_device_train_batch_size=4, temperature=temperature),
        train_dataset=dataset,
    )
    trainer.train()
    losses = [log["loss_kd"] for log in trainer.state.log_history if "loss_kd" in log]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    return losses


# ---- Axolotl --------------------------------------------------------------------------------------------------


def test_to_axolotl_is_aligned_to_the_next_token_and_holds_the_teachers_renormalized_top_k(teacher):
    rows = lm_dataset(n=4, vocab=VOCAB)
    cache = cache_teacher_outputs(teacher, rows, top_k=K, temperature=2.0, codec=TopkCodec(value_bits=16))
    for temperature, normalize in [(None, True), (1.0, True), (None, False)]:
        theirs = to_axolotl(cache, normalize=normalize, temperature=temperature)
        assert theirs.column_names == [
            "input_ids", "attention_mask", "labels", "target_token_ids", "target_logprobs", "target_mask",
        ]  # fmt: skip
        for i in range(4):
            row, out = rows[i], theirs[i]
            reference = teacher_logprobs(teacher, row, temperature or 2.0)
            mask = np.asarray(out["target_mask"])
            labels = np.asarray(row["labels"])
            # Row j targets input_ids[j + 1]: trained where labels[j + 1] is, never at the last position.
            assert mask.shape == (16, K) and mask[-1].sum() == 0
            assert (mask[:-1, 0] == (labels[1:] != -100)).all() and (mask == mask[:, :1]).all()
            for j in np.flatnonzero(mask[:, 0]):
                ids = torch.tensor(out["target_token_ids"][j])
                assert set(ids.tolist()) == set(reference[j].topk(K).indices.tolist())
                want = reference[j][ids]
                if normalize:  # Axolotl's convention: the top-k renormalized at the KD temperature
                    want = want - torch.logsumexp(want, 0)
                got = torch.tensor(out["target_logprobs"][j], dtype=torch.float64)
                torch.testing.assert_close(got, want, atol=2e-3, rtol=0)  # float16 values (value_bits=16)


def test_ours_to_axolotl_to_ours_is_the_same_cache(teacher):
    cache = cache_teacher_outputs(teacher, lm_dataset(n=6, vocab=VOCAB), top_k=K, temperature=2.0)
    back = from_axolotl(to_axolotl(cache, normalize=False), temperature=2.0)
    for i in range(6):
        want_ids, want = coarse(cache[i], 2.0)
        got_ids, got = coarse(back[i], 2.0)
        trained = np.asarray(cache[i]["labels"])[1:] != -100
        assert np.array_equal(got_ids[:-1][trained], want_ids[:-1][trained])
        np.testing.assert_allclose(got[:-1][trained], want[:-1][trained], atol=1e-6)
        assert back[i]["teacher_input_hash"] == cache[i]["teacher_input_hash"]
    # Renormalized (Axolotl's offline convention), the tail is dropped: the top-k alone, summing to 1.
    dropped = from_axolotl(to_axolotl(cache), temperature=2.0)
    _, got = coarse(dropped[0], 2.0)
    _, want = coarse(cache[0], 2.0)
    np.testing.assert_allclose(got[:-1, -1], 0.0, atol=1e-7)
    np.testing.assert_allclose(
        got[:-1, :-1], want[:-1, :-1] / want[:-1, :-1].sum(-1, keepdims=True), atol=1e-6
    )
    # Compact both ways: the same codes.
    compact = cache_teacher_outputs(
        teacher, lm_dataset(n=6, vocab=VOCAB), top_k=K, temperature=2.0, codec=TopkCodec()
    )
    again = from_axolotl(
        to_axolotl(compact, normalize=False), temperature=2.0, codec=TopkCodec(), vocab_size=VOCAB
    )
    for i in range(6):  # the same codes at every trained position (the others hold a placeholder)
        trained = np.repeat(np.asarray(compact[i]["labels"])[1:] != -100, K)
        got, want = (np.asarray(r[i]["teacher_topk_codes"])[: 15 * K] for r in (again, compact))
        assert np.array_equal(got[trained], want[trained]) and trained.sum() > 0


def axolotl_rows_by_hand(teacher, rows: Dataset) -> Dataset:
    """An Axolotl KD dataset as its online path writes one from vLLM's prompt log-probabilities at T=1: the
    true top-k log-probabilities (not renormalized), row j for token j + 1, the last row padding."""
    out = {
        c: []
        for c in (
            "input_ids",
            "attention_mask",
            "labels",
            "target_token_ids",
            "target_logprobs",
            "target_mask",
        )
    }
    for row in rows:
        reference = teacher_logprobs(teacher, row, 1.0)
        top = reference.topk(K)
        labels = row["labels"]
        mask = [[int(j + 1 < len(labels) and labels[j + 1] != -100)] * K for j in range(len(labels))]
        ids = top.indices.tolist()
        logprobs = top.values.tolist()
        ids[-1], logprobs[-1] = list(range(K)), [-1e9] * K
        for name, value in zip(out, (row["input_ids"], row["attention_mask"], labels, ids, logprobs, mask)):
            out[name].append(value)
    return Dataset.from_dict(out)


def test_an_axolotl_dataset_trains_here_like_our_own_cache(teacher, tmp_path):
    rows = lm_dataset(n=8, vocab=VOCAB)
    ours = cache_teacher_outputs(teacher, rows, top_k=K, temperature=1.0)
    theirs = from_axolotl(axolotl_rows_by_hand(teacher, rows), temperature=1.0)
    want = kd_losses(tmp_path, ours, "ours", 1.0)
    assert kd_losses(tmp_path, theirs, "axolotl", 1.0) == pytest.approx(want, rel=1e-5)


def test_axolotl_refusals(teacher):
    rows = lm_dataset(n=2, vocab=VOCAB)
    cache = cache_teacher_outputs(teacher, rows, top_k=K, temperature=2.0)
    with pytest.raises(
        ValueError, match="tail's mass at another temperature than the cache's is not in the cache"
    ):
        to_axolotl(cache, normalize=False, temperature=1.0)
    with pytest.raises(ValueError, match="has no top-k teacher columns"):
        to_axolotl(rows)
    good = axolotl_rows_by_hand(teacher, rows)
    with pytest.raises(ValueError, match="lacks Axolotl's KD columns \\['target_mask'\\]"):
        from_axolotl(good.remove_columns("target_mask"))
    short = good.map(lambda r: {"target_logprobs": r["target_logprobs"][:-1]})
    with pytest.raises(ValueError, match="Row 0: .* must all be \\(T, k\\) with T = 16 input_ids"):
        from_axolotl(short)
    nan = good.map(lambda r: {"target_logprobs": [[float("nan")] * K] + r["target_logprobs"][1:]})
    with pytest.raises(FloatingPointError, match="Row 0 holds NaN or positive log-probabilities"):
        from_axolotl(nan)
    partial = good.map(lambda r: {"target_mask": [[1] * (K - 1) + [0]] + r["target_mask"][1:]})
    with pytest.raises(ValueError, match="masks some of its top-k entries"):
        from_axolotl(partial)
    with pytest.raises(ValueError, match="codec= needs vocab_size="):
        from_axolotl(good, codec=TopkCodec())
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        from_axolotl(good, temperature=float("nan"))


# ---- DistillKit -----------------------------------------------------------------------------------------------


def test_distillkit_codec_hand_checked_example():
    # k = 3 log-probabilities -0.5, -1.5, -3.5; delta coded -0.5, -1.0, -2.0; the first exact (float32), the
    # other two in one 4-bit bin: scale = max|r| / 2**3 = 0.25, codes rint(r / 0.25) + 8 = 4, 0.
    config = LogprobCompression.from_dict(
        {
            "d": 60,
            "k": 3,
            "exact_k": 1,
            "residual_bins": [{"scale_dtype": "float32", "element_bits": 4, "num_elements": 2}],
        }
    )
    data = compress_logprobs(np.array([[-0.5, -1.5, -3.5]]), config)
    want = list(struct.pack("<f", -0.5)) + list(struct.pack("<f", 0.25)) + [0b0100_0000]
    assert data.tolist() == [want]
    assert decompress_logprobs(data, config).tolist() == [[-0.5, -1.5, -3.5]]
    # Ids 5 and 3 at 6 bits (d = 60): 000101 000011, padded: 00010100 00110000.
    assert pack_bits(np.array([[5, 3]]), config.index_bits).tolist() == [[0b00010100, 0b00110000]]


def reference_decode(data: list[int], k: int, exact_k: int, bins: list[tuple[int, int]]) -> list[float]:
    """DistillKit's compressed position, read byte by byte: exact float32 values, then per bin a float32 scale
    and big-endian ``bits``-bit codes, then the running sum (delta coding)."""
    raw = bytes(data)
    values = list(struct.unpack(f"<{exact_k}f", raw[: 4 * exact_k]))
    at = 4 * exact_k
    for count, bits in bins:
        (scale,) = struct.unpack("<f", raw[at : at + 4])
        stream = "".join(f"{b:08b}" for b in raw[at + 4 : at + 4 + (count * bits + 7) // 8])
        values += [
            (int(stream[i * bits : (i + 1) * bits], 2) - 2 ** (bits - 1)) * scale for i in range(count)
        ]
        at += 4 + (count * bits + 7) // 8
    values += [0.0] * (k - len(values))
    return list(np.cumsum(values))


def test_to_distillkit_rows_decode_to_the_teachers_top_k_at_temperature_1(teacher):
    rows = lm_dataset(n=3, vocab=VOCAB)
    cache = cache_teacher_outputs(teacher, rows, top_k=K, temperature=1.0)
    bins = [(4, 8), (3, 4)]
    config = {
        "d": VOCAB, "k": K, "exact_k": 1, "delta_encoding": True,
        "residual_bins": [{"scale_dtype": "float32", "element_bits": b, "num_elements": n} for n, b in bins],
    }  # fmt: skip
    theirs, written = to_distillkit(cache, config=config)
    assert written["k"] == K and written["residual_bins"][0]["element_bits"] == 8
    for i in range(3):
        row, out = rows[i], theirs[i]
        n = sum(row["attention_mask"])
        assert out["input_ids"] == row["input_ids"][:n] and len(out["compressed_logprobs"]) == n - 1
        reference = teacher_logprobs(teacher, row, 1.0)
        for j in range(n - 1):
            top = reference[j].topk(K)
            stream = "".join(f"{b:08b}" for b in out["bytepacked_indices"][j])
            ids = [int(stream[6 * m : 6 * m + 6], 2) for m in range(K)]  # 6 bits for d = 60, by rank
            assert ids[0] == int(top.indices[0]) and set(ids) == set(top.indices.tolist())
            got = reference_decode(out["compressed_logprobs"][j], K, 1, bins)
            np.testing.assert_allclose(got, top.values.numpy(), atol=0.08)  # a 4-bit tail bin
            assert got[0] == pytest.approx(float(top.values[0]), abs=1e-6)  # the exact one


def test_ours_to_distillkit_to_ours_is_the_same_cache(teacher):
    rows = lm_dataset(n=5, vocab=VOCAB).map(lambda r: {"attention_mask": [1] * 16, "labels": r["input_ids"]})
    cache = cache_teacher_outputs(teacher, rows, top_k=K, temperature=1.0)
    theirs, config = to_distillkit(cache, vocab_size=VOCAB)  # exact float32 values
    back = from_distillkit(theirs, config)
    for i in range(5):
        want_ids, want = coarse(cache[i], 1.0)
        got_ids, got = coarse(back[i], 1.0)
        assert np.array_equal(got_ids[:-1], want_ids[:-1])
        np.testing.assert_allclose(got[:-1], want[:-1], atol=1e-6)
        assert back[i]["teacher_input_hash"] == cache[i]["teacher_input_hash"]
    raw = theirs.map(  # DistillKit's raw rows (token_ids / top_values) read the same
        lambda r: dict(zip(("token_ids", "top_values"), from_distillkit_sparse(r, config))),
        remove_columns=["compressed_logprobs", "bytepacked_indices"],
    )
    again = from_distillkit(raw)
    assert [again[i]["teacher_topk_logits"] for i in range(5)] == [
        back[i]["teacher_topk_logits"] for i in range(5)
    ]


def from_distillkit_sparse(row, config):
    compression = LogprobCompression.from_dict(config)
    values = decompress_logprobs(np.asarray(row["compressed_logprobs"], np.uint8), compression)
    stream = ["".join(f"{b:08b}" for b in packed) for packed in row["bytepacked_indices"]]
    bits = compression.index_bits
    ids = [[int(s[bits * m : bits * m + bits], 2) for m in range(K)] for s in stream]
    return ids, values.tolist()


def distillkit_rows_by_hand(teacher, rows: Dataset) -> tuple[Dataset, dict]:
    """DistillKit rows as its capture writes them with an exact float32 config: per position after the first
    token, the teacher's top-k log-probabilities at T=1 sorted descending (float32 bytes) and the ids packed
    at 6 bits, most significant first."""
    out = {"input_ids": [], "compressed_logprobs": [], "bytepacked_indices": []}
    for row in rows:
        top = teacher_logprobs(teacher, row, 1.0)[:-1].topk(K)
        out["input_ids"].append(row["input_ids"])
        out["compressed_logprobs"].append([list(struct.pack(f"<{K}f", *v)) for v in top.values.tolist()])
        packed = []
        for ids in top.indices.tolist():
            stream = "".join(f"{i:06b}" for i in ids).ljust(48, "0")
            packed.append([int(stream[b : b + 8], 2) for b in range(0, 48, 8)])
        out["bytepacked_indices"].append(packed)
    config = {"d": VOCAB, "k": K, "exact_k": K, "residual_bins": [], "delta_encoding": False}
    return Dataset.from_dict(out), config


def test_a_distillkit_dataset_trains_here_like_our_own_cache(teacher, tmp_path):
    rows = lm_dataset(n=8, vocab=VOCAB).map(lambda r: {"attention_mask": [1] * 16, "labels": r["input_ids"]})
    ours = cache_teacher_outputs(teacher, rows, top_k=K, temperature=1.0)
    data, config = distillkit_rows_by_hand(teacher, rows)
    theirs = from_distillkit(data, config, codec=TopkCodec(value_bits=16))
    want = kd_losses(tmp_path, ours, "ours", 1.0)
    assert kd_losses(tmp_path, theirs, "distillkit", 1.0) == pytest.approx(want, rel=1e-3)
    exact = from_distillkit(data, config)
    assert kd_losses(tmp_path, exact, "distillkit-f32", 1.0) == pytest.approx(want, rel=1e-5)


def test_distillkit_refusals(teacher):
    rows = lm_dataset(n=2, vocab=VOCAB)
    with pytest.raises(
        ValueError, match="cache is at temperature 2.0; DistillKit reads log-probabilities at temperature 1"
    ):
        to_distillkit(cache_teacher_outputs(teacher, rows, top_k=K, temperature=2.0), vocab_size=VOCAB)
    cache = cache_teacher_outputs(teacher, rows, top_k=K, temperature=1.0)
    with pytest.raises(ValueError, match="Pass vocab_size="):
        to_distillkit(cache)
    with pytest.raises(ValueError, match="has k=4 and error_diffusion=False; this cache has k=8"):
        to_distillkit(cache, config={"d": VOCAB, "k": 4, "exact_k": 4, "residual_bins": []})
    with pytest.raises(ValueError, match="compression config cannot be read"):
        to_distillkit(cache, config={"d": VOCAB, "k": K})
    with pytest.raises(ValueError, match="is not valid"):
        LogprobCompression.from_dict({"d": VOCAB, "k": K, "exact_k": K + 1, "residual_bins": []})
    data, config = distillkit_rows_by_hand(teacher, rows)
    with pytest.raises(ValueError, match="need the compression config"):
        from_distillkit(data)
    with pytest.raises(ValueError, match="32 bytes per position, but the compression config"):
        from_distillkit(data, {**config, "exact_dtype": "float16"})
    with pytest.raises(ValueError, match="legacy polynomial format"):
        from_distillkit(
            Dataset.from_dict(
                {
                    "input_ids": [[1]],
                    "packed_indices": [[[1]]],
                    "exact_values": [[[0.0]]],
                    "coeffs": [[[0.0]]],
                }
            )
        )
    with pytest.raises(ValueError, match="15 positions of top-k for 15 input_ids"):
        from_distillkit(data.map(lambda r: {"input_ids": r["input_ids"][:-1]}), config)
