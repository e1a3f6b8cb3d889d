"""Config files plus command-line flags, parsed into dataclasses with ``HfArgumentParser``.

``--config file.yaml`` (or ``.json``) supplies the values of a run; any flag given on the command line
overrides the file's value for that field. Every key of the file must name a field of one of the dataclasses,
so a typo fails at once instead of being ignored.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

CONFIG_FLAG = "--config"


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Reads a YAML (``.yaml``/``.yml``) or JSON (``.json``) file holding one mapping of field names to values."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"config file {str(path)!r} does not exist; pass the path of a YAML or JSON file, e.g. "
            "recipes/configs/sentiment.yaml."
        )
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        values = yaml.safe_load(text)
    elif path.suffix == ".json":
        values = json.loads(text)
    else:
        raise ValueError(
            f"config file {path.name!r} has the suffix {path.suffix!r}; the parser reads .yaml, .yml or .json "
            "files, so rename it with one of those."
        )
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(
            f"config file {path.name!r} holds a {type(values).__name__}, not a mapping of field names to "
            "values; write it as `name: value` lines (YAML) or one JSON object."
        )
    return values


def split_config_flag(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """Takes ``--config PATH`` (or ``--config=PATH``) out of ``argv``; returns the path and the other flags."""
    argv = list(argv)
    rest: list[str] = []
    path = None
    index = 0
    while index < len(argv):
        item = argv[index]
        if item == CONFIG_FLAG:
            if index + 1 >= len(argv):
                raise ValueError(f"{CONFIG_FLAG} needs a file path after it, e.g. {CONFIG_FLAG} run.yaml.")
            path = argv[index + 1]
            index += 2
            continue
        if item.startswith(CONFIG_FLAG + "="):
            path = item.split("=", 1)[1]
        else:
            rest.append(item)
        index += 1
    return path, rest


def parse_args_with_config(
    dataclass_types: Sequence[type], argv: Sequence[str] | None = None
) -> tuple[Any, ...]:
    """Parses ``argv`` into one instance of each dataclass in ``dataclass_types``.

    Values come, by increasing priority, from each field's default, from the file given with
    ``--config`` and from the other flags of ``argv`` (``None``: ``sys.argv[1:]``). A file value becomes the
    argparse default of its flag, so it is converted by the field's own type, and a field that is required
    on the command line is satisfied by the file. Raises ``ValueError`` naming any file key that no
    dataclass has, with the closest field names.
    """
    import sys

    argv = sys.argv[1:] if argv is None else list(argv)
    path, flags = split_config_flag(argv)
    values = load_config_file(path) if path is not None else {}
    known = {f.name for dataclass_type in dataclass_types for f in fields(dataclass_type) if f.init}
    unknown = sorted(set(values) - known)
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, sorted(known), n=2)
            hints.append(
                f"{key!r}" + (f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else "")
            )
        raise ValueError(
            f"config file {Path(path).name!r} has keys that no argument takes: {', '.join(hints)}; a misspelt "
            "key would otherwise be ignored silently. Fix or remove them (every flag of --help is a valid key)."
        )
    parser = HfArgumentParser(dataclass_types)
    for action in parser._actions:
        if action.dest in values:
            value = values[action.dest]
            # argparse runs string defaults through the flag's type (so YAML's "5e-5" becomes a float);
            # other values (numbers, booleans, lists) are used as they are.
            action.default = value
            action.required = False
    return tuple(parser.parse_args_into_dataclasses(args=flags, look_for_args_file=False))
