"""Bits per byte and perplexity of a language model from per-text sums, as an ``evaluate`` module.

Loaded offline with ``evaluate.load(path_to_this_folder)`` (see ``hf_distill.training.metrics.load_metric``). The
model is run elsewhere (``hf_distill.training.metrics.text_nll``); each text brings the summed negative log-likelihood
(nats) of the tokens the model predicted, their number and the UTF-8 bytes they cover. Totals are summed
before dividing, so every token (every byte) weighs the same:

    bits per byte = sum(nll) / sum(bytes) / ln 2        perplexity = exp(sum(nll) / sum(tokens))

Bits per byte compares models with different tokenizers; perplexity only models sharing one.
"""

import datasets
import evaluate

from hf_distill.training.metrics import corpus_bits_per_byte, corpus_perplexity

_DESCRIPTION = "Bits per byte and perplexity from per-text NLL sums (nats), token counts and byte counts."
_KWARGS = """
Args:
    nll (list of float): summed negative log-likelihood (natural log) of each text's predicted tokens.
    tokens (list of int): number of predicted tokens of each text.
    bytes (list of int): UTF-8 bytes those tokens cover.
Returns:
    bits_per_byte (float), perplexity (float), tokens (int), bytes (int).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class BitsPerByte(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {
                    "nll": datasets.Value("float64"),
                    "tokens": datasets.Value("int64"),
                    "bytes": datasets.Value("int64"),
                }
            ),
        )

    def _compute(self, nll, tokens, bytes):  # noqa: A002 - the input's name, as evaluate passes it
        return {
            "bits_per_byte": float(corpus_bits_per_byte(nll, bytes)),
            "perplexity": float(corpus_perplexity(nll, tokens)),
            "tokens": int(sum(tokens)),
            "bytes": int(sum(bytes)),
        }
