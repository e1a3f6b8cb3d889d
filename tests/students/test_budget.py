"""The budget search: candidates cut from a tiny teacher, latency before training, over-budget candidates never
trained, the pick, early pruning, refusals; and `hf-distill budget` end to end on a tiny sentiment task."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from hf_distill.cli import main
from hf_distill.students.budget import (
    TEACHER,
    BudgetImpossible,
    build_candidate,
    candidate_grid,
    check_latency_budget,
    pick_winner,
    search_budget,
)
from hf_distill.students.build import count_parameters
from hf_distill.students.importance import layers_by_importance
from tests.helpers.recipes import needs_rotten_tomatoes, tiny_flags
from tests.helpers.tiny_models import tiny_bert_classifier

SCORES = [0.9, 0.1, 0.5, 0.7]  # layer importance: 0 > 3 > 2 > 1


def teacher() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=40,
        n_embd=16,
        n_layer=4,
        n_head=2,
        n_positions=32,
        n_inner=32,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(config).eval()


CALIBRATION = [{"input_ids": torch.randint(0, 40, (2, 6), generator=torch.Generator().manual_seed(0))}]


def build(candidate):
    return build_candidate(teacher(), candidate, CALIBRATION)


def ms_from_size(models):
    """A deterministic 'latency': 1 ms per 1,000 parameters (the real timer is tested in test_timing)."""
    return {name: count_parameters(model) / 1000 for name, model in models.items()}


class FakeTraining:
    """A short run whose validation metric grows with the candidate's size; counts every training."""

    def __init__(self, steps=(5, 10)):
        self.trained: list[str] = []
        self.steps = steps

    def __call__(self, candidate, model, report):
        self.trained.append(candidate.name)
        metric = 0.4 + 0.15 * len(candidate.layers) - (0.05 if candidate.intermediate_size else 0.0)
        for step in self.steps:
            if report(step, metric * step / self.steps[-1]):
                break
        return metric * step / self.steps[-1]


def grid():
    return candidate_grid(teacher(), SCORES, depths=(0.25, 0.5, 0.75), widths=(1.0, 0.5))


def test_candidate_grid_keeps_the_most_important_layers_at_each_width():
    candidates = grid()
    assert [c.name for c in candidates] == ["1L-w0.5", "1L", "2L-w0.5", "2L", "3L-w0.5", "3L"]
    assert [c.layers for c in candidates[::2]] == [[0], [0, 3], [0, 2, 3]]
    assert [c.intermediate_size for c in candidates[:2]] == [16, None]
    assert all(c.heads is None for c in candidates)  # GPT-2 drops channels only
    built = build_candidate(
        teacher(), candidates[2], calibration=[{"input_ids": torch.randint(0, 40, (2, 6))}]
    )
    assert built.config.n_layer == 2 and built.config.n_inner == 16


def test_picks_the_fastest_candidate_meeting_the_budget_and_never_trains_those_over_it():
    candidates = grid()
    train = FakeTraining()
    # 2L and wider are over budget; 1L keeps 55% of the teacher, 1L-w0.5 50%: with 0.52 only 1L qualifies.
    # Pruning starts after step 6, so the check at step 5 (half the metric) stops nothing.
    calibration = [{"input_ids": torch.ones(1, 4, dtype=torch.long)}]
    budget_ms = ms_from_size({"x": build_candidate(teacher(), candidates[2], calibration)})["x"] - 0.1
    result = search_budget(
        candidates, lambda c: build_candidate(teacher(), c, calibration), ms_from_size, train,
        max_latency_ms=budget_ms, min_retention=0.52, reference_metric=1.0, warmup_steps=6,
    )  # fmt: skip
    assert sorted(train.trained) == ["1L", "1L-w0.5"]
    assert result.trainings == 2
    statuses = {c.name: c.status for c in result.candidates}
    assert statuses["2L"] == statuses["3L"] == statuses["2L-w0.5"] == "over_budget"
    assert result.winner.name == "1L"
    assert result.winner.retention == pytest.approx(0.55)
    assert "fastest candidate that keeps at least 52%" in result.why and "1L-w0.5" in result.why
    assert "4 candidate(s) were over budget and never trained" in result.why
    # Fastest first: the order Optuna ran them in.
    assert train.trained == ["1L-w0.5", "1L"]


def test_without_retention_the_best_within_budget_wins():
    train = FakeTraining()
    result = search_budget(grid(), build, ms_from_size, train, max_params=10**9)
    assert result.winner.name == "3L"
    assert len(train.trained) == 6 and "best validation metric of the 6" in result.why


def test_hopeless_runs_are_pruned_early():
    train = FakeTraining(steps=(2, 4, 6, 8))
    # Retention 0.9 of 1.0: only 3L (0.85) comes close, none reaches it; past the warm-up all are stopped.
    result = search_budget(
        grid(), build, ms_from_size, train, max_params=10**9,
        min_retention=0.9, reference_metric=1.0, warmup_steps=5,
    )  # fmt: skip
    assert all(c.status == "pruned" for c in result.candidates)
    assert all(len(c.curve) == 3 for c in result.candidates), (
        "stopped at step 6, the first check past warm-up"
    )
    assert result.winner.name == "3L" and "No candidate kept 90%" in result.why


def test_an_impossible_budget_is_refused_with_the_fastest_latency():
    train = FakeTraining()
    with pytest.raises(
        BudgetImpossible, match=r"max_latency_ms=0\.001: the fastest, 1L-w0\.5, takes [\d.]+ ms"
    ):
        search_budget(grid(), build, ms_from_size, train, max_latency_ms=0.001)
    with pytest.raises(BudgetImpossible, match=r"max_params=10 parameters: the smallest, 1L-w0\.5, has"):
        search_budget(grid(), build, ms_from_size, train, max_params=10)
    assert train.trained == []


def test_budget_arguments_are_checked():
    with pytest.raises(ValueError, match="A budget needs max_latency_ms, min_speedup or max_params"):
        search_budget(grid(), None, None, None)
    with pytest.raises(ValueError, match="min_retention needs the teacher's validation metric"):
        search_budget(grid(), None, None, None, max_params=5, min_retention=0.9)
    with pytest.raises(ValueError, match="depth fraction 1.5 must be in"):
        candidate_grid(teacher(), SCORES, depths=(1.5,))
    with pytest.raises(ValueError, match="No candidate was trained"):
        pick_winner(grid(), {}, True)


@needs_rotten_tomatoes
def test_hf_distill_budget_on_a_tiny_sentiment_task(tmp_path, wordpiece_tokenizer, capsys):
    folder = tmp_path / "teacher"
    tiny_bert_classifier(
        vocab_size=len(wordpiece_tokenizer), hidden=16, layers=4, num_labels=2
    ).save_pretrained(folder)
    wordpiece_tokenizer.save_pretrained(folder)
    out = tmp_path / "run"
    flags = tiny_flags(out, teacher_model_name_or_path=folder, fine_tune_teacher="always", teacher_max_steps=2,
                       search_steps=2, search_eval_steps=1, calibration_batches=1, max_latency_ms=10000)  # fmt: skip
    flags += [
        "--budget_depths",
        "0.25",
        "0.5",
        "--budget_widths",
        "1.0",
        "0.5",
        "--budget_importance",
        "skip_loss",
    ]
    assert main(["budget", "sentiment", *flags]) == 0
    report = json.loads((out / "report.json").read_text())
    budget = report["budget"]
    assert len(budget["candidates"]) == 4 and budget["trainings"] == 4
    # The candidates keep the layers the named method ranks highest.
    assert budget["importance"] == "skip_loss" and len(budget["layer_scores"]) == 4
    for candidate in budget["candidates"]:
        assert candidate["layers"] == layers_by_importance(budget["layer_scores"], len(candidate["layers"]))
    assert budget["winner"] in {c["name"] for c in budget["candidates"]}
    assert (out / "budget_frontier.png").is_file() and budget["why"]
    assert budget["teacher_latency_ms"] > 0
    # The winner is trained fully by the recipe: distilled and no-KD, from the saved untrained winner.
    assert {s["kind"] for s in report["students"]} == {"distilled", "no_kd_baseline"}
    assert (out / "budget" / "winner" / "config.json").is_file()
    # An impossible budget: refused in one line naming the fastest candidate's latency, nothing trained.
    impossible = tiny_flags(tmp_path / "none", teacher_model_name_or_path=folder, fine_tune_teacher="always",
                            teacher_max_steps=1, max_latency_ms=1e-6)  # fmt: skip
    assert main(["budget", "sentiment", *impossible, "--budget_depths", "0.25", "0.5"]) == 2
    assert "No candidate meets max_latency_ms=1e-06: the fastest" in capsys.readouterr().err
    assert not (tmp_path / "none" / "budget" / "runs").exists()


def test_lower_is_better_metrics_keep_retention_as_teacher_over_student():
    perplexity = {"1L-w0.5": 30.0, "1L": 20.0, "2L-w0.5": 12.0, "2L": 11.0, "3L-w0.5": 10.5, "3L": 10.2}
    trained = []

    def train(candidate, model, report):
        trained.append(candidate.name)
        report(10, perplexity[candidate.name])
        return perplexity[candidate.name]

    result = search_budget(
        grid(), build, ms_from_size, train, max_params=10**9, min_retention=0.8, reference_metric=10.0,
        higher_is_better=False, warmup_steps=5,
    )  # fmt: skip
    # teacher / student >= 0.8 means perplexity <= 12.5: 2L-w0.5 is the fastest that keeps it.
    assert result.winner.name == "2L-w0.5" and result.winner.retention == pytest.approx(10 / 12)
    statuses = {c.name: c.status for c in result.candidates}
    assert statuses["1L"] == statuses["1L-w0.5"] == "pruned"  # above the threshold past warm-up
    assert statuses["3L"] == "trained" and len(trained) == 6


def test_candidates_are_timed_on_onnx_int8_beside_the_teacher(tmp_path, wordpiece_tokenizer, monkeypatch):
    pytest.importorskip("onnxruntime")
    from types import SimpleNamespace

    import hf_distill.recipes.budget as recipe

    model = tiny_bert_classifier(
        vocab_size=len(wordpiece_tokenizer), hidden=16, layers=2, num_labels=2
    ).eval()
    inputs = dict(wordpiece_tokenizer(["the movie was great"], return_tensors="pt"))
    monkeypatch.setattr(recipe, "latency_batch", lambda task, size: inputs)
    args = recipe.BudgetArguments(max_latency_ms=5, runtime="onnx-int8")
    report_args = SimpleNamespace(latency_rounds=1, latency_threads=1)
    task = SimpleNamespace(task="sequence_classification", tokenizer=wordpiece_tokenizer)  # timed per forward
    measure, seen = recipe.latency_measurer(task, model, args, report_args, tmp_path)
    (candidate,) = candidate_grid(model, [0.2, 0.1], depths=(0.5,), widths=(1.0,))
    latency = measure({"1L": build_candidate(model, candidate)})
    assert set(latency) == {"teacher", "1L"} and all(ms > 0 for ms in latency.values())
    assert (tmp_path / "1L" / "onnx" / "model_quantized.onnx").is_file()
    assert seen["teacher"] == latency["teacher"]
    with pytest.raises(ValueError, match=r"runtime='tensorrt' is not one of \('torch', 'onnx-int8'\)"):
        recipe.BudgetArguments(max_latency_ms=5, runtime="tensorrt")
    with pytest.raises(ValueError, match="hf-distill budget needs a budget"):
        recipe.BudgetArguments()
    with pytest.raises(
        ValueError, match=r"budget_importance='cosine': choose one of \['block_influence', 'skip_loss'\]"
    ):
        recipe.BudgetArguments(max_latency_ms=5, budget_importance="cosine")


def test_hf_distill_budget_on_tiny_code_with_a_grouped_query_llama(tmp_path, wordpiece_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    wordpiece_tokenizer = copy.deepcopy(wordpiece_tokenizer)  # the fixture is shared by the session
    wordpiece_tokenizer.eos_token = "[SEP]"  # the code files are joined with EOS
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(wordpiece_tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        eos_token_id=wordpiece_tokenizer.eos_token_id, pad_token_id=0,
    )  # fmt: skip
    folder = tmp_path / "teacher"
    LlamaForCausalLM(config).save_pretrained(folder)
    wordpiece_tokenizer.save_pretrained(folder)
    out = tmp_path / "run"
    flags = tiny_flags(out, teacher_model_name_or_path=folder, max_files=12, max_train_samples=16,
                       max_test_samples=8, search_steps=2, search_eval_steps=1, calibration_batches=1,
                       max_latency_ms=10000, min_retention=0.5)  # fmt: skip
    assert main(["budget", "codegen", *flags, "--budget_depths", "0.5", "--budget_widths", "1.0", "0.5"]) == 0
    report = json.loads((out / "report.json").read_text())
    candidates = {c["name"]: c for c in report["budget"]["candidates"]}
    # Half the width: one of the two key/value groups (2 query heads) and 16 of 32 channels.
    assert (candidates["2L-w0.5"]["heads"], candidates["2L-w0.5"]["intermediate_size"]) == (2, 16)
    for c in candidates.values():  # perplexity: retention is teacher / student
        assert c["retention"] == pytest.approx(report["budget"]["budget"]["reference_metric"] / c["metric"])
    # A causal LM is timed per generated token: a prompt of the 32-token blocks, 32 new tokens.
    limits = report["budget"]["budget"]
    assert limits["latency"] == "per generated token at batch 1 on torch (32-token prompt, 32 new)"
    assert limits["teacher_latency_ms"] == report["budget"]["teacher_latency_ms"] > 0
    assert all(
        c["speedup"] == pytest.approx(limits["teacher_latency_ms"] / c["latency_ms"])
        for c in candidates.values()
    )
    winner = LlamaForCausalLM.from_pretrained(out / "budget" / "winner")
    assert winner.config.num_hidden_layers == 2
    assert report["metric_name"] == "perplexity" and len(report["students"]) == 2


@needs_rotten_tomatoes
def test_hf_distill_train_keeps_layers_by_importance(tmp_path, wordpiece_tokenizer):
    folder = tmp_path / "teacher"
    tiny_bert_classifier(
        vocab_size=len(wordpiece_tokenizer), hidden=16, layers=4, num_labels=2
    ).save_pretrained(folder)
    wordpiece_tokenizer.save_pretrained(folder)
    out = tmp_path / "run"
    flags = tiny_flags(out, teacher_model_name_or_path=folder, fine_tune_teacher="always", teacher_max_steps=1,
                       student_num_layers=2, student_layer_strategy="importance", run_baseline="false")  # fmt: skip
    assert main(["train", "sentiment", *flags]) == 0
    report = json.loads((out / "report.json").read_text())
    config = json.loads((Path(report["students"][0]["output_dir"]) / "config.json").read_text())
    record = config["distillation"]
    assert record["strategy"] == "importance" and len(record["layer_scores"]) == 4
    scores = record["layer_scores"]
    assert record["layers"] == sorted(sorted(range(4), key=lambda i: -scores[i])[:2])


def ms_with_teacher(models):
    """:func:`ms_from_size` with the teacher timed beside the candidates, as the recipe's measurer does."""
    return {**ms_from_size(models), TEACHER: count_parameters(teacher()) / 1000}


def test_min_speedup_keeps_the_candidates_that_fast_and_picks_the_fastest_that_keeps_the_metric():
    train = FakeTraining()
    teacher_ms = count_parameters(teacher()) / 1000
    # Speed-ups (teacher 10.08 ms): 1L-w0.5 3.50, 1L 2.96, 2L-w0.5 2.20, 2L 1.79, 3L-w0.5 1.61, 3L 1.28. With
    # 2x only the first three are within; of those, 2L-w0.5 (0.65) is the fastest keeping 60% of 1.0.
    result = search_budget(
        grid(), build, ms_with_teacher, train, min_speedup=2.0, min_retention=0.6, reference_metric=1.0,
        warmup_steps=6,
    )  # fmt: skip
    statuses = {c.name: c.status for c in result.candidates}
    assert [n for n, s in statuses.items() if s == "over_budget"] == ["2L", "3L-w0.5", "3L"]
    assert train.trained == ["1L-w0.5", "1L", "2L-w0.5"]
    assert result.winner.name == "2L-w0.5"
    winner_ms = count_parameters(build(result.winner)) / 1000
    assert result.winner.speedup == pytest.approx(teacher_ms / winner_ms) == pytest.approx(10.08 / 4.576)
    assert all(c.speedup == pytest.approx(teacher_ms / c.latency_ms) for c in result.candidates)
    assert result.budget["latency_limit_ms"] == pytest.approx(teacher_ms / 2)
    assert result.budget["teacher_latency_ms"] == pytest.approx(teacher_ms)
    assert "min_speedup 2" in result.why and "2.20x the teacher's speed" in result.why
    # Without a retention target the best within the speed-up wins: again 2L-w0.5, the largest that is 2x.
    assert (
        search_budget(grid(), build, ms_with_teacher, FakeTraining(), min_speedup=2.0).winner.name
        == "2L-w0.5"
    )


def test_min_speedup_refusals():
    train = FakeTraining()
    with pytest.raises(
        BudgetImpossible,
        match=r"No candidate is 4x as fast as the teacher: the fastest, 1L-w0\.5, takes 2\.88 ms per generated "
        r"token, 3\.50x the teacher\. Lower --min_speedup to at most 3\.50",
    ):
        search_budget(
            grid(), build, ms_with_teacher, train, min_speedup=4, latency_label="per generated token"
        )
    with pytest.raises(ValueError, match=r"measure_latency returned no 'teacher' entry"):
        search_budget(grid(), build, ms_from_size, train, min_speedup=1.5)
    assert train.trained == []
    with pytest.raises(ValueError, match=r"max_latency_ms=5 and min_speedup=1\.5 are two latency budgets"):
        search_budget(grid(), build, ms_with_teacher, train, max_latency_ms=5, min_speedup=1.5)
    for bad in (1.0, 0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=rf"min_speedup={bad} must be a number above 1"):
            check_latency_budget(None, bad)
    with pytest.raises(ValueError, match="A budget needs max_latency_ms, min_speedup or max_params"):
        search_budget(grid(), build, ms_with_teacher, train)
