"""Width pruning: nothing pruned changes nothing; pruning equals masking the dropped heads and channels by
hand; pruned models save, load and generate with a KV cache; refusals name what cannot be pruned."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Trainer,
    TrainingArguments,
)

from hf_distill import prune_width, student_from_config, student_from_teacher

VOCAB = 50


def llama(kv_heads: int = 2, layers: int = 3, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=16, intermediate_size=24, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=kv_heads, max_position_embeddings=32, pad_token_id=0,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=3, n_head=2, n_positions=32, n_inner=40,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=0)  # fmt: skip
    return GPT2LMHeadModel(config).eval()


def bert(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=40, max_position_embeddings=32, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, num_labels=3)  # fmt: skip
    return BertForSequenceClassification(config).eval()


def batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(1, VOCAB, (2, 7), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def logits(model, inputs=None):
    with torch.no_grad():
        return model(**(inputs or batch())).logits


def scores(rows: int, cols: int, seed: int) -> torch.Tensor:
    return torch.rand(rows, cols, generator=torch.Generator().manual_seed(seed))


def dropped(keep_scores: torch.Tensor, k: int) -> list[list[int]]:
    """Per row, the indices NOT among the k highest: what the test masks by hand."""
    top = keep_scores.topk(k, dim=-1).indices
    return [[i for i in range(keep_scores.shape[1]) if i not in set(row.tolist())] for row in top]


@pytest.mark.parametrize("make", [llama, gpt2, bert])
def test_nothing_pruned_gives_identical_outputs(make):
    model = make()
    pruned = prune_width(model, calibration=[batch()])
    assert torch.equal(logits(pruned), logits(model))
    assert pruned.config.distillation["width"]["kept_heads"] == "all"


def test_llama_pruning_equals_masking_dropped_heads_and_channels_by_hand():
    model = llama(kv_heads=2)  # two query heads per key/value head
    head_scores, channel_scores = scores(3, 4, 1), scores(3, 24, 2)
    pruned = prune_width(
        model, heads=2, intermediate_size=10, head_scores=head_scores, channel_scores=channel_scores
    )
    assert (pruned.config.num_attention_heads, pruned.config.num_key_value_heads) == (2, 1)
    assert (pruned.config.head_dim, pruned.config.intermediate_size) == (4, 10)
    # By hand: a dropped head's columns of o_proj and a dropped channel's column of down_proj set to zero
    # make the full model compute what the pruned one does.
    reference = copy.deepcopy(model)
    group_scores = head_scores.reshape(3, 2, 2).sum(-1)
    for i, layer in enumerate(reference.model.layers):
        with torch.no_grad():
            for g in dropped(group_scores, 1)[i]:
                layer.self_attn.o_proj.weight[:, g * 8 : (g + 1) * 8] = 0.0
            for c in dropped(channel_scores, 10)[i]:
                layer.mlp.down_proj.weight[:, c] = 0.0
    assert torch.allclose(logits(pruned), logits(reference), atol=1e-5)
    # And the weights are the slices themselves: layer 0's kept group and channels, in order.
    g = sorted(group_scores[0].topk(1).indices.tolist())[0]
    channels = sorted(channel_scores[0].topk(10).indices.tolist())
    source, target = model.model.layers[0], pruned.model.layers[0]
    assert torch.equal(target.self_attn.k_proj.weight, source.self_attn.k_proj.weight[g * 4 : (g + 1) * 4])
    assert torch.equal(target.self_attn.q_proj.weight, source.self_attn.q_proj.weight[g * 8 : (g + 1) * 8])
    assert torch.equal(target.mlp.down_proj.weight, source.mlp.down_proj.weight[:, channels])
    assert pruned.config.distillation["width"]["kept_heads"][0] == [2 * g, 2 * g + 1]


def test_gpt2_channels_slice_the_transposed_conv1d_weights():
    model = gpt2()
    channel_scores = scores(3, 40, 3)
    pruned = prune_width(model, intermediate_size=12, channel_scores=channel_scores)
    assert pruned.config.n_inner == 12
    reference = copy.deepcopy(model)
    for i, block in enumerate(reference.transformer.h):
        with torch.no_grad():
            block.mlp.c_proj.weight[dropped(channel_scores, 12)[i]] = (
                0.0  # Conv1D: [in, out], rows are inputs
            )
    assert torch.allclose(logits(pruned), logits(reference), atol=1e-5)
    kept = sorted(channel_scores[1].topk(12).indices.tolist())
    assert torch.equal(
        pruned.transformer.h[1].mlp.c_fc.weight, model.transformer.h[1].mlp.c_fc.weight[:, kept]
    )
    assert torch.equal(pruned.transformer.h[1].mlp.c_fc.bias, model.transformer.h[1].mlp.c_fc.bias[kept])


def test_bert_channels_pruned_by_calibration_round_trip(tmp_path):
    model = bert()
    channel_scores = scores(2, 40, 5)
    pruned = prune_width(model, intermediate_size=16, channel_scores=channel_scores)
    reference = copy.deepcopy(model)
    for i, layer in enumerate(reference.bert.encoder.layer):
        with torch.no_grad():
            layer.output.dense.weight[:, dropped(channel_scores, 16)[i]] = 0.0
    assert torch.allclose(logits(pruned), logits(reference), atol=1e-5)
    by_activation = prune_width(model, intermediate_size=16, calibration=[batch()])
    assert by_activation.config.distillation["width"]["importance"] == "activation magnitude"
    by_activation.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert reloaded.config.intermediate_size == 16
    assert torch.equal(logits(reloaded), logits(by_activation))


@pytest.mark.parametrize("make", [llama, gpt2])
def test_depth_then_width_saves_loads_and_generates_with_a_cache(make, tmp_path):
    teacher = make()
    student = student_from_teacher(teacher, layers=[0, 2])
    heads = {"heads": 2} if make is llama else {}
    pruned = prune_width(student, intermediate_size=8, calibration=[batch()], **heads)
    if make is llama:  # renumbered blocks index the cache 0..n-1
        assert [layer.self_attn.layer_idx for layer in pruned.model.layers] == [0, 1]
    pruned.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(teacher)
    assert reloaded.config.distillation["layers"] == [0, 2]
    assert torch.equal(logits(reloaded), logits(pruned))
    ids = batch()["input_ids"][:1]
    cached = reloaded.generate(ids, max_new_tokens=5, do_sample=False, use_cache=True)
    uncached = reloaded.generate(ids, max_new_tokens=5, do_sample=False, use_cache=False)
    assert cached.shape == (1, ids.shape[1] + 5)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("make", [llama, gpt2])
def test_students_generate_as_a_trained_teacher_does_with_its_cache(make, tmp_path):
    teacher = make()
    teacher.generation_config.eos_token_id = 7
    Trainer(model=teacher, args=TrainingArguments(str(tmp_path / "args"), report_to="none"))
    # What a fine-tuned teacher looks like: the Trainer switched the config's cache off (and saves it so).
    assert teacher.config.use_cache is False and teacher.generation_config.use_cache is True
    heads = {"heads": 2} if make is llama else {}
    students = {
        "layer cut": student_from_teacher(teacher, layers=[0, 2]),
        "smaller config": student_from_config(teacher, num_hidden_layers=1),
        "width": prune_width(teacher, intermediate_size=8, calibration=[batch()], **heads),
    }
    ids = batch()["input_ids"][:1]
    for name, student in students.items():
        student.save_pretrained(tmp_path / name)
        reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / name).eval()
        assert reloaded.generation_config.use_cache is True, name
        assert reloaded.generation_config.eos_token_id == 7, name
        out = reloaded.generate(ids, max_new_tokens=3, do_sample=False, return_dict_in_generate=True)
        assert out.past_key_values is not None, f"{name}: generated without its KV cache"


def test_refusals_name_what_is_wrong():
    with pytest.raises(ValueError, match=r"GPT2LMHeadModel \(gpt2\) cannot drop attention heads"):
        prune_width(gpt2(), heads=1, calibration=[batch()])
    with pytest.raises(
        ValueError, match=r"BertForSequenceClassification \(bert\) cannot drop attention heads"
    ):
        prune_width(bert(), heads=1, calibration=[batch()])
    with pytest.raises(ValueError, match="prune whole groups, so heads must be a multiple of 2"):
        prune_width(llama(kv_heads=2), heads=3, calibration=[batch()])
    with pytest.raises(ValueError, match="needs calibration=batches"):
        prune_width(llama(), intermediate_size=8)
    with pytest.raises(
        ValueError, match=r"intermediate_size=30 must be an integer from 1 to the model's current 24"
    ):
        prune_width(llama(), intermediate_size=30, calibration=[batch()])
    with pytest.raises(ValueError, match=r"channels scores have shape \(3, 5\); the model needs \(3, 24\)"):
        prune_width(llama(), intermediate_size=8, channel_scores=torch.ones(3, 5))
    with pytest.raises(ValueError, match="not all finite"):
        prune_width(llama(), intermediate_size=8, channel_scores=torch.full((3, 24), float("nan")))


def test_an_architecture_without_a_known_layout_is_refused_by_name():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    model = DistilBertForSequenceClassification(
        DistilBertConfig(vocab_size=VOCAB, dim=16, n_layers=2, n_heads=2, hidden_dim=32)
    )
    with pytest.raises(
        ValueError, match=r"DistilBertForSequenceClassification \(distilbert\) cannot be pruned in width"
    ):
        prune_width(model, intermediate_size=8, calibration=[batch()])
