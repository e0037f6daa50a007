"""Reward-model evaluation: accuracy and log loss per K, labeler-group cross-validation, SFT selection.

- :func:`evaluate_groups`: the paper's validation metrics (method.md step 2, "Report"):
  accuracy = the fraction of comparisons (winner, loser) the scores order correctly (a tie in
  score counts half); log loss = the mean over comparisons of ``-log sigmoid(r_w - r_l)``;
  and the Eq. 1 loss (mean over prompts of each prompt's mean). Reported overall and per K.
- :func:`cross_validate`: the generalisation check of section 4.1. Labelers are dealt into G
  groups (shuffled by the seed); for each held-out group, an RM is trained on the other G-1
  groups' rankings minus a within-group validation share, then scored on that share
  ("within") and on the held-out group ("held out"); G folds x seeds runs, mean +- std.
  ``group_by="prompt"`` groups by prompt instead, for data that names no labelers (the
  bundled OpenAssistant rankings all carry ``labeler_id = "oasst"``).
- :func:`select_sft_checkpoint`: the paper picks the final SFT checkpoint by the mean RM score
  of its samples on validation prompts: each saved checkpoint samples (greedy by default)
  the same prompts and the RM scores them.
"""

from __future__ import annotations

import json
import math
import random
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

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

    Each process scores its share of the groups; the sums are reduced over processes.
    """
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    reward_model.eval()
    max_k = max((g.k for g in groups), default=2)
    sums = torch.zeros(max_k + 1, len(_FIELDS), dtype=torch.float64)  # [K, fields]
    mine = list(range(rank, len(groups), world))
    lengths = [g.tokens for g in groups]
    for chunk in shard_and_split(mine, lengths, 0, 1, micro_batch_prompts, micro_batch_tokens, True) if mine else []:
        chosen = [groups[i] for i in chunk]
        sequences, prompt_index, ranks = flatten(chosen)
        scores = score_sequences(reward_model, sequences, pad_id, packing, row_tokens, autocast).cpu()
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
        lines.append(f"{name:>7}  {m['prompts']:>7}  {m['comparisons']:>7}  {m['accuracy']:>8.3f}  {m['log_loss']:>8.3f}  {m['loss']:>9.3f}")
    return "\n".join(lines)


def labeler_groups(keys: Sequence[str], num_groups: int, seed: int) -> dict[str, int]:
    """Deal the distinct ``keys`` (labeler ids) into ``num_groups`` groups, shuffled by ``seed``."""
    distinct = sorted(set(keys))
    if len(distinct) < num_groups:
        from instructgpt.config import ConfigError

        raise ConfigError(f"cv_groups: {len(distinct)} distinct labelers cannot form {num_groups} groups (try group_by='prompt')")
    random.Random(seed).shuffle(distinct)
    return {key: i % num_groups for i, key in enumerate(distinct)}


def cross_validate(
    config: Any,
    num_groups: int = 5,
    seeds: Sequence[int] = (0, 1, 2),
    group_by: str = "labeler",
    within_fraction: float = 0.2,
    model_factory: Callable[[int], tuple[Any, Any]] | None = None,
) -> dict[str, Any]:
    """Labeler-group cross-validation (paper section 4.1); runs under ``config.out_dir / 'cv'``.

    ``config`` is an :class:`~instructgpt.training.rm.RMConfig` (its ``data`` are the rankings
    of all groups). ``model_factory(seed)`` gives a fresh ``(reward_model, tokenizer)``
    (default: ``load_reward_model(config.model, seed=seed)``). Returns every run and the
    summary ``{"held_out": {mean, std, sem}, "within": {...}}`` of the accuracies.
    """
    from instructgpt.data.jsonl import read_records, write_jsonl_atomic
    from instructgpt.models.reward import load_reward_model, load_reward_weights
    from instructgpt.training.rm import build_groups, train_rm

    if model_factory is None:
        model_factory = lambda seed: load_reward_model(config.model, seed=seed)  # noqa: E731
    records = [r for path in config.data for r in read_records(path, "rankings")]
    runs = []
    for seed in seeds:
        keys = [_group_key(r, group_by) for r in records]
        assignment = labeler_groups(keys, num_groups, seed)
        for held in range(num_groups):
            folder = Path(config.out_dir) / "cv" / f"seed-{seed}-group-{held}"
            training = [r for r, key in zip(records, keys) if assignment[key] != held]
            order = random.Random(seed * 1000 + held).sample(range(len(training)), len(training))
            cut = max(1, int(len(training) * within_fraction))
            files = {
                "train": [training[i] for i in order[cut:]],
                "within": [training[i] for i in order[:cut]],
                "held_out": [r for r, key in zip(records, keys) if assignment[key] == held],
            }
            for name, chosen in files.items():
                write_jsonl_atomic(folder / f"{name}.jsonl", chosen)
            fold = replace(config, data=(folder / "train.jsonl",), val_data=(folder / "within.jsonl",), out_dir=folder,
                           seed=seed, normalize=False, progress=False)
            model, tokenizer = model_factory(seed)
            final = train_rm(fold, model, tokenizer)
            load_reward_weights(model, final)
            run = {"seed": seed, "held_out_group": held, "train_prompts": len(files["train"])}
            for name in ("within", "held_out"):
                groups, _, _ = build_groups(replace(fold, data=(folder / f"{name}.jsonl",), val_data=(), val_fraction=0.0), tokenizer, False)
                report = evaluate_groups(model, groups, tokenizer.pad_token_id, fold.micro_batch_prompts, fold.micro_batch_tokens,
                                         fold.packing, fold.pack_row_tokens)
                run[name] = report["overall"]
            runs.append(run)
            (folder / "result.json").write_text(json.dumps(run, indent=2) + "\n")
    summary = {name: _spread([r[name]["accuracy"] for r in runs]) for name in ("held_out", "within")}
    return {"groups": num_groups, "seeds": list(seeds), "group_by": group_by, "runs": runs, "summary": summary}


def format_cv(report: dict[str, Any]) -> str:
    s = report["summary"]
    return (
        f"labeler-group cross-validation: {report['groups']} groups (by {report['group_by']}) x {len(report['seeds'])} seeds\n"
        f"  held-out group accuracy : {100 * s['held_out']['mean']:.1f} +- {100 * s['held_out']['std']:.1f}% "
        f"(sem {100 * s['held_out']['sem']:.1f})\n"
        f"  within-group accuracy   : {100 * s['within']['mean']:.1f} +- {100 * s['within']['std']:.1f}% "
        f"(sem {100 * s['within']['sem']:.1f})\n"
        f"  (paper, section 4.1: 69.6 +- 0.9% held out vs 72.4 +- 0.4% within)"
    )


def _spread(values: list[float]) -> dict[str, float]:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "sem": std / math.sqrt(len(values)), "n": len(values)}


def _group_key(record: Any, group_by: str) -> str:
    if group_by == "labeler":
        return record.labeler_id
    if group_by == "prompt":
        return record.prompt_id or json.dumps(record.model_dump(mode="json")["prompt"])
    raise ValueError(f"group_by must be 'labeler' or 'prompt', got {group_by!r}")


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
) -> list[dict[str, Any]]:
    """Each SFT checkpoint's mean RM score on ``prompts``, in checkpoint order (method.md step 1).

    ``autocast`` (e.g. bf16) runs sampling and scoring under that autocast dtype.
    """
    from instructgpt.models.generate import generate
    from instructgpt.models.loader import load_model
    from instructgpt.models.reward import score_texts

    results = []
    for folder in checkpoints:
        policy, tokenizer = load_model(str(folder))
        responses = generate(policy, tokenizer, list(prompts), max_new_tokens, temperature, template, seed=seed, autocast=autocast)
        del policy
        scores = score_texts(reward_model, rm_tokenizer, prompts, [r if r.strip() else " " for r in responses], template, autocast=autocast)
        results.append({"checkpoint": str(folder), "mean_score": statistics.fmean(scores), "scores": scores})
    return results
