"""``python -m instructgpt.pipeline.summary RUN_DIR``: the headline figures of a finished pipeline run.

Reads only what the stages wrote (``stages.json``, the latest plan's stage names;
``<stage>/stage.json``, ``rm/summary.json``, ``rankings/panel.json``, ``eval/results.json``) and
prints, as plain text (and with ``--json`` as JSON): the base model (and its trimmed vocabulary's size, where the
run trimmed it), the wall time of every stage (and the peak
resident memory of each that ran in its own process, ``<stage>/process.json``); the win rate of
each model against the baseline with its 95% Wilson interval and win / tie / loss counts; the reward
model's validation accuracy on the training labelers' and on the held-out labelers' rankings; each PPO run's
RM score and KL on its validation prompts along the run (``<stage>/metrics.jsonl``'s ``validation/...``); and
the NLP scores (the alignment tax of PPO-ptx against PPO); with iterated rounds, each round's win
rates and RM accuracies. Missing pieces are skipped, so it also works on an unfinished run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

STAGES = ("prepare", "sft", "sft_ppo_init", "samples", "rankings", "rm", "select_sft", "ppo_ptx", "ppo", "eval")
ROUND_STAGES = ("eval", "samples", "rankings", "rm", "ppo_ptx", "ppo")  # in round-r/, round r's eval ran before r+1


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def collect(run_dir: Path) -> dict:
    """The headline figures of the run in ``run_dir`` (absent pieces left out)."""
    run_dir = Path(run_dir)
    out: dict = {"run_dir": str(run_dir), "seconds": {}}
    rounds = sorted((p for p in run_dir.glob("round-*") if p.name[6:].isdigit()), key=lambda p: int(p.name[6:]))
    in_rounds = [f"{folder.name}/{stage}" for folder in rounds for stage in ROUND_STAGES]
    plan = _read(run_dir / "stages.json")  # the latest plan: leftover folders of other configurations are skipped
    for stage in plan["stages"] if plan else [*STAGES[:-1], *in_rounds, STAGES[-1]]:
        record = _read(run_dir / stage / "stage.json")
        if record is not None:
            out["seconds"][stage] = round(record["seconds"], 1)
            process = _read(run_dir / stage / "process.json")  # a stage that ran in its own process
            if process is not None:
                out.setdefault("peak_rss_gib", {})[stage] = process["peak_rss_gib"]
    out["total_seconds"] = round(sum(out["seconds"].values()), 1)
    if plan and plan.get("model"):
        out["model"] = plan["model"]
        trimmed = _read(Path(plan["model"]) / "vocabulary.json")  # models/vocabulary.py
        if trimmed:
            out["vocabulary"] = {"source": trimmed["source"], "kept": len(trimmed["kept_ids"])}
    panel = _read(run_dir / "rankings" / "panel.json")
    if panel:
        out["panel"] = panel
    rm = _read(run_dir / "rm" / "summary.json")
    if rm:
        out["rm_accuracy"] = {
            group: rm[f"{group}_labelers"]["overall"] for group in ("training", "held_out") if f"{group}_labelers" in rm
        }
    selection = _read(run_dir / "select_sft" / "selection.json")
    if selection:
        out["sft_selection"] = {
            "chosen_epoch": selection["chosen_epoch"],
            "chosen_clearly": selection.get("chosen_clearly", "not recorded"),  # absent before 2026-12-07
            "mean_scores": {f"{c['epoch']:g}": c["mean_score"] for c in selection["candidates"]},
        }
    curves = {stage: _validation_curve(run_dir / stage / "metrics.jsonl") for stage in ("ppo", "ppo_ptx")}
    if any(curves.values()):
        out["ppo_validation"] = {stage: points for stage, points in curves.items() if points}
    results = _read(run_dir / "eval" / "results.json")
    if results:
        win = results.get("winrate", {})
        out["winrate"] = {
            "baseline": win.get("baseline"),
            "judge": win.get("judge_description"),
            "n_prompts": win.get("n_prompts"),
            "per_model": win.get("per_model", {}),
            "by_set": win.get("by_set", {}),
        }
        out["nlp"] = {
            name: {
                task: {k: v for k, v in scores.items() if k not in ("samples", "per_item")}
                for task, scores in r["nlp"].items()
            }
            for name, r in results.get("per_model", {}).items()
            if "nlp" in r
        }
        out["ptx_minus_ppo"] = {
            row["metric"].split("/")[1]: {k: row[k] for k in ("difference", "ci", "n", "contains_zero")}
            for row in results.get("differences", [])
            if (row["model"], row["reference"]) == ("ppo-ptx", "ppo") and row["metric"].startswith("nlp/")
        }
        if "rounds" in results:
            out["rounds"] = results["rounds"]
        out["eval_config"] = {
            k: results.get("config", {}).get(k) for k in ("limit", "task_limits", "win_max_new_tokens", "precision")
        }
    return out


def _validation_curve(log: Path) -> list[dict]:
    """A PPO run's validation points (training/ppo_validation.py): iteration, RM score, its gain over iteration 0
    with the 95% interval, KL, EOS fraction."""
    from instructgpt.training.metrics import read_metrics

    if not log.is_file():
        return []
    rows = read_metrics(log.parent)
    keys = ("score", "score_gain", "score_gain_low", "score_gain_high", "kl", "eos_fraction", "prompts")
    return [{"step": r["step"], **{k: r[f"validation/{k}"] for k in keys}} for r in rows if "validation/score" in r]


def _validation_lines(curves: dict) -> list[str]:
    prompts = int(next(iter(curves.values()))[0]["prompts"])
    lines = [
        f"PPO: RM score on {prompts} validation prompts (the same prompts and uniforms at every point), its gain over "
        "iteration 0 with the 95% t interval, and the KL to the reference on those answers",
        "run       iteration   score   gain  [95% CI]          KL   EOS",
    ]
    for stage, points in curves.items():
        for p in points:
            lines.append(
                f"{stage:<9} {p['step']:>9} {p['score']:>+7.2f} {p['score_gain']:>+6.2f}  "
                f"[{p['score_gain_low']:+.2f}, {p['score_gain_high']:+.2f}]  {p['kl']:>6.2f}  {p['eos_fraction']:.2f}"
            )
    return lines


def _win_table(w: dict, part: dict, title: str) -> list[str]:
    lines = [
        f"win rate against {w['baseline']} ({title}{part['n_prompts']} prompts; judge: {w['judge']}; ties count half)",
        "model        rate   95% CI          wins ties losses",
    ]
    for name, r in part["per_model"].items():
        lines.append(
            f"{name:<12} {r['rate']:.2f}   [{r['low']:.2f}, {r['high']:.2f}]    {r['wins']:>4} {r['ties']:>4} "
            f"{r['losses']:>6}"
        )
    return lines


def render(figures: dict) -> str:
    """The figures as a few plain-text tables."""
    width = max([12, *map(len, figures["seconds"])])
    peaks = figures.get("peak_rss_gib", {})
    lines = [f"run: {figures['run_dir']}", "", f"{'stage':<{width}} seconds" + ("  peak GiB" if peaks else "")]
    lines += [
        f"{stage:<{width}} {seconds:>7.0f}" + (f"  {peaks[stage]:>8.1f}" if stage in peaks else "")
        for stage, seconds in figures["seconds"].items()
    ]
    lines.append(f"{'total':<{width}} {figures['total_seconds']:>7.0f}  ({figures['total_seconds'] / 60:.1f} min)")
    if "vocabulary" in figures:
        v = figures["vocabulary"]
        lines += ["", f"base model: {v['source']}, vocabulary trimmed to the bundled data's {v['kept']:,} tokens"]
    elif "model" in figures:
        lines += ["", f"base model: {figures['model']}"]
    if "panel" in figures:
        p = figures["panel"]
        lines += [
            "",
            f"rankings: {p.get('simulated', 0)} simulated + {p.get('labeling_app', 0)} labeling-app + "
            f"{p.get('human')} human; training-labeler agreement "
            + ("n/a" if p.get("agreement") is None else f"{p['agreement']:.1%}"),
        ]
        if "validation_rankings_note" in p:
            lines.append(f"RM validation rankings: {p['validation_rankings_note']}")
    if "rm_accuracy" in figures:
        lines += ["", "reward model validation accuracy (pairwise; on the simulated panel's rankings)"]
        for group, r in figures["rm_accuracy"].items():
            lines.append(
                f"  {group + ' labelers':<20} {r['accuracy']:.3f}  ({r['comparisons']} comparisons, {r['prompts']} "
                "prompts)"
            )
    if "sft_selection" in figures:
        lines += ["", _selection_line(figures["sft_selection"])]
    if "ppo_validation" in figures:
        lines += ["", *_validation_lines(figures["ppo_validation"])]
    if "winrate" in figures:
        w = figures["winrate"]
        parts = {f"test set {name}": part for name, part in w.get("by_set", {}).items()}
        pooled = "all test sets pooled" if parts else ""
        for title, part in {**parts, pooled: {"n_prompts": w["n_prompts"], "per_model": w["per_model"]}}.items():
            lines += ["", *_win_table(w, part, f"{title}, " if title else "")]
    if len(figures.get("rounds", [])) > 1:
        models = list(dict.fromkeys(m for r in figures["rounds"] for m in r["winrate"]))
        lines += [
            "",
            "rounds: win rate against the SFT baseline; RM accuracy on training / held-out labelers' rankings",
            "round  rankings " + " ".join(f"{m:>8}" for m in models) + "  rm train  rm held-out",
        ]
        for r in figures["rounds"]:
            rates = " ".join(f"{r['winrate'].get(m, {}).get('rate', float('nan')):>8.2f}" for m in models)
            acc = r["rm_accuracy"]
            lines.append(
                f"{r['round']:>5}  {r['rm_training_rankings']:>8} {rates}  {_rate(acc.get('training')):>8}  "
                f"{_rate(acc.get('held_out')):>11}"
            )
    if figures.get("nlp"):
        tasks = list(next(iter(figures["nlp"].values())))
        lines += [
            "",
            "NLP tasks (DROP / SQuADv2: F1; fr_en: BLEU; 0-100; 95% bootstrap interval over items)",
            "model        " + " ".join(f"{t:>22}" for t in tasks),
        ]
        for name, scores in figures["nlp"].items():
            lines.append(f"{name:<12} " + " ".join(f"{_score_with_ci(scores[t]):>22}" for t in tasks))
        tax = figures.get("ptx_minus_ppo") or _plain_differences(figures["nlp"], tasks)
        if tax:
            lines.append(
                f"{'ptx - ppo':<12} "
                + " ".join(f"{_difference(tax.get(t)):>22}" for t in tasks)
                + "   (paired over the same items)"
            )
    return "\n".join(lines)


def _selection_line(selection: dict) -> str:
    scores = ", ".join(f"{e}: {m:+.3f}" for e, m in selection["mean_scores"].items() if m is not None)
    clear = {True: "every other epoch's paired difference below 0", False: "inside the noise", None: "one candidate"}
    how = clear.get(selection["chosen_clearly"], "noise not recorded")
    return f"SFT baseline: epoch {selection['chosen_epoch']:g} by mean RM score ({scores}; {how})"


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _score_with_ci(scores: dict) -> str:
    key = "f1" if "f1" in scores else "bleu"
    value, ci = scores.get(key, float("nan")), scores.get(f"{key}_ci")
    return f"{value:.1f} [{ci[0]:.1f}, {ci[1]:.1f}]" if ci and None not in ci else f"{value:.1f}"


def _plain_differences(nlp: dict, tasks: list[str]) -> dict:
    """ptx - ppo without an interval, for results written before paired differences existed."""
    if "ppo" not in nlp or "ppo-ptx" not in nlp:
        return {}
    value = lambda scores: scores.get("f1", scores.get("bleu", float("nan")))  # noqa: E731
    return {t: {"difference": value(nlp["ppo-ptx"][t]) - value(nlp["ppo"][t]), "ci": [None, None]} for t in tasks}


def _difference(row: dict | None) -> str:
    if row is None:
        return "n/a"
    low, high = row["ci"]
    interval = f" [{low:+.1f}, {high:+.1f}]" if low is not None and high is not None and low == low else ""
    return f"{row['difference']:+.1f}{interval}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m instructgpt.pipeline.summary RUN_DIR [--json]")
        return 0 if argv else 2
    figures = collect(Path(argv[0]))
    print(json.dumps(figures, indent=1) if "--json" in argv else render(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
