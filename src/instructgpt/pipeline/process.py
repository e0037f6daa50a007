"""A pipeline stage in its own Python process (``PipelineConfig.stage_processes``).

Why: the stages used to share one process, and a stage after training ran far slower than on its
own (the quickstart's eval stage: 612 s after the training stages against 204 s alone, same
machine and models, 2026-12-06), and memory a trainer leaves behind (fragmented heap, caches) adds
up across stages. A fresh process per stage starts each one clean, at the cost of its start-up
(importing torch and transformers: a few seconds a stage).

The parent (``run_stages``) keeps the plan, the fingerprints and ``stage.json``; the child rebuilds
the plan from the same configuration, runs the one stage (it reads earlier stages' outputs from
their ``stage.json``, as a resumed run does) and hands back the paths the stage produced. Its
output goes to the same terminal; a failure exits non-zero and the parent stops there, as it does
when a stage raises in process. Labels still awaited (``labelers: app``) come back as
:class:`~instructgpt.pipeline.people.AwaitingLabels`.

The child's side is ``child.py`` (``python -m instructgpt.pipeline.child CONFIG_JSON STAGE FOLDER OUTPUTS_JSON``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from instructgpt.config import to_dict
from instructgpt.pipeline.config import PipelineConfig
from instructgpt.pipeline.stages import write_json
from instructgpt.runtime import MODE_ENV, OPT_OUT

AWAITING = 3
"""The child's exit status when the stage awaits labels (the CLI's, too)."""


PROCESS_JSON = "process.json"
"""``<stage>/process.json``: the stage process's peak resident memory (GiB) and exit status, for the summary."""


class StageFailed(RuntimeError):
    """A stage's process exited with an error (its traceback is in the output above)."""


def run_in_process(config: PipelineConfig, name: str, folder: Path) -> dict[str, Path]:
    """Run stage ``name`` of ``config``'s plan in a child process; returns its outputs."""
    from instructgpt.pipeline.people import AwaitingLabels

    folder.mkdir(parents=True, exist_ok=True)
    spec, answer = folder / "process-config.json", folder / "process-outputs.json"
    write_json(spec, to_dict(config))
    answer.unlink(missing_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    command = [sys.executable, "-m", "instructgpt.pipeline.child", str(spec), name, str(folder), str(answer)]
    with subprocess.Popen(command, env=child_environment(config, name)) as child:
        try:
            status, peak = _wait(child)
        except KeyboardInterrupt:  # the child got the same Ctrl-C: let it stop (and checkpoint) on its own
            child.wait()
            raise
    write_json(folder / PROCESS_JSON, {"peak_rss_gib": round(peak, 2), "exit_status": status})
    if status == AWAITING:
        raise AwaitingLabels(json.loads(answer.read_text(encoding="utf-8"))["waiting"])
    if status != 0 or not answer.is_file():
        raise StageFailed(f"stage {name!r} failed in its process ({_how(status)}); {_where(status)}")
    outputs = json.loads(answer.read_text(encoding="utf-8"))["outputs"]
    spec.unlink(missing_ok=True)
    answer.unlink(missing_ok=True)
    return {key: Path(value) for key, value in outputs.items()}


def _wait(child: subprocess.Popen) -> tuple[int, float]:
    """Wait for ``child``: its exit status (negative: the signal that killed it) and its peak resident
    memory in GiB (the kernel's account of that process alone)."""
    _, raw, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(raw)
    return child.returncode, usage.ru_maxrss / (2**30 if sys.platform == "darwin" else 2**20)


def _how(status: int) -> str:
    if status < 0:
        return f"killed by signal {signal.Signals(-status).name}"
    return f"exit status {status}"


def _where(status: int) -> str:
    if status == -signal.SIGKILL:  # what the kernel's out-of-memory killer sends
        return "the kernel kills a process this way when memory runs out; a re-run resumes from its checkpoint"
    return "its error is printed above"


def child_environment(config: PipelineConfig, name: str) -> dict[str, str]:
    """This process's environment, with the allocator mode ``stage_allocators`` names for the stage
    (``round-2/ppo`` as ``ppo``), unless the user chose one ($INSTRUCTGPT_MALLOC, or the opt-out)."""
    env = dict(os.environ)
    modes = dict(pair.split("=", 1) for pair in config.stage_allocators)
    mode = modes.get(name.rsplit("/", 1)[-1])
    if mode and not env.get(MODE_ENV) and env.get(OPT_OUT, "") in ("", "0"):
        env[MODE_ENV] = mode
    return env
