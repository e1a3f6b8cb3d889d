"""`hf-distill cache-teacher` under `accelerate launch` with 2 CPU processes: each process writes the shards of
its own part of the rows and the main process one manifest, so the cache reads row for row like the
one-process cache; a process that dies mid-way leaves no manifest, and the cache is refused."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from hf_distill import cli
from hf_distill.cache.shards import MANIFEST, load_teacher_cache
from tests.helpers.paths import SCRIPTS
from tests.helpers.xtok import byte_level_tokenizer, tiny_gpt2

FLAGS = ["--top_k", "8", "--rows_per_shard", "2", "--per_device_eval_batch_size", "2", "--temperature", "2.0"]
FLAGS += ["--max_files", "6", "--max_train_samples", "6", "--max_length", "16", "--split_seed", "1"]
FLAGS += ["--use_cpu", "true", "--report_to", "none"]


def free_port() -> int:
    """A port nobody listens on now, so that runs started at once do not meet on torchrun's default."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher")
    tokenizer = byte_level_tokenizer()
    teacher = tiny_gpt2(len(tokenizer), seed=1)
    with torch.no_grad():
        teacher.transformer.ln_f.weight.mul_(10.0)
    teacher.save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


def launch(script: list[str], flags: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    # torchrun's launcher (--multi_gpu) with no GPU visible; --use_cpu true makes the processes meet over gloo.
    # (`accelerate launch --cpu` starts one process whatever --num_processes says.)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += ["--main_process_port", str(free_port()), *script, *flags]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def test_two_processes_write_the_one_process_cache_row_for_row(teacher_dir, tmp_path):
    common = ["cache-teacher", "codegen", "--teacher_model_name_or_path", str(teacher_dir), *FLAGS]
    assert (
        cli.main([*common, "--cache_dir", str(tmp_path / "one"), "--output_dir", str(tmp_path / "o1")]) == 0
    )
    done = launch(
        ["-m", "hf_distill.cli"],
        [*common, "--cache_dir", str(tmp_path / "two"), "--output_dir", str(tmp_path / "o2")],
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.count("cached teacher outputs for 6 training rows") == 1  # the main process reports

    manifest = json.loads((tmp_path / "two" / MANIFEST).read_text())
    files = [s["file"] for s in manifest["shards"]]
    # Rank 0 wrote rows 0-2 and rank 1 rows 3-5, two rows a shard; the manifest lists them in rank order.
    assert files == [
        "shard-r000-00000.parquet",
        "shard-r000-00001.parquet",
        "shard-r001-00000.parquet",
        "shard-r001-00001.parquet",
    ]
    assert [s["rows"] for s in manifest["shards"]] == [2, 1, 2, 1] and manifest["rows"] == 6
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        [*files, MANIFEST]
    )  # no rank lists left
    one, two = load_teacher_cache(tmp_path / "one"), load_teacher_cache(tmp_path / "two")
    assert one.column_names == two.column_names and len(one) == len(two) == 6
    for i in range(6):
        assert two[i] == one[i]
    assert manifest["settings"] == json.loads((tmp_path / "one" / MANIFEST).read_text())["settings"]


def test_a_process_that_dies_mid_way_leaves_no_manifest(teacher_dir, tmp_path):
    common = ["cache-teacher", "codegen", "--teacher_model_name_or_path", str(teacher_dir), *FLAGS]
    done = launch(
        [str(SCRIPTS / "cache_rank_dies.py")],
        [*common, "--cache_dir", str(tmp_path / "c"), "--output_dir", str(tmp_path / "o")],
    )
    assert done.returncode != 0
    written = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert any(name.startswith("shard-r001-") for name in written), written  # rank 1 got mid-way
    assert MANIFEST not in written
    with pytest.raises(
        ValueError,
        match="has no teacher_cache.json: it is not a sharded teacher cache, or its writing did not finish",
    ):
        load_teacher_cache(tmp_path / "c")
