"""Model cards and pushing a student: metadata the Hub parses, the run's numbers, no teacher uploaded.

No test reaches the Hub: ``push_student`` gets a fake client that records its calls.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import yaml
from huggingface_hub.utils import filter_repo_objects

from hf_distill import cli
from hf_distill.hub.card import CARD_MARKER, render_model_card, write_model_card
from hf_distill.hub.push import UPLOAD_IGNORE_PATTERNS, check_student_folder, push_student
from tests.helpers.hub import FakeHfApi
from tests.helpers.paths import GOLDEN
from tests.helpers.run_reports import make_card_run_report


def front_matter(card: str) -> tuple[dict, str]:
    assert card.startswith("---\n")
    yaml_text, body = card[4:].split("\n---\n", 1)
    return yaml.safe_load(yaml_text), body


# ---- model card -------------------------------------------------------------------------------------------


def test_card_metadata_holds_the_run():
    metadata, body = front_matter(
        render_model_card(make_card_run_report(), license="apache-2.0", language="en")
    )
    assert metadata["base_model"] == "textattack/bert-base-uncased-SST-2"
    assert "base_model_relation" not in metadata  # the Hub has no "distillation" relation
    assert metadata["library_name"] == "transformers"
    assert metadata["pipeline_tag"] == "text-classification"
    assert metadata["tags"] == ["distillation", "hf_distill", "sentiment"]
    assert metadata["datasets"] == ["stanfordnlp/sst2"]
    assert metadata["license"] == "apache-2.0" and metadata["language"] == "en"
    (entry,) = metadata["model-index"]
    assert entry["name"] == "bert-base-uncased-SST-2-distilled"
    (result,) = entry["results"]
    assert result["task"]["type"] == "text-classification"
    assert result["dataset"] == {"name": "stanfordnlp/sst2", "type": "stanfordnlp/sst2"}
    assert result["metrics"] == [{"type": "accuracy", "value": 0.8876}]
    assert body.lstrip().startswith(CARD_MARKER)


def test_card_body_holds_settings_and_table():
    _, body = front_matter(render_model_card(make_card_run_report(), repo_id="someone/sst2-student"))
    assert "# sst2-student" in body
    assert "(revision `8f2e3b1`), for the task **sentiment**" in body
    assert "- Initialised from: teacher layers [0, 5, 11]" in body
    for line in (
        "- Distillation loss: forward_kl",
        "- Temperature T: 3.0",
        "- alpha (weight of the distillation term): 0.7",
        "- Hidden-state matching: weight 0.5, cosine loss, layer map 0:0,1:6,2:12",
        "- Examples: 2000 train, 500 validation, 872 test",
    ):
        assert line in body
    rows = [line for line in body.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| Model | Role | accuracy (higher is better) | Retention | Parameters |")
    assert rows[1] == (
        "| `textattack/bert-base-uncased-SST-2` | teacher | 0.9243 | 100.0% | 109.48M | 438.0 MB "
        "| 12.50 | 180.25 | 1.00x | 1.00x |"
    )
    assert rows[2] == (
        "| **distilled** (this model) | distilled | 0.8876 | 96.0% | 45.69M | 182.7 MB | 4.10 | 55.00 | 3.05x | 3.28x |"
    )
    assert rows[3].startswith("| no_kd_baseline | no kd baseline | 0.8512 | 92.1% |")
    assert 'AutoModelForSequenceClassification.from_pretrained("someone/sst2-student")' in body


def test_card_of_a_fixed_report_is_unchanged():
    # The whole card, not only the lines the other tests look for: a refactor of the renderer must not move
    # a blank line. The body is compared as text; the front matter as data, since its YAML layout is
    # huggingface_hub's.
    student_config = {
        "model_type": "bert",
        "architectures": ["BertForSequenceClassification"],
        "num_hidden_layers": 3,
        "hidden_size": 768,
        "num_attention_heads": 12,
    }
    card = render_model_card(
        make_card_run_report(),
        license="apache-2.0",
        language="en",
        repo_id="someone/sst2-student",
        student_config=student_config,
    )
    metadata, body = front_matter(card)
    assert body == (GOLDEN / "model_card_sst2.md").read_text(encoding="utf-8")
    assert metadata == {
        "base_model": "textattack/bert-base-uncased-SST-2",
        "datasets": ["stanfordnlp/sst2"],
        "language": "en",
        "library_name": "transformers",
        "license": "apache-2.0",
        "metrics": ["accuracy"],
        "pipeline_tag": "text-classification",
        "tags": ["distillation", "hf_distill", "sentiment"],
        "model-index": [
            {
                "name": "sst2-student",
                "results": [
                    {
                        "task": {"type": "text-classification"},
                        "dataset": {"name": "stanfordnlp/sst2", "type": "stanfordnlp/sst2"},
                        "metrics": [{"type": "accuracy", "value": 0.8876}],
                    }
                ],
            }
        ],
    }


def test_card_for_another_student_and_overrides(tmp_path):
    report = make_card_run_report()
    report["teacher"]["name_or_path"] = str(tmp_path)  # a local teacher folder that names no Hub id
    metadata, body = front_matter(render_model_card(report, tags=["bert"]))
    assert "base_model" not in metadata
    assert metadata["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.8876
    assert metadata["tags"] == ["distillation", "hf_distill", "sentiment", "bert"]
    assert "| **distilled** (this model) |" in body
    metadata, _ = front_matter(render_model_card(report, base_model="google-bert/bert-base-uncased"))
    assert metadata["base_model"] == "google-bert/bert-base-uncased"


def test_card_unknown_student():
    with pytest.raises(
        ValueError, match=r"no student named 'tiny'; its students are \['distilled', 'no_kd_baseline'\]"
    ):
        render_model_card(make_card_run_report(), student_name="tiny")


def test_partial_card_during_training():
    partial = {
        "teacher": {"name_or_path": "openai-community/gpt2", "revision": None},
        "distillation": {
            "distillation_loss": "reverse_kl",
            "temperature": 2.0,
            "alpha": 0.5,
            "jsd_beta": 0.1,
        },
    }
    metadata, body = front_matter(render_model_card(partial))
    assert metadata == {
        "base_model": "openai-community/gpt2",
        "library_name": "transformers",
        "tags": ["distillation", "hf_distill"],
    }
    assert "(revision not pinned)." in body
    assert "- Temperature T: 2.0" in body and "- Other settings: jsd_beta = 0.1" in body
    assert "- Hidden-state matching: not measured" in body
    assert "- Examples: not measured" in body and "- Parameters: not measured" in body
    rows = [line for line in body.splitlines() if line.startswith("| ")]
    assert rows[1] == "| `openai-community/gpt2` | teacher |" + " not measured |" * 8
    assert rows[2] == "| **distilled** (this model) | student |" + " not measured |" * 8


def test_partial_card_rejects_ill_typed_values():
    with pytest.raises(
        ValueError, match=r"report: key 'distillation\.temperature' must be a number, got str"
    ):
        render_model_card({"distillation": {"temperature": "2"}})


# ---- a real student folder --------------------------------------------------------------------------------


@pytest.fixture
def run_dir(tmp_path, saved_student) -> Path:
    """A run directory as the recipes write it: report.json beside the student folders."""
    shutil.copytree(saved_student, tmp_path / "distilled")
    (tmp_path / "report.json").write_text(json.dumps(make_card_run_report(str(tmp_path / "distilled"))))
    return tmp_path


def test_write_model_card_reads_config_and_report_path(run_dir):
    path = write_model_card(run_dir / "distilled", run_dir / "report.json", repo_id="someone/tiny")
    assert path == run_dir / "distilled" / "README.md"
    metadata, body = front_matter(path.read_text())
    assert metadata["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.8876
    assert (
        "- Architecture: `BertForSequenceClassification` (model type `bert`): 2 layers, hidden size 16"
        in body
    )


def test_push_student_uploads_student_folder_with_card(run_dir):
    api = FakeHfApi()
    url = push_student(run_dir / "distilled", "someone/tiny-student", private=True, api=api, license="mit")
    assert url == "https://huggingface.co/someone/tiny-student/commit/0123abc"
    (create, _, create_kwargs), (upload, _, upload_kwargs) = api.calls
    assert create == "create_repo" and api.calls[0][1] == ("someone/tiny-student",)
    assert create_kwargs["private"] is True and create_kwargs["exist_ok"] is True
    assert upload == "upload_folder"
    assert upload_kwargs["repo_id"] == "someone/tiny-student"
    assert Path(upload_kwargs["folder_path"]) == run_dir / "distilled"
    assert {"teacher*", "*/teacher*", "checkpoint-*/", "runs/", "optimizer.*"} <= set(
        upload_kwargs["ignore_patterns"]
    )
    metadata, body = front_matter(api.readme_at_upload)
    assert metadata["license"] == "mit" and metadata["model-index"][0]["name"] == "tiny-student"
    assert "## How to use" in body and '"someone/tiny-student"' in body


def test_push_student_ignore_patterns_leave_only_the_student(run_dir):
    folder = run_dir / "distilled"
    for extra in (
        "checkpoint-500/model.safetensors",
        "checkpoint-500/optimizer.pt",
        "runs/Jan01/events.out.tfevents.1",
        "optimizer.pt",
        "scheduler.pt",
        "rng_state.pth",
        "distillation_modules.pt",
        "feature_map_projections.pt",
        "teacher_config.json",
        "teacher_notes/README.md",
    ):
        (folder / extra).parent.mkdir(parents=True, exist_ok=True)
        (folder / extra).write_text("x")
    api = FakeHfApi()
    push_student(folder, "someone/tiny", api=api)
    ignore = api.calls[1][2]["ignore_patterns"]
    assert tuple(ignore) == UPLOAD_IGNORE_PATTERNS
    files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    uploaded = set(filter_repo_objects(files, ignore_patterns=ignore))
    assert uploaded == {"config.json", "model.safetensors", "README.md"}


class HubAtTheHttpEdge:
    """The real ``HfApi.upload_folder`` (its own file listing and pattern filter) with the calls that would
    reach the Hub replaced: ``create_repo``, the card's YAML validation and ``create_commit``, whose operations
    say which files a push sends."""

    def __init__(self, monkeypatch):
        import huggingface_hub.hf_api as hf_api

        self.sent: list[str] | None = None
        self.calls: list[str] = []
        monkeypatch.setattr(hf_api, "is_xet_available", lambda: False)  # the single-commit path
        monkeypatch.setattr(
            hf_api.HfApi, "create_repo", lambda api, *a, **k: self.calls.append("create_repo")
        )
        monkeypatch.setattr(hf_api.HfApi, "_validate_yaml", lambda api, *a, **k: None)
        monkeypatch.setattr(hf_api.HfApi, "create_commit", lambda api, **kwargs: self._commit(**kwargs))

    def _commit(self, *, operations, repo_id, **kwargs):
        self.calls.append("create_commit")
        self.sent = sorted(op.path_in_repo for op in operations)
        return f"https://huggingface.co/{repo_id}/commit/0"


def _write_onnx_folder(folder: Path) -> list[str]:
    """Stand-ins for what ``hf-distill export FOLDER --output_dir FOLDER --quantize int8-dynamic`` adds (the
    graphs' content is the push guard's business, tested in test_push_guard.py)."""
    names = ["onnx/export.json", "onnx/model.onnx", "onnx/model_quantized.onnx"]
    (folder / "onnx").mkdir()
    for name in names:
        (folder / name).write_text("{}" if name.endswith(".json") else "")
    return names


def test_push_with_onnx_uploads_the_graphs_beside_the_safetensors(run_dir, monkeypatch):
    hub = HubAtTheHttpEdge(monkeypatch)
    folder = run_dir / "distilled"
    graphs = _write_onnx_folder(folder)
    push_student(folder, "someone/tiny")
    assert hub.sent == ["README.md", "config.json", "model.safetensors"]  # onnx/ only when asked for
    assert (
        push_student(folder, "someone/tiny", with_onnx=True) == "https://huggingface.co/someone/tiny/commit/0"
    )
    assert hub.sent == ["README.md", "config.json", "model.safetensors", *graphs]
    hub.sent = None
    assert cli.main(["push", str(folder), "someone/tiny", "--with_onnx"]) == 0
    assert hub.sent == ["README.md", "config.json", "model.safetensors", *graphs]
    assert hub.calls == ["create_repo", "create_commit"] * 3


def test_push_with_onnx_refuses_a_folder_without_a_graph(run_dir, monkeypatch, capsys):
    hub = HubAtTheHttpEdge(monkeypatch)
    folder = run_dir / "distilled"
    with pytest.raises(
        ValueError,
        match=r"distilled has no onnx/model\.onnx to upload \(--with_onnx\): export the student into its own "
        r"folder first, `hf-distill export .*distilled --output_dir .*distilled \[--quantize int8-dynamic\]`",
    ):
        push_student(folder, "someone/tiny", with_onnx=True)
    assert cli.main(["push", str(folder), "someone/tiny", "--with_onnx"]) == 2
    assert "has no onnx/model.onnx to upload" in capsys.readouterr().err
    assert hub.calls == [] and not (folder / "README.md").exists()


@pytest.mark.parametrize(
    "teacher_file", ["teacher/model.safetensors", "Teacher.safetensors", "sub/teacher/pytorch_model.bin"]
)
def test_push_student_refuses_teacher_weights(run_dir, teacher_file):
    # Refused rather than silently left out: a teacher in the folder means the wrong folder was passed.
    folder = run_dir / "distilled"
    (folder / teacher_file).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(folder / "model.safetensors", folder / teacher_file)
    api = FakeHfApi()
    with pytest.raises(
        ValueError, match=r"holds what looks like teacher weights \(.*\); hf_distill never uploads"
    ):
        push_student(folder, "someone/tiny", api=api)
    assert api.calls == []
    assert not (folder / "README.md").exists()


def test_check_student_folder_errors(tmp_path, saved_student):
    with pytest.raises(ValueError, match=r"is not a folder: pass the folder that save_pretrained wrote"):
        check_student_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"has no config\.json, so it is not a saved model"):
        check_student_folder(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(
        ValueError, match=r"has a config\.json but no weights \(model\.safetensors or pytorch_model\.bin\)"
    ):
        check_student_folder(tmp_path)
    assert check_student_folder(saved_student) == saved_student


def test_push_keeps_hand_written_readme(run_dir, caplog):
    readme = run_dir / "distilled" / "README.md"
    readme.write_text("# My own card\n")
    with caplog.at_level(logging.WARNING, logger="hf_distill.hub.push"):
        push_student(run_dir / "distilled", "someone/tiny", api=FakeHfApi())
    assert readme.read_text() == "# My own card\n"
    assert "was written by hand; keeping it" in caplog.text


def test_push_replaces_trainer_generated_readme(run_dir):
    readme = run_dir / "distilled" / "README.md"
    readme.write_text(
        "<!-- This model card has been generated automatically according to the information the Trainer had "
        "access to. You should probably proofread and complete it, then remove this comment. -->\n"
    )
    api = FakeHfApi()
    push_student(run_dir / "distilled", "someone/tiny", api=api)
    assert CARD_MARKER in api.readme_at_upload


def test_push_reads_report_inside_folder_and_skips_unlisted_students(run_dir, caplog):
    folder = run_dir / "distilled"
    (run_dir / "report.json").unlink()
    partial = {"teacher": {"name_or_path": "gpt2"}, "distillation": {"alpha": 0.9}}
    (folder / "report.json").write_text(json.dumps(partial))
    api = FakeHfApi()
    push_student(folder, "someone/tiny", api=api)
    assert "- alpha (weight of the distillation term): 0.9" in api.readme_at_upload

    other = run_dir / "other"
    shutil.copytree(folder, other, ignore=shutil.ignore_patterns("report.json", "README.md"))
    (run_dir / "report.json").write_text(json.dumps(make_card_run_report(str(folder))))
    with caplog.at_level(logging.WARNING, logger="hf_distill.hub.push"):
        push_student(other, "someone/other", api=FakeHfApi())
    assert "lists no student saved in" in caplog.text
    assert not (other / "README.md").exists()


def test_card_for_lower_is_better_codegen_run():
    report = make_card_run_report()
    report.update(task="codegen", metric_name="perplexity", higher_is_better=False)
    report["teacher"]["name_or_path"] = "Salesforce/codegen-350M-mono"
    metadata, body = front_matter(render_model_card(report))
    assert metadata["pipeline_tag"] == "text-generation" and metadata["metrics"] == ["perplexity"]
    assert metadata["model-index"][0]["results"][0]["metrics"][0] == {"type": "perplexity", "value": 0.8876}
    assert "| Model | Role | perplexity (lower is better) |" in body
    assert "AutoModelForCausalLM" in body and 'pipeline("text-generation"' in body


@pytest.mark.parametrize(
    "task, tag",
    [
        ("sequence_classification", "text-classification"),
        ("token_classification", "token-classification"),
        ("causal_lm", "text-generation"),
    ],
)
def test_trainer_task_names_get_a_pipeline_tag(task, tag):
    from hf_distill.hub.card import PIPELINE_TAGS

    assert PIPELINE_TAGS[task] == tag
