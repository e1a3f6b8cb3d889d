"""Which data a recipe trains and scores on (:class:`DataArguments`): a Hub dataset or local files, the
shares of each split, the caps, the transfer set, and the checks that refuse a bad choice before loading."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hf_distill.recipes.data_common import check_fractions
from hf_distill.recipes.ner_transfer import TRANSFER_SOURCES, check_transfer_source

_FILE_HELP = (
    "sentiment: .csv/.tsv, .jsonl/.json or .parquet with a text and a label column; ner: a CoNLL file (tab- or "
    "space-separated, token and tag columns by position) or .jsonl/.json/.parquet with token and tag lists; "
    "codegen: a folder of source files (--source_glob) or .jsonl/.json/.parquet with a text column"
)


@dataclass
class DataArguments:
    """Where the task data comes from and how much of it to use."""

    _argument_group_name = "recipe: data"

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "A Hub dataset ('glue/sst2', 'conll2003'), or with --train_file the builder that reads the "
            "files ('csv', 'json', 'parquet'); None: the offline default, or --train_file."
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "The Hub dataset's config name."})
    train_file: str | None = field(
        default=None, metadata={"help": f"Your own training data instead of the default: {_FILE_HELP}."}
    )
    validation_file: str | None = field(
        default=None,
        metadata={
            "help": "Validation data in the format of train_file; without it, validation_size of the "
            "training rows are cut out with split_seed (and the cut is reported)."
        },
    )
    test_file: str | None = field(
        default=None,
        metadata={
            "help": "Test data in the format of train_file; without it, test_size is cut out of training."
        },
    )
    text_column: str | None = field(
        default=None,
        metadata={
            "help": "sentiment / codegen / a transfer file: the column holding the text (default: text, "
            "sentence, review or content; codegen: text, content or code; --transfer_file: text)."
        },
    )
    label_column: str | None = field(
        default=None,
        metadata={
            "help": "sentiment: the label column (default: label, labels or sentiment). Label names come "
            "from the data: a ClassLabel's names, else the sorted distinct values."
        },
    )
    token_column: str | None = field(
        default=None,
        metadata={
            "help": "ner: CoNLL: the token column's position (1 = first, the default; -1 = last); JSON: the "
            "column name (default tokens or words)."
        },
    )
    tag_column: str | None = field(
        default=None,
        metadata={
            "help": "ner: CoNLL: the BIO tag column's position (default -1, the last); JSON: the column name "
            "(default ner_tags, tags, ner or labels)."
        },
    )
    source_glob: str = field(
        default="**/*.py",
        metadata={"help": "codegen: which files of a train_file folder are read, one example per file."},
    )
    validation_size: float | None = field(
        default=None,
        metadata={
            "help": "Share of the rows held out as validation when there is no validation_file: cut out of "
            "train_file (or of the sentiment / ner offline default); default 0.1, 0: none."
        },
    )
    test_size: float | None = field(
        default=None,
        metadata={
            "help": "Share of the rows held out as test when there is no test_file, like validation_size; "
            "default 0.1 (ner 0.15)."
        },
    )
    max_length: int = field(default=64, metadata={"help": "Tokens per example (code: the block size)."})
    image_size: int = field(default=32, metadata={"help": "vision: images are resized to image_size^2."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Cap on training examples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Cap on validation examples."})
    max_test_samples: int | None = field(default=None, metadata={"help": "Cap on test examples."})
    max_files: int | None = field(default=None, metadata={"help": "Code: sample this many stdlib files."})
    transfer_file: str | None = field(
        default=None,
        metadata={
            "help": "sentiment / ner: a transfer set, text without labels (CSV/TSV, JSON Lines, Parquet, or "
            ".txt with one example per line; --text_column names the text; ner splits it into words) that the "
            "distilled student learns from through the teacher alone. Neither the teacher's fine-tune nor the "
            "baseline sees it."
        },
    )
    transfer_source: str | None = field(
        default=None,
        metadata={
            "help": "ner: a transfer set of offline English text, split into words: 'reviews' (Rotten Tomatoes "
            "snippets) or 'docstrings' (the Python standard library's); --transfer_samples caps it.",
            "choices": list(TRANSFER_SOURCES),
        },
    )
    transfer_samples: int | None = field(
        default=None,
        metadata={
            "help": "Cap on transfer rows; without --transfer_file (sentiment) the transfer set is the training "
            "rows past max_train_samples with their labels dropped (ner: sentences, codegen: blocks)."
        },
    )
    split_seed: int = field(default=42, metadata={"help": "Seed of the offline train/validation/test split."})

    def __post_init__(self):
        for name in (
            "max_train_samples",
            "max_eval_samples",
            "max_test_samples",
            "max_files",
            "transfer_samples",
        ):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name}={value} must be >= 1 (or unset to keep every example).")
        if self.max_length < 2:
            raise ValueError(f"max_length={self.max_length} must be >= 2 tokens.")
        shares = {
            n: getattr(self, n) for n in ("validation_size", "test_size") if getattr(self, n) is not None
        }
        check_fractions(**shares)
        check_transfer_source(self.transfer_source, self.transfer_file)
        # Checked here, before any model or tokenizer is loaded: a wrong path fails at once.
        for name in ("train_file", "validation_file", "test_file", "transfer_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).exists():
                raise FileNotFoundError(
                    f"{name} {path!r} does not exist: the data is read from it; check the path (--{name})."
                )
        if self.dataset_name is not None and Path(self.dataset_name).is_file():
            raise ValueError(
                f"dataset_name={self.dataset_name!r} is a file, but dataset_name takes a Hub dataset or a "
                f"builder name; pass the file as --train_file {self.dataset_name} (and --validation_file / "
                "--test_file for the other splits)."
            )
        if self.train_file is None and (self.validation_file or self.test_file):
            raise ValueError(
                "validation_file/test_file were given without train_file: there would be nothing to train on; "
                "pass train_file too."
            )
