"""The typed rollout batch: everything PPO needs about a batch of episodes, all fields required.

Layout: each episode is one row of ``input_ids``: its prompt left-padded to ``prompt_width``
columns, then its response right-padded to ``R`` columns::

    input_ids      [pad pad p1 p2 p3 | r1 r2 EOS pad]
    attention_mask [ 0   0  1  1  1  |  1  1  1   0 ]
    response_mask                    [  T  T  T   F ]

Per-token quantities (``logprobs``, ``values``, ...) are ``[B, R]`` aligned with the response
columns: entry ``t`` is about response token ``t`` (predicted at position ``prompt_width + t - 1``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass(frozen=True)
class RolloutBatch:
    """B episodes: prompts, sampled responses, and what the four models said about them."""

    input_ids: torch.Tensor
    """[B, P + R] long: prompt (left-padded to P = prompt_width) then response (right-padded to R)."""
    attention_mask: torch.Tensor
    """[B, P + R] long: 1 on real prompt and response tokens, 0 on padding."""
    response_mask: torch.Tensor
    """[B, R] bool: True on real response tokens (EOS included when the response has one)."""
    prompt_width: int
    """P: the number of prompt columns of input_ids."""
    logprobs: torch.Tensor
    """[B, R] fp32: log pi_RL(y_t | x, y_<t) of the policy that sampled (0 on padding)."""
    ref_logprobs: torch.Tensor
    """[B, R] fp32: log pi_SFT(y_t | x, y_<t) of the frozen reference (0 on padding)."""
    values: torch.Tensor
    """[B, R] fp32: the value model's V(x, y_<t), the state before response token t (0 on padding)."""
    scores: torch.Tensor
    """[B] fp32: reward-model scores of prompt + response, normalisation bias included."""
    entropy: torch.Tensor
    """[B, R] fp32: entropy of the policy's next-token distribution at each response token (0 on padding)."""
    ended_with_eos: torch.Tensor
    """[B] bool: the response ends with EOS (False: it hit the length limit)."""
    prompt_indices: torch.Tensor
    """[B] long: index of each episode's prompt in the prompt set."""

    @property
    def response_ids(self) -> torch.Tensor:
        """[B, R] long: the response columns of input_ids."""
        return self.input_ids[:, self.prompt_width :]

    @property
    def size(self) -> int:
        return self.input_ids.shape[0]

    def select(self, rows: torch.Tensor) -> RolloutBatch:
        """The episodes ``rows``, with columns that are padding in every selected row dropped."""
        picked = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in picked.items():
            if isinstance(value, torch.Tensor):
                picked[name] = value[rows]
        mask = picked["attention_mask"]
        real_prompt = mask[:, : self.prompt_width].any(0)  # [P]
        left = int(real_prompt.long().argmax()) if bool(real_prompt.any()) else self.prompt_width
        width = int(picked["response_mask"].long().sum(-1).max()) if len(rows) else 0
        for name in ("input_ids", "attention_mask"):
            picked[name] = picked[name][:, left : self.prompt_width + width]
        for name in ("response_mask", "logprobs", "ref_logprobs", "values", "entropy"):
            picked[name] = picked[name][:, :width]
        picked["prompt_width"] = self.prompt_width - left
        return RolloutBatch(**picked)

    def to(self, device: torch.device | str) -> RolloutBatch:
        return RolloutBatch(**{f.name: _move(getattr(self, f.name), device) for f in fields(self)})


def concat(batches: list[RolloutBatch], pad_id: int) -> RolloutBatch:
    """The episodes of ``batches``, in order, as one batch: prompts left-padded to the widest prompt, responses
    right-padded to the longest response (pad id, mask 0 / False, 0.0 in per-token fields).

    Equivalent to building the batch from all the episodes at once: for a batch ``b`` and a split
    of its rows, ``concat([b.select(first), b.select(rest)], pad_id)`` equals ``b`` (tested).
    """
    prompt_width = max(b.prompt_width for b in batches)
    response_width = max(b.response_mask.shape[1] for b in batches)

    def widen(x: torch.Tensor, left: int, right: int, value) -> torch.Tensor:
        return torch.nn.functional.pad(x, (left, right), value=value) if left or right else x

    def joined(name: str, value, prompt: bool) -> torch.Tensor:
        parts = []
        for b in batches:
            x = getattr(b, name)
            response = x.shape[1] - (b.prompt_width if prompt else 0)
            left = prompt_width - b.prompt_width if prompt else 0
            parts.append(widen(x, left, response_width - response, value))
        return torch.cat(parts)

    per_token = ("logprobs", "ref_logprobs", "values", "entropy")
    return RolloutBatch(
        input_ids=joined("input_ids", pad_id, prompt=True),
        attention_mask=joined("attention_mask", 0, prompt=True),
        response_mask=joined("response_mask", False, prompt=False),
        prompt_width=prompt_width,
        **{name: joined(name, 0.0, prompt=False) for name in per_token},
        scores=torch.cat([b.scores for b in batches]),
        ended_with_eos=torch.cat([b.ended_with_eos for b in batches]),
        prompt_indices=torch.cat([b.prompt_indices for b in batches]),
    )


def _move(value, device):
    return value.to(device) if isinstance(value, torch.Tensor) else value
