"""Judge trained policies against SFT on PPO-validation prompts, with the RM's and the panel's mean scores (issue 18).

    .venv/bin/python runs/judge_points.py RUN_DIR NAME=MODEL_DIR ... [--prompts 256] [--temperature 0] [--out DIR]

RUN_DIR is a finished pipeline run of the preset; each NAME=MODEL_DIR is a policy (e.g. a point of
``runs/sweep_ppo_kl.py`` under ``RUN_DIR/sweeps/ppo-kl/<point>/final``). On ``--prompts`` prompts of the
run's PPO *validation* split (the sweep's, never test prompts) SFT and every policy answer at
``--temperature`` (0: greedy, as the eval stage), the run's held-out simulated labelers judge each
against SFT (win rate, 95% Wilson interval), and for every model the script prints the mean score the
held-out panel gives its answers (what the judge weighs, without its noise) and the mean score the
run's RM gives them (rendered as in RM training: response + EOS). The two means say how far a policy
moved on what it was trained for (the RM) and on what it is judged by (the panel), which a win rate
on a few hundred prompts, mostly ties and near-ties, resolves poorly. Writes ``OUT/results.json``
(``--out``, default ``RUN_DIR/sweeps/judge-points``), the answers and the comparisons.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import tyro
from sweep_ppo_kl import judge_against_sft, run_config  # runs/: the same config, prompts and judging as the sweep

from instructgpt.pipeline import run


def main(
    run_dir: tyro.conf.Positional[Path],
    models: tyro.conf.Positional[tuple[str, ...]],
    preset: str = "miniature",
    prompts: int = 256,
    temperature: float = 0.0,
    out: Path | None = None,
    seed: int | None = None,
) -> None:
    config = run_config(run_dir, preset, seed)
    out = out or run_dir / "sweeps" / "judge-points"
    named = dict(model.split("=", 1) for model in models)
    rates, panel = judge_against_sft(config, out, named, prompts, win_temperature=temperature, precision="bf16-weights")
    lines = (out / "responses.jsonl").read_text(encoding="utf-8").splitlines()
    means = mean_scores(run_dir, panel, [json.loads(line) for line in lines if line.strip()])
    summary = {"prompts": prompts, "split": "ppo valid", "temperature": temperature, "models": {}}
    print(f"\nagainst SFT, {prompts} PPO-validation prompts, temperature {temperature:g} (held-out panel, Wilson 95%)")
    for name, row in means.items():
        rate = rates.get(name)
        summary["models"][name] = {"win_rate": rate, **row}
        shown = f"{rate['rate']:.3f} [{rate['low']:.2f}, {rate['high']:.2f}]" if rate else "baseline"
        print(f"  {name:<16} {shown:<22} panel mean {row['panel_mean']:.4f}   RM mean {row['rm_mean']:+.3f}")
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out / 'results.json'}")


def mean_scores(run_dir: Path, panel, rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per model: the held-out panel's mean noiseless score and the run's RM mean score of its answers."""
    from instructgpt.models.reward import load_reward_model, score_texts

    rm, tokenizer = load_reward_model(str(run._load({}, run_dir, "rm")["model"]))
    by_model: dict[str, list[dict]] = {}
    for row in rows:
        by_model.setdefault(row["model"], []).append(row)
    out = {}
    for name, items in by_model.items():
        prompts, answers = [r["prompt"] for r in items], [r["response"] for r in items]
        measured = panel[0].scorer.measure([(p, [a]) for p, a in zip(prompts, answers)])
        weighted = [np.mean([m.features[0] @ labeler.weights for labeler in panel]) for m in measured]
        rm_scores = score_texts(rm, tokenizer, prompts, answers)
        out[name] = {"n": len(items), "panel_mean": float(np.mean(weighted)), "rm_mean": float(np.mean(rm_scores))}
    return out


if __name__ == "__main__":
    sys.exit(tyro.cli(main))
