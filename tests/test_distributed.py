"""Launching: one-process launches, refused launches, and the documented multi-process command line."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from instructgpt.config import ConfigError
from instructgpt.models.tiny import tiny_model, tiny_tokenizer
from instructgpt.training.checkpoint import read_meta
from instructgpt.training.launch import check_launch, check_resumed_together
from instructgpt.training.metrics import read_metrics
from instructgpt.training.sft import SFTConfig, train_sft
from tests.helpers.sft_run import TINY_DEFAULTS

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


LAUNCHERS = {
    "torchrun": lambda port: [*TORCHRUN, "--nproc_per_node", "2", "--master_port", str(port)],
    "accelerate": lambda port: [
        *(sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"),
        *("--main_process_port", str(port)),
    ],
}
"""The command lines of README and docs/distributed.md that start 2 processes (on a CPU too)."""


def _launch(args: list[str], port: int) -> subprocess.CompletedProcess:
    command = [*TORCHRUN, *args[:2], "--master_port", str(port), *args[2:]]
    return subprocess.run(command, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "final" / "model.safetensors"))


def _sft_in_process(demos: Path, out: Path, **overrides) -> Path:
    tokenizer = tiny_tokenizer()
    config = SFTConfig(model="tiny-random", data=(demos,), out_dir=out, **{**TINY_DEFAULTS, **overrides})
    return train_sft(config, tiny_model(tokenizer), tokenizer)


@pytest.mark.slow
def test_torchrun_with_one_process_trains_as_no_launcher(demos_file, tmp_path):
    """Under torchrun on CPU accelerate wraps even one process in DDP, which refused SFT's sparse tied-embedding
    gradient ("Expected variable to have sparse gradient"). SFT now keeps that gradient dense there and matches a
    plain run (sparse) up to the order of the embedding's sums: measured 8.2e-8 at most after 8 steps. The RM (no
    sparse gradient) matches bit for bit."""
    run = ["--nproc_per_node", "1", "-m", "tests.helpers.sft_run", str(demos_file), str(tmp_path / "one"), "epochs=1"]
    result = _launch(run, 29561)
    assert result.returncode == 0, result.stderr[-3000:]
    _sft_in_process(demos_file, tmp_path / "plain", epochs=1)
    assert read_meta(tmp_path / "one" / "final")["processes"] == 1
    one, plain = _weights(tmp_path / "one"), _weights(tmp_path / "plain")
    assert one.keys() == plain.keys()
    for name in plain:
        torch.testing.assert_close(one[name], plain[name], rtol=0, atol=1e-6)

    from tests.helpers.rm_run import main as rm_main
    from tests.helpers.rm_run import write_rankings

    rankings = write_rankings(tmp_path / "rankings.jsonl", 48)
    run = ["--nproc_per_node", "1", "-m", "tests.helpers.rm_run", str(rankings), str(tmp_path / "rm1")]
    result = _launch(run, 29567)
    assert result.returncode == 0, result.stderr[-3000:]
    rm_main([str(rankings), str(tmp_path / "rm_plain")])
    one, plain = _weights(tmp_path / "rm1"), _weights(tmp_path / "rm_plain")
    assert one.keys() == plain.keys() and all(torch.equal(one[name], plain[name]) for name in plain)


@pytest.mark.parametrize(
    "argv", [["pipeline", "--preset", "quickstart"], ["rm", "select-sft"], ["eval"], ["quickstart"]]
)
def test_commands_that_cannot_use_several_processes_refuse_a_launch(argv, monkeypatch, capsys):
    from instructgpt.cli.main import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "runs in one process, but was launched as 2" in err and "sft, rm train, ppo" in err
    monkeypatch.setenv("RANK", "1")  # one report for the whole launch
    assert main(argv) == 2
    assert capsys.readouterr().err == ""


def test_data_parallel_commands_and_help_pass_the_launch_check(monkeypatch):
    from instructgpt.cli.main import _single_process_error

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert _single_process_error(["sft", "--data", "d.jsonl"]) is None
    assert _single_process_error(["rm", "train", "--data", "r.jsonl"]) is None
    assert _single_process_error(["ppo", "--prompts", "p.jsonl"]) is None
    assert _single_process_error(["pipeline", "--help"]) is None
    assert "rm eval" in _single_process_error(["rm", "eval", "--model", "m"])
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert _single_process_error(["ppo"]) is None


def test_check_launch_catches_a_group_that_is_not_the_launch_and_a_batch_that_does_not_split(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="formed a group of 1"):
        check_launch(SimpleNamespace(num_processes=1), 8)
    with pytest.raises(ConfigError, match="batch_size: 9 does not split over 2 processes"):
        check_launch(SimpleNamespace(num_processes=2), 9)
    check_launch(SimpleNamespace(num_processes=2), 8)
    monkeypatch.delenv("WORLD_SIZE")
    check_launch(SimpleNamespace(num_processes=1), 9)


def _tiny_folder(path: Path) -> Path:
    tokenizer = tiny_tokenizer()
    tiny_model(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("launcher, port", [("torchrun", 29563), ("accelerate", 29565)])
def test_the_documented_command_lines_train_on_two_ranks(launcher, port, demos_file, tmp_path):
    """README / docs/distributed.md: ``torchrun --nproc_per_node 2`` and ``accelerate launch --multi_gpu
    --num_processes 2`` with ``-m instructgpt.cli.main sft ...``, here on a CPU. Both ranks took part: the run
    records a group of 2, and its weights are those of one process on the same global batch (with one rank's
    shard alone, or each rank a whole run, they would not be)."""
    base = _tiny_folder(tmp_path / "tiny")
    flags = ["--model", str(base), "--data", str(demos_file), "--epochs", "1", "--lr", "3e-3", "--batch-size", "8"]
    flags += ["--micro-batch-size", "2", "--residual-dropout", "0", "--val-fraction", "0", "--precision", "fp32"]
    flags += ["--out-dir", str(tmp_path / "ddp"), "--no-progress"]
    command = [*LAUNCHERS[launcher](port), "-m", "instructgpt.cli.main", "sft", *flags]
    result = subprocess.run(command, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    _sft_in_process(demos_file, tmp_path / "single", epochs=1, micro_batch_size=4)
    assert read_meta(tmp_path / "ddp" / "final")["processes"] == 2
    steps = [r["step"] for r in read_metrics(tmp_path / "ddp") if "sft/loss" in r]
    assert steps == list(range(1, 9))  # one log, not one per rank
    ddp, single = _weights(tmp_path / "ddp"), _weights(tmp_path / "single")
    for name in single:
        torch.testing.assert_close(ddp[name], single[name], rtol=0, atol=1e-5)


@pytest.mark.slow
def test_the_documented_rm_command_line_trains_on_two_ranks(tmp_path):
    """``torchrun --nproc_per_node 2 -m instructgpt.cli.main rm train ...`` (docs/reward-model.md) against
    ``instructgpt rm train`` in this process with twice the micro-batches: the same reward model."""
    from instructgpt.cli.main import main
    from tests.helpers.rm_run import write_rankings

    base = _tiny_folder(tmp_path / "tiny")
    rankings = write_rankings(tmp_path / "rankings.jsonl", 48)
    flags = ["--model", str(base), "--data", str(rankings), "--lr", "3e-3", "--batch-size", "8", "--val-fraction", "0"]
    flags += ["--precision", "fp32", "--adam-eps", "1e-5", "--no-progress"]
    command = [*LAUNCHERS["torchrun"](29569), "-m", "instructgpt.cli.main", "rm", "train", *flags]
    command += ["--micro-batch-prompts", "2", "--out-dir", str(tmp_path / "ddp")]
    result = subprocess.run(command, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert main(["rm", "train", *flags, "--micro-batch-prompts", "4", "--out-dir", str(tmp_path / "single")]) == 0
    assert read_meta(tmp_path / "ddp" / "final")["processes"] == 2
    assert [r["step"] for r in read_metrics(tmp_path / "ddp") if "rm/loss" in r] == list(range(1, 7))
    ddp, single = _weights(tmp_path / "ddp"), _weights(tmp_path / "single")
    assert ddp.keys() == single.keys()
    for name in single:
        torch.testing.assert_close(ddp[name], single[name], rtol=0, atol=1e-5)
    bias = [json.loads((tmp_path / run / "final" / "reward.json").read_text()) for run in ("ddp", "single")]
    assert bias[0]["normalization_bias"] == pytest.approx(bias[1]["normalization_bias"], abs=1e-5)


def test_processes_that_would_resume_from_different_steps_stop():
    """Only the main process writes checkpoints: machines without a shared out_dir would resume apart."""
    apart = SimpleNamespace(num_processes=2, device="cpu", gather=lambda t: torch.tensor([5, 0]))
    with pytest.raises(ConfigError, match=r"out_dir: the processes would resume from different steps \[5, 0\]"):
        check_resumed_together(apart, 5)
    check_resumed_together(SimpleNamespace(num_processes=2, device="cpu", gather=lambda t: torch.tensor([5, 5])), 5)
