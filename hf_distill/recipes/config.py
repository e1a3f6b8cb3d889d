"""Config files plus command-line flags, parsed into dataclasses with ``HfArgumentParser``.

``--config file.yaml`` (or ``.json``) supplies the values of a run; any flag given on the command line
overrides the file's value for that field. Every key of the file must name a field of one of the dataclasses,
so a typo fails at once instead of being ignored.

``HfArgumentParser.parse_yaml_file`` is not used for the file: it builds the dataclasses from the file alone
(no flags on top), passes YAML strings to the dataclass unconverted (YAML 1.1 reads ``5e-5`` as a string) and
refuses a misspelt key without naming the field meant. Instead the file's values become the argparse defaults
of their flags, the way TRL's ``TrlParser`` merges a config with flags, so one ``HfArgumentParser`` parse
converts every value with its field's type, lets flags win and fills required fields from the file.
"""

from __future__ import annotations

import argparse
import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser, TrainingArguments

CONFIG_FLAG = "--config"
# Help groups: a dataclass names its own with HfArgumentParser's ``_argument_group_name``; a TrainingArguments
# subclass is split into its own fields (distillation) and Trainer's.
DISTILLATION_GROUP = "distillation"
TRAINER_GROUP = "Trainer (transformers.TrainingArguments)"


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Reads a YAML (``.yaml``/``.yml``) or JSON (``.json``) file holding one mapping of field names to values."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"config file {str(path)!r} does not exist; pass the path of a YAML or JSON file, e.g. "
            "recipes/configs/sentiment.yaml."
        )
    text = path.read_text(encoding="utf-8")
    if path.suffix not in (".yaml", ".yml", ".json"):
        raise ValueError(
            f"config file {path.name!r} has the suffix {path.suffix!r}; the parser reads .yaml, .yml or .json "
            "files, so rename it with one of those."
        )
    try:
        values = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as error:
        raise ValueError(
            f"config file {path.name!r} cannot be read ({' '.join(str(error).split())}); fix the syntax at "
            "the position shown."
        ) from error
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


def _close_names(names: Sequence[str], known: Sequence[str], prefix: str = "") -> str:
    """``names`` with the closest ``known`` names: "'lr' (did you mean 'learning_rate'?)"."""

    def shown(name: str) -> str:
        return f"{prefix}{name}" if prefix else repr(name)

    hints = []
    for name in names:
        close = difflib.get_close_matches(name, sorted(known), n=2)
        hints.append(shown(name) + (f" (did you mean {' or '.join(map(shown, close))}?)" if close else ""))
    return ", ".join(hints)


def _group_training_fields(parser: HfArgumentParser, dataclass_types: Sequence[type]) -> None:
    """Shows a TrainingArguments subclass's flags in two help groups: its own (distillation) and Trainer's.

    Only the help changes: argparse parses an action the same whatever group lists it.
    """
    trainer_names = {f.name for f in fields(TrainingArguments) if f.init}
    own_names = {
        f.name
        for dataclass_type in dataclass_types
        if issubclass(dataclass_type, TrainingArguments)
        for f in fields(dataclass_type)
        if f.init and f.name not in trainer_names
    }
    if not own_names:
        return
    groups = {group.title: group for group in parser._action_groups}
    distillation = groups.get(DISTILLATION_GROUP) or parser.add_argument_group(DISTILLATION_GROUP)
    trainer = parser.add_argument_group(TRAINER_GROUP, "The flags of transformers.TrainingArguments.")
    for action in parser._actions:
        target = (
            distillation if action.dest in own_names else trainer if action.dest in trainer_names else None
        )
        if target is None:
            continue
        for group in parser._action_groups:
            if action in group._group_actions:
                group._group_actions.remove(action)
        target._group_actions.append(action)


def build_parser(
    dataclass_types: Sequence[type], *, prog: str | None = None, description: str | None = None
) -> HfArgumentParser:
    """The ``HfArgumentParser`` of ``dataclass_types`` with ``--config`` listed and the flags in help groups."""
    parser = HfArgumentParser(
        dataclass_types,
        prog=prog,
        description=description,
        usage=f"%(prog)s [-h] [{CONFIG_FLAG} FILE] [--flag VALUE ...]",
    )
    # Listed for --help only: parse_args_with_config takes the flag out before parsing.
    parser.add_argument(
        CONFIG_FLAG,
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="YAML or JSON file of flag values (e.g. recipes/configs/sentiment.yaml); every key is a flag "
        "below, and flags given on the command line override the file.",
    )
    _group_training_fields(parser, dataclass_types)
    return parser


def parse_args_with_config(
    dataclass_types: Sequence[type],
    argv: Sequence[str] | None = None,
    *,
    prog: str | None = None,
    description: str | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> tuple[Any, ...]:
    """Parses ``argv`` into one instance of each dataclass in ``dataclass_types``.

    Values come, by increasing priority, from each field's default, from ``defaults`` (a caller's own, such
    as the recipes' ``report_to``), from the file given with ``--config`` and from the other flags of
    ``argv`` (``None``: ``sys.argv[1:]``). A file value becomes the argparse default of its flag, so it is
    converted by the field's own type, and a field that is required on the command line is satisfied by the
    file. Raises ``ValueError`` naming any file key or flag that no dataclass has, with the closest names.
    ``prog`` and ``description`` are what ``--help`` shows.
    """
    import sys

    argv = sys.argv[1:] if argv is None else list(argv)
    path, flags = split_config_flag(argv)
    values = load_config_file(path) if path is not None else {}
    known = {f.name for dataclass_type in dataclass_types for f in fields(dataclass_type) if f.init}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"config file {Path(path).name!r} has keys that no argument takes: {_close_names(unknown, known)}; "
            "a misspelt key would otherwise be ignored silently. Fix or remove them (every flag of --help is "
            "a valid key)."
        )
    parser = build_parser(dataclass_types, prog=prog, description=description)
    values = {**(defaults or {}), **values}
    for action in parser._actions:
        if action.dest in values:
            # argparse runs string defaults through the flag's type (so YAML's "5e-5" becomes a float);
            # other values (numbers, booleans, lists) are used as they are.
            action.default = values[action.dest]
            action.required = False
    *parsed, rest = parser.parse_args_into_dataclasses(
        args=flags, look_for_args_file=False, return_remaining_strings=True
    )
    if rest:
        flag_names = [item.split("=", 1)[0].lstrip("-") for item in rest if item.startswith("--")]
        # HfArgumentParser's own wording first, then which flags were meant.
        raise ValueError(
            f"Some specified arguments are not used by the HfArgumentParser: {rest}; "
            + (f"no flag {_close_names(flag_names, known, '--')}; " if flag_names else "")
            + "--help lists the flags."
        )
    return tuple(parsed)
