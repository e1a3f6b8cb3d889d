"""The teacher's outputs kept on disk or in a dataset, so training never loads the teacher: building the cache
columns (``build``), the compact top-k columns (``compact``) and their codec (``codec``), sharded files with a
manifest (``shards``), writing a cache from a model (``writer``), and a cache on the Hub: where a cache lives
(``remote``: a folder or a dataset repository) and publishing one (``push``)."""

from hf_distill.cache.build import TeacherCacheCollator, cache_teacher_outputs
from hf_distill.cache.codec import TopkCodec
from hf_distill.cache.push import push_teacher_cache
from hf_distill.cache.shards import load_teacher_cache
from hf_distill.cache.writer import write_teacher_cache

__all__ = [
    "TeacherCacheCollator",
    "TopkCodec",
    "cache_teacher_outputs",
    "load_teacher_cache",
    "push_teacher_cache",
    "write_teacher_cache",
]
