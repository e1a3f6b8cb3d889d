"""How the teacher is placed per accelerate backend. DeepSpeed and FSDP need GPUs (and deepspeed) that CI does
not have, so their branches run here against stand-ins that record what they were given."""

from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType
from tiny_models import tiny_bert_classifier

from hf_distill.distributed import prepare_teacher


class _Engine:
    def __init__(self, model):
        self.module, self.evaluated = model, False

    def eval(self):
        self.evaluated = True
        return self


@pytest.fixture
def fake_deepspeed(monkeypatch):
    calls = []

    def initialize(model=None, config=None, **kwargs):
        calls.append({"model": model, "config": config, **kwargs})
        return _Engine(model), None, None, None

    monkeypatch.setitem(sys.modules, "deepspeed", types.SimpleNamespace(initialize=initialize))
    return calls


def _deepspeed_accelerator(stage: int):
    config = {
        "zero_optimization": {"stage": stage, "reduce_bucket_size": "auto"},
        "optimizer": {"type": "AdamW", "params": {"lr": "auto"}},
        "scheduler": {"type": "WarmupLR"},
        "train_micro_batch_size_per_gpu": 4,
    }
    plugin = SimpleNamespace(deepspeed_config=config)
    return SimpleNamespace(
        distributed_type=DistributedType.DEEPSPEED, state=SimpleNamespace(deepspeed_plugin=plugin)
    )


def test_deepspeed_zero3_teacher_gets_a_sharded_inference_engine(fake_deepspeed):
    teacher = tiny_bert_classifier(hidden=32)
    accelerator = _deepspeed_accelerator(stage=3)
    engine = prepare_teacher(accelerator, teacher)
    (call,) = fake_deepspeed
    assert call["model"] is teacher and set(call) == {"model", "config"}, (
        "no optimizer, no parameters to train"
    )
    config = call["config"]
    assert config["zero_optimization"]["stage"] == 3
    assert config["zero_optimization"]["reduce_bucket_size"] == 32 * 32
    assert config["zero_optimization"]["stage3_param_persistence_threshold"] == 10 * 32
    assert "optimizer" not in config and "scheduler" not in config
    assert engine.evaluated
    # The run's own config (the student's) is untouched.
    assert (
        accelerator.state.deepspeed_plugin.deepspeed_config["zero_optimization"]["reduce_bucket_size"]
        == "auto"
    )
    assert "optimizer" in accelerator.state.deepspeed_plugin.deepspeed_config


@pytest.mark.parametrize("stage", [1, 2])
def test_deepspeed_zero12_teacher_is_replicated(fake_deepspeed, stage):
    prepare_teacher(_deepspeed_accelerator(stage=stage), tiny_bert_classifier())
    # ZeRO-1/2 shard optimizer state only, which a teacher does not have.
    assert fake_deepspeed[0]["config"]["zero_optimization"]["stage"] == 0


def test_fsdp2_teacher_is_sharded_with_the_runs_plugin(monkeypatch):
    import accelerate.utils.fsdp_utils as fsdp_utils

    seen = []
    monkeypatch.setattr(
        fsdp_utils, "fsdp2_prepare_model", lambda acc, model: seen.append((acc, model)) or model
    )
    teacher = tiny_bert_classifier()
    teacher.train()
    accelerator = SimpleNamespace(distributed_type=DistributedType.FSDP, is_fsdp2=True)
    assert prepare_teacher(accelerator, teacher) is teacher
    assert seen == [(accelerator, teacher)] and not teacher.training


def test_single_process_teacher_is_placed_without_wrapping():
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    teacher = tiny_bert_classifier()
    prepared = prepare_teacher(accelerator, teacher)
    assert prepared is teacher and next(prepared.parameters()).device == torch.device("cpu")
