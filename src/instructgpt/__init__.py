"""instructgpt: the InstructGPT method (Ouyang et al. 2022) as a library and a CLI.

The package is light on import: nothing heavy (torch, transformers) is imported here.
Stages live in submodules: ``instructgpt.data`` (formats, validation, importers, rendering),
``instructgpt.models`` (loading), ``instructgpt.losses`` (pure loss functions),
``instructgpt.training`` (the SFT trainer, schedules, checkpoints), ``instructgpt.cli``.
"""

__version__ = "0.1.0"
