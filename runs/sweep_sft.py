"""Sweep the SFT baseline's settings against the few-shot prompted model on validation prompts (issue 18).

    .venv/bin/python runs/sweep_sft.py RUN_DIR [--preset miniature] [--seed N] [--grid POINT ...] [--prompts 256]
        [--run-epochs]

RUN_DIR is a finished pipeline run of the preset (``--seed``: the run's, if not the preset's). A grid point is
``FIELD=VALUE[,FIELD=VALUE...]`` (PipelineConfig fields, YAML values, e.g. ``sft_demo_max_tokens=64``); each
trains the SFT baseline as the run's ``sft`` stage does (the same demonstrations split, seed and epochs) with
the point's settings, into ``RUN_DIR/sweeps/sft/<point>/``. Then every epoch's weights of every point, and the
run's own SFT baseline (``sft``: the epoch its ``select_sft`` chose; with ``--run-epochs`` its other epochs
too, as ``sft/epoch-N``), answer ``--prompts`` prompts of the PPO *validation* split (user-disjoint from every
test prompt), and the run's held-out panel judges each against the few-shot prompted pretrained model, as the
eval stage judges against SFT: the paper's "SFT preferred to the prompted model" measured where a preset may
be tuned. A win rate above 0.5 here is a prompted win rate below 0.5 against that SFT. A finished point is not
trained again. Prints a table (win rate with its 95% interval, the answers' finished rate and median words)
and writes ``RUN_DIR/sweeps/sft/summary.json`` (``--out``).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import replace
from pathlib import Path

import tyro
from sweep_ppo_kl import judge_against_sft, run_config, typed_fields

from instructgpt.labelers.simulated import finished
from instructgpt.pipeline import run

DEFAULT_GRID = ("sft_demo_max_tokens=64",)
"""The miniature's response budget (samples, PPO episodes and evaluation answers are 64 tokens)."""


def main(
    run_dir: tyro.conf.Positional[Path],
    preset: str = "miniature",
    seed: int | None = None,
    grid: tuple[str, ...] = DEFAULT_GRID,
    prompts: int = 256,
    out: Path | None = None,
    run_epochs: bool = False,
) -> None:
    config = run_config(run_dir, preset, seed)
    sweep = run_dir / "sweeps" / "sft"
    models: dict[str, Path] = {}  # the run's own SFT baseline is judged too, as "sft"
    for point in grid:
        fields = typed_fields(dict(part.split("=", 1) for part in point.split(",")), point)
        folder = sweep / point.replace("=", "-").replace(",", "+")
        if not (folder / "final" / "config.json").is_file():
            run.train_sft_stage(replace(config, **fields), folder, {})
        for epoch in sorted((folder / "epochs").glob("epoch-*")):
            models[f"{folder.name}/{epoch.name}"] = epoch
        models[f"{folder.name}/final"] = folder / "final"
    if run_epochs:
        models.update(run_sft_epochs(config))
    figures = {"run": str(run_dir), "seed": config.seed, "split": "ppo valid", **judge(config, sweep, models, prompts)}
    path = out or sweep / "summary.json"
    path.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    print(table(figures))


def run_sft_epochs(config) -> dict[str, Path]:
    """The run's own SFT epochs as ``sft/epoch-N`` (the last is ``sft/final``), but the one ``select_sft``
    chose: that one is judged as ``sft`` already."""
    chosen = run._sft_baseline(config, {}).resolve()
    folder = config.out_dir / "sft"
    epochs = {f"sft/{e.name}": e for e in sorted((folder / "epochs").glob("epoch-*"))}
    epochs[f"sft/epoch-{config.sft_epochs}"] = folder / "final"
    return {name: path for name, path in epochs.items() if path.resolve() != chosen}


def judge(config, sweep: Path, models: dict[str, Path], count: int) -> dict:
    """Each SFT model's win rate against the prompted model on ``count`` PPO-validation prompts (held-out panel)."""
    out = sweep / "eval"
    named = {"prompted": config.model, **models}
    settings = {"prompted": ("prompted",), "precision": "bf16-weights"}
    rates, _ = judge_against_sft(config, out, named, count, "prompted", **settings)
    winrate = {"n_prompts": max(r["n"] for r in rates.values()), "baseline": "prompted", "per_model": rates}
    return model_figures(out / "responses.jsonl", winrate)


def model_figures(responses: Path, winrate: dict) -> dict:
    """Each model's win rate against the baseline (None for the baseline), finished rate and median words."""
    answers: dict[str, list[str]] = {}
    for line in responses.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        answers.setdefault(record["model"], []).append(record["response"])
    return {
        "prompts": winrate["n_prompts"],
        "baseline": winrate["baseline"],
        "models": {
            name: {
                "win_rate": winrate["per_model"].get(name),
                "finished": sum(map(finished, texts)) / len(texts),
                "median_words": statistics.median(len(t.split()) for t in texts),
            }
            for name, texts in answers.items()
        },
    }


def table(figures: dict) -> str:
    lines = [
        f"SFT against the prompted model on {figures['prompts']} PPO-validation prompts of {figures['run']}"
        f" (seed {figures['seed']})",
        f"{'model':<40} {'win rate vs prompted':>26} {'finished':>9} {'words':>6}",
    ]
    for name, m in figures["models"].items():
        rate = m["win_rate"]
        cell = "(baseline)" if rate is None else f"{rate['rate']:.2f} [{rate['low']:.2f}, {rate['high']:.2f}]"
        lines.append(f"{name:<40} {cell:>26} {m['finished']:>9.2f} {m['median_words']:>6.0f}")
    return "\n".join(lines)


if __name__ == "__main__":
    tyro.cli(main)
