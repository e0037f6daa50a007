"""Generation for PPO: one interface, two backends.

``backend.generate(prompt_ids, random) -> Generated``: token ids of the rendered prompts in,
sampled responses out, with the policy's log-probability and entropy of each sampled token
*from the sampling pass itself* when the backend can give them (so PPO needs no extra forward
for its "old" log-probabilities). ``random`` is a ``torch.Generator`` or a table of uniforms
``[B, max_new_tokens]``, one row per prompt (row ``i``, column ``t``: the draw of prompt ``i``'s
``t``-th token), so that a prompt's response does not depend on which other prompts share its
batch (PPO's data-parallel ranks each sample a share of one table).

- :class:`HFBackend` (the default): the Hugging Face model's own forward with a KV cache,
  batched, left-padded prompts, one token per step for every unfinished row, stopping at EOS.
  The decode loop (:mod:`instructgpt.rollout.decoding`, setting ``decode``) is, by default on
  CPUs, the written-out Gemma 3 step (:mod:`instructgpt.rollout.fused_decode`) where it applies,
  with the sampler's chunk reductions compiled where that pays
  (:func:`compiled_sampling_pays`); else eager with a
  ``DynamicCache``, or (``compiled``) a static cache whose one-token step and sampler reductions
  go through ``torch.compile`` (compiled once per process). The trunk gives the last position's hidden state and
  :func:`instructgpt.rollout.sampling.sample_next` projects it on the vocabulary in chunks and
  samples with one random number per row (no ``[B, V]`` multinomial). It is written as a loop rather than through
  ``model.generate`` because PPO needs the log-probability of each sampled token under the
  policy (``generate``'s scores would keep a ``[B, V]`` tensor per step: 8 GB for 64 rows, 128
  tokens and a 262k vocabulary) and an explicit random generator (exact resume). ``stop_ids``
  end a row as EOS does (the evaluations' greedy one-line answers stop at any token holding a
  newline: :func:`instructgpt.evaluation.scoring.complete`).
  (:func:`instructgpt.models.generate.generate` wraps it for plain text sampling.)
- :class:`VLLMBackend`: vLLM, used when ``vllm`` is installed and a GPU is present
  (``backend="auto"``). The policy's weights are pushed into the engine before each rollout.
  vLLM's numerics differ from the training forward's, so with it the trainer recomputes the
  old log-probabilities (``logprobs_from="recompute"``).

Sampling: temperature (1 in the paper), optional top-k / top-p (the paper does not say; off by
default). The recorded log-probabilities are those of the temperature-scaled policy over the
whole vocabulary, the distribution PPO optimises, even when top-k/top-p truncate the sampling
distribution.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from instructgpt.rollout.decoding import (
    EagerDecoder,
    StaticDecoder,
    decode_path,
    have_compiler,
    one_query_attention_for,
    static_length,
    text_config,
)
from instructgpt.rollout.forward import autocast, causal_lm, trunk, unembedding
from instructgpt.rollout.fused_decode import FusedDecoder, FusedWeights
from instructgpt.rollout.sampling import RandomSource, VocabProjection, sample_next


@dataclass(frozen=True)
class Generated:
    """Responses to B prompts."""

    response_ids: torch.Tensor
    """[B, R] long: sampled tokens, right-padded with the pad id after EOS or the length limit."""
    response_mask: torch.Tensor
    """[B, R] bool: True on sampled tokens (EOS included)."""
    logprobs: torch.Tensor
    """[B, R] fp32: log-probability of each sampled token under the policy (0 on padding); NaN when the backend has
    none."""
    entropy: torch.Tensor
    """[B, R] fp32: entropy of the policy's next-token distribution (0 on padding); NaN when the backend has none."""
    ended_with_eos: torch.Tensor
    """[B] bool: the response ends with EOS."""


class GenerationBackend(Protocol):
    has_logprobs: bool
    """True when ``Generated.logprobs`` and ``entropy`` come from the sampling pass."""

    def generate(self, prompt_ids: Sequence[list[int]], random: RandomSource) -> Generated: ...

    def sync_weights(self, policy: Any) -> None:
        """Make the backend sample from ``policy``'s current weights."""


@dataclass
class SamplingSettings:
    max_new_tokens: int
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0


class HFBackend:
    """Batched sampling with the model's forward and a KV cache; see the module docstring."""

    has_logprobs = True

    def __init__(
        self,
        model: Any,
        settings: SamplingSettings,
        eos_id: int,
        pad_id: int,
        batch_size: int = 64,
        dtype: torch.dtype | None = None,
        decode: str = "auto",
        stop_ids: Sequence[int] = (),
    ):
        self.model, self.settings = model, settings
        self.eos_id, self.pad_id = eos_id, pad_id
        self.stop_ids = tuple(stop_ids)
        """Tokens besides EOS that end a row (e.g. every token containing a newline, for answers cut at the first
        line); a row that ends on one has ``ended_with_eos`` False."""
        self.batch_size, self.dtype = batch_size, dtype
        self.decode = decode
        """auto, fused, compiled, static or eager: the trunk's decode loop
        (:func:`instructgpt.rollout.decoding.decode_path`, whose docstring says what ``auto`` picks and why)."""
        self._fused: FusedWeights | None = None

    def sync_weights(self, policy: Any) -> None:
        self.model = policy  # samples from the trained module itself

    @torch.no_grad()
    def generate(self, prompt_ids: Sequence[list[int]], random: RandomSource) -> Generated:
        """Responses to ``prompt_ids``; ``random``: a generator, or uniforms ``[B, >= max_new_tokens]`` (one row per
        prompt)."""
        if isinstance(random, torch.Tensor):
            check_uniform_table(random, len(prompt_ids), self.settings.max_new_tokens)
            random = random.to(next(causal_lm(self.model).parameters()).device, torch.float64)  # one copy, not per step
        projection = _projection_weight(self.model, self.dtype)  # once per call: the policy changes between calls
        self._fused = None  # the fused step's weight layout, built by the first batch that decodes that way
        parts = [
            self._generate_batch(
                prompt_ids[s : s + self.batch_size],
                random if isinstance(random, torch.Generator) else random[s : s + self.batch_size],
                projection,
            )
            for s in range(0, len(prompt_ids), self.batch_size)
        ]
        width = max(p.response_ids.shape[1] for p in parts)
        return Generated(
            response_ids=torch.cat([_pad_to(p.response_ids, width, self.pad_id) for p in parts]),
            response_mask=torch.cat([_pad_to(p.response_mask, width, False) for p in parts]),
            logprobs=torch.cat([_pad_to(p.logprobs, width, 0.0) for p in parts]),
            entropy=torch.cat([_pad_to(p.entropy, width, 0.0) for p in parts]),
            ended_with_eos=torch.cat([p.ended_with_eos for p in parts]),
        )

    def _generate_batch(
        self, prompt_ids: Sequence[list[int]], random: RandomSource, weight: VocabProjection
    ) -> Generated:
        lm = causal_lm(self.model)
        device = next(lm.parameters()).device
        width = max(len(p) for p in prompt_ids)
        length = static_length(width, self.settings.max_new_tokens)
        path = decode_path(self.decode, lm, device, length)
        if path == "fused":  # attends to every slot (fused_decode), so exactly as many as needed
            length = width + self.settings.max_new_tokens
            if self._fused is None:
                self._fused = FusedWeights.of(trunk(self.model), text_config(lm), self.dtype, self.batch_size)
            weights = self._fused
            return self._sample(
                prompt_ids,
                random,
                weight,
                lambda mask: FusedDecoder(weights, trunk(self.model), mask, length),
                compiled_sampling_pays(weight, device),
            )
        if path == "eager":
            return self._sample(
                prompt_ids, random, weight, lambda mask: EagerDecoder(trunk(self.model), text_config(lm), mask)
            )
        state = random.get_state() if isinstance(random, torch.Generator) else None
        try:
            return self._sample(
                prompt_ids,
                random,
                weight,
                lambda mask: StaticDecoder(
                    trunk(self.model), text_config(lm), mask, length, compiled=path == "compiled"
                ),
                path == "compiled",
            )
        except (
            Exception
        ) as error:  # inductor could not build (no working toolchain, an unsupported op): eager from now on
            if path != "compiled":
                raise
            warnings.warn(
                f"compiled decoding failed ({type(error).__name__}: {str(error)[:300]}); this backend decodes "
                "eagerly from now on",
                RuntimeWarning,
                stacklevel=2,
            )
            self.decode = "eager"
            if isinstance(random, torch.Generator) and state is not None:
                random.set_state(state)
            return self._sample(
                prompt_ids, random, weight, lambda mask: EagerDecoder(trunk(self.model), text_config(lm), mask)
            )

    def _sample(
        self,
        prompt_ids: Sequence[list[int]],
        random: RandomSource,
        weight: VocabProjection,
        decoder,
        compiled: bool = False,
    ) -> Generated:
        """Prompt pass, then one token per step for every row until all rows hit EOS or the length limit
        (``compiled``: the sampler's per-chunk reductions compiled too)."""
        lm = causal_lm(self.model)
        device = next(lm.parameters()).device
        s = self.settings
        width = max(len(p) for p in prompt_ids)
        input_ids = torch.full((len(prompt_ids), width), self.pad_id, dtype=torch.long, device=device)  # [B, P]
        attention_mask = torch.zeros_like(input_ids)
        for row, ids in enumerate(prompt_ids):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, device=device)
            attention_mask[row, width - len(ids) :] = 1
        softcap = getattr(lm.config, "final_logit_softcapping", None)
        stops = torch.tensor([self.eos_id, *self.stop_ids], device=device)
        done = torch.zeros(len(prompt_ids), dtype=torch.bool, device=device)  # [B]
        ended_with_eos = torch.zeros_like(done)  # [B]
        tokens, logprobs, entropies, masks = [], [], [], []
        was_training = lm.training
        lm.eval()
        step_ids = input_ids
        try:
            with autocast(device, self.dtype), one_query_attention_for(text_config(lm)):
                forward = decoder(attention_mask)
                for t in range(s.max_new_tokens):
                    step = sample_next(
                        forward(step_ids),
                        weight,
                        random if isinstance(random, torch.Generator) else random[:, t],
                        s.temperature,
                        s.top_k,
                        s.top_p,
                        softcap,
                        compiled=compiled,
                    )
                    token = torch.where(done, self.pad_id, step.token)
                    tokens.append(token)
                    masks.append(~done)
                    logprobs.append(torch.where(done, 0.0, step.logprob))
                    entropies.append(torch.where(done, 0.0, step.entropy))
                    ended_with_eos = ended_with_eos | (token == self.eos_id) & ~done
                    done = done | torch.isin(token, stops)
                    if bool(done.all()):
                        break
                    step_ids = token[:, None]
        finally:
            lm.train(was_training)
        return Generated(
            response_ids=torch.stack(tokens, 1),
            response_mask=torch.stack(masks, 1),
            logprobs=torch.stack(logprobs, 1),
            entropy=torch.stack(entropies, 1),
            ended_with_eos=ended_with_eos,
        )


class VLLMBackend:
    """Sampling with vLLM on a GPU; the trainer pushes the policy's weights before each rollout.

    Written against vLLM's offline ``LLM`` API (``generate`` with token-id prompts,
    ``SamplingParams(seed=...)``); it could not be tested on the CPU machine this project is
    developed on.
    """

    has_logprobs = False

    def __init__(
        self, model_path: str, settings: SamplingSettings, eos_id: int, pad_id: int, gpu_memory_utilization: float = 0.3
    ):
        from vllm import LLM

        self.settings, self.eos_id, self.pad_id = settings, eos_id, pad_id
        self.llm = LLM(
            model=model_path,
            dtype="bfloat16",
            gpu_memory_utilization=gpu_memory_utilization,
            enable_prefix_caching=True,
        )

    def sync_weights(self, policy: Any) -> None:
        lm = causal_lm(policy)
        if hasattr(policy, "merge_and_unload"):  # LoRA: push merged weights, leave the adapter in place
            state = _merged_lora_state(policy)
        else:
            state = {n: p.detach() for n, p in lm.state_dict().items()}
        runner = self.llm.llm_engine.model_executor.driver_worker.worker.model_runner
        runner.model.load_weights(weights=list(state.items()))

    def generate(self, prompt_ids: Sequence[list[int]], random: RandomSource) -> Generated:
        """``random``: a generator (one seed for the call) or a uniform table (a seed per prompt, from its row)."""
        from vllm import SamplingParams

        s = self.settings
        if isinstance(random, torch.Generator):
            seeds = [int(torch.randint(0, 2**31 - 1, (1,), generator=random))] * len(prompt_ids)
        else:
            check_uniform_table(random, len(prompt_ids), 1)
            seeds = [int(u * (2**31 - 1)) for u in random[:, 0].tolist()]
        params = [
            SamplingParams(
                n=1,
                temperature=s.temperature,
                top_k=s.top_k or -1,
                top_p=s.top_p,
                max_tokens=s.max_new_tokens,
                seed=seed,
                stop_token_ids=[self.eos_id],
            )
            for seed in seeds
        ]
        outputs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompt_ids], params, use_tqdm=False)
        responses = [list(o.outputs[0].token_ids) for o in outputs]
        width = max(1, max(len(r) for r in responses))
        ids = torch.full((len(responses), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(responses), width), dtype=torch.bool)
        for row, response in enumerate(responses):
            ids[row, : len(response)] = torch.tensor(response, dtype=torch.long)
            mask[row, : len(response)] = True
        ended = torch.tensor([bool(r) and r[-1] == self.eos_id for r in responses])
        nan = torch.full(ids.shape, float("nan"))
        return Generated(ids, mask, nan, nan.clone(), ended)


def make_backend(
    name: str,
    policy: Any,
    settings: SamplingSettings,
    eos_id: int,
    pad_id: int,
    batch_size: int,
    dtype: torch.dtype | None,
    model_path: str | None = None,
) -> GenerationBackend:
    """``hf``, ``vllm``, or ``auto`` (vLLM when it is installed and a GPU is present)."""
    if name == "auto":
        name = "vllm" if _vllm_usable() and model_path else "hf"
    if name == "vllm":
        if model_path is None:
            raise ValueError("the vLLM backend needs the policy as a model folder")
        return VLLMBackend(model_path, settings, eos_id, pad_id)
    return HFBackend(policy, settings, eos_id, pad_id, batch_size, dtype)


COMPILED_SAMPLING_MIN_VOCAB = 131_072
"""Vocabularies at least this large get the compiled sampler reductions (:func:`compiled_sampling_pays`)."""


def compiled_sampling_pays(projection: VocabProjection, device: torch.device) -> bool:
    """Whether the fused decode path should reduce the vocabulary's chunks through ``torch.compile``: a full-size
    vocabulary (:data:`COMPILED_SAMPLING_MIN_VOCAB` words or more; the reductions are then a tenth of a step: Gemma 3's
    262k words at batch 64 on a 2-core EPYC, bf16, 16.9-19.7 ms a step eager against 9.3-10.6 ms compiled, measured
    in the decode loop) on a CPU with a C++ compiler (inductor's toolchain) or a CUDA device. Smaller vocabularies
    stay eager: the compile (about 3 s a process with a warm inductor cache, 10 s or more cold, again for each new
    batch size) costs more than the reductions save there. The trimmed 66k-word vocabulary of the quickstart and
    miniature presets saves about 2 ms a step at batch 64, so a stage would need thousands of decode steps to
    repay it: in the quickstart (2026-12-07, EPYC) compiling cost its PPO about 3 s in the first iteration's
    generation (5.0 s against about 2.1 s after) for no measurable gain."""
    if projection.vocab < COMPILED_SAMPLING_MIN_VOCAB or device.type not in ("cpu", "cuda"):
        return False
    return device.type == "cuda" or have_compiler()


def check_uniform_table(table: torch.Tensor, rows: int, steps: int) -> None:
    """A table of uniforms has one row per prompt and a column per decode step."""
    if table.dim() != 2 or table.shape[0] != rows or table.shape[1] < steps:
        raise ValueError(f"expected uniforms [{rows}, >= {steps}] (prompts, decode steps), got {tuple(table.shape)}")


def _projection_weight(model: Any, dtype: torch.dtype | None) -> VocabProjection:
    """The unembedding in the dtype autocast would give its matmul, split for the sampler (once
    per ``generate`` call; not cached across calls: fused AdamW updates weights without bumping
    their version counter, so a cache could not tell a stale copy)."""
    detached = unembedding(model).detach()
    return VocabProjection.of(detached.to(dtype) if dtype is not None else detached)


def _vllm_usable() -> bool:
    import importlib.util

    return torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None


def _merged_lora_state(policy: Any) -> dict[str, torch.Tensor]:
    policy.merge_adapter()
    try:
        state = {
            n.replace("base_layer.", ""): p.detach().clone()
            for n, p in causal_lm(policy).state_dict().items()
            if "lora_" not in n
        }
    finally:
        policy.unmerge_adapter()
    return state


def _pad_to(x: torch.Tensor, width: int, value) -> torch.Tensor:
    if x.shape[1] == width:
        return x
    pad = torch.full((x.shape[0], width - x.shape[1]), value, dtype=x.dtype, device=x.device)
    return torch.cat([x, pad], dim=1)
