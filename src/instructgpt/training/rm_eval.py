"""Reward-model evaluation: accuracy and log loss per K, SFT selection (cross-validation: :mod:`.rm_cv`).

- :func:`evaluate_groups`: the paper's validation metrics (method.md step 2, "Report"):
  accuracy = the fraction of comparisons (winner, loser) the scores order correctly (a tie in
  score counts half); log loss = the mean over comparisons of ``-log sigmoid(r_w - r_l)``;
  and the Eq. 1 loss (mean over prompts of each prompt's mean). Reported overall and per K.
- :func:`select_sft_checkpoint`: the paper picks the final SFT checkpoint by the mean RM score
  of its samples on validation prompts: each saved checkpoint samples (greedy by default)
  the same prompts and the RM scores them.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from instructgpt.losses.ranking import ranking_accuracy, ranking_loss
from instructgpt.training.batching import shard_and_split
from instructgpt.training.rm_data import RankedGroup, flatten, score_sequences

_FIELDS = ("prompts", "comparisons", "correct", "log_loss_sum", "loss_sum")


@torch.no_grad()
def evaluate_groups(
    reward_model: Any,
    groups: Sequence[RankedGroup],
    pad_id: int,
    micro_batch_prompts: int = 16,
    micro_batch_tokens: int = 8192,
    packing: bool = True,
    row_tokens: int = 1024,
    autocast: torch.dtype | None = None,
    accelerator: Any = None,
) -> dict[str, Any]:
    """``{"overall": metrics, "per_k": {K: metrics}}``; metrics: accuracy, log_loss, loss, prompts, comparisons.

    Each process scores its share of the groups; the sums are reduced over processes. Under FSDP (a sharded
    ``reward_model``) every process runs as many forwards as the busiest (repeats that are not counted).
    """
    from instructgpt.training.sharding import even_micro_batches, is_sharded

    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    reward_model.eval()
    max_k = max((g.k for g in groups), default=2)
    sums = torch.zeros(max_k + 1, len(_FIELDS), dtype=torch.float64)  # [K, fields]
    lengths = [g.tokens for g in groups]

    def split(r: int) -> list[list[int]]:
        mine = list(range(r, len(groups), world))
        return shard_and_split(mine, lengths, 0, 1, micro_batch_prompts, micro_batch_tokens, True) if mine else []

    for chunk, counted in even_micro_batches(split, rank, world, is_sharded(reward_model), filler=[0]):
        chosen = [groups[i] for i in chunk]
        sequences, prompt_index, ranks = flatten(chosen)
        scores = score_sequences(reward_model, sequences, pad_id, packing, row_tokens, autocast).cpu()
        if not counted:  # FSDP's repeat, run only to keep the processes' collectives in step
            continue
        losses = ranking_loss(scores, prompt_index, ranks, len(chosen), "comparisons")  # [P]: mean per comparison
        correct, total = ranking_accuracy(scores, prompt_index, ranks, len(chosen))
        for p, group in enumerate(chosen):
            row = torch.tensor([1.0, total[p], correct[p], losses[p] * total[p], losses[p]], dtype=torch.float64)
            sums[group.k] += row
    if accelerator is not None:
        sums = accelerator.reduce(sums.to(accelerator.device), "sum").cpu()
    per_k = {k: _metrics(sums[k]) for k in range(max_k + 1) if sums[k, 0] > 0}
    return {"overall": _metrics(sums.sum(0)), "per_k": per_k}


def _metrics(row: torch.Tensor) -> dict[str, float]:
    prompts, comparisons, correct, log_loss_sum, loss_sum = row.tolist()
    return {
        "accuracy": correct / max(comparisons, 1),
        "log_loss": log_loss_sum / max(comparisons, 1),
        "loss": loss_sum / max(prompts, 1),
        "prompts": int(prompts),
        "comparisons": int(comparisons),
    }


def format_report(report: dict[str, Any]) -> str:
    """A table: one row per K, then the overall row."""
    lines = [f"{'K':>7}  {'prompts':>7}  {'pairs':>7}  {'accuracy':>8}  {'log loss':>8}  {'Eq.1 loss':>9}"]
    rows = [(str(k), m) for k, m in sorted(report["per_k"].items())] + [("overall", report["overall"])]
    for name, m in rows:
        lines.append(
            f"{name:>7}  {m['prompts']:>7}  {m['comparisons']:>7}  {m['accuracy']:>8.3f}  {m['log_loss']:>8.3f}  "
            f"{m['loss']:>9.3f}"
        )
    return "\n".join(lines)


def select_sft_checkpoint(
    reward_model: Any,
    rm_tokenizer: Any,
    checkpoints: Sequence[Path],
    prompts: Sequence[Any],
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    template: str = "auto",
    seed: int = 0,
    autocast: torch.dtype | None = None,
    batch_size: int = 8,
) -> list[dict[str, Any]]:
    """Each SFT checkpoint's mean RM score on ``prompts``, in checkpoint order (method.md step 1).

    ``autocast`` (e.g. bf16) runs sampling and scoring under that autocast dtype; ``batch_size`` prompts are decoded
    together (not a method choice: on a CPU a larger batch decodes several times more tokens per second).
    """
    from instructgpt.models.generate import generate
    from instructgpt.models.loader import load_model
    from instructgpt.models.reward import score_texts

    results = []
    for folder in checkpoints:
        policy, tokenizer = load_model(str(folder))
        responses = generate(
            policy,
            tokenizer,
            list(prompts),
            max_new_tokens,
            temperature,
            template,
            batch_size=batch_size,
            seed=seed,
            autocast=autocast,
        )
        del policy
        scores = score_texts(
            reward_model,
            rm_tokenizer,
            prompts,
            [r if r.strip() else " " for r in responses],
            template,
            autocast=autocast,
        )
        results.append({"checkpoint": str(folder), "mean_score": statistics.fmean(scores), "scores": scores})
    return results
