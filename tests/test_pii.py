"""PII detection: precision and recall on the labelled strings in tests/data/pii/labelled.jsonl.

The set (223 strings, 98 with PII, written by tests/data/pii/make_labelled.py) holds positives
of every kind in several formats and hard negatives: versions, dates, times, prices,
quantities, ISBNs, card-like digit runs failing the Luhn check, plain URLs, code. Scoring is
per (string, kind): a kind found in a string labelled with it is a true positive.

Thresholds asserted (measured when written: precision 0.99, recall 0.99 overall): overall
precision and recall at least 0.95, and every kind's recall at least 0.9. The detector and the
set were written by the same author, so these figures are an upper bound on what it does on
real prompts; see docs/prompt-pipeline.md.
"""

import json
from pathlib import Path

import pytest

from instructgpt.data.pii import PII_KINDS, find_pii, luhn_valid, redact

LABELLED = Path(__file__).parent / "data" / "pii" / "labelled.jsonl"


def scores() -> dict[str, dict[str, int]]:
    counts = {k: {"tp": 0, "fp": 0, "fn": 0} for k in PII_KINDS}
    for line in LABELLED.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        found, gold = {m.kind for m in find_pii(row["text"])}, set(row["kinds"])
        for kind in PII_KINDS:
            if kind in found:
                counts[kind]["tp" if kind in gold else "fp"] += 1
            elif kind in gold:
                counts[kind]["fn"] += 1
    return counts


def test_labelled_set_is_large_and_covers_every_kind():
    rows = [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 200
    assert sum(1 for r in rows if not r["kinds"]) >= 100  # hard negatives
    for kind in PII_KINDS:
        assert sum(kind in r["kinds"] for r in rows) >= 10, kind


def test_precision_and_recall_above_thresholds():
    counts = scores()
    tp = sum(c["tp"] for c in counts.values())
    precision = tp / (tp + sum(c["fp"] for c in counts.values()))
    recall = tp / (tp + sum(c["fn"] for c in counts.values()))
    assert precision >= 0.95 and recall >= 0.95, (precision, recall, counts)
    for kind, c in counts.items():
        assert c["tp"] / (c["tp"] + c["fn"]) >= 0.9, (kind, c)


@pytest.mark.parametrize(
    "number,valid",
    [
        ("4111111111111111", True),
        ("4111111111111112", False),
        ("378282246310005", True),
        ("79927398713", True),
        ("79927398710", False),
    ],
)
def test_luhn(number, valid):
    assert luhn_valid(number) is valid


def test_card_needs_luhn_and_redaction_replaces_spans():
    assert [m.kind for m in find_pii("card 4111 1111 1111 1111 ok")] == ["card"]
    assert find_pii("card 4111 1111 1111 1112 ok") == []
    text = "Mail a@b.co or call (555) 123-4567 from 10.0.0.1."
    assert redact(text, find_pii(text)) == "Mail [EMAIL] or call [PHONE] from [IP]."


def test_credential_url_wins_over_email_and_plain_urls_pass():
    text = "see https://bob:pw@host.example.com/x and https://example.com/a?page=2"
    assert [(m.kind, text[m.start : m.end]) for m in find_pii(text)] == [
        ("credential_url", "https://bob:pw@host.example.com/x")
    ]
