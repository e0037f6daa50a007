"""Options every trainer (SFT, RM, PPO) shares: LoRA / QLoRA, gradient checkpointing, how adapted
models are saved, and experiment trackers. Each stage config inherits them, so the three
declare each field once and check it in one place (:meth:`TrainerOptions.validate_options`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from instructgpt.config import check
from instructgpt.models.lora import SAVE_CHOICES

TRACKERS = ("tensorboard", "wandb", "trackio", "mlflow")


@dataclass
class TrainerOptions:
    """Memory savers, saving and tracking, the same for SFT, RM and PPO."""

    lora_rank: int = 0
    """LoRA rank: train low-rank adapters (peft) instead of all weights (a reward or value model's head is trained
    too); 0 trains all weights. PPO: on the policy and the value model, and the reference is the policy with its
    adapter disabled."""
    lora_alpha: float = 16.0
    """LoRA alpha (the adapters' update is scaled by lora_alpha / lora_rank)."""
    lora_target_modules: str = "all-linear"
    """LoRA target modules (peft's names): 'all-linear' or comma-separated module names, e.g. 'q_proj,v_proj'."""
    qlora: bool = False
    """QLoRA: hold the frozen base weights in 4-bit NF4 (bitsandbytes; a CUDA device only, refused elsewhere) under the
    LoRA adapters. Needs lora_rank > 0."""
    save: Literal["merged", "adapter"] = "merged"
    """With LoRA, what model folders hold (checkpoints and final): 'merged', the adapters folded into the base weights
    (a plain model folder every stage loads), or 'adapter', peft's adapter folder only (small; load it with
    PeftModel.from_pretrained on the base model). Reward and value models are always saved merged. Resume works with
    either."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward pass instead of keeping them: much less activation
    memory for about one more forward pass; loss and gradients are unchanged."""
    report_to: tuple[Literal["tensorboard", "wandb", "trackio", "mlflow"], ...] = ()
    """Experiment trackers (through accelerate) that receive the same slash-namespaced metrics as metrics.jsonl.
    Offline by default: TensorBoard writes out_dir/tensorboard, wandb runs with WANDB_MODE=offline and mlflow logs to
    out_dir/mlruns unless WANDB_MODE / MLFLOW_TRACKING_URI are set; trackio is local unless told otherwise."""

    def validate_options(self) -> None:
        check(self.lora_rank >= 0, "lora_rank", "must be >= 0")
        check(self.lora_alpha > 0, "lora_alpha", "must be positive")
        check(not self.qlora or self.lora_rank > 0, "qlora", "QLoRA trains LoRA adapters: give lora_rank > 0")
        check(self.save in SAVE_CHOICES, "save", f"must be one of {SAVE_CHOICES}")
        check(
            self.save == "merged" or self.lora_rank > 0,
            "save",
            "'adapter' saves LoRA adapters: give lora_rank > 0",
        )
        unknown = [name for name in self.report_to if name not in TRACKERS]
        check(not unknown, "report_to", f"unknown tracker(s) {unknown}; known: {', '.join(TRACKERS)}")


def adapt_model(model: Any, options: TrainerOptions, device: torch.device, seed: int) -> Any:
    """``model`` as the options train it: LoRA adapters (refusing QLoRA where bitsandbytes cannot run),
    then gradient checkpointing. The base weights must already be loaded (a resumed checkpoint's too).

    ``seed``: of the adapters' random init (:func:`instructgpt.models.lora.add_lora`)."""
    from instructgpt.models.checkpointing import checkpoint_layers
    from instructgpt.models.lora import add_lora, require_qlora

    if options.qlora:
        require_qlora(device)
    if options.lora_rank > 0:
        model = add_lora(model, options.lora_rank, options.lora_alpha, options.lora_target_modules, seed)
    if options.gradient_checkpointing:
        checkpoint_layers(model)
    return model


def checkpoint_model(model: Any, options: TrainerOptions) -> Any:
    """What a checkpoint or final folder saves: the model, or with LoRA its merged copy or its adapter (``save``)."""
    from instructgpt.models.lora import for_saving

    return for_saving(model, options.save)


def trainable_for_resume(model: Any, options: TrainerOptions) -> dict[str, Any]:
    """Extra ``trainer_state.pt`` entries: with LoRA, the trained tensors (the saved folder may be merged)."""
    from instructgpt.models.lora import trainable_state

    return {"trainable": trainable_state(model)} if options.lora_rank > 0 else {}


def resume_trainable(model: Any, folder: Path) -> None:
    """Load a LoRA checkpoint's trained tensors (:func:`trainable_for_resume`) into the adapted ``model``."""
    from instructgpt.models.lora import load_trainable_state
    from instructgpt.training.checkpoint import TRAINER_STATE

    state = torch.load(Path(folder) / TRAINER_STATE, weights_only=False, mmap=True)
    load_trainable_state(model, state["trainable"])
