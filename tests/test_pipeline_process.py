"""Each pipeline stage in its own process (``PipelineConfig.stage_processes``): the child runs the
same stage function on the same configuration, hands back its outputs, and failures stop the
pipeline with the stage's own error."""

import json
import platform

import pytest

from instructgpt.models.tiny import save_tiny
from instructgpt.pipeline.config import PipelineConfig
from instructgpt.pipeline.plan import build_stages, run_pipeline
from instructgpt.pipeline.process import StageFailed
from instructgpt.pipeline.stages import run_stages


def _prepare_only(config: PipelineConfig) -> dict:
    return run_stages(build_stages(config)[:1], config.out_dir)["prepare"]


def test_a_stage_in_its_own_process_writes_what_it_writes_in_this_one(tmp_path):
    model = save_tiny(str(tmp_path / "tiny"))
    settings = dict(model=model, hh_prompts=40, max_prompt_tokens=200, round_human_rankings=(tmp_path / "h.jsonl",))
    here = _prepare_only(PipelineConfig(out_dir=tmp_path / "here", stage_processes=False, **settings))
    child = _prepare_only(PipelineConfig(out_dir=tmp_path / "child", **settings))
    assert set(child) == set(here) and all(child[k].is_file() for k in child)
    for key in here:  # same records, paths under its own run folder
        assert child[key] == tmp_path / "child" / here[key].relative_to(tmp_path / "here")
        assert child[key].read_text() == here[key].read_text()
    record = json.loads((tmp_path / "child" / "prepare" / "stage.json").read_text())
    assert record["outputs"] == {k: str(v) for k, v in child.items()}  # the parent writes stage.json
    files = sorted(p.name for p in (tmp_path / "child" / "prepare").iterdir() if p.is_file())
    assert files == ["process.json", "stage.json"]  # the hand-over files are gone
    process = json.loads((tmp_path / "child" / "prepare" / "process.json").read_text())
    assert process["exit_status"] == 0 and 0.05 < process["peak_rss_gib"] < 8  # the child's own peak, measured


def test_a_stage_that_fails_in_its_process_stops_the_pipeline_with_its_error(tmp_path, capfd):
    config = PipelineConfig(out_dir=tmp_path / "run", model=str(tmp_path / "no-such-model"))
    with pytest.raises(StageFailed, match="stage 'prepare' failed in its process"):
        run_pipeline(config)
    err = capfd.readouterr().err
    assert "no-such-model" in err and "Traceback" not in err  # the child's one-line error, not a traceback
    assert not (tmp_path / "run" / "prepare" / "stage.json").exists()  # not marked done: a re-run runs it


def test_the_cli_reports_a_failed_stage_in_one_line(tmp_path, capfd):
    from instructgpt.cli.pipeline import main

    assert main(["--out-dir", str(tmp_path / "run"), "--model", str(tmp_path / "missing")]) == 1
    err = capfd.readouterr().err
    assert "error: stage 'prepare' failed in its process (exit status 1)" in err


def test_stage_allocators_set_the_mode_of_the_named_stages_processes_only(monkeypatch):
    from instructgpt.config import ConfigError
    from instructgpt.pipeline.process import child_environment
    from instructgpt.runtime import MODE_ENV, OPT_OUT

    monkeypatch.delenv(MODE_ENV, raising=False)
    monkeypatch.delenv(OPT_OUT, raising=False)
    config = PipelineConfig(stage_allocators=("ppo=heap", "ppo_ptx=heap"))
    assert child_environment(config, "ppo")[MODE_ENV] == "heap"
    assert child_environment(config, "round-2/ppo_ptx")[MODE_ENV] == "heap"
    assert MODE_ENV not in child_environment(config, "sft")
    monkeypatch.setenv(MODE_ENV, "system")  # the user's choice wins
    assert child_environment(config, "ppo")[MODE_ENV] == "system"
    monkeypatch.delenv(MODE_ENV)
    monkeypatch.setenv(OPT_OUT, "1")
    assert MODE_ENV not in child_environment(config, "ppo")
    with pytest.raises(ConfigError, match="stage_allocators"):
        PipelineConfig(stage_allocators=("ppo=fast",)).validate()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator modes need glibc")
def test_a_stage_process_runs_in_the_allocator_mode_it_was_given(tmp_path, monkeypatch):
    import subprocess
    import sys

    from instructgpt.pipeline.process import child_environment
    from instructgpt.runtime import MODE_ENV, OPT_OUT

    monkeypatch.delenv(MODE_ENV, raising=False)
    monkeypatch.delenv(OPT_OUT, raising=False)
    env = child_environment(PipelineConfig(stage_allocators=("ppo=heap",)), "ppo")
    probe = "import instructgpt.runtime as r; print(r.tune_memory())"
    mode = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert mode.stdout.strip() == "heap"


def test_a_stage_process_killed_by_a_signal_is_reported_as_such(tmp_path, monkeypatch):
    import signal
    import subprocess

    from instructgpt.pipeline import process

    class Killed:  # a child the kernel killed (as its out-of-memory killer does)
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(subprocess, "Popen", Killed)
    monkeypatch.setattr(process, "_wait", lambda child: (-signal.SIGKILL, 23.9))
    with pytest.raises(StageFailed, match="killed by signal SIGKILL.*memory runs out"):
        process.run_in_process(PipelineConfig(out_dir=tmp_path), "ppo", tmp_path / "ppo")
    assert json.loads((tmp_path / "ppo" / "process.json").read_text()) == {"peak_rss_gib": 23.9, "exit_status": -9}
