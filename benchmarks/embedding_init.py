"""Does a layer-cut student in a new vocabulary gain from embeddings built from the teacher's? Bits per byte.

    python benchmarks/embedding_init.py [--seeds 1 2 3] [--steps 100] [--layers 2] [--quick]

``student_from_teacher(teacher, num_layers=..., tokenizer=gpt2_tokenizer)`` keeps some of SmolLM2-135M's blocks
and gives each GPT-2 token the teacher's embedding of the same string, or the mean of its pieces' embeddings
(:func:`hf_distill.students.vocab_transfer.transfer_vocabulary`; the head is tied to them, as in SmolLM2). The control is
the same student with those rows drawn afresh from the model's own initialisation (normal, std
``initializer_range``): same blocks, same data, same order, same steps. Both are trained on the labels alone
(plain causal-LM loss, no teacher), so the difference is the initialisation only. Per seed: held-out bits per
byte on standard-library files no training block came from (:func:`hf_distill.recipes.cross_tokenizer.
bits_per_byte`), before and after training; the paired difference random - transferred gets a 95%
t-interval over the seeds (scipy.stats). Writes ``results/embedding_init.json``.
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
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_result  # noqa: E402
from cross_tokenizer_codegen import interval  # noqa: E402

from hf_distill import DistillationTrainingArguments, student_from_teacher  # noqa: E402
from hf_distill.recipes.cross_tokenizer import bits_per_byte, text_blocks, train_cross_tokenizer_student  # noqa: E402
from hf_distill.recipes.data_code import load_code_corpus  # noqa: E402
from hf_distill.recipes.offline import resolve_model_path  # noqa: E402


def sizes(quick: bool) -> dict:
    if quick:
        return dict(files=40, train_blocks=16, steps=4, block=32, test_files=2, test_chars=300, layers=1)
    # The 49M-parameter student's 50,257 x 576 tied head dominates a step on 2 CPU cores (~0.5 s at 8 x 32
    # tokens): the whole measurement takes about 6 minutes.
    return dict(files=300, train_blocks=800, steps=100, block=32, test_files=12, test_chars=2000, layers=2)


def random_embeddings(student: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A copy of ``student`` whose input embeddings (and the head tied to them) are drawn afresh."""
    control = copy.deepcopy(student)
    torch.manual_seed(seed)
    weight = control.get_input_embeddings().weight
    with torch.no_grad():
        weight.normal_(0.0, control.config.initializer_range)
    if control.get_output_embeddings().weight is not weight:
        raise ValueError("this benchmark expects a teacher with tied embeddings (SmolLM2 ties them)")
    return control


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int)
    parser.add_argument("--layers", type=int)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    options = parser.parse_args()
    s = sizes(options.quick)
    s.update({k: v for k, v in (("steps", options.steps), ("layers", options.layers)) if v})
    started = time.perf_counter()
    teacher = AutoModelForCausalLM.from_pretrained(resolve_model_path("smollm2-135m"), dtype=torch.float32)
    teacher_tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("smollm2-135m"))
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("gpt2-tokenizer"))
    corpus = load_code_corpus(seed=42, max_files=s["files"])
    blocks = text_blocks(corpus["train"]["text"], tokenizer, s["block"])
    blocks = blocks.shuffle(seed=0).select(range(min(s["train_blocks"], len(blocks))))
    test_texts = [t[: s["test_chars"]] for t in corpus["test"]["text"][: s["test_files"]]]
    transferred = student_from_teacher(teacher, num_layers=s["layers"], tokenizer=tokenizer)
    runs: dict[str, list[dict]] = {"transferred": [], "random": []}
    with tempfile.TemporaryDirectory() as out:
        for seed in options.seeds:
            starts = {
                "transferred": copy.deepcopy(transferred),
                "random": random_embeddings(transferred, seed),
            }
            for name, student in starts.items():
                before = bits_per_byte(student, tokenizer, test_texts, s["block"], batch_size=8)
                args = DistillationTrainingArguments(
                    output_dir=out, report_to="none", use_cpu=True, seed=seed, max_steps=s["steps"],
                    per_device_train_batch_size=8, learning_rate=5e-4, warmup_steps=10,
                    lr_scheduler_type="cosine", logging_steps=20, save_strategy="no", disable_tqdm=True,
                )  # fmt: skip
                set_seed(seed)
                t0 = time.perf_counter()
                train_cross_tokenizer_student(
                    student, blocks, tokenizer, teacher_tokenizer, args, Path(out) / name, loss=None
                )
                seconds = time.perf_counter() - t0
                after = bits_per_byte(student, tokenizer, test_texts, s["block"], batch_size=8)
                runs[name].append(
                    {
                        "seed": seed,
                        "bits_per_byte_before": before["bits_per_byte"],
                        "bits_per_byte": after["bits_per_byte"],
                        "train_seconds": seconds,
                    }
                )
                print(
                    f"seed {seed} {name}: {before['bits_per_byte']:.3f} -> {after['bits_per_byte']:.3f} bits/byte "
                    f"({seconds:.0f} s)",
                    flush=True,
                )
    bpb = {name: [r["bits_per_byte"] for r in rows] for name, rows in runs.items()}
    summary = {
        "bits_per_byte_mean": {name: statistics.fmean(values) for name, values in bpb.items()},
        "random_minus_transferred": interval([r - t for r, t in zip(bpb["random"], bpb["transferred"])]),
    }
    result = {
        "benchmark": "embedding_init" + ("_quick" if options.quick else ""),
        "sizes": {**s, "seeds": options.seeds, "batch": 8, "teacher": "SmolLM2-135M-Instruct"},
        "runs": runs,
        "summary": summary,
        "total_seconds": time.perf_counter() - started,
        "machine": machine(),
    }
    print(json.dumps(summary, indent=2))
    write_result(result)


if __name__ == "__main__":
    main()
