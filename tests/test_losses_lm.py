"""The chunked losses equal the naive full-logits computation, values and gradients."""

import pytest
import torch

from instructgpt.losses.lm import fused_linear_cross_entropy, naive_cross_entropy, token_logprobs


def _inputs(n=37, h=8, v=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g, requires_grad=True)
    weight = torch.randn(v, h, generator=g, requires_grad=True)
    targets = torch.randint(0, v, (n,), generator=g)
    weights = torch.rand(n, generator=g)
    return hidden, weight, targets, weights


def _grads(loss, *tensors):
    return torch.autograd.grad(loss, tensors)


@pytest.mark.parametrize("softcap", [None, 3.0])
@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_fused_cross_entropy_matches_naive(chunk, softcap):
    hidden, weight, targets, weights = _inputs()
    naive = naive_cross_entropy(hidden, weight, targets, weights, softcap=softcap)
    fused = fused_linear_cross_entropy(hidden, weight, targets, weights, chunk_size=chunk, softcap=softcap)
    torch.testing.assert_close(fused, naive)
    for a, b in zip(_grads(2.5 * fused, hidden, weight), _grads(2.5 * naive, hidden, weight)):
        torch.testing.assert_close(a, b)


def test_fused_cross_entropy_bf16_close_to_fp32():
    hidden, weight, targets, weights = _inputs(n=64, h=32, v=300)
    naive = naive_cross_entropy(hidden, weight, targets, weights)
    fused = fused_linear_cross_entropy(hidden, weight, targets, weights, chunk_size=16, compute_dtype=torch.bfloat16)
    assert fused.dtype == torch.float32
    torch.testing.assert_close(fused, naive, rtol=2e-2, atol=0.0)


def test_fused_cross_entropy_empty_selection_has_zero_gradient():
    hidden, weight, _, _ = _inputs(n=0)
    loss = fused_linear_cross_entropy(hidden, weight, torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(weight.grad == 0)


@pytest.mark.parametrize("softcap", [None, 3.0])
def test_token_logprobs_matches_log_softmax(softcap):
    hidden, weight, targets, _ = _inputs()
    logits = hidden @ weight.T
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    naive = torch.log_softmax(logits, -1).gather(1, targets[:, None])[:, 0]
    chunked = token_logprobs(hidden, weight, targets, chunk_size=8, softcap=softcap)
    torch.testing.assert_close(chunked, naive)
    coeffs = torch.linspace(-1, 1, len(targets))
    for a, b in zip(_grads((chunked * coeffs).sum(), hidden, weight), _grads((naive * coeffs).sum(), hidden, weight)):
        torch.testing.assert_close(a, b)


def test_token_logprobs_in_bf16_close_to_fp32_and_weight_grad_optional():
    hidden, weight, targets, _ = _inputs(n=20, h=16, v=40)
    coeffs = torch.linspace(-1, 1, len(targets))
    exact = token_logprobs(hidden, weight, targets, chunk_size=7)
    low = token_logprobs(hidden, weight, targets, chunk_size=7, compute_dtype=torch.bfloat16)
    torch.testing.assert_close(low, exact, atol=0.1, rtol=0.05)
    exact_grads = _grads((exact * coeffs).sum(), hidden, weight)
    for a, b in zip(_grads((low * coeffs).sum(), hidden, weight), exact_grads):
        torch.testing.assert_close(a, b, atol=0.1, rtol=0.05)
    frozen = weight.detach()
    (grad,) = _grads((token_logprobs(hidden, frozen, targets, chunk_size=7) * coeffs).sum(), hidden)
    torch.testing.assert_close(grad, exact_grads[0])


@pytest.mark.parametrize("chunk", [7, 64])  # several chunks (fp32 accumulation) and one (no fp32 round trip)
def test_token_logprobs_bf16_weights_gradient_in_their_dtype(chunk):
    hidden, weight, targets, _ = _inputs(n=20, h=16, v=40)
    coeffs = torch.linspace(-1, 1, len(targets))
    exact_grads = _grads((token_logprobs(hidden, weight, targets) * coeffs).sum(), hidden, weight)
    low_hidden, low_weight = (t.detach().bfloat16().requires_grad_() for t in (hidden, weight))
    low = token_logprobs(low_hidden, low_weight, targets, chunk_size=chunk)
    grads = _grads((low * coeffs).sum(), low_hidden, low_weight)
    assert [g.dtype for g in grads] == [torch.bfloat16, torch.bfloat16]
    for a, b in zip(grads, exact_grads):
        torch.testing.assert_close(a.float(), b, atol=0.1, rtol=0.05)


def test_token_logprobs_into_grad_adds_into_the_existing_gradient_also_with_a_tied_sparse_lookup():
    """``into_grad``: the weight's gradient goes into its existing ``.grad`` in place (the same sum as autograd's);
    without one it is returned as usual; a tied sparse embedding lookup adds its rows into the same buffer."""
    hidden, weight, targets, _ = _inputs(n=37, h=8, v=50)
    coeffs = torch.linspace(-1, 1, len(targets))
    ids = torch.tensor([3, 7, 7, 49])

    def loss(into, sparse):
        lookup = torch.nn.functional.embedding(ids, weight, sparse=sparse).sum() * 0.5
        picked = token_logprobs(hidden, weight, targets, chunk_size=8, into_grad=into)
        return (picked * coeffs).sum() + lookup

    want_hidden, want_weight = _grads(loss(False, False), hidden, weight)
    loss(True, True).backward()  # no .grad yet: the usual path
    torch.testing.assert_close(weight.grad, want_weight)
    before = torch.randn(weight.shape, generator=torch.Generator().manual_seed(1))
    weight.grad, hidden.grad = before.clone(), None
    buffer = weight.grad
    loss(True, True).backward()
    assert weight.grad is buffer  # written in place
    torch.testing.assert_close(weight.grad, before + want_weight)
    torch.testing.assert_close(hidden.grad, want_hidden)
