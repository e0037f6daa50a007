"""How much preference the reward model can buy, without PPO: best-of-n on validation prompts (issue 18).

    .venv/bin/python runs/best_of_n.py RUN_DIR [--preset miniature] [--prompts 64] [--n 1 2 4 8 16]

RUN_DIR is a finished pipeline run of the preset. On the same ``--prompts`` PPO-*validation*
prompts as ``runs/sweep_ppo_kl.py`` (never the test prompts), the SFT baseline samples
``max(n)`` responses per prompt at temperature 1 (the PPO policy's starting distribution); the
run's reward model scores them; for each n, the response with the highest RM score among the first
n is judged against SFT's greedy response by the run's held-out simulated labelers, as the eval
stage judges PPO. n = 1 is a plain temperature-1 sample (the control). The "oracle" row picks,
among all max(n), the response the held-out panel itself scores highest (what a perfect RM would
pick), so the table splits the gap between SFT and a preferred policy into what the RM misses and
what optimisation against it would have to find. Best-of-n at KL = log n - (n - 1) / n nats from
SFT is the standard yardstick for an RL policy at the same KL.

``--seed`` is the run's seed (default: the preset's), which fixes its simulated panel.
``--reward-model`` picks with other RMs instead (e.g. trained with other settings, or on K = 9
rankings; several: every one picks from the same samples, its rows prefixed by its folder's run
name). Writes ``RUN_DIR/sweeps/NAME/summary.json`` (``--name``, default ``best-of-n``; and the
responses) and prints a table.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import tyro

# runs/: the same config, prompts and judges as the sweep
from sweep_ppo_kl import held_out_panel, rm_label, run_config, validation_prompts

from instructgpt.data.jsonl import write_jsonl_atomic
from instructgpt.pipeline import run


def main(
    run_dir: tyro.conf.Positional[Path],
    preset: str = "miniature",
    prompts: int = 64,
    n: tuple[int, ...] = (1, 2, 4, 8, 16),
    reward_model: tuple[Path, ...] = (),
    name: str = "best-of-n",
    seed: int | None = None,
) -> None:
    from instructgpt.evaluation.judges import LabelerJudge, blind_outcomes
    from instructgpt.evaluation.metrics import win_rate
    from instructgpt.models.generate import generate
    from instructgpt.models.loader import load_model
    from instructgpt.models.reward import load_reward_model, score_texts

    config = run_config(run_dir, preset, seed)
    chosen = validation_prompts(config, prompts)
    texts = [p.text for p in chosen]
    model, tokenizer = load_model(run._sft_baseline(config, {}))
    common = dict(max_new_tokens=config.eval_tokens, batch_size=64, autocast=run._autocast_dtype())
    most = max(n)
    repeated = [t for t in texts for _ in range(most)]
    greedy = generate(model, tokenizer, texts, temperature=0.0, **common)
    samples = generate(model, tokenizer, repeated, temperature=1.0, seed=config.seed, **common)
    del model
    drawn = [samples[i * most : (i + 1) * most] for i in range(len(texts))]
    pickers = reward_model or (Path(run._load({}, run_dir, "rm")["model"]),)
    all_scores = {}
    for path in pickers:
        rm, rm_tokenizer = load_reward_model(str(path))
        flat = score_texts(rm, rm_tokenizer, repeated, samples)
        all_scores["" if len(pickers) == 1 else f"{rm_label(path)}:"] = np.array(flat).reshape(-1, most)
        del rm
    panel = held_out_panel(config)
    judge = LabelerJudge(panel, name="held-out simulated labelers")
    picks = {
        f"{label}best-of-{k}": [d[int(np.argmax(s[:k]))] for d, s in zip(drawn, scores)]
        for label, scores in all_scores.items()
        for k in n
    }
    picks["oracle-of-" + str(most)] = [d[_panel_best(panel, t, d)] for t, d in zip(texts, drawn)]
    out = {"prompts": len(texts), "split": "ppo valid", "samples_per_prompt": most, "rows": {}}
    print(f"\nagainst SFT greedy on {len(texts)} PPO-validation prompts (held-out simulated labelers, 95% Wilson)")
    for row, responses in picks.items():
        outcomes = blind_outcomes(judge, texts, responses, greedy, np.random.default_rng(config.seed))
        rate = win_rate(outcomes).to_dict()
        k = int(row.rsplit("-", 1)[1])
        kl = math.log(k) - (k - 1) / k if "best" in row else float("nan")
        mean_scores = {label or "rm": _mean_picked(scores, drawn, responses) for label, scores in all_scores.items()}
        out["rows"][row] = {"win_rate": rate, "kl_nats": kl, "mean_rm_score": mean_scores}
        print(f"  {row:<24} {rate['rate']:.2f} [{rate['low']:.2f}, {rate['high']:.2f}]   KL {kl:.2f}")
    folder = run_dir / "sweeps" / name
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {"prompt": t, "greedy": g, "samples": d, "rm_scores": {k or "rm": s[i].tolist() for k, s in all_scores.items()}}
        for i, (t, g, d) in enumerate(zip(texts, greedy, drawn))
    ]
    write_jsonl_atomic(folder / "responses.jsonl", rows)
    (folder / "summary.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {folder / 'summary.json'}")


def _panel_best(panel, prompt: str, responses: list[str]) -> int:
    """The response with the highest mean score over the panel's labelers."""
    measured = panel[0].scorer.measure([(prompt, responses)])[0]
    return int(np.argmax(np.mean([labeler.scores(prompt, responses, measured) for labeler in panel], axis=0)))


def _mean_picked(scores: np.ndarray, drawn: list[list[str]], picked: list[str]) -> float:
    return float(np.mean([s[d.index(p)] for s, d, p in zip(scores, drawn, picked)]))


if __name__ == "__main__":
    sys.exit(tyro.cli(main))
