"""Step 2 of the method: the reward model, trained on K-wise rankings as the paper does.

method.md, step 2: per prompt, the K ranked responses give C(K,2) comparisons, and all of them
form ONE batch element: each response gets one forward pass, the Eq. 1 loss
(:func:`instructgpt.losses.ranking.ranking_loss`) is built from the K scores. 1 epoch, lr 9e-6
with cosine decay to 10%, 64 prompts per batch. After training, a bias is set so that the
labelers' demonstrations score mean 0 (:func:`normalize`), and saved with the model; PPO adds it
to the scores (:func:`instructgpt.models.reward.load_reward_model` with ``normalized``).

Choices the paper leaves open, all configurable:

- the batch is counted in prompts; the loss is the mean over the batch's prompts of each
  prompt's normalised sum (``normalizer``: by its number of comparisons, default, or by
  C(K,2)); micro-batches hold whole prompts, bounded by ``micro_batch_prompts`` and
  ``micro_batch_tokens``, and each prompt's weight is computed over the whole optimizer batch,
  so gradient accumulation and data parallelism give exactly the one-big-batch update;
- the sequences of a micro-batch are packed into rows with restarting positions (``packing``),
  so that K responses of very different lengths cost little padding;
- Adam betas (0.9, 0.95) as for SFT, eps 1e-8, no weight decay, gradients clipped to 1.0, no
  dropout (the paper gives none for the RM), no warmup;
- bf16 autocast for the trunk where the hardware runs bf16 natively, the scalar head and the
  loss in fp32 (``precision``); or, with ``precision="bf16-weights"``, the trunk's weights in
  bf16 and fp32 master copies in the optimizer, the head in fp32 as its own master
  (:class:`~instructgpt.training.precision.MasterWeights`, as for SFT);
- the normalisation demonstrations default to the best-ranked responses (rank 0) of the
  training rankings, the closest stand-in for "the labelers' demonstrations" when no
  demonstrations file is given (``demonstrations``);
- an incomplete last batch of an epoch is dropped (:class:`~instructgpt.training.batching.BatchPlan`).

Distribution is accelerate's, as for SFT: the same loop on one process or data-parallel, or fully
sharded under an accelerate FSDP config (:mod:`instructgpt.training.sharding`: the reward model is
the root unit, each decoder layer a unit). Every process builds the same deterministic plan, so a
killed run resumed from its last checkpoint ends with exactly the weights of an uninterrupted one
(the RM has no dropout).
"""

from __future__ import annotations

import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from instructgpt.config import check, to_dict
from instructgpt.data.render import TEMPLATES
from instructgpt.losses.ranking import NORMALIZERS, ranking_accuracy, ranking_loss
from instructgpt.models.loader import DEFAULT_MODEL
from instructgpt.training import checkpoint as ckpt
from instructgpt.training import sharding
from instructgpt.training.batching import BatchPlan, shard_and_split
from instructgpt.training.launch import check_engine, check_launch, check_resumed_together
from instructgpt.training.lm import resolve_precision, warn_if_emulated
from instructgpt.training.metrics import MetricsLog, make_accelerator, progress_bar
from instructgpt.training.optim import clip_grad_norm
from instructgpt.training.options import (
    TrainerOptions,
    adapt_model,
    checkpoint_model,
    resume_trainable,
    trainable_for_resume,
)
from instructgpt.training.precision import MasterWeights
from instructgpt.training.rm_data import RankedGroup, flatten, render_groups, score_sequences
from instructgpt.training.schedule import cosine_lambda


@dataclass
class RMConfig(TrainerOptions):
    """Reward-model training on K-wise rankings (method.md step 2)."""

    model: str = DEFAULT_MODEL
    """Initial model: an SFT checkpoint (the paper's), 'gemma-3-270m', a Hugging Face folder, a .gguf file, or a saved
    RM."""
    data: tuple[Path, ...] = ()
    """Rankings: our K-wise JSONL or chosen/rejected pairs, as JSONL, parquet, CSV or a datasets folder (README)."""
    out_dir: Path = Path("runs/rm")
    """Run folder: checkpoints/, final/, metrics.jsonl."""
    val_data: tuple[Path, ...] = ()
    """Validation rankings; when empty, val_fraction of `data` is held out."""
    val_fraction: float = 0.05
    """Fraction of rankings (prompts) held out for validation when val_data is empty."""
    epochs: int = 1
    """Passes over the rankings (paper: 1; more overfit quickly)."""
    lr: float = 9e-6
    """Peak learning rate (paper: 9e-6); cosine decay to lr_final_fraction, no warmup."""
    lr_final_fraction: float = 0.1
    """Final learning rate as a fraction of lr (paper: 10%)."""
    batch_size: int = 64
    """Prompts (ranked groups) per optimizer step, over all processes (paper: 64)."""
    micro_batch_prompts: int = 16
    """Most prompts per forward pass on one process; all K responses of a prompt are in the same forward."""
    micro_batch_tokens: int = 4096
    """Most tokens per forward pass (all responses of its prompts, before padding; 0: no limit). A prompt whose K
    responses exceed it goes alone. The forward's activations kept for backward grow with it: training on K = 9
    rankings of 64-token responses (Gemma 3 270M, 16 prompts a step, 2-core Intel Xeon with AMX), 8192 took the
    process to 21.3 GB resident by step 5 (the run in the pipeline, after the samples stage, was killed at 24 GB)
    and 4096 to 13.6 GB, at the same 17-21 s a step."""
    packing: bool = True
    """Pack a forward's sequences into rows with restarting positions (little padding); otherwise pad to the longest."""
    pack_row_tokens: int = 1024
    """Packing: tokens per row (attention cost grows with it; a longer sequence gets a row of its own)."""
    normalizer: Literal["comparisons", "choose_k"] = "comparisons"
    """Divide a prompt's summed pair losses by its number of comparisons (ties give none), or by C(K,2) as Eq. 1 is
    written."""
    adam_betas: tuple[float, float] = (0.9, 0.95)
    """Adam beta1, beta2 (the paper's SFT values; none given for the RM)."""
    adam_eps: float = 1e-8
    """Adam epsilon (not given by the paper)."""
    weight_decay: float = 0.0
    """Decoupled weight decay (not given by the paper)."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm; 0 disables (not given by the paper)."""
    template: Literal["auto", "raw", "chat"] = "auto"
    """Prompt rendering, as in SFT: raw text (the paper's), the tokenizer's chat template, or auto."""
    separator: str = "\n\n"
    """Raw rendering: text between the prompt and the response."""
    max_prompt_tokens: int = 1024
    """Rankings whose prompt is longer are dropped, with a count (paper: 1k)."""
    max_response_tokens: int = 1024
    """Responses longer than this are truncated, with a count (paper: 1k)."""
    precision: Literal["auto", "bf16", "bf16-weights", "fp32"] = "auto"
    """bf16: the trunk under bf16 autocast, fp32 weights; bf16-weights: the trunk's weights in bf16 with fp32 master
    copies in the optimizer (training/precision.py); fp32; auto: bf16 where native. The head and loss are fp32."""
    head_init_std: float | None = None
    """Std of the fresh scalar head's normal init (not given by the paper); None: the model config's initializer_range
    (0.02 for Gemma), else 1/sqrt(hidden + 1)."""
    normalize: bool = True
    """After training, set the bias so that the demonstrations score mean 0 (method.md)."""
    demonstrations: tuple[Path, ...] = ()
    """Demonstration JSONL files for the normalisation; default: the best-ranked responses of the training rankings."""
    eval_every: int = 0
    """Validation every N steps (0: before training and at the end of each epoch only)."""
    seed: int = 0
    """Seed of the data order, the validation split and the head's initialisation."""
    save_every: int = 0
    """Save a resumable checkpoint every N steps (0: only at the end of each epoch)."""
    save_total_limit: int = 2
    """Keep only the newest N checkpoints under checkpoints/ (each ~3x the model: weights and Adam moments);
    0 keeps every one."""
    max_steps: int = 0
    """Stop (with a checkpoint) after this many optimizer steps in total; 0 runs all epochs. The schedule is unchanged.
    """
    resume: bool = True
    """Resume from the latest checkpoint in out_dir when there is one."""
    progress: bool = True
    """Show a progress bar."""

    def validate(self) -> None:
        check(self.epochs >= 1, "epochs", "must be at least 1")
        check(self.save_total_limit >= 0, "save_total_limit", "must be >= 0 (0 keeps every checkpoint)")
        check(self.lr > 0, "lr", "must be positive")
        check(0 <= self.lr_final_fraction <= 1, "lr_final_fraction", "must be in [0, 1]")
        check(self.batch_size >= 1 and self.micro_batch_prompts >= 1, "batch_size", "batch sizes must be at least 1")
        check(
            self.micro_batch_tokens >= 0 and self.pack_row_tokens >= 1,
            "micro_batch_tokens",
            "token limits must be >= 0",
        )
        check(all(0 <= b < 1 for b in self.adam_betas), "adam_betas", "each beta must be in [0, 1)")
        check(0 <= self.val_fraction < 1, "val_fraction", "must be in [0, 1)")
        check(self.normalizer in NORMALIZERS, "normalizer", f"must be one of {NORMALIZERS}")
        check(self.template in TEMPLATES, "template", f"must be one of {TEMPLATES}")
        check(self.max_prompt_tokens >= 1 and self.max_response_tokens >= 1, "max_prompt_tokens", "limits must be >= 1")
        missing = [str(path) for path in self.demonstrations if not Path(path).exists()]
        check(not missing, "demonstrations", f"not found: {', '.join(missing)} (read after training)")
        self.validate_options()
        check(
            not (self.lora_rank > 0 and self.precision == "bf16-weights"),
            "precision",
            "bf16-weights trains full weights; use bf16 (or auto) with LoRA",
        )
        check(
            self.save == "merged",
            "save",
            "a reward model is saved merged, in the reward-model layout; 'adapter' is for SFT and the PPO policy",
        )


class RankingObjective(torch.nn.Module):
    """The reward model and the Eq. 1 loss of one micro-batch, as one module (DDP sees one forward)."""

    def __init__(self, reward_model: Any, pad_id: int, config: RMConfig, autocast: torch.dtype | None):
        super().__init__()
        self.reward_model = reward_model
        self.pad_id, self.config, self.autocast = pad_id, config, autocast

    def forward(self, groups: list[RankedGroup], prompt_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(prompt_weight * sum of the groups' Eq. 1 losses, scores [N])``."""
        sequences, prompt_index, ranks = flatten(groups)
        c = self.config
        scores = score_sequences(self.reward_model, sequences, self.pad_id, c.packing, c.pack_row_tokens, self.autocast)
        device = scores.device
        losses = ranking_loss(scores, prompt_index.to(device), ranks.to(device), len(groups), c.normalizer)  # [P]
        return prompt_weight * losses.sum(), scores


def train_rm(config: RMConfig, model: Any = None, tokenizer: Any = None) -> Path:
    """Train the reward model; returns the folder of the final, normalised model (``out_dir/final``)."""
    config.validate()
    accelerator = make_accelerator(config.report_to, config.out_dir, cpu=not torch.cuda.is_available())
    fsdp = check_engine(accelerator, "rm train", sharded=("FSDP",)) and sharding.fsdp_settings(os.environ)
    if fsdp:
        sharding.check_options(config.precision, config.lora_rank)
    check_launch(accelerator, config.batch_size)
    if model is None:
        model, tokenizer = _load_model(config, accelerator.device)
    model.to(accelerator.device)
    model = adapt_model(model, config, accelerator.device, config.seed)  # LoRA on the trunk, checkpointing
    train, val, records = build_groups(config, tokenizer, accelerator.is_main_process)
    check(
        len(train) >= config.batch_size,
        "batch_size",
        f"{config.batch_size} prompts per batch, but only {len(train)} training prompts",
    )
    plan = BatchPlan(len(train), config.batch_size, config.epochs, config.seed)
    last = ckpt.latest_checkpoint(config.out_dir) if config.resume else None
    _resume_weights(config, model, last)  # before any cast: the checkpoint holds the fp32 weights
    master = None
    if config.precision == "bf16-weights":  # the head stays fp32, its own master
        master = MasterWeights(model, keep_fp32=lambda name: name.startswith("head."))
        warn_if_emulated(config.precision, accelerator.device)
    autocast = None if master else resolve_precision(config.precision, accelerator.device)
    objective = RankingObjective(model, tokenizer.pad_token_id, config, autocast)
    if fsdp:  # sharded here, not by accelerator.prepare; the reward model is the root (sharding.py)
        sharding.shard(model, model, fsdp, accelerator.device, forward_methods=("score_packed",))
    optimizer = torch.optim.AdamW(
        master.masters if master else [p for p in model.parameters() if p.requires_grad],
        lr=config.lr,
        betas=config.adam_betas,
        eps=config.adam_eps,
        weight_decay=config.weight_decay,
        fused=True,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_lambda(plan.total_steps, config.lr_final_fraction))
    start = ckpt.load_trainer_state(last, optimizer, scheduler, accelerator.is_main_process, model if fsdp else None)
    check_resumed_together(accelerator, start)
    wrapped = objective
    if not fsdp:
        wrapped, optimizer = accelerator.prepare(objective, optimizer)
    log = MetricsLog(config.out_dir, accelerator.is_main_process, accelerator, "instructgpt-rm", config, start)
    stop = min(plan.total_steps, config.max_steps or plan.total_steps)
    if val and start == 0:
        log.log(0, validation_metrics(objective, val, config, accelerator))
    bar = _progress(config, accelerator, start, stop)
    lengths = [g.tokens for g in train]
    for step in range(start, stop):
        metrics = rm_step(wrapped, optimizer, train, lengths, plan.batch(step), config, accelerator, master)
        scheduler.step()
        log.log(step + 1, {**metrics, "rm/epoch": (step + 1) / plan.steps_per_epoch})
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['rm/loss']:.3f}", acc=f"{metrics['rm/accuracy']:.2f}")
        epoch_end = (step + 1) % plan.steps_per_epoch == 0
        if val and (epoch_end or (config.eval_every and (step + 1) % config.eval_every == 0)):
            log.log(step + 1, validation_metrics(objective, val, config, accelerator))
        if epoch_end or step + 1 == stop or (config.save_every and (step + 1) % config.save_every == 0):
            with master.fp32_model() if master else nullcontext(model) as weights:
                _save(config, accelerator, weights, tokenizer, optimizer, scheduler, step + 1, plan)
    bar.close()
    if master:
        master.restore()  # training is over: the fp32 masters become the weights (normalised and saved)
    if stop == plan.total_steps and config.normalize:
        bias = normalize(model, tokenizer, _demonstrations(config, records), config, accelerator)
        log.log(stop, {"rm/normalization_bias": bias})
    log.close()
    return _finish(config, accelerator, model, tokenizer, stop, plan)


def rm_step(
    wrapped,
    optimizer,
    groups: list[RankedGroup],
    lengths: list[int],
    indices: list[int],
    config: RMConfig,
    accelerator,
    master: MasterWeights | None = None,
) -> dict[str, float]:
    """One optimizer step over the global batch ``indices`` (prompts): accumulate, clip, step.

    ``lengths[i] == groups[i].tokens``, computed once per run. With ``master``
    (:class:`MasterWeights`), gradients are accumulated, reduced and the step taken in fp32.
    """
    started = time.perf_counter()
    micro = _micro_batches(indices, lengths, config, accelerator, sharding.is_sharded(wrapped))
    weight = accelerator.num_processes / len(indices)  # mean over the batch's prompts; DDP and FSDP average too
    wrapped.train()
    sums = torch.zeros(5)  # loss, correct, comparisons, responses, tokens
    for k, (chunk, counted) in enumerate(micro):
        chosen = [groups[i] for i in chunk]
        sync = k == len(micro) - 1 and not master  # with masters, all_reduce_grads reduces once below
        with sharding.no_sync(accelerator, wrapped) if not sync else nullcontext():
            loss, scores = wrapped(chosen, weight if counted else 0.0)
            accelerator.backward(loss)
        if master:
            master.accumulate_grads()
        if not counted:  # FSDP's repeat, run only to keep the processes' collectives in step
            continue
        _, prompt_index, ranks = flatten(chosen)
        correct, total = ranking_accuracy(scores.detach().cpu(), prompt_index, ranks, len(chosen))
        responses, tokens = sum(g.k for g in chosen), sum(g.tokens for g in chosen)
        sums += torch.tensor([loss.item() / accelerator.num_processes, correct.sum(), total.sum(), responses, tokens])
    if master:
        master.all_reduce_grads()
    grad_norm = clip_grad_norm(master.masters if master else wrapped.parameters(), config.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if master:
        master.copy_to_model()
    loss, correct, comparisons, responses, tokens = accelerator.reduce(sums.to(accelerator.device), "sum").tolist()
    elapsed = time.perf_counter() - started
    return {
        "rm/loss": loss,
        "rm/accuracy": correct / max(comparisons, 1),
        "rm/grad_norm": grad_norm,
        "rm/lr": optimizer.param_groups[0]["lr"],
        "rm/prompts": len(indices),
        "rm/responses": int(responses),  # = forward sequences: one per response
        "rm/comparisons": int(comparisons),
        "rm/tokens": int(tokens),
        "rm/tokens_per_s": tokens / elapsed,
        "time/step_s": elapsed,
    }


def _micro_batches(indices, lengths, config: RMConfig, accelerator, sharded: bool) -> list[tuple[list[int], bool]]:
    """This process's micro-batches (whole prompts) of the global batch ``indices``, each with whether its loss
    counts (under FSDP, as many as the busiest process's: :func:`~instructgpt.training.sharding.even_micro_batches`).
    """
    rank, world = accelerator.process_index, accelerator.num_processes
    args = (config.micro_batch_prompts, config.micro_batch_tokens, True)

    def split(r: int) -> list[list[int]]:
        return shard_and_split(indices, lengths, r, world, *args)

    return sharding.even_micro_batches(split, rank, world, sharded)


def validation_metrics(
    objective: RankingObjective, groups: list[RankedGroup], config: RMConfig, accelerator
) -> dict[str, float]:
    """Validation accuracy and log loss (overall and per K) of the unwrapped objective's model."""
    from instructgpt.training.rm_eval import evaluate_groups

    report = evaluate_groups(
        objective.reward_model,
        groups,
        objective.pad_id,
        config.micro_batch_prompts,
        config.micro_batch_tokens,
        config.packing,
        config.pack_row_tokens,
        objective.autocast,
        accelerator,
    )
    metrics = {f"rm/val_{name}": value for name, value in report["overall"].items()}
    for k, row in report["per_k"].items():
        metrics[f"rm/val_accuracy_k{k}"] = row["accuracy"]
    return metrics


@torch.no_grad()
def normalize(model: Any, tokenizer: Any, pairs: list[tuple[Any, str]], config: RMConfig, accelerator=None) -> float:
    """Set ``model.normalization_bias`` so that the (prompt, response) ``pairs`` score mean 0 with it; returns it.

    Each process scores its share of the pairs; the sums are reduced, so all processes end with
    the same bias. Under FSDP every process runs as many forwards as the busiest (a repeat that is not counted).
    """
    from instructgpt.data.render import render_prompt, response_ids

    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    autocast = resolve_precision(config.precision, next(model.parameters()).device)
    model.eval()
    applied = float(model.normalization_bias) if model.normalize else 0.0  # what the scores below include
    total, count = torch.zeros(()), torch.zeros(())
    mine = pairs[rank::world]
    most = -(-len(pairs) // world) if sharding.is_sharded(model) else len(mine)
    for start in range(0, max(len(mine), most), config.micro_batch_prompts * 4):
        chunk = mine[start : start + config.micro_batch_prompts * 4]
        counted = bool(chunk)
        sequences = []
        for prompt, response in chunk or pairs[:1]:
            ids = render_prompt(tokenizer, prompt, config.template, config.separator)
            sequences.append(
                ids + response_ids(tokenizer, prompt, response, config.template)[: config.max_response_tokens]
            )
        scores = score_sequences(
            model, sequences, tokenizer.pad_token_id, config.packing, config.pack_row_tokens, autocast
        )
        if counted:
            total += (scores - applied).sum().cpu()
            count += len(sequences)
    if accelerator is not None:
        total, count = (accelerator.reduce(t.to(accelerator.device), "sum").cpu() for t in (total, count))
    bias = -(total / count.clamp(min=1)).item()
    model.normalization_bias.fill_(bias)
    return bias


def build_groups(
    config: RMConfig, tokenizer: Any, verbose: bool = True
) -> tuple[list[RankedGroup], list[RankedGroup], list]:
    """Read and render the rankings: ``(train groups, validation groups, training Ranking records)``."""
    from instructgpt.data.sources import load_records

    check(bool(config.data), "data", "give at least one rankings file")
    records = [r for path in config.data for r in load_records(path, "rankings")]
    held = [r for path in config.val_data for r in load_records(path, "rankings")]
    if not held and config.val_fraction > 0:
        order = random.Random(config.seed).sample(range(len(records)), len(records))
        cut = int(len(records) * config.val_fraction)
        held, records = [records[i] for i in order[:cut]], [records[i] for i in order[cut:]]
    kwargs: dict[str, Any] = dict(
        template=config.template,
        separator=config.separator,
        max_prompt_tokens=config.max_prompt_tokens,
        max_response_tokens=config.max_response_tokens,
    )
    train, stats = render_groups(tokenizer, records, **kwargs)
    val, _ = render_groups(tokenizer, held, **kwargs)
    if verbose:
        print(f"rm data: train {stats.summary()}; {len(train)} training prompts, {len(val)} validation")
    return train, val, records


def _demonstrations(config: RMConfig, records: list) -> list[tuple[Any, str]]:
    """The normalisation set: the demonstrations files, or the training rankings' rank-0 responses."""
    from instructgpt.data.sources import load_records

    if config.demonstrations:
        return [(d.prompt, d.response) for path in config.demonstrations for d in load_records(path, "demonstrations")]
    return [(r.prompt, response) for r in records for response, rank in zip(r.responses, r.ranks) if rank == 0]


def _resume_weights(config: RMConfig, model: Any, last: Path | None) -> None:
    from instructgpt.models.reward import load_reward_weights

    if last is not None and config.lora_rank > 0:
        resume_trainable(model, last)  # adapters and head (the folder may hold the merged model)
    elif last is not None:
        load_reward_weights(model, last)


def _save(config, accelerator, model, tokenizer, optimizer, scheduler, step, plan) -> None:
    folder = config.out_dir / "checkpoints" / f"step-{step:06d}"
    sharded = model if sharding.is_sharded(model) else None
    ckpt.save_on_main(
        accelerator,
        folder,
        checkpoint_model(model, config),
        tokenizer,
        _meta(config, step, plan, accelerator.num_processes, sharding.engine_of(model)),
        {**ckpt.resumable_state(optimizer, scheduler, step, sharded), **trainable_for_resume(model, config)},
        sharding.gathered_weights(model) if sharded else None,
    )
    if accelerator.is_main_process:  # a limit of 0 keeps every checkpoint
        ckpt.prune_checkpoints(config.out_dir, config.save_total_limit)


def _finish(config, accelerator, model, tokenizer, stop, plan) -> Path:
    if stop == plan.total_steps:
        model.parent = config.model
        final = checkpoint_model(model, config)  # with LoRA: the merged copy, saved as any reward model
        meta = _meta(config, stop, plan, accelerator.num_processes, sharding.engine_of(model))
        weights = sharding.gathered_weights(model) if sharding.is_sharded(model) else None
        ckpt.save_on_main(accelerator, config.out_dir / "final", final, tokenizer, meta, weights=weights)
    return config.out_dir / "final"


def _load_model(config: RMConfig, device: torch.device) -> tuple[Any, Any]:
    """The initial reward model; with QLoRA, a causal LM's trunk in 4 bits under a fresh head."""
    from instructgpt.models.reward import RewardModel, is_reward_model, load_reward_model

    if not config.qlora:
        return load_reward_model(config.model, seed=config.seed, head_init_std=config.head_init_std, new_head=True)
    from instructgpt.models.lora import load_quantized_lm

    check(not is_reward_model(config.model), "qlora", "initialise from a causal LM (an SFT folder), not a saved RM")
    lm, tokenizer = load_quantized_lm(config.model, device)
    return RewardModel.from_causal_lm(lm, seed=config.seed, head_init_std=config.head_init_std), tokenizer


def _meta(config: RMConfig, step: int, plan: BatchPlan, processes: int, engine: str | None) -> dict:
    return {
        "kind": "rm",
        "step": step,
        "epoch": step / plan.steps_per_epoch,
        "parent": config.model,
        "processes": processes,  # data-parallel ranks that trained it
        "sharding": engine,  # "FSDP", or None: every process held the whole model
        "config": to_dict(config),
    }


def _progress(config, accelerator, start: int, stop: int):
    return progress_bar("rm", start, stop, config.progress and accelerator.is_main_process)
