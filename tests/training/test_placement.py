"""How the teacher is placed per accelerate backend.

- FSDP2 and ZeRO-3 for real: two CPU processes (gloo) launched with the shipped
  ``recipes/accelerate_configs/fsdp.yaml`` or ``deepspeed_zero3.yaml`` (``tests/scripts/sharded_run.py``) shard the
  student for training and the teacher for inference; the losses, the gradient norms and the final weights
  equal a single-process run's, each process holds half of the teacher, and the teacher is byte-identical after
  training. The ZeRO-3 run needs ``deepspeed`` (``pip install -e ".[deepspeed]"``) and is skipped without it.
- The branches of ``prepare_teacher`` also run against stand-ins that record what they were given (the
  DeepSpeed config handed to the teacher's engine, FSDP's plugin hand-off), without ``deepspeed``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType
from safetensors.torch import load_file

from hf_distill.training.placement import prepare_teacher
from tests.helpers.paths import RECIPES, SCRIPTS
from tests.helpers.processes import free_port
from tests.helpers.tiny_models import tiny_bert_classifier

sys.path.insert(0, str(SCRIPTS))
import sharded_run  # noqa: E402


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


# ---- FSDP2 for real: two CPU processes (gloo), the student and the teacher sharded ---------------------------

SCRIPT = SCRIPTS / "sharded_run.py"
CONFIGS = RECIPES / "accelerate_configs"
RTOL, ATOL = 1e-4, 1e-6  # float32 summation order only, as in test_invariants


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


@pytest.mark.parametrize("config, kind", [("fsdp.yaml", "FSDP"), ("deepspeed_zero3.yaml", "DEEPSPEED")])
def test_two_sharded_processes_shard_the_teacher_and_match_one_process(tmp_path, config, kind):
    if kind == "DEEPSPEED":
        pytest.importorskip("deepspeed", reason='ZeRO-3 needs deepspeed: pip install -e ".[deepspeed]"')
    one, two = tmp_path / "one", tmp_path / "two"
    single = _launch([sys.executable, str(SCRIPT), "--output-dir", str(one), "--per-device", "8"], one)
    # The shipped config, on two CPU processes without mixed precision (see sharded_run.py for the one
    # thing that lets accelerate keep FSDP / DeepSpeed on CPUs).
    double = _launch(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / config),
         "--num_processes", "2", "--mixed_precision", "no", "--dynamo_backend", "no",
         "--main_process_port", str(free_port()), str(SCRIPT),
         "--output-dir", str(two), "--per-device", "4"],
        two,
    )  # fmt: skip
    assert (single["world_size"], double["world_size"]) == (1, 2)

    ranks = [json.loads((two / f"rank{r}.json").read_text()) for r in range(2)]
    (reference,) = [json.loads((one / "rank0.json").read_text())]
    for rank in ranks:
        assert rank["distributed_type"] == f"DistributedType.{kind}" and rank["student_sharded"]
        # Each process holds about half of the teacher: its DTensor shards, measured.
        assert 0.45 * rank["teacher_numel"] <= rank["teacher_local_numel"] <= 0.55 * rank["teacher_numel"]
        # Inference only: eval mode, no gradients, nothing of it in the optimizer, and byte-identical after
        # training (the full state dict gathered from the shards, hashed), equal to the unsharded teacher's.
        assert not rank["teacher_training_mode"] and not rank["teacher_requires_grad"]
        assert not rank["teacher_in_optimizer"]
        assert rank["teacher_hash_after"] == rank["teacher_hash_before"] == reference["teacher_hash_before"]
    assert sum(r["teacher_local_numel"] for r in ranks) == ranks[0]["teacher_numel"]
    assert reference["teacher_local_numel"] == reference["teacher_numel"], "the reference is not sharded"

    steps = [[e for e in r["log_history"] if "loss" in e] for r in (single, double)]
    assert len(steps[0]) == len(steps[1]) == 3
    for want, got in zip(*steps):
        for name in ("loss", "loss_kd", "loss_task", "grad_norm"):
            assert got[name] == pytest.approx(want[name], rel=RTOL, abs=1e-7), f"step {want['step']}: {name}"

    want, got = load_file(one / "final" / "model.safetensors"), load_file(two / "final" / "model.safetensors")
    # FSDP's full state dict keeps the tied output head under its own name too; it must be the embedding.
    assert set(got) - set(want) <= {"lm_head.weight"} and set(want) <= set(got)
    if "lm_head.weight" in got:
        torch.testing.assert_close(got.pop("lm_head.weight"), got["transformer.wte.weight"], rtol=0, atol=0)
    initial = sharded_run.gpt2(seed=2, hidden=16, layers=2).state_dict()
    moved = max((want[k] - initial[k]).abs().max().item() for k in want)
    assert moved > 100 * ATOL, "training must move the weights, or equal weights prove nothing"
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=RTOL, atol=ATOL, msg=key)
    # The teacher is never saved: the checkpoint's model and optimizer files and the final folder hold the
    # student alone (whatever the backend writes: FSDP's full state dict, ZeRO-3's 16-bit gather).
    checkpoint, model_files = two / "checkpoint-3", 0
    for path in checkpoint.iterdir():
        if path.suffix == ".safetensors" or path.name.startswith("pytorch_model"):
            saved = load_file(path) if path.suffix == ".safetensors" else torch.load(path, weights_only=True)
            assert set(saved) <= set(want) | {"lm_head.weight"}, path.name
            model_files += 1
        if path.name.startswith("optimizer") and path.suffix == ".bin":  # FSDP: parameters named in groups
            groups = torch.load(path, weights_only=True)["param_groups"]
            assert {n for g in groups for n in g["params"]} <= set(want) | {"lm_head.weight"}, path.name
    assert model_files >= 1, sorted(p.name for p in checkpoint.iterdir())
    if kind == "DEEPSPEED":  # the ZeRO-3 partitions of the checkpoint, put back together, are the student
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        rebuilt = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint))
        assert set(rebuilt) <= set(want) | {"lm_head.weight"}
        for key in want:
            torch.testing.assert_close(rebuilt[key], got[key], rtol=0, atol=0, msg=key)
    assert sum(t.numel() for t in got.values()) < ranks[0]["teacher_numel"]
    assert sorted(p.name for p in (two / "final").iterdir()) == sorted(
        p.name for p in (one / "final").iterdir()
    )
