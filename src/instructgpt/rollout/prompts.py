"""The PPO prompt set (method.md: "PPO (prompts only, no labels)") and the order it is visited in.

A prompt file is JSONL of ``prompts`` records (the ``text`` field) or of ``demonstrations``
records (the ``prompt`` field; the response is ignored), so an SFT file can serve as a prompt
pool. Prompts are rendered exactly as in SFT (:func:`instructgpt.data.render.render_prompt`);
prompts longer than ``max_prompt_tokens`` are dropped and counted. Iteration ``i`` takes the
``i``-th batch of a seeded epoch-by-epoch permutation (:class:`~instructgpt.training.batching.BatchPlan`),
so the data position after a restart is just the iteration number.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from instructgpt.data.render import render_prompt


def read_prompts(paths: Sequence[Path]) -> list[Any]:
    """Prompts (text or conversations) of prompt or demonstration JSONL files, in file order."""
    from instructgpt.data.jsonl import DataError, Problem, read_records
    from instructgpt.data.schemas import detect_kind

    prompts: list[Any] = []
    for path in paths:
        kind = _first_kind(Path(path), detect_kind)
        if kind not in ("prompts", "demonstrations"):
            raise DataError(
                [
                    Problem(
                        str(path),
                        1,
                        "-",
                        f"expected prompts or demonstrations records, found {kind or 'unknown records'}",
                    )
                ]
            )
        records = read_records(path, kind)
        prompts += [r.text if kind == "prompts" else _plain(r.prompt) for r in records]
    return prompts


def render_prompts(
    tokenizer: Any, prompts: Sequence[Any], template: str, separator: str, max_prompt_tokens: int
) -> tuple[list[list[int]], list[int]]:
    """``(token ids, original indices)`` of the prompts no longer than ``max_prompt_tokens``."""
    ids, kept = [], []
    for index, prompt in enumerate(prompts):
        rendered = render_prompt(tokenizer, prompt, template, separator)
        if len(rendered) <= max_prompt_tokens:
            ids.append(rendered)
            kept.append(index)
    return ids, kept


def _plain(prompt: Any) -> Any:
    return prompt if isinstance(prompt, str) else [m.model_dump() for m in prompt]


def _first_kind(path: Path, detect_kind) -> str | None:
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                try:
                    return detect_kind(json.loads(line))
                except json.JSONDecodeError:
                    return None
    return None
