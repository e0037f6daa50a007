"""Fully sharded data parallelism (FSDP2, torch's ``fully_shard``) for SFT and the reward model.

An ``accelerate launch --config_file docs/accelerate/fsdp.yaml`` run asks for it: each process
then holds 1/N of every parameter, gradient and Adam moment, and gathers a layer's parameters
just before the layer runs. The result is that of plain data parallelism (the same reduction of
the same gradients), which the tests check against one process.

Choices, and where this departs from ``accelerator.prepare``:

- **torch's** ``fully_shard`` **is applied here, not by accelerate.** accelerate forms FSDP only on
  CUDA; on a CPU it would train the same config as DDP without a word (:mod:`launch`). FSDP2
  itself runs over gloo, so the trainers shard the model themselves on CPUs and GPUs alike: one
  path, tested on CPU. accelerate still launches the processes and forms the group; the model
  and optimizer are not passed to ``accelerator.prepare``.
- **The root unit holds everything a forward uses outside the decoder layers.** SFT's
  :class:`~instructgpt.training.lm.CausalLMLoss` runs the decoder trunk and then the tied
  unembedding outside the Hugging Face model's ``forward``, so the loss module is the root: the
  embedding, the final norm and the head stay gathered for the whole forward that uses them. The
  RM's root is the :class:`~instructgpt.models.reward.RewardModel` itself (trunk and scalar head),
  with ``score_packed`` registered as a forward (:func:`register_fsdp_forward_method`), so that
  training, validation and the normalisation all score through it. Each decoder layer is its own
  unit (the config's ``fsdp_transformer_layer_cls_to_wrap``, checked against the model).
- **Every process runs as many forwards as the busiest** (:func:`even_micro_batches`): each forward
  gathers over all processes, so a process with fewer micro-batches adds repeats whose loss counts
  for nothing (without them the collectives hang).
- **Checkpoints hold gathered weights**: the same ``model.safetensors`` as a data-parallel run
  (rank 0 writes it), and the optimizer state gathered and keyed by parameter name
  (``torch.distributed.checkpoint.state_dict``'s full state dict), which every rank reads back
  and re-shards on resume. A checkpoint so written resumes only under FSDP, and the reverse.
- Refused rather than ignored: FSDP1 (``fsdp_version: 1``), another wrap policy, a sharded state
  dict, parameter offloading, accelerate's activation checkpointing (``--gradient-checkpointing``
  is the one switch), RAM-efficient loading, ``--precision bf16-weights`` (its fp32 masters are
  copied from whole parameters) and LoRA / QLoRA. FSDP1-only settings (prefetching, original
  parameters, module-state syncing: every rank builds the same weights) do not apply to FSDP2.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from instructgpt.config import check

OPTIMIZER_LAYOUT = "full, keyed by parameter name (FSDP)"
"""``trainer_state.pt``'s ``optimizer_layout`` under FSDP; absent in a data-parallel run's checkpoint."""


@dataclass(frozen=True)
class FSDPSettings:
    """What an accelerate FSDP config sets that this path uses."""

    reshard_after_forward: bool
    """True: free each layer's gathered parameters after its forward and gather them again for the backward
    (ZeRO-3-like); False: keep them until the backward (shards gradients and optimizer state only)."""
    layer_classes: tuple[str, ...]
    """Class names of the units besides the root (the decoder layer class); empty: the model's decoder layers."""


def fsdp_settings(environ: Mapping[str, str]) -> FSDPSettings:
    """The ``FSDP_*`` variables ``accelerate launch`` sets from a config's ``fsdp_config``, checked."""

    def flag(name: str, default: str = "false") -> bool:
        value = environ.get(name, default).lower()
        check(value in ("true", "false"), name.lower(), f"must be true or false, got {value!r}")
        return value == "true"

    check(environ.get("FSDP_VERSION", "1") == "2", "fsdp_version", "FSDP1 is not supported: set fsdp_version: 2")
    policy = environ.get("FSDP_AUTO_WRAP_POLICY", "TRANSFORMER_BASED_WRAP")
    check(
        policy == "TRANSFORMER_BASED_WRAP",
        "fsdp_auto_wrap_policy",
        f"{policy} is not supported: one unit per decoder layer is (TRANSFORMER_BASED_WRAP)",
    )
    state_dict = environ.get("FSDP_STATE_DICT_TYPE", "FULL_STATE_DICT")
    check(
        state_dict == "FULL_STATE_DICT",
        "fsdp_state_dict_type",
        f"{state_dict} is not supported: checkpoints hold gathered weights (FULL_STATE_DICT)",
    )
    check(not flag("FSDP_OFFLOAD_PARAMS"), "fsdp_offload_params", "parameter offloading is not supported")
    check(
        not flag("FSDP_ACTIVATION_CHECKPOINTING"),
        "fsdp_activation_checkpointing",
        "use the trainer's --gradient-checkpointing instead (one switch for every engine)",
    )
    check(
        not flag("FSDP_CPU_RAM_EFFICIENT_LOADING"),
        "fsdp_cpu_ram_efficient_loading",
        "is not supported: every process loads the model",
    )
    classes = tuple(c.strip() for c in environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "").split(",") if c.strip())
    return FSDPSettings(flag("FSDP_RESHARD_AFTER_FORWARD", "true"), classes)


def check_options(precision: str, lora_rank: int) -> None:
    """Refuse the trainer options that do not run sharded yet (called before a model is loaded)."""
    check(
        precision != "bf16-weights",
        "precision",
        "bf16-weights does not run under FSDP (its fp32 masters are "
        "copied from whole parameters); use bf16 (autocast, fp32 weights) or fp32",
    )
    check(
        lora_rank == 0,
        "lora_rank",
        "LoRA / QLoRA do not run under FSDP yet; train all weights, or launch data-parallel (docs/distributed.md)",
    )


def shard(
    root: torch.nn.Module,
    model: torch.nn.Module,
    settings: FSDPSettings,
    device: torch.device,
    forward_methods: tuple[str, ...] = (),
) -> None:
    """``fully_shard`` each decoder layer of ``model``, then ``root`` (the loss module holding ``model``, or
    ``model`` itself), in place.

    The mesh is every process of the default group on ``device``'s type (gloo on CPU, NCCL on CUDA).
    ``forward_methods``: methods of ``root`` that callers run instead of ``forward`` (the RM's ``score_packed``);
    they gather and free the root's parameters as ``forward`` does.
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    from instructgpt.models.dropout import _decoder_layers

    layers = _decoder_layers(model)
    found = type(layers[0]).__name__
    check(
        not settings.layer_classes or found in settings.layer_classes,
        "fsdp_transformer_layer_cls_to_wrap",
        f"{','.join(settings.layer_classes)} is not in this model; its decoder layer class is {found}",
    )
    root.to(device)  # (accelerator.prepare, which places the model, is not called)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for layer in layers:
        fully_shard(layer, mesh=mesh, reshard_after_forward=settings.reshard_after_forward)
    fully_shard(root, mesh=mesh, reshard_after_forward=settings.reshard_after_forward)
    for method in forward_methods:
        register_fsdp_forward_method(root, method)


def is_sharded(module: torch.nn.Module) -> bool:
    """Whether :func:`shard` sharded ``module`` or the module that holds it (its parameters are DTensor shards)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())


def engine_of(model: torch.nn.Module) -> str | None:
    """What ``meta.json`` records as the run's sharding: ``"FSDP"``, or None (whole copies on every process)."""
    return "FSDP" if is_sharded(model) else None


def even_micro_batches(
    split: Callable[[int], list[list[int]]], rank: int, world: int, sharded: bool, filler: list[int] | None = None
) -> list[tuple[list[int], bool]]:
    """Process ``rank``'s micro-batches (``split(rank)``), each with whether its loss counts.

    Under FSDP (``sharded``) every forward and backward gathers and reduces over all processes, so each runs
    as many micro-batches as the busiest one: the others add a repeat of one item of their last micro-batch
    (or ``filler`` where they have none) whose loss counts for nothing. Otherwise ``split(rank)`` as it is.
    """
    micro = split(rank)
    most = max(len(split(r)) for r in range(world)) if sharded else len(micro)
    repeat = micro[-1][:1] if micro else (filler or [])
    return [(chunk, True) for chunk in micro] + [(repeat, False)] * (most - len(micro))


def root_unit(module: torch.nn.Module) -> Any:
    """The outermost module :func:`shard` made a unit in ``module`` (``module`` itself, or the one it holds; an
    ``FSDPModule``), or None."""
    from torch.distributed.fsdp import FSDPModule

    return next((m for m in module.modules() if isinstance(m, FSDPModule)), None)


@contextmanager
def no_sync(accelerator: Any, module: torch.nn.Module) -> Iterator[None]:
    """Skip the gradient reduction of this backward: ``accelerator.no_sync`` for DDP, and for a sharded
    module (or one holding it) its root unit's switch (accelerate flips it only where it formed FSDP itself,
    i.e. on CUDA)."""
    root = root_unit(module)
    if root is None:
        with accelerator.no_sync(module):
            yield
        return
    root.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        root.set_requires_gradient_sync(True)


def _full_options() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def gathered_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole ``model``'s weights on rank 0's CPU ({} on the others); every process must call it.

    A tied weight is kept under its first name only (the unembedding ``lm_head.weight`` of a model with tied
    embeddings), as ``save_pretrained`` of the unsharded model writes it.
    """
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state = get_model_state_dict(model, options=_full_options())
    kept = {name for name, _ in model.named_parameters()} | {name for name, _ in model.named_buffers()}
    tied = {name for name, _ in model.named_parameters(remove_duplicate=False)} - kept
    return {name: tensor for name, tensor in state.items() if name not in tied and isinstance(tensor, torch.Tensor)}


def gathered_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """``optimizer``'s whole state keyed by parameter name, on rank 0's CPU; every process must call it."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_full_options())


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a :func:`gathered_optimizer_state` (read by every process) into the sharded ``optimizer``."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
