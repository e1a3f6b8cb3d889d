"""The codegen recipe with a served teacher: `hf-distill serve-teacher` as a separate process on a free port, the
recipe trained against it, and the same recipe trained from the same teacher's top-k cache (`--teacher_cache`):
the two distilled students are equal within float noise; the teacher's score comes from the server and equals
the local teacher's; what the recipe cannot do with a served teacher is refused before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, GPT2Config

from hf_distill import cli
from hf_distill.recipes.served_teacher import NOT_MEASURED_LATENCY, ServedRecipeTeacher, served_text_nll
from hf_distill.teachers.served import TeacherServerError
from tests.helpers.processes import free_port, serving
from tests.helpers.recipes import check_run, save_tiny_code_teacher, tiny_flags
from tests.helpers.served import completion_answer, faked_teacher

TOP_K = 8
DATA = {"max_files": 12, "max_train_samples": 16, "max_test_samples": 8, "split_seed": 1}
STUDENT = {"student_init": "gpt2", "student_config_overrides": '{"n_embd": 8, "n_head": 2}'}


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, wordpiece_tokenizer) -> Path:
    folder = save_tiny_code_teacher(tmp_path_factory.mktemp("code_teacher"), wordpiece_tokenizer)
    teacher = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():  # a confident teacher: its top-k target is far from uniform, so the KD term matters
        teacher.transformer.ln_f.weight.mul_(10.0)
    teacher.save_pretrained(folder)
    return folder


def recipe_flags(out: Path, teacher: str | Path, **overrides) -> list[str]:
    settings = {**DATA, **STUDENT, "teacher_model_name_or_path": teacher, "temperature": 1.0, "alpha": 0.5}
    settings.update(teacher_server_top_k=TOP_K, max_steps=3, per_device_train_batch_size=4, **overrides)
    return tiny_flags(out, **settings)


def student_weights(report: dict) -> dict[str, torch.Tensor]:
    distilled = next(s for s in report["students"] if s["kind"] == "distilled")
    return AutoModelForCausalLM.from_pretrained(distilled["output_dir"]).state_dict()


@pytest.mark.slow  # two recipe runs, a cache and a server process: ~40 s on a loaded 2-core machine
def test_the_served_recipe_trains_the_cached_runs_student_and_scores_the_teacher_on_the_server(
    tmp_path, teacher_dir
):
    cache = tmp_path / "cache"
    # float32 top-k (arrow): the compact shards' 6-bit value codes would differ from the server's float32 values.
    cache_flags = ["--cache_dir", str(cache), "--cache_format", "arrow", "--top_k", str(TOP_K)]
    cache_run = recipe_flags(tmp_path / "o", teacher_dir)
    assert cli.main(["cache-teacher", "codegen", *cache_flags, *cache_run]) == 0
    cached = cli.train("codegen", recipe_flags(tmp_path / "cached", teacher_dir, teacher_cache=cache))
    with serving(teacher_dir, top_k=TOP_K) as (url, _):
        served = cli.train("codegen", recipe_flags(tmp_path / "served", url, served_tokenizer=teacher_dir))
    check_run(served, tmp_path / "served", "causal_lm", 2)
    # The same initial student, data order and top-k target at T=1: the same weights up to float32 rounding
    # (the server's log-probabilities are the logits shifted by log Z, and its tail is log(1 - sum p) where the
    # cache's is a logsumexp: ~1e-7 apart per value). The trainer test allows rtol 1e-4, atol 1e-5 for 3 steps
    # at lr 1e-2; here lr is 1e-3, so the same bound is loose enough for rounding and far below a real change
    # (one step moves weights by ~lr = 1e-3).
    a, b = student_weights(served), student_weights(cached)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)
    losses = [[e["loss_kd"] for e in r["log_history"][r["students"][0]["name"]] if "loss_kd" in e]
              for r in (served, cached)]  # fmt: skip
    assert len(losses[0]) == 3 and losses[0][0] > 0.05
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    # The teacher's held-out score from the server's prompt log-probabilities equals the local teacher's.
    assert served["teacher"]["metrics"]["bits_per_byte"] == pytest.approx(
        cached["teacher"]["metrics"]["bits_per_byte"], rel=1e-5
    )
    assert served["teacher"]["metric"] == pytest.approx(cached["teacher"]["metric"], rel=1e-5)
    assert served["teacher"]["parameters"] == cached["teacher"]["parameters"]
    assert served["teacher"]["name_or_path"] == url
    assert served["teacher"]["not_measured"]["latency"] == NOT_MEASURED_LATENCY
    assert served["teacher_check"]["verdict"] == cached["teacher_check"]["verdict"]
    on_disk = json.loads((tmp_path / "served" / "report.json").read_text())
    assert on_disk["teacher"]["served_model"] == str(teacher_dir)


def test_what_a_served_recipe_cannot_do_is_refused_before_any_work(tmp_path, teacher_dir):
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: a refusal must come before any request
    base = recipe_flags(tmp_path / "r", dead, served_tokenizer=teacher_dir)
    cases = [
        (["--student_init", "teacher_layers"], r"\(student_init\).*copy the teacher's weights"),
        (
            ["--distillation_mode", "on_policy", "--alpha", "1.0", "--prompt_tokens", "8"],
            r"\(distillation_mode\).*Use plain kd",
        ),
        (["--generation_prompts", "2"], r"\(generation_prompts\).*Set it to 0"),
        (["--teacher_cache", str(tmp_path)], r"\(teacher_cache\).*Pass one of them"),
        (
            ["--temperature", "2.0"],
            r"temperature=2.0: a served teacher's log-probabilities are at temperature 1",
        ),
    ]
    for extra, message in cases:
        with pytest.raises(ValueError, match=message):
            cli.train("codegen", [*base, *extra])
    no_tokenizer = recipe_flags(tmp_path / "r", dead)
    with pytest.raises(ValueError, match=r"\(served_tokenizer\).*pass it"):
        cli.train("codegen", no_tokenizer)
    with pytest.raises(ValueError, match=r"\(task\).*teaches codegen only"):
        cli.train("sentiment", [*base, "--student_init", "gpt2"])
    with pytest.raises(ValueError, match="budget times and prunes the teacher's layers"):
        cli.budget("codegen", [*base, "--max_latency_ms", "5"])
    # The server is asked only once the data is ready: a dead one is named with what to check.
    with pytest.raises(TeacherServerError, match=rf"{dead}/models did not answer after 1 attempts"):
        cli.train("codegen", [*base, "--teacher_server_retries", "1"])


def test_a_teacher_cache_of_other_rows_is_refused(tmp_path, teacher_dir):
    cache = tmp_path / "cache"
    flags = recipe_flags(tmp_path / "o", teacher_dir)
    assert (
        cli.main(["cache-teacher", "codegen", "--cache_dir", str(cache), "--top_k", str(TOP_K), *flags]) == 0
    )
    other = recipe_flags(tmp_path / "r", teacher_dir, max_train_samples=12, teacher_cache=cache)
    with pytest.raises(ValueError, match=r"holds 16 rows and this run trains its distilled student on 12"):
        cli.train("codegen", other)
    live_terms = recipe_flags(tmp_path / "r", teacher_dir, teacher_cache=cache, hidden_state_weight=1.0)
    with pytest.raises(ValueError, match=r"a cache holds the teacher's outputs only.*hidden_state_weight"):
        cli.train("codegen", live_terms)


# Held-out rows scored by a faked server: each prompt token t >= 1 gets log-probability -0.1 * t (and NAN_AT's
# the value in `bad`), beside a top-1 the scoring never reads.
ROWS = {"input_ids": [[5, 6, 7, 8], [9, 10, 11, 0]], "attention_mask": [[1, 1, 1, 1], [1, 1, 1, 0]]}


def scoring_teacher(bad: dict):
    def answer(body):
        assert body["prompt_logprobs"] == 1  # the prompt's own token comes beside the top-1 whatever its rank
        return completion_answer([
            [None] + [{"1": {"logprob": -0.01, "rank": 1},
                       str(row[t]): {"logprob": bad.get((tuple(row), t), -0.1 * t), "rank": 7}}
                      for t in range(1, len(row))]
            for row in body["prompt"]
        ])  # fmt: skip

    client, session = faked_teacher(answer, top_k=TOP_K)
    return ServedRecipeTeacher(client.url, GPT2Config(), "served", client), session


def test_the_served_teachers_held_out_nll_sums_each_scored_tokens_own_log_probability(wordpiece_tokenizer):
    teacher, session = scoring_teacher({})
    labels = [[-100, 6, -100, 8], [-100, 10, 11, -100]]
    scores = served_text_nll(teacher, Dataset.from_dict({**ROWS, "labels": labels}), wordpiece_tokenizer, 1)
    assert [p["prompt"] for p in session.posted] == [[[5, 6, 7, 8]], [[9, 10, 11]]]  # padding not sent
    # Row 0 scores positions 1 and 3 (0.1 + 0.3 nats); row 1 positions 1 and 2 (0.1 + 0.2).
    assert scores["nll"].tolist() == pytest.approx([0.4, 0.3]) and scores["tokens"].tolist() == [2, 2]
    decoded = [
        wordpiece_tokenizer.decode(ids, clean_up_tokenization_spaces=False) for ids in ([6, 8], [10, 11])
    ]
    assert scores["bytes"].tolist() == [len(text.encode()) for text in decoded]


def test_labels_that_are_not_the_input_ids_are_refused_before_any_request(wordpiece_tokenizer):
    teacher, session = scoring_teacher({})
    shifted = [[6, 7, 8, -100], [10, 11, -100, -100]]  # labels shifted by hand: the model shifts them itself
    with pytest.raises(
        ValueError,
        match=r"Held-out row 0 has label 7 at attended position 1 where its input token is 6: a served teacher "
        r"scores the prompt's own tokens.*DataCollatorForLanguageModeling\(mlm=False\)",
    ):
        served_text_nll(teacher, Dataset.from_dict({**ROWS, "labels": shifted}), wordpiece_tokenizer, 1)
    # A wrong label in the last batch is found before the first batch is sent.
    late = [[5, 6, 7, 8], [9, 10, 12, -100]]
    with pytest.raises(
        ValueError, match=r"Held-out row 1 has label 12 at attended position 2 where its input"
    ):
        served_text_nll(teacher, Dataset.from_dict({**ROWS, "labels": late}), wordpiece_tokenizer, 1)
    assert session.posted == []


@pytest.mark.parametrize("bad, shown", [(float("nan"), "nan"), (None, r"None \(JSON null"), (0.3, "0.3")])
def test_a_served_teachers_nan_never_reaches_its_held_out_score(wordpiece_tokenizer, bad, shown):
    teacher, _ = scoring_teacher({((9, 10, 11), 2): bad})
    with pytest.raises(
        ValueError, match=rf"log-probability {shown}.* for prompt token 11 at position 2; .*finite"
    ):
        served_text_nll(teacher, Dataset.from_dict(ROWS), wordpiece_tokenizer, 2)
