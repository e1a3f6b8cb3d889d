"""A teacher cache written from a source of top-k rows (a served teacher) instead of a model's logits:
:func:`topk_source_batch_fn`, the per-batch function :func:`hf_distill.cache.writer.write_teacher_cache` runs."""

from __future__ import annotations

from typing import Any

import numpy as np

from hf_distill.cache.build import INPUT_HASH, TAIL_LOGIT, TEMPERATURE, TOPK_INDICES, TOPK_LOGITS, input_hash
from hf_distill.cache.codec import TopkCodec
from hf_distill.cache.compact import SAME_TOKENIZER, encode_rows


def topk_source_batch_fn(
    source: Any, top_k: int, temperature: float, vocab_size: int, codec: TopkCodec | None = None
):
    """``batch (dict of lists) -> the cache columns of its rows`` from a source of per-row top-k (a served
    teacher's ``topk_rows(rows) -> [(values (T, k), ids (T, k), tail (T,))]``) instead of a model's logits.

    The values are log-probabilities rather than raw logits: the same softmax over the ``k + 1`` buckets, and
    the same compact codes (the codec stores log-probabilities)."""

    def run(batch: dict[str, list]) -> dict[str, list]:
        rows = [list(ids) for ids in batch["input_ids"]]
        masks = batch.get("attention_mask") or [[1] * len(r) for r in rows]
        parsed = source.topk_rows(rows)
        values = [np.asarray(v, dtype=np.float32) for v, _, _ in parsed]
        indices = [np.asarray(i, dtype=np.int32) for _, i, _ in parsed]
        tails = [np.asarray(t, dtype=np.float32) for _, _, t in parsed]
        out: dict[str, list] = {INPUT_HASH: [input_hash(ids, m) for ids, m in zip(rows, masks)]}
        if codec is not None:
            out.update(encode_rows(codec, SAME_TOKENIZER, (values, indices, tails), temperature, vocab_size))
        else:
            out.update({TOPK_LOGITS: values, TOPK_INDICES: indices, TAIL_LOGIT: tails})
        out[TEMPERATURE] = [float(temperature)] * len(rows)
        return out

    return run
