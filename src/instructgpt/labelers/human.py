"""People as labelers, through the records the labeling application exports.

The labeling application (``instructgpt.labeling``) writes what people did as JSONL in the
project's formats (``docs/data-formats.md``): rankings (with ties, Likert ratings and Table 3
flags), comparisons and demonstrations. ``read_exports`` reads such files (the kind detected
per file, every problem reported as ``file:line: field: reason``); ``human_labelers`` gives
one ``HumanLabeler`` per labeler id found in them.

A person labels asynchronously, so ``HumanLabeler`` answers from what has been exported: it
looks an item up by prompt text and response texts (in any order; the ranking it returns is
reordered to the order asked). An item the person has not labelled raises ``LabelerError``,
and ``pending`` lists what is missing so it can be sent to the application.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from instructgpt.data.jsonl import DataError, Problem, iter_objects, read_records
from instructgpt.data.schemas import Comparison, Demonstration, Ranking, detect_kind, prompt_text
from instructgpt.labelers.base import Labeler, LabelerError, PromptInput

LabelRecord = Ranking | Comparison | Demonstration


def read_exports(paths: Iterable[str | os.PathLike]) -> list[LabelRecord]:
    """Every ranking, comparison and demonstration in ``paths``; raises DataError listing
    every problem of every file (a file of prompts, or of unknown kind, is a problem)."""
    records: list[LabelRecord] = []
    problems: list[Problem] = []
    for path in paths:
        first = next((item for item in iter_objects(path) if not isinstance(item, Problem)), None)
        kind = detect_kind(first[1]) if first else None
        if kind not in ("rankings", "comparisons", "demonstrations"):
            where = first[0] if first else 0
            problems.append(
                Problem(
                    str(path),
                    where,
                    "-",
                    f"expected rankings, comparisons or demonstrations, found {kind or 'no record of a known kind'}",
                )
            )
            continue
        try:
            records += read_records(path, kind)
        except DataError as e:
            problems += e.problems
    if problems:
        raise DataError(problems)
    return records


def _key(prompt: PromptInput, responses: Iterable[str]) -> tuple[str, frozenset[str]]:
    return prompt_text(prompt), frozenset(responses)


@dataclass
class HumanLabeler(Labeler):
    """One person's exported labels, answering the ``Labeler`` calls."""

    labeler_id: str
    rankings: dict = field(default_factory=dict)
    comparisons: dict = field(default_factory=dict)
    demonstrations: dict = field(default_factory=dict)

    def add(self, record: LabelRecord) -> None:
        """Files ``record`` (a later label of the same item replaces an earlier one)."""
        if isinstance(record, Ranking):
            self.rankings[_key(record.prompt, record.responses)] = record
        elif isinstance(record, Comparison):
            self.comparisons[_key(record.prompt, (record.response_a, record.response_b))] = record
        else:
            self.demonstrations[prompt_text(record.prompt)] = record

    def rank(self, prompt: PromptInput, responses: Sequence[str]) -> Ranking:
        found = self.rankings.get(_key(prompt, responses))
        if found is None:
            raise LabelerError(
                f"{self.labeler_id} has not ranked these {len(responses)} responses to {prompt_text(prompt)[:60]!r}"
            )
        order = [found.responses.index(r) for r in responses]
        pick = lambda values: None if values is None else [values[i] for i in order]  # noqa: E731
        return found.model_copy(
            update={
                "responses": list(responses),
                "ranks": pick(found.ranks),
                "likert": pick(found.likert),
                "metadata": pick(found.metadata),
            }
        )

    def compare(self, prompt: PromptInput, response_a: str, response_b: str) -> Comparison:
        found = self.comparisons.get(_key(prompt, (response_a, response_b)))
        if found is not None and found.response_a != response_a:  # the person saw them swapped
            swapped = {"a": "b", "b": "a", "tie": "tie"}[found.preferred]
            found = found.model_copy(
                update={
                    "response_a": found.response_b,
                    "response_b": found.response_a,
                    "model_a": found.model_b,
                    "model_b": found.model_a,
                    "preferred": swapped,
                }
            )
        if found is None:
            raise LabelerError(f"{self.labeler_id} has not compared these responses to {prompt_text(prompt)[:60]!r}")
        return found

    def demonstrate(self, prompt: PromptInput) -> Demonstration | None:
        return self.demonstrations.get(prompt_text(prompt))

    def pending(self, items: Iterable[tuple[PromptInput, Sequence[str]]]) -> list[tuple[PromptInput, Sequence[str]]]:
        """The ranking items this person has not labelled yet."""
        return [(p, rs) for p, rs in items if _key(p, rs) not in self.rankings]


def human_labelers(records: Iterable[LabelRecord]) -> dict[str, HumanLabeler]:
    """One ``HumanLabeler`` per labeler id in ``records`` (e.g. from ``read_exports``)."""
    labelers: dict[str, HumanLabeler] = {}
    for record in records:
        labelers.setdefault(record.labeler_id, HumanLabeler(record.labeler_id)).add(record)
    return labelers
