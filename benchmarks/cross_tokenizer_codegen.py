"""Cross-tokenizer distillation on code: a GPT-2-tokenizer student from the SmolLM2-135M teacher, in bits per byte.

    python benchmarks/cross_tokenizer_codegen.py [--seeds 0 1 2 3 4] [--steps 160] [--quick]

For each seed one random GPT-2 over GPT-2's own tokenizer (offline alias ``gpt2-tokenizer``) is trained three
times from the same initial weights, with the same data order and steps: with ``cross_tokenizer_loss="aligned"``,
with ``"uld"`` (both from one cross-tokenizer cache of the teacher, made once: the teacher never runs during
training), and without KD. Held-out bits per byte on standard-library files no training block came from
(:func:`hf_distill.recipes.cross_tokenizer.bits_per_byte`), the teacher's beside them. The paired differences
(no KD - KD, per seed) get a 95% t-interval over the seeds (scipy.stats). Writes
``results/cross_tokenizer_codegen.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from scipy import stats
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_result  # noqa: E402

from hf_distill import DistillationTrainingArguments  # noqa: E402
from hf_distill.recipes.cross_tokenizer import (  # noqa: E402
    bits_per_byte,
    cache_for_students,
    cross_tokenizer_student,
    join_cache,
    text_blocks,
    train_cross_tokenizer_student,
)
from hf_distill.recipes.data_code import load_code_corpus  # noqa: E402
from hf_distill.recipes.offline import resolve_model_path  # noqa: E402
from hf_distill.token_alignment import TEXT_COLUMN  # noqa: E402

VARIANTS = ("aligned", "uld", None)


def sizes(quick: bool) -> dict:
    if quick:
        return dict(
            files=40, train_blocks=32, steps=8, block=32, test_files=3, test_chars=500, layers=1, width=64
        )
    # Sized for a 2-core CPU (5 seeds in about 16 minutes when quiet): the student's 50,257-token head
    # dominates every step, so blocks are short and the student small.
    return dict(
        files=300, train_blocks=256, steps=100, block=32, test_files=12, test_chars=2000, layers=2, width=64
    )


def interval(differences: list[float]) -> dict:
    """Mean of the paired differences and its 95% t-interval over the seeds."""
    mean = statistics.fmean(differences)
    if len(differences) < 2:
        return {"mean": mean, "low": None, "high": None}
    half = stats.t.ppf(0.975, len(differences) - 1) * statistics.stdev(differences) / len(differences) ** 0.5
    return {"mean": mean, "low": mean - half, "high": mean + half}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--steps", type=int)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    options = parser.parse_args()
    s = sizes(options.quick)
    if options.steps:
        s["steps"] = options.steps
    torch.set_num_threads(1)
    started = time.perf_counter()
    teacher_path = resolve_model_path("smollm2-135m")
    teacher = AutoModelForCausalLM.from_pretrained(teacher_path, dtype=torch.float32).eval()
    teacher_tokenizer = AutoTokenizer.from_pretrained(teacher_path)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("gpt2-tokenizer"))
    corpus = load_code_corpus(seed=42, max_files=s["files"])
    blocks = text_blocks(corpus["train"]["text"], tokenizer, s["block"])
    blocks = blocks.shuffle(seed=0).select(range(min(s["train_blocks"], len(blocks))))
    test_texts = [t[: s["test_chars"]] for t in corpus["test"]["text"][: s["test_files"]]]
    t0 = time.perf_counter()
    cache = cache_for_students(teacher, teacher_tokenizer, blocks[TEXT_COLUMN], top_k=32, temperature=1.0)
    cache_seconds = time.perf_counter() - t0
    train = join_cache(blocks, cache)
    teacher_metrics = bits_per_byte(teacher, teacher_tokenizer, test_texts, s["block"], batch_size=8)
    del teacher  # training reads the cache only
    results: dict[str, list[dict]] = {str(v): [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as out:
        for seed in options.seeds:
            set_seed(seed)
            initial = cross_tokenizer_student(
                None, tokenizer, s["layers"], {"n_embd": s["width"], "n_head": 4, "n_positions": 256}
            )
            for variant in VARIANTS:
                args = DistillationTrainingArguments(
                    output_dir=out, report_to="none", use_cpu=True, seed=seed, max_steps=s["steps"],
                    per_device_train_batch_size=8, learning_rate=1e-3, warmup_steps=10,
                    lr_scheduler_type="cosine", temperature=1.0, alpha=0.5, logging_steps=20,
                    save_strategy="no", disable_tqdm=True,
                )  # fmt: skip
                student = copy.deepcopy(initial)
                t0 = time.perf_counter()
                train_cross_tokenizer_student(
                    student, train, tokenizer, teacher_tokenizer, args, Path(out) / str(variant), loss=variant
                )
                seconds = time.perf_counter() - t0
                metrics = bits_per_byte(student, tokenizer, test_texts, s["block"], batch_size=8)
                results[str(variant)].append({"seed": seed, "train_seconds": seconds, **metrics})
                print(
                    f"seed {seed} {variant}: {metrics['bits_per_byte']:.4f} bits/byte ({seconds:.0f} s)",
                    flush=True,
                )
    bpb = {v: [r["bits_per_byte"] for r in rows] for v, rows in results.items()}
    summary = {
        "teacher_bits_per_byte": teacher_metrics["bits_per_byte"],
        "bits_per_byte_mean": {v: statistics.fmean(values) for v, values in bpb.items()},
        "no_kd_minus_aligned": interval([n - a for n, a in zip(bpb["None"], bpb["aligned"])]),
        "no_kd_minus_uld": interval([n - u for n, u in zip(bpb["None"], bpb["uld"])]),
        "uld_minus_aligned": interval([u - a for u, a in zip(bpb["uld"], bpb["aligned"])]),
    }
    result = {
        "benchmark": "cross_tokenizer_codegen" + ("_quick" if options.quick else ""),
        "sizes": {**s, "seeds": options.seeds, "batch": 8, "top_k": 32, "teacher": "SmolLM2-135M-Instruct"},
        "teacher": teacher_metrics,
        "runs": results,
        "summary": summary,
        "cache_seconds": cache_seconds,
        "total_seconds": time.perf_counter() - started,
        "machine": machine(),
    }
    print(json.dumps(summary, indent=2))
    write_result(result)


if __name__ == "__main__":
    main()
