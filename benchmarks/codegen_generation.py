"""What the code students write, over seeds: parse rate, degenerate share and bits per byte, KD against no KD.

    python benchmarks/codegen_generation.py [--seeds 1 2 3] [--config recipes/configs/codegen.yaml] [-- FLAGS]

Runs the codegen recipe (``recipes/codegen.py``) once per seed with ``--seed <s>`` (the teacher and the prompts
are the same for every seed; the students' initial weights, where random, and data order change), then reads
each run's ``report.json``. Per student init it pairs the distilled student with the no-KD one of the same
seed and reports the mean over seeds of each model's parse rate, degenerate share, doctest pass rate and bits
per byte, and the paired difference KD - no KD with its 95% t-interval over the seeds (scipy.stats); the
teacher's numbers (through its chat template and raw) beside them. Flags after ``--`` go to the recipe (e.g.
``-- --max_train_samples 8`` for a quick check). Writes ``results/codegen_generation.json`` with the load of
the machine at start and end: the default config takes about 20 minutes per seed on 2 quiet cores, and
timings taken on a loaded machine are not results.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "recipes"))
from _common import RESULTS, machine  # noqa: E402
from cross_tokenizer_codegen import interval  # noqa: E402

METRICS = ("parse_rate", "degenerate_rate", "doctest_pass_rate", "bits_per_byte")


def run_seed(seed: int, config: str, out: Path, extra: list[str]) -> dict:
    import codegen  # recipes/codegen.py

    started = time.perf_counter()
    report = codegen.main(["--config", config, "--seed", str(seed), "--output_dir", str(out), *extra])
    return {"seed": seed, "seconds": time.perf_counter() - started, "generation": report["generation"]}


def summarize(runs: list[dict]) -> dict:
    """Mean of each model's metrics over the seeds, and the paired KD - no-KD differences per student init."""
    by_model: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        for entry in run["generation"]["models"]:
            for metric in METRICS:
                if entry.get(metric) is not None:
                    by_model.setdefault(entry["name"], {}).setdefault(metric, []).append(entry[metric])
    means = {name: {m: statistics.fmean(v) for m, v in values.items()} for name, values in by_model.items()}
    paired = {}
    for name in by_model:
        if not name.endswith("-distilled"):
            continue
        baseline = name[: -len("-distilled")] + "-no_kd"
        if baseline not in by_model:
            continue
        paired[name] = {
            metric: interval([a - b for a, b in zip(by_model[name][metric], by_model[baseline][metric])])
            for metric in METRICS
            if metric in by_model[name]
            and len(by_model[name][metric]) == len(by_model[baseline].get(metric, []))
        }
    return {"means": means, "kd_minus_no_kd": paired}


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--config", default=str(ROOT / "recipes" / "configs" / "codegen.yaml"))
    parser.add_argument("--out", default="runs/codegen_generation")
    options = parser.parse_args(own)
    load_start = os.getloadavg()
    runs = [run_seed(s, options.config, Path(options.out) / f"seed_{s}", extra) for s in options.seeds]
    result = {
        "benchmark": "codegen_generation",
        "config": options.config,
        "extra_flags": extra,
        "seeds": options.seeds,
        "seconds_per_seed": [r["seconds"] for r in runs],
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        **summarize(runs),
        "machine": machine(),
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "codegen_generation.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("means", "kd_minus_no_kd", "seconds_per_seed")}, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
