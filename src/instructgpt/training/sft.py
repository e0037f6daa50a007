"""Step 1 of the method: supervised fine-tuning (SFT) on labeler demonstrations.

method.md, step 1: next-token cross-entropy on the response tokens, 16 epochs, cosine decay to
10% of the initial rate with no warmup, residual dropout 0.2, Adam betas (0.9, 0.95), lr
9.65e-6 and batch 32 (the paper's 1.3B/6B values; a small model wants a larger rate). The
model that initialises PPO is a 2-epoch run with 10% pretraining data mixed in
(``pretrain_mix=0.1``).

Choices the paper leaves open, all configurable: the loss is the mean over every response token
of the optimizer batch (not a mean of per-sequence means); gradients are clipped to norm 1.0;
no weight decay; Adam eps 1e-8; bf16 autocast (fp32 master weights) where the hardware runs bf16
natively; the pretraining mix is a fraction of training *sequences*; a validation split of 5%.

Distribution is accelerate's: the same loop runs on one process or data-parallel (DDP over
gloo on CPU, NCCL on GPU), or fully sharded under an accelerate FSDP config
(:mod:`instructgpt.training.sharding`). Every process builds the same deterministic plan
(:mod:`instructgpt.training.batching`); dropout is re-seeded from ``(seed, step, rank)`` at each
step, so a run killed and resumed from a checkpoint ends with exactly the weights of an
uninterrupted run.
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
from instructgpt.data.collate import collate, pack
from instructgpt.data.render import TEMPLATES, Example, render_all
from instructgpt.models.loader import DEFAULT_MODEL
from instructgpt.training import checkpoint as ckpt
from instructgpt.training import sharding
from instructgpt.training.batching import BatchPlan, shard_and_split
from instructgpt.training.launch import check_engine, check_launch, check_resumed_together, is_data_parallel
from instructgpt.training.lm import CausalLMLoss, resolve_precision, sparse_tied_embedding, warn_if_emulated
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
from instructgpt.training.schedule import cosine_lambda


@dataclass
class SFTConfig(TrainerOptions):
    """Supervised fine-tuning (method.md step 1)."""

    model: str = DEFAULT_MODEL
    """Base model: 'gemma-3-270m' (embedded), a local Hugging Face folder, a .gguf file, or a Hub id."""
    data: tuple[Path, ...] = ()
    """Demonstrations: our JSONL, TRL prompt/completion or messages records, parquet/CSV/datasets folders (README)."""
    out_dir: Path = Path("runs/sft")
    """Run folder: checkpoints/, final/, metrics.jsonl."""
    val_data: tuple[Path, ...] = ()
    """Validation demonstrations; when empty, val_fraction of `data` is held out."""
    val_fraction: float = 0.05
    """Fraction of demonstrations held out for validation loss when val_data is empty."""
    epochs: int = 16
    """Passes over the demonstrations (paper: 16; 2 for the model that initialises PPO)."""
    lr: float = 9.65e-6
    """Peak learning rate (paper, 1.3B/6B: 9.65e-6); cosine decay to lr_final_fraction, no warmup."""
    lr_final_fraction: float = 0.1
    """Final learning rate as a fraction of lr (paper: 10%)."""
    batch_size: int = 32
    """Demonstrations per optimizer step, over all processes (paper: 32)."""
    micro_batch_size: int = 16
    """Most sequences per forward pass on one process (gradient accumulation covers the rest of the batch)."""
    micro_batch_tokens: int = 2048
    """Most tokens per forward pass, padding included (0: no limit); long sequences go in smaller micro-batches."""
    packing: bool = True
    """Pack micro-batches into rows with restarting positions (little padding; attention stays within each sequence)."""
    pack_row_tokens: int = 512
    """Packing: tokens per row (attention cost grows with it; a longer sequence gets a row of its own)."""
    residual_dropout: float = 0.2
    """Dropout on each residual branch of the decoder (paper: 0.2). A model pretrained without dropout suffers at first:
    on the embedded Gemma 3 270M, 0.2 raises the first-batch loss from 2.1 to 7.6; use 0-0.05 for short runs."""
    adam_betas: tuple[float, float] = (0.9, 0.95)
    """Adam beta1, beta2 (paper: 0.9, 0.95)."""
    adam_eps: float = 1e-8
    """Adam epsilon (not given by the paper)."""
    weight_decay: float = 0.0
    """Decoupled weight decay (not given by the paper)."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm; 0 disables (not given by the paper)."""
    template: Literal["auto", "raw", "chat"] = "auto"
    """Prompt rendering: raw text (the paper's), the tokenizer's chat template, or auto (chat if the tokenizer has one).
    """
    separator: str = "\n\n"
    """Raw rendering: text between the prompt and the response."""
    max_prompt_tokens: int = 1024
    """Prompts longer than this are dropped, with a count (paper: 1k)."""
    max_response_tokens: int = 1024
    """Responses longer than this are truncated, with a count (paper: 1k)."""
    pretrain_mix: float = 0.0
    """Fraction of training sequences drawn from pretraining text (paper's PPO-init SFT: 0.1)."""
    pretrain_data: Path | None = None
    """Pretraining corpus (JSONL with a 'text' field, or a folder of .txt); default: the bundled shared/data/pretrain
    mix."""
    pretrain_seq_len: int = 512
    """Tokens per pretraining sequence."""
    precision: Literal["auto", "bf16", "bf16-weights", "fp32"] = "auto"
    """bf16: autocast, fp32 weights; bf16-weights: bf16 weights and activations with fp32 master weights in the
    optimizer (faster on CPU, see training/precision.py); fp32; auto: bf16 where the hardware runs it natively."""
    loss_chunk_size: int = 1024
    """Tokens per chunk of the vocabulary projection in the loss (bounds logits memory)."""
    seed: int = 0
    """Seed of the data order, the validation split and dropout."""
    save_every: int = 0
    """Save a resumable checkpoint every N steps (0: only at the end of each epoch)."""
    save_total_limit: int = 2
    """Keep only the newest N checkpoints under checkpoints/ (each ~3x the model: weights and Adam moments);
    0 keeps every one (the pipeline does, to choose the epoch by RM score)."""
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
        check(self.batch_size >= 1 and self.micro_batch_size >= 1, "batch_size", "batch sizes must be at least 1")
        check(0 <= self.residual_dropout < 1, "residual_dropout", "must be in [0, 1)")
        check(all(0 <= b < 1 for b in self.adam_betas), "adam_betas", "each beta must be in [0, 1)")
        check(0 <= self.val_fraction < 1, "val_fraction", "must be in [0, 1)")
        check(0 <= self.pretrain_mix < 1, "pretrain_mix", "must be in [0, 1)")
        check(self.template in TEMPLATES, "template", f"must be one of {TEMPLATES}")
        check(self.max_prompt_tokens >= 1 and self.max_response_tokens >= 1, "max_prompt_tokens", "limits must be >= 1")
        check(self.loss_chunk_size >= 1, "loss_chunk_size", "must be at least 1")
        self.validate_options()
        check(
            not (self.lora_rank > 0 and self.precision == "bf16-weights"),
            "precision",
            "bf16-weights trains full weights; use bf16 (or auto) with LoRA",
        )


def train_sft(config: SFTConfig, model: Any = None, tokenizer: Any = None) -> Path:
    """Run SFT; returns the folder of the final model (``out_dir/final``)."""
    config.validate()
    accelerator = make_accelerator(config.report_to, config.out_dir, cpu=not torch.cuda.is_available())
    fsdp = check_engine(accelerator, "sft", sharded=("FSDP",)) and sharding.fsdp_settings(os.environ)
    if fsdp:
        sharding.check_options(config.precision, config.lora_rank)
    check_launch(accelerator, config.batch_size)
    if model is None:
        model, tokenizer = _load_model(config, accelerator.device)
    train, val = build_examples(config, tokenizer, accelerator.is_main_process)
    plan = BatchPlan(len(train), config.batch_size, config.epochs, config.seed)
    last = ckpt.latest_checkpoint(config.out_dir) if config.resume else None
    if last is not None and config.lora_rank == 0:
        ckpt.load_weights(model, last)  # before any cast: the checkpoint holds the fp32 weights
    model = adapt_model(model, config, accelerator.device, config.seed)  # LoRA / QLoRA, gradient checkpointing
    if last is not None and config.lora_rank > 0:
        resume_trainable(model, last)
    master = MasterWeights(model) if config.precision == "bf16-weights" else None
    if master:
        warn_if_emulated(config.precision, accelerator.device)  # (bf16 autocast warns in resolve_precision)
    precision = None if master else resolve_precision(config.precision, accelerator.device)
    wrapped = CausalLMLoss(model, config.residual_dropout, config.loss_chunk_size, precision)
    if fsdp:  # sharded here, not by accelerator.prepare (sharding.py)
        sharding.shard(wrapped, model, fsdp, accelerator.device)
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
    if not fsdp:
        wrapped, optimizer = accelerator.prepare(wrapped, optimizer)
    if not (is_data_parallel(wrapped) or fsdp):  # under DDP (even of one process) or FSDP it stays dense
        sparse_tied_embedding(model)
    log = MetricsLog(config.out_dir, accelerator.is_main_process, accelerator, "instructgpt-sft", config, start)
    stop = min(plan.total_steps, config.max_steps or plan.total_steps)
    bar = _progress(config, accelerator, start, stop)
    lengths = [len(e) for e in train]
    for step in range(start, stop):
        metrics = sft_step(
            wrapped,
            optimizer,
            train,
            lengths,
            plan.batch(step),
            step,
            config,
            accelerator,
            tokenizer.pad_token_id,
            master,
        )
        scheduler.step()
        log.log(step + 1, {**metrics, "sft/epoch": (step + 1) / plan.steps_per_epoch})
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['sft/loss']:.3f}", tok_s=f"{metrics['sft/tokens_per_s']:.0f}")
        epoch_end = (step + 1) % plan.steps_per_epoch == 0
        if epoch_end and val:
            log.log(
                step + 1, {"sft/val_loss": evaluate_loss(wrapped, val, config, accelerator, tokenizer.pad_token_id)}
            )
        if epoch_end or step + 1 == stop or (config.save_every and (step + 1) % config.save_every == 0):
            with master.fp32_model() if master else nullcontext(model) as weights:
                _save(config, accelerator, weights, tokenizer, optimizer, scheduler, step + 1, plan)
    bar.close()
    log.close()
    if master:
        master.restore()
    return _finish(config, accelerator, model, tokenizer, stop, plan)


def sft_step(
    wrapped, optimizer, examples, lengths, indices, step, config, accelerator, pad_id, master=None
) -> dict[str, float]:
    """One optimizer step over the global batch ``indices``: accumulate, clip, step.

    ``lengths[i] == len(examples[i])``, computed once per run. With ``master``
    (:class:`MasterWeights`), gradients are accumulated and the step taken in fp32.
    """
    started = time.perf_counter()
    torch.manual_seed(config.seed * 1_000_003 + step * 1009 + accelerator.process_index)  # dropout
    micro = _micro_batches(indices, lengths, config, accelerator, sharding.is_sharded(wrapped))
    targets = sum(sum(examples[i].loss_mask[1:]) for i in indices)  # response tokens in the global batch
    scale = accelerator.num_processes / max(targets, 1)  # DDP and FSDP average over processes: undo it
    wrapped.train()
    loss_sum = torch.zeros(())
    for k, (chunk, counted) in enumerate(micro):
        chosen = [examples[i] for i in chunk]
        batch = pack(chosen, config.pack_row_tokens, pad_id) if config.packing else collate(chosen, pad_id)
        sync = k == len(micro) - 1 and not master  # with masters, all_reduce_grads reduces once below
        with sharding.no_sync(accelerator, wrapped) if not sync else nullcontext():
            batch = {n: t.to(accelerator.device) for n, t in batch.items()}
            loss = wrapped(**batch, token_weight=scale if counted else 0.0)
            accelerator.backward(loss)
        if master:
            master.accumulate_grads()
        loss_sum += loss.detach().float().cpu() / accelerator.num_processes
    if master:
        master.all_reduce_grads()
    grad_norm = clip_grad_norm(master.masters if master else wrapped.parameters(), config.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if master:
        master.copy_to_model()
    loss_total = accelerator.reduce(loss_sum.to(accelerator.device), "sum").item()
    tokens = sum(lengths[i] for i in indices)
    elapsed = time.perf_counter() - started
    return {
        "sft/loss": loss_total,
        "sft/grad_norm": grad_norm,
        "sft/lr": optimizer.param_groups[0]["lr"],
        "sft/tokens": tokens,
        "sft/tokens_per_s": tokens / elapsed,
        "time/step_s": elapsed,
    }


def _micro_batches(indices, lengths, config, accelerator, sharded: bool) -> list[tuple[list[int], bool]]:
    """This process's micro-batches of the global batch ``indices``, each with whether its loss counts
    (under FSDP, as many as the busiest process's: :func:`~instructgpt.training.sharding.even_micro_batches`)."""
    rank, world = accelerator.process_index, accelerator.num_processes
    args = (config.micro_batch_size, config.micro_batch_tokens, config.packing)

    def split(r: int) -> list[list[int]]:
        return shard_and_split(indices, lengths, r, world, *args)

    return sharding.even_micro_batches(split, rank, world, sharded)


@torch.no_grad()
def evaluate_loss(wrapped, examples: list[Example], config: SFTConfig, accelerator, pad_id: int) -> float:
    """Mean response-token cross-entropy over ``examples`` (each process takes its share)."""
    wrapped.eval()
    mine = list(range(accelerator.process_index, len(examples), accelerator.num_processes))
    most = -(-len(examples) // accelerator.num_processes) if sharding.is_sharded(wrapped) else len(mine)
    total, count = torch.zeros(()), torch.zeros(())
    for start in range(0, max(len(mine), most), config.micro_batch_size):  # FSDP: as many forwards on each
        chunk = [examples[i] for i in mine[start : start + config.micro_batch_size]]
        batch = collate(chunk or examples[:1], pad_id)
        weight = 1.0 if chunk else 0.0
        total += wrapped(**{n: t.to(accelerator.device) for n, t in batch.items()}, token_weight=weight).cpu()
        count += batch["loss_mask"][:, 1:].sum() * weight
    total, count = (accelerator.reduce(t.to(accelerator.device), "sum") for t in (total, count))
    return (total / count.clamp(min=1)).item()


def build_examples(config: SFTConfig, tokenizer: Any, verbose: bool = True) -> tuple[list[Example], list[Example]]:
    """Render demonstrations (+ the pretraining mix) into train and validation examples."""
    from instructgpt.data.sources import load_records

    check(bool(config.data), "data", "give at least one demonstrations file")
    records = [r for path in config.data for r in load_records(path, "demonstrations")]
    held = [r for path in config.val_data for r in load_records(path, "demonstrations")]
    if not held and config.val_fraction > 0:
        order = random.Random(config.seed).sample(range(len(records)), len(records))
        cut = int(len(records) * config.val_fraction)
        held, records = [records[i] for i in order[:cut]], [records[i] for i in order[cut:]]
    kwargs = dict(
        template=config.template,
        separator=config.separator,
        max_prompt_tokens=config.max_prompt_tokens,
        max_response_tokens=config.max_response_tokens,
    )
    train, stats = render_all(tokenizer, [(r.prompt, r.response) for r in records], **kwargs)
    val, _ = render_all(tokenizer, [(r.prompt, r.response) for r in held], **kwargs)
    train += _pretrain_mix(config, tokenizer, len(train))
    if verbose:
        print(f"sft data: train {stats.summary()}; {len(train)} training sequences, {len(val)} validation")
    return train, val


def _pretrain_mix(config: SFTConfig, tokenizer: Any, num_demos: int) -> list[Example]:
    if config.pretrain_mix <= 0:
        return []
    from instructgpt.data.pretrain import pretrain_examples, read_documents

    path = config.pretrain_data or _default_pretrain_path()
    count = round(config.pretrain_mix / (1 - config.pretrain_mix) * num_demos)
    return pretrain_examples(tokenizer, read_documents(path), config.pretrain_seq_len, count, config.seed)


def _default_pretrain_path() -> Path:
    from instructgpt.data.importers import find_data_root

    return find_data_root() / "pretrain" / "derived" / "ptx_documents.jsonl.gz"


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
        final = checkpoint_model(model, config)
        meta = _meta(config, stop, plan, accelerator.num_processes, sharding.engine_of(model))
        weights = sharding.gathered_weights(model) if sharding.is_sharded(model) else None
        ckpt.save_on_main(accelerator, config.out_dir / "final", final, tokenizer, meta, weights=weights)
    return config.out_dir / "final"


def _load_model(config: SFTConfig, device: torch.device) -> tuple[Any, Any]:
    from instructgpt.models.loader import load_model

    if config.qlora:
        from instructgpt.models.lora import load_quantized_lm

        return load_quantized_lm(config.model, device)
    return load_model(config.model)


def _meta(config: SFTConfig, step: int, plan: BatchPlan, processes: int, engine: str | None) -> dict:
    return {
        "kind": "sft",
        "step": step,
        "epoch": step / plan.steps_per_epoch,
        "parent": config.model,
        "processes": processes,  # data-parallel ranks that trained it
        "sharding": engine,  # "FSDP", or None: every process held the whole model
        "config": to_dict(config),
    }


def _progress(config, accelerator, start: int, stop: int):
    return progress_bar("sft", start, stop, config.progress and accelerator.is_main_process)
