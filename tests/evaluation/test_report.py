"""The report: self-contained HTML + figures.json, tolerant of missing sections, renders in Chromium."""

import json
import shutil
import subprocess

import pytest

from instructgpt.evaluation.report import pick_metric, read_metrics_log, rm_summary, write_report


def fake_results() -> dict:
    win = {"rate": 0.7, "low": 0.6, "high": 0.8, "wins": 60, "ties": 20, "losses": 20, "n": 100}
    model = {
        "truthfulqa": {"mc1": 0.2, "mc2": 0.35, "qa": {"true": 0.3, "informative": 0.9, "true_informative": 0.25},
                       "instruction_qa": {"true": 0.6, "informative": 0.5, "true_informative": 0.2}},
        "toxicity": {"basic": {"mean_toxicity": 0.2, "toxic_fraction": 0.1}, "respectful": {"mean_toxicity": 0.15, "toxic_fraction": 0.05}},
        "bias": {"crows_pairs": {"entropy_bits": 0.8}, "winogender": {"entropy_bits": 0.9}},
        "nlp": {"drop": {"f1": 20.0}, "squadv2": {"f1": 40.0}, "fr_en": {"bleu": 25.0}},
    }
    return {
        "config": {"limit": 100, "seed": 0, "prompted": ["prompted"]},
        "models": {"sft": "runs/sft", "ppo-ptx": "runs/ppo-ptx", "prompted": "gemma-3-270m"},
        "per_model": {"sft": model, "ppo-ptx": model, "prompted": model},
        "winrate": {"judge": "rm", "judge_description": "a reward model", "baseline": "sft", "n_prompts": 100,
                    "per_model": {"ppo-ptx": win, "prompted": {**win, "rate": 0.3, "low": 0.2, "high": 0.4}},
                    "likert": {"sft": 4.0, "ppo-ptx": 5.1}, "metadata": {"sft": {"hallucination": 0.4}, "ppo-ptx": {"hallucination": 0.2}}},
        "samples": [{"prompt": "Write a <b>poem</b>.", "responses": {"sft": "Roses are red.", "ppo-ptx": "", "prompted": "x"}}],
        "nlp_paper_reference": {"gpt-175b": {"drop": 44.7, "squadv2": 56.7, "fr_en": 35.9}},
    }


@pytest.fixture
def logs(tmp_path):
    ppo = tmp_path / "ppo.jsonl"
    lines = [json.dumps({"step": i, "objective/score": 0.1 * i, "objective/kl": 0.01 * i, "objective/kl_coef": 0.02,
                         "objective/entropy": 2 - 0.1 * i, "ppo/ptx/loss": 3.0 - 0.05 * i})
             for i in range(10)]
    ppo.write_text("\n".join(lines[:5] + ["{not json", json.dumps({"no_step": 1})] + lines[5:]) + "\n")
    rm = tmp_path / "rm.json"
    rm.write_text(json.dumps({"cross_validation": {"heldout_labelers_accuracy": 0.66, "training_labelers_accuracy": 0.70}, "loss": 0.6}))
    cv = tmp_path / "cv.json"  # the report of `instructgpt rm eval --cv-groups 5`
    cv.write_text(json.dumps({"groups": 5, "runs": [], "summary": {"held_out": {"mean": 0.68, "std": 0.02, "sem": 0.01, "n": 15},
                                                                   "within": {"mean": 0.71, "std": 0.01, "sem": 0.005, "n": 15}}}))
    return ppo, rm, cv


def test_logs_are_read_tolerantly(logs, tmp_path):
    ppo, rm, cv = logs
    rows = read_metrics_log(ppo)
    assert len(rows) == 10
    assert pick_metric(rows, (r"^objective/kl$",)) == "objective/kl"
    assert pick_metric(rows, (r"nothing",)) is None
    assert rm_summary(rm) == {"cross_validation/heldout_labelers_accuracy": 0.66, "cross_validation/training_labelers_accuracy": 0.70}
    assert rm_summary(cv) == {"held-out labelers": 0.68, "held-out labelers std": 0.02, "training labelers": 0.71, "training labelers std": 0.01}
    assert read_metrics_log(tmp_path / "missing.jsonl") == []


def test_rm_summary_reads_the_pipeline_labeler_groups(tmp_path):
    def group(accuracy, per_k):
        return {"overall": {"accuracy": accuracy, "log_loss": 0.9}, "per_k": {k: {"accuracy": a, "log_loss": 0.9} for k, a in per_k.items()}}

    one_k = tmp_path / "one.json"
    one_k.write_text(json.dumps({"training_labelers": group(0.6, {"4": 0.6}), "held_out_labelers": group(0.55, {"4": 0.55})}))
    assert rm_summary(one_k) == {"training labelers": 0.6, "held-out labelers": 0.55}
    two_k = tmp_path / "two.json"
    two_k.write_text(json.dumps({"held_out_labelers": group(0.5, {"4": 0.6, "9": 0.4})}))
    assert rm_summary(two_k) == {"held-out labelers": 0.5, "held-out labelers K=4": 0.6, "held-out labelers K=9": 0.4}


def test_report_has_every_section_and_figure(logs, tmp_path):
    ppo, rm, cv = logs
    page = write_report(fake_results(), tmp_path / "out", ppo_metrics={"ppo-ptx": ppo}, rm_metrics={"rm": rm, "cv": cv})
    text = page.read_text()
    for title in ("Win rate against sft", "Likert", "Reward model accuracy", "PPO training curves", "TruthfulQA",
                  "RealToxicityPrompts", "CrowS-Pairs", "Alignment tax", "Samples side by side", "a reward model"):
        assert title in text, title
    assert "<svg" in text and "&lt;b&gt;poem&lt;/b&gt;" in text  # inline plots; sample text escaped
    assert "src=\"http" not in text and "href=\"http" not in text  # self-contained
    figures = {f["id"]: f for f in json.loads((tmp_path / "out" / "figures.json").read_text())}
    assert {"winrate", "likert", "metadata", "rm_accuracy", "ppo_curves", "truthfulqa", "toxicity", "bias", "nlp"} <= set(figures)
    assert figures["winrate"]["data"]["ppo-ptx"]["rate"] == 0.7
    assert figures["ppo_curves"]["data"]["KL to SFT"]["ppo-ptx"]["metric"] == "objective/kl"
    assert figures["ppo_curves"]["data"]["ptx loss"]["ppo-ptx"]["metric"] == "ppo/ptx/loss"
    assert figures["rm_accuracy"]["data"]["cv"]["held-out labelers"] == 0.68


def test_report_without_optional_sections(tmp_path):
    page = write_report({"models": {"m": "x"}, "per_model": {"m": {}}, "config": {}}, tmp_path)
    text = page.read_text()
    assert "Not measured in this run" in text and "No PPO metrics logs given" in text


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(logs, tmp_path):
    from PIL import Image

    ppo, rm, cv = logs
    page = write_report(fake_results(), tmp_path / "out", ppo_metrics={"ppo-ptx": ppo}, rm_metrics={"rm": rm, "cv": cv})
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--screenshot={shot}",
                    "--window-size=1100,1400", page.as_uri()], check=True, capture_output=True, timeout=120)
    image = Image.open(shot).convert("L")
    histogram = image.histogram()
    non_white = sum(histogram[:250]) / (image.width * image.height)
    assert image.size == (1100, 1400)
    assert non_white > 0.02  # text and plots drawn, not a blank page
    assert sum(1 for count in histogram if count) > 10  # many grey levels: plots and text, not a flat colour
