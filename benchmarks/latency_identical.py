"""Two students of the same architecture timed side by side, as the recipes time them: their ratio must be 1.

    python benchmarks/latency_identical.py [--rounds 7] [--threads N] [--device cpu|cuda] [--quick]

The demo's models (recipes/configs/sentiment.yaml): the MiniLM-L6 teacher with a 2-label head and its 3-layer
student copied from teacher layers, twice (the distilled student and the no-KD baseline have this one
architecture). Timed with the recipes' own code (hf_distill.reports.timing.time_models: torch.utils.benchmark
blocked_autorange per model per round, rounds interleaved with the order rotated, one warm-up call each,
threads pinned) on the demo's latency batches (Rotten Tomatoes test snippets at max_length 64, batch 1 and
32). The weights do not change the time, so nothing is trained.

Reports, per batch size, the twins' time ratio (student_b median / student_a median, with the quartiles of the
per-round ratios), whether it is within 10% of 1, and each twin's speed-up over the teacher with its
reliable flag; with the process's CPU share and the cores other processes kept busy meanwhile (a ratio taken
while the CPU was busy says more about the machine than the models: re-run on a quiet machine).
Writes results/latency_identical.json.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine  # noqa: E402

TOLERANCE = 0.10


def load_models(device: str):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hf_distill.recipes.offline import resolve_model_path
    from hf_distill.students.build import student_from_teacher

    path = resolve_model_path("minilm-l6")
    torch.manual_seed(0)
    teacher = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, dtype=torch.float32)
    student = student_from_teacher(teacher, num_layers=3)
    models = {"teacher": teacher, "student_a": student, "student_b": copy.deepcopy(student)}
    return {name: model.to(device).eval() for name, model in models.items()}, AutoTokenizer.from_pretrained(
        path
    )


def demo_batches(tokenizer, sizes: tuple[int, ...], max_length: int = 64):
    from hf_distill.recipes.data_arguments import DataArguments
    from hf_distill.recipes.latency import latency_batch
    from hf_distill.recipes.tasks import prepare_sentiment

    data = DataArguments(max_train_samples=64, max_eval_samples=8, max_test_samples=64, max_length=max_length)
    task = prepare_sentiment(data, tokenizer)
    return {size: latency_batch(task, size) for size in sizes}


def loadavg() -> list[float]:
    with open("/proc/loadavg") as handle:
        return [float(v) for v in handle.read().split()[:3]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads while timing (default: current)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="batch 1 only, 3 rounds: checks the script runs")
    options = parser.parse_args()

    from hf_distill.recipes.latency import LATENCY_BATCH_SIZES, latency_entries
    from hf_distill.reports.timing import speedup_stats, time_models

    models, tokenizer = load_models(options.device)
    sizes = (1,) if options.quick else LATENCY_BATCH_SIZES
    rounds = 3 if options.quick else options.rounds
    batches = demo_batches(tokenizer, sizes)
    load_before = loadavg()
    timings = time_models(models, batches, rounds, threads=options.threads)
    load_after = loadavg()
    entries = latency_entries(timings, reference="teacher")
    how = timings.measurement()
    print(
        f"latency_identical: {rounds} rounds, {how['threads']} thread(s) on {how['device']}, {how['cores']} cores; "
        f"own CPU share {how['own_cpu_share']:.2f}, other processes {how['other_cores']:.2f} cores, "
        f"loadavg {load_before[0]:.2f} -> {load_after[0]:.2f}" + ("  CPU BUSY" if how["cpu_busy"] else "")
    )
    twins = {}
    for size in sizes:
        a, b = timings.samples_ms["student_a"][size], timings.samples_ms["student_b"][size]
        ratio = speedup_stats(b, a, busy=timings.busy)  # b's time over a's: 1 for twins
        within = abs(ratio["median"] - 1.0) <= TOLERANCE
        twins[f"b{size}"] = {**ratio, "within_10_percent": within}
        line = [f"batch {size:>2}:"]
        for name in models:
            stats = entries[name]["latency"][f"b{size}"]
            line.append(f"{name} {stats['median_ms']:.2f} ms ({stats['q25_ms']:.2f}-{stats['q75_ms']:.2f})")
        print("  ".join(line))
        print(
            f"  twins' time ratio student_b / student_a {ratio['median']:.3f} (per-round {ratio['q25']:.3f}-{ratio['q75']:.3f}); "
            f"within 10%: {within}"
        )
        for name in ("student_a", "student_b"):
            speedup = entries[name]["speedup"][f"b{size}"]
            flag = "reliable" if speedup["reliable"] else f"UNRELIABLE ({speedup['why']})"
            print(
                f"  {name} speed-up over the teacher {speedup['median']:.2f}x ({speedup['q25']:.2f}-{speedup['q75']:.2f}), {flag}"
            )
    result = {
        "benchmark": "latency_identical",
        "meta": {"rounds": rounds, "sizes": list(sizes), "device": options.device, "quick": options.quick},
        "measurement": how,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "models": entries,
        "twins": twins,
        "machine": machine(),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("latency_identical_quick.json" if options.quick else "latency_identical.json")
    import json

    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
