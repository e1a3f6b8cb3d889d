"""The package's shape rules, checked on its source (the import layers are checked by `lint-imports`):
no private name imported from another module, modules under 500 lines, functions under 80 lines (dataclass
field lists are not functions), DistillationTrainer well under 400 lines, and an ``Args:`` block naming every
parameter in the docstring of each public function and class (what ``help()`` shows)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import types
from pathlib import Path

import pytest
import transformers

from tests.helpers.paths import PACKAGE

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
    for teachers with another tokenizer: the dataset preparation, the vocabulary map and the embedding transfer
    are exported at the top (GPT-2's offline tokenizer is a recipe asset: ``hf_distill.recipes.offline``)."""
    import hf_distill

    missing = [name for name in hf_distill.__all__ if not hasattr(hf_distill, name)]
    assert missing == []
    assert len(set(hf_distill.__all__)) == len(hf_distill.__all__)
    for name in (
        "prepare_cross_tokenizer_dataset",
        "vocabulary_map",
        "transfer_vocabulary",
    ):
        assert name in hf_distill.__all__


# `hf_distill.__all__` before the package was cut into folders: every name still imports from `hf_distill`.
ALL_BEFORE_THE_FOLDERS = [
    "DataArguments", "DistillationTrainer", "DistillationTrainingArguments", "FeatureMapMatcher", "KDLossParts",
    "MultiTaskDistillationTrainer", "MultiTeacherDistillationTrainer", "MultiTeacherTrainingArguments",
    "MutualLearningTrainer", "NerData", "OnPolicyDistillationTrainer", "OnPolicyDistillationTrainingArguments",
    "PER_POSITION_LOSSES", "ReportArguments", "SENTIMENT_LABELS", "SelfDistillationTrainer",
    "SelfDistillationTrainingArguments", "StudentArguments", "TeacherArguments", "TeacherCacheCollator", "TopkCodec",
    "TupleCollator", "__version__", "accuracy_f1", "agreement", "cache_teacher_outputs", "check_not_empty",
    "chunk_for_causal_lm", "count_parameters", "distillation_loss", "fused_linear_distillation_loss",
    "generate_teacher_completions", "gpt2_student_for", "gpt2_tokenizer_folder", "load_code_corpus", "load_ner",
    "load_report", "load_rotten_tomatoes", "load_sentiment", "load_teacher_cache", "load_wnut", "make_report",
    "model_size_on_disk", "parse_args_with_config", "perplexity", "prepare_cross_tokenizer_dataset",
    "push_student", "python_stdlib_files", "read_conll", "render_model_card", "resolve_model_path", "run_recipe",
    "select_layers", "seqeval_metrics", "smollm2_folder", "student_from_config", "student_from_teacher",
    "task_cross_entropy", "tokenize_and_align_labels", "tokenize_for_classification", "topk_distillation_loss",
    "transfer_vocabulary", "vocabulary_map", "write_model_card", "write_teacher_cache",
]  # fmt: skip


@pytest.mark.parametrize("name", ALL_BEFORE_THE_FOLDERS)
def test_every_earlier_top_level_name_still_imports(name):
    import importlib

    import hf_distill

    if name in hf_distill.RECIPE_NAMES:
        # A recipe helper moved to the recipe layer: it still resolves, and the warning names its new home.
        home = hf_distill.RECIPE_NAMES[name]
        with pytest.warns(DeprecationWarning, match=rf"moved to {home}\.{name}"):
            value = getattr(hf_distill, name)
        assert value is getattr(importlib.import_module(home), name)
        assert name not in hf_distill.__all__
    else:
        assert name in hf_distill.__all__ and hasattr(hf_distill, name)


def test_an_unknown_top_level_name_is_an_attribute_error():
    import hf_distill

    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        hf_distill.no_such_name  # noqa: B018


@pytest.mark.parametrize("old", sorted(__import__("hf_distill").MOVED_MODULES))
def test_a_module_of_the_flat_layout_imports_from_its_new_place(old):
    """`import hf_distill.<old>` gives the module at its new place, with a warning that names it."""
    import importlib
    import sys

    import hf_distill

    new = f"hf_distill.{hf_distill.MOVED_MODULES[old]}"
    assert not (PACKAGE / f"{old.replace('.', '/')}.py").exists(), f"{old} is still a module of its own"
    sys.modules.pop(f"hf_distill.{old}", None)
    with pytest.warns(
        DeprecationWarning,
        match=rf"hf_distill\.{re.escape(old)} moved to {re.escape(new)}; import it from there",
    ):
        module = importlib.import_module(f"hf_distill.{old}")
    assert module is importlib.import_module(new) and module.__name__ == new


# Recipe modules folded into the module whose step they were, and a name each held: the old deep import of the
# name still works.
FOLDED_RECIPE_NAMES = {
    "recipes.evaluation": "score_models",
    "recipes.codegen_extras": "finish_codegen_report",
    "recipes.teacher_reuse": "with_teacher_outputs",
}


@pytest.mark.parametrize("old", sorted(FOLDED_RECIPE_NAMES))
def test_a_folded_recipe_module_still_gives_its_names(old):
    import importlib
    import sys

    import hf_distill

    name, new = (
        FOLDED_RECIPE_NAMES[old],
        importlib.import_module(f"hf_distill.{hf_distill.MOVED_MODULES[old]}"),
    )
    sys.modules.pop(f"hf_distill.{old}", None)
    with pytest.warns(DeprecationWarning, match=rf"moved to {re.escape(new.__name__)};"):
        value = getattr(importlib.import_module(f"hf_distill.{old}"), name)
    assert value is getattr(new, name)


def test_the_package_top_holds_few_modules():
    """The concepts live in folders; at the top only the public face, the orchestrator and what every folder
    rests on (at most 15 modules beside the subpackages, each subpackage's ``__init__`` listing its names)."""
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 15, top
    for init in PACKAGE.glob("*/__init__.py"):
        tree = parse(init)
        assert ast.get_docstring(tree), f"{init} says nothing of what it owns"
        if init.parent.name not in ("recipes", "modes"):
            assert any(
                isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets)
                for node in tree.body
            ), f"{init} lists no public names"


# A Google-style section that ends the ``Args:`` block.
NEXT_SECTION = re.compile(r"\n\s*(?:Returns|Raises|Yields|Examples?|Notes?|Attributes|See Also):")
VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def is_training_arguments(obj: object) -> bool:
    # These dataclasses document each field with `metadata={"help": ...}`, which `--help` and HfArgumentParser
    # show; an Args: block would repeat it.
    return isinstance(obj, type) and issubclass(obj, transformers.TrainingArguments)


def docstring_gaps(namespace: object, names: list[str]) -> list[str]:
    """Each public function or class of ``names`` whose docstring (a class: its own or its ``__init__``'s) has
    no ``Args:`` block, or whose block leaves a parameter of its signature unnamed."""
    gaps = []
    for name in names:
        obj = getattr(namespace, name)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)) or is_training_arguments(obj):
            continue
        docs = [obj.__doc__ or ""]
        if inspect.isclass(obj) and "__init__" in vars(obj):
            docs.append(obj.__init__.__doc__ or "")
        doc = "\n".join(docs)
        if "Args:" not in doc:
            gaps.append(f"{name}: no Args: block")
            continue
        block = NEXT_SECTION.split(doc.split("Args:", 1)[1])[0]
        parameters = [
            p.name
            for p in inspect.signature(obj).parameters.values()
            if p.kind not in VARIADIC and p.name != "self"
        ]
        unnamed = [p for p in parameters if not re.search(rf"\b{re.escape(p)}\b", block)]
        if unnamed:
            gaps.append(f"{name}: Args: does not name {unnamed}")
    return gaps


def test_the_public_api_documents_its_parameters():
    import hf_distill

    assert docstring_gaps(hf_distill, hf_distill.__all__) == []
    # The dataclasses left out above do document every field they add to TrainingArguments.
    inherited = {f.name for f in dataclasses.fields(transformers.TrainingArguments)}
    exempt = [
        getattr(hf_distill, n) for n in hf_distill.__all__ if is_training_arguments(getattr(hf_distill, n))
    ]
    assert len(exempt) == 4
    for cls in exempt:
        undocumented = [
            f.name for f in dataclasses.fields(cls) if f.name not in inherited and not f.metadata.get("help")
        ]
        assert undocumented == [], f"{cls.__name__} fields without metadata help: {undocumented}"


def test_the_docstring_rule_sees_a_gap():
    def prose(x, y=1):
        """Adds ``x`` and ``y``, told in prose."""

    def partial(x, *, scale=2.0, **extra):
        """Scales ``x``.

        Args:
            x (Tensor): the input.

        Returns:
            Tensor: ``x * scale``, whose name here is not in the Args: block.
        """

    def complete(x, *, scale=2.0, **extra):
        """Scales ``x``.

        Args:
            x (Tensor): the input.
            scale (float): the factor.
        """

    class Documented:
        def __init__(self, size):
            """Args:
            size (int): how many."""

    class Undocumented:
        def __init__(self, size):
            """Holds ``size`` things."""

    namespace = types.SimpleNamespace(
        prose=prose,
        partial=partial,
        complete=complete,
        Documented=Documented,
        Undocumented=Undocumented,
        Arguments=transformers.TrainingArguments,
        VERSION="1",
    )
    assert docstring_gaps(namespace, list(vars(namespace))) == [
        "prose: no Args: block",
        "partial: Args: does not name ['scale']",
        "Undocumented: no Args: block",
    ]
