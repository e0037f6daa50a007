"""A simulated labeler: scores measurable qualities of a response, with its own weights and noise.

**This is a simulation, not a substitute for people.** It makes the pipeline runnable and
measurable offline (rankings for the reward model, win rates for evaluation), and it rewards
only what a rule or a small embedding model can measure. A policy optimised against it learns
to satisfy these measurements, not human preferences.

Each response gets five quality features in [0, 1] (``QUALITIES``):

- ``constraints``: the fraction of the instruction's explicit constraints it satisfies
  (``instructgpt.labelers.constraints``; 1 when the instruction states none);
- ``relevance``: cosine similarity of prompt and response sentence embeddings
  (all-MiniLM-L6-v2, ``embedding.MiniLMEmbedder``), divided by 0.5 and clipped: unrelated
  texts score about 0, a clearly on-topic answer 1; times the response's ``originality``
  (:func:`originality`): an answer must add words of its own to count as on topic, so a
  response that only copies the prompt back (which embeds next to it) scores about 0, as an
  unrelated one does. Without that factor the panel preferred echoes of the prompt to attempted
  answers, and PPO learned to echo (2026-12-07: a third of plain PPO's test answers in one run);
- ``no_repetition``: 1 minus the share of repeated word 3-grams (degenerate loops score low);
- ``finished``: 1 when the response ends a sentence, a list item, a code block or a JSON value;
  0 when it stops mid-sentence (a cut-off sample);
- ``length``: 1 between ``min_words`` and ``max_words`` (5 and 300), falling off with the log
  of the ratio outside; an instruction's explicit length limit is judged by ``constraints``.

A labeler's score is ``weights . features + noise * z``, where ``weights`` are its own (drawn
around ``BASE_WEIGHTS`` by the panel, summing to 1) and ``z`` is a standard normal draw fixed
by the labeler's seed, the prompt and the response: the same labeler asked twice answers the
same, and two labelers differ through their weights and their draws. ``noise`` sets how often
labelers disagree; ``panel.Panel.calibrate`` tunes it to a target pairwise agreement (the
paper's 72.6%).

From the scores: ranks (descending; responses whose scores are within ``tie_margin`` of the
next better one share its rank), Likert ``1 + 6 * score`` rounded and clipped to 1..7, and the
Table 3 flags it can measure: ``fails_to_follow_instruction`` (a constraint is violated, or
relevance under 0.2), ``satisfies_constraint`` (only when the instruction has constraints),
``expresses_opinion`` ("I think", "in my opinion"...). The content-safety flags (sexual,
violent, harmful advice...) are left unanswered: nothing here measures them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from instructgpt.data.dedup import hash64
from instructgpt.data.schemas import Comparison, Ranking, prompt_text
from instructgpt.labelers.base import Labeler, PromptInput
from instructgpt.labelers.constraints import parse_constraints, satisfies

QUALITIES: tuple[str, ...] = ("constraints", "relevance", "no_repetition", "finished", "length")
"""The measured features, in the order of a feature vector."""

BASE_WEIGHTS = np.array([0.30, 0.30, 0.15, 0.10, 0.15])
"""The panel's mean weights over ``QUALITIES`` (helpfulness first: follows the instruction, on topic)."""

_OPINION = re.compile(r"\b(?:I think|I believe|I feel|in my (?:humble )?opinion|personally,? I|my view is)\b", re.I)
_WORD = re.compile(r"\w+")
_FINISHED = re.compile(r"""(?:[.!?…]["'”’)\]]*|```|[}\]]|:\)|^\s*(?:[-*•]|\d+[.)]).*)\s*$""", re.M)


def repetition(text: str, n: int = 3) -> float:
    """The share of word n-grams that repeat an earlier one: 0 for fresh text, near 1 for a loop."""
    words = text.lower().split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def copied_share(prompt: str, response: str, n: int = 2) -> float:
    """The share of the response's word n-grams (lower-cased, punctuation dropped) that occur in
    the prompt: 0 for an answer in its own words, 1 for the prompt copied back; 0 with no n-gram."""
    own = _WORD.findall(response.lower())
    grams = list(zip(*(own[i:] for i in range(n))))
    if not grams:
        return 0.0
    words = _WORD.findall(prompt.lower())
    source = set(zip(*(words[i:] for i in range(n))))
    return sum(g in source for g in grams) / len(grams)


def originality(prompt: str, response: str, own_share: float = 0.5, n: int = 2) -> float:
    """``min(1, (1 - copied_share) / own_share)``: 1 when at least ``own_share`` of the response's
    word n-grams are its own (an answer may restate part of the question), falling linearly to 0
    for a response copied from the prompt. Choices the method leaves open (it has people judge):
    word bigrams, and half of them."""
    return min(1.0, (1 - copied_share(prompt, response, n)) / own_share)


def finished(text: str) -> bool:
    """Whether the text ends where a writer would stop (not cut off mid-sentence)."""
    last = text.rstrip().rsplit("\n", 1)[-1]
    return bool(_FINISHED.search(last))


def length_score(words: int, min_words: int = 5, max_words: int = 300) -> float:
    """1 inside [min_words, max_words], ``1 - |log2(ratio)| / 3`` outside, clipped at 0."""
    if words <= 0:
        return 0.0
    if words < min_words:
        return max(0.0, 1 - np.log2(min_words / words) / 3)
    if words > max_words:
        return max(0.0, 1 - np.log2(words / max_words) / 3)
    return 1.0


@dataclass
class Measured:
    """The features of K responses to one prompt."""

    features: np.ndarray
    """(K, len(QUALITIES)) in [0, 1]."""
    has_constraints: bool
    """Whether the instruction states a measurable constraint."""
    constraints_met: np.ndarray
    """(K,) bool: every constraint satisfied."""
    opinion: np.ndarray
    """(K,) bool: the response expresses an opinion."""


class QualityScorer:
    """Measures ``QUALITIES`` for batches of (prompt, responses) items; ``embedder`` is any
    object with ``embed(texts) -> (n, d)`` unit-norm array (default: ``MiniLMEmbedder``);
    ``own_share`` and ``copy_ngram``: :func:`originality`'s (``own_share=0`` turns it off)."""

    def __init__(
        self, embedder: object | None = None, cache_size: int = 100_000, own_share: float = 0.5, copy_ngram: int = 2
    ):
        if embedder is None:
            from instructgpt.labelers.embedding import MiniLMEmbedder

            embedder = MiniLMEmbedder()
        self.embedder = embedder
        self.cache_size = cache_size
        self.own_share = own_share
        self.copy_ngram = copy_ngram
        self._cache: dict[str, np.ndarray] = {}  # text -> embedding: prompts recur across responses and calls

    def _embed(self, texts: list[str]) -> dict[str, np.ndarray]:
        new = [t for t in texts if t not in self._cache]
        if new:
            if len(self._cache) + len(new) > self.cache_size:
                self._cache.clear()
            self._cache.update(zip(new, self.embedder.embed(new)))
        return {t: self._cache[t] for t in texts}

    def _originality(self, prompt: str, response: str) -> float:
        return originality(prompt, response, self.own_share, self.copy_ngram) if self.own_share > 0 else 1.0

    def measure(self, items: Sequence[tuple[PromptInput, Sequence[str]]]) -> list[Measured]:
        """Features of every item, embedding all the batch's texts in one call."""
        prompts = [prompt_text(p) for p, _ in items]
        vectors = self._embed(list(dict.fromkeys([*prompts, *(r for _, rs in items for r in rs)])))
        out = []
        for prompt, (_, responses) in zip(prompts, items):
            constraints = parse_constraints(prompt)
            p_vec = vectors[prompt]
            features = np.zeros((len(responses), len(QUALITIES)))
            met = np.zeros(len(responses), dtype=bool)
            for k, response in enumerate(responses):
                checks = [satisfies(c, response) for c in constraints]
                met[k] = all(checks)
                features[k] = (
                    sum(checks) / len(checks) if checks else 1.0,
                    np.clip(float(vectors[response] @ p_vec) / 0.5, 0, 1) * self._originality(prompt, response),
                    1 - repetition(response),
                    float(finished(response)),
                    length_score(len(response.split())),
                )
            opinion = np.array([bool(_OPINION.search(r)) for r in responses])
            out.append(Measured(features, bool(constraints), met, opinion))
        return out


def ranks_with_ties(scores: np.ndarray, tie_margin: float) -> list[int]:
    """Dense ranks, 0 = highest score; a score within ``tie_margin`` of the next higher one
    shares its rank. If that would tie everything, the single highest score ranks alone.

    scores: (K,). Example: ``[0.9, 0.5, 0.88, 0.1]`` with margin 0.05 gives ``[0, 1, 0, 2]``.
    """
    order = np.argsort(-scores, kind="stable")
    ranks = np.zeros(len(scores), dtype=int)
    for prev, cur in zip(order[:-1], order[1:]):
        ranks[cur] = ranks[prev] + (scores[prev] - scores[cur] > tie_margin)
    if ranks.max() == 0:
        ranks[:] = 1
        ranks[order[0]] = 0
    return ranks.tolist()


@dataclass
class SimulatedLabeler(Labeler):
    """One simulated labeler (see the module docstring)."""

    labeler_id: str
    """Written into every record."""
    weights: np.ndarray
    """(len(QUALITIES),) non-negative, summing to 1."""
    noise: float
    """Standard deviation of the per-response score noise."""
    scorer: QualityScorer
    """Measures the features (shared by a panel, so embeddings are computed once per batch)."""
    seed: int = 0
    """Fixes this labeler's noise draws."""
    tie_margin: float = 0.02
    """Scores closer than this tie."""

    def scores(self, prompt: PromptInput, responses: Sequence[str], measured: Measured) -> np.ndarray:
        """``weights . features + noise * z`` for each response: (K,)."""
        text = prompt_text(prompt)
        z = np.array([_normal(f"{self.seed}\x00{text}\x00{r}") for r in responses])
        return measured.features @ self.weights + self.noise * z

    def rank(self, prompt: PromptInput, responses: Sequence[str]) -> Ranking:
        return self.rank_many([(prompt, responses)])[0]

    def rank_many(self, items: Sequence[tuple[PromptInput, Sequence[str]]]) -> list[Ranking]:
        return [self.rank_measured(p, rs, m) for (p, rs), m in zip(items, self.scorer.measure(items))]

    def rank_measured(self, prompt: PromptInput, responses: Sequence[str], measured: Measured) -> Ranking:
        """The ranking of already measured responses (a panel measures once for all members)."""
        scores = self.scores(prompt, responses, measured)
        likert = np.clip(np.rint(1 + 6 * scores), 1, 7).astype(int).tolist()
        relevance = measured.features[:, QUALITIES.index("relevance")]
        metadata = []
        for k in range(len(responses)):
            flags = {
                "fails_to_follow_instruction": bool(not measured.constraints_met[k] or relevance[k] < 0.2),
                "expresses_opinion": bool(measured.opinion[k]),
            }
            if measured.has_constraints:
                flags["satisfies_constraint"] = bool(measured.constraints_met[k])
            metadata.append(flags)
        return Ranking(
            prompt=prompt,
            responses=list(responses),
            ranks=ranks_with_ties(scores, self.tie_margin),
            labeler_id=self.labeler_id,
            likert=likert,
            metadata=metadata,
        )

    def compare(self, prompt: PromptInput, response_a: str, response_b: str) -> Comparison:
        return self.compare_many([(prompt, response_a, response_b)])[0]

    def compare_many(self, items: Sequence[tuple[PromptInput, str, str]]) -> list[Comparison]:
        measured = self.scorer.measure([(p, (a, b)) for p, a, b in items])
        return [self.compare_measured(p, a, b, m) for (p, a, b), m in zip(items, measured)]

    def compare_measured(self, prompt: PromptInput, a: str, b: str, measured: Measured) -> Comparison:
        """The choice between two already measured responses."""
        score_a, score_b = self.scores(prompt, (a, b), measured)
        preferred = "tie" if abs(score_a - score_b) <= self.tie_margin else "a" if score_a > score_b else "b"
        return Comparison(prompt=prompt, response_a=a, response_b=b, preferred=preferred, labeler_id=self.labeler_id)


def _normal(key: str) -> float:
    """A standard normal draw fixed by ``key`` (Box-Muller on two hashed uniforms)."""
    h = hash64(key)
    u1 = ((h >> 11) + 0.5) / 2.0**53
    u2 = ((hash64(key + "\x01") >> 11) + 0.5) / 2.0**53
    return float(np.sqrt(-2 * np.log(u1)) * np.cos(2 * np.pi * u2))


@dataclass
class LabelerDraw:
    """How a panel draws its simulated labelers."""

    weight_spread: float = 0.35
    """Log-normal sigma of each labeler's weights around ``BASE_WEIGHTS``."""
    noise: float = 0.08
    """Score noise (see ``Panel.calibrate`` to tune it to a target agreement)."""
    tie_margin: float = 0.02
    """Scores closer than this tie."""
    base_weights: np.ndarray = field(default_factory=lambda: BASE_WEIGHTS.copy())
    """Mean weights over ``QUALITIES``."""


def draw_labelers(
    prefix: str, count: int, draw: LabelerDraw, scorer: QualityScorer, rng: np.random.Generator
) -> list[SimulatedLabeler]:
    """``count`` labelers named ``{prefix}-{i}``, each with weights drawn from ``rng``."""
    labelers = []
    for i in range(count):
        weights = draw.base_weights * rng.lognormal(0.0, draw.weight_spread, len(QUALITIES))
        labelers.append(
            SimulatedLabeler(
                labeler_id=f"{prefix}-{i}",
                weights=weights / weights.sum(),
                noise=draw.noise,
                scorer=scorer,
                seed=int(rng.integers(2**62)),
                tie_margin=draw.tie_margin,
            )
        )
    return labelers
