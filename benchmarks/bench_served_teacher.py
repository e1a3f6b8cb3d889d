"""Training throughput of a student against (a) the in-process live teacher, (b) its top-k cache, (c) the same
teacher served on localhost by ``hf-distill serve-teacher`` (a separate process), in steps per second.

    python benchmarks/bench_served_teacher.py [--rounds 5] [--steps 4] [--rows 32] [--length 256] [--top_k 20]
    python benchmarks/bench_served_teacher.py --tiny --quick   # a 2-layer teacher, to check that it runs

- **Teacher.** SmolLM2-135M-Instruct (the offline asset ``smollm2-135m``), or with ``--tiny`` a random 2-layer
  GPT-2 over its tokenizer. **Student:** a random 2-layer GPT-2 over the teacher's vocabulary (hidden 256).
- **Rows.** Held-out standard-library code cut into ``--length``-token blocks, ``--batch`` rows a step.
- **Variants.** Each call trains ``--steps`` optimizer steps with :class:`hf_distill.DistillationTrainer` built
  once per variant: (a) ``teacher_model=<the model>`` (full-vocabulary KD, the teacher's forward in the step);
  (b) ``teacher_model=None`` on the rows with their top-k at T=1 (``cache_teacher_outputs``, float32, in
  memory: no disk in the step); (c) ``teacher_model="http://127.0.0.1:PORT/v1"`` with ``teacher_server_top_k``
  = the cache's k and the default look-ahead (2 batches asked ahead).
- **Timing.** Variants interleaved in rounds, medians (``_common.py``), CPU share per call: the cores this
  process used, the cores the server process used (its /proc stat; only (c) makes it work), and the cores other
  processes used. A call is quiet when the others (the server excluded) stay below ``QUIET_CORES``; ratios from
  a loaded machine are not results. The server competes with the trainer for the same cores on one machine:
  (c) measures the served path's overhead here (HTTP, JSON, the look-ahead), not a remote GPU server.
"""

from __future__ import annotations

import argparse
import copy
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    default_data_collator,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report, summarize, time_variants  # noqa: E402

from hf_distill import DistillationTrainer, DistillationTrainingArguments  # noqa: E402
from hf_distill.cache.build import cache_teacher_outputs  # noqa: E402
from hf_distill.recipes.data_code import load_code_corpus  # noqa: E402
from hf_distill.recipes.offline import resolve_model_path  # noqa: E402
from hf_distill.students.build import gpt2_student_for  # noqa: E402
from hf_distill.training.preprocessing import chunk_for_causal_lm  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TEACHER = "smollm2-135m"


def teacher_folder(tiny: bool, root: Path) -> Path:
    """SmolLM2-135M's folder, or a random 2-layer GPT-2 over its tokenizer saved in ``root``."""
    folder = Path(resolve_model_path(TEACHER))
    if not tiny:
        return folder
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=2, n_positions=1024)
    GPT2LMHeadModel(config).save_pretrained(root / "teacher")
    tokenizer.save_pretrained(root / "teacher")
    return root / "teacher"


def code_rows(tokenizer, rows: int, length: int) -> Dataset:
    corpus = load_code_corpus(seed=0, max_files=200)
    blocks = chunk_for_causal_lm(corpus["test"], tokenizer, block_size=length, text_column="text")
    if len(blocks) < rows:
        raise ValueError(
            f"only {len(blocks)} blocks of {length} tokens in the held-out files; ask fewer --rows."
        )
    return blocks.select(range(rows))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (its /proc stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(folder: Path, top_k: int, threads: int) -> tuple[str, subprocess.Popen]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads), "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "hf_distill.cli", "serve-teacher", str(folder), "--port", str(port)]
    process = subprocess.Popen([*command, "--top_k", str(top_k)], env=env, stdout=subprocess.DEVNULL)
    url, deadline = f"http://127.0.0.1:{port}/v1", time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(url + "/models", timeout=2):
                return url, process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("serve-teacher did not start") from None
            time.sleep(0.3)


def trainer(student, teacher, rows, tokenizer, options, output_dir: Path) -> DistillationTrainer:
    args = DistillationTrainingArguments(
        output_dir=str(output_dir), report_to="none", use_cpu=True, per_device_train_batch_size=options.batch,
        max_steps=options.steps, learning_rate=1e-4, logging_steps=10**6, save_strategy="no", disable_tqdm=True,
        seed=0, temperature=1.0, alpha=1.0, teacher_server_top_k=options.top_k, dataloader_num_workers=0,
    )  # fmt: skip
    return DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=rows,
        processing_class=tokenizer,
        data_collator=default_data_collator,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per timed call")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument(
        "--top_k", type=int, default=20, help="the cache's and the server's k (vLLM's default cap)"
    )
    parser.add_argument("--server_threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--tiny", action="store_true", help="a random 2-layer teacher instead of SmolLM2-135M"
    )
    parser.add_argument("--quick", action="store_true", help="2 rounds, 2 steps of 64 tokens: checks it runs")
    options = parser.parse_args()
    if options.quick:
        options.rounds, options.steps, options.length = 2, 2, 64
    work = Path(tempfile.mkdtemp(prefix="bench_served_"))
    folder = teacher_folder(options.tiny, work)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    teacher = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    rows = code_rows(tokenizer, options.steps * options.batch, options.length)
    cached = cache_teacher_outputs(teacher, rows, top_k=options.top_k, temperature=1.0)
    url, server = start_server(folder, options.top_k, options.server_threads)
    try:
        torch.manual_seed(0)
        student = gpt2_student_for(teacher, n_layer=2, n_embd=256, n_head=4)
        trainers = {
            "live teacher (in-process)": trainer(
                copy.deepcopy(student), teacher, rows, tokenizer, options, work / "a"
            ),
            "top-k cache": trainer(copy.deepcopy(student), None, cached, tokenizer, options, work / "b"),
            "served teacher (localhost)": trainer(
                copy.deepcopy(student), url, rows, tokenizer, options, work / "c"
            ),
        }
        server_cores: list[float] = []

        def served_call() -> None:
            cpu, start = cpu_seconds(server.pid), time.perf_counter()
            trainers["served teacher (localhost)"].train()
            server_cores.append((cpu_seconds(server.pid) - cpu) / (time.perf_counter() - start))

        variants = {name: t.train for name, t in trainers.items()}
        variants["served teacher (localhost)"] = served_call
        times = time_variants(variants, options.rounds)
        server_cores = server_cores[-options.rounds :]  # the warm-up call is not timed
        served = times.others["served teacher (localhost)"]
        # The server is this benchmark's own process: its cores are not other load.
        times.others["served teacher (localhost)"] = [max(o - s, 0.0) for o, s in zip(served, server_cores)]
    finally:
        server.kill()
        server.wait(timeout=30)
    rows_out = summarize(times, "live teacher (in-process)")
    for row in rows_out:
        row["steps_per_s"] = options.steps / row["median_s"]
    rows_out[-1]["server_cores"] = server_cores
    meta = {
        "teacher": "tiny 2-layer GPT-2" if options.tiny else TEACHER,
        "vocab": teacher.config.vocab_size,
        "top_k": options.top_k,
        "steps_per_call": options.steps,
        "batch": f"{options.batch}x{options.length}",
        "server_threads": options.server_threads,
    }
    extra = {"note": "ratios are time per call against the live teacher; a loaded machine's are not results"}
    name = "served_teacher" + ("_tiny" if options.tiny else "") + ("_quick" if options.quick else "")
    report(name, rows_out, meta, extra)
    for row in rows_out:
        print(f"{row['variant']:<30} {row['steps_per_s']:.3f} steps/s")


if __name__ == "__main__":
    main()
