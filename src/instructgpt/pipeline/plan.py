"""The pipeline's plan: the stages of ``run.py`` (and of ``rounds.py`` for rounds 2..N) in order,
each with the settings its fingerprint covers; ``run_pipeline`` runs them (``stages.py``).

Kept apart from ``run.py`` so that ``rounds.py``, which builds on ``run.py``'s stage functions,
and ``run.py`` do not import each other.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from instructgpt.pipeline import run
from instructgpt.pipeline.config import PipelineConfig
from instructgpt.pipeline.people import LABEL_FIELDS
from instructgpt.pipeline.process import StageFailed
from instructgpt.pipeline.rounds import add_rounds, round_evals, round_stages
from instructgpt.pipeline.stages import Stage, run_stages


def run_pipeline(config: PipelineConfig) -> dict[str, dict[str, Path]]:
    """Run every stage; returns the outputs of each, by stage name."""
    config.validate()
    return run_stages(build_stages(with_base_model(config)), config.out_dir)


def with_base_model(config: PipelineConfig) -> PipelineConfig:
    """``config`` with ``model`` naming the folder every stage loads: the base model with its vocabulary trimmed to
    the bundled data where ``trim_vocabulary`` asks for it (built once, cached), else ``config`` as it is."""
    if not config.trim_vocabulary:
        return config
    from instructgpt.data.importers import find_data_root

    if not config.stage_processes:
        from instructgpt.models.vocabulary import trimmed_model

        return replace(config, model=str(trimmed_model(config.model, find_data_root())))
    # in a child, as the stages run: building it loads the base model, and the pipeline's process would otherwise
    # keep ~4 GB resident through every stage (and hand that high-water mark to each stage process it starts)
    command = [sys.executable, "-m", "instructgpt.cli.main", "vocabulary", "--model", config.model]
    done = subprocess.run([*command, "--data", str(find_data_root())], stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise StageFailed(f"trimming the vocabulary of {config.model} failed (its error is above)")
    return replace(config, model=done.stdout.splitlines()[0])


def build_stages(config: PipelineConfig) -> list[Stage]:
    # each PPO stage's fingerprint holds the init it resolves to, not how the config spells it: making
    # ptx_init_from_pretrain_mix explicit, or changing the plain PPO init beside it, keeps a trained PPO-ptx
    c = asdict(config) | {
        "ppo_starts_from_pretrain_mix": config.mix_init(False),
        "ptx_starts_from_pretrain_mix": config.mix_init(True),
    }

    def pick(*names: str) -> dict[str, Any]:
        return {n: c[n] for n in ("model", "seed", *names)}

    results: dict[str, dict[str, Path]] = {}

    def stage(name: str, title: str, fn, *names: str, branch: bool = False, uses: tuple[str, ...] = ()) -> Stage:
        def execute(folder: Path) -> dict[str, Path]:
            if config.stage_processes:  # a fresh process runs this same function (process.py says why)
                from instructgpt.pipeline.process import run_in_process

                results[name] = run_in_process(config, name, folder)
                return results[name]
            results[name] = fn(config, folder, results)
            if (
                not config.keep_checkpoints
            ):  # resume state of a finished stage: GBs (optimizer moments) never read again
                shutil.rmtree(folder / "checkpoints", ignore_errors=True)
            return results[name]

        return Stage(name, title, execute, pick(*names), branch=branch, uses=uses)

    # Plain PPO depends on the RM and the PPO init, not on PPO-ptx: in a one-round run it is a branch
    # trained before PPO-ptx, so a changed ptx_coef / ptx_per_episode re-runs PPO-ptx and the
    # evaluation only. With rounds, round r+1 continues from both policies: it stays on the main chain.
    plain_first = config.rounds == 1
    # The SFT baseline (select_sft) is read by the evaluation, and by PPO only where PPO starts from it: in a one-round
    # run it is a branch, so re-selecting (more prompts, longer answers) re-runs neither PPO stage that starts from the
    # pretraining-mix run. Rounds sample from it (round_earlier_models): there it stays on the main chain.
    select_branch = plain_first and config.sft_select_by_rm

    def init_branch(ptx: bool) -> tuple[str, ...]:
        """The branch stage PPO (``ptx``: PPO-ptx) reads its init from, if that stage is a branch."""
        if config.mix_init(ptx):
            return ("sft_ppo_init",)
        return ("select_sft",) if select_branch else ()

    plain_ppo = (
        [
            stage(
                "ppo",
                "plain PPO (ptx_coef = 0)",
                lambda c, f, r: run.ppo_stage(c, f, r, 0.0),
                *run.PPO_FIELDS,
                "ppo_starts_from_pretrain_mix",
                branch=plain_first,
                uses=init_branch(False),
            )
        ]
        if config.run_plain_ppo
        else []
    )
    return [
        stage(
            "prepare",
            "prompt sets (dedup, cap, user splits, PII)",
            run.prepare_prompts,
            "hh_prompts",
            "api_split_fractions",
            "max_prompt_tokens",
        ),
        stage(
            "sft",
            "supervised fine-tuning" + (" on people's demonstrations" if config.labelers == "app" else ""),
            run.train_sft_stage,
            *run.SFT_FIELDS,
            "sft_epochs",
            "sft_pretrain_mix",
            *LABEL_FIELDS[config.labelers],
        ),
        *(
            [
                stage(
                    "sft_ppo_init",
                    "SFT with pretraining data mixed in, to initialise PPO",
                    run.sft_ppo_init_stage,
                    *run.SFT_FIELDS,
                    "ppo_init_epochs",
                    "ppo_init_pretrain_mix",
                    *LABEL_FIELDS[config.labelers],
                    branch=True,  # only PPO reads it: toggling it leaves samples, rankings and the RM alone
                )
            ]
            if config.mix_init(False) or config.mix_init(True)
            else []
        ),
        stage(
            "samples",
            "K samples per RM prompt from the final SFT model",
            run.sample_stage,
            "rm_prompts",
            "rm_eval_prompts",
            "samples_per_prompt",
            "sample_tokens",
        ),
        stage(
            "rankings",
            ("people rank" if config.labelers == "app" else "simulated labelers rank")
            + " the samples (+ bundled human rankings)",
            run.rankings_stage,
            "training_labelers",
            "held_out_labelers",
            "human_rankings",
            "labeler_taste_share",
            *LABEL_FIELDS[config.labelers],
        ),
        stage(
            "rm",
            "reward model on K-wise rankings, normalised, evaluated",
            run.rm_stage,
            "rm_lr",
            "rm_batch_size",
            "rm_epochs",
        ),
        *(
            [
                stage(
                    "select_sft",
                    "the SFT epoch with the best mean RM score on validation prompts",
                    run.select_sft_stage,
                    "sft_select_prompts",
                    "sft_select_tokens",
                    branch=select_branch,
                )
            ]
            if config.sft_select_by_rm
            else []
        ),
        *(plain_ppo if plain_first else []),
        stage(
            "ppo_ptx",
            "PPO-ptx against the reward model",
            lambda c, f, r: run.ppo_stage(c, f, r, c.ptx_coef),
            *run.PPO_FIELDS,
            "ptx_coef",
            "ptx_per_episode",
            "ptx_starts_from_pretrain_mix",
            uses=init_branch(True),
        ),
        *([] if plain_first else plain_ppo),
        *round_stages(config, stage),
        stage(
            "eval",
            "win rates (held-out labelers), benchmarks, report"
            + (f" of round {config.rounds}; every round's figures" if config.rounds > 1 else ""),
            final_eval,
            "eval_prompts",
            "eval_prompt_sets",
            "eval_items",
            "eval_task_items",
            "eval_tokens",
            "eval_batch_size",
            "eval_tasks",
            *LABEL_FIELDS[config.labelers],
            uses=(
                *round_evals(config),
                *(("ppo",) if plain_first else ()),
                *(("select_sft",) if select_branch else ()),
            ),
        ),
    ]


def final_eval(config: PipelineConfig, folder: Path, results) -> dict[str, Path]:
    """The last evaluation: the last round's policies (``run.eval_stage``), every round's figures beside it."""
    outputs = run.eval_stage(config, folder, results, round_number=config.rounds)
    add_rounds(config, folder, results)
    return outputs
