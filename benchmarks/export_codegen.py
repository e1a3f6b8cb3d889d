"""The shipped code student: ONNX greedy tokens against PyTorch's, bits per byte fp32 / int8, tokens per second.

    python benchmarks/export_codegen.py --student FOLDER [--tokenizer NAME_OR_FOLDER] [--prompts 24]
        [--max_new_tokens 64] [--rounds 5] [--threads 2] [--output PATH]
    python benchmarks/export_codegen.py --run RUN_DIR [--name STUDENT_NAME]
    python benchmarks/export_codegen.py --quick

The student (a causal LM: the teacher with layers dropped, a small GPT-2) is exported into a temporary folder
with ``hf_distill.export_student(..., quantize="int8-dynamic")``: an fp32 graph taking and returning past keys
and values, and its int8 graph; the fp32 graph is also quantized as ``int8-weights``. Then, for the PyTorch
student, the ONNX fp32 graph and the two ONNX int8 graphs:

- greedy tokens on the code recipe's held-out documented functions (``--prompts`` of them, chosen as the recipe
  chooses them, :func:`~hf_distill.recipes.code_prompts.held_out_prompts`; put through the tokenizer's chat
  template where it has one, ``--prompt_style``), one prompt at a time, up to ``--max_new_tokens`` or EOS:
  ``model.generate(do_sample=False)`` against ``OnnxModel.generate``; per prompt None when the tokens are
  identical, else the first new position where they differ; and the share identical;
- bits per byte on the recipe's test texts (:func:`~hf_distill.recipes.cross_tokenizer.bits_per_byte`, the
  function the recipe scores every model with, here on the PyTorch and the ONNX logits), and the relative
  differences int8 vs fp32 and fp32 vs PyTorch;
- tokens per second at batch 1 of greedy generation of exactly ``--max_new_tokens`` (no early stop: PyTorch with
  ``min_new_tokens = max_new_tokens``, ONNX without an EOS) for the first 3 prompts per sample (``--quick``: 1),
  in interleaved rounds (``_common.time_variants``: the order rotated every round, each sample with the cores
  this process used and the cores other processes kept busy; medians and ratios over the quiet samples), ratios
  against the PyTorch student; torch threads = ONNX Runtime intra-op threads = ``--threads`` (inter-op 1), recorded;
- sizes on disk (the student's safetensors, each graph).

The data (prompts and test texts) are the code recipe's: ``--config`` (recipes/configs/codegen.yaml) gives
the split seed, the files, the block size and the batch size; a run's ``report.json`` does not keep them, so
pass the run's own config when it was not the default. ``--run`` reads the run's ``report.json``: the student
``--name`` (default: the first distilled one), its first seed's folder; its tokenizer is the one saved in that
folder (``--tokenizer`` otherwise). ``--quick`` builds a tiny random Llama-family model and a tiny GPT-2 over a
small byte-level tokenizer trained on the prompts (a check that the script works; its numbers say nothing).

Targets (the issue "Ship the student"): fp32 greedy tokens identical to PyTorch's on every prompt, int8 bits
per byte within 2% of fp32. Writes results/export_codegen.json (``--quick``: export_codegen_quick.json, or
``--output``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from _common import RESULTS, machine, run_folder, shown_path, summarize, time_variants, write_result  # noqa: E402

BASELINE = "pytorch student"
FP32, INT8, INT8_WEIGHTS = "onnx fp32 student", "onnx int8-dynamic student", "onnx int8-weights student"
VARIANTS = (BASELINE, FP32, INT8, INT8_WEIGHTS)
TIMING_PROMPTS = 3
INT8_BITS_PER_BYTE_TARGET = 0.02
DEFAULT_CONFIG = ROOT / "recipes" / "configs" / "codegen.yaml"
PROMPT_STYLES = ("auto", "chat", "raw")
# --quick: a few prompts (one timed) and texts, two rounds; the tiny models' vocabulary and positions.
QUICK = {
    "prompts": 3,
    "timing_prompts": 1,
    "max_new_tokens": 8,
    "rounds": 2,
    "texts": 2,
    "vocab": 400,
    "positions": 1024,
}


def run_student(run: Path, name: str | None) -> Path:
    """The first seed's folder of the student ``name`` (default: the first distilled one) in the run ``run``."""
    report_path = run / "report.json"
    if not report_path.is_file():
        raise SystemExit(
            f"{report_path} is missing: pass the folder of a finished codegen run (its --output_dir)."
        )
    students = json.loads(report_path.read_text()).get("students", [])
    if name is None:
        chosen = next((s for s in students if s.get("kind") == "distilled"), None)
    else:
        chosen = next((s for s in students if s.get("name") == name), None)
    if chosen is None:
        names = [s.get("name") for s in students]
        wanted = f"no student named {name!r}" if name else "no distilled student"
        raise SystemExit(f"{report_path} has {wanted}; its students: {names}. Pass one of them with --name.")
    seeds = chosen.get("seeds") or [{"output_dir": chosen["output_dir"]}]
    return run_folder(run, seeds[0]["output_dir"])


def quick_tokenizer(texts: list[str], vocab: int) -> Any:
    """A byte-level BPE of ``vocab`` tokens trained on ``texts``, ``<|endoftext|>`` its EOS and pad."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )


def quick_students(work: Path, texts: list[str]) -> dict[str, Path]:
    """A tiny random Llama (grouped-query attention, a chat template on its tokenizer) and a tiny random GPT-2
    (no template: prompted raw), weights scaled up so greedy decoding moves between tokens; saved under ``work``."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tokenizer = quick_tokenizer(texts, QUICK["vocab"])
    vocab, positions, eos = len(tokenizer), QUICK["positions"], tokenizer.eos_token_id
    torch.manual_seed(0)
    models = {
        "tiny-llama": LlamaForCausalLM(
            LlamaConfig(
                vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=positions,
                bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
            )
        ),
        "tiny-gpt2": GPT2LMHeadModel(
            GPT2Config(
                vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=positions,
                bos_token_id=eos, eos_token_id=eos,
            )
        ),
    }  # fmt: skip
    folders = {}
    for name, model in models.items():
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.mul_(4.0)
        tokenizer.chat_template = (
            "{% for m in messages %}<|user|>{{ m['content'] }}{% endfor %}<|assistant|>"
            if name == "tiny-llama"
            else None
        )
        model.save_pretrained(work / name)
        tokenizer.save_pretrained(work / name)
        folders[name] = work / name
    return folders


def recipe_data(config_path: Path, prompts: int) -> tuple[list[Any], list[str], Any]:
    """The code recipe's held-out prompts (``prompts`` of them), its test texts for bits per byte, and its
    config (block size, eval batch size), as ``config_path`` sets the recipe up."""
    from hf_distill.recipes.arguments import parse_recipe_config
    from hf_distill.recipes.code_prompts import held_out_prompts
    from hf_distill.recipes.generation_eval import prompt_files

    config = parse_recipe_config(["--config", str(config_path)], "causal_lm")
    files, texts = prompt_files(config.data)
    chosen = held_out_prompts(files, prompts)
    if not chosen or not texts:
        raise SystemExit(
            f"{config_path}'s held-out files give {len(chosen)} prompts and {len(texts)} test texts: both are "
            "needed; give a corpus whose test split holds documented functions."
        )
    return chosen, texts, config


def prompt_ids(prompts: list[Any], tokenizer: Any, style: str, room: int) -> tuple[str, list[torch.Tensor]]:
    """The prompt style used (``auto``: chat where the tokenizer has a template) and each prompt's ids, cut to
    their last ``room`` tokens as the recipe cuts them."""
    from hf_distill.recipes.code_generation import prompt_text

    if style == "auto":
        style = "chat" if getattr(tokenizer, "chat_template", None) else "raw"
    texts = [prompt_text(p, tokenizer, style) for p in prompts]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return style, [torch.tensor([ids[-room:]]) for ids in encoded]


def greedy(model: Any, ids: torch.Tensor, new: int, eos: int | None, pad: int, fixed: bool) -> list[int]:
    """The new tokens of greedy decoding from ``ids`` (batch 1): up to ``new`` or EOS, or exactly ``new``
    when ``fixed`` (PyTorch: EOS held back by ``min_new_tokens``; ONNX: no EOS to stop at)."""
    from hf_distill.export import OnnxModel

    if isinstance(model, OnnxModel):
        out = model.generate(ids, max_new_tokens=new, eos_token_id=None if fixed else eos)
    else:
        with torch.inference_mode():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=new,
                min_new_tokens=new if fixed else None,
                eos_token_id=eos,
                pad_token_id=pad,
            )
    tokens = out[0, ids.shape[1] :].tolist()
    if fixed and len(tokens) != new:
        raise RuntimeError(f"{type(model).__name__} gave {len(tokens)} new tokens where {new} were forced.")
    return tokens


def first_difference(want: list[int], got: list[int]) -> int | None:
    """None when ``got`` equals ``want``, else the first position where they differ (a prefix differs at its
    end)."""
    if want == got:
        return None
    return next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))


def token_comparison(models: dict[str, Any], ids: list[torch.Tensor], new: int, eos: int | None, pad: int):
    """Per ONNX variant: per prompt None (identical to PyTorch's tokens) or the first differing position, and
    the share identical; with the number of tokens PyTorch generated per prompt."""
    tokens = {
        name: [greedy(model, row, new, eos, pad, fixed=False) for row in ids]
        for name, model in models.items()
    }
    result: dict[str, Any] = {"pytorch_new_tokens": [len(t) for t in tokens[BASELINE]]}
    for name in (FP32, INT8, INT8_WEIGHTS):
        differences = [first_difference(w, g) for w, g in zip(tokens[BASELINE], tokens[name])]
        result[name] = {
            "first_difference": differences,
            "identical_share": sum(d is None for d in differences) / len(differences),
        }
    return result


def bits_per_byte_rows(
    models: dict[str, Any], tokenizer: Any, texts: list[str], config: Any
) -> dict[str, Any]:
    """Bits per byte of each variant on ``texts`` (the recipe's function and blocks), and the relative
    differences int8 vs fp32 and fp32 vs PyTorch."""
    from hf_distill.recipes.cross_tokenizer import bits_per_byte

    block, batch = config.data.max_length, config.training.per_device_eval_batch_size
    scored = {name: bits_per_byte(model, tokenizer, texts, block, batch) for name, model in models.items()}
    values = {name: s["bits_per_byte"] for name, s in scored.items()}
    if not all(math.isfinite(v) for v in values.values()):
        raise RuntimeError(
            f"bits per byte is not finite for every variant: {values}; the graph or the model is broken."
        )
    return {
        "values": values,
        "tokens": scored[BASELINE]["tokens"],
        "bytes": scored[BASELINE]["bytes"],
        "int8_vs_fp32_relative": values[INT8] / values[FP32] - 1.0,
        "int8_weights_vs_fp32_relative": values[INT8_WEIGHTS] / values[FP32] - 1.0,
        "fp32_vs_pytorch_relative": values[FP32] / values[BASELINE] - 1.0,
    }


def tokens_per_second(
    models: dict[str, Any], ids: list[torch.Tensor], new: int, eos: int | None, pad: int, rounds: int
) -> list[dict]:
    """Each variant's greedy generation of exactly ``new`` tokens for each of ``ids`` (batch 1) per sample, in
    interleaved rounds; tokens per second and the ratio to the PyTorch student's."""

    def variant(model: Any) -> Any:
        def call() -> None:
            for row in ids:
                greedy(model, row, new, eos, pad, fixed=True)

        return call

    rows = summarize(time_variants({name: variant(m) for name, m in models.items()}, rounds), BASELINE)
    baseline = next(row["median_s"] for row in rows if row["variant"] == BASELINE)
    for row in rows:
        row["new_tokens_per_run"] = new * len(ids)
        row["tokens_per_second"] = new * len(ids) / row["median_s"]
        row["speedup_vs_pytorch_student"] = baseline / row["median_s"]
    return rows


def load_student(folder: Path, tokenizer_name: str | None, new: int) -> tuple[Any, Any]:
    """The causal LM saved in ``folder`` and its tokenizer (``tokenizer_name``'s, else the folder's), refused
    before any export when either is missing or the context has no room for ``new`` tokens after a prompt."""
    from transformers import AutoTokenizer

    from hf_distill.export.student import load_model_folder
    from hf_distill.model_kind import CAUSAL_LM, detect_head_kind
    from hf_distill.recipes.code_generation import context_length
    from hf_distill.recipes.offline import resolve_model_path

    try:
        model, tokenizer = load_model_folder(folder)
    except ValueError as error:
        raise SystemExit(str(error)) from error
    if detect_head_kind(model) != CAUSAL_LM:
        raise SystemExit(
            f"{folder} holds a {type(model).__name__}, not a causal LM: this benchmark generates code with it; "
            "use benchmarks/export_latency.py for classifiers."
        )
    if context_length(model) <= new:
        raise SystemExit(
            f"--max_new_tokens {new} fills the student's context of {context_length(model)} positions, leaving "
            "no room for a prompt; ask for fewer new tokens."
        )
    if tokenizer_name:
        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(tokenizer_name))
    if tokenizer is None:
        raise SystemExit(
            f"{folder} holds no tokenizer, and the prompts and test texts need the student's; pass "
            "--tokenizer NAME_OR_FOLDER (e.g. the teacher's, smollm2-135m)."
        )
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise SystemExit(
            f"the tokenizer has {len(tokenizer)} tokens and the student's embeddings {rows} rows, so some ids "
            "have no embedding; pass the tokenizer the student was trained with (--tokenizer)."
        )
    return model.eval(), tokenizer


def special_tokens(model: Any, tokenizer: Any) -> tuple[int | None, int]:
    """EOS (the tokenizer's, else the config's first) and the pad id (the tokenizer's, else EOS)."""
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else model.config.eos_token_id
    eos = eos[0] if isinstance(eos, list) else eos
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    if pad is None:
        raise SystemExit(
            "neither the tokenizer nor the config has an EOS or pad token; set tokenizer.eos_token."
        )
    return eos, pad


def measure_student(
    name: str, folder: Path, loaded: tuple[Any, Any], data: tuple[list, list, Any], options: Any, work: Path
) -> dict[str, Any]:
    """One student's export, token comparison, bits per byte, tokens per second and sizes."""
    from hf_distill.export import OnnxModel, export_student
    from hf_distill.export.quantize import quantize_graph
    from hf_distill.recipes.code_generation import context_length
    from hf_distill.students import count_parameters

    (model, tokenizer), (prompts, texts, config) = loaded, data
    new, threads = options.max_new_tokens, options.threads
    export = export_student(model, work / name, quantize="int8-dynamic", tokenizer=tokenizer)
    weights = export.onnx_path.with_name("model_weights.onnx")
    quantize_graph(export.onnx_path, weights, "int8-weights")
    models = {
        BASELINE: model,
        FP32: OnnxModel(export.onnx_path, threads=threads),
        INT8: OnnxModel(export.quantized_path, threads=threads),
        INT8_WEIGHTS: OnnxModel(weights, threads=threads),
    }
    style, ids = prompt_ids(prompts, tokenizer, options.prompt_style, context_length(model) - new)
    eos, pad = special_tokens(model, tokenizer)
    bits = bits_per_byte_rows(models, tokenizer, texts, config)
    tokens = token_comparison(models, ids, new, eos, pad)
    timing_ids = ids[: QUICK["timing_prompts"] if options.quick else TIMING_PROMPTS]
    return {
        "name": name,
        "folder": str(folder),
        "architecture": type(model).__name__,
        "parameters": count_parameters(model),
        "prompt_style": style,
        "prompt_tokens": [row.shape[1] for row in ids],
        "timing_prompt_tokens": [row.shape[1] for row in timing_ids],
        "greedy_tokens": tokens,
        "bits_per_byte": bits,
        "tokens_per_second": tokens_per_second(models, timing_ids, new, eos, pad, options.rounds),
        "size_bytes": {
            BASELINE: sum(p.stat().st_size for p in folder.glob("*.safetensors")),
            FP32: export.size_bytes,
            INT8: export.quantized_size_bytes,
            INT8_WEIGHTS: weights.stat().st_size,
        },
        "export_check": {
            "fp32_max_abs_difference": export.max_abs_difference,
            "int8_argmax_agreement_random_rows": export.int8_agreement,
        },
        "targets": {
            "fp32_tokens_identical": tokens[FP32]["identical_share"] == 1.0,
            "int8_bits_per_byte_within_2_percent": abs(bits["int8_vs_fp32_relative"])
            <= INT8_BITS_PER_BYTE_TARGET,
            "int8_weights_bits_per_byte_within_2_percent": abs(bits["int8_weights_vs_fp32_relative"])
            <= INT8_BITS_PER_BYTE_TARGET,
        },
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", type=Path, default=None, help="a causal-LM student's folder")
    parser.add_argument(
        "--run", type=Path, default=None, help="a finished codegen run's folder (report.json)"
    )
    parser.add_argument(
        "--name", default=None, help="with --run: the student's name (default: first distilled)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny random Llama and GPT-2: checks the script")
    parser.add_argument("--tokenizer", default=None, help="tokenizer name or folder (default: the student's)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the codegen recipe's config")
    parser.add_argument("--prompts", type=int, default=24, help="held-out documented functions")
    parser.add_argument(
        "--prompt_style", choices=PROMPT_STYLES, default="auto", help="auto: chat if a template"
    )
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads = ONNX Runtime intra-op threads"
    )
    parser.add_argument("--output", type=Path, default=None, help="the JSON file (default: results/...)")
    options = parser.parse_args(argv)
    if sum((options.student is not None, options.run is not None, options.quick)) != 1:
        parser.error("pass one of --student FOLDER, --run RUN_DIR (a finished codegen run) or --quick")
    if options.name is not None and options.run is None:
        parser.error("--name picks a student of a run: pass it with --run RUN_DIR")
    for flag in ("prompts", "max_new_tokens", "rounds", "threads"):
        if getattr(options, flag) < 1:
            parser.error(f"--{flag} {getattr(options, flag)}: it must be at least 1")
    if options.quick:
        options.prompts, options.max_new_tokens = QUICK["prompts"], QUICK["max_new_tokens"]
        options.rounds = QUICK["rounds"]
    return options


def main(argv: list[str] | None = None) -> dict:
    options = parse(argv)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(options.threads)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            work = Path(scratch)
            if options.quick:
                prompts, texts, config = recipe_data(options.config, options.prompts)
                texts = texts[: QUICK["texts"]]
                folders = quick_students(work / "students", [p.prompt for p in prompts] + texts)
            else:
                folders = {"student": options.student or run_student(options.run, options.name)}
            loaded = {
                name: load_student(f, options.tokenizer, options.max_new_tokens)
                for name, f in folders.items()
            }
            if not options.quick:
                prompts, texts, config = recipe_data(options.config, options.prompts)
            data = (prompts, texts, config)
            students = [
                measure_student(name, folders[name], loaded[name], data, options, work / "export")
                for name in folders
            ]
    finally:
        torch.set_num_threads(threads_before)
    result = {
        "benchmark": "export_codegen",
        "meta": {
            "student": str(options.student) if options.student else None,
            "run": str(options.run) if options.run else None,
            "name": options.name,
            "tokenizer": options.tokenizer,
            "config": shown_path(options.config),
            "quick": options.quick,
            "prompts": len(prompts),
            "prompt_functions": [f"{p.path}:{p.name}" for p in prompts],
            "test_texts": len(texts),
            "block_size": config.data.max_length,
            "max_new_tokens": options.max_new_tokens,
            "timing_prompts": len(students[0]["timing_prompt_tokens"]),
            "rounds": options.rounds,
            "threads": options.threads,
            "torch_threads": options.threads,
            "onnxruntime_intra_op_threads": options.threads,
            "int8_bits_per_byte_target": INT8_BITS_PER_BYTE_TARGET,
        },
        "students": students,
        "machine": {**machine(), "threads": options.threads},
    }
    print_table(result)
    out = options.output or RESULTS / (
        "export_codegen_quick.json" if options.quick else "export_codegen.json"
    )
    print(f"wrote {write_result(result, out)}")
    return result


def print_table(result: dict) -> None:
    meta = result["meta"]
    print(
        f"\nexport_codegen ({meta['prompts']} prompts, {meta['max_new_tokens']} new tokens, {meta['rounds']} rounds, "
        f"{meta['threads']} threads)"
    )
    for student in result["students"]:
        bits, tokens = student["bits_per_byte"], student["greedy_tokens"]
        print(f"{student['name']} ({student['architecture']}, prompts: {student['prompt_style']}):")
        for row in student["tokens_per_second"]:
            name = row["variant"]
            identical = (
                "" if name == BASELINE else f", tokens identical {tokens[name]['identical_share']:.0%}"
            )
            print(
                f"  {name:<27} {row['tokens_per_second']:>8.1f} tok/s {row['speedup_vs_pytorch_student']:>5.2f}x  "
                f"bits/byte {bits['values'][name]:.4f}  {student['size_bytes'][name] / 1e6:>7.1f} MB{identical}  "
                f"quiet {row['quiet_runs']}/{len(row['runs'])}, others {max(row['other_cores']):.2f} cores max"
            )
        print(
            f"  bits/byte vs fp32: int8-dynamic {bits['int8_vs_fp32_relative']:+.2%}, "
            f"int8-weights {bits['int8_weights_vs_fp32_relative']:+.2%}; "
            f"fp32 vs PyTorch {bits['fp32_vs_pytorch_relative']:+.2e}"
        )


if __name__ == "__main__":
    main()
