"""Setting up teacher routes: the trainer's ``teachers={name: teacher}`` loaded, checked and turned into one
:class:`~hf_distill.teachers.routed.RoutedTeacher` (what a route is: :mod:`hf_distill.teachers.routed`).

Why a ``teachers`` mapping beside ``teacher_model`` rather than the multi-teacher mode's ``teacher_models``
list: a route is a name the data holds, so the teachers need names, and routing is no mode of its own: every
source the core has (a live model, a cache, a served URL) can be a route's teacher, and the mixture mode's
weights do not apply (each row has exactly one teacher). Each value is what ``teacher_model`` takes (a model,
a local folder or Hub id, an ``http(s)://HOST:PORT/v1`` URL) or a ready
:class:`~hf_distill.teachers.sources.TeacherSource`; a cache route is ``CachedTeacher(temperature, None)``,
reading the cache columns its rows carry (every row of the dataset carries them; other rows' are not read).

Refused before training, each with its fix: ``teachers`` without ``teacher_route_column`` or the reverse, both
``teachers`` and ``teacher_model``, a dataset without the column, a row without a route or with an unknown
one, feature terms (hidden states of rows from different teachers) and ``cross_tokenizer_loss``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.checks import check_compatibility, check_separate_models
from hf_distill.hub.push_guard import model_fingerprint
from hf_distill.hub.trainer_card import record_teacher
from hf_distill.loading import load_teacher_model
from hf_distill.model_kind import detect_head_kind
from hf_distill.teachers.routed import RoutedTeacher, check_routes
from hf_distill.teachers.served import check_served_setup, is_served_teacher, served_teacher_for
from hf_distill.teachers.sources import LiveTeacher, TeacherSource


def check_route_setup(args: DistillationTrainingArguments, teachers: Any, teacher_model: Any) -> None:
    """Refuses a routed run that cannot work, before anything is loaded (module docstring)."""
    column = args.teacher_route_column
    if teachers is None:
        raise ValueError(
            f"teacher_route_column={column!r} routes each row to a named teacher, but no `teachers` were given; "
            "pass DistillationTrainer(teachers={name: model_or_url, ...}), or unset teacher_route_column."
        )
    if column is None:
        raise ValueError(
            "`teachers` names several teachers, but teacher_route_column is unset, so no row says which one "
            "labels it; set teacher_route_column to the dataset column holding each row's teacher name."
        )
    if teacher_model is not None:
        raise ValueError(
            "Both teacher_model and `teachers` were given; with routes every teacher is a value of `teachers`. "
            "Pass teacher_model=None and add it to `teachers` under a name."
        )
    if not isinstance(teachers, Mapping) or not teachers or not all(isinstance(k, str) for k in teachers):
        raise ValueError(
            f"`teachers` must be a non-empty dict of name -> teacher, got {type(teachers).__name__}; the names "
            f"are the values of the {column!r} column."
        )
    if args.feature_weights or args.cross_tokenizer_loss is not None:
        asked = sorted(args.feature_weights) or ["cross_tokenizer_loss"]
        raise ValueError(
            f"{asked} need one teacher's insides or tokenization for every row, but routes give each row its "
            "own teacher; set them off (0 / None) with teacher_route_column."
        )


def check_dataset_routes(column: str, names: Any, datasets: Mapping[str, Any]) -> None:
    """Refuses a dataset (train, eval, or each of a dict of eval sets) without the route column, with a row
    without a route or with a route naming no teacher. Streaming datasets are checked per batch instead."""
    for split, dataset in datasets.items():
        if isinstance(dataset, Mapping):
            check_dataset_routes(column, names, {f"{split}[{k!r}]": d for k, d in dataset.items()})
            continue
        columns = getattr(dataset, "column_names", None)
        if dataset is None or columns is None:
            continue
        if column not in columns:
            raise ValueError(
                f"{split} has no column {column!r} (teacher_route_column) naming each row's teacher; its columns "
                f"are {sorted(columns)}. Add it (dataset.add_column({column!r}, names)) or fix the argument."
            )
        check_routes(dataset[column], names, f"{split} column {column!r}")


class TeacherRoutes:
    """The named teachers of a routed run, checked and loaded; :meth:`source` builds the teacher source.

    Args:
        args: the run's arguments (``teacher_route_column``, temperature, the served teacher's knobs).
        teachers: name -> model, folder / Hub id, ``http(s)://`` URL or :class:`TeacherSource`.
        datasets: ``{"train_dataset": ..., "eval_dataset": ...}``, checked for routes here.
    """

    def __init__(self, args: DistillationTrainingArguments, teachers: Mapping[str, Any], datasets: dict):
        self.args, self.column, self.teachers = args, args.teacher_route_column, dict(teachers)
        check_dataset_routes(self.column, self.teachers, datasets)
        for name, teacher in self.teachers.items():
            if not isinstance(teacher, (nn.Module, str)) and not callable(teacher):
                raise TypeError(
                    f"teachers[{name!r}] is a {type(teacher).__name__}; give a model, a local folder or Hub id, "
                    "an http(s)://HOST:PORT/v1 URL, or a teacher source (source(batch, output_kwargs) -> target)."
                )

    def load(self, head_kind: str, student: nn.Module, init_kwargs: dict | None) -> None:
        """Loads the folders / Hub ids, checks every model shares no parameter with the student and every
        URL's run can be served (causal LM, temperature 1, no feature terms), and takes the models'
        fingerprints (``fingerprints``: the first is recorded in the student's config)."""
        for name, teacher in self.teachers.items():
            if is_served_teacher(teacher):
                check_served_setup(self.args, head_kind, False)
            elif isinstance(teacher, str):
                self.teachers[name] = load_teacher_model(head_kind, teacher, init_kwargs or {})
            if isinstance(self.teachers[name], nn.Module):
                check_separate_models(student, self.teachers[name], role=f"teachers[{name!r}]")
        # Taken before the teachers are cast or placed; the push guard checks every one.
        models = list(self.models.values())
        self.fingerprints: list[tuple[nn.Module, dict | None]] = [
            (t, record_teacher(student, t) if i == 0 else model_fingerprint(t)) for i, t in enumerate(models)
        ]

    @property
    def models(self) -> dict[str, nn.Module]:
        """The teachers that are models (their weights must never reach the Hub)."""
        return {n: t for n, t in self.teachers.items() if isinstance(t, nn.Module)}

    def shared_vocab_size(self, head_kind: str, student: nn.Module, tokenizer: Any) -> int | None:
        """The output rows the student shares with every model teacher (each checked like one teacher)."""
        sizes = [check_compatibility(head_kind, student, t, tokenizer, None) for t in self.models.values()]
        sizes = [s for s in sizes if s is not None]
        return min(sizes) if sizes else None

    def source(
        self,
        prepare: Callable[[nn.Module], nn.Module],
        unwrap: Callable[[nn.Module], nn.Module],
        student: nn.Module,
        tokenizer: Any,
        vocab_size: int | None,
    ) -> RoutedTeacher:
        """The routed teacher: models placed with ``prepare`` and asked for full logits (a routed batch may
        mix teachers, so never the chunked loss's hidden states), URLs checked against their server."""
        sources: dict[str, TeacherSource] = {}
        for name, teacher in self.teachers.items():
            if isinstance(teacher, nn.Module):
                placed = prepare(teacher)
                sources[name] = LiveTeacher(placed, unwrap(placed), vocab_size, as_hidden=False)
            elif is_served_teacher(teacher):
                sources[name] = served_teacher_for(teacher, self.args, student, tokenizer)
            else:
                sources[name] = teacher
        return RoutedTeacher(sources, self.args.temperature)


def routes_for(
    args: DistillationTrainingArguments,
    teachers: Any,
    teacher_model: Any,
    trainer_kwargs: dict[str, Any],
    student: nn.Module,
    init_kwargs: dict | None,
) -> TeacherRoutes | None:
    """The run's :class:`TeacherRoutes`, checked and loaded, or None for a run without routes.

    Args:
        args: the run's arguments.
        teachers: the trainer's ``teachers`` (None without routes).
        teacher_model: the trainer's ``teacher_model`` (must be None with routes).
        trainer_kwargs: the keyword arguments for ``transformers.Trainer`` (its datasets are checked).
        student: the student (its head kind, and no parameter shared with a teacher).
        init_kwargs: ``from_pretrained`` keyword arguments for teachers given as folders or Hub ids.

    Returns:
        The loaded :class:`TeacherRoutes`, their fingerprints taken; None when neither ``teachers`` nor
        ``teacher_route_column`` is given.
    """
    if teachers is None and args.teacher_route_column is None:
        return None
    check_route_setup(args, teachers, teacher_model)
    datasets = {split: trainer_kwargs.get(split) for split in ("train_dataset", "eval_dataset")}
    routes = TeacherRoutes(args, teachers, datasets)
    routes.load(detect_head_kind(student), student, init_kwargs)
    return routes
