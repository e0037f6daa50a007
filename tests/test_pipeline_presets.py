"""Every named preset parses into a valid pipeline config; the run summary reads a run folder."""

import json

import pytest

from instructgpt.config import ConfigError, parse
from instructgpt.pipeline.config import PRESETS, PipelineConfig, preset_path
from instructgpt.pipeline.stages import Stage, run_stages
from instructgpt.pipeline.summary import collect, render


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_parses_and_validates(name):
    config = parse(PipelineConfig, ["--config", str(preset_path(name))], "pipeline")
    assert config.out_dir.name  # every preset names its own run folder
    assert config.trim_vocabulary == (name != "large")  # the CPU presets trim the vocabulary; the default does not
    assert not PipelineConfig().trim_vocabulary
    if name == "miniature":  # bigger than the quickstart where the paper's claims need it
        quick = PipelineConfig()
        assert config.sft_epochs > quick.sft_epochs and config.ppo_iterations > quick.ppo_iterations
        assert config.eval_prompts > quick.eval_prompts and config.rm_eval_prompts > quick.rm_eval_prompts
        assert (
            config.eval_prompts >= 128 and config.rm_eval_prompts * 5 >= 500
        )  # issue 18: >= 128 test prompts, >= 500 RM validation comparisons (K = 4: up to 6 each)
        assert config.api_split_fractions == (0.65, 0.25, 0.10) and abs(sum(config.api_split_fractions) - 1) < 1e-9


def test_unknown_preset_is_a_config_error():
    with pytest.raises(ConfigError, match="presets: quickstart, miniature, large"):
        preset_path("huge")


def test_summary_reads_stage_times_rm_accuracy_win_rates_and_nlp(tmp_path):
    for stage, seconds in (("sft", 100.0), ("eval", 50.5)):
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "stage.json").write_text(json.dumps({"seconds": seconds, "outputs": {}}))
    (tmp_path / "rm").mkdir()
    overall = {"accuracy": 0.6, "comparisons": 10, "prompts": 2}
    (tmp_path / "rm" / "summary.json").write_text(
        json.dumps({"training_labelers": {"overall": overall}, "held_out_labelers": {"overall": overall}})
    )
    win = {"rate": 0.75, "low": 0.4, "high": 0.9, "wins": 3, "ties": 0, "losses": 1, "n": 4}
    nlp = {"drop": {"n": 2, "f1": 10.0, "samples": []}, "fr_en": {"n": 2, "bleu": 5.0}}
    results = {
        "winrate": {"baseline": "sft", "judge_description": "j", "n_prompts": 4, "per_model": {"ppo": win}},
        "per_model": {"ppo": {"nlp": nlp}, "ppo-ptx": {"nlp": {"drop": {"f1": 12.0}, "fr_en": {"bleu": 4.0}}}},
        "config": {"limit": 2},
    }
    (tmp_path / "eval").joinpath("results.json").write_text(json.dumps(results))

    figures = collect(tmp_path)
    assert figures["seconds"] == {"sft": 100.0, "eval": 50.5} and figures["total_seconds"] == 150.5
    assert figures["rm_accuracy"]["held_out"]["accuracy"] == 0.6
    assert figures["winrate"]["per_model"]["ppo"]["rate"] == 0.75 and "samples" not in figures["nlp"]["ppo"]["drop"]
    text = render(figures)
    assert "0.75   [0.40, 0.90]" in text and "+2.0" in text and "-1.0" in text  # older results: plain differences

    nlp["drop"] |= {"f1_ci": [4.0, 16.0], "per_item": [0.0, 20.0]}
    results["differences"] = [
        {
            "model": "ppo-ptx",
            "reference": "ppo",
            "metric": "nlp/drop/f1",
            "n": 2,
            "difference": 2.0,
            "ci": [-3.0, 7.5],
            "contains_zero": True,
        }
    ]
    (tmp_path / "eval").joinpath("results.json").write_text(json.dumps(results))
    figures = collect(tmp_path)
    assert "per_item" not in figures["nlp"]["ppo"]["drop"] and figures["ptx_minus_ppo"]["drop"]["contains_zero"]
    text = render(figures)
    assert "10.0 [4.0, 16.0]" in text and "+2.0 [-3.0, +7.5]" in text and "n/a" in text  # fr_en has no paired row

    loss = {"rate": 0.0, "low": 0.0, "high": 0.8, "wins": 0, "ties": 0, "losses": 1, "n": 1}
    results["winrate"]["by_set"] = {
        "held-out-users": {"n_prompts": 3, "per_model": {"ppo": {**win, "rate": 1.0, "n": 3, "wins": 3, "losses": 0}}},
        "self-instruct": {"n_prompts": 1, "per_model": {"ppo": loss}},
    }
    (tmp_path / "eval").joinpath("results.json").write_text(json.dumps(results))
    text = render(collect(tmp_path))
    assert "(test set held-out-users, 3 prompts;" in text and "(test set self-instruct, 1 prompts;" in text
    assert "(all test sets pooled, 4 prompts;" in text and "0.00   [0.00, 0.80]" in text


def test_sft_residual_dropout_reaches_the_sft_config_and_the_stage_settings(tmp_path, monkeypatch):
    from instructgpt.pipeline import plan, run
    from instructgpt.training import sft

    assert all(
        parse(PipelineConfig, ["--config", str(preset_path(n))], "pipeline").sft_residual_dropout == 0.0
        for n in PRESETS
    )  # as before the field
    config = parse(PipelineConfig, ["--out-dir", str(tmp_path), "--sft-residual-dropout", "0.2"], "pipeline")
    prompts, demos = tmp_path / "prompts.jsonl", tmp_path / "demos.jsonl"
    prompts.write_text(json.dumps({"id": "p0", "text": "Say hi.", "user_id": "u0", "source": "labeler"}) + "\n")
    demos.write_text(json.dumps({"prompt": "Say hi.", "response": "Hi.", "labeler_id": "l0", "prompt_id": "p0"}) + "\n")
    seen = []
    monkeypatch.setattr(sft, "train_sft", lambda sft_config: seen.append(sft_config) or sft_config.out_dir / "final")
    run.train_sft_stage(
        config, tmp_path / "sft", {"prepare": {"sft_train": prompts, "sft_valid": prompts, "demonstrations": demos}}
    )
    assert [c.residual_dropout for c in seen] == [0.2]
    settings = {stage.name: stage.settings for stage in plan.build_stages(config)}
    assert (
        settings["sft"]["sft_residual_dropout"] == 0.2
    )  # in the fingerprint: changing it re-runs SFT and what follows
    config.sft_residual_dropout = 1.0
    with pytest.raises(ConfigError, match="sft_residual_dropout"):
        config.validate()


def test_sft_demo_max_tokens_leaves_long_demonstrations_out_before_the_subset(tmp_path, monkeypatch):
    from instructgpt.models.tiny import save_tiny, tiny_tokenizer
    from instructgpt.pipeline import plan, run
    from instructgpt.training import sft

    model = save_tiny(str(tmp_path / "tiny"))
    argv = ["--out-dir", str(tmp_path), "--model", model, "--sft-demo-max-tokens", "4"]
    argv += ["--sft-demonstrations", "1", "--sft-batch-size", "1"]
    config = parse(PipelineConfig, argv, "pipeline")
    prompts, demos = tmp_path / "prompts.jsonl", tmp_path / "demos.jsonl"
    texts = ["a b c d e f g h i j", "Hi.", "one two three four five six seven"]  # only "Hi." fits 4 tokens
    lengths = [len(tiny_tokenizer()(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert lengths[1] <= 4 < min(lengths[0], lengths[2])
    prompts.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "text": f"Say {i}.", "user_id": "u0", "source": "labeler"}) + "\n"
            for i in range(3)
        )
    )
    demos.write_text(
        "".join(
            json.dumps({"prompt": f"Say {i}.", "response": t, "labeler_id": "l0", "prompt_id": f"p{i}"}) + "\n"
            for i, t in enumerate(texts)
        )
    )
    monkeypatch.setattr(sft, "train_sft", lambda sft_config: sft_config.out_dir / "final")
    prepared = {"prepare": {"sft_train": prompts, "sft_valid": prompts, "demonstrations": demos}}
    run.train_sft_stage(config, tmp_path / "sft", prepared)
    trained = [json.loads(line)["response"] for line in (tmp_path / "sft" / "train.jsonl").read_text().splitlines()]
    assert trained == ["Hi."]  # whatever the seeded shuffle: the one fitting demonstration is the subset of 1
    config.sft_demo_max_tokens = None
    run.train_sft_stage(config, tmp_path / "sft-all", prepared)
    assert len((tmp_path / "sft-all" / "train.jsonl").read_text().splitlines()) == 1  # the subset of all three
    config.sft_demo_max_tokens = 4
    assert plan.build_stages(config)[1].settings["sft_demo_max_tokens"] == 4  # in the fingerprint: re-runs SFT
    config.sft_demo_max_tokens = 0
    with pytest.raises(ConfigError, match="sft_demo_max_tokens"):
        config.validate()


def test_summary_names_the_base_model_and_its_trimmed_vocabulary(tmp_path):
    model = tmp_path / "model-vocab"
    model.mkdir()
    (model / "vocabulary.json").write_text(json.dumps({"source": "/cache/gemma", "kept_ids": [0, 1, 2]}))
    run_stages([Stage("prepare", "p", lambda folder: {}, {"model": str(model), "seed": 0})], tmp_path / "run")
    figures = collect(tmp_path / "run")
    assert figures["vocabulary"] == {"source": "/cache/gemma", "kept": 3}
    assert "base model: /cache/gemma, vocabulary trimmed to the bundled data's 3 tokens" in render(figures)
    (model / "vocabulary.json").unlink()
    assert "base model: " + str(model) in render(collect(tmp_path / "run"))


def test_summary_says_which_sft_epoch_was_chosen_and_whether_past_the_noise(tmp_path):
    (tmp_path / "select_sft").mkdir()
    candidates = [{"epoch": 1.0, "mean_score": -2.0}, {"epoch": 2.0, "mean_score": -2.1}]
    selection = {"chosen_epoch": 1.0, "chosen_clearly": False, "candidates": candidates}
    (tmp_path / "select_sft" / "selection.json").write_text(json.dumps(selection))
    figures = collect(tmp_path)
    assert figures["sft_selection"] == {
        "chosen_epoch": 1.0,
        "chosen_clearly": False,
        "mean_scores": {"1": -2.0, "2": -2.1},
    }
    assert "SFT baseline: epoch 1 by mean RM score (1: -2.000, 2: -2.100; inside the noise)" in render(figures)
