"""The pipeline follows the paper's step-1 rules: the final SFT checkpoint is the epoch with the
best mean RM score on validation prompts; PPO starts from a separate SFT run with pretraining
data mixed in; PPO-ptx mixes 8 pretraining sequences per episode in the paper-sized presets."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from instructgpt.config import ConfigError, parse
from instructgpt.models.tiny import save_tiny, tiny_tokenizer
from instructgpt.pipeline import plan, run
from instructgpt.pipeline.config import PipelineConfig, preset_path

SMALL_SFT = dict(sft_demonstrations=18, sft_batch_size=6, max_prompt_tokens=64, max_response_tokens=16)


def _sft_data(folder: Path, count: int = 18) -> dict[str, Path]:
    """The outputs of ``prepare`` that SFT reads: prompt sets and their demonstrations."""
    folder.mkdir(parents=True, exist_ok=True)
    words = "alpha beta delta zeta theta kappa".split()
    prompts = [
        {"id": f"p{i}", "text": f"Repeat {words[i % 6]} {i}.", "user_id": f"u{i}", "source": "labeler"}
        for i in range(count)
    ]
    demos = [
        {"prompt": p["text"], "response": f"{words[i % 6]} " * 3, "labeler_id": "l0", "prompt_id": p["id"]}
        for i, p in enumerate(prompts)
    ]
    out = {
        "sft_train": folder / "train.jsonl",
        "sft_valid": folder / "valid.jsonl",
        "demonstrations": folder / "demos.jsonl",
    }
    out["sft_train"].write_text("".join(json.dumps(p) + "\n" for p in prompts))
    out["sft_valid"].write_text("".join(json.dumps(p) + "\n" for p in prompts[:3]))
    out["demonstrations"].write_text("".join(json.dumps(d) + "\n" for d in demos))
    return out


def _checkpoint(folder: Path, epoch: float) -> Path:
    save_tiny(str(folder))
    (folder / "meta.json").write_text(json.dumps({"kind": "sft", "epoch": epoch}))
    return folder


class CountingRewardModel(torch.nn.Module):
    """A reward model whose score is known: the number of ``token`` in the sequence."""

    def __init__(self, token: int):
        super().__init__()
        self.token = token
        self.unused = torch.nn.Parameter(torch.zeros(()))  # score_texts reads the device from a parameter

    def forward(self, input_ids, attention_mask):
        return ((input_ids == self.token) & attention_mask.bool()).sum(-1).float()


# "g"s per response to the 4 validation prompts: epoch 1 has the single best response (5), epoch 2
# the best mean (2.0, against 1.25 and 1.5), so only the mean picks epoch 2
G_COUNTS = {"epoch-1": [5, 0, 0, 0], "epoch-2": [2, 2, 2, 2], "final": [3, 1, 1, 1]}


def _select_fixture(tmp_path, monkeypatch, epochs: int):
    from instructgpt.models import generate, reward

    sft = tmp_path / "run" / "sft"
    for epoch in range(1, epochs):
        _checkpoint(sft / "epochs" / f"epoch-{epoch}", float(epoch))
    (sft / "epochs").mkdir(parents=True, exist_ok=True)
    _checkpoint(sft / "final", float(epochs))
    valid = tmp_path / "rm_valid.jsonl"
    valid.write_text(
        "".join(
            json.dumps({"id": f"v{i}", "text": t, "user_id": f"u{i}", "source": "api"}) + "\n"
            for i, t in enumerate(["Name a color.", "Write a short poem.", "Count to three.", "Describe the sea."])
        )
    )
    tokenizer = tiny_tokenizer()
    (g,) = tokenizer("g", add_special_tokens=False)["input_ids"]
    monkeypatch.setattr(reward, "load_reward_model", lambda name, **_: (CountingRewardModel(g), tokenizer))

    def fake_generate(model, tokenizer, prompts, *args, **kwargs):
        counts = G_COUNTS[Path(model.name_or_path).name]
        return ["g" * counts[i] if counts[i] else "ok" for i in range(len(prompts))]

    monkeypatch.setattr(generate, "generate", fake_generate)
    config = PipelineConfig(out_dir=tmp_path / "run", sft_select_prompts=4)
    results = {
        "prepare": {"rm_valid": valid},
        "sft": {"model": sft / "final", "epochs": sft / "epochs"},
        "rm": {"model": tmp_path / "rm"},
    }
    (tmp_path / "run" / "select_sft").mkdir()
    return config, results


def test_select_sft_chooses_the_epoch_with_the_best_mean_rm_score(tmp_path, monkeypatch):
    config, results = _select_fixture(tmp_path, monkeypatch, epochs=3)
    out = run.select_sft_stage(config, tmp_path / "run" / "select_sft", results)
    selection = json.loads(out["selection"].read_text())
    assert out["model"].name == "epoch-2" and selection["chosen_epoch"] == 2.0
    assert [(Path(c["checkpoint"]).name, c["epoch"], c["mean_score"], c["n"]) for c in selection["candidates"]] == [
        ("epoch-1", 1.0, 1.25, 4),
        ("epoch-2", 2.0, 2.0, 4),
        ("final", 3.0, 1.5, 4),
    ]
    # each other epoch against the chosen, prompt by prompt: epoch 1 [3, -2, -2, -2], final [1, -1, -1, -1]
    differences = [c.get("minus_chosen") for c in selection["candidates"]]
    assert differences[1] is None and [d["mean"] for d in (differences[0], differences[2])] == [-0.75, -0.5]
    low, high = differences[2]["ci"]  # t interval: -0.5 +- 3.182 * 1 / sqrt(4)
    assert low == pytest.approx(-0.5 - 1.5910, abs=1e-3) and high == pytest.approx(-0.5 + 1.5910, abs=1e-3)
    assert selection["chosen_clearly"] is False  # 4 prompts: both intervals reach 0
    results["select_sft"] = out
    assert run._sft_baseline(config, results) == out["model"]  # the baseline of the evaluation ...
    assert run._ppo_init(config, results) == out["model"]  # ... and PPO's init without the pretrain-mix run


def test_select_sft_with_one_epoch_scores_nothing(tmp_path, monkeypatch):
    config, results = _select_fixture(tmp_path, monkeypatch, epochs=1)
    from instructgpt.models import reward

    monkeypatch.setattr(reward, "load_reward_model", lambda *a, **k: pytest.fail("nothing to choose: no RM needed"))
    out = run.select_sft_stage(config, tmp_path / "run" / "select_sft", results)
    selection = json.loads(out["selection"].read_text())
    assert out["model"] == results["sft"]["model"] and selection["candidates"][0]["n"] == 0
    assert selection["chosen_clearly"] is None  # nothing to compare


def test_sft_stage_keeps_each_epochs_weights_without_optimizer_state(tmp_path):
    config = PipelineConfig(
        out_dir=tmp_path / "run", model=save_tiny(str(tmp_path / "base")), sft_epochs=3, **SMALL_SFT
    )
    folder = tmp_path / "run" / "sft"
    folder.mkdir(parents=True)
    out = run.train_sft_stage(config, folder, {"prepare": _sft_data(tmp_path / "data")})
    shutil.rmtree(folder / "checkpoints")  # as the pipeline does once the stage is done
    kept = sorted(out["epochs"].iterdir())
    assert [p.name for p in kept] == ["epoch-1", "epoch-2"]  # epoch 3 is sft/final
    assert all((p / "model.safetensors").is_file() and not (p / "trainer_state.pt").exists() for p in kept)
    from safetensors.torch import load_file

    weights = [load_file(str(p / "model.safetensors")) for p in (*kept, out["model"])]
    name = next(iter(weights[0]))
    assert not torch.equal(weights[0][name], weights[1][name]) and not torch.equal(weights[1][name], weights[2][name])


def test_ppo_init_run_mixes_pretraining_and_initialises_both_ppo_stages(tmp_path, monkeypatch):
    from instructgpt.training import ppo, sft

    mixed = []
    original = sft._pretrain_mix
    monkeypatch.setattr(sft, "_pretrain_mix", lambda *args: mixed.append(len(out := original(*args))) or out)
    config = PipelineConfig(
        out_dir=tmp_path / "run", model=save_tiny(str(tmp_path / "base")), ppo_init_from_pretrain_mix=True, **SMALL_SFT
    )
    folder = tmp_path / "run" / "sft_ppo_init"
    folder.mkdir(parents=True)
    init = run.sft_ppo_init_stage(config, folder, {"prepare": _sft_data(tmp_path / "data")})
    assert mixed == [2]  # 10% of the 20 training sequences: 2 pretraining sequences next to 18 demonstrations
    epochs = [json.loads(line).get("sft/epoch") for line in init["metrics"].read_text().splitlines()]
    assert max(e for e in epochs if e is not None) == 2.0  # the paper's 2 epochs

    seen = []
    monkeypatch.setattr(ppo, "train_ppo", lambda c: seen.append(c) or c.out_dir / "final")
    results = {
        "prepare": {"ppo_train": tmp_path / "ppo.jsonl"},
        "rm": {"model": tmp_path / "rm"},
        "sft": {"model": tmp_path / "sft-final"},
        "select_sft": {"model": tmp_path / "sft-epoch-2"},
        "sft_ppo_init": init,
    }
    for ptx_coef in (27.8, 0.0):  # PPO-ptx and plain PPO
        run.ppo_stage(config, tmp_path / "ppo", results, ptx_coef)
    run.ppo_stage(replace(config, ppo_init_from_pretrain_mix=False), tmp_path / "ppo", results, 27.8)
    run.ppo_stage(
        replace(config, ppo_init_from_pretrain_mix=False, sft_select_by_rm=False), tmp_path / "ppo", results, 27.8
    )
    ptx_only = replace(config, ppo_init_from_pretrain_mix=False, ptx_init_from_pretrain_mix=True)
    for ptx_coef in (0.278, 0.0):  # the miniature preset's split: PPO-ptx from the mix init, plain PPO from SFT
        run.ppo_stage(ptx_only, tmp_path / "ppo", results, ptx_coef)
    assert [Path(c.policy) for c in seen] == [
        init["model"],
        init["model"],
        tmp_path / "sft-epoch-2",
        tmp_path / "sft-final",
        init["model"],
        tmp_path / "sft-epoch-2",
    ]
    assert {c.reward_model for c in seen} == {
        str(tmp_path / "rm")
    }  # the RM (and the value model from it) is the RM stage's


def test_new_stages_sit_where_their_inputs_are_and_carry_their_settings():
    names = lambda config: [s.name for s in plan.build_stages(config)]  # noqa: E731
    assert names(PipelineConfig()) == [
        "prepare",
        "sft",
        "samples",
        "rankings",
        "rm",
        "select_sft",
        "ppo",
        "ppo_ptx",
        "eval",
    ]
    config = PipelineConfig(ppo_init_from_pretrain_mix=True)
    assert names(config)[:3] == ["prepare", "sft", "sft_ppo_init"]  # a branch before the RM: tuning the RM keeps it
    assert "select_sft" not in names(PipelineConfig(sft_select_by_rm=False))
    uses = {s.name: s.uses for s in plan.build_stages(PipelineConfig(ptx_init_from_pretrain_mix=True))}
    assert "sft_ppo_init" in uses and uses["ppo_ptx"] == ("sft_ppo_init",)  # only its readers
    assert uses["ppo"] == ("select_sft",)
    settings = {s.name: s.settings for s in plan.build_stages(config)}
    assert settings["sft_ppo_init"]["ppo_init_epochs"] == 2 and settings["sft_ppo_init"]["ppo_init_pretrain_mix"] == 0.1
    assert settings["select_sft"]["sft_select_prompts"] == 100 and "sft_epochs" in settings["sft"]


@pytest.mark.parametrize("name", ["miniature", "large"])
def test_paper_sized_presets_ptx_and_ppo_init(name):
    """The large preset is the paper's: gamma 27.8 with 8 pretraining sequences per episode, PPO from
    the pretraining-mix SFT run. The miniature's choices were measured on validation prompts
    (docs/results-history.md, runs/sweep_ppo_kl.py): PPO and PPO-ptx from the pretraining-mix SFT run too, gamma
    0.278 with 0.5 sequences per episode (32 an iteration of 64 episodes), episodes as long as the evaluation's
    answers, a missing-EOS penalty, K = 4."""
    config = parse(PipelineConfig, ["--config", str(preset_path(name))], "pipeline")
    paper = name == "large"
    assert (config.ptx_coef, config.ptx_per_episode) == ((27.8, 8) if paper else (0.278, 0.5))
    assert (config.mix_init(False), config.mix_init(True)) == (True, True)
    if not paper:
        assert config.ppo_response_tokens == config.eval_tokens == config.sample_tokens == 64
        assert (config.ppo_batch_size, config.ppo_minibatch_size, config.ppo_missing_eos_penalty) == (64, 16, 1.0)
        assert config.samples_per_prompt == 4  # K = 9 ran over 60 minutes on AMX (docs/results-history.md)
    assert config.sft_pretrain_mix == 0 and config.ppo_init_from_pretrain_mix
    quick = PipelineConfig()
    assert quick.ptx_per_episode == 1.0 and not quick.ppo_init_from_pretrain_mix  # the quickstart keeps its 20 minutes


def _captured_ppo(tmp_path, monkeypatch):
    """(the PPOConfigs ppo_stage passes to a stubbed train_ppo, the stage results it reads, a base config)."""
    from instructgpt.training import ppo

    seen = []
    monkeypatch.setattr(ppo, "train_ppo", lambda c: seen.append(c) or c.out_dir / "final")
    results = {"prepare": {"ppo_train": tmp_path / "ppo.jsonl"}, "rm": {"model": tmp_path / "rm"}}
    results["sft"] = {"model": tmp_path / "sft"}
    return seen, results, PipelineConfig(out_dir=tmp_path / "run", sft_select_by_rm=False)


def test_ppo_stage_passes_the_kl_controller_settings(tmp_path, monkeypatch):
    """beta fixed at the paper's 0.02 by default; --ppo-kl-target makes it adaptive (a choice the paper leaves open)."""
    seen, results, base = _captured_ppo(tmp_path, monkeypatch)
    run.ppo_stage(base, tmp_path / "ppo", results, 0.0)
    run.ppo_stage(
        replace(base, ppo_kl_coef=0.05, ppo_kl_target=6.0, ppo_kl_horizon=512), tmp_path / "ppo", results, 0.0
    )
    assert [(c.kl_coef, c.kl_target, c.kl_horizon) for c in seen] == [(0.02, None, 10_000), (0.05, 6.0, 512)]
    with pytest.raises(ConfigError, match="ppo_kl_target"):
        replace(base, ppo_kl_target=0.0).validate()


def test_ppo_stage_passes_the_missing_eos_penalty(tmp_path, monkeypatch):
    """The missing-EOS handling (open in method.md): 0 keeps a cut-off response's score; a penalty reaches PPO."""
    seen, results, base = _captured_ppo(tmp_path, monkeypatch)
    run.ppo_stage(base, tmp_path / "ppo", results, 0.0)
    run.ppo_stage(replace(base, ppo_missing_eos_penalty=1.5), tmp_path / "ppo", results, 0.0)
    assert [c.missing_eos_penalty for c in seen] == [0.0, 1.5]
    settings = {stage.name: stage.settings for stage in plan.build_stages(replace(base, ppo_missing_eos_penalty=1.5))}
    assert settings["ppo"]["ppo_missing_eos_penalty"] == 1.5  # in the fingerprint: changing it re-runs PPO
    with pytest.raises(ConfigError, match="ppo_missing_eos_penalty"):
        replace(base, ppo_missing_eos_penalty=-1.0).validate()


def test_ppo_stage_passes_gae_lambda_and_value_lr(tmp_path, monkeypatch):
    """GAE lambda (open in method.md) and the value lr (paper: 9e-6) reach PPO and its fingerprint."""
    seen, results, base = _captured_ppo(tmp_path, monkeypatch)
    varied = replace(base, ppo_gae_lambda=1.0, ppo_value_lr=3e-5)
    run.ppo_stage(base, tmp_path / "ppo", results, 0.0)
    run.ppo_stage(varied, tmp_path / "ppo", results, 0.0)
    assert [(c.lam, c.value_lr) for c in seen] == [(0.95, 9e-6), (1.0, 3e-5)]
    settings = {stage.name: stage.settings for stage in plan.build_stages(varied)}
    assert (settings["ppo"]["ppo_gae_lambda"], settings["ppo"]["ppo_value_lr"]) == (1.0, 3e-5)
    with pytest.raises(ConfigError, match="ppo_gae_lambda"):
        replace(base, ppo_gae_lambda=1.5).validate()


def test_a_changed_ptx_setting_reruns_ppo_ptx_and_the_evaluation_but_not_plain_ppo(tmp_path, monkeypatch):
    """Plain PPO depends on the RM and the PPO init, not on PPO-ptx: tuning gamma re-trains only PPO-ptx."""
    calls = []

    def fake(name):
        def stage_fn(config, folder, results, *args, **kwargs):
            label = name if name != "ppo" else ("ppo_ptx" if args[0] > 0 else "ppo")
            calls.append(label)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "out.txt").write_text(label)
            return {"model": folder / "out.txt"}

        return stage_fn

    for fn in ("prepare_prompts", "train_sft_stage", "sample_stage", "rankings_stage", "rm_stage", "select_sft_stage"):
        monkeypatch.setattr(run, fn, fake(fn))
    monkeypatch.setattr(run, "sft_ppo_init_stage", fake("sft_ppo_init"))
    monkeypatch.setattr(run, "ppo_stage", fake("ppo"))
    monkeypatch.setattr(plan, "final_eval", fake("eval"))
    config = PipelineConfig(out_dir=tmp_path / "run", stage_processes=False)  # the patched stage functions run here
    plan.run_pipeline(config)
    assert calls[-3:] == ["ppo", "ppo_ptx", "eval"]
    calls.clear()
    plan.run_pipeline(replace(config, ptx_coef=0.1))
    assert calls == ["ppo_ptx", "eval"]
    calls.clear()
    plan.run_pipeline(replace(config, ptx_coef=0.1, ppo_lr=2e-5))  # a PPO setting re-trains both
    assert calls == ["ppo", "ppo_ptx", "eval"]
    mixed = replace(config, ptx_coef=0.1, ppo_lr=2e-5, ppo_init_from_pretrain_mix=True)
    calls.clear()
    plan.run_pipeline(mixed)  # PPO-ptx follows the plain init (None): both start elsewhere now
    assert calls == ["sft_ppo_init", "ppo", "ppo_ptx", "eval"]
    calls.clear()
    plan.run_pipeline(replace(mixed, ptx_init_from_pretrain_mix=True))  # the same init, spelled out: nothing to do
    assert calls == []
    calls.clear()
    mixed = replace(mixed, sft_select_tokens=9)
    plan.run_pipeline(mixed)  # both policies start from the mix: a new SFT baseline re-runs only the evaluation
    assert calls == ["select_sft_stage", "eval"]
    calls.clear()
    plan.run_pipeline(replace(mixed, ppo_init_from_pretrain_mix=False, ptx_init_from_pretrain_mix=True))
    assert calls == ["ppo", "eval"]  # only plain PPO's init changed
    calls.clear()
    plan.run_pipeline(
        replace(mixed, ppo_init_from_pretrain_mix=False, ptx_init_from_pretrain_mix=True, sft_select_prompts=7)
    )
    assert calls == ["select_sft_stage", "ppo", "eval"]  # a new SFT baseline: its readers, not PPO-ptx from the mix
