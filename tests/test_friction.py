"""The small things a new user trips on (issue 21, point 6): file modes, local-looking model
paths, missing arguments and extras, closed pipes, empty responses, checkpoint limits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from instructgpt.config import ConfigError
from instructgpt.models.loader import ModelLoadError, resolve_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_atomic_writes_get_the_umask_not_private_modes(tmp_path, umask_022):
    from instructgpt.data.jsonl import write_jsonl_atomic
    from instructgpt.models.tiny import tiny_model, tiny_tokenizer
    from instructgpt.training.checkpoint import save_checkpoint

    write_jsonl_atomic(tmp_path / "records.jsonl", [{"text": "x"}])
    assert (tmp_path / "records.jsonl").stat().st_mode & 0o777 == 0o644
    tokenizer = tiny_tokenizer()
    folder = save_checkpoint(tmp_path / "ckpt", tiny_model(tokenizer), tokenizer, {"step": 1})
    assert folder.stat().st_mode & 0o777 == 0o755


def test_a_local_looking_model_path_fails_at_once_without_the_hub(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for name in ("runs/nope", "a/b/c", "./nope"):
        with pytest.raises(ModelLoadError, match="not found"):
            resolve_model(name)
    assert resolve_model("owner/model") == "owner/model"  # a Hub id when nothing local matches


def test_ppo_without_a_reward_model_says_so(tmp_path):
    import torch

    from instructgpt.training.ppo_config import PPOConfig
    from instructgpt.training.ppo_io import load_models

    config = PPOConfig(prompts=(tmp_path / "p.jsonl",), out_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="reward_model"):
        load_models(config, torch.device("cpu"))


def test_help_into_a_closed_pipe_leaves_no_traceback():
    command = f"{sys.executable} -m instructgpt.cli.main sft --help | head -n 1"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.stdout.strip()
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


def test_label_without_its_extra_names_the_extra(monkeypatch, capsys):
    from instructgpt.cli import label

    for name in [m for m in sys.modules if m.startswith("instructgpt.labeling")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)  # import sqlalchemy -> ModuleNotFoundError
    assert label.main(["migrate", "--database-url", "sqlite:///x.db"]) == 2
    assert "instructgpt[label]" in capsys.readouterr().err


def test_empty_responses_are_judged_without_the_labeler():
    from instructgpt.evaluation.judges import LabelerJudge

    class Refuses:
        labeler_id = "strict"

        def compare(self, prompt, a, b):
            assert a.strip() and b.strip(), "a labeler was shown an empty response"
            return "a"

    judge = LabelerJudge([Refuses()])
    assert judge.compare(["p"] * 4, ["", "x", " ", "x"], ["y", "", "", "y"]) == ["b", "a", "tie", "a"]


def test_prune_keeps_the_newest_checkpoints(tmp_path):
    from instructgpt.models.tiny import tiny_model, tiny_tokenizer
    from instructgpt.training.checkpoint import list_checkpoints, prune_checkpoints, save_checkpoint

    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer)
    for step in (1, 2, 3):
        save_checkpoint(tmp_path / "checkpoints" / f"step-{step:06d}", model, tokenizer, {"step": step})
    prune_checkpoints(tmp_path, 2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000002", "step-000003"]
    prune_checkpoints(tmp_path, 0)  # 0 keeps every one
    assert len(list_checkpoints(tmp_path)) == 2


def test_rm_training_keeps_the_newest_checkpoints(tmp_path):
    from instructgpt.models.reward import RewardModel
    from instructgpt.models.tiny import tiny_model, tiny_tokenizer
    from instructgpt.training.checkpoint import list_checkpoints
    from instructgpt.training.rm import RMConfig, train_rm
    from tests.helpers.rm_run import TINY_DEFAULTS, write_rankings

    rankings = write_rankings(tmp_path / "rankings.jsonl", 32)  # 4 steps of 8 prompts
    config = RMConfig(data=(rankings,), out_dir=tmp_path / "run", save_every=1, **TINY_DEFAULTS)
    tokenizer = tiny_tokenizer()
    train_rm(config, RewardModel.from_causal_lm(tiny_model(tokenizer)), tokenizer)
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-000003", "step-000004"]
    with pytest.raises(ConfigError, match="save_total_limit"):
        RMConfig(data=(rankings,), save_total_limit=-1).validate()


def test_package_ships_license_and_py_typed():
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    assert (ROOT / "src" / "instructgpt" / "py.typed").is_file()
