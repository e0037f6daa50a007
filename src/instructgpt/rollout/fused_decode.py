"""Gemma 3's one-token decode step written out, for :class:`~instructgpt.rollout.generation.HFBackend`.

transformers' forward spends most of a decode step outside its matmuls: at batch 64 on a 2-core
AMX Xeon (bf16 autocast, Gemma 3 270M, 48 new tokens) the eager loop took 146 ms a step, of which
the trunk's 126 matmuls 37 ms, the vocabulary projection 35 ms, and the rest about 19,000 small
element-wise ops, conversions and cache concatenations per generation. This step keeps the same
arithmetic with fewer, larger operations:

- the projections merged (q, k and v in one ``[H, (Hq + 2 Hkv) D]`` product, gate and up in one)
  and, on a CPU in fp32 or in bf16 where it is native, held in oneDNN's packed layout, the one
  inductor uses for CPU linears (``[64, 640] x [640, 4096]``: 0.64 against 0.48 TFLOP/s for
  ``F.linear`` on that Xeon in bf16; in fp32 on an AVX2-only EPYC 56-78 against 37-67 GFLOP/s),
  with the MLP's GELU and its product with the up projection in the matmuls' epilogues (0.63 ms
  against 1.7 ms for the merged product, GELU and product at batch 64);
- a static ``[B, Hkv, L, D]`` key/value cache in the compute dtype, written in place, and
  attention over all its ``L`` = prompt + new-token slots with the unfilled ones masked (two
  batched products on the contiguous cache, the query heads of a key/value head stacked as rows,
  fp32 softmax): a product over the filled slice copies that slice first, about 20 ms a step at
  batch 64, more than reading the unfilled slots costs;
- Gemma's RMSNorm with its ``1 + w`` scale precomputed, q- and k-norm in one call, the rotary
  angles computed once per step for each layer type.

The weights are laid out once per ``generate`` call (:meth:`FusedWeights.of`; the policy changes
between calls). The prompt pass runs the same layers over the real tokens of the distinct prompts
only (:meth:`FusedDecoder.prompt_pass`): the ``samples`` stage draws K samples of each prompt in one
batch (K - 1 of every K prompt passes would be copies), and transformers' forward also computes
every left-padding position (the bench's 64 Alpaca prompts: 13.8 tokens on average, padded to 26).

Where it applies (:func:`fused_usable`): a Gemma 3 text trunk whose projections are plain
``nn.Linear`` without bias (no LoRA adapters, no quantised layers), no attention logit
soft-capping, causal attention, the ``gelu_pytorch_tanh`` activation, and a context within every
sliding window (so each layer attends to the whole cache). Anything else decodes as before.

Numerics follow transformers' forward under bf16 autocast: products in the compute dtype with
fp32 accumulation, RMSNorm, rotary and softmax in fp32, the residual stream in the weights'
dtype. The recorded log-probabilities equal a training forward within the tolerance the tests
state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from instructgpt.rollout.forward import position_ids
from instructgpt.rollout.sampling import _packable


@dataclass(frozen=True)
class Projection:
    """A linear map without bias: ``x @ W.T``, in oneDNN's packed layout where that applies (then the
    activation and the product with another tensor run in the matmul's epilogue)."""

    weight: torch.Tensor
    """[out, in] in the compute dtype."""
    packed: torch.Tensor | None = None

    @classmethod
    def of(cls, weights: list[torch.Tensor], dtype: torch.dtype, rows: int) -> Projection:
        """The row-wise concatenation of ``weights`` (``[out_i, in]`` each) in ``dtype``; ``rows``: the batch size
        the packed layout is blocked for."""
        weight = (
            torch.cat([w.detach().to(dtype) for w in weights]) if len(weights) > 1 else weights[0].detach().to(dtype)
        )
        if _packable(weight):
            return cls(weight, torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), rows))
        return cls(weight)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, None, "none", [], "")
        return F.linear(x, self.weight)

    def gelu(self, x: torch.Tensor) -> torch.Tensor:
        """``gelu_tanh(x @ W.T)`` (in the epilogue: from the fp32 accumulators, before rounding)."""
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, None, "gelu", [], "tanh")
        return F.gelu(F.linear(x, self.weight), approximate="tanh")

    def times(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """``(x @ W.T) * other``."""
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise.binary(x, other, self.packed, None, "mul")
        return F.linear(x, self.weight) * other


@dataclass(frozen=True)
class LayerWeights:
    qkv: Projection
    out: Projection
    gate: Projection
    up: Projection
    down: Projection
    norms: tuple[torch.Tensor, ...]
    """[H] fp32 ``1 + w`` of the input, post-attention, pre- and post-feed-forward norms."""
    qk_norm: torch.Tensor
    """[Hq + Hkv, D] fp32 ``1 + w``: the q-norm's for each query head, then the k-norm's for each key head."""
    layer_type: str


@dataclass(frozen=True)
class FusedWeights:
    """One Gemma 3 trunk's weights laid out for :class:`FusedDecoder` (built once per ``generate`` call)."""

    layers: tuple[LayerWeights, ...]
    final_norm: torch.Tensor
    """[H] fp32 ``1 + w``."""
    dtype: torch.dtype
    """The products' dtype (the autocast dtype, else the weights')."""
    heads: int
    kv_heads: int
    head_dim: int
    scaling: float
    eps: float

    @classmethod
    def of(cls, body: Any, config: Any, dtype: torch.dtype | None, rows: int) -> FusedWeights:
        """From a ``Gemma3TextModel``; ``dtype``: the autocast dtype (None: the weights' own)."""
        dtype = dtype or body.embed_tokens.weight.dtype
        layers = []
        for layer, layer_type in zip(body.layers, config.layer_types):
            attn, mlp = layer.self_attn, layer.mlp
            norms = (
                layer.input_layernorm,
                layer.post_attention_layernorm,
                layer.pre_feedforward_layernorm,
                layer.post_feedforward_layernorm,
            )
            layers.append(
                LayerWeights(
                    qkv=Projection.of([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight], dtype, rows),
                    out=Projection.of([attn.o_proj.weight], dtype, rows),
                    gate=Projection.of([mlp.gate_proj.weight], dtype, rows),
                    up=Projection.of([mlp.up_proj.weight], dtype, rows),
                    down=Projection.of([mlp.down_proj.weight], dtype, rows),
                    norms=tuple(_scale(n) for n in norms),
                    qk_norm=torch.stack(
                        [_scale(attn.q_norm)] * config.num_attention_heads
                        + [_scale(attn.k_norm)] * config.num_key_value_heads
                    ),
                    layer_type=layer_type,
                )
            )
        return cls(
            tuple(layers),
            _scale(body.norm),
            dtype,
            config.num_attention_heads,
            config.num_key_value_heads,
            config.head_dim,
            config.query_pre_attn_scalar**-0.5,
            config.rms_norm_eps,
        )


def fused_usable(body: Any, config: Any, length: int) -> bool:
    """Whether :class:`FusedDecoder` computes what ``body``'s forward does for a ``length``-slot context."""
    if type(body).__name__ != "Gemma3TextModel" or getattr(config, "use_bidirectional_attention", False):
        return False
    if config.attn_logit_softcapping is not None or config.hidden_activation != "gelu_pytorch_tanh":
        return False
    window = getattr(config, "sliding_window", None)
    if window and "sliding_attention" in config.layer_types and length > window:
        return False
    if any(type(layer).__name__ != "Gemma3DecoderLayer" for layer in body.layers):  # e.g. wrapped for FSDP
        return False
    names = ("q_proj", "k_proj", "v_proj", "o_proj")
    for layer in body.layers:
        linears = [getattr(layer.self_attn, n) for n in names]
        linears += [layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj]
        if not all(_plain(m) for m in linears):
            return False
    return True


def _plain(linear: Any) -> bool:
    """A bias-free ``nn.Linear`` holding its whole weight (not a LoRA or quantised layer, not a ZeRO-3 shard)."""
    return (
        type(linear) is torch.nn.Linear
        and linear.bias is None
        and tuple(linear.weight.shape) == (linear.out_features, linear.in_features)
    )


class FusedDecoder:
    """The prompt pass (:meth:`prompt_pass`), then :meth:`step` per token (see the module docstring).

    ``attention_mask`` ``[B, P]`` (left padding); ``length`` cache slots (prompt + new tokens)."""

    def __init__(self, weights: FusedWeights, body: Any, attention_mask: torch.Tensor, length: int):
        rows, self.width = attention_mask.shape
        self.weights, self.body = weights, body
        shape = (rows, weights.kv_heads, length, weights.head_dim)
        self.keys = [attention_mask.new_zeros(shape, dtype=weights.dtype) for _ in weights.layers]
        self.values = [attention_mask.new_zeros(shape, dtype=weights.dtype) for _ in weights.layers]
        self.bias = torch.full((rows, length), float("-inf"), device=attention_mask.device)  # [B, L] additive mask
        self.bias[:, : self.width].masked_fill_(attention_mask.bool(), 0.0)
        self.mask = attention_mask
        self.positions = position_ids(attention_mask)[:, -1]  # [B]: the last prompt token's, counted over real tokens
        self.filled = 0

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        """``[B, P]`` prompt ids on the first call, ``[B, 1]`` after -> the last position's final hidden state
        ``[B, H]``."""
        if self.filled:
            return self.step(ids[:, 0])
        hidden = self.prompt_pass(ids)
        self.filled = self.width
        return hidden

    def prompt_pass(self, ids: torch.Tensor) -> torch.Tensor:
        """The prompts' pass over the distinct prompts of ``ids`` ``[B, P]`` (K samples of one prompt share one
        pass), their keys and values copied into every row's cache; the last position's hidden state ``[B, H]``."""
        rows = torch.cat([ids, self.mask], dim=1)
        distinct, owner = torch.unique(rows, dim=0, return_inverse=True)  # owner: row -> its distinct prompt
        if len(distinct) == len(rows):
            distinct, owner = rows, None
        width = self.width
        keys, values, last = self._prompts(distinct[:, :width], distinct[:, width:].bool())
        for prompt_keys, prompt_values, cache_keys, cache_values in zip(keys, values, self.keys, self.values):
            cache_keys[:, :, :width] = prompt_keys if owner is None else prompt_keys[owner]
            cache_values[:, :, :width] = prompt_values if owner is None else prompt_values[owner]
        return last if owner is None else last[owner]

    @torch.autocast("cpu", enabled=False)
    def _prompts(self, ids: torch.Tensor, real: torch.Tensor):
        """The trunk over the real tokens of left-padded prompts ``ids`` ``[U, P]`` (``real``: ``[U, P]`` bool) ->
        each layer's keys and values ``[U, Hkv, P, D]`` (zero on padding), and the last position's final hidden
        state ``[U, H]``.

        The projections and the MLP see only the N real tokens ``[N, H]`` (the same packed products as
        :meth:`step`); only attention (SDPA, as transformers' forward runs it) sees the padded ``[U, P]`` layout.
        transformers' forward computes the padding too: at batch 64 with the bench's prompts (13.8 tokens on
        average, padded to 26: 1.9x the products) it took 1.29 s a generation on the 2-core EPYC, this pass 0.68 s
        (27 against 14 ms a decode step amortised over 48 tokens)."""
        if not bool(real[:, -1].all()):
            raise ValueError("every prompt needs a token, and padding on the left")
        w = self.weights
        positions = position_ids(real)[real]  # [N]
        rotary = {t: self._rotary_at(positions[:, None], t) for t in {layer.layer_type for layer in w.layers}}
        width = ids.shape[1]
        causal = torch.ones(width, width, dtype=torch.bool, device=ids.device).tril()
        # a real query sees the real keys up to itself; a padded one only itself (a row, not NaN; discarded)
        allowed = (causal & real[:, None, :]) | torch.eye(width, dtype=torch.bool, device=ids.device)  # [U, P, P]
        x = self.body.embed_tokens(ids[real])  # [N, H]
        keys, values = [], []
        for layer in w.layers:
            mixed, layer_keys, layer_values = self._prompt_attention(
                layer, _rms(x, layer.norms[0], w.eps, w.dtype), rotary[layer.layer_type], real, allowed[:, None]
            )
            keys.append(layer_keys)
            values.append(layer_values)
            x = x + mixed.to(x.dtype)
            h = _rms(x, layer.norms[2], w.eps, w.dtype)
            x = x + _rms(layer.down(layer.up.times(h, layer.gate.gelu(h))), layer.norms[3], w.eps, w.dtype).to(x.dtype)
        last = real.sum(-1).cumsum(0) - 1  # [U]: each prompt's last token (left padding) among the N
        return keys, values, _rms(x[last], w.final_norm, w.eps, x.dtype)

    def _prompt_attention(self, layer: LayerWeights, h, rotary, real, allowed):
        """Of the normed real tokens ``h`` ``[N, H]``: the post-attention-normed attention output ``[N, H]``, and the
        keys and values ``[U, Hkv, P, D]`` for the cache."""
        w = self.weights
        qk_heads = w.heads + w.kv_heads
        qkv = layer.qkv(h)  # [N, (Hq + 2 Hkv) D]
        qk = _rms(qkv[:, : qk_heads * w.head_dim].view(-1, qk_heads, w.head_dim), layer.qk_norm, w.eps, torch.float32)
        cos, sin = rotary  # [N, 1, D]
        qk = (qk * cos + _rotate_half(qk) * sin).to(w.dtype)
        heads = torch.cat([qk, qkv[:, qk_heads * w.head_dim :].view(-1, w.kv_heads, w.head_dim)], 1)
        padded = heads.new_zeros(*real.shape, *heads.shape[1:])  # [U, P, Hq + 2 Hkv, D]
        padded[real] = heads
        padded = padded.transpose(1, 2)  # [U, Hq + 2 Hkv, P, D]
        q, k, v = padded[:, : w.heads], padded[:, w.heads : qk_heads], padded[:, qk_heads:]
        out = F.scaled_dot_product_attention(q, k, v, allowed, scale=w.scaling, enable_gqa=True)  # [U, Hq, P, D]
        mixed = out.transpose(1, 2)[real].reshape(-1, w.heads * w.head_dim)  # [N, Hq D]
        return _rms(layer.out(mixed), layer.norms[1], w.eps, w.dtype), k, v

    @torch.autocast("cpu", enabled=False)
    def step(self, ids: torch.Tensor) -> torch.Tensor:
        """One token per row ``[B]`` -> the final hidden state ``[B, H]``."""
        w, slot = self.weights, self.filled
        self.filled += 1
        self.positions = self.positions + 1
        self.bias[:, slot] = 0.0
        rotary = {t: self._rotary(t) for t in {layer.layer_type for layer in w.layers}}
        x = self.body.embed_tokens(ids)  # [B, H] in the weights' dtype, scaled by sqrt(H)
        for layer, keys, values in zip(w.layers, self.keys, self.values):
            x = x + self._attention(
                layer, _rms(x, layer.norms[0], w.eps, w.dtype), rotary[layer.layer_type], keys, values, slot
            ).to(x.dtype)
            h = _rms(x, layer.norms[2], w.eps, w.dtype)
            x = x + _rms(layer.down(layer.up.times(h, layer.gate.gelu(h))), layer.norms[3], w.eps, w.dtype).to(x.dtype)
        return _rms(x, w.final_norm, w.eps, x.dtype)

    def _attention(self, layer: LayerWeights, h, rotary, keys, values, slot: int) -> torch.Tensor:
        """The post-attention-normed attention output ``[B, H]`` for the normed input ``h``; writes this token's key
        and value into the cache."""
        w = self.weights
        rows, qk_heads = h.shape[0], w.heads + w.kv_heads
        qkv = layer.qkv(h)  # [B, (Hq + 2 Hkv) D]
        qk = _rms(qkv[:, : qk_heads * w.head_dim].view(rows, qk_heads, w.head_dim), layer.qk_norm, w.eps, torch.float32)
        cos, sin = rotary  # [B, 1, D]
        qk = (qk * cos + _rotate_half(qk) * sin).to(w.dtype)
        keys[:, :, slot] = qk[:, w.heads :]
        values[:, :, slot] = qkv[:, qk_heads * w.head_dim :].view(rows, w.kv_heads, w.head_dim)
        mixed = self._mix(qk[:, : w.heads], keys, values)
        return _rms(layer.out(mixed), layer.norms[1], w.eps, w.dtype)

    def _mix(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Attention of the queries ``[B, Hq, D]`` over every slot of the cache, the unfilled ones masked -> ``[B, Hq
        D]``: a product over a slice of the cache copies that slice first, and SDPA's CPU kernel (bf16, one query,
        the filled slots only) took 3.8-5.8 ms a layer at batch 64 against 0.4 ms for these two batched products."""
        w = self.weights
        rows = q.shape[0]
        length, groups = keys.shape[2], rows * w.kv_heads
        group = q.reshape(groups, w.heads // w.kv_heads, w.head_dim)  # [B Hkv, G, D]
        scores = torch.bmm(group, keys.view(groups, length, w.head_dim).transpose(1, 2)).float()  # [B Hkv, G, L]
        scores = scores.view(rows, w.kv_heads, -1, length) * w.scaling + self.bias[:, None, None]
        probs = torch.softmax(scores, dim=-1).to(w.dtype).view(groups, -1, length)
        return torch.bmm(probs, values.view(groups, length, w.head_dim)).reshape(rows, w.heads * w.head_dim)

    def _rotary(self, layer_type: str) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin ``[B, 1, D]`` fp32 at this step's positions."""
        return self._rotary_at(self.positions[:, None], layer_type)

    def _rotary_at(self, positions: torch.Tensor, layer_type: str) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin ``[N, 1, D]`` fp32 at ``positions`` ``[N, 1]`` (transformers' rotary module, so its rope
        types)."""
        probe = torch.empty(0, device=positions.device)
        cos, sin = self.body.rotary_emb(probe, positions, layer_type)
        return cos, sin


def _scale(norm: Any) -> torch.Tensor:
    return 1.0 + norm.weight.detach().float()


def _rms(x: torch.Tensor, scale: torch.Tensor, eps: float, dtype: torch.dtype) -> torch.Tensor:
    """Gemma's RMSNorm over the last dimension in fp32 with its ``1 + w`` scale (``scale``: ``[D]``, or
    ``[heads, D]`` for ``x`` ``[..., heads, D]``), cast to ``dtype``."""
    width = (x.shape[-1],)
    if scale.dim() == 1:
        return F.rms_norm(x.float(), width, scale, eps).to(dtype)
    return (F.rms_norm(x.float(), width, None, eps) * scale).to(dtype)  # a scale per head: [heads, D]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)
