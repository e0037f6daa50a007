"""bench/results/ holds the reports the documentation quotes, and nothing else (issue 24): every
report at its top level is named in README.md, bench/README.md or docs/, every report named there
by path exists, and tuning sweeps sit one per file under bench/results/sweeps/."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def documentation() -> str:
    texts = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return "\n".join(path.read_text(encoding="utf-8") for path in texts)


def test_every_report_is_quoted_and_every_quote_exists():
    text = documentation()
    paths = set(re.findall(r"bench/results/([\w./-]+\.json)", text))  # bench/results/NAME.json
    names = paths | set(re.findall(r"`([\w.-]+\.json)`", text))  # or `NAME.json` beside its figures
    reports = {p.name for p in RESULTS.glob("*.json")}
    assert reports - names == set(), "reports nobody quotes: remove them or quote them"
    assert {n for n in paths if not (RESULTS / n).is_file()} == set(), "quoted reports that do not exist"


def test_sweeps_are_one_file_each():
    folders = [p for p in RESULTS.rglob("*") if p.is_dir() and p != RESULTS / "sweeps"]
    assert folders == [], "only bench/results/sweeps/ may hold files below bench/results/"
