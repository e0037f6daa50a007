"""Judges of pairwise preference, and the blind harness that turns their choices into win rates.

The protocol is small: a judge has a ``name``, a one-line ``description`` (it goes into the
report's statement of what was measured) and

    compare(prompts, responses_a, responses_b) -> list["a" | "b" | "tie"]

and optionally, for 1-7 Likert scores and the Table 3 metadata, either
``rate_outputs(prompts, outputs) -> list[list[Rating]]`` (``outputs[i]``: every model's output to
prompt ``i``, in the order shown; a rating per output) or ``rate(prompts, responses) ->
list[Rating]`` (one output per item). Four judges are provided:

- :class:`RewardModelJudge`: any ``score(prompts, responses) -> list[float]`` callable (a
  trained reward model); the higher score wins, a difference within ``tie_margin`` is a tie;
- :class:`LabelerJudge`: an adapter for labeler objects (the simulated panel's held-out
  labelers, an LLM labeler behind an OpenAI-compatible endpoint) with
  ``compare(prompt, response_a, response_b) -> Comparison`` and optionally
  ``rate(prompt, response)`` returning a :class:`Rating`-like object or dict;
- :class:`HumanComparisonsJudge`: comparisons people made in the labeling app, read from its
  exported ``Comparison`` JSONL and looked up by prompt and response pair.

:func:`blind_outcomes` and :func:`blind_ratings` are the only ways the evaluation calls a judge.
For each prompt, :func:`blind_outcomes` flips a seeded coin to decide which of the two outputs is
shown as ``a`` and maps the choice back to win / tie / loss for the evaluated model;
:func:`blind_ratings` shows every model's output in a seeded random order and maps each rating
back to its model. Neither passes model names, so a judge that favours a position (the first
output, ``a``) favours every model equally often.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from instructgpt.data.schemas import METADATA_FLAGS, Comparison, prompt_text
from instructgpt.evaluation.metrics import Outcome

Choice = Literal["a", "b", "tie"]


@dataclass
class Rating:
    """One judge's rating of one output: Likert 1-7 and yes/no metadata (paper Table 3)."""

    likert: int | None = None
    """Overall quality, 1 (worst) .. 7 (best); None when the judge gives none."""
    metadata: dict[str, bool] = field(default_factory=dict)
    """Answers keyed by :data:`instructgpt.data.schemas.METADATA_FLAGS`; missing = not answered."""


@runtime_checkable
class Judge(Protocol):
    """Chooses the better of two responses to each prompt."""

    name: str
    description: str

    def compare(
        self, prompts: Sequence[Any], responses_a: Sequence[str], responses_b: Sequence[str]
    ) -> list[Choice]: ...


def blind_outcomes(
    judge: Judge,
    prompts: Sequence[Any],
    responses: Sequence[str],
    baseline_responses: Sequence[str],
    rng: np.random.Generator,
) -> list[Outcome]:
    """Win / tie / loss of ``responses`` against ``baseline_responses`` as ``judge`` sees them.

    The order is randomised per prompt (seeded by ``rng``) and the judge never learns which
    model wrote which output. Identical outputs are a tie without asking the judge.
    """
    swap = rng.random(len(prompts)) < 0.5  # [n] True: the baseline is shown as "a"
    ask = [i for i in range(len(prompts)) if responses[i] != baseline_responses[i]]
    shown_a = [baseline_responses[i] if swap[i] else responses[i] for i in ask]
    shown_b = [responses[i] if swap[i] else baseline_responses[i] for i in ask]
    choices = judge.compare([prompts[i] for i in ask], shown_a, shown_b) if ask else []
    outcomes: list[Outcome] = ["tie"] * len(prompts)
    for i, choice in zip(ask, choices):
        if choice == "tie":
            continue
        model_shown = "b" if swap[i] else "a"
        outcomes[i] = "win" if choice == model_shown else "loss"
    return outcomes


def blind_ratings(
    judge: Any, prompts: Sequence[Any], responses: dict[str, Sequence[str]], rng: np.random.Generator
) -> dict[str, list[Rating]]:
    """Every model's rating on every prompt as ``judge`` gives them, shown in a random order.

    For each prompt the models' outputs are put in a seeded random order (``rng``) without model
    names; the judge's ``rate_outputs(prompts, outputs)`` rates them together (a ranking screen), or
    its ``rate(prompts, responses)`` rates them one by one in that order (prompt by prompt). Each
    rating is mapped back to the model that wrote the output. Equivalent to, per prompt ``i``::

        order = rng.permutation(len(names))            # shown position -> model
        shown = [responses[names[j]][i] for j in order]
        for position, j in enumerate(order):
            out[names[j]][i] = judge_ratings_of(shown)[position]
    """
    names = list(responses)
    orders = np.argsort(rng.random((len(prompts), len(names))), axis=1)  # [n, M] shown position -> model index
    shown = [[responses[names[j]][i] for j in order] for i, order in enumerate(orders)]
    if callable(getattr(judge, "rate_outputs", None)):
        rated = judge.rate_outputs(prompts, shown)
    else:  # one output per item, grouped by prompt in the shown order
        flat = judge.rate([p for p, outputs in zip(prompts, shown) for _ in outputs], [t for o in shown for t in o])
        rated = [flat[i * len(names) : (i + 1) * len(names)] for i in range(len(prompts))]
    out = {n: [Rating() for _ in prompts] for n in names}
    for i, order in enumerate(orders):
        for position, j in enumerate(order):
            out[names[j]][i] = as_rating(rated[i][position])
    return out


class RewardModelJudge:
    """The response with the higher reward-model score wins.

    ``score`` is any ``(prompts, responses) -> list[float]`` callable, e.g. a trained reward
    model's ``score`` method. Scores within ``tie_margin`` of each other are a tie.
    """

    def __init__(
        self,
        score: Callable[[Sequence[Any], Sequence[str]], Sequence[float]],
        name: str = "reward-model",
        tie_margin: float = 0.0,
        description: str | None = None,
    ):
        self.score = score
        self.name = name
        self.tie_margin = tie_margin
        self.description = description or f"reward model '{name}' (higher score wins; ties within {tie_margin})"

    def compare(self, prompts, responses_a, responses_b) -> list[Choice]:
        scores_a = list(self.score(prompts, responses_a))
        scores_b = list(self.score(prompts, responses_b))
        return [_by_score(a, b, self.tie_margin) for a, b in zip(scores_a, scores_b)]


def _by_score(a: float, b: float, margin: float) -> Choice:
    if abs(a - b) <= margin:
        return "tie"
    return "a" if a > b else "b"


class LabelerJudge:
    """Adapter for labeler objects (``instructgpt.labelers``): ``compare(prompt, a, b) -> Comparison``.

    Prompt ``i`` goes to labeler ``i mod L`` (round robin, so every labeler judges about the
    same number of pairs); a labeler with ``compare_many(items)`` gets its items in one call
    (the simulated labelers measure a whole batch at once). Likert scores and metadata come
    from ``rank_many`` / ``rank`` (a ``Ranking`` with ``likert`` and ``metadata``, as on the
    paper's ranking screen: the labeler ranks every model's output for the prompt together),
    or from ``rate(prompt, response)`` returning a :class:`Rating` or a dict.
    """

    def __init__(self, labelers: Sequence[Any], name: str = "labelers", description: str | None = None):
        if not labelers:
            raise ValueError("LabelerJudge needs at least one labeler")
        self.labelers = list(labelers)
        self.name = name
        ids = ", ".join(str(getattr(l, "labeler_id", i)) for i, l in enumerate(self.labelers))
        self.description = description or f"{len(self.labelers)} labeler(s) ({ids})"

    def _by_labeler(self, n: int) -> list[list[int]]:
        return [list(range(k, n, len(self.labelers))) for k in range(len(self.labelers))]

    def compare(self, prompts, responses_a, responses_b) -> list[Choice]:
        """A choice per pair. An empty (or blank) response loses to any other and ties with another
        empty one, without asking a labeler: labelers judge text, and records need some."""
        choices: list[Choice] = [_blank_choice(a, b) or "tie" for a, b in zip(responses_a, responses_b)]
        for labeler, rows in zip(self.labelers, self._by_labeler(len(prompts))):
            rows = [i for i in rows if _blank_choice(responses_a[i], responses_b[i]) is None]
            items = [(prompts[i], responses_a[i], responses_b[i]) for i in rows]
            many = getattr(labeler, "compare_many", None)
            records = many(items) if callable(many) else [labeler.compare(*item) for item in items]
            for i, record in zip(rows, records):
                choices[i] = _preferred(record)
        return choices

    @property
    def can_rate(self) -> bool:
        return all(callable(getattr(l, "rate", None)) or callable(getattr(l, "rank", None)) for l in self.labelers)

    def rate_outputs(self, prompts: Sequence[Any], outputs: Sequence[Sequence[str]]) -> list[list[Rating]]:
        """A rating per output of every prompt, in the order given (one labeler per prompt;
        :func:`blind_ratings` shuffles the order)."""
        out = [[Rating() for _ in texts] for texts in outputs]
        for labeler, rows in zip(self.labelers, self._by_labeler(len(prompts))):
            for i in rows:
                out[i] = self._rate_one(labeler, prompts[i], outputs[i])
        return out

    @staticmethod
    def _rate_one(labeler: Any, prompt: Any, texts: Sequence[str]) -> list[Rating]:
        if callable(getattr(labeler, "rate", None)):
            return [as_rating(labeler.rate(prompt, t)) for t in texts]
        distinct = [t for t in dict.fromkeys(texts) if t.strip()]  # in the order shown
        if len(distinct) < 2:  # a ranking needs two different outputs
            return [Rating() for _ in texts]
        ranking = labeler.rank(prompt, distinct)
        likert = ranking.likert or [None] * len(distinct)
        metadata = ranking.metadata or [{}] * len(distinct)
        per_text = {t: Rating(l, dict(m)) for t, l, m in zip(distinct, likert, metadata)}
        return [per_text.get(t, Rating()) for t in texts]


def _blank_choice(a: str, b: str) -> Choice | None:
    """'b' when only ``a`` is blank, 'a' when only ``b`` is, 'tie' when both are, else None."""
    if a.strip() and b.strip():
        return None
    return "tie" if not (a.strip() or b.strip()) else "a" if a.strip() else "b"


def _preferred(record: Any) -> Choice:
    value = record["preferred"] if isinstance(record, dict) else getattr(record, "preferred", record)
    if value not in ("a", "b", "tie"):
        raise ValueError(f"a labeler returned {value!r}; expected a Comparison or 'a' / 'b' / 'tie'")
    return value


def as_rating(value: Any) -> Rating:
    """A :class:`Rating` from a Rating, a dict or any object with ``likert`` / ``metadata``."""
    if isinstance(value, Rating):
        return value
    get = value.get if isinstance(value, dict) else lambda k, d=None: getattr(value, k, d)
    metadata = {k: bool(v) for k, v in (get("metadata", None) or {}).items() if k in METADATA_FLAGS}
    likert = get("likert", None)
    return Rating(int(likert) if likert is not None else None, metadata)


class HumanComparisonsJudge:
    """Choices people made in the labeling app, read from exported ``Comparison`` JSONL files.

    A pair is found by prompt text and the unordered pair of responses, so it matches whatever
    order the app showed. The app cannot show an empty output, so an empty output loses to a
    non-empty one. A pair nobody labeled raises ``KeyError`` naming how many are missing
    (``instructgpt eval`` then writes the pairs for the app, see ``suite.export_for_labeling``).
    """

    def __init__(self, paths: Sequence[str | Path], name: str = "human"):
        from instructgpt.data.jsonl import read_records

        self.records: dict[tuple[str, frozenset[str]], list[Comparison]] = {}
        for path in paths:
            for record in read_records(path, "comparisons"):
                key = (prompt_text(record.prompt), frozenset((record.response_a, record.response_b)))
                self.records.setdefault(key, []).append(record)
        self.name = name
        labelers = {r.labeler_id for group in self.records.values() for r in group}
        comparisons = sum(map(len, self.records.values()))
        self.description = (
            f"human labelers through the labeling app ({len(labelers)} labeler(s), {comparisons} comparisons)"
        )

    def compare(self, prompts, responses_a, responses_b) -> list[Choice]:
        choices, missing = [], 0
        for prompt, a, b in zip(prompts, responses_a, responses_b):
            if not (a.strip() and b.strip()):
                choices.append("tie" if not (a.strip() or b.strip()) else "a" if a.strip() else "b")
                continue
            group = self.records.get((_text(prompt), frozenset((a, b))))
            if not group:
                missing += 1
                continue
            votes = [_in_order(r, a) for r in group]  # majority of the labelers who judged it
            va, vb = votes.count("a"), votes.count("b")
            choices.append("a" if va > vb else "b" if vb > va else "tie")
        if missing:
            raise KeyError(f"{missing} of {len(prompts)} pairs have no human comparison; label them in the app first")
        return choices


def _text(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else prompt_text(prompt)


def _in_order(record: Comparison, a: str) -> Choice:
    """The record's choice expressed for the order in which ``a`` comes first."""
    if record.preferred == "tie" or record.response_a == a:
        return record.preferred
    return "b" if record.preferred == "a" else "a"


def tally_comparisons(records: Sequence[Comparison], baseline: str) -> dict[str, list[Outcome]]:
    """Outcomes per model against ``baseline`` from Comparison records that name their models."""
    out: dict[str, list[Outcome]] = {}
    for r in records:
        if baseline not in (r.model_a, r.model_b) or r.model_a == r.model_b or None in (r.model_a, r.model_b):
            continue
        model, side = (r.model_b, "b") if r.model_a == baseline else (r.model_a, "a")
        outcome: Outcome = "tie" if r.preferred == "tie" else "win" if r.preferred == side else "loss"
        out.setdefault(model, []).append(outcome)
    return out


def reward_model_scorer(path: str) -> Callable[[Sequence[Any], Sequence[str]], list[float]]:
    """``score(prompts, responses)`` of a reward model saved by ``instructgpt.models.reward``."""
    from instructgpt.models.reward import load_reward_model, score_texts

    model, tokenizer = load_reward_model(path)
    return lambda prompts, responses: score_texts(model, tokenizer, prompts, responses)


def load_callable(spec: str) -> Callable:
    """``"package.module:function"`` -> the function (how the CLI finds labelers and RM loaders)."""
    import importlib

    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ValueError(f"expected 'package.module:callable', got {spec!r}")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot load {spec!r}: {err}") from None
