"""bench/label_load.py with its crash (issue 23, point 4): a short load on SQLite whose server is
killed with SIGKILL mid-load and started again; every acknowledged submission must be stored
once, and the report names the kill and the database's durability settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_killed_server_loses_and_duplicates_nothing(tmp_path):
    out = tmp_path / "label_load.json"
    args = ["--labelers", "3", "--duration", "6", "--crash-at", "3", "--items-per-labeler", "10", "--out", str(out)]
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "label_load.py"), *args], capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "server killed (SIGKILL) at 3.0 s" in run.stdout and "synchronous=FULL" in run.stdout
    report = json.loads(out.read_text())
    assert report["crash"]["signal"] == "SIGKILL" and report["durability"]["journal_mode"] == "wal"
    integrity = report["integrity"]
    assert integrity["acknowledged"] > 0 and integrity["stored"] == integrity["acknowledged"]
    assert (integrity["lost"], integrity["extra"], integrity["duplicated"]) == (0, 0, 0)
