"""Iterated rounds of steps 2 and 3 (method.md: "new comparisons are collected on the current best policy").

Round 1 is the pipeline of ``run.py``, its stages at the top of the run folder. Round r >= 2
adds, in ``round-r/``, the same stage functions on new inputs:

- ``samples``   K samples per RM prompt (a new seeded draw of prompts) from round r-1's policy
                (``round_policy``), with ``round_earlier_share`` of each prompt's samples from
                earlier models (``round_earlier_models``: the paper mixes sources, in a share it
                does not give);
- ``rankings``  the same simulated labelers as round 1 (its calibrations re-applied) rank them,
                or people's exports (``round_human_rankings``) do;
- ``rm``        a reward model on every round's training rankings so far, validated on this
                round's, from the SFT model or round r-1's RM (``round_rm_init``);
- ``ppo_ptx``, ``ppo``  continued from round r-1's PPO-ptx and PPO policies;
- ``eval``      (rounds before the last, a branch stage) the round's policies against the same
                SFT baseline on the same test prompts, judged by the same held-out panel
                (``round_eval_tasks``); the last round is evaluated in full in ``eval/``, which
                also lists every round under ``rounds`` in ``results.json`` and plots them.

Where this departs from the paper: PPO's KL reference is the policy a round starts from (PPO
uses one model for both), so round r's penalty is to round r-1's policy, not to the SFT model.
Each round's stages are ordinary stages, so a killed run resumes in the round it was in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from instructgpt.data.jsonl import read_records, write_jsonl_atomic
from instructgpt.pipeline import run
from instructgpt.pipeline.config import PipelineConfig
from instructgpt.pipeline.people import LABEL_FIELDS, AwaitingLabels
from instructgpt.pipeline.stages import Stage


def round_stages(config: PipelineConfig, stage) -> list[Stage]:
    """The stages of rounds 2..N (and each earlier round's evaluation), in order; ``stage`` is
    ``build_stages``' stage maker."""
    stages = []
    for r in range(2, config.rounds + 1):
        stages.append(_round_eval(config, stage, r - 1))
        stages += [
            stage(
                f"round-{r}/samples",
                f"round {r}: K samples per RM prompt from round {r - 1}'s policy (and earlier models)",
                lambda c, f, res, r=r: run.sample_stage(c, f, res, _sources(c, res, r), round_number=r),
                "rm_prompts",
                "rm_eval_prompts",
                "samples_per_prompt",
                "sample_tokens",
                "round_policy",
                "round_earlier_models",
                "round_earlier_share",
            ),
            stage(
                f"round-{r}/rankings",
                f"round {r}: "
                + (
                    "people's rankings"
                    if config.round_human_rankings or config.labelers == "app"
                    else "the simulated labelers rank the samples"
                ),
                lambda c, f, res, r=r: rankings_stage(c, f, res, r),
                "training_labelers",
                "held_out_labelers",
                "labeler_taste_share",
                "round_human_rankings",
                *LABEL_FIELDS[config.labelers],
            ),
            stage(
                f"round-{r}/rm",
                f"round {r}: reward model on every round's comparisons",
                lambda c, f, res, r=r: run.rm_stage(
                    c,
                    f,
                    res,
                    tuple(run.stage_name(q, "rankings") for q in range(1, r + 1)),
                    init=_model(c, res, r - 1, "rm") if c.round_rm_init == "previous" else None,
                ),
                "rm_lr",
                "rm_batch_size",
                "rm_epochs",
                "round_rm_init",
            ),
            stage(
                f"round-{r}/ppo_ptx",
                f"round {r}: PPO-ptx continued from round {r - 1}'s",
                lambda c, f, res, r=r: run.ppo_stage(
                    c, f, res, c.ptx_coef, round_number=r, policy=_model(c, res, r - 1, "ppo_ptx")
                ),
                *run.PPO_FIELDS,
                "ptx_coef",
                "ptx_per_episode",
            ),
        ]
        if config.run_plain_ppo:
            stages.append(
                stage(
                    f"round-{r}/ppo",
                    f"round {r}: plain PPO continued from round {r - 1}'s",
                    lambda c, f, res, r=r: run.ppo_stage(
                        c, f, res, 0.0, round_number=r, policy=_model(c, res, r - 1, "ppo")
                    ),
                    *run.PPO_FIELDS,
                )
            )
    return stages


def _round_eval(config: PipelineConfig, stage, r: int) -> Stage:
    return stage(
        f"round-{r}/eval",
        f"round {r}: win rates against the SFT baseline",
        lambda c, f, res: run.eval_stage(c, f, res, round_number=r, tasks=c.round_eval_tasks),
        "eval_prompts",
        "eval_prompt_sets",
        "eval_items",
        "eval_task_items",
        "eval_tokens",
        "eval_batch_size",
        "round_eval_tasks",
        *LABEL_FIELDS[config.labelers],
        branch=True,  # only the final evaluation reads it: re-judging leaves the next round's training alone
    )


def round_evals(config: PipelineConfig) -> tuple[str, ...]:
    """The evaluation stages of the rounds before the last."""
    return tuple(f"round-{r}/eval" for r in range(1, config.rounds))


def _model(config: PipelineConfig, results, r: int, name: str) -> Path:
    return Path(run._load(results, config.out_dir, run.stage_name(r, name))["model"])


def _sources(config: PipelineConfig, results, r: int) -> list[Path]:
    """Round r's sampling sources: round r-1's policy first, then the earlier models to mix in."""
    latest = _model(config, results, r - 1, config.round_policy)
    if config.round_earlier_models == "none" or config.round_earlier_share == 0:
        return [latest]
    earlier = [run._sft_baseline(config, results)]
    if config.round_earlier_models == "all":
        earlier += [_model(config, results, q, config.round_policy) for q in range(1, r - 1)]
    return [latest, *earlier]


def rankings_stage(config: PipelineConfig, folder: Path, results, r: int) -> dict[str, Path]:
    """Round r's rankings: the training samples by round 1's simulated training labelers (their
    calibrations re-applied: the same people, new items) or by people (``round_human_rankings``);
    the validation samples by both simulated groups, as in round 1."""
    from instructgpt.labelers.agreement import agreement

    samples = run._load(results, config.out_dir, run.stage_name(r, "samples"))
    first = run._load(results, config.out_dir, "rankings")
    calibrations = json.loads(Path(first["panel"]).read_text(encoding="utf-8"))["calibrations"]
    train_items = [(row["prompt"], row["responses"]) for row in run._rows(samples["train"])]
    valid_items = [(row["prompt"], row["responses"]) for row in run._rows(samples["valid"])]
    panel = run._panel(config, calibrations)
    seed = config.seed + r - 1
    people = config.labelers == "app" or bool(config.round_human_rankings)
    if config.labelers == "app":
        from instructgpt.pipeline.people import rankings

        prompts = run._load(results, config.out_dir, "prepare")["rm_train"]
        train = rankings(config, prompts, samples["train"], f"round-{r} rankings")
    elif config.round_human_rankings:
        train = _people_rankings(config, folder, results, samples["train"], r)
    else:
        train = panel.rank(train_items, "training", overlap=0.1, seed=seed)
    out = {
        "train": folder / "train.jsonl",
        "valid_training": folder / "valid_training_labelers.jsonl",
        "valid_held_out": folder / "valid_held_out_labelers.jsonl",
        "panel": folder / "panel.json",
    }
    write_jsonl_atomic(out["train"], train)
    for group in ("training", "held_out"):
        write_jsonl_atomic(out[f"valid_{group}"], panel.rank(valid_items, group, overlap=0.0, seed=seed))
    rate = agreement(train, n_boot=200, seed=seed).overall
    info: dict[str, Any] = {
        "agreement": rate.rate,
        "agreement_ci": [rate.low, rate.high],
        "agreement_judgments": rate.judgments,
        "calibrations": calibrations,
        "simulated": 0 if people else len(train),
        "human": len(train) if people else 0,
        "validation_rankings": "simulated panel",
    }
    if people:  # said plainly: the round's RM validation accuracies are not people's
        from instructgpt.pipeline.people import SIMULATED_VALIDATION

        info["validation_rankings_note"] = SIMULATED_VALIDATION
        print(f"    round {r}: RM validation rankings: {SIMULATED_VALIDATION}")
    out["panel"].write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    source = "people" if people else "simulated training labelers"
    shown = "n/a" if rate.rate is None else f"{rate.rate:.1%}"  # None: no item ranked by two
    print(f"    round {r}: {len(train)} rankings by {source}; agreement {shown} on {rate.judgments} shared judgments")
    return out


def _people_rankings(config: PipelineConfig, folder: Path, results, samples_file: Path, r: int) -> list:
    """Every person's ranking of each training sample set of the round; raises AwaitingLabels,
    after writing the unranked ones as files the labeling application imports, when some are missing."""
    from instructgpt.labelers.human import human_labelers, read_exports

    people = human_labelers(read_exports(config.round_human_rankings)).values()
    rows = run._rows(samples_file)
    ranked, missing = [], []
    for row in rows:
        found = [
            p.rank(row["prompt"], row["responses"])
            for p in people
            if not p.pending([(row["prompt"], row["responses"])])
        ]
        ranked += found
        if not found:
            missing.append(row)
    if not missing:
        return ranked
    to_label = folder / "to_label"
    prompts = {p.id: p for p in read_records(run._load(results, config.out_dir, "prepare")["rm_train"], "prompts")}
    write_jsonl_atomic(to_label / "prompts.jsonl", [prompts[row["prompt_id"]] for row in missing])
    models = [row.get("models") or [None] * len(row["responses"]) for row in missing]
    write_jsonl_atomic(
        to_label / "outputs.jsonl",
        [
            {"prompt_id": row["prompt_id"], "response": text, "model": model}
            for row, names in zip(missing, models)
            for text, model in zip(row["responses"], names)
        ],
    )
    raise AwaitingLabels(
        f"round {r}: {len(missing)} of {len(rows)} training prompts are not ranked yet. Import "
        f"{to_label}/prompts.jsonl and attach {to_label}/outputs.jsonl in a ranking project (instructgpt label "
        "import-prompts, attach-outputs), add its export to round_human_rankings and run the pipeline again: it "
        "resumes in this round."
    )


def add_rounds(config: PipelineConfig, folder: Path, results) -> None:
    """Write every round's win rates and RM accuracies into ``results.json`` (``rounds``) and, with
    more than one round, their figure into the report."""
    path = folder / "results.json"
    final = json.loads(path.read_text(encoding="utf-8"))
    rounds = []
    comparisons = 0
    for r in range(1, config.rounds + 1):
        evaluated = (
            final
            if r == config.rounds
            else json.loads(Path(run._load(results, config.out_dir, f"round-{r}/eval")["results"]).read_text())
        )
        rankings = run._load(results, config.out_dir, run.stage_name(r, "rankings"))
        comparisons += len(run._rows(rankings["train"]))
        rm = json.loads(Path(run._load(results, config.out_dir, run.stage_name(r, "rm"))["summary"]).read_text())
        rounds.append(
            {
                "round": r,
                "policy": str(_model(config, results, r, config.round_policy)),
                "rm_training_rankings": comparisons,
                "winrate": {
                    name: {k: v for k, v in entry.items() if isinstance(v, (int, float, str)) or v is None}
                    for name, entry in evaluated.get("winrate", {}).get("per_model", {}).items()
                    if name not in ("pretrained", "prompted")
                },
                "rm_accuracy": {
                    group: rm.get(f"{group}_labelers", {}).get("overall", {}).get("accuracy")
                    for group in ("training", "held_out")
                },
                "rm_validation_rankings": "simulated panel",  # people rank only the training samples
            }
        )
    final["rounds"] = rounds
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(final, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
    if config.rounds > 1:
        _plot_rounds(folder, rounds)


def _plot_rounds(folder: Path, rounds: list[dict]) -> None:
    """The per-round figure, added to report.html (before its end) and figures.json."""
    from instructgpt.evaluation.report import rounds_figure

    svg, figure = rounds_figure(rounds)
    report = folder / "report.html"
    section = (
        f"<h2>{figure['title']}</h2>{svg}<p>RM accuracy is measured on the simulated panel's rankings of each "
        "round's validation samples (training and held-out groups), also when people ranked the training samples.</p>"
    )
    page = report.read_text(encoding="utf-8")
    report.write_text(page.replace("</body>", section + "</body>", 1), encoding="utf-8")
    figures_path = folder / "figures.json"
    figures = json.loads(figures_path.read_text(encoding="utf-8")) if figures_path.is_file() else []
    if isinstance(figures, list):
        figures.append(figure)
    elif isinstance(figures, dict):
        figures[figure["id"]] = figure
    figures_path.write_text(json.dumps(figures, indent=1, default=str), encoding="utf-8")
