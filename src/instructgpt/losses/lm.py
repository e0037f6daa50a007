"""Language-model losses over a large vocabulary, without full-vocabulary logits for the batch.

The default model's vocabulary has 262,144 tokens: the fp32 logits of one 8 x 512 batch are
4 GB, and the unembedding is 60% of the model's FLOPs. Both functions here therefore take the
final hidden states of *only the tokens that are scored* (response tokens for SFT, every token
for pretraining text), and walk over them in chunks of ``chunk_size`` rows, so at most
``chunk_size x vocab`` logits exist at a time.

- :func:`fused_linear_cross_entropy` is the SFT / pretraining loss: a weighted sum of token
  negative log-likelihoods. It computes the gradients for the hidden states and the unembedding
  in the same chunked pass (no second pass over the logits in backward).
- :func:`token_logprobs` returns per-token log-probabilities with autograd (for PPO): forward
  keeps one log-normaliser per token; backward recomputes each chunk's logits once and forms
  their gradient in place (the upstream gradient is only known then).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _logits(hidden: torch.Tensor, weight: torch.Tensor, softcap: float | None) -> torch.Tensor:
    logits = (hidden @ weight.T).float()  # [n, V]
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


class _FusedLinearCE(torch.autograd.Function):
    """Loss and both gradients in one chunked pass; backward only rescales them.

    Per chunk: ``logp = log_softmax(h @ W.T)`` (fp32 from the bf16 product), loss
    ``-sum(w * logp[t])``, and ``G = softmax - onehot``; the token weights scale the small
    ``[n, H]`` side (``grad_h = w * (G @ W)``, ``grad_W = G.T @ (w * h)``), never the
    ``[n, V]`` matrix.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, token_weights, chunk_size, compute_dtype, softcap):
        hidden_c, weight_c = hidden.to(compute_dtype), weight.to(compute_dtype)
        grad_hidden = torch.empty_like(hidden, dtype=torch.float32)  # [N, H]
        grad_weight = None  # [V, H] fp32, created by the first chunk (no zero-fill pass)
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, hidden.shape[0], chunk_size):
            rows = slice(start, start + chunk_size)
            h, t, w = hidden_c[rows], targets[rows], token_weights[rows].float()[:, None]  # w: [n, 1]
            raw = h @ weight_c.T  # [n, V]
            if softcap:
                raw = torch.tanh(raw.float() / softcap)
                grad = torch.log_softmax(raw * softcap, dim=-1)
            else:
                grad = torch.log_softmax(raw, dim=-1, dtype=torch.float32)  # [n, V] log-probabilities
            picked = torch.arange(len(t))
            total -= (w[:, 0] * grad[picked, t]).sum()
            grad = grad.exp_()  # softmax
            grad[picked, t] -= 1.0  # d(nll)/dlogits = softmax - onehot
            if softcap:  # chain rule through tanh(raw / c) * c
                grad.mul_(1.0 - raw.square())
            grad = grad.to(compute_dtype)
            grad_hidden[rows] = (grad @ weight_c).float() * w
            part = grad.T @ (hidden[rows].float() * w).to(compute_dtype)  # [V, H]
            grad_weight = part.float() if grad_weight is None else grad_weight.add_(part)
        # Kept as attributes, not saved tensors, so backward can hand them over without a copy.
        ctx.grads = (grad_hidden.to(hidden.dtype), grad_weight.to(weight.dtype))
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.grads
        del ctx.grads  # used once: scale in place and let autograd take ownership (no V x H copy)
        return grad_hidden.mul_(grad_output), grad_weight.mul_(grad_output), None, None, None, None, None


def fused_linear_cross_entropy(
    hidden: torch.Tensor,  # [N, H] final hidden states of the scored positions
    weight: torch.Tensor,  # [V, H] unembedding
    targets: torch.Tensor,  # [N] next-token ids
    token_weights: torch.Tensor | None = None,  # [N] per-token loss weights (default 1)
    chunk_size: int = 1024,
    compute_dtype: torch.dtype | None = None,
    softcap: float | None = None,
) -> torch.Tensor:
    """``sum_i w_i * -log softmax(hidden_i @ weight.T)[targets_i]``, chunked, as a scalar.

    Equivalent to the naive (and memory-hungry)::

        logits = (hidden @ weight.T).float()
        (F.cross_entropy(logits, targets, reduction="none") * token_weights).sum()

    ``compute_dtype`` (e.g. bf16) is used for the matrix products; the softmax is fp32.
    ``softcap`` applies Gemma-2 style ``tanh(logits / c) * c`` final-logit soft-capping.
    """
    if token_weights is None:
        token_weights = torch.ones_like(targets, dtype=torch.float32)
    if hidden.shape[0] == 0:
        return (hidden.sum() + weight.sum()) * 0.0
    compute_dtype = compute_dtype or hidden.dtype
    return _FusedLinearCE.apply(hidden, weight, targets, token_weights, chunk_size, compute_dtype, softcap)


class _TokenLogprobs(torch.autograd.Function):
    """Per-token log-probabilities with a chunked, fused backward.

    Forward keeps only the log-normaliser ``lse [N]`` per token (computed in the logits' buffer: a
    fresh ``[n, V]`` tensor is page-faulted in on every allocation in glibc's or the ``thp`` allocator
    mode, :mod:`instructgpt.runtime`). Backward recomputes each chunk's
    logits once and turns them in place into ``d logp_t / d logits = g_t * (onehot_t - softmax)``
    (``softmax = exp(logits - lse)``), then ``grad_h = G @ W`` and ``grad_W += G.T @ h`` in
    ``compute_dtype``: one ``[n, V]`` fp32 buffer per chunk, no autograd graph over the logits.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_size, compute_dtype, softcap, into_grad):
        hidden_c, weight_c = hidden.to(compute_dtype), weight.to(compute_dtype)
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(out)
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, hidden.shape[0], chunk_size):
                rows = slice(start, start + chunk_size)
                logits = _logits(hidden_c[rows], weight_c, softcap)  # [n, V] fp32
                picked = logits.gather(1, targets[rows, None])[:, 0]
                peak = logits.amax(dim=-1, keepdim=True)  # logsumexp in place: no second [n, V] buffer
                lse[rows] = logits.sub_(peak).exp_().sum(dim=-1).log_().add_(peak[:, 0])
                out[rows] = picked - lse[rows]
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.chunk_size, ctx.compute_dtype, ctx.softcap = chunk_size, compute_dtype, softcap
        ctx.into = weight if into_grad else None  # the parameter itself, for its .grad
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, targets, lse = ctx.saved_tensors
        dtype, softcap = ctx.compute_dtype, ctx.softcap
        hidden_c, weight_c = hidden.to(dtype), weight.to(dtype)
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = _existing_grad(ctx.into, dtype) if ctx.needs_input_grad[1] else None
        added = grad_weight is not None  # accumulated into weight.grad in place: nothing returned for it
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, hidden.shape[0], ctx.chunk_size):
                rows = slice(start, start + ctx.chunk_size)
                h, t, g = hidden_c[rows], targets[rows], grad_out[rows].float()
                raw = (h @ weight_c.T).float()  # [n, V]
                if softcap:
                    raw = torch.tanh(raw.div_(softcap))
                    grad = (raw * softcap).sub_(lse[rows, None]).exp_()
                else:
                    grad = raw.sub_(lse[rows, None]).exp_()  # softmax, in place
                grad.mul_(-g[:, None])
                grad[torch.arange(len(t)), t] += g  # g * (onehot - softmax)
                if softcap:
                    grad.mul_(1.0 - raw.square())
                grad = grad.to(dtype)
                if grad_hidden is not None:
                    grad_hidden[rows] = (grad @ weight_c).to(hidden.dtype)
                if added:
                    grad_weight.addmm_(grad.T, h)
                elif ctx.needs_input_grad[1]:
                    part = grad.T @ h  # [V, H]
                    if grad_weight is None:  # one chunk: no fp32 round trip (the same values, two [V, H] copies fewer)
                        grad_weight = part if len(t) == hidden.shape[0] else part.float()
                    else:
                        grad_weight = grad_weight.add_(part)
        ctx.into = None
        returned = None if added or grad_weight is None else grad_weight.to(weight.dtype)
        return grad_hidden, returned, None, None, None, None, None


def _existing_grad(weight: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """``weight.grad`` where backward may add into it in place: dense, contiguous, in the products' dtype."""
    grad = None if weight is None else weight.grad
    if grad is None or grad.is_sparse or grad.dtype != dtype or not grad.is_contiguous():
        return None
    return grad


def token_logprobs(
    hidden: torch.Tensor,  # [N, H]
    weight: torch.Tensor,  # [V, H]
    targets: torch.Tensor,  # [N]
    chunk_size: int = 1024,
    softcap: float | None = None,
    compute_dtype: torch.dtype | None = None,
    into_grad: bool = False,
) -> torch.Tensor:  # [N]
    """``log softmax(hidden @ weight.T)[targets]`` per token, chunked, with autograd.

    Equivalent to ``torch.log_softmax((hidden @ weight.T).float(), -1).gather(1, targets[:, None])[:, 0]``.
    ``compute_dtype`` (default: the hidden states' dtype) is used for the matrix products; the
    softmax is fp32.

    ``into_grad``: where ``weight`` (a leaf) already has a dense ``.grad`` in ``compute_dtype``,
    backward adds the weight's gradient into it in place and hands autograd none for it
    (Megatron-LM's gradient-accumulation fusion). A trainer that keeps that gradient between steps
    (:func:`instructgpt.training.ppo._clear_grads`) then needs no fresh ``[V, H]`` buffer per
    micro-batch: one is 670 MB in fp32 for a 262k vocabulary, page-faulted in again on every
    allocation outside the ``heap`` allocator mode. The sum is the same; only ``.grad`` is written,
    so it is for ``backward()``, not ``torch.autograd.grad``.
    """
    if hidden.shape[0] == 0:
        return hidden.new_zeros(0, dtype=torch.float32) + (hidden.sum() + weight.sum()) * 0.0
    dtype = compute_dtype or hidden.dtype
    return _TokenLogprobs.apply(hidden, weight, targets, chunk_size, dtype, softcap, into_grad)


def naive_cross_entropy(hidden, weight, targets, token_weights=None, softcap=None) -> torch.Tensor:
    """The reference the chunked losses are tested against (holds all logits at once)."""
    losses = F.cross_entropy(_logits(hidden, weight, softcap), targets, reduction="none")
    return (losses * (1.0 if token_weights is None else token_weights)).sum()
