"""Distil a named-entity tagger and compare it with its teacher and with a student trained without the teacher.

    accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/ner.py --config recipes/configs/ner.yaml

Offline defaults: the WNUT-16-style Twitter NER corpus (10 entity types, BIO), all-MiniLM-L6-v2 fine-tuned
as the teacher, a 3-layer student built from its layers. Word labels are aligned to sub-tokens with
``word_ids()`` and only the first sub-token of each word is trained on and scored (seqeval entity F1).
With Hub access: ``--dataset_name conll2003``; CoNLL files from disk: ``--train_file train.conll
[--validation_file ...] [--test_file ...]`` (token TAB tag per line, blank line between sentences).
Writes ``<output_dir>/report.json`` and prints the comparison table.
"""

from __future__ import annotations

from hf_distill.cli import train
from hf_distill.recipes.run import end_process_group


def main(argv: list[str] | None = None) -> dict | None:
    # The same run as `hf-distill train ner` (hf_distill.cli.train), then the process group ends.
    report = train("ner", argv, prog="recipes/ner.py")
    end_process_group()
    return report


if __name__ == "__main__":
    main()
