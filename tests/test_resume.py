"""A run killed with SIGKILL mid-training and resumed from its last checkpoint ends where an uninterrupted
run ends.

``tests/scripts/distill_run.py`` trains a 2-layer GPT-2 student (hidden 16) from a 4-layer teacher
(hidden 32) with hidden-state matching through learned projections, dropout 0.1 (so the RNG state
matters) and AdamW with a linear schedule (so optimizer and scheduler state matter), checkpointing every
3 steps. The killed run completes step 4, one step past its checkpoint, and is killed; the resumed run
must redo that step. Same seed, same data order, one process: the final student and projections must
match the uninterrupted run to rtol 1e-5 / atol 1e-6 (float32; in practice they are bit-identical).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_distill.trainer import DISTILLATION_MODULES_NAME

SCRIPT = Path(__file__).parent / "scripts" / "distill_run.py"
RUN = ["--per-device", "4", "--train-rows", "24", "--max-steps", "6", "--save-steps", "3", "--dropout", "0.1"]
RTOL, ATOL = 1e-5, 1e-6
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_to_end(out: Path, *extra: str) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--output-dir", str(out), *RUN, *extra],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]


def run_and_kill(out: Path) -> None:
    """Starts a run that blocks after step 4, waits for checkpoint-3 and the block, then SIGKILLs it."""
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--output-dir", str(out), *RUN, "--hang-after-step", "4"],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 240
        while not (out / "hanging").exists():
            assert process.poll() is None, process.stderr.read().decode()[-4000:]
            assert time.monotonic() < deadline, "the run never got past its first checkpoint"
            time.sleep(0.2)
        assert (out / "checkpoint-3").is_dir()
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not (out / "final").exists() and not (out / "checkpoint-6").exists()


def tensors_in(path: Path) -> list[torch.Tensor]:
    """Every tensor stored in a checkpoint file, however nested."""
    if path.suffix == ".safetensors":
        return list(load_file(path).values())
    if path.suffix not in (".pt", ".pth", ".bin"):
        return []
    found, stack = [], [torch.load(path, map_location="cpu", weights_only=False)]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            found.append(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return found


def check_checkpoint(folder: Path) -> None:
    names = {p.name for p in folder.iterdir()}
    for required in (
        "model.safetensors",
        "optimizer.pt",
        "scheduler.pt",
        "rng_state.pth",
        DISTILLATION_MODULES_NAME,
    ):
        assert required in names, f"{required} missing from {sorted(names)}"
    assert not any("teacher" in name.lower() for name in names)

    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from distill_run import tiny_gpt2
    finally:
        sys.path.remove(str(SCRIPT.parent))
    teacher_shapes = {tuple(p.shape) for p in tiny_gpt2(seed=1, hidden=32, layers=4).parameters()}
    student_shapes = {tuple(t.shape) for t in load_file(folder / "model.safetensors").values()}
    projection_shapes = {tuple(t.shape) for t in tensors_in(folder / DISTILLATION_MODULES_NAME)}
    assert (16, 32) in {s[::-1] for s in projection_shapes}, "no 16 -> 32 projection was saved"
    # Shapes only the teacher has (its embeddings, attention and MLP at width 32): none may be saved anywhere.
    teacher_only = teacher_shapes - student_shapes - projection_shapes
    assert len(teacher_only) >= 4
    for file in folder.iterdir():
        for tensor in tensors_in(file):
            assert tuple(tensor.shape) not in teacher_only, (
                f"{file.name} holds a {tuple(tensor.shape)} tensor"
            )


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_to_end(straight)
    run_and_kill(killed)
    check_checkpoint(killed / "checkpoint-3")
    run_to_end(killed, "--resume")

    want, got = (
        load_file(straight / "final" / "model.safetensors"),
        load_file(killed / "final" / "model.safetensors"),
    )
    start = load_file(killed / "checkpoint-3" / "model.safetensors")
    assert want.keys() == got.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=RTOL, atol=ATOL, msg=key)
    # The premise: steps 4-6 moved the weights, so matching the end is more than matching the checkpoint.
    assert any(not torch.allclose(start[k], want[k], rtol=RTOL, atol=ATOL) for k in want)

    want = torch.load(straight / "final" / DISTILLATION_MODULES_NAME, weights_only=True)
    got = torch.load(killed / "final" / DISTILLATION_MODULES_NAME, weights_only=True)
    assert want and want.keys() == got.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=RTOL, atol=ATOL, msg=key)

    # The loss parts logged after the resume are those of the same steps in the uninterrupted run.
    def logged(run: Path) -> dict[int, dict]:
        history = json.loads((run / "result.json").read_text())["log_history"]
        return {h["step"]: h for h in history if "loss_kd" in h}

    want_logs, got_logs = logged(straight), logged(killed)
    assert {4, 5, 6} <= got_logs.keys()
    for step in (4, 5, 6):
        for key in ("loss", "loss_kd", "loss_task", "loss_hidden"):
            assert got_logs[step][key] == pytest.approx(want_logs[step][key], rel=1e-5), (step, key)
