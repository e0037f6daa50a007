"""Forward passes over rollout sequences, shared by rollout (no grad) and training (with grad).

Only the positions that predict response tokens go through the vocabulary projection, in
chunks (:func:`instructgpt.losses.lm.token_logprobs`): the full-vocabulary log-softmax of a
whole batch is never materialised (one 8 x 512 batch of fp32 logits of a 262k vocabulary is
4 GB). Position ids are counted over real tokens, so a left-padded prompt sees the positions it
would see unpadded, exactly as in generation and in the reward model.

Works for a plain Hugging Face causal LM and for a peft LoRA model: the trunk is reached
through the base model, whose layers carry the adapters (and ``disable_adapter()`` turns them
off, which is how the frozen SFT reference is computed without a second copy).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch

from instructgpt.losses.lm import token_logprobs


def causal_lm(model: Any) -> Any:
    """The Hugging Face causal LM inside ``model`` (a peft model's base model, else itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def trunk(model: Any) -> Any:
    """The decoder trunk (no unembedding) of a causal LM or a peft model."""
    return causal_lm(model).base_model


def unembedding(model: Any) -> torch.Tensor:
    """The output projection ``[V, H]``."""
    return causal_lm(model).get_output_embeddings().weight


def cache_argument(body: Any) -> str:
    """transformers 5 renamed ``past_key_values`` to ``cache``; accept both."""
    import inspect

    return "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens ``[B, T]`` (left padding gets 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def autocast(device: torch.device, dtype: torch.dtype | None):
    """bf16 autocast when ``dtype`` is given, else nothing."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def active_autocast(model: Any) -> torch.dtype | None:
    """The autocast dtype in force on the model's device, or None (to hand to code that opens its own context)."""
    device = next(model.parameters()).device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None


def response_hidden(
    model: Any,
    input_ids: torch.Tensor,  # [B, P + R]
    attention_mask: torch.Tensor,  # [B, P + R]
    prompt_width: int,
    response_mask: torch.Tensor,  # [B, R]
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Final hidden states ``[N, H]`` of the positions that predict the N real response tokens."""
    with autocast(input_ids.device, dtype):
        out = trunk(model)(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids(attention_mask),
            use_cache=False,
        )
    hidden = out.last_hidden_state[:, prompt_width - 1 : -1]  # [B, R, H]: position P-1+t predicts token t
    return hidden[response_mask]


def response_logprobs(
    model: Any,
    input_ids: torch.Tensor,  # [B, P + R]
    attention_mask: torch.Tensor,  # [B, P + R]
    prompt_width: int,
    response_mask: torch.Tensor,  # [B, R]
    temperature: float = 1.0,
    dtype: torch.dtype | None = None,
    chunk_size: int = 1024,
    into_grad: bool = False,
) -> torch.Tensor:
    """``log softmax(logits / temperature)[y_t]`` of each response token ``[B, R]`` (0 on padding).

    With autograd when grad is enabled (each vocabulary chunk is recomputed in backward);
    ``into_grad``: the unembedding's gradient is added into its existing ``.grad`` in place
    (:func:`~instructgpt.losses.lm.token_logprobs`).
    """
    hidden = response_hidden(model, input_ids, attention_mask, prompt_width, response_mask, dtype)  # [N, H]
    softcap = getattr(causal_lm(model).config, "final_logit_softcapping", None)
    if temperature != 1.0:
        if softcap:
            raise ValueError("temperature != 1 with final-logit soft-capping is not supported")
        hidden = hidden / temperature  # logits are linear in the hidden state
    targets = input_ids[:, prompt_width:][response_mask]  # [N]
    weight = unembedding(model)
    with autocast(input_ids.device, dtype):
        picked = token_logprobs(hidden, weight, targets, chunk_size, softcap, dtype, into_grad)  # [N]
    out = torch.zeros(response_mask.shape, dtype=torch.float32, device=input_ids.device)
    return out.masked_scatter(response_mask, picked.float())


@torch.no_grad()
def response_entropy(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_width: int,
    response_mask: torch.Tensor,
    temperature: float = 1.0,
    dtype: torch.dtype | None = None,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Entropy of the next-token distribution at each response token ``[B, R]``, chunked, no grad."""
    hidden = response_hidden(model, input_ids, attention_mask, prompt_width, response_mask, dtype)
    softcap = getattr(causal_lm(model).config, "final_logit_softcapping", None)
    weight = unembedding(model)
    parts = []
    with autocast(input_ids.device, dtype):
        for start in range(0, hidden.shape[0], chunk_size):
            logits = (hidden[start : start + chunk_size] @ weight.T).float()
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
            parts.append(entropy_from_logits(logits / temperature))
    picked = torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)
    out = torch.zeros(response_mask.shape, dtype=torch.float32, device=input_ids.device)
    return out.masked_scatter(response_mask, picked)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """``-sum p log p`` over the last axis (fp32)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def response_values(
    value_model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_width: int,
    response_mask: torch.Tensor,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``V(x, y_<t)`` for each response token ``[B, R]``: the value head at position ``P - 1 + t``."""
    with autocast(input_ids.device, dtype):
        values = value_model.values(input_ids, attention_mask)  # [B, P + R]
    return values[:, prompt_width - 1 : -1].float() * response_mask


@torch.no_grad()
def sequence_scores(
    reward_model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Reward-model scores ``[B]`` (read at each row's last real token)."""
    with autocast(input_ids.device, dtype):
        return reward_model(input_ids, attention_mask).float()
