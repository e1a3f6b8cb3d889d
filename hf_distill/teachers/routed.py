"""Teacher routes: each row of a batch labelled by the teacher its dataset row names.

``DistillationTrainer(teachers={"code": code_model, "chat": "http://HOST:PORT/v1"},
args=DistillationTrainingArguments(teacher_route_column="teacher", ...))`` trains on a dataset whose
``teacher`` column names, per row, which teacher labels it. Where the mixture of teachers
(:mod:`hf_distill.modes.multi_teacher`) asks every teacher about every row and mixes their distributions,
a route asks one teacher per row: the batch is split by route, each sub-batch goes to its teacher (any
:class:`~hf_distill.teachers.sources.TeacherSource`: a live model, the cache the rows carry, a served URL), and
the targets are put back in row order (:class:`RoutedTeacher`).

One batch, one target form. The logit terms take one form per batch, so when a batch mixes a full-logits
teacher (a live model, a logits cache) with a top-k one (a served teacher, a top-k cache), the full logits are
converted to the top-k form at the top-k teachers' ``k`` with the exact tail logit at the training temperature
(:func:`hf_distill.losses.topk.topk_teacher`, what a top-k cache of that teacher would hold): the loss then is
the top-k loss for every row of that batch. Converting is chosen over refusing because mixed routes are the
point of routing (a local model beside a served one); top-k teachers of different ``k`` are refused.

:class:`RouteColumnCollator` carries the route column through the data collator (a column of strings that
``DataCollatorWithPadding`` cannot pad) to the batch key :data:`hf_distill.batch.ROUTES`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from hf_distill.batch import ROUTES, DistillationBatch, TargetKind, TeacherTarget
from hf_distill.losses.topk import topk_teacher
from hf_distill.teachers.sources import TeacherSource


def check_routes(routes: Iterable[Any], names: Iterable[str], where: str) -> None:
    """Refuses rows without a route and routes that name no teacher.

    Args:
        routes: each row's route (a teacher name).
        names: the teachers' names.
        where: what holds the routes, for the message (``"train_dataset column 'teacher'"``).

    Raises:
        ValueError: naming the rows and the teachers there are.
    """
    routes, known = list(routes), sorted(names)
    empty = [i for i, r in enumerate(routes) if r is None or (isinstance(r, str) and not r.strip())]
    if empty:
        raise ValueError(
            f"{len(empty)} rows of the {where} have no route (rows {empty[:5]}): every row must name the "
            f"teacher that labels it, one of {known}. Fill the column, or drop those rows."
        )
    unknown = sorted({str(r) for r in routes} - set(known))
    if unknown:
        raise ValueError(
            f"The {where} names teachers {unknown} that are not among the trainer's teachers {known}: each "
            "route must be a key of `teachers`. Add those teachers, or rename the routes."
        )


class RouteColumnCollator:
    """Wraps a data collator: takes the route column out of each row, batches the rest with ``collator``, and
    adds the rows' routes to the batch as a list of strings under :data:`hf_distill.batch.ROUTES`.

    Args:
        collator: batches the rest of each row (``DataCollatorWithPadding``, a cache collator, ...).
        column: the dataset column naming each row's teacher (``teacher_route_column``).
    """

    def __init__(self, collator: Any, column: str):
        self.collator, self.column = collator, column

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if any(self.column not in f for f in features):
            raise ValueError(
                f"A row reached the collator without the route column {self.column!r} "
                "(teacher_route_column): every dataset a routed trainer trains or evaluates on needs it."
            )
        routes = [f.pop(self.column) for f in features]
        batch = self.collator(features)
        batch[ROUTES] = [str(r) for r in routes]
        return batch


class RoutedTeacher:
    """A :class:`~hf_distill.teachers.sources.TeacherSource` asking each row's own teacher (module docstring).

    Args:
        teachers: the named sources; each row's route is one of these names.
        temperature: the training temperature (the tail logit of converted full logits).
    """

    def __init__(self, teachers: Mapping[str, TeacherSource], temperature: float):
        if not teachers:
            raise ValueError("RoutedTeacher needs at least one named teacher.")
        self.teachers, self.temperature = dict(teachers), temperature

    def __call__(self, batch: DistillationBatch, output_kwargs: dict[str, bool]) -> TeacherTarget:
        if batch.routes is None:
            raise ValueError(
                "This batch carries no teacher routes, but the trainer routes rows to named teachers: the "
                "dataset needs the teacher_route_column, and the data collator must be wrapped in "
                "RouteColumnCollator (the trainer does so itself)."
            )
        check_routes(batch.routes, self.teachers, "batch's routes")
        rows_of: dict[str, list[int]] = {}
        for row, name in enumerate(batch.routes):
            rows_of.setdefault(name, []).append(row)
        # Each teacher sees its own rows only; output_kwargs (hidden states) are not asked: rows of other
        # teachers would be matched against another model's insides.
        targets = [(rows, self.teachers[name](batch.subset(rows), {})) for name, rows in rows_of.items()]
        return merge_targets(targets, len(batch.routes), self.temperature)


def merge_targets(
    targets: list[tuple[list[int], TeacherTarget]], size: int, temperature: float
) -> TeacherTarget:
    """The targets of sub-batches put back in row order as one target of ``size`` rows.

    Full logits merge as logits; when any sub-batch is top-k, full logits are converted to top-k at that ``k``
    (module docstring).

    Args:
        targets: ``(rows, target)`` per sub-batch; the rows of all sub-batches partition ``range(size)``.
        size: the batch's rows.
        temperature: the tail logit's temperature for converted logits.

    Returns:
        A :class:`~hf_distill.batch.TeacherTarget` of kind ``ROUTED``.
    """
    for _, target in targets:
        if target.logits is None and target.topk is None:
            raise ValueError(
                f"A routed teacher gave a target of neither logits nor top-k form ({target.kind.value}); routes "
                "take live models as full logits, caches and served teachers as they come."
            )
    ks = sorted({target.topk[0].shape[-1] for _, target in targets if target.topk is not None})
    if not ks:
        return TeacherTarget(TargetKind.ROUTED, logits=place([(r, t.logits) for r, t in targets], size))
    if len(ks) > 1:
        raise ValueError(
            f"The teachers of one batch give top-k targets of different k {ks}: one batch's top-k loss compares "
            "one set of k + 1 outcomes per position. Give every top-k teacher the same k (teacher_server_top_k, "
            "the caches' top_k)."
        )
    parts = []
    for rows, target in targets:
        topk = target.topk
        if topk is None:
            topk = topk_teacher(target.logits, ks[0], temperature=temperature)
        parts.append((rows, topk))
    return TeacherTarget(
        TargetKind.ROUTED, topk=tuple(place([(r, t[i]) for r, t in parts], size) for i in range(3))
    )


def place(pieces: list[tuple[list[int], torch.Tensor]], size: int) -> torch.Tensor:
    """Row blocks ``(n_i, ...)`` put at their rows of one ``(size, ...)`` tensor."""
    first = pieces[0][1]
    dtype = torch.promote_types(first.dtype, torch.float32) if first.is_floating_point() else first.dtype
    shapes = {tuple(p.shape[1:]) for _, p in pieces}
    if len(shapes) > 1:
        raise ValueError(
            f"The routed teachers' targets have different shapes past the row {sorted(shapes)}: the teachers "
            "must share the student's label space or vocabulary, and the rows one padded length."
        )
    out = torch.zeros((size, *first.shape[1:]), dtype=dtype, device=first.device)
    for rows, piece in pieces:
        out[torch.as_tensor(rows, device=first.device)] = piece.to(device=first.device, dtype=dtype)
    return out
