"""A run killed with SIGKILL, between two checkpoints or inside a save, and resumed from its last complete
checkpoint ends where an uninterrupted run ends.

``tests/scripts/distill_run.py`` trains a 2-layer GPT-2 student (hidden 16) from a 4-layer teacher
(hidden 32) with hidden-state matching through learned projections, dropout 0.1 (so the RNG state
matters) and AdamW with a linear schedule (so optimizer and scheduler state matter), checkpointing every
3 steps. The killed run completes step 4, one step past its checkpoint, and is killed; the resumed run
must redo that step. Same seed, same data order, one process: the final student and projections must
match the uninterrupted run to rtol 1e-5 / atol 1e-6 (float32; in practice they are bit-identical).

Other runs kill themselves from inside the save of their last checkpoint, at chosen moments (after Trainer's
model file, half-way through an extra, before the completion marker, during ``save_total_limit``'s rotation,
and, for self-distillation, after Trainer's files but before its teacher); the in-process tests below check
what counts as complete (:mod:`hf_distill.training.checkpoints`), what a resume picks, and what rotation deletes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import Trainer
from transformers.trainer_utils import rotate_checkpoints as transformers_rotate

from hf_distill import DistillationTrainingArguments
from hf_distill.modes.mutual import MutualLearningTrainer
from hf_distill.modes.self_distillation import SELF_TEACHER_NAME
from hf_distill.trainer import DISTILLATION_MODULES_NAME
from hf_distill.training.checkpoints import (
    MARKER_NAME,
    SAVING_NAME,
    CheckpointSave,
    checkpoint_problems,
    resolve_resume,
    rotate_checkpoints,
    write_marker,
)
from tests.helpers.modes import classification_data, tiny_bert
from tests.helpers.paths import SCRIPTS

SCRIPT = SCRIPTS / "distill_run.py"
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


class UninterruptedRuns(dict):
    """``runs[mode]``: the folder of an uninterrupted run of that mode, run when first asked for."""

    def __init__(self, tmp_path_factory):
        super().__init__()
        self.tmp_path_factory = tmp_path_factory

    def __missing__(self, mode: str) -> Path:
        out = self.tmp_path_factory.mktemp(f"straight-{mode}")
        run_to_end(out, "--mode", mode)
        self[mode] = out
        return out


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> UninterruptedRuns:
    return UninterruptedRuns(tmp_path_factory)


def test_killed_run_resumes_to_the_same_weights(uninterrupted, tmp_path):
    straight, killed = uninterrupted["distill"], tmp_path / "killed"
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


# ---- killed inside a save ----------------------------------------------------------------------------------
#
# The run kills itself (SIGKILL) from inside the save of checkpoint-6, its last, at one moment of the save; the
# resumed run (resume_from_checkpoint=True) must end with the uninterrupted run's weights. Where checkpoint-6
# is incomplete, the resume skips it with a warning and redoes steps 4-6 from checkpoint-3 (and then saves
# checkpoint-6 again, over the partial folder); where only the rotation was cut short, checkpoint-6 is complete
# and the resume starts from it.

KILLED_SAVES = {
    # point: (extra arguments, the step the resume must start from)
    "after-model": ((), 3),
    "mid-extra": ((), 3),
    "before-marker": ((), 3),
    "rotation": (("--save-total-limit", "1"), 6),
}


def run_killed_in_save(out: Path, point: str, *extra: str) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--output-dir", str(out), *RUN, "--kill-in-save", point, *extra],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-4000:]
    assert not (out / "final").exists()


def resume(out: Path, *extra: str) -> str:
    """Resumes with resume_from_checkpoint=True; returns the run's stderr (where the warnings go)."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--output-dir", str(out), *RUN, "--resume", *extra],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stderr


def assert_same_files(want_dir: Path, got_dir: Path, name: str) -> None:
    """Every tensor of ``name`` in the two folders agrees (the tolerances of the test above)."""
    path = Path(name)
    load = load_file if path.suffix == ".safetensors" else partial(torch.load, weights_only=True)
    want, got = load(want_dir / name), load(got_dir / name)
    assert want and want.keys() == got.keys(), name
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=RTOL, atol=ATOL, msg=f"{name}: {key}")


def resumed_from_step(run: Path) -> int:
    return json.loads((run / "result.json").read_text())["resumed_from_step"]


@pytest.mark.parametrize(
    "point",
    # A kill in the middle of writing an extra ends like one before the marker; the slow set runs it.
    [pytest.param(p, marks=pytest.mark.slow) if p == "mid-extra" else p for p in KILLED_SAVES],
)
def test_killed_inside_a_save_resumes_to_the_same_weights(point, uninterrupted, tmp_path):
    extra, start = KILLED_SAVES[point]
    killed = tmp_path / "killed"
    run_killed_in_save(killed, point, *extra)
    if start == 3:
        assert checkpoint_problems(str(killed / "checkpoint-6")), "the kill left a complete checkpoint"
        assert not checkpoint_problems(str(killed / "checkpoint-3"))
    else:  # the rotation of checkpoint-3 was cut short after checkpoint-6 was complete
        assert not checkpoint_problems(str(killed / "checkpoint-6"))
        assert not (killed / "checkpoint-3").exists()
        assert [p.name for p in killed.iterdir() if p.name.startswith("_")] == ["_deleting-checkpoint-3"]

    stderr = resume(killed, *extra)
    if start == 3:
        assert re.search(
            r"Resuming from \S*checkpoint-3, the last complete checkpoint; skipped checkpoint-6", stderr
        )
        assert resumed_from_step(killed) == 3
        assert not checkpoint_problems(str(killed / "checkpoint-6"))  # saved again, whole
    else:
        assert "skipped" not in stderr and resumed_from_step(killed) == 6
    straight = uninterrupted["distill"]
    for name in ("model.safetensors", DISTILLATION_MODULES_NAME):
        assert_same_files(straight / "final", killed / "final", name)


def test_killed_self_distillation_resumes_its_teacher(uninterrupted, tmp_path):
    """Killed after Trainer's files but before the self-distillation teacher: the resume restores the EMA
    teacher of checkpoint-3, and the student and the teacher end as in the uninterrupted run."""
    killed = tmp_path / "killed"
    run_killed_in_save(killed, "after-trainer-files", "--mode", "self")
    assert not (killed / "checkpoint-6" / SELF_TEACHER_NAME).exists()
    assert "skipped checkpoint-6" in resume(killed, "--mode", "self")
    assert resumed_from_step(killed) == 3
    straight = uninterrupted["self"]
    for name in ("model.safetensors", SELF_TEACHER_NAME):
        assert_same_files(straight / "final", killed / "final", name)
    # The premise: the teacher moved after checkpoint-3, so matching it is more than matching the checkpoint.
    start = torch.load(killed / "checkpoint-3" / SELF_TEACHER_NAME, weights_only=True)
    end = torch.load(straight / "final" / SELF_TEACHER_NAME, weights_only=True)
    assert any(not torch.allclose(start[k], end[k], rtol=RTOL, atol=ATOL) for k in end)


# ---- in-process: what counts as complete, what a resume picks, what rotation deletes ----------------------


def distill_run_module():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import distill_run
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return distill_run


def small_run(out: Path, *extra: str):
    """The script's trainer in this process: 4 steps of 4 rows, a checkpoint every 2 steps."""
    script = distill_run_module()
    cli = ["--output-dir", str(out), "--per-device", "4", "--max-steps", "4", "--save-steps", "2", *extra]
    return script.build_trainer(script.parse(["--dropout", "0.1", *cli]))


def final_state(trainer) -> dict[str, torch.Tensor]:
    state = {f"student.{k}": v.detach().clone() for k, v in trainer.model.state_dict().items()}
    state.update(
        {f"modules.{k}": v.detach().clone() for k, v in trainer.distillation_modules().state_dict().items()}
    )
    return state


def test_a_checkpoint_is_complete_once_its_marker_lists_every_file(tmp_path, caplog):
    out = tmp_path / "run"
    trainer = small_run(out)
    trainer.train()
    four, two = out / "checkpoint-4", out / "checkpoint-2"
    listed = json.loads((four / MARKER_NAME).read_text())["files"]
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"):
        assert listed[name] == (four / name).stat().st_size
    assert listed[DISTILLATION_MODULES_NAME] > 0 and not (four / SAVING_NAME).exists()
    extras = trainer.checkpoint_extras()
    assert checkpoint_problems(str(four), extras) == [] and resolve_resume(True, str(out), extras) == str(
        four
    )
    pristine = tmp_path / "pristine"
    shutil.copytree(four, pristine)

    def damaged(damage) -> list[str]:
        shutil.rmtree(four)
        shutil.copytree(pristine, four)
        damage()
        return checkpoint_problems(str(four), extras)

    # A file cut short or removed after the save: the marker's sizes say which.
    size = (four / "optimizer.pt").stat().st_size
    assert damaged(lambda: os.truncate(four / "optimizer.pt", 10)) == [
        f"optimizer.pt is 10 bytes, {size} when it was saved"
    ]
    problems = damaged(lambda: (four / DISTILLATION_MODULES_NAME).unlink())
    assert problems[0] == f"{DISTILLATION_MODULES_NAME} is missing (the marker lists it)"
    assert "holds no hidden-state projections, so resuming would restart them from random" in problems[1]

    # A new save into the folder begins by taking the old marker away: until it finishes, the folder is incomplete.
    problems = damaged(lambda: CheckpointSave(str(four), True, extras, lambda: None).begin(4))
    assert not (four / MARKER_NAME).exists()
    assert problems == [
        f"its save was interrupted ({SAVING_NAME} is still there and no {MARKER_NAME} was written)"
    ]
    with caplog.at_level("WARNING", logger="hf_distill.training.checkpoints"):
        assert resolve_resume(True, str(out), extras) == str(two)
    assert re.search(
        r"Resuming from \S*checkpoint-2, the last complete checkpoint; skipped checkpoint-4: its save "
        r"was interrupted",
        caplog.text,
    )
    # An explicit path to it is refused before any loading, naming what is wrong and the complete one beside it.
    with pytest.raises(
        ValueError,
        match=r"Cannot resume from \S*checkpoint-4: its save was interrupted .*The last "
        r"complete checkpoint beside it is \S*checkpoint-2",
    ):
        trainer.train(resume_from_checkpoint=str(four))
    # Nothing complete at all: an error listing each checkpoint and why.
    CheckpointSave(str(two), True, extras, lambda: None).begin(2)
    with pytest.raises(
        ValueError,
        match=r"found no complete checkpoint in .*checkpoint-4: its save was interrupted.*"
        r"; checkpoint-2: its save was interrupted",
    ):
        trainer.train(resume_from_checkpoint=True)


def test_a_checkpoint_without_a_marker_resumes_when_complete_by_content(tmp_path):
    """Checkpoints written before markers existed: trainer_state.json (Trainer's last file) must be there and
    parse, and every extra must be a whole torch.save archive; such a checkpoint resumes to the same weights."""
    out = tmp_path / "run"
    straight = small_run(out)
    straight.train()
    want = final_state(straight)
    shutil.rmtree(out / "checkpoint-4")
    (out / "checkpoint-2" / MARKER_NAME).unlink()
    resumed = small_run(out)
    assert resolve_resume(True, str(out), resumed.checkpoint_extras()) == str(out / "checkpoint-2")
    resumed.train(resume_from_checkpoint=True)
    got = final_state(resumed)
    assert want.keys() == got.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=RTOL, atol=ATOL, msg=key)

    two = out / "checkpoint-2"  # still without a marker: the resumed run saved checkpoint-4 only
    assert not (two / MARKER_NAME).exists()
    os.truncate(two / DISTILLATION_MODULES_NAME, (two / DISTILLATION_MODULES_NAME).stat().st_size // 2)
    assert checkpoint_problems(str(two), resumed.checkpoint_extras()) == [
        f"{DISTILLATION_MODULES_NAME} is cut short (not a whole torch.save file)"
    ]
    (two / "trainer_state.json").unlink()
    assert checkpoint_problems(str(two))[0].startswith("trainer_state.json is missing")


def fake_checkpoint(folder: Path, *, marker: bool = False, saving: bool = False) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "trainer_state.json").write_text('{"global_step": 1}')
    if marker:
        write_marker(str(folder), 1)
    if saving:
        (folder / SAVING_NAME).write_text("{}")
    return folder


def test_rotation_never_deletes_the_last_complete_checkpoint_for_an_incomplete_one(tmp_path):
    def make(run: Path) -> None:
        fake_checkpoint(run / "checkpoint-1")  # without a marker, complete by content
        fake_checkpoint(run / "checkpoint-2", marker=True)
        fake_checkpoint(run / "checkpoint-3", saving=True)  # a save cut short, the newest folder
        fake_checkpoint(run / "_deleting-checkpoint-0")  # a rotation cut short

    # The premise: Trainer's own rotation keeps the newest folder, here the incomplete one, and deletes the rest.
    make(tmp_path / "trainer")
    transformers_rotate(str(tmp_path / "trainer"), save_total_limit=1, use_mtime=True)
    assert (
        not (tmp_path / "trainer" / "checkpoint-2").exists()
        and (tmp_path / "trainer" / "checkpoint-3").exists()
    )

    run = tmp_path / "ours"
    make(run)
    rotate_checkpoints(str(run), 1, keep=(str(run / "checkpoint-2"),))
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-2", "checkpoint-3"]


def test_a_run_with_save_total_limit_keeps_only_complete_checkpoints(tmp_path, monkeypatch):
    """Trainer's Hub push of a checkpoint waits until it is complete; rotation leaves the newest complete one."""
    pushed = []

    def record_push(trainer, folder):
        pushed.append((Path(folder).name, (Path(folder) / MARKER_NAME).exists()))

    monkeypatch.setattr(Trainer, "_push_from_checkpoint", record_push)
    monkeypatch.setattr(Trainer, "init_hf_repo", lambda self, *args, **kwargs: None)  # no Hub here
    out = tmp_path / "run"
    trainer = small_run(out, "--save-total-limit", "1")
    trainer.args.push_to_hub, trainer.args.hub_strategy = True, "checkpoint"
    trainer.train()
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["checkpoint-4"]
    assert checkpoint_problems(str(out / "checkpoint-4"), trainer.checkpoint_extras()) == []
    assert pushed == [("checkpoint-2", True), ("checkpoint-4", True)]


def test_mutual_learning_checkpoints_need_both_students(tmp_path):
    trainer = MutualLearningTrainer(
        tiny_bert(seed=0),
        peer_model=tiny_bert(seed=1, hidden=24),
        args=DistillationTrainingArguments(
            output_dir=str(tmp_path),
            report_to="none",
            per_device_train_batch_size=8,
            max_steps=2,
            save_strategy="steps",
            save_steps=2,
            dataloader_pin_memory=False,
        ),
        train_dataset=classification_data(),
    )
    trainer.train()
    folder = tmp_path / "checkpoint-2"
    listed = json.loads((folder / MARKER_NAME).read_text())["files"]
    assert "student_a/model.safetensors" in listed and "student_b/model.safetensors" in listed
    shutil.rmtree(folder / "student_b")
    with pytest.raises(
        ValueError, match=r"student_b is missing: the checkpoint holds no second student \(student_b/\)"
    ):
        trainer.train(resume_from_checkpoint=str(folder))
