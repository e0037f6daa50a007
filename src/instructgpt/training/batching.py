"""Which examples go into which optimizer step, micro-batch and process: a pure, seeded plan.

Epoch ``e`` visits the examples in the order of a permutation drawn from ``(seed, e)`` alone, so
the plan is the same after a restart and on every process. Each optimizer step takes
``batch_size`` examples; an incomplete last batch is dropped (its examples fall elsewhere in
other epochs' permutations). Inside a step the examples are sorted by length before they are
split between processes and micro-batches: the gradient is a sum over the whole batch, so the
order changes nothing but the padding, which it cuts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BatchPlan:
    """A deterministic schedule of global batches over ``epochs`` passes of ``num_examples``."""

    num_examples: int
    batch_size: int
    epochs: int
    seed: int

    def __post_init__(self) -> None:
        if self.num_examples < self.batch_size:
            raise ValueError(
                f"batch_size ({self.batch_size}) is larger than the training set ({self.num_examples} examples)"
            )

    @property
    def steps_per_epoch(self) -> int:
        return self.num_examples // self.batch_size

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def batch(self, step: int) -> list[int]:
        """Indices of the examples of optimizer step ``step`` (0-based)."""
        epoch, k = divmod(step, self.steps_per_epoch)
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(self.num_examples, generator=generator)
        return order[k * self.batch_size : (k + 1) * self.batch_size].tolist()


def shard_and_split(
    indices: list[int],
    lengths: list[int],
    rank: int,
    world: int,
    micro_batch_size: int,
    micro_batch_tokens: int = 0,
    packed: bool = False,
) -> list[list[int]]:
    """This process's micro-batches of a global batch: sort by length, deal out, group.

    Dealing the sorted list round-robin gives every process a similar mix of lengths. A
    micro-batch holds at most ``micro_batch_size`` sequences and, when ``micro_batch_tokens``
    is set, at most that many tokens once padded (``packed``: in total, since a packed row has
    no padding), so long sequences travel in small groups and short ones in large groups. Processes may end up with
    different numbers of micro-batches: each still makes exactly one synchronising backward.
    """
    if len(indices) % world:
        raise ValueError(f"batch of {len(indices)} examples does not split over {world} processes")
    ordered = sorted(indices, key=lambda i: (lengths[i], i))
    groups: list[list[int]] = []
    for i in ordered[rank::world]:  # ascending: lengths[i] is the padded width if i joins
        if not groups or not _fits(groups[-1], i, lengths, micro_batch_size, micro_batch_tokens, packed):
            groups.append([])
        groups[-1].append(i)
    return groups


def _fits(group: list[int], i: int, lengths: list[int], max_seqs: int, max_tokens: int, packed: bool) -> bool:
    if len(group) >= max_seqs:
        return False
    tokens = sum(lengths[j] for j in group) + lengths[i] if packed else (len(group) + 1) * lengths[i]
    return not max_tokens or tokens <= max_tokens
