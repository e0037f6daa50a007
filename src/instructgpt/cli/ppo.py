"""``instructgpt ppo``: step 3, PPO or PPO-ptx against a reward model.

    instructgpt ppo --policy runs/sft/final --reward-model runs/rm/final --prompts prompts.jsonl
    instructgpt ppo --preset ppo ...        # plain PPO (ptx_coef 0)
    instructgpt ppo --preset ppo-ptx ...    # PPO-ptx, the paper's InstructGPT (ptx_coef 27.8, the default)

``--preset`` only sets ``--ptx-coef``; a later ``--ptx-coef`` flag wins. Every other field of
:class:`instructgpt.training.ppo.PPOConfig` is a flag (or a key of ``--config run.yaml``).
"""

from __future__ import annotations

import sys

PRESETS = {"ppo": ["--ptx-coef", "0"], "ppo-ptx": ["--ptx-coef", "27.8"]}


def expand_preset(argv: list[str]) -> list[str]:
    """Replace ``--preset NAME`` (or ``--preset=NAME``) by the flags it stands for, in place."""
    out, it = [], iter(argv)
    for arg in it:
        name = None
        if arg == "--preset":
            name = next(it, "")
        elif arg.startswith("--preset="):
            name = arg.split("=", 1)[1]
        if name is None:
            out.append(arg)
        elif name in PRESETS:
            out += PRESETS[name]
        else:
            raise ValueError(f"--preset: unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return out


def main(argv: list[str]) -> int:
    from instructgpt.cli.stages import _command
    from instructgpt.training.ppo import PPOConfig, train_ppo

    try:
        argv = expand_preset(argv)
    except ValueError as err:
        print(f"error: config: {err}", file=sys.stderr)
        return 2
    return _command(PPOConfig, argv, "ppo", lambda c: print(f"final policy: {train_ppo(c)}"))
