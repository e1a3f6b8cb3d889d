"""When the recipe fine-tunes its teacher first (``fine_tune_teacher``)."""

from __future__ import annotations

import pytest

from hf_distill.recipes.teacher import teacher_needs_fine_tune
from tests.helpers.recipes import task_data
from tests.helpers.tiny_models import tiny_bert_classifier


def test_teacher_needs_fine_tune(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, BertModel

    from tests.helpers.tiny_models import bert_config

    classifier = tiny_bert_classifier(num_labels=2)
    classifier.save_pretrained(tmp_path / "classifier")
    BertModel(bert_config()).save_pretrained(tmp_path / "base")
    two_labels = {"num_labels": 2, "id2label": {0: "negative", 1: "positive"}}
    task = task_data("sequence_classification", AutoModelForSequenceClassification, label_kwargs=two_labels)
    assert not teacher_needs_fine_tune(str(tmp_path / "classifier"), task, "auto")
    assert teacher_needs_fine_tune(str(tmp_path / "base"), task, "auto")
    three = task_data(
        "sequence_classification",
        AutoModelForSequenceClassification,
        label_kwargs={"id2label": dict(enumerate("abc"))},
    )
    assert teacher_needs_fine_tune(str(tmp_path / "classifier"), three, "auto"), "label count differs"
    # LABEL_0, LABEL_1 say nothing, so the head is trusted; a head for other named labels is not.
    classifier.config.id2label = {0: "rotten", 1: "fresh"}
    classifier.config.label2id = {"rotten": 0, "fresh": 1}
    classifier.save_pretrained(tmp_path / "other_labels")
    assert teacher_needs_fine_tune(str(tmp_path / "other_labels"), task, "auto")
    classifier.config.id2label = {0: "negative", 1: "positive"}
    classifier.config.label2id = {"negative": 0, "positive": 1}
    classifier.save_pretrained(tmp_path / "same_labels")
    assert not teacher_needs_fine_tune(str(tmp_path / "same_labels"), task, "auto")
    tagger = task_data("token_classification", AutoModelForTokenClassification, label_kwargs=two_labels)
    assert teacher_needs_fine_tune(str(tmp_path / "classifier"), tagger, "auto"), "wrong head"
    assert teacher_needs_fine_tune(str(tmp_path / "classifier"), task, "always")
    assert not teacher_needs_fine_tune(str(tmp_path / "classifier"), task, "never")
    # 'never' on a checkpoint without the head would distil from a random head: refused.
    with pytest.raises(
        ValueError, match="fine_tune_teacher='never', but .* has no SequenceClassification head"
    ):
        teacher_needs_fine_tune(str(tmp_path / "base"), task, "never")
    assert not teacher_needs_fine_tune("unused", task_data("causal_lm"), "auto"), (
        "an LM teacher is used as it is"
    )
