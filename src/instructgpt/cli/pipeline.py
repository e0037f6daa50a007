"""``instructgpt pipeline [--preset quickstart|miniature|large] [--config F] [flags]``: the whole method."""

from __future__ import annotations

import sys

from instructgpt.config import ConfigError


def _preset(argv: list[str]) -> tuple[str | None, list[str]]:
    """Turn ``--preset NAME`` into ``--config <packaged preset yaml>``."""
    from instructgpt.pipeline.config import preset_path

    rest, name, it = [], None, iter(argv)
    for arg in it:
        if arg == "--preset":
            name = next(it, None)
        elif arg.startswith("--preset="):
            name = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    if name is None:
        return None, rest
    if any(a == "--config" or a.startswith("--config=") for a in rest):
        raise ConfigError("give --preset or --config, not both")
    return str(preset_path(name)), rest


def main(argv: list[str]) -> int:
    from instructgpt.cli.stages import _command
    from instructgpt.pipeline.config import PipelineConfig
    from instructgpt.pipeline.plan import run_pipeline

    try:
        preset, rest = _preset(argv)
    except ConfigError as err:
        print(f"error: config: {err}", file=sys.stderr)
        return 2
    if preset is not None:
        rest = ["--config", preset, *rest]
    from instructgpt.pipeline.people import AwaitingLabels
    from instructgpt.pipeline.process import AWAITING, StageFailed

    try:
        return _command(PipelineConfig, rest, "pipeline", run_pipeline)
    except AwaitingLabels as waiting:  # people have tasks to finish (labelers=app, or exports): a pause, not an error
        print(f"waiting for labels: {waiting}", file=sys.stderr)
        return AWAITING
    except StageFailed as failed:  # the stage's own error is printed above, by its process
        print(f"error: {failed}", file=sys.stderr)
        return 1
