"""int8-dynamic keeps each transformer layer's feed-forward down-projection fp32 and quantizes every other
weight: which nodes those are (by the exporter's module scopes, or by the GELU that feeds them when a graph
has no scopes), that the int8 graph holds exactly that split and runs, that its predictions stay those of the
fp32 graph, and that unknown schemes are refused before any work; int8-weights stores every weight MatMul in
int8 blocks and stays nearer fp32 than int8-dynamic."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.tiny_models import tiny_bert_classifier, tiny_gpt2

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from hf_distill.export import OnnxModel, export_student  # noqa: E402
from hf_distill.export.quantize import (  # noqa: E402
    WEIGHT_BLOCK,
    check_quantization,
    down_projections,
    module_of,
)
from hf_distill.recipes.vision_models import SmallCNN  # noqa: E402

LAYERS = 3
# The int8 graph keeps the fp32 graph's argmax on at least this share of random rows (a tiny random model's
# logits are close together, so a few rows near a tie may flip).
AGREEMENT = 0.95


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    model = tiny_bert_classifier(seed=3, layers=LAYERS).eval()
    result = export_student(model, tmp_path_factory.mktemp("bert"), quantize="int8-dynamic")
    return model, result, onnx.load(str(result.onnx_path)), onnx.load(str(result.quantized_path))


def _weight_matmuls(graph) -> list[str]:
    """MatMul / Gemm nodes whose second input is a stored weight (what int8-dynamic can quantize)."""
    weights = {tensor.name for tensor in graph.initializer}
    return [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in weights]


def test_the_down_projections_are_each_layers_feed_forward_output(bert):
    _, _, fp32, _ = bert
    names = down_projections(fp32)
    modules = [module_of(node) for node in fp32.graph.node if node.name in names]
    assert modules == [f"model.bert.encoder.layer.{i}.output.dense" for i in range(LAYERS)]
    # The attention's own output projection has the same last name and is not one of them.
    attention = [
        n.name
        for n in fp32.graph.node
        if n.op_type == "MatMul" and module_of(n).endswith("attention.output.dense")
    ]
    assert len(attention) == LAYERS and not set(attention) & set(names)


def test_a_graph_without_the_exporters_scopes_finds_them_by_the_gelu_that_feeds_them(bert):
    _, _, fp32, _ = bert
    bare = onnx.ModelProto()
    bare.CopyFrom(fp32)
    for node in bare.graph.node:
        del node.metadata_props[:]
    assert all(module_of(node) == "" for node in bare.graph.node)
    assert down_projections(bare) == down_projections(fp32) and len(down_projections(bare)) == LAYERS


def test_gpt2s_mlp_projection_is_found_and_a_cnn_has_none(tmp_path):
    result = export_student(tiny_gpt2(seed=1, layers=2).eval(), tmp_path / "gpt2")
    graph = onnx.load(str(result.onnx_path))
    names = down_projections(graph)
    modules = [module_of(node) for node in graph.graph.node if node.name in names]
    assert modules == [f"model.transformer.h.{i}.mlp.c_proj" for i in range(2)]
    cnn = export_student(SmallCNN(10, 1).eval(), tmp_path / "cnn", pixel_shape=(1, 32, 32))
    assert down_projections(onnx.load(str(cnn.onnx_path))) == []


def test_int8_dynamic_quantizes_every_weight_but_the_down_projections(bert):
    _, _, fp32, int8 = bert
    kept = set(down_projections(fp32))
    quantizable = _weight_matmuls(fp32.graph)
    ops = [node.op_type for node in int8.graph.node]
    assert ops.count("MatMulInteger") == len(quantizable) - len(kept) > 0
    still_fp32 = {n.name for n in int8.graph.node if n.op_type == "MatMul"}
    assert kept <= still_fp32
    # Nothing else of the weights' MatMuls stayed fp32 (only the attention's activation-by-activation ones).
    assert not (still_fp32 - kept) & set(quantizable)


def test_int8_dynamic_scales_each_weight_column_on_its_own(bert):
    _, _, fp32, int8 = bert
    weights = {tensor.name: tensor for tensor in fp32.graph.initializer}
    shapes = {tensor.name: list(tensor.dims) for tensor in int8.graph.initializer}
    integer = [node for node in int8.graph.node if node.op_type == "MatMulInteger"]
    assert integer
    for node in integer:
        # MatMulInteger(A, B, a_zero_point, b_zero_point): B's zero point, like its scale, is one per output
        # column (per-channel), not one scalar for the whole matrix (per-tensor).
        b_zero_point = node.input[3]
        scale = b_zero_point.replace("_zero_point", "_scale")
        columns = shapes[node.input[1]][-1]
        assert shapes[b_zero_point] == [columns] and shapes[scale] == [columns], node.name
        # ... of a weight of the fp32 graph (a Gemm's transposed first, as onnxruntime rewrites it).
        assert node.input[1].removesuffix("_quantized").removesuffix("_Transposed") in weights


def test_the_int8_graph_runs_and_keeps_the_fp32_graphs_predictions(bert):
    model, result, _, _ = bert
    generator = torch.Generator().manual_seed(11)
    ids = torch.randint(0, 80, (200, 16), generator=generator)
    mask = torch.ones_like(ids)
    mask[::3, 10:] = 0  # padded rows too
    fp32 = OnnxModel(result.onnx_path, threads=1)(input_ids=ids, attention_mask=mask).logits
    int8 = OnnxModel(result.quantized_path, threads=1)(input_ids=ids, attention_mask=mask).logits
    assert torch.isfinite(int8).all() and int8.shape == (200, model.config.num_labels)
    assert float((int8.argmax(-1) == fp32.argmax(-1)).float().mean()) >= AGREEMENT
    assert not torch.equal(int8, fp32)  # it is an int8 graph, not the fp32 one again
    assert result.int8_agreement is not None and result.int8_agreement >= AGREEMENT


@pytest.mark.parametrize("scheme", ["int8", "int4", "INT8-DYNAMIC", ""])
def test_unknown_schemes_are_refused_naming_the_known_ones(scheme, tmp_path):
    with pytest.raises(
        ValueError, match=r"not a scheme the export knows; use one of \['int8-dynamic', 'int8-st"
    ):
        check_quantization(scheme, None)
    with pytest.raises(ValueError, match="not a scheme the export knows"):
        export_student(tiny_bert_classifier(), tmp_path / "out", quantize=scheme)
    assert not (tmp_path / "out").exists()


def test_gpt2s_down_projections_are_gemms_and_stay_fp32_in_the_int8_graph(tmp_path):
    result = export_student(tiny_gpt2(seed=1, layers=2).eval(), tmp_path / "gpt2", quantize="int8-dynamic")
    fp32, int8 = onnx.load(str(result.onnx_path)), onnx.load(str(result.quantized_path))
    kept = down_projections(fp32)
    assert {n.op_type for n in fp32.graph.node if n.name in kept} == {"Gemm"}
    # onnxruntime rewrites each Gemm as "<name>_MatMul" before quantizing; the kept ones stay float MatMuls.
    float_matmuls = {
        n.name.removesuffix("_MatMul") for n in int8.graph.node if n.op_type in ("MatMul", "Gemm")
    }
    quantized = {
        n.name.removesuffix("_MatMul_quant") for n in int8.graph.node if n.op_type == "MatMulInteger"
    }
    assert set(kept) <= float_matmuls and not set(kept) & quantized
    assert len(quantized) == len(_weight_matmuls(fp32.graph)) - len(kept) > 0


def test_int8_weights_stores_every_weight_matmul_in_int8_blocks_and_stays_closest_to_fp32(bert, tmp_path):
    model, dynamic, fp32, _ = bert
    result = export_student(model, tmp_path / "weights", quantize="int8-weights")
    graph = onnx.load(str(result.quantized_path)).graph
    blocked = [node for node in graph.node if node.op_type == "MatMulNBits"]
    weight_matmuls = [
        n
        for n in _weight_matmuls(fp32.graph)
        if n in {m.name for m in fp32.graph.node if m.op_type == "MatMul"}
    ]
    assert len(blocked) == len(weight_matmuls) > 0  # every MatMul of a stored weight, down-projections too
    for node in blocked:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert (attributes["bits"], attributes["block_size"], attributes["accuracy_level"]) == (
            8,
            WEIGHT_BLOCK,
            4,
        )
    # No MatMul of a stored weight is left in float; Gemms (the pooler and classifier here) are.
    weights = {tensor.name for tensor in graph.initializer}
    assert not [n for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    assert {
        n.op_type for n in graph.node if n.name in set(_weight_matmuls(fp32.graph)) - set(weight_matmuls)
    } == {"Gemm"}
    generator = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 80, (64, 16), generator=generator)
    mask = torch.ones_like(ids)
    mask[::4, 12:] = 0
    reference = OnnxModel(result.onnx_path, threads=1)(input_ids=ids, attention_mask=mask).logits
    blocks = OnnxModel(result.quantized_path, threads=1)(input_ids=ids, attention_mask=mask).logits
    whole = OnnxModel(dynamic.quantized_path, threads=1)(input_ids=ids, attention_mask=mask).logits
    assert not torch.equal(blocks, reference)  # it is an int8 graph, not the fp32 one again
    # Scales per block of 32 weights and per block of each row's activations: nearer fp32 than int8-dynamic.
    assert (blocks - reference).abs().max() < (whole - reference).abs().max()
    assert float((blocks.argmax(-1) == reference.argmax(-1)).float().mean()) >= AGREEMENT
