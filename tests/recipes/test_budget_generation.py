"""`hf-distill budget` on a causal LM times every candidate per generated token: the prompts cut from the test
blocks, the label the report and the figure read, PyTorch and ONNX Runtime (int8) generation beside the teacher,
and the refusals of flags that contradict each other or the task. No test asserts on a measured time."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

import hf_distill.recipes.budget as recipe
from hf_distill.cli import main
from hf_distill.reports.budget_figure import draw_budget_frontier
from hf_distill.students.budget import build_candidate, candidate_grid
from tests.helpers.recipes import tiny_flags
from tests.helpers.tiny_models import tiny_gpt2

BLOCK = 24  # the tiny task's block length (--max_length)


def causal_task(tokenizer=None, task="causal_lm"):
    return SimpleNamespace(task=task, tokenizer=tokenizer, test=[{"input_ids": list(range(1, BLOCK + 1))}])


def blocks(task, batch_size):
    ids = torch.arange(1, BLOCK + 1).repeat(batch_size, 1)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def test_prompts_are_cut_from_the_test_blocks_and_checked_against_the_context(monkeypatch):
    monkeypatch.setattr(recipe, "latency_batch", blocks)
    teacher = tiny_gpt2(layers=2, positions=40).eval()
    args = recipe.BudgetArguments(
        min_speedup=1.5, batch_size=2, latency_prompt_tokens=10, latency_new_tokens=8
    )
    prompts = recipe.generation_prompts(causal_task(), teacher, args)
    assert list(prompts) == [2] and prompts[2]["input_ids"].tolist() == [list(range(1, 11))] * 2
    assert prompts[2]["attention_mask"].shape == (2, 10)
    label = recipe.latency_label(causal_task(), args)
    assert label == "per generated token at batch 2 on torch (10-token prompt, 8 new)"
    # Defaults: a 64-token prompt, or the blocks' length when shorter; 32 new tokens.
    defaults = recipe.BudgetArguments(min_speedup=1.5)
    assert recipe.generation_sizes(causal_task(), defaults) == (BLOCK, 32)
    assert recipe.latency_label(causal_task(task="sequence_classification"), defaults) == (
        "per forward at batch 1 on torch"
    )
    too_long = recipe.BudgetArguments(min_speedup=1.5, latency_prompt_tokens=BLOCK + 1)
    with pytest.raises(
        ValueError, match=r"--latency_prompt_tokens 25 is longer than the test blocks \(24 tokens"
    ):
        recipe.generation_prompts(causal_task(), teacher, too_long)
    past_context = recipe.BudgetArguments(min_speedup=1.5, latency_prompt_tokens=20, latency_new_tokens=21)
    with pytest.raises(
        ValueError, match=r"a 20-token prompt and 21 new tokens exceed the teacher's context of 40"
    ):
        recipe.generation_prompts(causal_task(), teacher, past_context)


def test_budget_flags_that_contradict_each_other_or_the_task_are_refused():
    with pytest.raises(ValueError, match=r"max_latency_ms=4 and min_speedup=1\.5 are two latency budgets"):
        recipe.BudgetArguments(max_latency_ms=4, min_speedup=1.5)
    with pytest.raises(ValueError, match=r"min_speedup=0\.9 must be a number above 1"):
        recipe.BudgetArguments(min_speedup=0.9)
    with pytest.raises(ValueError, match=r"needs a budget: --max_latency_ms .* or --min_speedup"):
        recipe.BudgetArguments()
    with pytest.raises(ValueError, match=r"latency_new_tokens=0 must be at least 1"):
        recipe.BudgetArguments(min_speedup=1.5, latency_new_tokens=0)
    assert recipe.BudgetArguments(min_speedup=1.5, max_params=10**6).min_speedup == 1.5  # size + speed: fine
    args = recipe.BudgetArguments(max_latency_ms=4, latency_new_tokens=16)
    with pytest.raises(
        ValueError, match=r"--latency_new_tokens set how a causal LM's generation is timed, but"
    ):
        recipe.check_budget_task(causal_task(task="sequence_classification"), args)
    recipe.check_budget_task(causal_task(), args)  # a causal LM takes them


def test_the_cli_refuses_two_latency_budgets_before_any_work(tmp_path, capsys):
    flags = tiny_flags(tmp_path / "run", max_latency_ms=4, min_speedup=1.5)
    assert main(["budget", "codegen", *flags]) == 2
    assert "are two latency budgets for the same measurement" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("runtime", ["torch", "onnx-int8"])
def test_causal_candidates_are_timed_per_generated_token_beside_the_teacher(
    runtime, tmp_path, monkeypatch, wordpiece_tokenizer
):
    if runtime == "onnx-int8":
        pytest.importorskip("onnxruntime")
    monkeypatch.setattr(recipe, "latency_batch", blocks)
    calls = []
    real = recipe.time_generation

    def spy(models, prompts, new_tokens, rounds, **kwargs):
        calls.append((sorted(models), {k: v["input_ids"].shape for k, v in prompts.items()}, new_tokens))
        return real(models, prompts, new_tokens, rounds, **kwargs)

    monkeypatch.setattr(recipe, "time_generation", spy)
    teacher = tiny_gpt2(layers=2, vocab_size=len(wordpiece_tokenizer), positions=64).eval()
    args = recipe.BudgetArguments(
        min_speedup=1.5, runtime=runtime, latency_prompt_tokens=8, latency_new_tokens=4
    )
    report_args = SimpleNamespace(latency_rounds=1, latency_threads=1)
    measure, seen = recipe.latency_measurer(
        causal_task(wordpiece_tokenizer), teacher, args, report_args, tmp_path
    )
    (candidate,) = candidate_grid(teacher, [0.2, 0.1], depths=(0.5,), widths=(1.0,))
    # On ONNX Runtime the teacher alone: each int8 export of a causal LM (with its past) takes seconds.
    candidates = {"1L": build_candidate(teacher, candidate)} if runtime == "torch" else {}
    latency = measure(candidates)
    assert set(latency) == {"teacher", *candidates} and all(ms > 0 for ms in latency.values())
    assert calls == [(sorted(["teacher", *candidates]), {1: (1, 8)}, 4)]
    assert seen["teacher"] == latency["teacher"]
    if runtime == "onnx-int8":  # generated from its int8 graph, by OnnxModel.generate over the past
        assert (tmp_path / "teacher" / "onnx" / "model_quantized.onnx").is_file()


def test_the_frontier_names_the_unit_and_draws_the_speedup_line():
    candidates = [
        {"name": "1L", "latency_ms": 2.0, "metric": 30.0, "status": "trained"},
        {"name": "3L", "latency_ms": 7.0, "metric": None, "status": "over_budget"},
    ]
    budget = {
        "candidates": candidates,
        "winner": "1L",
        "budget": {"max_latency_ms": None, "min_speedup": 1.5, "teacher_latency_ms": 9.0,
                   "latency_limit_ms": 6.0, "latency": "per generated token at batch 1 on torch"},
    }  # fmt: skip
    axis = draw_budget_frontier(budget, "perplexity").axes[0]
    assert axis.get_xlabel() == "latency: ms per generated token at batch 1 on torch"
    labels = axis.get_legend_handles_labels()[1]
    assert "1.5x the teacher's speed: 6 ms" in labels and "teacher 9 ms" in labels
    lines = {line.get_label(): line.get_xdata()[0] for line in axis.get_lines()}
    assert lines["1.5x the teacher's speed: 6 ms"] == 6.0 and lines["teacher 9 ms"] == 9.0


def test_a_report_from_before_the_speedup_still_draws(tmp_path):
    budget = {
        "candidates": [{"name": "1L", "latency_ms": 2.0, "metric": 0.8, "status": "trained"}],
        "winner": "1L",
        "budget": {"max_latency_ms": 4, "latency": "at batch 1 on torch"},
    }
    axis = draw_budget_frontier(budget, "accuracy").axes[0]
    assert "latency budget 4 ms" in axis.get_legend_handles_labels()[1]
    json.dumps(budget)  # the entry stays plain JSON
