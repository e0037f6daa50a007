"""Test markers shared by several modules."""

import pytest
import torch

GLOO_ON_CPU = pytest.mark.skipif(
    torch.cuda.is_available(),
    reason="compares gloo processes on the CPU with one in-process run, which trains on the GPU where there is one "
    "(and two ranks cannot share one GPU)",
)
"""For the multi-process tests written for the CPU (gloo) path."""
