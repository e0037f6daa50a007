"""RM training end to end on a tiny random model: learning, normalisation, resume, accumulation, DDP."""

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from instructgpt.models.reward import RewardModel, load_reward_model, score_texts
from instructgpt.models.tiny import tiny_model, tiny_tokenizer
from instructgpt.training.checkpoint import list_checkpoints, read_meta
from instructgpt.training.metrics import read_metrics
from instructgpt.training.rm import RMConfig, train_rm
from tests.helpers.markers import GLOO_ON_CPU
from tests.helpers.rm_run import TINY_DEFAULTS, write_rankings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def rankings(tmp_path) -> Path:
    return write_rankings(tmp_path / "rankings.jsonl", 48, seed=0)


@pytest.fixture
def val_rankings(tmp_path) -> Path:
    return write_rankings(tmp_path / "val.jsonl", 24, seed=1)


def _config(data, out, **overrides):
    return RMConfig(model="tiny-random", data=(data,), out_dir=out, **{**TINY_DEFAULTS, **overrides})


def _train(config, seed=0):
    tokenizer = tiny_tokenizer()
    model = RewardModel.from_causal_lm(tiny_model(tokenizer, seed=seed))
    train_rm(config, model, tokenizer)
    return model


def _values(run_dir, key):
    return [r[key] for r in read_metrics(run_dir) if key in r]


def test_rm_learns_a_separable_ranking_and_normalises(rankings, val_rankings, tmp_path):
    before = RewardModel.from_causal_lm(tiny_model(tiny_tokenizer()))
    config = _config(rankings, tmp_path / "run", val_data=(val_rankings,), epochs=4, normalize=True, eval_every=6)
    after = _train(config)
    changed = [
        n for (n, a), (_, b) in zip(before.named_parameters(), after.named_parameters()) if not torch.equal(a, b.cpu())
    ]
    assert len(changed) == len(list(before.parameters()))
    accuracy = _values(tmp_path / "run", "rm/val_accuracy")
    assert accuracy[0] < 0.7 and accuracy[-1] > 0.9, accuracy
    assert _values(tmp_path / "run", "rm/responses")[0] > 8  # K responses per prompt, 8 prompts per step
    meta = read_meta(tmp_path / "run" / "final")
    assert meta["kind"] == "rm" and meta["step"] == 24 and meta["parent"] == "tiny-random"
    # normalisation: the best-ranked training responses score mean 0 with the saved bias, as PPO loads it
    loaded, tokenizer = load_reward_model(tmp_path / "run" / "final", normalized=True)
    from instructgpt.data.jsonl import read_records

    best = [
        (r.prompt, resp)
        for r in read_records(rankings, "rankings")
        for resp, rank in zip(r.responses, r.ranks)
        if rank == 0
    ]
    scores = score_texts(loaded, tokenizer, [p for p, _ in best], [r for _, r in best])
    assert abs(sum(scores) / len(scores)) < 1e-3
    assert float(loaded.normalization_bias) == _values(tmp_path / "run", "rm/normalization_bias")[0] != 0


def test_gradient_accumulation_gives_the_same_update(rankings, tmp_path):
    stable = dict(adam_eps=1e-5)  # Adam would magnify the rounding of near-zero gradients (|g| ~ eps) to lr-sized steps
    one = _train(_config(rankings, tmp_path / "a", micro_batch_prompts=8, **stable))
    many = _train(_config(rankings, tmp_path / "b", micro_batch_prompts=1, micro_batch_tokens=64, **stable))
    torch.testing.assert_close(
        _values(tmp_path / "a", "rm/loss"), _values(tmp_path / "b", "rm/loss"), rtol=1e-5, atol=0
    )
    torch.testing.assert_close(
        _values(tmp_path / "a", "rm/grad_norm"), _values(tmp_path / "b", "rm/grad_norm"), rtol=1e-5, atol=0
    )
    for a, b in zip(one.parameters(), many.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_packing_and_padding_train_the_same(rankings, tmp_path):
    packed = _train(_config(rankings, tmp_path / "packed", packing=True, pack_row_tokens=40, adam_eps=1e-5))
    padded = _train(_config(rankings, tmp_path / "padded", packing=False, adam_eps=1e-5))
    torch.testing.assert_close(
        _values(tmp_path / "packed", "rm/loss"), _values(tmp_path / "padded", "rm/loss"), rtol=1e-5, atol=0
    )
    for a, b in zip(packed.parameters(), padded.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "bf16-weights"])
def test_killed_and_resumed_run_ends_with_identical_weights(rankings, tmp_path, precision):
    full = _train(_config(rankings, tmp_path / "full", epochs=2, precision=precision))
    interrupted = _config(rankings, tmp_path / "resumed", epochs=2, max_steps=5, precision=precision)
    _train(interrupted)
    assert [read_meta(p)["step"] for p in list_checkpoints(tmp_path / "resumed")] == [5]
    resumed = _train(replace(interrupted, max_steps=0), seed=123)  # fresh init: weights come from the checkpoint
    for (name, a), (_, b) in zip(full.named_parameters(), resumed.named_parameters()):
        assert torch.equal(a, b), name
    assert _values(tmp_path / "full", "rm/loss") == _values(tmp_path / "resumed", "rm/loss")


@pytest.mark.slow
@GLOO_ON_CPU
@pytest.mark.parametrize(
    "precision, lr, loss_rtol, norm_rtol, norm_steps, weight_atol",
    [("fp32", 3e-3, 1e-5, 1e-4, 12, 1e-5), ("bf16-weights", 1e-3, 3e-2, 3e-2, 6, 4e-3)],
)
def test_two_processes_match_one(rankings, tmp_path, precision, lr, loss_rtol, norm_rtol, norm_steps, weight_atol):
    """2 processes x 2 micro-batches each = 1 process x 4 micro-batches (the global batch of 8 prompts), 12 steps;
    also with bf16 trunk weights and fp32 masters (the head fp32), where each micro-batch's gradient leaves the
    model and the masters' sum is reduced once per step. Then the normalisation bias, each process scoring its share.

    Measured, 2 processes against 1 (and, for scale, 1 process with 2 instead of 4 micro-batches): fp32, loss 3.8e-6
    relative (5.9e-6), gradient norm 2.5e-5 (4.3e-5), weights 9.9e-7 (2.1e-6), accuracy and bias equal. bf16-weights
    (at lr 1e-3: at 3e-3 the tiny model's bf16 run is chaotic, one process differing from itself by 90% in gradient
    norm), loss 1.3e-2 (1.5e-2), gradient norm over the first 6 steps 1.5e-2 (later steps drift apart with the
    weights, up to 32% in both comparisons), weights 1.05e-3 (2.0e-3), bias 2.1e-4 (1.2e-3). With the masters'
    gradients not reduced (each rank its own half), loss 0.14, gradient norm 19% at step 1, weights 1.1e-2 and bias
    0.11 apart: the tolerances catch it."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541"]
    # adam_eps as in the accumulation test: the two runs sum gradients in a different order
    options = dict(lr=lr, epochs=2, micro_batch_prompts=2, normalize=True, adam_eps=1e-5, precision=precision)
    flags = [f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in options.items()]
    run = [*launch, "-m", "tests.helpers.rm_run", str(rankings), str(tmp_path / "ddp"), *flags]
    subprocess.run(run, check=True, env=env, cwd=ROOT, capture_output=True, timeout=300)
    single = _train(_config(rankings, tmp_path / "single", **options))
    assert read_meta(tmp_path / "ddp" / "final")["processes"] == 2
    ddp_run, one_run = tmp_path / "ddp", tmp_path / "single"
    assert len(_values(ddp_run, "rm/loss")) == len(_values(one_run, "rm/loss")) == 12
    torch.testing.assert_close(_values(ddp_run, "rm/loss"), _values(one_run, "rm/loss"), rtol=loss_rtol, atol=0)
    norms = [_values(run, "rm/grad_norm")[:norm_steps] for run in (ddp_run, one_run)]
    torch.testing.assert_close(*norms, rtol=norm_rtol, atol=0)
    if precision == "fp32":
        assert _values(ddp_run, "rm/accuracy") == _values(one_run, "rm/accuracy")
    ddp, _ = load_reward_model(ddp_run / "final")
    assert all(p.dtype == torch.float32 for p in ddp.parameters())  # the fp32 masters were saved
    for (name, a), b in zip(ddp.named_parameters(), single.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=weight_atol, msg=lambda m, name=name: f"{name}: {m}")
    torch.testing.assert_close(ddp.normalization_bias, single.normalization_bias, rtol=0, atol=max(weight_atol, 1e-6))


def test_missing_demonstrations_fail_before_training(tmp_path):
    """The normalisation set is read after training: a missing file is named at the start, not after the steps."""
    from instructgpt.config import ConfigError

    config = RMConfig(model="unused", data=(tmp_path / "r.jsonl",), demonstrations=(tmp_path / "sft" / "train.jsonl",))
    with pytest.raises(ConfigError, match="demonstrations.*sft/train.jsonl"):
        config.validate()
