"""The trunk's decode loop for :class:`~instructgpt.rollout.generation.HFBackend`: eager, or a
static KV cache with the one-token step compiled.

A decoder is called once with the left-padded prompts ``[B, P]`` (the prompt pass) and then once
per sampled token ``[B, 1]``; each call returns the last position's final hidden state
``[B, H]``, which the sampler projects on the vocabulary.

- :class:`EagerDecoder`: the model's forward with a ``DynamicCache`` (the cache and the
  attention mask grow by one column per step). Works for every model, device and dtype.
- :class:`StaticDecoder`: a preallocated ``[B, kv_heads, L, head_dim]`` cache per layer and a
  ``[B, L]`` attention mask filled in place, so every decode step has the same shapes and the
  trunk's step runs through ``torch.compile`` (inductor: the ~700 small ops of a Gemma 3 decode
  step become a few dozen fused kernels around the matmuls; at batch 64 the eager per-op
  dispatch cost about as much as the matmuls). The prompt pass stays eager (its length varies).

Compile cost: paid once per process, on the first decode step of the first compiled batch
(Gemma 3 270M, trunk step and sampler reductions, on a 2-core AVX512-BF16 EPYC shared with a
training job: 50-60 s with inductor's on-disk cache cold, 10-20 s with it warm; ``bench/generate.py``
reports it as ``warmup_s``).
The compiled code is keyed on the model's architecture, not its weights: parameters are graph
inputs, so PPO's in-place updates are seen, and a second model of the same architecture (the
eval stage's several policies) reuses it. Cache lengths are rounded up to a multiple of
:data:`LENGTH_BUCKET` and a new batch size or length is compiled once more with symbolic sizes
(torch's automatic dynamic shapes), after which no shape recompiles.

:func:`decode_path` chooses (``HFBackend``'s setting ``decode``, default ``"auto"``): ``"auto"``
decodes with the written-out Gemma 3 step (:mod:`instructgpt.rollout.fused_decode`) where it
computes what the model's forward does, on a CPU (not yet measured on a GPU), else eagerly.
``"compiled"`` asks for the static cache with the step compiled (where it can run: a CPU, a C++
compiler for inductor, a model transformers marks compilable, a context that fits every sliding
window); it is not the default: measured on a quiet 2-core AMD EPYC with AVX512-BF16
(2026-12-04; Gemma 3 270M SFT model, the samples stage's workload: 4 batches of 64 prompts x 64
new tokens, bf16 autocast), eager 60.7 s (this module's one-query attention and the packed
vocabulary projection), compiled 48.4 s for the 3 warm batches (16.1 s each against eager's
15.2 s) plus 54.8 s for the first (about 38 s of compile). ``"static"`` runs the static cache
with the step uncompiled (tests, debugging), ``"eager"`` the model's own forward with a growing
cache. If compiling fails at run time the backend warns once and falls back to eager for the
rest of the process.

Numerics: the compiled step fuses element-wise work (RMSNorm, rotary, GELU) and may order
reductions differently from eager, so its hidden states differ from the eager forward's by
rounding (fp32: ~1e-6 relative; bf16: the same bf16 products, fp32 accumulations in another
order). The recorded log-probabilities still equal a training forward within the tolerances the
tests state.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from instructgpt.rollout.forward import cache_argument

LENGTH_BUCKET = 64
"""Static cache lengths are rounded up to a multiple of this (fewer distinct shapes)."""

ONE_QUERY_ATTENTION = "instructgpt_one_query"
"""The attention implementation :func:`one_query_attention` is registered under in transformers."""


def one_query_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
):
    """transformers' SDPA attention, except for a one-token query (a decode step): two batched
    matmuls and an fp32 softmax, the query heads of each key/value head stacked as rows.

    PyTorch's CPU SDPA (a flash kernel blocked for long queries) takes 4.7 ms for one decode
    step's attention at batch 64 over 32 cached positions (19 ms over 128; bf16, one thread)
    against 0.35 ms (1.0 ms) this way, and under ``torch.compile`` transformers expands the
    key/value heads for it. Equivalent to ``softmax(q k^T * scaling + mask) v`` per head with
    head ``h`` reading key/value head ``h // (query heads / key-value heads)``, as
    ``repeat_kv`` does.

    query ``[B, Hq, 1, D]``, key and value ``[B, Hkv, L, D]``, attention_mask ``[B, 1, 1, L]``
    (bool, True = attend; or additive) -> ``([B, 1, Hq, D], None)``.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if query.shape[2] != 1 or kwargs.get("softcap") is not None or (module.training and dropout):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    rows, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    grouped = query.reshape(rows, kv_heads, heads // kv_heads, dim)  # [B, Hkv, G, D]: q_len 1 makes room for the group
    scores = (grouped @ key.transpose(-1, -2)).float() * (dim**-0.5 if scaling is None else scaling)  # [B, Hkv, G, L]
    if attention_mask is not None:
        scores = (
            scores.masked_fill(~attention_mask, float("-inf"))
            if attention_mask.dtype == torch.bool
            else scores + attention_mask
        )
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    return (probs @ value).reshape(rows, 1, heads, dim), None  # [B, 1, Hq, D]


@contextmanager
def one_query_attention_for(config: Any) -> Iterator[None]:
    """Route a model's attention through :func:`one_query_attention` while decoding, when it uses SDPA
    (the prompt pass still runs SDPA: longer queries are passed on to it)."""
    if config._attn_implementation != "sdpa":
        yield
        return
    _register_one_query_attention()
    config._attn_implementation = ONE_QUERY_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = "sdpa"


@functools.cache
def _register_one_query_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ONE_QUERY_ATTENTION, one_query_attention)
    AttentionMaskInterface.register(ONE_QUERY_ATTENTION, sdpa_mask)


class EagerDecoder:
    """The model's forward with a ``DynamicCache``."""

    def __init__(self, body: Any, config: Any, attention_mask: torch.Tensor):
        from transformers import DynamicCache

        self.body, self.attention_mask = body, attention_mask  # [B, P]
        self.cache = {cache_argument(body): DynamicCache(config=config)}
        self.positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # [B, P]: counted over real tokens
        self.started = False

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        if self.started:
            self.attention_mask = torch.cat([self.attention_mask, torch.ones_like(ids)], dim=1)
            self.positions = self.positions[:, -1:] + 1
        self.started = True
        out = self.body(
            input_ids=ids, attention_mask=self.attention_mask, position_ids=self.positions, **self.cache, use_cache=True
        )
        return out.last_hidden_state[:, -1]  # [B, H]


class StaticDecoder:
    """A static KV cache of ``length`` slots; the prompt pass eager, each one-token step compiled (unless
    ``compiled=False``)."""

    def __init__(self, body: Any, config: Any, attention_mask: torch.Tensor, length: int, compiled: bool = True):
        from transformers.cache_utils import Cache, StaticLayer

        rows, width = attention_mask.shape
        self.body, self.width = body, width
        self.mask = attention_mask.new_zeros(rows, length)  # [B, L]: 1 on slots holding a real token
        self.mask[:, :width] = attention_mask
        # every layer a plain static layer: the context fits any sliding window (compiled_decode_usable), so a
        # sliding layer attends to all of it, and the sliding cache's Python-int bookkeeping would recompile each step
        self.cache = Cache(layers=[StaticLayer(max_cache_len=length) for _ in range(config.num_hidden_layers)])
        self.argument = cache_argument(body)
        self.step = compiled_step(attention_mask.device.type) if compiled else _step
        self.positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # [B, P]
        self.filled = 0

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        if self.filled == 0:
            out = self.body(
                input_ids=ids,
                attention_mask=self.mask,
                position_ids=self.positions,
                **{self.argument: self.cache},
                use_cache=True,
            )
            self.filled, self.positions = self.width, self.positions[:, -1:]
            return out.last_hidden_state[:, -1]
        self.mask[:, self.filled] = 1
        self.filled += 1
        self.positions = self.positions + 1  # [B, 1]
        return self.step(self.body, ids, self.mask, self.positions, self.cache, self.argument)


def _step(
    body: Any, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any, argument: str
) -> torch.Tensor:
    out = body(input_ids=ids, attention_mask=mask, position_ids=positions, **{argument: cache}, use_cache=True)
    return out.last_hidden_state[:, -1]  # [B, H]


@functools.cache
def compiled_step(device_type: str = "cpu"):
    """The one-token trunk step through ``torch.compile`` (one wrapper per process and device type;
    inductor keeps its code). On CUDA in ``reduce-overhead`` mode: CUDA graphs replay the step's
    kernels, which is what a 270M model's decode step needs (hundreds of tiny kernel launches)."""
    return torch.compile(_step, fullgraph=False, mode="reduce-overhead" if device_type == "cuda" else None)


def static_length(width: int, max_new_tokens: int) -> int:
    """Cache slots for a ``width``-token prompt and ``max_new_tokens``, rounded up to :data:`LENGTH_BUCKET`."""
    return -(-(width + max_new_tokens) // LENGTH_BUCKET) * LENGTH_BUCKET


def decode_path(setting: str, lm: Any, device: torch.device, length: int) -> str:
    """``"eager"``, ``"static"``, ``"compiled"`` or ``"fused"``: how to decode ``length`` cache slots (see the
    module docstring).

    ``"eager"``: always eager. ``"static"``: the static cache with the step uncompiled (tests,
    debugging). ``"compiled"``: compiled wherever it can run (a CPU with a C++ compiler or CUDA, a model
    transformers marks compilable, a context within every sliding window), else eager. ``"fused"``: the
    written-out Gemma 3 step (:mod:`instructgpt.rollout.fused_decode`) where it applies, else eager.
    ``"auto"``: fused where it applies on a CPU (where it was measured), else eager.
    """
    if setting not in ("auto", "compiled", "static", "eager", "fused"):
        raise ValueError(f"decode must be auto, fused, compiled, static or eager, not {setting!r}")
    config = text_config(lm)
    if setting == "fused" or (setting == "auto" and device.type == "cpu"):  # auto: measured on CPUs only
        from instructgpt.rollout.fused_decode import fused_usable

        return "fused" if fused_usable(lm.base_model, config, length) else "eager"
    if setting == "auto":
        return "eager"
    window = getattr(config, "sliding_window", None)
    fits = not (window and any("sliding" in t for t in getattr(config, "layer_types", None) or ()) and length > window)
    if setting == "eager" or not fits or not getattr(lm, "_can_compile_fullgraph", False):
        return "eager"
    if setting == "static":
        return "static"
    if device.type not in ("cpu", "cuda") or (device.type == "cpu" and not have_compiler()):
        return "eager"
    return "compiled"


def text_config(lm: Any) -> Any:
    return lm.config.get_text_config() if hasattr(lm.config, "get_text_config") else lm.config


@functools.cache
def have_compiler() -> bool:
    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))
