"""The policy's RM score and KL to the reference on fixed validation prompts, during PPO.

The rollout's own ``objective/score`` is the mean over each iteration's fresh batch of training prompts: with a
batch of 16 and an RM whose scores spread about 1.8 from prompt to prompt, one iteration's mean moves by +-0.9
(95%) whatever the policy does, so a small run cannot show its score rising on that curve. This curve holds the
rest fixed: the same ``prompts`` (a seeded draw of the validation file, prompts no update trains on) are answered
at each evaluation with the same table of uniforms (one row per prompt, as the rollout samples), so two
evaluations differ only through the policy; each is scored by the reward model as the rollout scores an episode
(EOS appended to an unfinished answer when ``end_id`` is given) and compared prompt by prompt with the answers of
the starting policy (iteration 0, which is the frozen reference: PPO's KL reference is its initial policy).

Metrics (``validation/...``): ``score`` (mean RM score), ``score_gain`` with its Student's t 95% interval
``score_gain_low`` / ``score_gain_high`` (mean of the per-prompt differences to iteration 0), ``kl`` (mean per-answer
``sum_t log pi - log pi_ref`` of the sampled answers: an estimate of KL(pi || pi_ref) on these prompts),
``eos_fraction``, ``response_length``, ``prompts``.

Measured (the quickstart run of 2026-12-07, 113 PPO-validation prompts, sampled at temperature 1 with common
uniforms, 2-core EPYC): final PPO against its start +0.71 +- 0.32, PPO-ptx +0.27 +- 0.35; without the common prompts
the same comparison would have +-0.47 from the prompts alone. The answers are sampled as in the rollout (temperature,
top-k / top-p of the run), not greedy: the RM score PPO raises is that of its samples.

Iteration 0's answers depend on the starting policy, the reward model and the sampling settings only, so two runs
that share those (the pipeline's PPO and PPO-ptx) can share them: with a cache folder (``PPOConfig.validation_cache``)
they are kept there under a key of everything they depend on (:func:`start_key`) and read by the next run.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from instructgpt.files import digest, file_identity, load_or_compute
from instructgpt.rollout.collect import assemble, with_end_marker
from instructgpt.rollout.forward import response_logprobs, sequence_scores


@dataclass
class ValidationPrompts:
    """The fixed prompts (token ids) and their fixed uniforms ``[N, max_new_tokens]``."""

    prompt_ids: list[list[int]]
    uniforms: torch.Tensor

    @classmethod
    def draw(cls, prompt_ids: list[list[int]], count: int, max_new_tokens: int, seed: int) -> ValidationPrompts:
        """``count`` of ``prompt_ids`` (all when fewer), chosen and sampled with generators seeded by ``seed``
        alone (not by the iteration), so every evaluation of a run, resumed or not, sees the same ones."""
        chosen = sorted(random.Random(f"{seed}:validation").sample(range(len(prompt_ids)), min(count, len(prompt_ids))))
        generator = torch.Generator().manual_seed(random.Random(f"{seed}:validation-uniforms").getrandbits(63))
        uniforms = torch.rand(len(chosen), max_new_tokens, generator=generator, dtype=torch.float64)
        return cls([prompt_ids[i] for i in chosen], uniforms)


@dataclass
class Answers:
    """One evaluation's per-prompt figures ``[N]``."""

    scores: torch.Tensor
    kl: torch.Tensor
    ended: torch.Tensor
    lengths: torch.Tensor


@torch.no_grad()
def answer(
    policy: Any,
    reference: Any,
    reward_model: Any,
    backend: Any,
    prompts: ValidationPrompts,
    pad_id: int,
    end_id: int | None,
    temperature: float,
    dtype: torch.dtype | None,
    batch_size: int = 16,
    chunk_size: int = 1024,
    own: bool = False,
) -> Answers:
    """The policy's answers to ``prompts`` (through ``backend``, which samples from whatever it was synced to),
    scored by ``reward_model`` and compared with ``reference`` (``reference is policy``: LoRA, the adapter off).
    ``own``: the backend samples the reference itself (iteration 0), whose KL to itself is 0: not computed."""
    device = next(policy.parameters()).device
    generated = backend.generate(prompts.prompt_ids, prompts.uniforms)
    input_ids, attention_mask = assemble(prompts.prompt_ids, generated.response_ids, generated.response_mask, pad_id)
    response_mask = generated.response_mask.cpu()
    width = input_ids.shape[1] - response_mask.shape[1]
    ended = generated.ended_with_eos.cpu()
    scores, kl = torch.zeros(len(input_ids)), torch.zeros(len(input_ids))
    for start in range(0, len(input_ids), batch_size):
        rows = slice(start, start + batch_size)
        ids, mask, part_mask = input_ids[rows].to(device), attention_mask[rows].to(device), response_mask[rows]
        if not own:
            with policy.disable_adapter() if reference is policy else nullcontext():
                ref = response_logprobs(
                    reference, ids, mask, width, part_mask.to(device), temperature, dtype, chunk_size
                )
            kl[rows] = ((generated.logprobs[rows].cpu() - ref.cpu()) * part_mask).sum(-1)
        scored = (ids, mask) if end_id is None else with_end_marker(ids, mask, ended[rows].to(device), end_id)
        scores[rows] = sequence_scores(reward_model, *scored, dtype).cpu()
    return Answers(scores, kl, ended, response_mask.sum(-1))


def summary(now: Answers, start: Answers) -> dict[str, float]:
    """The ``validation/...`` metrics of ``now`` against ``start`` (the same prompts, iteration 0)."""
    from instructgpt.evaluation.metrics import mean_interval

    gain = (now.scores - start.scores).tolist()
    low, high = mean_interval(gain)
    return {
        "validation/score": now.scores.mean().item(),
        "validation/score_gain": sum(gain) / len(gain),
        "validation/score_gain_low": low,
        "validation/score_gain_high": high,
        "validation/kl": now.kl.mean().item(),
        "validation/eos_fraction": now.ended.float().mean().item(),
        "validation/response_length": now.lengths.float().mean().item(),
        "validation/prompts": float(len(gain)),
    }


TRAINING_ONLY = frozenset(
    {
        "out_dir", "prompts", "episodes", "batch_size", "minibatch_size", "micro_batch_size", "ppo_epochs", "lr",
        "lr_warmup_iterations", "lr_warmup_start", "value_lr", "kl_coef", "kl_target", "kl_horizon", "clip",
        "value_clip", "gamma", "lam", "whiten_advantages", "ptx_coef", "ptx_per_episode", "ptx_data", "ptx_seq_len",
        "ptx_corpus_tokens", "ptx_clip", "ema_decay", "validation_every", "validation_cache", "missing_eos_penalty",
        "max_grad_norm", "weight_decay", "adam_betas", "adam_eps", "master_weights", "save_every",
        "save_total_limit", "max_iterations", "resume", "progress", "report_to", "gradient_checkpointing", "save",
    }
)  # fmt: skip
"""PPOConfig fields iteration 0's answers do not depend on; every other field is part of :func:`start_key` (a field
added later is part of it until it is named here: a missed share, never a wrong one)."""


def start_key(config: Any, device: torch.device) -> str:
    """The key of iteration 0's answers: the config's fields but :data:`TRAINING_ONLY`, with the policy, the reward
    model and the validation prompt files named by their files' paths, sizes and modification times (so a model
    trained again into the same folder is a new key), the device type and torch's version."""
    fields = {name: value for name, value in asdict(config).items() if name not in TRAINING_ONLY}
    fields["policy"], fields["reward_model"] = file_identity(config.policy), file_identity(config.reward_model)
    fields["validation_prompts"] = [file_identity(path) for path in config.validation_prompts]
    fields.update(device=device.type, torch=torch.__version__)
    return digest(fields, length=20)


def cached(folder: Path | None, key: Callable[[], str], compute: Callable[[], Answers]) -> Answers:
    """``compute()``, or the answers kept in ``folder`` under ``key()`` by an earlier run; new answers are written
    there (atomically: a crash leaves no partial file). ``folder`` None: no cache (and no key computed)."""
    if folder is None:
        return compute()
    path = Path(folder) / f"validation-start-{key()}.pt"
    return load_or_compute(path, compute, lambda p: Answers(**torch.load(p)), lambda a, f: torch.save(asdict(a), f))
