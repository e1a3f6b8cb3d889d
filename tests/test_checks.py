"""Set-up refusals about the teacher itself, raised while the trainer is built, before any step.

- The teacher must be a separate model: not the student, and sharing no parameter's memory with it (the trainer
  freezes the teacher, so a shared part would stop training in the student). Found by storage, not by name.
- The teacher must have a task head: a bare ``BertModel`` returns hidden states, not logits.
"""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_models import bert_config, tiny_bert_classifier, tiny_bert_tagger, tiny_gpt2
from torch import nn
from transformers import (
    BertModel,
    GPT2Config,
    GPT2Model,
    PreTrainedModel,
)

from hf_distill import checks
from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.modes import (
    MultiTaskDistillationTrainer,
    MultiTaskStudent,
    MultiTeacherDistillationTrainer,
    MultiTeacherTrainingArguments,
    MutualLearningTrainer,
    SelfDistillationTrainer,
    SelfDistillationTrainingArguments,
)
from hf_distill.trainer import DistillationTrainer


def args(tmp_path, cls=DistillationTrainingArguments, **kw):
    return cls(
        output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True, max_steps=1,
        per_device_train_batch_size=2, save_strategy="no", disable_tqdm=True, **kw,
    )  # fmt: skip


def all_trainable(model: nn.Module) -> bool:
    return all(p.requires_grad for p in model.parameters())


# ---- item: the teacher is a separate model ---------------------------------------------------------------------


def test_student_as_its_own_teacher_is_refused(tmp_path):
    student = tiny_bert_classifier()
    with pytest.raises(
        ValueError,
        match=r"teacher_model is the student itself \(the same object\).*'element 0 of tensors does not "
        r"require grad'.*copy\.deepcopy\(model\)",
    ):
        DistillationTrainer(model=student, teacher_model=student, args=args(tmp_path))
    # Refused before the teacher was frozen: the student is as it was given.
    assert all_trainable(student)


def test_shared_submodule_is_refused_and_named(tmp_path):
    teacher, student = tiny_bert_classifier(seed=1), tiny_bert_classifier(seed=0, layers=1)
    student.bert.embeddings = teacher.bert.embeddings
    count = len(list(teacher.bert.embeddings.parameters()))
    with pytest.raises(
        ValueError,
        match=rf"The student shares {count} parameter tensor\(s\) with teacher_model \(the same memory\): "
        r"'bert\.embeddings'\. The trainer freezes the teacher.*silently stop training in the student.*"
        r"copy\.deepcopy",
    ):
        DistillationTrainer(model=student, teacher_model=teacher, args=args(tmp_path))
    assert all_trainable(student.bert.embeddings)


def test_sharing_is_found_by_memory_not_by_name(tmp_path):
    # The student's layer 0 is the teacher's layer 1: same module object, different names.
    teacher, student = tiny_bert_classifier(seed=1), tiny_bert_classifier(seed=0)
    student.bert.encoder.layer[0] = teacher.bert.encoder.layer[1]
    with pytest.raises(
        ValueError, match=r": 'bert\.encoder\.layer\.0' \(the teacher's 'bert\.encoder\.layer\.1'\)\. "
    ):
        DistillationTrainer(model=student, teacher_model=teacher, args=args(tmp_path))


def test_parameters_built_on_the_teachers_data_are_shared(tmp_path):
    # New Parameter objects over the teacher's tensors share its memory: a name or identity check misses them.
    teacher, student = tiny_bert_classifier(seed=1), tiny_bert_classifier(seed=0)
    word = teacher.bert.embeddings.word_embeddings.weight
    student.bert.embeddings.word_embeddings.weight = nn.Parameter(word.detach())
    student.classifier.weight = nn.Parameter(teacher.classifier.weight.data)
    assert checks.shared_parameters(student, teacher) == {
        "bert.embeddings.word_embeddings.weight": "bert.embeddings.word_embeddings.weight",
        "classifier.weight": "classifier.weight",
    }
    with pytest.raises(
        ValueError,
        match=r"shares 2 parameter tensor\(s\).*: 'bert\.embeddings\.word_embeddings', 'classifier\.weight'\.",
    ):
        DistillationTrainer(model=student, teacher_model=teacher, args=args(tmp_path))


def test_separate_models_are_accepted(tmp_path):
    # Controls: a deep copy, equal weights in other memory, and a GPT-2 whose head is tied to its own embedding.
    student = tiny_bert_classifier()
    assert checks.shared_parameters(student, copy.deepcopy(student)) == {}
    DistillationTrainer(model=student, teacher_model=copy.deepcopy(student), args=args(tmp_path))
    gpt2 = tiny_gpt2()
    assert gpt2.lm_head.weight is gpt2.transformer.wte.weight
    DistillationTrainer(model=gpt2, teacher_model=tiny_gpt2(seed=1), args=args(tmp_path))
    SelfDistillationTrainer(tiny_bert_classifier(), args=args(tmp_path, SelfDistillationTrainingArguments))


def test_mutual_peer_must_be_a_separate_student(tmp_path):
    student = tiny_bert_classifier()
    with pytest.raises(
        ValueError, match=r"peer_model is the student itself .*one model stepped twice per step"
    ):
        MutualLearningTrainer(student, peer_model=student, args=args(tmp_path))
    peer = tiny_bert_classifier(seed=1)
    peer.bert.embeddings = student.bert.embeddings
    with pytest.raises(
        ValueError,
        match=r"with peer_model \(the same memory\): 'bert\.embeddings'\. Both are trained as separate models.*"
        r"twice in the optimizer",
    ):
        MutualLearningTrainer(student, peer_model=peer, args=args(tmp_path))


def test_each_of_several_teachers_is_checked(tmp_path):
    student, first, second = (tiny_bert_classifier(seed=s) for s in range(3))
    second.bert.encoder = student.bert.encoder
    multi_args = args(tmp_path, MultiTeacherTrainingArguments)
    with pytest.raises(ValueError, match=r"with teacher_models\[1\] \(the same memory\): 'bert\.encoder'\."):
        MultiTeacherDistillationTrainer(model=student, teacher_models=[first, second], args=multi_args)
    with pytest.raises(ValueError, match=r"teacher_models\[1\] is the student itself"):
        MultiTeacherDistillationTrainer(model=student, teacher_models=[first, student], args=multi_args)


def test_multi_task_teacher_sharing_the_encoder_is_refused(tmp_path):
    teacher = tiny_bert_classifier(num_labels=3)
    student = MultiTaskStudent(teacher.bert, {"sentiment": ("sequence_classification", 3)})
    with pytest.raises(
        ValueError, match=r"with teacher_models\['sentiment'\].*: 'encoder' \(the teacher's 'bert'\)"
    ):
        MultiTaskDistillationTrainer(student, teacher_models={"sentiment": teacher}, args=args(tmp_path))


# ---- item: the teacher has a task head -----------------------------------------------------------------------


def bare_gpt2() -> GPT2Model:
    return GPT2Model(GPT2Config(vocab_size=60, n_embd=32, n_layer=2, n_head=2, n_positions=64))


@pytest.mark.parametrize(
    ("student", "bare", "loader"),
    [
        (tiny_bert_classifier, lambda: BertModel(bert_config()), "AutoModelForSequenceClassification"),
        (tiny_bert_tagger, lambda: BertModel(bert_config()), "AutoModelForTokenClassification"),
        (tiny_gpt2, bare_gpt2, "AutoModelForCausalLM"),
    ],
)
def test_headless_teacher_is_refused_naming_the_auto_class(student, bare, loader, tmp_path):
    teacher = bare()
    name, kind = type(teacher).__name__, teacher.config.model_type
    with pytest.raises(
        ValueError,
        match=rf"The teacher is a {name}, the bare {kind} model without a task head: it returns hidden states, "
        rf"not the logits.*Load it with {loader}\.from_pretrained",
    ):
        DistillationTrainer(model=student(), teacher_model=teacher, args=args(tmp_path))


def test_headless_student_and_extra_teacher_are_refused(tmp_path):
    with pytest.raises(
        ValueError, match=r"The student is a BertModel, .*Load it with AutoModelForSequenceClassification"
    ):
        DistillationTrainer(
            model=BertModel(bert_config()), teacher_model=tiny_bert_classifier(), args=args(tmp_path)
        )
    with pytest.raises(ValueError, match=r"The teacher is a BertModel"):
        MultiTeacherDistillationTrainer(
            model=tiny_bert_classifier(),
            teacher_models=[tiny_bert_classifier(seed=1), BertModel(bert_config())],
            args=args(tmp_path, MultiTeacherTrainingArguments),
        )


class HeadedPretrained(PreTrainedModel):
    """A custom Transformers model with its own head (not a registered base model)."""

    config_class = type(bert_config())

    def __init__(self, config):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, 8)
        self.head = nn.Linear(8, config.num_labels)

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        return {"logits": self.head(self.embed(input_ids).mean(1))}


def test_only_registered_base_models_count_as_headless():
    assert checks.headless_model(BertModel(bert_config())) and checks.headless_model(bare_gpt2())
    assert not checks.headless_model(tiny_bert_classifier()) and not checks.headless_model(tiny_gpt2())
    assert not checks.headless_model(HeadedPretrained(bert_config()))
    assert not checks.headless_model(nn.Sequential(nn.Linear(4, 3)))


def test_plain_module_teacher_still_trains(tmp_path):
    # A CNN/MLP teacher that returns logits (as in the digits test) has no config and no Auto class: accepted.
    torch.manual_seed(0)
    teacher, student = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)), nn.Linear(4, 3)

    class Wrap(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x=None, labels=None):
            return {"logits": self.net(x)}

    rows = [{"x": torch.randn(4), "labels": i % 3} for i in range(4)]
    trainer = DistillationTrainer(
        model=Wrap(student), teacher_model=Wrap(teacher), args=args(tmp_path), train_dataset=rows
    )
    before = student.weight.detach().clone()
    trainer.train()
    assert trainer.state.global_step == 1 and not torch.equal(before, student.weight)
