"""A panel of labelers: training labelers and held-out labelers, and who labels what.

As in the paper (section 3.4), most items get one labeler and a share of them gets several,
to measure agreement; held-out labelers produce no training data and rate final outputs to
test that the models did not overfit the training labelers' taste. ``assign`` decides
who labels each item: with probability ``overlap`` an item goes to ``per_overlap`` distinct
members, otherwise to one, drawn uniformly by a seeded generator.

``Panel.simulated`` draws simulated labelers (``simulated.draw_labelers``): the held-out
group from its own random stream, so its members differ from the training ones.
``calibrate`` tunes the simulated members' noise so that their pairwise agreement on given
items hits a target (default: the paper's 72.6% for training labelers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from instructgpt.data.schemas import Comparison, Ranking
from instructgpt.labelers.agreement import agreement
from instructgpt.labelers.base import Labeler, PromptInput
from instructgpt.labelers.simulated import LabelerDraw, QualityScorer, SimulatedLabeler, draw_labelers

Group = Literal["training", "held_out"]

PAPER_AGREEMENT = {"training": 0.726, "held_out": 0.773}
"""Pairwise agreement the paper measured (section 3.4)."""


@dataclass
class Panel:
    """Labelers in two groups; any ``Labeler`` may be a member."""

    training: list[Labeler]
    """Labelers whose labels train the models."""
    held_out: list[Labeler]
    """Labelers who only evaluate."""

    @classmethod
    def simulated(cls, n_training: int = 8, n_held_out: int = 4, seed: int = 0, draw: LabelerDraw | None = None,
                  held_out_draw: LabelerDraw | None = None, scorer: QualityScorer | None = None) -> Panel:
        """A panel of simulated labelers ``train-i`` and ``heldout-i`` sharing one scorer."""
        draw = draw or LabelerDraw()
        scorer = scorer or QualityScorer()
        training_rng, held_out_rng = (np.random.default_rng([seed, stream]) for stream in (0, 1))
        return cls(
            training=draw_labelers("train", n_training, draw, scorer, training_rng),
            held_out=draw_labelers("heldout", n_held_out, held_out_draw or draw, scorer, held_out_rng),
        )

    def members(self, group: Group) -> list[Labeler]:
        return self.training if group == "training" else self.held_out

    def assign(self, n_items: int, group: Group = "training", overlap: float = 0.1, per_overlap: int = 2,
               seed: int = 0) -> list[list[int]]:
        """For each item, the indices of the ``group`` members who label it (one, or
        ``per_overlap`` distinct ones for a share ``overlap`` of the items)."""
        size = len(self.members(group))
        if not 0 <= overlap <= 1:
            raise ValueError(f"overlap must be in [0, 1], got {overlap}")
        if overlap > 0 and not 2 <= per_overlap <= size:
            raise ValueError(f"per_overlap must be in 2..{size} (the group's size), got {per_overlap}")
        rng = np.random.default_rng(seed)
        shared = rng.random(n_items) < overlap
        return [rng.choice(size, per_overlap if s else 1, replace=False).tolist() for s in shared]

    def rank(self, items: Sequence[tuple[PromptInput, Sequence[str]]], group: Group = "training",
             overlap: float = 0.1, per_overlap: int = 2, seed: int = 0) -> list[Ranking]:
        """Rankings of ``items`` by the members ``assign`` picks, in item order."""
        members = self.members(group)
        assigned = self.assign(len(items), group, overlap, per_overlap, seed)
        measured = self._measure_once(members, items)
        out = []
        for i, (item, who) in enumerate(zip(items, assigned)):
            for m in who:
                labeler = members[m]
                out.append(labeler.rank_measured(*item, measured[i]) if measured else labeler.rank(*item))
        return out

    def compare(self, items: Sequence[tuple[PromptInput, str, str]], group: Group = "held_out",
                overlap: float = 0.0, per_overlap: int = 2, seed: int = 0) -> list[Comparison]:
        """Blind pairwise choices on ``items`` (by default the held-out group, as in evaluation)."""
        members = self.members(group)
        assigned = self.assign(len(items), group, overlap, per_overlap, seed)
        measured = self._measure_once(members, [(p, (a, b)) for p, a, b in items])
        out = []
        for i, (item, who) in enumerate(zip(items, assigned)):
            for m in who:
                labeler = members[m]
                out.append(labeler.compare_measured(*item, measured[i]) if measured else labeler.compare(*item))
        return out

    def calibrate(self, items: Sequence[tuple[PromptInput, Sequence[str]]], target: float | None = None,
                  group: Group = "training", max_noise: float = 1.0, steps: int = 24) -> float:
        """Sets the noise of the group's simulated members so that their pairwise agreement,
        every member ranking every item, is ``target`` (default: the paper's figure for the
        group); returns the noise. Agreement falls as noise grows; bisection over
        ``[0, max_noise]``. When even zero noise agrees less than the target (the members'
        weights differ too much), the noise is 0."""
        target = PAPER_AGREEMENT[group] if target is None else target
        members = self.members(group)
        if not all(isinstance(m, SimulatedLabeler) for m in members):
            raise TypeError("calibrate tunes simulated labelers only")
        measured = self._measure_once(members, items)

        def agreement_at(noise: float) -> float:
            for m in members:
                m.noise = noise
            records = [m.rank_measured(*item, measured[i]) for i, item in enumerate(items) for m in members]
            rate = agreement(records, n_boot=0).overall.rate
            return 0.0 if rate is None else rate

        low, high = 0.0, max_noise
        if agreement_at(low) <= target:
            high = low
        for _ in range(steps if high > low else 0):
            middle = (low + high) / 2
            low, high = (middle, high) if agreement_at(middle) > target else (low, middle)
        for m in members:
            m.noise = (low + high) / 2
        return (low + high) / 2

    @staticmethod
    def _measure_once(members: Sequence[Labeler], items):
        """Features of every item measured once, when every member is simulated with one scorer."""
        scorers = {id(getattr(m, "scorer", None)) for m in members}
        if members and all(isinstance(m, SimulatedLabeler) for m in members) and len(scorers) == 1:
            return members[0].scorer.measure(items)
        return None
