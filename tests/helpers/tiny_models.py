"""The tiny random models and the WordPiece tokenizer the tests build: one builder per kind.

The fixtures of ``tests/conftest.py``, the mode tests' ``tests/helpers/modes.py`` and the multi-process script
``tests/scripts/distill_run.py`` all build from here. Each passes the sizes (and dropout) its tests were written
with, so a test's model does not change with the defaults of another test's.
"""

from __future__ import annotations

import random
from typing import Any

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

WORDS = "the a movie film was is great good bad awful plot actor scene boring fun long short story loved hated".split()
# BertConfig's and GPT2Config's own dropout: the mode tests were written against it.
CONFIG_DEFAULT_DROPOUT = 0.1


def make_sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))) for _ in range(n)]


def make_wordpiece_tokenizer(vocab_size: int = 80) -> PreTrainedTokenizerFast:
    """A BERT-style WordPiece tokenizer trained on :func:`make_sentences`, so no test downloads one."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    )
    tokenizer.train_from_iterator(make_sentences(200), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def bert_config(
    vocab_size: int = 80,
    hidden: int = 32,
    layers: int = 2,
    num_labels: int = 3,
    *,
    heads: int = 2,
    positions: int = 64,
    dropout: float = 0.0,
    **kw: Any,
) -> BertConfig:
    """A small BERT config; keywords in ``kw`` (e.g. ``hidden_dropout_prob``) win over ``dropout``.

    No dropout by default: tests compare runs exactly (e.g. 8x1 vs 2x4 accumulation), and dropout masks would
    differ.
    """
    settings = {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout, **kw}
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 2,
        max_position_embeddings=positions,
        num_labels=num_labels,
        **settings,
    )


def tiny_bert_classifier(seed: int = 0, **kw: Any) -> BertForSequenceClassification:
    """A random BERT sequence classifier; ``kw`` go to :func:`bert_config`."""
    torch.manual_seed(seed)
    return BertForSequenceClassification(bert_config(**kw))


def tiny_bert_tagger(seed: int = 0, **kw: Any) -> BertForTokenClassification:
    """A random BERT token classifier; ``kw`` go to :func:`bert_config`."""
    torch.manual_seed(seed)
    return BertForTokenClassification(bert_config(**kw))


def tiny_gpt2(
    seed: int = 0,
    vocab_size: int = 60,
    hidden: int = 32,
    layers: int = 2,
    *,
    positions: int = 64,
    bos_token_id: int = 0,
    eos_token_id: int = 0,
    pad_token_id: int | None = None,
    dropout: float = 0.0,
    tied: bool = True,
) -> GPT2LMHeadModel:
    """A random GPT-2 language model with two attention heads."""
    torch.manual_seed(seed)
    # Left out rather than None when not given, so the config is the one these tests always had.
    pad = {} if pad_token_id is None else {"pad_token_id": pad_token_id}
    config = GPT2Config(
        vocab_size=vocab_size,
        n_embd=hidden,
        n_layer=layers,
        n_head=2,
        n_positions=positions,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        tie_word_embeddings=tied,
        **pad,
    )
    return GPT2LMHeadModel(config)


def tiny_resnet(
    seed: int = 0, *, num_channels: int = 1, widths: tuple[int, ...] = (8, 16), num_labels: int = 10
):
    """A random ``ResNetForImageClassification`` of basic blocks, one per stage (no Hub): the vision recipe's
    own teacher builder at a tiny size."""
    from hf_distill.recipes.vision_models import resnet_teacher

    torch.manual_seed(seed)
    return resnet_teacher(num_labels, num_channels, widths)


class TinyCNN(torch.nn.Module):
    """A plain CNN classifier (no Transformers config): ``features`` (conv, ReLU, strided conv, ReLU), a head."""

    def __init__(
        self, seed: int = 0, num_channels: int = 1, widths: tuple[int, int] = (4, 6), num_labels: int = 10
    ):
        super().__init__()
        torch.manual_seed(seed)
        nn = torch.nn
        self.features = nn.Sequential(
            nn.Conv2d(num_channels, widths[0], 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(widths[0], widths[1], 3, padding=1, stride=2),
            nn.ReLU(),
        )
        self.head = nn.Linear(widths[1], num_labels)

    def forward(self, pixel_values):
        return self.head(self.features(pixel_values).mean((2, 3)))


class TupleImages(torch.utils.data.Dataset):
    """A torchvision-style dataset: ``(image (C, H, W), label)`` tuples, the label written into the image."""

    def __init__(self, n: int = 16, size: int = 16, num_channels: int = 1, num_labels: int = 10):
        self.n, self.size, self.num_channels, self.num_labels = n, size, num_channels, num_labels

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        label = i % self.num_labels
        generator = torch.Generator().manual_seed(i)
        image = 0.1 * torch.randn(self.num_channels, self.size, self.size, generator=generator)
        image[:, label % self.size, :] += 1.0  # a stripe per class, so the task is learnable
        return image, label


def tiny_vit(seed: int = 0, hidden: int = 8, *, image_size: int = 16, num_labels: int = 10):
    """A random ``ViTForImageClassification`` on 1-channel images, 4x4 patches, two layers."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=image_size,
        patch_size=4,
        num_channels=1,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        num_labels=num_labels,
    )
    return ViTForImageClassification(config)
