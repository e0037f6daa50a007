"""metrics.jsonl across re-runs: a fresh run starts a new log, a resumed one keeps the steps up to its checkpoint."""

from instructgpt.training.metrics import MetricsLog, read_metrics


def _steps(folder):
    return [r["step"] for r in read_metrics(folder)]


def test_a_fresh_run_into_a_used_folder_starts_a_new_log(tmp_path):
    first = MetricsLog(tmp_path, start=0)
    for step in (1, 2, 3):
        first.log(step, {"x": 1.0})
    again = MetricsLog(tmp_path, start=0)  # e.g. a pipeline stage re-run with a new setting
    again.log(1, {"x": 2.0})
    assert _steps(tmp_path) == [1] and read_metrics(tmp_path)[0]["x"] == 2.0


def test_a_resumed_run_drops_what_was_logged_after_its_checkpoint(tmp_path):
    log = MetricsLog(tmp_path, start=0)
    for step in (0, 1, 2, 3):  # killed after step 3; the last checkpoint was at step 2
        log.log(step, {"x": float(step)})
    resumed = MetricsLog(tmp_path, start=2)
    resumed.log(3, {"x": 30.0})
    assert _steps(tmp_path) == [0, 1, 2, 3] and read_metrics(tmp_path)[-1]["x"] == 30.0


def test_start_none_appends(tmp_path):
    MetricsLog(tmp_path).log(1, {})
    MetricsLog(tmp_path).log(2, {})
    assert _steps(tmp_path) == [1, 2]
