"""Sharded engines (FSDP, DeepSpeed ZeRO) through accelerate: refused by every trainer, never a silent fallback.

On a machine without CUDA accelerate does not form FSDP or DeepSpeed from a config that asks for them: under a
launcher on CPU it trains with plain DDP over gloo, without a word. These tests check that the trainers stop
instead, with the config file docs/distributed.md gives, and that they stop under an engine that did form.
"""

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from accelerate.utils import DistributedType

from instructgpt.config import ConfigError
from instructgpt.training.launch import check_engine, requested_engines

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "docs" / "accelerate"
ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def test_the_engine_a_launch_asks_for_is_read_from_accelerates_variables():
    assert requested_engines({}) == []
    assert requested_engines({"ACCELERATE_USE_FSDP": "true"}) == ["FSDP"]
    assert requested_engines({"ACCELERATE_USE_DEEPSPEED": "True", "ACCELERATE_USE_FSDP": "false"}) == ["DEEPSPEED"]


@pytest.mark.parametrize(
    "variable, engine", [("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DEEPSPEED")]
)
def test_an_engine_asked_for_and_not_formed_stops(variable, engine):
    ddp = SimpleNamespace(distributed_type=DistributedType.MULTI_CPU)
    with pytest.raises(ConfigError, match=f"accelerate config: asks for {engine}, but accelerate formed MULTI_CPU"):
        check_engine(ddp, "sft", {variable: "true"})
    check_engine(ddp, "sft", {})  # plain DDP, as launched


@pytest.mark.parametrize("engine", [DistributedType.FSDP, DistributedType.DEEPSPEED])
def test_an_engine_that_formed_is_refused_until_the_trainers_shard_their_state(engine):
    variable = {"FSDP": "ACCELERATE_USE_FSDP", "DEEPSPEED": "ACCELERATE_USE_DEEPSPEED"}[engine.value]
    with pytest.raises(ConfigError, match=f"ppo does not run under {engine.value} yet"):
        check_engine(SimpleNamespace(distributed_type=engine), "ppo", {variable: "true"})


def test_every_trainer_checks_the_engine_before_it_loads_a_model(demos_file, tmp_path, monkeypatch):
    """In this process accelerate forms no group (``NO``): an FSDP launch's variable makes each trainer stop."""
    from instructgpt.training.ppo import train_ppo
    from instructgpt.training.rm import RMConfig, train_rm
    from instructgpt.training.sft import SFTConfig, train_sft
    from tests.helpers.ppo_run import config as ppo_config
    from tests.helpers.ppo_run import write_prompts, write_ptx

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    missing = "not-a-model"  # never loaded: the check comes first
    with pytest.raises(ConfigError, match="asks for FSDP, but accelerate formed NO"):
        train_sft(SFTConfig(model=missing, data=(demos_file,), out_dir=tmp_path / "sft", progress=False))
    with pytest.raises(ConfigError, match="asks for FSDP, but accelerate formed NO"):
        train_rm(RMConfig(model=missing, data=(demos_file,), out_dir=tmp_path / "rm", progress=False))
    prompts, ptx = write_prompts(tmp_path / "prompts.jsonl"), write_ptx(tmp_path / "ptx")
    with pytest.raises(ConfigError, match="asks for FSDP, but accelerate formed NO"):
        train_ppo(ppo_config(prompts, ptx, tmp_path / "ppo", policy=missing, reward_model=missing))


@pytest.mark.slow
def test_the_documented_fsdp_config_on_a_cpu_stops_instead_of_training_ddp(demos_file, tmp_path):
    """``accelerate launch --config_file docs/accelerate/fsdp.yaml`` with 2 processes on this CPU machine: accelerate
    forms MULTI_CPU (DDP over gloo); ``instructgpt sft`` says so, exits with an error and writes no model."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "fsdp.yaml")]
    command += ["--num_processes", "2", "--main_process_port", "29571", "-m", "instructgpt.cli.main", "sft"]
    command += ["--model", "not-a-model", "--data", str(demos_file), "--out-dir", str(tmp_path / "run")]
    command += ["--no-progress"]
    result = subprocess.run(command, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert "accelerate config: asks for FSDP, but accelerate formed MULTI_CPU" in result.stderr, result.stderr[-3000:]
    assert result.returncode == 1  # the launcher's status for a process that exited with 2
    assert not (tmp_path / "run" / "final").exists()
