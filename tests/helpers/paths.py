"""Folders of the repository the tests read from, computed once from this file's place (``tests/helpers/``)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
SCRIPTS = TESTS / "scripts"
GOLDEN = TESTS / "golden"
RECIPES = REPO / "recipes"
BENCHMARKS = REPO / "benchmarks"
NOTEBOOKS = REPO / "notebooks"
PACKAGE = REPO / "hf_distill"
