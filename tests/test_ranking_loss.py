"""Eq. 1: the vectorised K-wise loss equals the double loop over pairs it replaces."""

import math
from itertools import combinations

import pytest
import torch
import torch.nn.functional as F

from instructgpt.losses.ranking import comparison_mask, ranking_accuracy, ranking_loss


def naive_ranking_loss(scores, prompt_index, ranks, normalizer="comparisons"):
    """The loop the vectorised loss replaces: per prompt, every (winner, loser) pair."""
    losses = []
    for p in range(int(prompt_index.max()) + 1):
        members = [i for i in range(len(scores)) if prompt_index[i] == p]
        total, pairs = 0.0, 0
        for i in members:
            for j in members:
                if ranks[i] < ranks[j]:
                    total = total - F.logsigmoid(scores[i] - scores[j])
                    pairs += 1
        k = len(members)
        denominator = pairs if normalizer == "comparisons" else math.comb(k, 2)
        losses.append(total / max(denominator, 1) if pairs else torch.tensor(0.0))
    return torch.stack([torch.as_tensor(x, dtype=torch.float32) for x in losses])


def _batch(ks, seed=0, ties=False):
    generator = torch.Generator().manual_seed(seed)
    index, ranks = [], []
    for p, k in enumerate(ks):
        order = torch.randperm(k, generator=generator)
        r = order if not ties else torch.div(order, 2, rounding_mode="floor")  # pairs of tied responses
        index += [p] * k
        ranks += r.tolist()
    scores = torch.randn(len(index), generator=generator, dtype=torch.float64)
    return scores, torch.tensor(index), torch.tensor(ranks)


@pytest.mark.parametrize("normalizer", ["comparisons", "choose_k"])
@pytest.mark.parametrize("ties", [False, True])
def test_vectorised_loss_equals_the_double_loop_with_k_varying(normalizer, ties):
    scores, index, ranks = _batch([2, 9, 4, 3, 7, 5], ties=ties)
    scores.requires_grad_(True)
    fast = ranking_loss(scores, index, ranks, normalizer=normalizer)
    slow = naive_ranking_loss(scores, index, ranks, normalizer=normalizer)
    torch.testing.assert_close(fast, slow.to(fast.dtype), rtol=1e-6, atol=1e-6)
    (grad_fast,) = torch.autograd.grad(fast.mean(), scores)
    (grad_slow,) = torch.autograd.grad(slow.mean(), scores)
    torch.testing.assert_close(grad_fast, grad_slow.to(grad_fast.dtype), rtol=1e-5, atol=1e-6)


def test_k2_is_pairwise_bradley_terry():
    chosen, rejected = torch.randn(8), torch.randn(8)
    scores = torch.stack([chosen, rejected], 1).flatten()  # chosen, rejected, chosen, ...
    index = torch.arange(8).repeat_interleave(2)
    ranks = torch.tensor([0, 1] * 8)
    bradley_terry = -F.logsigmoid(chosen - rejected)
    torch.testing.assert_close(ranking_loss(scores, index, ranks), bradley_terry)


def test_ties_give_no_pair():
    index, ranks = torch.tensor([0, 0, 0]), torch.tensor([0, 1, 1])
    assert comparison_mask(index, ranks).sum() == 2  # 0>1, 0>2; the tied 1, 2 give nothing
    scores = torch.tensor([0.0, 5.0, -5.0], requires_grad=True)
    loss = ranking_loss(scores, index, ranks)
    expected = -(F.logsigmoid(torch.tensor(-5.0)) + F.logsigmoid(torch.tensor(5.0))) / 2
    torch.testing.assert_close(loss, expected.reshape(1))
    # the tied pair's order does not matter: swapping their scores changes nothing
    swapped = ranking_loss(torch.tensor([0.0, -5.0, 5.0]), index, ranks)
    torch.testing.assert_close(loss.detach(), swapped)
    # normaliser choose_k divides by C(3,2) = 3 instead of the 2 comparisons
    torch.testing.assert_close(ranking_loss(scores, index, ranks, normalizer="choose_k") * 3, loss * 2)


def test_all_pairs_enter_once_each():
    scores, index, ranks = _batch([9])
    assert int(comparison_mask(index, ranks).sum()) == len(list(combinations(range(9), 2)))


def test_shift_invariance_and_accuracy():
    scores, index, ranks = _batch([4, 5, 2])
    torch.testing.assert_close(ranking_loss(scores + 3.0, index, ranks), ranking_loss(scores, index, ranks))
    perfect = -ranks.double()  # best rank -> highest score
    correct, total = ranking_accuracy(perfect, index, ranks)
    assert torch.equal(correct, total) and total.tolist() == [6, 10, 1]
    correct, _ = ranking_accuracy(torch.zeros(11), index, ranks)
    assert correct.tolist() == [3, 5, 0.5]  # constant scores: each comparison counts half
