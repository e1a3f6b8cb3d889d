"""Running untrusted code (a model's completions, their doctests) away from the training process.

:func:`run_untrusted` runs a program in a child ``python -I`` (isolated mode: no user site, no ``PYTHON*``
variables, no current folder on ``sys.path``) in a fresh empty temporary folder, which is its working folder,
``HOME`` and ``TMPDIR`` and is deleted afterwards, with an empty environment otherwise. A short bootstrap sets
the child's limits before the program is read from stdin:

* ``RLIMIT_CPU``: CPU seconds; the kernel kills a busy loop at the limit;
* ``RLIMIT_AS``: address space, so a huge allocation raises ``MemoryError`` instead of swapping the machine;
* ``RLIMIT_FSIZE``: the largest file it may write (a longer write fails with ``EFBIG``);
* ``RLIMIT_NPROC`` 0 (no new processes; not enforced for root) and ``RLIMIT_CORE`` 0;
* a wall-clock timeout, after which the child's whole process group is killed (a program asleep uses no CPU);
* an audit hook (:pep:`578`) that refuses, with ``PermissionError``, opening a file for writing outside the
  temporary folder, removing or renaming files outside it, starting processes, opening sockets and loading
  native libraries with ``ctypes``.

This limits the damage of code that is wrong (an endless loop, a runaway allocation, a file written in the
wrong place); it is not a security boundary against code written to escape (an audit hook can be worked
around from inside Python). Run code from models you do not trust in a container or a VM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

# Runs in the child before the program: limits, then the audit hook, then the program from stdin. Limits come
# as argv[1:] (cpu seconds, address-space bytes, file bytes).
_BOOTSTRAP = r"""
import os, resource, sys
def install(cpu, memory, file_size):
    for limit, value in ((resource.RLIMIT_CPU, cpu), (resource.RLIMIT_AS, memory),
                         (resource.RLIMIT_FSIZE, file_size), (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NPROC, 0)):
        resource.setrlimit(limit, (value, value))
    root = os.path.realpath(os.getcwd()) + os.sep
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    path_events = {"os.remove", "os.rmdir", "os.rename", "os.mkdir", "shutil.rmtree", "os.chmod", "os.link",
                   "os.symlink", "os.truncate", "os.utime"}
    refused = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
               "os.kill", "os.killpg", "socket.connect", "socket.bind", "ctypes.dlopen", "ctypes.dlsym",
               "ctypes.cdata"}
    def inside(path):
        if isinstance(path, int):
            return True
        path = os.fsdecode(os.fspath(path))
        return os.path.normpath(os.path.join(root, path)).startswith(root)
    def guard(event, args):
        if event == "open":
            path, mode, flags = args
            writes = any(c in (mode or "") for c in "wax+") or bool((flags or 0) & write_flags)
            if writes and not inside(path):
                raise PermissionError(f"sandbox: writing {path!r} outside the temporary folder is refused")
        elif event in path_events:
            for path in args[:2]:
                if isinstance(path, (str, bytes, os.PathLike)) and not inside(path):
                    raise PermissionError(f"sandbox: {event} on {path!r} outside the temporary folder is refused")
        elif event in refused:
            raise PermissionError(f"sandbox: {event} is refused")
    sys.addaudithook(guard)
source = sys.stdin.read()
install(*(int(v) for v in sys.argv[1:4]))
del install
exec(compile(source, "<untrusted>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
"""


@dataclass(frozen=True)
class SandboxResult:
    """How a program ended: ``returncode`` (negative: killed by that signal), its output (truncated to
    ``max_output_chars`` each) and whether the wall-clock timeout killed it."""

    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool

    @property
    def passed(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def _check_limits(timeout_s: float, cpu_s: int, memory_bytes: int, file_bytes: int) -> None:
    for name, value in (
        ("timeout_s", timeout_s),
        ("cpu_s", cpu_s),
        ("memory_bytes", memory_bytes),
        ("file_bytes", file_bytes),
    ):
        if not value > 0:
            raise ValueError(
                f"{name}={value}: every sandbox limit must be > 0, or untrusted code would run unbounded; pass a "
                "positive value (defaults: 10 s wall clock, 5 CPU seconds, 512 MiB, 1 MiB files)."
            )


def run_untrusted(
    program: str,
    *,
    timeout_s: float = 10.0,
    cpu_s: int = 5,
    memory_bytes: int = 512 * 2**20,
    file_bytes: int = 2**20,
    max_output_chars: int = 4000,
) -> SandboxResult:
    """Runs ``program`` (Python source) in a child process under the limits of the module docstring."""
    _check_limits(timeout_s, cpu_s, memory_bytes, file_bytes)
    if sys.platform == "win32":  # pragma: no cover - resource limits are POSIX-only
        raise OSError(
            "The sandbox needs POSIX resource limits; run the generation evaluation on Linux or macOS."
        )
    with tempfile.TemporaryDirectory(prefix="hf_distill_sandbox_") as folder:
        command = [
            sys.executable,
            "-I",
            "-B",
            "-c",
            _BOOTSTRAP,
            str(cpu_s),
            str(memory_bytes),
            str(file_bytes),
        ]
        env = {"HOME": folder, "TMPDIR": folder, "PATH": os.defpath, "LC_ALL": "C.UTF-8"}
        child = subprocess.Popen(
            command,
            cwd=folder,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, killed whole at the timeout
        )
        timed_out = False
        try:
            stdout, stderr = child.communicate(program.encode("utf-8"), timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(child.pid, signal.SIGKILL)
            stdout, stderr = child.communicate()
    return SandboxResult(
        returncode=child.returncode,
        stdout=stdout.decode("utf-8", "replace")[-max_output_chars:],
        stderr=stderr.decode("utf-8", "replace")[-max_output_chars:],
        timed_out=timed_out,
    )
