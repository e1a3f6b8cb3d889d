"""Where a teacher cache lives: a local folder, or a dataset repository on the Hugging Face Hub.

:func:`cache_location` tells the two apart before anything is downloaded: an existing folder is local; a
``hf://datasets/OWNER/NAME[@REVISION]`` address, or an ``OWNER/NAME`` id that is not a folder here, is a Hub
dataset repository (:func:`huggingface_hub.snapshot_download` brings its shards and manifest into the Hub's
local cache, and the cache is then checked exactly like a local one). Anything else is refused with the
reason, so a mistyped path never turns into a request to the Hub.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

HF_DATASETS_PREFIX = "hf://datasets/"
# What a cache repository holds that loading needs: the shards and the manifest (the card is for people).
CACHE_FILE_PATTERNS = ("*.parquet", "*.json")


@dataclass(frozen=True)
class HubCache:
    """A teacher cache in a Hub dataset repository: ``repo_id`` at ``revision`` (None: the default branch)."""

    repo_id: str
    revision: str | None = None


def parse_hub_address(address: str) -> HubCache:
    """``OWNER/NAME`` or ``hf://datasets/OWNER/NAME[@REVISION]`` as a :class:`HubCache`; raises ValueError
    for anything that is not a valid dataset repository id."""
    repo_id, revision = address, None
    if address.startswith(HF_DATASETS_PREFIX):
        repo_id, _, revision = address[len(HF_DATASETS_PREFIX) :].partition("@")
    problem = None if repo_id.count("/") == 1 else "a repository id is 'OWNER/NAME'"
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        problem = str(error)
    if problem:
        raise ValueError(
            f"{address!r} is neither an existing folder nor a Hub dataset repository id ({problem}). Pass the "
            "folder of a teacher cache, 'OWNER/NAME', or 'hf://datasets/OWNER/NAME[@REVISION]'."
        )
    return HubCache(repo_id, revision or None)


def cache_location(source: str | os.PathLike) -> Path | HubCache:
    """A local cache folder (``Path``) or a Hub cache (:class:`HubCache`), decided without any network call.

    Raises:
        ValueError: ``source`` is not an existing folder and not a valid dataset repository id.
    """
    if isinstance(source, Path) or Path(str(source)).is_dir():
        return Path(source)
    text = str(source)
    if text.startswith(HF_DATASETS_PREFIX):
        return parse_hub_address(text)
    if text.startswith((".", "/", "~")) or os.sep in text.replace("/", "") or text.count("/") != 1:
        raise ValueError(
            f"{text!r} is not an existing folder (nor a Hub dataset repository id 'OWNER/NAME'): check the path "
            "of the teacher cache."
        )
    return parse_hub_address(text)


def download_cache(hub: HubCache, *, token: str | None = None, cache_dir: str | None = None) -> Path:
    """The local folder of a Hub cache's shards and manifest (downloaded, or found in the Hub's local cache)."""
    folder = huggingface_hub.snapshot_download(
        repo_id=hub.repo_id,
        repo_type="dataset",
        revision=hub.revision,
        allow_patterns=list(CACHE_FILE_PATTERNS),
        token=token,
        cache_dir=cache_dir,
    )
    return Path(folder)


def local_cache_folder(
    source: str | os.PathLike, *, token: str | None = None, hub_cache_dir: str | None = None
) -> Path:
    """``source`` as a local folder: itself, or the downloaded snapshot of its Hub dataset repository."""
    where = cache_location(source)
    return where if isinstance(where, Path) else download_cache(where, token=token, cache_dir=hub_cache_dir)
