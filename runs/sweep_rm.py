"""Sweep the reward model's learning rate and epochs on a finished run's rankings (issue 18).

    .venv/bin/python runs/sweep_rm.py RUN_DIR [--preset miniature] [--seed N] [--grid LR:EPOCHS ...] [--out F]

RUN_DIR is a finished pipeline run of the preset (``--seed``: the run's, if not the preset's). Each grid
point ``LR:EPOCHS`` trains the reward model as the run's ``rm`` stage does (the same rankings, SFT init,
batch and seed) with the point's peak learning rate and passes over the rankings, into
``RUN_DIR/sweeps/rm/<point>/``, and measures it as the stage does: pairwise accuracy on the
validation split's rankings by the training labelers and by the held-out labelers (RM-validation
prompts: user-disjoint from the training prompts and from every test prompt). The run's own RM is
listed as the preset's point. A finished point is not trained again; its model is deleted once
measured (``--keep-models`` keeps it). Tune on one seed's run and confirm on another's: the two
runs' validation splits hold different users. Prints a table and writes the figures as JSON
(``--out``, default ``RUN_DIR/sweeps/rm/summary.json``).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import tyro
from sweep_ppo_kl import run_config

from instructgpt.evaluation.metrics import wilson_interval
from instructgpt.pipeline import run

DEFAULT_GRID = ("5e-5:1", "2e-5:2", "5e-5:2")
"""Around the miniature preset (lr 2e-5, 1 epoch: 24 steps whose last training loss is still 0.66)."""


def main(
    run_dir: tyro.conf.Positional[Path],
    preset: str = "miniature",
    seed: int | None = None,
    grid: tuple[str, ...] = DEFAULT_GRID,
    keep_models: bool = False,
    out: Path | None = None,
) -> None:
    config = run_config(run_dir, preset, seed)
    sweep = run_dir / "sweeps" / "rm"
    points = {"preset": point_figures(run_dir / "rm", *trained_settings(run_dir / "rm", config), None)}
    for point in grid:
        lr, epochs = point.split(":")
        folder = sweep / f"lr{lr}-epochs{epochs}"
        if not (folder / "summary.json").is_file():
            start = time.perf_counter()
            run.rm_stage(replace(config, rm_lr=float(lr), rm_epochs=int(epochs)), folder, {})
            (folder / "seconds.json").write_text(json.dumps(time.perf_counter() - start))
            shutil.rmtree(folder / "checkpoints", ignore_errors=True)
            if not keep_models:
                shutil.rmtree(folder / "final", ignore_errors=True)
        points[folder.name] = point_figures(
            folder, float(lr), int(epochs), json.loads((folder / "seconds.json").read_text())
        )
    figures = {"run": str(run_dir), "seed": config.seed, "split": "rm valid", "points": points}
    path = out or sweep / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    print(table(figures))


def trained_settings(folder: Path, config) -> tuple[float, int]:
    """The lr and epochs a finished RM stage trained with (its ``final/meta.json``), not today's preset's, which may
    have changed since the run; the preset's where the model is gone."""
    meta = folder / "final" / "meta.json"
    if not meta.is_file():
        return config.rm_lr, config.rm_epochs
    trained = json.loads(meta.read_text(encoding="utf-8"))["config"]
    return trained["lr"], trained["epochs"]


def point_figures(folder: Path, lr: float, epochs: int, seconds: float | None) -> dict:
    """A trained RM's validation accuracy per labeler group (with n and 95% interval) and its last training loss."""
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    train = [m for m in metrics if "rm/loss" in m]
    return {
        "lr": lr,
        "epochs": epochs,
        "steps": train[-1]["step"] if train else None,
        "last_train_loss": train[-1]["rm/loss"] if train else None,
        "seconds": seconds,
        **{group: accuracy(summary[f"{group}_labelers"]["overall"]) for group in ("training", "held_out")},
    }


def accuracy(overall: dict) -> dict:
    """Accuracy, comparisons and the 95% Wilson interval (comparisons of a prompt share it, so it is a floor)."""
    return {
        "accuracy": overall["accuracy"],
        "comparisons": overall["comparisons"],
        "ci": list(wilson_interval(overall["accuracy"], overall["comparisons"])),
    }


def table(figures: dict) -> str:
    lines = [
        f"reward model on {figures['run']} (seed {figures['seed']}), accuracy on the RM-validation rankings",
        f"{'point':<22} {'steps':>5} {'loss':>6} {'held-out labelers':>26} {'training labelers':>26} {'s':>6}",
    ]
    for name, p in figures["points"].items():
        cells = [
            f"{100 * a['accuracy']:.1f}% [{100 * a['ci'][0]:.1f}, {100 * a['ci'][1]:.1f}] n={a['comparisons']}"
            for a in (p["held_out"], p["training"])
        ]
        seconds = "" if p["seconds"] is None else f"{p['seconds']:.0f}"
        lines.append(
            f"{name:<22} {p['steps']:>5} {p['last_train_loss']:>6.3f} {cells[0]:>26} {cells[1]:>26} {seconds:>6}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    tyro.cli(main)
