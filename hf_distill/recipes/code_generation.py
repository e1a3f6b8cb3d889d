"""Greedy completions of held-out function bodies, and what users look at in them.

For each :class:`~.code_prompts.CodePrompt` a model writes a body (greedy decoding, at most ``max_new_tokens``):

* ``raw`` prompting: the model continues the prompt text (signature + docstring) itself, the way a model
  trained on raw code was trained; generation stops at the end of the function, the first non-blank line
  indented less than the body (:func:`cut_at_dedent`). The prompt is given without its last line break
  (:func:`prompt_text`): a code tokenizer writes a line break and the next line's indentation as one token
  (SmolLM2's ``"\n   "``), so a prompt ending in a bare ``"\n"`` stops at a token boundary the model never saw
  in training, and SmolLM2-135M-Instruct answered all 12 held-out prompts with a dedented line (an empty body);
  given the line break to write, it writes bodies;
* ``chat`` prompting: the prompt is wrapped in the tokenizer's chat template with a request to write the
  function (the way an instruction-tuned teacher was trained); the body is taken out of the answer's code
  block (:func:`body_from_answer`).

Metrics over the prompts (:func:`generation_metrics`):

* ``parse_rate``: the share of completions such that ``prompt + completion`` parses with :mod:`ast` and the
  completion adds code: at least one statement that is not a string literal. A function holding only its
  docstring parses, so a completion of nothing, of comments or of another docstring would otherwise count
  (an 18-layer SmolLM2 cut asked through the chat template answered 7 of 12 prompts with a comment repeated);
* ``degenerate_rate``: the share that are blank, one character repeated (``0000``, ``)))``) or one line
  repeated (:func:`is_degenerate`);
* ``doctest_pass_rate``: over the prompts whose docstring holds examples and whose reference body passes them
  in the sandbox, the share whose completion passes them too (run in :mod:`.sandbox`, a child process).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from hf_distill.recipes.code_prompts import CodePrompt, doctest_program
from hf_distill.recipes.sandbox import run_untrusted

PROMPT_STYLES = ("raw", "chat")

CHAT_REQUEST = (
    "Write the body of this Python function. Answer with the complete function in one ```python code block."
)

_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|$)", re.DOTALL)


def cut_at_dedent(text: str, indent: str) -> str:
    """``text`` (which starts on a new line after the prompt) up to the first non-blank line that does not
    start with the body's ``indent`` (the end of the function), without trailing blank lines."""
    kept = []
    for line in text.split("\n"):
        if line.strip() and not line.startswith(indent):
            break
        kept.append(line)
    return "\n".join(kept).rstrip() + "\n" if "".join(kept).strip() else ""


def is_degenerate(completion: str) -> bool:
    """Blank, one character repeated (whitespace aside), or two or more lines that are all the same line."""
    visible = "".join(completion.split())
    if not visible or len(set(visible)) == 1:
        return True
    lines = [line.strip() for line in completion.splitlines() if line.strip()]
    return len(lines) >= 2 and len(set(lines)) == 1


def parses(prompt: str, completion: str) -> bool:
    """Whether ``prompt + completion`` is valid Python to which the completion adds code (module docstring)."""
    if not completion.strip():
        return False
    whole = _code_statements(prompt + completion)
    if whole is None:
        return False
    # A documented prompt parses on its own; one that does not (no docstring) leaves every statement to the
    # completion.
    return whole > (_code_statements(prompt) or 0)


def _code_statements(source: str) -> int | None:
    """The statements in ``source`` other than bare string literals (docstrings), or None when it does not
    parse. Comments are not statements."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    return sum(
        1
        for node in ast.walk(tree)
        if isinstance(node, ast.stmt)
        and not (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        )
    )


def _function_body(code: str, name: str) -> str | None:
    """The body of ``def name`` in ``code`` after its docstring, as written, or None when ``code`` does not
    parse or defines no such function."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    lines = code.splitlines(keepends=True)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            body = node.body
            first = body[0]
            if len(body) > 1 and isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                body = body[1:]
            return "".join(lines[body[0].lineno - 1 : node.end_lineno])
    return None


def _reindent(code: str, indent: str) -> str:
    """``code`` moved so its least-indented line starts at ``indent``."""
    lines = code.splitlines()
    widths = [len(line) - len(line.lstrip()) for line in lines if line.strip()]
    strip = min(widths, default=0)
    return "".join(f"{indent}{line[strip:]}\n" if line.strip() else "\n" for line in lines)


def body_from_answer(answer: str, prompt: CodePrompt) -> str:
    """The function body in a chat answer: the first code block (the whole answer without one); the body of
    ``def <name>`` in it when it has one, else the block itself taken as the body; indented as the prompt's body.
    """
    fenced = _FENCE.search(answer)
    code = fenced.group(1) if fenced else answer
    body = _function_body(code, prompt.name)
    if body is None:
        header = re.search(rf"^\s*def\s+{re.escape(prompt.name)}\b.*?:\s*$", code, re.MULTILINE | re.DOTALL)
        body = code[header.end() :].lstrip("\n") if header else code
        # A repeated docstring is not the body; one left open (the answer ran out of tokens) leaves no body.
        docstring = re.match(r'\s*(?:"""|\'\'\')', body)
        if docstring:
            quote = body[docstring.end() - 3 : docstring.end()]
            close = body.find(quote, docstring.end())
            body = body[close + 3 :].lstrip("\n") if close >= 0 else ""
    return _reindent(body, prompt.body_indent) if body.strip() else ""


def raw_body_text(prompt: CodePrompt, generated: str) -> str:
    """The text a ``raw`` completion puts after ``prompt.prompt``: ``generated`` less the line break the prompt
    was given without (:func:`prompt_text`). Text that does not start with one continues the docstring's closing
    line; it is kept as it is, so it reads as a dedented line and the body is empty."""
    return generated[1:] if prompt.prompt.endswith("\n") and generated.startswith("\n") else generated


class DedentStop(StoppingCriteria):
    """Stops each row once its new text holds a line indented less than the body (the function has ended)."""

    def __init__(self, tokenizer: Any, prompt_width: int, indent: str):
        self.tokenizer, self.prompt_width = tokenizer, prompt_width
        # A line that shows a visible character before the body's indentation is complete; a line still
        # growing its indentation ("\n   " on the way to four spaces) is not a dedent yet.
        self.pattern = re.compile(r"\n(?!" + re.escape(indent) + r")[ \t]*\S")

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_width :], skip_special_tokens=True)
        # The prompt ends at a line's end (its line break given, or left to the model as in `prompt_text`), so
        # new text that does not open with a line break continues that line, and reads as a dedent.
        return torch.tensor([bool(self.pattern.search("\n" + t)) for t in texts], device=input_ids.device)


def context_length(model: torch.nn.Module) -> int:
    """The most positions the model reads (``n_positions`` / ``max_position_embeddings``; 2048 when unknown)."""
    config = model.config
    return int(
        getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or 2048
    )


def prompt_text(prompt: CodePrompt, tokenizer: Any, style: str) -> str:
    """The text the model is given: the prompt without its last line break (``raw``: the model writes the line
    break and the body's indentation, tokenized as in training; module docstring) or the chat template around a
    request (``chat``)."""
    if style not in PROMPT_STYLES:
        raise ValueError(f"prompt style {style!r} is not one of {PROMPT_STYLES}.")
    if style == "raw":
        return prompt.prompt.removesuffix("\n")
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "chat prompting needs a tokenizer with a chat template, and this one has none; prompt the model "
            "with style 'raw' (or 'auto', which picks the chat template only where there is one)."
        )
    message = f"{CHAT_REQUEST}\n\n```python\n{prompt.prompt}```"
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True
    )


def left_padded(encoded: list[list[int]], pad: int, device: Any) -> dict[str, torch.Tensor]:
    """``input_ids`` / ``attention_mask`` of token lists padded on the left with ``pad`` (masked out), by hand:
    a tokenizer without a pad token (GPT-2's) pads with EOS."""
    width = max(len(ids) for ids in encoded)
    return {
        "input_ids": torch.tensor([[pad] * (width - len(ids)) + ids for ids in encoded], device=device),
        "attention_mask": torch.tensor(
            [[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded], device=device
        ),
    }


@torch.no_grad()
def greedy_completions(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[CodePrompt],
    *,
    style: str = "raw",
    max_new_tokens: int = 128,
    batch_size: int = 4,
) -> list[dict[str, str]]:
    """Each prompt's ``{"generated": decoded new text, "completion": the body taken from it}`` (greedy).

    Prompts are batched (left-padded, by hand) by body indentation, so one stopping rule serves a batch; in ``raw``
    style a row stops at the end of its function, in ``chat`` style at EOS, with the prompt's length in tokens
    added to ``max_new_tokens`` (the answer repeats signature and docstring before the body).
    """
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError(
            f"max_new_tokens={max_new_tokens}, batch_size={batch_size}: both must be >= 1 (tokens per "
            "completion, prompts per generate call)."
        )
    room = context_length(model) - max_new_tokens
    if room < 1:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's context of "
            f"{context_length(model)} tokens; ask for fewer new tokens."
        )
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else model.config.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    if pad is None:
        raise ValueError(
            "Neither the tokenizer nor the model's config defines an EOS or pad token, so prompts cannot be "
            "batched; set tokenizer.eos_token (or pad_token)."
        )
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    groups: dict[str, list[int]] = {}
    for index, prompt in enumerate(prompts):
        groups.setdefault(prompt.body_indent, []).append(index)
    chunks = [rows[s : s + batch_size] for rows in groups.values() for s in range(0, len(rows), batch_size)]
    results: dict[int, dict[str, str]] = {}
    try:
        for rows in chunks:
            texts = [prompt_text(prompts[i], tokenizer, style) for i in rows]
            # A prompt longer than the context keeps its end (the signature may go, the docstring's end stays).
            encoded = [ids[-room:] for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
            batch = left_padded(encoded, pad, device)
            width = batch["input_ids"].shape[1]
            stop = [] if style == "chat" else [DedentStop(tokenizer, width, prompts[rows[0]].body_indent)]
            # A chat answer repeats the signature and docstring before the body: it gets their length on top,
            # so every model has the same budget for the body itself.
            lengths = [len(ids) for ids in tokenizer([prompts[i].prompt for i in rows])["input_ids"]]
            extra = max(lengths) if style == "chat" else 0
            output = model.generate(
                **batch,
                # Never past the model's context: positions beyond it have no embedding.
                max_new_tokens=min(max_new_tokens + extra, context_length(model) - width),
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=eos,
                stopping_criteria=StoppingCriteriaList(stop),
            )
            for i, row in zip(rows, output[:, width:]):
                generated = tokenizer.decode(row, skip_special_tokens=True)
                body = (
                    body_from_answer(generated, prompts[i])
                    if style == "chat"
                    else cut_at_dedent(raw_body_text(prompts[i], generated), prompts[i].body_indent)
                )
                results[i] = {"generated": generated, "completion": body}
    finally:
        model.train(was_training)
    return [results[i] for i in range(len(prompts))]


def doctest_outcomes(
    prompts: Sequence[CodePrompt], completions: Sequence[str], **limits: Any
) -> list[bool | None]:
    """Per prompt: whether the completed function passes its docstring's examples in the sandbox (None for a
    prompt without examples). ``limits`` go to :func:`~.sandbox.run_untrusted`."""
    return [
        run_untrusted(doctest_program(p, c), **limits).passed if p.doctest else None
        for p, c in zip(prompts, completions)
    ]


def generation_metrics(
    prompts: Sequence[CodePrompt], completions: Sequence[str], doctests: Sequence[bool | None]
) -> dict[str, float | int | None]:
    """The shares of the module docstring; ``doctests`` holds, per prompt, whether the completion passed its
    examples, or None where the prompt's examples are not counted (none, or the reference fails them).
    ``doctest_pass_rate`` is None when no prompt counts."""
    if not prompts or len(prompts) != len(completions) or len(prompts) != len(doctests):
        raise ValueError(
            f"{len(prompts)} prompts, {len(completions)} completions and {len(doctests)} doctest outcomes: "
            "give one completion and one outcome per prompt, and at least one prompt."
        )
    counted = [d for d in doctests if d is not None]
    return {
        "prompts": len(prompts),
        "parse_rate": sum(parses(p.prompt, c) for p, c in zip(prompts, completions)) / len(prompts),
        "degenerate_rate": sum(is_degenerate(c) for c in completions) / len(prompts),
        "doctest_prompts": len(counted),
        "doctest_pass_rate": sum(counted) / len(counted) if counted else None,
    }
