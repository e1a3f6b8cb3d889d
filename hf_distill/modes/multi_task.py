"""Multi-task distillation: one student encoder with a head per task, each task taught by its own teacher.

The student is a shared encoder (any ``AutoModel``, e.g. ``BertModel``) with one head per task: a
sequence-classification head on the first token's hidden state, or a token-classification head on every
position. Each training batch holds examples of one task only (:class:`TaskBatchSampler`); for a batch of
task ``k`` the loss involves only head ``k`` and teacher ``k``:

    loss_k = alpha * D(teacher_k(x) || head_k(encoder(x))) + (1 - alpha) * CE(head_k(encoder(x)), y),

with ``D`` the configured distillation loss at ``temperature`` (as in the base trainer). Each batch's loss is
its own mean over labelled items (examples or tokens); under gradient accumulation the batches of one step,
possibly of different tasks, are averaged. How often each task comes up follows its dataset's size (every
example once per epoch) or the given ``task_weights``.

The student saves as ``model.safetensors`` plus ``multi_task_student.json`` (encoder config and heads) and
reloads with :meth:`MultiTaskStudent.from_pretrained`.
"""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict
from collections.abc import Iterator, Mapping
from typing import Any

import safetensors.torch
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from transformers import AutoConfig, AutoModel, PreTrainedModel, Trainer

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.batch import DistillationBatch, TargetKind, TeacherTarget, require_labels
from hf_distill.checks import check_separate_models
from hf_distill.hub.trainer_card import record_teacher
from hf_distill.hub.trainer_saving import StudentSaving
from hf_distill.model_kind import SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION, detect_head_kind, logits_of
from hf_distill.terms.logits import PlainLogitTerms, StudentView
from hf_distill.training.placement import prepare_teacher

HEAD_KINDS = (SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION)
CONFIG_NAME = "multi_task_student.json"
WEIGHTS_NAME = "model.safetensors"
TASK = "task"


class MultiTaskStudent(nn.Module):
    """A shared encoder and a linear head per task.

    Args:
        encoder: a Transformers base model returning ``last_hidden_state`` ``(B, T, H)``.
        heads: ``{task: (kind, num_labels)}`` with ``kind`` one of ``sequence_classification`` (logits
            ``(B, C)`` from the first token) or ``token_classification`` (logits ``(B, T, C)``).
    """

    def __init__(self, encoder: PreTrainedModel, heads: Mapping[str, tuple[str, int]]):
        super().__init__()
        if not heads:
            raise ValueError("MultiTaskStudent needs at least one head: heads={'task': (kind, num_labels)}.")
        for task, (kind, num_labels) in heads.items():
            if kind not in HEAD_KINDS:
                raise ValueError(f"Head {task!r} has kind {kind!r}; choose one of {HEAD_KINDS}.")
            if num_labels < 1:
                raise ValueError(f"Head {task!r} has num_labels={num_labels}; a head needs >= 1 classes.")
        self.encoder = encoder
        self.head_specs = {task: (kind, int(n)) for task, (kind, n) in heads.items()}
        # What config.distillation is for a transformers student: each task's teacher and its fingerprint,
        # saved with the student so that a push of its folder can refuse those teachers' weights.
        self.distillation: dict[str, Any] = {}
        hidden = encoder.config.hidden_size
        self.heads = nn.ModuleDict({task: nn.Linear(hidden, n) for task, (_, n) in self.head_specs.items()})

    def forward(self, input_ids=None, attention_mask=None, *, task: str, **encoder_inputs: Any) -> dict:
        if task not in self.heads:
            raise ValueError(
                f"The batch is for task {task!r}, but the student has heads for {sorted(self.heads)}; give the "
                "student a head per task (MultiTaskStudent(heads=...))."
            )
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, **encoder_inputs
        ).last_hidden_state
        if self.head_specs[task][0] == SEQUENCE_CLASSIFICATION:
            hidden = hidden[:, 0]
        return {"logits": self.heads[task](hidden)}

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        os.makedirs(folder, exist_ok=True)
        self.save_config(folder)
        state = {k: v.contiguous() for k, v in self.state_dict().items()}
        safetensors.torch.save_file(state, os.path.join(folder, WEIGHTS_NAME), metadata={"format": "pt"})

    def save_config(self, folder: str | os.PathLike) -> None:
        # A BERT-like encoder built without its (unused) pooler must be rebuilt without it to load.
        build_kwargs = {"add_pooling_layer": False} if getattr(self.encoder, "pooler", 0) is None else {}
        spec = {
            "encoder": self.encoder.config.to_dict(),
            "encoder_kwargs": build_kwargs,
            "heads": self.head_specs,
            "distillation": self.distillation,
        }
        with open(os.path.join(folder, CONFIG_NAME), "w") as f:
            json.dump(spec, f, indent=2)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> MultiTaskStudent:
        path = os.path.join(folder, CONFIG_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} is missing, so {folder} does not hold a multi-task student; save one with "
                "MultiTaskStudent.save_pretrained or MultiTaskDistillationTrainer.save_model."
            )
        with open(path) as f:
            spec = json.load(f)
        encoder_config = dict(spec["encoder"])
        config = AutoConfig.for_model(encoder_config.pop("model_type"), **encoder_config)
        encoder = AutoModel.from_config(config, **spec.get("encoder_kwargs", {}))
        model = cls(encoder, {t: tuple(h) for t, h in spec["heads"].items()})
        model.load_state_dict(safetensors.torch.load_file(os.path.join(folder, WEIGHTS_NAME)))
        model.distillation = spec.get("distillation", {})
        return model


class MultiTaskDataset(TorchDataset):
    """Several task datasets behind one index; item ``i`` is an example of one task with its ``task`` name.

    Args:
        datasets: ``{task: dataset}`` of tokenized examples (``input_ids``, ``attention_mask``, ``labels``).
        task_weights: ``{task: weight > 0}``, how often batches of each task are drawn; None draws every
            example once per epoch (each task in proportion to its size).
    """

    def __init__(self, datasets: Mapping[str, Any], task_weights: Mapping[str, float] | None = None):
        if not datasets:
            raise ValueError("MultiTaskDataset needs at least one task: datasets={'task': dataset}.")
        empty = [task for task, d in datasets.items() if len(d) == 0]
        if empty:
            raise ValueError(
                f"The datasets of tasks {empty} are empty; there would be no batch of those tasks. Check their "
                "split and filtering, or leave the task out."
            )
        if task_weights is not None:
            if set(task_weights) != set(datasets):
                raise ValueError(
                    f"task_weights names tasks {sorted(task_weights)} but the datasets are {sorted(datasets)}; "
                    "give one weight per task."
                )
            bad = {t: w for t, w in task_weights.items() if not w > 0}
            if bad:
                raise ValueError(
                    f"task_weights must be > 0, got {bad}: a weight is how often the task's batches are drawn. "
                    "Leave a task out instead of giving it weight 0."
                )
        self.datasets = dict(datasets)
        self.task_weights = dict(task_weights) if task_weights is not None else None
        self.offsets: dict[str, int] = {}
        total = 0
        for task, dataset in self.datasets.items():
            self.offsets[task] = total
            total += len(dataset)
        self._length = total

    def __len__(self) -> int:
        return self._length

    def task_ranges(self) -> dict[str, range]:
        return {t: range(self.offsets[t], self.offsets[t] + len(d)) for t, d in self.datasets.items()}

    def __getitem__(self, index: int) -> dict[str, Any]:
        for task, indices in self.task_ranges().items():
            if index in indices:
                return {**self.datasets[task][index - indices.start], TASK: task}
        raise IndexError(f"index {index} is out of range for a MultiTaskDataset of {len(self)} examples")


class TaskBatchSampler:
    """Yields lists of indices into a :class:`MultiTaskDataset`, each list from a single task.

    Each task's examples are shuffled (with ``shuffle``) and cut into batches of ``batch_size``. Without task
    weights the batches of all tasks are shuffled together, so every example comes once per epoch; with
    weights, each of the epoch's batches picks its task with probability ``w_k / sum(w)`` and takes that
    task's next batch, reshuffling a task whose batches ran out. Every iteration reshuffles, from ``seed``.
    """

    def __init__(self, dataset: MultiTaskDataset, batch_size: int, *, shuffle: bool = True, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.ranges, self.weights = dataset.task_ranges(), dataset.task_weights
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _task_batches(self, task: str, rng: random.Random) -> list[list[int]]:
        indices = list(self.ranges[task])
        if self.shuffle:
            rng.shuffle(indices)
        return [indices[i : i + self.batch_size] for i in range(0, len(indices), self.batch_size)]

    def __len__(self) -> int:
        return sum(-(-len(r) // self.batch_size) for r in self.ranges.values())

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        self.epoch += 1  # a new order each iteration, also where nobody calls set_epoch
        if self.weights is None:
            batches = [b for task in self.ranges for b in self._task_batches(task, rng)]
            if self.shuffle:
                rng.shuffle(batches)
            yield from batches
            return
        tasks = list(self.ranges)
        pending = {task: [] for task in tasks}
        for _ in range(len(self)):
            task = rng.choices(tasks, weights=[self.weights[t] for t in tasks])[0]
            if not pending[task]:
                pending[task] = self._task_batches(task, rng)
            yield pending[task].pop(0)


class MultiTaskCollator:
    """Collates a single-task list of examples with that task's collator and adds ``task`` to the batch."""

    def __init__(self, collators: Mapping[str, Any]):
        self.collators = dict(collators)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        tasks = {f[TASK] for f in features}
        if len(tasks) != 1:
            raise ValueError(
                f"A batch mixes the tasks {sorted(tasks)}; each batch must hold one task, since only that "
                "task's head and teacher are used. Draw batches with TaskBatchSampler."
            )
        task = tasks.pop()
        if task not in self.collators:
            raise ValueError(f"No collator for task {task!r}; give one per task ({sorted(self.collators)}).")
        batch = self.collators[task]([{k: v for k, v in f.items() if k != TASK} for f in features])
        return {**batch, TASK: task}


class MultiTaskDistillationTrainer(StudentSaving, Trainer):
    """Trains a :class:`MultiTaskStudent`, each task's batches against that task's teacher.

    Args:
        model: the :class:`MultiTaskStudent`.
        teacher_models: ``{task: teacher}``, a sequence- or token-classification model per task, of the kind
            and ``num_labels`` of the student's head for that task.
        args: :class:`~hf_distill.DistillationTrainingArguments` (temperature, alpha, distillation_loss,
            jsd_beta, skew_lambda; hidden-state and attention matching are not supported here).
        collators: ``{task: collator}`` for each task's examples (e.g. ``DataCollatorWithPadding`` and
            ``DataCollatorForTokenClassification``); used when no ``data_collator`` is given.
        **kwargs: as for ``transformers.Trainer``; ``train_dataset`` / ``eval_dataset`` are
            :class:`MultiTaskDataset`.

    The loss parts are logged per task as ``loss_kd_<task>`` and ``loss_task_<task>``. Saving is that of every
    hf_distill trainer (:class:`~hf_distill.hub.trainer_saving.StudentSaving`): complete-or-skipped checkpoints,
    a model card, each teacher's fingerprint in ``multi_task_student.json``, a push that refuses any teacher.
    """

    def __init__(
        self,
        model: MultiTaskStudent | None = None,
        teacher_models: Mapping[str, nn.Module] | None = None,
        args: DistillationTrainingArguments | None = None,
        *,
        collators: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ):
        if not isinstance(args, DistillationTrainingArguments):
            raise TypeError(
                f"MultiTaskDistillationTrainer needs DistillationTrainingArguments, got {type(args).__name__}; "
                "they carry temperature, alpha and distillation_loss."
            )
        if not isinstance(model, MultiTaskStudent):
            raise TypeError(
                f"MultiTaskDistillationTrainer trains a MultiTaskStudent, got {type(model).__name__}; build "
                "one from an encoder and a head per task."
            )
        unsupported = list(args.feature_weights)
        if unsupported:
            raise ValueError(
                f"{unsupported} > 0, but multi-task distillation matches only the heads' outputs (each task's "
                "teacher has its own depth and width); set them to 0."
            )
        teacher_models = dict(teacher_models or {})
        if set(teacher_models) != set(model.head_specs):
            raise ValueError(
                f"teacher_models are for tasks {sorted(teacher_models)} but the student has heads for "
                f"{sorted(model.head_specs)}; give exactly one teacher per head."
            )
        check_task_teachers(model, teacher_models)
        for split in ("train_dataset", "eval_dataset"):
            dataset = kwargs.get(split)
            if dataset is not None and not isinstance(dataset, MultiTaskDataset):
                raise TypeError(
                    f"The {split} is a {type(dataset).__name__}; wrap the task datasets in "
                    "MultiTaskDataset({'task': dataset, ...}) so that batches can be drawn per task."
                )
            if dataset is not None and set(dataset.datasets) - set(model.head_specs):
                raise ValueError(
                    f"The {split} has tasks {sorted(set(dataset.datasets) - set(model.head_specs))} without a "
                    "student head; add heads for them or leave them out."
                )
        if kwargs.get("data_collator") is None:
            if collators is None:
                raise ValueError(
                    "Give collators={'task': collator, ...} (or a data_collator that handles the `task` column): "
                    "tasks pad differently (token labels are padded with -100)."
                )
            kwargs["data_collator"] = MultiTaskCollator(collators)
        # Taken before the teachers are placed; the student saves them with itself (see save_config).
        self.teacher_fingerprints = {task: record_teacher(model, t) for task, t in teacher_models.items()}
        model.distillation = {
            "teachers": {
                task: {
                    "teacher": getattr(teacher, "name_or_path", None) or None,
                    "teacher_fingerprint": self.teacher_fingerprints[task],
                }
                for task, teacher in teacher_models.items()
            }
        }
        # What the model card names as the run's task (each head has its own kind).
        self.head_kind = "multi_task"
        super().__init__(model=model, args=args, **kwargs)
        # The student's forward takes **kwargs, which makes Trainer assume it normalises by num_items_in_batch;
        # each batch is its own mean here, so Trainer must divide by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        self.teachers = {
            task: prepare_teacher(self.accelerator, teacher.eval().requires_grad_(False))
            for task, teacher in teacher_models.items()
        }
        self._parts: dict[str, list[torch.Tensor]] = defaultdict(list)
        # The base trainer's logit terms, one per head kind, on the full logits.
        self.logit_terms = {
            task: PlainLogitTerms(kind, args, None) for task, (kind, _) in model.head_specs.items()
        }

    def _batches(self, dataset: MultiTaskDataset, batch_size: int, shuffle: bool) -> DataLoader:
        sampler = TaskBatchSampler(dataset, batch_size, shuffle=shuffle, seed=self.args.seed)
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )
        return self.accelerator.prepare(loader)

    def get_train_dataloader(self) -> DataLoader:
        return self._batches(self.train_dataset, self._train_batch_size, shuffle=True)

    def get_eval_dataloader(self, eval_dataset=None) -> DataLoader:
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if isinstance(dataset, str):
            dataset = self.eval_dataset[dataset]
        return self._batches(dataset, self.args.eval_batch_size, shuffle=False)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        task = inputs[TASK]
        # Each batch is normalised by its own labelled items: examples and tokens of different tasks are not
        # comparable counts, so num_items_in_batch over a mixed accumulation window is not used.
        batch = DistillationBatch.from_inputs({k: v for k, v in inputs.items() if k != TASK})
        require_labels(
            batch.labels, self.args.alpha, where=f"A batch of task {task!r}", teacher="the teachers"
        )
        student = StudentView(model(**batch.model_inputs, task=task))
        student.logits = logits_of(student.outputs)
        with torch.no_grad():
            target = TeacherTarget(
                TargetKind.LIVE, logits=logits_of(self.teachers[task](**batch.model_inputs))
            )
        loss, parts = self.logit_terms[task](student, target, batch)
        for name, value in parts.items():
            self._parts[f"{name}_{task}"].append(value.detach())
        return (loss, {"logits": student.logits}) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        # Logits of different tasks have different shapes and cannot be concatenated: evaluate the loss only.
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        prefix = "eval_" if any(k.startswith("eval_") for k in logs) else ""
        for name, values in self._parts.items():
            logs[prefix + name] = torch.stack(values).mean().item()
        self._parts.clear()
        super().log(logs, start_time)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if self.args.should_save:
            # Before the weights and the card: a checkpoint's marker lists it, a push finds the record.
            folder = output_dir or self.args.output_dir
            os.makedirs(folder, exist_ok=True)
            self.accelerator.unwrap_model(self.model).save_config(folder)
        super()._save(output_dir, state_dict)

    def guarded_teachers(self) -> list[tuple[nn.Module | None, dict | None]]:
        return [(self.teachers[task], self.teacher_fingerprints[task]) for task in self.teachers]


def check_task_teachers(model: MultiTaskStudent, teacher_models: Mapping[str, nn.Module]) -> None:
    """Each task's teacher is a separate model with the kind of head and ``num_labels`` of the student's head."""
    for task, teacher in teacher_models.items():
        check_separate_models(model, teacher, role=f"teacher_models[{task!r}]")
        kind, num_labels = model.head_specs[task]
        if detect_head_kind(teacher) != kind:
            raise ValueError(
                f"The teacher of task {task!r} is a {type(teacher).__name__} ({detect_head_kind(teacher)}) but the "
                f"student's head is {kind}; the teacher needs the same kind of head."
            )
        teacher_labels = getattr(getattr(teacher, "config", None), "num_labels", num_labels)
        if teacher_labels != num_labels:
            raise ValueError(
                f"The teacher of task {task!r} has num_labels={teacher_labels} but the student's head has "
                f"{num_labels}; distillation compares their label distributions, so they must match."
            )
