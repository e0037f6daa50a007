"""Typed configuration: YAML, flags, help text, validation."""

import pytest

from instructgpt.config import ConfigError, parse
from instructgpt.training.sft import SFTConfig


def test_yaml_then_flags(tmp_path):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("epochs: 3\nlr: 1.0e-4\ndata: [a.jsonl, b.jsonl]\n")
    config = parse(SFTConfig, ["--config", str(yaml_file), "--lr", "2e-5"], prog="t")
    assert config.epochs == 3 and config.lr == 2e-5
    assert [str(p) for p in config.data] == ["a.jsonl", "b.jsonl"]


def test_unknown_yaml_field_is_named(tmp_path):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("epochz: 3\n")
    with pytest.raises(ConfigError, match="unknown field.*epochz"):
        parse(SFTConfig, ["--config", str(yaml_file)], prog="t")


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse(SFTConfig, ["--config", str(bad)], prog="t")
    with pytest.raises(ConfigError, match="not found"):
        parse(SFTConfig, ["--config", str(tmp_path / "nope.yaml")], prog="t")


@pytest.mark.parametrize(
    "flags, field",
    [
        (["--epochs", "0"], "epochs"),
        (["--residual-dropout", "1.5"], "residual_dropout"),
        (["--pretrain-mix", "1"], "pretrain_mix"),
    ],
)
def test_invalid_values_name_the_field(flags, field):
    with pytest.raises(ConfigError, match=field):
        parse(SFTConfig, flags, prog="t")


def test_help_documents_every_field(capsys):
    import dataclasses

    with pytest.raises(SystemExit):
        parse(SFTConfig, ["--help"], prog="t")
    text = " ".join(capsys.readouterr().out.split())
    for field in dataclasses.fields(SFTConfig):
        assert "--" + field.name.replace("_", "-") in text, field.name
    assert "paper: 0.2" in text  # the help text written beside residual_dropout


def test_yaml_exponent_without_dot_is_a_float(tmp_path):
    from dataclasses import dataclass

    from instructgpt.config import parse

    @dataclass
    class Cfg:
        lr: float = 1.0
        """Rate."""

    path = tmp_path / "c.yaml"
    path.write_text("lr: 2e-5\n")
    assert parse(Cfg, ["--config", str(path)], prog="x").lr == 2e-5


@pytest.mark.parametrize(
    "flags, field",
    [
        (["--eval-task-items", "truthfulqa=0"], "eval_task_items"),
        (["--eval-task-items", "winrate=5"], "eval_task_items"),
        (["--eval-prompt-sets", "held-out"], "eval_prompt_sets"),
    ],
)
def test_invalid_pipeline_evaluation_sizes_name_the_field(flags, field):
    from instructgpt.pipeline.config import PipelineConfig

    with pytest.raises(ConfigError, match=field):
        parse(PipelineConfig, flags, prog="t")
