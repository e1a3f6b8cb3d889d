"""The push guard reads ONNX graphs (``push --with_onnx`` sends ``onnx/``): a teacher exported in fp32 is found
by content (transposed weights and external data included), a teacher's int8 graph by the ``export.json``
that ``export_student`` writes beside it, and the student's own graphs go up."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers.hub import RecordingApiNoPatch, save_student
from tests.helpers.tiny_models import tiny_bert_classifier

pytest.importorskip("onnxruntime")

from hf_distill.export import export_student  # noqa: E402
from hf_distill.hub.onnx_graphs import onnx_tensors  # noqa: E402
from hf_distill.hub.push import push_student  # noqa: E402
from hf_distill.hub.push_guard import files_holding, model_fingerprint, tensor_digest  # noqa: E402


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    """The teacher exported (fp32 and int8) as the recipes export it, and a student of it exported from its
    own folder into that folder, as ``hf-distill export FOLDER --output_dir FOLDER`` does."""
    root = tmp_path_factory.mktemp("exports")
    teacher = tiny_bert_classifier(seed=1, num_labels=2).eval()
    export_student(teacher, root / "teacher_export", quantize="int8-dynamic")
    student = save_student(root / "student", teacher)
    export_student(student, student, quantize="int8-dynamic")
    return {"teacher": root / "teacher_export" / "onnx", "student": student}


@pytest.fixture
def student(tmp_path, exports) -> Path:
    return Path(shutil.copytree(exports["student"], tmp_path / "student"))


def test_the_students_own_graphs_go_up_and_record_where_they_came_from(student, exports):
    source = json.loads((student / "onnx" / "export.json").read_text())["source"]
    config = json.loads((student / "config.json").read_text())
    assert source["distillation_record"] is True  # kept through the folder's config
    assert source["fingerprint"]["tensors"] != config["distillation"]["teacher_fingerprint"]["tensors"]
    teacher_source = json.loads((exports["teacher"] / "export.json").read_text())["source"]
    assert teacher_source["distillation_record"] is False
    assert teacher_source["fingerprint"] == config["distillation"]["teacher_fingerprint"]
    api = RecordingApiNoPatch()
    push_student(student, "me/x", api=api, with_onnx=True)
    assert api.calls == ["create_repo", "upload_folder"]


def test_a_teachers_fp32_graph_is_found_by_content(student, exports):
    # No export.json: only the weights tell. BERT's Linear weights are stored transposed in the graph.
    (student / "onnx" / "export.json").unlink()
    (student / "onnx" / "model_quantized.onnx").unlink()
    shutil.copy(exports["teacher"] / "model.onnx", student / "onnx" / "model.onnx")
    with pytest.raises(
        ValueError,
        match=r"holds the teacher's weights: onnx/model\.onnx contain every tensor of the teacher fingerprint "
        r"in .*config\.json; hf_distill never uploads a teacher",
    ):
        push_student(student, "me/x", api=RecordingApiNoPatch(), with_onnx=True)
    api = RecordingApiNoPatch()
    push_student(student, "me/x", api=api)  # without --with_onnx, onnx/ stays home
    assert api.calls == ["create_repo", "upload_folder"]


def test_transposed_weights_are_what_finds_a_bert_teacher(exports):
    fingerprint = model_fingerprint(tiny_bert_classifier(seed=1, num_labels=2))
    graph = exports["teacher"] / "model.onnx"
    assert files_holding(fingerprint, {"onnx/model.onnx": graph}) == (["onnx/model.onnx"], [])
    wanted = set(fingerprint["tensors"])
    as_stored = {tensor_digest(load()) for name, _, load in onnx_tensors(graph) if not name.endswith(".T")}
    transposed = {tensor_digest(load()) for name, _, load in onnx_tensors(graph) if name.endswith(".T")}
    assert 0 < len(wanted & as_stored) < len(wanted) and wanted <= as_stored | transposed


def test_a_teachers_graph_with_external_data_is_found_and_orphan_data_refused(student, exports):
    import onnx

    (student / "onnx" / "export.json").unlink()
    (student / "onnx" / "model_quantized.onnx").unlink()
    onnx.save_model(
        onnx.load(str(exports["teacher"] / "model.onnx")),
        str(student / "onnx" / "model.onnx"),
        save_as_external_data=True,
        location="model.onnx_data",
        size_threshold=0,
    )
    kept_outside = onnx.load(str(student / "onnx" / "model.onnx"), load_external_data=False).graph.initializer
    assert all(not proto.raw_data and proto.external_data for proto in kept_outside)
    with pytest.raises(
        ValueError, match=r"holds the teacher's weights: onnx/model\.onnx contain every tensor"
    ):
        push_student(student, "me/x", api=RecordingApiNoPatch(), with_onnx=True)
    shutil.copy(
        exports["student"] / "onnx" / "model.onnx", student / "onnx" / "model.onnx"
    )  # the data orphaned
    with pytest.raises(
        ValueError, match=r"would upload onnx/model\.onnx_data, weight files hf_distill cannot read to tell"
    ):
        push_student(student, "me/x", api=RecordingApiNoPatch(), with_onnx=True)


def test_a_teachers_int8_graph_is_refused_by_its_export_record(student, exports):
    # int8 weights no longer equal the teacher's digests; the export.json that came with the graph tells.
    for name in ("model_quantized.onnx", "export.json"):
        shutil.copy(exports["teacher"] / name, student / "onnx" / name)
    teacher_int8 = exports["teacher"] / "model_quantized.onnx"
    assert files_holding(
        model_fingerprint(tiny_bert_classifier(seed=1, num_labels=2)), {"q": teacher_int8}
    ) == (
        [],
        [],
    )
    with pytest.raises(
        ValueError,
        match=r"would upload onnx/model\.onnx, exported from the teacher: the export\.json beside it records "
        r"the model's fingerprint, which is the teacher fingerprint in .*config\.json; hf_distill never uploads",
    ):
        push_student(student, "me/x", api=RecordingApiNoPatch(), with_onnx=True)


def test_an_int8_graph_without_its_record_is_refused_when_the_teacher_is_known(student, exports):
    (student / "onnx" / "export.json").unlink()
    shutil.copy(exports["teacher"] / "model_quantized.onnx", student / "onnx" / "model_quantized.onnx")
    with pytest.raises(
        ValueError,
        match=r"would upload onnx/model_quantized\.onnx, a quantized graph without the export\.json that says "
        r"which model it came from: its int8 weights cannot be told from the teacher",
    ):
        push_student(student, "me/x", api=RecordingApiNoPatch(), with_onnx=True)
    (student / "onnx" / "model_quantized.onnx").unlink()  # the student's fp32 graph alone: its content tells
    api = RecordingApiNoPatch()
    push_student(student, "me/x", api=api, with_onnx=True)
    assert api.calls == ["create_repo", "upload_folder"]


def test_a_graph_of_a_model_without_the_students_record_is_refused(student, exports):
    # No fingerprint at hand (a student saved before they were recorded, no run report): the graph's own
    # record still says it was not exported from a student.
    config = json.loads((student / "config.json").read_text())
    del config["distillation"]["teacher_fingerprint"]
    (student / "config.json").write_text(json.dumps(config))
    for name in ("model.onnx", "model_quantized.onnx", "export.json"):
        shutil.copy(exports["teacher"] / name, student / "onnx" / name)
    with pytest.raises(
        ValueError,
        match=r"would upload onnx/model\.onnx, exported from a model without the `distillation` record \(its "
        r"export\.json says so\): not a student saved by hf_distill, and maybe the teacher",
    ):
        push_student(student, "me/x", api=RecordingApiNoPatch(), with_onnx=True)
