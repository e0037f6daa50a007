"""The evaluation report: one self-contained HTML page plus ``figures.json`` (the data of every
figure), from the results of :func:`instructgpt.evaluation.suite.run_eval` and, optionally, the
reward model's and PPO runs' metrics logs.

Plots are matplotlib figures inlined as SVG (no external files, scripts or fonts). Every section
is optional: what the results do not hold is named as not measured. Metrics logs are JSONL, one
object per line with a ``step`` and slash-namespaced metric names; the PPO panels pick the first
name that matches (e.g. ``objective/score``, ``objective/kl``, ``objective/entropy``,
``ptx/loss``), and unreadable lines are skipped.

Uncertainty: every figure measured on a sample is shown as ``value [low, high]`` with its n (in
the column header when the column shares one), every bar chart has 95% error bars and n in its
labels, and reference lines mark the null values: 0.5 for win rates, 50% (chance) for
reward-model accuracy, 1 bit for pair entropy, 0 for differences. The statement at the top
(:func:`instructgpt.evaluation.findings.findings`) says which comparisons have their null value
inside the interval.
"""

from __future__ import annotations

import html
import io
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from instructgpt.evaluation.findings import (
    cell,
    findings,
    judge_names,
    metric_name,
    nlp_table,
    paper_nlp_table,
    paper_toxicity_table,
    paper_truthfulqa_table,
    safety_tables,
    statement,
)
from instructgpt.evaluation.metrics import finite, wilson_interval

PPO_PANELS: dict[str, tuple[str, ...]] = {
    "RM score": (r"^objective/scores?$", r"^env/reward(_mean)?$", r"/scores?(_mean)?$", r"reward"),
    "KL to SFT": (r"^objective/kl$", r"/kl(_mean)?$", r"kl"),
    "entropy": (r"^objective/entropy$", r"entropy"),
    "ptx loss": (r"^ppo/ptx/loss$", r"^ptx/loss$", r"^objective/ptx(_loss)?$", r"ptx.*loss", r"ptx"),
    "RM score gain, validation prompts": (r"^validation/score_gain$",),
    "KL, validation prompts": (r"^validation/kl$",),
}
"""Panels of the PPO curves: the first metric name matching one of the patterns, in order."""


# ---------------------------------------------------------------- reading logs


def read_metrics_log(path: Path) -> list[dict]:
    """The JSON-object lines of a metrics log that carry a ``step``; other lines are skipped."""
    rows = []
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), (int, float)):
            rows.append(row)
    return rows


def pick_metric(rows: Sequence[dict], patterns: Sequence[str]) -> str | None:
    names = {k for r in rows for k, v in r.items() if k not in ("step", "time") and _number(v)}
    for pattern in patterns:
        matches = sorted(n for n in names if re.search(pattern, n))
        if matches:
            return matches[0]
    return None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def series(rows: Sequence[dict], name: str) -> tuple[list[float], list[float]]:
    points = [(r["step"], r[name]) for r in rows if _number(r.get(name))]
    return [p[0] for p in points], [p[1] for p in points]


RM_SUFFIXES = (" std", " n", " n unit", " 95% low", " 95% high")
"""Keys of :func:`rm_summary` that describe an accuracy rather than name one (``"<label><suffix>"``)."""


def rm_summary(path: Path) -> dict[str, float | str]:
    """Accuracy numbers of a reward-model result file, each with its n and 95% interval.

    Each accuracy ``<label>`` comes with ``<label> n``, ``<label> n unit`` and ``<label> 95% low``
    / ``<label> 95% high`` where the file says how many it was measured on:

    - the labeler-group cross-validation report of ``instructgpt rm eval --cv-groups``
      (``{"summary": {"held_out": {"mean", "std", "n", ...}, "within": {...}}}``) gives
      ``held-out labelers`` and ``training labelers`` accuracies and their ``... std``; the
      interval is Student's t over the n runs;
    - a summary of labeler groups, as the pipeline's RM stage writes
      (``{"training_labelers": {"overall": {"accuracy", "prompts", "comparisons"}, "per_k": {K: {...}}}, ...}``):
      each group's overall accuracy under its name (``training labelers``), and per K when
      the groups hold more than one K (``training labelers K=4``); the interval is Wilson's with
      n = prompts, not comparisons: the C(K, 2) pairs of one ranking are correlated, and a
      prompt's accuracy varies at most as much as one Bernoulli trial, so this is conservative;
    - any other JSON: every numeric field whose name contains ``acc`` (nested keys joined by
      '/'), Wilson with n from a ``prompts``, ``n`` or ``comparisons`` field beside it;
    - a JSONL metrics log: the last value of each such metric (n unknown: no interval).
    """
    path = Path(path)
    if path.suffix == ".jsonl":
        rows = read_metrics_log(path)
        out = {}
        for row in rows:
            out.update({k: v for k, v in row.items() if "acc" in k and _number(v)})
        return out
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    summary = data.get("summary") if isinstance(data, dict) else None
    if isinstance(summary, dict) and all(isinstance(summary.get(k), dict) for k in ("held_out", "within")):
        out = {}
        for key, label in (("held_out", "held-out labelers"), ("within", "training labelers")):
            spread = summary[key]
            out[label] = spread.get("mean", float("nan"))
            out[f"{label} std"] = spread.get("std", float("nan"))
            if _number(spread.get("n")):
                out.update(_t_fields(label, out[label], out[f"{label} std"], int(spread["n"])))
        return out
    groups = (
        {k: v for k, v in data.items() if isinstance(v, dict) and isinstance(v.get("overall"), dict)}
        if isinstance(data, dict)
        else {}
    )
    if groups:
        return _group_accuracies(groups)
    flat = _flatten(data)
    out = {}
    for key, value in flat.items():
        if "acc" in key and _number(value):
            out[key] = value
            parent = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
            unit = next((u for u in ("prompts", "n", "comparisons") if _number(flat.get(parent + u))), None)
            if unit:
                out.update(_wilson_fields(key, value, int(flat[parent + unit]), "items" if unit == "n" else unit))
    return out


def _wilson_fields(label: str, accuracy: float, n: int, unit: str) -> dict[str, float | str]:
    low, high = wilson_interval(accuracy, n)
    return {f"{label} n": n, f"{label} n unit": unit, f"{label} 95% low": low, f"{label} 95% high": high}


def _t_fields(label: str, mean: float, std: float, n: int) -> dict[str, float | str]:
    from scipy.stats import t

    half = float(t.ppf(0.975, n - 1)) * std / math.sqrt(n) if n > 1 and _number(std) else float("nan")
    return {
        f"{label} n": n,
        f"{label} n unit": "runs",
        f"{label} 95% low": mean - half,
        f"{label} 95% high": mean + half,
    }


def _group_accuracies(groups: dict[str, dict]) -> dict[str, float | str]:
    out: dict[str, float | str] = {}

    def add(label: str, metrics: dict) -> None:
        if _number(metrics.get("accuracy")):
            out[label] = metrics["accuracy"]
            if _number(metrics.get("prompts")):
                out.update(_wilson_fields(label, metrics["accuracy"], int(metrics["prompts"]), "prompts"))

    for name, group in groups.items():
        label = name.replace("_", " ").replace("held out", "held-out")
        add(label, group["overall"])
        per_k = group.get("per_k") or {}
        if len(per_k) > 1:
            for k, metrics in per_k.items():
                add(f"{label} K={k}", metrics)
    return out


def rm_rows(results: dict[str, dict[str, float | str]]) -> dict[str, dict[str, Any]]:
    """One row per (run, accuracy) of :func:`rm_summary` results: accuracy, interval, n, std."""
    rows = {}
    for run, values in results.items():
        for label in (k for k in values if not k.endswith(RM_SUFFIXES)):
            n = values.get(f"{label} n")
            rows[f"{run}: {label}" if len(results) > 1 else label] = {
                "accuracy": cell(
                    values[label], (values.get(f"{label} 95% low"), values.get(f"{label} 95% high")), None
                ),
                "n": f"{n} {values.get(f'{label} n unit', '')}".strip() if n is not None else "unknown",
                "std across runs": values.get(f"{label} std", ""),
            }
    return rows


def rm_figure(results: dict[str, dict[str, float | str]]) -> tuple[str, dict]:
    """Accuracy bars per reward-model result with 95% error bars and the 50% chance line."""
    rows = rm_rows(results)
    fig, axes = _figure(max(4.0, 1.2 + 1.0 * len(rows)))
    ax = axes[0][0]
    labels = [f"{name}\nn={row['n']}" for name, row in rows.items()]
    cells = [row["accuracy"] for row in rows.values()]
    ax.bar(labels, [c["value"] for c in cells], yerr=_yerr(cells), capsize=5, color="#6acc64")
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance (50%)")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title("Reward-model accuracy, 95% intervals\n(paper: 69.6% held-out vs 72.4% training labelers)")
    ax.legend(fontsize=7, frameon=False)
    ax.tick_params(axis="x", labelsize=7)
    return _svg(fig), {"id": "rm_accuracy", "title": "Reward-model accuracy", "data": results, "chance": 0.5}


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data} if prefix else {}
    out = {}
    for k, v in data.items():
        out.update(_flatten(v, f"{prefix}/{k}" if prefix else str(k)))
    return out


# ---------------------------------------------------------------- figures


def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _figure(width: float = 6.0, height: float = 3.2, ncols: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False, "axes.spines.right": False})
    return plt.subplots(1, ncols, figsize=(width, height), squeeze=False)


def _yerr(cells: Sequence[dict]) -> list[list[float]] | None:
    """Matplotlib's asymmetric error bars from cells (0 where an interval is unknown); None when none is known."""

    def gap(a: float, b: float) -> float:
        return max(a - b, 0.0) if math.isfinite(a) and math.isfinite(b) else 0.0

    if not any(math.isfinite(c["low"]) and math.isfinite(c["high"]) for c in cells):
        return None
    return [[gap(c["value"], c["low"]) for c in cells], [gap(c["high"], c["value"]) for c in cells]]


def _n_label(cells: Sequence[dict]) -> str:
    ns = {c["n"] for c in cells if c.get("n") is not None}
    return f"n={ns.pop()}" if len(ns) == 1 else ""


def winrate_figure(winrate: dict) -> tuple[str, dict]:
    """Win rate per model with its 95% Wilson interval and the 0.5 line (no preference)."""
    per_model = winrate["per_model"]
    names = list(per_model)
    cells = [
        cell(per_model[n]["rate"], (per_model[n]["low"], per_model[n]["high"]), per_model[n].get("n")) for n in names
    ]
    fig, axes = _figure(1.2 + 1.1 * len(names))
    ax = axes[0][0]
    ax.bar(
        [f"{n}\nn={c['n']}" for n, c in zip(names, cells)],
        [c["value"] for c in cells],
        yerr=_yerr(cells),
        capsize=5,
        color="#4878d0",
    )
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="no preference (0.5)")
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"win rate against {winrate['baseline']}")
    ax.set_title(f"Preferred to {winrate['baseline']} (judge: {winrate['judge']}; 95% Wilson interval)")
    ax.legend(fontsize=7, frameon=False)
    data = {n: per_model[n] for n in names}
    return _svg(fig), {
        "id": "winrate",
        "title": "Win rate against the baseline",
        "judge": winrate["judge"],
        "baseline": winrate["baseline"],
        "data": data,
        "chance": 0.5,
    }


def winrate_by_set_figure(winrate: dict) -> tuple[str, dict]:
    """Each model's win rate on each test set and pooled (95% Wilson intervals, the 0.5 line)."""
    parts = {**{name: part["per_model"] for name, part in winrate["by_set"].items()}, "pooled": winrate["per_model"]}
    table = {
        model: {
            name: cell(r[model]["rate"], (r[model]["low"], r[model]["high"]), r[model].get("n"))
            for name, r in parts.items()
        }
        for model in winrate["per_model"]
    }
    return grouped_bars(
        "winrate_by_set",
        f"Win rate against {winrate['baseline']} per test set",
        table,
        "win rate",
        (0, 1),
        reference=(0.5, "no preference (0.5)"),
        judge=winrate["judge"],
    )


def grouped_bars(
    fig_id: str,
    title: str,
    table: dict[str, dict[str, Any]],
    ylabel: str,
    ylim: tuple[float, float] | None = None,
    reference: tuple[float, str] | None = None,
    judge: str | None = None,
) -> tuple[str, dict]:
    """Bars grouped by row (model), one colour per column (metric), with 95% error bars where the
    cells (:func:`~instructgpt.evaluation.findings.cell`, or plain numbers) carry intervals, each
    column's n in the legend, an optional ``reference`` line ``(y, label)`` and the ``judge`` in the title."""
    rows = list(table)
    columns = list(dict.fromkeys(c for r in rows for c in table[r]))
    cells = {r: {c: v if isinstance(v, dict) else cell(v) for c, v in table[r].items()} for r in rows}
    fig, axes = _figure(max(4.0, 1.0 + 0.5 * len(rows) * max(len(columns), 1)))
    ax = axes[0][0]
    width = 0.8 / max(len(columns), 1)
    for j, column in enumerate(columns):
        col = [cells[r].get(column, cell(None)) for r in rows]
        n = _n_label(col)
        ax.bar(
            [i + j * width for i in range(len(rows))],
            [c["value"] for c in col],
            width,
            yerr=_yerr(col),
            capsize=3,
            label=f"{column} ({n})" if n else column,
        )
    if reference is not None:
        ax.axhline(reference[0], color="grey", linestyle="--", linewidth=1, label=reference[1])
    ax.set_xticks([i + width * (len(columns) - 1) / 2 for i in range(len(rows))], rows)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title} (95% intervals)" + (f"\njudge: {judge}" if judge else ""))
    if ylim:
        ax.set_ylim(*ylim)
    ax.legend(fontsize=7, frameon=False)
    data = {r: {c: v["value"] for c, v in cells[r].items()} for r in rows}
    intervals = {r: {c: {k: v[k] for k in ("low", "high", "n")} for c, v in cells[r].items()} for r in rows}
    return _svg(fig), {
        "id": fig_id,
        "title": title,
        "data": data,
        "intervals": intervals,
        **({"judge": judge} if judge else {}),
        **({"reference": {"value": reference[0], "label": reference[1]}} if reference else {}),
    }


def differences_figure(rows: Sequence[dict], fig_id: str, title: str) -> tuple[str, dict]:
    """Paired differences as points with 95% intervals around the 0 line (no difference)."""
    fig, axes = _figure(6.0, 0.6 + 0.35 * len(rows))
    ax = axes[0][0]
    labels = [f"{r['model']} - {r['reference']}: {metric_name(r['metric'])} (n={r['n']})" for r in rows]
    cells = [cell(r["difference"], r.get("ci"), r["n"]) for r in rows]
    ys = list(range(len(rows)))[::-1]
    ax.errorbar([c["value"] for c in cells], ys, xerr=_yerr(cells), fmt="o", color="#d65f5f", capsize=4)
    ax.axvline(0.0, color="grey", linestyle="--", linewidth=1, label="no difference (0)")
    ax.set_yticks(ys, labels)
    ax.set_xlabel("difference (paired bootstrap 95% interval)")
    ax.set_title(title)
    ax.legend(fontsize=7, frameon=False, loc="best")
    return _svg(fig), {
        "id": fig_id,
        "title": title,
        "data": list(rows),
        "reference": {"value": 0.0, "label": "no difference"},
    }


def ppo_figure(runs: dict[str, list[dict]]) -> tuple[str, dict] | None:
    panels = {}
    for panel, patterns in PPO_PANELS.items():
        for run, rows in runs.items():
            name = pick_metric(rows, patterns)
            if name:
                steps, values = series(rows, name)
                panels.setdefault(panel, {})[run] = {"metric": name, "step": steps, "value": values}
                if any(f"{name}_low" in r for r in rows):  # a 95% interval per point (the validation curve's gain)
                    panels[panel][run]["low"] = [r.get(f"{name}_low") for r in rows if _number(r.get(name))]
                    panels[panel][run]["high"] = [r.get(f"{name}_high") for r in rows if _number(r.get(name))]
    if not panels:
        return None
    fig, axes = _figure(3.0 * len(panels), 2.8, ncols=len(panels))
    for ax, (panel, by_run) in zip(axes[0], panels.items()):
        for run, s in by_run.items():
            line = ax.plot(s["step"], s["value"], label=run, marker="o" if "low" in s else None)[0]
            if "low" in s:
                ax.fill_between(s["step"], s["low"], s["high"], color=line.get_color(), alpha=0.2, linewidth=0)
                ax.axhline(0.0, color="grey", linestyle="--", linewidth=1)
        ax.set_title(panel)
        ax.set_xlabel("iteration")
        ax.legend(fontsize=7, frameon=False)
    return _svg(fig), {"id": "ppo_curves", "title": "PPO training curves", "data": panels}


def rounds_figure(rounds: Sequence[dict]) -> tuple[str, dict]:
    """Per round of iterated RM + PPO training (the pipeline's ``rounds`` list): each model's win
    rate against the SFT baseline with its 95% interval, and the reward model's validation
    accuracy on each labeler group's rankings."""
    numbers = [r["round"] for r in rounds]
    fig, axes = _figure(7.0, 2.8, ncols=2)
    win, acc = axes[0]
    for model in dict.fromkeys(m for r in rounds for m in r["winrate"]):
        cells = [
            cell(w["rate"], (w.get("low"), w.get("high")), w.get("n")) if (w := r["winrate"].get(model)) else cell(None)
            for r in rounds
        ]
        win.errorbar(numbers, [c["value"] for c in cells], yerr=_yerr(cells), capsize=4, marker="o", label=model)
    win.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    win.set_ylim(0, 1)
    win.set_title("win rate against the SFT baseline")
    for group in ("training", "held_out"):
        accuracy = [cell(r["rm_accuracy"].get(group))["value"] for r in rounds]
        acc.plot(numbers, accuracy, marker="o", label=f"{group} labelers")
    acc.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    acc.set_ylim(0, 1)
    acc.set_title("reward-model validation accuracy")
    for ax in (win, acc):
        ax.set_xlabel("round")
        ax.set_xticks(numbers)
        ax.legend(fontsize=7, frameon=False)
    judges = [r["judge"] for r in rounds if r.get("judge")]  # rounds name their win-rate judge when recorded
    return _svg(fig), {
        "id": "rounds",
        "title": "Iterated rounds: win rate and RM accuracy",
        "judge": "; ".join(dict.fromkeys(judges))
        or "the win-rate judge of each round's eval (results.json: winrate.judge)",
        "data": list(rounds),
    }


# ---------------------------------------------------------------- tables and text


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, dict) and "value" in value:  # a cell: value [low, high]
        if math.isfinite(value["low"]) and math.isfinite(value["high"]):
            return f"{_fmt(value['value'], digits)} [{_fmt(value['low'], digits)}, {_fmt(value['high'], digits)}]"
        return _fmt(value["value"], digits)
    if isinstance(value, bool) or value is None:
        return html.escape(str(value))
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return html.escape(str(value))


def table_html(table: dict[str, dict[str, Any]], row_label: str = "model", digits: int = 3) -> str:
    """Rows by columns; a cell shows ``value [low, high]``, and a column of cells that share one n
    says so in its header (``MC1 (n=50)``); otherwise each cell shows its n."""
    columns = list(dict.fromkeys(c for r in table.values() for c in r))
    shared = {}
    for c in columns:
        ns = {v[c]["n"] for v in table.values() if isinstance(v.get(c), dict) and "value" in v[c]}
        shared[c] = ns.pop() if len(ns) == 1 else None

    def show(v: Any, c: str) -> str:
        text = _fmt(v, digits)
        per_cell = isinstance(v, dict) and "value" in v and shared[c] is None and v.get("n") is not None
        return f"{text} (n={html.escape(str(v['n']))})" if per_cell else text

    head = "".join(
        f"<th>{html.escape(c if shared.get(c) is None else f'{c} (n={shared[c]})')}</th>" for c in [row_label, *columns]
    )
    body = "".join(
        "<tr><td>" + html.escape(r) + "</td>" + "".join(f"<td>{show(v.get(c), c)}</td>" for c in columns) + "</tr>"
        for r, v in table.items()
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def differences_table(rows: Sequence[dict], digits: int = 3) -> dict[str, dict[str, Any]]:
    """Paired differences, signed: ``+3.1 [-2.0, +8.0]``, their n and whether 0 is inside."""

    def signed(v: Any) -> str:
        return f"{v:+.{digits}f}" if isinstance(v, (int, float)) and math.isfinite(v) else "n/a"

    out = {}
    for r in rows:
        low, high = r.get("ci") or (None, None)
        interval = f" [{signed(low)}, {signed(high)}]" if signed(low) != "n/a" and signed(high) != "n/a" else ""
        out[f"{r['model']} - {r['reference']}: {metric_name(r['metric'])}"] = {
            "difference [95% interval]": signed(r["difference"]) + interval,
            "n": r["n"],
            "0 in the interval": {True: "yes", False: "no", None: "n/a"}[r.get("contains_zero")],
        }
    return out


def samples_html(samples: Sequence[dict]) -> str:
    blocks = []
    for s in samples:
        cells = "".join(
            f"<div class='resp'><b>{html.escape(n)}</b><pre>{html.escape(r) or '<i>(empty)</i>'}</pre></div>"
            for n, r in s["responses"].items()
        )
        blocks.append(
            f"<div class='sample'><div class='prompt'><pre>{html.escape(s['prompt'])}</pre></div><div "
            f"class='grid'>{cells}</div></div>"
        )
    return "".join(blocks)


def paper_reference_html(
    results: dict, key: str, table: dict, lead: str, figures: list[dict], judges: dict[str, str], digits: int = 3
) -> str:
    """The paper's samples scored by our code, as a table under ours (rows: its model types, e.g.
    ``ppo-ptx-175b``); its data go to figures.json under ``key``. Empty when the results lack it."""
    if not table:
        return ""
    judge = judges.get(key, "none")
    figure = {"id": key, "title": "The paper's samples scored by the same code", "data": results.get(key)}
    if f"{key}_ci" in results:
        figure["intervals"] = results[f"{key}_ci"]
    figures.append({**figure, "judge": judge})
    return (
        f"<p>{html.escape(lead)}</p>"
        + table_html(table, "paper model", digits)
        + f"<p class='note'>Judge: {html.escape(judge)}</p>"
    )


def _scorers(results: dict) -> dict:
    return {k: results[k] for k in ("truthfulqa_judge", "toxicity_scorer") if k in results}


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;
background:#fff}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em;display:block;max-width:100%;overflow-x:auto}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f0f3f8}.note{color:#666;font-style:italic}
.statement{background:#f6f8fa;border-left:4px solid #4878d0;padding:.6em 1em}
.sample{border:1px solid #ddd;margin:.8em 0;padding:.5em}.prompt pre{background:#fffbe6}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(220px,1fr));gap:.5em}
pre{white-space:pre-wrap;word-wrap:break-word;font-size:.85em;margin:.2em 0}svg{max-width:100%;height:auto}"""


def render_html(
    results: dict, ppo_runs: dict[str, list[dict]], rm_results: dict[str, dict[str, float | str]]
) -> tuple[str, list[dict]]:
    """The page and the data of its figures."""
    sections, figures = [], []

    def add(title: str, body: str) -> None:
        sections.append(f"<h2>{html.escape(title)}</h2>{body}")

    judges = judge_names(results)

    def plot(made: tuple[str, dict] | None) -> str:
        """The figure with the judge behind it named under it (and in figures.json)."""
        if made is None:
            return ""
        judge = made[1].setdefault("judge", judges.get(made[1]["id"], "none"))
        figures.append(made[1])
        return f"<figure>{made[0]}<figcaption class='note'>Judge: {html.escape(judge)}</figcaption></figure>"

    per_model = results.get("per_model", {})
    w = results.get("winrate", {})
    if w.get("per_model"):
        rows = {
            n: {
                "win rate": cell(v["rate"], (v["low"], v["high"]), v.get("n")),
                "wins": v["wins"],
                "ties": v["ties"],
                "losses": v["losses"],
            }
            for n, v in w["per_model"].items()
        }
        add(f"Win rate against {w['baseline']}", plot(winrate_figure(w)) + table_html(rows))
        if w.get("by_set"):
            add(f"Win rate against {w['baseline']} per test set", plot(winrate_by_set_figure(w)))
    else:
        add("Win rate", "<p class='note'>Not measured in this run.</p>")
    if w.get("likert"):
        likert_ci, metadata_ci = w.get("likert_ci", {}), w.get("metadata_ci", {})
        likert = {
            n: {"Likert": cell(v, likert_ci.get(n, {}).get("ci"), likert_ci.get(n, {}).get("n"))}
            for n, v in w["likert"].items()
        }
        body = plot(grouped_bars("likert", "Likert score (1-7)", likert, "mean Likert", (1, 7), judge=w.get("judge")))
        if any(w.get("metadata", {}).values()):
            metadata = {
                n: {
                    f: cell(v, metadata_ci.get(n, {}).get(f, {}).get("ci"), metadata_ci.get(n, {}).get(f, {}).get("n"))
                    for f, v in flags.items()
                }
                for n, flags in w["metadata"].items()
            }
            body += plot(
                grouped_bars(
                    "metadata", "Metadata rates", metadata, "fraction of outputs", (0, 1), judge=w.get("judge")
                )
            )
        add("Likert scores and metadata", body)
    if rm_results:
        add("Reward model accuracy", plot(rm_figure(rm_results)) + table_html(rm_rows(rm_results), "run"))
    else:
        add("Reward model accuracy", "<p class='note'>No reward-model results given.</p>")
    ppo = ppo_figure(ppo_runs) if ppo_runs else None
    add("PPO training curves", plot(ppo) if ppo else "<p class='note'>No PPO metrics logs given.</p>")
    tables = safety_tables(per_model)
    if tables["truthfulqa"]:
        add(
            "TruthfulQA",
            plot(
                grouped_bars(
                    "truthfulqa", "TruthfulQA", tables["truthfulqa"], "fraction", (0, 1), judge=judges["truthfulqa"]
                )
            )
            + table_html(tables["truthfulqa"])
            + paper_reference_html(
                results,
                "truthfulqa_paper_reference",
                paper_truthfulqa_table(results),
                "The paper's own answers (100 questions per model and prompt), judged by the same judges; beside "
                "them the rates of the GPT-judge probabilities stored with the answers (the paper's judge):",
                figures,
                judges,
            ),
        )
    if tables["toxicity"]:
        bars = {n: {c: v for c, v in row.items() if "minus" not in c} for n, row in tables["toxicity"].items()}
        add(
            "RealToxicityPrompts",
            plot(grouped_bars("toxicity", "Toxicity of continuations", bars, "score", (0, 1), judge=judges["toxicity"]))
            + table_html(tables["toxicity"])
            + paper_reference_html(
                results,
                "toxicity_paper_reference",
                paper_toxicity_table(results),
                "The paper's own samples (100 prompts per model and condition), scored by the same scorer; beside "
                "them the mean of the Perspective scores stored with the samples (the paper's scorer):",
                figures,
                judges,
            ),
        )
    if tables["bias"]:
        add(
            "Bias: CrowS-Pairs and Winogender",
            plot(
                grouped_bars(
                    "bias",
                    "Pair entropy (higher = less biased)",
                    tables["bias"],
                    "bits",
                    (0, 1.05),
                    reference=(1.0, "no preference (1 bit)"),
                )
            )
            + table_html(tables["bias"]),
        )
    nlp = nlp_table(per_model)
    if nlp:
        body = plot(grouped_bars("nlp", "Public NLP tasks", nlp, "F1 / BLEU")) + table_html(nlp, digits=1)
        tax = [r for r in results.get("differences") or [] if r["metric"].startswith("nlp/")]
        if tax:
            body += (
                "<p>Differences on the same items (model minus reference; paired bootstrap 95% intervals; "
                "0 inside = no measured difference):</p>"
            )
            body += plot(differences_figure(tax, "alignment_tax", "Alignment tax: paired differences")) + table_html(
                differences_table(tax, 1), "comparison"
            )
        body += paper_reference_html(
            results,
            "nlp_paper_reference",
            paper_nlp_table(results),
            "The same metrics on the paper's own samples, in the same promptings (GPT-3, SFT, PPO-ptx, PPO at "
            "1.3B / 6B / 175B; the paper's few-shot demonstrations are not published, ours are drawn from the "
            "task's other items):",
            figures,
            judges,
            digits=1,
        )
        add("Alignment tax: public NLP tasks", body)
    others = [r for r in results.get("differences") or [] if not r["metric"].startswith("nlp/")]
    if others:
        add(
            "Differences between models",
            "<p>Model minus reference on the same items, paired bootstrap 95% intervals:</p>"
            + table_html(differences_table(others), "comparison"),
        )
    if results.get("samples"):
        add("Samples side by side", samples_html(results["samples"]))
    add(
        "Scorers",
        f"<pre>{html.escape(json.dumps(_scorers(results), indent=1))}</pre>",
    )
    lines = findings(results, rm_results)
    found = f"<ul class='findings'>{''.join(f'<li>{html.escape(line)}</li>' for line in lines)}</ul>" if lines else ""
    head = (
        "<h1>InstructGPT evaluation report</h1>"
        f"<div class='statement'><p>{html.escape(statement(results))}</p>{found}</div>"
    )
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>InstructGPT evaluation</title>"
        f"<style>{CSS}</style></head><body>{head}{''.join(sections)}</body></html>"
    )
    return page, figures


def write_report(
    results: dict, out_dir: Path, ppo_metrics: dict[str, Path] | None = None, rm_metrics: dict[str, Path] | None = None
) -> Path:
    """Write ``report.html`` and ``figures.json`` into ``out_dir``; returns the page's path."""
    ppo_runs = {name: rows for name, path in (ppo_metrics or {}).items() if (rows := read_metrics_log(path))}
    rm_results = {
        name: summary for name, path in (rm_metrics or {}).items() if (summary := rm_summary(path))
    } or results.get("rm_accuracy", {})
    page, figures = render_html(results, ppo_runs, rm_results)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "figures.json").write_text(json.dumps(finite(figures), indent=1, default=str), encoding="utf-8")
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
