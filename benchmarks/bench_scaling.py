"""Cost curves of the KD loss: time and peak memory of plain vs fused as the vocabulary and tokens grow.

    python benchmarks/bench_scaling.py [--rounds 3] [--quick]

The loss alone, from both models' last hidden states to the gradients (student hidden 256, teacher hidden
512, forward KL at T = 2 mixed with the task cross-entropy at alpha = 0.5), at vocabularies 32k, 64k, 128k,
256k and 512, 1024, 2048 tokens per batch. Time: medians of interleaved rounds in this process (quiet calls
only, see _common.py); peak memory: each point in a fresh process. Writes results/scaling.json and
results/scaling.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, measure_in_fresh_process, peak_rss_delta, report, summarize, time_variants  # noqa: E402
from bench_causal_lm import loss_from_hidden  # noqa: E402

VOCABS = (32_000, 64_000, 128_000, 256_000)
TOKENS = (512, 1024, 2048)
STUDENT_HIDDEN, TEACHER_HIDDEN = 256, 512


def problem(vocab: int, tokens: int):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(tokens, STUDENT_HIDDEN, generator=g, requires_grad=True)
    weight = (torch.randn(vocab, STUDENT_HIDDEN, generator=g) * 0.02).requires_grad_()
    t_hidden = torch.randn(tokens, TEACHER_HIDDEN, generator=g)
    t_weight = torch.randn(vocab, TEACHER_HIDDEN, generator=g) * 0.02
    labels = torch.randint(0, vocab, (tokens,), generator=g)
    return hidden, weight, t_hidden, t_weight, labels


def loss_step(variant: str, vocab: int, tokens: int):
    hidden, weight, t_hidden, t_weight, labels = problem(vocab, tokens)

    def step():
        loss_from_hidden(variant, hidden, weight, t_hidden, t_weight, labels).backward()
        hidden.grad = weight.grad = None

    return step


def grid(quick: bool) -> list[tuple[int, int]]:
    if quick:
        return [(4096, 64), (8192, 64), (4096, 128)]
    return [(v, TOKENS[0]) for v in VOCABS] + [(VOCABS[1], t) for t in TOKENS[1:]]


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for key, axis, label in (("time_s", axes[0], "seconds per loss step"), ("peak_mib", axes[1], "peak MiB")):
        for variant, style in (("plain", "o-"), ("fused", "s-")):
            rows = [p for p in points if p["variant"] == variant]
            x = [p["vocab"] * p["tokens"] / 1e6 for p in rows]
            axis.plot(x, [p[key] for p in rows], style, label=variant)
        axis.set_xlabel("vocabulary x tokens (millions of logits)")
        axis.set_ylabel(label)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--memory", nargs=3, help=argparse.SUPPRESS)  # internal: variant vocab tokens
    options = parser.parse_args()
    if options.memory:
        variant, vocab, tokens = options.memory[0], int(options.memory[1]), int(options.memory[2])
        print(f'{{"peak_bytes": {peak_rss_delta(loss_step(variant, vocab, tokens))}}}')
        return
    points, rows = [], []
    for vocab, tokens in grid(options.quick):
        variants = {v: loss_step(v, vocab, tokens) for v in ("plain", "fused")}
        times = time_variants(variants, rounds=options.rounds)
        for row in summarize(times, baseline="plain"):
            peak = measure_in_fresh_process(__file__, ["--memory", row["variant"], str(vocab), str(tokens)])
            point = {"vocab": vocab, "tokens": tokens, "variant": row["variant"], "time_s": row["median_s"],
                     "peak_mib": peak["peak_bytes"] / 2**20, "quiet_runs": row.get("quiet_runs")}  # fmt: skip
            points.append(point)
            rows.append(
                {**row, "variant": f"{row['variant']} V={vocab} N={tokens}", "peak_mib": point["peak_mib"]}
            )
    name = "scaling" + ("_quick" if options.quick else "")
    meta = {"student_hidden": STUDENT_HIDDEN, "teacher_hidden": TEACHER_HIDDEN, "rounds": options.rounds}
    report(name, rows, meta, {"points": points})
    plot(points, RESULTS / f"{name}.png")


if __name__ == "__main__":
    main()
