"""`hf-distill cache-teacher` in which the process of rank 1 dies after writing its first batch of rows, as a
machine lost mid-way would (used by tests/test_cache_distributed.py under `accelerate launch`)."""

import os
import sys

from hf_distill import cli
from hf_distill.cache.shards import ShardWriter

write = ShardWriter.write


def write_then_die(self, *args, **kwargs):
    write(self, *args, **kwargs)
    os._exit(3)


if os.environ.get("RANK") == "1":
    ShardWriter.write = write_then_die

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
