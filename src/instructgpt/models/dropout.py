"""Residual dropout, as in the paper's SFT (0.2), for Hugging Face decoder models.

Most checkpoints ship with dropout off and have no residual-dropout setting, so it is added with
forward hooks on the two modules whose outputs are added to the residual stream in every
decoder layer: the attention and MLP blocks (``self_attn``/``mlp``), or, for sandwich-norm
models (Gemma 2/3), the norms applied after them (``post_attention_layernorm``/
``post_feedforward_layernorm``). The hooks act only in ``train()`` mode and draw from torch's
global generator, whose state the trainer checkpoints.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

SANDWICH = ("post_attention_layernorm", "post_feedforward_layernorm")
PLAIN = ("self_attn", "mlp")


def residual_branches(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules whose outputs are added to the residual stream, two per decoder layer."""
    layers = _decoder_layers(model)
    names = SANDWICH if all(hasattr(layers[0], n) for n in SANDWICH) else PLAIN
    missing = [n for n in names if not hasattr(layers[0], n)]
    if missing:
        raise ValueError(f"cannot find residual branches {missing} in {type(layers[0]).__name__}")
    return [getattr(layer, n) for layer in layers for n in names]


def add_residual_dropout(model: torch.nn.Module, p: float) -> list[Any]:
    """Apply dropout with probability ``p`` to every residual branch; returns the hook handles."""
    if p <= 0:
        return []

    def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
        if not module.training:
            return output
        if isinstance(output, tuple):
            return (F.dropout(output[0], p, True),) + output[1:]
        return F.dropout(output, p, True)

    return [m.register_forward_hook(hook) for m in residual_branches(model)]


def _decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) and hasattr(module[0], "mlp"):
            return module
    raise ValueError(f"no decoder layers found in {type(model).__name__}")
