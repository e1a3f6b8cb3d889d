"""hf_distill: knowledge distillation for Hugging Face Transformers.

The package's folders are its concepts: ``losses`` (pure functions of tensors), ``terms`` (what the trainer sums
for a batch), ``teachers`` (where a batch's target comes from), ``cache`` (the teacher's outputs kept on disk),
``students`` (students built from teachers), ``training`` (checks, checkpoints, placement, preprocessing,
metrics), ``hub`` (the model card and the push), ``reports`` (reports, scorecards, figures), ``modes``
(multi-teacher, self, mutual, multi-task, on-policy, sequence-level), ``export`` (ONNX export, int8, ONNX
Runtime) and ``recipes`` (end-to-end runs and their data). The trainer, its arguments and the batch it passes around sit at the top.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.cache import (
    TeacherCacheCollator,
    TeacherColumnsCollator,
    TopkCodec,
    cache_teacher_outputs,
    load_teacher_cache,
    push_teacher_cache,
    write_teacher_cache,
)
from hf_distill.export import OnnxModel, export_student
from hf_distill.hub import push_student, render_model_card, write_model_card
from hf_distill.losses import (
    PER_POSITION_LOSSES,
    distillation_loss,
    task_cross_entropy,
    topk_distillation_loss,
)
from hf_distill.losses.fused import (
    KDLossParts,
    TeacherHead,
    TeacherLogits,
    TeacherTopk,
    fused_linear_distillation_loss,
)
from hf_distill.modes import (
    MultiTaskDistillationTrainer,
    MultiTeacherDistillationTrainer,
    MultiTeacherTrainingArguments,
    MutualLearningTrainer,
    OnPolicyDistillationTrainer,
    OnPolicyDistillationTrainingArguments,
    SelfDistillationTrainer,
    SelfDistillationTrainingArguments,
    generate_teacher_completions,
)
from hf_distill.reports import load_report, make_report
from hf_distill.students import (
    count_parameters,
    gpt2_student_for,
    layer_importance,
    model_size_on_disk,
    prune_width,
    select_layers,
    student_from_config,
    student_from_teacher,
    transfer_vocabulary,
)
from hf_distill.terms import FeatureMapMatcher
from hf_distill.token_alignment import prepare_cross_tokenizer_dataset, vocabulary_map
from hf_distill.trainer import DistillationTrainer
from hf_distill.training import (
    TupleCollator,
    accuracy_f1,
    agreement,
    chunk_for_causal_lm,
    perplexity,
    seqeval_metrics,
    tokenize_and_align_labels,
    tokenize_for_classification,
)

__version__ = "0.1.0"

__all__ = [
    "DistillationTrainer",
    "DistillationTrainingArguments",
    "FeatureMapMatcher",
    "KDLossParts",
    "MultiTaskDistillationTrainer",
    "MultiTeacherDistillationTrainer",
    "MultiTeacherTrainingArguments",
    "MutualLearningTrainer",
    "OnnxModel",
    "OnPolicyDistillationTrainer",
    "OnPolicyDistillationTrainingArguments",
    "PER_POSITION_LOSSES",
    "SelfDistillationTrainer",
    "SelfDistillationTrainingArguments",
    "TeacherCacheCollator",
    "TeacherColumnsCollator",
    "TeacherHead",
    "TeacherLogits",
    "TeacherTopk",
    "TopkCodec",
    "TupleCollator",
    "__version__",
    "accuracy_f1",
    "agreement",
    "cache_teacher_outputs",
    "chunk_for_causal_lm",
    "count_parameters",
    "distillation_loss",
    "export_student",
    "fused_linear_distillation_loss",
    "generate_teacher_completions",
    "gpt2_student_for",
    "layer_importance",
    "load_report",
    "load_teacher_cache",
    "push_teacher_cache",
    "make_report",
    "model_size_on_disk",
    "perplexity",
    "prepare_cross_tokenizer_dataset",
    "prune_width",
    "push_student",
    "render_model_card",
    "select_layers",
    "seqeval_metrics",
    "student_from_config",
    "student_from_teacher",
    "task_cross_entropy",
    "tokenize_and_align_labels",
    "tokenize_for_classification",
    "topk_distillation_loss",
    "transfer_vocabulary",
    "vocabulary_map",
    "write_model_card",
    "write_teacher_cache",
]

# The recipe layer's names, once exported here: they still import from `hf_distill` with a DeprecationWarning
# naming their home in `hf_distill.recipes`.
RECIPE_NAMES = {
    "DataArguments": "hf_distill.recipes.data_arguments",
    "ReportArguments": "hf_distill.recipes.arguments",
    "StudentArguments": "hf_distill.recipes.arguments",
    "TeacherArguments": "hf_distill.recipes.arguments",
    "parse_args_with_config": "hf_distill.recipes.config",
    "load_code_corpus": "hf_distill.recipes.data_code",
    "python_stdlib_files": "hf_distill.recipes.data_code",
    "check_not_empty": "hf_distill.recipes.data_common",
    "NerData": "hf_distill.recipes.data_ner",
    "load_ner": "hf_distill.recipes.data_ner",
    "load_wnut": "hf_distill.recipes.data_ner",
    "read_conll": "hf_distill.recipes.data_ner",
    "SENTIMENT_LABELS": "hf_distill.recipes.data_sentiment",
    "load_rotten_tomatoes": "hf_distill.recipes.data_sentiment",
    "load_sentiment": "hf_distill.recipes.data_sentiment",
    "gpt2_tokenizer_folder": "hf_distill.recipes.offline",
    "resolve_model_path": "hf_distill.recipes.offline",
    "smollm2_folder": "hf_distill.recipes.offline",
    "run_recipe": "hf_distill.recipes.run",
}

# Modules of the flat layout, and recipe modules folded into the module whose step they were, and where each
# now lives: `import hf_distill.teacher_cache` still works, with a DeprecationWarning naming the new module.
MOVED_MODULES = {
    "attention": "terms.attention",
    "cache_shards": "cache.shards",
    "cache_writer": "cache.writer",
    "card_measures": "hub.card_measures",
    "checkpoints": "training.checkpoints",
    "chunked": "losses.fused.chunked",
    "closed_form": "losses.fused.closed_form",
    "compact_cache": "cache.compact",
    "cross_tokenizer": "teachers.cross_tokenizer",
    "cross_tokenizer_losses": "losses.cross_vocabulary",
    "distributed": "training.placement",
    "feature_maps": "terms.feature_maps",
    "feature_terms": "terms.features",
    "hidden_states": "terms.hidden_states",
    "lm_head": "losses.fused.lm_head",
    "logit_terms": "terms.logits",
    "loss_log": "terms.loss_log",
    "metrics": "training.metrics",
    "model_card": "hub.card",
    "normalization": "terms.normalization",
    "offline": "recipes.offline",
    "preprocessing": "training.preprocessing",
    "push_guard": "hub.push_guard",
    "recipes.codegen_extras": "recipes.generation_eval",
    "recipes.evaluation": "recipes.run",
    "recipes.teacher_reuse": "recipes.training",
    "report": "reports.report",
    "report_format": "reports.format",
    "report_plots": "reports.plots",
    "report_schema": "reports.schema",
    "scorecard": "reports.scorecard",
    "student": "students.build",
    "teacher_cache": "cache.build",
    "teacher_chunks": "losses.fused.teacher_chunks",
    "teacher_origin": "hub.teacher_origin",
    "teacher_signals": "teachers.sources",
    "timing": "reports.timing",
    "topk_codec": "cache.codec",
    "topk_losses": "losses.topk",
    "trainer_card": "hub.trainer_card",
    "trainer_output": "reports.run_folder",
    "tuple_batches": "training.tuple_batches",
    "vocab_transfer": "students.vocab_transfer",
}


def __getattr__(name: str):
    if name in RECIPE_NAMES:
        home = RECIPE_NAMES[name]
        warnings.warn(
            f"hf_distill.{name} moved to {home}.{name} (the recipe layer); import it from there.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(home), name)
    raise AttributeError(f"module 'hf_distill' has no attribute {name!r}")


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an import of a module of the flat layout with the module at its new place."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, leaf = fullname.partition(".")
        if package != __name__ or leaf not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new_name = f"{__name__}.{MOVED_MODULES[spec.name.partition('.')[2]]}"
        warnings.warn(
            f"{spec.name} moved to {new_name}; import it from there.", DeprecationWarning, stacklevel=2
        )
        return importlib.import_module(new_name)

    def exec_module(self, module):
        """The module was executed at its new place."""


if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(MovedModuleFinder())
