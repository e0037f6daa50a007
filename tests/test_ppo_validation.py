"""PPO's validation curve: the same prompts and uniforms at every point, the gain over iteration 0 with its
interval, no effect on training, and the same curve after a resume."""

import pytest
import torch
from helpers.ppo_models import tiny_models

from instructgpt.models.tiny import tiny_tokenizer
from instructgpt.training.metrics import read_metrics
from instructgpt.training.ppo import PPOConfig, train_ppo
from instructgpt.training.ppo_validation import Answers, ValidationPrompts, summary
from tests.helpers.ppo_run import TINY_PPO, write_prompts, write_ptx

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(tmp_path, out, **overrides):
    base = dict(
        TINY_PPO,
        prompts=(write_prompts(tmp_path / "train.jsonl"),),
        out_dir=tmp_path / out,
        episodes=16 * 8,
        lr=1e-2,
        kl_target=None,
        ema_decay=0.0,
    )
    return PPOConfig(**{**base, **overrides})


def _validated(tmp_path, out, **overrides):
    valid = tmp_path / "valid.jsonl"
    if not valid.is_file():  # written once: its modification time is part of the cache key
        write_prompts(valid, 40, offset=100)
    settings = dict(validation_prompts=(valid,), validation_size=32, validation_every=4)
    return _config(tmp_path, out, **{**settings, **overrides})


def _curve(run):
    return [(r["step"], {k: v for k, v in r.items() if k.startswith("validation/")}) for r in read_metrics(run)]


def test_the_curve_starts_at_zero_gain_and_shows_the_rise_with_its_interval(tmp_path):
    tokenizer = tiny_tokenizer()
    train_ppo(_validated(tmp_path, "run"), tiny_models(tokenizer))
    points = {step: v for step, v in _curve(tmp_path / "run") if v}
    assert sorted(points) == [0, 4, 8]  # iteration 0, every 4, the last
    start, end = points[0], points[8]
    assert start["validation/score_gain"] == 0.0 and start["validation/prompts"] == 32.0
    assert start["validation/kl"] == 0.0  # the reference's own answers: log pi = log pi_ref
    # the vowel reward rises fast on this setup (test_ppo.py): the gain on held-out prompts shows it, interval above 0
    assert end["validation/score_gain_low"] > 0.0, end
    assert end["validation/score"] == pytest.approx(start["validation/score"] + end["validation/score_gain"], abs=1e-5)
    assert end["validation/kl"] > 0.0
    assert all("objective/score" in r for r in read_metrics(tmp_path / "run") if r["step"] > 0)


def test_validation_changes_nothing_in_training_and_survives_a_resume(tmp_path):
    tokenizer = tiny_tokenizer()
    plain_models = tiny_models(tokenizer)
    train_ppo(_config(tmp_path, "plain"), plain_models)
    full_models = tiny_models(tokenizer)
    train_ppo(_validated(tmp_path, "full"), full_models)
    train_ppo(_validated(tmp_path, "resumed", max_iterations=6, save_every=2), tiny_models(tokenizer))
    resumed_models = tiny_models(tokenizer)
    torch.manual_seed(7)  # nothing may depend on the global RNG
    train_ppo(_validated(tmp_path, "resumed"), resumed_models)
    for a, b, c in zip(
        plain_models.policy.parameters(), full_models.policy.parameters(), resumed_models.policy.parameters()
    ):
        assert torch.equal(a, b) and torch.equal(b, c)
    full = [(s, v) for s, v in _curve(tmp_path / "full") if v]
    assert [s for s, _ in full] == [0, 4, 8]
    resumed = [(s, v) for s, v in _curve(tmp_path / "resumed") if v]
    # the interrupted run evaluated at 0, 4 and its stop (6); resumed at 6, it kept those and added the last
    assert [s for s, _ in resumed] == [0, 4, 6, 8]
    assert dict(resumed)[8] == dict(full)[8]  # the start recomputed from the reference: the same gains


def test_draw_is_seeded_and_capped():
    ids = [[i, i + 1] for i in range(10)]
    a, b = ValidationPrompts.draw(ids, 4, 6, seed=3), ValidationPrompts.draw(ids, 4, 6, seed=3)
    assert a.prompt_ids == b.prompt_ids and torch.equal(a.uniforms, b.uniforms) and a.uniforms.shape == (4, 6)
    assert ValidationPrompts.draw(ids, 4, 6, seed=4).prompt_ids != a.prompt_ids
    assert len(ValidationPrompts.draw(ids, 50, 6, seed=3).prompt_ids) == 10


def test_summary_is_the_paired_mean_gain_with_a_t_interval():
    def answers(scores):
        n = len(scores)
        return Answers(
            torch.tensor(scores), torch.ones(n), torch.tensor([True] * (n - 1) + [False]), torch.full((n,), 5)
        )

    out = summary(answers([2.0, 4.0, 6.0]), answers([1.0, 2.0, 3.0]))
    assert out["validation/score_gain"] == pytest.approx(2.0)  # gains 1, 2, 3: sd 1, t_2 = 4.303
    assert out["validation/score_gain_low"] == pytest.approx(2.0 - 4.303 / 3**0.5, abs=1e-3)
    assert out["validation/score_gain_high"] == pytest.approx(2.0 + 4.303 / 3**0.5, abs=1e-3)
    assert out["validation/score"] == pytest.approx(4.0) and out["validation/kl"] == 1.0
    assert out["validation/eos_fraction"] == pytest.approx(2 / 3) and out["validation/response_length"] == 5.0


def test_with_lora_the_start_is_the_policy_with_its_adapter_off(tmp_path):
    from instructgpt.models.lora import add_lora
    from instructgpt.training.ppo import Models
    from instructgpt.training.ppo_io import prepare_models

    tokenizer = tiny_tokenizer()
    config = _validated(tmp_path, "lora", lora_rank=4, episodes=16 * 2, validation_every=1)
    plain = tiny_models(tokenizer)
    lora = (config.lora_rank, config.lora_alpha, config.lora_target_modules, config.seed)
    policy, value = add_lora(plain.policy, *lora), add_lora(plain.value_model, *lora)
    train_ppo(config, prepare_models(Models(policy, policy, value, plain.reward_model, tokenizer), torch.device("cpu")))
    points = {step: v for step, v in _curve(tmp_path / "lora") if v}
    assert sorted(points) == [0, 1, 2] and points[0]["validation/kl"] == 0.0
    assert points[2]["validation/kl"] != 0.0  # the adapter moved the policy away from its base


def test_a_run_from_the_same_start_reads_iteration_0_from_the_cache(tmp_path, monkeypatch):
    import instructgpt.training.ppo as ppo

    tokenizer = tiny_tokenizer()
    cache = tmp_path / "cache"
    train_ppo(_validated(tmp_path, "first", validation_cache=cache, episodes=16 * 4), tiny_models(tokenizer))
    assert len(list(cache.glob("validation-start-*.pt"))) == 1
    calls = []
    answer = ppo.answer_validation
    monkeypatch.setattr(ppo, "answer_validation", lambda *a, **k: calls.append(k["own"]) or answer(*a, **k))
    other = dict(episodes=16 * 4, lr=3e-3, ptx_coef=0.5, ptx_data=write_ptx(tmp_path / "ptx"))  # training differs
    train_ppo(_validated(tmp_path, "cached", validation_cache=cache, **other), tiny_models(tokenizer))
    assert calls == [False]  # the end only: iteration 0 was read
    train_ppo(_validated(tmp_path, "fresh", **other), tiny_models(tokenizer))
    assert _curve(tmp_path / "cached") == _curve(tmp_path / "fresh")  # the same curve as answering afresh
    assert [s for s, v in _curve(tmp_path / "first") if v] == [0, 4]
    train_ppo(_validated(tmp_path, "other", validation_cache=cache, validation_size=16), tiny_models(tokenizer))
    assert len(list(cache.glob("validation-start-*.pt"))) == 2  # other prompts: another key


def test_the_start_key_follows_the_models_files_and_the_sampling_not_the_training(tmp_path):
    import os

    from instructgpt.training.ppo_validation import start_key

    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "model.safetensors").write_bytes(b"weights")
    config = _validated(tmp_path, "run", policy=str(policy))
    cpu = torch.device("cpu")
    key = start_key(config, cpu)
    assert start_key(_validated(tmp_path, "x", policy=str(policy), lr=5e-2, ptx_coef=2.0), cpu) == key
    assert start_key(_validated(tmp_path, "run", policy=str(policy), temperature=0.7), cpu) != key
    stat = (policy / "model.safetensors").stat()
    os.utime(policy / "model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # trained again
    assert start_key(config, cpu) != key
