"""The package's shape rules, checked on its source (the import layers are checked by `lint-imports`):
no private name imported from another module, modules under 500 lines, functions under 80 lines (dataclass
field lists are not functions), and DistillationTrainer well under 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "hf_distill"
SOURCES = sorted(PACKAGE.rglob("*.py"))
MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_TRAINER_LINES = 500, 80, 400


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def test_the_package_is_found():
    assert len(SOURCES) > 20 and PACKAGE / "trainer.py" in SOURCES


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_name_crosses_modules(path):
    crossing = [
        f"line {node.lineno}: {alias.name} from {'.' * node.level}{node.module or ''}"
        for node in ast.walk(parse(path))
        if isinstance(node, ast.ImportFrom)
        and (node.level > 0 or (node.module or "").startswith("hf_distill"))
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
    ]
    assert not crossing, "private names imported from another module (give them a public home): " + "; ".join(
        crossing
    )


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_stay_small(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.name} has {lines} lines; split it by concept"
    for node in ast.walk(parse(path)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, f"{path.name}:{node.lineno} {node.name} has {length} lines"


def test_the_trainer_stays_an_orchestrator():
    (trainer,) = [
        node
        for node in ast.walk(parse(PACKAGE / "trainer.py"))
        if isinstance(node, ast.ClassDef) and node.name == "DistillationTrainer"
    ]
    length = trainer.end_lineno - trainer.lineno + 1
    assert length <= MAX_TRAINER_LINES, f"DistillationTrainer has {length} lines"


def test_the_checks_see_a_violation(tmp_path):
    # The rules must be able to fail: a module importing a private name and with a long function.
    bad = tmp_path / "bad.py"
    bad.write_text("from .losses import _secret\n\n\ndef long():\n" + "    x = 1\n" * 90)
    with pytest.raises(AssertionError, match="private names"):
        test_no_private_name_crosses_modules(bad)
    with pytest.raises(AssertionError, match="long has 91 lines"):
        test_modules_and_functions_stay_small(bad)


def test_public_names_resolve_and_cover_cross_tokenizer_distillation():
    """``from hf_distill import *`` gives every name of ``__all__``, and a user needs no internal module path
    for teachers with another tokenizer: the dataset preparation, the vocabulary map, the embedding transfer
    and GPT-2's offline tokenizer are exported at the top."""
    import hf_distill

    missing = [name for name in hf_distill.__all__ if not hasattr(hf_distill, name)]
    assert missing == []
    assert len(set(hf_distill.__all__)) == len(hf_distill.__all__)
    for name in (
        "prepare_cross_tokenizer_dataset",
        "vocabulary_map",
        "transfer_vocabulary",
        "gpt2_tokenizer_folder",
    ):
        assert name in hf_distill.__all__
