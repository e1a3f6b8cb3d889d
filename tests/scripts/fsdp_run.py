"""A tiny distillation run with the student and the teacher sharded by FSDP2, on two CPU processes (gloo).

``tests/test_distributed.py`` starts it twice and compares::

    accelerate launch --config_file recipes/accelerate_configs/fsdp.yaml --num_processes 2 \\
        --mixed_precision no tests/scripts/fsdp_run.py --output-dir OUT --per-device 4
    python tests/scripts/fsdp_run.py --output-dir OUT --per-device 8      # the single-process reference

The launch goes through the shipped FSDP2 config, so the environment it sets (``ACCELERATE_USE_FSDP``,
``FSDP_VERSION=2``, the transformer-based wrap policy, full state dicts, ...) is the one GPU runs get. One
thing differs, and it is the only one: accelerate turns FSDP on only for GPU-like distributed types
(``AcceleratorState`` leaves a CPU run ``MULTI_CPU`` and drops the plugin), so on a machine without GPUs
:func:`allow_fsdp_on_cpu` promotes the two-process CPU state to FSDP with the plugin built from that
environment. Everything after it is unchanged library code: Trainer's FSDP integration shards the student
(``fsdp2_prepare_model`` through ``accelerator.prepare``), ``hf_distill.distributed.prepare_teacher`` shards the
teacher with the same plugin in eval mode, with no optimizer, and ``fully_shard`` runs on the default CPU mesh.

Every rank writes ``OUT/rank<r>.json``: the teacher's parameters held locally (the numel of its DTensor shards)
and in all, a hash of its full state dict before and after training, its mode, whether any of its parameters
reached the optimizer. The main process also writes ``OUT/result.json`` (log history) and ``OUT/final/``
(the student as ``save_model`` writes it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import torch
from torch import nn

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.trainer import DistillationTrainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distill_run import gpt2, pad_causal_lm, token_rows  # noqa: E402


def allow_fsdp_on_cpu() -> None:
    """Makes accelerate keep FSDP on a multi-process CPU run, as it does on GPUs (see the module doc).

    ``AcceleratorState`` sets ``distributed_type = FSDP`` for ``MULTI_GPU`` and other accelerators but not for
    ``MULTI_CPU``; after it has run, a ``MULTI_CPU`` state launched with ``ACCELERATE_USE_FSDP=true`` is
    switched to FSDP (PartialState too, which every later ``AcceleratorState()`` copies its type from) with the
    plugin accelerate builds from the launcher's environment.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    init = Accelerator.__init__

    def init_with_fsdp(self, *args, **kwargs):
        if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
            kwargs["fsdp_plugin"] = kwargs.get("fsdp_plugin") or FullyShardedDataParallelPlugin()
            from accelerate.state import AcceleratorState, PartialState

            state_init = AcceleratorState.__init__

            def promote(state, *a, **kw):
                state_init(state, *a, **kw)
                if state.distributed_type == DistributedType.MULTI_CPU:
                    # Every later AcceleratorState() copies PartialState's type back: promote both.
                    PartialState().distributed_type = DistributedType.FSDP
                    state.distributed_type = DistributedType.FSDP
                    state.fsdp_plugin = kw.get("fsdp_plugin")

            AcceleratorState.__init__ = promote
            try:
                init(self, *args, **kwargs)
            finally:
                AcceleratorState.__init__ = state_init
        else:
            init(self, *args, **kwargs)

    Accelerator.__init__ = init_with_fsdp


def full_state_hash(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer, gathered whole when sharded (DTensor), in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if hasattr(tensor, "full_tensor"):
            tensor = tensor.full_tensor()
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def held_numel(model: nn.Module) -> tuple[int, int]:
    """(parameters held by this process, parameters in all): a DTensor holds its local shard only."""
    local = sum((p.to_local() if hasattr(p, "to_local") else p).numel() for p in model.parameters())
    return local, sum(p.numel() for p in model.parameters())


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--per-device", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=3)
    return parser.parse_args(argv)


def build_trainer(cli: argparse.Namespace, teacher: nn.Module) -> DistillationTrainer:
    student = gpt2(seed=2, hidden=16, layers=2)
    args = DistillationTrainingArguments(
        output_dir=cli.output_dir,
        per_device_train_batch_size=cli.per_device,
        max_steps=cli.max_steps,
        learning_rate=0.1,
        lr_scheduler_type="constant",
        # SGD: Adam divides by the gradient's own size and blows float noise up (see test_invariants).
        optim="sgd",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=7,
        disable_tqdm=True,
        train_sampling_strategy="sequential",
        temperature=2.0,
        alpha=0.5,
    )
    return DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=token_rows(8 * cli.max_steps, seed=3),
        data_collator=pad_causal_lm,
    )


def main() -> None:
    cli = parse()
    allow_fsdp_on_cpu()
    teacher = gpt2(seed=1, hidden=32, layers=4)
    before = full_state_hash(teacher)
    trainer = build_trainer(cli, teacher)
    local, total = held_numel(trainer.teacher)
    trainer.train()
    # Under FSDP Trainer creates the optimizer after sharding the student: look at it once training is done.
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    rank = trainer.args.process_index
    report = {
        "world_size": trainer.args.world_size,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "student_sharded": any(hasattr(p, "to_local") for p in trainer.model.parameters()),
        "teacher_local_numel": local,
        "teacher_numel": total,
        "teacher_hash_before": before,
        "teacher_hash_after": full_state_hash(trainer.teacher),
        "teacher_training_mode": trainer.teacher.training,
        "teacher_requires_grad": any(p.requires_grad for p in trainer.teacher.parameters()),
        "teacher_in_optimizer": any(id(p) in optimized for p in trainer.teacher.parameters()),
    }
    Path(cli.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(cli.output_dir) / f"rank{rank}.json").write_text(json.dumps(report, indent=1))
    trainer.save_model(os.path.join(cli.output_dir, "final"))
    if trainer.args.should_save:
        result = {"world_size": trainer.args.world_size, "log_history": trainer.state.log_history}
        (Path(cli.output_dir) / "result.json").write_text(json.dumps(result, indent=1))
    if torch.distributed.is_initialized():
        # As in distill_run.py: leave without running gloo's destructors, which can hang or abort a rank.
        trainer.accelerator.wait_for_everyone()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
