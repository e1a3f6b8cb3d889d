"""What keeps a teacher off the Hub: fingerprints of its weights, and the checks a folder passes before a push.

A push decides by content, not by file names. A folder is pushed only when

1. it is not a teacher that the run's ``report.json`` lists (``teacher.name_or_path``, ``teacher.fine_tuned_dir``,
   ``extra_teachers``), does not lie inside one and holds none;
2. its ``config.json`` carries the ``distillation`` record every student gets (:mod:`hf_distill.students.build` writes
   it, the ``DistillationTrainer`` adds the teacher's fingerprint to it);
3. none of the weight files it would upload holds the teacher: together they do not contain every tensor of
   the teacher's fingerprint, and every one of them can be read to tell.

A fingerprint names up to :data:`SIGNATURE_SIZE` of the teacher's tensors, the largest floating-point ones that
are not constant (a fresh LayerNorm's ones say nothing about which model they came from). Each reads
``"<shape>:<hash>"``, the hash being BLAKE2b over :data:`SAMPLES` evenly spaced entries rounded to bfloat16:

- names are left out, so a copy saved under another prefix (``teacher.bert...``, a state dict in a ``.pt``) is
  found as well as one saved with ``save_pretrained``;
- a copy in float32 or bfloat16 (saved in one, loaded in the other) gives the same hashes;
- training moves entries across bfloat16 steps, so a trained student of the teacher's own architecture does
  not match, while a student built from some teacher layers holds only some of the tensors.

A partial copy (some shards of a sharded teacher) does not contain every tensor and is left to rules 1 and 2.

ONNX graphs (what ``push --with_onnx`` sends from ``onnx/``) are read like weight files
(:mod:`hf_distill.hub.onnx_graphs`): their initializers, with external data files (``*.onnx_data``), 2-D weights
also transposed, so a teacher exported in fp32 is found by content. Two more rules cover what content cannot
tell, read from the ``export.json`` that ``export_student`` writes beside the graphs:

4. a graph whose ``export.json`` records the teacher's fingerprint, or a model without the ``distillation``
   record (not a student of hf_distill: the recipes export the teacher too), is refused, whatever its precision;
5. a quantized graph (integer weights) without that record is refused when the teacher is known: int8 weights
   no longer equal the teacher's, so its content cannot tell.

Not caught: a teacher graph in fp16 (the float16 rounding before bfloat16 can move entries), one whose weights
an optimiser fused or folded (ONNX Runtime's transformer fusion packs Q, K and V into one tensor), weights
inside control-flow subgraphs, and an int8 teacher whose ``export.json`` was rewritten to name a student;
external data no uploaded graph names is refused as unreadable.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.utils import filter_repo_objects
from safetensors import safe_open
from torch import nn

from hf_distill.hub.onnx_graphs import (
    EXTERNAL_DATA_SUFFIXES,
    ONNX_SUFFIX,
    export_source,
    external_data_files,
    has_quantized_weights,
    onnx_tensors,
)
from hf_distill.reports.schema import REPORT_FILENAME, load_report

FINGERPRINT_METHOD = "bf16-strided-v1"
SIGNATURE_SIZE = 16
SAMPLES = 1024
# Weight formats whose tensors can be read here; a weight file in any other format cannot be told apart from
# the teacher, so a folder that would upload one is refused.
READABLE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
WEIGHT_SUFFIXES = (*READABLE_SUFFIXES, ".gguf", ".h5", ".msgpack", ONNX_SUFFIX, *EXTERNAL_DATA_SUFFIXES)
# Trainer's pickled TrainingArguments: uploaded with every Trainer push, holds no weights, and is not loaded
# here (unpickling it would run code).
NOT_WEIGHTS = ("training_args.bin",)


# ---- fingerprints -----------------------------------------------------------------------------------------


def tensor_digest(tensor: torch.Tensor) -> str | None:
    """``"<d0>x<d1>...:<16 hex>"``, or None for a tensor that cannot identify a model (not floating point,
    empty, on the meta device, or constant at the sampled entries).

    The entries at flat indices ``i * (n - 1) // (k - 1)`` for ``i < k = min(n, SAMPLES)`` are rounded to
    bfloat16 and hashed with the shape.
    """
    if not tensor.is_floating_point() or tensor.numel() == 0 or tensor.device.type == "meta":
        return None
    flat = tensor.detach().reshape(-1)
    count = min(flat.numel(), SAMPLES)
    index = torch.arange(count, dtype=torch.int64) * (flat.numel() - 1) // max(count - 1, 1)
    values = flat[index.to(flat.device)].to(torch.bfloat16).cpu()
    if bool((values == values[0]).all()):
        return None
    shape = "x".join(str(size) for size in tensor.shape)
    hashed = hashlib.blake2b(shape.encode() + values.view(torch.int16).numpy().tobytes(), digest_size=8)
    return f"{shape}:{hashed.hexdigest()}"


def _signature(tensors: list[tuple[str, int, Any]]) -> dict[str, Any] | None:
    """The fingerprint of ``(name, numel, load)`` entries: digests of the largest, in order of size then name."""
    digests: list[str] = []
    for _, _, load in sorted(tensors, key=lambda entry: (-entry[1], entry[0])):
        digest = tensor_digest(load())
        if digest is not None and digest not in digests:
            digests.append(digest)
        if len(digests) == SIGNATURE_SIZE:
            break
    return {"method": FINGERPRINT_METHOD, "tensors": digests} if digests else None


def model_fingerprint(model: nn.Module) -> dict[str, Any] | None:
    """The fingerprint of a model in memory (tied tensors count once); None when no tensor can identify it."""
    seen: set[int] = set()
    tensors = []
    for name, tensor in model.state_dict().items():
        if tensor.device.type == "meta" or tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        tensors.append((name, tensor.numel(), lambda tensor=tensor: tensor))
    return _signature(tensors)


def file_tensors(path: Path) -> Iterator[tuple[str, tuple[int, ...], Any]]:
    """``(name, shape, load)`` for each tensor of a weight file; ``load()`` reads that tensor alone where the
    format allows (safetensors, torch's zip format through ``mmap``). Nested state dicts are walked."""
    if path.name.endswith(".safetensors"):
        # Left open (closed when the last `load` is dropped): a fingerprint loads the tensors it picks later.
        handle = safe_open(str(path), framework="pt")
        for name in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
            shape = tuple(handle.get_slice(name).get_shape())
            yield name, shape, lambda name=name: handle.get_tensor(name)
        return
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # the legacy (non-zip) format cannot be memory-mapped
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    stack: list[tuple[str, Any]] = [("", loaded)]
    while stack:
        prefix, value = stack.pop()
        if isinstance(value, torch.Tensor):
            yield prefix, tuple(value.shape), lambda value=value: value
        elif isinstance(value, dict):
            stack += [(f"{prefix}.{key}" if prefix else str(key), item) for key, item in value.items()]
        elif isinstance(value, list | tuple):
            stack += [(f"{prefix}.{i}", item) for i, item in enumerate(value)]


def folder_fingerprint(folder: Path) -> dict[str, Any] | None:
    """The fingerprint of the model saved in ``folder`` (its readable weight files directly inside)."""
    tensors = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name.endswith(READABLE_SUFFIXES) and path.name not in NOT_WEIGHTS:
            try:
                entries = list(file_tensors(path))
            except Exception:  # noqa: BLE001 (a file that is not a state dict is not part of the model)
                continue
            tensors += [
                (f"{path.name}:{name}", int(torch.Size(shape).numel()), load) for name, shape, load in entries
            ]
    return _signature(tensors)


def files_holding(fingerprint: dict[str, Any], files: dict[str, Path]) -> tuple[list[str], list[str]]:
    """Which of ``files`` (relative name -> path) hold the teacher of ``fingerprint``, and which cannot be read.

    The first list is empty unless the files together contain every tensor of the fingerprint; it then names
    the fewest files that do. Only tensors of a fingerprinted shape are read.
    """
    wanted = set(fingerprint["tensors"])
    shapes = {digest.split(":", 1)[0] for digest in wanted}
    found: dict[str, set[str]] = {}
    unreadable = []
    read_through_graphs = graph_data_files(files)
    for relative, path in sorted(files.items()):
        if relative in read_through_graphs:
            continue
        reader = onnx_tensors if path.name.endswith(ONNX_SUFFIX) else file_tensors
        if not path.name.endswith((*READABLE_SUFFIXES, ONNX_SUFFIX)):
            unreadable.append(relative)
            continue
        try:
            for _, shape, load in reader(path):
                if "x".join(str(size) for size in shape) in shapes:
                    digest = tensor_digest(load())
                    if digest in wanted:
                        found.setdefault(relative, set()).add(digest)
        except Exception:  # noqa: BLE001 (any failure to parse means the file cannot be vouched for)
            unreadable.append(relative)
    if not found or not set().union(*found.values()) >= wanted:
        return [], unreadable
    # Named: the fewest files that hold it (greedy), leaving out the folder's own model weights (which share
    # the tensors a student copied from the teacher) whenever the other files hold it without them.
    own = {r for r in found if "/" not in r and r.startswith(("model", "pytorch_model"))}
    others = {r: found[r] for r in found if r not in own}
    pool = others if others and set().union(*others.values()) >= wanted else found
    remaining, cover = set(wanted), []
    while remaining:
        best = max(sorted(pool), key=lambda relative: len(pool[relative] & remaining))
        cover.append(best)
        remaining -= pool[best]
    return sorted(cover), unreadable


def graph_data_files(files: dict[str, Path]) -> set[str]:
    """Which of ``files`` are external data of an ONNX graph among them (read through that graph)."""
    named: set[Path] = set()
    for path in files.values():
        if path.name.endswith(ONNX_SUFFIX):
            try:
                named |= external_data_files(path)
            except Exception:  # noqa: BLE001 (the graph itself is then reported as unreadable)
                continue
    return {relative for relative, path in files.items() if path.resolve() in named}


# ---- what report.json lists as a teacher ------------------------------------------------------------------


def find_report(folder: str | Path) -> Path | None:
    """``report.json`` in the student folder or up to three folders above it (a recipe's run directory holds
    ``students/<name>/``, and ``students/<name>/seed-<s>/`` with several seeds), else None."""
    folder = Path(folder)
    for candidate in (folder, *list(folder.parents)[:3]):
        if (candidate / REPORT_FILENAME).is_file():
            return candidate / REPORT_FILENAME
    return None


def report_teacher_folders(report_path: Path) -> list[tuple[str, Path]]:
    """``(where in the report, folder)`` for each teacher of ``report_path`` that names a local folder.

    A relative path is tried from the working directory and, since recipes write paths under their run
    directory, from the report's own folder once the run directory's name is stripped from its front.
    """
    report = load_report(report_path, partial=True)
    entries = [("teacher", report.get("teacher") or {})]
    entries += [(f"extra_teachers[{i}]", e) for i, e in enumerate(report.get("extra_teachers") or [])]
    run_dir = report_path.parent
    folders = []
    for where, entry in entries:
        for key in ("fine_tuned_dir", "name_or_path"):
            value = entry.get(key) if isinstance(entry, dict) else None
            if not isinstance(value, str) or not value:
                continue
            path = Path(value)
            candidates = [path]
            if not path.is_absolute() and run_dir.name in path.parts:
                cut = path.parts.index(run_dir.name)
                candidates.append(run_dir.joinpath(*path.parts[cut + 1 :]))
            # A folder holding the whole run (a teacher loaded from ".") is no teacher's own folder.
            resolved = [c.resolve() for c in candidates if c.is_dir()]
            folders += [
                (f"{where}.{key}", c)
                for c in resolved
                if c not in (run_dir.resolve(), *run_dir.resolve().parents)
            ]
    return folders


def check_not_a_listed_teacher(folder: Path) -> None:
    """Refuses ``folder`` when the run's ``report.json`` lists it (or a folder around it, or inside it) as a
    teacher. Raises ValueError naming the report entry."""
    report_path = find_report(folder)
    if report_path is None:
        return
    root = folder.resolve()
    for where, teacher in report_teacher_folders(report_path):
        if root == teacher or teacher in root.parents:
            relation = "is" if root == teacher else "lies inside"
        elif root in teacher.parents:
            relation = "holds"
        else:
            continue
        raise ValueError(
            f"{folder} {relation} the teacher that {report_path} lists as {where} ({teacher}); hf_distill "
            "never uploads a teacher. Push a student folder of the run (its `students` entries name them)."
        )


def distillation_record(folder: Path) -> dict[str, Any]:
    """The ``distillation`` record of ``folder/config.json``; ValueError when it has none."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    record = config.get("distillation") if isinstance(config, dict) else None
    if not isinstance(record, dict):
        raise ValueError(
            f"{folder / 'config.json'} has no `distillation` record, so {folder} is not a student saved by "
            "hf_distill (hf_distill.students.build writes the record, the DistillationTrainer completes it in every "
            "student it saves) and may be a teacher; hf_distill never uploads a teacher. Push the folder the "
            "DistillationTrainer saved the student into, or upload other models with huggingface_hub."
        )
    return record


# ---- the weights a push would upload ----------------------------------------------------------------------


def upload_weight_files(folder: Path, ignore_patterns: list[str] | tuple[str, ...]) -> dict[str, Path]:
    """The weight files under ``folder`` that an ``upload_folder`` with ``ignore_patterns`` would send, keyed by
    their POSIX path relative to ``folder`` (``huggingface_hub``'s own pattern filter decides)."""
    paths = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
    sent = filter_repo_objects(list(paths), ignore_patterns=list(ignore_patterns))
    return {
        relative: paths[relative]
        for relative in sent
        if relative.lower().endswith(WEIGHT_SUFFIXES) and paths[relative].name not in NOT_WEIGHTS
    }


def recorded_fingerprint(folder: Path, record: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The teacher's fingerprint for the student in ``folder`` and where it came from: the one its
    ``distillation`` record carries, else (a student saved before fingerprints were recorded, or trained on
    cached outputs) one read from the teacher's folder when the record or the run's ``report.json`` names a
    local one; None when the teacher is nowhere at hand."""
    fingerprint = record.get("teacher_fingerprint")
    if isinstance(fingerprint, dict) and fingerprint.get("method") == FINGERPRINT_METHOD:
        source = f"the teacher fingerprint in {folder / 'config.json'}"
        return (fingerprint if fingerprint.get("tensors") else None), source
    named = record.get("teacher")
    candidates = [Path(named)] if isinstance(named, str) and named else []
    report_path = find_report(folder)
    if report_path is not None:
        candidates += [path for _, path in report_teacher_folders(report_path)]
    for candidate in candidates:
        if candidate.is_dir() and (candidate / "config.json").is_file():
            fingerprint = folder_fingerprint(candidate)
            if fingerprint is not None:
                return fingerprint, f"the teacher saved in {candidate}"
    return None, "no teacher at hand"


def check_no_teacher_content(
    folder: Path, files: dict[str, Path], fingerprint: dict[str, Any] | None, *, source: str
) -> None:
    """Refuses to upload ``files`` when they hold the teacher of ``fingerprint`` (``source`` says where that
    fingerprint came from) or when one of them cannot be read to tell. Raises ValueError naming the files."""
    if fingerprint is None:
        return
    holding, unreadable = files_holding(fingerprint, files)
    if holding:
        raise ValueError(
            f"{folder} holds the teacher's weights: {', '.join(holding)} contain every tensor of {source}; "
            "hf_distill never uploads a teacher. Move the teacher's files out of the folder, or push the "
            "student's own folder."
        )
    if unreadable:
        raise ValueError(
            f"{folder} would upload {', '.join(unreadable)}, weight files hf_distill cannot read to tell them "
            f"from the teacher ({source}); hf_distill never uploads a teacher. Move them out of the folder, "
            "or convert them to safetensors, or upload them yourself with huggingface_hub once you know they "
            "are the student's."
        )


def check_onnx_graphs(
    folder: Path, files: dict[str, Path], fingerprint: dict[str, Any] | None, *, source: str
) -> None:
    """Refuses ONNX graphs among ``files`` that ``export.json`` says come from the teacher or from a model that is
    not a student saved by hf_distill, and (when the teacher is known) quantized graphs with no such record,
    whose int8 weights cannot be told from the teacher's. Raises ValueError naming the graph."""
    for relative, path in sorted(files.items()):
        if not path.name.endswith(ONNX_SUFFIX):
            continue
        origin = export_source(path)
        if origin is not None:
            recorded = (origin.get("fingerprint") or {}).get("tensors") or []
            if fingerprint is not None and set(fingerprint["tensors"]) <= set(recorded):
                raise ValueError(
                    f"{folder} would upload {relative}, exported from the teacher: the export.json beside it "
                    f"records the model's fingerprint, which is {source}; hf_distill never uploads a teacher. "
                    f"Export the student into its own folder (`hf-distill export {folder} --output_dir {folder}`)."
                )
            if origin.get("distillation_record") is False:
                raise ValueError(
                    f"{folder} would upload {relative}, exported from a model without the `distillation` record "
                    "(its export.json says so): not a student saved by hf_distill, and maybe the teacher (the "
                    "recipes export it too); hf_distill never uploads a teacher. Export the student into its "
                    f"own folder (`hf-distill export {folder} --output_dir {folder}`)."
                )
        elif fingerprint is not None and has_quantized_weights(path):
            raise ValueError(
                f"{folder} would upload {relative}, a quantized graph without the export.json that says which "
                f"model it came from: its int8 weights cannot be told from the teacher ({source}); hf_distill "
                f"never uploads a teacher. Export the student with `hf-distill export {folder} --output_dir "
                f"{folder} --quantize int8-dynamic`, which records it."
            )
