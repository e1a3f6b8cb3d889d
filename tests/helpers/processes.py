"""What the tests that start processes share, so that they can run side by side (``make test`` runs the suite
on every core with pytest-xdist, and other checkouts may run theirs on the same machine)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nobody listens on now, for a launcher's rendezvous: two runs started at once (other tests, other
    checkouts) would otherwise meet on torch.distributed's default 29500."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
