"""A teacher cache pushed to the Hub as a dataset repository and loaded back by its id.

No test reaches the Hub: ``HfApi.create_repo`` / ``upload_folder`` and ``snapshot_download`` are replaced at
that edge by stand-ins that copy files to and from a local folder playing the Hub's storage, so everything of
hf_distill between them (the checks, the card, the download, the manifest check) runs as it would.
"""

from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path

import huggingface_hub
import pytest
import yaml
from huggingface_hub import HfApi

from hf_distill import cli
from hf_distill.cache import remote
from hf_distill.cache.push import push_teacher_cache
from hf_distill.cache.shards import MANIFEST, file_hash, load_teacher_cache
from hf_distill.cache.writer import write_teacher_cache
from tests.helpers.tiny_models import tiny_gpt2
from tests.helpers.training import lm_dataset


class FakeHub:
    """The Hub's storage as a folder: what was created, uploaded and downloaded is recorded."""

    def __init__(self, root: Path):
        self.root, self.calls = root, []

    def repo(self, repo_id: str) -> Path:
        return self.root / repo_id

    def create_repo(self, repo_id, token=None, private=None, repo_type=None, exist_ok=False, **kw):
        self.calls.append(("create_repo", repo_id, repo_type))
        self.repo(repo_id).mkdir(parents=True, exist_ok=True)
        return f"https://hub.test/datasets/{repo_id}"

    def upload_folder(self, repo_id, folder_path, repo_type=None, allow_patterns=None, **kw):
        self.calls.append(("upload_folder", repo_id, repo_type))
        if not self.repo(repo_id).is_dir():
            raise RuntimeError("404: the repository does not exist")  # as the Hub answers
        for path in Path(folder_path).iterdir():
            if allow_patterns is None or any(fnmatch.fnmatch(path.name, p) for p in allow_patterns):
                shutil.copy(path, self.repo(repo_id) / path.name)
        return f"https://hub.test/datasets/{repo_id}/commit/1"

    def snapshot_download(self, repo_id, repo_type=None, revision=None, allow_patterns=None, **kw):
        self.calls.append(("snapshot_download", repo_id, repo_type))
        target = self.root.parent / "downloads" / repo_id
        target.mkdir(parents=True, exist_ok=True)
        for path in self.repo(repo_id).iterdir():
            if allow_patterns is None or any(fnmatch.fnmatch(path.name, p) for p in allow_patterns):
                shutil.copy(path, target / path.name)
        return str(target)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    fake = FakeHub(tmp_path / "hub")
    monkeypatch.setattr(HfApi, "create_repo", lambda self, *a, **kw: fake.create_repo(*a, **kw))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, *a, **kw: fake.upload_folder(*a, **kw))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake.snapshot_download)
    return fake


@pytest.fixture
def cache(tmp_path):
    teacher, dataset = tiny_gpt2(seed=1), lm_dataset(n=7)
    write_teacher_cache(teacher, dataset, tmp_path / "cache", top_k=8, temperature=2.0, rows_per_shard=3)
    return tmp_path / "cache"


def test_push_uploads_shards_manifest_and_card_and_loads_back_by_repo_id(hub, cache):
    url = push_teacher_cache(cache, "team/code-teacher-cache")
    assert url.endswith("/commit/1")
    assert [c[0] for c in hub.calls] == ["create_repo", "upload_folder"]
    assert all(c[2] == "dataset" for c in hub.calls)
    stored = hub.repo("team/code-teacher-cache")
    shards = sorted(p.name for p in stored.glob("shard-*.parquet"))
    assert shards == ["shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet"]
    assert (stored / MANIFEST).read_bytes() == (cache / MANIFEST).read_bytes()

    card = (stored / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    facts = meta["hf_distill"]
    # 7 rows of 16 positions (lm_dataset pads each row in place to 16 tokens), k = 8, the default codec.
    assert (facts["rows"], facts["positions"], facts["k"], facts["temperature"]) == (7, 112, 8, 2.0)
    assert facts["codec"] == "topk1 bits=6 scale=4 k=8" and facts["teacher_class"] == "GPT2LMHeadModel"
    total = sum(p.stat().st_size for p in stored.glob("shard-*.parquet"))
    assert facts["bytes"] == total and facts["bytes_per_position"] == pytest.approx(total / 112, abs=0.01)
    assert facts["manifest_blake2b"] == {name: file_hash(stored / name) for name in shards}
    assert (
        "teacher-cache" in meta["tags"] and meta["configs"][0]["data_files"][0]["path"] == "shard-*.parquet"
    )
    assert "| k (top-k per position) | 8 |" in card and file_hash(stored / shards[0]) in card

    local = load_teacher_cache(cache)
    for address in ("team/code-teacher-cache", "hf://datasets/team/code-teacher-cache"):
        loaded = load_teacher_cache(address)
        assert len(loaded) == 7 and [loaded[i] for i in range(7)] == [local[i] for i in range(7)]
    assert hub.calls[-1] == ("snapshot_download", "team/code-teacher-cache", "dataset")


def test_a_tampered_shard_on_the_hub_is_refused_on_load(hub, cache):
    push_teacher_cache(cache, "team/c")
    shard = hub.repo("team/c") / "shard-00001.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="shard-00001.parquet does not match its BLAKE2b hash"):
        load_teacher_cache("team/c")
    (hub.repo("team/c") / MANIFEST).unlink()  # a repository without the manifest: refused, not half-read
    shutil.rmtree(hub.root.parent / "downloads")
    with pytest.raises(ValueError, match="has no teacher_cache.json"):
        load_teacher_cache("hf://datasets/team/c")


@pytest.mark.parametrize(
    "address, why",
    [
        ("./no/such/cache", "is not an existing folder"),
        ("no/such/cache/here", "is not an existing folder"),
        ("hf://datasets/a/b/c", "neither an existing folder nor a Hub dataset repository id"),
        ("owner/na me", "neither an existing folder nor a Hub dataset repository id"),
        ("hf://datasets/nameonly", "a repository id is 'OWNER/NAME'"),
    ],
)
def test_an_address_that_is_neither_a_folder_nor_a_repo_id_is_refused_before_any_call(hub, address, why):
    with pytest.raises(ValueError, match=why):
        load_teacher_cache(address)
    assert hub.calls == []


def test_push_refusals_come_before_any_call(hub, cache, tmp_path):
    with pytest.raises(ValueError, match="neither an existing folder nor a Hub dataset repository id"):
        push_teacher_cache(cache, "not a repo")
    with pytest.raises(ValueError, match="has no teacher_cache.json"):
        push_teacher_cache(tmp_path, "team/c")
    with pytest.raises(ValueError, match="is not a folder"):
        push_teacher_cache(tmp_path / "missing", "team/c")
    (cache / "shard-00000.parquet").write_bytes(b"broken")
    with pytest.raises(ValueError, match="shard-00000.parquet has 6 bytes, the manifest says"):
        push_teacher_cache(cache, "team/c")
    assert hub.calls == []


def test_hub_revision_and_local_folders_are_told_apart():
    assert remote.cache_location("hf://datasets/a/b@v2") == remote.HubCache("a/b", "v2")
    assert remote.cache_location("a/b") == remote.HubCache("a/b", None)
    assert remote.cache_location(Path("relative/cache")) == Path("relative/cache")


def test_push_cache_command(hub, cache, capsys):
    assert cli.main(["push-cache", str(cache), "team/cli-cache", "--private"]) == 0
    assert "commit/1" in capsys.readouterr().out
    assert (hub.repo("team/cli-cache") / MANIFEST).is_file()
    assert cli.main(["push-cache", str(cache), "bad repo id"]) == 2
    assert "neither an existing folder nor a Hub dataset repository id" in capsys.readouterr().err
