"""A panel of labelers: training labelers and held-out labelers, and who labels what.

As in the paper (section 3.4), most items get one labeler and a share of them gets several,
to measure agreement; held-out labelers produce no training data and rate final outputs to
test that the models did not overfit the training labelers' taste. ``assign`` decides
who labels each item: with probability ``overlap`` an item goes to ``per_overlap`` distinct
members, otherwise to one, drawn uniformly by a seeded generator.

``Panel.simulated`` draws simulated labelers (``simulated.draw_labelers``): the held-out
group from its own random stream, so its members differ from the training ones.
``calibrate`` tunes how far apart the simulated members' weights are and their noise so that
their pairwise agreement on given items hits a target (default: the paper's 72.6% for training
labelers, 77.3% for held-out ones); the returned ``Calibration`` re-applies it to a fresh panel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    def simulated(
        cls,
        n_training: int = 8,
        n_held_out: int = 4,
        seed: int = 0,
        draw: LabelerDraw | None = None,
        held_out_draw: LabelerDraw | None = None,
        scorer: QualityScorer | None = None,
    ) -> Panel:
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

    def assign(
        self, n_items: int, group: Group = "training", overlap: float = 0.1, per_overlap: int = 2, seed: int = 0
    ) -> list[list[int]]:
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

    def rank(
        self,
        items: Sequence[tuple[PromptInput, Sequence[str]]],
        group: Group = "training",
        overlap: float = 0.1,
        per_overlap: int = 2,
        seed: int = 0,
    ) -> list[Ranking]:
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

    def compare(
        self,
        items: Sequence[tuple[PromptInput, str, str]],
        group: Group = "held_out",
        overlap: float = 0.0,
        per_overlap: int = 2,
        seed: int = 0,
    ) -> list[Comparison]:
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

    def calibrate(
        self,
        items: Sequence[tuple[PromptInput, Sequence[str]]],
        target: float | None = None,
        group: Group = "training",
        taste_share: float = 0.5,
        max_noise: float = 1.0,
        steps: int = 24,
    ) -> Calibration:
        """Sets the group's simulated members so that their pairwise agreement on ``items``,
        every member ranking every item, is ``target`` (default: the paper's figure for the
        group); returns what was set.

        Two things make simulated labelers disagree: different tastes (their weights) and
        inconsistency (their noise). The paper reports only the total, so the split is a
        choice: ``taste_share`` of the disagreement (``1 - target``) comes from taste. First
        the members' weights are pulled toward their common centre (their log-deviations
        from the group's geometric-mean weights times ``spread_scale`` in [0, 1], bisected)
        until, without noise, they agree ``1 - taste_share * (1 - target)`` of the time;
        a group whose tastes already agree that much keeps its weights. Then the noise is
        bisected over ``[0, max_noise]`` to bring the agreement down to ``target``. What
        each member values (the direction of its weights) never changes, only how far it
        is from the others; agreement is measured on the items given, which should be the
        items the group actually labels, since it depends on how alike those responses are.
        """
        target = PAPER_AGREEMENT[group] if target is None else target
        members = self.members(group)
        if not all(isinstance(m, SimulatedLabeler) for m in members):
            raise TypeError("calibrate tunes simulated labelers only")
        measured = self._measure_once(members, items)
        centre, deviations = _taste(members)

        def agreement_at(scale: float, noise: float) -> float:
            for m, d in zip(members, deviations):
                m.weights = _weights(centre, d, scale)
                m.noise = noise
            records = [m.rank_measured(*item, measured[i]) for i, item in enumerate(items) for m in members]
            rate = agreement(records, n_boot=0).overall.rate
            return 1.0 if rate is None else rate

        taste_target = 1 - taste_share * (1 - target)
        scale = (
            1.0
            if agreement_at(1.0, 0.0) >= taste_target
            else _bisect(lambda s: agreement_at(s, 0.0) > taste_target, 0.0, 1.0, steps)
        )
        noise = (
            _bisect(lambda n: agreement_at(scale, n) > target, 0.0, max_noise, steps)
            if agreement_at(scale, 0.0) > target
            else 0.0
        )
        return Calibration(group, target, taste_share, scale, noise, agreement_at(scale, noise))

    @staticmethod
    def _measure_once(members: Sequence[Labeler], items):
        """Features of every item measured once, when every member is simulated with one scorer."""
        scorers = {id(getattr(m, "scorer", None)) for m in members}
        if members and all(isinstance(m, SimulatedLabeler) for m in members) and len(scorers) == 1:
            return members[0].scorer.measure(items)
        return None


@dataclass(frozen=True)
class Calibration:
    """What ``Panel.calibrate`` set on a group (saved with a pipeline run, re-applied with ``apply``)."""

    group: str
    target: float
    """The pairwise agreement aimed at."""
    taste_share: float
    """Share of the disagreement that comes from different weights rather than noise."""
    spread_scale: float
    """Factor on each member's log-deviation from the group's centre weights (1: as drawn)."""
    noise: float
    """Score noise of every member."""
    agreement: float
    """Agreement reached on the calibration items (every member ranking every item)."""

    def apply(self, panel: Panel) -> None:
        """Set a freshly drawn panel's group as the calibration left it."""
        members = panel.members(self.group)  # type: ignore[arg-type]
        centre, deviations = _taste(members)
        for m, d in zip(members, deviations):
            m.weights = _weights(centre, d, self.spread_scale)
            m.noise = self.noise


def _taste(members: Sequence[Labeler]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The group's geometric-mean weights and each member's log-deviation from them."""
    logs = np.log(np.array([m.weights for m in members]))  # type: ignore[attr-defined]
    centre = logs.mean(0)
    return centre, [row - centre for row in logs]


def _weights(centre: np.ndarray, deviation: np.ndarray, scale: float) -> np.ndarray:
    weights = np.exp(centre + scale * deviation)
    return weights / weights.sum()


def _bisect(above: Callable[[float], bool], low: float, high: float, steps: int) -> float:
    """The point in [low, high] where the monotone predicate ``above`` turns from True to False."""
    for _ in range(steps):
        middle = (low + high) / 2
        low, high = (middle, high) if above(middle) else (low, middle)
    return (low + high) / 2
