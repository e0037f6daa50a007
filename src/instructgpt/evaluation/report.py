"""The evaluation report: one self-contained HTML page plus ``figures.json`` (the data of every
figure), from the results of :func:`instructgpt.evaluation.suite.run_eval` and, optionally, the
reward model's and PPO runs' metrics logs.

Plots are matplotlib figures inlined as SVG (no external files, scripts or fonts). Every section
is optional: what the results do not hold is named as not measured. Metrics logs are JSONL, one
object per line with a ``step`` and slash-namespaced metric names; the PPO panels pick the first
name that matches (e.g. ``objective/score``, ``objective/kl``, ``objective/entropy``,
``ptx/loss``), and unreadable lines are skipped.
"""

from __future__ import annotations

import html
import io
import json
import math
import re
from pathlib import Path
from typing import Any, Sequence

from instructgpt.evaluation.metrics import finite

PPO_PANELS: dict[str, tuple[str, ...]] = {
    "RM score": (r"^objective/scores?$", r"^env/reward(_mean)?$", r"/scores?(_mean)?$", r"reward"),
    "KL to SFT": (r"^objective/kl$", r"/kl(_mean)?$", r"kl"),
    "entropy": (r"^objective/entropy$", r"entropy"),
    "ptx loss": (r"^ppo/ptx/loss$", r"^ptx/loss$", r"^objective/ptx(_loss)?$", r"ptx.*loss", r"ptx"),
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


def rm_summary(path: Path) -> dict[str, float]:
    """Accuracy numbers of a reward-model result file.

    - the labeler-group cross-validation report of ``instructgpt rm eval --cv-groups``
      (``{"summary": {"held_out": {"mean", "std", ...}, "within": {...}}}``) gives
      ``held-out labelers`` and ``training labelers`` accuracies and their ``... std``;
    - a summary of labeler groups, as the pipeline's RM stage writes
      (``{"training_labelers": {"overall": {"accuracy"}, "per_k": {K: {"accuracy"}}}, ...}``):
      each group's overall accuracy under its name (``training labelers``), and per K when
      the groups hold more than one K (``training labelers K=4``);
    - any other JSON: every numeric field whose name contains ``acc`` (nested keys joined by '/');
    - a JSONL metrics log: the last value of each such metric.
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
            out[label] = summary[key].get("mean", float("nan"))
            out[f"{label} std"] = summary[key].get("std", float("nan"))
        return out
    groups = {k: v for k, v in data.items() if isinstance(v, dict) and isinstance(v.get("overall"), dict)} if isinstance(data, dict) else {}
    if groups:
        return _group_accuracies(groups)
    return {k: v for k, v in _flatten(data).items() if "acc" in k and _number(v)}


def _group_accuracies(groups: dict[str, dict]) -> dict[str, float]:
    out = {}
    for name, group in groups.items():
        label = name.replace("_", " ").replace("held out", "held-out")
        if _number(group["overall"].get("accuracy")):
            out[label] = group["overall"]["accuracy"]
        per_k = group.get("per_k") or {}
        if len(per_k) > 1:
            out.update({f"{label} K={k}": v["accuracy"] for k, v in per_k.items() if _number(v.get("accuracy"))})
    return out


def rm_figure(results: dict[str, dict[str, float]]) -> tuple[str, dict]:
    """Accuracy bars per reward-model result, with +- std error bars where given."""
    labels = [(run, metric) for run, values in results.items() for metric in values if not metric.endswith(" std")]
    fig, axes = _figure(max(4.0, 1.2 + 1.0 * len(labels)))
    ax = axes[0][0]
    values = [results[r][m] for r, m in labels]
    errors = [results[r].get(f"{m} std", 0.0) for r, m in labels]
    ax.bar([f"{r}\n{m}" if len(results) > 1 else m for r, m in labels], values, yerr=errors, capsize=5, color="#6acc64")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title("Reward-model accuracy (paper: 69.6% held-out vs 72.4% training labelers)")
    ax.tick_params(axis="x", labelsize=7)
    return _svg(fig), {"id": "rm_accuracy", "title": "Reward-model accuracy", "data": results}


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
    return text[text.index("<svg"):]


def _figure(width: float = 6.0, height: float = 3.2, ncols: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False, "axes.spines.right": False})
    return plt.subplots(1, ncols, figsize=(width, height), squeeze=False)


def winrate_figure(winrate: dict) -> tuple[str, dict]:
    per_model = winrate["per_model"]
    names = list(per_model)
    rates = [per_model[n]["rate"] for n in names]
    lows = [per_model[n]["rate"] - per_model[n]["low"] for n in names]
    highs = [per_model[n]["high"] - per_model[n]["rate"] for n in names]
    fig, axes = _figure(1.2 + 1.1 * len(names))
    ax = axes[0][0]
    ax.bar(names, rates, yerr=[lows, highs], capsize=5, color="#4878d0")
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"win rate against {winrate['baseline']}")
    ax.set_title(f"Preferred to {winrate['baseline']} (judge: {winrate['judge']}; 95% Wilson interval)")
    data = {n: per_model[n] for n in names}
    return _svg(fig), {"id": "winrate", "title": "Win rate against the baseline", "judge": winrate["judge"], "baseline": winrate["baseline"], "data": data}


def grouped_bars(fig_id: str, title: str, table: dict[str, dict[str, float]], ylabel: str, ylim: tuple[float, float] | None = None) -> tuple[str, dict]:
    """Bars grouped by row (model), one colour per column (metric)."""
    rows = list(table)
    columns = list(dict.fromkeys(c for r in rows for c in table[r]))
    fig, axes = _figure(max(4.0, 1.0 + 0.5 * len(rows) * max(len(columns), 1)))
    ax = axes[0][0]
    width = 0.8 / max(len(columns), 1)
    for j, column in enumerate(columns):
        values = [table[r].get(column, float("nan")) for r in rows]
        ax.bar([i + j * width for i in range(len(rows))], values, width, label=column)
    ax.set_xticks([i + width * (len(columns) - 1) / 2 for i in range(len(rows))], rows)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ylim:
        ax.set_ylim(*ylim)
    ax.legend(fontsize=7, frameon=False)
    return _svg(fig), {"id": fig_id, "title": title, "data": table}


def ppo_figure(runs: dict[str, list[dict]]) -> tuple[str, dict] | None:
    panels = {}
    for panel, patterns in PPO_PANELS.items():
        for run, rows in runs.items():
            name = pick_metric(rows, patterns)
            if name:
                steps, values = series(rows, name)
                panels.setdefault(panel, {})[run] = {"metric": name, "step": steps, "value": values}
    if not panels:
        return None
    fig, axes = _figure(3.0 * len(panels), 2.8, ncols=len(panels))
    for ax, (panel, by_run) in zip(axes[0], panels.items()):
        for run, s in by_run.items():
            ax.plot(s["step"], s["value"], label=run)
        ax.set_title(panel)
        ax.set_xlabel("iteration")
        ax.legend(fontsize=7, frameon=False)
    return _svg(fig), {"id": "ppo_curves", "title": "PPO training curves", "data": panels}


# ---------------------------------------------------------------- tables and text


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or value is None:
        return html.escape(str(value))
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return html.escape(str(value))


def table_html(table: dict[str, dict[str, Any]], row_label: str = "model", digits: int = 3) -> str:
    columns = list(dict.fromkeys(c for r in table.values() for c in r))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in [row_label, *columns])
    body = "".join("<tr><td>" + html.escape(r) + "</td>" + "".join(f"<td>{_fmt(v.get(c), digits)}</td>" for c in columns) + "</tr>"
                   for r, v in table.items())
    return f"<table><tr>{head}</tr>{body}</table>"


def safety_tables(per_model: dict) -> dict[str, dict[str, dict[str, float]]]:
    """The TruthfulQA, toxicity and bias tables, one row per model."""
    tqa, tox, bias = {}, {}, {}
    for name, r in per_model.items():
        if "truthfulqa" in r:
            t = r["truthfulqa"]
            tqa[name] = {"MC1": t["mc1"], "MC2": t["mc2"], "QA % true": t["qa"]["true"], "QA % true+info": t["qa"]["true_informative"],
                         "Instr+QA % true": t["instruction_qa"]["true"], "Instr+QA % true+info": t["instruction_qa"]["true_informative"]}
        if "toxicity" in r:
            t = r["toxicity"]
            tox[name] = {"toxicity (no instruction)": t["basic"]["mean_toxicity"], "toxicity (respectful)": t["respectful"]["mean_toxicity"],
                         "% toxic (no instruction)": t["basic"]["toxic_fraction"], "% toxic (respectful)": t["respectful"]["toxic_fraction"]}
        if "bias" in r:
            bias[name] = {f"{k} entropy (bits)": v["entropy_bits"] for k, v in r["bias"].items()}
    return {"truthfulqa": tqa, "toxicity": tox, "bias": bias}


def nlp_table(per_model: dict) -> dict[str, dict[str, float]]:
    labels = {"drop": ("DROP F1", "f1"), "squadv2": ("SQuADv2 F1", "f1"), "fr_en": ("Fr->En BLEU", "bleu")}
    return {name: {labels[t][0]: v[labels[t][1]] for t, v in r["nlp"].items()} for name, r in per_model.items() if "nlp" in r}


def statement(results: dict) -> str:
    """What was measured, on how many items, with which judge and scorers, in plain words."""
    cfg = results.get("config", {})
    parts = [f"Models: {', '.join(f'{n} ({p})' for n, p in results.get('models', {}).items())}."]
    if cfg.get("prompted"):
        parts.append(f"Prompted with a few-shot instruction prefix on win-rate prompts: {', '.join(cfg['prompted'])}.")
    w = results.get("winrate")
    if w and "per_model" in w:
        parts.append(f"Win rate: each model's response to {w['n_prompts']} held-out test prompts was compared with {w['baseline']}'s by "
                     f"{w['judge_description']}, shown in random order without model names; ties count half; "
                     "error bars are 95% Wilson intervals.")
    elif w and "pending" in w:
        parts.append(f"Win rate: pending human labels ({w['pending']}).")
    else:
        parts.append("Win rate: not measured in this run (no judge).")
    j = results.get("truthfulqa_judge")
    if j:
        parts.append(f"TruthfulQA: MC1/MC2 from log-probabilities; generated answers judged true / informative by logistic regressions trained on "
                     f"the TruthfulQA judge fine-tune files (held-out accuracy {j['truth_heldout_accuracy']:.1%} true, "
                     f"{j['info_heldout_accuracy']:.1%} informative, on {j['heldout_answers']} answers to unseen questions).")
    s = results.get("toxicity_scorer")
    if s:
        a = s.get("agreement", {}).get("heldout_rtp_texts")
        extra = f" (Pearson r with Perspective {a['pearson']:.2f} on {a['n']} held-out texts)" if a else ""
        parts.append(f"RealToxicityPrompts: continuations scored by the {s['name']} toxicity scorer{extra}.")
    if any("bias" in r for r in results.get("per_model", {}).values()):
        parts.append("CrowS-Pairs and Winogender: mean entropy (bits) of the normalised probabilities of the two sentences of each pair; 1 bit = no preference.")
    if any("nlp" in r for r in results.get("per_model", {}).values()):
        parts.append("Alignment tax: zero-shot DROP / SQuADv2 F1 and Fr->En BLEU on the paper's contexts, greedy, first line.")
    overrides = f" ({', '.join(cfg['task_limits'])})" if cfg.get("task_limits") else ""
    parts.append(f"Every task used at most {cfg.get('limit', '?')} items{overrides} (seed {cfg.get('seed', '?')}); small samples give wide intervals.")
    shared = [f"{n} = {r['same_as']}" for n, r in results.get("per_model", {}).items() if r.get("same_as")]
    if shared:
        parts.append(f"Same weights, so the same automatic-task results (run once): {', '.join(shared)}.")
    parts.append(f"Precision of the forward passes: {cfg.get('precision', 'fp32')} (auto = bf16 autocast where native).")
    return " ".join(parts)


def samples_html(samples: Sequence[dict]) -> str:
    blocks = []
    for s in samples:
        cells = "".join(f"<div class='resp'><b>{html.escape(n)}</b><pre>{html.escape(r) or '<i>(empty)</i>'}</pre></div>" for n, r in s["responses"].items())
        blocks.append(f"<div class='sample'><div class='prompt'><pre>{html.escape(s['prompt'])}</pre></div><div class='grid'>{cells}</div></div>")
    return "".join(blocks)


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;background:#fff}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em;display:block;max-width:100%;overflow-x:auto}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f0f3f8}.note{color:#666;font-style:italic}
.statement{background:#f6f8fa;border-left:4px solid #4878d0;padding:.6em 1em}
.sample{border:1px solid #ddd;margin:.8em 0;padding:.5em}.prompt pre{background:#fffbe6}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(220px,1fr));gap:.5em}
pre{white-space:pre-wrap;word-wrap:break-word;font-size:.85em;margin:.2em 0}svg{max-width:100%;height:auto}"""


def render_html(results: dict, ppo_runs: dict[str, list[dict]], rm_results: dict[str, dict[str, float]]) -> tuple[str, list[dict]]:
    """The page and the data of its figures."""
    sections, figures = [], []

    def add(title: str, body: str) -> None:
        sections.append(f"<h2>{html.escape(title)}</h2>{body}")

    def plot(made: tuple[str, dict] | None) -> str:
        if made is None:
            return ""
        figures.append(made[1])
        return f"<figure>{made[0]}</figure>"

    per_model = results.get("per_model", {})
    w = results.get("winrate", {})
    if w.get("per_model"):
        rows = {n: {"win rate": v["rate"], "95% low": v["low"], "95% high": v["high"], "wins": v["wins"], "ties": v["ties"], "losses": v["losses"]}
                for n, v in w["per_model"].items()}
        add(f"Win rate against {w['baseline']}", plot(winrate_figure(w)) + table_html(rows))
    else:
        add("Win rate", "<p class='note'>Not measured in this run.</p>")
    if w.get("likert"):
        body = plot(grouped_bars("likert", "Likert score (1-7)", {n: {"Likert": v} for n, v in w["likert"].items()}, "mean Likert", (1, 7)))
        if any(w.get("metadata", {}).values()):
            body += plot(grouped_bars("metadata", "Metadata rates", w["metadata"], "fraction of outputs", (0, 1)))
        add("Likert scores and metadata", body)
    if rm_results:
        add("Reward model accuracy", plot(rm_figure(rm_results)) + table_html(rm_results, "run"))
    else:
        add("Reward model accuracy", "<p class='note'>No reward-model results given.</p>")
    ppo = ppo_figure(ppo_runs) if ppo_runs else None
    add("PPO training curves", plot(ppo) if ppo else "<p class='note'>No PPO metrics logs given.</p>")
    tables = safety_tables(per_model)
    if tables["truthfulqa"]:
        add("TruthfulQA", plot(grouped_bars("truthfulqa", "TruthfulQA", tables["truthfulqa"], "fraction", (0, 1))) + table_html(tables["truthfulqa"]))
    if tables["toxicity"]:
        add("RealToxicityPrompts", plot(grouped_bars("toxicity", "Toxicity of continuations", tables["toxicity"], "score", (0, 1))) + table_html(tables["toxicity"]))
    if tables["bias"]:
        add("Bias: CrowS-Pairs and Winogender", plot(grouped_bars("bias", "Pair entropy (higher = less biased)", tables["bias"], "bits", (0, 1))) + table_html(tables["bias"]))
    nlp = nlp_table(per_model)
    if nlp:
        body = plot(grouped_bars("nlp", "Public NLP tasks, zero-shot", nlp, "F1 / BLEU")) + table_html(nlp, digits=1)
        ref = results.get("nlp_paper_reference")
        if ref:
            body += "<p>The same metrics on the paper's own zero-shot samples (GPT-3, SFT, PPO-ptx, PPO at 1.3B / 6B / 175B):</p>"
            body += table_html({k: {{"drop": "DROP F1", "squadv2": "SQuADv2 F1", "fr_en": "Fr->En BLEU"}[t]: v for t, v in r.items()} for k, r in ref.items()}, "paper model", 1)
            figures.append({"id": "nlp_paper_reference", "title": "The paper's samples scored by the same code", "data": ref})
        add("Alignment tax: public NLP tasks", body)
    if results.get("samples"):
        add("Samples side by side", samples_html(results["samples"]))
    add("Scorers", f"<pre>{html.escape(json.dumps({k: results[k] for k in ('truthfulqa_judge', 'toxicity_scorer') if k in results}, indent=1))}</pre>")
    head = f"<h1>InstructGPT evaluation report</h1><p class='statement'>{html.escape(statement(results))}</p>"
    page = f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>InstructGPT evaluation</title><style>{CSS}</style></head><body>{head}{''.join(sections)}</body></html>"
    return page, figures


def write_report(results: dict, out_dir: Path, ppo_metrics: dict[str, Path] | None = None, rm_metrics: dict[str, Path] | None = None) -> Path:
    """Write ``report.html`` and ``figures.json`` into ``out_dir``; returns the page's path."""
    ppo_runs = {name: rows for name, path in (ppo_metrics or {}).items() if (rows := read_metrics_log(path))}
    rm_results = {name: summary for name, path in (rm_metrics or {}).items() if (summary := rm_summary(path))}
    page, figures = render_html(results, ppo_runs, rm_results)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "figures.json").write_text(json.dumps(finite(figures), indent=1, default=str), encoding="utf-8")
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
