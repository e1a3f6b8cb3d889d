"""Independent NumPy references of the cross-vocabulary losses, shared by their tests."""

from __future__ import annotations

import numpy as np


def padded_sorted(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both vectors sorted decreasingly, the shorter zero-padded to the longer's length."""
    a, b = np.sort(p)[::-1], np.sort(q)[::-1]
    n = max(len(a), len(b))
    return np.pad(a, (0, n - len(a))), np.pad(b, (0, n - len(b)))


def reference_uld(p_s: np.ndarray, p_t: np.ndarray) -> float:
    """Boizard et al.: both vectors sorted decreasingly, the shorter zero-padded, L1 distance."""
    a, b = padded_sorted(p_t, p_s)
    return float(np.abs(a - b).sum())


def softmax(x: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.exp((x - x.max()) / temperature)
    return z / z.sum()
