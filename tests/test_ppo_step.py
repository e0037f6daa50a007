"""The PPO-ptx step's gradient and its clipping, the value model's initialisation, and LoRA."""

import json
from dataclasses import replace

import pytest
import torch
from helpers.ppo_models import tiny_models

from instructgpt.data.render import Example
from instructgpt.losses.ppo import gae, kl_shaped_rewards
from instructgpt.models.reward import RewardModel
from instructgpt.models.tiny import save_tiny, tiny_model, tiny_tokenizer
from instructgpt.rollout.collect import collect_rollout
from instructgpt.rollout.forward import response_logprobs
from instructgpt.rollout.generation import HFBackend, SamplingSettings
from instructgpt.training.kl_controller import FixedKLController
from instructgpt.training.ppo import PPOConfig, TrainState, ppo_minibatch_step, ptx_backward, train_ppo
from instructgpt.training.ppo_io import load_models
from instructgpt.training.precision import MasterWeights

pytestmark = pytest.mark.usefixtures("one_thread")


class GradRecorder:
    """Stands in for an optimizer: ``step`` records the gradients instead of applying them."""

    def __init__(self, model, masters=None):
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.params = dict(named) if masters is None else {n: m for (n, _), m in zip(named, masters.masters)}
        self.param_groups = [{"params": list(self.params.values())}]
        self.grads = None

    def step(self):
        self.grads = {n: p.grad.clone() for n, p in self.params.items() if p.grad is not None}

    def zero_grad(self, set_to_none=True):
        for p in self.params.values():
            p.grad = None


def _batch(models, tokenizer, n=6):
    prompts = [
        [tokenizer.bos_token_id] + tokenizer(f"{i} {i * 7}", add_special_tokens=False)["input_ids"] for i in range(n)
    ]
    backend = HFBackend(models.policy, SamplingSettings(6), tokenizer.eos_token_id, tokenizer.pad_token_id)
    batch, _ = collect_rollout(
        models.policy,
        models.sft_policy,
        models.value_model,
        models.reward_model,
        backend,
        prompts,
        list(range(n)),
        torch.Generator().manual_seed(0),
        tokenizer.pad_token_id,
    )
    rewards, _ = kl_shaped_rewards(batch.scores, batch.logprobs, batch.ref_logprobs, batch.response_mask, 0.02)
    advantages, returns = gae(rewards, batch.values, batch.response_mask)
    return batch, advantages, returns


def _ptx_examples(tokenizer, count=5):
    text = tokenizer("Pretraining text: the cat sat on the mat and looked around.", add_special_tokens=False)[
        "input_ids"
    ]
    return [Example([tokenizer.bos_token_id] + text[i : i + 10 + i], [False] + [True] * (10 + i)) for i in range(count)]


def _step_grads(models, batch, advantages, returns, ptx_examples, ptx_coef):
    config = PPOConfig(ptx_coef=ptx_coef, max_grad_norm=0.0, micro_batch_size=4, precision="fp32")
    state = TrainState(GradRecorder(models.policy), GradRecorder(models.value_model), None, FixedKLController(0.02))
    ppo_minibatch_step(config, models, state, batch, advantages, returns, torch.arange(batch.size), ptx_examples, None)
    return state.policy_optimizer.grads, state.value_optimizer.grads


def test_ptx_step_gradient_is_ppo_gradient_plus_gamma_times_ptx_gradient():
    tokenizer = tiny_tokenizer()
    models = tiny_models(tokenizer)
    batch, advantages, returns = _batch(models, tokenizer)
    ptx_examples = _ptx_examples(tokenizer)
    gamma = 27.8
    total, total_value = _step_grads(models, batch, advantages, returns, ptx_examples, gamma)
    ppo_only, ppo_value = _step_grads(models, batch, advantages, returns, [], 0.0)
    nll = ptx_backward(models.policy, ptx_examples, 1.0, 2, 1024, tokenizer.pad_token_id, None)
    ptx_only = {n: p.grad.clone() for n, p in models.policy.named_parameters() if p.grad is not None}
    for p in models.policy.parameters():
        p.grad = None
    assert set(total) == set(ppo_only) == set(ptx_only)
    for name in total:
        torch.testing.assert_close(total[name], ppo_only[name] + gamma * ptx_only[name], atol=1e-5, rtol=1e-4)
    for name in total_value:  # the value model gets no pretraining gradient
        torch.testing.assert_close(total_value[name], ppo_value[name])
    # the pretraining loss is the mean token NLL, as the model's own loss computes it
    want = []
    for e in ptx_examples:
        ids = torch.tensor([e.input_ids])
        logits = models.policy(ids).logits[0, :-1]
        want.append(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
    tokens = sum(len(e) - 1 for e in ptx_examples)
    assert nll == pytest.approx((sum(want) / tokens).item(), rel=1e-5)


def test_ppo_gradient_accumulation_over_micro_batches_is_exact():
    tokenizer = tiny_tokenizer()
    models = tiny_models(tokenizer)
    batch, advantages, returns = _batch(models, tokenizer)
    config = PPOConfig(ptx_coef=0.0, max_grad_norm=0.0, precision="fp32")
    grads = []
    for micro in (1, 6):
        state = TrainState(GradRecorder(models.policy), GradRecorder(models.value_model), None, FixedKLController(0.02))
        ppo_minibatch_step(
            replace(config, micro_batch_size=micro),
            models,
            state,
            batch,
            advantages,
            returns,
            torch.arange(batch.size),
            [],
            None,
        )
        grads.append(state.policy_optimizer.grads)
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-4)


def _clip_setup(precision):
    """Tiny models and a rollout; bf16-weights: the policy cast to bf16 behind fp32 masters (the optimizer's
    parameters)."""
    tokenizer = tiny_tokenizer()
    models = tiny_models(tokenizer)
    batch, advantages, returns = _batch(models, tokenizer)
    masters = MasterWeights(models.policy) if precision == "bf16-weights" else None
    return models, (batch, advantages, returns), masters, _ptx_examples(tokenizer)


def _clipped_step(models, rollout, masters, ptx_examples, ptx_coef, ptx_clip, max_grad_norm):
    """One minibatch step; returns its metrics and the policy gradient the optimizer received, flat."""
    config = PPOConfig(
        ptx_coef=ptx_coef, ptx_clip=ptx_clip, max_grad_norm=max_grad_norm, micro_batch_size=4, precision="fp32"
    )
    state = TrainState(
        GradRecorder(models.policy, masters),
        GradRecorder(models.value_model),
        None,
        FixedKLController(0.02),
        policy_masters=masters,
    )
    dtype = torch.bfloat16 if masters else None
    stats = ppo_minibatch_step(
        config, models, state, *rollout, torch.arange(rollout[0].size), ptx_examples if ptx_coef else [], dtype
    )
    return stats, torch.cat([g.flatten().float() for g in state.policy_optimizer.grads.values()])


PRECISIONS = pytest.mark.parametrize("precision", ["fp32", "bf16-weights"])


@PRECISIONS
def test_plain_ppo_clipping_is_the_same_under_both_ptx_clip_forms(precision):
    models, rollout, masters, ptx_examples = _clip_setup(precision)
    _, raw = _clipped_step(models, rollout, masters, ptx_examples, 0.0, "total", 0.0)
    max_norm = raw.norm().item() / 3  # clipping is active
    clipped = {
        form: _clipped_step(models, rollout, masters, ptx_examples, 0.0, form, max_norm)
        for form in ("ppo-norm", "total")
    }
    assert torch.equal(clipped["ppo-norm"][1], clipped["total"][1])
    torch.testing.assert_close(
        clipped["total"][1], raw * max_norm / (raw.norm() + 1e-6)
    )  # torch's clip_grad_norm_, as before
    assert "ppo/policy/ppo_grad_norm" not in clipped["ppo-norm"][0]


def _ptx_gradient(models, masters, ptx_examples):
    """The pretraining loss's gradient alone (coefficient 1), flat, where the optimizer sees it."""
    after = masters.accumulate_grads if masters else None
    ptx_backward(
        models.policy,
        ptx_examples,
        1.0,
        4,
        1024,
        models.tokenizer.pad_token_id,
        torch.bfloat16 if masters else None,
        after,
    )
    params = masters.masters if masters else [p for p in models.policy.parameters() if p.requires_grad]
    grad = torch.cat([p.grad.flatten().float() for p in params])
    for p in params:
        p.grad = None
    return grad


@PRECISIONS
def test_ppo_norm_clips_the_ppo_part_as_plain_ppo_and_keeps_the_ratio_ptx_coef(precision):
    """ptx_clip="ppo-norm": the step is s * (g_ppo + gamma g_ptx) with plain PPO's s = max_norm / |g_ppo|."""
    models, rollout, masters, ptx_examples = _clip_setup(precision)
    gamma = 27.8
    _, raw_ppo = _clipped_step(models, rollout, masters, ptx_examples, 0.0, "total", 0.0)
    _, raw_sum = _clipped_step(models, rollout, masters, ptx_examples, gamma, "total", 0.0)
    ptx = _ptx_gradient(models, masters, ptx_examples)
    max_norm = raw_ppo.norm().item() / 3
    plain_stats, plain = _clipped_step(models, rollout, masters, ptx_examples, 0.0, "ppo-norm", max_norm)
    stats, step = _clipped_step(models, rollout, masters, ptx_examples, gamma, "ppo-norm", max_norm)
    assert stats["ppo/policy/ppo_grad_norm"] == pytest.approx(
        plain_stats["ppo/policy/grad_norm"], rel=1e-6
    )  # read from the masters too
    scale = max_norm / (raw_ppo.norm() + 1e-6)  # plain PPO's clip factor
    torch.testing.assert_close(step, raw_sum * scale)  # one factor for the whole sum
    ptx_part = step - plain  # the PPO part is plain PPO's clipped gradient ...
    ratio = ptx_part.dot(scale * ptx) / (scale * ptx).dot(scale * ptx)
    assert ratio.item() == pytest.approx(
        gamma, rel=1e-4 if masters is None else 1e-2
    )  # ... and the rest gamma times the pretraining part
    assert (ptx_part - gamma * scale * ptx).norm() < (1e-4 if masters is None else 2e-2) * ptx_part.norm()
    _, total = _clipped_step(models, rollout, masters, ptx_examples, gamma, "total", max_norm)
    torch.testing.assert_close(
        total, raw_sum * max_norm / (raw_sum.norm() + 1e-6)
    )  # the old form: the sum's own norm ...
    assert raw_sum.norm() > 10 * raw_ppo.norm()  # ... shrinks the PPO part over 10x more than plain PPO


def _folders(tmp_path):
    tokenizer = tiny_tokenizer()
    policy = save_tiny(str(tmp_path / "sft"))
    rm = RewardModel.from_causal_lm(tiny_model(tokenizer, seed=3), seed=3)
    rm.normalization_bias.fill_(0.25)
    rm.save_pretrained(tmp_path / "rm", tokenizer=tokenizer)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"id": f"p{i}", "text": f"{i}", "user_id": "u", "source": "api"}) + "\n" for i in range(8))
    )
    return policy, str(tmp_path / "rm"), prompts


def test_value_model_starts_equal_to_the_reward_model(tmp_path):
    policy, rm, _ = _folders(tmp_path)
    ids = torch.tensor([[1, 40, 50, 60, 2], [0, 1, 70, 80, 2]])
    mask = (ids != 0).long()
    for precision, atol in (("fp32", 0.0), ("bf16", 0.05)):
        models = load_models(PPOConfig(policy=policy, reward_model=rm, precision=precision), torch.device("cpu"))
        assert models.reward_model.trunk.dtype == (torch.float32 if precision == "fp32" else torch.bfloat16)
        assert models.value_model.trunk.dtype == torch.float32 and models.value_model.head.weight.requires_grad
        assert not any(p.requires_grad for p in models.reward_model.parameters())
        assert not any(p.requires_grad for p in models.sft_policy.parameters())
        with torch.no_grad():
            values = models.value_model.values(ids, mask)
            scores = models.reward_model.values(ids, mask).float()
        torch.testing.assert_close(values, scores, atol=atol, rtol=0.05 if atol else 0)
        assert float(models.value_model.normalization_bias) == 0.25
        assert models.reward_model.normalize and models.value_model.normalize  # the bias joins the rewards


@pytest.mark.parametrize("native", [True, False], ids=["native-bf16", "emulated-bf16"])
def test_auto_holds_frozen_models_in_bf16_only_where_native(tmp_path, monkeypatch, native):
    from instructgpt.training import lm

    monkeypatch.setattr(lm, "bf16_native", lambda device: native)
    policy, rm, _ = _folders(tmp_path)
    models = load_models(PPOConfig(policy=policy, reward_model=rm, precision="auto"), torch.device("cpu"))
    frozen = torch.bfloat16 if native else torch.float32
    assert models.reward_model.trunk.dtype == frozen and next(models.sft_policy.parameters()).dtype == frozen


def test_lora_trains_adapters_only_and_the_reference_is_the_base_model(tmp_path):
    pytest.importorskip("peft")
    policy_folder, rm, prompts = _folders(tmp_path)
    config = PPOConfig(
        policy=policy_folder,
        reward_model=rm,
        prompts=(prompts,),
        out_dir=tmp_path / "run",
        episodes=16,
        batch_size=8,
        minibatch_size=4,
        max_new_tokens=5,
        lr=1e-2,
        lr_warmup_iterations=1,
        ptx_coef=0.0,
        lora_rank=4,
        precision="fp32",
        progress=False,
        template="raw",
    )
    models = load_models(config, torch.device("cpu"))
    assert models.sft_policy is models.policy
    trainable = [n for n, p in models.policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    original = tiny_model(tiny_tokenizer())
    final = train_ppo(config, models)
    ids = torch.tensor([[1, 40, 50, 60, 70, 2]])
    mask, rmask = torch.ones_like(ids), torch.tensor([[True, True, True]])
    with models.policy.disable_adapter(), torch.no_grad():
        reference = response_logprobs(models.policy, ids, mask, 3, rmask)
    torch.testing.assert_close(reference, response_logprobs(original, ids, mask, 3, rmask))
    with torch.no_grad():
        assert not torch.allclose(
            response_logprobs(models.policy, ids, mask, 3, rmask), reference
        )  # the adapter learned
    from instructgpt.models.loader import load_model
    from instructgpt.models.reward import load_reward_model

    merged, _ = load_model(str(final))  # a plain Hugging Face folder, LoRA merged in
    assert not any("lora" in n for n, _ in merged.named_parameters())
    load_reward_model(str(final / "value"))


def test_ppo_command_with_preset(tmp_path, capsys):
    from instructgpt.cli.main import main
    from instructgpt.cli.ppo import expand_preset
    from instructgpt.training.checkpoint import read_meta

    assert expand_preset(["--preset", "ppo", "--lr", "1"]) == ["--ptx-coef", "0", "--lr", "1"]
    assert expand_preset(["--preset=ppo-ptx"]) == ["--ptx-coef", "27.8"]
    policy, rm, prompts = _folders(tmp_path)
    args = [
        "--policy",
        policy,
        "--reward-model",
        rm,
        "--prompts",
        str(prompts),
        "--out-dir",
        str(tmp_path / "run"),
        "--episodes",
        "8",
        "--batch-size",
        "8",
        "--minibatch-size",
        "4",
        "--max-new-tokens",
        "4",
        "--precision",
        "fp32",
        "--no-progress",
        "--template",
        "raw",
    ]
    assert main(["ppo", "--preset", "ppo", *args]) == 0
    assert "final policy:" in capsys.readouterr().out
    assert read_meta(tmp_path / "run" / "final")["config"]["ptx_coef"] == 0
    assert main(["ppo", "--preset", "nope"]) == 2
    assert main(["ppo", *args, "--minibatch-size", "3"]) == 2
    assert "minibatch_size" in capsys.readouterr().err


def test_bf16_master_weights_train(tmp_path):
    policy_folder, rm, prompts = _folders(tmp_path)
    config = PPOConfig(
        policy=policy_folder,
        reward_model=rm,
        prompts=(prompts,),
        out_dir=tmp_path / "run",
        episodes=8,
        batch_size=8,
        minibatch_size=4,
        max_new_tokens=4,
        ptx_coef=0.0,
        master_weights="bf16",
        precision="bf16",
        progress=False,
        template="raw",
    )
    models = load_models(config, torch.device("cpu"))
    assert models.policy.dtype == torch.bfloat16 and models.value_model.trunk.dtype == torch.bfloat16
    before = [p.detach().clone() for p in models.policy.parameters()]
    train_ppo(config, models)
    assert any(not torch.equal(a, b) for a, b in zip(before, models.policy.parameters()))
