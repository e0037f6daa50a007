"""Per-item scores, the NLP bootstrap and the paired differences between models."""

import numpy as np
import pytest

from instructgpt.evaluation import nlp
from instructgpt.evaluation.differences import PTX_PAIR, model_pairs, paired_differences, per_item_metrics


def items(n: int) -> list[nlp.Item]:
    return [nlp.Item(f"context {i}", [f"answer {i}", f"the answer {i}"]) for i in range(n)]


def test_nlp_summary_has_n_interval_and_per_item_scores():
    task_items = items(40)
    predictions = [f"answer {i}" if i % 2 else "wrong" for i in range(40)]
    summary = nlp.summarise("drop", predictions, task_items, np.random.default_rng(0))
    assert summary["n"] == 40 and summary["f1"] == pytest.approx(50.0)
    assert summary["f1"] == pytest.approx(np.mean(summary["per_item"]["f1"]))
    low, high = summary["f1_ci"]
    assert low < 50.0 < high
    assert summary["f1_ci"] == nlp.summarise("drop", predictions, task_items, np.random.default_rng(0))["f1_ci"]
    wide = nlp.summarise("drop", predictions[:10], task_items[:10], np.random.default_rng(0))["f1_ci"]
    assert wide[1] - wide[0] > high - low  # fewer items, wider interval


def test_nlp_bleu_summary_resamples_sentences():
    task_items = [nlp.Item(f"c{i}", [f"the cat number {i} sat on the mat"]) for i in range(30)]
    predictions = [f"the cat number {i} sat on a mat" if i % 3 else "a dog" for i in range(30)]
    summary = nlp.summarise("fr_en", predictions, task_items, np.random.default_rng(0))
    assert summary["bleu"] == pytest.approx(nlp.score("fr_en", predictions, task_items))
    assert np.asarray(summary["per_item"]["bleu_stats"]).shape == (30, 10)
    assert summary["bleu_ci"][0] < summary["bleu"] < summary["bleu_ci"][1]


def model_result(f1: list[float], entropy: list[float]) -> dict:
    return {
        "nlp": {"drop": {"n": len(f1), "f1": float(np.mean(f1)), "per_item": {"f1": f1}}},
        "bias": {
            "winogender": {
                "n": len(entropy),
                "entropy_bits": float(np.mean(entropy)),
                "per_item": {"entropy_bits": entropy},
            }
        },
        "seconds": {"nlp": 1.0},
    }


def test_per_item_metrics_and_pairs():
    result = model_result([0.0, 40.0], [1.0, 0.5])
    metrics = per_item_metrics(result)
    assert set(metrics) == {"nlp/drop/f1", "bias/winogender/entropy_bits"}
    np.testing.assert_array_equal(metrics["nlp/drop/f1"], [0.0, 40.0])
    per_model = {
        "sft": result,
        "ppo": result,
        "ppo-ptx": result,
        "pretrained": result,
        "prompted": {**result, "same_as": "pretrained"},
    }
    pairs = model_pairs(per_model, "sft")
    assert pairs == [("ppo", "sft"), ("ppo-ptx", "sft"), ("pretrained", "sft"), ("prompted", "sft"), PTX_PAIR]
    assert ("prompted", "pretrained") not in model_pairs(per_model, "pretrained")  # same weights: nothing to compare
    assert model_pairs({"a": result}, "missing") == []


def test_paired_differences_of_identical_and_of_shifted_models():
    rng = np.random.default_rng(0)
    f1 = rng.uniform(0, 100, size=80).tolist()
    entropy = rng.uniform(0.5, 1.0, size=80).tolist()
    per_model = {
        "sft": model_result(f1, entropy),
        "ppo": model_result(f1, entropy),
        "ppo-ptx": model_result([v + 10.0 for v in f1], entropy),
    }
    rows = {
        (r["model"], r["reference"], r["metric"]): r
        for r in paired_differences(per_model, model_pairs(per_model, "sft"), seed=0)
    }
    same = rows[("ppo", "sft", "nlp/drop/f1")]
    assert same["difference"] == 0.0 and same["ci"] == [0.0, 0.0] and same["contains_zero"] is True and same["n"] == 80
    shifted = rows[("ppo-ptx", "ppo", "nlp/drop/f1")]
    assert shifted["difference"] == pytest.approx(10.0) and shifted["ci"][0] > 0.0 and shifted["contains_zero"] is False
    assert rows[("ppo-ptx", "sft", "bias/winogender/entropy_bits")]["contains_zero"] is True
    again = paired_differences(per_model, [("ppo-ptx", "ppo")], seed=0)  # a row does not depend on the other pairs
    assert again[0]["ci"] == shifted["ci"]


def test_paired_differences_skip_metrics_on_different_items():
    per_model = {"sft": model_result([1.0, 2.0, 3.0], [1.0]), "ppo": model_result([1.0, 2.0], [0.5])}
    rows = paired_differences(per_model, [("ppo", "sft")], seed=0)
    assert [r["metric"] for r in rows] == ["bias/winogender/entropy_bits"]
    assert rows[0]["contains_zero"] is None  # one item: no interval
