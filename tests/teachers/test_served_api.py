"""The wire format's refusals, on hand-built answers (no server): an entry without the prompt's own token, and a
log-probability that is not a finite number <= 0, wherever it sits in an entry (ranked, beyond the top-k, the
generated token's, or JSON null), never reach a target or a held-out NLL."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hf_distill.teachers.served_api import last_position, parse_prompt_logprobs, prompt_token_logprobs

NAN, INF = float("nan"), float("inf")
PROMPT = [3, 42, 7]
# What vLLM sends for PROMPT with prompt_logprobs=2: the top-2 and, beside them, the prompt's own token.
VLLM_ENTRIES = [
    None,
    {"5": {"logprob": -0.2, "rank": 1}, "42": {"logprob": -1.9, "rank": 2}},
    {"9": {"logprob": -0.4, "rank": 1}, "8": {"logprob": -1.5, "rank": 2}, "7": {"logprob": -4.0, "rank": 6}},
]
NON_FINITE = "finite and <= 0.*NaN.*serve it in float32 or bfloat16 rather than float16"


def wire(entries):
    """``entries`` as a client reads them: through JSON text (NaN as Python servers write it)."""
    return json.loads(json.dumps(entries))


def test_the_prompts_own_log_probabilities_are_read_from_vllms_entries():
    np.testing.assert_array_equal(prompt_token_logprobs(wire(VLLM_ENTRIES), PROMPT), [-1.9, -4.0])


def test_an_entry_without_the_prompts_own_token_is_refused_with_what_to_serve_instead():
    # A server that sends only the top-k: token 7 (rank 6) is not beside the top-2 of the last entry.
    top_k_only = wire(VLLM_ENTRIES)
    del top_k_only[2]["7"]
    with pytest.raises(
        ValueError,
        match=r"entry 2 holds tokens \['9', '8'\] but not the prompt's own token 7: the held-out NLL sums.*"
        r"Serve it with vLLM or hf-distill serve-teacher, or score it locally",
    ):
        prompt_token_logprobs(top_k_only, PROMPT)
    with pytest.raises(ValueError, match=r"entry 1 holds tokens None but not the prompt's own token 42"):
        prompt_token_logprobs([None, None, VLLM_ENTRIES[2]], PROMPT)


@pytest.mark.parametrize(
    "logprob, shown",
    [
        (NAN, "nan"),
        (INF, "inf"),
        (-INF, "-inf"),
        (None, r"None \(JSON null"),
        (0.5, "0.5"),
        ("-1.0", "'-1.0'"),
    ],
)
def test_a_prompt_tokens_log_probability_that_is_not_finite_and_at_most_zero_is_refused(logprob, shown):
    entries = wire(VLLM_ENTRIES)
    entries[2]["7"]["logprob"] = logprob
    with pytest.raises(
        ValueError, match=rf"log-probability {shown}.* for prompt token 7 at position 2; .*{NON_FINITE}"
    ):
        prompt_token_logprobs(entries, PROMPT)
    entries[2]["7"] = logprob  # a bare number instead of vLLM's Logprob mapping
    with pytest.raises(ValueError, match=NON_FINITE):
        prompt_token_logprobs(entries, PROMPT)


def test_a_nan_outside_the_kept_top_k_is_refused_not_sorted_away():
    # Rank-less entries (a bare {id: logprob} server) with more than k values: sorting with a NaN left the NaN
    # past [:k] and the top-2 wrong ([-0.1, -2.0] here, where it is [-0.1, -0.5]), all finite, silently.
    entry = {"1": -0.1, "2": -2.0, "3": NAN, "4": -0.5}
    with pytest.raises(
        ValueError, match=rf"log-probability nan for token 3 at prompt position 1; .*{NON_FINITE}"
    ):
        parse_prompt_logprobs(wire([None, entry]), 2)
    values, ids, _ = parse_prompt_logprobs([None, {**entry, "3": -3.0}], 2)
    assert ids[0].tolist() == [1, 4] and values[0].tolist() == pytest.approx([-0.1, -0.5])
    # The prompt's own token ranked beyond the top-k is not in the target, but a NaN there is a broken server.
    ranked = wire(VLLM_ENTRIES)
    ranked[2]["7"]["logprob"] = NAN
    with pytest.raises(
        ValueError, match=rf"log-probability nan for token 7 at prompt position 2; .*{NON_FINITE}"
    ):
        parse_prompt_logprobs(ranked, 2)
    ranked[2]["7"]["logprob"] = None
    with pytest.raises(ValueError, match=r"log-probability None \(JSON null: some servers write NaN"):
        parse_prompt_logprobs(ranked, 2)


def test_a_nan_in_the_generated_tokens_top_logprobs_is_refused():
    choice = wire({"logprobs": {"top_logprobs": [{"token_id:5": -0.3, "token_id:6": NAN}]}})
    last = last_position(choice, 2)
    with pytest.raises(
        ValueError, match=rf"log-probability nan for token 6 at prompt position 3; .*{NON_FINITE}"
    ):
        parse_prompt_logprobs(wire(VLLM_ENTRIES), 2, last)
    choice["logprobs"]["top_logprobs"][0]["token_id:6"] = -2.0
    values, ids, tail = parse_prompt_logprobs(wire(VLLM_ENTRIES), 2, last_position(choice, 2))
    assert ids[2].tolist() == [5, 6] and values[2].tolist() == pytest.approx([-0.3, -2.0])
    assert tail[2] == pytest.approx(math.log(1 - math.exp(-0.3) - math.exp(-2.0)), abs=1e-6)
