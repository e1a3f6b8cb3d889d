"""The loss terms the trainer sums for a batch, and how they are counted and logged.

- ``logits``: the KD and task terms on the logits (plain or fused, chosen once);
- ``features``: hidden-state, attention and feature-map matching, built from the arguments;
- ``hidden_states``, ``attention``, ``feature_maps``: the matchers those terms use;
- ``normalization``: token counts across accumulation steps and processes;
- ``loss_log``: the logged parts (``loss_task``, ``loss_kd``, ...);
- ``diagnostics``: what the teacher's target looks like beside the student (tail mass, top-k overlap, matched
  share), logged with the parts.
"""

from hf_distill.terms.feature_maps import FeatureMapMatcher
from hf_distill.terms.features import build_feature_terms
from hf_distill.terms.logits import ChunkedLogitTerms, LogitTerms, PlainLogitTerms, build_logit_terms
from hf_distill.terms.loss_log import LossPartsLog
from hf_distill.terms.normalization import Normalization

__all__ = [
    "ChunkedLogitTerms",
    "FeatureMapMatcher",
    "LogitTerms",
    "LossPartsLog",
    "Normalization",
    "PlainLogitTerms",
    "build_feature_terms",
    "build_logit_terms",
]
