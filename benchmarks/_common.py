"""Shared timing helpers: variants interleaved in rounds, medians, ratios, a printed table and a JSON file.

Interleaving (round 1: A B C, round 2: B C A, ...) spreads slow periods of a shared machine over all
variants instead of charging them to whichever ran last. Only medians are reported.

Every call also records the cores this process used and the cores other processes kept busy meanwhile
(from /proc/stat). A ratio taken while other work shared the cores is noise, so medians and ratios are taken
over the quiet calls only (others below ``QUIET_CORES``); the JSON keeps every call with its CPU figures, and
says how many calls of each variant were quiet.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

# The machine's busy time and the quiet threshold are the package's, shared with the recipes' latency.
from hf_distill.reports.timing import QUIET_CORES, busy_cpu_seconds

RESULTS = Path(__file__).resolve().parent / "results"


class Timings(dict):
    """Seconds per call of each variant, with ``own[name]`` (cores this process used) and ``others[name]``
    (cores other processes used) per call."""

    def __init__(self, names: list[str]):
        super().__init__({name: [] for name in names})
        self.own: dict[str, list[float]] = {name: [] for name in names}
        self.others: dict[str, list[float]] = {name: [] for name in names}

    def subset(self, names: list[str]) -> Timings:
        part = Timings(names)
        for name in names:
            part[name], part.own[name], part.others[name] = self[name], self.own[name], self.others[name]
        return part


def time_variants(variants: dict[str, Callable[[], None]], rounds: int, warmup: int = 1) -> Timings:
    """Seconds per call of each variant, ``rounds`` calls each, order rotated every round."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    times = Timings(names)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            busy, cpu, start = busy_cpu_seconds(), time.process_time(), time.perf_counter()
            variants[name]()
            wall = time.perf_counter() - start
            own = (time.process_time() - cpu) / wall
            times[name].append(wall)
            times.own[name].append(own)
            times.others[name].append(max((busy_cpu_seconds() - busy) / wall - own, 0.0))
    return times


def summarize(times: dict[str, list[float]], baseline: str) -> list[dict]:
    """Median seconds and ratio to ``baseline`` per variant, over its quiet calls when CPU figures exist."""

    def quiet(name: str) -> list[float]:
        others = getattr(times, "others", {}).get(name)
        if not others:
            return times[name]
        kept = [t for t, o in zip(times[name], others) if o <= QUIET_CORES]
        return kept or times[name]

    base = statistics.median(quiet(baseline))
    rows = []
    for name, t in times.items():
        row = {"variant": name, "median_s": statistics.median(quiet(name)), "runs": t}
        row["ratio"] = row["median_s"] / base
        if getattr(times, "others", None):
            row["quiet_runs"] = sum(o <= QUIET_CORES for o in times.others[name])
            row["own_cores"] = times.own[name]
            row["other_cores"] = times.others[name]
        rows.append(row)
    return rows


def peak_rss_delta(fn: Callable[[], None]) -> int:
    """Bytes the resident memory peaked above its level before ``fn`` (Linux: the high-water mark is reset
    through /proc/self/clear_refs first, so earlier peaks such as imports do not count)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    before = _status_bytes("VmRSS")
    fn()
    return max(_status_bytes("VmHWM") - before, 0)


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}; peak memory needs Linux.")


def measure_in_fresh_process(script: str, args: list[str]) -> dict:
    """Runs ``python script *args`` and parses the JSON it prints on its last line."""
    # Large blocks straight from mmap, returned on free: resident memory then follows the live tensors
    # instead of glibc's heap, which keeps freed blocks and would make the peak depend on allocation order.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_folder(run: Path, where: str | Path) -> Path:
    """A folder a run's ``report.json`` names (``where``), found from ``run`` when the report wrote it relative
    to the directory the run was started from (``runs/demo/students/...`` read from elsewhere)."""
    folder = Path(where)
    if not folder.is_dir() and run.name in folder.parts:
        folder = run.joinpath(*folder.parts[folder.parts.index(run.name) + 1 :])
    return folder


def distilled_seeds(run: Path, kind: str = "distilled") -> tuple[str, dict[int, Path]]:
    """The first ``kind`` student's name in ``run``'s report (``"distilled"``, ``"no_kd_baseline"``) and its
    folder per seed."""
    report_path = run / "report.json"
    if not report_path.is_file():
        raise SystemExit(f"{report_path} is missing: pass the folder of a finished recipe run.")
    report = json.loads(report_path.read_text())
    distilled = [s for s in report.get("students", []) if s.get("kind") == kind]
    if not distilled:
        raise SystemExit(f"{report_path} names no {kind} student.")
    seeds = {entry["seed"]: run_folder(run, entry["output_dir"]) for entry in distilled[0].get("seeds", [])}
    if not seeds:
        raise SystemExit(f"{report_path}: {distilled[0]['name']} kept no per-seed folders.")
    return distilled[0]["name"], seeds


def completion_counts(model: Any, tokenizer: Any, prompts: list, config: Any, style: str = "raw") -> dict:
    """What a code model writes for ``prompts`` (greedy, ``style`` prompting, the recipe config's new tokens and
    batch): the shares and counts that parse and that degenerate, and each prompt's parse. Doctests not run."""
    from hf_distill.recipes.code_generation import generation_metrics, greedy_completions, parses

    completions = [
        r["completion"]
        for r in greedy_completions(
            model,
            tokenizer,
            prompts,
            style=style,
            max_new_tokens=config.report.generation_max_new_tokens,
            batch_size=config.training.per_device_eval_batch_size,
        )
    ]
    metrics = generation_metrics(prompts, completions, [None] * len(prompts))
    parsed = [parses(p.prompt, c) for p, c in zip(prompts, completions)]
    return {
        "parse_rate": metrics["parse_rate"],
        "parsed": sum(parsed),
        "degenerate_rate": metrics["degenerate_rate"],
        "degenerate": round(metrics["degenerate_rate"] * len(prompts)),
        "prompts": len(prompts),
        "parses": parsed,
    }


def recipe_task(task: str, recipe_argv: list[str], scratch: str, model_folder: Path, prog: str) -> tuple:
    """``(TaskData, training arguments)`` of a recipe task prepared as ``hf-distill train`` prepares it: the
    recipe's flags (``--config`` included) parsed, the tokenizer of ``model_folder``, the splits tokenized."""
    from transformers import AutoTokenizer

    from hf_distill.cli import task_preparer
    from hf_distill.loading import load_pretrained
    from hf_distill.recipes.arguments import parse_recipe_config

    config = parse_recipe_config(
        [*recipe_argv, "--output_dir", scratch, "--report_to", "none"], task=task, prog=prog, description=prog
    )
    kwargs = {"add_prefix_space": True} if task == "ner" else {}
    tokenizer = load_pretrained(AutoTokenizer.from_pretrained, str(model_folder), role="model", **kwargs)
    return task_preparer(task)(config.data, tokenizer), config.training


def shown_path(path: Path | str) -> str:
    """``path`` as a result file records it: relative to the repository when inside it (no machine's folders)."""
    resolved = Path(path).resolve()
    root = RESULTS.parent.parent
    return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else str(path)


def machine() -> dict:
    """What the numbers were measured on."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
    }


def report(name: str, rows: list[dict], meta: dict, extra: dict | None = None) -> dict:
    """Prints a table and writes ``results/<name>.json``."""
    print(f"\n{name}  ({', '.join(f'{k}={v}' for k, v in meta.items())})")
    print(
        f"{'variant':<42} {'median s':>10} {'ratio':>7}"
        + (f" {'peak MiB':>9}" if "peak_mib" in rows[0] else "")
    )
    for row in rows:
        line = f"{row['variant']:<42} {row['median_s']:>10.4f} {row['ratio']:>7.3f}"
        if "peak_mib" in row:
            line += f" {row['peak_mib']:>9.1f}"
        if "quiet_runs" in row:
            line += (
                f"  quiet {row['quiet_runs']}/{len(row['runs'])}, own cores "
                f"{statistics.median(row['own_cores']):.2f}, others {max(row['other_cores']):.2f} max"
            )
        print(line)
    for key, value in (extra or {}).items():
        print(f"{key}: {value}")
    result = {
        "benchmark": name,
        "meta": meta,
        "rows": rows,
        **(extra or {}),
        "machine": machine(),
    }
    write_result(result)
    return result


def write_result(result: dict, path: Path | None = None) -> Path:
    """Writes ``result`` to ``path`` (default ``results/<result["benchmark"]>.json``) and returns the path."""
    path = Path(path) if path is not None else RESULTS / f"{result['benchmark']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def kd_training_step(trainer, student: torch.nn.Module, batch: dict) -> Callable[[], None]:
    """One KD optimizer step as the step benchmarks time it: ``trainer.compute_loss`` on ``batch``, backward,
    AdamW (lr 1e-5), gradients cleared."""
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-5)

    def step() -> None:
        trainer.compute_loss(student, batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step
