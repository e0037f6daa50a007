"""Reward-model data: rankings rendered into token ids, and micro-batches that score each response once.

A ``Ranking`` record (K responses to one prompt, ranked, ties allowed) becomes a
:class:`RankedGroup`: the K token sequences ``prompt + response + end marker``, rendered exactly
as SFT renders a demonstration (:mod:`instructgpt.data.render`, raw text or chat template; a
multi-turn prompt is a conversation), and the K ranks. The prompt is tokenized once per group.

A micro-batch is a list of groups; all their sequences go through the trunk in ONE forward,
either packed into rows with restarting positions (:func:`pack_sequences`, default: almost no
padding) or padded to the longest (:func:`pad_sequences`). Each sequence's score is read at its
own last token; the scores come back flat, in group order, with each response's group index
and rank: the inputs of :func:`instructgpt.losses.ranking.ranking_loss`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from instructgpt.data.render import render_prompt, response_ids


@dataclass(frozen=True)
class RankedGroup:
    """One prompt's K rendered responses and their ranks (0 = best, equal = tie)."""

    sequences: tuple[tuple[int, ...], ...]
    """Token ids of prompt + response (+ end marker), one per response."""
    ranks: tuple[int, ...]
    """The labeler's rank of each response."""

    @property
    def k(self) -> int:
        return len(self.sequences)

    @property
    def tokens(self) -> int:
        return sum(len(s) for s in self.sequences)


@dataclass
class GroupStats:
    """What happened to the rankings while rendering."""

    counts: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        c = self.counts
        return (
            f"{c['rendered']} rankings rendered ({c['responses']} responses), {c['dropped_long_prompt']} dropped "
            f"(prompt over the limit), {c['truncated_response']} responses truncated"
        )


def render_groups(
    tokenizer: Any,
    rankings: Sequence[Any],
    template: str = "auto",
    separator: str = "\n\n",
    max_prompt_tokens: int = 1024,
    max_response_tokens: int = 1024,
) -> tuple[list[RankedGroup], GroupStats]:
    """Render ``Ranking`` records into groups; over-long prompts are dropped and counted."""
    stats = GroupStats()
    groups = []
    for ranking in rankings:
        prompt = render_prompt(tokenizer, ranking.prompt, template, separator)
        if len(prompt) > max_prompt_tokens:
            stats.counts["dropped_long_prompt"] += 1
            continue
        sequences = []
        for response in ranking.responses:
            answer = response_ids(tokenizer, ranking.prompt, response, template)
            if len(answer) > max_response_tokens:
                stats.counts["truncated_response"] += 1
                answer = answer[:max_response_tokens]
            sequences.append(tuple(prompt + answer))
        groups.append(RankedGroup(tuple(sequences), tuple(ranking.ranks)))
        stats.counts["rendered"] += 1
        stats.counts["responses"] += len(sequences)
    return groups, stats


def flatten(groups: Sequence[RankedGroup]) -> tuple[list[tuple[int, ...]], torch.Tensor, torch.Tensor]:
    """``(sequences, prompt_index [N], ranks [N])`` of the groups, in order."""
    sequences = [s for g in groups for s in g.sequences]
    prompt_index = torch.tensor([p for p, g in enumerate(groups) for _ in g.sequences])
    ranks = torch.tensor([r for g in groups for r in g.ranks])
    return sequences, prompt_index, ranks


def pack_sequences(sequences: Sequence[Sequence[int]], row_tokens: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Pack sequences into rows with restarting positions; ``rows, cols [N]`` locate each last token.

    Rows are filled evenly, longest sequence first into the emptiest row, with as few rows as
    ``row_tokens`` allows (a longer sequence gets a row of its own). Row ends are padded with a
    segment of their own (positions restart there too), which real tokens never attend to.

    >>> batch = pack_sequences([[5, 6, 7], [8, 9], [4, 3]], row_tokens=4, pad_id=0)
    >>> batch["input_ids"]
    tensor([[5, 6, 7, 0],
            [8, 9, 4, 3]])
    >>> batch["position_ids"]
    tensor([[0, 1, 2, 0],
            [0, 1, 0, 1]])
    >>> batch["rows"].tolist(), batch["cols"].tolist()
    ([0, 1, 1], [2, 1, 3])
    """
    total = sum(len(s) for s in sequences)
    num_rows = max(1, -(-total // max(row_tokens, 1)))
    members: list[list[int]] = [[] for _ in range(num_rows)]
    fill = [0] * num_rows
    for i in sorted(range(len(sequences)), key=lambda i: (-len(sequences[i]), i)):
        r = fill.index(min(fill))
        members[r].append(i)
        fill[r] += len(sequences[i])
    members = [m for m in members if m]
    width = max(fill)
    input_ids = torch.full((len(members), width), pad_id, dtype=torch.long)  # [R, L]
    position_ids = torch.zeros((len(members), width), dtype=torch.long)  # [R, L]
    rows, cols = torch.zeros(len(sequences), dtype=torch.long), torch.zeros(len(sequences), dtype=torch.long)
    for r, row in enumerate(members):
        start = 0
        for i in row:
            n = len(sequences[i])
            input_ids[r, start : start + n] = torch.tensor(sequences[i])
            position_ids[r, start : start + n] = torch.arange(n)
            rows[i], cols[i] = r, start + n - 1
            start += n
        position_ids[r, start:] = torch.arange(width - start)
    return {"input_ids": input_ids, "position_ids": position_ids, "rows": rows, "cols": cols}


def pad_sequences(
    sequences: Sequence[Sequence[int]], pad_id: int, padding_side: str = "right"
) -> dict[str, torch.Tensor]:
    """Pad sequences to the longest: ``input_ids, attention_mask [N, T]``."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)  # [N, T]
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)  # [N, T]
    for row, seq in enumerate(sequences):
        cols = slice(width - len(seq), width) if padding_side == "left" else slice(0, len(seq))
        input_ids[row, cols] = torch.tensor(seq)
        attention_mask[row, cols] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def score_sequences(
    reward_model: Any,
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    packing: bool = True,
    row_tokens: int = 1024,
    autocast: torch.dtype | None = None,
) -> torch.Tensor:
    """Scores ``[N]`` (fp32) of ``sequences`` in ONE forward of the trunk (packed or padded)."""
    skip = getattr(reward_model, "skip_token_id", None)
    if packing and skip is not None:  # read where the padded forward reads: before trailing skip tokens
        sequences = [_drop_trailing(seq, skip) for seq in sequences]
    device = next(reward_model.parameters()).device
    with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
        if packing:
            batch = {k: v.to(device) for k, v in pack_sequences(sequences, row_tokens, pad_id).items()}
            return reward_model.score_packed(batch["input_ids"], batch["position_ids"], batch["rows"], batch["cols"])
        batch = {k: v.to(device) for k, v in pad_sequences(sequences, pad_id).items()}
        return reward_model(batch["input_ids"], batch["attention_mask"])


def _drop_trailing(seq: Sequence[int], token: int) -> Sequence[int]:
    """``seq`` without its trailing ``token`` ids (one token kept at least).

    >>> _drop_trailing([5, 6, 1, 1], 1)
    [5, 6]
    """
    end = len(seq)
    while end > 1 and seq[end - 1] == token:
        end -= 1
    return seq[:end]
