"""Where a teacher comes from and under which license, read from what is on disk, never from the network.

A model card names the teacher as ``base_model`` (a Hub id) and should carry a ``license``. A teacher given as a
Hub id is its own ``base_model``; one given as a local folder often still says which Hub model it is: its
``config.json`` keeps ``_name_or_path`` from the model it was saved from, and its ``README.md`` card may carry
``base_model`` and ``license``. A Hub teacher's card is read from the local Hub cache when it was downloaded.

``_name_or_path`` is the model the folder was loaded from before it was saved: for a teacher fine-tuned from a
Hub model, that model. The student's card then names the teacher's nearest Hub ancestor as its base, which is
where the Hub's model tree can place it.
"""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import ModelCard, try_to_load_from_cache
from huggingface_hub.utils import HFValidationError, validate_repo_id


def hub_id(name: str | None) -> str | None:
    """``name`` when it can be a Hub repo id rather than a local folder, else None."""
    if not name or Path(name).exists():
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def _local_card(folder: Path) -> dict:
    path = folder / "README.md"
    if not path.is_file():
        return {}
    try:
        return ModelCard.load(path).data.to_dict()
    except ValueError:  # a README without metadata the Hub can read
        return {}


def _cached_card(repo_id: str, revision: str | None) -> dict:
    """The card of ``repo_id`` from the local Hub cache (no network), {} when it was never downloaded."""
    try:
        path = try_to_load_from_cache(repo_id, "README.md", revision=revision)
    except (HFValidationError, ValueError):
        return {}
    if not isinstance(path, str):
        return {}
    try:
        return ModelCard.load(path).data.to_dict()
    except ValueError:
        return {}


def _first(value) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, str) and value else None


def folder_hub_id(folder: str | Path | None) -> str | None:
    """The Hub id a local model folder names: its card's ``base_model``, else its ``config.json``'s
    ``_name_or_path`` when that is a Hub id; None for anything else (a Hub id itself, a missing folder)."""
    if not folder or not Path(folder).is_dir():
        return None
    folder = Path(folder)
    from_card = hub_id(_first(_local_card(folder).get("base_model")))
    if from_card:
        return from_card
    config = folder / "config.json"
    if config.is_file():
        try:
            name = json.loads(config.read_text(encoding="utf-8")).get("_name_or_path")
        except (json.JSONDecodeError, AttributeError):
            return None
        return hub_id(name if isinstance(name, str) else None)
    return None


def teacher_base_model(name_or_path: str | None) -> str | None:
    """The ``base_model`` a student's card names for a teacher: its Hub id, or the one its folder names."""
    return hub_id(name_or_path) or folder_hub_id(name_or_path)


def teacher_license(name_or_path: str | None, revision: str | None = None) -> str | None:
    """The teacher's license as its card states it: a local folder's ``README.md``, else the cached card of
    its Hub id (or of the Hub id its folder names); None when no card says."""
    if not name_or_path:
        return None
    if Path(name_or_path).is_dir():
        found = _first(_local_card(Path(name_or_path)).get("license"))
        if found:
            return found
        named = folder_hub_id(name_or_path)
        return _first(_cached_card(named, None).get("license")) if named else None
    repo_id = hub_id(name_or_path)
    return _first(_cached_card(repo_id, revision).get("license")) if repo_id else None
