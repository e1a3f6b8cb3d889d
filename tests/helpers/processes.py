"""What the tests that start processes share, so that they can run side by side (``make test`` runs the suite
on every core with pytest-xdist, and other checkouts may run theirs on the same machine)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers.paths import REPO


def free_port() -> int:
    """A port nobody listens on now, for a launcher's rendezvous: two runs started at once (other tests, other
    checkouts) would otherwise meet on torch.distributed's default 29500."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serving(model_dir: Path, top_k: int = 16) -> Iterator[tuple[str, subprocess.Popen]]:
    """`hf-distill serve-teacher` of ``model_dir`` in its own process on a free loopback port, until its
    ``/v1/models`` answers; yields ``(url, process)`` and kills the process whatever happens."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "hf_distill.cli", "serve-teacher", str(model_dir)]
    command += ["--port", str(port), "--top_k", str(top_k)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(url + "/models", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve-teacher did not start: {process.stdout.read()}")
            time.sleep(0.2)
        yield url, process
    finally:
        process.kill()
        process.wait(timeout=30)
