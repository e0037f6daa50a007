"""The whole pipeline end to end on a tiny random model: every stage runs, a report comes out,
and a second run skips every stage."""

import json

import pytest

from instructgpt.models.tiny import save_tiny
from instructgpt.pipeline.config import PipelineConfig
from instructgpt.pipeline.plan import run_pipeline

TINY = dict(
    hh_prompts=60,
    max_prompt_tokens=200,
    sft_demonstrations=16,
    sft_batch_size=8,
    sft_epochs=2,
    max_response_tokens=24,
    sft_select_prompts=2,
    sft_select_tokens=4,
    ppo_init_from_pretrain_mix=True,
    ppo_init_epochs=1,
    rm_prompts=8,
    rm_eval_prompts=4,
    samples_per_prompt=3,
    sample_tokens=8,
    human_rankings=8,
    rm_batch_size=8,
    ppo_iterations=2,
    ppo_batch_size=4,
    ppo_minibatch_size=2,
    ppo_response_tokens=8,
    ptx_per_episode=1.0,
    eval_prompts=4,
    eval_items=2,
    eval_task_items=("truthfulqa=1",),
    eval_tokens=8,
    eval_batch_size=3,  # 4 prompts: a full batch and a partial one
    training_labelers=3,
    held_out_labelers=2,
)


@pytest.mark.slow
def test_tiny_pipeline_runs_every_stage_and_resumes(tmp_path, capsys):
    model = save_tiny(str(tmp_path / "tiny"))
    config = PipelineConfig(out_dir=tmp_path / "run", model=model, **TINY)
    outputs = run_pipeline(config)
    assert list(outputs) == [
        "prepare",
        "sft",
        "sft_ppo_init",
        "samples",
        "rankings",
        "rm",
        "select_sft",
        "ppo",
        "ppo_ptx",
        "eval",
    ]
    selection = json.loads(
        outputs["select_sft"]["selection"].read_text()
    )  # epoch 1 (sft/epochs/epoch-1) or 2 (sft/final) by RM score
    assert [c["epoch"] for c in selection["candidates"]] == [1, 2] and all(c["n"] == 2 for c in selection["candidates"])
    results = json.loads(outputs["eval"]["results"].read_text())
    assert results["config"]["models"][2] == f"sft={selection['chosen']}"  # the chosen epoch is the SFT baseline
    assert results["config"]["batch_size"] == 3  # the pipeline's eval_batch_size reaches the evaluation
    assert results["per_model"]["sft"]["truthfulqa"]["n"] == 1 and results["per_model"]["sft"]["nlp"]["drop"]["n"] == 2
    assert set(results["per_model"]) == {"pretrained", "prompted", "sft", "ppo", "ppo-ptx"}
    assert set(results["winrate"]["per_model"]) >= {"pretrained", "prompted", "ppo", "ppo-ptx"}
    tests = [json.loads(line) for line in (config.out_dir / "eval" / "test_prompts.jsonl").read_text().splitlines()]
    assert [t["set"] for t in tests] == ["held-out-users"] * 4 + ["self-instruct"] * 4
    trained_on = {
        json.loads(line)["user_id"]
        for dataset in ("rm", "ppo")
        for split in ("train", "valid")
        for line in (config.out_dir / "prepare" / "api" / dataset / f"{split}.jsonl").read_text().splitlines()
    }
    assert trained_on and not trained_on & {t["user_id"] for t in tests[:4]}  # users no split before test has
    by_set = results["winrate"]["by_set"]
    assert {name: part["n_prompts"] for name, part in by_set.items()} == {"held-out-users": 4, "self-instruct": 4}
    html = outputs["eval"]["report"].read_text()
    assert "<svg" in html and "held-out simulated labelers" in html
    panel = json.loads(outputs["rankings"]["panel"].read_text())
    assert panel["simulated"] >= 8 and panel["human"] == 8
    summary = json.loads(outputs["rm"]["summary"].read_text())
    assert set(summary) == {"training_labelers", "held_out_labelers"}
    assert not any(
        (config.out_dir / s / "checkpoints").exists() for s in ("sft", "sft_ppo_init", "rm", "ppo_ptx", "ppo")
    )  # deleted once done
    from instructgpt.training.metrics import read_metrics

    assert len(list((config.out_dir / "cache").glob("validation-start-*.pt"))) == 1  # PPO-ptx read PPO's iteration 0
    start = [[r | {"time": 0} for r in read_metrics(config.out_dir / s) if r["step"] == 0] for s in ("ppo", "ppo_ptx")]
    assert start[0] == start[1] and "validation/score" in start[0][0]
    from instructgpt.pipeline.summary import collect

    figures = collect(config.out_dir)
    assert list(figures["seconds"]) == list(outputs) and set(figures["winrate"]["per_model"]) == {
        "pretrained",
        "prompted",
        "ppo",
        "ppo-ptx",
    }
    assert results["per_model"]["prompted"]["same_as"] == "pretrained"  # same weights: automatic tasks ran once
    assert list(figures["peak_rss_gib"]) == list(outputs)  # each stage's own process, its peak memory
    assert all(0 < gib < 16 for gib in figures["peak_rss_gib"].values())
    from instructgpt.pipeline.summary import render

    assert "peak GiB" in render(figures).splitlines()[2]
    capsys.readouterr()
    run_pipeline(config)
    assert capsys.readouterr().out.count("(done, skipped)") == len(outputs)
