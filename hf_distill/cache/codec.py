"""A compact encoding of a top-k teacher cache: ids in as few bytes as the vocabulary needs, log-probabilities
quantised relative to each position's maximum.

What the top-k loss needs of one position (:mod:`hf_distill.losses.topk`) is the teacher's coarse distribution
``softmax([z_K / T, tail])``: the set of ids ``K``, the scaled logits up to a common shift, and the tail logit
with the same shift. :class:`TopkCodec` stores, per position,

- the ids sorted and delta-coded (the first id, then the gaps), each gap split into a low byte and a high part
  (``uint8`` when the vocabulary has at most 65,536 rows, else ``uint16``): exact, and mostly small numbers,
  which dictionary encoding and zstd compress well (real teachers' top-k ids cluster on frequent tokens);
- per id, in the same order, ``d = (z_max - z_i) / T >= 0`` (the log-probability below the position's maximum)
  as a code ``q = round(L * (1 - exp(-d / s)))`` with ``L = 2**value_bits - 1`` levels and companding scale
  ``s`` (``value_bits=16``: ``d`` as float16 instead). The step grows with ``d``: fine where the probability
  is large, coarse where it is negligible. The maximum itself (``d = 0``) is exact; the first-order error is
  ``|d_hat - d| <= s * exp(d / s) / (2 L)``, so the probability ``p_i`` is off by a factor
  ``exp(+-s * (p_max / p_i)**(1/s) / (2 L))``; entries below ``p_max * (2 L)**(-s)`` (and ``-inf`` logits)
  decode at that floor;
- the tail logit minus ``z_max / T`` (float32, exact).

Decoding gives back the three arrays the loss takes: ``values = -T * d_hat`` (the raw logits shifted by
``-z_max``, which the loss cannot see), the ids (sorted ascending, not by value), and the shifted tail.

The codec is named by a short string stored with every row (``topk1 bits=6 scale=4 k=128``), so rows are
self-describing and a reader needs nothing else to decode them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

CODEC_VERSION = "topk1"
# Float16's largest finite value: d beyond it (a -inf logit) decodes as a probability of exactly 0.
FLOAT16_MAX = 65504.0
# The tail logit of a position whose top-k holds the whole vocabulary is a finite stand-in for log 0.
TAIL_FLOOR = float(np.finfo(np.float32).min) / 4
MAX_VOCAB = 1 << 24
VALUE_BITS = (2, 3, 4, 5, 6, 7, 8, 16)


@dataclass(frozen=True)
class EncodedTopk:
    """One block of encoded positions: ``ids_lo``, ``ids_hi``, ``codes`` ``(n, k)`` and ``tail_rel`` ``(n,)``."""

    ids_lo: np.ndarray
    ids_hi: np.ndarray
    codes: np.ndarray
    tail_rel: np.ndarray


@dataclass(frozen=True)
class TopkCodec:
    """How the top-k values are quantised (see the module docstring).

    Args:
        value_bits: bits per value code, 2-8, or 16 for float16 (near lossless).
        scale: the companding scale ``s`` in nats: larger spends more levels on small probabilities.
    """

    value_bits: int = 6
    scale: float = 4.0

    def __post_init__(self):
        if self.value_bits not in VALUE_BITS:
            raise ValueError(
                f"value_bits={self.value_bits!r}: a top-k value is stored as a code of 2 to 8 bits, or as "
                f"float16 with 16; choose one of {VALUE_BITS} (6, the default, keeps a batch's top-k loss "
                "within about 2e-4 of float32)."
            )
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise ValueError(
                f"scale={self.scale!r} must be a positive number of nats (the companding scale of the value "
                "codes, e.g. 4.0)."
            )

    @property
    def levels(self) -> int:
        return (1 << self.value_bits) - 1

    def name(self, k: int) -> str:
        """The string stored with each row, from which :func:`codec_from_name` rebuilds the codec."""
        return f"{CODEC_VERSION} bits={self.value_bits} scale={self.scale:g} k={k}"

    def encode(
        self, values: np.ndarray, indices: np.ndarray, tail: np.ndarray, temperature: float, vocab_size: int
    ) -> EncodedTopk:
        """Encodes ``n`` positions: raw top-k logits ``values (n, k)``, their ids ``indices (n, k)`` (distinct
        per position, ``< vocab_size``) and tail logits ``tail (n,)`` at ``temperature``."""
        values = np.asarray(values, dtype=np.float64)
        indices = np.asarray(indices, dtype=np.int64)
        check_encodable(values, indices, np.asarray(tail, dtype=np.float64), vocab_size)
        order = np.argsort(indices, axis=-1, kind="stable")
        ids = np.take_along_axis(indices, order, axis=-1)
        gaps = np.diff(ids, axis=-1, prepend=0)
        if ids.shape[-1] > 1 and bool((gaps[:, 1:] == 0).any()):
            raise ValueError(
                "The top-k ids of a position repeat an id; top-k ids are distinct. Pass the indices that "
                "torch.topk returned."
            )
        scaled = values / temperature
        top = np.max(np.where(np.isfinite(scaled), scaled, -np.inf), axis=-1, keepdims=True)
        gap_d = np.take_along_axis(top - scaled, order, axis=-1)  # +inf for a -inf logit
        tail_rel = np.maximum(np.asarray(tail, dtype=np.float64) - top[:, 0], TAIL_FLOOR)
        return EncodedTopk(
            ids_lo=(gaps & 0xFF).astype(np.uint8),
            ids_hi=(gaps >> 8).astype(hi_dtype(vocab_size)),
            codes=self.quantise(gap_d),
            tail_rel=tail_rel.astype(np.float32),
        )

    def quantise(self, d: np.ndarray) -> np.ndarray:
        """Codes of ``d >= 0`` (``+inf`` allowed): ``uint8``, or float16 bits as ``uint16``."""
        if self.value_bits == 16:
            return np.minimum(d, FLOAT16_MAX).astype(np.float16).view(np.uint16)
        companded = -np.expm1(-d / self.scale)  # 1 - exp(-d / s), in [0, 1]
        return np.rint(companded * self.levels).astype(np.uint8)

    def dequantise(self, codes: np.ndarray) -> np.ndarray:
        """``d_hat`` (float64) of the codes; the last code decodes at its bin's lower edge ``s * ln(2 L)``."""
        if self.value_bits == 16:
            return np.asarray(codes, dtype=np.uint16).view(np.float16).astype(np.float64)
        codes = np.asarray(codes)
        if codes.size and int(codes.max()) > self.levels:
            raise ValueError(
                f"A value code is {int(codes.max())}, above the {self.levels} of {self.value_bits}-bit codes: "
                "the cache is corrupted or was written by another codec. Re-create it."
            )
        fraction = np.minimum(codes.astype(np.float64), self.levels - 0.5) / self.levels
        return -self.scale * np.log1p(-fraction)

    def decode(self, encoded: EncodedTopk, temperature: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(values (n, k) float32, indices (n, k) int64, tail (n,) float32)`` for the top-k loss: the raw
        logits shifted by ``-z_max``, the ids in ascending order, and the shifted tail logit."""
        ids = np.cumsum(encoded.ids_lo.astype(np.int64) | (encoded.ids_hi.astype(np.int64) << 8), axis=-1)
        values = (-temperature * self.dequantise(encoded.codes)).astype(np.float32)
        return values, ids, encoded.tail_rel.astype(np.float32)


def hi_dtype(vocab_size: int) -> type:
    """The dtype of an id gap's high part: ``uint8`` up to 65,536 rows, ``uint16`` up to 2**24."""
    if not 0 < vocab_size <= MAX_VOCAB:
        raise ValueError(
            f"vocab_size={vocab_size}: the compact top-k cache stores ids of vocabularies of 1 to {MAX_VOCAB} "
            "rows; cache this teacher with codec=None (float32 logits and int32 ids)."
        )
    return np.uint8 if vocab_size <= 1 << 16 else np.uint16


def check_encodable(values: np.ndarray, indices: np.ndarray, tail: np.ndarray, vocab_size: int) -> None:
    """Refuses NaN / +inf teacher outputs, a position with no finite logit, and ids outside the vocabulary."""
    if values.shape != indices.shape or values.ndim != 2 or tail.shape != values.shape[:1]:
        raise ValueError(
            f"Top-k values {values.shape}, indices {indices.shape} and tail {tail.shape} must be (n, k), (n, k) "
            "and (n,): one row of k entries per position."
        )
    broken = np.isnan(values).any() or np.isposinf(values).any() or np.isnan(tail).any()
    if broken or np.isposinf(tail).any() or (values.shape[1] and np.isneginf(values).all(-1).any()):
        raise FloatingPointError(
            "The teacher's top-k logits hold NaN or +inf, or a position has no finite logit: the distillation "
            "target is broken, and the cache would store it. Check the teacher in float32, its weights and "
            "the inputs."
        )
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= vocab_size):
        raise ValueError(
            f"Top-k ids span [{int(indices.min())}, {int(indices.max())}] but the vocabulary has {vocab_size} "
            "rows; pass vocab_size = the teacher's output size."
        )


@functools.lru_cache(maxsize=64)
def codec_from_name(name: str) -> tuple[TopkCodec, int]:
    """``(codec, k)`` from a row's codec string (:meth:`TopkCodec.name`)."""
    version, *fields = str(name).split()
    try:
        settings = dict(field.split("=", 1) for field in fields)
        codec = TopkCodec(value_bits=int(settings["bits"]), scale=float(settings["scale"]))
        k = int(settings["k"])
    except (KeyError, ValueError) as error:
        raise ValueError(
            f"The cache's codec string {name!r} cannot be read ({error}); the cache is corrupted or was "
            "written by another version of hf_distill. Re-create it with this version."
        ) from error
    if version != CODEC_VERSION:
        raise ValueError(
            f"The cache was written with the top-k codec {version!r}, but this version of hf_distill reads "
            f"{CODEC_VERSION!r}; re-create the cache, or read it with the version that wrote it."
        )
    return codec, k
