"""Runs every benchmark in turn (``make bench``); the peers' comparison needs their separate environment.

    python benchmarks/run_all.py [--rounds 7] [--quick]
    BENCH_PEERS_PYTHON=/tmp/bench-venv/bin/python python benchmarks/run_all.py

Each script prints its table and writes JSON to benchmarks/results/. Run on a quiet machine: the scripts
interleave their variants, but other load still widens the spread.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args()
    flags = ["--rounds", str(options.rounds)] + (["--quick"] if options.quick else [])
    for script in ("bench_classification.py", "bench_causal_lm.py", "bench_cross_tokenizer.py"):
        subprocess.run([sys.executable, str(HERE / script), *flags], check=True)
    peers = os.environ.get("BENCH_PEERS_PYTHON")
    if peers:
        env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
        subprocess.run([peers, str(HERE / "bench_peers.py"), *flags], check=True, env=env)
    else:
        print(
            "\nBENCH_PEERS_PYTHON is not set: skipping the TRL / TextBrewer comparison (see benchmarks/README.md)."
        )


if __name__ == "__main__":
    main()
