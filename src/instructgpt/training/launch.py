"""How a run was launched: the process count the launcher asked for, and checks that catch mistakes.

``torchrun --nproc_per_node N`` and ``accelerate launch --multi_gpu --num_processes N`` start N
copies of the same command with ``WORLD_SIZE=N`` in their environment. SFT and RM training use
them data-parallel (one process group, each rank its share of every batch), and so does PPO
(:mod:`instructgpt.training.ppo_parallel`: each rank its share of every iteration's episodes). Every other command
would run N whole copies of itself into the same folder, racing on its checkpoints, so it
refuses (:mod:`instructgpt.cli.main`; :func:`require_single_process` in the Python API). A
trainer whose process group is not the launch's, or whose batch does not split over it, stops
before it loads a model (:func:`check_launch`).

Sharded engines (an accelerate config with ``distributed_type: FSDP`` or ``DEEPSPEED``): SFT and the
RM train under FSDP (:mod:`instructgpt.training.sharding`, on CPUs too); every other engine and
trainer is refused (:func:`check_engine`). accelerate itself gives no warning where it cannot honour
such a config: on a machine without CUDA it trains with plain DDP instead (``--cpu``), or starts
each process alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from instructgpt.config import check


def launched_world() -> int:
    """Processes the launcher started for this job (``WORLD_SIZE``; 1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def require_single_process(what: str) -> None:
    """Stop a command that cannot use several processes when it was launched with several."""
    world = launched_world()
    check(
        world == 1,
        "WORLD_SIZE",
        f"{what} runs in one process, but was launched as {world}; start it without torchrun / accelerate launch "
        "(data-parallel: 'sft', 'rm train' and 'ppo')",
    )


def check_launch(accelerator: Any, batch_size: int, batch_field: str = "batch_size") -> None:
    """The accelerator's process group is the launch's, and each optimizer batch splits over it.

    A group smaller than the launch (e.g. an environment that makes accelerate ignore the launcher's
    variables) would leave every process training the whole run into one folder.
    """
    world = launched_world()
    check(
        accelerator.num_processes == world,
        "WORLD_SIZE",
        f"launched as {world} processes, but they formed a group of {accelerator.num_processes}: each would "
        "train the whole run into the same folder",
    )
    check(
        batch_size % accelerator.num_processes == 0,
        batch_field,
        f"{batch_size} does not split over {accelerator.num_processes} processes; use a multiple of "
        f"{accelerator.num_processes}",
    )


SHARDED_ENGINES = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DEEPSPEED"}
"""The variable ``accelerate launch`` sets for each sharded engine of its config, and the engine's name."""


def requested_engines(environ: Mapping[str, str]) -> list[str]:
    """The sharded engines an ``accelerate launch`` config asked for (``FSDP``, ``DEEPSPEED``; none for DDP)."""
    return [name for variable, name in SHARDED_ENGINES.items() if environ.get(variable, "").lower() in ("1", "true")]


def check_engine(
    accelerator: Any, trainer: str, environ: Mapping[str, str] | None = None, sharded: tuple[str, ...] = ()
) -> str | None:
    """The sharded engine this run trains under (``"FSDP"``), or None for plain data parallelism; stop otherwise.

    ``sharded``: the engines ``trainer`` runs (SFT and the RM: FSDP, :mod:`instructgpt.training.sharding`, which
    shards the model itself wherever accelerate formed a process group: accelerate forms FSDP only on CUDA, and
    plain DDP from the same config on a CPU). Any other engine stops the run, whether accelerate formed it or
    fell back without a word (DDP, or each process alone, without CUDA): the trainer would clip, save and
    resume unsharded state (``clip_grad_norm_`` on local shards, ``save_pretrained`` of one rank's shard).
    """
    environ = os.environ if environ is None else environ
    formed = str(getattr(accelerator.distributed_type, "value", accelerator.distributed_type))
    for engine in requested_engines(environ):
        if engine in sharded:
            check(
                formed != "NO",
                "accelerate config",
                f"asks for {engine}, but accelerate formed no process group (NO): {engine} shards over 2 or more "
                "processes; launch with --num_processes N (N >= 2), or without the config",
            )
            return engine
        check(False, "accelerate config", _unsupported(trainer, engine, formed, sharded))
    check(formed not in SHARDED_ENGINES.values(), "accelerate config", _unsupported(trainer, formed, formed, sharded))
    return None


def _unsupported(trainer: str, engine: str, formed: str, sharded: tuple[str, ...]) -> str:
    """Why ``trainer`` stops under ``engine``, and what accelerate formed in its place."""
    runs = f"it runs under {', '.join(sharded)} or " if sharded else "it runs "
    message = (
        f"{trainer} does not run under {engine} yet; {runs}data-parallel: torchrun --nproc_per_node N or "
        "accelerate launch --multi_gpu --num_processes N (docs/distributed.md)"
    )
    if formed != engine:
        message += f". (Here accelerate formed {formed}: {engine} through accelerate needs CUDA GPUs.)"
    return message


def is_data_parallel(module: torch.nn.Module) -> bool:
    """Whether ``accelerator.prepare`` wrapped ``module`` in DDP.

    accelerate wraps on CPU whenever a launcher set up a process group, one process included
    (``torchrun --nproc_per_node 1``), so this asks the module, not the process count.
    """
    return isinstance(module, torch.nn.parallel.DistributedDataParallel)


def check_resumed_together(accelerator: Any, step: int) -> None:
    """Every process resumes from the same step (``out_dir`` is one folder that every machine sees).

    Only the main process writes checkpoints; on machines that do not share ``out_dir``, the others
    would start from step 0 beside it and the ranks would train different models.
    """
    if accelerator.num_processes == 1:
        return
    steps = accelerator.gather(torch.tensor([step], device=accelerator.device)).tolist()
    check(
        len(set(steps)) == 1,
        "out_dir",
        f"the processes would resume from different steps {steps}: put out_dir on a filesystem every machine "
        "sees (only the main process writes checkpoints), or start a fresh run with --no-resume",
    )
