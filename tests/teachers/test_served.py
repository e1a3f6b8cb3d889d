"""A teacher on another machine: `hf-distill serve-teacher` as a real separate process on a free loopback port,
and DistillationTrainer(teacher_model="http://127.0.0.1:PORT/v1") against it: the loss of every batch equals the
top-k cache's and the live teacher's top-k loss; vLLM's documented answer parses to the same target; a server
killed mid-run stops training with one clear error, never a hang; the refusals before training."""

from __future__ import annotations

import json
import math
import signal
import urllib.request

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, DataCollatorForLanguageModeling, TrainerCallback

from hf_distill import DistillationTrainer, DistillationTrainingArguments
from hf_distill.batch import DistillationBatch
from hf_distill.cache.build import cache_teacher_outputs
from hf_distill.losses.topk import topk_teacher
from hf_distill.teachers.served import LookAhead, ServedTeacher, TeacherServerError
from hf_distill.teachers.served_api import parse_prompt_logprobs
from tests.helpers.processes import free_port, serving
from tests.helpers.served import completion_answer, faked_teacher
from tests.helpers.xtok import TEXTS, byte_level_tokenizer, metaspace_tokenizer, tiny_gpt2

TOP_K = 16


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher")
    tokenizer = byte_level_tokenizer()
    teacher = tiny_gpt2(len(tokenizer), seed=1)
    with torch.no_grad():  # a confident teacher, so the KD term is far above float rounding
        teacher.transformer.ln_f.weight.mul_(10.0)
    teacher.save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def server(teacher_dir):
    with serving(teacher_dir) as (url, _):
        yield url


def rows(tokenizer) -> Dataset:
    encoded = tokenizer(TEXTS[:6] * 2, truncation=True, max_length=24)
    return Dataset.from_dict({"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]})


def args(tmp_path, **kw) -> DistillationTrainingArguments:
    settings = dict(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, per_device_train_batch_size=4,
        per_device_eval_batch_size=4, max_steps=3, learning_rate=1e-2, logging_steps=1, save_strategy="no",
        seed=0, data_seed=0, disable_tqdm=True, temperature=1.0, alpha=1.0, teacher_server_top_k=TOP_K,
    )  # fmt: skip
    settings.update(kw)
    return DistillationTrainingArguments(**settings)


def trainer_for(tmp_path, teacher, dataset, tokenizer, **kw) -> DistillationTrainer:
    return DistillationTrainer(
        model=tiny_gpt2(len(tokenizer), seed=2),
        teacher_model=teacher,
        args=args(tmp_path, **kw),
        train_dataset=dataset,
        processing_class=tokenizer,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
    )


def bucket_kl(student_logits, teacher_logits, labels, k):
    """The reference: forward KL between the teacher's k + 1 buckets (its top-k, everything else) and the
    student's on the same buckets, averaged over the label positions (position t predicts t + 1)."""
    s, t = student_logits[:, :-1].double(), teacher_logits[:, :-1].double()
    keep = labels[:, 1:] != -100
    p, q = torch.softmax(t, -1), torch.softmax(s, -1)
    top = p.topk(k, dim=-1).indices
    p_b = torch.cat([p.gather(-1, top), 1 - p.gather(-1, top).sum(-1, keepdim=True)], -1)
    q_b = torch.cat([q.gather(-1, top), 1 - q.gather(-1, top).sum(-1, keepdim=True)], -1)
    per = (p_b * (p_b.clamp_min(1e-300).log() - q_b.log())).sum(-1)
    return float(per[keep].mean())


def test_served_loss_equals_the_cached_and_the_live_topk_loss_per_batch(tmp_path, teacher_dir, server):
    tokenizer = byte_level_tokenizer()
    dataset = rows(tokenizer)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    cached = cache_teacher_outputs(teacher, dataset, top_k=TOP_K, temperature=1.0)
    served = trainer_for(tmp_path / "served", server, dataset, tokenizer)
    from_cache = trainer_for(tmp_path / "cached", None, cached, tokenizer)
    served_batches = list(served.get_eval_dataloader(dataset))
    cached_batches = list(from_cache.get_eval_dataloader(cached))
    assert len(served_batches) == len(cached_batches) == 3
    for served_batch, cached_batch in zip(served_batches, cached_batches):
        with torch.no_grad():
            served_loss = float(served.compute_loss(served.model, dict(served_batch)))
            cached_loss = float(from_cache.compute_loss(from_cache.model, dict(cached_batch)))
            student = served.model(
                input_ids=served_batch["input_ids"], attention_mask=served_batch["attention_mask"]
            )
            live = teacher(input_ids=served_batch["input_ids"], attention_mask=served_batch["attention_mask"])
        reference = bucket_kl(student.logits, live.logits, served_batch["labels"], TOP_K)
        assert served_loss > 0.05
        assert served_loss == pytest.approx(cached_loss, abs=1e-5)
        assert served_loss == pytest.approx(reference, abs=1e-5)


def test_training_against_the_server_logs_the_cached_runs_losses(tmp_path, teacher_dir, server):
    tokenizer = byte_level_tokenizer()
    dataset = rows(tokenizer)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    cached = cache_teacher_outputs(teacher, dataset, top_k=TOP_K, temperature=1.0)
    served = trainer_for(tmp_path / "served", server, dataset, tokenizer, teacher_server_prefetch=2)
    from_cache = trainer_for(tmp_path / "cached", None, cached, tokenizer)
    submitted = []
    served_submit = served.served_teacher.submit
    served.served_teacher.submit = lambda batch: (submitted.append(1), served_submit(batch))
    served.train(), from_cache.train()
    served_logs = [log["loss_kd"] for log in served.state.log_history if "loss_kd" in log]
    cached_logs = [log["loss_kd"] for log in from_cache.state.log_history if "loss_kd" in log]
    assert len(served_logs) == 3 and served_logs[0] > 0.05
    assert served_logs == pytest.approx(cached_logs, abs=1e-5)
    assert len(submitted) >= 3  # every training batch was asked for ahead of its step
    for a, b in zip(served.model.parameters(), from_cache.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_a_response_in_vllms_documented_shape_parses_to_the_cached_target(teacher_dir):
    """vLLM documents `prompt_logprobs` on /v1/completions as one entry per prompt token, None first, then a
    mapping of token id to a Logprob (`logprob`, `rank`, `decoded_token`) holding the top-k and the prompt's own
    token (docs.vllm.ai, "OpenAI-Compatible Server", Completions API extra parameters; the response model
    `CompletionResponseChoice.prompt_logprobs` in vllm/entrypoints/openai/protocol.py). The answer below is
    written in that shape, keys as JSON strings, from the teacher's own log-softmax."""
    tokenizer = byte_level_tokenizer()
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    prompt = tokenizer(TEXTS[0])["input_ids"][:12]
    with torch.no_grad():
        logits = teacher(input_ids=torch.tensor([prompt])).logits[0]
    logprobs = torch.log_softmax(logits, -1)
    entries = [None]
    for t in range(1, len(prompt)):
        order = logprobs[t - 1].argsort(descending=True).tolist()
        entry = {
            str(i): {
                "logprob": float(logprobs[t - 1, i]),
                "rank": r + 1,
                "decoded_token": tokenizer.decode([i]),
            }
            for r, i in enumerate(order[:TOP_K])
        }
        own = prompt[t]
        entry.setdefault(str(own), {"logprob": float(logprobs[t - 1, own]), "rank": order.index(own) + 1,
                                    "decoded_token": tokenizer.decode([own])})  # fmt: skip
        entries.append(entry)
    response = json.loads(json.dumps({
        "id": "cmpl-0", "object": "text_completion", "created": 0, "model": "teacher",
        "choices": [{"index": 0, "text": "x", "logprobs": None, "finish_reason": "length", "stop_reason": None,
                     "prompt_logprobs": entries}],
        "usage": {"prompt_tokens": len(prompt), "total_tokens": len(prompt) + 1, "completion_tokens": 1},
    }))  # fmt: skip
    assert any(len(e) == TOP_K + 1 for e in entries[1:])  # the prompt's own token outside the top-k is there
    values, ids, tail = parse_prompt_logprobs(response["choices"][0]["prompt_logprobs"], TOP_K)
    cached_values, cached_ids, cached_tail = topk_teacher(logits, TOP_K, temperature=1.0)
    n = len(prompt) - 1  # the last position's prediction is not in prompt_logprobs (never read by the loss)
    assert ids[:n].tolist() == cached_ids[:n].tolist()
    # log-probabilities are the logits shifted by log Z: the same softmax over the k + 1 buckets.
    buckets = np.concatenate([values[:n], tail[:n, None]], -1)
    cached_buckets = torch.cat([cached_values[:n], cached_tail[:n, None]], -1)
    np.testing.assert_allclose(
        torch.softmax(torch.from_numpy(buckets).double(), -1),
        torch.softmax(cached_buckets.double(), -1),
        atol=1e-6,
    )
    # Hand check of one tail: log(1 - sum of the top-k probabilities).
    mass = sum(math.exp(v) for v in values[0])
    assert tail[0] == pytest.approx(math.log(1 - mass), abs=1e-5)


def test_the_server_answers_in_vllms_shape(server):
    with urllib.request.urlopen(server + "/models", timeout=10) as answer:
        listed = json.load(answer)["data"]
    assert listed[0]["id"] and listed[0]["vocab_size"] == 320
    body = json.dumps({"model": listed[0]["id"], "prompt": [[5, 60, 7, 90]], "max_tokens": 1,
                       "prompt_logprobs": 3}).encode()  # fmt: skip
    request = urllib.request.Request(server + "/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        entries = json.load(answer)["choices"][0]["prompt_logprobs"]
    assert entries[0] is None and len(entries) == 4
    for position, entry in enumerate(entries[1:], start=1):
        assert str([5, 60, 7, 90][position]) in entry and len(entry) in (3, 4)
        ranked = sorted(entry.values(), key=lambda e: e["rank"])
        assert [e["rank"] for e in ranked[:3]] == [1, 2, 3]
        assert ranked[0]["logprob"] >= ranked[1]["logprob"] >= ranked[2]["logprob"]
        assert all(set(e) == {"logprob", "rank", "decoded_token"} for e in entry.values())


def test_a_server_killed_mid_run_stops_training_with_one_clear_error(tmp_path, teacher_dir):
    tokenizer = byte_level_tokenizer()
    dataset = rows(tokenizer)
    with serving(teacher_dir) as (url, process):
        trainer = trainer_for(tmp_path, url, dataset, tokenizer, max_steps=40, teacher_server_retries=2,
                              teacher_server_timeout=5.0)  # fmt: skip

        class Kill(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == 2:
                    process.kill()
                    process.wait(timeout=30)

        trainer.add_callback(Kill())
        signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("training hung")))
        signal.alarm(120)
        try:
            with pytest.raises(
                TeacherServerError, match=rf"{url}/completions did not answer after 2 attempts"
            ):
                trainer.train()
        finally:
            signal.alarm(0)
        assert 2 <= trainer.state.global_step < 40


def test_refusals_before_training(tmp_path, teacher_dir, server):
    tokenizer = byte_level_tokenizer()
    dataset = rows(tokenizer)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    # The temperature is refused before any request (the URL has no server behind it).
    with pytest.raises(
        ValueError, match=r"temperature=2.0: a served teacher's log-probabilities are at temperature 1"
    ):
        trainer_for(tmp_path / "t", dead, dataset, tokenizer, temperature=2.0)
    with pytest.raises(ValueError, match="served teacher does not send"):
        trainer_for(tmp_path / "h", dead, dataset, tokenizer, hidden_state_weight=1.0)
    # A top-k above the server's cap: the server's own 400 answer is quoted.
    with pytest.raises(TeacherServerError, match=r"greater than max allowed: 16"):
        trainer_for(tmp_path / "k", server, dataset, tokenizer, teacher_server_top_k=32)
    # A student of another tokenizer: the probe's token ids differ.
    other = metaspace_tokenizer()
    with pytest.raises(ValueError, match="tokenizes the probe text"):
        trainer_for(tmp_path / "tok", server, rows(other), other)
    with pytest.raises(TeacherServerError, match=rf"{dead}/models did not answer after 1 attempts.*curl"):
        trainer_for(tmp_path / "d", dead, dataset, tokenizer, teacher_server_retries=1)
    with pytest.raises(ValueError, match="teacher_server_prefetch must be an integer >= 0"):
        args(tmp_path, teacher_server_prefetch=-1)


def test_a_server_that_caps_the_topk_silently_or_sends_nonfinite_values_is_refused():
    entry = {"7": {"logprob": -0.1, "rank": 1, "decoded_token": "a"}, "9": {"logprob": -3.0, "rank": 2}}
    with pytest.raises(ValueError, match="caps the top-k lower than asked"):
        parse_prompt_logprobs([None, entry], 3)
    bad = {"7": {"logprob": float("nan"), "rank": 1}, "9": {"logprob": -3.0, "rank": 2}}
    with pytest.raises(ValueError, match="a log-probability is finite and <= 0"):
        parse_prompt_logprobs([None, bad], 2)
    # The prompt's own token at rank 40 is not one of the top 2.
    own = {**entry, "11": {"logprob": -9.0, "rank": 40}}
    values, ids, tail = parse_prompt_logprobs([None, own], 2)
    assert ids[0].tolist() == [7, 9] and ids[1].tolist() == [0, 1]  # the last row: empty, distinct ids
    assert tail[0] == pytest.approx(math.log(1 - math.exp(-0.1) - math.exp(-3.0)), abs=1e-6)


def test_a_served_nan_stops_the_batch_before_its_target_reaches_the_loss():
    """The trainer's only way to a served target is ``ServedTeacher.__call__`` (fetch, parse, place), and the
    loss checks no top-k target's values (``check_kd_finite`` is for logits): the parse must refuse the NaN."""
    value = {"logprob": -2.5}

    def answer(body):
        top = {"5": {"logprob": -0.2, "rank": 1}, "6": {**value, "rank": 2}}
        return completion_answer([[None] + [top] * (len(row) - 1) for row in body["prompt"]])

    teacher, session = faked_teacher(answer, top_k=2)
    batch = DistillationBatch.from_inputs(
        {"input_ids": torch.tensor([[0, 3, 4, 9]]), "attention_mask": torch.tensor([[0, 1, 1, 1]])}
    )
    target = teacher(batch, {})  # the control: the same answer with finite values is the target
    values, ids, tail = target.topk
    assert session.posted[-1]["prompt"] == [[3, 4, 9]] and session.posted[-1]["prompt_logprobs"] == 2
    assert values[0, 1:3].flatten().tolist() == pytest.approx([-0.2, -2.5] * 2)
    assert ids[0, 1:3].tolist() == [[5, 6]] * 2 and values[0, [0, 3]].abs().sum() == 0  # padding, last
    assert tail[0, 1] == pytest.approx(math.log(1 - math.exp(-0.2) - math.exp(-2.5)), abs=1e-6)
    for bad, shown in ((float("nan"), "nan"), (None, r"None \(JSON null")):
        value["logprob"] = bad
        with pytest.raises(
            ValueError, match=rf"log-probability {shown}.* for token 6 at prompt position 1; .*finite"
        ):
            teacher(batch, {})


def test_look_ahead_asks_for_the_next_batches_before_they_are_used():
    seen = []
    ahead = LookAhead(iter(range(5)), 2, seen.append)
    assert next(ahead) == 0 and seen == [0, 1, 2]
    assert next(ahead) == 1 and seen == [0, 1, 2, 3]
    assert list(ahead) == [2, 3, 4] and seen == [0, 1, 2, 3, 4]
    teacher = ServedTeacher("http://127.0.0.1:9/v1", top_k=2, prefetch=0)
    source = iter([1])
    assert teacher.look_ahead(source) is source


def test_cache_teacher_from_a_served_teacher_writes_the_local_teachers_compact_cache(
    tmp_path, teacher_dir, server
):
    from hf_distill import cli
    from hf_distill.cache.compact import SAME_TOKENIZER
    from hf_distill.cache.shards import load_teacher_cache

    data = ["--max_files", "6", "--max_train_samples", "6", "--max_length", "16", "--split_seed", "1"]
    run = [
        "--use_cpu",
        "true",
        "--report_to",
        "none",
        "--per_device_eval_batch_size",
        "4",
        "--temperature",
        "1.0",
    ]
    common = ["--top_k", "8", "--output_dir", str(tmp_path / "o"), *data, *run]
    local = ["--teacher_model_name_or_path", str(teacher_dir), "--cache_dir", str(tmp_path / "local")]
    served = ["--teacher_model_name_or_path", server, "--served_tokenizer", str(teacher_dir)]
    served += ["--cache_dir", str(tmp_path / "served")]
    assert cli.main(["cache-teacher", "codegen", *local, *common]) == 0
    assert cli.main(["cache-teacher", "codegen", *served, *common]) == 0
    a, b = load_teacher_cache(tmp_path / "local"), load_teacher_cache(tmp_path / "served")
    assert len(a) == len(b) == 6 and a.column_names == b.column_names
    for row_a, row_b in zip(a, b):
        assert (
            row_a["input_ids"] == row_b["input_ids"]
            and row_a["teacher_input_hash"] == row_b["teacher_input_hash"]
        )
        # Every position, the last one too (from the generated token's logprobs).
        for name in (SAME_TOKENIZER.ids_lo, SAME_TOKENIZER.ids_hi, SAME_TOKENIZER.codes):
            assert row_a[name] == row_b[name], name
        np.testing.assert_allclose(row_a[SAME_TOKENIZER.tail_rel], row_b[SAME_TOKENIZER.tail_rel], atol=1e-5)
    with pytest.raises(ValueError, match="--served_tokenizer is required"):
        cli.cache_teacher(
            "codegen", ["--teacher_model_name_or_path", server, "--cache_dir", str(tmp_path / "x"), *common]
        )


def test_a_cache_from_a_topk_source_needs_its_vocabulary_size(tmp_path):
    from hf_distill.cache.writer import write_teacher_cache

    source = ServedTeacher(f"http://127.0.0.1:{free_port()}/v1", top_k=4, prefetch=0)  # never asked
    with pytest.raises(ValueError, match="pass task='causal_lm', no teacher_tokenizer, and vocab_size"):
        write_teacher_cache(source, rows(byte_level_tokenizer()), tmp_path / "c", top_k=4)
