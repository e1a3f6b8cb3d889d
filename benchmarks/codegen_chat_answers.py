"""Sequence-level KD on the teacher's chat answers: does it make a layer-cut code student write code?

    python benchmarks/codegen_chat_answers.py [--prompts 128] [--epochs 5] [--layers 6] [--seed 1] [--quick]

The offline teacher (SmolLM2-135M-Instruct) writes real, if often wrong, function bodies only when asked
through its chat template. This measures whether a student cut from it (``student_from_teacher``, uniform
layers) learns to do the same from the teacher's answers (sequence-level KD, Kim & Rush 2016: the student is
trained on the teacher's greedy outputs) rather than from raw code:

1. ``--prompts`` documented functions of the *training* files (signature + docstring at most 600 characters,
   body at most 800) are put to the teacher through its chat template (the request of
   :mod:`hf_distill.recipes.code_generation`); its greedy answer, up to the end of its first code block, is the
   target of the distilled student;
2. the same student without the teacher is trained on the same prompts with the file's own function as the
   answer (the function in one code block, the format the parse metric reads);
3. both train the same steps (``--epochs`` over the prompts, the prompt masked out of the loss) from the same
   initial weights, and complete 16 documented functions of the *validation* files through the chat template:
   parse rate and degenerate share (:func:`~hf_distill.recipes.code_generation.generation_metrics`).

Writes ``results/codegen_chat_answers.json`` with a few completions of each model.
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    Trainer,
    TrainingArguments,
    set_seed,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_result  # noqa: E402

from hf_distill import student_from_teacher  # noqa: E402
from hf_distill.losses.divergences import IGNORE_INDEX  # noqa: E402
from hf_distill.recipes.code_generation import (  # noqa: E402
    generation_metrics,
    greedy_completions,
    parses,
    prompt_text,
)
from hf_distill.recipes.code_prompts import function_prompts, held_out_prompts  # noqa: E402
from hf_distill.recipes.data_code import load_code_corpus  # noqa: E402
from hf_distill.recipes.offline import resolve_model_path  # noqa: E402

FENCE = "```"


def training_prompts(corpus, limit: int, seed: int) -> list:
    """Up to ``limit`` short documented functions of the training files, in a shuffled order."""
    found = []
    for path, text in zip(corpus["train"]["path"], corpus["train"]["text"]):
        found += [p for p in function_prompts(text, path) if len(p.prompt) <= 600 and len(p.reference) <= 800]
    random.Random(seed).shuffle(found)
    return found[:limit]


def first_code_block(answer: str) -> str:
    """The answer up to the end of its first code block (all of it when no block closes)."""
    end = answer.find(FENCE, answer.find(FENCE) + len(FENCE))
    return answer[: end + len(FENCE)] if end >= 0 else answer


def chat_rows(prompts, answers: list[str], tokenizer) -> Dataset:
    """Prompt (chat template) + answer + EOS per row; the prompt's tokens are masked out of the labels."""
    ids, labels = [], []
    for prompt, answer in zip(prompts, answers):
        asked = tokenizer(prompt_text(prompt, tokenizer, "chat"), add_special_tokens=False)["input_ids"]
        written = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids.append(asked + written)
        labels.append([IGNORE_INDEX] * len(asked) + written)
    return Dataset.from_dict(
        {"input_ids": ids, "attention_mask": [[1] * len(r) for r in ids], "labels": labels}
    )


def train_and_complete(initial, rows: Dataset, tokenizer, eval_prompts, options, out: str) -> dict:
    student = copy.deepcopy(initial)
    args = TrainingArguments(
        output_dir=out, report_to="none", use_cpu=True, seed=options.seed, num_train_epochs=options.epochs,
        per_device_train_batch_size=4, learning_rate=3e-4, warmup_steps=10, lr_scheduler_type="cosine",
        logging_steps=20, save_strategy="no", disable_tqdm=True,
    )  # fmt: skip
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)
    started = time.perf_counter()
    trainer = Trainer(model=student, args=args, train_dataset=rows, data_collator=collator)
    train_loss = trainer.train().training_loss
    seconds = time.perf_counter() - started
    results = greedy_completions(
        student, tokenizer, eval_prompts, style="chat", max_new_tokens=64, batch_size=8
    )
    completions = [r["completion"] for r in results]
    metrics = generation_metrics(eval_prompts, completions, [None] * len(eval_prompts))
    return {
        "train_seconds": seconds,
        "steps": trainer.state.global_step,
        "train_loss": train_loss,
        "parse_rate": metrics["parse_rate"],
        "degenerate_rate": metrics["degenerate_rate"],
        "samples": [r["generated"][:300] for r in results[:4]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    options = parser.parse_args()
    if options.quick:
        options.prompts, options.epochs = 4, 1
    started = time.perf_counter()
    path = resolve_model_path("smollm2-135m")
    teacher = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    corpus = load_code_corpus(seed=42, max_files=300)
    prompts = training_prompts(corpus, options.prompts, options.seed)
    validation = list(zip(corpus["validation"]["path"], corpus["validation"]["text"]))
    eval_prompts = held_out_prompts(validation, 2 if options.quick else 16)
    t0 = time.perf_counter()
    answers = greedy_completions(teacher, tokenizer, prompts, style="chat", max_new_tokens=96, batch_size=8)
    teacher_seconds = time.perf_counter() - t0
    teacher_parse = sum(parses(p.prompt, a["completion"]) for p, a in zip(prompts, answers)) / len(prompts)
    teacher_eval = greedy_completions(
        teacher, tokenizer, eval_prompts, style="chat", max_new_tokens=64, batch_size=8
    )
    teacher_metrics = generation_metrics(
        eval_prompts, [r["completion"] for r in teacher_eval], [None] * len(eval_prompts)
    )
    set_seed(options.seed)
    initial = student_from_teacher(teacher, num_layers=options.layers)
    del teacher
    targets = {
        "distilled (teacher's answers)": [first_code_block(a["generated"]) for a in answers],
        "no KD (the files' functions)": [f"{FENCE}python\n{p.prompt}{p.reference}{FENCE}" for p in prompts],
    }
    runs = {}
    for name, texts in targets.items():
        runs[name] = train_and_complete(
            initial,
            chat_rows(prompts, texts, tokenizer),
            tokenizer,
            eval_prompts,
            options,
            f"runs/chat_answers/{name[:2]}",
        )
        print(name, {k: runs[name][k] for k in ("parse_rate", "degenerate_rate", "steps")}, flush=True)
    write_result(
        {
            "benchmark": "codegen_chat_answers" + ("_quick" if options.quick else ""),
            "sizes": {
                "prompts": len(prompts),
                "epochs": options.epochs,
                "layers": options.layers,
                "seed": options.seed,
                "eval_prompts": len(eval_prompts),
                "batch": 4,
            },  # fmt: skip
            "teacher": {
                "answer_seconds": teacher_seconds,
                "parse_rate_on_training_prompts": teacher_parse,
                "parse_rate": teacher_metrics["parse_rate"],
                "degenerate_rate": teacher_metrics["degenerate_rate"],
            },
            "runs": runs,
            "total_seconds": time.perf_counter() - started,
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
