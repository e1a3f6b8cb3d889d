"""The sandbox that runs generated code: limits, timeout, and nothing written outside its temporary folder."""

from __future__ import annotations

import pytest

from hf_distill.recipes.sandbox import run_untrusted


def test_a_passing_program_passes_and_its_output_comes_back():
    result = run_untrusted("print(sum(range(5)))")
    assert result.passed and not result.timed_out
    assert result.stdout.strip() == "10"


def test_a_program_that_fails_does_not_pass():
    result = run_untrusted("raise SystemExit(3)")
    assert result.returncode == 3 and not result.passed


def test_an_endless_loop_is_killed_by_the_wall_clock_timeout():
    # Asleep, the loop uses no CPU: only the wall-clock timeout can end it.
    result = run_untrusted("import time\nwhile True:\n    time.sleep(0.05)", timeout_s=1.5, cpu_s=60)
    assert result.timed_out and not result.passed
    assert result.returncode is not None and result.returncode < 0  # killed by a signal


def test_a_busy_loop_is_stopped_by_the_cpu_limit():
    result = run_untrusted("while True:\n    pass", timeout_s=60, cpu_s=1)
    assert not result.timed_out and not result.passed
    assert result.returncode < 0  # SIGXCPU / SIGKILL from the kernel at the CPU limit


def test_a_huge_allocation_fails_cleanly_with_memory_error():
    result = run_untrusted("data = bytearray(4 * 2**30)", memory_bytes=256 * 2**20)
    assert not result.passed and not result.timed_out
    assert result.returncode == 1
    assert "MemoryError" in result.stderr


def test_a_big_file_write_is_stopped_at_the_file_size_limit():
    program = (
        "import os\n"
        "with open('big.bin', 'wb') as f:\n"
        "    f.write(b'x' * (4 * 2**20))\n"
        "print(os.path.getsize('big.bin'))\n"
    )
    result = run_untrusted(program, file_bytes=2**20)
    assert not result.passed
    assert "File too large" in result.stderr or "EFBIG" in result.stderr


def test_nothing_is_written_outside_the_temporary_folder(tmp_path):
    outside = tmp_path / "escaped.txt"
    program = (
        "import os\n"
        "print(os.getcwd())\n"
        "open('inside.txt', 'w').write('ok')\n"  # its own folder: allowed
        "assert os.path.exists('inside.txt')\n"
        f"open({str(outside)!r}, 'w').write('no')\n"
    )
    result = run_untrusted(program)
    assert not result.passed
    assert "PermissionError" in result.stderr and "outside the temporary folder" in result.stderr
    assert not outside.exists()
    folder = result.stdout.strip().splitlines()[0]
    assert "hf_distill_sandbox_" in folder
    import os

    assert not os.path.exists(folder)  # the temporary folder is removed with what was written in it


def test_starting_a_process_is_refused():
    result = run_untrusted("import subprocess\nsubprocess.run(['true'])")
    assert not result.passed
    assert "PermissionError" in result.stderr


def test_the_child_does_not_see_the_parents_environment(monkeypatch):
    monkeypatch.setenv("HF_DISTILL_SECRET_FOR_TEST", "leak")
    result = run_untrusted("import os\nprint(os.environ.get('HF_DISTILL_SECRET_FOR_TEST'))")
    assert result.stdout.strip() == "None"


@pytest.mark.parametrize("name", ["timeout_s", "cpu_s", "memory_bytes", "file_bytes"])
def test_a_limit_that_is_not_positive_is_refused(name):
    with pytest.raises(ValueError, match=f"{name}=0: every sandbox limit must be > 0"):
        run_untrusted("pass", **{name: 0})
