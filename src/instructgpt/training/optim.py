"""Optimizer-step helpers shared by the trainers."""

from __future__ import annotations

from typing import Iterable

import torch


def clip_grad_norm(params: Iterable[torch.Tensor], max_norm: float) -> float:
    """Clip the gradients of ``params`` to ``max_norm`` (0: no clipping); returns the norm before clipping."""
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf")))
