"""Held-out code-completion prompts: the documented functions of source files no training block came from.

Each top-level ``def`` whose body opens with a docstring and goes on with code gives one prompt:

* ``prompt``: the source from the ``def`` line to the end of the docstring, with a final newline (decorators
  are left out: the prompt is what a user types before asking for the body);
* ``reference``: the rest of the function, its body as written in the file;
* ``doctest``: True when the docstring holds ``>>>`` examples, which :func:`doctest_program` turns into a
  program that runs them on a completed function (in :mod:`.sandbox`, never in the training process);
* ``imports``: the file's top-level absolute imports, so the examples see the names the body may use.

Methods and nested functions are skipped: their bodies need a class or an enclosing scope that the prompt
does not show, and their doctests cannot run on the function alone.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class CodePrompt:
    """One held-out function cut into the prompt a model completes and the body the file holds."""

    path: str
    name: str
    prompt: str
    reference: str
    doctest: bool
    imports: str
    body_indent: str


def _imports(tree: ast.Module) -> str:
    """The module's top-level absolute imports, one per line (relative ones cannot run outside the package)."""
    lines = [
        ast.unparse(node)
        for node in tree.body
        if isinstance(node, ast.Import) or (isinstance(node, ast.ImportFrom) and node.level == 0)
    ]
    return "\n".join(lines)


def _has_docstring(node: ast.FunctionDef) -> bool:
    first = node.body[0]
    return (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    )


def function_prompts(source: str, path: str = "<string>") -> list[CodePrompt]:
    """The prompts of one file (module docstring), in file order; a file that does not parse gives none."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    lines = source.splitlines(keepends=True)
    imports = _imports(tree)
    prompts = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef) or len(node.body) < 2 or not _has_docstring(node):
            continue
        docstring_end = node.body[0].end_lineno
        body_start = node.body[1].lineno
        if node.body[1].col_offset == 0 or body_start <= docstring_end:
            continue  # a body on the docstring's line (``"""doc"""; return x``) cannot be cut at a line
        first_line = lines[body_start - 1]
        indent = first_line[: len(first_line) - len(first_line.lstrip())]
        prompt = "".join(lines[node.lineno - 1 : docstring_end])
        reference = "".join(lines[docstring_end : node.end_lineno])
        if not prompt.endswith("\n"):
            prompt += "\n"
        prompts.append(
            CodePrompt(
                path=path,
                name=node.name,
                prompt=prompt,
                reference=reference,
                doctest=">>>" in (ast.get_docstring(node) or ""),
                imports=imports,
                body_indent=indent,
            )
        )
    return prompts


def _round_robin(prompts: list[CodePrompt]) -> list[CodePrompt]:
    """The first prompt of each file, then the second of each, ...: a short list spans many files."""
    by_file: dict[str, list[CodePrompt]] = {}
    for prompt in prompts:
        by_file.setdefault(prompt.path, []).append(prompt)
    queues = list(by_file.values())
    ordered = []
    for rank in range(max((len(q) for q in queues), default=0)):
        ordered += [q[rank] for q in queues if rank < len(q)]
    return ordered


def held_out_prompts(
    files: Iterable[tuple[str, str]], limit: int, *, max_prompt_chars: int = 1500
) -> list[CodePrompt]:
    """Up to ``limit`` prompts from ``files`` (``(path, text)`` of held-out files, in a fixed order).

    Up to half are functions with doctests (few, and the only ones whose behaviour is checked), the rest
    without; within each group one function per file in turn, so a short list spans many files. Prompts longer
    than ``max_prompt_chars`` are skipped: a long docstring would leave no room for the body within the
    models' context.
    """
    if limit < 1:
        raise ValueError(
            f"limit={limit}: ask for at least one prompt (or turn the generation evaluation off)."
        )
    found: list[CodePrompt] = []
    doctest_files, other_files = set(), set()
    for path, text in files:
        # Parsing stops once the round-robin below has its pick: a first prompt from enough files of each kind.
        if len(doctest_files) >= limit // 2 and len(other_files) >= limit:
            break
        for prompt in function_prompts(text, path):
            if len(prompt.prompt) <= max_prompt_chars:
                found.append(prompt)
                (doctest_files if prompt.doctest else other_files).add(path)
    with_doctest = _round_robin([p for p in found if p.doctest])[: limit // 2]
    others = _round_robin([p for p in found if not p.doctest])
    return with_doctest + others[: limit - len(with_doctest)]


def module_name(path: str) -> str | None:
    """The dotted module name of a source file's path relative to its library root (``http/cookiejar.py`` ->
    ``http.cookiejar``, ``json/__init__.py`` -> ``json``), or None when it is not a module path."""
    if not path.endswith(".py"):
        return None
    parts = path[: -len(".py")].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) if parts and all(part.isidentifier() for part in parts) else None


def doctest_program(prompt: CodePrompt, completion: str) -> str:
    """A program that runs the docstring's examples on the completed function and exits 0 when every example
    passes, 1 when one fails or none ran (an error when the completed code does not run at all).

    The function is defined among the names of its own module when that module imports (the examples and the
    body may use the module's other functions and constants; the completed function replaces the module's),
    else after the file's top-level imports alone.
    """
    source = f"{prompt.imports}\n{prompt.prompt}{completion}"
    return (
        "import doctest as _doctest, importlib as _importlib, sys as _sys\n"
        "try:\n"
        f"    _globs = dict(vars(_importlib.import_module({module_name(prompt.path)!r})))\n"
        "except Exception:\n"
        "    _globs = {'__name__': '__main__'}\n"
        f"exec(compile({source!r}, '<completion>', 'exec'), _globs)\n"
        f"_tests = _doctest.DocTestFinder().find(_globs[{prompt.name!r}], {prompt.name!r}, globs=_globs)\n"
        "_runner = _doctest.DocTestRunner(optionflags=_doctest.ELLIPSIS)\n"
        "for _test in _tests:\n"
        "    _runner.run(_test)\n"
        "_result = _runner.summarize(verbose=False)\n"
        "_sys.exit(0 if _result.attempted and not _result.failed else 1)\n"
    )
