"""PPO's estimators and losses (method.md step 3) as pure tensor functions.

Every tensor here is laid out per *response token*: ``[B, R]`` with episode ``b``'s response in
columns ``0 .. len_b - 1`` and ``response_mask`` True exactly there (right padding). Nothing
reads a config object, nothing calls ``.item()``: the trainer passes numbers in and logs what
comes out.

- :func:`kl_shaped_rewards`: the paper's per-token reward, ``-beta * (log pi - log pi_SFT)`` at
  every response token plus the RM score at the final one.
- :func:`gae`: generalised advantage estimation; the bandit episode ends after the last response
  token (the value after it is 0). The paper's gamma is 1; lambda (0.95 by default in the
  trainer) is not given by the paper.
- :func:`whiten`: masked standardisation (advantage whitening is optional in the trainer).
- :func:`policy_loss`: PPO's clipped surrogate (clip 0.2 in the paper), with the clip fraction
  and an approximate KL(old || new) as diagnostics.
- :func:`value_loss`: squared error to the returns, optionally clipped around the rollout's
  values (the form is not given by the paper).
- :func:`masked_mean`, :func:`explained_variance`: the reductions the trainer logs.

Choices the paper leaves open, made here: every loss is a mean over the real response tokens of
the (mini)batch (a token mean, not a mean of per-episode means); the value loss carries the
conventional factor 1/2; the approximate KL is ``mean((r - 1) - log r)`` with ``r`` the
probability ratio (Schulman's unbiased, non-negative "k3" estimator).
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x [B, R]`` over the True entries of ``mask [B, R]`` (0 when there are none)."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance of the masked entries of ``x`` (0 with fewer than two entries)."""
    mask_f = mask.to(x.dtype)
    count = mask_f.sum()
    centred = (x - masked_mean(x, mask)) * mask_f
    return centred.square().sum() / (count - 1).clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / std`` over the masked entries ``[B, R]``; masked-out entries become 0.

    ``shift_mean=False`` only rescales (the mean is added back), as used for rewards.
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


def kl_shaped_rewards(
    scores: torch.Tensor,  # [B] reward-model scores (normalisation bias included)
    logprobs: torch.Tensor,  # [B, R] log pi_RL(y_t | x, y_<t) at sampling time
    ref_logprobs: torch.Tensor,  # [B, R] log pi_SFT(y_t | x, y_<t)
    response_mask: torch.Tensor,  # [B, R] True = real response token
    kl_coef: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards ``[B, R]`` and the per-token KL estimate ``[B, R]``.

    ``rewards[b, t] = -kl_coef * (logprobs - ref_logprobs)[b, t]``, plus ``scores[b]`` at the last
    real token of episode ``b``; 0 on padding. Equivalent to the naive loop::

        for b in range(B):
            last = response_mask[b].sum() - 1
            for t in range(last + 1):
                rewards[b, t] = -kl_coef * (logprobs[b, t] - ref_logprobs[b, t])
            rewards[b, last] += scores[b]

    An empty response (no real token) gets no reward at all.
    """
    mask = response_mask.to(logprobs.dtype)
    kl = (logprobs - ref_logprobs) * mask  # [B, R]
    rewards = -kl_coef * kl
    lengths = response_mask.long().sum(-1)  # [B]
    has_token = lengths > 0
    last = (lengths - 1).clamp(min=0)  # [B]
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last] += torch.where(
        has_token, scores.to(rewards.dtype), torch.zeros_like(scores, dtype=rewards.dtype)
    )
    return rewards, kl


def gae(
    rewards: torch.Tensor,  # [B, R]
    values: torch.Tensor,  # [B, R] V(state before response token t)
    response_mask: torch.Tensor,  # [B, R]
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation: ``(advantages, returns)``, both ``[B, R]``, 0 on padding.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` with ``V`` after the last real token equal to 0
    (the episode ends there), and ``A_t = delta_t + gamma * lam * A_{t+1}``; returns are
    ``A_t + V_t``. The loop runs backwards over the ``R`` columns, vectorised over episodes;
    the naive per-episode loop it equals is ``naive_gae`` in the tests.
    """
    mask = response_mask.to(values.dtype)
    values = values * mask
    rewards = rewards * mask
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])  # [B]
    next_advantage = torch.zeros_like(rewards[:, 0])  # [B]
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = (delta + gamma * lam * next_advantage) * mask[:, t]
        advantages[:, t] = advantage
        # Padding after an episode's end carries zeros backwards: V = 0 and A = 0 there.
        next_value, next_advantage = values[:, t], advantage
    returns = (advantages + values) * mask
    return advantages, returns


def policy_loss(
    logprobs: torch.Tensor,  # [B, R] log pi under the current parameters (with grad)
    old_logprobs: torch.Tensor,  # [B, R] log pi at sampling time
    advantages: torch.Tensor,  # [B, R]
    response_mask: torch.Tensor,  # [B, R]
    clip: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate: ``(loss, clipfrac, approx_kl)`` (scalars).

    ``loss = mean_t max(-A_t * r_t, -A_t * clamp(r_t, 1 - clip, 1 + clip))`` with
    ``r_t = exp(logprobs - old_logprobs)``; ``clipfrac`` is the fraction of tokens where the
    clipped term is the larger (the gradient is cut); ``approx_kl = mean((r - 1) - log r)``.
    """
    log_ratio = (logprobs - old_logprobs) * response_mask.to(logprobs.dtype)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), response_mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).to(logprobs.dtype), response_mask)
        approx_kl = masked_mean((ratio - 1) - log_ratio, response_mask)
    return loss, clipfrac, approx_kl


def value_loss(
    values: torch.Tensor,  # [B, R] V under the current parameters (with grad)
    old_values: torch.Tensor,  # [B, R] V at rollout time
    returns: torch.Tensor,  # [B, R]
    response_mask: torch.Tensor,  # [B, R]
    clip: float | None = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, clipfrac)``: ``1/2 mean (V - G)^2``, or with ``clip`` the PPO2 form
    ``1/2 mean max((V - G)^2, (old + clamp(V - old, -clip, clip) - G)^2)``."""
    unclipped = (values - returns).square()
    if clip is None:
        return 0.5 * masked_mean(unclipped, response_mask), torch.zeros((), dtype=values.dtype)
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    clipped = (clipped_values - returns).square()
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), response_mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).to(values.dtype), response_mask)
    return loss, clipfrac


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``1 - Var(G - V) / Var(G)`` over the masked tokens: 1 is a perfect value function."""
    var_returns = masked_var(returns, mask)
    return 1.0 - masked_var(returns - values, mask) / var_returns.clamp(min=1e-8)
