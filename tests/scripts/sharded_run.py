"""A tiny distillation run with the student and the teacher sharded (FSDP2 or ZeRO-3), on two CPU processes.

``tests/training/test_placement.py`` starts it under each shipped sharding config and once alone, and compares::

    accelerate launch --config_file recipes/accelerate_configs/fsdp.yaml --num_processes 2 \\
        --mixed_precision no tests/scripts/sharded_run.py --output-dir OUT --per-device 4
    accelerate launch --config_file recipes/accelerate_configs/deepspeed_zero3.yaml --num_processes 2 \\
        --mixed_precision no tests/scripts/sharded_run.py --output-dir OUT --per-device 4   # needs deepspeed
    python tests/scripts/sharded_run.py --output-dir OUT --per-device 8      # the single-process reference

The launch goes through the shipped config, so the environment it sets (``ACCELERATE_USE_FSDP``,
``FSDP_VERSION=2``, the transformer-based wrap policy, full state dicts; or ``ACCELERATE_USE_DEEPSPEED`` with
ZeRO stage 3) is the one GPU runs get. One thing differs, and it is the only one: accelerate turns FSDP and
DeepSpeed on only for GPUs and other accelerators (``AcceleratorState`` leaves a CPU run ``MULTI_CPU`` and drops
the plugin; DeepSpeed without ``use_cpu`` on a machine without GPUs becomes a one-process run), so
:func:`allow_sharding_on_cpu` promotes the two-process CPU (gloo) state to FSDP or DeepSpeed with the plugin
built from that environment. Everything after it is unchanged library code: Trainer's FSDP / DeepSpeed
integration shards the student through ``accelerator.prepare`` (``fully_shard`` on the default CPU mesh;
a ZeRO-3 engine on DeepSpeed's CPU accelerator), and ``hf_distill.training.placement.prepare_teacher`` shards the
teacher for inference the way the GPU configs do: eval mode, no optimizer, never saved.

Every rank writes ``OUT/rank<r>.json``: the teacher's parameters held locally (the numel of its DTensor shards
or ZeRO-3 partitions) and in all, a hash of its full state dict before and after training, whether any of its
modules is in training mode, whether any of its parameters reached the optimizer. The main process also writes
``OUT/result.json`` (log history) and ``OUT/final/`` (the student as ``save_model`` writes it).
"""

from __future__ import annotations

import argparse
import contextlib
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


def launched_backend() -> str | None:
    """``"fsdp"`` or ``"deepspeed"`` when ``accelerate launch`` was given such a config, else None."""
    for name in ("fsdp", "deepspeed"):
        if os.environ.get(f"ACCELERATE_USE_{name.upper()}", "false").lower() == "true":
            return name
    return None


def allow_sharding_on_cpu() -> None:
    """Makes accelerate keep FSDP or DeepSpeed on a multi-process CPU run, as it does on GPUs (module doc).

    ``AcceleratorState`` turns FSDP and DeepSpeed on only for GPUs and other accelerators (a CPU run is
    ``MULTI_CPU``, or for DeepSpeed without ``use_cpu`` a one-process ``NO``), so once it has run, a ``MULTI_CPU``
    state launched with such a config is switched to it (PartialState too, which every later
    ``AcceleratorState()`` copies its type from) with the plugin accelerate built from the launcher's
    environment, as on a GPU.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    backend = launched_backend()
    if backend is None:
        return
    init, state_init = Accelerator.__init__, AcceleratorState.__init__

    def promote(state, *a, **kw):
        state_init(state, *a, **kw)
        if state.distributed_type != DistributedType.MULTI_CPU:
            return
        if backend == "fsdp":
            PartialState().distributed_type = state.distributed_type = DistributedType.FSDP
            state.fsdp_plugin = kw.get("fsdp_plugin")
        else:
            from deepspeed import comm

            comm.init_distributed(dist_backend="gloo")  # on the process group accelerate started
            PartialState().distributed_type = state.distributed_type = DistributedType.DEEPSPEED
            plugin = kw.get("deepspeed_plugin")
            plugin.set_mixed_precision(state._mixed_precision)
            plugin.select(_from_accelerator_state=True)
            state.deepspeed_plugins = plugin

    def init_sharded(self, *args, **kwargs):
        if backend == "fsdp":
            from accelerate.utils import FullyShardedDataParallelPlugin

            kwargs["fsdp_plugin"] = kwargs.get("fsdp_plugin") or FullyShardedDataParallelPlugin()
        AcceleratorState.__init__ = promote
        try:
            init(self, *args, **kwargs)
        finally:
            AcceleratorState.__init__ = state_init

    Accelerator.__init__ = init_sharded


def gathered(model: nn.Module):
    """A context in which ZeRO-3's partitioned parameters of ``model`` are whole (a no-op otherwise)."""
    params = [p for p in model.parameters() if hasattr(p, "ds_tensor")]
    if not params:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params)


def full_state_hash(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer, gathered whole when sharded (FSDP2's DTensors, ZeRO-3's
    partitions), in name order."""
    digest = hashlib.sha256()
    with gathered(model):
        state = {k: v.clone() for k, v in getattr(model, "module", model).state_dict().items()}
    for name, tensor in sorted(state.items()):
        if hasattr(tensor, "full_tensor"):
            tensor = tensor.full_tensor()
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def held_numel(model: nn.Module) -> tuple[int, int]:
    """(parameters held by this process, parameters in all): a DTensor holds its local shard, a ZeRO-3
    parameter its partition (``ds_tensor``; its own data is empty outside a gather)."""
    local = total = 0
    for p in model.parameters():
        if hasattr(p, "ds_tensor"):
            local, total = local + p.ds_tensor.numel(), total + p.ds_numel
        else:
            local += (p.to_local() if hasattr(p, "to_local") else p).numel()
            total += p.numel()
    return local, total


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
        # One checkpoint, at the last step: it must hold the student alone, like the final folder.
        save_strategy="steps",
        save_steps=cli.max_steps,
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
    allow_sharding_on_cpu()
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
        "student_sharded": any(
            hasattr(p, "to_local") or hasattr(p, "ds_tensor") for p in trainer.model.parameters()
        ),
        "teacher_local_numel": local,
        "teacher_numel": total,
        "teacher_hash_before": before,
        "teacher_hash_after": full_state_hash(trainer.teacher),
        # DeepSpeedEngine.eval() puts the model it wraps in eval mode, not the engine's own flag: ask the model.
        "teacher_training_mode": any(
            m.training for m in getattr(trainer.teacher, "module", trainer.teacher).modules()
        ),
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
