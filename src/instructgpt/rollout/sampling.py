"""One decode step's sampling from the final hidden states, without full-vocabulary overheads.

``sample_next(hidden, weight, random, ...)`` projects ``[B, H]`` hidden states on the
vocabulary once and returns the sampled token, its log-probability and the entropy of the
distribution. The ``[B, V]`` logits (262k words for Gemma 3) are read a fixed, small number of
times:

- the log-normaliser and the entropy come from one max, one ``exp`` and two reductions
  (``H = lse - sum(p * logits)``), not from a separate log-softmax, softmax and entropy;
- sampling is exact inverse-CDF sampling with ONE uniform number per row, in two levels: the
  row's probability mass is summed in blocks of ``block`` words, the block is found from the
  block sums' cumulative sum, then the word inside the block. ``torch.multinomial`` instead
  draws one exponential per word (``[B, V]`` random numbers from a single-threaded generator:
  about 0.5 s per step at B = 64 on a 2-core CPU, more than the whole forward).

Temperature 0 is greedy decoding (argmax). The sampled distribution is
``softmax(logits / temperature)``, truncated by top-k / top-p when they are set (then
:func:`filter_logits` and the same inverse-CDF draw over the truncated probabilities: the paper
does not truncate, and neither does the default). The recorded log-probabilities and
entropies are those of the untruncated temperature-scaled policy, the distribution PPO
optimises.

Randomness (:data:`RandomSource`): a ``torch.Generator``, from which each call draws one uniform
per row, or the rows' own uniforms ``[B]`` given by the caller. The second makes a row's sample
independent of the other rows of the batch: PPO draws a ``[batch_size, max_new_tokens]`` table
per iteration and each prompt reads its row, whichever process and generation batch it is
sampled in (:mod:`instructgpt.training.ppo_parallel`). Seeded: the same generator state, or the
same uniforms, give the same tokens.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from instructgpt.rollout.forward import entropy_from_logits

RandomSource = torch.Generator | torch.Tensor
"""A generator (one uniform per row drawn per call) or the rows' uniforms ``[B]`` in [0, 1)."""


def row_uniforms(random: RandomSource, rows: int, device: torch.device) -> torch.Tensor:
    """``[rows, 1]`` fp64 uniforms in [0, 1): drawn from a generator (on its device), or the given ones."""
    if isinstance(random, torch.Generator):
        return torch.rand(rows, 1, generator=random, dtype=torch.float64, device=random.device).to(device)
    if random.shape != (rows,):
        raise ValueError(f"expected {rows} uniforms, one per row, got shape {tuple(random.shape)}")
    return random.to(device=device, dtype=torch.float64)[:, None]


@dataclass(frozen=True)
class Step:
    """The sampled tokens of one decode step, for B rows."""

    token: torch.Tensor
    """[B] long"""
    logprob: torch.Tensor
    """[B] fp32: log-probability of ``token`` under softmax(logits / temperature)."""
    entropy: torch.Tensor
    """[B] fp32: entropy of that distribution."""


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set logits outside the top-k / nucleus (top-p) set to -inf ``[B, V]``; 0 / 1.0 disable."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop_sorted = cumulative - torch.softmax(sorted_logits, dim=-1) >= top_p  # keep the token that crosses top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@dataclass(frozen=True)
class VocabProjection:
    """The unembedding laid out for the sampler's projection (built once per ``generate`` call).

    Either oneDNN's packed (blocked) layout of the whole ``[V, H]`` weight (``packed``, where :func:`_packable`; bf16
    on a CPU with native bf16: one ``[B, H] x [H, V]`` product at the matmul's peak rate, 167 GFLOP/s
    against 106-130 for the split layout on one core of an AVX512-BF16 EPYC at B = 64, and what
    inductor itself uses for CPU linears), or contiguous ``[H, chunk]`` column blocks (``chunks``;
    elsewhere: about a quarter faster than slices of the weight's transpose at B = 64 on an AMX
    Xeon). Same products either way (bf16 inputs, fp32 accumulation, bf16 logits).
    """

    chunks: tuple[torch.Tensor, ...]
    vocab: int
    chunk: int
    dtype: torch.dtype
    packed: torch.Tensor | None = None

    @classmethod
    def of(cls, weight: torch.Tensor, chunk: int = 8192, pack: bool | None = None) -> VocabProjection:
        """From an unembedding ``[V, H]`` (detached; keep its dtype). ``pack``: None = where it applies."""
        weight = weight.detach()
        if pack is None:
            pack = _packable(weight)
        if pack:
            return cls(
                (),
                weight.shape[0],
                chunk,
                weight.dtype,
                torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), 64),
            )
        return cls(
            tuple(weight[s : s + chunk].T.contiguous() for s in range(0, weight.shape[0], chunk)),
            weight.shape[0],
            chunk,
            weight.dtype,
        )

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """``h @ W.T`` ``[B, V]`` in the projection's dtype (``h`` already in it)."""
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(h, self.packed, None, "none", [], "")
        return torch.cat([h @ c for c in self.chunks], 1)


def _packable(weight: torch.Tensor) -> bool:
    """oneDNN's packed layout applies: a CPU weight in fp32, or in bf16 where the CPU runs bf16 natively. In fp32 on a
    2-core AVX2-only EPYC oneDNN's products ran at 56-78 GFLOP/s against 37-67 for MKL's ``F.linear`` at the decode
    step's shapes (the vocabulary projection at batch 64: 380 against 577 ms; packing it in 32k-word blocks, 280 ms
    alone, was no faster inside the decode loop: 36.3 against 35.2 s a generation)."""
    if weight.device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    if not hasattr(torch.ops.mkldnn, "_reorder_linear_weight"):
        return False
    if weight.dtype == torch.float32:
        return True
    return weight.dtype == torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def next_logits(
    hidden: torch.Tensor,
    weight: torch.Tensor | VocabProjection,
    temperature: float = 1.0,
    softcap: float | None = None,
) -> torch.Tensor:
    """fp32 ``logits / temperature`` ``[B, V]`` of hidden states ``[B, H]`` (projected in the weight's dtype, e.g.
    bf16)."""
    if isinstance(weight, VocabProjection):
        return _scale(weight.logits(hidden.to(weight.dtype)), temperature, softcap)
    return _scale(hidden.to(weight.dtype) @ weight.T, temperature, softcap)


def sample_next(
    hidden: torch.Tensor,  # [B, H]
    weight: torch.Tensor | VocabProjection,  # [V, H] or its chunks
    random: RandomSource,  # a generator, or the rows' uniforms [B]
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    softcap: float | None = None,
    chunk: int = 8192,
    block: int = 64,
    compiled: bool = False,
) -> Step:
    """Sample one token per row from ``softmax(hidden @ weight.T / temperature)``; see the module docstring.

    The vocabulary is projected ``chunk`` words at a time (each chunk's logits stay in cache
    while they are reduced); per chunk only its max, the masses of its blocks of ``block``
    words and ``sum(p * (logit - max))`` are kept, combined as in an online softmax.
    ``compiled``: each chunk's reductions run through :func:`torch.compile` (fused kernels: two
    passes over the chunk's bf16 logits instead of six eager ops with fp32 temporaries; compiled
    once per process, about 10 s); the projection and the draw stay eager.
    """
    if temperature == 0:
        return _greedy(next_logits(hidden, weight, 1.0, softcap))
    if top_k or top_p < 1.0:
        return _sample_truncated(next_logits(hidden, weight, temperature, softcap), random, top_k, top_p)
    projection = weight if isinstance(weight, VocabProjection) else VocabProjection.of(weight, chunk)
    per_block, overall, lse, expected_logit, stored = _vocab_stats(
        hidden.to(projection.dtype), projection, temperature, softcap, block, compiled
    )
    token, logit = _sample_in_blocks(
        per_block, stored, projection.vocab, projection.chunk, block, overall, random, temperature, softcap
    )
    return Step(token, logit - lse, lse - expected_logit)


def _vocab_stats(
    h: torch.Tensor, projection: VocabProjection, temperature: float, softcap: float | None, block: int, compiled: bool
):
    """Project ``h`` ``[B, H]`` on the vocabulary and reduce chunk by chunk (:func:`_chunk_stats`,
    compiled when ``compiled``), combined as in an online softmax: the block masses
    ``[B, V / block]`` (fp64, relative to the row's max logit), that max ``[B, 1]``, the
    log-normaliser ``[B]``, the expected logit ``[B]`` (entropy = lse - expected logit), and the
    logits themselves (``[B, V]`` when packed, else ``[C, B, chunk]``, in the projection dtype)."""
    if projection.packed is not None:
        stored = projection.logits(h)  # [B, V]
        raws: Iterable[torch.Tensor] = [
            stored[:, s : s + projection.chunk] for s in range(0, projection.vocab, projection.chunk)
        ]
    else:
        stored = h.new_empty(len(projection.chunks), h.shape[0], projection.chunk)  # [C, B, chunk]
        raws = (_project(h, part, stored[index]) for index, part in enumerate(projection.chunks))
    maxes, dots, block_masses = [], [], []
    for raw in raws:
        top, dot, masses = _reduce_chunk(raw, temperature, softcap, block, compiled)
        maxes.append(top)
        dots.append(dot)
        block_masses.append(masses)
    top = torch.cat(maxes, 1)  # [B, C]
    overall = top.amax(-1, keepdim=True)  # [B, 1]
    scale = torch.exp(top - overall)
    per_block = torch.cat([b * s[:, None] for b, s in zip(block_masses, scale.unbind(1))], 1).double()  # [B, V / block]
    masses = torch.stack([b.sum(-1) for b in block_masses], 1)  # [B, C]
    total = (masses * scale).sum(-1)  # [B]
    lse = overall[:, 0] + total.log()
    expected_logit = ((torch.cat(dots, 1) + top * masses) * scale).sum(-1) / total
    return per_block, overall, lse, expected_logit, stored


def _chunk_stats(
    raw: torch.Tensor, temperature: float, softcap: float | None, block: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Of one chunk's raw logits ``[B, n]``: its max ``[B, 1]``, ``sum p * (logit - max)`` ``[B, 1]``
    (p unnormalised: ``exp(logit - max)``) and the masses of its blocks ``[B, n / block]``."""
    top, shifted = _shifted(raw, temperature, softcap)
    mass = shifted.exp()
    return top, torch.linalg.vecdot(mass, shifted)[:, None], _block_sums(mass, block)


@functools.cache
def _compiled_chunk_stats():
    """:func:`_chunk_stats` through ``torch.compile`` (one wrapper per process), specialised to each chunk shape
    (a batch size, the last chunk's width: a few compiles per process; shapes marked dynamic after the second one
    would give generic kernels)."""
    return torch.compile(_chunk_stats, dynamic=False)


_compile_failed: list[str] = []
"""Why compiling the chunk reductions failed in this process (then they run eagerly), or empty."""


def _reduce_chunk(
    raw: torch.Tensor, temperature: float, softcap: float | None, block: int, compiled: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`_chunk_stats`, compiled when ``compiled`` and the compile works here (else eager from then on,
    with a warning: no C++ toolchain, an unsupported op)."""
    if compiled and not _compile_failed:
        try:
            return _compiled_chunk_stats()(raw, temperature, softcap, block)
        except Exception as error:  # inductor could not build: the same arithmetic eagerly
            _compile_failed.append(f"{type(error).__name__}: {str(error)[:300]}")
            warnings.warn(
                f"compiling the sampler's reductions failed ({_compile_failed[0]}); they run eagerly",
                RuntimeWarning,
                stacklevel=2,
            )
    return _chunk_stats(raw, temperature, softcap, block)


def _shifted(raw: torch.Tensor, temperature: float, softcap: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The chunk's max logit ``[B, 1]`` and fp32 ``logits - max`` (a new tensor: ``raw`` is kept for the draw)."""
    logits = _scale(raw, temperature, softcap)  # one fp32 copy, reduced and shifted in place (a mixed bf16 - fp32
    if logits is raw:  # subtraction, or a max over bf16, is 2-4x slower on a CPU)
        logits = logits.clone()
    top = logits.amax(-1, keepdim=True)
    return top, logits.sub_(top)


def _scale(raw: torch.Tensor, temperature: float, softcap: float | None) -> torch.Tensor:
    logits = raw.float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits / temperature if temperature != 1.0 else logits


def _project(h: torch.Tensor, part: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``h @ part`` (``part`` ``[H, n]``) written into ``out`` ``[B, chunk]`` (the last chunk may be narrower)."""
    if part.shape[1] == out.shape[1]:
        return torch.mm(h, part, out=out)
    raw = h @ part
    out[:, : raw.shape[1]] = raw
    return raw


def _block_sums(mass: torch.Tensor, block: int) -> torch.Tensor:
    pad = (-mass.shape[1]) % block
    padded = torch.nn.functional.pad(mass, (0, pad)) if pad else mass
    return padded.view(mass.shape[0], -1, block).sum(-1)


def _sample_in_blocks(per_block, stored, vocab, chunk, block, overall, random, temperature, softcap):
    """Pick a block by its mass, then a word in it from the stored logits; returns (token, its fp32 logit)."""
    rows = per_block.shape[0]
    chosen, remainder = _pick_block(per_block, random)
    words = chosen * block + torch.arange(block, device=chosen.device)  # [B, block]
    valid = words < vocab
    words = words.clamp(max=vocab - 1)
    if stored.dim() == 2:  # [B, V]
        raw = stored.gather(1, words)  # [B, block]
    else:  # [C, B, chunk]
        raw = stored[
            words[:, :1] // chunk, torch.arange(rows, device=words.device)[:, None], words % chunk
        ]  # [B, block] (a block never spans two chunks)
    logits = _scale(raw, temperature, softcap)  # [B, block]
    offset = _pick_word(torch.where(valid, torch.exp(logits - overall), 0.0), remainder)
    return words.gather(1, offset)[:, 0], logits.gather(1, offset)[:, 0]


def _pick_block(per_block: torch.Tensor, random: RandomSource) -> tuple[torch.Tensor, torch.Tensor]:
    """One uniform per row over the total mass: the block ``[B, 1]`` it falls in and the mass left inside it ``[B,
    1]``."""
    cdf = per_block.double().cumsum(-1)
    u = row_uniforms(random, per_block.shape[0], per_block.device) * cdf[:, -1:]
    chosen = torch.searchsorted(cdf, u, right=True).clamp_(max=cdf.shape[1] - 1)
    before = torch.where(chosen > 0, cdf.gather(1, (chosen - 1).clamp(min=0)), 0.0)
    return chosen, u - before


def _pick_word(mass: torch.Tensor, remainder: torch.Tensor) -> torch.Tensor:
    """The offset ``[B, 1]`` in a block of ``mass`` ``[B, block]`` where the cumulative mass passes ``remainder``."""
    mass = mass.double()
    offset = torch.searchsorted(mass.cumsum(-1), remainder, right=True)
    last_positive = torch.where(mass > 0, torch.arange(mass.shape[1], device=mass.device), -1).amax(-1, keepdim=True)
    return torch.minimum(offset, last_positive)  # rounding never lands on a zero-mass word


def _greedy(logits: torch.Tensor) -> Step:
    """The most likely token; log-probability and entropy of the untempered distribution."""
    token = logits.argmax(-1)
    return Step(token, _token_logprob(logits, token), entropy_from_logits(logits))


def _sample_truncated(logits: torch.Tensor, random: RandomSource, top_k: int, top_p: float) -> Step:
    token = inverse_cdf_sample(torch.softmax(filter_logits(logits, top_k, top_p), dim=-1), random)
    return Step(token, _token_logprob(logits, token), entropy_from_logits(logits))


def _token_logprob(logits: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, token[:, None])[:, 0] - torch.logsumexp(logits, -1)


def inverse_cdf_sample(mass: torch.Tensor, random: RandomSource, block: int = 512) -> torch.Tensor:
    """One index per row of non-negative ``mass`` ``[B, V]`` with probability proportional to it.

    Two-level inverse CDF with one uniform per row: block sums locate the block, a cumulative
    sum inside it locates the word. A word of zero mass is never returned.
    """
    chosen, remainder = _pick_block(_block_sums(mass, block), random)
    padded = torch.nn.functional.pad(mass, (0, (-mass.shape[1]) % block))
    inside = padded.view(mass.shape[0], -1, block).gather(1, chosen[:, :, None].expand(-1, 1, block))[
        :, 0
    ]  # [B, block]
    return (chosen * block + _pick_word(inside, remainder))[:, 0]
