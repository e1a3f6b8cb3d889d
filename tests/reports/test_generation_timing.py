"""Time per generated token: a mocked clock gives back the time per token a fake generator takes, the prefill
counted in; the tokens are counted (a generator that stops early is refused); real tiny GPT-2 and Llama models
write exactly N tokens even when greedy decoding would pick EOS first; a smaller candidate measures faster only
through the clock (advanced per forward by the model's size), never by asserting on real time."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.benchmark import Timer
from transformers import LlamaConfig, LlamaForCausalLM

from hf_distill.reports.generation_timing import (
    PER_TOKEN,
    generate_exactly,
    generation_kwargs,
    time_generation,
)
from hf_distill.students.budget import build_candidate, candidate_grid
from hf_distill.students.build import count_parameters
from tests.helpers.tiny_models import tiny_gpt2


class FakeClock:
    """Seconds that pass only when a model says so: what ``Timer(timer=...)`` reads instead of the wall clock."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def timer(self, stmt, globals, num_threads):
        """The project's timer factory, building the real torch Timer on this clock."""
        return Timer(stmt=stmt, globals=globals, num_threads=num_threads, timer=self)


class FakeGenerator(nn.Module):
    """A 'causal LM' whose generate takes ``prefill_s`` for the prompt and ``step_s`` per token after the first
    (the first token comes out of the prefill), and writes ``writes`` tokens (default: what it was asked)."""

    def __init__(
        self, clock: FakeClock, step_s: float, prefill_s: float | None = None, writes: int | None = None
    ):
        super().__init__()
        self.clock, self.step_s = clock, step_s
        self.prefill_s = step_s if prefill_s is None else prefill_s
        self.writes = writes
        self.weight = nn.Parameter(torch.zeros(1))
        self.asked: list[dict] = []

    def generate(self, input_ids, attention_mask=None, **kwargs):
        self.asked.append(kwargs)
        new = kwargs["max_new_tokens"] if self.writes is None else self.writes
        self.clock.now += self.prefill_s + (new - 1) * self.step_s
        return torch.cat([input_ids, torch.ones(input_ids.shape[0], new, dtype=torch.long)], dim=1)


def _prompts(batch: int = 1, length: int = 5) -> dict[int, dict[str, torch.Tensor]]:
    ids = torch.arange(1, length + 1).repeat(batch, 1)
    return {batch: {"input_ids": ids, "attention_mask": torch.ones_like(ids)}}


def test_the_mocked_clock_gives_back_each_models_time_per_token():
    clock = FakeClock()
    models = {"teacher": FakeGenerator(clock, 0.003), "student": FakeGenerator(clock, 0.001)}
    timings = time_generation(models, _prompts(), new_tokens=8, rounds=3, timer=clock.timer)
    assert timings.per == PER_TOKEN and timings.measurement()["per"] == PER_TOKEN
    assert timings.samples_ms["teacher"][1] == pytest.approx([3.0] * 3)
    assert timings.samples_ms["student"][1] == pytest.approx([1.0] * 3)
    assert timings.medians() == {"teacher": {1: pytest.approx(3.0)}, "student": {1: pytest.approx(1.0)}}
    # Neither model is a transformers model: it is asked for N tokens, and must not stop early.
    assert models["student"].asked[0] == {"max_new_tokens": 8}


def test_time_per_token_is_the_whole_call_over_n_prefill_included():
    clock = FakeClock()
    # Hand: a 9 ms prefill (giving the first token) and 3 more steps of 1 ms: 12 ms for 4 tokens, 3 ms each.
    model = FakeGenerator(clock, step_s=0.001, prefill_s=0.009)
    timings = time_generation({"m": model}, _prompts(batch=2), new_tokens=4, rounds=2, timer=clock.timer)
    assert timings.samples_ms["m"][2] == pytest.approx([3.0, 3.0])


def test_a_generator_that_writes_another_number_of_tokens_is_refused():
    clock = FakeClock()
    short = FakeGenerator(clock, 0.001, writes=3)
    with pytest.raises(ValueError, match=r"FakeGenerator.generate added 3 tokens where 4 were asked for"):
        time_generation({"m": short}, _prompts(), new_tokens=4, rounds=1, timer=clock.timer)
    with pytest.raises(ValueError, match=r"new_tokens=0 must be a whole number of tokens, at least 1"):
        time_generation({"m": short}, _prompts(), new_tokens=0, rounds=1, timer=clock.timer)
    with pytest.raises(ValueError, match=r"prompt_tokens=0 must be a whole number of tokens"):
        time_generation({"m": short}, {}, new_tokens=4, rounds=1, timer=clock.timer)


def _tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, eos_token_id=2,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("build", [lambda: tiny_gpt2(layers=2).eval(), _tiny_llama], ids=["gpt2", "llama"])
def test_real_models_write_exactly_n_tokens_even_when_eos_comes_first(build):
    model = build()
    prompt = _prompts(length=6)[1]
    with torch.no_grad():
        first = int(model(**prompt).logits[0, -1].argmax())
    # Make the token greedy decoding picks first the EOS: a plain generate stops after one token.
    model.generation_config.eos_token_id = first
    plain = model.generate(**prompt, do_sample=False, max_new_tokens=5, pad_token_id=first)
    assert plain.shape[1] == 6 + 1
    kwargs = generation_kwargs(model, 5)
    assert kwargs["min_new_tokens"] == kwargs["max_new_tokens"] == 5 and kwargs["do_sample"] is False
    out = generate_exactly(5)(model, prompt)
    assert out.shape == (1, 6 + 5)


def test_a_smaller_candidate_measures_faster_through_the_clock_only():
    """Real generate on candidates cut from a tiny GPT-2; the clock moves 1 ms per 1,000 parameters per forward,
    so a model's time per token is its size (N tokens take N forwards: the prefill and N - 1 cached steps)."""
    clock = FakeClock()
    teacher = tiny_gpt2(layers=4, hidden=32).eval()
    calibration = [{"input_ids": torch.randint(1, 60, (2, 6), generator=torch.Generator().manual_seed(0))}]
    grid = candidate_grid(teacher, [0.9, 0.1, 0.5, 0.7], depths=(0.25, 0.75), widths=(1.0,))
    models = {"teacher": teacher, **{c.name: build_candidate(teacher, c, calibration) for c in grid}}
    forwards = {name: 0 for name in models}

    def tick(name, size):
        def hook(module, args, output):
            forwards[name] += 1
            clock.now += size / 1e6

        return hook

    for name, model in models.items():
        model.register_forward_hook(tick(name, count_parameters(model)))
    timings = time_generation(
        models, _prompts(length=4), new_tokens=6, rounds=2, threads=1, timer=clock.timer
    )
    medians = {name: sizes[1] for name, sizes in timings.medians().items()}
    for name, model in models.items():
        assert medians[name] == pytest.approx(count_parameters(model) / 1000)
    assert medians["1L"] < medians["3L"] < medians["teacher"]
    assert all(count % 6 == 0 for count in forwards.values()), "six forwards per generate call"


def test_the_real_timer_runs_generation_and_gives_positive_samples():
    # torch.utils.benchmark for real, briefly: only that every round gives a positive sample per model.
    models = {"a": tiny_gpt2(layers=1).eval(), "b": tiny_gpt2(layers=2).eval()}
    timings = time_generation(models, _prompts(), new_tokens=3, rounds=2, threads=1, min_run_time=0.001)
    assert all(len(s[1]) == 2 and min(s[1]) > 0 for s in timings.samples_ms.values())
