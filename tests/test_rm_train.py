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
        n for (n, a), (_, b) in zip(before.named_parameters(), after.named_parameters()) if not torch.equal(a, b)
    ]
    assert len(changed) == len(list(before.parameters()))
    accuracy = _values(tmp_path / "run", "rm/val_accuracy")
    assert accuracy[0] < 0.7 and accuracy[-1] > 0.9, accuracy
    assert _values(tmp_path / "run", "rm/responses")[0] > 8  # K responses per prompt, 8 prompts per step
    meta = read_meta(tmp_path / "run" / "final")
    assert meta["kind"] == "rm" and meta["step"] == 24 and meta["parent"] == "tiny-random"
    # normalisation: the best-ranked training responses score mean 0 with the saved model
    loaded, tokenizer = load_reward_model(tmp_path / "run" / "final")
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


def test_killed_and_resumed_run_ends_with_identical_weights(rankings, tmp_path):
    full = _train(_config(rankings, tmp_path / "full", epochs=2))
    interrupted = _config(rankings, tmp_path / "resumed", epochs=2, max_steps=5)
    _train(interrupted)
    assert [read_meta(p)["step"] for p in list_checkpoints(tmp_path / "resumed")] == [5]
    resumed = _train(replace(interrupted, max_steps=0), seed=123)  # fresh init: weights come from the checkpoint
    for (name, a), (_, b) in zip(full.named_parameters(), resumed.named_parameters()):
        assert torch.equal(a, b), name
    assert _values(tmp_path / "full", "rm/loss") == _values(tmp_path / "resumed", "rm/loss")


@pytest.mark.slow
def test_two_processes_match_one(rankings, tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541"]
    # adam_eps as in the accumulation test: the two runs sum gradients in a different order
    run = [*launch, "-m", "tests.helpers.rm_run", str(rankings), str(tmp_path / "ddp"), "normalize=1", "adam_eps=1e-5"]
    subprocess.run(run, check=True, env=env, cwd=ROOT, capture_output=True, timeout=300)
    single = _train(_config(rankings, tmp_path / "single", normalize=True, adam_eps=1e-5))
    for key in ("rm/loss", "rm/grad_norm", "rm/accuracy"):
        torch.testing.assert_close(_values(tmp_path / "ddp", key), _values(tmp_path / "single", key), rtol=1e-5, atol=0)
    ddp, _ = load_reward_model(tmp_path / "ddp" / "final")
    for a, b in zip(ddp.parameters(), single.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ddp.normalization_bias, single.normalization_bias, rtol=1e-4, atol=1e-5)
