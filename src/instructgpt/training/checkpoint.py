"""Checkpoints: model weights + a small JSON of config, step and parent (+ trainer state).

Layout of one checkpoint folder::

    step-000120/
      config.json, model.safetensors, tokenizer files   # a loadable Hugging Face folder
      meta.json                                         # {"kind", "step", "epoch", "parent", "config", "metrics"}
      trainer_state.pt                                  # optimizer and scheduler states (resume only)

``parent`` is the model the run started from, so lineage (base -> SFT -> RM/PPO) is traceable.
A checkpoint is written into a hidden staging folder and renamed into place, so a crash never
leaves a half-written checkpoint where :func:`latest_checkpoint` would pick it up.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from instructgpt.files import with_umask

META = "meta.json"
TRAINER_STATE = "trainer_state.pt"


def save_checkpoint(
    folder: Path,
    model: Any,
    tokenizer: Any,
    meta: dict,
    trainer_state: dict | None = None,
    weights: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a checkpoint atomically to ``folder`` (replacing an older one of the same name).

    ``weights``: the state dict to write instead of ``model``'s own (a sharded model's gathered weights).
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    with_umask(staging, folder=True)
    try:
        model.save_pretrained(staging, safe_serialization=True, state_dict=weights)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        if trainer_state is not None:
            torch.save(trainer_state, staging / TRAINER_STATE)
        (staging / META).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
        if folder.exists():  # move the old one aside first: a crash leaves one complete copy
            old = folder.with_name(f".{folder.name}-old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            os.replace(staging, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def read_meta(folder: Path) -> dict:
    return json.loads((Path(folder) / META).read_text(encoding="utf-8"))


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints (those with a ``meta.json``) under ``run_dir/checkpoints``, by step."""
    root = Path(run_dir) / "checkpoints"
    found = [p for p in root.glob("step-*") if (p / META).is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: read_meta(p)["step"])


def prune_checkpoints(run_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` complete checkpoints under ``run_dir/checkpoints``; returns those deleted."""
    doomed = list_checkpoints(run_dir)[:-keep] if keep > 0 else []
    for folder in doomed:
        shutil.rmtree(folder, ignore_errors=True)
    return doomed


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = [p for p in list_checkpoints(run_dir) if (p / TRAINER_STATE).is_file()]
    return found[-1] if found else None


def load_weights(model: Any, folder: Path) -> None:
    """Load a checkpoint's weights into an existing model of the same architecture."""
    from safetensors.torch import load_file

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors weights in {folder}")
    state = {}
    for file in files:
        state.update(load_file(str(file)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {k for k in missing if "lm_head" in k and getattr(model.config, "tie_word_embeddings", False)}
    if set(missing) - tied or unexpected:
        raise ValueError(f"{folder}: weights do not match the model (missing {missing}, unexpected {unexpected})")


def save_on_main(
    accelerator: Any,
    folder: Path,
    model: Any,
    tokenizer: Any,
    meta: dict,
    trainer_state: dict | None = None,
    weights: dict[str, torch.Tensor] | None = None,
) -> None:
    """Every process waits; the main one writes the checkpoint (data-parallel runs save once)."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_checkpoint(folder, model, tokenizer, meta, trainer_state, weights)
    accelerator.wait_for_everyone()


def resumable_state(optimizer: Any, scheduler: Any, step: int, sharded_model: Any = None) -> dict:
    """The trainer state a checkpoint keeps for an exact resume (every process must call it).

    ``sharded_model``: the FSDP-sharded model whose ``optimizer`` this is: its state is gathered, keyed by name.
    """
    if sharded_model is None:
        return {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step}
    from instructgpt.training import sharding

    optimizer_state = sharding.gathered_optimizer_state(sharded_model, optimizer)
    layout = {"optimizer_layout": sharding.OPTIMIZER_LAYOUT}
    return {"optimizer": optimizer_state, **layout, "scheduler": scheduler.state_dict(), "step": step}


def load_trainer_state(
    folder: Path | None, optimizer: Any, scheduler: Any, verbose: bool = True, sharded_model: Any = None
) -> int:
    """Restore the optimizer and scheduler of checkpoint ``folder``; returns its step (0 without one).

    Weights are loaded separately, before the model is wrapped or cast. ``sharded_model``: the FSDP-sharded
    model whose ``optimizer`` this is; its checkpoints hold the gathered state keyed by parameter name.
    """
    if folder is None:
        return 0
    from instructgpt.config import check
    from instructgpt.training import sharding

    state = torch.load(Path(folder) / TRAINER_STATE, weights_only=False)
    layout = state.get("optimizer_layout")
    wanted = sharding.OPTIMIZER_LAYOUT if sharded_model is not None else None
    check(
        layout == wanted,
        "resume",
        f"{folder} was written {'under FSDP' if layout else 'data-parallel'} and this run is "
        f"{'under FSDP' if wanted else 'data-parallel'}: resume it as it was launched, or start over with --no-resume",
    )
    if sharded_model is not None:
        sharding.load_optimizer_state(sharded_model, optimizer, state["optimizer"])
    else:
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if verbose:
        print(f"resuming from {folder} (step {state['step']})")
    return state["step"]
