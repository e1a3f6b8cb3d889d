"""DistillKit's offline-logit dataset format, read and written: :func:`to_distillkit`, :func:`from_distillkit`.

DistillKit's capture script (``distillkit/sample_logits_vllm.py``) asks vLLM for each row's prompt
log-probabilities at temperature 1 (``logprobs_mode="raw_logprobs"``: true log-probabilities, not renormalized)
and writes Parquet rows of

- ``input_ids`` ``(T,)``;
- ``compressed_logprobs`` ``(T - 1, B)`` bytes: per position the top-k log-probabilities sorted descending
  (the first, null, prompt position dropped, so row ``j`` is the distribution over ``input_ids[j + 1]``, as in
  our cache), compressed as its ``DistributionQuantizationConfig`` says (written beside the shards as
  ``compression_config.yaml`` and given again in the training config): optional delta coding (each value minus
  the one before), the first ``exact_k`` values stored as ``exact_dtype``, the rest fitted by a least-squares
  polynomial (``polynomial_terms``: powers and ``sqrt`` / ``exp`` of the rank, coefficients as
  ``term_dtype``) whose residuals are quantized in ``residual_bins`` (per bin a scale and ``element_bits``-bit
  codes, big-endian bit-packed);
- ``bytepacked_indices`` ``(T - 1, ceil(k * b / 8))``: the ids in the same order, ``b = ceil(log2(d))`` bits
  each, big-endian bit-packed.

Its trainer also reads raw rows (``token_ids`` / ``top_values``), which :func:`from_distillkit` reads too.

Temperature and tail: DistillKit's offline signal is at temperature 1 and rescales to its KD temperature
itself; the mass outside the top-k is ``1 - sum exp`` (its ``symmetric_uniform`` handling spreads it, ``zero``
drops it). Ours carries it as the tail, at the cache's temperature: :func:`to_distillkit` therefore needs a
cache at temperature 1, and :func:`from_distillkit` gives one (train it at ``temperature=1.0``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from datasets import Dataset

from hf_distill.cache.codec import TopkCodec
from hf_distill.cache.interchange import (
    RowTopk,
    cache_columns,
    check_logprobs,
    check_topk_cache,
    placeholder,
    read_cache_rows,
    tail_from_logprobs,
)

COMPRESSED, PACKED_IDS = "compressed_logprobs", "bytepacked_indices"
RAW_IDS, RAW_VALUES = "token_ids", "top_values"
LEGACY_COLUMNS = ("packed_indices", "exact_values", "coeffs")
CONFIG_FILE = "compression_config.yaml"
DTYPES = {"float16": np.float16, "float32": np.float32, "float64": np.float64, "bfloat16": "bfloat16"}
SPECIAL_TERMS = {"sqrt": np.sqrt, "exp": np.exp}


@dataclass(frozen=True)
class Bin:
    scale_dtype: str
    element_bits: int
    num_elements: int


@dataclass(frozen=True)
class LogprobCompression:
    """DistillKit's ``DistributionQuantizationConfig``: the same fields, the same defaults."""

    d: int
    k: int
    exact_k: int
    residual_bins: tuple[Bin, ...] = ()
    exact_dtype: str = "float32"
    polynomial_terms: tuple[int | str, ...] = ()
    term_dtype: str = "float32"
    delta_encoding: bool = True
    error_diffusion: bool = False
    normalize_t: bool = False

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> LogprobCompression:
        try:
            bins = tuple(
                Bin(str(b["scale_dtype"]), int(b["element_bits"]), int(b["num_elements"]))
                for b in config["residual_bins"]
            )
            fields = {
                k: config[k]
                for k in ("exact_dtype", "term_dtype", "delta_encoding", "error_diffusion", "normalize_t")
                if config.get(k) is not None
            }
            made = cls(
                int(config["d"]),
                int(config["k"]),
                int(config["exact_k"]),
                bins,
                polynomial_terms=tuple(config.get("polynomial_terms") or ()),
                **fields,
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"The DistillKit compression config cannot be read ({error!r}); it needs d, k, exact_k and "
                "residual_bins (a list of scale_dtype / element_bits / num_elements), as in its "
                f"{CONFIG_FILE}."
            ) from error
        made.check()
        return made

    def to_dict(self) -> dict[str, Any]:
        """The config as DistillKit's YAML holds it (``compression_config.yaml``, ``teacher.logprob_compressor``)."""
        return {
            "d": self.d, "k": self.k, "exact_k": self.exact_k, "exact_dtype": self.exact_dtype,
            "polynomial_terms": list(self.polynomial_terms) or None, "term_dtype": self.term_dtype,
            "residual_bins": [vars(b) for b in self.residual_bins], "delta_encoding": self.delta_encoding,
            "error_diffusion": self.error_diffusion, "normalize_t": self.normalize_t,
        }  # fmt: skip

    def check(self) -> None:
        dtypes = [self.exact_dtype, self.term_dtype, *(b.scale_dtype for b in self.residual_bins)]
        bad = [d for d in dtypes if d not in DTYPES] + [
            t for t in self.polynomial_terms if not isinstance(t, int) and t not in SPECIAL_TERMS
        ]
        bins = sum(b.num_elements for b in self.residual_bins)
        if bad or not 0 <= self.exact_k <= self.k or bins > self.k - self.exact_k or self.d < 1:
            raise ValueError(
                f"DistillKit compression config {self.to_dict()} is not valid: dtypes are {sorted(DTYPES)}, "
                f"polynomial terms integers or {sorted(SPECIAL_TERMS)}, 0 <= exact_k <= k, and the residual bins "
                f"hold at most k - exact_k values (unknown: {bad})."
            )
        if any(not 1 <= b.element_bits <= 64 for b in self.residual_bins):
            raise ValueError("A residual bin's element_bits must be between 1 and 64.")

    @property
    def index_bits(self) -> int:
        # As DistillKit computes it: ceil(log2(d)) in float32.
        return int(np.ceil(np.log2(np.float32(self.d))))


# ---- bits and floats ---------------------------------------------------------------------------------------


def pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """``(n, m)`` non-negative integers as ``(n, ceil(m * bits / 8))`` bytes, most significant bit first."""
    values = np.asarray(values, dtype=np.uint64) & np.uint64((1 << bits) - 1 if bits < 64 else ~0)
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint64)
    stream = ((values[..., None] >> shifts) & np.uint64(1)).astype(np.uint8).reshape(values.shape[0], -1)
    return np.packbits(stream, axis=-1, bitorder="big")


def unpack_bits(data: np.ndarray, bits: int, count: int) -> np.ndarray:
    """The inverse of :func:`pack_bits`: ``(n, bytes)`` -> ``(n, count)`` int64."""
    stream = np.unpackbits(np.asarray(data, dtype=np.uint8), axis=-1, bitorder="big")[:, : count * bits]
    weights = np.uint64(1) << np.arange(bits - 1, -1, -1, dtype=np.uint64)
    return (stream.reshape(len(stream), count, bits).astype(np.uint64) * weights).sum(-1).astype(np.int64)


def width(dtype: str) -> int:
    return 2 if dtype == "bfloat16" else np.dtype(DTYPES[dtype]).itemsize


def to_bytes(values: np.ndarray, dtype: str) -> np.ndarray:
    """Little-endian bytes of ``values`` in ``dtype`` (bfloat16: the high half of float32, rounded)."""
    if dtype == "bfloat16":
        wide = np.asarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
        rounded = ((wide + 0x7FFF + ((wide >> 16) & 1)) >> 16).astype("<u2")
        return rounded.view(np.uint8).reshape(len(values), -1)
    return (
        np.ascontiguousarray(values, dtype=np.dtype(DTYPES[dtype]).newbyteorder("<"))
        .view(np.uint8)
        .reshape(len(values), -1)
    )


def from_bytes(data: np.ndarray, dtype: str) -> np.ndarray:
    data = np.ascontiguousarray(data, dtype=np.uint8)
    if dtype == "bfloat16":
        return (data.view("<u2").astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return data.view(np.dtype(DTYPES[dtype]).newbyteorder("<")).astype(np.float64)


def rounded(values: np.ndarray, dtype: str) -> np.ndarray:
    """``values`` as stored in ``dtype`` and read back."""
    return from_bytes(to_bytes(values, dtype), dtype)


def term_matrix(config: LogprobCompression, count: int) -> np.ndarray:
    points = np.linspace(0, 1, count) if config.normalize_t else np.arange(count, dtype=np.float64)
    return np.stack(
        [points**t if isinstance(t, int) else SPECIAL_TERMS[t](points) for t in config.polynomial_terms], -1
    )


# ---- the log-probability codec -----------------------------------------------------------------------------


def compress_logprobs(logprobs: np.ndarray, config: LogprobCompression) -> np.ndarray:
    """``(n, k)`` log-probabilities, sorted descending, as DistillKit's ``(n, bytes)`` compressed rows (naive
    quantization: writing with ``error_diffusion`` is refused by :func:`to_distillkit`)."""
    values = np.asarray(logprobs, dtype=np.float64)
    if config.delta_encoding:
        values = np.concatenate([values[:, :1], np.diff(values, axis=-1)], axis=-1)
    chunks = []
    if config.exact_k:
        chunks.append(to_bytes(values[:, : config.exact_k], config.exact_dtype))
    residual = values[:, config.exact_k : config.k]
    if config.polynomial_terms:
        terms = rounded(term_matrix(config, residual.shape[1]), config.term_dtype)
        coeffs = rounded(np.linalg.lstsq(terms, residual.T, rcond=None)[0].T, config.term_dtype)
        chunks.append(to_bytes(coeffs, config.term_dtype))
        residual = residual - coeffs @ terms.T
    start = 0
    for b in config.residual_bins:
        part = residual[:, start : start + b.num_elements]
        largest = 1.0 if b.element_bits == 1 else float(2 ** (b.element_bits - 1))
        lowest, highest = (0, 1) if b.element_bits == 1 else (-largest, largest - 1)
        peak = np.abs(part).max(-1, keepdims=True)
        scale = rounded(np.where(peak == 0, 1.0, peak / largest), b.scale_dtype)
        codes = np.clip(np.rint(part / scale), lowest, highest) - lowest
        chunks += [to_bytes(scale, b.scale_dtype), pack_bits(codes.astype(np.int64), b.element_bits)]
        start += b.num_elements
    return np.concatenate(chunks, axis=-1) if chunks else np.zeros((len(values), 0), np.uint8)


def decompress_logprobs(data: np.ndarray, config: LogprobCompression) -> np.ndarray:
    """DistillKit's compressed rows ``(n, bytes)`` as ``(n, k)`` log-probabilities (float64)."""
    data = np.asarray(data, dtype=np.uint8)
    cut = config.exact_k * width(config.exact_dtype)
    exact, data = from_bytes(data[:, :cut], config.exact_dtype).reshape(len(data), -1), data[:, cut:]
    approx = np.zeros((len(data), config.k - config.exact_k))
    if config.polynomial_terms:
        cut = len(config.polynomial_terms) * width(config.term_dtype)
        coeffs, data = from_bytes(data[:, :cut], config.term_dtype).reshape(len(data), -1), data[:, cut:]
        approx += coeffs @ rounded(term_matrix(config, approx.shape[1]), config.term_dtype).T
    start = 0
    for b in config.residual_bins:
        cut = width(b.scale_dtype)
        scale, data = from_bytes(data[:, :cut], b.scale_dtype).reshape(len(data), 1), data[:, cut:]
        cut = (b.num_elements * b.element_bits + 7) // 8
        codes, data = unpack_bits(data[:, :cut], b.element_bits, b.num_elements), data[:, cut:]
        if b.element_bits == 1:
            approx[:, start : start + b.num_elements] += (codes * 2.0 - 1.0) * scale
        else:
            approx[:, start : start + b.num_elements] += (codes - 2.0 ** (b.element_bits - 1)) * scale
        start += b.num_elements
    values = np.concatenate([exact, approx], axis=-1)
    return np.cumsum(values, axis=-1) if config.delta_encoding else values


def row_bytes(config: LogprobCompression) -> int:
    """The bytes of one compressed position."""
    total = config.exact_k * width(config.exact_dtype) + len(config.polynomial_terms) * width(
        config.term_dtype
    )
    return total + sum(
        width(b.scale_dtype) + (b.num_elements * b.element_bits + 7) // 8 for b in config.residual_bins
    )


# ---- datasets ----------------------------------------------------------------------------------------------


def distillkit_row(row: RowTopk, config: LogprobCompression) -> dict[str, Any]:
    """One row of ours (attended tokens only) as DistillKit's compressed row."""
    n = int(row.attention_mask.sum())
    order = np.argsort(-row.logprobs[: n - 1], axis=-1, kind="stable")
    logprobs = np.take_along_axis(row.logprobs[: n - 1], order, -1)
    ids = np.take_along_axis(row.ids[: n - 1], order, -1)
    return {
        "input_ids": row.input_ids[:n].tolist(),
        COMPRESSED: compress_logprobs(logprobs, config).tolist(),
        PACKED_IDS: pack_bits(ids, config.index_bits).tolist(),
    }


def to_distillkit(
    cache: Dataset, *, vocab_size: int | None = None, config: dict[str, Any] | None = None
) -> tuple[Dataset, dict[str, Any]]:
    """Our top-k cache (at temperature 1) as a DistillKit offline-logit dataset and its compression config.

    Args:
        cache: a same-tokenizer causal LM cache at temperature 1 (rows right-padded or unpadded).
        vocab_size: the vocabulary size ``d`` for the default config (exact float32 values, no delta coding).
        config: a DistillKit compression config (a dict of its YAML); its ``k`` must be the cache's.

    Returns:
        ``(dataset, config)``: rows of ``input_ids``, ``compressed_logprobs``, ``bytepacked_indices``, and the
        config to save as ``compression_config.yaml`` / give as ``teacher.logprob_compressor``.
    """
    check_topk_cache(cache.column_names)
    sample = read_cache_rows(cache[:1])[0]
    if abs(sample.temperature - 1.0) > 1e-6:
        raise ValueError(
            f"The cache is at temperature {sample.temperature}; DistillKit reads log-probabilities at "
            "temperature 1 (it applies its KD temperature itself), and the tail's mass at 1 is not in this "
            "cache. Re-cache the teacher at temperature 1 (--temperature 1)."
        )
    k = sample.ids.shape[1]
    if config is None:
        if vocab_size is None:
            raise ValueError(
                "Pass vocab_size= (the tokenizer's size, DistillKit's d) or a compression config=."
            )
        config = {"d": vocab_size, "k": k, "exact_k": k, "residual_bins": [], "delta_encoding": False}
    compression = LogprobCompression.from_dict(config)
    if compression.k != k or compression.error_diffusion:
        raise ValueError(
            f"The compression config has k={compression.k} and error_diffusion={compression.error_diffusion}; "
            f"this cache has k={k}, and writing quantizes without error diffusion. Set k: {k}, "
            "error_diffusion: false."
        )

    def convert(batch: dict[str, list]) -> dict[str, list]:
        rows = [distillkit_row(r, compression) for r in read_cache_rows(batch)]
        return {name: [r[name] for r in rows] for name in rows[0]} if rows else {}

    out = cache.map(convert, batched=True, batch_size=64, remove_columns=cache.column_names)
    return out, compression.to_dict()


def sparse_rows(batch: dict[str, list], compression: LogprobCompression | None) -> list[tuple]:
    """``(input_ids, ids (T-1, k), logprobs (T-1, k))`` per row, compressed or raw."""
    out = []
    for i, input_ids in enumerate(batch["input_ids"]):
        if RAW_IDS in batch:
            ids, values = (
                np.asarray(batch[RAW_IDS][i], np.int64),
                np.asarray(batch[RAW_VALUES][i], np.float64),
            )
        else:
            data = np.asarray(batch[COMPRESSED][i], dtype=np.uint8).reshape(len(batch[COMPRESSED][i]), -1)
            if data.shape[1] != row_bytes(compression):
                raise ValueError(
                    f"Row {i} of the batch has {data.shape[1]} bytes per position, but the compression config "
                    f"{compression.to_dict()} writes {row_bytes(compression)}: pass the config the rows were "
                    f"written with (their {CONFIG_FILE})."
                )
            values = decompress_logprobs(data, compression)
            packed = np.asarray(batch[PACKED_IDS][i], dtype=np.uint8).reshape(len(data), -1)
            ids = unpack_bits(packed, compression.index_bits, compression.k)
        out.append((np.asarray(input_ids, np.int64), ids, values))
    return out


def cache_row_from_distillkit(
    input_ids: np.ndarray, ids: np.ndarray, logprobs: np.ndarray, where: str
) -> RowTopk:
    n = len(input_ids)
    if ids.shape != logprobs.shape or ids.ndim != 2 or len(ids) != n - 1:
        raise ValueError(
            f"{where}: {len(ids)} positions of top-k for {n} input_ids; DistillKit keeps one per input token but "
            "the first ((T - 1, k)). The dataset and its compression config do not match."
        )
    fill_ids, fill_logprobs = placeholder(ids.shape[1])
    ids, logprobs = np.vstack([ids, fill_ids]), np.vstack([logprobs, fill_logprobs])
    check_logprobs(logprobs, ids, where)
    labels = input_ids.copy()
    tail = tail_from_logprobs(logprobs)
    return RowTopk(input_ids, np.ones(n, np.int64), labels, ids, logprobs, tail, 1.0)


def from_distillkit(
    dataset: Dataset,
    config: dict[str, Any] | None = None,
    *,
    codec: TopkCodec | None = None,
    vocab_size: int | None = None,
) -> Dataset:
    """A DistillKit offline-logit dataset as our cache (at temperature 1), ready for ``DistillationTrainer``.

    Args:
        dataset: rows of ``input_ids`` with ``compressed_logprobs`` / ``bytepacked_indices`` (or raw
            ``token_ids`` / ``top_values``).
        config: the compression config the rows were written with (its ``compression_config.yaml`` as a
            dict); not needed for raw rows.
        codec, vocab_size: store our top-k compactly (:class:`hf_distill.cache.codec.TopkCodec`) for a
            vocabulary of ``vocab_size`` (default ``config["d"]``); None keeps float32.

    Returns:
        A ``Dataset`` with ``input_ids``, ``attention_mask``, ``labels`` and our top-k cache columns.
    """
    names = dataset.column_names
    if any(c in names for c in LEGACY_COLUMNS) and COMPRESSED not in names:
        raise ValueError(
            f"The dataset is in DistillKit's legacy polynomial format ({list(LEGACY_COLUMNS)}), which is not read "
            "here; re-capture it with DistillKit's current sample-logits (compressed_logprobs)."
        )
    raw = RAW_IDS in names and RAW_VALUES in names
    if "input_ids" not in names or not (raw or (COMPRESSED in names and PACKED_IDS in names)):
        raise ValueError(
            f"The dataset has {names}; a DistillKit logit dataset has input_ids with compressed_logprobs and "
            "bytepacked_indices (or token_ids and top_values)."
        )
    if not raw and config is None:
        raise ValueError(
            f"Compressed DistillKit rows need the compression config they were written with (its {CONFIG_FILE}, "
            "loaded as a dict): pass config=."
        )
    compression = None if raw else LogprobCompression.from_dict(config)
    vocab_size = vocab_size if vocab_size is not None or compression is None else compression.d

    def convert(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        rows = [
            cache_row_from_distillkit(*sparse, f"Row {i}")
            for sparse, i in zip(sparse_rows(batch, compression), indices)
        ]
        return cache_columns(rows, codec=codec, vocab_size=vocab_size)

    return dataset.map(convert, batched=True, batch_size=64, with_indices=True, remove_columns=names)
