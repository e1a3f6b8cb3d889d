"""The shipped student against the PyTorch models it came from: latency at batch 1 and 32, sizes, argmax agreement.

    python benchmarks/export_latency.py --run runs/demo [--seed 1] [--rounds 5] [--threads 2] [--levers]
    python benchmarks/export_latency.py --quick [--output PATH]

Variants, timed side by side: the PyTorch teacher, the PyTorch student, the student exported to ONNX
(``hf_distill.export_student``: ``torch.onnx.export(dynamo=True)``, fp32) and its two int8 graphs
(``int8-dynamic``, ``onnxruntime.quantization.quantize_dynamic``; ``int8-weights``, ``MatMulNBits``), each in
ONNX Runtime (CPU provider, default session optimisations). ``--levers`` adds what may go beyond that: ONNX Runtime's transformer fusion
(``onnxruntime.transformers.optimizer.optimize_model``: attention, LayerNorm, GELU) on the fp32 graph and the
int8 graph quantized from the fused one, and static int8 (QDQ) calibrated on rows.

Inputs are random token rows of ``--tokens`` (64) tokens, no padding (the time does not depend on the tokens),
at batch 1 and 32. PyTorch threads and ONNX Runtime intra-op threads are both ``--threads`` (2, inter-op 1).
Each round calls every variant once (a sample = ``calls`` forwards: 20 at batch 1, 2 at batch 32), the order
rotated every round (``_common.time_variants``); each sample records the cores this process used and the cores
other processes kept busy, and medians and ratios are over the quiet samples (``_common.summarize``). A row's
``speedup`` is the PyTorch teacher's median over the row's median, in the same batch size's table.

Also recorded: size on disk of each variant, and the share of random rows on which each ONNX variant keeps the
PyTorch student's argmax. ``--run`` reads the run's ``report.json``: the fine-tuned teacher and the first
distilled student's ``--seed`` folder; ``--quick`` builds tiny random BERTs instead (a check that the script
works; its timings say nothing). Writes results/export_latency.json (``--quick``: export_latency_quick.json, or
``--output``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from _common import RESULTS, machine, run_folder, shown_path, summarize, time_variants, write_result  # noqa: E402

BATCH_SIZES = (1, 32)
CALLS = {1: 20, 32: 2}  # forwards per timed sample: batch 1 alone is too short for the clock
QUICK_CALLS = {1: 2, 32: 1}
BASELINE = "pytorch teacher"
AGREEMENT_ROWS = 256
CALIBRATION_ROWS = 64


def run_models(run: Path, seed: int) -> tuple[Path, Path]:
    """The fine-tuned teacher's folder and the first distilled student's ``seed`` folder in ``run``."""
    from hf_distill.hub.push_guard import report_teacher_folders

    report_path = run / "report.json"
    if not report_path.is_file():
        raise SystemExit(
            f"{report_path} is missing: pass the folder of a finished run (e.g. runs/demo after make demo)."
        )
    teachers = [
        folder for where, folder in report_teacher_folders(report_path) if where.startswith("teacher.")
    ]
    report = json.loads(report_path.read_text())
    distilled = [s for s in report.get("students", []) if s.get("kind") == "distilled"]
    if not teachers or not distilled:
        raise SystemExit(f"{report_path} names no local teacher folder or no distilled student.")
    seeds = {entry["seed"]: entry["output_dir"] for entry in distilled[0].get("seeds", [])}
    where = seeds.get(seed, distilled[0]["output_dir"] if not seeds else None)
    if where is None:
        raise SystemExit(
            f"{distilled[0]['name']} has no seed {seed} in {report_path}; seeds: {sorted(seeds)}."
        )
    return teachers[0], run_folder(run, where)


def quick_models(work: Path) -> tuple[Path, Path]:
    """A tiny random BERT teacher (2 layers) and a 1-layer student cut from it, saved under ``work``."""
    from transformers import BertConfig, BertForSequenceClassification

    from hf_distill.students.build import student_from_teacher

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=500,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=2,
    )
    teacher = BertForSequenceClassification(config).eval()
    teacher.save_pretrained(work / "teacher")
    student_from_teacher(teacher, num_layers=1).save_pretrained(work / "student")
    return work / "teacher", work / "student"


def random_rows(vocab: int, batch: int, tokens: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, tokens), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


def lever_graphs(export: Any, model: Any, vocab: int, tokens: int) -> tuple[dict[str, Path], dict[str, Any]]:
    """ONNX Runtime's transformer fusion on the fp32 graph (and int8 from the fused graph), and static int8
    calibrated on random token rows; with what the fusion did."""
    from onnxruntime.transformers.optimizer import optimize_model

    from hf_distill.export.quantize import quantize_graph
    from hf_distill.export.student import calibration_feeds

    folder = export.onnx_path.parent
    graphs, notes = {}, {}
    config = model.config
    fused = optimize_model(
        str(export.onnx_path),
        model_type=config.model_type if config.model_type in ("bert", "gpt2") else "bert",
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
    )
    notes["fused_operators"] = {k: int(v) for k, v in fused.get_fused_operator_statistics().items() if v}
    fused.save_model_to_file(str(folder / "model_fused.onnx"))
    quantize_graph(folder / "model_fused.onnx", folder / "model_fused_quantized.onnx", "int8-dynamic")
    graphs["onnx fp32 fused student"] = folder / "model_fused.onnx"
    graphs["onnx int8-dynamic fused student"] = folder / "model_fused_quantized.onnx"
    rows = random_rows(vocab, CALIBRATION_ROWS, tokens, seed=7)
    feeds = calibration_feeds(
        [{k: v[i].tolist() for k, v in rows.items()} for i in range(CALIBRATION_ROWS)], export.spec
    )
    quantize_graph(export.onnx_path, folder / "model_static.onnx", "int8-static", feeds)
    graphs["onnx int8-static student"] = folder / "model_static.onnx"
    notes["int8_static_calibration"] = f"{CALIBRATION_ROWS} random token rows of {tokens} tokens"
    return graphs, notes


def agreement(student: Any, onnx_models: dict[str, Any], vocab: int, tokens: int) -> dict[str, float]:
    """Share of random rows on which each ONNX variant keeps the PyTorch student's argmax."""
    rows = random_rows(vocab, AGREEMENT_ROWS, tokens, seed=11)
    with torch.inference_mode():
        want = student(**rows).logits.argmax(-1)
    return {
        name: float((model(**rows).logits.argmax(-1) == want).float().mean())
        for name, model in onnx_models.items()
    }


def time_batch(models: dict[str, Any], batch: dict[str, torch.Tensor], calls: int, rounds: int) -> list[dict]:
    """One batch size's table: every variant in interleaved rounds; ms per forward, speed-up vs the teacher."""

    def variant(model: Any) -> Any:
        def call() -> None:
            with torch.inference_mode():
                for _ in range(calls):
                    model(**batch)

        return call

    times = time_variants({name: variant(model) for name, model in models.items()}, rounds)
    rows = summarize(times, BASELINE)
    baseline = next(row["median_s"] for row in rows if row["variant"] == BASELINE)
    for row in rows:
        row["calls_per_run"] = calls
        row["median_ms_per_call"] = row["median_s"] / calls * 1000.0
        row["speedup"] = baseline / row["median_s"]
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None, help="a finished run's folder (report.json inside)")
    parser.add_argument("--seed", type=int, default=1, help="which seed's student of the run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads = ONNX Runtime intra-op threads"
    )
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--levers", action="store_true", help="also transformer fusion and static int8")
    parser.add_argument(
        "--work_dir", type=Path, default=None, help="where the exports go (default: a temp dir)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny random models, 2 rounds: checks the script"
    )
    parser.add_argument("--output", type=Path, default=None, help="the JSON file (default: results/...)")
    options = parser.parse_args(argv)
    if (options.run is None) == (not options.quick):
        parser.error("pass --run RUN_DIR (a finished run) or --quick (tiny random models), one of them")

    from hf_distill.export import OnnxModel, export_student
    from hf_distill.export.quantize import quantize_graph
    from hf_distill.export.student import load_model_folder

    torch.set_num_threads(options.threads)
    rounds = 2 if options.quick else options.rounds
    calls = QUICK_CALLS if options.quick else CALLS
    with tempfile.TemporaryDirectory() as scratch:
        work = options.work_dir or Path(scratch)
        teacher_dir, student_dir = (
            quick_models(work) if options.quick else run_models(options.run, options.seed)
        )
        teacher, _ = load_model_folder(teacher_dir)
        student, _ = load_model_folder(student_dir)
        teacher.eval(), student.eval()
        export = export_student(student_dir, work / "export", quantize="int8-dynamic")
        weights = export.onnx_path.with_name("model_weights.onnx")
        quantize_graph(export.onnx_path, weights, "int8-weights")
        graphs = {
            "onnx fp32 student": export.onnx_path,
            "onnx int8-dynamic student": export.quantized_path,
            "onnx int8-weights student": weights,
        }
        notes: dict[str, Any] = {}
        vocab = student.config.vocab_size
        if options.levers:
            more, notes = lever_graphs(export, student, vocab, options.tokens)
            graphs.update(more)
        onnx_models = {name: OnnxModel(path, threads=options.threads) for name, path in graphs.items()}
        models = {BASELINE: teacher, "pytorch student": student, **onnx_models}
        tables = {
            f"b{size}": time_batch(
                models, random_rows(vocab, size, options.tokens, size), calls[size], rounds
            )
            for size in BATCH_SIZES
        }
        sizes = {
            BASELINE: sum(p.stat().st_size for p in teacher_dir.glob("*.safetensors")),
            "pytorch student": sum(p.stat().st_size for p in student_dir.glob("*.safetensors")),
            **{name: path.stat().st_size for name, path in graphs.items()},
        }
        result = {
            "benchmark": "export_latency",
            "meta": {
                "run": str(options.run) if options.run else None,
                "seed": options.seed,
                "quick": options.quick,
                "rounds": rounds,
                "threads": options.threads,
                "onnxruntime_intra_op_threads": options.threads,
                "tokens": options.tokens,
                "batch_sizes": list(BATCH_SIZES),
                "levers": options.levers,
                "teacher": shown_path(teacher_dir),
                "student": shown_path(student_dir),
            },
            "batches": tables,
            "size_bytes": sizes,
            "argmax_agreement_with_pytorch_student": agreement(student, onnx_models, vocab, options.tokens),
            "export_check_max_abs_difference": export.max_abs_difference,
            **notes,
            "machine": machine(),
        }
    print_table(result)
    name = "export_latency_quick.json" if options.quick else "export_latency.json"
    print(f"wrote {write_result(result, options.output or RESULTS / name)}")
    return result


def print_table(result: dict) -> None:
    meta = result["meta"]
    print(f"\nexport_latency ({meta['rounds']} rounds, {meta['threads']} threads, {meta['tokens']} tokens)")
    for batch, rows in result["batches"].items():
        print(f"{batch}:")
        for row in rows:
            print(
                f"  {row['variant']:<34} {row['median_ms_per_call']:>9.2f} ms  {row['speedup']:>5.2f}x  "
                f"quiet {row['quiet_runs']}/{len(row['runs'])}, others {max(row['other_cores']):.2f} cores max"
            )
    for name, size in result["size_bytes"].items():
        agreement_share = result["argmax_agreement_with_pytorch_student"].get(name)
        extra = (
            f", argmax kept on {agreement_share:.1%} of random rows" if agreement_share is not None else ""
        )
        print(f"  {name:<34} {size / 1e6:>7.1f} MB{extra}")


if __name__ == "__main__":
    main()
