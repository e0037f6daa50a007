"""Sample responses from a causal LM for a list of prompts (KV cache, stop at EOS), with the rollout's sampler."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from instructgpt.data.render import render_prompt


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    template: str = "auto",
    separator: str = "\n\n",
    batch_size: int = 8,
    seed: int = 0,
    autocast: torch.dtype | None = None,
) -> list[str]:
    """One response per prompt; ``temperature=0`` is greedy decoding.

    Prompts are rendered exactly as in training (:func:`render_prompt`), sorted by length into
    batches (less left padding) and sampled with the rollout's backend
    (:class:`~instructgpt.rollout.generation.HFBackend`: one vocabulary projection per step,
    sampling with one random number per row, seeded by ``seed``); responses come back in the
    prompts' order. ``autocast`` runs the forward under that autocast dtype (e.g. bf16).
    """
    ids = [render_prompt(tokenizer, p, template, separator) for p in prompts]
    responses = generate_ids(model, tokenizer, ids, max_new_tokens, temperature, batch_size, seed, autocast)
    return [tokenizer.decode(r, skip_special_tokens=True).strip() for r in responses]


@torch.no_grad()
def generate_ids(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[list[int]],
    max_new_tokens: int,
    temperature: float = 0.0,
    batch_size: int = 8,
    seed: int = 0,
    autocast: torch.dtype | None = None,
    stop_ids: Sequence[int] = (),
) -> list[list[int]]:
    """The response token ids (EOS or a stop token included when reached) to rendered prompts, in their order;
    sampled in batches of similar lengths (less left padding) by the rollout's backend."""
    from instructgpt.rollout.generation import HFBackend, SamplingSettings

    if not prompt_ids:
        return []
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    backend = HFBackend(
        model,
        SamplingSettings(max_new_tokens, temperature),
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
        batch_size,
        autocast,
        stop_ids=stop_ids,
    )
    out = backend.generate(
        [prompt_ids[i] for i in order], torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    )
    responses: list[list[int]] = [[] for _ in prompt_ids]
    for row, index in enumerate(order):
        responses[index] = out.response_ids[row][out.response_mask[row]].tolist()
    return responses
