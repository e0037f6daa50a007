"""PPO's data parallelism, in one place: which episodes a process owns, and the collectives.

Under ``torchrun`` / ``accelerate launch`` with W processes (gloo on CPU, NCCL on GPUs), every
process holds full copies of the four models and runs the same loop (:mod:`.ppo`):

1. the iteration's ``batch_size`` prompts and its table of sampling uniforms are the same on
   every process (seeded by ``(seed, iteration)``); rank ``r`` generates and scores the
   contiguous share ``[r * B / W, (r + 1) * B / W)`` (:meth:`DataParallel.share`), each prompt
   with its own row of uniforms, so its response does not depend on W;
2. the scored shares are gathered (:meth:`DataParallel.gather`, a few MB: token ids and
   per-token floats), so every process holds the global batch in the one-process order and
   computes rewards, GAE, the advantages' whitening, the KL for the controller and the rollout
   metrics over it, identically;
3. each minibatch's episodes, sorted by length, are dealt out ``[r::W]`` (similar work per
   process); each process accumulates its micro-batches, every loss weighted by its tokens over
   the minibatch's GLOBAL token count, and the gradients are summed over the processes
   (:meth:`DataParallel.sum_grads`, the fp32 masters' with bf16-weights) before the one
   optimizer step: the update of one process on the same minibatch, up to summation order.
   PPO-ptx: the PPO part is summed first (its global norm sets the clip, ``ptx_clip``), then
   only rank 0 keeps it while every rank adds its share ``[r::W]`` of the pretraining sequences,
   and the sum is taken again;
4. rank 0 alone writes metrics, checkpoints and the final model and keeps the policy's EMA; the
   others wait at a barrier after each write.

No DDP wrapper: gradients are reduced once per optimizer step per model, after the last
micro-batch, with no overlap of communication and backward (the price of reducing the fp32
masters, whose gradients are only complete after the last micro-batch, and of the two-part
PPO-ptx reduction). Without a launcher (W = 1) every method is the identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from instructgpt.rollout.batch import RolloutBatch, concat


@dataclass(frozen=True)
class DataParallel:
    """This process's rank among ``world`` data-parallel PPO processes (rank 0 of 1: no launcher)."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    """Where collective tensors live (the models' device: NCCL reduces CUDA tensors only)."""

    @classmethod
    def of(cls, accelerator) -> DataParallel:
        return cls(accelerator.process_index, accelerator.num_processes, accelerator.device)

    @property
    def main(self) -> bool:
        """The process that writes (metrics, checkpoints, the final model)."""
        return self.rank == 0

    def share(self, count: int) -> slice:
        """This rank's contiguous share of ``count`` episodes (``count % world == 0``, checked at launch).

        >>> DataParallel(1, 4).share(16)
        slice(4, 8, None)
        """
        size = count // self.world
        return slice(self.rank * size, (self.rank + 1) * size)

    def deal(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a minibatch sorted by length: every ``world``-th, from ``rank``."""
        return rows[self.rank :: self.world]

    def gather(self, batch: RolloutBatch, pad_id: int) -> RolloutBatch:
        """Every rank's share, in rank order: the global batch, on every rank."""
        if self.world == 1:
            return batch
        import torch.distributed as dist

        shares: list[RolloutBatch | None] = [None] * self.world
        dist.all_gather_object(shares, batch)
        return concat([s for s in shares if s is not None], pad_id)

    @torch.no_grad()
    def sum_grads(self, params: Sequence[torch.Tensor]) -> None:
        """Sum the gradients of ``params`` (the same tensors in the same order on every rank) over the ranks.

        A rank with no episode in a minibatch has no gradient: it adds zeros. A parameter that no
        rank gave a gradient keeps none (the optimizer skips it, as in one process).
        """
        if self.world == 1:
            return
        import torch.distributed as dist

        params = list(params)
        present = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=self.device)
        dist.all_reduce(present)
        for param, anywhere in zip(params, present.tolist()):
            if not anywhere:
                continue
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            dist.all_reduce(param.grad)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over the ranks (a new fp64 CPU tensor)."""
        if self.world == 1:
            return values.double()
        import torch.distributed as dist

        total = values.to(self.device, torch.float64)
        dist.all_reduce(total)
        return total.cpu()

    def barrier(self) -> None:
        """Wait for every rank (e.g. while rank 0 writes a checkpoint the others will read on resume)."""
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


SINGLE = DataParallel()
"""One process (no launcher)."""
