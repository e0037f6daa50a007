"""Metrics to a JSONL log, and to experiment trackers through accelerate (``report_to``).

Every logged step is one JSON object in ``run_dir/metrics.jsonl``; with ``report_to`` the same
slash-namespaced scalars, at the same step, go to accelerate's trackers (TensorBoard, wandb,
trackio, mlflow), which are started offline unless the user's environment says otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import Any

from instructgpt.config import check, to_dict

TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio", "mlflow": "mlflow"}
"""Each ``report_to`` name and the package accelerate needs for it."""


class MetricsLog:
    """Append one JSON object per logged step to ``run_dir/metrics.jsonl``, and hand the same numbers
    to the accelerator's trackers.

    Names are slash-namespaced (``sft/loss``, ``sft/lr``). ``start``: the step the run starts
    from. A run from step 0 starts a new file (a re-run into the same folder must not append to
    the last run's curves); a run resumed at step ``start`` keeps the records up to it and drops
    the later ones, which the interrupted run logged after its last checkpoint and the resumed
    run logs again. None appends to whatever is there. ``accelerator``: one made by
    :func:`make_accelerator`; its trackers are started here (``run_name`` and the run's
    ``config`` as hyperparameters) and finished by :meth:`close`.
    """

    def __init__(
        self,
        run_dir: Path,
        enabled: bool = True,
        accelerator: Any = None,
        run_name: str = "run",
        config: Any = None,
        start: int | None = None,
    ):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.accelerator = accelerator if accelerator is not None and accelerator.log_with else None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if start is not None:
                self._keep_until(start)
        if self.accelerator is not None:
            self.accelerator.init_trackers(run_name, config=hyperparameters(config) if config is not None else None)

    def _keep_until(self, start: int) -> None:
        """Rewrite the log (atomically) with only the records of steps before or at ``start`` (none for 0)."""
        resumed = start > 0 and self.path.is_file()
        kept = [r for r in read_metrics(self.path.parent) if r.get("step", 0) <= start] if resumed else []
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        tmp.replace(self.path)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": step, "time": round(time.time(), 3), **metrics}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.accelerator is not None:
            scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            self.accelerator.log(scalars, step=step)

    def close(self) -> None:
        """Finish the trackers (not ``accelerator.end_training``: that also ends the process group)."""
        if self.accelerator is not None and self.enabled:
            for tracker in self.accelerator.trackers:
                tracker.finish()


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def make_accelerator(report_to: Sequence[str], run_dir: Path, cpu: bool) -> Any:
    """An Accelerator whose trackers are ``report_to`` (TensorBoard under ``run_dir/tensorboard``)."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    project = ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(Path(run_dir) / "tensorboard"))
    log_with = tracker_names(report_to, run_dir)
    # mixed_precision 'no' whatever an accelerate config says: each trainer's --precision sets its own scheme
    return Accelerator(cpu=cpu, log_with=log_with or None, project_config=project, mixed_precision="no")


def tracker_names(report_to: Sequence[str], run_dir: Path) -> list[Any]:
    """``report_to`` checked (each tracker's package installed) and made offline: what ``log_with`` takes.

    accelerate itself skips a tracker whose package is missing without a word; here it is an error.
    """
    for name in report_to:
        check(name in TRACKER_PACKAGES, "report_to", f"unknown tracker {name!r}; known: {', '.join(TRACKER_PACKAGES)}")
        package = TRACKER_PACKAGES[name]
        check(
            importlib.util.find_spec(package) is not None,
            "report_to",
            f"{name!r} needs the {package} package, which is not installed (pip install {package})",
        )
    offline_by_default(report_to, run_dir, os.environ)
    return list(report_to)


def offline_by_default(report_to: Sequence[str], run_dir: Path, environ: MutableMapping[str, str]) -> None:
    """Keep the online trackers offline unless the environment already chose: wandb writes an offline
    run under ``run_dir/wandb`` (``wandb sync`` uploads it later), mlflow a file store in ``run_dir/mlruns``."""
    if "wandb" in report_to:
        environ.setdefault("WANDB_MODE", "offline")
        environ.setdefault("WANDB_DIR", str(Path(run_dir).resolve()))
    if "mlflow" in report_to:
        environ.setdefault("MLFLOW_TRACKING_URI", (Path(run_dir).resolve() / "mlruns").as_uri())


def hyperparameters(config: Any) -> dict[str, Any]:
    """A run config as tracker hyperparameters: scalars kept, anything else (tuples, paths) as text."""
    values = to_dict(config) if not isinstance(config, dict) else config
    return {k: v if v is None or isinstance(v, (bool, int, float, str)) else str(v) for k, v in values.items()}


def progress_bar(desc: str, start: int, stop: int, enabled: bool, unit: str = "step"):
    """A tqdm bar from ``start`` to ``stop`` (disabled off the main process or on request)."""
    from tqdm.auto import tqdm

    return tqdm(total=stop, initial=start, desc=desc, unit=unit, disable=not enabled)
