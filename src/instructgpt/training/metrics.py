"""Metrics to a JSONL log (and TensorBoard when it is installed)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


class MetricsLog:
    """Append one JSON object per logged step to ``run_dir/metrics.jsonl``.

    Names are slash-namespaced (``sft/loss``, ``sft/lr``). A resumed run appends to the same
    file. When ``tensorboard`` is importable, the same scalars go to ``run_dir/tensorboard``.
    """

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self._writer = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = _tensorboard(Path(run_dir) / "tensorboard")

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": step, "time": round(time.time(), 3), **metrics}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for name, value in metrics.items():
                if isinstance(value, (int, float)):
                    self._writer.add_scalar(name, value, step)
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _tensorboard(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(folder))


def progress_bar(desc: str, start: int, stop: int, enabled: bool, unit: str = "step"):
    """A tqdm bar from ``start`` to ``stop`` (disabled off the main process or on request)."""
    from tqdm.auto import tqdm

    return tqdm(total=stop, initial=start, desc=desc, unit=unit, disable=not enabled)
