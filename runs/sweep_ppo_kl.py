"""Sweep PPO's learning rate and KL control on validation prompts, never on the test prompts (issue 18).

    .venv/bin/python runs/sweep_ppo_kl.py RUN_DIR [--preset miniature] [--prompts 256] [--grid POINT ...]

RUN_DIR is a finished pipeline run of the preset (its prepare, rankings, rm and SFT stages are
reused). Each grid point trains plain PPO (the ``ppo`` stage's function with the point's settings)
into ``RUN_DIR/sweeps/ppo-kl/<point>/``; then SFT and every point (plus the run's own ``ppo`` and
``ppo_ptx`` models, the preset's settings) answer the same ``--prompts`` prompts of the PPO
*validation* split (user-disjoint from PPO training and from the test prompts), and the run's
calibrated held-out simulated labelers judge each against SFT, as the eval stage does. The default
is 256 prompts (of the split's 297 in the seed-0 miniature run; interval about +-0.06): on 64 (about
+-0.12, the default until 2026-12-05) the PPO settings this script compared differed by less than
their noise, and two that read 0.59 and 0.67 on 64 prompts read 0.54 and 0.52 on 256 (docs/results-history.md,
"The RM's reading of a cut-off episode").

A grid point is ``LR:BETA:TARGET[:INIT[:GAMMA[:PER]]][:FIELD=VALUE...]``: policy lr, initial beta,
the adaptive controller's KL target in nats per response (``-`` keeps beta fixed), and the model PPO
starts from: ``mix`` (the run's separate SFT with 10% pretraining data, ``sft_ppo_init``) or ``sft``
(the SFT baseline chosen by ``select_sft``); default: the preset's. GAMMA > 0 trains PPO-ptx
instead, with pretraining coefficient GAMMA and PER pretraining sequences per episode (default: the
preset's ptx_per_episode), so the pretraining term's weight, which the paper gives (27.8) only for
its own normalisation of the two terms, is chosen on validation prompts too. Trailing
``FIELD=VALUE`` parts set any other PipelineConfig field (YAML values), e.g.
``1e-5:0.02:-:sft:0:2:ppo_missing_eos_penalty=1``. ``--inits`` also judges the pretraining-mix init
itself against SFT (iteration 0 of every ``mix`` point). The adaptive horizon is the point's
episodes per iteration (``--horizon``, default: ppo_batch_size), so beta can move by up to 20% an
iteration. ``--reward-model`` trains every point against another RM (e.g. one trained with other
settings on the run's rankings; its folder's parent names the points, or for a pipeline run's RM,
``RUN/rm/final``, the run's folder). A finished point is not
trained again; ``--train-only`` trains without judging (e.g. one process per point, then one run
that judges them all). Writes ``RUN_DIR/sweeps/ppo-kl/summary.json`` and prints a table: win rate
against SFT with its 95% interval, and each run's last RM score and KL.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import tyro
import yaml

from instructgpt.config import from_dict, parse
from instructgpt.data.jsonl import read_records, write_jsonl_atomic
from instructgpt.pipeline import run
from instructgpt.pipeline.config import PipelineConfig, preset_path
from instructgpt.pipeline.plan import with_base_model

DEFAULT_GRID = ("3e-5:0.02:-:sft", "2e-5:0.02:-:sft", "1e-5:0.05:-:sft", "1e-5:0.02:-:mix", "3e-5:0.1:3:mix")
"""Around the miniature preset (lr 1e-5, beta 0.02 fixed, from the SFT baseline): a higher lr, a
higher fixed beta, the paper's pretraining-mix init, and an adaptive controller."""
INITS = {"mix": True, "sft": False}


def main(
    run_dir: tyro.conf.Positional[Path],
    preset: str = "miniature",
    prompts: int = 256,
    grid: tuple[str, ...] = DEFAULT_GRID,
    horizon: int | None = None,
    inits: bool = False,
    train_only: bool = False,
    reward_model: Path | None = None,
) -> None:
    config = run_config(run_dir, preset)
    sweep = run_dir / "sweeps" / "ppo-kl"
    points = {}
    for point in grid:
        parts = point.split(":")
        extra = typed_fields(dict(p.split("=", 1) for p in parts if "=" in p), point)
        lr, beta, target, *rest = [p for p in parts if "=" not in p]
        gamma = float(rest[1]) if len(rest) > 1 else 0.0
        start = rest[0] if rest else "mix" if config.mix_init(gamma > 0) else "sft"
        per_episode = float(rest[2]) if len(rest) > 2 else config.ptx_per_episode
        name = f"lr{lr}-beta{beta}-kl{target}-init-{start}" + (f"-ptx{gamma:g}x{per_episode:g}" if gamma else "")
        name += "".join(f"-{k.removeprefix('ppo_')}{v}" for k, v in extra.items())
        name += f"-rm-{rm_label(reward_model)}" if reward_model else ""
        varied = replace(
            config,
            ppo_init_from_pretrain_mix=INITS[start],
            ptx_init_from_pretrain_mix=INITS[start],
            ptx_per_episode=per_episode,
            ppo_lr=float(lr),
            ppo_kl_coef=float(beta),
            ppo_kl_target=None if target == "-" else float(target),
            ppo_kl_horizon=horizon or config.ppo_batch_size,
            **extra,
        )
        varied.validate()
        folder = sweep / name
        if not (folder / "final" / "config.json").is_file():
            folder.mkdir(parents=True, exist_ok=True)
            print(f"== {name}: training {'PPO-ptx' if gamma else 'plain PPO'}", flush=True)
            run.ppo_stage(varied, folder, {"rm": {"model": reward_model}} if reward_model else {}, gamma)
            shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # resume state: GBs, never read again
        points[name] = folder / "final"
    if train_only:  # e.g. one process per point (a process that trains several grows its memory)
        return
    if inits:
        points["init-mix"] = run._load({}, run_dir, "sft_ppo_init")["model"]
    summary = evaluate(config, sweep, points, prompts)
    (sweep / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"\nwin rate against SFT on {prompts} PPO-validation prompts (held-out simulated labelers, 95% Wilson)")
    for name, row in summary["points"].items():
        w = row["win_rate"]
        interval = f"{w['rate']:.2f} [{w['low']:.2f}, {w['high']:.2f}]"
        print(f"  {name:<32} {interval}   last score {row['score']:+.2f}, KL {row['kl']:.2f}")
    print(f"wrote {sweep / 'summary.json'}")


def typed_fields(texts: dict[str, str], source: str) -> dict:
    """PipelineConfig fields from a grid point's FIELD=VALUE texts, typed as a preset's YAML values are
    (:func:`instructgpt.config.from_dict`: 5e-5 is a float, unknown fields are named)."""
    typed = from_dict(PipelineConfig, {k: yaml.safe_load(v) for k, v in texts.items()}, source=source)
    return {k: getattr(typed, k) for k in texts}


def rm_label(path: Path) -> str:
    """The name of an RM in point names: its folder's parent, or the run folder of a pipeline RM (RUN/rm/final)."""
    return path.parent.parent.name if path.parent.name == "rm" else path.parent.name


def run_config(run_dir: Path, preset: str, seed: int | None = None) -> PipelineConfig:
    """The preset's pipeline config for the run in ``run_dir`` (``seed``: the run's ``--seed``, if not the preset's)."""
    argv = ["--config", str(preset_path(preset)), "--out-dir", str(run_dir)]
    return with_base_model(
        parse(PipelineConfig, argv + (["--seed", str(seed)] if seed is not None else []), "pipeline")
    )


def validation_prompts(config: PipelineConfig, count: int) -> list:
    """``count`` prompts of the run's PPO validation split, the same for every script given the same seed."""
    valid = read_records(config.out_dir / "prepare" / "api" / "ppo" / "valid.jsonl", "prompts")
    return random.Random(config.seed).sample(valid, min(count, len(valid)))


def evaluate(config: PipelineConfig, sweep: Path, points: dict[str, Path], count: int) -> dict:
    out_dir = config.out_dir
    models = {"preset": out_dir / "ppo" / "final", "preset-ptx": out_dir / "ppo_ptx" / "final", **points}
    models = {name: path for name, path in models.items() if (Path(path) / "config.json").is_file()}
    rates, _ = judge_against_sft(config, sweep / "eval", models, count)
    chosen = (sweep / "eval" / "valid_prompts.jsonl").read_text(encoding="utf-8").splitlines()
    out = {"prompts": len(chosen), "split": "ppo valid", "points": {}}
    for name, model in models.items():
        log = Path(model).parent / "metrics.jsonl"
        text = log.read_text() if name != "init-mix" and log.is_file() else ""
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
        metrics = [m for m in records if "objective/score" in m]  # not the validation curve's iteration-0 record
        curve = [m for m in records if "validation/score" in m]
        out["points"][name] = {
            "win_rate": rates[name],
            "score": metrics[-1]["objective/score"] if metrics else float("nan"),
            "kl": metrics[-1]["objective/kl"] if metrics else 0.0,
            "score_curve": [m["objective/score"] for m in metrics],
            "kl_curve": [m["objective/kl"] for m in metrics],
            "validation_curve": [{k: m[k] for k in ("step", "validation/score_gain", "validation/kl")} for m in curve],
        }
    return out


def held_out_panel(config: PipelineConfig):
    """The run's held-out simulated labelers, as its ``rankings`` stage calibrated them (``rankings/panel.json``)."""
    calibrations = json.loads((config.out_dir / "rankings" / "panel.json").read_text(encoding="utf-8"))["calibrations"]
    return run._panel(config, calibrations).held_out


def judge_against_sft(
    config: PipelineConfig, out: Path, models: dict, count: int, baseline: str = "sft", **settings
) -> tuple[dict, list]:
    """Win rates against the run's SFT baseline of ``models`` (name -> folder) on ``count`` PPO-validation
    prompts, judged by the run's held-out panel as the eval stage judges; ``settings``: other EvalConfig fields
    (e.g. ``win_temperature``). ``baseline`` names another model of ``models`` to judge against instead (SFT is
    then one of the judged). Writes the prompts, answers and comparisons under ``out``; returns the per-model
    rates and the held-out panel."""
    from instructgpt.evaluation.judges import LabelerJudge
    from instructgpt.evaluation.suite import EvalConfig, run_eval

    out.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(out / "valid_prompts.jsonl", validation_prompts(config, count))
    panel = held_out_panel(config)
    evaluation = EvalConfig(
        models=(f"sft={run._sft_baseline(config, {})}", *(f"{n}={f}" for n, f in models.items())),
        baseline=baseline,
        judge="none",
        prompts_file=out / "valid_prompts.jsonl",
        tasks=("winrate",),
        task_limits=(f"winrate={count}",),
        win_max_new_tokens=config.eval_tokens,
        batch_size=config.eval_batch_size,
        seed=config.seed,
        out_dir=out,
        **settings,
    )
    results = run_eval(evaluation, judge=LabelerJudge(panel, name="held-out simulated labelers"))
    return results["winrate"]["per_model"], panel


if __name__ == "__main__":
    sys.exit(tyro.cli(main))
