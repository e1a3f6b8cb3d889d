"""(b) Causal-LM KD step at vocabulary 50257: plain vs chunked vs fused loss, against the lower bound.

    python benchmarks/bench_causal_lm.py [--rounds 7] [--quick]

Step = DistillationTrainer.compute_loss + backward + AdamW step. Lower bound = the teacher's forward pass
(no_grad) + the student's own step on the LM loss. The loss's peak memory (from both models' last hidden
states to the gradients) is measured for each variant in a fresh process.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import measure_in_fresh_process, peak_rss_delta, report, summarize, time_variants  # noqa: E402

from hf_distill import DistillationTrainer, DistillationTrainingArguments  # noqa: E402
from hf_distill.losses.divergences import distillation_loss, task_cross_entropy  # noqa: E402
from hf_distill.losses.fused.chunked import DEFAULT_CHUNK_SIZE, fused_linear_distillation_loss  # noqa: E402
from hf_distill.losses.fused.teacher_forms import TeacherHead  # noqa: E402

VOCAB = 50257


def gpt2(layers: int, hidden: int, seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=VOCAB, n_embd=hidden, n_layer=layers, n_head=max(hidden // 64, 1), n_positions=1024
    )
    return GPT2LMHeadModel(config)


def shapes(quick: bool) -> dict:
    if quick:
        return {"batch": 2, "tokens": 64, "student": (1, 128), "teacher": (2, 256)}
    return {"batch": 4, "tokens": 256, "student": (2, 256), "teacher": (4, 512)}


def make_batch(s: dict) -> dict:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (s["batch"], s["tokens"]), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def kd_step_fn(implementation: str, student, teacher, batch, out_dir: str):
    args = DistillationTrainingArguments(
        output_dir=out_dir, report_to="none", use_cpu=True, alpha=0.5, temperature=2.0,
        kd_loss_implementation=implementation,
    )  # fmt: skip
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-5)

    def step():
        loss = trainer.compute_loss(student, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def lower_bound_fn(student, teacher, batch):
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-5)

    def step():
        with torch.no_grad():
            teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        student(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def loss_from_hidden(variant: str, hidden, weight, t_hidden, t_weight, labels) -> torch.Tensor:
    """The benchmarked objective from both models' last hidden states: 0.5 * forward KL at T = 2 + 0.5 * task
    cross-entropy, with the plain loss on full logits or a chunked implementation (``fused`` / ``chunked``)."""
    if variant == "plain":
        with torch.no_grad():
            t_logits = t_hidden @ t_weight.T
        logits = hidden @ weight.T
        loss = 0.5 * distillation_loss(logits, t_logits, temperature=2.0, labels=labels)
        return loss + 0.5 * task_cross_entropy(logits, labels)
    return fused_linear_distillation_loss(
        hidden, weight, teacher=TeacherHead(t_hidden, t_weight), labels=labels, temperature=2.0,
        kd_weight=0.5, task_weight=0.5, implementation=variant, chunk_size=DEFAULT_CHUNK_SIZE,
    ).loss  # fmt: skip


def loss_memory(variant: str, quick: bool) -> int:
    """Peak memory of the loss alone, from last hidden states of both models to the gradients."""
    s = shapes(quick)
    n = s["batch"] * (s["tokens"] - 1)
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(n, s["student"][1], generator=g, requires_grad=True)
    weight = torch.randn(VOCAB, s["student"][1], generator=g, requires_grad=True)
    t_hidden, t_weight = torch.randn(n, s["teacher"][1], generator=g), torch.randn(VOCAB, s["teacher"][1])
    labels = torch.randint(0, VOCAB, (n,), generator=g)
    weight.grad = torch.zeros_like(weight)  # the gradient buffer exists in training anyway
    hidden.grad = torch.zeros_like(hidden)

    def run():
        loss_from_hidden(variant, hidden, weight, t_hidden, t_weight, labels).backward()

    return peak_rss_delta(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="small shapes, to check the script runs")
    parser.add_argument("--memory", help=argparse.SUPPRESS)  # internal: measure one variant and exit
    options = parser.parse_args()
    if options.memory:
        print(f'{{"peak_bytes": {loss_memory(options.memory, options.quick)}}}')
        return
    s = shapes(options.quick)
    batch = make_batch(s)
    teacher = gpt2(*s["teacher"], seed=1).eval()
    students = {v: gpt2(*s["student"], seed=2) for v in ("lower bound", "plain", "chunked", "fused")}
    with tempfile.TemporaryDirectory() as out:
        variants = {
            "lower bound (teacher fwd + student step)": lower_bound_fn(
                students["lower bound"], teacher, batch
            )
        }
        for v in ("plain", "chunked", "fused"):
            variants[f"KD step, {v} loss"] = kd_step_fn(v, students[v], teacher, batch, out)
        times = time_variants(variants, rounds=options.rounds)
    rows = summarize(times, baseline="lower bound (teacher fwd + student step)")
    memory = {}
    for v in ("plain", "chunked", "fused"):
        args = ["--memory", v] + (["--quick"] if options.quick else [])
        memory[v] = measure_in_fresh_process(__file__, args)["peak_bytes"]
    for row in rows:
        for v in memory:
            if row["variant"].endswith(f"{v} loss"):
                row["peak_mib"] = memory[v] / 2**20
    rows[0]["peak_mib"] = float("nan")
    extra = {
        f"loss peak memory {v} / plain": round(memory[v] / max(memory["plain"], 1), 3)
        for v in ("chunked", "fused")
    }
    meta = {"vocab": VOCAB, "batch": s["batch"], "tokens": s["tokens"], "student(layers,hidden)": s["student"],
            "teacher(layers,hidden)": s["teacher"], "rounds": options.rounds, "dtype": "float32"}  # fmt: skip
    report("causal_lm" + ("_quick" if options.quick else ""), rows, meta, extra)


if __name__ == "__main__":
    main()
