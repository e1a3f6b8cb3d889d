"""The compact top-k columns of a teacher cache: their names, a batch of rows encoded, a batch of rows decoded.

A compact row holds, for its ``T`` positions and the cache's ``k``, flat lists ``<prefix>topk_ids_lo``,
``<prefix>topk_ids_hi`` and ``<prefix>topk_codes`` (``T * k`` each), ``<prefix>tail_rel`` (``T``) and the codec
string ``<prefix>topk_codec`` (:mod:`hf_distill.cache.codec`). The prefix is ``teacher_`` for the same-tokenizer
cache and ``xtok_teacher_`` for the cross-tokenizer one. :func:`decode_rows` turns such rows back into the
float32 columns the teacher sources read (``<prefix>topk_logits`` / ``topk_indices`` ``(T, k)``,
``<prefix>tail_logit`` ``(T,)``), so everything after the collator is the same for both formats.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hf_distill.cache.codec import EncodedTopk, TopkCodec, codec_from_name


@dataclass(frozen=True)
class CompactColumns:
    """The column names of one compact top-k cache (stored) and of its decoded form."""

    prefix: str

    @property
    def ids_lo(self) -> str:
        return self.prefix + "topk_ids_lo"

    @property
    def ids_hi(self) -> str:
        return self.prefix + "topk_ids_hi"

    @property
    def codes(self) -> str:
        return self.prefix + "topk_codes"

    @property
    def tail_rel(self) -> str:
        return self.prefix + "tail_rel"

    @property
    def codec(self) -> str:
        return self.prefix + "topk_codec"

    @property
    def stored(self) -> tuple[str, ...]:
        return (self.ids_lo, self.ids_hi, self.codes, self.tail_rel, self.codec)

    @property
    def decoded(self) -> tuple[str, str, str]:
        """``(top-k logits, top-k indices, tail logit)`` column names."""
        return (self.prefix + "topk_logits", self.prefix + "topk_indices", self.prefix + "tail_logit")

    @property
    def temperature(self) -> str:
        return self.prefix + "temperature"


SAME_TOKENIZER = CompactColumns("teacher_")
CROSS_TOKENIZER = CompactColumns("xtok_teacher_")


def encode_rows(
    codec: TopkCodec,
    columns: CompactColumns,
    rows: tuple[Sequence[np.ndarray], Sequence[np.ndarray], Sequence[np.ndarray]],
    temperature: float,
    vocab_size: int,
) -> dict[str, list]:
    """The compact columns of a batch: ``rows = (values, indices, tails)``, one ``(T_i, k)``, ``(T_i, k)``,
    ``(T_i,)`` array per row (as :func:`hf_distill.cache.build.topk_rows` returns them)."""
    values, indices, tails = rows
    lengths = [len(t) for t in tails]
    k = int(np.asarray(values[0]).shape[-1]) if len(values) else 0
    flat = [np.concatenate([np.asarray(r).reshape(-1, k) for r in part]) for part in (values, indices)]
    encoded = codec.encode(*flat, np.concatenate([np.asarray(t) for t in tails]), temperature, vocab_size)
    cuts = np.cumsum(lengths)[:-1]
    out: dict[str, list] = {
        columns.ids_lo: [a.reshape(-1) for a in np.split(encoded.ids_lo, cuts)],
        columns.ids_hi: [a.reshape(-1) for a in np.split(encoded.ids_hi, cuts)],
        columns.codes: [a.reshape(-1) for a in np.split(encoded.codes, cuts)],
        columns.tail_rel: np.split(encoded.tail_rel, cuts),
        columns.codec: [codec.name(k)] * len(lengths),
    }
    return out


def decode_rows(features: list[dict[str, Any]], columns: CompactColumns) -> None:
    """Replaces, in place, each row's compact columns by the decoded float32 ones (one vectorised decode for
    the batch). Rows must carry ``<prefix>temperature``."""
    names = {str(f[columns.codec]) for f in features}
    if len(names) != 1:
        raise ValueError(
            f"This batch mixes rows of different top-k codecs {sorted(names)}; one cache has one codec. Do not "
            "concatenate caches written with different settings."
        )
    codec, k = codec_from_name(names.pop())
    lengths = [len(f[columns.tail_rel]) for f in features]
    parts = {}
    for name in (columns.ids_lo, columns.ids_hi, columns.codes):
        arrays = [np.asarray(f.pop(name)) for f in features]
        for array, n in zip(arrays, lengths):
            if array.size != n * k:
                raise ValueError(
                    f"A cache row's {name} holds {array.size} entries, but its {n} positions at k={k} need "
                    f"{n * k}: the cache is corrupted or truncated. Re-create it."
                )
        parts[name] = np.concatenate(arrays).reshape(-1, k) if arrays else np.zeros((0, k))
    tail = np.concatenate([np.asarray(f.pop(columns.tail_rel), dtype=np.float32) for f in features])
    temperature = np.repeat([float(f[columns.temperature]) for f in features], lengths)[:, None]
    encoded = EncodedTopk(parts[columns.ids_lo], parts[columns.ids_hi], parts[columns.codes], tail)
    values, indices, tail = codec.decode(encoded, 1.0)
    values = (values * temperature).astype(np.float32)
    cuts = np.cumsum(lengths)[:-1]
    for f, v, i, t in zip(features, np.split(values, cuts), np.split(indices, cuts), np.split(tail, cuts)):
        f.pop(columns.codec)
        f.update(zip(columns.decoded, (v, i, t)))
