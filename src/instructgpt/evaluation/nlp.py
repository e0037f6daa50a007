"""The alignment tax on public NLP tasks (method.md; paper section 4.3, appendix D).

The contexts and references are the ones bundled with the paper's samples
(``instructgpt-samples/automatic-eval-samples``): 100 DROP, 100 SQuADv2 and 100 WMT15 Fr->En
items, zero-shot contexts exactly as the paper fed them. Generation is greedy and cut at the
first newline; DROP and SQuADv2 are scored by token F1 (best over the ``|``-separated
references), Fr->En by sacrebleu corpus BLEU. :func:`paper_reference` scores the paper's own
samples with the same code, so the report can place our models beside GPT-3 / SFT / PPO /
PPO-ptx at 1.3B, 6B and 175B.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from instructgpt.evaluation.metrics import corpus_bleu, first_line, max_f1, mean, normalize_answer, normalize_drop

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


def evaluate_nlp(model: Any, tokenizer: Any, items: dict[str, Sequence[Item]], batch_size: int = 8,
                 max_new_tokens: int = 32, template: str = "auto") -> dict:
    """Zero-shot score per task, with a few predictions for the report."""
    from instructgpt.evaluation.scoring import complete

    out = {}
    for task, task_items in items.items():
        predictions = complete(model, tokenizer, [i.context for i in task_items], max_new_tokens, batch_size, template)
        out[task] = {"n": len(task_items), METRIC[task]: score(task, predictions, task_items),
                     "samples": [{"reference": i.references[0], "prediction": p} for i, p in zip(task_items[:3], predictions[:3])]}
    return out


def paper_reference(root: Path) -> dict[str, dict[str, float]]:
    """The same scores on the paper's own zero-shot samples, per model type (e.g. ``ppo-ptx-175b``)."""
    table: dict[str, dict[str, float]] = {}
    for task in TASKS:
        rows = _rows(root, task)
        for model_type in dict.fromkeys(r["model_type"] for r in rows):
            mine = [r for r in rows if r["model_type"] == model_type]
            items = [Item(r["context"], _references(task, r["ref_text"])) for r in mine]
            table.setdefault(model_type, {})[task] = score(task, [first_line(r["sample"]) for r in mine], items)
    return table
