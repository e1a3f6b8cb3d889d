"""Placing a frozen teacher under each accelerate backend without wrapping it for training.

The student goes through ``accelerator.prepare`` with its optimizer. The teacher has no optimizer and no
gradients, so wrapping it for training would waste memory (DDP buckets, ZeRO optimizer partitions) or fail.
What it needs depends on the backend, following how TRL prepares its reference and teacher models:

* no distribution / DDP: ``prepare_model(evaluation_mode=True)`` moves it to the device; every process
  holds a full copy (replicated), which is what DDP does with the student too;
* DeepSpeed: its own inference engine from a copy of the run's DeepSpeed config. Under ZeRO-3 the teacher's
  parameters are sharded like the student's (gathered layer by layer in the forward pass); under ZeRO-1/2
  the stage is set to 0, since those stages shard optimizer state only and the teacher has none;
* FSDP: sharded with the run's FSDP plugin (FSDP1 ``FullyShardedDataParallel`` or FSDP2 ``fully_shard``),
  then put in eval mode. (``prepare_model(evaluation_mode=True)`` would leave it unsharded, and on the CPU,
  since accelerate skips device placement under FSDP.)

FSDP2 and ZeRO-3 are tested for real on two CPU processes (gloo): ``tests/scripts/sharded_run.py``, launched
with the shipped ``recipes/accelerate_configs/fsdp.yaml`` or ``deepspeed_zero3.yaml``, checks that the teacher
ends up half on each process and unchanged after training, and that the run equals a single-process one.
accelerate itself turns FSDP and DeepSpeed on only for GPUs and other accelerators (a CPU run stays
``MULTI_CPU`` and its plugin is dropped), so that script promotes its CPU state to FSDP / DeepSpeed before the
Trainer is built; the code above then runs as it does on GPUs.
"""

from __future__ import annotations

import copy

from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch import nn


def _deepspeed_teacher(accelerator: Accelerator, teacher: nn.Module) -> nn.Module:
    import deepspeed

    config = copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)
    stage = config["zero_optimization"]["stage"]
    hidden_size = getattr(getattr(teacher, "config", None), "hidden_size", None)
    if stage == 3 and hidden_size is not None:
        # Buckets sized to the teacher's layers, as the Trainer does for the student (TRL does the same).
        config["zero_optimization"].update(
            {
                "reduce_bucket_size": hidden_size * hidden_size,
                "stage3_param_persistence_threshold": 10 * hidden_size,
                "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
            }
        )
    if stage != 3:
        config["zero_optimization"]["stage"] = 0
    # No optimizer or scheduler for the teacher.
    config.pop("optimizer", None)
    config.pop("scheduler", None)
    engine, *_ = deepspeed.initialize(model=teacher, config=config)
    engine.eval()
    return engine


def _fsdp_teacher(accelerator: Accelerator, teacher: nn.Module) -> nn.Module:
    if accelerator.is_fsdp2:
        from accelerate.utils.fsdp_utils import fsdp2_prepare_model

        teacher = fsdp2_prepare_model(accelerator, teacher)
    else:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        if not isinstance(teacher, FSDP):
            plugin = accelerator.state.fsdp_plugin
            plugin.set_auto_wrap_policy(teacher)
            teacher = FSDP(
                teacher,
                sharding_strategy=plugin.sharding_strategy or plugin.reshard_after_forward,
                cpu_offload=plugin.cpu_offload,
                auto_wrap_policy=plugin.auto_wrap_policy,
                mixed_precision=plugin.mixed_precision_policy,
                sync_module_states=plugin.sync_module_states,
                backward_prefetch=plugin.backward_prefetch,
                forward_prefetch=plugin.forward_prefetch,
                use_orig_params=plugin.use_orig_params,
                param_init_fn=plugin.param_init_fn,
                limit_all_gathers=plugin.limit_all_gathers,
                device_id=accelerator.device,
            )
    teacher.eval()
    return teacher


def prepare_teacher(accelerator: Accelerator, teacher: nn.Module) -> nn.Module:
    """The teacher placed for ``accelerator``'s backend in eval mode, never wrapped for training (see module doc)."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        return _deepspeed_teacher(accelerator, teacher)
    if accelerator.distributed_type == DistributedType.FSDP:
        return _fsdp_teacher(accelerator, teacher)
    return accelerator.prepare_model(teacher, evaluation_mode=True)
