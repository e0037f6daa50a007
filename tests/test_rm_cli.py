"""``instructgpt rm``: train, eval (per K and labeler-group cross-validation), normalize, select-sft."""

import json

import pytest

from instructgpt.cli.main import main
from instructgpt.models.reward import load_reward_model, score_texts
from instructgpt.models.tiny import save_tiny
from tests.helpers.rm_run import write_rankings

TINY = ["--lr", "3e-3", "--batch-size", "8", "--micro-batch-prompts", "4", "--precision", "fp32", "--no-progress"]


def test_train_eval_normalize(tmp_path, capsys):
    base = save_tiny(str(tmp_path / "base"))
    data, val = write_rankings(tmp_path / "r.jsonl", 32), write_rankings(tmp_path / "v.jsonl", 12, seed=5)
    assert (
        main(
            [
                "rm",
                "train",
                "--model",
                base,
                "--data",
                str(data),
                "--val-data",
                str(val),
                "--out-dir",
                str(tmp_path / "run"),
                *TINY,
            ]
        )
        == 0
    )
    final = tmp_path / "run" / "final"
    assert main(["rm", "eval", "--model", str(final), "--data", str(val), "--report", str(tmp_path / "eval.json")]) == 0
    out = capsys.readouterr().out
    assert "overall" in out and "accuracy" in out
    report = json.loads((tmp_path / "eval.json").read_text())
    assert set(report["per_k"]) <= {"2", "3", "4", "5"} and report["overall"]["comparisons"] > 12
    demos = tmp_path / "demos.jsonl"
    demos.write_text(
        "".join(
            json.dumps({"prompt": f"Say {w}.", "response": w, "labeler_id": "l"}) + "\n" for w in ["hi", "yo", "hey"]
        )
    )
    assert (
        main(
            [
                "rm",
                "normalize",
                "--model",
                str(final),
                "--demonstrations",
                str(demos),
                "--out",
                str(tmp_path / "norm"),
                "--precision",
                "fp32",
            ]
        )
        == 0
    )
    model, tokenizer = load_reward_model(tmp_path / "norm", normalized=True)  # as PPO loads it
    scores = score_texts(model, tokenizer, ["Say hi.", "Say yo.", "Say hey."], ["hi", "yo", "hey"])
    assert abs(sum(scores)) < 1e-4


def test_cross_validation_reports_held_out_and_within(tmp_path, capsys):
    base = save_tiny(str(tmp_path / "base"))
    data = write_rankings(tmp_path / "r.jsonl", 36)  # 6 labelers
    args = [
        "rm",
        "eval",
        "--model",
        base,
        "--data",
        str(data),
        "--cv-groups",
        "3",
        "--cv-seeds",
        "1",
        "--out-dir",
        str(tmp_path / "cv"),
        "--report",
        str(tmp_path / "cv.json"),
        "--val-fraction",
        "0",
        *TINY,
    ]
    assert main(args) == 0
    assert "held-out group accuracy" in capsys.readouterr().out
    report = json.loads((tmp_path / "cv.json").read_text())
    assert len(report["runs"]) == 3 and {r["held_out_group"] for r in report["runs"]} == {0, 1, 2}
    assert report["summary"]["held_out"]["n"] == 3
    labelers = [
        {
            json.loads(line)["labeler_id"]
            for line in (tmp_path / "cv" / "cv" / f"seed-0-group-{g}" / "held_out.jsonl").open()
        }
        for g in range(3)
    ]
    assert all(len(s) == 2 for s in labelers) and not set.intersection(*labelers)  # 2 labelers per group, disjoint
    assert main([*args, "--cv-groups", "7"]) == 2  # too few labelers: a reported error, not a crash
    assert "6 distinct labelers cannot form 7 groups" in capsys.readouterr().err


def test_select_sft_scores_every_checkpoint(tmp_path, capsys):
    from instructgpt.models.reward import RewardModel
    from instructgpt.models.tiny import tiny_model, tiny_tokenizer

    run = tmp_path / "sft"
    for step in (1, 2):
        folder = run / "checkpoints" / f"step-00000{step}"
        save_tiny(str(folder), seed=step)
        (folder / "meta.json").write_text(json.dumps({"step": step}))
    save_tiny(str(run / "final"), seed=3)
    tokenizer = tiny_tokenizer()
    RewardModel.from_causal_lm(tiny_model(tokenizer)).save_pretrained(tmp_path / "rm", tokenizer)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"text": "Say hi."}\n{"text": "Count."}\n')
    args = [
        "rm",
        "select-sft",
        "--reward-model",
        str(tmp_path / "rm"),
        "--sft-run",
        str(run),
        "--prompts",
        str(prompts),
        "--max-new-tokens",
        "4",
        "--report",
        str(tmp_path / "sel.json"),
    ]
    assert main(args) == 0
    assert "<- best" in capsys.readouterr().out
    report = json.loads((tmp_path / "sel.json").read_text())
    assert [r["checkpoint"].split("/")[-1] for r in report["results"]] == ["step-000001", "step-000002", "final"]
    assert main([*args[:-1], str(tmp_path / "one.json"), "--batch-size", "1"]) == 0  # batching is speed only
    alone = json.loads((tmp_path / "one.json").read_text())["results"]
    flat = lambda results: [x for r in results for x in r["scores"]]  # noqa: E731
    assert flat(alone) == pytest.approx(flat(report["results"]), abs=1e-4)
