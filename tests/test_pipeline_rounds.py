"""Iterated rounds of steps 2 and 3 (``--rounds N``): round 1 is the pipeline as before; round 2
samples round 1's policy, trains its RM on both rounds' comparisons, continues PPO from round 1's
policies, resumes after a kill, and lists both rounds in eval/results.json."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
from test_pipeline_e2e import TINY

from instructgpt.data.schemas import Ranking
from instructgpt.pipeline import plan, rounds, run
from instructgpt.pipeline.config import PipelineConfig
from instructgpt.pipeline.plan import build_stages, run_pipeline

ROUND_1 = ["prepare", "sft", "samples", "rankings", "rm", "select_sft", "ppo_ptx", "ppo", "eval"]


def test_one_round_is_the_pipeline_as_before():
    stages = build_stages(PipelineConfig(rounds=1))
    plain_first = ["prepare", "sft", "samples", "rankings", "rm", "select_sft", "ppo", "ppo_ptx", "eval"]
    assert [s.name for s in stages] == plain_first  # one round: plain PPO is a branch, trained before PPO-ptx
    assert not any(k.startswith("round_") for s in stages for k in s.settings)  # fingerprints unchanged
    assert [s.uses for s in stages if s.name == "eval"] == [("ppo", "select_sft")]  # the SFT baseline: a branch too


def test_round_stages_follow_round_one_in_their_folders():
    names = [s.name for s in build_stages(PipelineConfig(rounds=3, run_plain_ppo=False))]
    per_round = ["samples", "rankings", "rm", "ppo_ptx"]
    assert names == [
        *[n for n in ROUND_1 if n not in ("ppo", "eval")],
        "round-1/eval",
        *[f"round-2/{n}" for n in per_round],
        "round-2/eval",
        *[f"round-3/{n}" for n in per_round],
        "eval",
    ]
    stages = {s.name: s for s in build_stages(PipelineConfig(rounds=3))}
    assert stages["round-1/eval"].branch and stages["eval"].uses == ("round-1/eval", "round-2/eval")


def test_sampling_sources_mix_earlier_models(tmp_path, monkeypatch):
    config = PipelineConfig(out_dir=tmp_path, rounds=3, sft_select_by_rm=False)
    results = {
        name: {"model": tmp_path / name.replace("/", "-")}
        for name in ("sft", "ppo_ptx", "round-2/ppo_ptx", "ppo", "round-2/ppo")
    }
    assert rounds._sources(config, results, 3) == [tmp_path / "round-2-ppo_ptx", tmp_path / "sft", tmp_path / "ppo_ptx"]
    assert rounds._sources(replace(config, round_earlier_models="sft"), results, 3) == [
        tmp_path / "round-2-ppo_ptx",
        tmp_path / "sft",
    ]
    assert rounds._sources(replace(config, round_policy="ppo", round_earlier_share=0.0), results, 2) == [
        tmp_path / "ppo"
    ]


def _write(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_people_rank_a_round_or_it_waits_for_them(tmp_path):
    """Unranked samples go to round-2/rankings/to_label/ in the labeling app's import formats; with
    the export added, the round's training rankings are the people's."""
    rows = [
        {"prompt_id": "p1", "prompt": "Say hi.", "responses": ["hi", "hello", "hey"], "models": ["a", "b", "a"]},
        {"prompt_id": "p2", "prompt": "Count.", "responses": ["1 2", "one two"], "models": ["a", "b"]},
    ]
    prompts = [{"id": p, "text": t, "user_id": "u", "source": "api"} for p, t in (("p1", "Say hi."), ("p2", "Count."))]
    results = {
        "prepare": {"rm_train": _write(tmp_path / "prompts.jsonl", prompts)},
        "round-2/samples": {"train": _write(tmp_path / "s/train.jsonl", rows)},
    }
    config = PipelineConfig(out_dir=tmp_path, rounds=2)
    folder = tmp_path / "round-2" / "rankings"
    export = tmp_path / "export.jsonl"
    person = dict(labeler_id="ann", prompt_id="p1", prompt="Say hi.", responses=["hello", "hi", "hey"], ranks=[0, 1, 2])
    _write(export, [json.loads(Ranking(**person).model_dump_json())])
    config = replace(config, round_human_rankings=(export,))
    with pytest.raises(rounds.AwaitingLabels, match="1 of 2 training prompts"):
        rounds._people_rankings(config, folder, results, results["round-2/samples"]["train"], 2)
    assert [json.loads(x)["id"] for x in (folder / "to_label/prompts.jsonl").read_text().splitlines()] == ["p2"]
    outputs = [json.loads(x) for x in (folder / "to_label/outputs.jsonl").read_text().splitlines()]
    assert outputs == [
        {"prompt_id": "p2", "response": "1 2", "model": "a"},
        {"prompt_id": "p2", "response": "one two", "model": "b"},
    ]
    more = dict(person, labeler_id="bo", prompt_id="p2", prompt="Count.", responses=["one two", "1 2"], ranks=[0, 1])
    _write(export, [json.loads(Ranking(**r).model_dump_json()) for r in (person, more)])
    ranked = rounds._people_rankings(config, folder, results, results["round-2/samples"]["train"], 2)
    assert [(r.labeler_id, r.responses, r.ranks) for r in ranked] == [
        ("ann", ["hi", "hello", "hey"], [1, 0, 2]),
        ("bo", ["1 2", "one two"], [1, 0]),
    ]


@pytest.mark.slow
def test_two_rounds_end_to_end_and_resume_after_a_kill_in_round_two(tmp_path, capsys, monkeypatch):
    from instructgpt.models.tiny import save_tiny
    from instructgpt.training.checkpoint import read_meta

    model = save_tiny(str(tmp_path / "tiny"))
    lean = dict(TINY, sft_epochs=1, ppo_init_from_pretrain_mix=False, eval_tasks=("winrate",), human_rankings=4)
    # in this process: the patched ppo_stage below must be the one that runs
    config = PipelineConfig(out_dir=tmp_path / "run", model=model, rounds=2, stage_processes=False, **lean)

    ppo_stage = run.ppo_stage

    def killed(c, folder, results, ptx_coef, round_number=1, policy=None):
        if round_number == 2:
            raise KeyboardInterrupt("killed in round 2")
        return ppo_stage(c, folder, results, ptx_coef, round_number, policy)

    monkeypatch.setattr(run, "ppo_stage", killed)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(config)
    monkeypatch.setattr(run, "ppo_stage", ppo_stage)
    capsys.readouterr()
    outputs = run_pipeline(config)
    log = capsys.readouterr().out
    skipped = {line.split("] ")[1].split(":")[0] for line in log.splitlines() if line.endswith("(done, skipped)")}
    assert skipped == {
        "prepare",
        "sft",
        "samples",
        "rankings",
        "rm",
        "select_sft",
        "ppo_ptx",
        "ppo",
        "round-1/eval",
        "round-2/samples",
        "round-2/rankings",
        "round-2/rm",
    }
    assert list(outputs)[-4:] == ["round-2/rm", "round-2/ppo_ptx", "round-2/ppo", "eval"]

    round_2 = config.out_dir / "round-2"
    rm_config = read_meta(round_2 / "rm" / "final")["config"]
    assert [Path(p) for p in rm_config["data"]] == [
        config.out_dir / "rankings" / "train.jsonl",
        round_2 / "rankings" / "train.jsonl",
    ]  # every round's comparisons
    assert Path(rm_config["model"]) == Path(outputs["sft"]["model"])  # round_rm_init="sft"
    for name in ("ppo_ptx", "ppo"):
        meta = read_meta(round_2 / name / "final")
        assert Path(meta["parent"]) == Path(outputs[name]["model"])  # continued from round 1's policy
        assert Path(meta["reward_model"]) == Path(outputs["round-2/rm"]["model"])
    samples = [json.loads(line) for line in (round_2 / "samples" / "train.jsonl").read_text().splitlines()]
    sources = {m for row in samples for m in row["models"]}
    assert str(outputs["ppo_ptx"]["model"]) in sources  # round 1's policy, with the SFT baseline mixed in

    results = json.loads((config.out_dir / "eval" / "results.json").read_text())
    assert [r["round"] for r in results["rounds"]] == [1, 2]
    for entry in results["rounds"]:
        assert set(entry["winrate"]) == {"ppo", "ppo-ptx"} and 0 <= entry["winrate"]["ppo-ptx"]["rate"] <= 1
        assert set(entry["rm_accuracy"]) == {"training", "held_out"}
    assert results["rounds"][1]["rm_training_rankings"] > results["rounds"][0]["rm_training_rankings"]
    assert results["rounds"][1]["policy"] == str(outputs["round-2/ppo_ptx"]["model"])
    assert results["config"]["models"][-1] == f"ppo-ptx={outputs['round-2/ppo_ptx']['model']}"  # eval/: the last round
    assert "Iterated rounds" in (config.out_dir / "eval" / "report.html").read_text()


def test_round_flags_parse_and_a_round_awaiting_people_exits_3(tmp_path, monkeypatch, capsys):
    from instructgpt.cli.pipeline import main
    from instructgpt.config import parse

    argv = ["--out-dir", str(tmp_path), "--rounds", "3", "--round-rm-init", "previous"]
    config = parse(PipelineConfig, [*argv, "--round-human-rankings", "a.jsonl", "b.jsonl"], "pipeline")
    assert (config.rounds, config.round_rm_init, config.round_human_rankings) == (
        3,
        "previous",
        (Path("a.jsonl"), Path("b.jsonl")),
    )

    def waiting(config):
        raise rounds.AwaitingLabels("round 2: 3 of 8 training prompts are not ranked yet")

    monkeypatch.setattr(plan, "run_pipeline", waiting)
    assert main(argv) == 3 and "waiting for labels: round 2" in capsys.readouterr().err


def test_summary_lists_round_stages_and_each_rounds_figures(tmp_path):
    from instructgpt.pipeline.summary import collect, render

    for stage in ("sft", "ppo", "round-1/eval", "round-2/rm", "eval"):
        (tmp_path / stage).mkdir(parents=True)
        (tmp_path / stage / "stage.json").write_text(json.dumps({"seconds": 2.0}))
    entry = lambda r, rate, acc: {  # noqa: E731
        "round": r,
        "rm_training_rankings": 10 * r,
        "winrate": {"ppo-ptx": {"rate": rate}},
        "rm_accuracy": {"training": acc, "held_out": None},
    }
    results = {"winrate": {"per_model": {}}, "rounds": [entry(1, 0.5, 0.6), entry(2, 0.75, 0.7)]}
    (tmp_path / "eval" / "results.json").write_text(json.dumps(results))
    figures = collect(tmp_path)
    assert list(figures["seconds"]) == ["sft", "ppo", "round-1/eval", "round-2/rm", "eval"]
    text = render(figures)
    assert "    2        20     0.75     0.700          n/a" in text
