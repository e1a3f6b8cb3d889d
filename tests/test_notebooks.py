"""Every notebook in notebooks/ is committed executed on its small settings, and runs top to bottom (nbclient)
on them; a failing cell fails the test.

The notebooks are run by ``notebooks/build_notebooks.py`` (its ``execute``: a kernel on this interpreter, shut
down after the run, so the notebooks import the hf_distill under test in a fresh virtual environment without
``ipykernel install``). The committed outputs vary from run to run, so their shape is checked, not their
numbers. The runs use the real offline models and data, hence ``slow``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import nbformat
import psutil
import pytest

from tests.helpers.paths import NOTEBOOKS, REPO

pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK_DIR = NOTEBOOKS
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = {"quickstart", "sentiment", "ner", "codegen"}
RECIPE_NOTEBOOKS = {
    "sentiment",
    "ner",
    "codegen",
}  # the ones run through run_recipe, which prints the verdict
MAX_NOTEBOOK_BYTES = 1_000_000
# An absolute path of a machine (a path the outputs name relative to the repository is fine).
ABSOLUTE = r"(?<![\w.~-])/(home|root|tmp|work|Users|usr|opt|var|private)/"
VERDICT = r"^\S+ vs \S+: (distillation beats training alone|training alone beats distillation|no significant difference)"


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", NOTEBOOK_DIR / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


builder = _builder()


def execute(path: Path, workdir: Path, timeout: int = 300) -> nbformat.NotebookNode:
    return builder.execute(nbformat.read(path, as_version=4), workdir, timeout=timeout)


def output_texts(cell: nbformat.NotebookNode) -> list[str]:
    """Every text a code cell's outputs show: streams, and the text forms of rich outputs."""
    texts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            texts.append(output.text)
        texts += [v for k, v in output.get("data", {}).items() if k.startswith("text/")]
    return texts


def test_every_task_has_a_notebook():
    assert {p.stem for p in NOTEBOOKS} == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_with_outputs_and_scalable(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, "a notebook without code"
    source = "\n".join(cell.source for cell in code)
    assert "HF_DISTILL_NOTEBOOK_SMALL" in source and "HF_DISTILL_NOTEBOOK_OUTPUT" in source
    assert "from hf_distill" in source  # the notebooks use the library, not copies of it
    # The cells are the builder's: edit build_notebooks.py and rerun it (--execute), never the notebook.
    built = builder.build(path.stem)
    assert [(c.cell_type, c.id, c.source) for c in notebook.cells] == [
        (c.cell_type, c.id, c.source) for c in built.cells
    ], "the notebook drifted from notebooks/build_notebooks.py: run it with --execute"
    assert notebook.metadata == built.metadata
    # Executed top to bottom, once, without what changes from run to run or names this machine.
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), "commit it executed"
    assert all("execution" not in cell.metadata for cell in code), "execution timestamps were committed"
    assert not any(o.get("name") == "stderr" for cell in code for o in cell.outputs)
    texts = [text for cell in code for text in output_texts(cell)]
    machine = [t for t in texts if str(REPO) in t or str(Path.home()) in t or re.search(ABSOLUTE, t)]
    assert not machine, f"absolute machine paths in the outputs: {machine[0][:300]}"
    assert path.stat().st_size < MAX_NOTEBOOK_BYTES, f"{path.name} is {path.stat().st_size:,} bytes"

    # The shape of what a reader sees: the data, the report's plots, and for the recipes the table and verdict.
    (data_cell,) = [c for c in code if "| test" in c.source]
    assert any(re.search(r"train \d+ \| ", t) for t in output_texts(data_cell)), "the data sizes"
    (report_cell,) = [c for c in code if "make_report(RUN_DIR)" in c.source]
    images = [o for o in report_cell.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2, "the report cell shows the metric and latency plots"
    assert any(t.startswith("report: ") for t in output_texts(report_cell))
    if path.stem in RECIPE_NOTEBOOKS:
        (run_cell,) = [c for c in code if "run_recipe(task" in c.source]
        printed = "".join(output_texts(run_cell))
        assert re.search(r"^\| Model \| Role \|.*\|$", printed, re.M), "the comparison table"
        assert re.search(r"^\|[- |:]+\|$", printed, re.M), "a Markdown table's rule"
        assert re.search(VERDICT, printed, re.M), "the verdict line"
        (card_cell,) = [c for c in code if "check_student_folder" in c.source]
        card = "".join(o.data.get("text/markdown", "") for o in card_cell.outputs if "data" in o)
        assert re.search(r"^\|.*\|$", card, re.M), "the model card's table"
    else:
        (scores_cell,) = [c for c in code if "evaluate_models(models" in c.source]
        (result,) = [o for o in scores_cell.outputs if o.output_type == "execute_result"]
        assert {"teacher", "distilled", "no_kd"} <= set(re.findall(r"'(\w+)': ", result.data["text/plain"]))


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
