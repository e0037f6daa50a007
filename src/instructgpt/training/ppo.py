"""Step 3 of the method: PPO, and PPO-ptx, against the reward model (method.md step 3).

One iteration (:func:`ppo_iteration`) reads like the paper:

1. rollout: sample ``batch_size`` prompts, the policy responds, the frozen SFT reference, the
   value model and the reward model look at the responses (:mod:`instructgpt.rollout`);
2. rewards: ``-beta * (log pi - log pi_SFT)`` per token plus the RM score at the last token;
3. advantages: GAE with gamma = 1 and lambda;
4. updates: for each minibatch of ``minibatch_size`` episodes (``ppo_epochs`` passes, 1 in the
   paper), the PPO loss's gradient and then ``ptx_coef`` times the pretraining loss's gradient
   are ACCUMULATED into the same buffers, then ONE policy optimizer step (and one value step);
5. the KL controller is updated, explicitly; the policy's EMA follows every optimizer step.

With ``validation_prompts``, the policy also answers the same validation prompts at iteration 0 and every
``validation_every`` iterations, with the same uniforms each time, and the RM score and KL of those answers are logged
as ``validation/...`` with the score's gain over iteration 0 and its interval (:mod:`.ppo_validation`): the rising
curve a small run's per-batch ``objective/score`` is too noisy to show. Rank 0 alone evaluates.

Paper defaults: beta 0.02 (fixed, or adaptive as in Ziegler et al. 2019), clip 0.2, gamma 1,
lambda 0.95 (the common choice; the paper gives none), temperature 1, 512 episodes per batch,
minibatch 64, one inner epoch, a constant policy lr after a linear warm-up over the first 10
iterations from a tenth of the peak, value lr 9e-6, policy EMA decay 0.992 (the EMA is the
final model), ptx_coef 27.8 with 8 pretraining sequences per episode (0 gives plain PPO).

Choices the paper leaves open, all configurable: policy lr 5e-6 (the paper swept 2.55e-6 ..
2.55e-5; without ptx, above 8.05e-6 diverged); the value loss is the clipped PPO2 form
(value_clip 0.2) and a token mean; advantages are whitened per batch, rewards are not; gradients
are clipped to norm 1 per model, and in PPO-ptx the PPO gradient's norm alone sets the one scale
applied to the sum (``ptx_clip="ppo-norm"``): the PPO part is clipped exactly as in plain PPO and
the pretraining part stays ``ptx_coef`` times it, as in Eq. 2; no weight decay; Adam betas
(0.9, 0.95) and eps 1e-5; no top-k/top-p; a response that hits max_new_tokens without EOS keeps
its score unless missing_eos_penalty > 0 (subtracted), and the reward model reads it with EOS appended, the
form its training data had (``score_unfinished``); the EMA is updated after every policy
optimizer step, with no bias correction; no dropout during PPO (the probability ratio must start
at 1); each pretraining sequence is a random window of ptx_seq_len tokens of the corpus (every
token a target); the pretraining loss is the mean token NLL of the minibatch's pretraining sequences.

Memory and speed: the reference and the reward model are held in bf16 without gradients. With
``precision="bf16-weights"`` (the default where bf16 is native) the policy and the value model
are held in bf16 too, so sampling, forward and backward run without casts, while the optimizers
step fp32 master copies (:class:`instructgpt.training.precision.MasterWeights`; the value
model's scalar head stays fp32): each micro-batch's bf16 gradients are added into the masters'
fp32 gradients and freed. In every precision the token embeddings produce sparse gradients (only
the rows looked up), and the embedding-sized gradients (the tied unembedding's, the value model's
embedding's, or their fp32 masters') stay allocated between steps, zeroed in place, the
unembedding's written in place by the log-probabilities' backward (:func:`_clear_grads`): no
fresh ``[V, H]`` buffer per micro-batch. The policy is updated (and its other gradients freed)
before the value model's backward. With LoRA
(``lora_rank > 0``) only adapters are trained, on the policy and the value model, and the
reference is the policy with its adapter disabled (no second copy). Log-probabilities are
computed over response positions only, in vocabulary chunks with a fused backward (no
full-vocabulary log-softmax for the batch, :func:`instructgpt.losses.lm.token_logprobs`).

Data parallelism (``torchrun --nproc_per_node W`` or ``accelerate launch``; all of it in
:mod:`instructgpt.training.ppo_parallel`): each rank generates and scores ``batch_size / W`` of
the iteration's prompts, every prompt sampled with its own row of the iteration's table of
uniforms (so the episodes do not depend on W or on the generation batches); the scored shares
are gathered, so every rank computes the rewards, GAE, the advantages' whitening over the
global batch, the KL the controller sees and the rollout metrics identically; each minibatch's
episodes are dealt out over the ranks, every loss weighted by the minibatch's global token
count, and the gradients are summed over the ranks before each optimizer step: the update of
one process on the same batch, up to summation order (tests/test_ppo_distributed.py). Rank 0
alone writes metrics, checkpoints and the final model, and keeps the EMA.

Resume: a checkpoint holds the policy, the value model, both optimizers, the EMA, the KL
controller, the RNG state and the iteration (the data position: prompts, sampling and
pretraining windows are all drawn from generators seeded by ``(seed, iteration)``), so a run
killed and resumed ends with the weights of an uninterrupted one, with 1 process or with W
(every rank reads rank 0's checkpoint).
"""

from __future__ import annotations

import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from instructgpt.config import check
from instructgpt.data.render import Example
from instructgpt.losses.ppo import (
    explained_variance,
    gae,
    kl_shaped_rewards,
    masked_mean,
    policy_loss,
    value_loss,
    whiten,
)
from instructgpt.models.checkpointing import checkpoint_layers
from instructgpt.models.lora import require_qlora
from instructgpt.rollout.batch import RolloutBatch
from instructgpt.rollout.forward import response_logprobs, response_values
from instructgpt.training.ema import PolicyEMA
from instructgpt.training.kl_controller import make_kl_controller
from instructgpt.training.optim import clip_grad_norm, grad_norm
from instructgpt.training.ppo_config import Models, PPOConfig, config_meta, training_precision  # noqa: F401 (re-exported)
from instructgpt.training.ppo_parallel import SINGLE, DataParallel
from instructgpt.training.ppo_validation import Answers, ValidationPrompts, start_key
from instructgpt.training.ppo_validation import answer as answer_validation
from instructgpt.training.ppo_validation import cached as cached_answers
from instructgpt.training.ppo_validation import summary as validation_summary
from instructgpt.training.precision import MasterWeights


def policy_lr(iteration: int, peak: float, warmup_iterations: int = 10, start: float = 0.1) -> float:
    """The paper's policy schedule: linear from ``start * peak`` at iteration 0 to ``peak`` at
    ``warmup_iterations``, then constant.

    >>> [round(policy_lr(i, 1.0, 10), 2) for i in (0, 5, 10, 100)]
    [0.1, 0.55, 1.0, 1.0]
    """
    if iteration >= warmup_iterations:
        return peak
    return peak * (start + (1.0 - start) * iteration / warmup_iterations)


def apply_missing_eos_penalty(scores: torch.Tensor, ended_with_eos: torch.Tensor, penalty: float) -> torch.Tensor:
    """``scores [B]`` minus ``penalty`` where the response has no EOS."""
    return scores - penalty * (~ended_with_eos).to(scores.dtype)


@dataclass
class TrainState:
    """Everything that changes during training and is checkpointed."""

    policy_optimizer: torch.optim.Optimizer
    value_optimizer: torch.optim.Optimizer
    ema: PolicyEMA | None
    kl_controller: Any
    iteration: int = 0
    policy_masters: MasterWeights | None = None
    value_masters: MasterWeights | None = None


def train_ppo(config: PPOConfig, models: Models | None = None) -> Path:
    """Run PPO / PPO-ptx; returns the folder of the final policy (``out_dir/final``)."""
    from instructgpt.rollout.generation import SamplingSettings, make_backend
    from instructgpt.rollout.prompts import read_prompts, render_prompts
    from instructgpt.training import ppo_io
    from instructgpt.training.batching import BatchPlan
    from instructgpt.training.launch import check_engine, check_launch, check_resumed_together
    from instructgpt.training.metrics import MetricsLog, make_accelerator

    config.validate()
    accelerator = make_accelerator(config.report_to, config.out_dir, cpu=not torch.cuda.is_available())
    check_engine(accelerator, "ppo")
    check_launch(accelerator, config.batch_size)  # each rank generates batch_size / W episodes
    group = DataParallel.of(accelerator)
    device = accelerator.device
    scheme = training_precision(config, device)
    dtype = None if scheme == "fp32" else torch.bfloat16
    if config.qlora:
        require_qlora(device)
    models = models or ppo_io.load_models(config, device, scheme)
    if config.gradient_checkpointing:  # also in eval() mode, which PPO keeps (see models/checkpointing.py)
        for model in (models.policy, models.value_model):
            checkpoint_layers(model)
    tokenizer = models.tokenizer
    check(bool(config.prompts), "prompts", "give at least one prompt file")
    prompt_ids, kept = render_prompts(
        tokenizer, read_prompts(config.prompts), config.template, config.separator, config.max_prompt_tokens
    )
    check(
        len(prompt_ids) >= config.batch_size,
        "prompts",
        f"{len(prompt_ids)} usable prompts, fewer than batch_size ({config.batch_size})",
    )
    per_epoch = len(prompt_ids) // config.batch_size
    plan = BatchPlan(len(prompt_ids), config.batch_size, -(-config.iterations // per_epoch), config.seed)
    ptx = ppo_io.load_ptx_stream(config, tokenizer) if config.ptx_coef > 0 and config.ptx_per_episode > 0 else None
    fp32_masters = scheme == "bf16-weights" and config.master_weights == "fp32"
    state = _init_state(config, models, fp32_masters, ema=group.main)  # rank 0 alone keeps (and saves) the EMA
    ppo_io.maybe_resume(config, models, state, verbose=group.main)
    check_resumed_together(accelerator, state.iteration)
    settings = SamplingSettings(config.max_new_tokens, config.temperature, config.top_k, config.top_p)
    backend = make_backend(
        config.backend,
        models.policy,
        settings,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
        config.generation_batch_size,
        dtype,
        config.policy,
    )
    log = MetricsLog(config.out_dir, group.main, accelerator, "instructgpt-ppo", config, start=state.iteration)
    stop = min(config.iterations, config.max_iterations or config.iterations)
    wanted = config.validation_prompts and group.main and state.iteration < stop  # a finished run: nothing to add
    validation = _validation_prompts(config, tokenizer) if wanted else None
    if validation is not None:  # iteration 0: the starting policy, which is the frozen reference
        start = cached_answers(
            config.validation_cache,
            lambda: start_key(config, accelerator.device),
            lambda: _validation_answers(config, models, backend, validation, dtype, reference=True),
        )
        if state.iteration == 0:
            log.log(0, validation_summary(start, start))
    bar = _progress(config, state.iteration, stop, group.main)
    while state.iteration < stop:
        indices = plan.batch(state.iteration)
        backend.sync_weights(models.policy)
        metrics = ppo_iteration(
            config,
            models,
            state,
            backend,
            [prompt_ids[i] for i in indices],
            [kept[i] for i in indices],
            ptx,
            dtype,
            group,
        )
        state.iteration += 1
        if validation is not None and _validation_due(config, state.iteration, stop):
            started = time.perf_counter()
            metrics.update(validation_summary(_validation_answers(config, models, backend, validation, dtype), start))
            metrics["time/validation_s"] = time.perf_counter() - started
        log.log(state.iteration, metrics)
        bar.update(1)
        bar.set_postfix(score=f"{metrics['objective/score']:.3f}", kl=f"{metrics['objective/kl']:.3f}")
        if state.iteration == stop or (config.save_every and state.iteration % config.save_every == 0):
            ppo_io.save_checkpoint(config, models, state, group)
    bar.close()
    log.close()
    for masters in (state.policy_masters, state.value_masters):
        if masters is not None:  # training is over: the fp32 masters become the weights
            masters.restore()
    if stop < config.iterations:
        return config.out_dir / "final"
    return ppo_io.save_final(config, models, state, group)


def _validation_prompts(config: PPOConfig, tokenizer) -> ValidationPrompts:
    from instructgpt.rollout.prompts import read_prompts, render_prompts

    ids, _ = render_prompts(
        tokenizer, read_prompts(config.validation_prompts), config.template, config.separator, config.max_prompt_tokens
    )
    check(bool(ids), "validation_prompts", "no usable prompt (all longer than max_prompt_tokens?)")
    return ValidationPrompts.draw(ids, config.validation_size, config.max_new_tokens, config.seed)


def _validation_due(config: PPOConfig, iteration: int, stop: int) -> bool:
    return iteration == stop or (config.validation_every > 0 and iteration % config.validation_every == 0)


def _validation_answers(config, models: Models, backend, prompts: ValidationPrompts, dtype, reference=False) -> Answers:
    """The validation prompts answered by the policy, or by the frozen reference (``reference``: the starting
    policy; with LoRA the policy with its adapter off); the backend is synced back to the policy after."""
    lora = models.sft_policy is models.policy
    backend.sync_weights(models.sft_policy if reference else models.policy)
    with models.policy.disable_adapter() if reference and lora else nullcontext():
        answers = answer_validation(
            models.policy,
            models.sft_policy,
            models.reward_model,
            backend,
            prompts,
            models.tokenizer.pad_token_id,
            models.tokenizer.eos_token_id if config.score_unfinished == "end-marker" else None,
            config.temperature,
            dtype,
            config.forward_batch_size,
            config.loss_chunk_size,
            own=reference,
        )
    backend.sync_weights(models.policy)
    return answers


def ppo_iteration(
    config: PPOConfig,
    models: Models,
    state: TrainState,
    backend,
    prompt_ids,
    prompt_indices,
    ptx,
    dtype,
    group: DataParallel = SINGLE,
) -> dict[str, float]:
    """One PPO iteration on the global batch ``prompt_ids``: rollout (this rank's share, then gathered) ->
    rewards -> advantages -> minibatch updates -> KL controller."""
    from instructgpt.rollout.collect import collect_rollout

    started = time.perf_counter()
    generator = torch.Generator().manual_seed(_seed(config.seed, state.iteration, 1))
    # one row of uniforms per prompt of the global batch: a response does not depend on which rank samples it
    uniforms = torch.rand(len(prompt_ids), config.max_new_tokens, generator=generator, dtype=torch.float64)
    mine = group.share(len(prompt_ids))
    share, timing = collect_rollout(
        models.policy,
        models.sft_policy,
        models.value_model,
        models.reward_model,
        backend,
        prompt_ids[mine],
        prompt_indices[mine],
        uniforms[mine],
        models.tokenizer.pad_token_id,
        config.temperature,
        dtype,
        config.forward_batch_size,
        config.loss_chunk_size,
        config.recompute_logprobs,
        models.tokenizer.eos_token_id if config.score_unfinished == "end-marker" else None,
    )
    batch = group.gather(share, models.tokenizer.pad_token_id)  # every rank: the global batch, in its order
    scores = apply_missing_eos_penalty(batch.scores, batch.ended_with_eos, config.missing_eos_penalty)
    kl_coef = state.kl_controller.value
    rewards, kl = kl_shaped_rewards(scores, batch.logprobs, batch.ref_logprobs, batch.response_mask, kl_coef)
    advantages, returns = gae(rewards, batch.values, batch.response_mask, config.gamma, config.lam)
    if config.whiten_advantages:
        advantages = whiten(advantages, batch.response_mask)
    update_started = time.perf_counter()
    lr = policy_lr(state.iteration, config.lr, config.lr_warmup_iterations, config.lr_warmup_start)
    for param_group in state.policy_optimizer.param_groups:
        param_group["lr"] = lr
    stats = []
    for epoch in range(config.ppo_epochs):
        order = torch.randperm(
            batch.size, generator=torch.Generator().manual_seed(_seed(config.seed, state.iteration, 2 + epoch))
        )
        for start in range(0, batch.size, config.minibatch_size):
            rows = order[start : start + config.minibatch_size]
            ptx_batch = (
                ptx.sample(
                    round(config.ptx_per_episode * len(rows)),
                    _seed(config.seed, state.iteration, 1000 + epoch * batch.size + start),
                )
                if ptx
                else []
            )
            stats.append(
                ppo_minibatch_step(config, models, state, batch, advantages, returns, rows, ptx_batch, dtype, group)
            )
    stats = _summed_over_ranks(stats, group)
    episode_kl = kl.sum(-1).mean().item()
    state.kl_controller.update(episode_kl, batch.size)  # explicit, once per iteration
    mask = batch.response_mask
    metrics = {
        "objective/score": batch.scores.mean().item(),
        "objective/kl": episode_kl,
        "objective/kl_coef": kl_coef,
        "objective/entropy": masked_mean(batch.entropy, mask).item(),
        "objective/rlhf_reward": (scores - kl_coef * kl.sum(-1)).mean().item(),
        "ppo/lr": lr,
        "ppo/val/explained_variance": explained_variance(batch.values, returns, mask).item(),
        "ppo/val/mean": masked_mean(batch.values, mask).item(),
        "ppo/returns/mean": masked_mean(returns, mask).item(),
        "rollout/response_length": mask.sum(-1).float().mean().item(),
        "rollout/eos_fraction": batch.ended_with_eos.float().mean().item(),
        **{k: sum(s[k] for s in stats) / len(stats) for k in stats[0]},
        **timing,  # rank 0's
        "time/update_s": time.perf_counter() - update_started,
        "time/iteration_s": time.perf_counter() - started,
    }
    metrics["rollout/episodes_per_s"] = batch.size / metrics["time/iteration_s"]
    return metrics


def ppo_minibatch_step(
    config,
    models: Models,
    state: TrainState,
    batch: RolloutBatch,
    advantages,
    returns,
    rows,
    ptx_batch: list[Example],
    dtype,
    group: DataParallel = SINGLE,
) -> dict[str, float]:
    """One optimizer step on the episodes ``rows``: PPO gradient, then + ptx_coef * pretraining
    gradient, accumulated in the same buffers; one policy step (clipped as ``config.ptx_clip``
    says), one value step, EMA update.

    Data-parallel (:mod:`.ppo_parallel`): ``batch`` and ``rows`` are global; this rank backpropagates
    its share of them (and of ``ptx_batch``), the gradients are summed over the ranks before each step.
    The returned losses and clip fractions are this rank's part of the minibatch's (summed over the ranks
    by the caller); the gradient norms are global."""
    policy, value_model = models.policy, models.value_model
    device = next(policy.parameters()).device
    tokens = int(batch.response_mask[rows].sum().clamp(min=1).item())  # over the whole minibatch, every rank
    sums = {
        "ppo/policy/loss": 0.0,
        "ppo/policy/clipfrac": 0.0,
        "ppo/policy/approx_kl": 0.0,
        "ppo/val/loss": 0.0,
        "ppo/val/clipfrac": 0.0,
    }
    by_length = rows[torch.argsort(batch.attention_mask[rows].sum(-1), stable=True)]  # similar lengths together
    mine = group.deal(by_length)
    chunks = [mine[s : s + config.micro_batch_size] for s in range(0, len(mine), config.micro_batch_size)]
    for chunk in chunks:  # the policy first: its gradients are freed before the value model's exist (lower peak memory)
        part, adv, _, weight = _micro_batch(batch, advantages, returns, chunk, tokens, device)
        args = (part.input_ids, part.attention_mask, part.prompt_width, part.response_mask)
        new_logprobs = response_logprobs(
            policy,
            *args,
            temperature=config.temperature,
            dtype=dtype,
            chunk_size=config.loss_chunk_size,
            into_grad=True,
        )
        pg_loss, clipfrac, approx_kl = policy_loss(new_logprobs, part.logprobs, adv, part.response_mask, config.clip)
        (pg_loss * weight).backward()  # token mean over the minibatch
        _to_masters(state.policy_masters)
        for name, value in zip(
            ("ppo/policy/loss", "ppo/policy/clipfrac", "ppo/policy/approx_kl"), (pg_loss, clipfrac, approx_kl)
        ):
            sums[name] += value.item() * weight
    clip_by = None  # plain PPO, or ptx_clip="total": the gradients' own norm
    if ptx_batch:  # into the same gradient buffers, before the one optimizer step
        _summed_grads(_params(state.policy_optimizer), group)  # the global PPO gradient, for its norm
        sums["ppo/policy/ppo_grad_norm"] = grad_norm(_trained(state.policy_optimizer))  # the masters' with bf16-weights
        clip_by = sums["ppo/policy/ppo_grad_norm"] if config.ptx_clip == "ppo-norm" else None
        if not group.main:  # rank 0 carries the summed PPO part into the second sum; the others add ptx alone
            for param in _params(state.policy_optimizer):
                param.grad = None
        sums["ppo/ptx/loss"] = ptx_backward(
            policy,
            ptx_batch,
            config.ptx_coef,
            config.micro_batch_size,
            config.loss_chunk_size,
            models.tokenizer.pad_token_id,
            dtype,
            after_backward=lambda: _to_masters(state.policy_masters),
            share=(group.rank, group.world),
        )
    _summed_grads(_params(state.policy_optimizer), group)
    sums["ppo/policy/grad_norm"] = _step(state.policy_optimizer, state.policy_masters, config.max_grad_norm, clip_by)
    if state.ema is not None:
        with state.policy_masters.fp32_model() if state.policy_masters else nullcontext():
            state.ema.update(policy)
    for chunk in chunks:  # the value model is separate: its update does not depend on the policy's
        part, _, ret, weight = _micro_batch(batch, advantages, returns, chunk, tokens, device)
        args = (part.input_ids, part.attention_mask, part.prompt_width, part.response_mask)
        new_values = response_values(value_model, *args, dtype=dtype)
        vf_loss, vf_clipfrac = value_loss(new_values, part.values, ret, part.response_mask, config.value_clip)
        (vf_loss * weight).backward()
        _to_masters(state.value_masters)
        sums["ppo/val/loss"] += vf_loss.item() * weight
        sums["ppo/val/clipfrac"] += vf_clipfrac.item() * weight
    _summed_grads(_params(state.value_optimizer), group)
    sums["ppo/val/grad_norm"] = _step(state.value_optimizer, state.value_masters, config.max_grad_norm)
    return sums


KEPT_GRAD_NUMEL = 2**24
"""Gradients of at least this many elements (64 MiB in fp32) stay allocated between optimizer steps."""


@torch.no_grad()
def _summed_grads(params: list[torch.Tensor], group: DataParallel) -> None:
    """The gradients of ``params`` made dense, then summed over the ranks.

    The token embeddings look up with ``sparse=True`` (:func:`_init_state`), so a micro-batch's
    lookup gradient holds only the rows it read, added in place into the kept dense gradient
    (:func:`_clear_grads`) or, with bf16-weights, into the fp32 masters'
    (:meth:`MasterWeights.accumulate_grads`); a dense lookup gradient would be a fresh zero-filled
    ``[V, H]`` tensor every micro-batch (670 MB in fp32 for a 262k vocabulary). A gradient still
    sparse here (the first step's) is made dense once."""
    for param in params:
        if param.grad is not None and param.grad.is_sparse:
            param.grad = param.grad.to_dense()
    group.sum_grads(params)


def _clear_grads(optimizer: torch.optim.Optimizer) -> None:
    """After a step: the embedding-sized gradients (:data:`KEPT_GRAD_NUMEL`) zeroed in place and kept, the others freed.

    A fresh tensor of hundreds of MiB is page-faulted in on every allocation in glibc's and the
    ``thp`` allocator modes (:mod:`instructgpt.runtime`): in a profiled fp32 PPO update on a 2-core
    AVX2 EPYC (Gemma 3 270M, 8 episodes in 2 micro-batches) the unembedding's gradient product and
    the embeddings' zero-filled lookup gradients took about 5 s of 14 for that. Kept, the policy's
    tied unembedding gradient is written in place by the log-probabilities' backward
    (``token_logprobs(into_grad=True)``) and the sparse lookups add into it, as into the value
    model's embedding gradient. The cost: those gradients (0.67 GB each in fp32 for a 262k
    vocabulary) stay allocated through the rollout and the other model's update."""
    for param in _params(optimizer):
        grad = param.grad
        if grad is not None and not grad.is_sparse and grad.numel() >= KEPT_GRAD_NUMEL:
            grad.zero_()
        else:
            param.grad = None


def _to_masters(masters: MasterWeights | None) -> None:
    """bf16-weights: move the micro-batch's bf16 gradients into the fp32 masters' (frees them)."""
    if masters is not None:
        masters.accumulate_grads()


PARTIAL = (
    "ppo/policy/loss",
    "ppo/policy/clipfrac",
    "ppo/policy/approx_kl",
    "ppo/val/loss",
    "ppo/val/clipfrac",
    "ppo/ptx/loss",
)
"""Minibatch statistics that each rank sums over its own episodes (token-weighted by the global count)."""


def _summed_over_ranks(stats: list[dict[str, float]], group: DataParallel) -> list[dict[str, float]]:
    """The minibatches' :data:`PARTIAL` statistics summed over the ranks (one collective per iteration)."""
    keys = [k for k in PARTIAL if k in stats[0]]
    totals = group.sum(torch.tensor([[s[k] for k in keys] for s in stats], dtype=torch.float64)).tolist()
    return [{**s, **dict(zip(keys, row))} for s, row in zip(stats, totals)]


def _params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Every parameter the optimizer steps, in its order (the same on every rank)."""
    return [p for param_group in optimizer.param_groups for p in param_group["params"]]


def _trained(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The optimizer's parameters that hold a gradient (the fp32 masters with bf16-weights, the adapters with LoRA)."""
    return [p for param_group in optimizer.param_groups for p in param_group["params"] if p.grad is not None]


def _step(
    optimizer: torch.optim.Optimizer, masters: MasterWeights | None, max_norm: float, clip_by: float | None = None
) -> float:
    """Clip (by the gradients' own norm, or by ``clip_by``), one optimizer step, clear the gradients;
    bf16-weights: round the masters into the model. Returns the grad norm before clipping."""
    norm = clip_grad_norm(_trained(optimizer), max_norm, clip_by)
    optimizer.step()
    _clear_grads(optimizer)
    if masters is not None:
        masters.copy_to_model()
    return norm


def _micro_batch(batch: RolloutBatch, advantages, returns, chunk, tokens: int, device):
    """The episodes ``chunk`` (padding columns dropped), their advantages and returns, and their token weight."""
    part = batch.select(chunk).to(device)
    width = part.response_mask.shape[1]
    weight = part.response_mask.sum().item() / tokens
    return part, advantages[chunk, :width].to(device), returns[chunk, :width].to(device), weight


def ptx_backward(
    policy: Any,
    examples: list[Example],
    ptx_coef: float,
    micro_batch_size: int,
    chunk_size: int,
    pad_id: int,
    dtype,
    after_backward=None,
    share: tuple[int, int] = (0, 1),
) -> float:
    """Backward of ``ptx_coef * mean token NLL`` of the pretraining sequences, added to the
    gradients already in the buffers; returns the mean NLL (the PPO-ptx term of Eq. 2, negated).

    ``share=(rank, world)``: backpropagate only the sequences ``examples[rank::world]``, still
    divided by the token count of all of them; returns their part of the mean."""
    from instructgpt.data.collate import pack
    from instructgpt.losses.lm import fused_linear_cross_entropy
    from instructgpt.rollout.forward import autocast, causal_lm, trunk, unembedding

    device = next(policy.parameters()).device
    total_tokens = sum(sum(e.loss_mask[1:]) for e in examples)
    mine = examples[share[0] :: share[1]]
    softcap = getattr(causal_lm(policy).config, "final_logit_softcapping", None)
    nll = 0.0
    for start in range(0, len(mine), micro_batch_size):
        rows = pack(mine[start : start + micro_batch_size], pad_id=pad_id)
        input_ids, position_ids, loss_mask = (rows[k].to(device) for k in ("input_ids", "position_ids", "loss_mask"))
        with autocast(device, dtype):
            hidden = trunk(policy)(input_ids=input_ids, position_ids=position_ids, use_cache=False).last_hidden_state
        select = loss_mask[:, 1:]
        targets = input_ids[:, 1:][select]
        weights = torch.full_like(targets, 1.0 / total_tokens, dtype=torch.float32)
        loss = fused_linear_cross_entropy(
            hidden[:, :-1][select], unembedding(policy), targets, weights, chunk_size, dtype, softcap
        )
        (ptx_coef * loss).backward()
        if after_backward is not None:
            after_backward()
        nll += loss.item()
    return nll


def _init_state(config: PPOConfig, models: Models, masters: bool = False, ema: bool = True) -> TrainState:
    """Optimizers (over the fp32 masters when ``masters``: the models are then cast to bf16), EMA (unless ``ema``
    is False or ``ema_decay`` 0), KL controller."""

    def adam(params, lr):
        return torch.optim.AdamW(
            params, lr=lr, betas=config.adam_betas, eps=config.adam_eps, weight_decay=config.weight_decay, fused=True
        )

    averaged = PolicyEMA(models.policy, config.ema_decay) if ema and config.ema_decay > 0 else None  # before any cast
    for model in (models.policy, models.value_model):  # sparse lookup gradients (_summed_grads says why)
        model.get_input_embeddings().sparse = True
    policy_masters = MasterWeights(models.policy) if masters else None
    value_masters = (
        MasterWeights(models.value_model, keep_fp32=lambda name: name.startswith("head.")) if masters else None
    )
    trained = [
        m.masters if m else [p for p in model.parameters() if p.requires_grad]
        for m, model in ((policy_masters, models.policy), (value_masters, models.value_model))
    ]
    return TrainState(
        policy_optimizer=adam(trained[0], config.lr),
        value_optimizer=adam(trained[1], config.value_lr),
        ema=averaged,
        kl_controller=make_kl_controller(config.kl_coef, config.kl_target, config.kl_horizon),
        policy_masters=policy_masters,
        value_masters=value_masters,
    )


def _seed(seed: int, iteration: int, stream: int) -> int:
    """A distinct seed per (run seed, iteration, use): no generator's state carries across iterations."""
    return random.Random(f"{seed}:{iteration}:{stream}").getrandbits(63)


def _progress(config: PPOConfig, start: int, stop: int, enabled: bool = True):
    from tqdm.auto import tqdm

    return tqdm(total=stop, initial=start, desc="ppo", unit="it", disable=not (config.progress and enabled))
