"""The runs/ analysis scripts compute what their docstrings say (fast, no model)."""

from __future__ import annotations

import importlib.util
import json
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


def test_rm_sweep_reports_each_points_accuracy_with_its_interval(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "runs"))  # the script imports its sibling sweep_ppo_kl
    sweep_rm = _script("sweep_rm")
    overall = {"accuracy": 0.65, "comparisons": 500, "prompts": 100, "loss": 0.6}
    groups = {"training_labelers": {"overall": overall}, "held_out_labelers": {"overall": {**overall, "accuracy": 0.6}}}
    (tmp_path / "summary.json").write_text(json.dumps(groups))
    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 1, "rm/loss": 0.7}\n{"step": 2, "rm/loss": 0.5}\n{"step": 2, "rm/val_accuracy": 0.6}\n'
    )
    point = sweep_rm.point_figures(tmp_path, 2e-5, 1, 12.0)
    assert point["steps"] == 2 and point["last_train_loss"] == 0.5
    assert point["held_out"]["accuracy"] == 0.6 and point["training"]["comparisons"] == 500
    low, high = point["held_out"]["ci"]
    assert 0.55 < low < 0.6 < high < 0.65  # Wilson, n = 500: about +-4 points
    text = sweep_rm.table({"run": "r", "seed": 0, "points": {"preset": point}})
    assert "60.0% [" in text and "65.0% [" in text and "n=500" in text


def test_sft_sweep_reports_win_rate_finished_rate_and_words_per_model(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "runs"))  # the script imports its sibling sweep_ppo_kl
    sweep_sft = _script("sweep_sft")
    rows = [
        {"model": "prompted", "response": "Paris."},
        {"model": "prompted", "response": "Paris is"},
        {"model": "sft", "response": "The capital of France is Paris."},
        {"model": "sft", "response": "It is Paris, on the Seine."},
    ]
    (tmp_path / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rate = {"rate": 0.75, "low": 0.3, "high": 0.95, "wins": 1, "ties": 1, "losses": 0, "n": 2}
    winrate = {"n_prompts": 2, "baseline": "prompted", "per_model": {"sft": rate}}
    figures = sweep_sft.model_figures(tmp_path / "responses.jsonl", winrate)
    assert figures["baseline"] == "prompted" and figures["models"]["prompted"]["win_rate"] is None
    assert figures["models"]["prompted"]["finished"] == 0.5 and figures["models"]["sft"]["finished"] == 1.0
    assert figures["models"]["prompted"]["median_words"] == 1.5 and figures["models"]["sft"]["median_words"] == 6
    text = sweep_sft.table({"run": "r", "seed": 0, **figures})
    assert "(baseline)" in text and "0.75 [0.30, 0.95]" in text


def test_sft_sweep_judges_every_sft_against_the_prompted_model(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "runs"))
    sweep_sft = _script("sweep_sft")
    calls = []

    def fake_judge(config, out, models, count, baseline, **settings):
        calls.append((models, count, baseline, settings))
        out.mkdir(parents=True)
        rows = [{"model": name, "response": "Paris."} for name in ("sft", *models)]
        (out / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        rate = {"rate": 0.5, "low": 0.1, "high": 0.9, "wins": 0, "ties": 3, "losses": 0, "n": 3}
        return {name: rate for name in ("sft", *models) if name != baseline}, None

    monkeypatch.setattr(sweep_sft, "judge_against_sft", fake_judge)
    config = type("Config", (), {"model": "base"})()
    figures = sweep_sft.judge(config, tmp_path, {"point/final": tmp_path / "final"}, 3)
    models, count, baseline, settings = calls[0]
    assert baseline == "prompted" and models == {"prompted": "base", "point/final": tmp_path / "final"}
    assert settings["prompted"] == ("prompted",) and count == 3  # the few-shot prefix for the prompted model
    assert figures["prompts"] == 3 and figures["baseline"] == "prompted"
    assert (
        set(figures["models"]) == {"sft", "prompted", "point/final"}
        and figures["models"]["prompted"]["win_rate"] is None
    )


def test_sft_sweep_run_epochs_are_every_epoch_of_the_run_but_the_chosen_one(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "runs"))
    sweep_sft = _script("sweep_sft")
    for name in ("epochs/epoch-1", "epochs/epoch-2", "final"):
        (tmp_path / "sft" / name).mkdir(parents=True)
    chosen = tmp_path / "sft" / "epochs" / "epoch-2"
    monkeypatch.setattr(sweep_sft.run, "_sft_baseline", lambda config, results: chosen)
    config = type("Config", (), {"out_dir": tmp_path, "sft_epochs": 3})()
    epochs = sweep_sft.run_sft_epochs(config)
    assert epochs == {"sft/epoch-1": tmp_path / "sft/epochs/epoch-1", "sft/epoch-3": tmp_path / "sft/final"}


def test_rejudge_reads_answers_in_stored_order_and_counts_echoes(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "runs"))  # the script imports its sibling sweep_ppo_kl
    rejudge = _script("rejudge")
    from instructgpt.evaluation.judges import LabelerJudge
    from instructgpt.labelers.panel import Panel

    prompts = ["How do I keep basil growing indoors?", "What makes bread rise?", "Why is the sky blue?"]
    answers = {
        "sft": [
            "Basil keeps growing indoors in a sunny window if you pinch off its flowers.",
            "Bread dough rises because the yeast in it makes gas.",
            "The sky looks blue because air scatters blue light the most.",
        ],
        "echo": prompts,  # every answer copies its prompt back
    }
    rows = [
        {"prompt": p, "set": "a" if i < 2 else "b", "model": m, "response": r}
        for m, texts in answers.items()
        for i, (p, r) in enumerate(zip(prompts, texts))
    ]
    (tmp_path / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    read = rejudge.stored_answers(tmp_path / "responses.jsonl")
    assert read == (prompts, ["a", "a", "b"], answers)
    panel = Panel.simulated(3, 3, seed=0, scorer=QualityScorer(HashingEmbedder())).held_out
    figures = rejudge.rejudge(LabelerJudge(panel, name="held-out"), *read, baseline="sft", seed=0)
    assert figures["echo_share"] == {"sft": 0.0, "echo": 1.0}
    assert set(figures["win_rates"]) == {"pooled", "a", "b"} and figures["win_rates"]["a"]["echo"]["n"] == 2
    assert figures["win_rates"]["pooled"]["echo"]["losses"] == 3  # the echo loses every pair
    assert "echo | 0.00 [" in rejudge.table(figures)
