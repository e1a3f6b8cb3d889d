"""A teacher cache on disk in Parquet shards: written batch by batch, read back streamed or memory-mapped.

A cache folder holds ``shard-00000.parquet``, ``shard-00001.parquet``, ... and, written last,
``teacher_cache.json`` (the manifest: each shard's rows, bytes and BLAKE2b hash, the total rows and the cache's
settings). :class:`ShardWriter` holds at most one row group of rows in memory (``row_group_bytes``), so writing
a cache larger than memory works; columns are zstd-compressed with dictionary encoding (which bit-packs the
compact cache's small integers). A folder without a manifest is an unfinished write and is refused.

:func:`load_teacher_cache` reads such a folder as a ``datasets.Dataset`` (Arrow, memory-mapped; the compact
columns expand to about 3 bytes per top-k entry there) or, with ``streaming=True``, as an ``IterableDataset``
that decompresses shard by shard. A folder written by ``Dataset.save_to_disk`` (the float32 cache of earlier
versions) loads with ``load_from_disk``, so old caches keep working.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset, Features, IterableDataset, load_dataset, load_from_disk

from hf_distill.cache.remote import local_cache_folder

MANIFEST = "teacher_cache.json"
FORMAT = "hf_distill teacher cache"
FORMAT_VERSION = 1


def to_arrow(values: Sequence[Any]) -> pa.Array:
    """One column of a batch as Arrow: per-row numpy arrays (1-D, or 2-D of one width) become lists keeping
    their dtype, built from one flat buffer; anything else goes through ``pa.array``."""
    arrays = all(isinstance(v, np.ndarray) for v in values) and len(values) > 0
    if arrays and all(v.ndim == 1 for v in values):
        return pa.ListArray.from_arrays(row_offsets(values), pa.array(np.concatenate(values)))
    if arrays and all(v.ndim == 2 for v in values) and len({v.shape[1] for v in values}) == 1:
        width = values[0].shape[1]
        if width:
            flat = pa.array(np.concatenate([v.reshape(-1) for v in values]))
            inner = pa.FixedSizeListArray.from_arrays(flat, width).cast(pa.list_(flat.type))
            return pa.ListArray.from_arrays(row_offsets(values), inner)
    return pa.array([v.tolist() if isinstance(v, np.ndarray) else v for v in values])


def row_offsets(values: Sequence[np.ndarray]) -> pa.Array:
    return pa.array(np.concatenate([[0], np.cumsum([len(v) for v in values])]).astype(np.int32))


def file_hash(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ShardWriter:
    """Appends batches (``pa.Table``, one schema) to Parquet shards of ``rows_per_shard`` rows in ``folder``.

    Rows are buffered up to ``row_group_bytes`` (Arrow size) and written as one row group, so memory stays
    bounded whatever the number of rows. :meth:`close` writes the manifest; until then the folder is an
    unfinished cache. ``features``: the ``datasets`` features stored in each shard's schema, so column types
    such as ``ClassLabel`` come back on loading.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        *,
        rows_per_shard: int = 4096,
        row_group_bytes: int = 32 << 20,
        compression_level: int = 3,
        prefix: str = "shard-",
        check_empty: bool = True,
    ):
        if rows_per_shard < 1:
            raise ValueError(f"rows_per_shard must be >= 1, got {rows_per_shard}.")
        self.folder = Path(folder)
        if check_empty:
            check_empty_folder(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.rows_per_shard, self.row_group_bytes = rows_per_shard, row_group_bytes
        self.compression_level = compression_level
        self.shards: list[dict[str, Any]] = []
        self.buffer: list[pa.Table] = []
        self.writer: pq.ParquetWriter | None = None
        self.rows_in_shard = 0
        self.schema: pa.Schema | None = None

    def write(self, table: pa.Table, features: Features | None = None) -> None:
        if self.schema is None:
            metadata = (
                {"huggingface": json.dumps({"info": {"features": features.to_dict()}})} if features else {}
            )
            self.schema = table.schema.with_metadata(metadata)
        table = table.cast(self.schema)
        while table.num_rows:
            room = self.rows_per_shard - self.rows_in_shard - sum(t.num_rows for t in self.buffer)
            part, table = table.slice(0, room), table.slice(room)
            self.buffer.append(part)
            if sum(t.nbytes for t in self.buffer) >= self.row_group_bytes:
                self._flush()
            if self.rows_in_shard + sum(t.num_rows for t in self.buffer) >= self.rows_per_shard:
                self._flush()
                self._close_shard()

    def _flush(self) -> None:
        if not self.buffer:
            return
        if self.writer is None:
            name = f"{self.prefix}{len(self.shards):05d}.parquet"
            self.writer = pq.ParquetWriter(
                self.folder / name,
                self.schema,
                compression="zstd",
                compression_level=self.compression_level,
                use_dictionary=True,
            )
            self.shards.append({"file": name})
        table = pa.concat_tables(self.buffer)
        self.writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self.rows_in_shard += table.num_rows
        self.buffer = []

    def _close_shard(self) -> None:
        if self.writer is None:
            return
        self.writer.close()
        path = self.folder / self.shards[-1]["file"]
        self.shards[-1].update(rows=self.rows_in_shard, bytes=path.stat().st_size, blake2b=file_hash(path))
        self.writer, self.rows_in_shard = None, 0

    def finish(self) -> list[dict[str, Any]]:
        """Writes the last shard; returns the shards written (file, rows, bytes, hash), without a manifest."""
        self._flush()
        self._close_shard()
        return self.shards

    def close(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Writes the last shard and the manifest (atomically); returns the manifest."""
        return write_manifest(self.folder, self.finish(), settings)


def write_manifest(
    folder: Path, shards: list[dict[str, Any]], settings: dict[str, Any], name: str = MANIFEST
) -> dict[str, Any]:
    """Writes the manifest of ``shards`` as ``folder / name`` atomically (a reader sees all of it or none)."""
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "rows": sum(s["rows"] for s in shards),
        "bytes": sum(s["bytes"] for s in shards),
        "shards": shards,
        "settings": settings,
    }
    partial = folder / (name + ".partial")
    partial.write_text(json.dumps(manifest, indent=2))
    partial.rename(folder / name)
    return manifest


def rank_manifest_name(rank: int) -> str:
    """The file in which process ``rank`` of a distributed write lists its shards."""
    return f"teacher_cache.rank-{rank:05d}.json"


def merge_rank_manifests(folder: Path, num_processes: int, settings: dict[str, Any]) -> dict[str, Any]:
    """The main process's last step of a distributed write: one manifest of every process's shards, in rank
    order (so the rows come back in the dataset's order), written only when every process listed its shards."""
    parts = [folder / rank_manifest_name(r) for r in range(num_processes)]
    missing = [p.name for p in parts if not p.is_file()]
    if missing:
        raise RuntimeError(
            f"{folder}: the processes {missing} did not finish their shards, so no manifest is written and the "
            "cache stays unreadable. Re-run the caching into an empty folder."
        )
    shards = [s for p in parts for s in json.loads(p.read_text())["shards"]]
    manifest = write_manifest(folder, shards, settings)
    for part in parts:
        part.unlink()
    return manifest


def check_empty_folder(folder: Path) -> None:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ValueError(
            f"{folder} already exists and is not an empty folder; a teacher cache is written into a new or empty "
            "folder so old and new shards are never mixed. Delete it or choose another path."
        )


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a sharded cache folder, refusing an unfinished or foreign folder."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise ValueError(
            f"{folder} has no {MANIFEST}: it is not a sharded teacher cache, or its writing did not finish (the "
            "manifest is written last). Re-run the caching into an empty folder."
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path} is not valid JSON ({error}): the cache is corrupted; re-create it."
        ) from error
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} describes format {manifest.get('format')!r} version {manifest.get('version')!r}; this "
            f"version of hf_distill reads {FORMAT!r} version {FORMAT_VERSION}. Re-create the cache."
        )
    return manifest


def verified_shards(folder: Path, manifest: dict[str, Any], check_hashes: bool) -> list[str]:
    """The shard paths, after checking each one's size and row count (and hash) against the manifest."""
    paths = []
    for shard in manifest["shards"]:
        path = folder / shard["file"]
        problem = None
        if not path.is_file():
            problem = "is missing"
        elif path.stat().st_size != shard["bytes"]:
            problem = f"has {path.stat().st_size} bytes, the manifest says {shard['bytes']}"
        elif check_hashes and file_hash(path) != shard["blake2b"]:
            problem = "does not match its BLAKE2b hash in the manifest"
        elif pq.ParquetFile(path).metadata.num_rows != shard["rows"]:
            problem = f"holds another number of rows than the manifest's {shard['rows']}"
        if problem:
            raise ValueError(
                f"Teacher cache shard {path} {problem}: the cache is corrupted or incomplete. Re-create it "
                "(or restore the shard)."
            )
        paths.append(str(path))
    return paths


def load_teacher_cache(
    folder: str | os.PathLike,
    *,
    streaming: bool = False,
    check_hashes: bool = True,
    cache_dir: str | None = None,
    token: str | None = None,
) -> Dataset | IterableDataset:
    """A teacher cache folder as a dataset to train from (``train_dataset=``).

    Args:
        folder: a sharded cache (:func:`hf_distill.cache.writer.write_teacher_cache`) or a folder saved with
            ``Dataset.save_to_disk`` (the float32 cache of ``cache_teacher_outputs``); or a cache pushed to the
            Hub (:func:`hf_distill.cache.push.push_teacher_cache`) as ``OWNER/NAME`` or
            ``hf://datasets/OWNER/NAME[@REVISION]``, downloaded once and then checked like a local folder
            (:mod:`hf_distill.cache.remote`).
        streaming: read the shards as an ``IterableDataset`` (decompressed as they are read; nothing is
            converted on disk). Otherwise a ``Dataset`` memory-mapped from an Arrow copy in ``cache_dir``.
        check_hashes: compare each shard's BLAKE2b hash with the manifest (reads the files once); sizes and
            row counts are always checked.
        token: a Hub token for a private cache repository.
    """
    folder = local_cache_folder(folder, token=token)
    if not (folder / MANIFEST).is_file() and (folder / "dataset_info.json").is_file():
        return load_from_disk(str(folder))
    manifest = read_manifest(folder)
    paths = verified_shards(folder, manifest, check_hashes)
    return load_dataset("parquet", data_files=paths, split="train", streaming=streaming, cache_dir=cache_dir)
