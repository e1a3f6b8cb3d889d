"""Code data (causal LM) for the recipes: the ``.py`` files of the running Python's standard library, present on
every machine, split by file so held-out perplexity is measured on files no training block came from; or your
own corpus, a folder of source files or JSON Lines with a text column.
"""

from __future__ import annotations

import ast
import os
import random
import sysconfig
from pathlib import Path

from datasets import Dataset, DatasetDict

from hf_distill.recipes.data_common import check_limit, group_split
from hf_distill.recipes.data_files import builder_for, carve_missing_splits, data_files, load_data_files

# The source column of code datasets (codeparrot: "content", others "code").
CODE_COLUMNS = ("text", "content", "code")

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


def _source_files(folder: Path, pattern: str) -> list[Path]:
    files = sorted(p for p in folder.glob(pattern) if p.is_file())
    if not files:
        raise ValueError(
            f"the folder {str(folder)!r} has no file matching {pattern!r}: the code corpus is read from those; "
            "pass --source_glob with the pattern of your files (e.g. '**/*.js')."
        )
    return files


def code_column(loaded: DatasetDict, text_column: str | None, source: str) -> str:
    """The column holding the code: ``text_column`` when given, else the first of :data:`CODE_COLUMNS`."""
    columns = next(iter(loaded.values())).column_names
    column = text_column or next((c for c in CODE_COLUMNS if c in columns), None)
    if column is None or column not in columns:
        raise ValueError(
            f"dataset {source!r} has none of the columns {(text_column,) if text_column else CODE_COLUMNS} (it "
            f"has {columns}): the code is read from one of them; rename its source column to 'text' or name it "
            "with --text_column."
        )
    return column


def load_code_files(
    train_file: str | os.PathLike,
    validation_file: str | os.PathLike | None = None,
    test_file: str | os.PathLike | None = None,
    *,
    builder: str | None = None,
    text_column: str | None = None,
    source_glob: str = "**/*.py",
    seed: int = 42,
    validation_size: float = 0.1,
    test_size: float = 0.1,
) -> DatasetDict:
    """Your own code corpus as splits of ``{"text"}``, one row per source file or per JSON record.

    Each of ``train_file``/``validation_file``/``test_file`` is a folder, whose files matching ``source_glob``
    are read whole (``datasets``' ``text`` builder, ``sample_by="document"``), or a ``.jsonl``/``.json``/
    ``.parquet``/``.csv`` file whose ``text_column`` (default: ``text``, ``content`` or ``code``) holds the
    code. A split without its own is cut out of the training rows with ``seed`` (by file, so held-out
    perplexity is measured on files no training block came from), and the cut is reported.
    """
    files = data_files(train_file, validation_file, test_file)
    if all(path.is_dir() for path in files.values()):
        loaded = load_data_files(
            {split: _source_files(path, source_glob) for split, path in files.items()},
            "text",
            sample_by="document",
            keep_linebreaks=True,
        )
    elif any(path.is_dir() for path in files.values()):
        raise ValueError(
            f"{', '.join(str(p) for p in files.values())}: some are folders and some files; give every split "
            "as a folder of source files, or every split as a JSON Lines / Parquet file."
        )
    else:
        loaded = load_data_files(files, builder_for(files, builder, ("json", "parquet", "csv"), "codegen"))
        column = code_column(loaded, text_column, str(files["train"]))
        loaded = DatasetDict(
            {split: ds.select_columns([column]).rename_columns({column: "text"} if column != "text" else {})
             for split, ds in loaded.items()}
        )  # fmt: skip
    return carve_missing_splits(
        loaded, seed=seed, validation_size=validation_size, test_size=test_size, source=str(files["train"])
    )


def stdlib_docstrings(limit: int | None = None) -> list[str]:
    """English prose from the standard library: the paragraphs of its modules', classes' and functions'
    docstrings, whitespace collapsed, in file order; doctest lines (``>>>``) and paragraphs without a letter
    are left out. ``limit`` caps the paragraphs (the first ones)."""
    check_limit(limit)
    paragraphs: list[str] = []
    for relative, text in _stdlib_sources():
        try:
            tree = ast.parse(text, filename=relative)
        except (SyntaxError, ValueError):  # a file of another Python version's grammar: no prose lost
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            docstring = ast.get_docstring(node)
            for block in (docstring or "").split("\n\n"):
                paragraph = " ".join(block.split())
                if paragraph and not paragraph.startswith(">>>") and any(c.isalpha() for c in paragraph):
                    paragraphs.append(paragraph)
                    if limit is not None and len(paragraphs) >= limit:
                        return paragraphs
    return paragraphs
