"""The data check printed before training: how the teacher's tokenizer sees the training text.

Two cheap numbers say whether a run can work at all: the share of sub-tokens that are the unknown token (24%
of the sub-tokens of a non-Latin-script corpus under the default English uncased teacher, whose normaliser
also strips diacritics: teacher and student then learn from ``[UNK]`` where the words are) and the share of
examples longer than ``max_length`` (cut, so their ends are never seen). For NER it also counts the words
that get no sub-token at all (a whitespace token such as U+3000), which are neither trained nor scored.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from accelerate import PartialState

from hf_distill.recipes.data_common import notice

logger = logging.getLogger(__name__)

# Above these shares the line becomes a warning. 5% unknown sub-tokens is far above what a tokenizer shows
# on text of its own language (well under 1%); a tenth of the examples cut means a tenth of the data is seen
# only in part.
UNK_WARNING_SHARE = 0.05
TRUNCATED_WARNING_SHARE = 0.10
# The check reads the first training rows only: the shares settle long before, and it runs before training.
SAMPLE_ROWS = 2000


@dataclass(frozen=True)
class DataCheck:
    """What the check counted over ``examples`` training rows. ``unknown`` is None for a tokenizer without
    an unknown token (byte-level BPE), ``truncated`` None where nothing is cut (code blocks), ``empty_words``
    and ``words`` None unless the rows are pre-split words (NER)."""

    examples: int
    subtokens: int
    unknown: int | None
    truncated: int | None
    max_length: int
    unk_token: str | None = None
    empty_words: int | None = None
    words: int | None = None

    @property
    def unk_share(self) -> float | None:
        return None if self.unknown is None else self.unknown / max(self.subtokens, 1)

    @property
    def truncated_share(self) -> float | None:
        return None if self.truncated is None else self.truncated / max(self.examples, 1)

    def line(self) -> str:
        parts = [
            f"no unknown token (byte-level vocabulary) in {self.subtokens:,} sub-tokens"
            if self.unknown is None
            else f"{self.unk_token} {self.unk_share:.1%} of {self.subtokens:,} sub-tokens"
        ]
        if self.truncated is not None:
            parts.append(
                f"{self.truncated_share:.1%} of examples longer than max_length={self.max_length} (cut)"
            )
        if self.empty_words:
            parts.append(
                f"{self.empty_words:,} of {self.words:,} words have no sub-token (not trained or scored)"
            )
        return f"data check (teacher's tokenizer, {self.examples:,} training examples): {'; '.join(parts)}."

    def warnings(self) -> list[str]:
        found = []
        if self.unk_share is not None and self.unk_share > UNK_WARNING_SHARE:
            found.append(
                f"{self.unk_share:.1%} of the training sub-tokens are {self.unk_token} under the teacher's "
                "tokenizer: its vocabulary does not cover this text (another script, or accents that an uncased "
                "normaliser strips), so teacher and student see unknown tokens where the words are. Use a "
                "teacher whose tokenizer covers the language (a multilingual or cased checkpoint)."
            )
        if self.truncated_share is not None and self.truncated_share > TRUNCATED_WARNING_SHARE:
            found.append(
                f"{self.truncated_share:.1%} of the training examples are longer than max_length="
                f"{self.max_length} tokens and are cut, so their ends are never seen; raise --max_length "
                "(time and memory grow with it) if the ends matter."
            )
        return found


def check_data(
    rows: Sequence[Any], tokenizer: Any, max_length: int, *, words: bool = False, truncates: bool = True
) -> DataCheck:
    """Tokenizes the first :data:`SAMPLE_ROWS` of ``rows`` (texts, or lists of words with ``words=True``)
    without truncation and counts unknown sub-tokens (special tokens other than the unknown one left out),
    rows longer than ``max_length`` (when ``truncates``) and words without a sub-token."""
    sample = list(rows[:SAMPLE_ROWS])
    encoding = tokenizer(sample, is_split_into_words=words, truncation=False, verbose=False)
    unk_id = tokenizer.unk_token_id
    special = set(tokenizer.all_special_ids) - {unk_id}
    ids = [[t for t in row if t not in special] for row in encoding["input_ids"]]
    empty_words = n_words = None
    if words:
        n_words = sum(len(row) for row in sample)
        seen = sum(len({w for w in encoding.word_ids(i) if w is not None}) for i in range(len(sample)))
        empty_words = n_words - seen
    return DataCheck(
        examples=len(sample),
        subtokens=sum(len(row) for row in ids),
        unknown=None if unk_id is None else sum(t == unk_id for row in ids for t in row),
        truncated=sum(len(row) > max_length for row in encoding["input_ids"]) if truncates else None,
        max_length=max_length,
        unk_token=tokenizer.unk_token if unk_id is not None else None,
        empty_words=empty_words,
        words=n_words,
    )


def report_data_check(check: DataCheck) -> DataCheck:
    """Prints the check's line and logs its warnings, once per machine; returns it."""
    notice(check.line())
    if PartialState().is_local_main_process:
        for warning in check.warnings():
            logger.warning(warning)
    return check
