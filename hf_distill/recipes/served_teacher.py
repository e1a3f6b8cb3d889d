"""A recipe whose teacher is served: ``hf-distill train codegen --teacher_model_name_or_path http://HOST:PORT/v1``.

The teacher lives in another process (``hf-distill serve-teacher``, vLLM): the recipe has its top-k
log-probabilities at temperature 1 (:mod:`hf_distill.teachers.served`), never its weights. What the recipe does:

- the rows are tokenized with ``--served_tokenizer`` (the served model's tokenizer: a folder, Hub id or offline
  alias), and the server is checked to tokenize the same way before anything is trained;
- the distilled student trains from the server's top-k (the trainer's served teacher); the no-KD baseline as
  always;
- students are built without the teacher's weights: ``gpt2`` (over the served model's vocabulary and sizes, from
  the config next to ``--served_tokenizer``) or ``pretrained``; ``teacher_layers`` and ``config`` copy weights the
  recipe does not have and are refused;
- the teacher's own score comes from the server: every held-out prompt token's log-probability is in its
  ``prompt_logprobs`` entry (vLLM always includes the prompt's own token), so its NLL, perplexity and bits per
  byte are exact, and the teacher check on the validation split runs as with a local teacher;
- what needs the weights here is marked not measured, with the reason: the teacher's latency (a forward over
  HTTP is not a forward here) and, where the served model's folder is not local, its size on disk. Its parameter
  count is the config's (the model built on the meta device: no memory, no weights).

Refused before any work, with what to do instead: other tasks, modes other than plain KD, several teachers,
cross-tokenizer students, the generation evaluation, ONNX export (each needs the teacher's weights here), and
what the trainer refuses for a served teacher (a temperature other than 1, hidden-state or attention terms).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.hub.teacher_origin import teacher_license
from hf_distill.losses.divergences import IGNORE_INDEX
from hf_distill.recipes.arguments import RecipeConfig, TeacherArguments
from hf_distill.recipes.offline import resolve_model_path
from hf_distill.recipes.tasks import TaskData
from hf_distill.students.build import count_parameters, model_size_on_disk
from hf_distill.teachers.served import ServedTeacher, check_served_setup, is_served_teacher
from hf_distill.training.metrics import ExampleScores, scores_from_nll

NOT_MEASURED_LATENCY = "the teacher is served over HTTP: its forward latency is not measured on this machine"
SERVED_STUDENTS = ("gpt2", "pretrained")


@dataclass
class ServedRecipeTeacher:
    """The recipe's served teacher: the URL the trainer is given, the served model's ``config`` (students are
    built from it, as :func:`~hf_distill.students.build.gpt2_student_for` reads a model's ``config``), where the
    config and tokenizer came from (``name_or_path``) and the client that scores held-out rows."""

    url: str
    config: PretrainedConfig
    name_or_path: str
    client: ServedTeacher


def is_served_recipe(teacher_args: TeacherArguments) -> bool:
    """Whether the recipe's teacher is a server (an ``http(s)://`` URL)."""
    return is_served_teacher(teacher_args.teacher_model_name_or_path)


def check_served_recipe(config: RecipeConfig, task: str) -> None:
    """Refuses, before any data or model is loaded, a served-teacher recipe that cannot run (module docstring);
    nothing to check for a local teacher.

    Args:
        config: the recipe's argument groups.
        task: the task's head kind (only ``causal_lm`` runs against a server)."""
    teacher_args, student_args, report_args = config.teacher, config.student, config.report
    mode_args, training_args = config.mode, config.training
    if not is_served_recipe(teacher_args):
        return
    url = teacher_args.teacher_model_name_or_path
    fixes = {
        "task": (task != "causal_lm", f"the task is {task}; a served teacher sends a causal LM's "
                 "log-probabilities, so it teaches codegen only. Pass the teacher's folder"),
        "served_tokenizer": (teacher_args.served_tokenizer is None, "--served_tokenizer is missing: the rows "
                             "are tokenized here with the served model's tokenizer (a folder, Hub id or alias "
                             "such as 'smollm2-135m'); pass it"),
        "teacher_cache": (teacher_args.teacher_cache is not None, "--teacher_cache is set too: the student "
                          "would train from the cache and the server at once. Pass one of them"),
        "student_init": (bool(set(student_args.student_init) - set(SERVED_STUDENTS)),
                         f"student_init {student_args.student_init}: 'teacher_layers' and 'config' copy the "
                         f"teacher's weights, which a served teacher does not send. Use {SERVED_STUDENTS}"),
        "distillation_mode": (mode_args.distillation_mode != "kd" or bool(mode_args.extra_teachers),
                              f"distillation_mode {mode_args.distillation_mode!r} (or extra_teachers) needs "
                              "the teacher's weights here (generation, several teachers). Use plain kd"),
        "student_tokenizer": (student_args.student_tokenizer is not None, "--student_tokenizer distils across "
                              "tokenizers from a cache the local teacher writes. Leave it out"),
        "generation_prompts": (report_args.generation_prompts > 0, "--generation_prompts has the teacher "
                               "generate here. Set it to 0"),
        "export": (report_args.export is not None, "--export exports the teacher's weights to ONNX. Leave it "
                   "out"),
    }  # fmt: skip
    for name, (refused, why) in fixes.items():
        if refused:
            raise ValueError(f"A served teacher ({url}) cannot run this recipe ({name}): {why}.")
    check_served_setup(training_args, task, cross_tokenizer=False)


def served_recipe_teacher(
    teacher_args: TeacherArguments, task: TaskData, training_args: DistillationTrainingArguments
) -> ServedRecipeTeacher:
    """The served teacher, checked against the server (it answers, tokenizes as ``task.tokenizer``, allows the
    top-k asked), with the served model's config from ``--served_tokenizer``."""
    name = str(teacher_args.served_tokenizer)
    client = ServedTeacher(
        teacher_args.teacher_model_name_or_path,
        top_k=training_args.teacher_server_top_k,
        timeout=training_args.teacher_server_timeout,
        retries=training_args.teacher_server_retries,
        prefetch=0,
    )
    client.check(task.tokenizer)
    config = AutoConfig.from_pretrained(resolve_model_path(name))
    return ServedRecipeTeacher(teacher_args.teacher_model_name_or_path, config, name, client)


def trainer_teacher(teacher: Any) -> Any:
    """What the trainer is given as ``teacher_model``: the URL of a served teacher, else the teacher itself."""
    return teacher.url if isinstance(teacher, ServedRecipeTeacher) else teacher


def served_text_nll(
    teacher: ServedRecipeTeacher, dataset: Any, tokenizer: Any, batch_size: int
) -> dict[str, np.ndarray]:
    """Each row's summed NLL (nats), predicted tokens and their UTF-8 bytes under the served teacher, in
    :func:`hf_distill.training.metrics.text_nll`'s shape: from the log-probability of each attended token after the
    first whose label is not -100 (a label must be its own input token: the server scores the prompt).

    Raises:
        ValueError: a label that is neither -100 nor the token at its position, before any request.
    """
    prompts, positions = [], []  # every row is checked before the first request
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start : start + batch_size]
        masks = rows.get("attention_mask") or [[1] * len(r) for r in rows["input_ids"]]
        labels = rows.get("labels") or rows["input_ids"]
        for row, (ids, mask, label) in enumerate(zip(rows["input_ids"], masks, labels), start=start):
            attended = [i for i, m in enumerate(mask) if m]
            prompts.append([ids[i] for i in attended])
            positions.append(scored_positions(prompts[-1], [label[i] for i in attended], row))
    nll, tokens, n_bytes = [], [], []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        for prompt, scored, logprobs in zip(batch, positions[start:], teacher.client.token_logprobs(batch)):
            nll.append(-float(logprobs[[t - 1 for t in scored]].sum()))
            tokens.append(len(scored))
            text = tokenizer.decode([prompt[t] for t in scored], clean_up_tokenization_spaces=False)
            n_bytes.append(len(text.encode()))
    as_array = lambda values: np.asarray(values, dtype=float)  # noqa: E731
    return {"nll": as_array(nll), "tokens": as_array(tokens), "bytes": as_array(n_bytes)}


def scored_positions(prompt: list[int], labels: list[int], row: int) -> list[int]:
    """The attended positions after the first whose label is not -100, each checked to be its own input token.

    Args:
        prompt: the row's attended input ids.
        labels: the row's labels at the same positions.
        row: the row's index in the held-out set, for the message.

    Returns:
        The positions ``t >= 1`` whose token's log-probability the held-out NLL sums.

    Raises:
        ValueError: a label that is neither -100 nor the input token at its position.
    """
    scored = [t for t in range(1, len(prompt)) if labels[t] != IGNORE_INDEX]
    wrong = next((t for t in scored if labels[t] != prompt[t]), None)
    if wrong is not None:
        raise ValueError(
            f"Held-out row {row} has label {labels[wrong]} at attended position {wrong} where its input token is "
            f"{prompt[wrong]}: a served teacher scores the prompt's own tokens (its prompt_logprobs), so it can "
            "score a causal LM's rows only, whose labels are their input ids with -100 where nothing is scored "
            "(the model shifts them). Build the labels as DataCollatorForLanguageModeling(mlm=False) does, not "
            "shifted or from another column."
        )
    return scored


def with_served_scoring(task: TaskData) -> TaskData:
    """``task`` whose ``score_examples`` and ``evaluate`` score a :class:`ServedRecipeTeacher` through its
    server and every other model as before, so the test scores and the teacher check take it unchanged."""
    local = task.score_examples

    def score_examples(model: Any, dataset: Any, training_args: Any) -> ExampleScores:
        if isinstance(model, ServedRecipeTeacher):
            batch_size = training_args.per_device_eval_batch_size
            return scores_from_nll(served_text_nll(model, dataset, task.tokenizer, batch_size))
        return local(model, dataset, training_args)

    def evaluate(model: Any, dataset: Any, training_args: Any) -> dict[str, float]:
        return score_examples(model, dataset, training_args).metrics

    return dataclasses.replace(task, score_examples=score_examples, evaluate=evaluate)


def served_teacher_entry(
    teacher: ServedRecipeTeacher, teacher_args: TeacherArguments, metrics: dict[str, float], task: TaskData
) -> dict[str, Any]:
    """The report's ``teacher`` for a served teacher: the URL and the served model's name, its metrics from the
    server, the parameter count of its config, and what is not measured with the reason (module docstring)."""
    with torch.device("meta"):
        parameters = count_parameters(AutoModelForCausalLM.from_config(teacher.config))
    folder = Path(resolve_model_path(teacher.name_or_path))
    not_measured = {"latency": NOT_MEASURED_LATENCY}
    try:
        size = model_size_on_disk(folder)
    except FileNotFoundError:
        size = -1
        not_measured["size_bytes"] = f"no weight files next to --served_tokenizer {teacher.name_or_path}"
    return {
        "name_or_path": teacher.url,
        "served_model": teacher.client.model,
        "served_tokenizer": teacher.name_or_path,
        "offline_alias": None,
        "revision": None,
        "license": teacher_license(str(folder), None),
        "fine_tuned_dir": None,
        "metric": float(metrics[task.metric_name]),
        "metrics": metrics,
        "parameters": parameters,
        "size_bytes": size,
        "latency_ms_b1": math.nan,
        "latency_ms_b32": math.nan,
        "not_measured": not_measured,
    }
