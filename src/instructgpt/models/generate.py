"""Sample responses from a causal LM for a list of prompts (KV cache, stop at EOS)."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from instructgpt.data.collate import collate
from instructgpt.data.render import Example, render_prompt


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

    Prompts are rendered exactly as in training (:func:`render_prompt`) and left-padded.
    """
    model.eval()
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    texts = []
    for start in range(0, len(prompts), batch_size):
        ids = [render_prompt(tokenizer, p, template, separator) for p in prompts[start : start + batch_size]]
        batch = collate([Example(i, [False] * len(i)) for i in ids], tokenizer.pad_token_id, padding_side="left")
        with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            out = model.generate(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                max_new_tokens=max_new_tokens,
                do_sample=temperature > 0,
                temperature=temperature if temperature > 0 else None,
                top_p=None,
                top_k=None,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        new = out[:, batch["input_ids"].shape[1] :]
        texts += tokenizer.batch_decode(new, skip_special_tokens=True)
    return [t.strip() for t in texts]
