"""``auto`` picks bf16 only where it is native; an explicit bf16 scheme on emulated hardware warns."""

import warnings

import pytest
import torch

from instructgpt.training import lm
from instructgpt.training.ppo import PPOConfig, training_precision

CPU = torch.device("cpu")


@pytest.fixture(params=[True, False], ids=["native", "emulated"])
def native(request, monkeypatch):
    monkeypatch.setattr(lm, "bf16_native", lambda device: request.param)
    return request.param


def test_auto_is_bf16_only_where_native(native):
    assert lm.resolve_precision("auto", CPU) == (torch.bfloat16 if native else None)
    assert lm.resolve_precision("fp32", CPU) is None
    assert training_precision(PPOConfig(precision="auto"), CPU) == ("bf16-weights" if native else "fp32")
    assert training_precision(PPOConfig(precision="auto", lora_rank=4), CPU) == ("bf16" if native else "fp32")


def test_explicit_bf16_warns_only_where_emulated(native):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert lm.resolve_precision("bf16", CPU) == torch.bfloat16  # honoured either way
        assert training_precision(PPOConfig(precision="bf16-weights"), CPU) == "bf16-weights"
        lm.resolve_precision("auto", CPU)
    emulated = [w for w in caught if issubclass(w.category, RuntimeWarning) and "no native bf16" in str(w.message)]
    assert len(emulated) == (0 if native else 2)
    assert all("'auto' or 'fp32'" in str(w.message) for w in emulated)


def test_bf16_native_matches_onednn_on_cpu():
    assert lm.bf16_native(CPU) == torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert not lm.bf16_native(torch.device("meta"))
