"""The reward model's K-wise ranking loss (the paper's Eq. 1), as pure tensor functions.

Ouyang et al. 2022, Eq. 1::

    loss(theta) = -1/C(K,2) * E_(x, y_w, y_l) ~ D [ log sigmoid( r(x, y_w) - r(x, y_l) ) ]

For each prompt ``x`` a labeler ranked K responses; every pair ``(y_w, y_l)`` in which ``y_w``
is ranked above ``y_l`` is a comparison, and all comparisons of one prompt form ONE batch
element: the K responses are scored once each and the C(K,2) log-sigmoid terms are built from
those K scores. The batch loss is the mean over prompts of each prompt's normalised sum.

Inputs are flat over the responses of a batch, so K may differ between prompts:

- ``scores [N]``: ``r(x, y)`` of every response of the batch;
- ``prompt_index [N]``: which prompt (0..P-1) each response answers;
- ``ranks [N]``: the labeler's rank of each response within its prompt (0 = best, equal = tie).

Choices the paper leaves open:

- **ties** give no comparison (method.md: "ties are dropped");
- **the normaliser** of a prompt: ``"comparisons"`` (default) divides by the number of
  comparisons the prompt actually has, so that every prompt weighs the same in the batch
  mean, ties or not; ``"choose_k"`` divides by C(K,2) as Eq. 1 is written, so a prompt with
  ties weighs less. Without ties the two are identical.

The vectorised form builds an ``[N, N]`` "i beats j" mask; :func:`naive_ranking_loss` in
``tests/test_ranking_loss.py`` is the double loop over pairs it replaces.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Normalizer = Literal["comparisons", "choose_k"]
NORMALIZERS = ("comparisons", "choose_k")


def comparison_mask(prompt_index: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """``[N, N]`` bool: True where response i is ranked strictly above response j of the same prompt.

    >>> comparison_mask(torch.tensor([0, 0, 0, 1, 1]), torch.tensor([1, 0, 1, 0, 1])).int()
    tensor([[0, 0, 0, 0, 0],
            [1, 0, 1, 0, 0],
            [0, 0, 0, 0, 0],
            [0, 0, 0, 0, 1],
            [0, 0, 0, 0, 0]], dtype=torch.int32)
    """
    same = prompt_index[:, None] == prompt_index[None, :]  # [N, N]
    return same & (ranks[:, None] < ranks[None, :])  # [N, N]


def ranking_loss(
    scores: torch.Tensor,
    prompt_index: torch.Tensor,
    ranks: torch.Tensor,
    num_prompts: int | None = None,
    normalizer: Normalizer = "comparisons",
) -> torch.Tensor:
    """Eq. 1 per prompt: ``[P]`` losses, ``-1/n_p * sum_(w beats l) log sigmoid(r_w - r_l)``.

    ``scores [N]`` (any float dtype; computed in fp32), ``prompt_index [N]`` in 0..P-1,
    ``ranks [N]``. ``n_p`` is the prompt's number of comparisons (``normalizer="comparisons"``)
    or C(K_p, 2) (``"choose_k"``). A prompt with no comparison (all tied) gets loss 0. The batch
    loss of the paper is ``ranking_loss(...).mean()``.
    """
    if normalizer not in NORMALIZERS:
        raise ValueError(f"normalizer must be one of {NORMALIZERS}, got {normalizer!r}")
    num_prompts = int(prompt_index.max()) + 1 if num_prompts is None else num_prompts
    scores = scores.float()
    beats = comparison_mask(prompt_index, ranks)  # [N, N]
    margins = scores[:, None] - scores[None, :]  # [N, N]: r_i - r_j
    terms = torch.where(beats, -F.logsigmoid(margins), torch.zeros_like(margins))  # [N, N]
    per_prompt = torch.zeros(num_prompts, dtype=scores.dtype, device=scores.device)
    per_prompt = per_prompt.index_add(0, prompt_index, terms.sum(1))  # [P]: pairs grouped by winner's prompt
    return per_prompt / _normaliser(beats, prompt_index, num_prompts, normalizer).clamp(min=1)


def ranking_accuracy(
    scores: torch.Tensor, prompt_index: torch.Tensor, ranks: torch.Tensor, num_prompts: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per prompt, ``(correct [P], comparisons [P])``: comparisons ordered right by the scores.

    A comparison counts as correct when the winner scores strictly higher, and half when the
    two scores are equal (so a constant model scores 50%).
    """
    num_prompts = int(prompt_index.max()) + 1 if num_prompts is None else num_prompts
    beats = comparison_mask(prompt_index, ranks)  # [N, N]
    margins = scores.float()[:, None] - scores.float()[None, :]  # [N, N]
    right = torch.where(beats, (margins > 0).float() + 0.5 * (margins == 0).float(), torch.zeros_like(margins))
    zeros = torch.zeros(num_prompts, device=scores.device)
    correct = zeros.index_add(0, prompt_index, right.sum(1))  # [P]
    total = zeros.index_add(0, prompt_index, beats.sum(1).float())  # [P]
    return correct, total


def _normaliser(beats: torch.Tensor, prompt_index: torch.Tensor, num_prompts: int, normalizer: str) -> torch.Tensor:
    """``[P]``: comparisons per prompt, or C(K, 2) per prompt."""
    zeros = torch.zeros(num_prompts, device=prompt_index.device)
    if normalizer == "comparisons":
        return zeros.index_add(0, prompt_index, beats.sum(1).float())
    k = zeros.index_add(0, prompt_index, torch.ones_like(prompt_index, dtype=torch.float))
    return k * (k - 1) / 2
