"""The ``instructgpt`` command line.

    instructgpt pipeline [--preset quickstart|miniature|large] [flags]   the main job: the whole method end to end
    instructgpt quickstart [flags]      SFT of the embedded base model only, samples before/after
    instructgpt sft [--config F] [flags] step 1: supervised fine-tuning on demonstrations
    instructgpt rm train|eval|normalize|select-sft   step 2: the reward model on K-wise rankings
    instructgpt ppo [--preset ppo|ppo-ptx] [flags]   step 3: PPO / PPO-ptx against a reward model
    instructgpt generate --model M --prompt TEXT...   sample responses from any model the loader accepts
    instructgpt vocabulary --model M [--data PATH...]   trim a model's vocabulary to the tokens of some text
    instructgpt eval --models NAME=MODEL... [--judge J] [--tasks T...]   win rates, benchmarks; HTML report
    instructgpt data validate FILE...   check record files (file:line: field: reason)
    instructgpt data import SOURCE --out F   turn a bundled dataset into records
    instructgpt label serve|migrate|create-user|invite|export ...   the human data collection web app
    instructgpt data prepare --inputs F...   prompts -> user-split SFT / RM / PPO prompt sets + report
    instructgpt data agreement F...     inter-labeler agreement and screening against reference labels

Every stage command takes ``--config run.yaml`` and a flag per config field; ``--help`` lists them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

COMMANDS: dict[str, tuple[str, str]] = {
    "pipeline": ("instructgpt.cli.pipeline", "main"),
    "quickstart": ("instructgpt.cli.stages", "quickstart"),
    "sft": ("instructgpt.cli.stages", "sft"),
    "generate": ("instructgpt.cli.stages", "generate"),
    "vocabulary": ("instructgpt.cli.stages", "vocabulary"),
    "rm": ("instructgpt.cli.rm", "main"),
    "ppo": ("instructgpt.cli.ppo", "main"),
    "data": ("instructgpt.cli.data", "main"),
    "eval": ("instructgpt.cli.eval", "main"),
    "label": ("instructgpt.cli.label", "main"),
}


DATA_PARALLEL = {("sft",), ("rm", "train"), ("ppo",)}
"""Commands that use the processes of a multi-process launch (``torchrun``, ``accelerate launch``);
every other command refuses one rather than run as several whole copies into the same folder."""


def _single_process_error(argv: list[str]) -> str | None:
    """The launch error for ``argv`` under several processes, or None when it may run."""
    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun and accelerate launch
    if world == 1 or tuple(argv[:1]) in DATA_PARALLEL or tuple(argv[:2]) in DATA_PARALLEL:
        return None
    if any(a in ("-h", "--help") for a in argv):
        return None
    what = " ".join(argv[:2] if argv[0] in ("rm", "data", "label") else argv[:1])
    return (
        f"error: launch: 'instructgpt {what}' runs in one process, but was launched as {world} (WORLD_SIZE); "
        "start it without torchrun / accelerate launch. Data-parallel commands: sft, rm train, ppo"
    )


def _usage() -> str:
    return __doc__.strip() + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from instructgpt import __version__

        print(__version__)
        return 0
    if argv[0] not in COMMANDS:
        print(f"instructgpt: unknown command {argv[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    error = _single_process_error(argv)
    if error:
        if os.environ.get("RANK", "0") == "0":  # one report, not one per process
            print(error, file=sys.stderr)
        return 2
    module, name = COMMANDS[argv[0]]
    command: Callable[[list[str]], int] = getattr(__import__(module, fromlist=[name]), name)
    try:
        return command(argv[1:]) or 0
    except BrokenPipeError:  # `instructgpt sft --help | head`: the reader left; no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python flushes stdout at exit: let that go nowhere
        return 141


if __name__ == "__main__":
    sys.exit(main())
