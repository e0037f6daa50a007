"""Gradient (activation) checkpointing of decoder layers, for all three trainers.

Each decoder layer keeps only its input in the forward pass and runs again in the backward pass
to rebuild its activations: activation memory falls from every layer's intermediates to one
tensor per layer, for about one more forward of compute. torch's non-reentrant checkpoint
restores the RNG state for the recomputation, so dropout (SFT's residual dropout) draws the
same masks twice and the loss and gradients are those of the plain forward.

Departure from Hugging Face's ``gradient_checkpointing_enable``: that one acts only in
``train()`` mode, and PPO runs its models in ``eval()`` mode (no dropout, so the probability
ratio starts at 1). Here a layer is checkpointed whenever gradients are being recorded, in
either mode; forwards under ``torch.no_grad()`` (sampling, rollout scoring) run as usual.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from instructgpt.models.dropout import _decoder_layers


def checkpoint_layers(model: Any) -> int:
    """Checkpoint every decoder layer of ``model`` (a causal LM, a peft model or a reward model),
    in place; returns the number of layers."""
    layers = _decoder_layers(model)
    for layer in layers:
        # a bound method, not a closure: a deep copy of the model (EMA, merged saves) rebinds it to the copied layer
        layer.forward = types.MethodType(_checkpointed_forward, layer)
    return len(layers)


def _checkpointed_forward(layer: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
    forward = type(layer).forward
    if not torch.is_grad_enabled():
        return forward(layer, *args, **kwargs)
    return checkpoint(forward, layer, *args, use_reentrant=False, **kwargs)
