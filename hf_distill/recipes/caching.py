"""``hf-distill cache-teacher``: the teacher run once over a task's training split, its outputs saved with the rows.

- Same tokenizer (every task): the task's training rows, tokenized by the teacher's tokenizer, with the teacher's
  logits (classifiers) or top-k (causal LM). ``--cache_format shards`` writes Parquet shards as the teacher
  runs (:func:`hf_distill.cache.writer.write_teacher_cache`; the compact top-k codec for a causal LM), ``arrow``
  a ``Dataset.save_to_disk`` folder of float32 columns; ``auto`` (default) picks shards for a causal LM and
  arrow for classifiers. :func:`hf_distill.cache.shards.load_teacher_cache` reads both.
- Cross-tokenizer (codegen, ``--teacher_tokenizer``): the training files cut into text blocks, the teacher's
  outputs on its own tokenization of each block (``xtok_teacher_*`` columns), so students of any tokenizer train
  from it. With ``--student_tokenizer`` the blocks are that student's (``max_length`` of its tokens, the rows
  ready to train: ``input_ids``, ``labels``, offsets, text); without, they are cut at ``max_length`` teacher
  tokens and hold the text only (prepare them with
  :func:`hf_distill.token_alignment.prepare_cross_tokenizer_dataset`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_distill.cache.build import cache_teacher_outputs
from hf_distill.cache.codec import TopkCodec
from hf_distill.cache.writer import write_teacher_cache
from hf_distill.recipes.arguments import RecipeConfig
from hf_distill.recipes.cross_tokenizer import text_blocks, training_texts
from hf_distill.recipes.data_code import load_code_corpus
from hf_distill.recipes.offline import HUB_IDS, resolve_model_path
from hf_distill.recipes.teacher import load_teacher, teacher_tokenizer
from hf_distill.teachers.served import ServedTeacher, is_served_teacher
from hf_distill.token_alignment import TEXT_COLUMN

CACHE_FORMATS = ("auto", "shards", "arrow")


@dataclass
class CacheArguments:
    _argument_group_name = "cache"

    cache_dir: str = field(metadata={"help": "Where to save the training split with the teacher's outputs."})
    top_k: int | None = field(
        default=None,
        metadata={"help": "Causal LM only: logits kept per position (the rest become one tail)."},
    )
    cache_format: str = field(
        default="auto",
        metadata={
            "help": "'shards': Parquet shards written as the teacher runs (memory flat in the rows; a causal "
            "LM's top-k compact, ~240 bytes per token at k=128); 'arrow': a save_to_disk folder of float32 "
            "columns; 'auto': shards for codegen, arrow for the classifiers."
        },
    )
    value_bits: int = field(
        default=6,
        metadata={"help": "Shards, causal LM: bits per top-k value code (2-8), or 16 for float16 values."},
    )
    rows_per_shard: int = field(default=4096, metadata={"help": "Shards: rows per Parquet file."})
    teacher_tokenizer: str | None = field(
        default=None,
        metadata={
            "help": "Codegen: write a cross-tokenizer cache with this teacher tokenizer (an offline alias such "
            "as 'smollm2-135m', a Hub id or a folder; normally the teacher's own), so students of any tokenizer "
            "train from it; with --student_tokenizer the blocks are that student's."
        },
    )

    def __post_init__(self):
        if self.cache_format not in CACHE_FORMATS:
            raise ValueError(
                f"cache_format={self.cache_format!r} is not one of {CACHE_FORMATS}: 'shards' (compact, "
                "streamed), 'arrow' (float32 save_to_disk) or 'auto'."
            )
        TopkCodec(value_bits=self.value_bits)  # refuses a bad value_bits before any work


def cache_task(task: str, preparer: Callable, config: RecipeConfig) -> dict[str, Any]:
    """Runs the teacher over the task's training split and saves the result in ``cache_dir``.

    Args:
        task (str): the recipe's task name (``"sentiment"``, ``"ner"``, ``"codegen"``).
        preparer (Callable): the task's ``prepare_*`` of :mod:`hf_distill.recipes.tasks`.
        config (RecipeConfig): the run's argument groups, with :class:`CacheArguments` among its extras.

    Returns:
        dict: ``{"rows", "format", "path"}`` (and the manifest for shards).
    """
    cache_args, teacher_args = config.extra(CacheArguments), config.teacher
    data_args, training_args = config.data, config.training
    if cache_args.teacher_tokenizer is not None:
        return cache_cross_tokenizer(task, config)
    if is_served_teacher(teacher_args.teacher_model_name_or_path):
        return cache_served(task, preparer, config)
    tokenizer = teacher_tokenizer(teacher_args, **({"add_prefix_space": True} if task == "ner" else {}))
    state = processes(training_args)
    with state.main_process_first():
        task_data = preparer(data_args, tokenizer)
    teacher, needs_fine_tune = load_teacher(teacher_args, task_data)
    if needs_fine_tune:
        raise ValueError(
            f"the teacher {teacher_args.teacher_model_name_or_path!r} has no trained head for this task, so its "
            "outputs would be noise; fine-tune it first (`hf-distill train` saves it under <output_dir>/teacher) "
            "and pass that folder as --teacher_model_name_or_path."
        )
    settings = dict(
        top_k=cache_args.top_k,
        temperature=training_args.temperature,
        batch_size=training_args.per_device_eval_batch_size,
    )
    return save(teacher.eval(), task_data.train, task_data.task, cache_args, settings, state)


def cache_served(task: str, preparer: Callable, config: RecipeConfig) -> dict[str, Any]:
    """The compact top-k cache of the codegen training split from a served teacher
    (:class:`hf_distill.teachers.served.ServedTeacher`), the same cache the local teacher writes."""
    cache_args, data_args, training_args = config.extra(CacheArguments), config.data, config.training
    teacher_args = config.teacher
    url = teacher_args.teacher_model_name_or_path
    if task != "codegen":
        raise ValueError(
            f"A served teacher ({url}) sends a causal LM's top-k log-probabilities: cache-teacher takes it for "
            f"codegen, not {task}. Pass the {task} teacher's folder instead."
        )
    if teacher_args.served_tokenizer is None:
        raise ValueError(
            f"--served_tokenizer is required with a served teacher ({url}): the rows are tokenized here, with "
            "the served model's tokenizer (a folder, Hub id or alias such as 'smollm2-135m')."
        )
    if cache_args.top_k is None or training_args.temperature != 1.0:
        raise ValueError(
            f"A served teacher's cache needs --top_k (got {cache_args.top_k}) and --temperature 1.0 (got "
            f"{training_args.temperature}): the server sends log-probabilities at temperature 1, and the tail at "
            "another temperature needs the whole distribution (hf_distill.teachers.served)."
        )
    if cache_args.cache_format == "arrow":
        raise ValueError(
            "--cache_format arrow runs a local model over the rows; a served teacher writes Parquet shards: pass "
            "--cache_format shards (or auto)."
        )
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(teacher_args.served_tokenizer))
    state = processes(training_args)
    with state.main_process_first():
        task_data = preparer(data_args, tokenizer)
    teacher = ServedTeacher(url, top_k=cache_args.top_k, prefetch=0)
    teacher.check(tokenizer)
    settings = dict(
        top_k=cache_args.top_k,
        temperature=1.0,
        batch_size=training_args.per_device_eval_batch_size,
        vocab_size=teacher.served_vocab_size or len(tokenizer),
    )
    return save(teacher, task_data.train, "causal_lm", cache_args, settings, state)


def cache_cross_tokenizer(task: str, config: RecipeConfig) -> dict[str, Any]:
    """The cross-tokenizer cache of the codegen training files (module docstring)."""
    cache_args, data_args, training_args = config.extra(CacheArguments), config.data, config.training
    if task != "codegen":
        raise ValueError(
            f"--teacher_tokenizer writes a cross-tokenizer cache, which is for causal LMs (codegen), not {task}: "
            "a classifier's outputs do not depend on the tokenizer. Leave --teacher_tokenizer out."
        )
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(cache_args.teacher_tokenizer))
    tokenizer.name_or_path = HUB_IDS.get(cache_args.teacher_tokenizer, cache_args.teacher_tokenizer)
    student = config.student.student_tokenizer
    cutter = tokenizer
    if student is not None:
        cutter = AutoTokenizer.from_pretrained(resolve_model_path(student))
        cutter.name_or_path = HUB_IDS.get(student, student)
    corpus = load_code_corpus(seed=data_args.split_seed, max_files=data_args.max_files)
    texts = training_texts(corpus["train"]["text"], cutter, data_args)
    blocks = text_blocks(texts, cutter, data_args.max_length)
    if data_args.max_train_samples is not None and len(blocks) > data_args.max_train_samples:
        blocks = blocks.shuffle(seed=training_args.seed).select(range(data_args.max_train_samples))
    if student is None:
        blocks = blocks.select_columns([TEXT_COLUMN])
    path = resolve_model_path(config.teacher.teacher_model_name_or_path)
    teacher = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    settings = dict(
        top_k=cache_args.top_k or 32,
        temperature=training_args.temperature,
        batch_size=training_args.per_device_eval_batch_size,
        teacher_tokenizer=tokenizer,
    )
    return save(teacher, blocks, "causal_lm", cache_args, settings, processes(training_args))


def processes(training_args: Any) -> PartialState:
    """The processes of this run (one, or those ``accelerate launch`` started); on CPUs with ``--use_cpu``,
    which is how several CPU processes find each other (gloo)."""
    return PartialState(cpu=bool(getattr(training_args, "use_cpu", False)))


def save(
    teacher: Any, rows: Any, task: str, cache_args: CacheArguments, settings: dict, state: PartialState
) -> dict[str, Any]:
    """Writes ``rows`` with the teacher's outputs in the chosen format. Under ``accelerate launch`` with several
    processes, each writes the shards of its own part of the rows and the main process the one manifest
    (:func:`hf_distill.cache.writer.write_teacher_cache`)."""
    fmt = cache_args.cache_format
    if fmt == "auto":
        fmt = "shards" if task == "causal_lm" else "arrow"
    if state.num_processes > 1 and fmt == "arrow":
        raise ValueError(
            f"--cache_format arrow is written by one process, but this run has {state.num_processes}: pass "
            "--cache_format shards (each process writes its own part of the rows), or run without accelerate launch."
        )
    if state.num_processes > 1 and hasattr(teacher, "to"):
        teacher = teacher.to(state.device)
    if fmt == "arrow":
        cached = cache_teacher_outputs(teacher, rows, task=task, **settings)
        cached.save_to_disk(cache_args.cache_dir)
        return {"rows": len(cached), "format": fmt, "path": str(Path(cache_args.cache_dir))}
    codec = TopkCodec(value_bits=cache_args.value_bits) if task == "causal_lm" else None
    manifest = write_teacher_cache(
        teacher,
        rows,
        cache_args.cache_dir,
        task=task,
        codec=codec,
        rows_per_shard=cache_args.rows_per_shard,
        state=state if state.num_processes > 1 else None,
        **settings,
    )
    return {
        "rows": manifest["rows"],
        "format": fmt,
        "path": str(Path(cache_args.cache_dir)),
        "manifest": manifest,
        "is_main_process": state.is_main_process,
    }
