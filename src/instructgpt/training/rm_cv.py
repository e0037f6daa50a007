"""Labeler-group cross-validation of the reward model (paper section 4.1).

The generalisation check of section 4.1. Labelers are dealt into G
groups (shuffled by the seed); for each held-out group, an RM is trained on the other G-1
groups' rankings minus a within-group validation share, then scored on that share
("within") and on the held-out group ("held out"); G folds x seeds runs, mean +- std.
``group_by="prompt"`` groups by prompt instead, for data that names no labelers (the
bundled OpenAssistant rankings all carry ``labeler_id = "oasst"``).
"""

from __future__ import annotations

import json
import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from instructgpt.config import ConfigError
from instructgpt.data.jsonl import write_jsonl_atomic
from instructgpt.data.sources import load_records
from instructgpt.models.reward import load_reward_model, load_reward_weights
from instructgpt.training.rm import build_groups, train_rm
from instructgpt.training.rm_eval import evaluate_groups


def labeler_groups(keys: Sequence[str], num_groups: int, seed: int) -> dict[str, int]:
    """Deal the distinct ``keys`` (labeler ids) into ``num_groups`` groups, shuffled by ``seed``."""
    distinct = sorted(set(keys))
    if len(distinct) < num_groups:
        raise ConfigError(
            f"cv_groups: {len(distinct)} distinct labelers cannot form {num_groups} groups (try group_by='prompt')"
        )
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
    (default: ``load_reward_model(config.model, seed=seed, new_head=True)``). Returns every run and the
    summary ``{"held_out": {mean, std, sem}, "within": {...}}`` of the accuracies.
    """
    if model_factory is None:
        model_factory = lambda seed: load_reward_model(config.model, seed=seed, new_head=True)  # noqa: E731
    records = [r for path in config.data for r in load_records(path, "rankings")]
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
            fold = replace(
                config,
                data=(folder / "train.jsonl",),
                val_data=(folder / "within.jsonl",),
                out_dir=folder,
                seed=seed,
                normalize=False,
                progress=False,
            )
            model, tokenizer = model_factory(seed)
            final = train_rm(fold, model, tokenizer)
            load_reward_weights(model, final)
            run: dict[str, Any] = {"seed": seed, "held_out_group": held, "train_prompts": len(files["train"])}
            for name in ("within", "held_out"):
                groups, _, _ = build_groups(
                    replace(fold, data=(folder / f"{name}.jsonl",), val_data=(), val_fraction=0.0), tokenizer, False
                )
                report = evaluate_groups(
                    model,
                    groups,
                    tokenizer.pad_token_id,
                    fold.micro_batch_prompts,
                    fold.micro_batch_tokens,
                    fold.packing,
                    fold.pack_row_tokens,
                )
                run[name] = report["overall"]
            runs.append(run)
            (folder / "result.json").write_text(json.dumps(run, indent=2) + "\n")
    summary = {name: _spread([r[name]["accuracy"] for r in runs]) for name in ("held_out", "within")}
    return {"groups": num_groups, "seeds": list(seeds), "group_by": group_by, "runs": runs, "summary": summary}


def format_cv(report: dict[str, Any]) -> str:
    s = report["summary"]
    return (
        f"labeler-group cross-validation: {report['groups']} groups (by {report['group_by']}) x "
        f"{len(report['seeds'])} seeds\n"
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
        if record.labeler_id is None:
            raise ConfigError(
                "labeler-group cross-validation needs labeler_id on every ranking, and one has none "
                "(group_by='prompt' groups by prompt instead)"
            )
        return record.labeler_id
    if group_by == "prompt":
        return record.prompt_id or json.dumps(record.model_dump(mode="json")["prompt"])
    raise ValueError(f"group_by must be 'labeler' or 'prompt', got {group_by!r}")
