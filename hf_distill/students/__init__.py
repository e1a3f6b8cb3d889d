"""Students built from teachers: fewer layers or a smaller config (``build``), the layers kept (``layer_choice``),
layers, heads and channels ranked by how much they matter (``importance``), fewer heads and MLP channels per
block (``width``), and a student moved to another tokenizer with embeddings taken from the teacher's
(``vocab_transfer``). ``blocks`` finds a model's transformer blocks; ``layout`` the heads and channels in them."""

from hf_distill.students.build import (
    count_parameters,
    gpt2_student_for,
    model_size_on_disk,
    student_from_config,
    student_from_teacher,
)
from hf_distill.students.importance import (
    channel_importance,
    head_importance,
    layer_importance,
    layers_by_importance,
)
from hf_distill.students.layer_choice import select_layers
from hf_distill.students.vocab_transfer import transfer_vocabulary
from hf_distill.students.width import prune_width

__all__ = [
    "channel_importance",
    "count_parameters",
    "gpt2_student_for",
    "head_importance",
    "layer_importance",
    "layers_by_importance",
    "model_size_on_disk",
    "prune_width",
    "select_layers",
    "student_from_config",
    "student_from_teacher",
    "transfer_vocabulary",
]
