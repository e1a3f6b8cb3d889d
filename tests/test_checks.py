"""Set-up refusals about the teacher itself, raised while the trainer is built, before any step or Hub call.

- The teacher must be a separate model: not the student, and sharing no parameter's memory with it (the trainer
  freezes the teacher, so a shared part would stop training in the student). Found by storage, not by name.
- The teacher must have a task head: a bare ``BertModel`` returns hidden states, not logits.
- A teacher given as a string must be an existing local folder or a Hub repo id; a missing path is refused
  before ``from_pretrained`` is called, and a Hub id the Hub cannot provide is reported as neither.
- Student and teacher must be comparable: one label set and label map, one tokenizer (or a vocabulary that
  differs by padding only), and a training set that is not empty.
"""

from __future__ import annotations

import copy
import os
import re
from types import SimpleNamespace

import huggingface_hub
import pytest
import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    BertModel,
    GPT2Config,
    GPT2Model,
    PreTrainedModel,
)

from hf_distill import checks, cli, loading
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
from hf_distill.recipes import teacher as recipe_teacher
from hf_distill.recipes.arguments import TeacherArguments
from hf_distill.recipes.mode_select import ModeArguments
from hf_distill.trainer import DistillationTrainer
from tests.helpers.refusals import bert, gpt2, rows, tokenizer
from tests.helpers.tiny_models import bert_config, tiny_bert_classifier, tiny_bert_tagger, tiny_gpt2

LOADERS = (
    AutoConfig,
    AutoTokenizer,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)


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


# ---- item: a teacher path that does not exist ------------------------------------------------------------------


@pytest.fixture
def no_hub(monkeypatch):
    """Every from_pretrained the teacher could go through records its call and fails, so a test proves that no
    Hub call (nor any load) happened."""
    calls = []

    def refuse(cls, *a, **k):
        calls.append((cls.__name__, a))
        raise AssertionError(f"{cls.__name__}.from_pretrained{a} was called")

    for loader in LOADERS:
        monkeypatch.setattr(loader, "from_pretrained", classmethod(refuse))
    return calls


MISSING = [
    "/no/such/teacher",
    "./no_such_teacher",
    "../no_such_teacher",
    "runs/no/such",
    "~/no_such_teacher_x",
]


@pytest.mark.parametrize("path", MISSING)
def test_missing_teacher_path_is_refused_before_any_hub_call(path, tmp_path, monkeypatch, no_hub):
    monkeypatch.chdir(tmp_path)
    absolute = os.path.abspath(os.path.expanduser(path))
    relative = (
        ""
        if os.path.isabs(os.path.expanduser(path))
        else rf" \(a relative path is resolved from {re.escape(os.getcwd())}\)"
    )
    with pytest.raises(
        FileNotFoundError,
        match=rf"teacher_model '{re.escape(path)}' does not exist: there is no folder at {re.escape(absolute)}"
        rf"{relative}, and it is not a Hub repo id",
    ):
        DistillationTrainer(model=tiny_bert_classifier(), teacher_model=path, args=args(tmp_path))
    assert no_hub == []


def test_a_file_is_not_a_model_folder(tmp_path, no_hub):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match=r"is a file \(.*model\.safetensors\), not a model folder"):
        DistillationTrainer(
            model=tiny_bert_classifier(),
            teacher_model=str(tmp_path / "model.safetensors"),
            args=args(tmp_path),
        )
    assert no_hub == []


def test_a_hub_id_still_goes_to_from_pretrained_and_its_failure_is_explained(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    original = OSError(
        "We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them"
    )
    calls = []

    def unreachable(cls, name, **kwargs):
        calls.append((name, kwargs))
        raise original

    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained", classmethod(unreachable))
    with pytest.raises(
        OSError,
        match=rf"teacher_model 'org/no-such-teacher' is neither a local folder \(there is none at "
        rf"{re.escape(os.path.join(os.getcwd(), 'org', 'no-such-teacher'))}\) nor a model the Hugging Face Hub could provide "
        r"\(OSError: We couldn't connect to 'https://huggingface\.co'.*HF_HUB_OFFLINE",
    ) as error:
        DistillationTrainer(
            model=tiny_bert_classifier(),
            teacher_model="org/no-such-teacher",
            args=args(tmp_path),
            teacher_model_init_kwargs={"revision": "main"},
        )
    assert error.value.__cause__ is original
    assert calls == [("org/no-such-teacher", {"revision": "main"})]


def test_real_hub_failure_in_offline_mode_is_explained(tmp_path, monkeypatch):
    # The error type from_pretrained really raises for an uncached repo id, with the Hub switched off.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        OSError, match=r"teacher_model 'hf-distill-tests/no-such-teacher' is neither a local folder"
    ) as error:
        DistillationTrainer(
            model=tiny_bert_classifier(),
            teacher_model="hf-distill-tests/no-such-teacher",
            args=args(tmp_path),
        )
    assert error.value.__cause__ is not None


def test_existing_folders_load_and_their_own_errors_pass_through(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny_bert_classifier(seed=1).save_pretrained(tmp_path / "teacher")
    for given in (str(tmp_path / "teacher"), "teacher", "./teacher"):
        trainer = DistillationTrainer(model=tiny_bert_classifier(), teacher_model=given, args=args(tmp_path))
        assert type(trainer.teacher).__name__ == "BertForSequenceClassification"
    (tmp_path / "empty").mkdir()
    # An existing folder is the user's: transformers' own error about it passes through, not "neither ... nor".
    with pytest.raises((OSError, ValueError), match=r"empty") as error:
        DistillationTrainer(model=tiny_bert_classifier(), teacher_model="empty", args=args(tmp_path))
    assert "neither a local folder" not in str(error.value)


def test_check_model_source_uses_the_hub_id_rules():
    assert loading.check_model_source("org/name") == "org/name"
    assert loading.check_model_source("bert-base-uncased") == "bert-base-uncased"
    for bad in ("org/name/extra", "org--x/name", ".hidden", "a..b"):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            loading.check_model_source(bad)
    with pytest.raises(ValueError, match="give a local model folder or a Hub repo id"):
        loading.check_model_source("  ")


def test_recipe_teacher_paths_are_checked_before_any_hub_call(tmp_path, no_hub):
    missing = TeacherArguments(teacher_model_name_or_path="/no/such/teacher")
    with pytest.raises(
        FileNotFoundError, match=r"teacher_model_name_or_path '/no/such/teacher' does not exist"
    ):
        recipe_teacher.teacher_tokenizer(missing)
    task = SimpleNamespace(task="sequence_classification", auto_class=AutoModelForSequenceClassification)
    with pytest.raises(
        FileNotFoundError, match=r"teacher_model_name_or_path '/no/such/teacher' does not exist"
    ):
        recipe_teacher.teacher_needs_fine_tune("/no/such/teacher", task, "auto")
    modes = ModeArguments(distillation_mode="multi_teacher", extra_teachers=["org/fine", "../no_such_extra"])
    with pytest.raises(FileNotFoundError, match=r"extra_teachers\[1\] '\.\./no_such_extra' does not exist"):
        recipe_teacher.check_teacher_sources(TeacherArguments(teacher_model_name_or_path="minilm-l6"), modes)
    assert no_hub == []


@pytest.mark.parametrize("command", ["train", "cache-teacher"])
def test_cli_teacher_path_is_checked_before_any_hub_call(command, tmp_path, monkeypatch, no_hub, capsys):
    monkeypatch.chdir(tmp_path)
    flags = ["--teacher_model_name_or_path", "no_such_dir/../teacher", "--output_dir", str(tmp_path / "run")]
    flags += ["--report_to", "none", "--use_cpu", "true"]
    if command == "cache-teacher":
        flags += ["--cache_dir", str(tmp_path / "cache")]
    # One clean line and exit 2 for the user; --debug raises the error itself.
    assert cli.main([command, "sentiment", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(
        r"teacher_model_name_or_path 'no_such_dir/\.\./teacher' does not exist", err[0]
    )
    with pytest.raises(
        FileNotFoundError, match=r"teacher_model_name_or_path 'no_such_dir/\.\./teacher' does not exist"
    ):
        cli.main(["--debug", command, "sentiment", *flags])
    assert no_hub == []


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


def test_empty_dataset(tmp_path):
    with pytest.raises(ValueError, match=r"train_dataset is empty, so there is nothing to distill"):
        DistillationTrainer(model=bert(), teacher_model=bert(seed=1), args=args(tmp_path), train_dataset=[])
