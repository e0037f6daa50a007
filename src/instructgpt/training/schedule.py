"""Learning-rate schedules, as pure functions of the step."""

from __future__ import annotations

import math


def cosine_lr(step: int, total_steps: int, peak: float, final_fraction: float = 0.1, warmup_steps: int = 0) -> float:
    """The paper's SFT/RM schedule: cosine decay from ``peak`` to ``final_fraction * peak``.

    No warmup by default (method.md step 1). ``step`` is the 0-based index of the update; the
    first update uses ``peak`` and the last (``total_steps - 1``) uses exactly
    ``final_fraction * peak``. With ``warmup_steps`` the rate rises linearly from
    ``peak / warmup_steps`` first.
    """
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    span = max(total_steps - 1 - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    final = final_fraction * peak
    return final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine_lambda(total_steps: int, final_fraction: float = 0.1, warmup_steps: int = 0):
    """``cosine_lr`` as a multiplier for ``torch.optim.lr_scheduler.LambdaLR``."""
    return lambda step: cosine_lr(step, total_steps, 1.0, final_fraction, warmup_steps)
