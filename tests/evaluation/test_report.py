"""The report: self-contained HTML + figures.json, tolerant of missing sections, renders in Chromium."""

import json
import shutil
import subprocess

import pytest

from instructgpt.evaluation.findings import findings
from instructgpt.evaluation.report import pick_metric, read_metrics_log, rm_summary, write_report


def fake_results() -> dict:
    win = {"rate": 0.7, "low": 0.6, "high": 0.8, "wins": 60, "ties": 20, "losses": 20, "n": 100}
    model = {
        "truthfulqa": {
            "mc1": 0.2,
            "mc2": 0.35,
            "qa": {"true": 0.3, "informative": 0.9, "true_informative": 0.25},
            "instruction_qa": {"true": 0.6, "informative": 0.5, "true_informative": 0.2},
        },
        "toxicity": {
            "basic": {"mean_toxicity": 0.2, "toxic_fraction": 0.1},
            "respectful": {"mean_toxicity": 0.15, "toxic_fraction": 0.05},
        },
        "bias": {"crows_pairs": {"entropy_bits": 0.8}, "winogender": {"entropy_bits": 0.9}},
        "nlp": {"drop": {"f1": 20.0}, "squadv2": {"f1": 40.0}, "fr_en": {"bleu": 25.0}},
    }
    return {
        "config": {"limit": 100, "seed": 0, "prompted": ["prompted"]},
        "models": {"sft": "runs/sft", "ppo-ptx": "runs/ppo-ptx", "prompted": "gemma-3-270m"},
        "per_model": {"sft": model, "ppo-ptx": model, "prompted": model},
        "winrate": {
            "judge": "rm",
            "judge_description": "a reward model",
            "baseline": "sft",
            "n_prompts": 100,
            "per_model": {"ppo-ptx": win, "prompted": {**win, "rate": 0.3, "low": 0.2, "high": 0.4}},
            "likert": {"sft": 4.0, "ppo-ptx": 5.1},
            "metadata": {"sft": {"hallucination": 0.4}, "ppo-ptx": {"hallucination": 0.2}},
        },
        "samples": [
            {"prompt": "Write a <b>poem</b>.", "responses": {"sft": "Roses are red.", "ppo-ptx": "", "prompted": "x"}}
        ],
        "nlp_paper_reference": {"gpt-175b": {"drop": 44.7, "squadv2": 56.7, "fr_en": 35.9}},
    }


def results_with_intervals() -> dict:
    """Results as a current run writes them: every figure with its n and interval, paired differences."""
    results = fake_results()
    model = {
        "truthfulqa": {
            "n": 50,
            "mc1": 0.2,
            "mc1_ci": [0.11, 0.33],
            "mc2": 0.35,
            "mc2_ci": [0.3, 0.4],
            "qa": {
                "n": 50,
                "true": 0.3,
                "true_ci": [0.19, 0.44],
                "true_informative": 0.25,
                "true_informative_ci": [0.14, 0.39],
            },
            "instruction_qa": {
                "n": 50,
                "true": 0.6,
                "true_ci": [0.46, 0.72],
                "true_informative": 0.2,
                "true_informative_ci": [0.11, 0.33],
            },
        },
        "toxicity": {
            "n": 40,
            "basic": {
                "n": 40,
                "mean_toxicity": 0.2,
                "mean_toxicity_ci": [0.15, 0.25],
                "toxic_fraction": 0.1,
                "toxic_fraction_ci": [0.04, 0.23],
            },
            "respectful": {
                "n": 40,
                "mean_toxicity": 0.15,
                "mean_toxicity_ci": [0.1, 0.2],
                "toxic_fraction": 0.05,
                "toxic_fraction_ci": [0.01, 0.17],
            },
            "respectful_minus_basic": {"n": 40, "mean_toxicity": -0.05, "mean_toxicity_ci": [-0.08, -0.02]},
        },
        "bias": {
            "crows_pairs": {"n": 30, "entropy_bits": 0.8, "entropy_bits_ci": [0.75, 0.85]},
            "winogender": {"n": 20, "entropy_bits": 0.9, "entropy_bits_ci": [0.85, 0.95]},
        },
        "nlp": {
            "drop": {"n": 100, "f1": 20.0, "f1_ci": [15.0, 25.0]},
            "squadv2": {"n": 100, "f1": 40.0, "f1_ci": [33.0, 47.0]},
            "fr_en": {"n": 100, "bleu": 25.0, "bleu_ci": [21.0, 29.0]},
        },
    }
    results["per_model"] = {"sft": model, "ppo": model, "ppo-ptx": model, "prompted": model}
    results["winrate"]["per_model"]["ppo-ptx"] = {
        "rate": 0.55,
        "low": 0.45,
        "high": 0.65,
        "wins": 50,
        "ties": 10,
        "losses": 40,
        "n": 100,
    }
    results["differences"] = [
        {
            "model": "ppo-ptx",
            "reference": "ppo",
            "metric": "nlp/drop/f1",
            "n": 100,
            "difference": 3.1,
            "ci": [-2.0, 8.0],
            "contains_zero": True,
        },
        {
            "model": "ppo",
            "reference": "sft",
            "metric": "nlp/squadv2/f1",
            "n": 100,
            "difference": -9.5,
            "ci": [-14.0, -5.0],
            "contains_zero": False,
        },
        {
            "model": "ppo-ptx",
            "reference": "sft",
            "metric": "truthfulqa/mc1",
            "n": 50,
            "difference": 0.1,
            "ci": [0.02, 0.18],
            "contains_zero": False,
        },
        {
            "model": "ppo-ptx",
            "reference": "sft",
            "metric": "bias/winogender/entropy_bits",
            "n": 20,
            "difference": 0.01,
            "ci": [-0.02, 0.04],
            "contains_zero": True,
        },
    ]
    results["nlp_paper_reference_ci"] = {"gpt-175b": {"drop": {"n": 100, "ci": [38.0, 51.0]}}}
    return results


@pytest.fixture
def logs(tmp_path):
    ppo = tmp_path / "ppo.jsonl"
    lines = [
        json.dumps(
            {
                "step": i,
                "objective/score": 0.1 * i,
                "objective/kl": 0.01 * i,
                "objective/kl_coef": 0.02,
                "objective/entropy": 2 - 0.1 * i,
                "ppo/ptx/loss": 3.0 - 0.05 * i,
            }
        )
        for i in range(10)
    ]
    ppo.write_text("\n".join(lines[:5] + ["{not json", json.dumps({"no_step": 1})] + lines[5:]) + "\n")
    rm = tmp_path / "rm.json"
    rm.write_text(
        json.dumps(
            {"cross_validation": {"heldout_labelers_accuracy": 0.66, "training_labelers_accuracy": 0.70}, "loss": 0.6}
        )
    )
    cv = tmp_path / "cv.json"  # the report of `instructgpt rm eval --cv-groups 5`
    cv.write_text(
        json.dumps(
            {
                "groups": 5,
                "runs": [],
                "summary": {
                    "held_out": {"mean": 0.68, "std": 0.02, "sem": 0.01, "n": 15},
                    "within": {"mean": 0.71, "std": 0.01, "sem": 0.005, "n": 15},
                },
            }
        )
    )
    return ppo, rm, cv


def test_logs_are_read_tolerantly(logs, tmp_path):
    ppo, rm, cv = logs
    rows = read_metrics_log(ppo)
    assert len(rows) == 10
    assert pick_metric(rows, (r"^objective/kl$",)) == "objective/kl"
    assert pick_metric(rows, (r"nothing",)) is None
    assert rm_summary(rm) == {
        "cross_validation/heldout_labelers_accuracy": 0.66,
        "cross_validation/training_labelers_accuracy": 0.70,
    }
    cv_summary = rm_summary(cv)
    assert {
        k: cv_summary[k]
        for k in ("held-out labelers", "held-out labelers std", "training labelers", "training labelers std")
    } == {
        "held-out labelers": 0.68,
        "held-out labelers std": 0.02,
        "training labelers": 0.71,
        "training labelers std": 0.01,
    }
    # t interval over the 15 runs: 0.68 +- t_14 (2.1448) * 0.02 / sqrt(15)
    assert cv_summary["held-out labelers n"] == 15 and cv_summary["held-out labelers n unit"] == "runs"
    assert cv_summary["held-out labelers 95% low"] == pytest.approx(0.68 - 2.1448 * 0.02 / 15**0.5, abs=1e-4)
    assert cv_summary["held-out labelers 95% high"] == pytest.approx(0.68 + 2.1448 * 0.02 / 15**0.5, abs=1e-4)
    assert read_metrics_log(tmp_path / "missing.jsonl") == []


def test_rm_summary_reads_the_pipeline_labeler_groups(tmp_path):
    def group(accuracy, per_k):
        return {
            "overall": {"accuracy": accuracy, "log_loss": 0.9},
            "per_k": {k: {"accuracy": a, "log_loss": 0.9} for k, a in per_k.items()},
        }

    one_k = tmp_path / "one.json"
    one_k.write_text(
        json.dumps({"training_labelers": group(0.6, {"4": 0.6}), "held_out_labelers": group(0.55, {"4": 0.55})})
    )
    assert rm_summary(one_k) == {"training labelers": 0.6, "held-out labelers": 0.55}
    two_k = tmp_path / "two.json"
    two_k.write_text(json.dumps({"held_out_labelers": group(0.5, {"4": 0.6, "9": 0.4})}))
    assert rm_summary(two_k) == {"held-out labelers": 0.5, "held-out labelers K=4": 0.6, "held-out labelers K=9": 0.4}


def test_rm_summary_gives_a_wilson_interval_over_prompts(tmp_path):
    path = tmp_path / "summary.json"
    overall = {"accuracy": 0.8, "log_loss": 0.5, "prompts": 10, "comparisons": 60}
    path.write_text(json.dumps({"held_out_labelers": {"overall": overall, "per_k": {"4": overall}}}))
    summary = rm_summary(path)
    # n = prompts (a ranking's pairs are correlated): Wilson(0.8, 10) = (0.490, 0.943)
    assert summary["held-out labelers n"] == 10 and summary["held-out labelers n unit"] == "prompts"
    assert (round(summary["held-out labelers 95% low"], 3), round(summary["held-out labelers 95% high"], 3)) == (
        0.490,
        0.943,
    )


def test_report_has_every_section_and_figure(logs, tmp_path):
    ppo, rm, cv = logs
    page = write_report(fake_results(), tmp_path / "out", ppo_metrics={"ppo-ptx": ppo}, rm_metrics={"rm": rm, "cv": cv})
    text = page.read_text()
    for title in (
        "Win rate against sft",
        "Likert",
        "Reward model accuracy",
        "PPO training curves",
        "TruthfulQA",
        "RealToxicityPrompts",
        "CrowS-Pairs",
        "Alignment tax",
        "Samples side by side",
        "a reward model",
    ):
        assert title in text, title
    assert "<svg" in text and "&lt;b&gt;poem&lt;/b&gt;" in text  # inline plots; sample text escaped
    assert 'src="http' not in text and 'href="http' not in text  # self-contained
    figures = {f["id"]: f for f in json.loads((tmp_path / "out" / "figures.json").read_text())}
    assert {
        "winrate",
        "likert",
        "metadata",
        "rm_accuracy",
        "ppo_curves",
        "truthfulqa",
        "toxicity",
        "bias",
        "nlp",
    } <= set(figures)
    assert figures["winrate"]["data"]["ppo-ptx"]["rate"] == 0.7
    assert figures["ppo_curves"]["data"]["KL to SFT"]["ppo-ptx"]["metric"] == "objective/kl"
    assert figures["ppo_curves"]["data"]["ptx loss"]["ppo-ptx"]["metric"] == "ppo/ptx/loss"
    assert figures["rm_accuracy"]["data"]["cv"]["held-out labelers"] == 0.68


def test_report_shows_n_intervals_and_reference_lines(logs, tmp_path):
    ppo, rm, cv = logs
    summary = tmp_path / "summary.json"
    summary.write_text(
        json.dumps({"held_out_labelers": {"overall": {"accuracy": 0.62, "prompts": 40, "comparisons": 240}}})
    )
    page = write_report(results_with_intervals(), tmp_path / "out", rm_metrics={"rm": summary, "cv": cv})
    text = page.read_text()
    assert "n=100" in text and "MC1 (n=50)" in text and "(n=20)" in text  # on the bars and in the table headers
    assert "0.200 [0.110, 0.330]" in text and "20.0 [15.0, 25.0]" in text  # value [low, high] in the tables
    assert (
        "no preference (0.5)" in text
        and "chance (50%)" in text
        and "no preference (1 bit)" in text
        and "no difference (0)" in text
    )
    assert "40 prompts" in text and "15 runs" in text  # the RM accuracies' n and its unit
    figures = {f["id"]: f for f in json.loads((tmp_path / "out" / "figures.json").read_text())}
    assert figures["truthfulqa"]["data"]["sft"]["MC1"] == 0.2  # data as before; intervals beside it
    assert figures["truthfulqa"]["intervals"]["sft"]["MC1"] == {"low": 0.11, "high": 0.33, "n": 50}
    assert figures["winrate"]["chance"] == 0.5 and figures["rm_accuracy"]["chance"] == 0.5
    assert [r["metric"] for r in figures["alignment_tax"]["data"]] == ["nlp/drop/f1", "nlp/squadv2/f1"]
    assert "38.0" in text  # the paper's samples with their intervals


def test_statement_says_which_differences_are_inside_their_intervals(tmp_path):
    lines = findings(results_with_intervals())
    tax = {line.split(":")[0]: line for line in lines if " F1" in line}
    inside, outside = tax["ppo-ptx minus ppo, DROP F1, zero-shot"], tax["ppo minus sft, SQuADv2 F1, zero-shot"]
    assert (
        "+3.1 [-2.0, +8.0]" in inside
        and "n=100" in inside
        and "inside" in inside
        and "no measured difference" in inside
    )
    assert "-9.5 [-14.0, -5.0]" in outside and "inside" not in outside and "outside" in outside
    win = next(line for line in lines if line.startswith("Win rate ppo-ptx"))
    assert "0.55 [0.45, 0.65]" in win and "0.5 is inside the interval: not a measured preference" in win
    assert "sft preferred" in next(line for line in lines if line.startswith("Win rate prompted"))
    assert any(
        "TruthfulQA MC1" in line and "outside" in line for line in lines
    )  # other differences: named when outside
    assert any(line.startswith("1 of the 2 other paired differences") for line in lines)  # and counted when inside
    assert any("respectful instruction minus none" in line and "less toxic" in line for line in lines)
    page = write_report(results_with_intervals(), tmp_path).read_text()
    assert (
        "ppo-ptx minus ppo, DROP F1, zero-shot: +3.1 [-2.0, +8.0] (n=100 paired items): 0 is inside the interval"
        in page
    )


def test_report_of_results_without_intervals(tmp_path):
    """Results written before intervals existed still render (values alone, n/a for unknown intervals)."""
    text = write_report(fake_results(), tmp_path).read_text()
    assert "TruthfulQA" in text and "0.200" in text and "Differences between models" not in text


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
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            "--window-size=1100,1400",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    image = Image.open(shot).convert("L")
    histogram = image.histogram()
    non_white = sum(histogram[:250]) / (image.width * image.height)
    assert image.size == (1100, 1400)
    assert non_white > 0.02  # text and plots drawn, not a blank page
    assert sum(1 for count in histogram if count) > 10  # many grey levels: plots and text, not a flat colour


def test_rounds_figure_names_its_judge():
    from instructgpt.evaluation.report import rounds_figure

    rounds = [
        {
            "round": r,
            "judge": "labelers",
            "winrate": {"ppo": {"rate": 0.6, "low": 0.4, "high": 0.8, "n": 20}},
            "rm_accuracy": {"training": 0.7, "held_out": 0.65},
        }
        for r in (1, 2)
    ]
    assert rounds_figure(rounds)[1]["judge"] == "labelers"
    assert "winrate.judge" in rounds_figure([{**r, "judge": None} for r in rounds])[1]["judge"]


def test_ppo_curves_draw_the_validation_gain_with_its_interval(tmp_path):
    log = tmp_path / "ppo.jsonl"
    rows = [
        {"step": 0, "validation/score_gain": 0.0, "validation/score_gain_low": 0.0, "validation/score_gain_high": 0.0}
    ]
    rows += [{"step": i, "objective/score": 0.1 * i, "objective/kl": 0.01 * i} for i in (1, 2)]
    rows[-1].update({"validation/score_gain": 0.5, "validation/score_gain_low": 0.1, "validation/score_gain_high": 0.9})
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_report(fake_results(), tmp_path / "out", ppo_metrics={"ppo": log})
    figures = {f["id"]: f for f in json.loads((tmp_path / "out" / "figures.json").read_text())}
    gain = figures["ppo_curves"]["data"]["RM score gain, validation prompts"]["ppo"]
    assert gain == {
        "metric": "validation/score_gain",
        "step": [0, 2],
        "value": [0.0, 0.5],
        "low": [0.0, 0.1],
        "high": [0.0, 0.9],
    }
    assert figures["ppo_curves"]["data"]["RM score"]["ppo"]["step"] == [1, 2]  # the rollout's curve, unchanged
