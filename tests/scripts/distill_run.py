"""A tiny, deterministic distillation run that tests start in a subprocess.

Used for what an in-process test cannot do: a run killed with SIGKILL and resumed
(``tests/training/test_checkpoints.py``) and a run under ``accelerate launch --num_processes 2 --cpu``
(``tests/test_trainer.py``)::

    accelerate launch --num_processes 2 --cpu tests/scripts/distill_run.py --output-dir OUT --per-device 4
    python tests/scripts/distill_run.py --output-dir OUT --per-device 8
    python tests/scripts/distill_run.py --output-dir OUT --save-steps 3 --max-steps 6 --kill-in-save after-model

``--kill-in-save POINT`` makes the process SIGKILL itself from inside the save of ``checkpoint-<--kill-step>``
(default: the last step), at one of ``KILL_POINTS`` (see :func:`kill_in_save`). ``--mode self`` trains with
``SelfDistillationTrainer`` (an EMA of the student as teacher) instead of a separate teacher.

Teacher: GPT-2, hidden 32, 4 layers. Student: GPT-2, hidden 16, 2 layers, so hidden-state matching learns
projections (16 -> 32). The data are random token sequences of uneven lengths, padded per batch with
labels -100 on the padding. On the main process the run writes ``OUT/result.json`` (log history, eval
metrics) and ``OUT/final/model.safetensors`` + ``OUT/final/distillation_modules.pt`` (with ``--mode self``:
``OUT/final/self_distillation_teacher.pt``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from functools import partial
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import TrainerState

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.modes.self_distillation import (
    SELF_TEACHER_NAME,
    SelfDistillationTrainer,
    SelfDistillationTrainingArguments,
)
from hf_distill.trainer import DISTILLATION_MODULES_NAME, DistillationTrainer

# The script runs as its own process (under accelerate launch too), where pytest has not put the repository root
# (which holds the `tests` package) on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.helpers.tiny_models import tiny_gpt2  # noqa: E402

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


KILL_POINTS = ("after-model", "mid-extra", "after-trainer-files", "before-marker", "rotation")
EXTRA_NAMES = (DISTILLATION_MODULES_NAME, SELF_TEACHER_NAME)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_in_save(trainer: DistillationTrainer, point: str, step: int) -> None:
    """Makes the process SIGKILL itself inside the save of ``checkpoint-<step>``, at ``point``:

    - ``after-model``: Trainer has written the student's weights, nothing after them (optimizer, RNG state,
      trainer_state.json, the extras);
    - ``mid-extra``: while an extra (projections, self-distillation teacher) is written: the file is left at half
      its size, as a kill during the write leaves it;
    - ``after-trainer-files``: Trainer's files are all written (trainer_state.json last), the extras are not;
    - ``before-marker``: everything is written but the completion marker;
    - ``rotation``: while ``save_total_limit`` deletes an older checkpoint (one file gone, the rest not).
    """
    folder = f"checkpoint-{step}"
    if point == "after-model":
        save = trainer._save

        def save_then_die(output_dir=None, state_dict=None):
            save(output_dir, state_dict)
            if os.path.basename(str(output_dir)) == folder:
                die()

        trainer._save = save_then_die
    elif point == "mid-extra":
        torch_save = torch.save

        def half_written(obj, path, *args, **kwargs):
            torch_save(obj, path, *args, **kwargs)
            path = str(path)
            if os.path.basename(os.path.dirname(path)) == folder and os.path.basename(path).startswith(
                EXTRA_NAMES
            ):
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 2)
                die()

        torch.save = half_written
    elif point == "after-trainer-files":
        save_to_json = TrainerState.save_to_json

        def state_then_die(state, json_path):
            save_to_json(state, json_path)
            if os.path.basename(os.path.dirname(json_path)) == folder:
                die()

        TrainerState.save_to_json = state_then_die
    elif point == "before-marker":
        import hf_distill.training.checkpoints

        write_marker = hf_distill.training.checkpoints.write_marker

        def die_instead(path, global_step):
            if os.path.basename(path) == folder:
                die()
            write_marker(path, global_step)

        hf_distill.training.checkpoints.write_marker = die_instead
    elif point == "rotation":
        rmtree = shutil.rmtree

        def delete_one_file_then_die(path, *args, **kwargs):
            if "checkpoint-" in os.path.basename(str(path)):
                os.remove(os.path.join(path, "model.safetensors"))
                die()
            rmtree(path, *args, **kwargs)

        shutil.rmtree = delete_one_file_then_die


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--mode", choices=("distill", "self"), default="distill")
    parser.add_argument("--per-device", type=int, default=8)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--train-rows", type=int, default=16)
    parser.add_argument("--max-steps", type=int, default=2)
    parser.add_argument("--save-steps", type=int, default=0, help="0: no checkpoints")
    parser.add_argument("--save-total-limit", type=int, default=None)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--optim", default="adamw_torch")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--hang-after-step", type=int, default=0)
    parser.add_argument("--kill-in-save", choices=KILL_POINTS, default=None)
    parser.add_argument(
        "--kill-step", type=int, default=0, help="the checkpoint whose save is killed (0: last)"
    )
    parser.add_argument("--attention-weight", type=float, default=0.0, help="> 0: attention-map matching too")
    return parser.parse_args(argv)


def build_trainer(cli: argparse.Namespace) -> DistillationTrainer:
    """The run's trainer: distillation from a separate GPT-2 teacher, or self-distillation (``--mode self``)."""
    teacher = gpt2(seed=1, hidden=32, layers=4)
    student = gpt2(seed=2, hidden=16, layers=2, dropout=cli.dropout)
    if cli.attention_weight > 0:
        for model in (teacher, student):
            model.set_attn_implementation("eager")  # the only implementation that returns attention maps
    common = dict(
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
        save_total_limit=cli.save_total_limit,
        report_to="none",
        use_cpu=True,
        seed=7,
        disable_tqdm=True,
        # Sequential order: the global batch of each step is then the same rows under 1 or 2 processes.
        train_sampling_strategy="sequential",
        temperature=2.0,
        alpha=0.5,
    )
    callbacks = []
    if cli.hang_after_step:
        callbacks.append(HangAfterStep(cli.hang_after_step, os.path.join(cli.output_dir, "hanging")))
    data = dict(
        train_dataset=token_rows(cli.train_rows, seed=3),
        eval_dataset=token_rows(8, seed=4),
        data_collator=pad_causal_lm,
        callbacks=callbacks,
    )
    if cli.mode == "self":
        # A fast-moving EMA (decay 0.5), so that the teacher's state after each step matters.
        args = SelfDistillationTrainingArguments(**common, self_teacher="ema", ema_decay=0.5)
        return SelfDistillationTrainer(model=student, args=args, **data)
    args = DistillationTrainingArguments(
        **common, hidden_state_weight=1.0, attention_weight=cli.attention_weight
    )
    return DistillationTrainer(model=student, teacher_model=teacher, args=args, **data)


def main() -> None:
    cli = parse()
    trainer = build_trainer(cli)
    if cli.kill_in_save:
        kill_in_save(trainer, cli.kill_in_save, cli.kill_step or cli.max_steps)
    trainer.train(resume_from_checkpoint=True if cli.resume else None)
    metrics = trainer.evaluate()

    final = os.path.join(cli.output_dir, "final")
    trainer.save_model(final)
    if trainer.args.should_save:
        if trainer.distillation_modules() is not None:
            torch.save(
                trainer.distillation_modules().state_dict(), os.path.join(final, DISTILLATION_MODULES_NAME)
            )
        if cli.mode == "self":
            torch.save(trainer.teacher.state_dict(), os.path.join(final, SELF_TEACHER_NAME))
        result = {
            "world_size": trainer.args.world_size,
            "resumed_from_step": trainer.loss_log.resumed_from_step,
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
