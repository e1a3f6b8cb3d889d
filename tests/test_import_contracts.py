"""The import contracts of pyproject.toml can fail: an import across a forbidden boundary, written into a copy
of the package, breaks `lint-imports` and names the contract it breaks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.paths import REPO

ROOT = REPO
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed")


def lint_copy(tmp_path: Path, module: str, line: str) -> subprocess.CompletedProcess:
    """`lint-imports` over a copy of the package where ``module`` (a path under hf_distill/) also has ``line``."""
    shutil.copytree(
        ROOT / "hf_distill", tmp_path / "hf_distill", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    if line:
        target = tmp_path / "hf_distill" / module
        target.write_text(target.read_text() + f"\n{line}\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )


def contract_named(start: str) -> str:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (name,) = [c["name"] for c in contracts if c["name"].startswith(start)]
    return name


def verdicts(output: str) -> str:
    """lint-imports wraps long contract names; one line of words reads them whole."""
    return " ".join(output.split())


def test_the_copy_keeps_every_contract(tmp_path):
    result = lint_copy(tmp_path, "", "")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout and " 0 broken" in verdicts(result.stdout)


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("losses/divergences.py", "import hf_distill.model_kind", "Losses are pure"),
        ("hub/card.py", "import hf_distill.trainer", "The model card, the push and the reports"),
        ("terms/logits.py", "import hf_distill.recipes.run", "The core never imports"),
        ("modes/mutual.py", "import hf_distill.recipes.run", "Modes never import"),
        ("cache/build.py", "import hf_distill.teachers.sources", "CLI over recipe layer"),
    ],
)
def test_an_import_across_a_boundary_breaks_its_contract(tmp_path, module, line, contract):
    name = contract_named(contract)
    result = lint_copy(tmp_path, module, line)
    assert result.returncode != 0
    assert f"{name} BROKEN" in verdicts(result.stdout), result.stdout
