"""Form fields -> a checked answer, and answer -> training record.

The forms (see the task templates) send:

- demonstration: ``response``;
- ranking: ``rank_i`` for output i (``0`` = still "to be ranked", ``1`` .. ``K`` = the
  board's columns "Rank 1 (best)" .. "Rank K (worst)"; outputs in one column tie), and when
  the project asks for ratings ``likert_i`` (1-7) and ``flag_i`` (repeated, the names of the
  Table 3 questions answered yes; the others are answered no); ``notes``;
- comparison: ``preferred`` = ``1``, ``2`` (the output shown first / second) or ``tie``;
  ``notes``.

Text keeps LF line breaks only (``to_lf``: browsers send CRLF).

Board columns become dense ranks (columns used 1, 3, 3 -> ranks 0, 1, 1): an empty column in
between means nothing. A ranking needs every output placed and at least two columns used,
since an all-tie ranking teaches the reward model nothing (``Ranking`` rejects it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ValidationError

from instructgpt.data.schemas import METADATA_FLAGS, Comparison, Demonstration, Ranking
from instructgpt.labeling.security import LIMITS, to_lf

Form = Mapping[str, Sequence[str]]
"""Each field name -> its values, in the order sent."""


class AnswerError(ValueError):
    """The form cannot be stored; the message says what to fix."""


def _one(form: Form, name: str, limit: int, required: bool = True) -> str:
    values = form.get(name) or [""]
    if len(values) > 1:
        raise AnswerError(f"{name}: sent {len(values)} times")
    value = to_lf(values[0])
    if len(value) > limit:
        raise AnswerError(f"{name}: longer than {limit} characters")
    if required and not value.strip():
        raise AnswerError(f"{name}: required")
    return value


def _int(form: Form, name: str, low: int, high: int) -> int:
    text = _one(form, name, 3)
    if not text.isdigit() or not low <= int(text) <= high:
        raise AnswerError(f"{name}: must be a whole number from {low} to {high}")
    return int(text)


def dense_ranks(columns: Sequence[int]) -> list[int]:
    """Board columns (1 = best) -> ranks 0..m-1 with the same order and ties.

    Example: ``[3, 1, 3]`` -> ``[1, 0, 1]``.
    """
    place = {column: rank for rank, column in enumerate(sorted(set(columns)))}
    return [place[c] for c in columns]


def parse_answer(kind: str, form: Form, k: int, ask_ratings: bool) -> dict:
    """The answer to store, as a JSON-ready dict; raises AnswerError on bad input."""
    notes = _one(form, "notes", LIMITS["notes"], required=False).strip() or None
    if kind == "demonstration":
        return {"response": _one(form, "response", LIMITS["response"]).strip()}
    if kind == "comparison":
        preferred = _one(form, "preferred", 3)
        if preferred not in ("1", "2", "tie"):
            raise AnswerError("preferred: choose output 1, output 2 or a tie")
        return {"preferred": preferred, "notes": notes}
    columns = [_int(form, f"rank_{i}", 0, k) for i in range(k)]
    unranked = [chr(65 + i) for i, c in enumerate(columns) if c == 0]
    if unranked:
        raise AnswerError(f"rank: output(s) {', '.join(unranked)} still to be ranked")
    if len(set(columns)) < 2:
        raise AnswerError("rank: all outputs tie; use at least two rank columns")
    answer = {"ranks": dense_ranks(columns), "likert": None, "metadata": None, "notes": notes}
    if ask_ratings:
        answer["likert"] = [_int(form, f"likert_{i}", 1, 7) for i in range(k)]
        answer["metadata"] = [_flags(form.get(f"flag_{i}") or []) for i in range(k)]
    return answer


def _flags(yes: Sequence[str]) -> dict[str, bool]:
    unknown = set(yes) - set(METADATA_FLAGS)
    if unknown:
        raise AnswerError(f"flag: unknown question {sorted(unknown)[0][:40]!r}")
    return {flag: flag in yes for flag in METADATA_FLAGS}


def to_record(
    kind: str,
    prompt: str,
    prompt_id: str,
    outputs: Sequence[tuple[str, str | None]],
    swap: bool,
    answer: dict,
    labeler: str,
    source: str,
) -> BaseModel:
    """The training record of one answer; ``outputs`` are ``(text, model)`` by position.

    Comparisons keep the stored order: ``response_a`` is output 0 whatever the labeler saw
    first (``swap`` True: output 1 was shown first), so ``preferred`` is translated back.
    Raises AnswerError when the record does not validate.
    """
    try:
        if kind == "demonstration":
            return Demonstration(
                prompt=prompt, response=answer["response"], labeler_id=labeler, prompt_id=prompt_id, source=source
            )
        if kind == "ranking":
            return Ranking(
                prompt=prompt,
                responses=[text for text, _ in outputs],
                ranks=answer["ranks"],
                labeler_id=labeler,
                prompt_id=prompt_id,
                likert=answer["likert"],
                metadata=answer["metadata"],
                notes=answer["notes"],
            )
        shown = {"1": "b" if swap else "a", "2": "a" if swap else "b", "tie": "tie"}
        (text_a, model_a), (text_b, model_b) = outputs
        return Comparison(
            prompt=prompt,
            response_a=text_a,
            response_b=text_b,
            preferred=shown[answer["preferred"]],
            labeler_id=labeler,
            model_a=model_a,
            model_b=model_b,
            prompt_id=prompt_id,
            notes=answer["notes"],
        )
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "-"
        raise AnswerError(f"{where}: {first['msg']}") from None
