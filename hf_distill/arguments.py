"""``DistillationTrainingArguments``: ``TrainingArguments`` plus the distillation knobs.

Every field is a dataclass field with help text, so ``HfArgumentParser`` exposes it on the command line
(``--temperature 2.0 --alpha 0.7``) and in YAML/JSON config files for free.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field

from transformers import TrainingArguments

from hf_distill.losses.divergences import PER_POSITION_LOSSES
from hf_distill.losses.fused.chunked import DEFAULT_CHUNK_SIZE
from hf_distill.losses.fused.lm_head import KD_LOSS_IMPLEMENTATIONS

HIDDEN_STATE_LOSSES = ("mse", "cosine")
# The weights of the feature terms: they match the teacher's insides position by position.
FEATURE_WEIGHTS = ("hidden_state_weight", "attention_weight", "value_relation_weight", "feature_map_weight")
CROSS_TOKENIZER_LOSSES = ("uld", "aligned")
# TrainingArguments' own float fields that must be finite too; the others (max_grad_norm, ...) keep their
# transformers semantics.
_FINITE_TRAINING_FIELDS = ("learning_rate",)
_TRAINING_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainingArguments))


def _is_float_value(value: object) -> bool:
    # ints are always finite (and math.isfinite overflows on huge ones); bool is an int.
    return isinstance(value, numbers.Real) and not isinstance(value, int)


def parse_layer_map(spec: str) -> list[tuple[int, int]] | None:
    """Parses ``"uniform"`` (returns None: resolved later from the models' depths) or ``"s:t,s:t,..."``.

    Indices are into ``output_hidden_states``: 0 is the embedding output, ``i`` the output of layer ``i``.
    """
    spec = spec.strip()
    if spec == "uniform":
        return None
    pairs: list[tuple[int, int]] = []
    for item in spec.split(","):
        parts = item.strip().split(":")
        if len(parts) != 2 or not all(p.strip().lstrip("-").isdigit() for p in parts):
            raise ValueError(
                f"hidden_layer_map entry {item.strip()!r} is not of the form 'student:teacher'; write the map "
                "as comma-separated integer pairs such as '0:0,1:2,2:4,3:6', or use 'uniform'."
            )
        student_index, teacher_index = (int(p) for p in parts)
        if student_index < 0 or teacher_index < 0:
            raise ValueError(
                f"hidden_layer_map entry {item.strip()!r} has a negative index; indices count hidden states "
                "from 0 (the embeddings) upwards."
            )
        pairs.append((student_index, teacher_index))
    students = [s for s, _ in pairs]
    if len(set(students)) != len(students):
        raise ValueError(
            f"hidden_layer_map {spec!r} names a student layer twice; give each student layer one teacher layer."
        )
    return pairs


def parse_feature_layers(spec: str) -> list[tuple[str, str]]:
    """``"student_layer:teacher_layer,..."`` -> ``[(student_layer, teacher_layer), ...]``; ``""`` -> ``[]``."""
    pairs: list[tuple[str, str]] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        names = [name.strip() for name in item.split(":")]
        if len(names) != 2 or not all(names):
            raise ValueError(
                f"feature_layers entry {item!r} is not of the form 'student_layer:teacher_layer'; write module "
                "names as model.named_modules() prints them, e.g. 'features.3:resnet.encoder.stages.1'."
            )
        pairs.append((names[0], names[1]))
    students = [s for s, _ in pairs]
    if len(set(students)) != len(students):
        raise ValueError(
            f"feature_layers {spec!r} names a student layer twice; give each student layer one teacher layer."
        )
    return pairs


@dataclass
class DistillationTrainingArguments(TrainingArguments):
    """Arguments for :class:`~hf_distill.DistillationTrainer`.

    The training objective is
    ``loss = (1 - alpha) * task_loss + alpha * distillation_loss + hidden_state_weight * hidden_state_loss
    + attention_weight * attention_loss + value_relation_weight * value_relation_loss
    + feature_map_weight * feature_map_loss)``,
    where KL-family distillation losses carry the ``temperature**2`` factor of Hinton et al. (2015).
    """

    temperature: float = field(
        default=2.0,
        metadata={
            "help": "Softmax temperature T > 0 that softens teacher and student distributions for the "
            "distillation loss (not the sampling temperature of generation). KL-family losses are scaled by T^2."
        },
    )
    alpha: float = field(
        default=0.5,
        metadata={
            "help": "Weight of the distillation term in [0, 1]; the task (hard-label) term gets 1 - alpha. "
            "alpha=1 trains on the teacher alone and needs no labels."
        },
    )
    distillation_loss: str = field(
        default="forward_kl",
        metadata={"help": f"Distillation loss by name, one of {sorted(PER_POSITION_LOSSES)}."},
    )
    jsd_beta: float = field(
        default=0.5,
        metadata={"help": "Interpolation of the generalised JSD in [0, 1]: 0 is forward KL, 1 reverse KL."},
    )
    skew_lambda: float = field(
        default=0.1,
        metadata={"help": "Mixing weight of skew KL losses in [0, 1): 0 is the plain (forward/reverse) KL."},
    )
    hidden_state_weight: float = field(
        default=0.0,
        metadata={"help": "Weight (>= 0) of hidden-state matching between mapped layers; 0 turns it off."},
    )
    hidden_state_loss: str = field(
        default="mse",
        metadata={"help": f"Hidden-state matching loss, one of {HIDDEN_STATE_LOSSES}."},
    )
    hidden_layer_map: str = field(
        default="uniform",
        metadata={
            "help": "Which student hidden state matches which teacher hidden state: 'uniform' spreads the "
            "student's layers evenly over the teacher's, or explicit 'student:teacher' pairs such as "
            "'0:0,1:2,2:4' (0 is the embedding output). Projections are learned when widths differ."
        },
    )
    attention_weight: float = field(
        default=0.0,
        metadata={"help": "Weight (>= 0) of attention-map matching over the same layer map; 0 turns it off."},
    )
    value_relation_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight (>= 0) of MiniLM value-relation matching over the same layer map (needs eager "
            "attention and BERT- or Llama-like value projections); 0 turns it off."
        },
    )
    value_relation_heads: int = field(
        default=1,
        metadata={
            "help": "Number of relation heads the values are split into for value-relation matching; it must "
            "divide the student's and the teacher's hidden sizes."
        },
    )
    feature_map_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight (>= 0) of feature-map matching (FitNets) between the layers of feature_layers, for "
            "any torch model (CNNs, ResNet, ViT); 0 turns it off."
        },
    )
    feature_layers: str = field(
        default="",
        metadata={
            "help": "Which student layer's output matches which teacher layer's, as 'student:teacher' pairs of "
            "module names from model.named_modules(), e.g. 'features.3:resnet.encoder.stages.1'. A 1x1 "
            "convolution is learned where channels differ; maps are average-pooled to the smaller size."
        },
    )
    teacher_dtype: str | None = field(
        default=None,
        metadata={
            "help": "Cast the teacher to this dtype (float32, bfloat16, float16) for its forward pass; "
            "None keeps its own dtype."
        },
    )
    check_teacher_finite: bool = field(
        default=True,
        metadata={
            "help": "Raise, with the global step, when the distillation loss is not finite, naming the side at "
            "fault (NaN / +inf teacher logits, or a diverged student). -inf teacher entries (a masked "
            "vocabulary) are allowed: the losses give them probability 0."
        },
    )
    kd_loss_implementation: str = field(
        default="auto",
        metadata={
            "help": f"How a causal LM's loss is computed, one of {KD_LOSS_IMPLEMENTATIONS}: 'plain' builds the "
            "full (batch, tokens, vocab) logits; 'fused' / 'chunked' compute the loss chunk by chunk from the "
            "last hidden states and the LM head, never holding the full logits (same value and gradients, "
            "much less memory); 'auto' uses 'fused' for vocabularies of 16384 tokens and more."
        },
    )
    kd_chunk_size: int = field(
        default=DEFAULT_CHUNK_SIZE,
        metadata={"help": "Token positions per chunk of the fused / chunked loss; memory grows with it."},
    )
    cross_tokenizer_loss: str | None = field(
        default=None,
        metadata={
            "help": "Distil from a teacher with another tokenizer (processing_class = the student's, "
            "teacher_processing_class = the teacher's): 'aligned' compares the tokens both vocabularies share "
            "where the two prefixes end at the same character and uses ULD for the rest; 'uld' compares sorted "
            "probabilities everywhere. None: both must share one vocabulary (see hf_distill.teachers.cross_tokenizer)."
        },
    )
    cross_tokenizer_top_k: int | None = field(
        default=None,
        metadata={
            "help": "With cross_tokenizer_loss: compare only each side's k largest sorted probabilities one by one "
            "and the rest as one bucket (torch.topk instead of sorting whole vocabularies). The loss is then a "
            "lower bound of the exact one, short of it by at most twice the smaller of the two rest masses, and "
            "exact when k covers either vocabulary. None: the exact loss (see hf_distill.losses.cross_vocabulary)."
        },
    )

    teacher_server_top_k: int = field(
        default=20,
        metadata={
            "help": "Served teacher (teacher_model='http://HOST:PORT/v1'): log-probabilities asked per position; "
            "the rest of the vocabulary is one tail bucket. The server must allow as many (vLLM: --max-logprobs, "
            "20 by default)."
        },
    )
    teacher_server_timeout: float = field(
        default=60.0,
        metadata={"help": "Served teacher: seconds each request may take before it is retried."},
    )
    teacher_server_retries: int = field(
        default=3,
        metadata={"help": "Served teacher: attempts per request (with backoff) before training stops."},
    )
    teacher_server_prefetch: int = field(
        default=2,
        metadata={
            "help": "Served teacher: batches requested ahead of the current step (0: ask when needed)."
        },
    )
    teacher_route_column: str | None = field(
        default=None,
        metadata={
            "help": "Teacher routes: the dataset column naming, per row, which of the trainer's `teachers` "
            "(DistillationTrainer(teachers={name: model, folder, Hub id, 'http://HOST:PORT/v1' or a teacher "
            "source})) labels it; each batch is split by route and each row gets its own teacher's target "
            "(hf_distill.teachers.routed). Unset: one teacher (teacher_model)."
        },
    )
    teacher_diagnostics: bool = field(
        default=True,
        metadata={
            "help": "Log at each logged step, beside loss_kd, the teacher's tail mass outside its top-k "
            "(teacher_tail_mass), the share of its top-k ids in the student's top-k (topk_overlap) and, "
            "cross-tokenizer, the share of positions whose prefixes end together (matched_share); "
            "computed under no_grad at the KD positions of the batches of the steps Trainer logs "
            "(logging_steps), and in evaluation (hf_distill.terms.diagnostics)."
        },
    )
    teacher_diagnostics_top_k: int = field(
        default=20,
        metadata={
            "help": "k of the diagnostics for a teacher of full logits (a top-k cache or served teacher keeps "
            "its own k): tail mass = 1 - the top-k probability at the training temperature."
        },
    )

    def __post_init__(self):
        # Our checks run first: a bad distillation knob must fail before TrainingArguments touches devices.
        # Finiteness goes before every range check, a subclass's included: `not x > 0` lets inf through.
        self._check_finite_fields()
        self.check_fields()
        super().__post_init__()

    def check_fields(self) -> None:
        """The range and consistency checks of the distillation knobs, run by ``__post_init__`` after the
        finiteness check and before ``TrainingArguments`` sets anything up. A subclass (a mode's arguments)
        checks its own knobs here, then calls ``super().check_fields()``.

        Raises:
            ValueError: naming the knob, what is wrong and how to fix it.
        """
        self._check_distillation_fields()

    def _check_finite_fields(self) -> None:
        """Refuses NaN and +-inf in every float field added on top of ``TrainingArguments`` (this class's and
        any subclass's, lists and tuples of floats included) and in ``learning_rate``."""
        for f in dataclasses.fields(self):
            if f.name in _TRAINING_FIELDS and f.name not in _FINITE_TRAINING_FIELDS:
                continue
            value = getattr(self, f.name)
            items = value if isinstance(value, (list, tuple)) else (value,)
            if any(_is_float_value(item) and not math.isfinite(item) for item in items):
                default = (
                    "" if f.default in (dataclasses.MISSING, None) else f" (the default is {f.default!r})"
                )
                what = "every entry" if isinstance(value, (list, tuple)) else "a number"
                raise ValueError(
                    f"{f.name} must be finite, got {value!r}: NaN or infinity in a training knob reaches the "
                    "loss and the updates, and training runs on to save a model of NaN weights. Give "
                    f"{what} that is finite{default}, not nan or inf."
                )

    def _check_distillation_fields(self) -> None:
        if not self.temperature > 0:
            raise ValueError(
                f"temperature must be > 0, got {self.temperature}: it divides the logits before the softmax. "
                "Use 1.0 for no softening; 2.0-4.0 is common for distillation."
            )
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(
                f"alpha must be in [0, 1], got {self.alpha}: it weighs the distillation term and 1 - alpha "
                "the task term. Use 0.5 to weigh them equally, 1.0 for distillation only."
            )
        if self.distillation_loss not in PER_POSITION_LOSSES:
            raise ValueError(
                f"distillation_loss {self.distillation_loss!r} is unknown; choose one of "
                f"{sorted(PER_POSITION_LOSSES)} (forward_kl is the classic Hinton et al. loss)."
            )
        if not 0.0 <= self.jsd_beta <= 1.0:
            raise ValueError(
                f"jsd_beta must be in [0, 1], got {self.jsd_beta}: it interpolates between forward KL (0) "
                "and reverse KL (1)."
            )
        if not 0.0 <= self.skew_lambda < 1.0:
            raise ValueError(
                f"skew_lambda must be in [0, 1), got {self.skew_lambda}: at 1 the skewed distribution "
                "equals the first one and the loss is identically 0."
            )
        for name in FEATURE_WEIGHTS:
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}; use 0 to turn that term off.")
        if self.value_relation_heads < 1:
            raise ValueError(
                f"value_relation_heads must be >= 1, got {self.value_relation_heads}: the values are split into "
                "that many relation heads. Use 1 for one relation over the whole width."
            )
        if self.hidden_state_loss not in HIDDEN_STATE_LOSSES:
            raise ValueError(
                f"hidden_state_loss {self.hidden_state_loss!r} is unknown; choose one of {HIDDEN_STATE_LOSSES}."
            )
        parse_layer_map(self.hidden_layer_map)
        if not parse_feature_layers(self.feature_layers) and self.feature_map_weight > 0:
            raise ValueError(
                f"feature_map_weight={self.feature_map_weight} but feature_layers is empty, so no layers are "
                "matched; name them as 'student_layer:teacher_layer' pairs (module names from "
                "model.named_modules()), or set feature_map_weight=0."
            )
        if self.kd_loss_implementation not in KD_LOSS_IMPLEMENTATIONS:
            raise ValueError(
                f"kd_loss_implementation {self.kd_loss_implementation!r} is unknown; choose one of "
                f"{KD_LOSS_IMPLEMENTATIONS} ('auto' picks the fused loss for vocabularies of 16384 tokens and more)."
            )
        if self.kd_chunk_size < 1:
            raise ValueError(
                f"kd_chunk_size must be >= 1 token positions, got {self.kd_chunk_size}; 128 is a good default."
            )
        self._check_cross_tokenizer()
        served = {
            "teacher_server_top_k": (self.teacher_server_top_k, 1),
            "teacher_server_retries": (self.teacher_server_retries, 1),
            "teacher_server_prefetch": (self.teacher_server_prefetch, 0),
            "teacher_diagnostics_top_k": (self.teacher_diagnostics_top_k, 1),
        }
        for name, (value, least) in served.items():
            if not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}.")
        if self.teacher_route_column is not None and not str(self.teacher_route_column).strip():
            raise ValueError(
                "teacher_route_column is empty; name the dataset column that holds each row's teacher, or leave "
                "it unset for one teacher."
            )
        if not self.teacher_server_timeout > 0:
            raise ValueError(
                f"teacher_server_timeout must be > 0 seconds, got {self.teacher_server_timeout}; 60 is a good default."
            )
        if self.teacher_dtype not in (None, "float32", "bfloat16", "float16"):
            raise ValueError(
                f"teacher_dtype {self.teacher_dtype!r} is unknown; use float32, bfloat16, float16 or leave it "
                "unset to keep the teacher's own dtype."
            )

    def _check_cross_tokenizer(self) -> None:
        top_k = self.cross_tokenizer_top_k
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(
                f"cross_tokenizer_top_k must be an integer >= 1 (how many of each side's largest probabilities "
                f"are compared one by one), or None for the exact loss; got {top_k!r}."
            )
        if self.cross_tokenizer_loss is None:
            if top_k is not None:
                raise ValueError(
                    f"cross_tokenizer_top_k={top_k} is set but cross_tokenizer_loss is not: it only shapes the "
                    "cross-tokenizer losses. Set cross_tokenizer_loss='aligned' or 'uld', or leave "
                    "cross_tokenizer_top_k unset."
                )
            return
        if self.cross_tokenizer_loss not in CROSS_TOKENIZER_LOSSES:
            raise ValueError(
                f"cross_tokenizer_loss {self.cross_tokenizer_loss!r} is unknown; choose one of "
                f"{CROSS_TOKENIZER_LOSSES}, or leave it unset when teacher and student share a tokenizer."
            )
        asked = list(self.feature_weights)
        if asked:
            raise ValueError(
                f"cross_tokenizer_loss is set, but {asked} > 0 match hidden states or attention position by "
                "position, and the two tokenizations have different positions; set them to 0."
            )
        if self.distillation_loss != "forward_kl":
            raise ValueError(
                f"distillation_loss={self.distillation_loss!r} compares two distributions over one vocabulary; "
                f"cross_tokenizer_loss={self.cross_tokenizer_loss!r} brings its own (a forward KL on shared tokens, "
                "ULD on the rest). Leave distillation_loss at 'forward_kl'."
            )

    @property
    def feature_weights(self) -> dict[str, float]:
        """The feature-term weights that are on (> 0), by name."""
        return {name: getattr(self, name) for name in FEATURE_WEIGHTS if getattr(self, name) > 0}

    @property
    def matches_attention(self) -> bool:
        """Whether attention-map or value-relation matching is on; both read the models' attention layers."""
        return self.attention_weight > 0 or self.value_relation_weight > 0

    @property
    def kd_loss_kwargs(self) -> dict:
        """The keyword arguments of :func:`hf_distill.losses.divergences.distillation_loss` that these arguments choose."""
        return {
            "loss": self.distillation_loss,
            "temperature": self.temperature,
            "beta": self.jsd_beta,
            "skew_lambda": self.skew_lambda,
        }

    @property
    def feature_layer_pairs(self) -> list[tuple[str, str]]:
        return parse_feature_layers(self.feature_layers)

    @property
    def layer_map_pairs(self) -> list[tuple[int, int]] | None:
        return parse_layer_map(self.hidden_layer_map)
