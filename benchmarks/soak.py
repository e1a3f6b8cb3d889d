"""Soak: a recipe with two processes, launched back to back, and one run killed with SIGKILL and resumed twice.

    PYTHONPATH=. python benchmarks/soak.py [--runs 5] [--config recipes/configs/sentiment_smoke.yaml]

Every launch is ``accelerate launch --multi_gpu --num_processes 2`` of ``recipes/sentiment.py`` with
``--use_cpu true`` (gloo), as ``tests/recipes/test_run.py`` launches it. For each one the JSON keeps the wall time,
the exit status, whether it hung (no exit within ``--timeout``), the resident set of each of its processes
sampled from ``/proc`` every ``--interval`` seconds (series, peak, last), its CPU time against the cores the
whole machine kept busy, processes of the launch still alive after the launcher exits, ``MemAvailable`` and
the ``/dev/shm`` entries before and after.

Then, with a checkpoint at every step, one run goes uninterrupted (the reference) and one is killed (SIGKILL to
every process of the launch) as soon as the teacher's fine-tune has completed a checkpoint, relaunched with
``--resume_from_checkpoint true``, killed again once the distilled student has completed one, and relaunched to
the end. Its report is compared with the reference (test metrics of teacher and students, every logged loss:
both log every step, since a resumed Trainer restarts the window a logged loss averages over) and so are its
saved weights (fine-tuned teacher, each student).

Writes ``benchmarks/results/soak.json`` and prints one line per launch. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
KIB_PER_MIB = 1024


# ---- /proc --------------------------------------------------------------------------------------------------


def parent_pids() -> dict[int, int]:
    """pid -> parent pid of every process."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            # The fields after the command name (which may hold spaces) start at state; ppid is the next one.
            parents[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    return parents


def tree_pids(root: int) -> list[int]:
    """``root`` and every process below it. Followed by parent, not by session: torch's launcher starts each
    rank in a session of its own."""
    parents = parent_pids()
    found, frontier = [root], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return [pid for pid in found if pid in parents]


def process_sample(pid: int) -> dict[str, Any] | None:
    """Resident set (MiB), CPU seconds and role (launcher / rank <LOCAL_RANK>) of ``pid``; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rank = next((v.split(b"=", 1)[1].decode() for v in environ if v.startswith(b"LOCAL_RANK=")), None)
    return {"rss_mib": rss / KIB_PER_MIB, "cpu_s": cpu, "role": f"rank {rank}" if rank else "launcher"}


def busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot (all cores)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def mem_available_mib() -> float:
    line = next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemAvailable:"))
    return int(line.split()[1]) / KIB_PER_MIB


def shm_entries() -> list[str]:
    return sorted(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else []


# ---- one launch -----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_command(config: Path, output_dir: Path, flags: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        str(ROOT / "recipes" / "sentiment.py"),
        "--config",
        str(config),
        "--output_dir",
        str(output_dir),
        "--use_cpu",
        "true",
        *flags,
    ]


def run_launch(command: list[str], log: Path, timeout: float, interval: float, kill_when=None) -> dict:
    """Runs one launch in its own session, sampling its processes; SIGKILLs it when ``kill_when()`` is true
    or when it runs past ``timeout`` (a hang)."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "CUDA_VISIBLE_DEVICES": "",
    }
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    before = {"mem_available_mib": mem_available_mib(), "shm": shm_entries()}
    busy_start, start = busy_seconds(), time.monotonic()
    with log.open("w") as out:
        launcher = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    series: dict[int, dict[str, Any]] = {}
    killed = hung = False
    while launcher.poll() is None:
        now = time.monotonic() - start
        for pid in tree_pids(launcher.pid):
            sample = process_sample(pid)
            if sample is not None:
                entry = series.setdefault(pid, {"role": sample["role"], "rss_mib": [], "cpu_s": 0.0})
                entry["rss_mib"].append([round(now, 2), round(sample["rss_mib"], 1)])
                entry["cpu_s"] = sample["cpu_s"]
        hung = now > timeout
        if hung or (kill_when is not None and not killed and kill_when()):
            killed = True
            # Every process of the launch at once, as a power cut or the OOM killer of a container would.
            for pid in tree_pids(launcher.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            launcher.wait()
            break
        time.sleep(interval)
    wall = time.monotonic() - start
    busy = busy_seconds() - busy_start
    time.sleep(1.0)  # a rank that outlives the launcher shows up here (reparented, so found by its pid)
    left = [pid for pid in series if pid != launcher.pid and process_sample(pid) is not None]
    own_cpu = sum(entry["cpu_s"] for entry in series.values())
    processes = [
        {
            "pid": pid,
            "role": entry["role"],
            "peak_rss_mib": max(r for _, r in entry["rss_mib"]),
            "last_rss_mib": entry["rss_mib"][-1][1],
            "cpu_s": round(entry["cpu_s"], 1),
            "rss_mib": entry["rss_mib"],
        }
        for pid, entry in sorted(series.items())
    ]
    return {
        "returncode": launcher.returncode,
        "wall_s": round(wall, 1),
        "killed": killed and not hung,
        "hung": hung,
        "left_alive": left,
        "own_cores": round(own_cpu / wall, 2),
        "machine_busy_cores": round(busy / wall, 2),
        "others_busy_cores": round(max(busy - own_cpu, 0.0) / wall, 2),
        "mem_available_mib": [round(before["mem_available_mib"]), round(mem_available_mib())],
        "shm_new": sorted(set(shm_entries()) - set(before["shm"])),
        "processes": processes,
        "log": log.name,
    }


# ---- comparing runs -------------------------------------------------------------------------------------


def report_numbers(run_dir: Path) -> dict[str, float]:
    """Every number of ``report.json`` worth comparing between two runs of one configuration: test metrics of
    teacher and students and every logged loss (teacher fine-tune and each student's curve)."""
    report = json.loads((run_dir / "report.json").read_text())
    numbers = {"teacher/metric": report["teacher"]["metric"]}
    curves = {"teacher": report["teacher"].get("log_history", [])}
    for student in report["students"]:
        numbers[f"{student['name']}/metric"] = student["metric"]
        curves[student["name"]] = report["log_history"][student["name"]]
    for name, history in curves.items():
        for entry in history:
            for key, value in entry.items():
                if key.startswith("loss") and isinstance(value, float):
                    numbers[f"{name}/step {entry.get('step')}/{key}"] = value
    return numbers


def difference(reference: dict[str, float], other: dict[str, float]) -> dict[str, Any]:
    common = sorted(set(reference) & set(other))
    diffs = {key: abs(reference[key] - other[key]) for key in common}
    worst = max(diffs, key=diffs.get) if diffs else None
    return {
        "compared": len(common),
        "only_in_reference": sorted(set(reference) - set(other)),
        "only_in_other": sorted(set(other) - set(reference)),
        "max_abs_diff": diffs[worst] if worst else None,
        "worst": worst,
        "equal": bool(common) and all(d == 0 for d in diffs.values()) and set(reference) == set(other),
    }


def weights_difference(reference: Path, other: Path) -> dict[str, Any]:
    """Largest absolute difference between the saved weights of two runs, per model folder (the fine-tuned
    teacher, each student): what a resumed run must reproduce exactly."""
    from safetensors.torch import load_file

    result = {}
    for path in sorted(reference.rglob("model.safetensors")):
        relative = path.relative_to(reference)
        if any(part.startswith("checkpoint-") for part in relative.parts):
            continue
        if not (other / relative).is_file():
            result[str(relative.parent)] = {"missing": True}
            continue
        want, got = load_file(path), load_file(other / relative)
        diffs = [(a - got[name]).abs().max().item() for name, a in want.items() if name in got]
        result[str(relative.parent)] = {
            "tensors": len(want),
            "same_names": set(want) == set(got),
            "max_abs_diff": max(diffs) if diffs else None,
            "equal": set(want) == set(got) and all(d == 0 for d in diffs),
        }
    return result


def completed_checkpoint(folder: Path) -> bool:
    """Whether ``folder`` holds a checkpoint whose trainer state (written last by Trainer) is on disk."""
    return any((c / "trainer_state.json").is_file() for c in folder.glob("checkpoint-*"))


def print_launch(name: str, result: dict) -> None:
    peaks = ", ".join(
        f"{p['role']} {p['peak_rss_mib']:.0f}" for p in result["processes"] if p["role"] != "launcher"
    )
    print(
        f"{name:<22} rc={result['returncode']} {result['wall_s']:>7.1f}s killed={result['killed']} "
        f"hung={result['hung']} left={result['left_alive']} peak RSS MiB [{peaks}] "
        f"others busy {result['others_busy_cores']:.2f} cores",
        flush=True,
    )


# ---- the soak -------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "recipes" / "configs" / "sentiment_smoke.yaml")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--work_dir", type=Path, default=Path(tempfile.gettempdir()) / "hf_distill_soak")
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds before a launch counts as hung"
    )
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between /proc samples")
    parser.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    parser.add_argument("flags", nargs="*", help="extra recipe flags, after --")
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)

    launches: dict[str, dict] = {}

    def launch(name: str, flags: list[str], output_dir: Path, kill_when=None) -> dict:
        result = run_launch(
            launch_command(args.config, output_dir, [*args.flags, *flags]),
            args.work_dir / f"{name}.log",
            args.timeout,
            args.interval,
            kill_when,
        )
        launches[name] = result
        print_launch(name, result)
        return result

    for i in range(1, args.runs + 1):
        launch(f"back_to_back_{i}", [], args.work_dir / f"run{i}")
    runs = [args.work_dir / f"run{i}" for i in range(1, args.runs + 1)]
    finished = [r for r in runs if (r / "report.json").is_file()]
    repeat = {r.name: difference(report_numbers(finished[0]), report_numbers(r)) for r in finished[1:]}

    # A logged loss averages the steps since the previous log, and a resumed Trainer starts that window at the
    # checkpoint: logged every step, the two runs' curves are comparable entry by entry.
    every_step = ["--save_strategy", "steps", "--save_steps", "1", "--logging_steps", "1"]
    launch("reference", every_step, args.work_dir / "reference")
    killed_dir = args.work_dir / "killed"
    resume = [*every_step, "--resume_from_checkpoint", "true"]
    launch("killed_1", every_step, killed_dir, lambda: completed_checkpoint(killed_dir / "teacher"))
    students = killed_dir / "students"
    launch(
        "killed_2_resumed",
        resume,
        killed_dir,
        lambda: (
            students.is_dir()
            and any(completed_checkpoint(s) for s in students.iterdir() if s.name.endswith("distilled"))
        ),
    )
    launch("resumed_to_end", resume, killed_dir)
    resumed = weights = None
    if (args.work_dir / "reference" / "report.json").is_file() and (killed_dir / "report.json").is_file():
        resumed = difference(report_numbers(args.work_dir / "reference"), report_numbers(killed_dir))
        weights = weights_difference(args.work_dir / "reference", killed_dir)

    peaks = {
        name: {p["role"]: p["peak_rss_mib"] for p in result["processes"]} for name, result in launches.items()
    }
    summary = {
        "hangs": [name for name, r in launches.items() if r["hung"]],
        "failed": [name for name, r in launches.items() if r["returncode"] != 0 and not r["killed"]],
        "left_alive": {name: r["left_alive"] for name, r in launches.items() if r["left_alive"]},
        "shm_new": {name: r["shm_new"] for name, r in launches.items() if r["shm_new"]},
        "peak_rss_mib": peaks,
        "back_to_back_vs_first": repeat,
        "resumed_vs_reference": resumed,
        "resumed_vs_reference_weights": weights,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "soak",
        "config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
        "extra_flags": args.flags,
        "summary": summary,
        "launches": launches,
        "machine": {"python": sys.version.split()[0], "cpus": os.cpu_count()},
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary, indent=1, default=str))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
