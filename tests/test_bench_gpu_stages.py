"""bench/gpu_stages.py (the GPU check's SFT / RM / PPO-ptx part) runs end to end on a tiny model on any device."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.mark.skipif(not (SHARED_DATA / "alpaca").is_dir(), reason="needs ../shared/data (Alpaca, pretraining text)")
def test_quick_run_reports_every_stage(tmp_path):
    out = tmp_path / "stages.json"
    env = {**os.environ, "INSTRUCTGPT_DATA": str(SHARED_DATA), "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, "bench/gpu_stages.py", "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    report = json.loads(out.read_text())
    assert report["errors"] == {}
    assert set(report["summary"]) == {"sft", "rm", "ppo-ptx"}
    for stage in report["stages"].values():
        assert stage["steps"] == 2 and stage["tokens_per_s"] > 0 and 0 < stage["mfu"] < 1
    assert set(report["stages"]["ppo-ptx"]["phases_s"]) == {"generate", "score", "update"}
