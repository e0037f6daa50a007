"""The instructgpt command: dispatch, stage commands end to end, plain errors."""

import json

from instructgpt.cli.main import main
from instructgpt.models.tiny import save_tiny


def test_top_level_help_and_unknown_command(capsys):
    assert main(["--help"]) == 0
    assert "instructgpt sft" in capsys.readouterr().out
    assert main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_sft_command_trains_from_a_yaml_config(tmp_path, demos_file, capsys):
    model = save_tiny(str(tmp_path / "tiny"))
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model: {model}\ndata: [{demos_file}]\nout_dir: {tmp_path / 'run'}\nepochs: 1\nbatch_size: 8\n"
        "lr: 0.003\nprecision: fp32\nprogress: false\n"
    )
    assert main(["sft", "--config", str(config), "--val-fraction", "0.125"]) == 0
    assert (tmp_path / "run" / "final" / "meta.json").is_file()
    assert "final model:" in capsys.readouterr().out


def test_sft_command_reports_bad_input_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "response": 3, "labeler_id": "x"}\n')
    model = save_tiny(str(tmp_path / "tiny"))
    assert main(["sft", "--model", model, "--data", str(bad), "--out-dir", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:1: response:" in err and "Traceback" not in err
    assert main(["sft", "--epochs", "0"]) == 2
    assert "error: config: epochs" in capsys.readouterr().err


def test_generate_command_prints_one_json_line_per_prompt(tmp_path, capsys):
    model = save_tiny(str(tmp_path / "tiny"))
    assert main(["generate", "--model", model, "--prompt", "Hi", "Bye", "--max-new-tokens", "4"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["prompt"] for line in lines] == ["Hi", "Bye"]
    assert main(["generate", "--model", model]) == 2


def test_missing_model_is_a_one_line_error(tmp_path, demos_file, capsys):
    assert main(["sft", "--model", str(tmp_path / "nope"), "--data", str(demos_file)]) == 1
    assert "model path not found" in capsys.readouterr().err
