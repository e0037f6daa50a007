"""Prompts in, a scored :class:`RolloutBatch` out: the policy samples, the other models look.

1. the generation backend samples one response per prompt (with the policy's log-probabilities
   and entropies from the sampling pass, or recomputed here when the backend has none or when
   asked: ``recompute_logprobs``);
2. the frozen SFT reference gives ``ref_logprobs`` (with LoRA: the policy with its adapter
   disabled), the value model gives ``values``, the reward model gives ``scores``, all without
   gradients, in micro-batches of ``forward_batch_size`` episodes sorted by length (so each
   micro-batch carries little padding).

An episode that hit the length limit has no end marker, but the reward model was trained only on
sequences that end with one: every ranked response, cut off or not, is rendered as ``response +
EOS`` (:func:`instructgpt.data.render.response_ids`), and the score is read at that last token. Read
at an ordinary token instead, the score is out of the RM's training distribution (measured on the
miniature preset's RM, 68 cut-off SFT samples: mean +0.66 read at the last text token against -0.28
with EOS appended, and over 128 samples the two readings correlate 0.23). So with ``end_id`` given,
an unfinished episode is scored with ``end_id`` appended, as the RM saw such responses in training
(:func:`with_end_marker`); what not ending costs is then the trainer's ``missing_eos_penalty``. The
episode itself (its tokens, log-probabilities and values) is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch

from instructgpt.rollout.batch import RolloutBatch
from instructgpt.rollout.forward import response_entropy, response_logprobs, response_values, sequence_scores
from instructgpt.rollout.generation import GenerationBackend
from instructgpt.rollout.sampling import RandomSource


def assemble(
    prompt_ids: Sequence[list[int]], response_ids: torch.Tensor, response_mask: torch.Tensor, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` ``[B, P + R]``: prompts left-padded, responses right-padded."""
    width = max(len(p) for p in prompt_ids)
    batch, response_width = response_ids.shape
    input_ids = torch.full((batch, width + response_width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((batch, width + response_width), dtype=torch.long)
    for row, ids in enumerate(prompt_ids):
        input_ids[row, width - len(ids) : width] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids) : width] = 1
    input_ids[:, width:] = torch.where(response_mask, response_ids.cpu(), pad_id)
    attention_mask[:, width:] = response_mask.long().cpu()
    return input_ids, attention_mask


def with_end_marker(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, ended: torch.Tensor, end_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, T + 1]`` copies in which each row with ``ended [B]`` False has ``end_id`` right after its last
    real token (rows are a left-padded prompt then a right-padded response, so real tokens are contiguous).

    >>> ids, mask = with_end_marker(torch.tensor([[0, 5, 6], [7, 8, 0]]), torch.tensor([[0, 1, 1], [1, 1, 0]]),
    ...                             torch.tensor([False, True]), 9)
    >>> ids.tolist(), mask.tolist()
    ([[0, 5, 6, 9], [7, 8, 0, 9]], [[0, 1, 1, 1], [1, 1, 0, 0]])
    """
    batch = input_ids.shape[0]
    ids = torch.cat([input_ids, input_ids.new_full((batch, 1), end_id)], 1)
    mask = torch.cat([attention_mask, attention_mask.new_zeros((batch, 1))], 1)
    positions = torch.arange(1, ids.shape[1], device=ids.device)
    after_last = (attention_mask.bool() * positions).amax(-1)  # [B]: index after the last real token
    unfinished = ~ended.bool()
    ids[unfinished, after_last[unfinished]] = end_id
    mask[unfinished, after_last[unfinished]] = 1
    return ids, mask


@torch.no_grad()
def collect_rollout(
    policy: Any,
    sft_policy: Any,
    value_model: Any,
    reward_model: Any,
    backend: GenerationBackend,
    prompt_ids: Sequence[list[int]],
    prompt_indices: Sequence[int],
    random: RandomSource,
    pad_id: int,
    temperature: float = 1.0,
    dtype: torch.dtype | None = None,
    forward_batch_size: int = 16,
    chunk_size: int = 1024,
    recompute_logprobs: bool = False,
    end_id: int | None = None,
) -> tuple[RolloutBatch, dict[str, float]]:
    """Sample and score one batch of episodes; returns it and the time of each phase (seconds).

    ``sft_policy is policy`` means LoRA: the reference is the policy with its adapter disabled. ``random``: a
    generator, or uniforms ``[B, max_new_tokens]``, one row per prompt (:meth:`GenerationBackend.generate`).
    ``end_id``: the reward model scores an episode without EOS with this token appended (module docstring);
    None scores it as it is.
    """
    import time

    device = next(policy.parameters()).device
    started = time.perf_counter()
    generated = backend.generate(prompt_ids, random)
    timing = {"time/generate_s": time.perf_counter() - started}
    input_ids, attention_mask = assemble(prompt_ids, generated.response_ids, generated.response_mask, pad_id)
    prompt_width = input_ids.shape[1] - generated.response_ids.shape[1]
    recompute = recompute_logprobs or not backend.has_logprobs
    shape = generated.response_ids.shape
    out = {name: torch.zeros(shape) for name in ("ref_logprobs", "values", "logprobs", "entropy")}
    scores = torch.zeros(shape[0])
    skeleton = RolloutBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        response_mask=generated.response_mask.cpu(),
        prompt_width=prompt_width,
        logprobs=out["logprobs"],
        ref_logprobs=out["ref_logprobs"],
        values=out["values"],
        scores=scores,
        entropy=out["entropy"],
        ended_with_eos=generated.ended_with_eos.cpu(),
        prompt_indices=torch.as_tensor(list(prompt_indices), dtype=torch.long),
    )
    started = time.perf_counter()
    order = torch.argsort(attention_mask.sum(-1), stable=True)
    for start in range(0, len(order), forward_batch_size):
        rows = order[start : start + forward_batch_size]
        part = skeleton.select(rows).to(device)
        args = (part.input_ids, part.attention_mask, part.prompt_width, part.response_mask)
        width = part.response_mask.shape[1]
        with policy.disable_adapter() if sft_policy is policy else nullcontext():
            ref = response_logprobs(sft_policy, *args, temperature=temperature, dtype=dtype, chunk_size=chunk_size)
        out["ref_logprobs"][rows, :width] = ref.cpu()
        out["values"][rows, :width] = response_values(value_model, *args, dtype=dtype).cpu()
        scored = (part.input_ids, part.attention_mask)
        if end_id is not None and not part.ended_with_eos.all():
            scored = with_end_marker(*scored, part.ended_with_eos, end_id)
        scores[rows] = sequence_scores(reward_model, *scored, dtype).cpu()
        if recompute:
            out["logprobs"][rows, :width] = response_logprobs(
                policy, *args, temperature=temperature, dtype=dtype, chunk_size=chunk_size
            ).cpu()
            out["entropy"][rows, :width] = response_entropy(
                policy, *args, temperature=temperature, dtype=dtype, chunk_size=chunk_size
            ).cpu()
    if not recompute:
        out["logprobs"].copy_(generated.logprobs.cpu())
        out["entropy"].copy_(generated.entropy.cpu())
    timing["time/score_s"] = time.perf_counter() - started
    return skeleton, timing
