"""Where the fused causal-LM KD step's time goes, in CPU seconds of one thread (load-independent-ish).

    python benchmarks/profile_fused.py [--rounds 5] [--quick] [--threads 1]

On a shared machine wall-clock is noise, so this pins torch to ``--threads`` threads and reads the process's
own CPU time (``time.process_time``) for each call, interleaving the variants in rounds (order rotated) and
reporting medians. Cache and memory-bandwidth contention from other processes still inflate CPU time, so
compare ratios taken in the same run, never seconds across runs. Shapes and steps are those of
``bench_causal_lm.py`` (b): the bound is the teacher's forward + the student's own CE step; the fused step is
``DistillationTrainer.compute_loss`` + backward + AdamW. The components split the fused step:

- teacher body: the teacher's forward with ``logits_to_keep=1`` (what the fused path runs; the bound's
  teacher forward also projects every position onto the vocabulary);
- loss: the fused loss's forward + backward from both models' last hidden states (head matmuls included);
- loss matmuls: the four matmuls of the loss alone per chunk (teacher head, student head, dL/dh, dL/dW),
  i.e. what the bound also pays for; the rest of the loss is its element-wise work over the logits;
- AdamW: the optimizer step alone.

Writes ``results/profile_fused.json`` with every call's CPU seconds and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine  # noqa: E402
from bench_causal_lm import VOCAB, gpt2, kd_step_fn, lower_bound_fn, make_batch, shapes  # noqa: E402

from hf_distill.losses.fused.chunked import DEFAULT_CHUNK_SIZE, fused_linear_distillation_loss  # noqa: E402
from hf_distill.losses.fused.teacher_forms import TeacherHead  # noqa: E402


def loss_fns(s: dict, chunk_size: int) -> dict:
    """The fused loss from random last hidden states, and its matmuls alone, on the shapes of ``s``."""
    n = s["batch"] * (s["tokens"] - 1)
    g = torch.Generator().manual_seed(0)
    # GPT-2's scales (layer-normed hidden states, head weights of std 0.02): logits of std ~0.3. Unit-normal
    # weights would give logits of std ~16 whose exponentials underflow to subnormals, which a CPU computes
    # many times slower, so the loss would not cost what it costs in training.
    hidden = torch.randn(n, s["student"][1], generator=g).requires_grad_()
    weight = (0.02 * torch.randn(VOCAB, s["student"][1], generator=g)).requires_grad_()
    t_hidden = torch.randn(n, s["teacher"][1], generator=g)
    t_weight = 0.02 * torch.randn(VOCAB, s["teacher"][1], generator=g)
    labels = torch.randint(0, VOCAB, (n,), generator=g)

    def loss():
        fused_linear_distillation_loss(
            hidden, weight, teacher=TeacherHead(t_hidden, t_weight, check_finite=True), labels=labels,
            temperature=2.0, kd_weight=0.5, task_weight=0.5, chunk_size=chunk_size,
        ).loss.backward()  # fmt: skip
        hidden.grad = weight.grad = None

    def matmuls():
        with torch.no_grad():
            grad_w = torch.zeros_like(weight)
            for start in range(0, n, chunk_size):
                h = hidden[start : start + chunk_size]
                t = t_hidden[start : start + chunk_size] @ t_weight.T
                z = h @ weight.T
                z @ weight
                grad_w.addmm_(z.T, h)
                del t

    return {"loss (fwd+bwd from hidden states)": loss, "loss matmuls only": matmuls}


def cpu_times(variants: dict, rounds: int) -> dict[str, list[float]]:
    names = list(variants)
    for name in names:  # warm-up
        variants[name]()
    times = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.process_time()
            variants[name]()
            times[name].append(time.process_time() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    parser.add_argument("--tag", default="", help="a name for this run in the JSON file")
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    s = shapes(options.quick)
    batch = make_batch(s)
    teacher = gpt2(*s["teacher"], seed=1).eval()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with tempfile.TemporaryDirectory() as out:
        fused_student = gpt2(*s["student"], seed=2)
        bound_student = gpt2(*s["student"], seed=2)
        adam_student = gpt2(*s["student"], seed=2)
        optimizer = torch.optim.AdamW(adam_student.parameters(), lr=1e-5)
        adam_student(**batch).loss.backward()  # gradients that stay: every AdamW call below does the work

        def teacher_body():
            with torch.no_grad():
                teacher(input_ids=ids, attention_mask=mask, logits_to_keep=1)

        variants = {
            "bound (teacher fwd + student step)": lower_bound_fn(bound_student, teacher, batch),
            "fused KD step": kd_step_fn("fused", fused_student, teacher, batch, out),
            "teacher body": teacher_body,
            **loss_fns(s, options.chunk_size),
            "AdamW step": optimizer.step,
        }
        times = cpu_times(variants, options.rounds)
    medians = {name: statistics.median(t) for name, t in times.items()}
    bound = medians["bound (teacher fwd + student step)"]
    print(f"threads={options.threads} rounds={options.rounds} loadavg={os.getloadavg()}")
    for name, median in medians.items():
        print(f"{name:<40} {median:8.3f} s CPU  {median / bound:6.3f} x bound")
    record = {"tag": options.tag, "threads": options.threads, "chunk_size": options.chunk_size,
              "loadavg_end": os.getloadavg(), "cpu_seconds": times, "medians": medians,
              "fused / bound": medians["fused KD step"] / bound, "machine": machine()}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "profile_fused.json"
    runs = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps([*runs, record], indent=1))


if __name__ == "__main__":
    main()
