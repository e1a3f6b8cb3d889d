"""Invariants users rely on: how a global batch is split must not change what is learned.

- Gradient accumulation: per-device batch 8 x accumulation 1, 2 x 4 and 1 x 8 give the same logged losses
  (total and each part), the same gradients and the same weights after one optimizer step, for sequence
  classification, token classification (uneven -100 counts per micro-batch) and causal LM (padding), with
  hidden-state matching through learned projections switched on. Dropout is off, so the only differences
  are float32 summation order: tolerance rtol 1e-4, atol 1e-6.
- Processes: 2 processes x per-device batch 4 give the same losses, weights and projections as 1 process x
  batch 8 (``tests/scripts/distill_run.py``), within the same tolerance.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    GPT2Config,
    GPT2LMHeadModel,
    TrainerCallback,
)

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.trainer import DistillationTrainer

RTOL, ATOL = 1e-4, 1e-6
# Logged loss parts near 0 (loss_kd of a student close to its teacher) are float32 differences of nearly equal
# sums: another summation order moves them by ~1e-8 absolute, beyond RTOL of their size.
ATOL_LOSS = 1e-7
VOCAB = 40
SPLITS = [(8, 1), (2, 4), (1, 8)]  # (per-device batch, accumulation steps): global batch 8 each
SCRIPT = Path(__file__).parent / "scripts" / "distill_run.py"


def bert(kind, hidden: int, layers: int, seed: int):
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=32,
        num_labels=3,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return kind(config)


def gpt2(hidden: int, layers: int, seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=VOCAB, n_embd=hidden, n_layer=layers, n_head=2, n_positions=32, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    return GPT2LMHeadModel(config)


def rows(task: str, n: int = 8, seed: int = 0) -> list[dict]:
    """Random rows of 3..12 tokens; token labels are -100 on about a third of the tokens (sub-words)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(3, 13, (1,), generator=g))
        ids = torch.randint(1, VOCAB, (length,), generator=g)
        row = {"input_ids": ids.tolist()}
        if task == "sequence":
            row["labels"] = int(torch.randint(0, 3, (1,), generator=g))
        elif task == "token":
            labels = torch.randint(0, 3, (length,), generator=g)
            row["labels"] = labels.masked_fill(torch.rand(length, generator=g) < 0.35, -100).tolist()
        out.append(row)
    return out


def collate(batch: list[dict]) -> dict[str, torch.Tensor]:
    """Right-pads each micro-batch to its own longest row (so micro-batches differ in width)."""
    width = max(len(r["input_ids"]) for r in batch)
    ids = torch.zeros((len(batch), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    token_labels = torch.full_like(ids, -100)
    for i, r in enumerate(batch):
        n = len(r["input_ids"])
        ids[i, :n], mask[i, :n] = torch.tensor(r["input_ids"]), 1
        if isinstance(r.get("labels"), list):
            token_labels[i, :n] = torch.tensor(r["labels"])
    out = {"input_ids": ids, "attention_mask": mask}
    if "labels" not in batch[0]:
        out["labels"] = ids.masked_fill(mask == 0, -100)  # causal LM: predict the real tokens only
    elif isinstance(batch[0]["labels"], list):
        out["labels"] = token_labels
    else:
        out["labels"] = torch.tensor([r["labels"] for r in batch])
    return out


def models(task: str):
    if task == "causal":
        return gpt2(16, 2, seed=2), gpt2(32, 4, seed=1)
    kind = BertForSequenceClassification if task == "sequence" else BertForTokenClassification
    return bert(kind, 16, 2, seed=2), bert(kind, 32, 4, seed=1)


class GradientGrab(TrainerCallback):
    """Copies every gradient the optimizer is about to apply (student and projections)."""

    def __init__(self):
        self.grads: list[torch.Tensor] = []

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.grads = [p.grad.detach().clone() for g in optimizer.param_groups for p in g["params"]]


def one_step(task: str, per_device: int, accumulation: int, tmp_path) -> dict:
    student, teacher = models(task)
    args = DistillationTrainingArguments(
        output_dir=str(tmp_path / f"{task}-{per_device}x{accumulation}"),
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        optim="sgd",
        learning_rate=0.5,
        max_grad_norm=1e9,  # computes and logs the norm without clipping
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        train_sampling_strategy="sequential",
        temperature=2.0,
        alpha=0.5,
        hidden_state_weight=1.0,
    )
    grab = GradientGrab()
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=rows(task),
        data_collator=collate,
        callbacks=[grab],
    )
    trainer.train()
    logged = next(entry for entry in trainer.state.log_history if "loss" in entry)
    weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    weights.update(
        {f"matcher.{k}": v.clone() for k, v in trainer.distillation_modules().state_dict().items()}
    )
    return {"logged": logged, "grads": grab.grads, "weights": weights}


@pytest.mark.parametrize("task", ["sequence", "token", "causal"])
def test_gradient_accumulation_gives_the_same_step(task, tmp_path):
    runs = [one_step(task, per_device, accumulation, tmp_path) for per_device, accumulation in SPLITS]
    reference = runs[0]
    names = ["loss", "loss_kd", "loss_task", "loss_hidden", "grad_norm"]
    assert all(reference["logged"][name] > 0 for name in names)
    # The projections (16 -> 32) are trained: they must be among the gradients that agree.
    assert any(k.startswith("matcher.projections") for k in reference["weights"])
    for (per_device, accumulation), run in zip(SPLITS[1:], runs[1:]):
        for name in names:
            assert run["logged"][name] == pytest.approx(reference["logged"][name], rel=RTOL, abs=ATOL_LOSS), (
                f"{name} differs for {per_device} x {accumulation}"
            )
        assert len(run["grads"]) == len(reference["grads"])
        for got, want in zip(run["grads"], reference["grads"]):
            torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)
        for key, want in reference["weights"].items():
            torch.testing.assert_close(run["weights"][key], want, rtol=RTOL, atol=ATOL, msg=key)


def test_token_classification_micro_batches_have_uneven_label_counts():
    # Guards the previous test's premise: with equal counts, a mean of micro-batch means would also pass.
    batches = [collate(rows("token")[i : i + 2])["labels"] for i in range(0, 8, 2)]
    counts = {int((b != -100).sum()) for b in batches}
    assert len(counts) > 1


def _launch(command: list[str], out: Path) -> dict:
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((out / "result.json").read_text())


def test_two_processes_match_one_process(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    accelerate = [sys.executable, "-m", "accelerate.commands.launch"]
    # `accelerate launch --num_processes 2 --cpu` alone starts a single process (the simple launcher);
    # --multi_gpu selects the torch.distributed launcher, and the script's use_cpu=True puts it on CPU + gloo.
    # SGD: Adam divides by the gradient's own size, which blows float noise on zero-gradient weights (GPT-2's
    # key biases) up to full-size updates and hides what is compared here.
    # Attention matching on: its evaluation value must be gathered over processes like the hidden-state term's.
    common = ["--optim", "sgd", "--attention-weight", "0.5"]
    single = _launch(
        [sys.executable, str(SCRIPT), "--output-dir", str(one), "--per-device", "8", *common], one
    )
    double = _launch(
        [*accelerate, "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", str(SCRIPT), "--output-dir", str(two), "--per-device", "4", *common],
        two,
    )  # fmt: skip
    assert (single["world_size"], double["world_size"]) == (1, 2)

    steps = [[e for e in r["log_history"] if "loss" in e] for r in (single, double)]
    assert len(steps[0]) == len(steps[1]) == 2
    for want, got in zip(*steps):
        for name in ("loss", "loss_kd", "loss_task", "loss_hidden", "loss_attention", "grad_norm"):
            assert got[name] == pytest.approx(want[name], rel=RTOL, abs=ATOL_LOSS), (
                f"step {want['step']}: {name}"
            )
    assert single["eval"]["eval_loss_attention"] > 0
    for name in ("eval_loss", "eval_loss_kd", "eval_loss_task", "eval_loss_hidden", "eval_loss_attention"):
        assert double["eval"][name] == pytest.approx(single["eval"][name], rel=RTOL, abs=ATOL_LOSS), name

    for file in ("model.safetensors",):
        want, got = load_file(one / "final" / file), load_file(two / "final" / file)
        assert want.keys() == got.keys()
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=RTOL, atol=ATOL, msg=key)
    want = torch.load(one / "final" / "distillation_modules.pt", weights_only=True)
    got = torch.load(two / "final" / "distillation_modules.pt", weights_only=True)
    assert want and want.keys() == got.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=RTOL, atol=ATOL, msg=key)
