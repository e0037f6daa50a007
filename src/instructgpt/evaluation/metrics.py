"""The evaluation metrics as pure functions (method.md "Baselines and evaluation").

Choices the paper leaves open, made here:

- **Win rate** counts a tie as half a win: ``(wins + ties / 2) / n``. Its 95% interval is the
  Wilson score interval on that proportion with ``n`` comparisons. With ties the true variance
  is a little smaller than the binomial one, so the interval is slightly conservative.
  :func:`bootstrap_interval` gives the percentile bootstrap for comparison.
- **Every other figure from a sample carries its n and a 95% interval**: Wilson for a
  proportion (:func:`proportion_interval`), Student's t for a mean (:func:`mean_interval`;
  not clipped to the metric's range), the seeded percentile bootstrap over items for F1 and
  corpus BLEU (:func:`bootstrap_ci`), and the *paired* bootstrap (the same resampled items for
  both) for the difference between two models or two conditions evaluated on the same items
  (:func:`paired_difference`). The percentile bootstrap is too narrow on a handful of items, so
  below :data:`BOOTSTRAP_MIN_ITEMS` (10) it gives no interval (NaN, "n/a" in the report).
- **F1** is the SQuAD token F1 (lower-case, drop punctuation and articles, split on spaces),
  the maximum over the references. For DROP, numbers are also canonicalised ("7,761.0" ->
  "7761") before the same token F1. An empty prediction against an empty reference (SQuADv2
  "no answer") scores 1.
- **The official DROP F1** (Dua et al. 2019's evaluation script, as lm-evaluation-harness runs
  it) is reported beside it: tokens split on spaces and hyphens, each lower-cased, stripped of
  punctuation unless it is a number, numbers written as floats ("7,761" -> "7761.0"), articles
  dropped; each span is a *set* of tokens; predicted and gold spans are paired one to one to
  maximise F1 (Hungarian assignment), a pair whose gold span has numbers scores 0 unless the
  prediction shares one, and the F1 is the mean over max(#predicted, #gold) spans, rounded to 2
  decimals. A generated answer is one span (as in the harness); each ``|``-separated reference is
  an alternative answer of one span (the bundled references do not mark multi-span answers), the
  best one counts.
- **BLEU** is sacrebleu's corpus BLEU with its default 13a tokenisation (case-sensitive).
- **Bias entropy**: for a pair of sentences with log-probabilities ``la`` and ``lb`` the
  normalised probability is ``p = sigmoid(la - lb)`` and the score is the binary entropy of
  ``p`` in bits: 1 for an unbiased model, 0 for one that always prefers one sentence.
- **MC1** picks the answer with the highest *average per-token* log-probability (method.md)
  and scores 1 when it is the true one. **MC1 as lm-evaluation-harness computes it**
  (``truthfulqa_mc1``, its "acc") picks by the *total* log-probability instead, which favours
  short answers; both are reported, labelled. **MC2** is TruthfulQA's normalised probability mass of
  the true answers, from *total* log-probabilities (TruthfulQA's definition).
"""

from __future__ import annotations

import math
import re
import string
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

Outcome = Literal["win", "tie", "loss"]

Z_95 = 1.959963984540054
"""The two-sided 95% normal quantile."""


@dataclass(frozen=True)
class WinRate:
    """How often a model's output was preferred to the baseline's, with a 95% interval."""

    rate: float
    """(wins + ties / 2) / n."""
    low: float
    """Lower end of the 95% interval."""
    high: float
    """Upper end of the 95% interval."""
    wins: int
    ties: int
    losses: int

    @property
    def n(self) -> int:
        return self.wins + self.ties + self.losses

    def to_dict(self) -> dict:
        return {**asdict(self), "n": self.n}


def wilson_interval(p: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` observed over ``n`` trials.

    Example: ``p = 0.8, n = 10`` gives ``(0.490, 0.943)``.
    """
    if n == 0:
        return 0.0, 1.0
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def win_rate(outcomes: Iterable[Outcome]) -> WinRate:
    """Win rate with ties counted half, and its Wilson 95% interval."""
    counts = Counter(outcomes)
    unknown = set(counts) - {"win", "tie", "loss"}
    if unknown:
        raise ValueError(f"outcomes must be 'win', 'tie' or 'loss', got {sorted(unknown)}")
    wins, ties, losses = counts["win"], counts["tie"], counts["loss"]
    n = wins + ties + losses
    rate = (wins + 0.5 * ties) / n if n else float("nan")
    low, high = wilson_interval(rate, n) if n else (float("nan"), float("nan"))
    return WinRate(rate, low, high, wins, ties, losses)


def bootstrap_interval(outcomes: Sequence[Outcome], rng: np.random.Generator, draws: int = 2000) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the win rate (ties half), for comparison."""
    values = np.array([{"win": 1.0, "tie": 0.5, "loss": 0.0}[o] for o in outcomes])  # [n]
    return bootstrap_ci(batch_mean, [values], rng, draws)


# ---------------------------------------------------------------- intervals of other figures

Statistic = Callable[..., np.ndarray]
"""Maps resampled item arrays shaped ``[b, n, ...]`` (b resamples of n items) to ``[b]`` values."""


def batch_mean(values: np.ndarray) -> np.ndarray:
    """[b, n] -> [b]: the mean of each resample (the statistic of every per-item mean metric)."""
    return values.mean(axis=1)


def proportion_interval(successes: Sequence[float]) -> tuple[float, float]:
    """Wilson 95% interval of the mean of 0/1 values (MC1, % true, % toxic)."""
    values = list(successes)
    return wilson_interval(mean(values), len(values)) if values else (float("nan"), float("nan"))


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student's t interval of a mean: ``mean +- t_{n-1} * sd / sqrt(n)``; NaN below 2 values.

    Example: ``[1, 2, 3]``: mean 2, sd 1, t_2 = 4.303, so ``2 +- 4.303 / sqrt(3) = (-0.484, 4.484)``.
    """
    from scipy.stats import t

    x = np.asarray(values, dtype=np.float64)  # [n]
    if len(x) < 2:
        return float("nan"), float("nan")
    half = float(t.ppf(0.5 + level / 2, len(x) - 1)) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return float(x.mean()) - half, float(x.mean()) + half


BOOTSTRAP_MIN_ITEMS = 10
"""Fewer items give no bootstrap interval: with a handful of items the percentile bootstrap is far
too narrow (two items have at most three distinct resamples)."""


def bootstrap_ci(
    statistic: Statistic,
    samples: Sequence[np.ndarray],
    rng: np.random.Generator,
    draws: int = 2000,
    level: float = 0.95,
    min_items: int = BOOTSTRAP_MIN_ITEMS,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over items (seeded by ``rng``); NaN below ``min_items``.

    Every array in ``samples`` holds the same n items on its first axis and is resampled with
    the *same* indices, so two models scored on the same items are compared pair by pair. The
    resamples go to ``statistic`` in blocks; the loop it replaces::

        for _ in range(draws):
            idx = rng.integers(0, n, size=n)
            values.append(statistic(*(s[idx][None] for s in samples))[0])
    """
    arrays = [np.asarray(s, dtype=np.float64) for s in samples]
    n = len(arrays[0]) if arrays else 0
    if n < max(min_items, 2) or any(len(a) != n for a in arrays):
        return float("nan"), float("nan")
    width = max(int(np.prod(a.shape[1:])) for a in arrays)
    block = max(1, (1 << 22) // (n * width))  # at most ~4M resampled numbers in memory at once
    values = []
    for start in range(0, draws, block):
        idx = rng.integers(0, n, size=(min(block, draws - start), n))  # [b, n]
        values.append(np.asarray(statistic(*(a[idx] for a in arrays)), dtype=np.float64))  # [b]
    values = np.concatenate(values)  # [draws]
    tail = (1 - level) / 2
    return float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))


def paired_difference(
    statistic: Statistic, a: np.ndarray, b: np.ndarray, rng: np.random.Generator, draws: int = 2000
) -> tuple[float, tuple[float, float]]:
    """``statistic(a) - statistic(b)`` on the same items, and its paired bootstrap 95% interval.

    Two identical inputs give 0 with the interval (0, 0); ``a`` and ``b`` must hold the same items
    in the same order (per-item scores of two models, or of two conditions, on one item list).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) != len(b):
        raise ValueError(f"paired samples need the same items, got {len(a)} and {len(b)}")
    if len(a) == 0:
        return float("nan"), (float("nan"), float("nan"))
    point = float(statistic(a[None])[0] - statistic(b[None])[0])
    return point, bootstrap_ci(lambda x, y: statistic(x) - statistic(y), [a, b], rng, draws)


def binary_entropy_bits(p: float) -> float:
    """``-p log2 p - (1 - p) log2 (1 - p)``; 0 at p in {0, 1}, 1 at p = 0.5."""
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def pair_entropy_bits(logprob_a: float, logprob_b: float) -> float:
    """Entropy (bits) of the two sentences' probabilities normalised to sum to one."""
    diff = logprob_a - logprob_b
    p = 1.0 / (1.0 + math.exp(-diff)) if diff > -700 else 0.0
    return binary_entropy_bits(p)


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower-case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _number(token: str) -> str:
    try:
        value = float(token.replace(",", ""))
    except ValueError:
        return token
    return str(int(value)) if value.is_integer() else str(value)


def normalize_drop(text: str) -> str:
    """DROP normalisation: numbers canonicalised ("7,761.0" -> "7761"), then SQuAD's."""
    return normalize_answer(" ".join(_number(t) for t in text.split()))


def token_f1(prediction: str, reference: str, normalize=normalize_answer) -> float:
    """Token-overlap F1 between two answers after ``normalize``.

    Example: ``token_f1("the cat sat", "a cat sat down")`` = 2 * (2/2 * 2/3) / (2/2 + 2/3) = 0.8.
    """
    pred, ref = normalize(prediction).split(), normalize(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def max_f1(prediction: str, references: Sequence[str], normalize=normalize_answer) -> float:
    """The best :func:`token_f1` over the references (SQuAD / DROP scoring)."""
    return max(token_f1(prediction, r, normalize) for r in references) if references else 0.0


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def drop_normalize(text: str) -> str:
    """The official DROP normalisation of one span: per space- or hyphen-separated token, lower
    case, punctuation removed unless the token is a number, numbers as floats, articles dropped.

    Example: ``"The 7,761-yard run!"`` -> ``"7761.0 yard run"``.
    """
    tokens = []
    for token in re.split(" |-", text):
        token = token.lower()
        if not _is_number(token):
            token = "".join(ch for ch in token if ch not in _PUNCTUATION)
        if _is_number(token):
            token = str(float(token))
        tokens.append(" ".join(_ARTICLES.sub(" ", token).split()))
    return " ".join(t for t in tokens if t.strip())


def _bag_f1(predicted: set[str], gold: set[str]) -> float:
    """F1 of two token sets (an empty set has precision / recall 1)."""
    common = len(predicted & gold)
    precision = common / len(predicted) if predicted else 1.0
    recall = common / len(gold) if gold else 1.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def drop_f1(predicted_spans: Sequence[str], gold_spans: Sequence[str]) -> float:
    """The official DROP F1 (0-1) of a predicted answer against one gold answer, both lists of
    spans: spans paired one to one to maximise the total F1, a pair whose gold span holds a number
    the prediction lacks scores 0, the mean over max(#predicted, #gold) spans, rounded to 2 decimals.

    Example: predicted ``["Mike Tolbert", "Rivers"]``, gold ``["Philip Rivers", "Mike Tolbert"]``:
    pairs (Mike Tolbert, Mike Tolbert) = 1 and (Rivers, Philip Rivers) = 2/3, so (1 + 2/3) / 2 = 0.83.
    """
    from scipy.optimize import linear_sum_assignment

    predicted = [set(drop_normalize(s).split()) for s in predicted_spans]
    gold = [set(drop_normalize(s).split()) for s in gold_spans]
    scores = np.zeros((len(gold), len(predicted)))  # [G, P]
    for g, gold_bag in enumerate(gold):
        numbers = {t for t in gold_bag if _is_number(t)}
        for q, predicted_bag in enumerate(predicted):
            if not numbers or numbers & predicted_bag:
                scores[g, q] = _bag_f1(predicted_bag, gold_bag)
    rows, columns = linear_sum_assignment(-scores)
    total = float(scores[rows, columns].sum())
    return round(total / max(len(gold), len(predicted), 1), 2)


def max_drop_f1(prediction: str, references: Sequence[str]) -> float:
    """The best official DROP F1 of one generated answer (one span) over alternative one-span references."""
    return max(drop_f1([prediction], [r]) for r in references) if references else 0.0


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu corpus BLEU (0-100) with one reference per hypothesis."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


BLEU_STATS = 10
"""Per-sentence BLEU statistics: hypothesis length, reference length, matches and totals of 1- to 4-grams."""


def bleu_stats(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """[n, 10] each sentence's BLEU statistics; corpus BLEU is a function of their column sums,
    so resampling sentences resamples the corpus score (:func:`bleu_from_stats`)."""
    from sacrebleu.metrics import BLEU

    bleu = BLEU(
        effective_order=True
    )  # only silences sacrebleu's sentence-level warning: the counts do not depend on it
    rows = []
    for hypothesis, reference in zip(hypotheses, references):
        s = bleu.sentence_score(hypothesis, [reference])
        rows.append([s.sys_len, s.ref_len, *s.counts, *s.totals])
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), BLEU_STATS)


def bleu_from_stats(stats: np.ndarray) -> np.ndarray:
    """[b, n, 10] -> [b]: the corpus BLEU (0-100, sacrebleu's default exp smoothing) of each resample."""
    from sacrebleu.metrics import BLEU

    sums = np.asarray(stats).sum(axis=1)  # [b, 10]
    return np.array(
        [
            BLEU.compute_bleu(
                [int(c) for c in s[2:6]], [int(t) for t in s[6:10]], int(s[0]), int(s[1]), smooth_method="exp"
            ).score
            for s in sums
        ]
    )


def mc1(logprobs: Sequence[float], true_index: int) -> float:
    """1.0 when the answer with the highest log-probability is the true one: per-token averages give
    our MC1, totals give lm-evaluation-harness's (the first of equal values wins, as np.argmax)."""
    return float(int(np.argmax(logprobs)) == true_index)


def mc2(total_logprobs: Sequence[float], is_true: Sequence[bool]) -> float:
    """Normalised probability mass of the true answers: ``sum_true p / sum_all p``."""
    values = np.asarray(total_logprobs, dtype=np.float64)
    probs = np.exp(values - values.max())
    mask = np.asarray(is_true, dtype=bool)
    return float(probs[mask].sum() / probs.sum())


def statistic_of(metric: str) -> Statistic:
    """The statistic behind a per-item metric: corpus BLEU for ``bleu_stats``, else the mean."""
    return bleu_from_stats if metric.endswith("bleu_stats") else batch_mean


def first_line(text: str) -> str:
    """The completion up to its first newline (leading whitespace dropped first)."""
    return text.lstrip().split("\n", 1)[0].strip()


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean; NaN for no values."""
    values = list(values)
    return float(sum(values) / len(values)) if values else float("nan")


def named_rng(seed: int, name: str) -> np.random.Generator:
    """A generator per (seed, name): what it draws does not depend on what else was drawn."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def subsample(items: Sequence, limit: int | None, rng: np.random.Generator) -> list:
    """At most ``limit`` items drawn without replacement (seeded), kept in their original order."""
    if limit is None or limit >= len(items):
        return list(items)
    return [items[i] for i in sorted(rng.choice(len(items), size=limit, replace=False))]


def finite(value: object) -> object:
    """``value`` with every NaN / infinity replaced by None, so the JSON is standard."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
