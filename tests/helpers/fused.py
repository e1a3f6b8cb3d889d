"""A small fused-loss problem (student hidden states and head, teacher hidden states and head, uneven labels) and
the plain loss it must equal, for the fused / chunked loss tests."""

from __future__ import annotations

import torch

from hf_distill.losses.divergences import distillation_loss, task_cross_entropy

B, T, H, H_T, V = 2, 7, 6, 5, 40


def make_problem(seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, H, generator=g, dtype=dtype).requires_grad_()
    weight = torch.randn(V, H, generator=g, dtype=dtype).requires_grad_()
    bias = torch.randn(V, generator=g, dtype=dtype).requires_grad_()
    teacher_hidden = torch.randn(B, T, H_T, generator=g, dtype=dtype)
    teacher_weight = torch.randn(V, H_T, generator=g, dtype=dtype)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[0, :3] = -100  # uneven masking: padding and prompt tokens
    labels[1, -1] = -100
    return hidden, weight, bias, teacher_hidden, teacher_weight, labels


def plain_loss(hidden, weight, bias, teacher_logits, labels, name, alpha, temperature, **kw):
    logits = hidden @ weight.T + bias
    kd = distillation_loss(logits, teacher_logits, loss=name, temperature=temperature, labels=labels, **kw)
    return alpha * kd + (1 - alpha) * task_cross_entropy(logits, labels, **kw)
