"""What the evaluation results say, with their uncertainty: the report's tables and its plain statement.

Every figure measured on a sample is a *cell*, ``{"value", "low", "high", "n"}`` (the 95%
interval and the number of items; NaN where the results do not carry them, as in results of
older runs). :func:`findings` states, for each comparison the paper's claims rest on, whether
the null value is inside its interval:

- win rate of each model against the baseline: 0.5 inside the Wilson interval is not a
  measured preference;
- reward-model accuracy: 50% (chance) inside the interval;
- the alignment tax: each model minus the baseline, and PPO-ptx minus PPO, on DROP / SQuADv2 F1
  and Fr->En BLEU, with paired bootstrap intervals (:mod:`instructgpt.evaluation.differences`);
- the respectful and the biased instruction: each model's respectful-minus-basic and
  biased-minus-basic mean toxicity (paired t);
- the other paired differences (TruthfulQA, toxicity, bias): those whose interval excludes 0 are
  named, the rest counted.
"""

from __future__ import annotations

import math
from typing import Any

from instructgpt.evaluation.metrics import wilson_interval

METRIC_NAMES = {
    "truthfulqa/mc1": "TruthfulQA MC1",
    "truthfulqa/mc1_harness": "TruthfulQA MC1 (lm-eval-harness: total log-prob)",
    "truthfulqa/mc2": "TruthfulQA MC2",
    "truthfulqa/qa/true": "TruthfulQA QA % true",
    "truthfulqa/qa/informative": "TruthfulQA QA % informative",
    "truthfulqa/qa/true_informative": "TruthfulQA QA % true+info",
    "truthfulqa/instruction_qa/true": "TruthfulQA Instr+QA % true",
    "truthfulqa/instruction_qa/informative": "TruthfulQA Instr+QA % informative",
    "truthfulqa/instruction_qa/true_informative": "TruthfulQA Instr+QA % true+info",
    "toxicity/basic/toxicity": "toxicity (no instruction)",
    "toxicity/respectful/toxicity": "toxicity (respectful)",
    "toxicity/biased/toxicity": "toxicity (biased)",
    "bias/crows_pairs/entropy_bits": "CrowS-Pairs entropy (bits)",
    "bias/winogender/entropy_bits": "Winogender entropy (bits)",
}
"""Display names of the per-item metrics of :func:`instructgpt.evaluation.differences.per_item_metrics`
(the NLP ones: :data:`NLP_METRICS`)."""

NLP_METRICS = {
    ("drop", "f1"): "DROP F1",
    ("drop", "f1_official"): "DROP F1 (official DROP metric)",
    ("squadv2", "f1"): "SQuADv2 F1",
    ("fr_en", "bleu_stats"): "Fr->En BLEU",
}
"""(task, per-item metric) -> display name, before its prompting (``DROP F1, few-shot``)."""

NLP_COLUMNS = {
    "drop": ("DROP F1", "f1"),
    "drop_official": ("DROP F1 (official DROP metric)", "f1_official"),
    "squadv2": ("SQuADv2 F1", "f1"),
    "fr_en": ("Fr->En BLEU", "bleu"),
}
"""Columns of the NLP tables: key (a task, or ``drop_official`` in the paper reference) -> (label, metric);
each once per prompting (:data:`PROMPTING_LABELS`), the key suffixed by :func:`instructgpt.evaluation.nlp.task_key`."""

PROMPTING_LABELS = {"zeroshot": "zero-shot", "fewshot": "few-shot"}
"""How the report labels the NLP promptings."""


def cell(value: Any, ci: Any = None, n: Any = None) -> dict:
    """A figure with its 95% interval ``ci = (low, high)`` and its n (NaN / None where unknown)."""
    low, high = ci if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None)
    return {"value": _float(value), "low": _float(low), "high": _float(high), "n": n}


def _float(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")


def _sub(result: dict, key: str, n: Any) -> dict:
    """The cell of ``result[key]`` with ``result[key + "_ci"]``."""
    return cell(result.get(key), result.get(f"{key}_ci"), result.get("n", n))


def safety_tables(per_model: dict) -> dict[str, dict[str, dict[str, dict]]]:
    """The TruthfulQA, toxicity and bias tables: one row per model, one cell per column."""
    tqa, tox, bias = {}, {}, {}
    for name, r in per_model.items():
        if "truthfulqa" in r:
            t = r["truthfulqa"]
            tqa[name] = {"MC1": _sub(t, "mc1", None)}
            if "mc1_harness" in t:
                tqa[name]["MC1 (lm-eval-harness: total log-prob)"] = _sub(t, "mc1_harness", None)
            tqa[name]["MC2"] = _sub(t, "mc2", None)
            for key, label in (("qa", "QA"), ("instruction_qa", "Instr+QA")):
                tqa[name][f"{label} % true"] = _sub(t[key], "true", t.get("n"))
                tqa[name][f"{label} % true+info"] = _sub(t[key], "true_informative", t.get("n"))
        if "toxicity" in r:
            tox[name] = toxicity_row(r["toxicity"])
        if "bias" in r:
            bias[name] = {f"{k} entropy (bits)": _sub(v, "entropy_bits", None) for k, v in r["bias"].items()}
    return {"truthfulqa": tqa, "toxicity": tox, "bias": bias}


TOXICITY_CONDITIONS = {"basic": "no instruction", "respectful": "respectful", "biased": "biased"}
"""Toxicity conditions (:data:`instructgpt.evaluation.toxicity.CONDITIONS`) as the report labels them."""


def toxicity_row(t: dict) -> dict[str, dict]:
    """One model's toxicity cells: mean toxicity per condition, each instruction minus none, % toxic."""
    row = {}
    present = [c for c in TOXICITY_CONDITIONS if c in t]
    for c in present:
        row[f"toxicity ({TOXICITY_CONDITIONS[c]})"] = _sub(t[c], "mean_toxicity", t.get("n"))
    for c in present:
        if f"{c}_minus_basic" in t:
            row[f"{TOXICITY_CONDITIONS[c]} minus no instruction"] = _sub(
                t[f"{c}_minus_basic"], "mean_toxicity", t.get("n")
            )
    for c in present:
        row[f"% toxic ({TOXICITY_CONDITIONS[c]})"] = _sub(t[c], "toxic_fraction", t.get("n"))
    return row


TRUTHFULQA_PROMPTS = {"qa": "QA", "instruction_qa": "Instr+QA"}
"""TruthfulQA prompts as the report labels them."""


def paper_truthfulqa_table(results: dict) -> dict[str, dict[str, dict]]:
    """The paper's TruthfulQA answers per model type: % true and % true+info per prompt by our
    judges (the columns of our table), and the same by the paper's GPT-judge."""
    per_model = (results.get("truthfulqa_paper_reference") or {}).get("per_model") or {}
    table = {}
    for model_type, by_prompt in per_model.items():
        row = {}
        for source, prefix in ((None, ""), ("gpt_judge", "GPT-judge ")):
            for key, label in TRUTHFULQA_PROMPTS.items():
                if key in by_prompt:
                    rates = by_prompt[key][source] if source else by_prompt[key]
                    row[f"{prefix}{label} % true"] = _sub(rates, "true", None)
                    row[f"{prefix}{label} % true+info"] = _sub(rates, "true_informative", None)
        table[model_type] = row
    return table


def paper_toxicity_table(results: dict) -> dict[str, dict[str, dict]]:
    """The paper's samples per model type: mean toxicity and % toxic per condition by our scorer
    (the columns of our table), and the mean of the Perspective scores stored with them."""
    reference = results.get("toxicity_paper_reference") or {}
    table = {}
    for model_type, by_condition in (reference.get("per_model") or {}).items():
        row = {}
        for c, label in TOXICITY_CONDITIONS.items():
            if c in by_condition:
                row[f"toxicity ({label})"] = _sub(by_condition[c], "mean_toxicity", None)
        for c, label in TOXICITY_CONDITIONS.items():
            if c in by_condition:
                row[f"% toxic ({label})"] = _sub(by_condition[c], "toxic_fraction", None)
        if reference.get("scorer") != "perspective":
            for c, label in TOXICITY_CONDITIONS.items():
                if c in by_condition:
                    row[f"Perspective ({label})"] = _sub(by_condition[c]["perspective"], "mean_toxicity", None)
        table[model_type] = row
    return table


def _nlp_key(key: str, prompting: str) -> str:
    return key + ("_fewshot" if prompting == "fewshot" else "")


def nlp_table(per_model: dict) -> dict[str, dict[str, dict]]:
    """DROP / SQuADv2 F1 and Fr->En BLEU (0-100) per model and prompting, as cells (``DROP F1, zero-shot``)."""
    table = {}
    for name, r in per_model.items():
        if "nlp" not in r:
            continue
        table[name] = {}
        for prompting, how in PROMPTING_LABELS.items():
            for key, (label, metric) in NLP_COLUMNS.items():
                result = r["nlp"].get(_nlp_key(key.removesuffix("_official"), prompting), {})
                if metric in result:
                    table[name][f"{label}, {how}"] = _sub(result, metric, None)
    return table


def paper_nlp_table(results: dict) -> dict[str, dict[str, dict]]:
    """The paper's own samples scored by the same code, as cells (intervals where the results carry them),
    in the promptings our models were run with (all when none was)."""
    ours = {c.rsplit(", ", 1)[1] for row in nlp_table(results.get("per_model", {})).values() for c in row}
    promptings = [p for p, label in PROMPTING_LABELS.items() if label in ours] or list(PROMPTING_LABELS)
    intervals = results.get("nlp_paper_reference_ci", {})
    table = {}
    for model, scores in results.get("nlp_paper_reference", {}).items():
        table[model] = {}
        for prompting in promptings:
            for key, (label, _) in NLP_COLUMNS.items():
                k = _nlp_key(key, prompting)
                if k in scores:
                    ci = intervals.get(model, {}).get(k, {})
                    table[model][f"{label}, {PROMPTING_LABELS[prompting]}"] = cell(scores[k], ci.get("ci"), ci.get("n"))
    return table


def metric_name(metric: str) -> str:
    """Display name of a per-item metric: ``nlp/drop_fewshot/f1`` -> ``DROP F1, few-shot``."""
    parts = metric.split("/")
    if len(parts) == 3 and parts[0] == "nlp":
        task, prompting = parts[1].removesuffix("_fewshot"), "fewshot" if parts[1].endswith("_fewshot") else "zeroshot"
        if (task, parts[2]) in NLP_METRICS:
            return f"{NLP_METRICS[task, parts[2]]}, {PROMPTING_LABELS[prompting]}"
    return METRIC_NAMES.get(metric, metric)


def _digits(metric: str) -> int:
    return 1 if metric.startswith("nlp/") else 3


def _finite(*values: Any) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def _interval(value: Any, low: Any, high: Any, digits: int, signed: bool = False) -> str:
    """``"0.55 [0.45, 0.65]"``; the value alone where the interval is unknown."""
    f = f"{{:+.{digits}f}}" if signed else f"{{:.{digits}f}}"
    value, low, high = _float(value), _float(low), _float(high)
    return f"{f.format(value)} [{f.format(low)}, {f.format(high)}]" if _finite(low, high) else f.format(value)


def _against(null: float, low: float, high: float, null_text: str, inside: str, above: str, below: str) -> str:
    if not _finite(low, high):
        return "no interval (too few items)"
    if low <= null <= high:
        return f"{null_text} is inside the interval: {inside}"
    return f"{null_text} is outside the interval: {above if low > null else below}"


def difference_line(row: dict) -> str:
    """One paired difference in words, e.g. "ppo-ptx minus ppo, DROP F1: +3.1 [-2.0, +8.0] (n=100
    paired items): 0 is inside the interval: no measured difference"."""
    low, high = (_float(v) for v in (row.get("ci") or (None, None)))
    value = _interval(row["difference"], low, high, _digits(row["metric"]), signed=True)
    verdict = _against(0.0, low, high, "0", "no measured difference", "a measured difference", "a measured difference")
    pair = f"{row['model']} minus {row['reference']}, {metric_name(row['metric'])}"
    return f"{pair}: {value} (n={row['n']} paired items): {verdict}"


def findings(results: dict, rm_results: dict[str, dict] | None = None) -> list[str]:
    """The comparisons the paper's claims rest on, each with its interval and whether the null
    value (0.5, 50%, 0) is inside it."""
    lines = []
    w = results.get("winrate") or {}
    parts = {f" on test set {name}": part["per_model"] for name, part in (w.get("by_set") or {}).items()}
    for where, per_model in {**parts, " pooled" if parts else "": w.get("per_model") or {}}.items():
        for name, r in per_model.items():
            verdict = _against(
                0.5,
                _float(r.get("low")),
                _float(r.get("high")),
                "0.5",
                "not a measured preference",
                f"{name} preferred",
                f"{w['baseline']} preferred",
            )
            lines.append(
                f"Win rate {name} vs {w['baseline']}{where}: {_interval(r['rate'], r['low'], r['high'], 2)} "
                f"(n={r['n']}): {verdict}"
            )
    for run, values in (rm_results or {}).items():
        for label in (k for k in values if isinstance(values[k], (int, float)) and f"{k} 95% low" in values):
            low, high = _float(values[f"{label} 95% low"]), _float(values[f"{label} 95% high"])
            verdict = _against(
                0.5, low, high, "50% (chance)", "not distinguishable from chance", "above chance", "below chance"
            )
            accuracy = f"{100 * values[label]:.1f}%" + (
                f" [{100 * low:.1f}%, {100 * high:.1f}%]" if _finite(low, high) else ""
            )
            lines.append(
                f"Reward model {run}, {label} accuracy: {accuracy} (n={values[f'{label} n']} "
                f"{values.get(f'{label} n unit', '')}): {verdict}"
            )
    differences = results.get("differences") or []
    lines += [difference_line(row) for row in differences if row["metric"].startswith("nlp/")]
    for name, r in results.get("per_model", {}).items():
        for condition in ("respectful", "biased"):
            d = (r.get("toxicity") or {}).get(f"{condition}_minus_basic")
            if not d or r.get("same_as"):
                continue
            low, high = (_float(v) for v in (d.get("mean_toxicity_ci") or (None, None)))
            verdict = _against(
                0.0,
                low,
                high,
                "0",
                "no measured effect",
                f"more toxic when asked to be {condition}",
                f"less toxic when asked to be {condition}",
            )
            value = _interval(d["mean_toxicity"], low, high, 3, signed=True)
            lines.append(
                f"{name}, {condition} instruction minus none, mean toxicity: {value} (n={d['n']} prompts): {verdict}"
            )
    others = [row for row in differences if not row["metric"].startswith("nlp/")]
    outside = [row for row in others if row.get("contains_zero") is False]
    lines += [difference_line(row) for row in outside]
    if others:
        lines.append(
            f"{len(others) - len(outside)} of the {len(others)} other paired differences (TruthfulQA, toxicity, bias) "
            "have 0 inside their intervals (table: Differences between models)."
        )
    return lines


def judge_names(results: dict) -> dict[str, str]:
    """The judge or scorer behind each figure of the report, by figure id."""
    w = results.get("winrate") or {}
    j = results.get("truthfulqa_judge") or {}
    s = results.get("toxicity_scorer") or {}
    names = {
        "truthfulqa": f"% true: {j.get('truth_judge', 'offline logistic regression')}; % true+info: also "
        f"{j.get('info_judge', 'offline logistic regression')}; MC1/MC2: the model's log-probabilities",
        "toxicity": f"{s.get('name', '?')} toxicity scorer",
        "truthfulqa_paper_reference": f"% true: {j.get('truth_judge', 'offline logistic regression')}; "
        f"% true+info: also {j.get('info_judge', 'offline logistic regression')}; beside them the paper's GPT-judge "
        "probabilities stored with its samples",
        "toxicity_paper_reference": f"{(results.get('toxicity_paper_reference') or {}).get('scorer', '?')} toxicity "
        "scorer; beside it the Perspective scores stored with the paper's samples",
        "bias": "none: the model's own log-probabilities",
        "nlp": "none: F1 / BLEU against the references",
        "alignment_tax": "none: F1 / BLEU against the references",
        "nlp_paper_reference": "none: F1 / BLEU against the references",
        "rm_accuracy": "none: the reward model's agreement with labelers' rankings",
        "ppo_curves": "none: training metrics",
    }
    if w.get("judge"):
        names.update(winrate=w["judge"], winrate_by_set=w["judge"], likert=w["judge"], metadata=w["judge"])
    return names


def _judge_text(j: dict, kind: str, what: str) -> str:
    """One TruthfulQA judge in words, with its held-out accuracy when it was trained here."""
    name = j.get(f"{kind}_judge", "offline logistic regression")
    accuracy, n = j.get(f"{kind}_heldout_accuracy"), j.get("heldout_answers") or 0
    paper = j.get("paper_samples") or {}
    agreement, rates = paper.get(f"{kind}_agreement"), paper.get(kind) or {}
    parts = []
    if _finite(accuracy) and n:
        value = _interval(*(100 * v for v in (accuracy, *wilson_interval(accuracy, n))), 1)
        parts.append(f"held-out accuracy {value}% {what}, n={n} answers to unseen questions")
    by_model = str(paper.get(f"{kind}_held_out_by", "")).startswith("model type")
    if _finite(agreement):
        held = ", each model type's answers judged by a judge trained without any of them" if by_model else ""
        parts.append(
            f"{100 * agreement:.1f}% agreement with the paper's GPT-judge on {paper.get('n')} of its answers{held}"
        )
    if _finite(rates.get("worst_model_difference")):
        parts.append(
            f"per model type % {what} within {100 * rates['worst_model_difference']:.1f} points of GPT-judge's "
            f"({rates['models_over_5_points']} of {len(rates['per_model'])} model types more than 5 points off)"
        )
    family = paper.get(f"{kind}_by_family") or {}
    if _finite(family.get("worst_model_difference")):
        parts.append(
            f"holding out every size of a family at once, within {100 * family['worst_model_difference']:.1f} points "
            f"({family['models_over_5_points']} of {len(family['per_model'])} more than 5 points off)"
        )
    if name == "offline logistic regression":
        name = "a logistic regression trained on the TruthfulQA judge fine-tune files" + (
            " and the paper's own answers (labelled by its GPT-judge)" if by_model else ""
        )
    return f"{name} ({'; '.join(parts)})" if parts else name


def statement(results: dict) -> str:
    """What was measured, on how many items, with which judge and scorers, in plain words."""
    cfg = results.get("config", {})
    parts = [f"Models: {', '.join(f'{n} ({p})' for n, p in results.get('models', {}).items())}."]
    if cfg.get("prompted"):
        parts.append(f"Prompted with a few-shot instruction prefix on win-rate prompts: {', '.join(cfg['prompted'])}.")
    w = results.get("winrate")
    if w and "per_model" in w:
        parts.append(
            f"Win rate: each model's response to {w['n_prompts']} held-out test prompts was compared with "
            f"{w['baseline']}'s by "
            f"{w['judge_description']}, shown in random order without model names; ties count half; "
            "error bars are 95% Wilson intervals."
        )
        if w.get("by_set"):
            sets = ", ".join(f"{name} ({part['n_prompts']})" for name, part in w["by_set"].items())
            parts.append(f"The test prompts come from {len(w['by_set'])} test sets, reported apart and pooled: {sets}.")
        if w.get("likert"):
            parts.append(
                f"Likert scores and metadata: every model's response to each prompt rated by {w['judge_description']}, "
                "the responses shown in a random order per prompt, without model names."
            )
    elif w and "pending" in w:
        parts.append(f"Win rate: pending human labels ({w['pending']}).")
    else:
        parts.append("Win rate: not measured in this run (no judge).")
    j = results.get("truthfulqa_judge")
    if j:
        parts.append(
            "TruthfulQA: MC1/MC2 from log-probabilities (MC1 by the mean per-token log-probability, and beside it "
            "as lm-evaluation-harness computes it, by the total); generated answers judged true by "
            f"{_judge_text(j, 'truth', 'true')} and informative by {_judge_text(j, 'info', 'informative')}."
        )
    s = results.get("toxicity_scorer")
    if s:
        a = s.get("agreement", {}).get("heldout_rtp_texts")
        p = s.get("agreement", {}).get("paper_samples")
        measured = []
        by_model = str(s.get("agreement", {}).get("paper_samples_held_out_by", "")).startswith("model type")
        if by_model:
            measured.append("trained on RealToxicityPrompts texts and the paper's own scored samples")
        if a:
            measured.append(f"Pearson r with Perspective {a['pearson']:.2f} on n={a['n']} held-out texts")
        if p and _finite(p.get("pearson")):
            held = ", each model type's scored by a scorer trained without any of them" if by_model else ""
            measured.append(f"{p['pearson']:.2f} on n={p['n']} of the paper's samples{held}")
        if p and _finite(p.get("worst_mean_difference")):
            measured.append(
                f"mean per model type and condition within {p['worst_mean_difference']:.3f} of Perspective's "
                f"({p['groups_over_0.02']} of {len(p['mean_differences'])} more than 0.02 off)"
            )
        if p and p.get("respectful_effect"):
            measured.append(
                f"the respectful-prompt effect inside Perspective's 95% interval for {p['respectful_reproduced']} of "
                f"the {p['respectful_significant']} model types whose interval excludes 0"
            )
        f = s.get("agreement", {}).get("paper_samples_by_family")
        if f and _finite(f.get("pearson")):
            measured.append(
                f"holding out every size of a family at once, r {f['pearson']:.2f}, means within "
                f"{f['worst_mean_difference']:.3f} ({f['groups_over_0.02']} of {len(f['mean_differences'])} over 0.02)"
            )
        extra = f" ({'; '.join(measured)})" if measured else ""
        conditions = cfg.get("toxicity_prompts") or ("basic", "respectful")
        named = ", ".join(TOXICITY_CONDITIONS.get(c, c) for c in conditions)
        parts.append(f"RealToxicityPrompts ({named}): continuations scored by the {s['name']} toxicity scorer{extra}.")
    if any("bias" in r for r in results.get("per_model", {}).values()):
        parts.append(
            "CrowS-Pairs and Winogender: mean entropy (bits) of the normalised probabilities of the two sentences of "
            "each pair; 1 bit = no preference."
        )
    if any("nlp" in r for r in results.get("per_model", {}).values()):
        prompting = cfg.get("nlp_prompting", "zeroshot")
        how = {
            "zeroshot": "zero-shot",
            "fewshot": f"few-shot ({cfg.get('nlp_shots', '?')} demonstrations from the task's other items)",
            "both": f"zero-shot and few-shot ({cfg.get('nlp_shots', '?')} demonstrations from the task's other items)",
        }.get(prompting, prompting)
        parts.append(
            f"Alignment tax: {how} DROP / SQuADv2 F1 (SQuAD-style token F1; DROP also by the official DROP "
            "metric) and Fr->En BLEU on the paper's contexts, greedy, first line."
        )
    references = [
        name
        for key, name in (
            ("truthfulqa_paper_reference", "TruthfulQA"),
            ("toxicity_paper_reference", "RealToxicityPrompts"),
            ("nlp_paper_reference", "the NLP tasks"),
        )
        if results.get(key)
    ]
    if references:
        parts.append(
            f"Reference rows: the paper's own samples ({', '.join(references)}; GPT-3, SFT, PPO, PPO-ptx at 1.3B, 6B "
            "and 175B) scored by the same code and judges, under our tables."
        )
    overrides = f" ({', '.join(cfg['task_limits'])})" if cfg.get("task_limits") else ""
    parts.append(
        f"Every task used at most {cfg.get('limit', '?')} items{overrides} (seed {cfg.get('seed', '?')}); small "
        "samples give wide intervals."
    )
    parts.append(
        "Intervals are 95%: Wilson for proportions, Student's t for means, a seeded percentile bootstrap over items "
        "for F1 and "
        "BLEU, and a paired bootstrap over the same items for differences between models."
    )
    shared = [f"{n} = {r['same_as']}" for n, r in results.get("per_model", {}).items() if r.get("same_as")]
    if shared:
        parts.append(f"Same weights, so the same automatic-task results (run once): {', '.join(shared)}.")
    parts.append(
        f"Precision of the forward passes: {cfg.get('precision', 'fp32')} (auto = bf16 autocast where native)."
    )
    return " ".join(parts)
