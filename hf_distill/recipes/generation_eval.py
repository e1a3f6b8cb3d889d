"""The codegen recipe's generation evaluation: what the teacher and each student write for held-out functions.

After the students are trained (:func:`~.run.run_recipe`), :func:`add_generation_eval` takes
``generation_prompts`` documented functions from held-out files (:func:`prompt_files`), has the teacher and
every student complete their bodies greedily (:mod:`.code_generation`), runs the doctests of the completions
in the sandbox (:mod:`.sandbox`, a child process with limits, never this one), and adds to the report
``report["generation"]``: per model the parse rate, degenerate share, doctest pass rate and held-out bits per
byte, and a few samples. The students, trained on raw code, are prompted raw; the teacher, an instruction-tuned
model, through its chat template where its tokenizer has one (``teacher_prompt_style``; ``both`` measures
both ways). Where the run fine-tuned the teacher on the corpus first, that teacher (the one the students
learnt from) is measured too, raw, as ``teacher (fine-tuned)``.

:func:`finish_codegen_report` is the codegen recipe's last step (``hf-distill train codegen``, which
``recipes/codegen.py`` runs): students with their own tokenizer (``--student_tokenizer``, :mod:`.cross_tokenizer`)
with held-out bits per byte of every model, then this generation evaluation (``--generation_prompts``).
"""

from __future__ import annotations

import sysconfig
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_distill.recipes.arguments import RecipeConfig
from hf_distill.recipes.code_generation import (
    doctest_outcomes,
    generation_metrics,
    greedy_completions,
    is_degenerate,
    parses,
)
from hf_distill.recipes.code_prompts import CodePrompt, held_out_prompts
from hf_distill.recipes.cross_tokenizer import (
    EVAL_CHARS_PER_FILE,
    add_cross_tokenizer_students,
    bits_per_byte,
    bits_per_byte_table,
)
from hf_distill.recipes.data_code import load_code_corpus, python_stdlib_files
from hf_distill.recipes.offline import resolve_model_path
from hf_distill.recipes.report_json import write_report
from hf_distill.recipes.tasks import code_corpus
from hf_distill.reports.report import generation_section

TEACHER_PROMPT_STYLES = ("auto", "chat", "raw", "both")
# Completions shown in report.json / report.md, and the characters kept of each.
SAMPLES = 3
SAMPLE_CHARS = 800
# The report name of the teacher a run fine-tuned on the corpus (``--fine_tune_teacher``), prompted raw as the
# students are: it was last trained on raw code.
FINE_TUNED_TEACHER = "teacher (fine-tuned)"


def prompt_files(data_args: Any) -> tuple[list[tuple[str, str]], list[str]]:
    """``(held-out files as (path, text), held-out texts for bits per byte)``.

    Offline stdlib corpus: prompts come from every stdlib file outside the run's training and validation
    splits (the test split and the files ``max_files`` left out), so no prompt's body was trained on; bits per
    byte is measured on the test split's files. Your own corpus: both come from its test split.
    """
    if data_args.train_file is None and data_args.dataset_name is None:
        corpus = load_code_corpus(seed=data_args.split_seed, max_files=data_args.max_files)
        seen = set(corpus["train"]["path"]) | set(corpus["validation"]["path"])
        root = Path(sysconfig.get_paths()["stdlib"])
        paths = [(p.relative_to(root).as_posix(), p) for p in python_stdlib_files()]
        files = [(name, p.read_text(encoding="utf-8")) for name, p in paths if name not in seen]
    else:
        corpus, _ = code_corpus(data_args)
        test = corpus["test"]
        paths = test["path"] if "path" in test.column_names else [f"test[{i}]" for i in range(len(test))]
        files = list(zip(paths, test["text"]))
    texts = list(corpus["test"]["text"])[: data_args.max_test_samples or None]
    return files, [text[:EVAL_CHARS_PER_FILE] for text in texts]


def _styles(tokenizer: Any, style: str) -> list[str]:
    if style not in TEACHER_PROMPT_STYLES:
        raise ValueError(f"teacher_prompt_style={style!r} is not one of {TEACHER_PROMPT_STYLES}.")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if style == "auto":
        return ["chat" if has_template else "raw"]
    if style == "both":
        return ["chat", "raw"] if has_template else ["raw"]
    return [style]


def evaluate_model(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: list[CodePrompt],
    counted: list[bool],
    *,
    style: str,
    max_new_tokens: int,
    batch_size: int,
) -> tuple[dict[str, Any], list[str]]:
    """One model's metrics (and generation seconds) on ``prompts``, and its completions; ``counted`` marks the
    prompts whose doctests count (the reference body passes them)."""
    start = time.perf_counter()
    results = greedy_completions(
        model, tokenizer, prompts, style=style, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    completions = [r["completion"] for r in results]
    # Only the counted prompts' examples are run: the others' outcomes would be discarded.
    runs = [i for i, c in enumerate(counted) if c]
    passed = dict(zip(runs, doctest_outcomes([prompts[i] for i in runs], [completions[i] for i in runs])))
    doctests = [passed.get(i) for i in range(len(prompts))]
    metrics = generation_metrics(prompts, completions, doctests)
    # Per prompt, in prompt order: what a paired comparison across models and seeds needs.
    metrics["per_prompt"] = {
        "parses": [parses(p.prompt, c) for p, c in zip(prompts, completions)],
        "degenerate": [is_degenerate(c) for c in completions],
        "doctest": doctests,
    }
    metrics["seconds"] = time.perf_counter() - start
    metrics["prompt_style"] = style
    return metrics, completions


def _samples(prompts: list[CodePrompt], completions: dict[str, list[str]]) -> list[dict[str, Any]]:
    return [
        {
            "path": prompt.path,
            "function": prompt.name,
            "prompt": prompt.prompt,
            "reference": prompt.reference[:SAMPLE_CHARS],
            "completions": {name: texts[i][:SAMPLE_CHARS] for name, texts in completions.items()},
        }
        for i, prompt in enumerate(prompts[:SAMPLES])
    ]


def _models(report: dict[str, Any], teacher_args: Any) -> tuple[Any, dict[str, Any]]:
    """The teacher's tokenizer and the models by report name, loaded from their folders: the teacher as given,
    the teacher the run fine-tuned on the corpus (the one the students learnt from) where there is one, then
    the students."""
    path = resolve_model_path(teacher_args.teacher_model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    models = {"teacher": AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()}
    fine_tuned = report.get("teacher", {}).get("fine_tuned_dir")
    if fine_tuned:
        models[FINE_TUNED_TEACHER] = AutoModelForCausalLM.from_pretrained(
            fine_tuned, dtype=torch.float32
        ).eval()
    for entry in report.get("students", []):
        models[entry["name"]] = AutoModelForCausalLM.from_pretrained(
            entry["output_dir"], dtype=torch.float32
        ).eval()
    return tokenizer, models


def add_generation_eval(report: dict[str, Any], config: RecipeConfig) -> dict[str, Any]:
    """Adds ``report["generation"]`` (module docstring) and returns the report: ``config``'s teacher and data,
    its ``report`` group's prompts and prompt style, its training arguments' eval batch size."""
    data_args, report_args = config.data, config.report
    files, texts = prompt_files(data_args)
    prompts = held_out_prompts(files, report_args.generation_prompts)
    if not prompts:
        raise ValueError(
            "The held-out files hold no top-level function with a docstring and a body, so there is nothing to "
            "complete; give a test split with documented functions or set --generation_prompts 0."
        )
    counted = [bool(p.doctest) and passed for p, passed in zip(prompts, _reference_passes(prompts))]
    tokenizer, models = _models(report, config.teacher)
    known = {e["name"]: e for e in report.get("cross_tokenizer", {}).get("models", [])}
    batch = config.training.per_device_eval_batch_size
    entries, completions = [], {}
    for name, model in models.items():
        styles = _styles(tokenizer, report_args.teacher_prompt_style) if name == "teacher" else ["raw"]
        if name in known:
            scored = {k: known[name][k] for k in ("bits_per_byte", "perplexity")}
        else:
            scored = bits_per_byte(model, tokenizer, texts, data_args.max_length, batch)
        for style in styles:
            label = name if style == styles[0] else f"{name} ({style})"
            metrics, completions[label] = evaluate_model(
                model,
                tokenizer,
                prompts,
                counted,
                style=style,
                max_new_tokens=report_args.generation_max_new_tokens,
                batch_size=batch,
            )
            entries.append({"name": label, **metrics, "bits_per_byte": scored["bits_per_byte"]})
        print(f"generation: {name} done", flush=True)
    report["generation"] = {
        "prompts": len(prompts),
        "doctest_prompts": sum(counted),
        "max_new_tokens": report_args.generation_max_new_tokens,
        "files": sorted({p.path for p in prompts}),
        "models": entries,
        "samples": _samples(prompts, completions),
    }
    return report


def write_generation_eval(report: dict[str, Any], config: RecipeConfig) -> dict[str, Any]:
    """:func:`add_generation_eval`, then ``report.json`` rewritten and the generation table printed."""
    report = add_generation_eval(report, config)
    write_report(report, Path(config.training.output_dir))
    print("\n" + "\n\n".join(generation_section(report)[:2]) + "\n", flush=True)
    return report


def finish_codegen_report(report: dict[str, Any] | None, config: RecipeConfig) -> dict[str, Any] | None:
    """Adds the cross-tokenizer students and the generation evaluation ``config`` asks for to ``report`` (None
    on processes other than the main one: nothing to add), rewrites ``report.json`` and prints their tables.

    Args:
        report (dict | None): the run's report (:func:`~.run.run_recipe`), None off the main process.
        config (RecipeConfig): the run's argument groups (``student_tokenizer``, ``generation_prompts``, ...).

    Returns:
        dict | None: the report with ``cross_tokenizer`` and ``generation`` where asked for.
    """
    if report is None:
        return None
    if config.student.student_tokenizer:
        report = add_cross_tokenizer_students(report, config)
        write_report(report, Path(config.training.output_dir))
        print(f"\n{bits_per_byte_table(report)}\n", flush=True)
    if config.report.generation_prompts:
        report = write_generation_eval(report, config)
    return report


def _reference_passes(prompts: list[CodePrompt]) -> list[bool]:
    """Whether each prompt's own reference body passes its doctests in the sandbox (False without doctests):
    examples that fail on the file's own code (they need a set-up the prompt does not show) are not counted."""
    return [bool(p) for p in doctest_outcomes(prompts, [p.reference for p in prompts])]
