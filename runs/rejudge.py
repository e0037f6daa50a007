"""Judge stored answers again with today's simulated labelers (issue 18): the same models, a new judge.

    .venv/bin/python runs/rejudge.py RUN_DIR EVAL_DIR [--preset miniature] [--seed N] [--baseline sft] [--out FILE]

EVAL_DIR holds an evaluation's ``responses.jsonl`` (the eval stage's, or a sweep's ``eval`` folder); RUN_DIR is the
pipeline run whose held-out panel judged it (``rankings/panel.json``). Every model's answers are judged against
``--baseline``'s as the eval stage judges (blind pairs in the stage's seeded order), per test set and pooled, and
each model's share of answers that mostly copy the prompt (``originality`` under 0.5, i.e. over 75% of their
word bigrams are the prompt's) is counted. Use it when the labelers change: the models' answers are unchanged,
so the difference is the judge's alone (the RM and PPO were still trained on the old labelers' rankings).
Prints a table and writes JSON (default ``EVAL_DIR/rejudged.json``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import tyro
from sweep_ppo_kl import held_out_panel, run_config

from instructgpt.evaluation.judges import LabelerJudge
from instructgpt.evaluation.suite import judge_win_rates, task_rng
from instructgpt.labelers.simulated import originality


def main(
    run_dir: tyro.conf.Positional[Path],
    eval_dir: tyro.conf.Positional[Path],
    preset: str = "miniature",
    seed: int | None = None,
    baseline: str = "sft",
    out: Path | None = None,
) -> None:
    config = run_config(run_dir, preset, seed)
    judge = LabelerJudge(held_out_panel(config), name="held-out simulated labelers")
    figures = {"run": str(run_dir), "eval_dir": str(eval_dir)}
    figures.update(rejudge(judge, *stored_answers(eval_dir / "responses.jsonl"), baseline, config.seed))
    path = out or eval_dir / "rejudged.json"
    path.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    print(table(figures))


def rejudge(
    judge, prompts: list[str], sets: list[str], responses: dict[str, list[str]], baseline: str, seed: int
) -> dict:
    """Every model's win rates against ``baseline`` (pooled and per test set) and its share of echoes."""
    rates, _ = judge_win_rates(judge, prompts, responses, baseline, task_rng(seed, "blind-order"), sets=sets)
    echoes = {
        name: sum(originality(p, r) < 0.5 for p, r in zip(prompts, texts)) / len(texts)
        for name, texts in responses.items()
    }
    win_rates = {"pooled": rates["per_model"]}
    win_rates.update({s: part["per_model"] for s, part in rates.get("by_set", {}).items()})
    return {"baseline": baseline, "echo_share": echoes, "win_rates": win_rates}


def stored_answers(path: Path) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """Prompts, their test sets and each model's answers, in the order the evaluation stored them."""
    by_model: dict[str, list[str]] = defaultdict(list)
    prompts: list[str] = []
    sets: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if not by_model or row["model"] == next(iter(by_model)):
            prompts.append(row["prompt"])
            sets.append(row.get("set", ""))
        by_model[row["model"]].append(row["response"])
    return prompts, sets, dict(by_model)


def table(figures: dict) -> str:
    columns = list(figures["win_rates"])
    lines = [f"against {figures['baseline']} | " + " | ".join(columns) + " | answers copying the prompt"]
    for name, echo in figures["echo_share"].items():
        cells = []
        for column in columns:
            rate = figures["win_rates"][column].get(name)
            cells.append(f"{rate['rate']:.2f} [{rate['low']:.2f}, {rate['high']:.2f}]" if rate else "-")
        lines.append(f"{name} | " + " | ".join(cells) + f" | {echo:.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    tyro.cli(main)
