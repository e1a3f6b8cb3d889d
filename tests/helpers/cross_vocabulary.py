"""Independent references of the cross-vocabulary losses, shared by their tests: NumPy ones for values, plain
torch ones (autograd through ``sort`` / ``topk``) for values and gradients."""

from __future__ import annotations

import numpy as np
import torch


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


def torch_reference_uld(z_s: torch.Tensor, log_p_t: torch.Tensor, temperature: float) -> torch.Tensor:
    """The ULD computation before teacher rows and NumPy sorts, in plain torch (autograd through topk)."""
    p_s = torch.softmax(z_s / temperature, dim=-1)
    a = log_p_t.exp().sort(dim=-1, descending=True).values
    length = min(a.shape[-1], p_s.shape[-1])
    b = p_s.topk(length, dim=-1).values
    a = a[..., :length]
    return (a - b).abs().sum(-1) + ((1 - a.sum(-1)) - (1 - b.sum(-1))).abs()


def torch_reference_aligned(z_s: torch.Tensor, z_t: torch.Tensor, mapping: list[int], temperature: float):
    """A matched position written out in torch (for gradients): the buckets' T^2 KL, plus ULD of the rest
    (the teacher's unshared probabilities against the student's outside the twins, zero-padded)."""
    log_s = torch.log_softmax(z_s / temperature, dim=-1)
    p_t = torch.softmax(z_t / temperature, dim=-1)
    shared = [i for i, j in enumerate(mapping) if j >= 0]
    twins = [mapping[i] for i in shared]
    others_t = [i for i, j in enumerate(mapping) if j < 0]
    others_s = [j for j in range(z_s.shape[-1]) if j not in set(twins)]
    q_t = torch.cat([p_t[..., shared], p_t[..., others_t].sum(-1, keepdim=True)], dim=-1)
    log_q_s = torch.cat([log_s[..., twins], torch.logsumexp(log_s[..., others_s], -1, keepdim=True)], dim=-1)
    kl = torch.where(q_t > 0, q_t * (q_t.log() - log_q_s), 0.0).sum(
        -1
    )  # 0 log 0 = 0: no rest when all shared
    rest_t, rest_s = p_t[..., others_t], log_s[..., others_s].exp()
    width = max(rest_t.shape[-1], rest_s.shape[-1])
    a = torch.nn.functional.pad(rest_t.sort(-1, descending=True).values, (0, width - rest_t.shape[-1]))
    b = torch.nn.functional.pad(rest_s.sort(-1, descending=True).values, (0, width - rest_s.shape[-1]))
    return temperature**2 * kl + (a - b).abs().sum(-1)
