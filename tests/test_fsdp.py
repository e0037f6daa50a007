"""Sharded engines through accelerate: FSDP2 for SFT and the RM (on CPUs too), every other engine refused, never
a silent fallback.

On a machine without CUDA accelerate does not form FSDP or DeepSpeed from a config that asks for them: under a
launcher on CPU it trains with plain DDP over gloo, without a word. SFT and the RM shard the model themselves with
torch's ``fully_shard`` (training/sharding.py), so the FSDP config file docs/distributed.md gives trains sharded
here; these tests launch it with 2 gloo processes and compare the weights with one process on the same global
batch. Everything else stops, with the engine asked for and what accelerate formed instead.
"""

import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType
from safetensors.torch import load_file

from instructgpt.config import ConfigError
from instructgpt.models.reward import load_reward_model
from instructgpt.training import sharding
from instructgpt.training.checkpoint import TRAINER_STATE, load_trainer_state, read_meta
from instructgpt.training.launch import check_engine, requested_engines
from instructgpt.training.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "docs" / "accelerate"
FSDP_LAUNCH = {
    "ACCELERATE_USE_FSDP": "true",
    "FSDP_VERSION": "2",
    "FSDP_RESHARD_AFTER_FORWARD": "true",
    "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
    "FSDP_TRANSFORMER_CLS_TO_WRAP": "Gemma3DecoderLayer",
    "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT",
    "FSDP_OFFLOAD_PARAMS": "false",
    "FSDP_ACTIVATION_CHECKPOINTING": "false",
    "FSDP_CPU_RAM_EFFICIENT_LOADING": "false",
}
"""The variables ``accelerate launch --config_file docs/accelerate/fsdp.yaml`` sets (printed from a launch)."""
ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def test_the_engine_a_launch_asks_for_is_read_from_accelerates_variables():
    assert requested_engines({}) == []
    assert requested_engines({"ACCELERATE_USE_FSDP": "true"}) == ["FSDP"]
    assert requested_engines({"ACCELERATE_USE_DEEPSPEED": "True", "ACCELERATE_USE_FSDP": "false"}) == ["DEEPSPEED"]


@pytest.mark.parametrize("trainer", ["sft", "rm train"])
@pytest.mark.parametrize("formed", [DistributedType.MULTI_CPU, DistributedType.MULTI_GPU, DistributedType.FSDP])
def test_sft_and_the_rm_train_under_fsdp_wherever_a_process_group_formed(formed, trainer):
    """accelerate forms FSDP on CUDA, and DDP from the same config on a CPU: the trainer shards the model itself
    either way."""
    assert check_engine(SimpleNamespace(distributed_type=formed), trainer, FSDP_LAUNCH, sharded=("FSDP",)) == "FSDP"
    with pytest.raises(ConfigError, match="asks for FSDP, but accelerate formed no process group"):
        check_engine(SimpleNamespace(distributed_type=DistributedType.NO), trainer, FSDP_LAUNCH, sharded=("FSDP",))


@pytest.mark.parametrize(
    "trainer, variable, engine",
    [
        ("sft", "ACCELERATE_USE_DEEPSPEED", "DEEPSPEED"),
        ("rm train", "ACCELERATE_USE_DEEPSPEED", "DEEPSPEED"),
        ("ppo", "ACCELERATE_USE_FSDP", "FSDP"),
    ],
)
def test_an_engine_a_trainer_does_not_run_stops_and_says_what_accelerate_formed(trainer, variable, engine):
    ddp = SimpleNamespace(distributed_type=DistributedType.MULTI_CPU)
    sharded = ("FSDP",) if trainer != "ppo" else ()
    with pytest.raises(ConfigError, match=f"{trainer} does not run under {engine} yet") as stopped:
        check_engine(ddp, trainer, {variable: "true"}, sharded=sharded)
    assert f"Here accelerate formed MULTI_CPU: {engine} through accelerate needs CUDA GPUs" in str(stopped.value)
    assert check_engine(ddp, trainer, {}, sharded=sharded) is None  # plain DDP, as launched


@pytest.mark.parametrize("engine", [DistributedType.FSDP, DistributedType.DEEPSPEED])
def test_an_engine_that_formed_is_refused_by_a_trainer_that_does_not_shard(engine):
    variable = {"FSDP": "ACCELERATE_USE_FSDP", "DEEPSPEED": "ACCELERATE_USE_DEEPSPEED"}[engine.value]
    with pytest.raises(ConfigError, match=f"ppo does not run under {engine.value} yet"):
        check_engine(SimpleNamespace(distributed_type=engine), "ppo", {variable: "true"})
    with pytest.raises(ConfigError, match="sft does not run under DEEPSPEED yet"):
        check_engine(SimpleNamespace(distributed_type=DistributedType.DEEPSPEED), "sft", {}, sharded=("FSDP",))


def test_every_trainer_checks_the_engine_before_it_loads_a_model(demos_file, tmp_path, monkeypatch):
    """In this process accelerate forms no group (``NO``): under an FSDP launch's variable SFT and the RM ask for 2
    or more processes, and PPO, which does not shard, stops; under FSDP the RM refuses bf16-weights and LoRA."""
    from instructgpt.training.ppo import train_ppo
    from instructgpt.training.rm import RMConfig, train_rm
    from instructgpt.training.sft import SFTConfig, train_sft
    from tests.helpers.ppo_run import config as ppo_config
    from tests.helpers.ppo_run import write_prompts, write_ptx

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    missing = "not-a-model"  # never loaded: the check comes first
    with pytest.raises(ConfigError, match="asks for FSDP, but accelerate formed no process group"):
        train_sft(SFTConfig(model=missing, data=(demos_file,), out_dir=tmp_path / "sft", progress=False))
    with pytest.raises(ConfigError, match="asks for FSDP, but accelerate formed no process group"):
        train_rm(RMConfig(model=missing, data=(demos_file,), out_dir=tmp_path / "rm", progress=False))
    monkeypatch.setattr("instructgpt.training.rm.check_engine", lambda *args, **kwargs: "FSDP")  # as if formed
    for variable, value in FSDP_LAUNCH.items():
        monkeypatch.setenv(variable, value)
    for field, value in (("precision", "bf16-weights"), ("lora_rank", 8)):
        with pytest.raises(ConfigError, match=f"{field}: .* under FSDP"):
            rm_config = RMConfig(model=missing, data=(demos_file,), out_dir=tmp_path / "rm", progress=False)
            train_rm(replace(rm_config, **{field: value}))
    prompts, ptx = write_prompts(tmp_path / "prompts.jsonl"), write_ptx(tmp_path / "ptx")
    with pytest.raises(ConfigError, match="ppo does not run under FSDP yet"):
        train_ppo(ppo_config(prompts, ptx, tmp_path / "ppo", policy=missing, reward_model=missing))


def test_the_documented_fsdp_config_is_read_and_each_unsupported_setting_stops():
    assert sharding.fsdp_settings(FSDP_LAUNCH) == sharding.FSDPSettings(True, ("Gemma3DecoderLayer",))
    refused = {
        "FSDP_VERSION": ("1", "fsdp_version: FSDP1 is not supported"),
        "FSDP_AUTO_WRAP_POLICY": ("SIZE_BASED_WRAP", "fsdp_auto_wrap_policy: SIZE_BASED_WRAP is not supported"),
        "FSDP_STATE_DICT_TYPE": ("SHARDED_STATE_DICT", "fsdp_state_dict_type: SHARDED_STATE_DICT is not supported"),
        "FSDP_OFFLOAD_PARAMS": ("true", "fsdp_offload_params: parameter offloading is not supported"),
        "FSDP_ACTIVATION_CHECKPOINTING": ("true", "use the trainer's --gradient-checkpointing instead"),
        "FSDP_CPU_RAM_EFFICIENT_LOADING": ("true", "fsdp_cpu_ram_efficient_loading: is not supported"),
        "FSDP_RESHARD_AFTER_FORWARD": ("FULL_SHARD", "fsdp_reshard_after_forward: must be true or false"),
    }
    for variable, (value, message) in refused.items():
        with pytest.raises(ConfigError, match=message):
            sharding.fsdp_settings({**FSDP_LAUNCH, variable: value})
    with pytest.raises(ConfigError, match="precision: bf16-weights does not run under FSDP"):
        sharding.check_options("bf16-weights", 0)
    with pytest.raises(ConfigError, match="lora_rank: LoRA / QLoRA do not run under FSDP yet"):
        sharding.check_options("fp32", 8)
    sharding.check_options("bf16", 0)


def test_under_fsdp_every_process_runs_as_many_micro_batches_as_the_busiest():
    from instructgpt.training.sft import _micro_batches

    config = SimpleNamespace(micro_batch_size=2, micro_batch_tokens=0, packing=False)
    lengths = [5, 6, 7, 8, 9, 10]  # sorted and dealt: rank 0 [5, 7, 9], rank 1 [6, 8, 10]
    ranks = [SimpleNamespace(process_index=r, num_processes=2) for r in range(2)]
    config.micro_batch_size = 3
    assert _micro_batches(list(range(6)), lengths, config, ranks[0], sharded=True) == [([0, 2, 4], True)]
    config.micro_batch_tokens = 15  # padded: rank 0 [5, 7], [9]; rank 1 [6], [8], [10]
    assert _micro_batches(list(range(6)), lengths, config, ranks[0], sharded=False) == [([0, 2], True), ([4], True)]
    padded = _micro_batches(list(range(6)), lengths, config, ranks[0], sharded=True)
    assert padded == [([0, 2], True), ([4], True), ([4], False)]  # a repeat whose loss counts for nothing
    assert len(_micro_batches(list(range(6)), lengths, config, ranks[1], sharded=True)) == 3


def test_a_checkpoint_resumes_only_under_the_engine_that_wrote_it(tmp_path):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    state = {"optimizer": {}, "optimizer_layout": sharding.OPTIMIZER_LAYOUT, "scheduler": {}, "step": 3}
    torch.save(state, tmp_path / TRAINER_STATE)
    with pytest.raises(ConfigError, match="was written under FSDP and this run is data-parallel"):
        load_trainer_state(tmp_path, optimizer, scheduler, verbose=False)
    torch.save({**state, "optimizer_layout": None, "optimizer": optimizer.state_dict()}, tmp_path / TRAINER_STATE)
    with pytest.raises(ConfigError, match="was written data-parallel and this run is under FSDP"):
        load_trainer_state(tmp_path, optimizer, scheduler, verbose=False, sharded_model=model)


def _launch_fsdp(demos_file: Path, out: Path, port: int, processes: int = 2, *pairs: str) -> str:
    """``accelerate launch --config_file docs/accelerate/fsdp.yaml`` of the tiny SFT run (tests/helpers/sft_run)."""
    return _launch_helper("tests.helpers.sft_run", demos_file, out, port, processes, "epochs=1", *pairs)


def _launch_helper(helper: str, data: Path, out: Path, port: int, processes: int, *pairs: str) -> str:
    """``accelerate launch --config_file docs/accelerate/fsdp.yaml`` of a tiny run (``helper``: tests/helpers)."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "fsdp.yaml")]
    command += ["--num_processes", str(processes), "--main_process_port", str(_usable_port(port))]
    command += ["-m", helper, str(data), str(out), *pairs]
    try:
        result = subprocess.run(command, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as hung:  # say where it stopped (a full-suite run once hung here, once only)
        raise AssertionError(f"launch timed out; stderr tail: {str(hung.stderr or '')[-3000:]}") from hung
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _usable_port(port: int) -> int:
    """``port`` when nothing listens there, else a free one: a rendezvous on a port a leftover process still holds
    waits for ever."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
            return port
        except OSError:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]


def _compare_with_one_process(
    run: Path, single: Path, atol: float, keys: tuple[str, ...] = ("sft/loss", "sft/grad_norm"), rtol: float = 1e-5
) -> float:
    """Weights (same names, every one within ``atol``), the metrics ``keys`` (losses and gradient norms, within
    ``rtol``); the largest weight difference."""
    sharded, whole = (
        load_file(str(run / "final" / "model.safetensors")),
        load_file(str(single / "final" / "model.safetensors")),
    )
    assert sharded.keys() == whole.keys()  # the same file as an unsharded run's: tied lm_head not repeated
    for name in whole:
        torch.testing.assert_close(sharded[name], whole[name], rtol=0, atol=atol, msg=lambda m, n=name: f"{n}: {m}")
    for key in keys:
        ours = [r[key] for r in read_metrics(run) if key in r]
        theirs = [r[key] for r in read_metrics(single) if key in r]
        assert len(ours) == len(theirs) > 0, key
        torch.testing.assert_close(torch.tensor(ours), torch.tensor(theirs), rtol=rtol, atol=0, msg=key)
    return max((sharded[name] - whole[name]).abs().max().item() for name in whole)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["killed and resumed", "gradient checkpointing"])
def test_the_documented_fsdp_config_trains_sft_sharded_like_one_process(variant, demos_file, tmp_path):
    """2 gloo processes under docs/accelerate/fsdp.yaml (FSDP2, full shard, one unit per decoder layer), 8 steps
    of 8 sequences in fp32, against one process with 2 micro-batches of 4: every weight within 1e-5 (measured
    1.7e-6 after 8 steps at lr 3e-3 in both variants; 5.6e-7 with equal micro-batches), losses and gradient norms
    within 1e-5 relative. At most 110 tokens a micro-batch: in 3 of the 8 steps one process has 3 micro-batches
    and the other 2, so the padding that keeps FSDP's collectives in step is exercised (without it they hang).

    Killed and resumed: stopped after 3 steps (a checkpoint of gathered weights and gathered optimizer state), then
    launched again, and it resumed at step 3; with gradient checkpointing, one uninterrupted run."""
    from tests.test_distributed import _sft_in_process

    run, port = tmp_path / "fsdp", 29575 if variant == "gradient checkpointing" else 29577
    if variant == "killed and resumed":
        _launch_fsdp(demos_file, run, port, 2, "max_steps=3", "micro_batch_tokens=110")
        assert read_meta(run / "checkpoints" / "step-000003")["sharding"] == "FSDP"
        assert "(step 3)" in _launch_fsdp(demos_file, run, port + 1, 2, "micro_batch_tokens=110")
    else:
        _launch_fsdp(demos_file, run, port, 2, "gradient_checkpointing=1", "micro_batch_tokens=110")
    assert [r["step"] for r in read_metrics(run) if "sft/loss" in r] == list(range(1, 9))
    _sft_in_process(demos_file, tmp_path / "single", epochs=1, micro_batch_size=4)
    meta = read_meta(run / "final")
    assert (meta["processes"], meta["sharding"]) == (2, "FSDP")
    assert read_meta(tmp_path / "single" / "final")["sharding"] is None
    print(f"{variant}: largest weight difference {_compare_with_one_process(run, tmp_path / 'single', 1e-5):.2g}")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA path (accelerate forms FSDP, NCCL) needs a GPU")
def test_the_documented_fsdp_config_trains_sft_sharded_on_cuda(demos_file, tmp_path):
    """On CUDA accelerate itself forms FSDP from the config (``distributed_type`` FSDP) and NCCL is the backend; the
    trainer still shards the model itself (not ``accelerator.prepare``). One process per GPU, at most 2."""
    from tests.test_distributed import _sft_in_process

    processes = min(torch.cuda.device_count(), 2)
    _launch_fsdp(demos_file, tmp_path / "fsdp", 29581, processes, f"micro_batch_size={8 // (2 * processes)}")
    _sft_in_process(demos_file, tmp_path / "single", epochs=1, micro_batch_size=4)
    assert read_meta(tmp_path / "fsdp" / "final")["sharding"] == "FSDP"
    print(
        f"cuda: largest weight difference {_compare_with_one_process(tmp_path / 'fsdp', tmp_path / 'single', 1e-4):.2g}"
    )


RM_OPTIONS = {"epochs": 2, "val_fraction": 0.32, "micro_batch_tokens": 400, "normalize": True, "adam_eps": 1e-5}
"""The tiny RM run of the FSDP test: 8 steps of 8 prompts (33 training rankings, 15 held out), at most 400 tokens a
micro-batch: in 4 of the 8 steps one process has 2 micro-batches and the other 1, in validation 4 and 3, and in the
normalisation (33 pairs, 16 a forward) 2 and 1, so every padded path runs (without the padding the ranks hang)."""


@pytest.mark.slow
def test_the_documented_fsdp_config_trains_the_rm_sharded_like_one_process(tmp_path):
    """``rm train`` under docs/accelerate/fsdp.yaml (FSDP2, full shard, one unit per decoder layer, the reward model
    the root), 2 gloo processes killed after 3 steps and resumed (the checkpoint holds the gathered weights and the
    gathered optimizer state), against one process on the same global batch, fp32, Adam eps 1e-5 as in the
    data-parallel RM test (with 1e-8 one weight of 1024 differed by 3.3e-5, every other within 2.2e-6: eps amplifies
    the summation order of a near-zero gradient): every weight and the normalisation bias within 1e-5; losses,
    gradient norms and validation losses within 1e-4 relative; the training and validation accuracies equal.
    Measured after 8 steps: weights 6.4e-7, bias 6.0e-7, losses 1.6e-6, gradient norms 1.0e-5, validation loss
    4.8e-7 (relative)."""
    from tests.helpers.rm_run import write_rankings
    from tests.test_rm_train import _config, _train

    rankings = write_rankings(tmp_path / "rankings.jsonl", 48, seed=0)
    run, pairs = tmp_path / "fsdp", [f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in RM_OPTIONS.items()]
    _launch_helper("tests.helpers.rm_run", rankings, run, 29585, 2, "max_steps=3", *pairs)
    assert read_meta(run / "checkpoints" / "step-000003")["sharding"] == "FSDP"
    assert "(step 3)" in _launch_helper("tests.helpers.rm_run", rankings, run, 29586, 2, *pairs)
    single_run = tmp_path / "single"
    single = _train(_config(rankings, single_run, **RM_OPTIONS))
    assert [r["step"] for r in read_metrics(run) if "rm/loss" in r] == list(range(1, 9))
    meta = read_meta(run / "final")
    assert (meta["kind"], meta["processes"], meta["sharding"]) == ("rm", 2, "FSDP")
    assert read_meta(single_run / "final")["sharding"] is None
    keys = ("rm/loss", "rm/grad_norm", "rm/val_loss")
    largest = _compare_with_one_process(run, single_run, 1e-5, keys, rtol=1e-4)
    for key in ("rm/accuracy", "rm/val_accuracy"):
        assert [r[key] for r in read_metrics(run) if key in r] == [r[key] for r in read_metrics(single_run) if key in r]
    sharded, _ = load_reward_model(run / "final")
    torch.testing.assert_close(sharded.normalization_bias, single.normalization_bias, rtol=0, atol=1e-5)
    bias = abs(float(sharded.normalization_bias) - float(single.normalization_bias))
    print(f"rm: largest weight difference {largest:.2g}, bias {bias:.2g}")
