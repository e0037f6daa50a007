"""``instructgpt rm``: train, evaluate and normalise reward models; select SFT checkpoints by RM score.

    instructgpt rm train --data rankings.jsonl --model runs/sft/final [flags]
    instructgpt rm eval --model runs/rm/final --data val.jsonl            accuracy + log loss per K
    instructgpt rm eval --model runs/sft/final --data r.jsonl --cv-groups 5   labeler-group cross-validation
    instructgpt rm normalize --model runs/rm/final --demonstrations demos.jsonl
    instructgpt rm select-sft --reward-model runs/rm/final --sft-run runs/sft --prompts val.jsonl

Each subcommand has one typed config (``--help`` lists the fields; ``--config run.yaml``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from instructgpt.cli.stages import _command
from instructgpt.config import check
from instructgpt.training.rm import RMConfig


@dataclass
class RMEvalConfig(RMConfig):
    """Evaluate a reward model on rankings (accuracy and log loss per K), or cross-validate over labeler groups."""

    cv_groups: int = 0
    """0: evaluate `model` on `data`. G >= 2: labeler-group cross-validation, training on G-1 groups of `data` (paper:
    5)."""
    cv_seeds: int = 3
    """Cross-validation: seeds (each reshuffles the groups and reseeds training; paper: 3)."""
    cv_group_by: Literal["labeler", "prompt"] = "labeler"
    """Cross-validation groups: by labeler_id (the paper's), or by prompt for data that names no labelers."""
    cv_within_fraction: float = 0.2
    """Cross-validation: share of the training groups' rankings held out to measure within-group accuracy."""
    report: Path | None = None
    """Also write the report as JSON here."""

    def validate(self) -> None:
        super().validate()
        check(self.cv_groups == 0 or self.cv_groups >= 2, "cv_groups", "must be 0 or at least 2")
        check(self.cv_seeds >= 1, "cv_seeds", "must be at least 1")
        check(0 < self.cv_within_fraction < 1, "cv_within_fraction", "must be in (0, 1)")


@dataclass
class NormalizeConfig:
    """Set a reward model's bias so that demonstrations score mean 0 (method.md step 2), and save it."""

    model: Path = Path("runs/rm/final")
    """The saved reward model."""
    demonstrations: tuple[Path, ...] = ()
    """Demonstration JSONL files (the labelers' demonstrations)."""
    rankings: tuple[Path, ...] = ()
    """Or: ranking files, whose best-ranked responses stand in for demonstrations."""
    out: Path | None = None
    """Where to save the normalised model (default: in place)."""
    template: Literal["auto", "raw", "chat"] = "auto"
    """Prompt rendering (as in training)."""
    max_response_tokens: int = 1024
    """Responses longer than this are truncated."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """Trunk precision while scoring."""

    def validate(self) -> None:
        check(bool(self.demonstrations or self.rankings), "demonstrations", "give --demonstrations or --rankings")


@dataclass
class SelectSFTConfig:
    """Score each saved SFT checkpoint by the mean RM score of its samples on validation prompts (method.md step 1)."""

    reward_model: Path = Path("runs/rm/final")
    """The saved reward model."""
    sft_run: Path = Path("runs/sft")
    """SFT run folder: every checkpoints/step-N and final/ are scored."""
    prompts: Path | None = None
    """Validation prompts: JSONL with a 'text' (prompts) or 'prompt' (demonstrations, rankings) field."""
    max_prompts: int = 100
    """Use the first N prompts (with 16 the miniature's SFT epochs differed by less than their standard error)."""
    max_new_tokens: int = 128
    """Longest sample, in tokens."""
    temperature: float = 0.0
    """Sampling temperature; 0 is greedy (the same prompts and decoding for every checkpoint)."""
    template: Literal["auto", "raw", "chat"] = "auto"
    """Prompt rendering."""
    seed: int = 0
    """Sampling seed."""
    batch_size: int = 32
    """Prompts decoded together (speed only: on a CPU a larger batch decodes more tokens per second)."""
    report: Path | None = None
    """Also write the scores as JSON here."""

    def validate(self) -> None:
        check(self.prompts is not None, "prompts", "give --prompts FILE")
        check(self.max_prompts >= 1 and self.max_new_tokens >= 1, "max_prompts", "must be at least 1")
        check(self.batch_size >= 1, "batch_size", "must be at least 1")


def _train(config: RMConfig) -> None:
    from instructgpt.training.rm import train_rm

    print(f"final model: {train_rm(config)}")


def _eval(config: RMEvalConfig) -> None:
    from instructgpt.training import rm_cv, rm_eval

    if config.cv_groups:
        report = rm_cv.cross_validate(
            config, config.cv_groups, tuple(range(config.cv_seeds)), config.cv_group_by, config.cv_within_fraction
        )
        print(rm_cv.format_cv(report))
    else:
        report = evaluate_file(config)
        print(rm_eval.format_report(report))
    if config.report is not None:
        config.report.parent.mkdir(parents=True, exist_ok=True)
        config.report.write_text(json.dumps(report, indent=2, default=str) + "\n")


def evaluate_file(config: RMConfig) -> dict:
    """Accuracy and log loss of the saved reward model ``config.model`` on ``config.data``."""
    from dataclasses import replace

    import torch

    from instructgpt.models.reward import load_reward_model
    from instructgpt.training.lm import resolve_precision
    from instructgpt.training.rm import build_groups
    from instructgpt.training.rm_eval import evaluate_groups

    model, tokenizer = load_reward_model(config.model)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    groups, _, _ = build_groups(replace(config, val_data=(), val_fraction=0.0), tokenizer)
    autocast = resolve_precision(config.precision, device)
    return evaluate_groups(
        model,
        groups,
        tokenizer.pad_token_id,
        config.micro_batch_prompts,
        config.micro_batch_tokens,
        config.packing,
        config.pack_row_tokens,
        autocast,
    )


def _normalize(config: NormalizeConfig) -> None:
    from instructgpt.data.jsonl import read_records
    from instructgpt.models.reward import load_reward_model
    from instructgpt.training.rm import normalize

    model, tokenizer = load_reward_model(config.model)
    pairs = [(d.prompt, d.response) for path in config.demonstrations for d in read_records(path, "demonstrations")]
    for path in config.rankings:
        pairs += [
            (r.prompt, resp)
            for r in read_records(path, "rankings")
            for resp, rank in zip(r.responses, r.ranks)
            if rank == 0
        ]
    settings = RMConfig(
        template=config.template, max_response_tokens=config.max_response_tokens, precision=config.precision
    )
    bias = normalize(model, tokenizer, pairs, settings)
    out = config.out or config.model
    model.save_pretrained(out, tokenizer)
    print(f"normalization bias {bias:+.4f} ({len(pairs)} demonstrations score mean 0 with it, as PPO adds it)")
    print(f"saved to {out}")


def _select_sft(config: SelectSFTConfig) -> None:
    from instructgpt.models.reward import load_reward_model
    from instructgpt.training.checkpoint import list_checkpoints
    from instructgpt.training.rm_eval import select_sft_checkpoint

    prompts = []
    for line in Path(config.prompts).read_text(encoding="utf-8").splitlines():
        if line.strip() and len(prompts) < config.max_prompts:
            record = json.loads(line)
            prompts.append(record["text"] if "text" in record else record["prompt"])
    checkpoints = list_checkpoints(config.sft_run)
    if (config.sft_run / "final").is_dir():
        checkpoints.append(config.sft_run / "final")
    if not checkpoints:
        raise FileNotFoundError(f"no checkpoints under {config.sft_run}")
    reward_model, rm_tokenizer = load_reward_model(config.reward_model)
    results = select_sft_checkpoint(
        reward_model,
        rm_tokenizer,
        checkpoints,
        prompts,
        config.max_new_tokens,
        config.temperature,
        config.template,
        config.seed,
        batch_size=config.batch_size,
    )
    best = max(results, key=lambda r: r["mean_score"])
    for result in results:
        mark = "  <- best" if result is best else ""
        print(f"{result['mean_score']:+.4f}  {result['checkpoint']}{mark}")
    if config.report is not None:
        config.report.write_text(json.dumps({"best": best["checkpoint"], "results": results}, indent=2) + "\n")


SUBCOMMANDS = {
    "train": (RMConfig, _train),
    "eval": (RMEvalConfig, _eval),
    "normalize": (NormalizeConfig, _normalize),
    "select-sft": (SelectSFTConfig, _select_sft),
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        stream = sys.stdout if not argv or argv[0] in ("-h", "--help") else sys.stderr
        print(__doc__.strip(), file=stream)
        return 0 if stream is sys.stdout else 2
    cls, action = SUBCOMMANDS[argv[0]]
    return _command(cls, argv[1:], f"rm {argv[0]}", action)
