"""Process-wide memory settings that make CPU training and sampling several times cheaper.

A PPO step on a 270M-parameter model allocates and frees tensors of hundreds of MiB many times
(the 262k-word unembedding's gradient, fp32 master gradients, optimizer temporaries). glibc
serves each allocation above 128 KiB-32 MiB with a fresh ``mmap`` and returns it with ``munmap``
on free, so every such tensor is page-faulted in again, page by page, by the kernel: measured on a
2-core AMD EPYC, filling a fresh 672 MiB tensor took 0.15-0.8 s against 0.03 s for a reused one,
and the faults were about 40% of a PPO iteration (``bench/ppo.py``; README "PPO at its FLOPs").

:func:`tune_memory` therefore (Linux with glibc only; elsewhere it does nothing):

- keeps large allocations on the heap and freed memory in the process (``mallopt``
  ``M_MMAP_MAX = 0``, ``M_TRIM_THRESHOLD`` unlimited), so they are reused without page faults.
  The price: memory freed is not handed back to the system before the process ends, so the
  resident size stays at its high-water mark (peak memory is unchanged; ``bench/ppo.py`` reports it);
- asks PyTorch's CPU allocator for transparent huge pages (``THP_MEM_ALLOC_ENABLE=1``, read by
  PyTorch at its first allocation, so it only takes effect when this runs before any tensor
  exists; the package does it on import).

Set ``INSTRUCTGPT_SYSTEM_MALLOC=1`` to keep the system's defaults (e.g. in a long-lived process
that must give memory back).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

OPT_OUT = "INSTRUCTGPT_SYSTEM_MALLOC"
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameter numbers (malloc.h)
_applied: bool | None = None

ENVIRONMENT = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1), "THP_MEM_ALLOC_ENABLE": "1"}
"""The same settings as environment variables, for a process started without this package
(glibc reads them at start-up), e.g. a peer trainer in ``bench/ppo.py --peer-allocator tuned``."""


def tune_memory() -> bool:
    """Apply the settings above once per process; returns whether glibc accepted them."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get(OPT_OUT, "") not in ("", "0") or platform.system() != "Linux":
        return _applied
    if platform.libc_ver()[0] != "glibc":
        return _applied
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        # mallopt returns 1 on success; 2**31 - 1 bytes is its largest trim threshold (an int)
        _applied = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):
        _applied = False
    return _applied
