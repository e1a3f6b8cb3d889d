"""Shared timing helpers: variants interleaved in rounds, medians, ratios, a printed table and a JSON file.

Interleaving (round 1: A B C, round 2: B C A, ...) spreads slow periods of a shared machine over all
variants instead of charging them to whichever ran last. Only medians are reported.
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

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def time_variants(
    variants: dict[str, Callable[[], None]], rounds: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of each variant, ``rounds`` calls each, order rotated every round."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - start)
    return times


def summarize(times: dict[str, list[float]], baseline: str) -> list[dict]:
    base = statistics.median(times[baseline])
    return [
        {"variant": name, "median_s": statistics.median(t), "ratio": statistics.median(t) / base, "runs": t}
        for name, t in times.items()
    ]


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
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    return result
