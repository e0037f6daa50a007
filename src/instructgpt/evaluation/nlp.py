"""The alignment tax on public NLP tasks (method.md; paper section 4.3, appendix D).

The contexts and references are the ones bundled with the paper's samples
(``instructgpt-samples/automatic-eval-samples``): 100 DROP, 100 SQuADv2 and 100 WMT15 Fr->En
items, exactly as the paper fed them zero-shot. Generation is greedy and cut at the first
newline; DROP and SQuADv2 are scored by token F1 (best over the ``|``-separated references),
DROP also by the official DROP F1 (``f1_official``, see :mod:`instructgpt.evaluation.metrics`),
Fr->En by sacrebleu corpus BLEU, each with a seeded percentile bootstrap 95% interval over items
(BLEU resampled through per-sentence statistics).

Zero-shot and few-shot (:data:`PROMPTINGS`, ``--nlp-prompting``). The paper reports both; its
files hold the same bare context for both prompt types (its few-shot demonstrations were not
released), so the few-shot context is built here (:func:`fewshot_items`): ``shots``
demonstrations, each another bundled item of the same task followed by a space and its first
reference, joined by :data:`SHOT_SEPARATOR`, before the query (appendix D: "few-shot examples use
the same format as the final query"). Choices the paper leaves open: the number of shots
(``--nlp-shots``, default 3: GPT-3 used 16-64, which costs a small model on a CPU far more for
little gain), which items (drawn without replacement from the task's other 99 items, by a
generator seeded per seed, task and query, so a query's demonstrations do not depend on which
other queries run), and the separator (a blank line, as in GPT-3's few-shot prompts). Few-shot
results are keyed ``<task>_fewshot`` (``drop_fewshot``...) beside the zero-shot ``<task>``.

:func:`paper_reference` scores the paper's own samples, zero-shot and few-shot, with the same
code, so the report can place our models beside GPT-3 / SFT / PPO / PPO-ptx at 1.3B, 6B and 175B.
"""

from __future__ import annotations

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
PROMPTINGS = {"zeroshot": "", "fewshot": "_fewshot"}
"""Prompting (the samples' ``prompt_type``) -> the suffix of its result keys."""
SHOT_SEPARATOR = "\n\n"
"""Between demonstrations, and between the last one and the query."""


@dataclass(frozen=True)
class Item:
    context: str
    references: list[str]


def task_key(task: str, prompting: str) -> str:
    """The result key of ``task`` under ``prompting``: ``drop``, ``drop_fewshot``."""
    return task + PROMPTINGS[prompting]


def split_key(key: str) -> tuple[str, str]:
    """``(task, prompting)`` of a result key (the inverse of :func:`task_key`)."""
    for prompting, suffix in PROMPTINGS.items():
        if suffix and key.endswith(suffix):
            return key[: -len(suffix)], prompting
    return key, "zeroshot"


def _rows(root: Path, task: str, prompting: str = "zeroshot") -> list[dict]:
    """The samples file's rows of one prompt type; a row of an unknown prompt type is an error naming its line."""
    from instructgpt.data.jsonl import DataError, Problem, iter_csv

    path = root / "instructgpt-samples" / "automatic-eval-samples" / TASKS[task]
    rows, problems = [], []
    for line, row in iter_csv(path):
        if row.get("prompt_type") not in PROMPTINGS:
            problems.append(Problem(str(path), line, "prompt_type", f"expected one of {list(PROMPTINGS)}"))
        elif row["prompt_type"] == prompting:
            rows.append(row)
    if problems:
        raise DataError(problems)
    return rows


def _references(task: str, ref_text: str) -> list[str]:
    return [ref_text] if task == "fr_en" else ref_text.split("|")


def load_items(root: Path, task: str) -> list[Item]:
    """The task's distinct zero-shot contexts with their references, in file order."""
    seen: dict[str, Item] = {}
    for row in _rows(root, task):
        seen.setdefault(row["context"], Item(row["context"], _references(task, row["ref_text"])))
    return list(seen.values())


def fewshot_items(
    task: str, items: Sequence[Item], pool: Sequence[Item], shots: int, seed: int, separator: str = SHOT_SEPARATOR
) -> list[Item]:
    """``items`` with ``shots`` demonstrations before each context: other items of ``pool`` (never
    the query itself), each as its context, a space and its first reference.

    Example (Fr->En, one shot)::

        French: Bonjour.
        English: Hello.

        French: Merci.
        English:
    """
    out = []
    for item in items:
        others = [d for d in pool if d.context != item.context]
        if shots > len(others):
            raise ValueError(f"{task}: {shots} shots asked for, but only {len(others)} other items to draw from")
        rng = named_rng(seed, f"nlp-shots/{task}/{item.context}")
        picked = [others[i] for i in rng.choice(len(others), size=shots, replace=False)]
        demonstrations = [f"{d.context} {d.references[0]}" for d in picked]
        out.append(Item(separator.join([*demonstrations, item.context]), item.references))
    return out


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
    """Score per result key (``drop``, ``drop_fewshot``, ...: :func:`task_key`) with its bootstrap
    interval (a generator per ``seed`` and key), the per-item values for paired comparisons, and a
    few predictions for the report."""
    from instructgpt.evaluation.scoring import complete

    out = {}
    for key, task_items in items.items():
        task = split_key(key)[0]
        predictions = complete(model, tokenizer, [i.context for i in task_items], max_new_tokens, batch_size, template)
        out[key] = {
            **summarise(task, predictions, task_items, named_rng(seed, f"nlp-bootstrap-{key}")),
            "samples": [
                {"reference": i.references[0], "prediction": p} for i, p in zip(task_items[:3], predictions[:3])
            ],
        }
    return out


def _paper_samples(root: Path):
    """(model type, result key, first-line predictions, items) of the paper's samples, zero-shot and few-shot."""
    for task in TASKS:
        for prompting in PROMPTINGS:
            rows = _rows(root, task, prompting)
            for model_type in dict.fromkeys(r["model_type"] for r in rows):
                mine = [r for r in rows if r["model_type"] == model_type]
                yield (
                    model_type,
                    task_key(task, prompting),
                    [first_line(r["sample"]) for r in mine],
                    [Item(r["context"], _references(task, r["ref_text"])) for r in mine],
                )


def paper_reference(root: Path) -> dict[str, dict[str, float]]:
    """The same scores on the paper's own samples, per model type (e.g. ``ppo-ptx-175b``) and result
    key (``drop``, ``drop_fewshot``, ...); ``drop_official`` (``drop_official_fewshot``) is the official DROP F1."""
    table: dict[str, dict[str, float]] = {}
    for model_type, key, predictions, items in _paper_samples(root):
        task, prompting = split_key(key)
        table.setdefault(model_type, {})[key] = score(task, predictions, items)
        if task == "drop":
            table[model_type][task_key("drop_official", prompting)] = 100 * mean(
                max_drop_f1(p, i.references) for p, i in zip(predictions, items)
            )
    return table


def paper_reference_intervals(root: Path, seed: int = 0, draws: int = 2000) -> dict[str, dict[str, dict]]:
    """``{model type: {key: {"n", "ci"}}}``: the n and bootstrap 95% interval of each :func:`paper_reference` score."""
    table: dict[str, dict[str, dict]] = {}
    for model_type, key, predictions, items in _paper_samples(root):
        task, prompting = split_key(key)
        summary = summarise(task, predictions, items, named_rng(seed, f"nlp-paper-{model_type}-{key}"), draws)
        table.setdefault(model_type, {})[key] = {"n": summary["n"], "ci": summary[f"{METRIC[task]}_ci"]}
        if task == "drop":
            table[model_type][task_key("drop_official", prompting)] = {
                "n": summary["n"],
                "ci": summary["f1_official_ci"],
            }
    return table
