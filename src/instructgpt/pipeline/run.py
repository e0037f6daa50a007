"""``instructgpt pipeline``: the whole method, from the embedded base model and bundled data.

Stages (each skipped when its outputs exist for the same settings; see ``stages.py``):

1. ``prepare``  prompt records -> dedup, per-user cap, user splits, PII filter, token limit
2. ``sft``      step 1: supervised fine-tuning on the demonstrations of the SFT training split;
                each epoch's weights are kept (``sft/epochs``)
3. ``sft_ppo_init`` (``ppo_init_from_pretrain_mix``) the PPO-init model: a separate SFT run with
                pretraining data mixed in (paper: 2 epochs, 10%)
4. ``samples``  K samples per RM prompt from the final SFT model (temperature 1)
5. ``rankings`` the simulated panel ranks them (training labelers for training prompts,
                held-out labelers for validation prompts); bundled human rankings are added
6. ``rm``       step 2: the K-wise reward model, normalised on the demonstrations, evaluated
7. ``select_sft`` (``sft_select_by_rm``) the SFT baseline: the epoch whose responses to RM
                validation prompts get the highest mean RM score
8. ``ppo``, ``ppo_ptx`` step 3: plain PPO and PPO-ptx against the RM, initialised from the
                PPO-init model (else the SFT baseline); plain PPO is a branch that only the
                evaluation reads, so a changed ptx setting re-trains PPO-ptx alone
9. ``eval``     win rates against the SFT baseline judged by held-out labelers, public
                benchmarks, the report (one HTML page + JSON of every figure)

With ``rounds`` > 1, the stages of rounds 2..N (``round-r/``: samples, rankings, RM, PPO) come
before ``eval``, which then evaluates the last round's policies (see ``rounds.py``). The stage list
itself, with what each stage's fingerprint covers, is in ``plan.py``.

Order: the samples and the RM come from the final SFT model, since choosing among the SFT
epochs needs an RM (the paper does not say which SFT model its RM starts from). The PPO-init run
sits right after SFT, so tuning the RM does not re-run it.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import statistics
from dataclasses import asdict
from pathlib import Path

from instructgpt.data.jsonl import read_records, write_jsonl_atomic
from instructgpt.pipeline import sources
from instructgpt.pipeline.config import PipelineConfig

SFT_FIELDS = (
    "sft_demonstrations",
    "sft_demo_max_tokens",
    "sft_lr",
    "sft_batch_size",
    "sft_residual_dropout",
    "max_response_tokens",
)
PPO_FIELDS = (
    "ppo_iterations",
    "ppo_batch_size",
    "ppo_minibatch_size",
    "ppo_lr",
    "ppo_response_tokens",
    "ppo_missing_eos_penalty",
    "ppo_score_unfinished",
    "ppo_gae_lambda",
    "ppo_value_lr",
    "ppo_kl_coef",
    "ppo_kl_target",
    "ppo_kl_horizon",
    "ppo_ema_decay",
    "ppo_validation_prompts",
    "ppo_validation_every",
)


def _load(results: dict[str, dict[str, Path]], out_dir: Path, name: str) -> dict[str, Path]:
    """A finished stage's outputs (from this run or from its stage.json)."""
    if name in results:
        return results[name]
    record = json.loads((out_dir / name / "stage.json").read_text(encoding="utf-8"))
    return {k: Path(v) for k, v in record["outputs"].items()}


def prepare_prompts(config: PipelineConfig, folder: Path, results) -> dict[str, Path]:
    """Demonstration prompts all go to the SFT set; the unlabelled pool to the RM and PPO sets."""
    from instructgpt.data.prepare import PrepareConfig, prepare, summary

    demos = sources.demonstrations()
    write_jsonl_atomic(folder / "raw" / "demonstrations.jsonl", demos)
    write_jsonl_atomic(folder / "raw" / "labeler_prompts.jsonl", sources.demonstration_prompts(demos))
    write_jsonl_atomic(folder / "raw" / "api_prompts.jsonl", sources.unlabelled_prompts(hh_limit=config.hh_prompts))
    write_jsonl_atomic(folder / "raw" / "human_rankings.jsonl", sources.human_rankings())
    write_jsonl_atomic(folder / "raw" / "test_prompts.jsonl", sources.test_prompts())
    common = dict(tokenizer=config.model, max_prompt_tokens=config.max_prompt_tokens, seed=config.seed)
    runs = {
        "labeler": PrepareConfig(
            inputs=(folder / "raw" / "labeler_prompts.jsonl",),
            out_dir=folder / "labeler",
            dataset_fractions=(1.0, 0.0, 0.0),
            **common,
        ),
        "api": PrepareConfig(
            inputs=(folder / "raw" / "api_prompts.jsonl",),
            out_dir=folder / "api",
            dataset_fractions=(0.0, 0.4, 0.6),
            split_fractions=tuple(config.api_split_fractions),
            **common,
        ),
    }
    for name, run in runs.items():
        print(f"    {name} prompts: {summary(prepare(run))}")
    return {
        "demonstrations": folder / "raw" / "demonstrations.jsonl",
        "human_rankings": folder / "raw" / "human_rankings.jsonl",
        "test_prompts": folder / "raw" / "test_prompts.jsonl",
        "sft_train": folder / "labeler" / "sft" / "train.jsonl",
        "sft_valid": folder / "labeler" / "sft" / "valid.jsonl",
        "rm_train": folder / "api" / "rm" / "train.jsonl",
        "rm_valid": folder / "api" / "rm" / "valid.jsonl",
        "ppo_train": folder / "api" / "ppo" / "train.jsonl",
    }


def _demos_for(prompts_file: Path, demos_file: Path) -> list:
    ids = {p.id for p in read_records(prompts_file, "prompts")}
    return [d for d in read_records(demos_file, "demonstrations") if d.prompt_id in ids]


def train_sft_stage(config: PipelineConfig, folder: Path, results) -> dict[str, Path]:
    """Step 1, the SFT baseline; every epoch's weights are kept for the choice by RM score (select_sft)."""
    final = _train_sft(config, folder, results, config.sft_epochs, config.sft_pretrain_mix)
    return {
        "model": final,
        "metrics": folder / "metrics.jsonl",
        "epochs": _keep_epoch_weights(folder, config.sft_epochs),
    }


def sft_ppo_init_stage(config: PipelineConfig, folder: Path, results) -> dict[str, Path]:
    """The model that initialises PPO (method.md step 1): an SFT run from the base model on the same
    demonstrations, ``ppo_init_epochs`` epochs with ``ppo_init_pretrain_mix`` of its sequences
    from pretraining text (paper: 2 epochs, 10%)."""
    final = _train_sft(config, folder, results, config.ppo_init_epochs, config.ppo_init_pretrain_mix)
    return {"model": final, "metrics": folder / "metrics.jsonl"}


def _keep_epoch_weights(folder: Path, epochs: int) -> Path:
    """Each finished epoch's weights but the last (that is ``final``) as ``epochs/epoch-N``: the
    checkpoint minus its optimizer state, hard-linked (no copy while ``checkpoints/`` exists)."""
    from instructgpt.training.checkpoint import TRAINER_STATE, list_checkpoints, read_meta

    kept = folder / "epochs"
    kept.mkdir(exist_ok=True)
    for checkpoint in list_checkpoints(folder):
        epoch = read_meta(checkpoint)["epoch"]
        target = kept / f"epoch-{epoch:g}"
        if float(epoch).is_integer() and epoch < epochs and not target.exists():
            shutil.copytree(
                checkpoint, target, copy_function=_link_or_copy, ignore=shutil.ignore_patterns(TRAINER_STATE)
            )
    return kept


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # e.g. a file system without hard links
        shutil.copy2(source, target)


def _train_sft(config: PipelineConfig, folder: Path, results, epochs: int, pretrain_mix: float) -> Path:
    """Train SFT from the base model on the pipeline's demonstrations; returns the final model folder."""
    from instructgpt.training.sft import SFTConfig, train_sft

    data = _load(results, config.out_dir, "prepare")
    write_jsonl_atomic(folder / "train.jsonl", _sft_train_demonstrations(config, data))
    write_jsonl_atomic(folder / "valid.jsonl", _demos_for(data["sft_valid"], data["demonstrations"]))
    sft = SFTConfig(
        model=config.model,
        data=(folder / "train.jsonl",),
        val_data=(folder / "valid.jsonl",),
        out_dir=folder,
        epochs=epochs,
        lr=config.sft_lr,
        residual_dropout=config.sft_residual_dropout,
        batch_size=config.sft_batch_size,
        micro_batch_size=config.sft_batch_size,
        max_prompt_tokens=config.max_prompt_tokens,
        max_response_tokens=config.max_response_tokens,
        pretrain_mix=pretrain_mix,
        precision=_fast_precision(),
        seed=config.seed,
        save_total_limit=0,  # every epoch's checkpoint: select_sft picks one by RM score
    )
    return train_sft(sft)


def _sft_train_demonstrations(config: PipelineConfig, data: dict[str, Path]) -> list:
    """A seeded subset of the bundled demonstrations of the SFT training prompts, or, with
    ``labelers="app"``, the ones people write in the labeling app for a seeded subset of those prompts."""
    if config.labelers == "app":
        from instructgpt.pipeline.people import collect

        prompts = read_records(data["sft_train"], "prompts")
        random.Random(config.seed).shuffle(prompts)
        return collect(config, "demonstration", "demonstrations", prompts[: config.sft_demonstrations])
    train = _fitting(config, _demos_for(data["sft_train"], data["demonstrations"]))
    random.Random(config.seed).shuffle(train)
    return train[: config.sft_demonstrations]


def _fitting(config: PipelineConfig, demos: list) -> list:
    """The demonstrations whose response, as SFT trains on it (``render.response_ids``: with its end token), is at
    most ``sft_demo_max_tokens`` tokens: it ends within the budget (all when it is None)."""
    if config.sft_demo_max_tokens is None:
        return demos
    from instructgpt.data.render import response_ids
    from instructgpt.models.loader import load_tokenizer

    tokenizer = load_tokenizer(config.model)
    lengths = [len(response_ids(tokenizer, d.prompt, d.response)) for d in demos]
    kept = [d for d, n in zip(demos, lengths) if n <= config.sft_demo_max_tokens]
    print(f"    sft demonstrations: {len(kept)} of {len(demos)} within {config.sft_demo_max_tokens} response tokens")
    return kept


def _fast_precision() -> str:
    """bf16 weights with fp32 masters where bf16 is native (2.97x TRL in bench/sft.py), else fp32."""
    import torch

    from instructgpt.training.lm import resolve_precision

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return "bf16-weights" if resolve_precision("auto", device) is not None else "fp32"


def _autocast_dtype():
    """bf16 where bf16 is native, else None (fp32): the autocast dtype of forward passes, or the dtype the samples
    stage loads its model in. bf16 autocast samples 2.9x faster than fp32 on a CPU with native bf16; a model held in
    bf16 (no autocast) 1.25-1.4x faster again (2-core Intel Xeon with AMX, 128 prompts x 64 tokens, batch 64:
    21.3-22.4 s against 25.9-30.2 s), as every element-wise op of the trunk (RMSNorm, rotary, GELU) then runs in one
    dtype instead of PyTorch's slower mixed-dtype loops. The matmuls see the same bf16 weights either way."""
    import torch

    from instructgpt.training.lm import resolve_precision

    return resolve_precision("auto", torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def sample_stage(
    config: PipelineConfig, folder: Path, results, policies: list[Path] | None = None, round_number: int = 1
) -> dict[str, Path]:
    """K distinct samples per prompt at temperature 1; a prompt with fewer than 2 distinct ones is dropped.

    Round 1 samples the final SFT model. A later round samples ``policies``: the first is the
    latest policy, the others the earlier models, of which each prompt gets
    ``round_earlier_share`` of its K samples, from one earlier model in turn; each row then names
    the model of every response (``models``)."""
    from tqdm.auto import tqdm

    data = _load(results, config.out_dir, "prepare")
    sources = policies or [Path(_load(results, config.out_dir, "sft")["model"])]
    chosen_by_split = {}
    for split, count in (("train", config.rm_prompts), ("valid", config.rm_eval_prompts)):
        prompts = read_records(data[f"rm_{split}"], "prompts")
        chosen_by_split[split] = random.Random(config.seed + round_number - 1).sample(prompts, min(count, len(prompts)))
    k = config.samples_per_prompt
    earlier = min(round(config.round_earlier_share * k), k - 1) if len(sources) > 1 else 0
    plans = {  # per prompt: (source, samples) pairs, the latest policy first
        split: [
            [(0, k - earlier)] + ([(1 + i % (len(sources) - 1), earlier)] if earlier else []) for i in range(len(c))
        ]
        for split, c in chosen_by_split.items()
    }
    batch = 64  # rows sampled together: the sampler's per-step cost is mostly the batch-independent weight reads
    total = sum(
        -(-sum(n for plan in plans[split] for s, n in plan if s == source) // batch)
        for split in plans
        for source in range(len(sources))
    )
    progress = tqdm(total=total, desc="samples", unit="batch", dynamic_ncols=True)
    drawn: dict[str, list[list[tuple[str, int]]]] = {split: [[] for _ in c] for split, c in chosen_by_split.items()}
    for source, path in enumerate(sources):
        _sample_from(config, path, chosen_by_split, plans, source, round_number, drawn, progress)
    outputs = {}
    for split, chosen in chosen_by_split.items():
        rows = []
        for prompt, responses in zip(chosen, drawn[split]):
            first_source: dict[str, int] = {}  # distinct responses, each with the first model that wrote it
            for text, source in responses:
                if text.strip():
                    first_source.setdefault(text, source)
            if len(first_source) >= 2:
                row = {"prompt_id": prompt.id, "prompt": prompt.text, "responses": list(first_source)}
                if policies:
                    row["models"] = [str(sources[s]) for s in first_source.values()]
                rows.append(row)
        outputs[split] = folder / f"{split}.jsonl"
        write_jsonl_atomic(outputs[split], rows)
        progress.write(f"    {split}: {len(rows)} of {len(chosen)} prompts with >= 2 distinct samples")
    progress.close()
    return outputs


def _sample_from(config, path: Path, chosen_by_split, plans, source: int, round_number: int, drawn, progress) -> None:
    """Append one model's samples (``plans``' share of ``source``) to each prompt's list in ``drawn``."""
    from instructgpt.models.generate import generate
    from instructgpt.models.loader import load_model

    model, tokenizer = load_model(path, dtype=_autocast_dtype())  # bf16 weights where native: see _autocast_dtype
    batch = 64
    for split, chosen in chosen_by_split.items():
        owners = [i for i, plan in enumerate(plans[split]) for s, n in plan if s == source for _ in range(n)]
        texts = [chosen[i].text for i in owners]
        samples: list[str] = []
        for number, start in enumerate(range(0, len(texts), batch)):  # a seed per batch: a resumed run samples the same
            seed = config.seed * 100_003 + number + (0 if split == "train" else 50_000)
            samples += generate(
                model,
                tokenizer,
                texts[start : start + batch],
                config.sample_tokens,
                temperature=1.0,
                batch_size=batch,
                seed=seed + (round_number - 1) * 1_000_003 + source * 200_003,
            )
            progress.update(1)
        for i, text in zip(owners, samples):
            drawn[split][i].append((text, source))
    del model


def _panel(config: PipelineConfig, calibrations: list[dict] | None = None):
    """The simulated panel (a simulation of labelers, not a substitute for people), with the
    calibrations the rankings stage saved re-applied when given."""
    from instructgpt.labelers.panel import Calibration, Panel

    panel = Panel.simulated(config.training_labelers, config.held_out_labelers, seed=config.seed)
    for saved in calibrations or []:
        Calibration(**saved).apply(panel)
    return panel


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def rankings_stage(config: PipelineConfig, folder: Path, results) -> dict[str, Path]:
    """Training labelers rank the training samples (10% of items by two, for agreement); both
    groups rank the validation samples, so the RM can be scored on each group's taste."""
    from instructgpt.labelers.agreement import agreement

    samples = _load(results, config.out_dir, "samples")
    data = _load(results, config.out_dir, "prepare")
    train_items = [(r["prompt"], r["responses"]) for r in _rows(samples["train"])]
    valid_items = [(r["prompt"], r["responses"]) for r in _rows(samples["valid"])]
    panel = _panel(config)
    calibrations = [
        panel.calibrate(items, group=group, taste_share=config.labeler_taste_share)  # on the samples each group ranks
        for items, group in ((train_items, "training"), (valid_items, "held_out"))
    ]
    people = config.labelers == "app"
    if people:
        from instructgpt.pipeline.people import rankings

        training = rankings(config, data["rm_train"], samples["train"], "rankings")
    else:
        training = panel.rank(train_items, "training", overlap=0.1, seed=config.seed)
    human = read_records(data["human_rankings"], "rankings")[: config.human_rankings]
    out = {
        "train": folder / "train.jsonl",
        "valid_training": folder / "valid_training_labelers.jsonl",
        "valid_held_out": folder / "valid_held_out_labelers.jsonl",
        "panel": folder / "panel.json",
    }
    write_jsonl_atomic(out["train"], training + human)
    write_jsonl_atomic(out["valid_training"], panel.rank(valid_items, "training", overlap=0.0, seed=config.seed))
    write_jsonl_atomic(out["valid_held_out"], panel.rank(valid_items, "held_out", overlap=0.0, seed=config.seed))
    rate = agreement(training, n_boot=200, seed=config.seed).overall
    info = {
        "agreement": rate.rate,
        "agreement_ci": [rate.low, rate.high],
        "agreement_judgments": rate.judgments,
        "calibrations": [asdict(c) for c in calibrations],
        ("labeling_app" if people else "simulated"): len(training),
        "human": len(human),
        "validation_rankings": "simulated panel",
    }
    if people:  # said plainly: the RM validation accuracies below are not people's
        from instructgpt.pipeline.people import SIMULATED_VALIDATION

        info["validation_rankings_note"] = SIMULATED_VALIDATION
        print(f"    RM validation rankings: {SIMULATED_VALIDATION}")
    out["panel"].write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    shown = "n/a" if rate.rate is None else f"{rate.rate:.1%}"  # None: no item ranked by two
    print(
        f"    {len(training)} {'labeling-app' if people else 'simulated'} + {len(human)} human rankings; "
        f"training-labeler agreement {shown} "
        f"on {rate.judgments} shared judgments; calibrated: "
        + "; ".join(
            f"{c.group} {c.agreement:.1%} (spread x{c.spread_scale:.2f}, noise {c.noise:.3f})" for c in calibrations
        )
    )
    return out


def rm_stage(
    config: PipelineConfig,
    folder: Path,
    results,
    rankings_from: tuple[str, ...] = ("rankings",),
    init: Path | None = None,
) -> dict[str, Path]:
    """Step 2: the reward model, from the SFT model (or ``init``), on the training rankings of every
    stage in ``rankings_from``; validated on the last one's rankings of each labeler group."""
    from instructgpt.cli.rm import evaluate_file
    from instructgpt.training.rm import RMConfig, train_rm

    rankings = _load(results, config.out_dir, rankings_from[-1])
    sft = _load(results, config.out_dir, "sft")
    rm = RMConfig(
        model=str(init or sft["model"]),
        data=tuple(_load(results, config.out_dir, name)["train"] for name in rankings_from),
        val_data=(rankings["valid_training"],),
        out_dir=folder,
        lr=config.rm_lr,
        epochs=config.rm_epochs,
        batch_size=config.rm_batch_size,
        micro_batch_prompts=config.rm_batch_size,
        max_prompt_tokens=config.max_prompt_tokens,
        max_response_tokens=config.max_response_tokens,
        demonstrations=(config.out_dir / "sft" / "train.jsonl",),
        seed=config.seed,
    )
    final = train_rm(rm)
    summary = {}
    for group in ("training", "held_out"):
        report = evaluate_file(
            RMConfig(
                model=str(final),
                data=(rankings[f"valid_{group}"],),
                max_prompt_tokens=config.max_prompt_tokens,
                max_response_tokens=config.max_response_tokens,
            )
        )
        summary[f"{group}_labelers"] = report
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    accs = {g: summary[f"{g}_labelers"].get("overall", {}).get("accuracy") for g in ("training", "held_out")}
    print(
        f"    validation accuracy: training labelers {accs['training']}, held-out labelers {accs['held_out']}"
        + (" (the simulated panel's rankings, not people's)" if config.labelers == "app" else "")
    )
    return {"model": final, "summary": folder / "summary.json", "metrics": folder / "metrics.jsonl"}


def select_sft_stage(config: PipelineConfig, folder: Path, results) -> dict[str, Path]:
    """The paper's choice of the final SFT checkpoint (method.md step 1): of the SFT epochs, the one
    whose greedy responses to ``sft_select_prompts`` RM validation prompts get the highest mean
    score from the trained RM (the earliest on a tie). Every candidate's mean and n go to
    ``selection.json``; a single epoch is chosen without scoring."""
    from instructgpt.training.checkpoint import read_meta

    sft = _load(results, config.out_dir, "sft")
    kept = sorted(Path(sft["epochs"]).glob("epoch-*"), key=lambda p: read_meta(p)["epoch"]) if "epochs" in sft else []
    candidates = [*kept, Path(sft["model"])]
    scored = (
        _score_sft_checkpoints(config, results, candidates)
        if len(candidates) > 1
        else [{"checkpoint": str(candidates[0]), "mean_score": None, "scores": []}]
    )
    rows = [
        {
            "epoch": read_meta(r["checkpoint"])["epoch"],
            "checkpoint": r["checkpoint"],
            "mean_score": r["mean_score"],
            "n": len(r["scores"]),
            "scores": r["scores"],
        }
        for r in scored
    ]
    best = max(
        rows, key=lambda r: -math.inf if r["mean_score"] is None else r["mean_score"]
    )  # max keeps the first of equals
    for r in rows:
        if r is not best and r["scores"]:
            r["minus_chosen"] = _minus_chosen(r["scores"], best["scores"])
    others = [r["minus_chosen"] for r in rows if "minus_chosen" in r]
    selection = {
        "rule": "highest mean RM score on validation prompts (method.md step 1)",
        "chosen": best["checkpoint"],
        "chosen_epoch": best["epoch"],
        "chosen_clearly": all(d["ci"][1] < 0 for d in others) if others else None,
        "max_new_tokens": config.sft_select_tokens,
        "temperature": 0.0,
        "candidates": rows,
    }
    (folder / "selection.json").write_text(json.dumps(selection, indent=2) + "\n", encoding="utf-8")
    for r in rows:
        score = (
            "not scored (one candidate)"
            if r["mean_score"] is None
            else f"mean RM score {r['mean_score']:+.4f} (n={r['n']})"
        )
        print(f"    epoch {r['epoch']:g}: {score}{'  <- chosen' if r is best else _difference_text(r)}")
    if others and not selection["chosen_clearly"]:
        print("    (the choice is inside the noise: another epoch's paired difference interval reaches 0)")
    return {"model": Path(best["checkpoint"]), "selection": folder / "selection.json"}


def _minus_chosen(scores: list[float], chosen: list[float]) -> dict:
    """Per-prompt RM scores minus the chosen epoch's on the same prompts: the mean and its Student's t 95% interval
    (the choice is more than noise when every other epoch's interval is below 0)."""
    from instructgpt.evaluation.metrics import mean_interval

    differences = [a - b for a, b in zip(scores, chosen, strict=True)]
    return {"mean": statistics.fmean(differences), "ci": list(mean_interval(differences))}


def _difference_text(row: dict) -> str:
    if "minus_chosen" not in row:
        return ""
    low, high = row["minus_chosen"]["ci"]
    return f"  (minus the chosen: {row['minus_chosen']['mean']:+.4f} [{low:+.4f}, {high:+.4f}])"


def _score_sft_checkpoints(config: PipelineConfig, results, candidates: list[Path]) -> list[dict]:
    """Greedy responses of each candidate to a seeded subset of the RM validation prompts, scored by the trained RM."""
    from instructgpt.models.reward import load_reward_model
    from instructgpt.training.rm_eval import select_sft_checkpoint

    prompts = read_records(_load(results, config.out_dir, "prepare")["rm_valid"], "prompts")
    chosen = random.Random(config.seed).sample(prompts, min(config.sft_select_prompts, len(prompts)))
    reward_model, rm_tokenizer = load_reward_model(str(_load(results, config.out_dir, "rm")["model"]))
    return select_sft_checkpoint(
        reward_model,
        rm_tokenizer,
        candidates,
        [p.text for p in chosen],
        config.sft_select_tokens,
        temperature=0.0,
        seed=config.seed,
        autocast=_autocast_dtype(),
        batch_size=config.eval_batch_size,
    )


def _sft_baseline(config: PipelineConfig, results) -> Path:
    """The SFT model the evaluation compares against: the epoch chosen by RM score, else SFT's final weights."""
    return Path(_load(results, config.out_dir, "select_sft" if config.sft_select_by_rm else "sft")["model"])


def _ppo_init(config: PipelineConfig, results, ptx: bool = False) -> Path:
    """The model PPO's (``ptx``: PPO-ptx's) policy and frozen KL reference start from (method.md step 3):
    the SFT run with pretraining data mixed in when ``config.mix_init(ptx)``, else the SFT baseline."""
    if config.mix_init(ptx):
        return Path(_load(results, config.out_dir, "sft_ppo_init")["model"])
    return _sft_baseline(config, results)


def ppo_stage(
    config: PipelineConfig, folder: Path, results, ptx_coef: float, round_number: int = 1, policy: Path | None = None
) -> dict[str, Path]:
    """Step 3 against the round's reward model, from ``policy`` (round 1: the PPO init); the
    policy it starts from is also the frozen KL reference (PPOConfig has one model for both)."""
    from instructgpt.training.ppo import PPOConfig, train_ppo

    data = _load(results, config.out_dir, "prepare")
    ppo = PPOConfig(
        policy=str(policy or _ppo_init(config, results, ptx_coef > 0)),
        reward_model=str(_load(results, config.out_dir, stage_name(round_number, "rm"))["model"]),
        prompts=(data["ppo_train"],),
        out_dir=folder,
        episodes=config.ppo_iterations * config.ppo_batch_size,
        batch_size=config.ppo_batch_size,
        minibatch_size=config.ppo_minibatch_size,
        micro_batch_size=min(8, config.ppo_minibatch_size),
        lr=config.ppo_lr,
        value_lr=config.ppo_value_lr,
        lam=config.ppo_gae_lambda,
        lr_warmup_iterations=min(10, max(1, config.ppo_iterations // 4)),
        max_new_tokens=config.ppo_response_tokens,
        missing_eos_penalty=config.ppo_missing_eos_penalty,
        score_unfinished=config.ppo_score_unfinished,
        max_prompt_tokens=config.max_prompt_tokens,
        ptx_coef=ptx_coef,
        ptx_per_episode=config.ptx_per_episode,
        ptx_seq_len=128,
        kl_coef=config.ppo_kl_coef,
        kl_target=config.ppo_kl_target,
        kl_horizon=config.ppo_kl_horizon,
        ema_decay=_ema_decay(config),
        seed=config.seed + round_number - 1,  # a new round draws new prompts and samples
        validation_prompts=(Path(data["ppo_train"]).with_name("valid.jsonl"),) if config.ppo_validation_prompts else (),
        validation_size=max(1, config.ppo_validation_prompts),
        validation_every=config.ppo_validation_every or config.ppo_iterations,
        validation_cache=config.out_dir / "cache",  # PPO and PPO-ptx from the same init share iteration 0's answers
    )
    return {"model": train_ppo(ppo), "metrics": folder / "metrics.jsonl"}


def _ema_decay(config: PipelineConfig) -> float:
    """The configured EMA decay, or the paper's scaled to this run's number of policy steps.

    The paper's 0.992 averages over about 125 steps of about 4000 (256k episodes, 64 per
    minibatch): 3% of the run. A run of a few dozen steps with 0.992 would end almost exactly at
    the SFT weights, so the default keeps the paper's proportion instead.

    >>> from instructgpt.pipeline.config import PipelineConfig
    >>> _ema_decay(PipelineConfig(ppo_iterations=3, ppo_batch_size=16, ppo_minibatch_size=8))
    0.0
    >>> round(_ema_decay(PipelineConfig(ppo_iterations=500, ppo_batch_size=512, ppo_minibatch_size=64)), 3)
    0.992
    """
    if config.ppo_ema_decay is not None:
        return config.ppo_ema_decay
    steps = config.ppo_iterations * (config.ppo_batch_size // config.ppo_minibatch_size)
    horizon = steps * (1 / (1 - 0.992)) / 4000
    return 0.0 if horizon <= 1 else 1.0 - 1.0 / horizon


def stage_name(round_number: int, name: str) -> str:
    """A stage's name (and folder) in a round: round 1's at the top, round r's in round-r/."""
    return name if round_number == 1 else f"round-{round_number}/{name}"


def test_prompts(config: PipelineConfig, data: dict[str, Path]) -> list[dict]:
    """The win rates' test prompts: at most eval_prompts from each of eval_prompt_sets (seeded), each record naming
    its set. held-out-users is the API pool's test split of both of its datasets (RM and PPO): prompts of users
    none of whose prompts train or validate anything."""
    files = {
        "held-out-users": [Path(data[k]).with_name("test.jsonl") for k in ("rm_train", "ppo_train")],
        "self-instruct": [Path(data["test_prompts"])],
    }
    chosen = []
    for name in config.eval_prompt_sets:
        prompts = [p for path in files[name] for p in read_records(path, "prompts")]
        picked = random.Random(config.seed).sample(prompts, min(config.eval_prompts, len(prompts)))
        chosen += [{**p.model_dump(exclude_none=True), "set": name} for p in picked]
    return chosen


def eval_stage(
    config: PipelineConfig, folder: Path, results, round_number: int = 1, tasks: tuple[str, ...] | None = None
) -> dict[str, Path]:
    """Every model against SFT, judged by the held-out simulated labelers, plus the benchmarks.

    With ``tasks`` (a round before the last): only that round's policies and the SFT baseline."""
    from instructgpt.evaluation.judges import LabelerJudge
    from instructgpt.evaluation.suite import EvalConfig, run_eval

    data = _load(results, config.out_dir, "prepare")
    rankings = _load(results, config.out_dir, "rankings")
    calibrations = json.loads(Path(rankings["panel"]).read_text(encoding="utf-8"))["calibrations"]
    write_jsonl_atomic(folder / "test_prompts.jsonl", test_prompts(config, data))
    names = {name: stage_name(round_number, name) for name in ("rm", "ppo_ptx", "ppo")}
    trained = {
        name: _load(results, config.out_dir, stage)
        for name, stage in names.items()
        if (config.out_dir / stage / "stage.json").exists() or stage in results
    }
    models = [f"sft={_sft_baseline(config, results)}"]
    if tasks is None:
        models = [f"pretrained={config.model}", f"prompted={config.model}", *models]
    models += [f"{name.replace('_', '-')}={trained[name]['model']}" for name in ("ppo", "ppo_ptx") if name in trained]
    judge = LabelerJudge(
        _panel(config, calibrations).held_out,
        name="held-out simulated labelers",
        description=f"{config.held_out_labelers} held-out simulated labelers (a simulation, not people)",
    )
    evaluation = EvalConfig(
        models=tuple(models),
        prompted=("prompted",) if tasks is None else (),
        baseline="sft",
        judge="none",  # the judge object below: the pipeline's own panel, calibrated in "rankings"
        prompts_file=folder / "test_prompts.jsonl",
        tasks=config.eval_tasks if tasks is None else tasks,
        limit=config.eval_items,
        task_limits=(f"winrate={config.eval_prompts * len(config.eval_prompt_sets)}", *config.eval_task_items),
        win_max_new_tokens=config.eval_tokens,
        batch_size=config.eval_batch_size,
        precision="bf16-weights",  # bf16 where native, else fp32 (EvalConfig.precision)
        ppo_metrics=tuple(f"{n.replace('_', '-')}={trained[n]['metrics']}" for n in ("ppo_ptx", "ppo") if n in trained),
        rm_metrics=(f"rm={trained['rm']['summary']}",),
        seed=config.seed,
        out_dir=folder,
    )
    if config.labelers == "app":
        from instructgpt.pipeline.people import evaluate_with_people

        evaluate_with_people(config, evaluation, stage_name(round_number, "eval comparisons").replace("/", " "))
    else:
        run_eval(evaluation, judge=judge)
    return {"results": folder / "results.json", "report": folder / "report.html"}
