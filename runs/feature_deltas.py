"""Where a judged model wins or loses: the simulated labelers' quality features, model minus baseline.

    .venv/bin/python runs/feature_deltas.py COMPARISONS.jsonl [--out FILE.json]

COMPARISONS.jsonl is an evaluation's ``comparisons.jsonl`` (``eval/`` of a pipeline run, or
``sweeps/ppo-kl/eval/`` of runs/sweep_ppo_kl.py). For every model it measures both answers of each
comparison with :class:`~instructgpt.labelers.simulated.QualityScorer` (the features the simulated
labelers weigh: constraints, relevance, no_repetition, finished, length) and prints the mean
difference per feature, the mean difference of the panel's mean-weighted sum, and the win rate the
judge gave. A policy that learns one quality at the cost of another (e.g. on-topic but cut off)
shows here, where a win rate alone does not say why.
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

import numpy as np
import tyro

from instructgpt.labelers.simulated import BASE_WEIGHTS, QUALITIES, QualityScorer

OUTCOME = {"win": 1.0, "tie": 0.5, "loss": 0.0}


def deltas(rows: list[dict], scorer: QualityScorer) -> dict[str, dict]:
    """Per model: its win rate, mean feature differences (model - baseline) and of the weighted sum."""
    by_model = collections.defaultdict(list)
    for row in rows:
        by_model[row["model"]].append(row)
    out = {}
    for model, items in by_model.items():
        measured = scorer.measure([(r["prompt"], [r["response"], r["baseline_response"]]) for r in items])
        diff = np.array([m.features[0] - m.features[1] for m in measured])  # [n, Q]
        weighted = diff @ BASE_WEIGHTS
        out[model] = {
            "n": len(items),
            "win_rate": float(np.mean([OUTCOME[r["outcome"]] for r in items])),
            "feature_deltas": dict(zip(QUALITIES, map(float, diff.mean(0)))),
            "weighted_delta": float(weighted.mean()),
            "share_weighted_better": float(np.mean(weighted > 0)),
        }
    return out


def main(comparisons: tyro.conf.Positional[Path], out: Path | None = None) -> None:
    rows = [json.loads(line) for line in comparisons.read_text(encoding="utf-8").splitlines() if line.strip()]
    table = deltas(rows, QualityScorer())
    print(f"{'model':<40} {'win':>5} " + " ".join(f"{q[:10]:>10}" for q in QUALITIES) + "   weighted")
    for model, row in table.items():
        cells = " ".join(f"{row['feature_deltas'][q]:+10.3f}" for q in QUALITIES)
        print(f"{model[:40]:<40} {row['win_rate']:5.2f} {cells}   {row['weighted_delta']:+.3f}")
    if out:
        out.write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(tyro.cli(main))
