"""Mixed precision with bf16 model weights and fp32 master weights (the "O2" recipe).

bf16 autocast (``precision="bf16"``) keeps fp32 weights and casts them, and the activations
around every matrix product, on each forward and backward: on a CPU those casts are memory
passes comparable to the products themselves. ``precision="bf16-weights"`` instead stores the
model in bf16, so the forward and backward run in bf16 without casts, while the optimizer
updates fp32 *master* copies: a learning-rate-sized update (1e-5 relative) would be lost to
bf16 rounding (8 bits of mantissa), so updates are applied in fp32 and the bf16 weights are
re-derived from the masters after each step. Gradients are accumulated in fp32 after every
micro-batch, and checkpoints store the fp32 masters, so a resumed run continues exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch


class MasterWeights:
    """fp32 masters of a model's trainable parameters, whose model copies are cast to ``dtype``.

    Parameters named by ``keep_fp32`` (e.g. a reward model's scalar head, which runs in fp32)
    are left as they are and are their own masters.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        dtype: torch.dtype = torch.bfloat16,
        keep_fp32: Callable[[str], bool] | None = None,
    ) -> None:
        self.model = model
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        kept = {n for n, _ in named if keep_fp32 is not None and keep_fp32(n)}
        self.params = [p for _, p in named]
        self.masters = [p if n in kept else p.detach().float().clone().requires_grad_(True) for n, p in named]
        # parameters only: buffers such as rotary frequencies stay fp32
        for param, master in zip(self.params, self.masters):
            if param is not master:
                param.data = param.data.to(dtype)

    def _pairs(self) -> Iterator[tuple[torch.nn.Parameter, torch.Tensor]]:
        return ((p, m) for p, m in zip(self.params, self.masters) if p is not m)

    @torch.no_grad()
    def accumulate_grads(self) -> None:
        """Add the model's (bf16) gradients into the masters' fp32 gradients and clear them."""
        for param, master in self._pairs():
            grad = param.grad
            if grad is None:
                continue
            if grad.is_sparse:  # e.g. an embedding with sparse=True: only the looked-up rows
                grad = grad.coalesce()
                if master.grad is None:
                    master.grad = torch.zeros_like(master)
                master.grad.index_add_(0, grad.indices()[0], grad.values().to(master.dtype))
            elif master.grad is None:
                master.grad = torch.empty_like(master).copy_(grad)
            else:
                add_upcast_(master.grad, grad)
            param.grad = None

    @torch.no_grad()
    def all_reduce_grads(self) -> None:
        """Average every master's gradient over the data-parallel processes (a no-op in one process).

        :meth:`accumulate_grads` moves each micro-batch's gradient out of the model, so DDP's
        reduction at the last micro-batch would see that micro-batch alone: with masters, every
        micro-batch runs under ``no_sync`` and the summed fp32 gradients are reduced here, once
        per optimizer step (parameters kept in fp32 are their own masters and are reduced too).
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        world = dist.get_world_size()
        for master in self.masters:  # the same tensors in the same order on every process
            if master.grad is None:
                master.grad = torch.zeros_like(master)
            dist.all_reduce(master.grad)
            master.grad.div_(world)

    @torch.no_grad()
    def copy_to_model(self) -> None:
        """Round the updated masters into the model's weights."""
        for param, master in self._pairs():
            param.copy_(master)

    @contextmanager
    def fp32_model(self) -> Iterator[Any]:
        """The model with its master (fp32) weights in place, e.g. to save a checkpoint."""
        pairs = list(self._pairs())
        low = [p.data for p, _ in pairs]
        for param, master in pairs:
            param.data = master.data
        try:
            yield self.model
        finally:
            for (param, _), data in zip(pairs, low):
                param.data = data

    def restore(self) -> None:
        """Put the fp32 masters back as the model's weights (end of training)."""
        for param, master in self._pairs():
            param.data = master.data


def add_upcast_(total: torch.Tensor, part: torch.Tensor, chunk: int = 1 << 20) -> torch.Tensor:
    """``total += part`` for an fp32 ``total`` and a bf16 ``part``, in chunks of ``chunk`` elements.

    A mixed-dtype ``add_`` over a whole 168M-element embedding gradient is about 6x slower on a
    CPU than upcasting 1M-element chunks (cache-sized) and adding them in fp32.
    """
    for dst, src in zip(total.view(-1).split(chunk), part.reshape(-1).split(chunk)):
        dst.add_(src.float())
    return total
