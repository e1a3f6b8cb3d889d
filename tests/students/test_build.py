"""Tests for hf_distill.students.build on tiny random BERT, GPT-2, Llama and Qwen2 models built from configs."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertForTokenClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from hf_distill.students.build import (
    count_parameters,
    gpt2_student_for,
    model_size_on_disk,
    select_layers,
    student_from_config,
    student_from_teacher,
)

VOCAB = 100
LAYERS = 4
LABELS = {0: "NEG", 1: "NEU", 2: "POS"}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def bert_config(**kwargs) -> BertConfig:
    return BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=LAYERS,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        **kwargs,
    )


def gpt2_config(**kwargs) -> GPT2Config:
    return GPT2Config(
        vocab_size=VOCAB,
        n_layer=LAYERS,
        n_embd=16,
        n_head=2,
        n_positions=32,
        bos_token_id=1,
        eos_token_id=2,
        **kwargs,
    )


def llama_kwargs(**kwargs) -> dict:
    return dict(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=LAYERS,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=32,
        **kwargs,
    )


def input_ids(batch: int = 2, length: int = 7) -> torch.Tensor:
    return torch.randint(3, VOCAB, (batch, length), generator=torch.Generator().manual_seed(1))


def with_only_layers(teacher: nn.Module, block_path: str, layers: list[int]) -> nn.Module:
    """The teacher with its block list cut down to ``layers``: the reference the student must reproduce.

    Its attention modules keep their teacher ``layer_idx``, so run it with ``use_cache=False``.
    """
    reference = copy.deepcopy(teacher)
    parent_name, _, leaf = block_path.rpartition(".")
    parent = reference.get_submodule(parent_name)
    blocks = getattr(parent, leaf)
    setattr(parent, leaf, nn.ModuleList([blocks[i] for i in layers]))
    reference.config.num_hidden_layers = len(layers)
    return reference


def assert_blocks_copied(teacher: nn.Module, student: nn.Module, block_path: str, layers: list[int]) -> None:
    teacher_blocks, student_blocks = teacher.get_submodule(block_path), student.get_submodule(block_path)
    assert len(student_blocks) == len(layers)
    for new, old in enumerate(layers):
        teacher_state, student_state = teacher_blocks[old].state_dict(), student_blocks[new].state_dict()
        assert teacher_state.keys() == student_state.keys()
        for key, value in teacher_state.items():
            assert torch.equal(student_state[key], value), f"block {new} <- {old}: {key}"


# --- select_layers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("teacher_layers", "student_layers", "strategy", "expected"),
    [
        (12, 6, "uniform", [0, 2, 4, 7, 9, 11]),
        (12, 2, "uniform", [0, 11]),
        (30, 6, "uniform", [0, 6, 12, 17, 23, 29]),
        (4, 4, "uniform", [0, 1, 2, 3]),
        (4, 1, "uniform", [0]),
        (12, 6, "every_other", [0, 2, 4, 6, 8, 10]),
        (5, 3, "every_other", [0, 2, 4]),
        (6, 2, "first", [0, 1]),
        (6, 2, "last", [4, 5]),
    ],
)
def test_select_layers(teacher_layers, student_layers, strategy, expected):
    assert select_layers(teacher_layers, student_layers, strategy) == expected


def test_select_layers_errors():
    with pytest.raises(ValueError, match="num_student_layers must be at least 1"):
        select_layers(4, 0)
    with pytest.raises(
        ValueError, match=r"num_student_layers \(5\) is larger than the teacher's number of layers"
    ):
        select_layers(4, 5)
    with pytest.raises(ValueError, match="Unknown layer selection strategy 'random'"):
        select_layers(4, 2, "random")
    with pytest.raises(ValueError, match="'every_other' gives at most 2 layers"):
        select_layers(4, 3, "every_other")
    with pytest.raises(ValueError, match="num_teacher_layers must be at least 1"):
        select_layers(0, 1)


# --- student_from_teacher: BERT ----------------------------------------------------------------------------


def test_bert_sequence_classification_matches_teacher_layers_run_by_hand():
    teacher = BertForSequenceClassification(bert_config(num_labels=3, id2label=LABELS)).eval()
    layers = [0, 2]
    student = student_from_teacher(teacher, layers=layers).eval()

    assert type(student) is BertForSequenceClassification
    assert student.config.num_hidden_layers == 2
    assert student.config.id2label == LABELS and student.config.num_labels == 3
    assert_blocks_copied(teacher, student, "bert.encoder.layer", layers)
    assert torch.equal(
        student.bert.encoder.layer[1].output.dense.weight, teacher.bert.encoder.layer[2].output.dense.weight
    )
    for name in ("bert.embeddings.word_embeddings.weight", "bert.pooler.dense.weight", "classifier.weight"):
        assert torch.equal(student.get_parameter(name), teacher.get_parameter(name))

    ids = input_ids()
    with torch.no_grad():
        # Reference: the teacher's embeddings, then only teacher layers 0 and 2, then its pooler and head.
        hidden = teacher.bert.embeddings(input_ids=ids)
        for i in layers:
            hidden = teacher.bert.encoder.layer[i](hidden)
        expected = teacher.classifier(teacher.bert.pooler(hidden))
        logits = student(input_ids=ids).logits
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)


def test_bert_token_classification_keeps_labels_and_head(tmp_path):
    labels = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
    label2id = {v: k for k, v in labels.items()}
    teacher = BertForTokenClassification(bert_config(id2label=labels, label2id=label2id)).eval()
    student = student_from_teacher(teacher, num_layers=2, strategy="every_other").eval()

    assert student.config.distillation["layers"] == [0, 2]
    assert student.config.label2id == label2id and student.config.num_labels == 5
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    reference = with_only_layers(teacher, "bert.encoder.layer", [0, 2])
    ids = input_ids()
    with torch.no_grad():
        torch.testing.assert_close(
            student(input_ids=ids).logits, reference(input_ids=ids, use_cache=False).logits, rtol=0, atol=0
        )

    student.save_pretrained(tmp_path)
    reloaded = AutoModelForTokenClassification.from_pretrained(tmp_path).eval()
    assert reloaded.config.id2label == labels
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, student(input_ids=ids).logits)


def test_bert_masked_lm_decoder_stays_tied():
    teacher = BertForMaskedLM(bert_config()).eval()
    student = student_from_teacher(teacher, layers=[1, 3])
    assert student.cls.predictions.decoder.weight is student.bert.embeddings.word_embeddings.weight
    assert torch.equal(
        student.cls.predictions.transform.dense.weight, teacher.cls.predictions.transform.dense.weight
    )
    assert_blocks_copied(teacher, student, "bert.encoder.layer", [1, 3])


def test_student_from_teacher_takes_dropout_override_and_train_mode():
    teacher = BertForSequenceClassification(bert_config())
    student = student_from_teacher(teacher, num_layers=2, hidden_dropout_prob=0.0)
    assert student.config.hidden_dropout_prob == 0.0
    assert student.training


# --- student_from_teacher: GPT-2 ---------------------------------------------------------------------------


def test_gpt2_lm_tied_copied_and_round_trips(tmp_path):
    teacher = GPT2LMHeadModel(gpt2_config()).eval()
    layers = [1, 3]
    student = student_from_teacher(teacher, layers=layers).eval()

    assert student.config.n_layer == 2
    assert student.lm_head.weight is student.transformer.wte.weight
    assert torch.equal(student.transformer.wte.weight, teacher.transformer.wte.weight)
    assert torch.equal(student.transformer.ln_f.weight, teacher.transformer.ln_f.weight)
    assert_blocks_copied(teacher, student, "transformer.h", layers)

    ids = input_ids()
    reference = with_only_layers(teacher, "transformer.h", layers)
    with torch.no_grad():
        logits = student(input_ids=ids).logits
        torch.testing.assert_close(logits, reference(input_ids=ids, use_cache=False).logits, rtol=0, atol=0)

    student.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["distillation"] == {
        "teacher": teacher.name_or_path,
        "init": "teacher_layers",
        "layers": layers,
        "strategy": "explicit",
        "num_teacher_layers": LAYERS,
    }
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert reloaded.config.distillation == student.config.distillation
    assert reloaded.lm_head.weight is reloaded.transformer.wte.weight
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, logits)


def test_gpt2_sequence_classification(tmp_path):
    teacher = GPT2ForSequenceClassification(gpt2_config(num_labels=3, id2label=LABELS, pad_token_id=0)).eval()
    student = student_from_teacher(teacher, num_layers=3).eval()
    assert student.config.distillation["layers"] == [0, 2, 3]
    assert student.config.id2label == LABELS
    assert torch.equal(student.score.weight, teacher.score.weight)

    ids = input_ids()
    reference = with_only_layers(teacher, "transformer.h", [0, 2, 3])
    with torch.no_grad():
        logits = student(input_ids=ids).logits
        torch.testing.assert_close(logits, reference(input_ids=ids, use_cache=False).logits, rtol=0, atol=0)
    student.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, logits)


# --- student_from_teacher: Llama / Qwen2 --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_llama_causal_lm_matches_teacher_layers_and_keeps_dtype(dtype, tmp_path):
    teacher = LlamaForCausalLM(LlamaConfig(**llama_kwargs())).to(dtype).eval()
    student = student_from_teacher(teacher, num_layers=2, strategy="last").eval()

    assert student.dtype == dtype and student.config.dtype == dtype
    assert student.config.distillation["layers"] == [2, 3]
    assert_blocks_copied(teacher, student, "model.layers", [2, 3])
    assert torch.equal(student.lm_head.weight, teacher.lm_head.weight)
    assert torch.equal(student.model.norm.weight, teacher.model.norm.weight)

    ids = input_ids()
    reference = with_only_layers(teacher, "model.layers", [2, 3])
    with torch.no_grad():
        logits = student(input_ids=ids).logits
        torch.testing.assert_close(logits, reference(input_ids=ids, use_cache=False).logits, rtol=0, atol=0)

    if dtype == torch.float32:
        student.save_pretrained(tmp_path)
        reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
        assert reloaded.config.distillation == student.config.distillation
        with torch.no_grad():
            assert torch.equal(reloaded(input_ids=ids).logits, logits)


def test_llama_student_generates_with_cache():
    # Renumbered blocks must index the KV cache 0..n-1: generation with a cache equals generation without.
    teacher = LlamaForCausalLM(LlamaConfig(**llama_kwargs(pad_token_id=0))).eval()
    student = student_from_teacher(teacher, layers=[1, 3]).eval()
    ids = input_ids(batch=1)
    cached = student.generate(ids, max_new_tokens=4, do_sample=False, use_cache=True)
    uncached = student.generate(ids, max_new_tokens=4, do_sample=False, use_cache=False)
    assert cached.shape == (1, ids.shape[1] + 4)
    assert torch.equal(cached, uncached)


def test_llama_tied_embeddings_stay_tied():
    teacher = LlamaForCausalLM(LlamaConfig(**llama_kwargs(tie_word_embeddings=True)))
    student = student_from_teacher(teacher, num_layers=2)
    assert student.lm_head.weight is student.model.embed_tokens.weight
    assert torch.equal(student.lm_head.weight, teacher.lm_head.weight)


def test_per_layer_config_entries_are_subset():
    config = Qwen2Config(
        **llama_kwargs(use_sliding_window=True, max_window_layers=2, eos_token_id=[1, 2, 3, 4])
    )
    teacher = Qwen2ForCausalLM(config).eval()
    assert teacher.config.layer_types == [
        "full_attention",
        "full_attention",
        "sliding_attention",
        "sliding_attention",
    ]
    student = student_from_teacher(teacher, layers=[1, 2])
    assert student.config.layer_types == ["full_attention", "sliding_attention"]
    # A list of token ids is not per-layer even when its length equals the number of layers.
    assert student.config.eos_token_id == [1, 2, 3, 4]
    ids = input_ids()
    reference = with_only_layers(teacher, "model.layers", [1, 2])
    reference.config.layer_types = ["full_attention", "sliding_attention"]
    with torch.no_grad():
        torch.testing.assert_close(
            student.eval()(input_ids=ids).logits,
            reference(input_ids=ids, use_cache=False).logits,
            rtol=0,
            atol=0,
        )

    random_student = student_from_config(teacher, num_hidden_layers=2)
    assert random_student.config.layer_types == ["full_attention", "sliding_attention"]


# --- student_from_teacher: errors ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_bert() -> BertForSequenceClassification:
    return BertForSequenceClassification(bert_config())


def test_student_from_teacher_layer_errors(small_bert):
    with pytest.raises(
        ValueError, match=r"Layer index 4 is out of range: the teacher has 4 layers \(indices 0..3\)"
    ):
        student_from_teacher(small_bert, layers=[0, 4])
    with pytest.raises(ValueError, match="Layer index -1 is out of range"):
        student_from_teacher(small_bert, layers=[-1, 2])
    with pytest.raises(ValueError, match=r"layers \[1, 1\] contains duplicates"):
        student_from_teacher(small_bert, layers=[1, 1])
    with pytest.raises(ValueError, match=r"layers \[2, 0\] is not increasing"):
        student_from_teacher(small_bert, layers=[2, 0])
    with pytest.raises(ValueError, match="layers is empty"):
        student_from_teacher(small_bert, layers=[])
    with pytest.raises(ValueError, match="Pass either layers or num_layers, not both"):
        student_from_teacher(small_bert, layers=[0], num_layers=1)
    with pytest.raises(ValueError, match="Pass layers .* or num_layers"):
        student_from_teacher(small_bert)
    with pytest.raises(ValueError, match="larger than the teacher's number of layers"):
        student_from_teacher(small_bert, num_layers=5)
    with pytest.raises(ValueError, match="not as a config override"):
        student_from_teacher(small_bert, num_layers=2, num_hidden_layers=2)


def test_student_from_teacher_shape_mismatch_names_parameter_shapes_and_cause(small_bert):
    with pytest.raises(
        ValueError,
        match=r"Cannot copy 'bert\.embeddings\.word_embeddings\.weight'.*teacher shape \(100, 16\), "
        r"student shape \(100, 8\)\. Likely cause: the config overrides \['hidden_size', 'num_attention_heads'\]",
    ):
        student_from_teacher(small_bert, num_layers=2, hidden_size=8, num_attention_heads=1)


def test_student_from_teacher_unknown_override_suggests_close_names(small_bert):
    with pytest.raises(
        ValueError, match=r"BertConfig has no attribute 'hiden_dropout_prob'.*'hidden_dropout_prob'"
    ):
        student_from_teacher(small_bert, num_layers=2, hiden_dropout_prob=0.0)


def test_student_from_teacher_needs_one_block_list(small_bert):
    teacher = copy.deepcopy(small_bert)
    teacher.extra = nn.ModuleList([nn.Linear(2, 2) for _ in range(LAYERS)])
    with pytest.raises(ValueError, match=r"Expected exactly one nn\.ModuleList of 4 blocks .* found \['bert"):
        student_from_teacher(teacher, num_layers=2)


# --- student_from_config -------------------------------------------------------------------------------


def test_student_from_config_copies_embeddings_when_hidden_size_unchanged():
    teacher = GPT2LMHeadModel(gpt2_config())
    student = student_from_config(teacher, num_hidden_layers=2, n_inner=24)
    assert type(student) is GPT2LMHeadModel and student.config.n_layer == 2 and student.config.n_inner == 24
    assert torch.equal(student.transformer.wte.weight, teacher.transformer.wte.weight)
    assert torch.equal(student.transformer.wpe.weight, teacher.transformer.wpe.weight)
    assert student.lm_head.weight is student.transformer.wte.weight
    # The blocks are new: not a copy of any teacher block.
    assert not torch.equal(
        student.transformer.h[0].mlp.c_fc.weight[:, :24], teacher.transformer.h[0].mlp.c_fc.weight[:, :24]
    )
    assert student.config.distillation == {
        "teacher": teacher.name_or_path,
        "init": "random",
        "copied": ["word_embeddings", "position_embeddings"],
        "left_random": {},
    }


def test_student_from_config_leaves_embeddings_random_when_sizes_change(tmp_path):
    teacher = BertForSequenceClassification(bert_config(num_labels=3, id2label=LABELS))
    student = student_from_config(
        teacher, num_hidden_layers=2, hidden_size=8, num_attention_heads=2, intermediate_size=16
    )
    assert student.config.hidden_size == 8 and student.config.id2label == LABELS
    assert student.bert.embeddings.word_embeddings.weight.shape == (VOCAB, 8)
    provenance = student.config.distillation
    assert provenance["copied"] == []
    assert provenance["left_random"] == {
        "word_embeddings": "hidden size changed from 16 to 8",
        "position_embeddings": "hidden size changed from 16 to 8",
    }

    # Same hidden size but fewer positions: word embeddings copied, position embeddings left random.
    student = student_from_config(teacher, max_position_embeddings=16)
    assert student.config.distillation["copied"] == ["word_embeddings"]
    assert student.config.distillation["left_random"] == {
        "position_embeddings": "shape (16, 16) differs from the teacher's (32, 16)"
    }
    student.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert reloaded.config.distillation == student.config.distillation


def test_student_from_config_for_llama_and_label_override():
    teacher = LlamaForCausalLM(LlamaConfig(**llama_kwargs()))
    student = student_from_config(teacher, num_hidden_layers=1, intermediate_size=8)
    assert student.config.num_hidden_layers == 1
    assert torch.equal(student.model.embed_tokens.weight, teacher.model.embed_tokens.weight)
    assert student.config.distillation["copied"] == ["word_embeddings"]  # RoPE: no position table

    bert = BertForSequenceClassification(bert_config(num_labels=3, id2label=LABELS))
    assert student_from_config(bert, num_labels=5).config.num_labels == 5


def test_student_from_config_unknown_override():
    teacher = LlamaForCausalLM(LlamaConfig(**llama_kwargs()))
    with pytest.raises(ValueError, match=r"LlamaConfig has no attribute 'num_layers'.*Did you mean"):
        student_from_config(teacher, num_layers=2)
    with pytest.raises(ValueError, match="pass the per-layer config entries"):
        student_from_config(
            Qwen2ForCausalLM(Qwen2Config(**llama_kwargs(use_sliding_window=True))), num_hidden_layers=6
        )


# --- gpt2_student_for ----------------------------------------------------------------------------------


def test_gpt2_student_for_llama_teacher_shares_vocabulary():
    teacher = LlamaForCausalLM(LlamaConfig(**llama_kwargs(bos_token_id=1, eos_token_id=2, pad_token_id=0)))
    student = gpt2_student_for(teacher, n_layer=2)
    assert type(student) is GPT2LMHeadModel
    config = student.config
    assert (config.vocab_size, config.n_layer, config.n_embd, config.n_head, config.n_positions) == (
        VOCAB,
        2,
        16,
        2,
        32,
    )
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (1, 2, 0)
    assert config.distillation["init"] == "random" and config.distillation["architecture"] == "gpt2"
    ids = input_ids()
    with torch.no_grad():
        assert student(input_ids=ids).logits.shape == teacher(input_ids=ids).logits.shape

    small = gpt2_student_for(teacher, n_layer=1, n_embd=8, n_head=4, n_positions=16, resid_pdrop=0.0)
    assert (small.config.n_embd, small.config.n_head, small.config.resid_pdrop) == (8, 4, 0.0)
    with pytest.raises(ValueError, match=r"n_embd \(10\) must be divisible by n_head \(4\)"):
        gpt2_student_for(teacher, n_embd=10, n_head=4)
    with pytest.raises(TypeError, match="needs a model, a config or a tokenizer, got int"):
        gpt2_student_for(3)


def test_gpt2_student_for_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<pad>", "<s>", "</s>", "<unk>", "def", "return", "x", "+", "1"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    tokenizer.add_tokens(["lambda"])
    student = gpt2_student_for(tokenizer, n_layer=1, n_embd=8, n_head=2, n_positions=16)
    assert student.config.vocab_size == len(words) + 1
    assert (student.config.bos_token_id, student.config.eos_token_id, student.config.pad_token_id) == (
        1,
        2,
        0,
    )


# --- sizes ---------------------------------------------------------------------------------------------


def test_count_parameters_counts_tied_weights_once():
    model = GPT2LMHeadModel(gpt2_config())
    unique = {id(p): p.numel() for p in model.parameters()}
    assert count_parameters(model) == sum(unique.values())
    # lm_head shares wte, so it adds nothing.
    assert count_parameters(model) == sum(
        t.numel() for n, t in model.state_dict().items() if n != "lm_head.weight"
    )
    model.transformer.wte.weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == count_parameters(model) - VOCAB * 16


def test_model_size_on_disk(tmp_path):
    model = GPT2LMHeadModel(gpt2_config())
    size = model_size_on_disk(model)
    # float32 weights, stored once (tied lm_head not duplicated), plus a small safetensors header.
    assert 4 * count_parameters(model) <= size < 4 * count_parameters(model) + 10_000
    model.save_pretrained(tmp_path)
    assert model_size_on_disk(tmp_path) == size
    assert model_size_on_disk(tmp_path / "model.safetensors") == size
    assert model_size_on_disk(student_from_teacher(model, num_layers=2)) < size
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No weight files"):
        model_size_on_disk(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="neither a model folder nor a weight file"):
        model_size_on_disk(tmp_path / "missing")


def test_sparse_per_layer_config_is_renumbered():
    # Heterogeneous configs (per-layer overrides keyed by layer index); checked on the config because few
    # model classes build such layers yet.
    from hf_distill.students.build import _derive_config

    config = LlamaConfig(
        **{**llama_kwargs(), "num_hidden_layers": 12},
        per_layer_config={2: {"intermediate_size": 48}, 11: {"intermediate_size": 8}},
    )
    student_config = _derive_config(config, [0, 2, 5, 11], {})
    assert student_config.num_hidden_layers == 4
    assert [layer.intermediate_size for layer in student_config.per_layer_config] == [32, 48, 32, 8]


def test_warns_when_attention_scale_depends_on_layer_index(caplog):
    teacher = GPT2LMHeadModel(gpt2_config(scale_attn_by_inverse_layer_idx=True))
    with caplog.at_level("WARNING", logger="hf_distill.students.build"):
        student_from_teacher(teacher, layers=[0, 1])
    assert not caplog.records
    with caplog.at_level("WARNING", logger="hf_distill.students.build"):
        student_from_teacher(teacher, layers=[1, 3])
    assert "scale_attn_by_inverse_layer_idx" in caplog.text


def test_quantization_config_of_a_gguf_teacher_is_dropped(caplog, tmp_path):
    # A teacher loaded with `gguf_file=` holds dequantised float tensors but keeps a quantization_config,
    # which would make the saved student look quantised to from_pretrained.
    teacher = LlamaForCausalLM(LlamaConfig(**llama_kwargs())).eval()
    teacher.config.quantization_config = {
        "quant_method": "gguf",
        "gguf_file": "teacher.gguf",
        "dequantize": False,
    }
    with caplog.at_level("WARNING", logger="hf_distill.students.build"):
        student = student_from_teacher(teacher, num_layers=2).eval()
    assert "Dropped quantization_config" in caplog.text
    assert getattr(student.config, "quantization_config", None) is None
    student.save_pretrained(tmp_path)
    assert "quantization_config" not in json.loads((tmp_path / "config.json").read_text())
