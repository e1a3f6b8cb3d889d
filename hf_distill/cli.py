"""The ``hf-distill`` command.

    hf-distill train sentiment --config recipes/configs/sentiment.yaml [--flag value ...]
    hf-distill eval sentiment --model_name_or_path runs/sentiment/students/teacher_layers-3L-distilled
    hf-distill demo [--output_dir runs/demo]
    hf-distill cache-teacher sentiment --config ... --teacher_model_name_or_path runs/sentiment/teacher --cache_dir c
    hf-distill cache-teacher codegen --teacher_model_name_or_path smollm2-135m --top_k 128 --cache_dir c
    hf-distill cache-teacher codegen --teacher_tokenizer smollm2-135m --student_tokenizer gpt2-tokenizer --cache_dir c
    accelerate launch --num_processes 8 -m hf_distill.cli cache-teacher codegen ... --cache_dir c  # 8 writers
    hf-distill budget sentiment --config recipes/configs/sentiment.yaml --max_latency_ms 5 --min_retention 0.98
    hf-distill report runs/sentiment          # Markdown/HTML report with plots from report.json
    hf-distill export runs/sentiment/students/distilled --output_dir runs/sentiment/students/distilled --quantize int8-dynamic
    hf-distill push runs/sentiment/students/teacher_layers-3L-distilled user/my-student [--with_onnx]
    hf-distill push-cache c user/my-teacher-cache   # a sharded teacher cache as a Hub dataset repository
    hf-distill serve-teacher runs/codegen/teacher --port 8000 --top_k 20   # then teacher_model="http://127.0.0.1:8000/v1"

``train`` runs the same pipeline as ``recipes/<task>.py`` (one process; for several use
``accelerate launch recipes/<task>.py``). Everything after the task name is parsed like the recipe's flags;
``hf-distill <command> --help`` lists the tasks, ``hf-distill train <task> --help`` the task's flags in groups.

An error found by hf_distill's own checks (a bad value, a missing file) is printed as one line and the command
exits with status 2; ``hf-distill --debug ...`` (or ``HF_DISTILL_DEBUG=1``) shows the traceback instead.
Other errors keep their traceback: they are not the user's input.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hf_distill.reports.format import deployment_line, verdict_lines

# Each recipe's task, as the trainer names it.
TASK_KINDS = {
    "sentiment": "sequence_classification",
    "ner": "token_classification",
    "codegen": "causal_lm",
    "vision": "image_classification",
}
TASKS = tuple(TASK_KINDS)
TASK_HELP = {
    "sentiment": "sequence classification, accuracy (own data: CSV / JSON Lines / Parquet, text + label)",
    "ner": "token classification, entity F1 (own data: CoNLL, or JSON with tokens and tags)",
    "codegen": "causal LM, perplexity (own data: a folder of source files, or JSON Lines with a text column)",
    "vision": "image classification, accuracy; ResNet -> plain CNN (own data: cifar10, an image folder)",
}
# Tasks without a tokenizer: only `train` runs them so far.
TRAIN_ONLY_TASKS = ("vision",)
# The commands that take a task, then that task's flags.
TASK_COMMANDS = {
    "train": "run a recipe: teacher, distilled student, no-KD baseline, report",
    "eval": "score saved models on a task's test split",
    "cache-teacher": "save the training split with the teacher's outputs, to train without the teacher",
    "budget": "search the smallest student that meets a latency/size budget, then train it like `train`",
}
DEBUG_FLAG = "--debug"
DEBUG_ENV = "HF_DISTILL_DEBUG"
# What a check of hf_distill raises for bad input; anything else is a bug and keeps its traceback.
KNOWN_ERRORS = (ValueError, FileNotFoundError, TypeError, ImportError)
_PACKAGE_DIR = Path(__file__).resolve().parent

# `make demo`: the transfer-set sentiment run of recipes/configs/sentiment_transfer.yaml (MiniLM-L6 fine-tuned
# on 2,000 labeled snippets; a 3-layer student distilled on those plus the other 8,197 training snippets without
# labels; the no-KD baseline on the 2,000 labels for as many steps), every student under 3 seeds, so that the run
# ends with the paired KD - no-KD difference, its 95% interval and the verdict; the whole test split.
DEMO_CONFIG: dict[str, Any] = {
    "output_dir": "runs/demo",
    "teacher_model_name_or_path": "minilm-l6",
    "teacher_learning_rate": 1.0e-4,
    "teacher_num_train_epochs": 2,
    "student_init": ["teacher_layers"],
    "student_num_layers": 3,
    "baseline_steps": "match",
    "max_length": 64,
    "max_train_samples": 2000,
    "transfer_samples": 10000,
    "max_eval_samples": 200,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 64,
    "learning_rate": 1.0e-4,
    "num_train_epochs": 1,
    "warmup_steps": 10,
    "weight_decay": 0.01,
    "train_sampling_strategy": "group_by_length",
    "temperature": 2.0,
    "alpha": 0.9,
    "distillation_loss": "forward_kl",
    "eval_strategy": "no",
    "save_strategy": "no",
    "logging_steps": 20,
    "seed": 42,
    "seeds": [1, 2, 3],
    "latency_rounds": 5,
    # The shipped student's line: the teacher and each seed's distilled student exported, int8, scored on the
    # test split in ONNX Runtime (pooled over the seeds), the first seed's timed beside PyTorch (four exports of
    # 5-15 s each and seconds of scoring).
    "export": "onnx",
    "quantize": "int8-dynamic",
}


def task_preparer(task: str) -> Callable:
    """The ``prepare_*`` function of a recipe task (``sentiment``, ``ner``, ``codegen``, ``vision``):
    ``(data arguments, tokenizer) -> TaskData``, as ``train``, ``budget`` and ``eval`` prepare it."""
    from hf_distill.recipes import tasks

    return {
        "sentiment": tasks.prepare_sentiment,
        "ner": tasks.prepare_ner,
        "codegen": tasks.prepare_code,
        "vision": tasks.prepare_vision,
    }[task]


def refuse_train_only(task: str, command: str) -> None:
    if task in TRAIN_ONLY_TASKS:
        raise ValueError(
            f"hf-distill {command} {task} is not available: the {task} task has no tokenizer to load, and only "
            f"`hf-distill train {task}` supports it so far; its report.json holds every model's test accuracy."
        )


def train(task: str, argv: Sequence[str], prog: str | None = None) -> dict | None:
    """Runs the recipe of ``task`` with the recipe's flags ``argv`` (``--config`` included); the scripts under
    ``recipes/`` run it too, so both entries do the same (``prog`` names the script in ``--help``)."""
    from hf_distill.recipes.arguments import parse_recipe_config
    from hf_distill.recipes.console import quiet_console
    from hf_distill.recipes.run import run_recipe
    from hf_distill.recipes.served_teacher import check_served_recipe
    from hf_distill.recipes.teacher import teacher_tokenizer

    config = parse_recipe_config(
        argv,
        task=TASK_KINDS[task],
        prog=prog or f"hf-distill train {task}",
        description=f"Distil a {task} student ({TASK_KINDS[task]}): fine-tune the teacher if needed, distil "
        "each student, train the no-KD baseline, score them all on the test split and write report.json. "
        "A distillation mode's own flags are listed with --distillation_mode MODE --help.",
    )
    # A served teacher's run is refused before the data is read, when it cannot run.
    check_served_recipe(config, TASK_KINDS[task])
    tokenizer_kwargs = {"add_prefix_space": True} if task == "ner" else {}
    with quiet_console(config.report.verbose):
        tokenizer = (
            None if task in TRAIN_ONLY_TASKS else teacher_tokenizer(config.teacher, **tokenizer_kwargs)
        )
        with config.training.main_process_first(desc="tokenizing"):
            task_data = task_preparer(task)(config.data, tokenizer)
        report = run_recipe(task_data, config)
        if task == "codegen":
            from hf_distill.recipes.generation_eval import finish_codegen_report

            report = finish_codegen_report(report, config)
    return report


def budget(task: str, argv: Sequence[str], prog: str | None = None) -> dict | None:
    """``hf-distill budget TASK``: :func:`hf_distill.recipes.budget.run_budget` with the recipe's flags plus the
    budget's (``--max_latency_ms`` or ``--min_speedup``, ``--batch_size``, ``--runtime``, ``--max_params``,
    ``--min_retention``; for causal LMs ``--latency_prompt_tokens``, ``--latency_new_tokens``)."""
    from hf_distill.recipes.budget import parse_budget_config, run_budget
    from hf_distill.recipes.served_teacher import is_served_recipe
    from hf_distill.recipes.teacher import teacher_tokenizer

    refuse_train_only(task, "budget")
    config = parse_budget_config(list(argv), TASK_KINDS[task], prog or f"hf-distill budget {task}")
    if is_served_recipe(config.teacher):
        raise ValueError(
            f"hf-distill budget times and prunes the teacher's layers, which a served teacher "
            f"({config.teacher.teacher_model_name_or_path}) does not send; pass the teacher's folder."
        )
    tokenizer_kwargs = {"add_prefix_space": True} if task == "ner" else {}
    tokenizer = teacher_tokenizer(config.teacher, **tokenizer_kwargs)
    with config.training.main_process_first(desc="tokenizing"):
        task_data = task_preparer(task)(config.data, tokenizer)
    report = run_budget(task_data, config)
    if (
        task == "codegen"
    ):  # the generation evaluation (parse rate) and cross-tokenizer students, as in `train`
        from hf_distill.recipes.generation_eval import finish_codegen_report

        report = finish_codegen_report(report, config)
    return report


@dataclass
class EvalArguments:
    _argument_group_name = "models"

    model_name_or_path: list[str] = field(
        metadata={"help": "One or more fine-tuned models (folders, Hub ids or offline aliases) to score."}
    )
    latency_rounds: int = field(default=5, metadata={"help": "Timed rounds per model and batch size."})


def evaluate(task: str, argv: Sequence[str]) -> dict[str, dict[str, float]]:
    """Scores saved models on the task's test split and times them; prints one line per model."""
    import torch
    from transformers import AutoTokenizer

    from hf_distill.loading import load_pretrained
    from hf_distill.recipes.config import parse_args_with_config
    from hf_distill.recipes.console import default_pin_memory
    from hf_distill.recipes.data_arguments import DataArguments
    from hf_distill.recipes.latency import LATENCY_BATCH_SIZES, latency_batch, measure_latency
    from hf_distill.recipes.offline import resolve_model_path

    if not any(a == "--output_dir" or a.startswith("--output_dir=") for a in argv):
        argv = [*argv, "--output_dir", tempfile.mkdtemp(prefix="hf_distill_eval_")]
    from hf_distill.arguments import DistillationTrainingArguments

    eval_args, data_args, training_args = parse_args_with_config(
        (EvalArguments, DataArguments, DistillationTrainingArguments),
        argv,
        prog=f"hf-distill eval {task}",
        description=f"Score saved {task} models on the task's test split and time them.",
        defaults={"dataloader_pin_memory": default_pin_memory()},
    )
    refuse_train_only(task, "eval")
    paths = [resolve_model_path(p) for p in eval_args.model_name_or_path]
    tokenizer_kwargs = {"add_prefix_space": True} if task == "ner" else {}
    tokenizer = load_pretrained(
        AutoTokenizer.from_pretrained, paths[0], role="model_name_or_path", **tokenizer_kwargs
    )
    task_data = task_preparer(task)(data_args, tokenizer)
    models = {
        p: load_pretrained(
            task_data.auto_class.from_pretrained, p, role="model_name_or_path", dtype=torch.float32
        ).eval()
        for p in paths
    }
    results = {
        name: task_data.evaluate(model, task_data.test, training_args) for name, model in models.items()
    }
    batches = {size: latency_batch(task_data, size) for size in LATENCY_BATCH_SIZES}
    latency = measure_latency(models, batches, rounds=eval_args.latency_rounds)
    for name, model in models.items():
        results[name].update({f"latency_ms_b{s}": latency[name][s] for s in LATENCY_BATCH_SIZES})
        results[name]["parameters"] = model.num_parameters()
        shown = ", ".join(f"{k}={v:.4g}" for k, v in results[name].items())
        print(f"{name}: {task_data.metric_name} on {len(task_data.test)} test examples; {shown}", flush=True)
    return results


def cache_teacher(task: str, argv: Sequence[str]) -> dict[str, Any]:
    """Runs the (fine-tuned) teacher once over the task's training split and saves it with the outputs
    (:mod:`hf_distill.recipes.caching`: same-tokenizer or, with ``--teacher_tokenizer``, cross-tokenizer)."""
    from hf_distill.recipes.arguments import RECIPE_ARGUMENTS, RecipeConfig
    from hf_distill.recipes.caching import CacheArguments, cache_task
    from hf_distill.recipes.config import parse_args_with_config
    from hf_distill.recipes.console import default_pin_memory

    parsed = parse_args_with_config(
        (CacheArguments, *RECIPE_ARGUMENTS),
        argv,
        prog=f"hf-distill cache-teacher {task}",
        description=f"Run the {task} teacher once over the training split and save the split with its outputs.",
        defaults={"dataloader_pin_memory": default_pin_memory()},
    )
    refuse_train_only(task, "cache-teacher")
    saved = cache_task(task, task_preparer(task), RecipeConfig.from_groups(parsed))
    if saved.get("is_main_process", True):
        print(
            f"cached teacher outputs for {saved['rows']} training rows in {saved['path']} ({saved['format']})",
            flush=True,
        )
    return saved


def demo(argv: Sequence[str]) -> dict | None:
    """The sentiment recipe with :data:`DEMO_CONFIG`; flags override it. Writes the config it used."""
    parser = argparse.ArgumentParser(
        prog="hf-distill demo",
        usage="%(prog)s [-h] [--output_dir DIR] [--flag VALUE ...]",
        description="The transfer-set sentiment recipe (the settings of recipes/configs/sentiment_transfer.yaml), "
        "each student trained under 3 seeds and compared with its no-KD baseline (the paired difference, its "
        "95% interval and a verdict), then every seed's student exported to ONNX int8 and scored there, the first "
        "seed's timed (one line: runtime, precision, accuracy over the seeds, speed-up; needs the [export] extra). Any flag of "
        "`hf-distill train sentiment` overrides the demo's settings "
        "(`hf-distill train sentiment --help` lists them).",
    )
    parser.add_argument("--output_dir", default=DEMO_CONFIG["output_dir"], help="where the run is written")
    known, rest = parser.parse_known_args(argv)
    output_dir = Path(known.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    config = {**DEMO_CONFIG, "output_dir": str(output_dir)}
    skipped_export = _without_missing_export(config)
    config_path = output_dir / "demo_config.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    print(f"hf-distill demo: sentiment recipe with {config_path}, students under 3 seeds", flush=True)
    if skipped_export:
        print(f"hf-distill demo: {skipped_export}", flush=True)
    report = train("sentiment", ["--config", str(config_path), *rest])
    for line in verdict_lines(report or {}):
        print(f"\nverdict: {line}", flush=True)
    deployed = deployment_line(report or {})
    if deployed:
        print(f"\ndeployed: {deployed}", flush=True)
    return report


def _without_missing_export(config: dict[str, Any]) -> str | None:
    """Drops the demo's export when the ``[export]`` extra is missing (the run is the same without its
    deployment line); returns what to tell the user, or None when the export stays."""
    from hf_distill.export import require_export_packages

    try:
        require_export_packages()
    except ImportError as missing:
        config.pop("export", None), config.pop("quantize", None)
        return f"no ONNX export (and no deployed student's line): {missing}"
    return None


def build_parser() -> argparse.ArgumentParser:
    tasks = "\n".join(f"  {name:<10} {text}" for name, text in TASK_HELP.items())
    parser = argparse.ArgumentParser(
        prog="hf-distill",
        description="Knowledge distillation recipes.",
        epilog=f"tasks:\n{tasks}\n\n`hf-distill train TASK --help` lists a task's flags.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        DEBUG_FLAG,
        action="store_true",
        help=f"show the full traceback of an error (also: {DEBUG_ENV}=1); by default a bad input is one line",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in TASK_COMMANDS.items():
        command = commands.add_parser(
            name,
            help=help_text,
            description=help_text[0].upper() + help_text[1:] + ".",
            usage=f"hf-distill {name} TASK [--config FILE] [--flag VALUE ...]",
            epilog=f"tasks:\n{tasks}\n\n`hf-distill {name} TASK --help` lists the task's flags.",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.add_argument("task", choices=TASKS, metavar="TASK", help=f"one of {', '.join(TASKS)}")
    commands.add_parser("demo", help="the transfer-set sentiment recipe, 3 seeds (make demo)", add_help=False)
    commands.add_parser(
        "serve-teacher",
        help="serve a causal LM teacher's prompt log-probabilities over HTTP (vLLM's prompt_logprobs format)",
        add_help=False,
    )
    report = commands.add_parser(
        "report",
        help="Markdown/HTML report with plots of a recipe's run directory or a DistillationTrainer output_dir",
    )
    report.add_argument("run_dir")
    report.add_argument("--output_dir", default=None)
    export = commands.add_parser(
        "export",
        help="export a saved model to ONNX (onnx/model.onnx), optionally int8, checked against PyTorch",
    )
    export.add_argument("folder", help="a folder written by save_pretrained (a student's, or a teacher's)")
    export.add_argument("--output_dir", required=True, help="where onnx/, the config and the tokenizer go")
    export.add_argument(
        "--quantize",
        default=None,
        choices=["int8-dynamic", "int8-weights"],
        help="also onnx/model_quantized.onnx: int8-dynamic (fastest) or int8-weights (closest to fp32)",
    )
    push = commands.add_parser("push", help="upload a saved student (with its model card) to the Hub")
    push.add_argument("folder")
    push.add_argument("repo_id")
    push.add_argument("--private", action="store_true")
    push_cache = commands.add_parser(
        "push-cache",
        help="upload a sharded teacher cache (with its dataset card) as a Hub dataset repository",
    )
    push_cache.add_argument(
        "cache_dir", help="the folder of a sharded teacher cache (hf-distill cache-teacher)"
    )
    push_cache.add_argument("repo_id", help="OWNER/NAME of the dataset repository (created if needed)")
    push_cache.add_argument("--private", action="store_true")
    push.add_argument(
        "--with_onnx",
        action="store_true",
        help="also upload onnx/ (written by `hf-distill export FOLDER --output_dir FOLDER`) beside the weights",
    )
    push.add_argument(
        "--license",
        default=None,
        help="the card's license (a Hub license id, e.g. apache-2.0); default: the teacher's, read from its card",
    )
    return parser


def _run(parser: argparse.ArgumentParser, argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    # train/eval/cache-teacher/demo pass the rest of the line to the recipe's own parser (its flags and
    # --help); `train --help` (no task) is the command's own help.
    rest: list[str] = []
    if argv[0] in TASK_COMMANDS:
        known, rest = parser.parse_args(argv[:2]), argv[2:]
    elif argv[0] in ("demo", "serve-teacher"):
        known, rest = parser.parse_args(argv[:1]), argv[1:]
    else:
        known = parser.parse_args(argv)
    if known.command == "train":
        train(known.task, rest)
    elif known.command == "eval":
        evaluate(known.task, rest)
    elif known.command == "cache-teacher":
        cache_teacher(known.task, rest)
    elif known.command == "budget":
        budget(known.task, rest)
    elif known.command == "demo":
        demo(rest)
    elif known.command == "serve-teacher":
        from hf_distill.recipes.offline import resolve_model_path
        from hf_distill.teachers.server import serve_teacher

        serve_teacher(rest, resolve=resolve_model_path)
    elif known.command == "report":
        from hf_distill.reports.report import make_report

        for name, path in make_report(known.run_dir, known.output_dir).items():
            print(f"{name}: {path}")
    elif known.command == "export":
        _export(known.folder, known.output_dir, known.quantize)
    elif known.command == "push":
        from hf_distill.hub.push import push_student

        options = {"license": known.license} if known.license else {}
        options.update({"with_onnx": True} if known.with_onnx else {})
        print(push_student(known.folder, known.repo_id, private=known.private or None, **options))
    elif known.command == "push-cache":
        from hf_distill.cache.push import push_teacher_cache

        print(push_teacher_cache(known.cache_dir, known.repo_id, private=known.private or None))
    return 0


def _export(folder: str, output_dir: str, quantize: str | None) -> None:
    """``hf-distill export``: the graph, its check and the int8 graph's argmax agreement, on stdout."""
    from hf_distill.export import export_student

    result = export_student(folder, output_dir, quantize=quantize)
    print(
        f"onnx: {result.onnx_path} ({result.size_bytes / 1e6:.1f} MB; max |onnx - torch| {result.max_abs_difference:.2g})"
    )
    if result.quantized_path is not None:
        print(
            f"int8: {result.quantized_path} ({result.quantized_size_bytes / 1e6:.1f} MB; same argmax as torch "
            f"on {result.int8_agreement:.1%} of random rows)"
        )


def is_own_check(error: BaseException) -> bool:
    """Whether ``error`` comes from a check on the user's input: raised by hf_distill's own code, or by an
    argument class (transformers' ``TrainingArguments`` too) while the flags were parsed."""
    frames = traceback.extract_tb(error.__traceback__)

    def ours(frame: traceback.FrameSummary) -> bool:
        return Path(frame.filename).resolve().is_relative_to(_PACKAGE_DIR)

    parsing = any(ours(frame) and frame.name == "parse_args_with_config" for frame in frames)
    return bool(frames) and (ours(frames[-1]) or parsing)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``hf-distill`` command; returns the exit status (2: a bad input, reported in one line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes")
    while argv and argv[0] == DEBUG_FLAG:
        debug = True
        argv.pop(0)
    try:
        return _run(build_parser(), argv)
    except KNOWN_ERRORS as error:
        if debug or not is_own_check(error):
            raise
        message = " ".join(str(error).split())
        print(
            f"hf-distill: error: {message} ({DEBUG_FLAG} or {DEBUG_ENV}=1 shows the traceback)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
