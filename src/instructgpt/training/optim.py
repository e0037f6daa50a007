"""Optimizer-step helpers shared by the trainers."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def grad_norm(params: Iterable[torch.Tensor]) -> float:
    """The L2 norm of the gradients of ``params`` (those without a gradient count as zero)."""
    grads = [p.grad for p in params if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0


def clip_grad_norm(params: Iterable[torch.Tensor], max_norm: float, reference_norm: float | None = None) -> float:
    """Clip the gradients of ``params`` to ``max_norm`` (0: no clipping); returns the norm before clipping.

    ``reference_norm``: scale them by ``min(1, max_norm / reference_norm)`` instead of by their
    own norm, e.g. PPO-ptx's sum scaled by the PPO part's norm alone (``PPOConfig.ptx_clip``).
    """
    limit = max_norm if max_norm > 0 else float("inf")
    if reference_norm is None:
        return float(torch.nn.utils.clip_grad_norm_(params, limit))
    params = list(params)
    norm = grad_norm(params)
    torch.nn.utils.clip_grads_with_norm_(params, limit, torch.tensor(reference_norm))
    return norm
