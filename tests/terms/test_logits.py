"""Transfer sets in the core: rows without labels learn from the teacher alone, labeled rows from both.

The per-row rule (hf_distill.terms.logits): a labeled row's loss is ``alpha * kd + (1 - alpha) * task``, an
unlabeled row's its KD term at full weight; the task term averages over labeled positions, the KD term over
every position it covers.
"""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset

from hf_distill import DistillationTrainer, DistillationTrainingArguments
from hf_distill.batch import DistillationBatch, TargetKind, TeacherTarget
from hf_distill.terms.logits import PlainLogitTerms, StudentView
from hf_distill.terms.normalization import transfer_positions
from tests.helpers.accumulation import GradientGrab, collate, models, rows
from tests.helpers.tiny_models import tiny_bert_classifier, tiny_bert_tagger, tiny_gpt2


def make_args(tmp_path, **kw) -> DistillationTrainingArguments:
    defaults = dict(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=4,
        max_steps=2,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    defaults.update(kw)
    return DistillationTrainingArguments(**defaults)


def reference_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p_t || p_s) * T^2 per row, written out from the definition (not the package's loss)."""
    p_t = torch.exp(teacher / temperature) / torch.exp(teacher / temperature).sum(-1, keepdim=True)
    p_s = torch.exp(student / temperature) / torch.exp(student / temperature).sum(-1, keepdim=True)
    return (p_t * (torch.log(p_t) - torch.log(p_s))).sum(-1) * temperature**2


def reference_ce(student: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    log_p = student - torch.log(torch.exp(student).sum(-1, keepdim=True))
    return -log_p.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)


def terms(tmp_path, head_kind: str, **kw) -> PlainLogitTerms:
    return PlainLogitTerms(head_kind, make_args(tmp_path, **kw), None)


def run_terms(terms_, student, teacher, labels, attention_mask=None, **counts):
    inputs = {} if attention_mask is None else {"attention_mask": attention_mask}
    batch = DistillationBatch(model_inputs=inputs, labels=labels, **counts)
    return terms_(StudentView(None, logits=student), TeacherTarget(TargetKind.LIVE, logits=teacher), batch)


def test_mixed_batch_equals_hand_computation(tmp_path):
    # Student logits (0, 0): p_s = (1/2, 1/2); teacher (log 3, 0): p_t = (3/4, 1/4); T = 1.
    # KD per row = 3/4 log(3/2) + 1/4 log(1/2); CE per labeled row = log 2. Two labeled, two transfer rows.
    student = torch.zeros(4, 2, requires_grad=True)
    teacher = torch.tensor([[math.log(3.0), 0.0]] * 4)
    labels = torch.tensor([0, 1, -100, -100])
    loss, parts = run_terms(
        terms(tmp_path, "sequence_classification", alpha=0.25, temperature=1.0), student, teacher, labels
    )
    kd = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    # (alpha * 2 labeled KD + 2 transfer KD at weight 1) / 4 KD rows + (1 - alpha) * 2 CE / 2 labeled rows
    by_hand = (0.25 * 2 * kd + 2 * kd) / 4 + 0.75 * (2 * math.log(2.0)) / 2
    assert by_hand == pytest.approx(0.6016179, abs=1e-6)
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
    assert parts["loss_task"].item() == pytest.approx(math.log(2.0), rel=1e-6)  # labeled rows only
    assert parts["loss_kd"].item() == pytest.approx(kd, rel=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.9])
def test_mixed_batch_equals_reference_on_random_logits(tmp_path, alpha):
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g) * 2
    labels = torch.tensor([2, -100, 0, -100, -100, 1])
    loss, _ = run_terms(
        terms(tmp_path, "sequence_classification", alpha=alpha, temperature=2.0), student, teacher, labels
    )
    kd, ce = reference_kl(student, teacher, 2.0), reference_ce(student, labels)
    labeled = labels != -100
    expected = (alpha * kd[labeled].sum() + kd[~labeled].sum()) / 6 + (1 - alpha) * ce[labeled].sum() / 3
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_task_term_has_no_gradient_on_unlabeled_rows(tmp_path):
    g = torch.Generator().manual_seed(1)
    student = torch.randn(4, 3, generator=g).requires_grad_(True)
    teacher = torch.randn(4, 3, generator=g)
    labels = torch.tensor([1, -100, 2, -100])
    _, parts = run_terms(terms(tmp_path, "sequence_classification", alpha=0.5), student, teacher, labels)
    (grad,) = torch.autograd.grad(parts["loss_task"], student)
    assert torch.equal(grad[1], torch.zeros(3)) and torch.equal(grad[3], torch.zeros(3))
    assert grad[0].abs().sum() > 0 and grad[2].abs().sum() > 0
    # The KD term reaches every row, labeled or not.
    (grad_kd,) = torch.autograd.grad(parts["loss_kd"], student)
    assert all(grad_kd[i].abs().sum() > 0 for i in range(4))


def test_all_unlabeled_batch_is_finite_and_pure_kd(tmp_path):
    g = torch.Generator().manual_seed(2)
    student = torch.randn(3, 2, generator=g).requires_grad_(True)
    teacher = torch.randn(3, 2, generator=g)
    labels = torch.full((3,), -100)
    for num_items in (None, torch.tensor(0)):
        loss, parts = run_terms(
            terms(tmp_path, "sequence_classification", alpha=0.5, temperature=2.0),
            student,
            teacher,
            labels,
            num_items_in_batch=num_items,
        )
        assert torch.isfinite(loss) and parts["loss_task"].item() == 0.0
        assert loss.item() == pytest.approx(reference_kl(student, teacher, 2.0).mean().item(), rel=1e-5)
        loss.backward()
        assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
        student.grad = None


def test_token_rows_without_labels_learn_on_attended_tokens(tmp_path):
    g = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(2, 5, 3, generator=g), torch.randn(2, 5, 3, generator=g)
    labels = torch.tensor([[-100, 1, 0, -100, -100], [-100] * 5])  # row 0 labeled at 2 positions
    attention = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])  # row 1: 3 attended tokens
    alpha = 0.4
    loss, _ = run_terms(
        terms(tmp_path, "token_classification", alpha=alpha), student, teacher, labels, attention
    )
    kd, ce = reference_kl(student, teacher, 2.0), reference_ce(student, labels)
    labeled = labels != -100
    transfer = torch.tensor([[False] * 5, [True, True, True, False, False]])
    assert torch.equal(transfer_positions(labels, attention, shifted=False), transfer)
    expected = (alpha * kd[labeled].sum() + kd[transfer].sum()) / 5 + (1 - alpha) * ce[labeled].sum() / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_micro_batches_add_up_to_the_whole_batch(tmp_path):
    """Gradient accumulation: each micro-batch divided by the counts of the whole step sums to the full batch."""
    g = torch.Generator().manual_seed(4)
    student, teacher = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    labels = torch.tensor([0, -100, -100, 1, 2, -100])
    make = lambda: terms(tmp_path, "sequence_classification", alpha=0.3)  # noqa: E731
    whole, _ = run_terms(make(), student, teacher, labels, num_items_in_batch=torch.tensor(3))
    halves = [
        run_terms(
            make(),
            student[s],
            teacher[s],
            labels[s],
            num_items_in_batch=torch.tensor(3),
            num_kd_items=torch.tensor(6),
        )[0]
        for s in (slice(0, 3), slice(3, 6))
    ]
    assert (halves[0] + halves[1]).item() == pytest.approx(whole.item(), rel=1e-6)


def lm_batch():
    g = torch.Generator().manual_seed(5)
    input_ids = torch.randint(1, 60, (3, 8), generator=g)
    attention = torch.ones(3, 8, dtype=torch.long)
    attention[2, 6:] = 0
    labels = input_ids.clone()
    labels[1] = -100  # a transfer row
    labels[2, 6:] = -100
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


@pytest.mark.parametrize("implementation", ["fused", "chunked"])
def test_causal_lm_chunked_path_equals_plain_path(tmp_path, implementation):
    batch, losses, grads = lm_batch(), {}, {}
    for impl in ("plain", implementation):
        trainer = DistillationTrainer(
            model=tiny_gpt2(seed=0),
            teacher_model=tiny_gpt2(seed=1),
            args=make_args(tmp_path, alpha=0.3, temperature=2.0, kd_loss_implementation=impl),
        )
        assert trainer.kd_implementation == impl
        loss = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=torch.tensor(12))
        loss.backward()
        losses[impl] = loss.item()
        grads[impl] = trainer.model.transformer.wte.weight.grad.clone()
    assert losses[implementation] == pytest.approx(losses["plain"], rel=1e-5)
    torch.testing.assert_close(grads[implementation], grads["plain"], rtol=1e-4, atol=1e-6)


def test_causal_lm_transfer_row_reference(tmp_path):
    """Plain path of a causal LM with a transfer row, against the formula over shifted positions."""
    batch = lm_batch()
    trainer = DistillationTrainer(
        model=tiny_gpt2(seed=0),
        teacher_model=tiny_gpt2(seed=1),
        args=make_args(tmp_path, alpha=0.3, kd_loss_implementation="plain"),
    )
    loss = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=None)
    with torch.no_grad():
        s = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        t = trainer.teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[
            :, :-1
        ]
    labels = batch["labels"][:, 1:]
    labeled = labels != -100
    transfer = torch.zeros_like(labeled)
    transfer[1] = batch["attention_mask"][1, 1:].bool()
    kd, ce = reference_kl(s, t, 2.0), reference_ce(s, labels)
    n_kd = labeled.sum() + transfer.sum()
    expected = (0.3 * kd[labeled].sum() + kd[transfer].sum()) / n_kd + 0.7 * ce[labeled].sum() / labeled.sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


def classification_rows(labels: list[int]) -> Dataset:
    return Dataset.from_dict({"input_ids": [[2, 5, 6, 3]] * len(labels), "labels": labels})


def test_training_set_without_any_label_is_refused_with_alpha_below_one(tmp_path):
    with pytest.raises(
        ValueError, match="has no label anywhere.*Set alpha=1.0 to learn from the teacher's soft"
    ):
        DistillationTrainer(
            model=tiny_bert_classifier(seed=2),
            teacher_model=tiny_bert_classifier(seed=1),
            args=make_args(tmp_path, alpha=0.5),
            train_dataset=classification_rows([-100] * 8),
        )
    with pytest.raises(ValueError, match="has no label column .*alpha=0.9"):
        DistillationTrainer(
            model=tiny_bert_classifier(seed=2),
            teacher_model=tiny_bert_classifier(seed=1),
            args=make_args(tmp_path, alpha=0.9),
            train_dataset=Dataset.from_dict({"input_ids": [[2, 5, 3]] * 4}),
        )


def test_token_rows_without_any_label_are_refused(tmp_path):
    rows = Dataset.from_dict({"input_ids": [[2, 5, 3]] * 3, "labels": [[-100, -100, -100]] * 3})
    with pytest.raises(ValueError, match="every value of its 'labels' column is -100.*alpha=0.5"):
        DistillationTrainer(
            model=tiny_bert_tagger(seed=2),
            teacher_model=tiny_bert_tagger(seed=1),
            args=make_args(tmp_path, alpha=0.5),
            train_dataset=rows,
        )


def test_transfer_set_alone_with_alpha_one_and_mixed_sets_are_accepted(tmp_path):
    for alpha, labels in ((1.0, [-100] * 8), (0.5, [-100] * 7 + [1])):
        trainer = DistillationTrainer(
            model=tiny_bert_classifier(seed=2),
            teacher_model=tiny_bert_classifier(seed=1),
            args=make_args(tmp_path, alpha=alpha, logging_steps=1),
            train_dataset=classification_rows(labels),
        )
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        assert len(losses) == 2 and all(math.isfinite(x) for x in losses)


TRANSFER_ROWS = (1, 4, 5)  # with micro-batches of 2, the third (rows 4, 5) holds transfer rows only


def transfer_collate(batch: list[dict]) -> dict[str, torch.Tensor]:
    """The accumulation tests' collate, then every label of the rows marked ``transfer`` set to -100."""
    out = collate([{k: v for k, v in r.items() if k != "transfer"} for r in batch])
    for i, row in enumerate(batch):
        if row["transfer"]:
            out["labels"][i] = -100
    return out


def one_transfer_step(task: str, per_device: int, accumulation: int, tmp_path, implementation: str) -> dict:
    student, teacher = models(task)
    data = [{**row, "transfer": i in TRANSFER_ROWS} for i, row in enumerate(rows(task))]
    args = make_args(
        tmp_path / f"{task}-{per_device}x{accumulation}",
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        optim="sgd",
        learning_rate=0.5,
        max_grad_norm=1e9,
        logging_steps=1,
        train_sampling_strategy="sequential",
        temperature=2.0,
        alpha=0.3,
        kd_loss_implementation=implementation,
        remove_unused_columns=False,  # the collator reads the rows' `transfer` mark
    )
    grab = GradientGrab()
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=data, data_collator=transfer_collate,
        callbacks=[grab],
    )  # fmt: skip
    trainer.train()
    logged = next(entry for entry in trainer.state.log_history if "loss" in entry)
    return {"logged": logged, "grads": grab.grads}


@pytest.mark.parametrize(
    "task,implementation",
    [("sequence", "plain"), ("token", "plain"), ("causal", "plain"), ("causal", "fused")],
)
def test_gradient_accumulation_with_transfer_rows_gives_the_same_step(task, implementation, tmp_path):
    """Batch 8 x accumulation 1 and 2 x 4 (one micro-batch of transfer rows only) give the same step: the KD
    term's count spans the micro-batches."""
    whole, split = (one_transfer_step(task, b, a, tmp_path, implementation) for b, a in ((8, 1), (2, 4)))
    for name in ("loss", "loss_kd", "loss_task", "grad_norm"):
        assert whole["logged"][name] > 0
        assert split["logged"][name] == pytest.approx(whole["logged"][name], rel=1e-4, abs=1e-7), name
    for got, want in zip(split["grads"], whole["grads"]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_cached_teacher_targets_follow_the_same_per_row_rule(tmp_path):
    """Cached logits and a top-k cache of a 3-class head (top 2 plus the tail, the third class: exact) give the live
    teacher's mixed-batch loss: the rule does not depend on where the teacher's targets come from."""
    from hf_distill.losses.topk import topk_teacher

    g = torch.Generator().manual_seed(6)
    student, teacher = torch.randn(2, 4, 3, generator=g), torch.randn(2, 4, 3, generator=g)
    labels = torch.tensor([[1, -100, 2, 0], [-100] * 4])
    attention = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    made = terms(tmp_path, "token_classification", alpha=0.4)
    batch = DistillationBatch(model_inputs={"attention_mask": attention}, labels=labels)
    view = StudentView(None, logits=student)
    live, _ = made(view, TeacherTarget(TargetKind.LIVE, logits=teacher), batch)
    cached, _ = made(view, TeacherTarget(TargetKind.CACHED_LOGITS, logits=teacher), batch)
    topk, _ = made(
        view, TeacherTarget(TargetKind.CACHED_TOPK, topk=topk_teacher(teacher, 2, temperature=2.0)), batch
    )
    kd, ce = reference_kl(student, teacher, 2.0), reference_ce(student, labels)
    labeled, transfer = labels != -100, torch.tensor([[False] * 4, [True, True, True, False]])
    expected = (0.4 * kd[labeled].sum() + kd[transfer].sum()) / 6 + 0.6 * ce[labeled].sum() / 3
    for value in (live, cached, topk):
        assert value.item() == pytest.approx(expected.item(), rel=1e-5)
