"""The ``hf-distill`` command.

    hf-distill train sentiment --config recipes/configs/sentiment.yaml [--flag value ...]
    hf-distill eval sentiment --model_name_or_path runs/sentiment/students/teacher_layers-3L-distilled
    hf-distill demo [--output_dir runs/demo]
    hf-distill cache-teacher sentiment --config ... --teacher_model_name_or_path runs/sentiment/teacher --cache_dir c
    hf-distill report runs/sentiment          # Markdown/HTML report with plots from report.json
    hf-distill push runs/sentiment/students/teacher_layers-3L-distilled user/my-student

``train`` runs the same pipeline as ``recipes/<task>.py`` (one process; for several use
``accelerate launch recipes/<task>.py``). Everything after the task name is parsed like the recipe's flags.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Each recipe's task, as the trainer names it.
TASK_KINDS = {"sentiment": "sequence_classification", "ner": "token_classification", "codegen": "causal_lm"}
TASKS = tuple(TASK_KINDS)

# `make demo`: the sentiment recipe with the settings of recipes/configs/sentiment.yaml (teacher fine-tune,
# distilled student and no-KD baseline, one epoch of 2,000 training snippets each; 800 test snippets), so it
# reproduces that run's table. Measured: 3 min 45 s on 2 CPU cores with light other load; about 30 minutes
# when the 2 cores were shared with four other training jobs.
DEMO_CONFIG: dict[str, Any] = {
    "output_dir": "runs/demo",
    "teacher_model_name_or_path": "minilm-l6",
    "teacher_learning_rate": 1.0e-4,
    "teacher_num_train_epochs": 1,
    "student_init": ["teacher_layers"],
    "student_num_layers": 3,
    "max_length": 64,
    "max_train_samples": 2000,
    "max_eval_samples": 200,
    "max_test_samples": 800,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 64,
    "learning_rate": 1.0e-4,
    "num_train_epochs": 1,
    "warmup_steps": 10,
    "weight_decay": 0.01,
    "temperature": 4.0,
    "alpha": 0.9,
    "distillation_loss": "forward_kl",
    "eval_strategy": "no",
    "save_strategy": "no",
    "logging_steps": 10,
    "report_to": "none",
    "disable_tqdm": True,
    "seed": 42,
    "latency_rounds": 5,
}


def _preparer(task: str) -> Callable:
    from .recipes import tasks

    return {"sentiment": tasks.prepare_sentiment, "ner": tasks.prepare_ner, "codegen": tasks.prepare_code}[
        task
    ]


def train(task: str, argv: Sequence[str]) -> dict | None:
    """Runs the recipe of ``task`` with the recipe's flags ``argv`` (``--config`` included)."""
    from .recipes.arguments import parse_recipe_args
    from .recipes.run import run_recipe
    from .recipes.teacher import teacher_tokenizer

    teacher_args, student_args, data_args, report_args, mode_args, training_args = parse_recipe_args(
        argv, task=TASK_KINDS[task]
    )
    tokenizer_kwargs = {"add_prefix_space": True} if task == "ner" else {}
    tokenizer = teacher_tokenizer(teacher_args, **tokenizer_kwargs)
    with training_args.main_process_first(desc="tokenizing"):
        task_data = _preparer(task)(data_args, tokenizer)
    return run_recipe(task_data, teacher_args, student_args, report_args, training_args, mode_args)


@dataclass
class EvalArguments:
    model_name_or_path: list[str] = field(
        metadata={"help": "One or more fine-tuned models (folders, Hub ids or offline aliases) to score."}
    )
    latency_rounds: int = field(default=5, metadata={"help": "Timed rounds per model and batch size."})


def evaluate(task: str, argv: Sequence[str]) -> dict[str, dict[str, float]]:
    """Scores saved models on the task's test split and times them; prints one line per model."""
    import torch
    from transformers import AutoTokenizer

    from .offline import resolve_model_path
    from .recipes.arguments import DataArguments
    from .recipes.config import parse_args_with_config
    from .recipes.latency import LATENCY_BATCH_SIZES, latency_batch, measure_latency
    from .student import count_parameters

    if not any(a == "--output_dir" or a.startswith("--output_dir=") for a in argv):
        argv = [*argv, "--output_dir", tempfile.mkdtemp(prefix="hf_distill_eval_")]
    from .arguments import DistillationTrainingArguments

    eval_args, data_args, training_args = parse_args_with_config(
        (EvalArguments, DataArguments, DistillationTrainingArguments), argv
    )
    paths = [resolve_model_path(p) for p in eval_args.model_name_or_path]
    tokenizer_kwargs = {"add_prefix_space": True} if task == "ner" else {}
    tokenizer = AutoTokenizer.from_pretrained(paths[0], **tokenizer_kwargs)
    task_data = _preparer(task)(data_args, tokenizer)
    models = {p: task_data.auto_class.from_pretrained(p, dtype=torch.float32).eval() for p in paths}
    results = {
        name: task_data.evaluate(model, task_data.test, training_args) for name, model in models.items()
    }
    batches = {size: latency_batch(task_data, size) for size in LATENCY_BATCH_SIZES}
    latency = measure_latency(models, batches, rounds=eval_args.latency_rounds)
    for name, model in models.items():
        results[name].update({f"latency_ms_b{s}": latency[name][s] for s in LATENCY_BATCH_SIZES})
        results[name]["parameters"] = count_parameters(model)
        shown = ", ".join(f"{k}={v:.4g}" for k, v in results[name].items())
        print(f"{name}: {task_data.metric_name} on {len(task_data.test)} test examples; {shown}", flush=True)
    return results


@dataclass
class CacheArguments:
    cache_dir: str = field(metadata={"help": "Where to save the training split with the teacher's outputs."})
    top_k: int | None = field(
        default=None,
        metadata={"help": "Causal LM only: logits kept per position (the rest become one tail)."},
    )


def cache_teacher(task: str, argv: Sequence[str]):
    """Runs the (fine-tuned) teacher once over the task's training split and saves it with the outputs."""
    from .recipes.arguments import RECIPE_ARGUMENTS
    from .recipes.config import parse_args_with_config
    from .recipes.teacher import load_teacher, teacher_tokenizer
    from .teacher_cache import cache_teacher_outputs

    cache_args, teacher_args, _, data_args, _, training_args = parse_args_with_config(
        (CacheArguments, *RECIPE_ARGUMENTS), argv
    )
    tokenizer = teacher_tokenizer(teacher_args, **({"add_prefix_space": True} if task == "ner" else {}))
    task_data = _preparer(task)(data_args, tokenizer)
    teacher, needs_fine_tune = load_teacher(teacher_args, task_data)
    if needs_fine_tune:
        raise ValueError(
            f"the teacher {teacher_args.teacher_model_name_or_path!r} has no trained head for this task, so its "
            "outputs would be noise; fine-tune it first (`hf-distill train` saves it under <output_dir>/teacher) "
            "and pass that folder as --teacher_model_name_or_path."
        )
    cached = cache_teacher_outputs(
        teacher.eval(),
        task_data.train,
        top_k=cache_args.top_k,
        temperature=training_args.temperature,
        batch_size=training_args.per_device_eval_batch_size,
    )
    cached.save_to_disk(cache_args.cache_dir)
    print(f"cached teacher outputs for {len(cached)} training rows in {cache_args.cache_dir}", flush=True)
    return cached


def demo(argv: Sequence[str]) -> dict | None:
    """The sentiment recipe with :data:`DEMO_CONFIG`; flags override it. Writes the config it used."""
    parser = argparse.ArgumentParser(prog="hf-distill demo")
    parser.add_argument("--output_dir", default=DEMO_CONFIG["output_dir"])
    known, rest = parser.parse_known_args(argv)
    output_dir = Path(known.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    config_path = output_dir / "demo_config.yaml"
    config_path.write_text(yaml.safe_dump({**DEMO_CONFIG, "output_dir": str(output_dir)}), encoding="utf-8")
    print(
        f"hf-distill demo: sentiment recipe with {config_path} (4-10 minutes on 2 CPU cores)",
        flush=True,
    )
    return train("sentiment", ["--config", str(config_path), *rest])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-distill", description="Knowledge distillation recipes.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("train", "run a recipe: teacher, distilled student, no-KD baseline, report"),
        ("eval", "score saved models on a task's test split"),
        ("cache-teacher", "save the training split with the teacher's outputs, to train without the teacher"),
    ):
        command = commands.add_parser(name, help=help_text, add_help=False)
        command.add_argument("task", choices=TASKS)
    commands.add_parser("demo", help="the sentiment recipe on a small subset (make demo)", add_help=False)
    report = commands.add_parser("report", help="Markdown/HTML report with plots of a run directory")
    report.add_argument("run_dir")
    report.add_argument("--output_dir", default=None)
    push = commands.add_parser("push", help="upload a saved student (with its model card) to the Hub")
    push.add_argument("folder")
    push.add_argument("repo_id")
    push.add_argument("--private", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    # train/eval/demo pass the rest of the line to the recipe's own parser (its flags and --help).
    rest: list[str] = []
    if argv[0] in ("train", "eval", "cache-teacher"):
        known, rest = parser.parse_args(argv[:2]), argv[2:]
    elif argv[0] == "demo":
        known, rest = parser.parse_args(argv[:1]), argv[1:]
    else:
        known = parser.parse_args(argv)
    if known.command == "train":
        train(known.task, rest)
    elif known.command == "eval":
        evaluate(known.task, rest)
    elif known.command == "cache-teacher":
        cache_teacher(known.task, rest)
    elif known.command == "demo":
        demo(rest)
    elif known.command == "report":
        from .report import make_report

        for name, path in make_report(known.run_dir, known.output_dir).items():
            print(f"{name}: {path}")
    elif known.command == "push":
        from .hub import push_student

        print(push_student(known.folder, known.repo_id, private=known.private or None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
