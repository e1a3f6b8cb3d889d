"""Distil a sentiment classifier and compare it with its teacher and with a student trained without the teacher.

    accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/sentiment.py --config recipes/configs/sentiment.yaml

Offline defaults: Rotten Tomatoes review snippets (split by movie), all-MiniLM-L6-v2 fine-tuned as the
teacher, a 3-layer student built from its layers. Flags override the config file, e.g.
``--dataset_name glue/sst2 --teacher_model_name_or_path textattack/bert-base-uncased-SST-2`` with Hub access,
``--student_init teacher_layers config --student_config_overrides '{"hidden_size": 192}'`` for more students,
or ``--run_baseline false`` to skip the no-distillation baseline. Writes ``<output_dir>/report.json`` and
prints the table: accuracy, parameters, size on disk, latency at batch 1 and 32, retention vs the teacher.
"""

from __future__ import annotations

from hf_distill.cli import train
from hf_distill.recipes.run import end_process_group


def main(argv: list[str] | None = None) -> dict | None:
    # The same run as `hf-distill train sentiment` (hf_distill.cli.train), then the process group ends.
    report = train("sentiment", argv, prog="recipes/sentiment.py")
    end_process_group()
    return report


if __name__ == "__main__":
    main()
