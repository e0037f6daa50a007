"""PPO end to end on tiny models: the score rises, PPO-ptx accumulates gradients, exact resume."""

import json
from dataclasses import replace

import pytest
import torch
from helpers.ppo_models import tiny_models

from instructgpt.models.tiny import tiny_model, tiny_tokenizer
from instructgpt.training.metrics import read_metrics
from instructgpt.training.ppo import PPOConfig, train_ppo

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    with path.open("w") as handle:
        for i in range(16):
            record = {"id": f"p{i}", "text": f"{i} {i * 37 % 100}", "user_id": f"u{i % 4}", "source": "api"}
            handle.write(json.dumps(record) + "\n")
    return path


@pytest.fixture
def ptx_folder(tmp_path):
    folder = tmp_path / "pretrain"
    folder.mkdir()
    (folder / "a.txt").write_text("The quick brown fox jumps over the lazy dog. " * 20)
    return folder


def _config(prompts, out, **overrides):
    base = dict(
        policy="tiny",
        reward_model="tiny-rm",
        prompts=(prompts,),
        out_dir=out,
        episodes=16 * 20,
        batch_size=16,
        minibatch_size=8,
        micro_batch_size=8,
        max_new_tokens=8,
        lr=1e-2,
        value_lr=1e-3,
        lr_warmup_iterations=1,
        ptx_coef=0.0,
        ema_decay=0.9,
        precision="fp32",
        progress=False,
        template="raw",
    )
    return PPOConfig(**{**base, **overrides})


def _metric(run, key):
    return [r[key] for r in read_metrics(run) if key in r]


def test_score_rises_while_kl_stays_bounded(prompts_file, tmp_path):
    tokenizer = tiny_tokenizer()
    models = tiny_models(tokenizer)
    final = train_ppo(_config(prompts_file, tmp_path / "run"), models)
    scores = _metric(tmp_path / "run", "objective/score")
    kls = _metric(tmp_path / "run", "objective/kl")
    assert len(scores) == 20
    assert sum(scores[-3:]) / 3 > 5 * sum(scores[:3]) / 3, scores
    assert max(kls) < 50.0 and all(k > -0.1 for k in kls), kls
    for key in (
        "ppo/policy/clipfrac",
        "ppo/policy/approx_kl",
        "ppo/val/loss",
        "ppo/val/explained_variance",
        "objective/entropy",
        "rollout/response_length",
        "time/generate_s",
        "time/update_s",
    ):
        assert len(_metric(tmp_path / "run", key)) == 20, key
    # the final policy (the EMA) and the value model load back
    from instructgpt.models.loader import load_model
    from instructgpt.models.reward import load_reward_model

    policy, _ = load_model(str(final))
    value, _ = load_reward_model(str(final / "value"))
    assert policy.config.vocab_size == len(tokenizer) and value.head.weight.shape[0] == 1
    assert json.loads((final / "meta.json").read_text())["weights"] == "ema"


@pytest.mark.parametrize("precision", ["fp32", "bf16-weights"])
def test_killed_and_resumed_run_ends_where_an_uninterrupted_run_ends(prompts_file, ptx_folder, tmp_path, precision):
    """bf16-weights too: the checkpoint holds the fp32 masters, so the resumed run continues exactly."""
    tokenizer = tiny_tokenizer()
    ptx = dict(
        ptx_coef=2.0,
        ptx_per_episode=0.5,
        ptx_data=ptx_folder,
        ptx_seq_len=32,
        episodes=16 * 4,
        kl_target=3.0,
        precision=precision,
    )
    full_models = tiny_models(tokenizer)
    train_ppo(_config(prompts_file, tmp_path / "full", **ptx), full_models)
    interrupted = _config(prompts_file, tmp_path / "resumed", max_iterations=2, **ptx)
    train_ppo(interrupted, tiny_models(tokenizer))
    resumed_models = tiny_models(tokenizer, seed=0)
    torch.manual_seed(123)  # a different global RNG state: nothing may depend on it
    train_ppo(replace(interrupted, max_iterations=0), resumed_models)
    for name in ("policy", "value_model"):
        a, b = getattr(full_models, name), getattr(resumed_models, name)
        for (key, x), (_, y) in zip(a.named_parameters(), b.named_parameters()):
            assert torch.equal(x, y), (name, key)
            assert x.dtype == torch.float32, (name, key)  # bf16-weights ends with the fp32 masters in place
    for key in ("objective/score", "objective/kl", "objective/kl_coef", "ppo/ptx/loss", "ppo/policy/loss"):
        assert len(_metric(tmp_path / "full", key)) == 4, key
        assert _metric(tmp_path / "full", key) == _metric(tmp_path / "resumed", key), key
    assert len(set(_metric(tmp_path / "full", "objective/kl_coef"))) == 4  # the adaptive controller moved
    final_a = tiny_model(tokenizer)
    from instructgpt.training.checkpoint import load_weights

    load_weights(final_a, tmp_path / "full" / "final")
    final_b = tiny_model(tokenizer)
    load_weights(final_b, tmp_path / "resumed" / "final")
    for (key, x), (_, y) in zip(final_a.named_parameters(), final_b.named_parameters()):
        assert torch.equal(x, y), key  # the EMA was resumed too


@pytest.mark.parametrize("precision", ["fp32", "bf16-weights"])
def test_kept_gradients_train_as_freed_ones(prompts_file, tmp_path, monkeypatch, precision):
    """Every gradient kept between steps (``_clear_grads`` with a threshold of 1 element; the unembedding's written in
    place by the log-probabilities' backward, the sparse lookups added into it) trains the models as freed ones do."""
    from instructgpt.training import ppo

    tokenizer = tiny_tokenizer()
    results = []
    for kept in (ppo.KEPT_GRAD_NUMEL, 1):
        monkeypatch.setattr(ppo, "KEPT_GRAD_NUMEL", kept)
        models = tiny_models(tokenizer)
        config = _config(prompts_file, tmp_path / f"run-{kept}", episodes=16 * 3, precision=precision)
        train_ppo(config, models)
        results.append((models, _metric(tmp_path / f"run-{kept}", "ppo/policy/grad_norm")))
    (freed, freed_norms), (kept, kept_norms) = results
    assert kept_norms == pytest.approx(freed_norms, rel=1e-4)
    for name in ("policy", "value_model"):
        for (key, x), (_, y) in zip(getattr(freed, name).named_parameters(), getattr(kept, name).named_parameters()):
            torch.testing.assert_close(y, x, atol=1e-5, rtol=1e-4, msg=f"{name} {key}")


def test_bf16_weights_trains_bf16_models_through_fp32_masters(prompts_file, tmp_path):
    """The models run in bf16 during training (value head in fp32), the optimizer steps fp32 masters, which end in
    place."""
    from instructgpt.training import ppo

    tokenizer = tiny_tokenizer()
    models = tiny_models(tokenizer)
    seen = {}
    step = ppo.ppo_minibatch_step

    def spy(config, models, state, *args):
        seen["policy"] = {p.dtype for p in models.policy.parameters()}
        seen["head"] = models.value_model.head.weight.dtype
        seen["masters"] = {m.dtype for m in state.policy_masters.masters}
        return step(config, models, state, *args)

    before = {n: p.detach().clone() for n, p in models.policy.named_parameters()}
    ppo.ppo_minibatch_step = spy
    try:
        train_ppo(_config(prompts_file, tmp_path / "run", episodes=16 * 2, lr=1e-4, precision="bf16-weights"), models)
    finally:
        ppo.ppo_minibatch_step = step
    assert seen == {"policy": {torch.bfloat16}, "head": torch.float32, "masters": {torch.float32}}
    changed = [n for n, p in models.policy.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == len(before)
    saved = json.loads((tmp_path / "run" / "final" / "meta.json").read_text())
    assert saved["weights"] == "ema"


def test_checkpoints_beyond_save_total_limit_are_deleted_newest_kept(prompts_file, tmp_path):
    """save_every 1 over 4 iterations writes 4 checkpoints; save_total_limit 2 keeps the last two, 0 keeps all."""
    from instructgpt.training.checkpoint import list_checkpoints, read_meta

    tokenizer = tiny_tokenizer()
    for limit, kept in ((2, [3, 4]), (0, [1, 2, 3, 4])):
        out = tmp_path / f"limit-{limit}"
        train_ppo(
            _config(prompts_file, out, episodes=16 * 4, save_every=1, save_total_limit=limit), tiny_models(tokenizer)
        )
        assert [read_meta(p)["step"] for p in list_checkpoints(out)] == kept
