"""Process-wide memory settings that make CPU training and sampling cheaper.

A PPO step on a 270M-parameter model allocates and frees tensors of hundreds of MiB many times
(the 262k-word unembedding's gradient, fp32 master gradients, optimizer temporaries). glibc
serves each allocation above 128 KiB-32 MiB with a fresh ``mmap`` and returns it with ``munmap``
on free, so every such tensor is page-faulted in again, 4 KiB page by page, by the kernel: measured
on a 2-core AMD EPYC, filling a fresh 672 MiB tensor took 0.15-0.8 s against 0.03 s for a reused
one, and the faults were about 40% of a PPO iteration (``bench/ppo.py``; README "PPO at its FLOPs").

:func:`tune_memory` applies one of three modes, chosen by ``$INSTRUCTGPT_MALLOC`` (Linux with glibc
only; elsewhere it does nothing):

- ``thp`` (the default): PyTorch's CPU allocator asks for transparent huge pages
  (``THP_MEM_ALLOC_ENABLE=1``, read by PyTorch at its first allocation, so it only takes effect when
  this runs before any tensor exists; the package does it on import). A fresh large tensor is then
  faulted in 2 MiB at a time, and memory is still handed back on free, as with glibc's defaults.
- ``heap``: in addition, large allocations stay on the heap and freed memory in the process
  (``mallopt`` ``M_MMAP_MAX = 0``, ``M_TRIM_THRESHOLD`` unlimited), so they are reused without any
  page fault. Fastest for a fixed-shape loop (a PPO iteration went from 12.3 to 7.0 s on the EPYC
  above), but the heap fragments when tensor sizes vary from step to step: the miniature preset's
  SFT stage (packed batches of varying length) grew to 24 GB resident in 42 steps and was killed
  by the kernel on a 24 GB machine (2026-12-05, Intel AMX), where glibc's defaults stay under 15 GB.
  Hence not the default; a pipeline stage can run in it (``PipelineConfig.stage_allocators``).
- ``system``: glibc's and PyTorch's defaults (also ``INSTRUCTGPT_SYSTEM_MALLOC=1``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

MODE_ENV = "INSTRUCTGPT_MALLOC"
OPT_OUT = "INSTRUCTGPT_SYSTEM_MALLOC"
MODES = ("thp", "heap", "system")
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameter numbers (malloc.h)
_applied: str | None = None

ENVIRONMENTS = {
    "thp": {"THP_MEM_ALLOC_ENABLE": "1"},
    "heap": {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1), "THP_MEM_ALLOC_ENABLE": "1"},
    "system": {},
}
"""Each mode as environment variables, for a process started without this package (glibc reads
them at start-up), e.g. a peer trainer in ``bench/ppo.py --peer-allocator tuned``."""


def requested_mode() -> str:
    """The mode ``$INSTRUCTGPT_MALLOC`` asks for (``thp`` when unset; ``system`` under the opt-out)."""
    if os.environ.get(OPT_OUT, "") not in ("", "0"):
        return "system"
    mode = os.environ.get(MODE_ENV, "") or "thp"
    if mode not in MODES:
        raise ValueError(f"${MODE_ENV} must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


def tune_memory() -> str:
    """Apply the requested mode once per process; returns the mode in force (``system`` where glibc
    is absent or refused the settings)."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = "system"
    mode = requested_mode()
    if mode == "system" or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return _applied
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    _applied = "thp"
    if mode == "thp":
        return _applied
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        # mallopt returns 1 on success; 2**31 - 1 bytes is its largest trim threshold (an int)
        if libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1):
            _applied = "heap"
    except (OSError, AttributeError):
        pass
    return _applied


HUB_KERNELS_ENV = "USE_HUB_KERNELS"


def keep_hub_kernels_off() -> bool:
    """Leave transformers' Hub kernels off unless ``$USE_HUB_KERNELS`` asks for them; True when off.

    transformers 5.x kernelizes every model it loads by default where the ``kernels`` package is
    installed (a dependency of transformers itself since 5.2x): on a CUDA device, ``from_pretrained``
    and every ``model.train()`` fetch kernels such as ``kernels-community/rotary`` from the Hugging
    Face Hub. That is a download at run time, which this project never does, and offline it raises
    (first seen on the GPU check, 2026-12-06: every CUDA trainer stopped at its first ``train()``).
    So the package sets ``USE_HUB_KERNELS=NO`` on import unless the variable is already set; a user
    with network access and trusted kernels can set ``USE_HUB_KERNELS=YES``.
    """
    os.environ.setdefault(HUB_KERNELS_ENV, "NO")
    return os.environ[HUB_KERNELS_ENV].upper() in ("0", "NO", "FALSE", "OFF")
