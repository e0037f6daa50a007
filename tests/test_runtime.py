"""instructgpt.runtime: huge pages for large tensors by default; heap reuse or the system's allocator on request."""

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
import ctypes, json, os
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
print(json.dumps({"mode": tune_memory(), "again": tune_memory(), "mmapped_during": during.hblkhd,
                  "heap_free_after": after.fordblks, "thp": os.environ.get("THP_MEM_ALLOC_ENABLE")}))
"""


def _probe(**env) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ("INSTRUCTGPT_MALLOC", "INSTRUCTGPT_SYSTEM_MALLOC")}
    clean.pop("THP_MEM_ALLOC_ENABLE", None)
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_default_asks_for_huge_pages_and_gives_memory_back():
    probe = _probe()
    assert probe["mode"] == probe["again"] == "thp"
    assert probe["thp"] == "1"  # set before torch's first allocation (on import)
    assert probe["mmapped_during"] >= 64 << 20  # a mapping of its own, unmapped on free: no heap growth
    assert probe["heap_free_after"] < 64 << 20


def test_heap_mode_keeps_large_tensors_on_the_heap():
    probe = _probe(INSTRUCTGPT_MALLOC="heap")
    assert probe["mode"] == probe["again"] == "heap"
    assert probe["mmapped_during"] < 64 << 20  # not a separate mapping
    assert probe["heap_free_after"] >= 64 << 20  # freed into the heap, kept for the next tensor


@pytest.mark.parametrize("env", [{"INSTRUCTGPT_SYSTEM_MALLOC": "1"}, {"INSTRUCTGPT_MALLOC": "system"}])
def test_opt_out_keeps_the_system_allocator(env):
    probe = _probe(**env)
    assert probe["mode"] == probe["again"] == "system"
    assert probe["thp"] is None
    assert probe["mmapped_during"] >= 64 << 20  # glibc's default: a mapping of its own, unmapped on free


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(subprocess.CalledProcessError) as failed:
        _probe(INSTRUCTGPT_MALLOC="jemalloc")
    assert "INSTRUCTGPT_MALLOC must be one of thp, heap, system" in failed.value.stderr
