"""Run a list of named stages, skipping each whose outputs exist and whose inputs are unchanged.

A stage that finishes writes ``<out_dir>/<name>/stage.json`` with a fingerprint of the
configuration it ran with, the paths it produced and its wall time. On the next run the stage is
skipped when that file exists, its fingerprint matches and every output it names still exists;
otherwise it runs again (and trainers inside it resume from their own checkpoints), and so does
every stage after it, since their inputs may have changed.

A *branch* stage (``branch=True``, e.g. the optional PPO-init SFT run) feeds only the stages that
name it in ``uses``: it is left out of the main chain's fingerprints, so adding, removing or
re-running it re-runs only those stages, not the ones in between.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STAGE_JSON = "stage.json"
PLAN_JSON = "stages.json"
"""``<out_dir>/stages.json``: the stage names of the latest invocation's plan, in order, so that a
summary leaves out the folders of stages a changed configuration no longer has, and the base model they load."""


@dataclass
class Stage:
    """One step of the pipeline: ``run(out_folder)`` returns the paths it produced."""

    name: str
    title: str
    run: Callable[[Path], dict[str, Path]]
    settings: dict[str, Any]
    """What the stage's result depends on (its part of the config); hashed into the fingerprint."""
    branch: bool = False
    """A side branch: only the stages that name it in ``uses`` depend on it."""
    uses: tuple[str, ...] = ()
    """Branch stages (earlier in the list) whose outputs this stage reads, besides the main chain."""


def fingerprint(settings: dict[str, Any], upstream: str) -> str:
    """A short hash of a stage's settings and of every stage before it."""
    text = json.dumps(settings, sort_keys=True, default=str) + upstream
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def finished(folder: Path, key: str) -> dict[str, Path] | None:
    """The outputs of a completed run of this stage with this fingerprint, or None."""
    path = folder / STAGE_JSON
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    outputs = {name: Path(p) for name, p in record.get("outputs", {}).items()}
    if record.get("fingerprint") != key or not all(p.exists() for p in outputs.values()):
        return None
    return outputs


def release_memory() -> None:
    """Give a finished stage's memory back before the next one: the stages run in one process, and
    glibc keeps freed heap (several GB after a trainer) unless asked to trim it."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        pass


def run_stages(stages: list[Stage], out_dir: Path, log: Callable[[str], None] = print) -> dict[str, dict[str, Path]]:
    """Run (or skip) each stage in order; returns every stage's outputs by stage name."""
    results: dict[str, dict[str, Path]] = {}
    upstream = ""
    keys: dict[str, str] = {}
    timings: dict[str, float] = {}
    ran_before = False  # once a main-chain stage runs, every later stage runs on its new outputs
    ran_branches: set[str] = set()
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = {"stages": [stage.name for stage in stages]}
    if stages and "model" in stages[0].settings:  # the base model the stages load (a trimmed copy's folder, maybe)
        plan["model"] = stages[0].settings["model"]
    write_json(out_dir / PLAN_JSON, plan)
    for number, stage in enumerate(stages, 1):
        folder = out_dir / stage.name
        used = [u for u in stage.uses if u in keys]
        key = fingerprint(stage.settings, upstream + "".join(keys[u] for u in used))
        keys[stage.name] = key
        if not stage.branch:
            upstream = key
        stale = ran_before or any(u in ran_branches for u in used)
        done = None if stale else finished(folder, key)
        head = f"[{number}/{len(stages)}] {stage.name}: {stage.title}"
        if done is not None:
            log(f"{head} (done, skipped)")
            results[stage.name] = done
            continue
        log(head)
        if stage.branch:
            ran_branches.add(stage.name)
        else:
            ran_before = True
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        outputs = stage.run(folder)
        timings[stage.name] = time.perf_counter() - started
        record = {
            "fingerprint": key,
            "outputs": {k: str(v) for k, v in outputs.items()},
            "seconds": timings[stage.name],
        }
        write_json(folder / STAGE_JSON, record)
        results[stage.name] = outputs
        release_memory()
        log(f"    {stage.name} finished in {timings[stage.name]:.0f} s")
    return results


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as JSON atomically (a temporary file, then a rename); Paths and other objects as strings."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
