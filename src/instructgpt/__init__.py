"""instructgpt: the InstructGPT method (Ouyang et al. 2022) as a library and a CLI.

The package is light on import: nothing heavy (torch, transformers) is imported here; importing it
sets the process's memory allocator for large tensors and keeps transformers from fetching Hub kernels at run
time (:mod:`instructgpt.runtime`).
Stages live in submodules: ``instructgpt.data`` (formats, validation, importers, rendering),
``instructgpt.models`` (loading), ``instructgpt.losses`` (pure loss functions),
``instructgpt.training`` (the SFT trainer, schedules, checkpoints), ``instructgpt.cli``.
"""

__version__ = "0.1.0"

from instructgpt.runtime import keep_hub_kernels_off as _keep_hub_kernels_off
from instructgpt.runtime import tune_memory as _tune_memory

_tune_memory()  # huge pages for large tensors ($INSTRUCTGPT_MALLOC; instructgpt.runtime says why and the modes)
_keep_hub_kernels_off()  # no kernel downloads at run time ($USE_HUB_KERNELS=YES opts in)
