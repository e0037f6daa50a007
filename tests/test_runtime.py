"""instructgpt.runtime: large tensors stay on the heap (reused without page faults) unless opted out."""

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only"
)

PROBE = """
import ctypes, json
import instructgpt, torch
from instructgpt.runtime import tune_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                               "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
x = torch.empty(64 << 20, dtype=torch.uint8)  # 64 MiB
during = libc.mallinfo2()
del x
after = libc.mallinfo2()
print(json.dumps({"applied": tune_memory(), "again": tune_memory(), "mmapped_during": during.hblkhd,
                  "heap_free_after": after.fordblks}))
"""


def _probe(**env) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_keeps_large_tensors_on_the_heap():
    probe = _probe(INSTRUCTGPT_SYSTEM_MALLOC="0")
    assert probe["applied"] and probe["again"]
    assert probe["mmapped_during"] < 64 << 20  # not a separate mapping
    assert probe["heap_free_after"] >= 64 << 20  # freed into the heap, kept for the next tensor


def test_opt_out_keeps_the_system_allocator():
    probe = _probe(INSTRUCTGPT_SYSTEM_MALLOC="1")
    assert not probe["applied"] and not probe["again"]
    assert probe["mmapped_during"] >= 64 << 20  # glibc's default: a mapping of its own, unmapped on free
