"""The teacher's outputs kept on disk or in a dataset, so training never loads the teacher: building the cache
columns (``build``), the compact top-k columns (``compact``) and their codec (``codec``), sharded files with a
manifest (``shards``), writing a cache from a model (``writer``), and a cache on the Hub: where a cache lives
(``remote``: a folder or a dataset repository) and publishing one (``push``); other tools' logit datasets
read and written (``interchange``: the common log-probability form; ``axolotl``, ``distillkit``).
``TeacherColumnsCollator`` (``collator``) batches a cache's columns (``TeacherCacheCollator`` is its old name)."""

from hf_distill.cache.axolotl import from_axolotl, to_axolotl
from hf_distill.cache.build import cache_teacher_outputs
from hf_distill.cache.codec import TopkCodec
from hf_distill.cache.collator import TeacherCacheCollator, TeacherColumnsCollator
from hf_distill.cache.distillkit import from_distillkit, to_distillkit
from hf_distill.cache.push import push_teacher_cache
from hf_distill.cache.shards import load_teacher_cache
from hf_distill.cache.writer import write_teacher_cache

__all__ = [
    "TeacherCacheCollator",
    "TeacherColumnsCollator",
    "TopkCodec",
    "cache_teacher_outputs",
    "from_axolotl",
    "from_distillkit",
    "load_teacher_cache",
    "push_teacher_cache",
    "to_axolotl",
    "to_distillkit",
    "write_teacher_cache",
]
