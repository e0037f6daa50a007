"""The PPO trainer's configuration and the types its loop and its I/O (:mod:`.ppo_io`) share.

Documented choices: :mod:`instructgpt.training.ppo`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from instructgpt.config import check, to_dict
from instructgpt.data.render import TEMPLATES
from instructgpt.models.loader import DEFAULT_MODEL
from instructgpt.training.options import TrainerOptions


@dataclass
class PPOConfig(TrainerOptions):
    """RL from the reward model with PPO, or PPO-ptx (method.md step 3)."""

    policy: str = DEFAULT_MODEL
    """The SFT model that initialises the policy and is the frozen KL reference: a Hugging Face folder (e.g.
    runs/sft/final), a .gguf file, 'gemma-3-270m' or a Hub id."""
    reward_model: str = ""
    """The reward model folder (RewardModel.save_pretrained); it also initialises the value model."""
    prompts: tuple[Path, ...] = ()
    """PPO prompt files: JSONL of prompts records ('text') or demonstrations records ('prompt')."""
    out_dir: Path = Path("runs/ppo")
    """Run folder: checkpoints/, final/ (policy = the EMA; final/value = the value model), metrics.jsonl."""
    episodes: int = 256_000
    """Total episodes (paper: 256k); iterations = episodes // batch_size."""
    batch_size: int = 512
    """Episodes per iteration, over all processes (paper: 512); data-parallel: a multiple of the number of processes."""
    minibatch_size: int = 64
    """Episodes per optimizer step, over all processes (paper: 64)."""
    micro_batch_size: int = 8
    """Episodes per forward pass in the update, per process (gradient accumulation covers the rest of the minibatch)."""
    forward_batch_size: int = 16
    """Episodes per no-grad forward pass of the rollout (reference, value, reward), per process."""
    generation_batch_size: int = 64
    """Prompts sampled together in one batched generation, per process."""
    ppo_epochs: int = 1
    """Passes over each batch (paper: 1)."""
    lr: float = 5e-6
    """Peak (and constant) policy learning rate; the paper swept 2.55e-6 .. 2.55e-5."""
    lr_warmup_iterations: int = 10
    """Iterations of linear warm-up of the policy lr (paper: 10)."""
    lr_warmup_start: float = 0.1
    """Warm-up starts at this fraction of lr (paper: 1/10)."""
    value_lr: float = 9e-6
    """Value-model learning rate, constant (paper: 9e-6)."""
    kl_coef: float = 0.02
    """beta: weight of the per-token KL penalty to the SFT reference (paper: 0.02); the initial value when adaptive."""
    kl_target: float | None = None
    """Adaptive KL controller (Ziegler et al. 2019): target KL per episode, in nats; None keeps beta fixed."""
    kl_horizon: int = 10_000
    """Adaptive KL controller horizon, in episodes."""
    clip: float = 0.2
    """PPO clip range of the probability ratio (paper: 0.2)."""
    value_clip: float | None = 0.2
    """Clip of the value update around the rollout's values; None: unclipped squared error (not given by the paper)."""
    gamma: float = 1.0
    """GAE discount (paper: 1)."""
    lam: float = 0.95
    """GAE lambda (not given by the paper; 0.95 is common)."""
    whiten_advantages: bool = True
    """Standardise advantages over each batch (not given by the paper)."""
    ptx_coef: float = 27.8
    """gamma of PPO-ptx: weight of the pretraining log-likelihood gradient (paper: 27.8); 0 is plain PPO."""
    ptx_per_episode: float = 8.0
    """Pretraining sequences per RL episode (paper: 8)."""
    ptx_data: Path | None = None
    """Pretraining corpus (JSONL with a 'text' field, or a folder of .txt); default: the bundled shared/data/pretrain
    mix."""
    ptx_seq_len: int = 512
    """Tokens per pretraining sequence."""
    ptx_corpus_tokens: int = 2_000_000
    """Tokens of the (shuffled) corpus tokenized once at start, from which pretraining windows are drawn."""
    ema_decay: float = 0.992
    """Decay of the policy weights' EMA, updated every policy optimizer step; the EMA is the final model (paper: 0.992);
    0 keeps the last weights."""
    validation_prompts: tuple[Path, ...] = ()
    """Prompt files of the validation curve (:mod:`instructgpt.training.ppo_validation`): the policy's RM score and KL
    on the same prompts at iteration 0 and every ``validation_every`` iterations, logged as ``validation/...``; empty:
    no curve. Prompts no update trains on (e.g. the PPO prompts' validation split)."""
    validation_size: int = 64
    """Prompts of the validation curve (a seeded draw of ``validation_prompts``; all of them when fewer)."""
    validation_cache: Path | None = None
    """A folder where iteration 0's validation answers are kept under a key of everything they depend on (the policy's
    and the reward model's files, the prompts and the sampling settings), so that another run from the same start reads
    them instead of answering again (the pipeline's PPO and PPO-ptx); None: no cache. The key names models by their
    folders' files, so models passed in memory to :func:`train_ppo` (not loaded from ``policy``) want None."""
    validation_every: int = 0
    """Evaluate the validation curve every N iterations and after the last one; 0: after the last one only. Iteration
    0 (the starting policy, which is the KL reference) is always evaluated. Each point costs one generation over the
    prompts and a reference and reward forward (about 15 s for 64 prompts of 48 tokens on a 2-core EPYC)."""
    max_new_tokens: int = 256
    """Longest response, in tokens (the paper caps responses at 1k)."""
    max_prompt_tokens: int = 1024
    """Prompts longer than this are dropped (paper: 1k)."""
    temperature: float = 1.0
    """Sampling temperature (paper: 1); the policy's log-probabilities are of the temperature-scaled distribution."""
    top_k: int = 0
    """Sample among the k most likely tokens; 0: off (not given by the paper)."""
    top_p: float = 1.0
    """Nucleus sampling; 1: off (not given by the paper)."""
    missing_eos_penalty: float = 0.0
    """Subtracted from the score of a response that hits max_new_tokens without EOS (the paper does not say)."""
    score_unfinished: Literal["end-marker", "as-is"] = "end-marker"
    """How the reward model reads a response that hit max_new_tokens without EOS (the paper does not say).
    'end-marker': with EOS appended, the form every ranked response had in the RM's training, cut-off samples
    included (:mod:`instructgpt.rollout.collect`); 'as-is': at its last sampled token, a position the RM never
    saw scored (on the miniature preset's RM the two readings of cut-off SFT samples correlate 0.23)."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm, per model; 0 disables (not given by the paper)."""
    ptx_clip: Literal["ppo-norm", "total"] = "ppo-norm"
    """How PPO-ptx's policy gradient g_ppo + ptx_coef * g_ptx is clipped (the paper does not say). 'ppo-norm': the whole
    sum is scaled by min(1, max_grad_norm / |g_ppo|), so the PPO part is clipped exactly as in plain PPO and the sum
    keeps Eq. 2's ratio ptx_coef (the pretraining part is not bounded); 'total': scaled by the sum's own norm, which
    the pretraining part dominates (tiny model, first minibatch: |g_ppo| = 2.36, |g_ppo + 27.8 g_ptx| = 73.3), so the
    PPO part is scaled 31x more than in plain PPO. Both keep the ratio within a step (which sets the direction of an
    Adam step); they weigh steps differently in Adam's moments and against adam_eps. Plain PPO is the same under
    both."""
    weight_decay: float = 0.0
    """Decoupled weight decay (not given by the paper)."""
    adam_betas: tuple[float, float] = (0.9, 0.95)
    """Adam beta1, beta2."""
    adam_eps: float = 1e-5
    """Adam epsilon (not given by the paper)."""
    backend: Literal["auto", "hf", "vllm"] = "auto"
    """Generation: Hugging Face forward with KV cache, vLLM, or auto (vLLM when installed on a GPU machine)."""
    recompute_logprobs: bool = False
    """Recompute the old log-probabilities with a forward pass instead of taking them from sampling (always done with
    vLLM)."""
    template: Literal["auto", "raw", "chat"] = "auto"
    """Prompt rendering, as in SFT."""
    separator: str = "\n\n"
    """Raw rendering: text between the prompt and the response, as in SFT."""
    precision: Literal["auto", "bf16", "bf16-weights", "fp32"] = "auto"
    """bf16-weights: policy and value model held in bf16 (forward, backward and sampling without casts), updated through
    fp32 master copies; bf16: fp32 weights under bf16 autocast; fp32; auto: bf16-weights where bf16 is native (bf16
    autocast with LoRA), else fp32. The reference and reward model are held in bf16 unless fp32."""
    master_weights: Literal["fp32", "bf16"] = "fp32"
    """Where the optimizer updates the policy and value model: fp32 (master weights; see precision) or bf16 (pure bf16
    training, no masters: less memory, but lr-sized updates are mostly rounded away)."""
    loss_chunk_size: int = 1024
    """Tokens per chunk of the vocabulary projection (bounds logits memory)."""
    seed: int = 0
    """Seed of prompt order, minibatches, sampling and pretraining windows."""
    save_every: int = 0
    """Save a resumable checkpoint every N iterations (0: only at the end)."""
    save_total_limit: int = 2
    """Keep the newest N checkpoints (each holds the policy, the value model and both optimizers' states, about 5x
    the model); 0 keeps every one."""
    max_iterations: int = 0
    """Stop (with a checkpoint) after this many iterations in total; 0 runs them all."""
    resume: bool = True
    """Resume from the latest checkpoint in out_dir when there is one."""
    progress: bool = True
    """Show a progress bar."""

    def validate(self) -> None:
        check(self.save_total_limit >= 0, "save_total_limit", "must be >= 0 (0 keeps every checkpoint)")
        check(
            self.batch_size >= 1 and self.minibatch_size >= 1 and self.micro_batch_size >= 1,
            "batch_size",
            "batch sizes must be at least 1",
        )
        check(
            self.batch_size % self.minibatch_size == 0, "minibatch_size", f"must divide batch_size ({self.batch_size})"
        )
        check(self.episodes >= self.batch_size, "episodes", "must be at least batch_size")
        check(self.ppo_epochs >= 1, "ppo_epochs", "must be at least 1")
        check(self.lr > 0 and self.value_lr > 0, "lr", "learning rates must be positive")
        check(0 < self.lr_warmup_start <= 1, "lr_warmup_start", "must be in (0, 1]")
        check(self.kl_coef >= 0, "kl_coef", "must be >= 0")
        check(self.kl_target is None or self.kl_target > 0, "kl_target", "must be positive (or None for a fixed beta)")
        check(self.clip > 0, "clip", "must be positive")
        check(self.value_clip is None or self.value_clip > 0, "value_clip", "must be positive or None")
        check(0 <= self.gamma <= 1 and 0 <= self.lam <= 1, "lam", "gamma and lam must be in [0, 1]")
        check(self.ptx_coef >= 0 and self.ptx_per_episode >= 0, "ptx_coef", "ptx_coef and ptx_per_episode must be >= 0")
        check(0 <= self.ema_decay < 1, "ema_decay", "must be in [0, 1)")
        check(self.max_new_tokens >= 1, "max_new_tokens", "must be at least 1")
        check(self.temperature > 0, "temperature", "must be positive")
        check(0 < self.top_p <= 1 and self.top_k >= 0, "top_p", "top_p must be in (0, 1] and top_k >= 0")
        self.validate_options()
        check(
            not (self.lora_rank > 0 and self.precision == "bf16-weights"),
            "precision",
            "bf16-weights trains full weights; use bf16 (or auto) with LoRA",
        )
        check(self.template in TEMPLATES, "template", f"must be one of {TEMPLATES}")
        check(
            self.validation_size >= 1 and self.validation_every >= 0,
            "validation_size",
            "validation_size must be at least 1 and validation_every at least 0",
        )
        check(self.ptx_seq_len >= 2, "ptx_seq_len", "must be at least 2")
        check(self.ptx_clip in ("ppo-norm", "total"), "ptx_clip", "must be 'ppo-norm' or 'total'")
        check(self.score_unfinished in ("end-marker", "as-is"), "score_unfinished", "must be 'end-marker' or 'as-is'")

    @property
    def iterations(self) -> int:
        return self.episodes // self.batch_size


def training_precision(config: PPOConfig, device: torch.device) -> str:
    """The precision scheme the config resolves to on ``device``: 'bf16-weights', 'bf16' or 'fp32'."""
    from instructgpt.training.lm import bf16_native, warn_if_emulated

    if config.precision == "auto":
        return "fp32" if not bf16_native(device) else "bf16" if config.lora_rank > 0 else "bf16-weights"
    warn_if_emulated(config.precision, device)
    return config.precision


@dataclass
class Models:
    """The four models of step 3 (with LoRA, ``sft_policy is policy``)."""

    policy: Any
    sft_policy: Any
    value_model: Any
    reward_model: Any
    tokenizer: Any


def config_meta(config: PPOConfig, iteration: int, processes: int = 1) -> dict:
    return {
        "kind": "ppo",
        "step": iteration,
        "processes": processes,  # data-parallel ranks that trained it
        "parent": config.policy,
        "reward_model": config.reward_model,
        "config": to_dict(config),
    }
