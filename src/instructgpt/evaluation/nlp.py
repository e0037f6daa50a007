"""The alignment tax on public NLP tasks (method.md; paper section 4.3, appendix D).

The contexts and references are the ones bundled with the paper's samples
(``instructgpt-samples/automatic-eval-samples``): 100 DROP, 100 SQuADv2 and 100 WMT15 Fr->En
items, zero-shot contexts exactly as the paper fed them. Generation is greedy and cut at the
first newline; DROP and SQuADv2 are scored by token F1 (best over the ``|``-separated
references), DROP also by the official DROP F1 (``f1_official``, see
:mod:`instructgpt.evaluation.metrics`), Fr->En by sacrebleu corpus BLEU, each with a seeded
percentile bootstrap 95% interval over items (BLEU resampled through per-sentence statistics).
:func:`paper_reference` scores the paper's own samples with the same code, so the report can
place our models beside GPT-3 / SFT / PPO / PPO-ptx at 1.3B, 6B and 175B.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from instructgpt.evaluation.metrics import (
    bleu_stats,
    bootstrap_ci,
    corpus_bleu,
    first_line,
    max_drop_f1,
    max_f1,
    mean,
    named_rng,
    normalize_answer,
    normalize_drop,
    statistic_of,
)

TASKS = {"drop": "drop_samples.csv", "squadv2": "squadv2_samples.csv", "fr_en": "fr_to_en_samples.csv"}
METRIC = {"drop": "f1", "squadv2": "f1", "fr_en": "bleu"}


@dataclass(frozen=True)
class Item:
    context: str
    references: list[str]


def _rows(root: Path, task: str) -> list[dict]:
    path = root / "instructgpt-samples" / "automatic-eval-samples" / TASKS[task]
    with path.open(encoding="utf-8", newline="") as handle:
        return [r for r in csv.DictReader(handle) if r["prompt_type"] == "zeroshot"]


def _references(task: str, ref_text: str) -> list[str]:
    return [ref_text] if task == "fr_en" else ref_text.split("|")


def load_items(root: Path, task: str) -> list[Item]:
    """The task's distinct zero-shot contexts with their references, in file order."""
    seen: dict[str, Item] = {}
    for row in _rows(root, task):
        seen.setdefault(row["context"], Item(row["context"], _references(task, row["ref_text"])))
    return list(seen.values())


def score(task: str, predictions: Sequence[str], items: Sequence[Item]) -> float:
    """F1 (0-100) for DROP / SQuADv2, BLEU (0-100) for Fr->En."""
    if task == "fr_en":
        return corpus_bleu(predictions, [i.references[0] for i in items])
    normalize = normalize_drop if task == "drop" else normalize_answer
    return 100 * mean(max_f1(p, i.references, normalize) for p, i in zip(predictions, items))


def item_scores(task: str, predictions: Sequence[str], items: Sequence[Item]) -> dict[str, list]:
    """Per-item values the task's scores are statistics of: ``{"f1": [n]}`` (0-100, the score is
    their mean) for SQuADv2, and ``"f1_official"`` beside it for DROP, ``{"bleu_stats": [n, 10]}``
    (corpus BLEU of their sums) for Fr->En."""
    if task == "fr_en":
        return {"bleu_stats": bleu_stats(predictions, [i.references[0] for i in items]).astype(int).tolist()}
    normalize = normalize_drop if task == "drop" else normalize_answer
    out = {"f1": [100 * max_f1(p, i.references, normalize) for p, i in zip(predictions, items)]}
    if task == "drop":
        out["f1_official"] = [100 * max_drop_f1(p, i.references) for p, i in zip(predictions, items)]
    return out


def summarise(
    task: str, predictions: Sequence[str], items: Sequence[Item], rng: np.random.Generator, draws: int = 2000
) -> dict:
    """``{"n", <metric>, "<metric>_ci", ..., "per_item"}``: each score (``f1``, and ``f1_official``
    for DROP; ``bleu``) and its percentile bootstrap 95% interval over items (seeded by ``rng``)."""
    per_item = item_scores(task, predictions, items)
    out: dict = {"n": len(items)}
    for key, values in per_item.items():  # the task's main metric first: its interval is drawn first
        metric = METRIC[task] if key == "bleu_stats" else key
        out[metric] = score(task, predictions, items) if key == "bleu_stats" else mean(values)
        out[f"{metric}_ci"] = bootstrap_ci(statistic_of(key), [np.asarray(values)], rng, draws)
    return {**out, "per_item": per_item}


def evaluate_nlp(
    model: Any,
    tokenizer: Any,
    items: dict[str, Sequence[Item]],
    batch_size: int = 8,
    max_new_tokens: int = 32,
    template: str = "auto",
    seed: int = 0,
) -> dict:
    """Zero-shot score per task with its bootstrap interval (a generator per ``seed`` and task), the
    per-item values for paired comparisons, and a few predictions for the report."""
    from instructgpt.evaluation.scoring import complete

    out = {}
    for task, task_items in items.items():
        predictions = complete(model, tokenizer, [i.context for i in task_items], max_new_tokens, batch_size, template)
        out[task] = {
            **summarise(task, predictions, task_items, named_rng(seed, f"nlp-bootstrap-{task}")),
            "samples": [
                {"reference": i.references[0], "prediction": p} for i, p in zip(task_items[:3], predictions[:3])
            ],
        }
    return out


def _paper_samples(root: Path):
    """(model type, task, first-line predictions, items) of the paper's zero-shot samples."""
    for task in TASKS:
        rows = _rows(root, task)
        for model_type in dict.fromkeys(r["model_type"] for r in rows):
            mine = [r for r in rows if r["model_type"] == model_type]
            yield (
                model_type,
                task,
                [first_line(r["sample"]) for r in mine],
                [Item(r["context"], _references(task, r["ref_text"])) for r in mine],
            )


def paper_reference(root: Path) -> dict[str, dict[str, float]]:
    """The same scores on the paper's own zero-shot samples, per model type (e.g. ``ppo-ptx-175b``);
    ``drop_official`` is the official DROP F1."""
    table: dict[str, dict[str, float]] = {}
    for model_type, task, predictions, items in _paper_samples(root):
        table.setdefault(model_type, {})[task] = score(task, predictions, items)
        if task == "drop":
            table[model_type]["drop_official"] = 100 * mean(
                max_drop_f1(p, i.references) for p, i in zip(predictions, items)
            )
    return table


def paper_reference_intervals(root: Path, seed: int = 0, draws: int = 2000) -> dict[str, dict[str, dict]]:
    """``{model type: {task: {"n", "ci"}}}``: the n and bootstrap 95% interval of each :func:`paper_reference` score."""
    table: dict[str, dict[str, dict]] = {}
    for model_type, task, predictions, items in _paper_samples(root):
        summary = summarise(task, predictions, items, named_rng(seed, f"nlp-paper-{model_type}-{task}"), draws)
        table.setdefault(model_type, {})[task] = {"n": summary["n"], "ci": summary[f"{METRIC[task]}_ci"]}
        if task == "drop":
            table[model_type]["drop_official"] = {"n": summary["n"], "ci": summary["f1_official_ci"]}
    return table
