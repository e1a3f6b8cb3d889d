"""The codegen recipe's students with their own tokenizer (e.g. GPT-2's, from a SmolLM2 teacher), and bits per
byte, the held-out metric that compares models whatever their tokenizers.

Bits per byte of a model on texts: each text is tokenized by the model's own tokenizer and cut into blocks of
``block_size`` tokens; ``bits/byte = sum of the NLL (nats) of every predicted token / (UTF-8 bytes those
tokens cover * ln 2)``. A block's predicted tokens are its 2nd to last (its 1st when the tokenizer starts with
a special token such as BOS, which predicts it); they cover the block's text from where the 1st token ends to
where the last one ends. Perplexity over the same tokens is reported beside it; it is per token, so it
compares only models of one tokenizer.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import PreTrainedModel, Trainer, default_data_collator, set_seed

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.cache.build import cache_teacher_outputs
from hf_distill.cache.codec import TopkCodec
from hf_distill.losses.divergences import IGNORE_INDEX
from hf_distill.recipes.arguments import RecipeConfig
from hf_distill.recipes.training import derived_args, plain_trainer_args
from hf_distill.students.build import gpt2_student_for
from hf_distill.token_alignment import OFFSETS_COLUMN, TEXT_COLUMN
from hf_distill.trainer import DistillationTrainer
from hf_distill.training.metrics import corpus_bits_per_byte, corpus_perplexity

# The cache the recipe keeps in memory: top-k values in 6-bit codes, a third of float32's bytes (its error
# against the float32 cache is measured in benchmarks/README.md, "Teachers with another tokenizer").
COMPACT = TopkCodec()


def text_blocks(texts: Sequence[str], tokenizer: Any, block_size: int, keep_tail: bool = False) -> Dataset:
    """Each text tokenized (with the tokenizer's special tokens, offsets required) and cut into blocks of
    ``block_size`` tokens; rows hold ``input_ids``, ``attention_mask``, ``labels``, ``distill_offsets`` (relative
    to the block's text) and ``distill_text`` (the text the block's tokens cover). A last block shorter than
    ``block_size`` is kept with ``keep_tail`` (and at least 2 tokens), dropped otherwise."""
    if block_size < 2:
        raise ValueError(
            f"block_size={block_size}: a block needs 2 tokens or more, one to predict the other."
        )
    rows: dict[str, list] = {
        k: [] for k in ("input_ids", "attention_mask", "labels", OFFSETS_COLUMN, TEXT_COLUMN)
    }
    for text in texts:
        encoded = tokenizer(text, return_offsets_mapping=True)
        ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
        for start in range(0, len(ids), block_size):
            block, spans = ids[start : start + block_size], offsets[start : start + block_size]
            if len(block) < block_size and not (keep_tail and len(block) >= 2):
                continue
            begin = min(s for s, e in spans if e > 0) if any(e > 0 for _, e in spans) else 0
            begin = 0 if start == 0 else begin
            end = max(e for _, e in spans)
            rows["input_ids"].append(block)
            rows["attention_mask"].append([1] * len(block))
            rows["labels"].append(list(block))
            rows[OFFSETS_COLUMN].append([[max(s - begin, 0), max(e - begin, 0)] for s, e in spans])
            rows[TEXT_COLUMN].append(text[begin:end])
    return Dataset.from_dict(rows)


@torch.no_grad()
def bits_per_byte(
    model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], block_size: int, batch_size: int = 8
) -> dict[str, float]:
    """``{"bits_per_byte", "perplexity", "tokens", "bytes"}`` of ``model`` on ``texts`` (module docstring)."""
    blocks = text_blocks(texts, tokenizer, block_size, keep_tail=True)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    nll, tokens, scored_bytes = 0.0, 0, 0
    try:
        for first in range(0, len(blocks), batch_size):
            rows = blocks[first : first + batch_size]
            width = max(len(r) for r in rows["input_ids"])
            ids = torch.tensor([r + [0] * (width - len(r)) for r in rows["input_ids"]], device=device)
            mask = torch.tensor(
                [[1] * len(r) + [0] * (width - len(r)) for r in rows["input_ids"]], device=device
            )
            labels = ids.masked_fill(mask == 0, IGNORE_INDEX)[:, 1:]
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            nll += F.cross_entropy(
                logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="sum"
            ).item()
            tokens += int((labels != IGNORE_INDEX).sum())
            for text, offsets in zip(rows[TEXT_COLUMN], rows[OFFSETS_COLUMN]):
                scored_bytes += len(text[offsets[0][1] : offsets[-1][1]].encode("utf-8"))
    finally:
        model.train(was_training)
    return {
        "bits_per_byte": float(corpus_bits_per_byte(nll, max(scored_bytes, 1))),
        "perplexity": float(corpus_perplexity(nll, max(tokens, 1))),
        "tokens": tokens,
        "bytes": scored_bytes,
    }


def cross_tokenizer_student(
    teacher: PreTrainedModel | None, tokenizer: Any, n_layer: int, overrides: dict[str, Any]
) -> PreTrainedModel:
    """A random GPT-2 over ``tokenizer``'s vocabulary, sized by ``overrides`` (n_embd, n_head, n_positions;
    by default the teacher's sizes, or GPT-2 small's without a teacher)."""
    source = teacher if teacher is not None else tokenizer
    return gpt2_student_for(source, n_layer=n_layer, tokenizer=tokenizer, **overrides)


def train_cross_tokenizer_student(
    student: PreTrainedModel,
    train: Dataset,
    tokenizer: Any,
    teacher_tokenizer: Any,
    training_args: DistillationTrainingArguments,
    output_dir: Path,
    *,
    loss: str | None,
    teacher: PreTrainedModel | None = None,
) -> list[dict]:
    """Trains ``student`` on ``train`` (rows of :func:`text_blocks`): with ``cross_tokenizer_loss=loss`` against
    the teacher or the cross-tokenizer cache ``train`` carries, or on the labels alone (``loss`` None, the
    no-KD baseline: same data order and steps). Saves it in ``output_dir``; returns the log history."""
    set_seed(training_args.seed)
    if loss is None:
        args = plain_trainer_args(training_args, output_dir)
        columns = [c for c in train.column_names if c not in ("input_ids", "attention_mask", "labels")]
        trainer = Trainer(
            model=student,
            args=args,
            train_dataset=train.remove_columns(columns),
            data_collator=default_data_collator,
        )
    else:
        args = derived_args(training_args, output_dir, cross_tokenizer_loss=loss)
        trainer = DistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=args,
            train_dataset=train,
            data_collator=default_data_collator,
            processing_class=tokenizer,
            teacher_processing_class=teacher_tokenizer,
        )
    trainer.train()
    trainer.save_model(str(output_dir))
    return trainer.state.log_history


def cache_for_students(
    teacher: PreTrainedModel,
    teacher_tokenizer: Any,
    texts: Sequence[str],
    top_k: int,
    temperature: float,
    codec: TopkCodec | None = COMPACT,
) -> Dataset:
    """The teacher's cross-tokenizer cache of ``texts`` (run once; any student tokenizer trains from it), its
    top-k kept compactly by ``codec`` (the 6-bit default, about a quarter of float32's bytes; None: float32)."""
    return cache_teacher_outputs(
        teacher,
        Dataset.from_dict({TEXT_COLUMN: list(texts)}),
        teacher_tokenizer=teacher_tokenizer,
        top_k=top_k,
        temperature=temperature,
        batch_size=8,
        codec=codec,
    )


def join_cache(blocks: Dataset, cache: Dataset) -> Dataset:
    """The student's blocks with the cache rows of their texts (both in the same order, one row per block)."""
    if blocks[TEXT_COLUMN] != cache[TEXT_COLUMN]:
        raise ValueError(
            "The cross-tokenizer cache holds other texts than the student's blocks; cache the blocks' "
            "distill_text column (cache_for_students(teacher, tokenizer, blocks['distill_text'], ...))."
        )
    extra = [c for c in cache.column_names if c != TEXT_COLUMN]
    for column in extra:
        blocks = blocks.add_column(column, cache[column])
    return blocks


def run_cross_tokenizer_students(
    teacher: PreTrainedModel,
    teacher_tokenizer: Any,
    tokenizer: Any,
    train_texts: Sequence[str],
    test_texts: Sequence[str],
    training_args: DistillationTrainingArguments,
    run_dir: Path,
    *,
    block_size: int,
    n_layer: int,
    overrides: dict[str, Any],
    losses: Sequence[str | None] = ("aligned", None),
    top_k: int = 32,
    max_blocks: int | None = None,
) -> list[dict[str, Any]]:
    """The recipe's cross-tokenizer students: one initial GPT-2 over ``tokenizer``, trained once per entry of
    ``losses`` (None: no KD) from a cross-tokenizer cache of the teacher made once; each entry's held-out bits
    per byte and perplexity on ``test_texts``."""
    blocks = text_blocks(train_texts, tokenizer, block_size)
    if max_blocks is not None and len(blocks) > max_blocks:
        blocks = blocks.shuffle(seed=training_args.seed).select(range(max_blocks))
    cache = cache_for_students(
        teacher, teacher_tokenizer, blocks[TEXT_COLUMN], top_k, training_args.temperature
    )
    train = join_cache(blocks, cache)
    set_seed(training_args.seed)
    initial = cross_tokenizer_student(teacher, tokenizer, n_layer, overrides)
    entries = []
    for loss in losses:
        name = f"gpt2-tokenizer-{n_layer}L-{loss or 'no_kd'}"
        student = copy.deepcopy(initial)
        history = train_cross_tokenizer_student(
            student,
            train,
            tokenizer,
            teacher_tokenizer,
            training_args,
            run_dir / "students" / name,
            loss=loss,
        )
        metrics = bits_per_byte(
            student, tokenizer, test_texts, block_size, training_args.per_device_eval_batch_size
        )
        entries.append(
            {
                "name": name,
                "cross_tokenizer_loss": loss,
                "tokenizer": str(tokenizer.name_or_path),
                **metrics,
                "final_train_loss": next((h["loss"] for h in reversed(history) if "loss" in h), None),
            }  # fmt: skip
        )
    return entries


# Characters of each held-out file scored for bits per byte: enough for several blocks of every model while
# keeping the teacher's evaluation short on a CPU.
EVAL_CHARS_PER_FILE = 4000


def add_cross_tokenizer_students(report: dict[str, Any], config: RecipeConfig) -> dict[str, Any]:
    """The codegen recipe's ``--student_tokenizer``: GPT-2 students with that tokenizer beside the report's
    same-tokenizer students, and held-out bits per byte (and perplexity) of every model, teacher included.

    Training texts: the blocks of the training files (``max_train_samples`` blocks of ``max_length`` student
    tokens); held-out texts: the first ``EVAL_CHARS_PER_FILE`` characters of ``max_test_samples`` test files.
    Adds ``report["cross_tokenizer"]`` and returns the report.
    """
    teacher_args, student_args = config.teacher, config.student
    data_args, training_args = config.data, config.training
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_distill.recipes.data_code import load_code_corpus
    from hf_distill.recipes.offline import HUB_IDS, resolve_model_path

    teacher_path = resolve_model_path(teacher_args.teacher_model_name_or_path)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_path, dtype=torch.float32).eval()
    teacher_tokenizer = AutoTokenizer.from_pretrained(teacher_path)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(student_args.student_tokenizer))
    # Reports, caches and model cards name the models' Hub ids, not this machine's folders of the aliases.
    teacher_tokenizer.name_or_path = HUB_IDS.get(teacher_args.teacher_model_name_or_path, teacher_path)
    tokenizer.name_or_path = HUB_IDS.get(student_args.student_tokenizer, student_args.student_tokenizer)
    corpus = load_code_corpus(seed=data_args.split_seed, max_files=data_args.max_files)
    train_texts = training_texts(corpus["train"]["text"], tokenizer, data_args)
    test_files = list(corpus["test"]["text"])[: data_args.max_test_samples or None]
    test_texts = [text[:EVAL_CHARS_PER_FILE] for text in test_files]
    run_dir = Path(training_args.output_dir)
    entries = run_cross_tokenizer_students(
        teacher,
        teacher_tokenizer,
        tokenizer,
        train_texts,
        test_texts,
        training_args,
        run_dir,
        block_size=data_args.max_length,
        n_layer=student_args.student_num_layers,
        overrides=student_args.config_overrides(),
        losses=(student_args.student_tokenizer_loss, None)
        if student_args.run_baseline
        else (student_args.student_tokenizer_loss,),
        max_blocks=data_args.max_train_samples,
    )
    batch = training_args.per_device_eval_batch_size
    same = {"teacher": teacher}
    for entry in report.get("students", []):
        same[entry["name"]] = AutoModelForCausalLM.from_pretrained(entry["output_dir"], dtype=torch.float32)
    for name, model in same.items():
        entries.append(
            {
                "name": name,
                "tokenizer": str(teacher_tokenizer.name_or_path),
                **bits_per_byte(model, teacher_tokenizer, test_texts, data_args.max_length, batch),
            }  # fmt: skip
        )
    report["cross_tokenizer"] = {"student_tokenizer": student_args.student_tokenizer, "models": entries}
    return report


def training_texts(texts: Sequence[str], tokenizer: Any, data_args: Any) -> list[str]:
    """The training files the recipe's cross-tokenizer students use: with ``max_train_samples``, only enough
    files for that many blocks of ``max_length`` tokens of ``tokenizer``, not the whole split."""
    texts = list(texts)
    if data_args.max_train_samples is None:
        return texts
    kept, count = [], 0
    for text in texts:
        kept.append(text)
        count += len(tokenizer(text)["input_ids"]) // data_args.max_length
        if count >= data_args.max_train_samples:
            break
    return kept


def bits_per_byte_table(report: dict[str, Any]) -> str:
    """The cross-tokenizer part of the report as a Markdown table."""
    lines = ["| model | tokenizer | bits/byte | perplexity |", "|---|---|---|---|"]
    for entry in report.get("cross_tokenizer", {}).get("models", []):
        lines.append(
            f"| {entry['name']} | {entry['tokenizer']} | {entry['bits_per_byte']:.3f} | {entry['perplexity']:.2f} |"
        )
    return "\n".join(lines)
