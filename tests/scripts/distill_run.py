"""A tiny, deterministic distillation run that tests start in a subprocess.

Used for what an in-process test cannot do: a run killed with SIGKILL and resumed
(``tests/test_resume.py``) and a run under ``accelerate launch --num_processes 2 --cpu``
(``tests/test_invariants.py``)::

    accelerate launch --num_processes 2 --cpu tests/scripts/distill_run.py --output-dir OUT --per-device 4
    python tests/scripts/distill_run.py --output-dir OUT --per-device 8

Teacher: GPT-2, hidden 32, 4 layers. Student: GPT-2, hidden 16, 2 layers, so hidden-state matching learns
projections (16 -> 32). The data are random token sequences of uneven lengths, padded per batch with
labels -100 on the padding. On the main process the run writes ``OUT/result.json`` (log history, eval
metrics) and ``OUT/final/model.safetensors`` + ``OUT/final/distillation_modules.pt``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from functools import partial
from pathlib import Path

import torch
from transformers import TrainerCallback

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.trainer import DISTILLATION_MODULES_NAME, DistillationTrainer

# The script runs as its own process (under accelerate launch too), where pytest has not put tests/ on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import tiny_gpt2  # noqa: E402

VOCAB = 40
PAD_ID = 0


# This run's vocabulary, with token 1 as BOS and EOS and 0 as padding.
gpt2 = partial(tiny_gpt2, vocab_size=VOCAB, positions=32, bos_token_id=1, eos_token_id=1, pad_token_id=PAD_ID)


def token_rows(n: int, seed: int) -> list[dict[str, list[int]]]:
    """``n`` rows of 3..12 random tokens (ids 2..VOCAB-1), so batches need padding."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        length = int(torch.randint(3, 13, (1,), generator=generator))
        rows.append({"input_ids": torch.randint(2, VOCAB, (length,), generator=generator).tolist()})
    return rows


def pad_causal_lm(rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
    """Right-pads to the longest row; labels copy input_ids with -100 on the padding."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), PAD_ID)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row["input_ids"])] = torch.tensor(row["input_ids"])
        mask[i, : len(row["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


class HangAfterStep(TrainerCallback):
    """Marks that training went past ``step`` (a checkpoint lies behind it), then blocks until killed.

    Blocking makes the kill land between two checkpoints every time, with the steps after the checkpoint
    done and lost, whatever the speed of the machine.
    """

    def __init__(self, step: int, marker: str):
        self.step, self.marker = step, marker

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            with open(self.marker, "w") as f:
                f.write(str(state.global_step))
            time.sleep(600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--per-device", type=int, default=8)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--train-rows", type=int, default=16)
    parser.add_argument("--max-steps", type=int, default=2)
    parser.add_argument("--save-steps", type=int, default=0, help="0: no checkpoints")
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--optim", default="adamw_torch")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--hang-after-step", type=int, default=0)
    parser.add_argument("--attention-weight", type=float, default=0.0, help="> 0: attention-map matching too")
    cli = parser.parse_args()

    teacher = gpt2(seed=1, hidden=32, layers=4)
    student = gpt2(seed=2, hidden=16, layers=2, dropout=cli.dropout)
    if cli.attention_weight > 0:
        for model in (teacher, student):
            model.set_attn_implementation("eager")  # the only implementation that returns attention maps
    args = DistillationTrainingArguments(
        output_dir=cli.output_dir,
        per_device_train_batch_size=cli.per_device,
        per_device_eval_batch_size=cli.per_device,
        gradient_accumulation_steps=cli.grad_accum,
        max_steps=cli.max_steps,
        learning_rate=1e-2,
        lr_scheduler_type="linear",
        optim=cli.optim,
        logging_steps=1,
        save_strategy="steps" if cli.save_steps else "no",
        save_steps=cli.save_steps or 500,
        report_to="none",
        use_cpu=True,
        seed=7,
        disable_tqdm=True,
        # Sequential order: the global batch of each step is then the same rows under 1 or 2 processes.
        train_sampling_strategy="sequential",
        temperature=2.0,
        alpha=0.5,
        hidden_state_weight=1.0,
        attention_weight=cli.attention_weight,
    )
    callbacks = []
    if cli.hang_after_step:
        callbacks.append(HangAfterStep(cli.hang_after_step, os.path.join(cli.output_dir, "hanging")))
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=token_rows(cli.train_rows, seed=3),
        eval_dataset=token_rows(8, seed=4),
        data_collator=pad_causal_lm,
        callbacks=callbacks,
    )
    trainer.train(resume_from_checkpoint=True if cli.resume else None)
    metrics = trainer.evaluate()

    final = os.path.join(cli.output_dir, "final")
    trainer.save_model(final)
    if trainer.args.should_save:
        torch.save(
            trainer.distillation_modules().state_dict(), os.path.join(final, DISTILLATION_MODULES_NAME)
        )
        result = {
            "world_size": trainer.args.world_size,
            "log_history": trainer.state.log_history,
            "eval": metrics,
        }
        with open(os.path.join(cli.output_dir, "result.json"), "w") as f:
            json.dump(result, f, indent=1)
    if torch.distributed.is_initialized():
        # Tearing a gloo group down can hang or abort a rank: its destructor, run by the garbage collector with
        # the GIL held, joins gloo's worker thread, which may be freeing a finished barrier's tensors and waits
        # for the GIL (seen as a rank asleep forever in ~ProcessGroupGloo); at interpreter exit it sometimes
        # aborts instead ("terminate called without an active exception"). Everything is written once all
        # ranks are here, so leave without running destructors.
        trainer.accelerator.wait_for_everyone()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
