"""The child's side of ``process.py``: run one stage of the plan, rebuilt from the configuration.

``python -m instructgpt.pipeline.child CONFIG_JSON STAGE FOLDER OUTPUTS_JSON`` (what ``run_in_process``
starts): exit 0 with the stage's outputs in OUTPUTS_JSON, 3 with the labels still awaited, 1 (one line
on stderr) for a known user error; anything else raises with its traceback.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from instructgpt.config import from_dict
from instructgpt.pipeline.config import PipelineConfig
from instructgpt.pipeline.process import AWAITING
from instructgpt.pipeline.stages import write_json


def main(argv: list[str]) -> int:
    from instructgpt.cli.stages import _quiet, _run
    from instructgpt.pipeline.people import AwaitingLabels
    from instructgpt.pipeline.plan import build_stages

    spec, name, folder, answer = argv
    values = json.loads(Path(spec).read_text(encoding="utf-8"))
    config = replace(from_dict(PipelineConfig, values, source=spec), stage_processes=False)
    stages = {stage.name: stage for stage in build_stages(config)}
    _quiet()
    outputs: dict[str, Path] = {}
    try:  # known user errors (config, data, model loading) as one line, as the CLI prints them
        status = _run(lambda: outputs.update(stages[name].run(Path(folder))))
    except AwaitingLabels as waiting:
        write_json(Path(answer), {"waiting": str(waiting)})
        return AWAITING
    if status == 0:
        write_json(Path(answer), {"outputs": outputs})
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
