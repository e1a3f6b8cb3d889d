"""Which int8 graph keeps the PyTorch student's predictions: onnxruntime.quantization's levers, on validation rows.

    python benchmarks/int8_variants.py --run runs/demo --seed 1 [--rounds 5] [--threads 2]
    python benchmarks/int8_variants.py --quick      # tiny random BERT: checks the script only

The student (the first distilled student's ``--seed`` folder of a finished sentiment run, ``make demo``'s) is
exported once to fp32 ONNX (``hf_distill.export_student``); every variant quantizes that same graph. Each is
scored on the VALIDATION split (never the test split: the choice is made here) against the PyTorch student:
the share of rows with the same predicted label (agreement), the accuracy difference with its 95% paired
bootstrap interval (``hf_distill.reports.scorecard.paired_difference``), and the logits' largest change. Latency
at batch 1 and 32 (random 64-token rows) is timed side by side, rounds interleaved (``_common.time_variants``),
as a ratio to :data:`BASELINE` (``int8-dynamic`` as shipped before this benchmark: every MatMul and Gemm
per-tensor), over the quiet samples when there are any.

Static variants calibrate on ``--calibration_rows`` training rows (the same rows ``export_student`` takes).
Writes results/int8_variants.json (``--quick``: int8_variants_quick.json, or ``--output``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import RESULTS, machine, summarize, time_variants, write_result  # noqa: E402
from export_latency import quick_models, random_rows, run_models  # noqa: E402

BATCH_SIZES = (1, 32)
CALLS = {1: 20, 32: 2}
EVAL_BATCH = 64
# Every MatMul / Gemm, per-tensor: what int8-dynamic was before this benchmark; the latency ratios' reference.
BASELINE = "int8-dynamic before (every MatMul)"
HEAD_SCOPES = (
    "pooler",
    "classifier",
)  # the last layers' scopes of a BERT classifier: kept fp32 by some variants


def node_scopes(path: Path) -> dict[str, str]:
    """Each MatMul / Gemm node's innermost module (the dynamo exporter records the scopes per node)."""
    import onnx

    from hf_distill.export.quantize import module_of

    graph = onnx.load(str(path), load_external_data=False).graph
    return {node.name: module_of(node) for node in graph.node if node.op_type in ("MatMul", "Gemm")}


def variants(fp32: Path, num_layers: int) -> dict[str, Callable[[Path, list], None]]:
    """name -> builder(target, calibration feeds) of each int8 graph from ``fp32``."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from hf_distill.export.quantize import down_projections, quantize_graph

    scopes = node_scopes(fp32)
    head = [n for n, s in scopes.items() if any(h in s for h in HEAD_SCOPES)]
    ffn_out = down_projections(onnx.load(str(fp32), load_external_data=False))
    edges = [
        n
        for n, s in scopes.items()
        if any(f"layer.{i}." in s + "." for i in (0, num_layers - 1)) or n in head
    ]

    def dynamic(**kw: Any) -> Callable[[Path, list], None]:
        kw.setdefault("op_types_to_quantize", ["MatMul", "Gemm"])
        return lambda target, feeds: quantize_dynamic(
            str(fp32), str(target), weight_type=QuantType.QInt8, **kw
        )

    def preprocessed(**kw: Any) -> Callable[[Path, list], None]:
        def build(target: Path, feeds: list) -> None:
            pre = target.with_name(target.stem + "_pre.onnx")
            # symbolic shape inference stops on the dynamo graph ("Incomplete symbolic shape inference")
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
            quantize_dynamic(
                str(pre),
                str(target),
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul", "Gemm"],
                **kw,
            )

        return build

    def static(method: Any = None, fmt: Any = None, **kw: Any) -> Callable[[Path, list], None]:
        from onnxruntime.quantization.calibrate import CalibrationDataReader

        def build(target: Path, feeds: list) -> None:
            # The histogram calibrators stack every row's tensors: rows padded to one length for them.
            rows = feeds if method in (None, CalibrationMethod.MinMax) else padded(feeds)

            class Reader(CalibrationDataReader):
                def __init__(self) -> None:
                    self.rows = iter(rows)

                def get_next(self):
                    return next(self.rows, None)

            kw.setdefault("op_types_to_quantize", ["MatMul", "Gemm"])
            quantize_static(
                str(fp32),
                str(target),
                Reader(),
                quant_format=fmt or QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=method or CalibrationMethod.MinMax,
                **kw,
            )

        return build

    return {
        BASELINE: dynamic(),
        # The scheme as the package ships it (per-channel weights since benchmarks/int8_splits.py chose them).
        "int8-dynamic now (per-channel, down-projections fp32)": lambda target, feeds: quantize_graph(
            fp32, target, "int8-dynamic"
        ),
        "dynamic down-projections fp32, per-tensor": dynamic(nodes_to_exclude=ffn_out),
        "dynamic per-channel": dynamic(per_channel=True),
        "dynamic reduce_range": dynamic(reduce_range=True),
        "dynamic per-channel reduce_range": dynamic(per_channel=True, reduce_range=True),
        "dynamic MatMul only (head fp32)": dynamic(op_types_to_quantize=["MatMul"], nodes_to_exclude=head),
        "dynamic per-channel, head fp32": dynamic(per_channel=True, nodes_to_exclude=head),
        "dynamic first/last layer + head fp32": dynamic(nodes_to_exclude=edges),
        "dynamic per-channel, down-projections fp32": dynamic(per_channel=True, nodes_to_exclude=ffn_out),
        "dynamic after quant_pre_process": preprocessed(),
        "dynamic per-channel after pre_process": preprocessed(per_channel=True),
        "static QDQ MinMax": static(),
        "static QDQ MinMax per-channel": static(per_channel=True),
        "static QDQ Entropy": static(CalibrationMethod.Entropy),
        "static QDQ Percentile": static(CalibrationMethod.Percentile),
        "static QOperator MinMax": static(fmt=QuantFormat.QOperator),
        "static QDQ MinMax per-channel, head fp32": static(per_channel=True, nodes_to_exclude=head),
    }


def padded(feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Token feeds of one row each, right-padded with zeros (pad id, mask 0) to the longest row."""
    longest = max(f["input_ids"].shape[1] for f in feeds)
    return [{k: np.pad(v, ((0, 0), (0, longest - v.shape[1]))) for k, v in feed.items()} for feed in feeds]


def predict(model: Any, rows: Any, collator: Any) -> np.ndarray:
    """Logits of every row, batches of :data:`EVAL_BATCH` padded as the recipe's collator pads them."""
    out = []
    for start in range(0, len(rows), EVAL_BATCH):
        chunk = [
            {k: rows[i][k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in rows[i]}
            for i in range(start, min(start + EVAL_BATCH, len(rows)))
        ]
        batch = collator(chunk)
        with torch.inference_mode():
            out.append(model(**batch).logits.float().numpy())
    return np.concatenate(out)


def compare(logits: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Agreement with the PyTorch student and the accuracy difference (95% paired bootstrap interval)."""
    from hf_distill.reports.scorecard import paired_difference

    mine, theirs = logits.argmax(-1) == labels, reference.argmax(-1) == labels
    stacked = [np.asarray(x, float)[None, None] for x in (mine, theirs)]
    diff = paired_difference(stacked[0], stacked[1], "accuracy")
    return {
        "agreement": float((logits.argmax(-1) == reference.argmax(-1)).mean()),
        "accuracy": float(mine.mean()),
        "accuracy_difference_points": 100.0 * float(diff["difference"]),
        "interval_points": [100.0 * float(x) for x in diff["interval"]],
        "max_abs_logit_change": float(np.abs(logits - reference).max()),
    }


def sentiment_splits(tokenizer: Any, quick: bool) -> tuple[Any, Any]:
    """Validation rows (all) and the first training rows, tokenized as the sentiment recipe does."""
    from hf_distill.recipes.data_arguments import DataArguments
    from hf_distill.recipes.tasks import prepare_sentiment

    task = prepare_sentiment(
        DataArguments(max_train_samples=2000, max_eval_samples=64 if quick else None, max_length=64),
        tokenizer,
    )
    return task.validation, task.train


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run", type=Path, default=None, help="a finished sentiment run (report.json inside)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=2, help="ONNX Runtime intra-op threads = torch threads"
    )
    parser.add_argument("--calibration_rows", type=int, default=128)
    parser.add_argument("--only", default=None, help="variant names separated by ; (default: all)")
    parser.add_argument("--quick", action="store_true", help="tiny random BERT (its tokenizer: the demo's)")
    parser.add_argument("--output", type=Path, default=None)
    options = parser.parse_args(argv)
    if (options.run is None) == (not options.quick):
        parser.error("pass --run RUN_DIR (a finished sentiment run) or --quick, one of them")

    from transformers import AutoTokenizer, DataCollatorWithPadding

    from hf_distill.export import OnnxModel, export_student
    from hf_distill.export.student import calibration_feeds, load_model_folder
    from hf_distill.recipes.offline import resolve_model_path

    torch.set_num_threads(options.threads)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        _, student_dir = quick_models(work) if options.quick else run_models(options.run, options.seed)
        student, tokenizer = load_model_folder(student_dir)
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(resolve_model_path("minilm-l6"))
        student.eval()
        validation, train = sentiment_splits(tokenizer, options.quick)
        if options.quick:  # the tiny model's vocabulary is smaller than the tokenizer's
            validation = validation.map(lambda r: {"input_ids": [i % 500 for i in r["input_ids"]]})
            train = train.map(lambda r: {"input_ids": [i % 500 for i in r["input_ids"]]})
        collator = DataCollatorWithPadding(tokenizer)
        export = export_student(student, work / "export")
        feeds = calibration_feeds(train.select(range(options.calibration_rows)), export.spec)
        reference = predict(student, validation, collator)
        labels = np.asarray(validation["labels"])
        builders = variants(export.onnx_path, student.config.num_hidden_layers)
        if options.only:
            keep = options.only.split(";")
            builders = {k: v for k, v in builders.items() if k in keep or k == BASELINE}
        rows, models = {}, {}
        for i, (name, build) in enumerate(builders.items()):
            target = export.onnx_path.with_name(f"variant_{i}.onnx")
            start = time.perf_counter()
            build(target, feeds)
            seconds = time.perf_counter() - start
            models[name] = OnnxModel(target, threads=options.threads)
            rows[name] = {
                **compare(predict(models[name], validation, collator), reference, labels),
                "quantize_seconds": seconds,
                "size_bytes": target.stat().st_size,
            }
            print(
                f"{name:<44} agreement {rows[name]['agreement']:.3f}  "
                f"accuracy {rows[name]['accuracy_difference_points']:+.1f} points",
                flush=True,
            )
        latency = time_latency(models, student.config.vocab_size, options)
        for name, row in rows.items():
            row.update(latency[name])
        result = {
            "benchmark": "int8_variants",
            "meta": {
                "run": str(options.run) if options.run else None,
                "seed": options.seed,
                "quick": options.quick,
                "split": "validation",
                "validation_rows": len(validation),
                "pytorch_student_accuracy": float((reference.argmax(-1) == labels).mean()),
                "calibration_rows": options.calibration_rows,
                "rounds": options.rounds,
                "threads": options.threads,
                "latency_rows": "random tokens, 64 per row, no padding",
            },
            "variants": rows,
            "machine": machine(),
        }
    print_table(result)
    out = options.output or RESULTS / ("int8_variants_quick.json" if options.quick else "int8_variants.json")
    print(f"wrote {write_result(result, out)}")
    return result


def time_latency(models: dict[str, Any], vocab: int, options: Any) -> dict[str, dict[str, Any]]:
    """Each variant's median ms per forward at batch 1 and 32 and its ratio to :data:`BASELINE`."""
    out: dict[str, dict[str, Any]] = {name: {} for name in models}
    for size in BATCH_SIZES:
        batch, calls = random_rows(vocab, size, 64, size), CALLS[size]
        times = time_variants({n: forwards(m, batch, calls) for n, m in models.items()}, options.rounds)
        for row in summarize(times, BASELINE):
            out[row["variant"]][f"b{size}"] = {
                "median_ms": row["median_s"] / calls * 1000.0,
                "ratio_to_baseline": row["ratio"],
                "quiet_runs": row.get("quiet_runs"),
                "other_cores_max": max(row.get("other_cores", [0.0])),
            }
    return out


def forwards(model: Any, batch: dict[str, torch.Tensor], calls: int) -> Callable[[], None]:
    """One timed sample: ``calls`` forwards of ``batch``."""

    def call() -> None:
        with torch.inference_mode():
            for _ in range(calls):
                model(**batch)

    return call


def print_table(result: dict) -> None:
    meta = result["meta"]
    print(
        f"\nint8 variants on {meta['validation_rows']} validation rows "
        f"(PyTorch student {meta['pytorch_student_accuracy']:.3f}); latency ratio to {BASELINE}"
    )
    for name, row in result["variants"].items():
        low, high = row["interval_points"]
        print(
            f"  {name:<44} agree {row['agreement']:.3f}  {row['accuracy_difference_points']:+5.1f} "
            f"[{low:+.1f}, {high:+.1f}]  b1 {row['b1']['ratio_to_baseline']:.2f}x  "
            f"b32 {row['b32']['ratio_to_baseline']:.2f}x  quiet {row['b1']['quiet_runs']}/{row['b32']['quiet_runs']}"
        )


if __name__ == "__main__":
    main()
