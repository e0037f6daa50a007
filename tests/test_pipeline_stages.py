"""The stage runner skips finished stages and re-runs a stage (and those after) when settings change."""

import json

from instructgpt.pipeline.stages import STAGE_JSON, Stage, run_stages


def _recorder(calls, name):
    """A stage function that records its call and writes one output."""

    def run(folder):
        calls.append(name)
        out = folder / "out.txt"
        out.write_text(name)
        return {"out": out}

    return run


def _stages(calls, settings_b=None):
    return [
        Stage("a", "first", _recorder(calls, "a"), {"x": 1}),
        Stage("b", "second", _recorder(calls, "b"), settings_b or {"y": 2}),
        Stage("c", "third", _recorder(calls, "c"), {"z": 3}),
    ]


def test_second_run_skips_everything(tmp_path):
    calls = []
    first = run_stages(_stages(calls), tmp_path, log=lambda s: None)
    assert calls == ["a", "b", "c"]
    second = run_stages(_stages(calls), tmp_path, log=lambda s: None)
    assert calls == ["a", "b", "c"] and second == first


def test_changed_setting_reruns_that_stage_and_later_ones(tmp_path):
    calls = []
    run_stages(_stages(calls), tmp_path, log=lambda s: None)
    run_stages(_stages(calls, settings_b={"y": 5}), tmp_path, log=lambda s: None)
    assert calls == ["a", "b", "c", "b", "c"]


def test_missing_output_or_crash_reruns(tmp_path):
    calls = []
    run_stages(_stages(calls), tmp_path, log=lambda s: None)
    (tmp_path / "c" / "out.txt").unlink()
    (tmp_path / "a" / STAGE_JSON).write_text(json.dumps({"fingerprint": "stale", "outputs": {}}))
    run_stages(_stages(calls), tmp_path, log=lambda s: None)
    assert calls == ["a", "b", "c", "a", "b", "c"]


def test_missing_last_output_reruns_only_the_last(tmp_path):
    calls = []
    run_stages(_stages(calls), tmp_path, log=lambda s: None)
    (tmp_path / "c" / "out.txt").unlink()
    run_stages(_stages(calls), tmp_path, log=lambda s: None)
    assert calls == ["a", "b", "c", "c"]


def _with_branch(calls, branch_settings=None, present=True):
    """a -> [side branch s, read only by d] -> b -> d."""
    make = lambda name: _recorder(calls, name)  # noqa: E731
    side = [Stage("s", "branch", make("s"), branch_settings or {"w": 1}, branch=True)] if present else []
    return [
        Stage("a", "first", make("a"), {"x": 1}),
        *side,
        Stage("b", "second", make("b"), {"y": 2}),
        Stage("d", "reads the branch", make("d"), {"z": 3}, uses=("s",)),
    ]


def test_branch_change_reruns_only_its_users(tmp_path):
    calls = []
    run_stages(_with_branch(calls), tmp_path, log=lambda s: None)
    assert calls == ["a", "s", "b", "d"]
    run_stages(_with_branch(calls, branch_settings={"w": 2}), tmp_path, log=lambda s: None)
    assert calls[4:] == ["s", "d"]  # b, between the branch and its user, is kept


def test_removing_a_branch_keeps_the_main_chain(tmp_path):
    calls = []
    run_stages(_with_branch(calls), tmp_path, log=lambda s: None)
    run_stages(_with_branch(calls, present=False), tmp_path, log=lambda s: None)
    assert calls[4:] == ["d"]  # only the stage that read the branch runs again


def test_main_chain_change_reruns_the_branch(tmp_path):
    calls = []
    run_stages(_with_branch(calls), tmp_path, log=lambda s: None)
    (tmp_path / "a" / STAGE_JSON).write_text(json.dumps({"fingerprint": "stale", "outputs": {}}))
    run_stages(_with_branch(calls), tmp_path, log=lambda s: None)
    assert calls[4:] == ["a", "s", "b", "d"]


def test_summary_follows_the_latest_plan_not_leftover_folders(tmp_path):
    from instructgpt.pipeline.summary import collect

    calls = []
    run_stages(_with_branch(calls), tmp_path, log=lambda s: None)
    assert list(collect(tmp_path)["seconds"]) == ["a", "s", "b", "d"]
    run_stages(_with_branch(calls, present=False), tmp_path, log=lambda s: None)
    assert (tmp_path / "s" / STAGE_JSON).is_file()  # the dropped branch's folder is still there
    assert list(collect(tmp_path)["seconds"]) == ["a", "b", "d"]
