"""Distil a ResNet image classifier into a small plain CNN, and compare it with the same CNN trained without it.

    accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/vision.py --config recipes/configs/vision.yaml

Offline defaults: scikit-learn's 8x8 digits upsampled to 32x32 (stratified train / validation / test split), a
small ResNet teacher (Transformers ``ResNetConfig``, widths 16/32/64) trained from scratch on the task, and a
plain ``nn.Module`` CNN student distilled with logit KD plus feature-map matching (FitNets: the student's second
block against the teacher's second stage through a learned 1x1 convolution). ``--feature_map_weight 0`` gives
logit KD alone. With the data on disk: ``--dataset_name cifar10`` or ``--dataset_name imagefolder --train_file
DIR`` (``train/`` and ``test/`` sub-folders, one folder per class). ``--teacher_model_name_or_path`` an image
classifier on the Hub or on disk (``AutoModelForImageClassification``) instead of a new ResNet. Writes
``<output_dir>/report.json`` and prints the table.
"""

from __future__ import annotations

from hf_distill.cli import train
from hf_distill.recipes.run import end_process_group


def main(argv: list[str] | None = None) -> dict | None:
    # The same run as `hf-distill train vision` (hf_distill.cli.train), then the process group ends.
    report = train("vision", argv, prog="recipes/vision.py")
    end_process_group()
    return report


if __name__ == "__main__":
    main()
