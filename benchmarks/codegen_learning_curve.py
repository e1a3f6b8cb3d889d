"""How a layer-cut code student recovers with training: parse rate and bits per byte against steps, with and
without the teacher, scored on VALIDATION (documented functions of the validation files, never the test files).

    hf-distill train codegen --config recipes/configs/codegen.yaml --output_dir runs/curve --seeds 1 \
        --max_train_samples 480 --save_strategy steps --save_steps 30 --save_only_model true \
        --generation_prompts 0
    python benchmarks/codegen_learning_curve.py --config recipes/configs/codegen.yaml --run runs/curve

The run saves each student's weights every ``--save_steps`` (``checkpoint-<step>/``) and at its end; this script
scores every saved point of the seed's distilled student and of its no-KD twin (of a run saved without
checkpoints: its final students), the untrained cut (step 0, built from the teacher as the recipe builds it)
and the teacher:

* ``bits_per_byte`` on the validation split's files (the recipe's own function, as its test report measures);
* ``parse_rate`` / ``degenerate_rate`` of greedy raw completions of ``--prompts`` documented functions of the
  validation files (the recipe's prompts, style and metrics; the teacher also through its chat template).

A checkpoint in the middle of a cosine schedule is not a run trained for that many steps (its learning rate has
not decayed): the curve shows where the run is heading, not what a shorter run would reach.
Writes results/codegen_learning_curve.json (or ``--output``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from _common import RESULTS, completion_counts, machine, run_folder, shown_path, write_result  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from hf_distill import student_from_teacher  # noqa: E402
from hf_distill.recipes.arguments import parse_recipe_config  # noqa: E402
from hf_distill.recipes.code_prompts import held_out_prompts  # noqa: E402
from hf_distill.recipes.cross_tokenizer import EVAL_CHARS_PER_FILE, bits_per_byte  # noqa: E402
from hf_distill.recipes.data_code import load_code_corpus  # noqa: E402
from hf_distill.recipes.offline import resolve_model_path  # noqa: E402


def saved_points(folder: Path) -> list[tuple[int | str, Path]]:
    """``(step, folder)`` of every checkpoint under ``folder`` (the Trainer saves one at the last step too); a
    student saved without checkpoints is its one point, ``("end", folder)``."""
    points: list[tuple[int | str, Path]] = sorted(
        (int(m.group(1)), c)
        for c in folder.glob("checkpoint-*")
        if (m := re.fullmatch(r"checkpoint-(\d+)", c.name)) and (c / "config.json").is_file()
    )
    if not points and (folder / "config.json").is_file():
        return [("end", folder)]
    if not points:
        raise SystemExit(
            f"{folder} holds neither a saved model nor checkpoint-<step>/ folders: point --run at a finished "
            "codegen run (with --save_strategy steps --save_steps N for a curve)."
        )
    return points


def score(model: Any, tokenizer: Any, prompts: list, texts: list[str], config: Any, style: str) -> dict:
    """Validation bits per byte and the parse / degenerate shares of greedy ``style`` completions."""
    start = time.perf_counter()
    bpb = bits_per_byte(
        model, tokenizer, texts, config.data.max_length, config.training.per_device_eval_batch_size
    )
    counts = completion_counts(model, tokenizer, prompts, config, style)
    return {
        "style": style,
        "bits_per_byte": bpb["bits_per_byte"],
        **{k: counts[k] for k in ("parse_rate", "parsed", "degenerate_rate")},
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="the run's recipe config (its data and student)")
    parser.add_argument("--run", required=True, type=Path, help="a finished codegen run with checkpoints")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--prompts", type=int, default=24, help="documented validation functions to complete")
    parser.add_argument(
        "--skip_reference",
        action="store_true",
        help="score the run's students only (not teacher nor the cut)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "codegen_learning_curve.json")
    args, recipe_flags = parser.parse_known_args()
    config = parse_recipe_config(
        ["--config", args.config, *recipe_flags, "--output_dir", str(args.run), "--report_to", "none"],
        task="codegen",
        prog="codegen_learning_curve",
        description="",
    )
    data = config.data
    corpus = load_code_corpus(seed=data.split_seed, max_files=data.max_files)
    validation = corpus["validation"]
    prompts = held_out_prompts(zip(validation["path"], validation["text"]), args.prompts)
    texts = [t[:EVAL_CHARS_PER_FILE] for t in list(validation["text"])[: data.max_eval_samples or None]]
    if len(prompts) < args.prompts:
        print(f"the validation files give {len(prompts)} documented functions (asked {args.prompts})")

    teacher_path = resolve_model_path(config.teacher.teacher_model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(teacher_path)
    rows: list[dict[str, Any]] = []
    if not args.skip_reference:  # the teacher's weights are loaded only to score it and its untrained cut
        teacher = AutoModelForCausalLM.from_pretrained(teacher_path, dtype=torch.float32).eval()
        for style in ("raw", "chat"):
            rows.append(
                {"model": "teacher", "step": None, **score(teacher, tokenizer, prompts, texts, config, style)}
            )
            print(rows[-1], flush=True)
        cut = student_from_teacher(teacher, layers=list(config.student.student_layers)).eval()
        rows.append(
            {"model": "untrained cut", "step": 0, **score(cut, tokenizer, prompts, texts, config, "raw")}
        )
        print(rows[-1], flush=True)
        del cut, teacher

    report = json.loads((args.run / "report.json").read_text())
    for entry in report["students"]:
        seeds = {s["seed"]: s for s in entry.get("seeds", [])}
        if args.seed not in seeds:
            continue
        folder = run_folder(args.run, seeds[args.seed]["output_dir"])
        for step, where in saved_points(folder):
            model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32).eval()
            row = {
                "model": entry["kind"],
                "step": step,
                **score(model, tokenizer, prompts, texts, config, "raw"),
            }
            rows.append(row)
            print(row, flush=True)
    result = {
        "benchmark": "codegen_learning_curve",
        "command": f"python benchmarks/codegen_learning_curve.py --config {args.config} --run {shown_path(args.run)} "
        f"--seed {args.seed} --prompts {args.prompts}" + (" --skip_reference" if args.skip_reference else ""),
        "machine": machine(),
        "seed": args.seed,
        "student_layers": list(config.student.student_layers),
        "distillation": report.get("distillation"),
        "train_blocks": report.get("data", {}).get("train_size"),
        "validation_prompts": len(prompts),
        "validation_files": len(validation),
        "max_new_tokens": config.report.generation_max_new_tokens,
        "rows": rows,
    }
    print(f"wrote {write_result(result, args.output)}")


if __name__ == "__main__":
    main()
