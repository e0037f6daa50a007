"""Run a tiny PPO from the command line (the multi-process tests launch it with torchrun).

usage: python -m tests.helpers.ppo_run PROMPTS PTX_FOLDER OUT_DIR [key=value ...]

The models are those of :func:`tests.helpers.ppo_models.tiny_models` (a random policy, a vowel-counting
reward), built alike on every rank; ``key=value`` pairs override :data:`TINY_PPO` (values parsed as
Python literals where they are, else kept as text).
"""

import ast
import json
import sys
from pathlib import Path

import torch

from instructgpt.models.tiny import tiny_tokenizer
from instructgpt.training.ppo import PPOConfig, train_ppo
from tests.helpers.ppo_models import tiny_models

TINY_PPO = dict(
    policy="tiny",
    reward_model="tiny-rm",
    episodes=16 * 4,
    batch_size=16,
    minibatch_size=8,
    micro_batch_size=2,
    generation_batch_size=8,
    forward_batch_size=4,
    max_new_tokens=8,
    lr=1e-3,
    value_lr=1e-3,
    lr_warmup_iterations=1,
    ptx_coef=0.0,
    ptx_per_episode=0.5,
    ptx_seq_len=32,
    kl_target=3.0,
    ema_decay=0.9,
    precision="fp32",
    progress=False,
    template="raw",
)
"""4 iterations of 16 episodes, 2 minibatches of 8, micro-batches of 2 (4 per minibatch in one process, 2 per rank
with 2 ranks); 8 prompts per generation batch (one rank's share, so one process samples the same batches)."""


def write_prompts(path: Path, count: int = 16, offset: int = 0) -> Path:
    with path.open("w") as handle:
        for i in range(offset, offset + count):
            record = {"id": f"p{i}", "text": f"{i} {i * 37 % 100}", "user_id": f"u{i % 4}", "source": "api"}
            handle.write(json.dumps(record) + "\n")
    return path


def write_ptx(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.txt").write_text("The quick brown fox jumps over the lazy dog. " * 20)
    return folder


def config(prompts: Path, ptx: Path, out_dir: Path, **overrides) -> PPOConfig:
    return PPOConfig(prompts=(Path(prompts),), ptx_data=Path(ptx), out_dir=Path(out_dir), **{**TINY_PPO, **overrides})


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main(argv: list[str]):
    prompts, ptx, out_dir, *pairs = argv
    overrides = {k: _value(v) for k, v in (pair.split("=", 1) for pair in pairs)}
    torch.set_num_threads(1)
    tokenizer = tiny_tokenizer()
    models = tiny_models(tokenizer)
    train_ppo(config(Path(prompts), Path(ptx), Path(out_dir), **overrides), models)
    return models


if __name__ == "__main__":
    main(sys.argv[1:])
