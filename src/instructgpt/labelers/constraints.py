"""Explicit constraints in an instruction, and whether a response satisfies them.

The paper's labelers answer "satisfies constraint provided in the instruction" (Table 3) and
the prompt annotation "contains other explicit constraints" (Table 7). The simulated labeler
measures the constraints a rule can read off the instruction:

- ``max_words`` / ``exact_words``: "in 50 words", "in under 100 words", "no more than 20
  words", "exactly 10 words" ("in N words" allows N + 20%, a reader's tolerance);
- ``max_sentences``: "in 3 sentences", "in one sentence", "at most two sentences";
- ``list``: "as a list", "bullet points", "list 5 ..." (N items when a count is given);
- ``json``: "in JSON", "as JSON", "JSON format" (the response, code fences stripped, parses);
- ``forbidden_word``: "without using the word X", "do not use the word X", "don't mention
  X", "avoid the word X".

Anything else ("be funny", "for a 5 year old") is not a measurable constraint here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_NUMBERS = {
    "one": 1,
    "a single": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "fifteen": 15,
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "hundred": 100,
    "a hundred": 100,
    "one hundred": 100,
}
_NUM = r"(\d{1,4}|" + "|".join(sorted(_NUMBERS, key=len, reverse=True)) + ")"
_AT_MOST = r"(?:in under|under|within|at most|no more than|not more than|fewer than|less than|up to|maximum of|max\.?)"

_PATTERNS = {
    "exact_words": re.compile(rf"\bexactly {_NUM} words?\b", re.I),
    "max_words": re.compile(rf"\b(?:{_AT_MOST}|in|using|with) {_NUM} words?\b", re.I),
    "max_sentences": re.compile(rf"\b(?:{_AT_MOST}|in|using|with) {_NUM} sentences?\b", re.I),
    "list": re.compile(
        rf"\b(?:as|in) a (?:numbered |bulleted )?list\b|\bbullet(?:ed)? points?\b|\blist {_NUM}\b"
        rf"|\b{_NUM} bullet",
        re.I,
    ),
    "json": re.compile(r"\b(?:in|as|into|valid|return|output) JSON\b|\bJSON (?:format|object)\b", re.I),
    "forbidden_word": re.compile(
        r"\b(?:without (?:using|mentioning|saying)|do not (?:use|mention|say)|don't (?:use|mention|say)|"
        r"never (?:use|mention|say)|avoid(?: using)?)(?: the word| the term)? [\"'“‘]?([A-Za-z][\w-]*)",
        re.I,
    ),
}
_LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)])\s+\S", re.M)
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")


@dataclass(frozen=True)
class Constraint:
    """One measurable constraint of an instruction."""

    kind: str
    """``max_words``, ``exact_words``, ``max_sentences``, ``list``, ``json`` or ``forbidden_word``."""
    value: int | str | None = None
    """The number of words / sentences / items, or the forbidden word; None when not given."""


def _number(text: str) -> int:
    return int(text) if text.isdigit() else _NUMBERS[text.lower()]


def parse_constraints(instruction: str) -> list[Constraint]:
    """The measurable constraints in ``instruction`` (empty when it states none)."""
    found: list[Constraint] = []
    exact = _PATTERNS["exact_words"].search(instruction)
    if exact:
        found.append(Constraint("exact_words", _number(exact.group(1))))
    else:
        words = _PATTERNS["max_words"].search(instruction)
        if words:
            found.append(Constraint("max_words", _number(words.group(1))))
    sentences = _PATTERNS["max_sentences"].search(instruction)
    if sentences:
        found.append(Constraint("max_sentences", _number(sentences.group(1))))
    listed = _PATTERNS["list"].search(instruction)
    if listed:
        count = next((g for g in listed.groups() if g), None)
        found.append(Constraint("list", _number(count) if count else None))
    if _PATTERNS["json"].search(instruction):
        found.append(Constraint("json"))
    for m in _PATTERNS["forbidden_word"].finditer(instruction):
        found.append(Constraint("forbidden_word", m.group(1).lower()))
    return found


def count_words(text: str) -> int:
    return len(text.split())


def count_sentences(text: str) -> int:
    return max(1, len(_SENTENCE_END.findall(text.strip()))) if text.strip() else 0


def _strip_fences(text: str) -> str:
    text = text.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text.strip()


def satisfies(constraint: Constraint, response: str) -> bool:
    """Whether ``response`` meets ``constraint``."""
    kind, value = constraint.kind, constraint.value
    if kind == "max_words":
        return count_words(response) <= value * 1.2
    if kind == "exact_words":
        return count_words(response) == value
    if kind == "max_sentences":
        return count_sentences(response) <= value
    if kind == "list":
        items = len(_LIST_ITEM.findall(response))
        return items == value if value else items >= 2
    if kind == "json":
        try:
            json.loads(_strip_fences(response))
        except ValueError:
            return False
        return True
    if kind == "forbidden_word":
        return re.search(rf"\b{re.escape(str(value))}\b", response, re.I) is None
    raise ValueError(f"unknown constraint kind {kind!r}")
