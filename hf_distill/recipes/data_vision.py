"""Image classification data for the vision recipe: offline digits, or CIFAR-10 / an image folder via ``datasets``.

- The offline default is scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes, shipped with
  scikit-learn), upsampled bilinearly to ``image_size`` (32: the size CIFAR-10 models expect), split
  stratified by class into train / validation / test with a seed.
- ``--dataset_name cifar10`` (or any Hub / local dataset with an image and a label column) and
  ``--dataset_name imagefolder --train_file <folder>`` (one sub-folder per class) are read with
  ``datasets.load_dataset``; images are converted to RGB or grayscale tensors of ``image_size``, scaled to
  [0, 1] and standardised per channel with the training split's mean and standard deviation.

Every split has ``pixel_values`` ``(C, H, W)`` float32 and ``labels``; the label names come from the data.
"""

from __future__ import annotations

from typing import Any

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from datasets import ClassLabel, Dataset, DatasetDict

from hf_distill.recipes.data_common import check_fractions

DIGITS_LABEL = "sklearn digits 8x8, upsampled (stratified split)"
IMAGE_COLUMNS = ("image", "img", "pixel_values")
LABEL_COLUMNS = ("label", "labels", "fine_label")


def stratified_split(
    labels: np.ndarray, *, seed: int, validation_size: float, test_size: float
) -> dict[str, np.ndarray]:
    """Row indices of train / validation / test, each class dealt in the same shares (scikit-learn)."""
    from sklearn.model_selection import train_test_split

    check_fractions(validation_size=validation_size, test_size=test_size)
    rows = np.arange(len(labels))
    rest, test = train_test_split(rows, test_size=test_size, random_state=seed, stratify=labels)
    share = validation_size / (1.0 - test_size)
    train, validation = train_test_split(rest, test_size=share, random_state=seed, stratify=labels[rest])
    return {"train": train, "validation": validation, "test": test}


def standardise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` images standardised per channel: ``(x - mean) / std``."""
    return (images - mean[None, :, None, None]) / std.clamp_min(1e-6)[None, :, None, None]


def load_digits_images(
    image_size: int = 32, *, seed: int = 0, validation_size: float = 0.2, test_size: float = 0.2
) -> DatasetDict:
    """scikit-learn's digits as ``(1, image_size, image_size)`` images, standardised with the training mean."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    if image_size != images.shape[-1]:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    labels = np.asarray(digits.target)
    rows = stratified_split(labels, seed=seed, validation_size=validation_size, test_size=test_size)
    train = images[rows["train"]]
    mean, std = train.mean(dim=(0, 2, 3)), train.std(dim=(0, 2, 3))
    names = [str(d) for d in range(10)]
    splits = {}
    for name, index in rows.items():
        data = {"pixel_values": standardise(images[index], mean, std).numpy(), "labels": labels[index]}
        splits[name] = Dataset.from_dict(data).cast_column("labels", ClassLabel(names=names))
    return DatasetDict(splits).with_format("torch")


def find_column(
    columns: list[str], candidates: tuple[str, ...], given: str | None, what: str, name: str
) -> str:
    if given is not None:
        if given not in columns:
            raise ValueError(
                f"--{what}_column {given!r} is not a column of {name}; its columns are {columns}."
            )
        return given
    for candidate in candidates:
        if candidate in columns:
            return candidate
    raise ValueError(
        f"{name} has no {what} column among {list(candidates)} (its columns are {columns}); name it with "
        f"--{what}_column."
    )


def to_tensor(image: Any, image_size: int, channels: int) -> torch.Tensor:
    """A PIL image (or array) -> ``(channels, image_size, image_size)`` float in [0, 1]."""
    if hasattr(image, "convert"):
        image = image.convert("L" if channels == 1 else "RGB").resize((image_size, image_size))
    array = np.asarray(image, dtype=np.float32)
    array = array[..., None] if array.ndim == 2 else array
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    return tensor / 255.0 if tensor.max() > 1.0 else tensor


def load_image_dataset(
    name: str,
    config: str | None = None,
    *,
    train_dir: str | None = None,
    image_size: int = 32,
    channels: int = 3,
    image_column: str | None = None,
    label_column: str | None = None,
    seed: int = 0,
    validation_size: float = 0.1,
) -> DatasetDict:
    """CIFAR-10 (``cifar10``), another image dataset, or ``imagefolder`` with ``train_dir`` through ``datasets``;
    images converted eagerly to standardised tensors (fine up to CIFAR's 60,000 32x32 images). A missing
    validation split is cut from train with ``seed``; a missing test split is refused."""
    kwargs = {"data_dir": train_dir} if train_dir is not None else {}
    raw = datasets.load_dataset(name, config, **kwargs)
    if "train" not in raw or "test" not in raw:
        raise ValueError(
            f"{name} has the splits {list(raw)}; the vision recipe needs 'train' and 'test' (test is never "
            "trained or tuned on). For an image folder, give it train/ and test/ sub-folders."
        )
    if "validation" not in raw:
        carved = raw["train"].train_test_split(test_size=validation_size, seed=seed)
        raw = DatasetDict({"train": carved["train"], "validation": carved["test"], "test": raw["test"]})
    columns = raw["train"].column_names
    image_key = find_column(columns, IMAGE_COLUMNS, image_column, "image", name)
    label_key = find_column(columns, LABEL_COLUMNS, label_column, "label", name)
    tensors = {
        split: torch.stack([to_tensor(image, image_size, channels) for image in ds[image_key]])
        for split, ds in raw.items()
    }
    mean, std = tensors["train"].mean(dim=(0, 2, 3)), tensors["train"].std(dim=(0, 2, 3))
    feature = raw["train"].features[label_key]
    names = (
        feature.names
        if isinstance(feature, ClassLabel)
        else sorted({str(v) for v in raw["train"][label_key]})
    )
    splits = {}
    for split, ds in raw.items():
        labels = (
            ds[label_key] if isinstance(feature, ClassLabel) else [names.index(str(v)) for v in ds[label_key]]
        )
        data = {"pixel_values": standardise(tensors[split], mean, std).numpy(), "labels": labels}
        splits[split] = Dataset.from_dict(data).cast_column(
            "labels", ClassLabel(names=[str(n) for n in names])
        )
    return DatasetDict(splits).with_format("torch")
