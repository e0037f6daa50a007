"""The runs/ analysis scripts compute what their docstrings say (fast, no model)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from instructgpt.labelers.embedding import HashingEmbedder
from instructgpt.labelers.simulated import QualityScorer

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "runs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_feature_deltas_are_model_minus_baseline_per_model():
    feature_deltas = _script("feature_deltas")
    finished = "Paris is the capital of France, on the Seine."
    cut_off = "Paris is the capital of France, on the Seine, and it"
    rows = [
        {
            "prompt": "What is the capital of France?",
            "model": "a",
            "response": cut_off,
            "baseline_response": finished,
            "outcome": "loss",
        },
        {
            "prompt": "Name the capital of France.",
            "model": "a",
            "response": finished,
            "baseline_response": finished,
            "outcome": "tie",
        },
        {
            "prompt": "What is the capital of France?",
            "model": "b",
            "response": finished,
            "baseline_response": cut_off,
            "outcome": "win",
        },
    ]
    table = feature_deltas.deltas(rows, QualityScorer(HashingEmbedder()))
    assert table["a"]["n"] == 2 and table["a"]["win_rate"] == pytest.approx(0.25)
    assert table["a"]["feature_deltas"]["finished"] == pytest.approx(-0.5)  # one of two answers cut off
    assert table["b"]["feature_deltas"]["finished"] == pytest.approx(1.0) and table["b"]["win_rate"] == 1.0
    assert table["b"]["weighted_delta"] > 0 > table["a"]["weighted_delta"]
