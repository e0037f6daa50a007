"""``instructgpt eval``: win rates against a baseline, the automatic evaluations, the report."""

from __future__ import annotations


def main(argv: list[str]) -> int:
    from instructgpt.cli.stages import _command
    from instructgpt.evaluation.suite import EvalConfig, run_eval

    return _command(EvalConfig, argv, "eval", lambda config: run_eval(config))
