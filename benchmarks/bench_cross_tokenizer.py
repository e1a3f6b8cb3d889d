"""Cross-tokenizer KD step / same-vocabulary KD step on the same shapes, and cache bytes per token.

    python benchmarks/bench_cross_tokenizer.py [--rounds 7] [--quick] [--before REV] [--no-real-teacher]

Step = DistillationTrainer.compute_loss + backward + AdamW step on one batch of standard-library code. The
student is a GPT-2 over GPT-2's tokenizer in every variant; the teacher is a random GPT-2-architecture model of
one size, over GPT-2's vocabulary for the same-vocabulary baseline and over SmolLM2's (49,152 tokens, its real
tokenizer) for the cross-tokenizer variants, so the difference is the cross-tokenizer work: tokenizing the text
for the teacher, aligning positions, and the ``aligned`` / ``uld`` losses (live: all teacher logits; cached:
the top-k). The live variants run with the exact losses and with ``cross_tokenizer_top_k = 256`` (``uld`` also 1,024).
Also reports the cross-tokenizer cache's bytes per teacher token (top-k 32, float32 logits), and how far the
top-k losses (K = 64, 256, 1024) fall below the exact ones on the benchmark's batch: for the benchmark's random
teacher and, unless ``--no-real-teacher``, for SmolLM2-135M-Instruct itself (the offline alias
``smollm2-135m``), each against the benchmark's random GPT-2 student.

``--before REV`` first runs this benchmark as it was at git revision ``REV`` (``git archive`` into a temporary
folder, run there in a fresh process with the same flags), then this tree's; each run's ratios are against its
own same-vocabulary step, timed in the same interleaved rounds, and the JSON keeps the earlier run's rows under
``before``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    default_data_collator,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import kd_training_step, report, summarize, time_variants  # noqa: E402

from hf_distill import DistillationTrainer, DistillationTrainingArguments  # noqa: E402
from hf_distill.cache.build import XTOK_COLUMNS, XTOK_ENDS, cache_teacher_outputs  # noqa: E402
from hf_distill.recipes.cross_tokenizer import join_cache, text_blocks  # noqa: E402
from hf_distill.recipes.data_code import load_code_corpus  # noqa: E402
from hf_distill.recipes.offline import resolve_model_path  # noqa: E402
from hf_distill.token_alignment import OFFSETS_COLUMN, TEXT_COLUMN  # noqa: E402

TOP_K = 32
STEP_TOP_K = 256  # the live top-k variants' K
GAP_TOP_KS = (64, 256, 1024)  # the K whose loss gap to the exact loss is reported
REPOSITORY = Path(__file__).resolve().parent.parent


def run_before(revision: str, rounds: int, quick: bool) -> dict:
    """This benchmark as of git ``revision``, run in a fresh process on that revision's package: its JSON."""
    archive = subprocess.run(
        ["git", "archive", revision], cwd=REPOSITORY, capture_output=True, check=True
    ).stdout
    with tempfile.TemporaryDirectory() as tree:
        with tarfile.open(fileobj=io.BytesIO(archive)) as files:
            files.extractall(tree, filter="data")
        command = [sys.executable, "benchmarks/bench_cross_tokenizer.py", "--rounds", str(rounds)]
        subprocess.run(
            command + (["--quick"] if quick else []),
            cwd=tree,
            env={**os.environ, "PYTHONPATH": tree},
            check=True,
        )
        name = "cross_tokenizer" + ("_quick" if quick else "") + ".json"
        result = json.loads((Path(tree) / "benchmarks" / "results" / name).read_text())
    return {"revision": revision, "rows": result["rows"], "machine": result.get("machine")}


def gpt2(vocab: int, layers: int, hidden: int, seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=max(hidden // 64, 1), n_positions=512
    )
    return GPT2LMHeadModel(config)


def shapes(quick: bool) -> dict:
    if quick:
        return {"batch": 2, "tokens": 32, "student": (1, 64), "teacher": (1, 128)}
    return {"batch": 4, "tokens": 128, "student": (2, 128), "teacher": (4, 256)}


def trainer_and_batch(
    student,
    teacher,
    rows: Dataset,
    out: str,
    student_tokenizer,
    teacher_tokenizer,
    loss,
    top_k=None,
    alpha=0.5,
):
    """A DistillationTrainer over ``rows`` and the one batch of all of them."""
    args = DistillationTrainingArguments(
        output_dir=out, report_to="none", use_cpu=True, alpha=alpha, temperature=1.0,
        kd_loss_implementation="plain", cross_tokenizer_loss=loss, cross_tokenizer_top_k=top_k,
    )  # fmt: skip
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=rows, data_collator=default_data_collator,
        processing_class=student_tokenizer, teacher_processing_class=teacher_tokenizer,
    )  # fmt: skip
    columns = [
        c for c in rows.column_names if loss is not None or c in ("input_ids", "attention_mask", "labels")
    ]
    return trainer, trainer.data_collator([{c: rows[i][c] for c in columns} for i in range(len(rows))])


def top_k_gaps(student, teacher, rows: Dataset, out: str, student_tokenizer, teacher_tokenizer) -> dict:
    """The KD loss of the batch (alpha = 1) exact and at each K of ``GAP_TOP_KS``, and the relative gap
    ``(exact - top-k) / exact`` (>= 0: the top-k loss is a lower bound), per cross-tokenizer loss."""
    gaps = {}
    for loss in ("uld", "aligned"):
        values = {}
        for top_k in (None, *GAP_TOP_KS):
            trainer, batch = trainer_and_batch(
                student, teacher, rows, out, student_tokenizer, teacher_tokenizer, loss, top_k, alpha=1.0
            )
            with torch.no_grad():
                values[top_k] = float(trainer.compute_loss(student, batch))
        exact = values[None]
        gaps[loss] = {"exact": round(exact, 6)} | {
            f"top-{k}": {
                "loss": round(values[k], 6),
                "relative gap": float(f"{(exact - values[k]) / exact:.3g}"),
            }
            for k in GAP_TOP_KS
        }
    return gaps


def step_fn(
    student, teacher, rows: Dataset, out: str, student_tokenizer, teacher_tokenizer, loss, top_k=None
):
    trainer, batch = trainer_and_batch(
        student, teacher, rows, out, student_tokenizer, teacher_tokenizer, loss, top_k
    )
    return kd_training_step(trainer, student, batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="small shapes, to check the script runs")
    parser.add_argument("--before", metavar="REV", help="first run this benchmark as of git revision REV")
    parser.add_argument(
        "--no-real-teacher",
        action="store_true",
        help="skip the top-k loss gaps of SmolLM2-135M's real outputs",
    )
    options = parser.parse_args()
    before = run_before(options.before, options.rounds, options.quick) if options.before else None
    s = shapes(options.quick)
    gpt2_tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("gpt2-tokenizer"))
    smollm2_tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("smollm2-135m"))
    texts = load_code_corpus(seed=42, max_files=40)["train"]["text"]
    rows = text_blocks(texts, gpt2_tokenizer, s["tokens"]).select(range(s["batch"]))
    cross_teacher = gpt2(len(smollm2_tokenizer), *s["teacher"], seed=1).eval()
    same_teacher = gpt2(len(gpt2_tokenizer), *s["teacher"], seed=1).eval()
    cache = cache_teacher_outputs(
        cross_teacher, Dataset.from_dict({TEXT_COLUMN: rows[TEXT_COLUMN]}), teacher_tokenizer=smollm2_tokenizer,
        top_k=TOP_K, temperature=1.0,
    )  # fmt: skip
    cached_rows = join_cache(rows, cache)
    plain_rows = rows.remove_columns([TEXT_COLUMN, OFFSETS_COLUMN])
    with tempfile.TemporaryDirectory() as out:
        students = {name: gpt2(len(gpt2_tokenizer), *s["student"], seed=2) for name in range(7)}
        gaps = {"benchmark teacher (random)": top_k_gaps(
            students[0], cross_teacher, rows, out, gpt2_tokenizer, smollm2_tokenizer
        )}  # fmt: skip
        if not (options.quick or options.no_real_teacher):
            real = AutoModelForCausalLM.from_pretrained(resolve_model_path("smollm2-135m")).eval()
            gaps["SmolLM2-135M-Instruct"] = top_k_gaps(
                students[0], real, rows, out, gpt2_tokenizer, smollm2_tokenizer
            )
            del real
        variants = {
            "same-vocabulary KD step": step_fn(
                students[0], same_teacher, plain_rows, out, gpt2_tokenizer, gpt2_tokenizer, None
            ),
            "cross-tokenizer KD step, aligned (live)": step_fn(
                students[1], cross_teacher, rows, out, gpt2_tokenizer, smollm2_tokenizer, "aligned"
            ),
            "cross-tokenizer KD step, uld (live)": step_fn(
                students[2], cross_teacher, rows, out, gpt2_tokenizer, smollm2_tokenizer, "uld"
            ),
            "cross-tokenizer KD step, aligned (cached top-32)": step_fn(
                students[3], None, cached_rows, out, gpt2_tokenizer, smollm2_tokenizer, "aligned"
            ),
            f"cross-tokenizer KD step, aligned (live, top-{STEP_TOP_K})": step_fn(
                students[4],
                cross_teacher,
                rows,
                out,
                gpt2_tokenizer,
                smollm2_tokenizer,
                "aligned",
                STEP_TOP_K,
            ),
            f"cross-tokenizer KD step, uld (live, top-{STEP_TOP_K})": step_fn(
                students[5], cross_teacher, rows, out, gpt2_tokenizer, smollm2_tokenizer, "uld", STEP_TOP_K
            ),
            "cross-tokenizer KD step, uld (live, top-1024)": step_fn(
                students[6], cross_teacher, rows, out, gpt2_tokenizer, smollm2_tokenizer, "uld", 1024
            ),
        }
        times = time_variants(variants, rounds=options.rounds)
    rows_out = summarize(times, baseline="same-vocabulary KD step")
    teacher_tokens = sum(len(ends) for ends in cache[XTOK_ENDS])
    cache_bytes = sum(cache.data.column(c).nbytes for c in XTOK_COLUMNS)
    extra = {
        "cache bytes per teacher token (xtok columns, arrow)": round(cache_bytes / teacher_tokens, 1),
        "cache bytes per teacher token, top-k logits + ids alone": TOP_K * (4 + 4),
        "top-k KD loss against the exact one (alpha = 1, the benchmark's batch and student)": gaps,
    }
    print(json.dumps(gaps, indent=1))
    meta = {"batch": s["batch"], "student tokens": s["tokens"], "student(layers,hidden)": s["student"],
            "teacher(layers,hidden)": s["teacher"], "student vocab": len(gpt2_tokenizer),
            "cross teacher vocab": len(smollm2_tokenizer), "rounds": options.rounds, "top_k": TOP_K}  # fmt: skip
    if before is not None:
        extra["before"] = before
        for row in before["rows"]:
            after = next((r for r in rows_out if r["variant"] == row["variant"]), None)
            if after is not None and "live" in row["variant"]:
                print(
                    f"{row['variant']}: {row['ratio']:.2f}x at {options.before} -> {after['ratio']:.2f}x here"
                )
    report("cross_tokenizer" + ("_quick" if options.quick else ""), rows_out, meta, extra)


if __name__ == "__main__":
    main()
