"""Code data (causal LM) for the recipes: the ``.py`` files of the running Python's standard library, present on
every machine, split by file so held-out perplexity is measured on files no training block came from.
"""

from __future__ import annotations

import os
import random
import sysconfig
from pathlib import Path

from datasets import Dataset, DatasetDict

from .data_common import check_limit, group_split

# Folders of the stdlib that hold tests, test data or third-party code rather than the library itself.
_EXCLUDED_STDLIB_DIRS = frozenset(
    {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
)


def _stdlib_sources() -> list[tuple[str, str]]:
    """``(relative path, text)`` of the stdlib's own ``.py`` files, sorted by path."""
    root = Path(sysconfig.get_paths()["stdlib"])
    sources = []
    for folder, subfolders, files in os.walk(root):
        # Pruning in place keeps os.walk out of site-packages, which can hold far more files than the stdlib.
        subfolders[:] = sorted(d for d in subfolders if d not in _EXCLUDED_STDLIB_DIRS)
        for name in files:
            if not name.endswith(".py"):
                continue
            path = Path(folder) / name
            try:
                text = path.read_bytes().decode("utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            if text.strip():
                sources.append((path.relative_to(root).as_posix(), text))
    sources.sort()
    return sources


def python_stdlib_files(limit: int | None = None, seed: int = 0) -> list[Path]:
    """The ``.py`` files of the running Python's standard library: real code, present on every machine.

    Leaves out ``test``/``tests``/``idle_test`` folders (test suites and lib2to3's test data),
    ``site-packages``, empty files and files that are not valid UTF-8. Sorted by path; with ``limit`` a
    sample of that many files drawn with ``seed``, still sorted.
    """
    check_limit(limit)
    root = Path(sysconfig.get_paths()["stdlib"])
    paths = [root / relative for relative, _ in _stdlib_sources()]
    if limit is not None and limit < len(paths):
        paths = sorted(random.Random(seed).sample(paths, limit))
    return paths


def load_code_corpus(
    seed: int = 42, held_out_fraction: float = 0.1, max_files: int | None = None
) -> DatasetDict:
    """The stdlib as a causal-LM corpus: splits train/validation/test of ``{"path", "text"}``, split by file.

    Validation and test each get ``held_out_fraction`` of the files (at least one), so held-out perplexity
    is measured on files the model never trained on. ``path`` is relative to the stdlib folder. With
    ``max_files``, a sample of that many files (drawn with ``seed``) is split.
    """
    if not 0.0 < held_out_fraction < 0.5:
        raise ValueError(
            f"held_out_fraction={held_out_fraction} is outside (0, 0.5): validation and test each take that "
            "share of the files and training needs the rest; pass a value such as 0.1."
        )
    check_limit(max_files, "max_files")
    sources = _stdlib_sources()
    if max_files is not None and max_files < len(sources):
        sources = sorted(random.Random(seed).sample(sources, max_files))
    paths = [path for path, _ in sources]
    splits = group_split(paths, seed=seed, validation_size=held_out_fraction, test_size=held_out_fraction)
    return DatasetDict(
        {
            split: Dataset.from_dict(
                {"path": [paths[i] for i in rows], "text": [sources[i][1] for i in rows]}
            )
            for split, rows in splits.items()
        }
    )
