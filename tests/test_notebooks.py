"""Every notebook in notebooks/ runs top to bottom (nbclient) on its small settings; a failing cell fails the test.

The kernel is this interpreter (``sys.executable -m ipykernel_launcher``), not whatever ``python3`` kernelspec
the machine has installed, so the notebooks import the hf_distill under test in a fresh virtual environment
without ``ipykernel install``. The notebooks use the real offline models and data, hence ``slow``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import psutil
import pytest

from tests.helpers.paths import NOTEBOOKS

pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from jupyter_client.kernelspec import KernelSpec, KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

NOTEBOOK_DIR = NOTEBOOKS
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = {"quickstart", "sentiment", "ner", "codegen"}


class ThisInterpreter(KernelSpecManager):
    """Resolves every kernel name to an IPython kernel running on the interpreter that runs the tests."""

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        return KernelSpec(
            argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            display_name=f"Python ({sys.executable})",
            language="python",
        )


def execute(path: Path, workdir: Path, timeout: int = 300) -> nbformat.NotebookNode:
    notebook = nbformat.read(path, as_version=4)
    manager = KernelManager(kernel_name="python3", kernel_spec_manager=ThisInterpreter())
    client = NotebookClient(
        notebook,
        km=manager,
        timeout=timeout,
        resources={"metadata": {"path": str(workdir)}},  # the notebook's working directory
    )
    try:
        client.execute()  # raises CellExecutionError naming the cell and its traceback
    finally:
        # nbclient shuts down only the kernels it started itself: one handed to it (km=) would outlive the
        # test, each holding its models (~800 MB) until pytest exits.
        if manager.has_kernel:
            manager.shutdown_kernel(now=True)
    return notebook


def test_every_task_has_a_notebook():
    assert {p.stem for p in NOTEBOOKS} == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean_and_scalable(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, "a notebook without code"
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, "commit notebooks without outputs"
    source = "\n".join(cell.source for cell in code)
    assert "HF_DISTILL_NOTEBOOK_SMALL" in source and "HF_DISTILL_NOTEBOOK_OUTPUT" in source
    assert "from hf_distill" in source  # the notebooks use the library, not copies of it


def test_kernel_runs_this_interpreter(tmp_path):
    path = tmp_path / "probe.ipynb"
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("import sys, os\nprint(sys.executable)\nprint(os.getcwd())")]
    )
    nbformat.write(notebook, path)
    out = execute(path, tmp_path, timeout=60).cells[0].outputs[0]["text"].split()
    assert Path(out[0]).resolve() == Path(sys.executable).resolve()
    assert Path(out[1]).resolve() == tmp_path.resolve()


@pytest.mark.parametrize("fails", [False, True], ids=["ran", "failed"])
def test_no_kernel_outlives_its_notebook(tmp_path, fails):
    """The kernel process (its pid, written by the kernel itself) is gone once ``execute`` returns or raises."""
    from nbclient.exceptions import CellExecutionError

    path, pid_file = tmp_path / "pid.ipynb", tmp_path / "kernel.pid"
    cells = [nbformat.v4.new_code_cell(f"import os\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))")]
    if fails:
        cells.append(nbformat.v4.new_code_cell("raise ValueError('stop here')"))
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    if fails:
        with pytest.raises(CellExecutionError, match="stop here"):
            execute(path, tmp_path, timeout=60)
    else:
        execute(path, tmp_path, timeout=60)
    pid = int(pid_file.read_text())
    assert pid != os.getpid(), "the notebook ran in a kernel of its own"
    assert not _alive(pid), f"kernel process {pid} outlived its notebook"


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped by its parent, does not count)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_failing_cell_fails_the_run(tmp_path):
    from nbclient.exceptions import CellExecutionError

    path = tmp_path / "broken.ipynb"
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("x = 1"),
            nbformat.v4.new_code_cell("raise ValueError('cell 2 broke')"),
        ]
    )
    nbformat.write(notebook, path)
    with pytest.raises(CellExecutionError, match="cell 2 broke"):
        execute(path, tmp_path, timeout=60)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DISTILL_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("HF_DISTILL_NOTEBOOK_OUTPUT", str(tmp_path / "runs"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the notebooks must not need the Hub
    notebook = execute(path, tmp_path)
    run_dir = tmp_path / "runs" / path.stem
    report = json.loads((run_dir / "report.json").read_text())
    assert report["students"] and all(s["metric"] == s["metric"] for s in report["students"])  # not NaN
    figures = sorted(p.name for p in (run_dir / "figures").glob("*.png"))
    assert "metric.png" in figures and "latency.png" in figures
    images = [
        o for cell in notebook.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})
    ]
    assert images, "the notebook displayed no plot"
