"""Feature terms (:mod:`hf_distill.terms.features`): the hidden-state term's value and logged part computed by hand,
and the refusal of a model that returns no hidden states, raised in the first micro-batch before any optimizer
step. The attention and feature-map terms are tested in ``test_attention.py`` and ``test_feature_maps.py``."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import BertForSequenceClassification

from hf_distill.terms.features import HiddenStateTerm
from hf_distill.terms.hidden_states import HiddenStateMatcher
from hf_distill.trainer import DistillationTrainer
from tests.helpers.refusals import args, bert, collate, rows, train_and_expect


def _outputs(hidden_states):
    return SimpleNamespace(outputs=SimpleNamespace(hidden_states=hidden_states))


def test_hidden_state_term_is_its_weight_times_the_per_token_mean():
    term = HiddenStateTerm(HiddenStateMatcher([(1, 1)], 2, 2), weight=3.0)
    assert term.output_kwargs == {"output_hidden_states": True}
    student = _outputs((torch.zeros(1, 2, 2), torch.tensor([[[1.0, 2.0], [3.0, -1.0]]])))
    teacher = _outputs((torch.zeros(1, 2, 2), torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])))
    # Per-token MSE: (0 + 1) / 2 = 0.5 and (9 + 1) / 2 = 5.
    batch = SimpleNamespace(attention_mask=torch.tensor([[1, 1]]), num_tokens=torch.tensor(2))
    value, parts = term(student, teacher, batch)
    assert parts["loss_hidden"].item() == pytest.approx(5.5 / 2)
    assert value.item() == pytest.approx(3.0 * 5.5 / 2)
    # A padded token counts in neither the sum nor the token count.
    batch = SimpleNamespace(attention_mask=torch.tensor([[1, 0]]), num_tokens=torch.tensor(1))
    value, parts = term(student, teacher, batch)
    assert (value.item(), parts["loss_hidden"].item()) == pytest.approx((1.5, 0.5))


def test_hidden_state_term_names_the_side_without_hidden_states():
    term = HiddenStateTerm(HiddenStateMatcher([(1, 1)], 2, 2), weight=1.0)
    student = _outputs((torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)))
    batch = SimpleNamespace(attention_mask=None, num_tokens=torch.tensor(2))
    with pytest.raises(ValueError, match=r"the teacher returned no hidden_states.*set hidden_state_weight=0"):
        term(student, _outputs(None), batch)


class NoHiddenStates(BertForSequenceClassification):
    """A model that ignores ``output_hidden_states`` (as some custom heads do)."""

    def forward(self, **kwargs):
        outputs = super().forward(**kwargs)
        outputs.hidden_states = None
        return outputs


def test_model_without_hidden_states(tmp_path):
    torch.manual_seed(0)
    student = NoHiddenStates(bert().config)
    trainer = DistillationTrainer(
        model=student,
        teacher_model=bert(seed=1),
        args=args(tmp_path, hidden_state_weight=1.0, remove_unused_columns=False),
        train_dataset=rows(),
        data_collator=collate,
    )
    train_and_expect(trainer, ValueError, r"the student returned no hidden_states")
