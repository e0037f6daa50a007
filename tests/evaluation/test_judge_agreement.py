"""The judge-agreement figures of issue 22's bar, on hand-made rows (pure functions, no model)."""

import numpy as np
import pytest

from instructgpt.evaluation import toxicity, truthfulqa


def toxicity_rows():
    """Model a: respectful lowers toxicity by 0.4-0.45 (interval excludes 0); model b: no effect."""
    scores = {("a", "basic"): [0.5, 0.6, 0.7], ("a", "respectful"): [0.1, 0.2, 0.25]}
    scores |= {("b", "basic"): [0.2, 0.3, 0.4], ("b", "respectful"): [0.3, 0.3, 0.3]}
    return [
        {"model_type": m, "condition": c, "context": f"prompt {i}", "sample": "x", "toxicity": s}
        for (m, c), values in scores.items()
        for i, s in enumerate(values)
    ]


def test_toxicity_agreement_means_and_the_respectful_effect():
    rows = toxicity_rows()
    shifted = toxicity.paper_agreement(rows, [r["toxicity"] + 0.01 for r in rows])
    assert shifted["pearson"] == pytest.approx(1.0) and shifted["worst_mean_difference"] == pytest.approx(0.01)
    assert shifted["groups_over_0.02"] == 0 and shifted["mean_differences"]["a/basic"] == pytest.approx(0.01)
    effect = shifted["respectful_effect"]["a"]
    # differences -0.4, -0.4, -0.45: mean -0.4167, sd 0.0289, t_2 = 4.303: half-width 0.0717
    assert effect["perspective"] == pytest.approx(-0.41667, abs=1e-4) and effect["ours"] == pytest.approx(
        -0.41667, abs=1e-4
    )
    assert effect["perspective_ci"] == pytest.approx((-0.4884, -0.3450), abs=1e-3) and effect["significant"]
    assert not shifted["respectful_effect"]["b"]["significant"]
    assert shifted["respectful_reproduced"] == shifted["respectful_significant"] == 1
    # a scorer that misses the respectful effect: model a's respectful means 0.4 too high
    flat = toxicity.paper_agreement(rows, [r["toxicity"] + 0.4 * (r["condition"] == "respectful") for r in rows])
    assert not flat["respectful_effect"]["a"]["reproduced"] and flat["respectful_reproduced"] == 0
    assert flat["worst_mean_difference"] == pytest.approx(0.4) and flat["groups_over_0.02"] == 2


def test_truthfulqa_rates_per_model_type():
    rows = [
        {"model_type": m, "prompt": p, "true": t}
        for m, p, t in [("gpt", "qa", 0.9), ("gpt", "qa", 0.1), ("gpt", "instruction_qa", 0.2), ("ppo", "qa", 0.8)]
    ]
    out = truthfulqa.rates_agreement(rows, np.array([0.6, 0.4, 0.7, 0.3]), "true")
    assert out["per_model"]["gpt"] == {"n": 3, "ours": pytest.approx(2 / 3), "gpt_judge": pytest.approx(1 / 3)}
    assert out["per_model"]["ppo"] == {"n": 1, "ours": 0.0, "gpt_judge": 1.0}
    assert out["agreement"] == 0.5 and out["worst_model_difference"] == 1.0 and out["models_over_5_points"] == 2
    assert out["worst_model_prompt_difference"] == 1.0  # gpt / instruction_qa and ppo / qa


@pytest.mark.parametrize(("ours_yes", "over"), [(55, False), (56, True), (45, False), (44, True)])
def test_exactly_5_points_is_within(ours_yes, over):
    """15 of 300 answers (0.55 against 0.50) is 5.00 points: within, although 0.55 - 0.50 > 0.05 in floating point."""
    rows = [{"model_type": "m", "prompt": "qa", "true": float(i < 50)} for i in range(100)]
    predicted = np.array([float(i < ours_yes) for i in range(100)])
    assert truthfulqa.rates_agreement(rows, predicted, "true")["models_over_5_points"] == int(over)
