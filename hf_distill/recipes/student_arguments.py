"""The recipes' student arguments: which students to build (:data:`STUDENT_INITS`), from which teacher layers,
under which seeds, and how the no-KD baseline each is compared with is trained.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from hf_distill.students.importance import check_importance_method

STUDENT_INITS = ("teacher_layers", "config", "gpt2", "pretrained", "cnn")


@dataclass
class StudentArguments:
    """Which students to build; each is distilled and, unless turned off, also trained without the teacher."""

    _argument_group_name = "recipe: students"

    student_init: list[str] = field(
        default_factory=lambda: ["teacher_layers"],
        metadata={
            "help": f"One or more of {STUDENT_INITS}: teacher layers (DistilBERT-style), a random model from "
            "the teacher's config with student_config_overrides, a GPT-2 over the teacher's vocabulary "
            "(causal LM), student_model_name_or_path, or (vision) the task's small plain CNN."
        },
    )
    student_num_layers: int = field(default=3, metadata={"help": "Layers of the student."})
    student_layer_strategy: str = field(
        default="uniform",
        metadata={
            "help": "Which teacher layers to keep: uniform, every_other, first, last, or importance (highest "
            "importance on the first training batches, measured as --student_importance_method says)."
        },
    )
    student_layers: list[int] | None = field(
        default=None,
        metadata={
            "help": "The teacher layers the teacher_layers student keeps, by index (e.g. the winner of `hf-distill "
            "budget`, as its report names them); replaces --student_layer_strategy, and --student_num_layers "
            "must equal their count."
        },
    )
    student_importance_method: str = field(
        default="block_influence",
        metadata={
            "help": "How --student_layer_strategy importance measures a layer: block_influence (1 - cosine of "
            "its input and output) or skip_loss (the task loss increase when it is skipped)."
        },
    )
    student_config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "JSON object of config changes for 'config' and 'gpt2' students, e.g. "
            '\'{"hidden_size": 256, "intermediate_size": 1024}\' (gpt2: n_embd, n_head, n_positions).'
        },
    )
    student_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Checkpoint of a 'pretrained' student (same vocabulary and labels)."}
    )
    run_baseline: bool = field(
        default=True, metadata={"help": "Also train each student without distillation, as a baseline."}
    )
    baseline_steps: str = field(
        default="match",
        metadata={
            "help": "Optimizer steps of the no-KD baseline: 'match' (as many as the distilled student, which "
            "with a transfer set sees more rows per epoch: the baseline repeats the labeled rows) or 'epochs' "
            "(the same num_train_epochs over the labeled rows)."
        },
    )
    baseline_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Learning rate of the no-KD baseline (default: learning_rate). Tune it on validation data "
            "as the distilled student's is tuned (benchmarks/sweep_sentiment.py --baseline_lrs): a baseline held "
            "at the distilled student's learning rate can flatter distillation."
        },
    )
    seeds: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Train every student and its baseline once per seed, e.g. --seeds 1,2,3 (a YAML list in a "
            "config): the teacher is fine-tuned once; the report gives each model's mean and 95%% interval and "
            "the paired difference KD - no-KD with its interval. Default: the one run of --seed."
        },
    )
    teacher_outputs_once: bool = field(
        default=True,
        metadata={
            "help": "With several seeds, run the teacher once over the distilled student's training rows and "
            "train every seed from its saved logits (classification and NER, plain KD from logits; the teacher "
            "is frozen in eval mode, so its outputs are the same every seed). Off: the teacher runs live in "
            "every seed's training."
        },
    )
    student_tokenizer: str | None = field(
        default=None,
        metadata={
            "help": "codegen: also train a GPT-2 student with this tokenizer (an offline alias such as "
            "'gpt2-tokenizer', a Hub id or a folder), distilled across tokenizers from a cross-tokenizer cache "
            "of the teacher with student_tokenizer_loss, and without KD; every model gets bits per byte."
        },
    )
    student_tokenizer_loss: str = field(
        default="aligned",
        metadata={"help": "The cross-tokenizer loss of that student: 'aligned' or 'uld'."},
    )

    def check_student_layers(self) -> None:
        """Refuses ``student_layers`` that another flag contradicts, or that no student of the run can keep."""
        layers = self.student_layers
        if not layers or len(set(layers)) != len(layers) or list(layers) != sorted(layers) or min(layers) < 0:
            raise ValueError(
                f"student_layers={layers}: give teacher layer indices, each once, in increasing order (e.g. "
                "0 2 5), or leave the flag out to choose them by --student_layer_strategy."
            )
        if len(layers) != self.student_num_layers:
            raise ValueError(
                f"student_layers names {len(layers)} layers but student_num_layers is {self.student_num_layers}: "
                f"set student_num_layers {len(layers)} (the student's size, in its name and report) or change "
                "the list."
            )
        if self.student_layer_strategy != "uniform":
            raise ValueError(
                f"student_layers and student_layer_strategy={self.student_layer_strategy!r} both say which "
                "teacher layers to keep: give one of them."
            )
        if "teacher_layers" not in self.student_init:
            raise ValueError(
                f"student_layers is for the teacher_layers student, and student_init is {self.student_init}: "
                "add teacher_layers or drop the flag."
            )

    def __post_init__(self):
        if isinstance(self.student_init, str):
            self.student_init = [s.strip() for s in self.student_init.split(",") if s.strip()]
        self.seeds = parse_seeds(self.seeds)
        unknown = [s for s in self.student_init if s not in STUDENT_INITS]
        if unknown or not self.student_init:
            raise ValueError(
                f"student_init {self.student_init} holds {unknown or 'nothing'}; each entry must be one of "
                f"{STUDENT_INITS} (how the student is built)."
            )
        if "pretrained" in self.student_init and not self.student_model_name_or_path:
            raise ValueError(
                "student_init 'pretrained' needs student_model_name_or_path: the checkpoint to start from."
            )
        if self.student_config_overrides is not None:
            self.config_overrides()
        if self.student_layers is not None:
            self.check_student_layers()
        check_importance_method(
            self.student_importance_method,
            "student_importance_method",
            "how --student_layer_strategy importance scores a teacher layer",
        )
        if self.student_tokenizer_loss not in ("aligned", "uld"):
            raise ValueError(
                f"student_tokenizer_loss={self.student_tokenizer_loss!r}: choose 'aligned' (shared tokens where "
                "the prefixes match, ULD elsewhere) or 'uld'."
            )
        rate = self.baseline_learning_rate
        if rate is not None and not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
            raise ValueError(
                f"baseline_learning_rate={rate!r} must be a positive number (the no-KD baseline's learning rate, "
                "e.g. 2e-4), or leave it out to train the baseline at learning_rate."
            )
        if self.baseline_steps not in ("match", "epochs"):
            raise ValueError(
                f"baseline_steps={self.baseline_steps!r}: choose 'match' (the baseline gets as many optimizer steps "
                "as the distilled student) or 'epochs' (the same epochs over the labeled rows)."
            )

    def config_overrides(self) -> dict[str, Any]:
        if self.student_config_overrides is None:
            return {}
        try:
            overrides = json.loads(self.student_config_overrides)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"student_config_overrides {self.student_config_overrides!r} is not valid JSON ({error}); write "
                "an object such as '{\"hidden_size\": 256}'."
            ) from error
        if not isinstance(overrides, dict):
            raise ValueError(
                f"student_config_overrides must be a JSON object of config fields, got {type(overrides).__name__}."
            )
        return overrides


def parse_seeds(seeds: Any) -> list[int]:
    """``--seeds`` as a list of distinct integers: "1,2,3", ["1", "2", "3"] (``--seeds 1 2 3``) or [1, 2, 3]."""
    items = seeds.split(",") if isinstance(seeds, str) else [p for s in seeds for p in str(s).split(",")]
    items = [item.strip() for item in items if item.strip()]
    try:
        parsed = [int(item) for item in items]
    except ValueError:
        raise ValueError(
            f"seeds {seeds!r} holds something that is not an integer; pass whole numbers, e.g. --seeds 1,2,3."
        ) from None
    if len(set(parsed)) != len(parsed):
        raise ValueError(
            f"seeds {parsed} repeats a seed: a repeated seed trains the same student twice and would count it "
            "twice in the interval; pass distinct seeds, e.g. --seeds 1,2,3."
        )
    return parsed
