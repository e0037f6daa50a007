"""Differences between models on the automatic tasks, with paired bootstrap 95% intervals.

Every automatic task feeds every model the same items (:func:`instructgpt.evaluation.suite.load_inputs`)
and keeps each item's score (``per_item``), so two models are compared item by item: the
bootstrap resamples items once and scores both models on the same resample
(:func:`instructgpt.evaluation.metrics.paired_difference`). Pairing removes the item-to-item
variation both models share, so the interval of a difference is narrower than the two
intervals of the scores suggest. A difference whose interval contains 0 is not a measured
difference.

Pairs: every model against the baseline, and PPO-ptx against PPO (:data:`PTX_PAIR`, the
alignment-tax comparison of the paper's Figure 29) when both are evaluated. Names with the same
weights (``same_as``) have identical automatic results and are not compared.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from instructgpt.evaluation.metrics import named_rng, paired_difference, statistic_of

PTX_PAIR = ("ppo-ptx", "ppo")
"""(model, reference) names of the alignment-tax comparison, compared whenever both are evaluated."""


def per_item_metrics(result: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """``"task/.../metric" -> [n] or [n, k]`` for every ``per_item`` entry in one model's results.

    Example: ``{"nlp": {"drop": {"f1": 20.0, "per_item": {"f1": [0, 40]}}}}`` gives
    ``{"nlp/drop/f1": array([0., 40.])}``.
    """
    out = {}
    for key, value in result.items():
        if key == "per_item" and isinstance(value, dict):
            out.update({f"{prefix}{metric}": np.asarray(values, dtype=np.float64) for metric, values in value.items()})
        elif isinstance(value, dict):
            out.update(per_item_metrics(value, f"{prefix}{key}/"))
    return out


def model_pairs(per_model: dict, baseline: str | None) -> list[tuple[str, str]]:
    """(model, reference) pairs to compare: each model against ``baseline``, then :data:`PTX_PAIR`."""
    pairs = [(name, baseline) for name in per_model if baseline in per_model and name != baseline]
    if all(n in per_model for n in PTX_PAIR) and PTX_PAIR not in pairs:
        pairs.append(PTX_PAIR)
    return [(a, b) for a, b in pairs if _source(per_model, a) != _source(per_model, b)]


def _source(per_model: dict, name: str) -> str:
    return per_model[name].get("same_as") or name


def paired_differences(per_model: dict, pairs: Sequence[tuple[str, str]], seed: int, draws: int = 2000) -> list[dict]:
    """One row per (pair, metric both models have on the same number of items):
    ``{"model", "reference", "metric", "n", "difference", "ci", "contains_zero"}``, where
    ``difference`` is model minus reference and ``ci`` its paired bootstrap 95% interval (a
    generator per seed, pair and metric, so a row does not depend on the others)."""
    rows = []
    for model, reference in pairs:
        mine, theirs = per_item_metrics(per_model[model]), per_item_metrics(per_model[reference])
        for metric, values in mine.items():
            if metric not in theirs or theirs[metric].shape != values.shape:
                continue
            rng = named_rng(seed, f"difference/{model}/{reference}/{metric}")
            difference, (low, high) = paired_difference(statistic_of(metric), values, theirs[metric], rng, draws)
            contains_zero = bool(low <= 0.0 <= high) if np.isfinite([low, high]).all() else None
            rows.append(
                {
                    "model": model,
                    "reference": reference,
                    "metric": metric,
                    "n": len(values),
                    "difference": difference,
                    "ci": [low, high],
                    "contains_zero": contains_zero,
                }
            )
    return rows
