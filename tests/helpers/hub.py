"""Stand-ins for the Hub client and saved students, shared by the push, push-guard and card tests."""

from __future__ import annotations

from pathlib import Path

from hf_distill.hub.trainer_card import record_teacher
from hf_distill.students import student_from_teacher


def save_student(folder: Path, teacher, **kwargs) -> Path:
    """A student as the DistillationTrainer saves it: built from teacher layers, its record completed."""
    student = student_from_teacher(teacher, **{"num_layers": 1, **kwargs})
    record_teacher(student, teacher)
    student.save_pretrained(folder)
    return folder


class RecordingApiNoPatch:
    """An ``api=`` object for push_student: records the calls and what the upload would send."""

    def __init__(self):
        self.calls: list[str] = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append("create_repo")

    def upload_folder(self, **kwargs):
        self.calls.append("upload_folder")
        return f"https://huggingface.co/{kwargs['repo_id']}/commit/0"


class FakeHfApi:
    """Records the calls push_student makes, and what README.md held when the upload started."""

    def __init__(self):
        self.calls: list[tuple[str, tuple, dict]] = []
        self.readme_at_upload: str | None = None

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", (repo_id,), kwargs))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", (), kwargs))
        readme = Path(kwargs["folder_path"]) / "README.md"
        self.readme_at_upload = readme.read_text() if readme.is_file() else None

        class Commit:
            commit_url = f"https://huggingface.co/{kwargs['repo_id']}/commit/0123abc"

        return Commit()
