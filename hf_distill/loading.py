"""Loading a model given as a local folder or a Hub id: the string is checked before any Hub call, and a Hub
failure says the string is neither a folder nor a model the Hub could provide."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from huggingface_hub.errors import EntryNotFoundError, HFValidationError
from huggingface_hub.utils import validate_repo_id
from torch import nn

from hf_distill.model_kind import AUTO_CLASSES

T = TypeVar("T")


def check_model_source(name_or_path: str, role: str = "teacher_model") -> str:
    """What to hand ``from_pretrained``: an existing local folder (``~`` expanded), or a valid Hub repo id
    (``name`` or ``org/name``, per ``huggingface_hub.utils.validate_repo_id``) that is not a local folder.

    Anything else (``/no/such``, ``./x``, ``../x``, ``a/b/c``, a file) is refused here, with the absolute
    path it was looked for at, before any Hub call. ``role`` names the argument in the message.
    """
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ValueError(
            f"{role} is {name_or_path!r}; give a local model folder or a Hub repo id ('org/name')."
        )
    path = os.path.expanduser(name_or_path)
    if os.path.isdir(path):
        return path
    absolute = os.path.abspath(path)
    if os.path.exists(path):
        raise NotADirectoryError(
            f"{role} {name_or_path!r} is a file ({absolute}), not a model folder: from_pretrained loads the "
            "folder that holds config.json and the weights; pass that folder."
        )
    try:
        validate_repo_id(name_or_path)
    except HFValidationError:
        relative = "" if os.path.isabs(path) else f" (a relative path is resolved from {os.getcwd()})"
        raise FileNotFoundError(
            f"{role} {name_or_path!r} does not exist: there is no folder at {absolute}{relative}, and it is not "
            "a Hub repo id ('name' or 'org/name') either. Check the path, or pass the folder a fine-tuned "
            "teacher was saved to."
        ) from None
    return name_or_path


# What from_pretrained raises when the Hub cannot provide a model: no connection, offline mode, no such repo or
# file, no access (all OSError subclasses in huggingface_hub and transformers, which also wraps them in OSError).
HUB_ERRORS = (OSError, EntryNotFoundError)


def load_pretrained(
    load: Callable[..., T], name_or_path: str, *, role: str = "teacher_model", **kwargs: Any
) -> T:
    """``load(source, **kwargs)`` for a ``from_pretrained`` loader, ``source`` checked by
    :func:`check_model_source` first. When ``source`` is not a local folder and the Hub cannot provide it, the
    error says it is neither, chained to the Hub's own error."""
    source = check_model_source(name_or_path, role)
    try:
        return load(source, **kwargs)
    except HUB_ERRORS as error:
        if os.path.isdir(source):
            raise
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise OSError(
            f"{role} {name_or_path!r} is neither a local folder (there is none at {os.path.abspath(source)}) nor "
            f"a model the Hugging Face Hub could provide ({type(error).__name__}: {reason}). For a local folder, "
            "check the path; for a Hub repo id, check its spelling and the connection (with HF_HUB_OFFLINE=1 only "
            "models already in the cache load), and log in (`hf auth login` or HF_TOKEN) for a private or gated "
            "repo."
        ) from error


def load_teacher_model(head_kind: str, name_or_path: str, init_kwargs: dict) -> nn.Module:
    """A teacher given as a path or Hub id, loaded with the Auto class of the student's head kind: a missing local
    path is refused before any Hub call, and a Hub failure says the string is neither (:func:`load_pretrained`)."""
    auto_class = AUTO_CLASSES.get(head_kind)
    if auto_class is None:
        raise ValueError(
            f"teacher_model is the string {name_or_path!r}, but the student has no Transformers task head "
            "(causal LM, token or sequence classification) to pick a loader from; pass the teacher as a model."
        )
    return load_pretrained(auto_class.from_pretrained, name_or_path, role="teacher_model", **init_kwargs)
