"""PPO's pure functions against naive loops and hand-computed values."""

import math

import pytest
import torch

from instructgpt.losses.ppo import (
    explained_variance,
    gae,
    kl_shaped_rewards,
    masked_mean,
    policy_loss,
    value_loss,
    whiten,
)
from instructgpt.training.kl_controller import AdaptiveKLController, FixedKLController
from instructgpt.training.ppo import apply_missing_eos_penalty, policy_lr


def _episodes(seed=0, batch=5, width=7):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([7, 3, 1, 0, 5])[:batch]
    mask = torch.arange(width)[None, :] < lengths[:, None]
    x = lambda: torch.randn(batch, width, generator=g) * mask  # noqa: E731
    return mask, x(), x(), x(), torch.randn(batch, generator=g)


def naive_rewards(scores, logprobs, ref_logprobs, mask, kl_coef):
    rewards = torch.zeros_like(logprobs)
    for b in range(len(scores)):
        n = int(mask[b].sum())
        for t in range(n):
            rewards[b, t] = -kl_coef * (logprobs[b, t] - ref_logprobs[b, t])
        if n:
            rewards[b, n - 1] += scores[b]
    return rewards


def naive_gae(rewards, values, mask, gamma, lam):
    advantages, returns = torch.zeros_like(rewards), torch.zeros_like(rewards)
    for b in range(rewards.shape[0]):
        n = int(mask[b].sum())
        running = 0.0
        for t in reversed(range(n)):
            next_value = values[b, t + 1] if t + 1 < n else 0.0
            delta = rewards[b, t] + gamma * next_value - values[b, t]
            running = delta + gamma * lam * running
            advantages[b, t] = running
            returns[b, t] = running + values[b, t]
    return advantages, returns


def test_kl_shaped_rewards_equal_naive_loop():
    mask, logprobs, ref_logprobs, _, scores = _episodes()
    rewards, kl = kl_shaped_rewards(scores, logprobs, ref_logprobs, mask, 0.02)
    torch.testing.assert_close(rewards, naive_rewards(scores, logprobs, ref_logprobs, mask, 0.02))
    torch.testing.assert_close(kl, (logprobs - ref_logprobs) * mask)
    assert rewards[3].abs().sum() == 0  # an empty response gets nothing
    # the score sits on the last real token: summed rewards = score - beta * KL
    torch.testing.assert_close(rewards.sum(-1)[:3], scores[:3] - 0.02 * kl.sum(-1)[:3])


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (1.0, 1.0), (0.9, 0.5), (1.0, 0.0)])
def test_gae_equals_naive_loop(gamma, lam):
    mask, rewards, values, _, _ = _episodes(seed=1)
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    want_adv, want_ret = naive_gae(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(advantages, want_adv)
    torch.testing.assert_close(returns, want_ret)
    assert (advantages[~mask] == 0).all() and (returns[~mask] == 0).all()


def test_gae_with_lambda_one_gives_reward_to_go():
    mask, rewards, values, _, _ = _episodes(seed=2)
    _, returns = gae(rewards, values, mask, 1.0, 1.0)
    to_go = torch.flip(torch.cumsum(torch.flip(rewards * mask, [1]), 1), [1]) * mask
    torch.testing.assert_close(returns, to_go)


def test_padding_values_do_not_leak_into_advantages():
    mask, rewards, values, _, _ = _episodes(seed=3)
    noisy = values + (~mask) * 100.0
    for a, b in zip(gae(rewards, values, mask), gae(rewards, noisy, mask)):
        torch.testing.assert_close(a, b)


def test_whiten_masked():
    mask, x, _, _, _ = _episodes(seed=4)
    out = whiten(x + 3.0, mask)
    assert abs(masked_mean(out, mask).item()) < 1e-6
    assert out[~mask].abs().sum() == 0
    real = out[mask]
    assert real.std().item() == pytest.approx(1.0, abs=1e-4)
    kept = whiten(x + 3.0, mask, shift_mean=False)
    assert masked_mean(kept, mask).item() == pytest.approx(masked_mean(x + 3.0, mask).item(), abs=1e-5)


def test_policy_loss_by_hand():
    old = torch.log(torch.tensor([[0.5, 0.5, 0.5]]))
    new = torch.log(torch.tensor([[0.5, 0.8, 0.2]]))  # ratios 1, 1.6, 0.4
    adv = torch.tensor([[1.0, 1.0, -1.0]])
    mask = torch.tensor([[True, True, True]])
    loss, clipfrac, approx_kl = policy_loss(new, old, adv, mask, clip=0.2)
    # token 0: -1; token 1: max(-1.6, -1.2) = -1.2 (clipped); token 2: max(0.4, 0.8) = 0.8 (clipped)
    assert loss.item() == pytest.approx((-1 - 1.2 + 0.8) / 3)
    assert clipfrac.item() == pytest.approx(2 / 3)
    ratios = torch.tensor([1.0, 1.6, 0.4])
    assert approx_kl.item() == pytest.approx(((ratios - 1) - ratios.log()).mean().item(), rel=1e-5)


def test_policy_loss_gradient_is_cut_when_clipped():
    old = torch.zeros(1, 2)
    new = torch.tensor([[0.5, 0.0]], requires_grad=True)  # ratio e^0.5 > 1.2 on token 0
    loss, _, _ = policy_loss(new, old, torch.ones(1, 2), torch.ones(1, 2, dtype=torch.bool))
    loss.backward()
    assert new.grad[0, 0] == 0 and new.grad[0, 1] == pytest.approx(-0.5)


def test_value_loss_clipped_and_unclipped():
    mask = torch.tensor([[True, True, False]])
    old = torch.tensor([[0.0, 0.0, 9.0]])
    new = torch.tensor([[1.0, 0.1, 5.0]])
    ret = torch.tensor([[1.0, 1.0, 0.0]])
    plain, _ = value_loss(new, old, ret, mask, clip=None)
    assert plain.item() == pytest.approx(0.5 * (0.0 + 0.81) / 2)
    clipped, clipfrac = value_loss(new, old, ret, mask, clip=0.2)
    # token 0: max(0, (0.2 - 1)^2) = 0.64; token 1: max(0.81, 0.81) = 0.81
    assert clipped.item() == pytest.approx(0.5 * (0.64 + 0.81) / 2)
    assert clipfrac.item() == pytest.approx(0.5)


def test_explained_variance():
    mask = torch.ones(1, 4, dtype=torch.bool)
    ret = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert explained_variance(ret, ret, mask).item() == pytest.approx(1.0)
    assert explained_variance(torch.zeros_like(ret), ret, mask).item() == pytest.approx(1 - 1.0)  # Var(G)/Var(G)
    assert explained_variance(ret.mean().expand_as(ret), ret, mask).item() == pytest.approx(0.0)


def test_kl_controllers():
    fixed = FixedKLController(0.02)
    fixed.update(kl=100.0, episodes=512)
    assert fixed.value == 0.02
    adaptive = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    adaptive.update(kl=12.0, episodes=512)  # error clipped to +0.2
    assert adaptive.value == pytest.approx(0.1 * (1 + 0.2 * 512 / 10_000))
    adaptive.update(kl=6.0, episodes=512)
    assert adaptive.value == pytest.approx(0.1 * (1 + 0.2 * 512 / 10_000))
    restored = AdaptiveKLController(1.0, 6.0, 10_000)
    restored.load_state_dict(adaptive.state_dict())
    assert restored.value == adaptive.value


def test_policy_lr_warmup_and_missing_eos():
    assert policy_lr(0, 1e-5) == pytest.approx(1e-6)
    assert policy_lr(9, 1e-5) == pytest.approx(1e-5 * (0.1 + 0.9 * 0.9))
    assert policy_lr(10, 1e-5) == policy_lr(500, 1e-5) == 1e-5
    scores = torch.tensor([1.0, 1.0])
    out = apply_missing_eos_penalty(scores, torch.tensor([True, False]), 2.0)
    assert out.tolist() == [1.0, -1.0]
    assert not math.isnan(out.sum().item())
