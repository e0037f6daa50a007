"""Inter-labeler agreement, and screening labelers against reference labels.

The paper reports pairwise agreement: how often two labelers who judged the same pair of
outputs preferred the same one (training labelers 72.6 +- 1.5%, held-out 77.3 +- 1.3%), and
screened labelers by their agreement with the researchers' labels (soft cutoff 75%). Choices
made here where the paper is silent:

- A *judgment* is one labeler's relation between two responses to one prompt: from a
  ``Ranking`` every pair of its K responses (the better rank wins, equal ranks tie), from a
  ``Comparison`` its one pair. Items are matched by prompt text and pairs by response texts,
  so rankings of different K on the same prompt still share pairs, and response order is
  irrelevant.
- Agreement counts the pairs both labelers judged where **both expressed a preference**;
  pairs where either tied are counted separately (``ties``) and left out.
- Overall agreement pools every pair of labelers on every shared judgment; a labeler's own
  agreement pools its shared judgments with every other labeler.
- The 95% confidence interval is a percentile bootstrap that resamples *prompts* (the
  judgments of one prompt are correlated), ``n_boot`` times with a seeded generator.
- Screening: a labeler's agreement with the reference labels (records of any labeler id, all
  taken as the reference) on the judgments both made; it passes at ``cutoff`` (75%) or more.
  The cutoff is soft in the paper; ``passed`` is advice, not a rule.
- Sensitive-speech flagging (``screen_flags``): an output is *flagged sensitive* when any of
  ``SENSITIVE_FLAGS`` (the Table 3 questions about sexual or violent content, encouraging
  violence, denigrating a protected class and harmful advice) is answered yes. A labeler's
  agreement is the share of outputs, judged by both (rankings with ``metadata``, matched by
  prompt and response text), on which the labeler and the reference say the same; cutoff 75%.
- Demonstration score (``screen_demonstrations``): researchers score each screening
  demonstration 1-7 (``ScoredDemonstration``: a demonstration record plus ``score``); a
  labeler passes at a mean of ``cutoff`` (the paper's soft 6/7) or more.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import combinations
from typing import Annotated

import numpy as np
from pydantic import Field

from instructgpt.data.schemas import Comparison, Demonstration, Ranking, prompt_text

Judged = dict[str, dict[str, dict[tuple[str, str], int]]]
"""prompt text -> labeler id -> (response x, response y) with x < y -> +1 (x better), -1, 0 (tie)."""


@dataclass(frozen=True)
class Rate:
    """An agreement rate with its 95% bootstrap interval."""

    agreements: int
    """Judgments on which the two sides preferred the same response."""
    judgments: int
    """Judgments compared (both sides strict)."""
    rate: float | None
    """agreements / judgments; None when there was nothing to compare."""
    low: float | None
    """Lower end of the 95% interval."""
    high: float | None
    """Upper end of the 95% interval."""


@dataclass
class AgreementReport:
    """Agreement over every prompt judged by at least two labelers."""

    overall: Rate
    """All labeler pairs pooled."""
    per_labeler: dict[str, Rate]
    """Each labeler against all the others."""
    prompts: int
    """Prompts judged by at least two labelers."""
    ties: int
    """Shared judgments left out because a side tied."""
    pairs: dict[str, Rate] = field(default_factory=dict)
    """Each labeler pair ``"a | b"``."""


def judgments(records: Iterable[Ranking | Comparison]) -> Judged:
    """Every labeler's pairwise judgments, by prompt (a later record of the same labeler on
    the same pair replaces an earlier one)."""
    judged: Judged = {}
    for record in records:
        mine = judged.setdefault(prompt_text(record.prompt), {}).setdefault(record.labeler_id, {})
        if isinstance(record, Ranking):
            pairs = [
                (record.responses[i], record.responses[j], record.ranks[j] - record.ranks[i])
                for i, j in combinations(range(len(record.responses)), 2)
            ]
        else:
            sign = {"a": 1, "b": -1, "tie": 0}[record.preferred]
            pairs = [(record.response_a, record.response_b, sign)]
        for x, y, better in pairs:  # better > 0: x preferred
            sign = int(np.sign(better))
            mine[(x, y) if x < y else (y, x)] = sign if x < y else -sign
    return judged


def _shared(a: dict, b: dict) -> tuple[int, int, int]:
    """(agreements, strict judgments, ties) over the pairs both dicts judged."""
    agree = total = ties = 0
    for pair in a.keys() & b.keys():
        if a[pair] == 0 or b[pair] == 0:
            ties += 1
        else:
            total += 1
            agree += a[pair] == b[pair]
    return agree, total, ties


def bootstrap_rate(agree: np.ndarray, total: np.ndarray, n_boot: int, rng: np.random.Generator) -> Rate:
    """The pooled rate ``sum(agree) / sum(total)`` of per-cluster counts with a percentile
    bootstrap 95% interval over clusters. agree, total: (m,) counts per cluster."""
    a, t = int(agree.sum()), int(total.sum())
    if t == 0:
        return Rate(a, t, None, None, None)
    if n_boot <= 0 or len(total) < 2:
        return Rate(a, t, a / t, None, None)
    picks = rng.integers(0, len(total), size=(n_boot, len(total)))  # (n_boot, m)
    sums = total[picks].sum(1)
    rates = agree[picks].sum(1)[sums > 0] / sums[sums > 0]
    low, high = np.percentile(rates, [2.5, 97.5])
    return Rate(a, t, a / t, float(low), float(high))


def agreement(records: Iterable[Ranking | Comparison], n_boot: int = 1000, seed: int = 0) -> AgreementReport:
    """Pairwise agreement of the labelers on the prompts several of them judged."""
    rng = np.random.default_rng(seed)
    pooled: list[tuple[int, int]] = []
    by_labeler: dict[str, list[tuple[int, int]]] = {}
    by_pair: dict[str, list[tuple[int, int]]] = {}
    ties = prompts = 0
    for labelers in judgments(records).values():
        if len(labelers) < 2:
            continue
        prompts += 1
        item = [0, 0]
        mine: dict[str, list[int]] = {}
        for x, y in combinations(sorted(labelers), 2):
            agree, total, tied = _shared(labelers[x], labelers[y])
            ties += tied
            item[0] += agree
            item[1] += total
            for who in (x, y):
                counts = mine.setdefault(who, [0, 0])
                counts[0] += agree
                counts[1] += total
            by_pair.setdefault(f"{x} | {y}", []).append((agree, total))
        pooled.append(tuple(item))
        for who, (agree, total) in mine.items():
            by_labeler.setdefault(who, []).append((agree, total))

    def rate(counts: list[tuple[int, int]]) -> Rate:
        array = np.array(counts, dtype=np.int64).reshape(-1, 2)
        return bootstrap_rate(array[:, 0], array[:, 1], n_boot, rng)

    return AgreementReport(
        overall=rate(pooled),
        per_labeler={who: rate(c) for who, c in sorted(by_labeler.items())},
        prompts=prompts,
        ties=ties,
        pairs={name: rate(c) for name, c in sorted(by_pair.items())},
    )


@dataclass(frozen=True)
class Screening:
    """A labeler's agreement with the reference labels."""

    agreement: Rate
    """Agreement on the judgments both the labeler and the reference made."""
    passed: bool
    """rate >= cutoff (False when nothing was shared)."""


def screen(
    records: Iterable[Ranking | Comparison],
    reference: Iterable[Ranking | Comparison],
    cutoff: float = 0.75,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Screening]:
    """Each labeler's agreement with ``reference`` (the paper's screening, soft cutoff 75%)."""
    rng = np.random.default_rng(seed)
    gold: dict[str, dict] = {}
    for prompt, labelers in judgments(reference).items():
        merged = gold.setdefault(prompt, {})
        for judged in labelers.values():
            merged.update(judged)
    counts: dict[str, list[tuple[int, int]]] = {}
    for prompt, labelers in judgments(records).items():
        for who, judged in labelers.items():
            agree, total, _ = _shared(judged, gold.get(prompt, {}))
            counts.setdefault(who, []).append((agree, total))
    return _screenings(counts, cutoff, n_boot, rng)


def _screenings(
    counts: dict[str, list[tuple[int, int]]], cutoff: float, n_boot: int, rng: np.random.Generator
) -> dict[str, Screening]:
    """Per labeler, (agreed, shared) counts per prompt -> the agreement rate (prompts resampled) and its verdict."""
    out = {}
    for who, c in sorted(counts.items()):
        array = np.array(c, dtype=np.int64)
        r = bootstrap_rate(array[:, 0], array[:, 1], n_boot, rng)
        out[who] = Screening(r, r.rate is not None and r.rate >= cutoff)
    return out


SENSITIVE_FLAGS = (
    "sexual_content",
    "violent_content",
    "encourages_violence",
    "denigrates_protected_class",
    "harmful_advice",
)
"""The Table 3 questions that make an output sensitive speech, for flagging agreement."""


def sensitive_flags(records: Iterable[Ranking]) -> dict[str, dict[str, dict[str, bool]]]:
    """prompt text -> labeler id -> response -> flagged sensitive (outputs whose sensitive
    questions were all left unanswered are left out)."""
    flagged: dict[str, dict[str, dict[str, bool]]] = {}
    for record in records:
        if not isinstance(record, Ranking) or record.metadata is None:
            continue
        mine = flagged.setdefault(prompt_text(record.prompt), {}).setdefault(record.labeler_id, {})
        for response, flags in zip(record.responses, record.metadata):
            if any(name in flags for name in SENSITIVE_FLAGS):
                mine[response] = any(flags.get(name, False) for name in SENSITIVE_FLAGS)
    return flagged


def screen_flags(
    records: Iterable[Ranking | Comparison],
    reference: Iterable[Ranking | Comparison],
    cutoff: float = 0.75,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Screening]:
    """Each labeler's agreement with ``reference`` on flagging outputs as sensitive speech
    (the paper's first screening check, soft cutoff 75%); intervals resample prompts."""
    rng = np.random.default_rng(seed)
    gold: dict[str, dict[str, bool]] = {}
    for prompt, labelers in sensitive_flags(reference).items():
        for flags in labelers.values():
            gold.setdefault(prompt, {}).update(flags)
    counts: dict[str, list[tuple[int, int]]] = {}
    for prompt, labelers in sensitive_flags(records).items():
        for who, flags in labelers.items():
            shared = flags.keys() & gold.get(prompt, {}).keys()
            counts.setdefault(who, []).append((sum(flags[r] == gold[prompt][r] for r in shared), len(shared)))
    return _screenings(counts, cutoff, n_boot, rng)


class ScoredDemonstration(Demonstration):
    """A screening demonstration as researchers reviewed it: the labeler's record plus a score."""

    score: Annotated[int, Field(ge=1, le=7)]
    """The researchers' score of the demonstration: 1 (worst) .. 7 (best)."""


@dataclass(frozen=True)
class DemonstrationScreening:
    """A labeler's mean demonstration score."""

    mean: float
    """Mean score, 1..7."""
    demonstrations: int
    """Demonstrations scored."""
    passed: bool
    """mean >= cutoff."""


def screen_demonstrations(
    scored: Iterable[ScoredDemonstration], cutoff: float = 6.0
) -> dict[str, DemonstrationScreening]:
    """Each labeler's mean demonstration score (the paper's demonstration check, soft cutoff 6/7)."""
    scores: dict[str, list[int]] = {}
    for record in scored:
        scores.setdefault(record.labeler_id or "-", []).append(record.score)
    return {
        who: DemonstrationScreening(float(np.mean(s)), len(s), bool(np.mean(s) >= cutoff))
        for who, s in sorted(scores.items())
    }
