"""LoRA adapters (peft), QLoRA's 4-bit base weights, and saving an adapted model, for SFT, RM and PPO.

With LoRA only low-rank adapters on the target modules are trained (and a reward or value
model's scalar head, which is new and small); the base weights stay frozen. QLoRA holds those
frozen base weights in 4-bit NF4 (bitsandbytes, on a CUDA device only) and trains the adapters
in full precision. A reward model (:class:`instructgpt.models.reward.RewardModel`) gets its
adapters on the trunk.

Saving an adapted model (``save``): ``merged`` folds the adapters into a copy of the base
weights, so the folder is a plain model folder that every loader here reads; ``adapter``
writes peft's adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``), read
with ``PeftModel.from_pretrained(base_model, folder)``. Exact resume never depends on either:
the trainers keep the trainable tensors in ``trainer_state.pt`` (:func:`trainable_state`).
"""

from __future__ import annotations

import copy
import importlib.util
from typing import Any

import torch

SAVE_CHOICES = ("merged", "adapter")


def add_lora(model: Any, rank: int, alpha: float, target_modules: str = "all-linear", seed: int = 0) -> Any:
    """Wrap a causal LM with peft LoRA adapters, or a reward model's trunk (its head stays trainable).

    ``target_modules``: 'all-linear' (every linear layer but the output projection) or
    comma-separated module names (e.g. 'q_proj,v_proj'). The adapters' random init (A; B starts
    at 0) is drawn from ``seed``, leaving torch's global generator as it was: a run's adapters
    start the same whatever ran before it in the process.
    """
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=target_modules
        if target_modules == "all-linear"
        else [t.strip() for t in target_modules.split(",")],
    )
    with torch.random.fork_rng(devices=[]):  # peft initialises the adapters on the CPU, then moves them
        torch.manual_seed(seed)
        if not _is_reward_model(model):
            return get_peft_model(model, lora)
        model.trunk = get_peft_model(model.trunk, lora)
    model.head.requires_grad_(True)
    return model


def has_lora(model: Any) -> bool:
    """Whether ``model`` (or a reward model's trunk) carries peft adapters."""
    return hasattr(model, "merge_and_unload") or hasattr(getattr(model, "trunk", None), "merge_and_unload")


def trainable_parameters(model: Any) -> list[torch.nn.Parameter]:
    """The parameters the optimizer steps: all of them, or with LoRA the adapters (and a head)."""
    return [p for p in model.parameters() if p.requires_grad]


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    """A copy of the trainable tensors by name: what a LoRA checkpoint needs for an exact resume."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: Any, tensors: dict[str, torch.Tensor]) -> None:
    """Copy :func:`trainable_state`'s tensors back into ``model``, in place."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)


def merged_copy(model: Any) -> Any:
    """A copy of ``model`` with its adapters folded into the base weights (a plain model again)."""
    out = copy.deepcopy(model)
    if hasattr(out, "merge_and_unload"):
        return out.merge_and_unload()
    if hasattr(getattr(out, "trunk", None), "merge_and_unload"):
        out.trunk = out.trunk.merge_and_unload()
    return out


def for_saving(model: Any, save: str) -> Any:
    """The model to hand to ``save_pretrained``: itself without LoRA or with ``save='adapter'``
    (peft then writes the adapter folder), else its :func:`merged_copy`."""
    if save not in SAVE_CHOICES:
        raise ValueError(f"save must be one of {SAVE_CHOICES}, got {save!r}")
    return merged_copy(model) if save == "merged" and has_lora(model) else model


def require_qlora(device: torch.device) -> None:
    """Raise :class:`instructgpt.config.ConfigError` unless 4-bit QLoRA can run on ``device``:
    bitsandbytes' 4-bit layers need a CUDA device and the ``bitsandbytes`` package."""
    from instructgpt.config import ConfigError

    if device.type != "cuda":
        raise ConfigError(
            f"qlora: 4-bit base weights need bitsandbytes on a CUDA device, and this run is on {device.type}; "
            "use LoRA without --qlora (lora_rank > 0) here"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("qlora: needs the bitsandbytes package (pip install bitsandbytes)")


def load_quantized_lm(name: str, device: torch.device) -> tuple[Any, Any]:
    """``(model, tokenizer)`` with the frozen base weights in 4-bit NF4 (double-quantised, bf16
    compute), ready for :func:`add_lora`; ``name`` as :func:`instructgpt.models.loader.load_model`."""
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from instructgpt.models.loader import ensure_pad_token, load_tokenizer, resolve_model

    require_qlora(device)
    source = resolve_model(name)
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    model = AutoModelForCausalLM.from_pretrained(
        source, quantization_config=quantization, dtype=torch.bfloat16, device_map={"": device.index or 0}
    )
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)  # (ours: checkpointing.py)
    tokenizer = load_tokenizer(source)
    ensure_pad_token(tokenizer, model)
    return model, tokenizer


def _is_reward_model(model: Any) -> bool:
    return hasattr(model, "trunk") and hasattr(model, "head")
