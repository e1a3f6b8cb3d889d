"""Bad inputs fail with a clear message before any training step.

Each error is matched on its text. Errors that can be seen from the models and arguments are raised while
building the arguments or the trainer; those that need a forward pass (missing hidden states, a teacher
producing NaN) are raised in the first micro-batch, before any optimizer step: the test then checks that
``global_step`` is still 0 and that the student's weights did not move.
"""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.recipes.data_ner import read_conll
from hf_distill.trainer import DistillationTrainer


def args(tmp_path, **kw) -> DistillationTrainingArguments:
    return DistillationTrainingArguments(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, max_steps=1, per_device_train_batch_size=2,
        save_strategy="no", disable_tqdm=True, **kw,
    )  # fmt: skip


def bert(seed: int = 0, hidden: int = 16, layers: int = 2, num_labels: int = 3, **kw):
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=2 * hidden, max_position_embeddings=16, num_labels=num_labels, **kw,
    )  # fmt: skip
    return BertForSequenceClassification(config)


def gpt2(vocab_size: int, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_embd=16, n_layer=2, n_head=2, n_positions=16))


def tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(["[UNK]", "[PAD]", *words])}
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="[UNK]")),
        unk_token="[UNK]",
        pad_token="[PAD]",
    )


def rows(n: int = 4) -> list[dict]:
    return [{"input_ids": [2, 3, 4, 5][: 2 + i % 3], "labels": i % 3} for i in range(n)]


def collate(batch: list[dict]) -> dict[str, torch.Tensor]:
    width = max(len(r["input_ids"]) for r in batch)
    ids = torch.tensor([r["input_ids"] + [0] * (width - len(r["input_ids"])) for r in batch])
    return {
        "input_ids": ids,
        "attention_mask": (ids != 0).long(),
        "labels": torch.tensor([r["labels"] for r in batch]),
    }


# ---- arguments ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_temperature_must_be_positive(temperature, tmp_path):
    with pytest.raises(ValueError, match=r"temperature must be > 0, got -?\d"):
        args(tmp_path, temperature=temperature)


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_alpha_must_be_in_unit_interval(alpha, tmp_path):
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got"):
        args(tmp_path, alpha=alpha)


# ---- models that cannot be compared: raised while building the trainer ----------------------------------------


def test_vocab_mismatch_that_is_not_padding(tmp_path):
    with pytest.raises(
        ValueError, match=r"vocabulary has 40 entries and the teacher's 48.*not explain the difference"
    ):
        DistillationTrainer(model=gpt2(40), teacher_model=gpt2(48), args=args(tmp_path), train_dataset=rows())


def test_vocab_padding_is_accepted(tmp_path):
    # The control for the previous test: a tokenizer of 12 tokens explains 40 vs 48 rows as padding.
    trainer = DistillationTrainer(
        model=gpt2(40),
        teacher_model=gpt2(48),
        args=args(tmp_path),
        processing_class=tokenizer(list("abcdefghij")),
    )
    assert trainer.vocab_size == 12


def test_num_labels_differ(tmp_path):
    with pytest.raises(ValueError, match=r"student has num_labels=2 but the teacher has num_labels=3"):
        DistillationTrainer(model=bert(num_labels=2), teacher_model=bert(num_labels=3), args=args(tmp_path))


def test_label_maps_differ(tmp_path):
    student = bert(num_labels=2, id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})
    teacher = bert(num_labels=2, id2label={0: "pos", 1: "neg"}, label2id={"pos": 0, "neg": 1})
    with pytest.raises(ValueError, match=r"label map .* differs from the teacher's"):
        DistillationTrainer(model=student, teacher_model=teacher, args=args(tmp_path))


def test_tokenizers_differ(tmp_path):
    with pytest.raises(
        ValueError, match=r"teacher's tokenizer and the student's tokenizer have different vocab"
    ):
        DistillationTrainer(
            model=bert(),
            teacher_model=bert(seed=1),
            args=args(tmp_path),
            processing_class=tokenizer(["good", "bad"]),
            teacher_processing_class=tokenizer(["good", "awful"]),
        )


@pytest.mark.parametrize(
    ("layer_map", "message"),
    [
        ("1:9", r"names teacher layer 9, but the teacher has 4 layers"),
        ("3:4", r"names student layer 3, but the student has 2"),
    ],
)
def test_layer_map_names_a_missing_layer(layer_map, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        DistillationTrainer(
            model=bert(),
            teacher_model=bert(seed=1, hidden=32, layers=4),
            args=args(tmp_path, hidden_state_weight=1.0, hidden_layer_map=layer_map),
            train_dataset=rows(),
        )


def test_empty_dataset(tmp_path):
    with pytest.raises(ValueError, match=r"train_dataset is empty, so there is nothing to distill"):
        DistillationTrainer(model=bert(), teacher_model=bert(seed=1), args=args(tmp_path), train_dataset=[])


# ---- errors that need a forward pass: raised in the first micro-batch, before any optimizer step ---------------


def _train_and_expect(trainer: DistillationTrainer, error, match: str) -> None:
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(error, match=match):
        trainer.train()
    assert trainer.state.global_step == 0
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, before[key]), key


class NoHiddenStates(BertForSequenceClassification):
    """A model that ignores ``output_hidden_states`` (as some custom heads do)."""

    def forward(self, **kwargs):
        outputs = super().forward(**kwargs)
        outputs.hidden_states = None
        return outputs


def test_model_without_hidden_states(tmp_path):
    torch.manual_seed(0)
    student = NoHiddenStates(bert().config)
    trainer = DistillationTrainer(
        model=student,
        teacher_model=bert(seed=1),
        args=args(tmp_path, hidden_state_weight=1.0, remove_unused_columns=False),
        train_dataset=rows(),
        data_collator=collate,
    )
    _train_and_expect(trainer, ValueError, r"the student returned no hidden_states")


def test_teacher_nan_is_reported_with_the_batch(tmp_path):
    teacher = bert(seed=1)
    with torch.no_grad():
        teacher.classifier.bias[1] = float("nan")
    trainer = DistillationTrainer(
        model=bert(), teacher_model=teacher, args=args(tmp_path), train_dataset=rows(), data_collator=collate
    )
    _train_and_expect(
        trainer,
        FloatingPointError,
        r"teacher's logits hold NaN or inf at global step 0 \(batch shape \(2, 3\)\)",
    )


# ---- data ---------------------------------------------------------------------------------------------------


def test_conll_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "tweets.conll"
    path.write_text("Paris\tB-geo-loc\nis\tO\n\nnice\tO\nbroken-line-without-tag\n", encoding="utf-8")
    with pytest.raises(
        ValueError, match=r"tweets\.conll line 5: malformed CoNLL line 'broken-line-without-tag'"
    ):
        read_conll(path)
