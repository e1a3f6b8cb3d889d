"""Tasks from Hub datasets and dataset folders: the splits a recipe needs, the text column it reads."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset, DatasetDict

from hf_distill.recipes.data_arguments import DataArguments
from hf_distill.recipes.tasks import ensure_test_split


def test_hub_dataset_without_test_split_gets_one_from_validation():
    splits = DatasetDict(
        {
            "train": Dataset.from_dict({"x": list(range(50))}),
            "validation": Dataset.from_dict({"x": [100, 101]}),
        }
    )
    done = ensure_test_split(splits, seed=0)
    assert done["test"]["x"] == [100, 101]
    assert len(done["validation"]) == 5 and len(done["train"]) == 45
    assert not set(done["validation"]["x"]) & set(done["train"]["x"])
    alone = ensure_test_split(DatasetDict({"train": splits["train"]}), seed=0)
    assert [len(alone[s]) for s in ("train", "validation", "test")] == [40, 5, 5]
    assert len(set(alone["train"]["x"]) | set(alone["validation"]["x"]) | set(alone["test"]["x"])) == 50
    with pytest.raises(ValueError, match="but no 'train' split: the recipe trains on it"):
        ensure_test_split(DatasetDict({"validation": splits["validation"]}), seed=0)


def test_code_task_from_a_dataset_folder_with_a_content_column(tmp_path, wordpiece_tokenizer):
    """A `datasets` name (here a local folder, loaded the same way as a Hub id) with codeparrot's column name."""
    from hf_distill.recipes.tasks import prepare_code

    tokenizer = wordpiece_tokenizer
    tokenizer.eos_token = "[SEP]"
    folder = tmp_path / "code"
    folder.mkdir()
    rows = [{"content": "the movie was great " * 20, "repo": str(i)} for i in range(10)]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    (folder / "validation.jsonl").write_text(json.dumps(rows[0]), encoding="utf-8")
    task = prepare_code(DataArguments(dataset_name=str(folder), max_length=8), tokenizer)
    # No test split in the folder: its validation rows became the test split.
    assert len(task.test) == len(tokenizer(rows[0]["content"])["input_ids"]) // 8
    assert task.dataset_label == str(folder) and len(task.train[0]["input_ids"]) == 8
    (folder / "validation.jsonl").write_text(json.dumps({"source": "x"}), encoding="utf-8")
    (folder / "train.jsonl").write_text(json.dumps({"source": "x"}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"has none of the columns \('text', 'content', 'code'\)"):
        prepare_code(DataArguments(dataset_name=str(folder), max_length=8), tokenizer)
