"""The ``instructgpt`` command line.

    instructgpt quickstart [flags]      the main job: SFT of the embedded base model, samples before/after
    instructgpt sft [--config F] [flags] step 1: supervised fine-tuning on demonstrations
    instructgpt generate --model M --prompt TEXT...   sample responses from any model the loader accepts
    instructgpt data validate FILE...   check record files (file:line: field: reason)
    instructgpt data import SOURCE --out F   turn a bundled dataset into records
    instructgpt data prepare --inputs F...   prompts -> user-split SFT / RM / PPO prompt sets + report
    instructgpt data agreement F...     inter-labeler agreement and screening against reference labels

Every stage command takes ``--config run.yaml`` and a flag per config field; ``--help`` lists them.
"""

from __future__ import annotations

import sys
from typing import Callable

COMMANDS: dict[str, tuple[str, str]] = {
    "quickstart": ("instructgpt.cli.stages", "quickstart"),
    "sft": ("instructgpt.cli.stages", "sft"),
    "generate": ("instructgpt.cli.stages", "generate"),
    "data": ("instructgpt.cli.data", "main"),
}


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
    module, name = COMMANDS[argv[0]]
    command: Callable[[list[str]], int] = getattr(__import__(module, fromlist=[name]), name)
    return command(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
