"""The vision recipe's models: a small ResNet teacher (Transformers ``ResNetConfig``, trained from scratch on the
task) and a small plain CNN student (an ``nn.Module`` with no Transformers config), and the layers whose feature
maps the recipe matches by default.

Shapes on 32x32 inputs: the teacher's embedder (stride-2 convolution, max-pool) gives 8x8 maps, its stages
``widths`` channels at 8x8, 4x4 and 2x2; the student's blocks give 16x16, 8x8 and 4x4 maps.
"""

from __future__ import annotations

from torch import nn
from transformers import ResNetConfig, ResNetForImageClassification

TEACHER_WIDTHS = (16, 32, 64)
STUDENT_WIDTHS = (8, 16, 32)
# The student's second block (16 channels, 8x8) against the teacher's second stage (32 channels, 4x4): a 1x1
# convolution 16 -> 32 and pooling 8x8 -> 4x4.
DEFAULT_FEATURE_LAYERS = "features.1:resnet.encoder.stages.1"


def resnet_teacher(
    num_labels: int, num_channels: int, widths: tuple[int, ...] = TEACHER_WIDTHS, id2label: dict | None = None
) -> ResNetForImageClassification:
    """A randomly initialised ResNet of basic blocks (one per stage), to be trained on the task."""
    id2label = id2label or {i: str(i) for i in range(num_labels)}
    config = ResNetConfig(
        num_channels=num_channels,
        embedding_size=widths[0],
        hidden_sizes=list(widths),
        depths=[1] * len(widths),
        layer_type="basic",
        num_labels=num_labels,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    return ResNetForImageClassification(config)


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 convolution, batch norm, ReLU, 2x2 max-pool: halves the spatial size."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class SmallCNN(nn.Module):
    """A plain CNN classifier: ``features`` (three conv blocks), global average pooling, a linear head.

    ``forward(pixel_values) -> logits``, the input name Transformers vision models use, so batches of the
    recipe (and of :class:`hf_distill.TupleCollator`) reach it unchanged.
    """

    def __init__(self, num_labels: int, num_channels: int, widths: tuple[int, ...] = STUDENT_WIDTHS):
        super().__init__()
        channels = (num_channels, *widths)
        self.features = nn.Sequential(*(conv_block(a, b) for a, b in zip(channels[:-1], channels[1:])))
        self.head = nn.Linear(widths[-1], num_labels)

    def forward(self, pixel_values):
        return self.head(self.features(pixel_values).mean(dim=(2, 3)))
