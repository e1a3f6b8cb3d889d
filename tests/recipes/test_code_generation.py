"""Held-out code prompts, completions and their metrics (parse rate, degenerate share, doctests in the sandbox).

The metric functions are checked on fixed strings against shares counted by hand and against naive references
written here; the generation plumbing runs on a tiny random GPT-2 with a byte-level tokenizer.
"""

from __future__ import annotations

import io
import textwrap
import tokenize

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from hf_distill.recipes.arguments import RecipeConfig, ReportArguments, TeacherArguments
from hf_distill.recipes.code_generation import (
    DedentStop,
    body_from_answer,
    cut_at_dedent,
    doctest_outcomes,
    generation_metrics,
    greedy_completions,
    is_degenerate,
    parses,
    prompt_text,
    raw_body_text,
)
from hf_distill.recipes.code_prompts import (
    CodePrompt,
    doctest_program,
    function_prompts,
    held_out_prompts,
    module_name,
)
from hf_distill.recipes.generation_eval import evaluate_model
from hf_distill.recipes.sandbox import run_untrusted
from hf_distill.reports.report import generation_section
from tests.helpers.tiny_models import tiny_gpt2

SOURCE = '''"""A module."""
import math
from os import path
from . import sibling


def double(x):
    """Double x.

    >>> double(2)
    4
    """
    y = 2 * x
    return y


def plain(a, b):
    """Add."""
    return a + b


def no_docstring(a):
    return a


def only_docstring():
    """Nothing else."""


class Box:
    def method(self):
        """A method."""
        return 1
'''

DOUBLE_PROMPT = 'def double(x):\n    """Double x.\n\n    >>> double(2)\n    4\n    """\n'


def _prompt(name: str = "f", doctest: bool = False) -> CodePrompt:
    return CodePrompt(
        path="m.py",
        name=name,
        prompt=f'def {name}(x):\n    """Double x."""\n',
        reference="    return 2 * x\n",
        doctest=doctest,
        imports="",
        body_indent="    ",
    )


def test_function_prompts_cut_documented_top_level_functions_into_prompt_and_reference():
    prompts = function_prompts(SOURCE, "pkg/mod.py")
    assert [p.name for p in prompts] == ["double", "plain"]  # no docstring / docstring only / method: skipped
    double = prompts[0]
    assert double.prompt == DOUBLE_PROMPT
    assert double.reference == "    y = 2 * x\n    return y\n"
    assert double.doctest and not prompts[1].doctest
    assert double.imports == "import math\nfrom os import path"  # the relative import is left out
    assert double.body_indent == "    " and double.path == "pkg/mod.py"
    assert function_prompts("def broken(:\n", "x.py") == []


def test_held_out_prompts_take_up_to_half_with_doctests_and_spread_over_files():
    files = [("a.py", SOURCE), ("b.py", SOURCE.replace("plain", "other"))]
    prompts = held_out_prompts(files, 3)
    assert [(p.path, p.name) for p in prompts] == [("a.py", "double"), ("a.py", "plain"), ("b.py", "other")]
    with pytest.raises(ValueError, match="limit=0: ask for at least one prompt"):
        held_out_prompts(files, 0)


def test_module_name_of_a_path():
    assert module_name("http/cookiejar.py") == "http.cookiejar"
    assert module_name("json/__init__.py") == "json"
    assert module_name("my-file.py") is None and module_name("data.txt") is None


def test_cut_at_dedent_keeps_the_body_and_stops_at_the_end_of_the_function():
    assert (
        cut_at_dedent("    return x\n\n    # more\n\ndef g():\n    pass\n", "    ")
        == "    return x\n\n    # more\n"
    )
    assert cut_at_dedent("def g():\n    pass\n", "    ") == ""  # a new function at once: an empty body
    assert cut_at_dedent("\n\n", "    ") == ""


def _naive_degenerate(text: str) -> bool:
    # Independent reference: blank, or a single distinct visible character, or >= 2 identical non-blank lines.
    chars = {c for c in text if not c.isspace()}
    lines = [line.strip() for line in text.split("\n") if line.strip() != ""]
    return len(chars) <= 1 or (len(lines) >= 2 and all(line == lines[0] for line in lines))


def _naive_parses(prompt: str, completion: str) -> bool:
    # Independent reference: compiles, and the completion holds a token of code (not only comments,
    # whitespace and string literals, which a docstring-only function already is).
    if completion.strip() == "":
        return False
    try:
        compile(prompt + completion, "<test>", "exec", dont_inherit=True)
    except SyntaxError:
        return False
    noise = {
        tokenize.COMMENT,
        tokenize.NL,
        tokenize.NEWLINE,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.STRING,
        tokenize.ENDMARKER,
    }
    lines = io.StringIO(textwrap.dedent(completion)).readline
    return any(token.type not in noise for token in tokenize.generate_tokens(lines))


# (completion, parses, degenerate): counted by hand.
CASES = [
    ("    return 2 * x\n", True, False),
    ("", False, True),  # blank: degenerate, and not counted as parsed although a docstring-only def parses
    ("    0000000000\n", True, True),  # one repeated character that happens to parse
    ("    return (\n", False, False),
    ("    x = 1\n    x = 1\n    x = 1\n", True, True),  # one repeated line
    ("    # The default context.\n    # The default context.\n", False, True),  # comments only: no code
    ('    """Another docstring."""\n', False, False),  # a string literal is not code either
    ("    pass  # nothing yet\n", True, False),  # a statement, with a comment
]


@pytest.mark.parametrize(("completion", "expected_parse", "expected_degenerate"), CASES)
def test_parses_and_is_degenerate_on_fixed_strings(completion, expected_parse, expected_degenerate):
    prompt = _prompt().prompt
    assert parses(prompt, completion) is expected_parse is _naive_parses(prompt, completion)
    assert is_degenerate(completion) is expected_degenerate is _naive_degenerate(completion)


def test_generation_metrics_are_the_shares_counted_by_hand():
    prompts = [_prompt(doctest=d) for d in (True, False, False, True, False)]
    completions = [case[0] for case in CASES[:5]]
    metrics = generation_metrics(prompts, completions, [True, None, None, False, None])
    assert metrics["prompts"] == 5
    assert metrics["parse_rate"] == pytest.approx(3 / 5)  # cases 1, 3, 5
    assert metrics["degenerate_rate"] == pytest.approx(3 / 5)  # cases 2, 3, 5
    assert metrics["doctest_prompts"] == 2 and metrics["doctest_pass_rate"] == pytest.approx(1 / 2)
    none_counted = generation_metrics(prompts[:1], completions[:1], [None])
    assert none_counted["doctest_pass_rate"] is None and none_counted["doctest_prompts"] == 0
    with pytest.raises(ValueError, match="give one completion and one outcome per prompt"):
        generation_metrics(prompts, completions[:2], [None] * 5)


def test_body_from_answer_takes_the_function_body_out_of_a_chat_answer():
    prompt = _prompt()
    answer = 'Sure:\n```python\ndef f(x):\n    """Double x."""\n    return 2 * x\n```\nThis doubles x.'
    assert body_from_answer(answer, prompt) == "    return 2 * x\n"
    assert body_from_answer("```python\nreturn 2 * x\n```", prompt) == "    return 2 * x\n"  # body alone
    assert body_from_answer("```python\ndef f(x):\n    return (\n```", prompt) == "    return (\n"  # broken
    assert body_from_answer("I cannot help with that.", prompt) == "    I cannot help with that.\n"
    assert body_from_answer("```python\n```", prompt) == ""
    # Cut off before the end (does not parse): a repeated docstring is skipped, an unclosed one leaves no body.
    cut = '```python\ndef f(x):\n    """Double x."""\n    return (2 *'
    assert body_from_answer(cut, prompt) == "    return (2 *\n"
    assert body_from_answer('```python\ndef f(x):\n    """Double', prompt) == ""


def test_doctest_program_passes_a_right_body_and_fails_a_wrong_one_in_the_sandbox():
    double = function_prompts(SOURCE, "not_a_module_here.py")[0]
    assert run_untrusted(doctest_program(double, double.reference)).passed
    assert not run_untrusted(doctest_program(double, "    return 3 * x\n")).passed
    assert not run_untrusted(doctest_program(double, "    return (\n")).passed  # does not even compile
    # Examples that need the function's module run among its names: statistics.mean's own doctests.
    source = 'import math\n\ndef mean(data):\n    """\n    >>> mean([1, 2, 3])\n    2\n    """\n'
    mean = CodePrompt("statistics.py", "mean", source[12:], "", True, "import math", "    ")
    assert run_untrusted(doctest_program(mean, "    return sum(data) // len(data)\n")).passed


def _byte_level_tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator([SOURCE] * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )


@pytest.fixture(scope="module")
def tiny_lm():
    tokenizer = _byte_level_tokenizer()
    model = tiny_gpt2(vocab_size=len(tokenizer), positions=512, eos_token_id=tokenizer.eos_token_id)
    return model, tokenizer


def test_greedy_completions_are_bounded_deterministic_and_cut_at_the_function_end(tiny_lm):
    model, tokenizer = tiny_lm
    prompts = function_prompts(SOURCE, "mod.py") + [_prompt("g")]
    first = greedy_completions(model, tokenizer, prompts, max_new_tokens=12, batch_size=2)
    again = greedy_completions(model, tokenizer, prompts, max_new_tokens=12, batch_size=3)
    assert first == again  # greedy, and batching does not change a row's text
    assert len(first) == len(prompts) and tokenizer.padding_side == "right"  # the tokenizer is left as it was
    # A row's text does not depend on the others in its batch: each prompt alone gives the same.
    assert [greedy_completions(model, tokenizer, [p], max_new_tokens=12)[0] for p in prompts] == first
    for prompt, result in zip(prompts, first):
        assert len(tokenizer(result["generated"], add_special_tokens=False)["input_ids"]) <= 12 + 1
        assert result["completion"] == cut_at_dedent(
            raw_body_text(prompt, result["generated"]), prompt.body_indent
        )
        assert all(not line.strip() or line.startswith("    ") for line in result["completion"].splitlines())


def test_a_raw_prompt_is_tokenized_as_the_start_of_its_function(tiny_lm):
    """The raw prompt's tokens are the first tokens of the whole function (prompt + body), as in training. The
    prompt as written is not: this tokenizer (as SmolLM2's) merges the docstring's line break with the body's
    indentation, so a prompt ending in a bare line break ends at a boundary training never showed."""
    _, tokenizer = tiny_lm
    for prompt in function_prompts(SOURCE, "mod.py"):
        whole = tokenizer(prompt.prompt + prompt.reference, add_special_tokens=False)["input_ids"]
        raw = tokenizer(prompt_text(prompt, tokenizer, "raw"), add_special_tokens=False)["input_ids"]
        assert whole[: len(raw)] == raw and prompt_text(prompt, tokenizer, "raw") + "\n" == prompt.prompt
        as_written = tokenizer(prompt.prompt, add_special_tokens=False)["input_ids"]
        assert whole[: len(as_written)] != as_written


def test_raw_body_text_drops_the_line_break_the_prompt_was_given_without():
    prompt = _prompt()
    assert raw_body_text(prompt, "\n    return 2 * x\n") == "    return 2 * x\n"
    assert raw_body_text(prompt, "  # closing line\n    return x\n") == "  # closing line\n    return x\n"
    # A continued closing line is a dedented line: no body.
    assert cut_at_dedent(raw_body_text(prompt, "  # closing line\n    return x\n"), "    ") == ""
    unbroken = CodePrompt("m.py", "f", "def f(x): pass", "", False, "", "    ")
    assert raw_body_text(unbroken, "\n    y\n") == "\n    y\n"  # a prompt without a line break keeps all


@pytest.mark.parametrize(
    ("new_text", "stops"),
    [
        ("\n    x = 1\n    return x", False),  # the raw prompt's line break, written by the model
        ("\n   ", False),
        ('  # after the closing """', True),  # continues the prompt's last line
        ("    x = 1\n    return x", False),
        ("    x = 1\n\n   ", False),  # a blank line, then indentation still growing
        ("    x = 1\n\ndef g", True),
        ("def g", True),  # the first new line starts right after the prompt
        ("    if x:\n  y", True),
    ],
)
def test_dedent_stop_fires_once_a_line_starts_left_of_the_body(tiny_lm, new_text, stops):
    _, tokenizer = tiny_lm
    prompt_ids = tokenizer("def f(x):\n", add_special_tokens=False)["input_ids"]
    ids = prompt_ids + tokenizer(new_text, add_special_tokens=False)["input_ids"]
    stop = DedentStop(tokenizer, len(prompt_ids), "    ")
    assert stop(torch.tensor([ids]), None).tolist() == [stops]


def test_evaluate_model_scores_the_completions_it_returns(tiny_lm, monkeypatch):
    from hf_distill.recipes import generation_eval

    model, tokenizer = tiny_lm
    prompts = function_prompts(SOURCE, "mod.py")
    run_for: list[str] = []

    def recording(chosen, completions, **limits):
        run_for.extend(p.name for p in chosen)
        return doctest_outcomes(chosen, completions, **limits)

    monkeypatch.setattr(generation_eval, "doctest_outcomes", recording)
    metrics, completions = evaluate_model(
        model, tokenizer, prompts, [True, False], style="raw", max_new_tokens=8, batch_size=2
    )
    assert metrics["prompts"] == 2 and metrics["doctest_prompts"] == 1 and metrics["prompt_style"] == "raw"
    expected = sum(_naive_parses(p.prompt, c) for p, c in zip(prompts, completions)) / 2
    assert metrics["parse_rate"] == pytest.approx(expected)
    assert metrics["degenerate_rate"] == pytest.approx(sum(map(_naive_degenerate, completions)) / 2)
    per_prompt = metrics["per_prompt"]
    assert per_prompt["parses"] == [_naive_parses(p.prompt, c) for p, c in zip(prompts, completions)]
    assert per_prompt["degenerate"] == [_naive_degenerate(c) for c in completions]
    assert per_prompt["doctest"][1] is None  # the second prompt's doctests are not counted
    assert run_for == [prompts[0].name], "only the counted prompt's examples run in the sandbox"


def test_chat_prompting_needs_a_chat_template_and_uses_it(tiny_lm):
    model, tokenizer = tiny_lm
    with pytest.raises(ValueError, match="chat prompting needs a tokenizer with a chat template"):
        prompt_text(_prompt(), tokenizer, "chat")
    with pytest.raises(ValueError, match="prompt style 'fancy' is not one of"):
        prompt_text(_prompt(), tokenizer, "fancy")
    tokenizer.chat_template = "{% for m in messages %}<user>{{ m['content'] }}{% endfor %}<bot>"
    try:
        text = prompt_text(_prompt(), tokenizer, "chat")
        assert text.startswith("<user>Write the body") and text.endswith("```<bot>")
        result = greedy_completions(model, tokenizer, [_prompt()], style="chat", max_new_tokens=6)[0]
        assert result["completion"] == body_from_answer(result["generated"], _prompt())
    finally:
        tokenizer.chat_template = None


def test_a_chat_answer_never_runs_past_the_model_context():
    """The chat budget (max_new_tokens + the prompt's length) is cut at the model's context: with room for the
    prompt and 12 tokens more, but not for the prompt's length on top, generation stops at the last position
    (beyond it, GPT-2 has no position embedding and generate raised IndexError)."""
    tokenizer = _byte_level_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    try:
        prompt = _prompt()
        width = len(tokenizer(prompt_text(prompt, tokenizer, "chat"), add_special_tokens=False)["input_ids"])
        assert len(tokenizer(prompt.prompt)["input_ids"]) > 12  # so 8 + the prompt's length would not fit
        model = tiny_gpt2(vocab_size=len(tokenizer), positions=width + 12, eos_token_id=None)
        result = greedy_completions(model, tokenizer, [prompt], style="chat", max_new_tokens=8)[0]
        assert len(tokenizer(result["generated"], add_special_tokens=False)["input_ids"]) <= 12
    finally:
        tokenizer.chat_template = None


def test_report_arguments_refuse_bad_generation_settings():
    with pytest.raises(ValueError, match="prompts must be >= 0"):
        ReportArguments(generation_prompts=-1)
    with pytest.raises(ValueError, match="teacher_prompt_style='fancy' is not one of"):
        ReportArguments(teacher_prompt_style="fancy")


def test_generation_section_renders_the_table_and_samples():
    report = {
        "generation": {
            "prompts": 4,
            "max_new_tokens": 64,
            "models": [
                {
                    "name": "teacher",
                    "prompt_style": "chat",
                    "parse_rate": 0.75,
                    "degenerate_rate": 0.0,
                    "doctest_pass_rate": 0.5,
                    "doctest_prompts": 2,
                    "bits_per_byte": 0.8123,
                },
                {
                    "name": "student",
                    "prompt_style": "raw",
                    "parse_rate": 0.25,
                    "degenerate_rate": 0.5,
                    "doctest_pass_rate": None,
                    "doctest_prompts": 0,
                    "bits_per_byte": None,
                },
            ],
            "samples": [
                {"function": "f", "path": "m.py", "prompt": "def f():\n", "completions": {"student": ""}}
            ],
        }
    }
    text = "\n\n".join(generation_section(report))
    assert "| teacher | chat | 75% | 0% | 50% of 2 | 0.812 |" in text
    assert "| student | raw | 25% | 50% | n/a of 0 | n/a |" in text
    assert "### `f` (m.py)" in text and "(blank)" in text
    assert generation_section({}) == []


@pytest.mark.slow
def test_add_generation_eval_scores_teacher_both_ways_and_students_on_held_out_files(tiny_lm, tmp_path):
    from types import SimpleNamespace

    from hf_distill.recipes.data_arguments import DataArguments
    from hf_distill.recipes.data_code import load_code_corpus
    from hf_distill.recipes.generation_eval import add_generation_eval

    model, tokenizer = tiny_lm
    tokenizer.chat_template = "{% for m in messages %}<user>{{ m['content'] }}{% endfor %}<bot>"
    try:
        model.save_pretrained(tmp_path / "teacher")
        tokenizer.save_pretrained(tmp_path / "teacher")
    finally:
        tokenizer.chat_template = None
    tiny_gpt2(seed=1, vocab_size=len(tokenizer), positions=512).save_pretrained(tmp_path / "student")
    # A run that fine-tuned its teacher on the corpus: that teacher is measured too, raw, as the students are.
    tiny_gpt2(seed=2, vocab_size=len(tokenizer), positions=512).save_pretrained(tmp_path / "fine-tuned")
    report = {
        "teacher": {"fine_tuned_dir": str(tmp_path / "fine-tuned")},
        "students": [{"name": "student", "output_dir": str(tmp_path / "student")}],
    }
    data_args = DataArguments(max_files=20, max_test_samples=2, max_length=32)
    config = RecipeConfig(
        teacher=TeacherArguments(teacher_model_name_or_path=str(tmp_path / "teacher")),
        data=data_args,
        report=ReportArguments(
            generation_prompts=2, generation_max_new_tokens=6, teacher_prompt_style="both"
        ),
        training=SimpleNamespace(per_device_eval_batch_size=2, output_dir=str(tmp_path)),
    )
    report = add_generation_eval(report, config)
    generation = report["generation"]
    names = ["teacher", "teacher (raw)", "teacher (fine-tuned)", "student"]
    assert [m["name"] for m in generation["models"]] == names
    assert [m["prompt_style"] for m in generation["models"]] == ["chat", "raw", "raw", "raw"]
    # The fine-tuned teacher is its own model: its held-out bits per byte are not the teacher's.
    by_name = {m["name"]: m for m in generation["models"]}
    assert by_name["teacher (fine-tuned)"]["bits_per_byte"] != by_name["teacher"]["bits_per_byte"]
    corpus = load_code_corpus(seed=data_args.split_seed, max_files=20)
    trained_on = set(corpus["train"]["path"]) | set(corpus["validation"]["path"])
    assert generation["prompts"] == 2 and not set(generation["files"]) & trained_on
    for entry in generation["models"]:
        assert 0 <= entry["parse_rate"] <= 1 and 0 <= entry["degenerate_rate"] <= 1
        assert entry["bits_per_byte"] > 0
    assert len(generation["samples"]) == 2
    assert set(generation["samples"][0]["completions"]) == set(names)
