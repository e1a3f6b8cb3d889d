"""hf_distill: knowledge distillation for Hugging Face Transformers."""

from .arguments import DistillationTrainingArguments
from .cache_shards import load_teacher_cache
from .cache_writer import write_teacher_cache
from .chunked import KDLossParts, fused_linear_distillation_loss
from .feature_maps import FeatureMapMatcher
from .hub import push_student, render_model_card, write_model_card
from .losses import PER_POSITION_LOSSES, distillation_loss, task_cross_entropy
from .metrics import accuracy_f1, agreement, perplexity, seqeval_metrics
from .modes import (
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
from .offline import gpt2_tokenizer_folder, resolve_model_path, smollm2_folder
from .preprocessing import chunk_for_causal_lm, tokenize_and_align_labels, tokenize_for_classification
from .recipes.arguments import DataArguments, ReportArguments, StudentArguments, TeacherArguments
from .recipes.config import parse_args_with_config
from .recipes.data_code import load_code_corpus, python_stdlib_files
from .recipes.data_common import check_not_empty
from .recipes.data_ner import NerData, load_ner, load_wnut, read_conll
from .recipes.data_sentiment import SENTIMENT_LABELS, load_rotten_tomatoes, load_sentiment
from .recipes.run import run_recipe
from .report import load_report, make_report
from .student import (
    count_parameters,
    gpt2_student_for,
    model_size_on_disk,
    select_layers,
    student_from_config,
    student_from_teacher,
)
from .teacher_cache import TeacherCacheCollator, cache_teacher_outputs
from .token_alignment import prepare_cross_tokenizer_dataset, vocabulary_map
from .topk_codec import TopkCodec
from .topk_losses import topk_distillation_loss
from .trainer import DistillationTrainer
from .tuple_batches import TupleCollator
from .vocab_transfer import transfer_vocabulary

__version__ = "0.1.0"

__all__ = [
    "run_recipe",
    "TeacherArguments",
    "StudentArguments",
    "ReportArguments",
    "DataArguments",
    "smollm2_folder",
    "gpt2_tokenizer_folder",
    "prepare_cross_tokenizer_dataset",
    "vocabulary_map",
    "transfer_vocabulary",
    "resolve_model_path",
    "parse_args_with_config",
    "generate_teacher_completions",
    "OnPolicyDistillationTrainingArguments",
    "OnPolicyDistillationTrainer",
    "MultiTaskDistillationTrainer",
    "topk_distillation_loss",
    "cache_teacher_outputs",
    "write_teacher_cache",
    "load_teacher_cache",
    "TopkCodec",
    "TeacherCacheCollator",
    "fused_linear_distillation_loss",
    "KDLossParts",
    "PER_POSITION_LOSSES",
    "SENTIMENT_LABELS",
    "DistillationTrainer",
    "TupleCollator",
    "FeatureMapMatcher",
    "DistillationTrainingArguments",
    "MultiTeacherDistillationTrainer",
    "MultiTeacherTrainingArguments",
    "MutualLearningTrainer",
    "SelfDistillationTrainer",
    "SelfDistillationTrainingArguments",
    "NerData",
    "__version__",
    "accuracy_f1",
    "agreement",
    "check_not_empty",
    "chunk_for_causal_lm",
    "count_parameters",
    "distillation_loss",
    "gpt2_student_for",
    "load_code_corpus",
    "load_ner",
    "load_report",
    "load_rotten_tomatoes",
    "load_sentiment",
    "load_wnut",
    "make_report",
    "model_size_on_disk",
    "perplexity",
    "push_student",
    "python_stdlib_files",
    "read_conll",
    "render_model_card",
    "select_layers",
    "seqeval_metrics",
    "student_from_config",
    "student_from_teacher",
    "task_cross_entropy",
    "tokenize_and_align_labels",
    "tokenize_for_classification",
    "write_model_card",
]
