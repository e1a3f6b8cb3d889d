"""Publishing a sharded teacher cache as a Hugging Face Hub dataset repository: :func:`push_teacher_cache`.

The repository holds the cache folder as it is (the Parquet shards and ``teacher_cache.json``, the manifest
with each shard's BLAKE2b hash) and a dataset card (``README.md``) that says what the cache is: the teacher
and its tokenizer, ``k``, the codec, the temperature, rows, positions, bytes per position and the manifest's
hashes, and a ``configs`` entry so the Hub's viewer and ``datasets.load_dataset`` read the shards too.
:func:`hf_distill.cache.shards.load_teacher_cache` reads it back by repository id and checks every shard
against the manifest, as for a local folder. The cache is checked before anything is sent.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
from huggingface_hub import DatasetCard, DatasetCardData, HfApi

from hf_distill.cache.build import TAIL_LOGIT, XTOK_TAIL_LOGIT
from hf_distill.cache.compact import CROSS_TOKENIZER, SAME_TOKENIZER
from hf_distill.cache.remote import parse_hub_address
from hf_distill.cache.shards import MANIFEST, read_manifest, verified_shards

CARD = "README.md"
CARD_TAGS = ["hf-distill", "knowledge-distillation", "teacher-cache"]
# Per-position columns, in the order a cache's positions are counted from (the first one present).
POSITION_COLUMNS = (
    SAME_TOKENIZER.tail_rel,
    CROSS_TOKENIZER.tail_rel,
    TAIL_LOGIT,
    XTOK_TAIL_LOGIT,
    "input_ids",
)


def count_positions(paths: list[str]) -> int:
    """The number of teacher positions in the shards (tokens for a classifier cache), read from one column."""
    names = pq.ParquetFile(paths[0]).schema_arrow.names
    column = next((c for c in POSITION_COLUMNS if c in names), None)
    if column is None:
        return 0
    return sum(
        int(pc.sum(pc.list_value_length(pq.read_table(p, columns=[column])[column])).as_py() or 0)
        for p in paths
    )


def cache_summary(folder: Path, manifest: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """What the dataset card records of a cache (also its YAML metadata under ``hf_distill``)."""
    settings = manifest.get("settings", {})
    tokenizer = settings.get("teacher_tokenizer") or {}
    positions = count_positions(paths)
    return {
        "teacher": settings.get("teacher_name_or_path") or settings.get("teacher"),
        "teacher_class": settings.get("teacher"),
        "tokenizer": tokenizer.get("name_or_path") or settings.get("teacher_name_or_path"),
        "tokenizer_fingerprint": tokenizer.get("fingerprint"),
        "cross_tokenizer": bool(tokenizer),
        "task": settings.get("task"),
        "k": settings.get("top_k"),
        "codec": settings.get("codec"),
        "temperature": settings.get("temperature"),
        "rows": manifest["rows"],
        "positions": positions,
        "bytes": manifest["bytes"],
        "bytes_per_position": round(manifest["bytes"] / positions, 2) if positions else None,
        "manifest_blake2b": {s["file"]: s["blake2b"] for s in manifest["shards"]},
    }


def render_cache_card(summary: dict[str, Any], repo_id: str) -> DatasetCard:
    """The dataset card of a cache: YAML metadata (tags, the shards as the ``train`` split, ``hf_distill``)
    and a body with the same facts for people."""
    data = DatasetCardData(
        tags=CARD_TAGS,
        pretty_name=f"Teacher cache of {summary['teacher']}",
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "shard-*.parquet"}]}],
        hf_distill=summary,
    )
    rows = [
        ("teacher", summary["teacher"]),
        (
            "tokenizer",
            summary["tokenizer"] + (" (cross-tokenizer cache)" if summary["cross_tokenizer"] else ""),
        ),
        ("task", summary["task"]),
        ("k (top-k per position)", summary["k"]),
        ("codec", summary["codec"] or "none (float32 values)"),
        ("temperature", summary["temperature"]),
        ("rows", summary["rows"]),
        ("positions", summary["positions"]),
        ("bytes (shards)", summary["bytes"]),
        ("bytes per position", summary["bytes_per_position"]),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    hashes = "\n".join(f"| `{name}` | `{digest}` |" for name, digest in summary["manifest_blake2b"].items())
    body = (
        f"# Teacher cache of {summary['teacher']}\n\n"
        "The teacher's outputs over a training set, written by hf_distill so a student trains without "
        "loading the teacher. Train from it with:\n\n"
        "```python\nfrom hf_distill import load_teacher_cache\n\n"
        f'train_dataset = load_teacher_cache("{repo_id}")  # every shard checked against {MANIFEST}\n```\n\n'
        f"| setting | value |\n| --- | --- |\n{table}\n\n"
        f"## Shards and their BLAKE2b hashes ({MANIFEST})\n\n| shard | blake2b |\n| --- | --- |\n{hashes}\n"
    )
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def push_teacher_cache(
    cache_dir: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload teacher cache (hf_distill)",
    api: HfApi | None = None,
) -> str:
    """Creates the dataset repository ``repo_id`` (if needed) and uploads the sharded cache in ``cache_dir``
    with its dataset card; returns the commit URL.

    Args:
        cache_dir: a cache written by :func:`hf_distill.cache.writer.write_teacher_cache` (or
            ``hf-distill cache-teacher``); every shard is checked against the manifest first.
        repo_id: ``OWNER/NAME`` (or ``hf://datasets/OWNER/NAME``).
        token, private, commit_message: as :meth:`huggingface_hub.HfApi.upload_folder`.
        api: the Hub client (default ``HfApi(token=token)``).

    Returns:
        The commit URL.

    Raises:
        ValueError: an invalid repository id, or a folder that is not a complete, intact sharded cache.
    """
    hub = parse_hub_address(repo_id)
    if hub.revision is not None:
        raise ValueError(
            f"{repo_id!r}: a push goes to the repository's default branch; leave out '@{hub.revision}'."
        )
    folder = Path(cache_dir)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder: pass the folder a sharded teacher cache was written to.")
    manifest = read_manifest(folder)
    paths = verified_shards(folder, manifest, check_hashes=True)
    render_cache_card(cache_summary(folder, manifest, paths), hub.repo_id).save(folder / CARD)
    api = api if api is not None else HfApi(token=token)
    api.create_repo(hub.repo_id, token=token, private=private, repo_type="dataset", exist_ok=True)
    commit = api.upload_folder(
        repo_id=hub.repo_id,
        folder_path=str(folder),
        repo_type="dataset",
        allow_patterns=[s["file"] for s in manifest["shards"]] + [MANIFEST, CARD],
        commit_message=commit_message,
        token=token,
    )
    return str(getattr(commit, "commit_url", None) or commit)
