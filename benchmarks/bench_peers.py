"""(d) The same work run by TRL's GKDTrainer and TextBrewer's GeneralDistiller, beside DistillationTrainer.

    python -m venv /tmp/bench-venv && /tmp/bench-venv/bin/pip install torch==2.13.0 transformers datasets \
        accelerate trl textbrewer
    PYTHONPATH=. /tmp/bench-venv/bin/python benchmarks/bench_peers.py [--rounds 5] [--quick]

The peers live in a separate environment (benchmark-only extras), never in the project's own.
Causal LM (shapes of bench_causal_lm.py): GKDTrainer.compute_loss with beta=0 (forward KL), temperature 1,
no generation (lmbda=0), float32, against DistillationTrainer with alpha=1, forward_kl, temperature 1.
Classification (shapes of bench_classification.py): GeneralDistiller.train_on_batch with soft
cross-entropy (same gradients as forward KL) at T=2 plus half the hard-label loss, against
DistillationTrainer with alpha=0.5, T=2. Every step is compute_loss + backward + AdamW step.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_causal_lm as lm  # noqa: E402
import bench_classification as cls  # noqa: E402
from _common import report, summarize, time_variants  # noqa: E402

from hf_distill import DistillationTrainer, DistillationTrainingArguments  # noqa: E402


def stepper(model, loss_fn):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step():
        loss_fn().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def ours(student, teacher, batch, out: str, **kw):
    args = DistillationTrainingArguments(output_dir=out, report_to="none", use_cpu=True, **kw)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args)
    return stepper(student, lambda: trainer.compute_loss(student, batch))


def causal_lm(options, out: str) -> None:
    from trl.experimental.gkd import GKDTrainer

    s = lm.shapes(options.quick)
    batch = lm.make_batch(s)
    teacher = lm.gpt2(*s["teacher"], seed=1).eval()
    students = {name: lm.gpt2(*s["student"], seed=2) for name in ("trl", "plain", "fused")}
    # GKDTrainer.compute_loss only reads these attributes; building the whole trainer needs a chat dataset.
    gkd = SimpleNamespace(
        teacher_model=teacher, beta=0.0, generalized_jsd_loss=GKDTrainer.generalized_jsd_loss
    )
    common = {"alpha": 1.0, "temperature": 1.0, "distillation_loss": "forward_kl"}
    variants = {
        "TRL GKDTrainer (beta=0, no generation)": stepper(
            students["trl"], lambda: GKDTrainer.compute_loss(gkd, students["trl"], batch)
        ),
        "DistillationTrainer, plain loss": ours(
            students["plain"], teacher, batch, out, kd_loss_implementation="plain", **common
        ),
        "DistillationTrainer, fused loss": ours(
            students["fused"], teacher, batch, out, kd_loss_implementation="fused", **common
        ),
    }
    times = time_variants(variants, rounds=options.rounds)
    rows = summarize(times, baseline="TRL GKDTrainer (beta=0, no generation)")
    meta = {"vocab": lm.VOCAB, "batch": s["batch"], "tokens": s["tokens"], "rounds": options.rounds}
    report("peers_causal_lm" + ("_quick" if options.quick else ""), rows, meta)


def classification(options, out: str) -> None:
    from textbrewer import DistillationConfig, GeneralDistiller, TrainingConfig

    s = cls.shapes(options.quick)
    batch = cls.make_batch(s)
    teacher = cls.bert(*s["teacher"], seed=1).eval()
    students = {name: cls.bert(*s["student"], seed=2) for name in ("textbrewer", "ours")}

    def adaptor(_batch, outputs):
        return {"logits": outputs.logits, "losses": outputs.loss}

    distiller = GeneralDistiller(
        train_config=TrainingConfig(device="cpu", log_dir=out, output_dir=out),
        distill_config=DistillationConfig(
            temperature=2.0, kd_loss_type="ce", hard_label_weight=0.5, kd_loss_weight=0.5
        ),
        model_T=teacher,
        model_S=students["textbrewer"],
        adaptor_T=adaptor,
        adaptor_S=adaptor,
    )
    variants = {
        "TextBrewer GeneralDistiller": stepper(
            students["textbrewer"], lambda: distiller.train_on_batch(batch, {})[0]
        ),
        "DistillationTrainer": ours(students["ours"], teacher, batch, out, alpha=0.5, temperature=2.0),
    }
    times = time_variants(variants, rounds=options.rounds)
    rows = summarize(times, baseline="TextBrewer GeneralDistiller")
    meta = {"batch": s["batch"], "tokens": s["tokens"], "rounds": options.rounds}
    report("peers_classification" + ("_quick" if options.quick else ""), rows, meta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=("causal_lm", "classification"))
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        if options.only in (None, "causal_lm"):
            causal_lm(options, out)
        if options.only in (None, "classification"):
            classification(options, out)


if __name__ == "__main__":
    main()
