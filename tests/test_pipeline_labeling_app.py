"""``instructgpt pipeline --labelers app``: the SFT and rankings stages publish their tasks to the
labeling app, stop with "N of M labelled" or wait, and continue from the labels people made.

The app is the real one, served over HTTP by uvicorn on a free port of a SQLite file; the
labelers are scripts that log in and submit the task forms as a browser would (no JavaScript).
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from dataclasses import replace

import httpx
import pytest
from test_pipeline_e2e import TINY

from instructgpt.data.jsonl import read_records
from instructgpt.pipeline.config import PipelineConfig
from instructgpt.pipeline.people import AwaitingLabels
from instructgpt.pipeline.plan import build_stages
from instructgpt.pipeline.stages import run_stages

PASSWORD = "correct horse battery"


@pytest.fixture
def served(tmp_path):
    """The labeling app on a SQLite file with two labeler accounts; yields (base URL, database URL)."""
    import uvicorn

    from instructgpt.labeling import store
    from instructgpt.labeling.app import create_app

    url = f"sqlite:///{tmp_path / 'labeling.db'}"
    app = create_app(url)
    with app.state.sessions.begin() as session:
        for name in ("ann", "bob"):
            store.create_user(session, name, PASSWORD, "labeler")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the app did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", url
    server.should_exit = True
    thread.join(30)
    app.state.engine.dispose()


class Labeler:
    """A person with a browser: logs in, opens the next task of a project and submits its form."""

    def __init__(self, base: str, username: str):
        self.client = httpx.Client(base_url=base, follow_redirects=False, timeout=60)
        page = self.client.get("/login").text
        response = self.client.post(
            "/login", data={"csrf_token": _field(page, "csrf_token"), "username": username, "password": PASSWORD}
        )
        assert response.status_code == 303, response.text

    def label(self, limit: int | None = None) -> int:
        """Do up to ``limit`` tasks (all, when None) across the labeler's projects; returns how many."""
        done = 0
        while limit is None or done < limit:
            projects = re.findall(r'href="/projects/(\d+)/next"', self.client.get("/").text)
            if not projects:
                return done
            task = self.client.get(f"/projects/{projects[0]}/next").headers["location"]
            page = self.client.get(task).text
            form = {"csrf_token": _field(page, "csrf_token"), "idempotency_key": _field(page, "idempotency_key")}
            outputs = sorted(set(re.findall(r'name="rank_(\d+)"', page)), key=int)
            shown = re.findall(r'<h3>Output \d+</h3><div class="pre">(.*?)</div>', page, re.S)
            if outputs:  # a ranking board: output i in column i + 1 (no ties), rated 7 down to 1
                form.update({f"rank_{i}": str(int(i) + 1) for i in outputs})
                form.update({f"likert_{i}": str(max(1, 7 - int(i))) for i in outputs})
            elif 'name="preferred"' in page:  # a comparison: the longer output is better
                form["preferred"] = "1" if len(shown[0]) > len(shown[1]) else "2"
            else:  # a demonstration
                form["response"] = f"A careful answer, written by a person ({done})."
            response = self.client.post(task, data=form)
            assert response.status_code == 303, response.text
            done += 1
        return done


def _field(html: str, name: str) -> str:
    return re.search(rf'name="{name}" value="([^"]+)"', html).group(1)


@pytest.mark.slow
def test_people_label_in_the_app_and_the_pipeline_continues(served, tmp_path, capfd):
    # capfd: each stage runs in its own process, which writes to the file descriptors
    from instructgpt.models.tiny import save_tiny

    base, database_url = served
    lean = dict(TINY, sft_epochs=1, ppo_init_from_pretrain_mix=False, sft_select_by_rm=False, human_rankings=0)
    lean.update(sft_demonstrations=8, sft_batch_size=8, rm_prompts=4, rm_eval_prompts=2)  # few tasks: a fast test
    config = PipelineConfig(
        out_dir=tmp_path / "run",
        model=save_tiny(str(tmp_path / "tiny")),
        labelers="app",
        label_database_url=database_url,
        label_project="test run",
        label_labelers=("ann", "bob"),
        label_poll_seconds=0.2,
        **lean,
    )
    stages = build_stages(config)
    assert [s.name for s in stages][:4] == ["prepare", "sft", "samples", "rankings"]

    with pytest.raises(AwaitingLabels, match=r"0 of 8 prompts labelled in project 'test run demonstrations'"):
        run_stages(stages[:4], config.out_dir)
    ann, bob = Labeler(base, "ann"), Labeler(base, "bob")
    assert ann.label(3) == 3
    capfd.readouterr()
    with pytest.raises(AwaitingLabels, match="3 of 8 prompts labelled"):  # a re-run picks up where the labels stand
        run_stages(build_stages(config)[:4], config.out_dir)
    assert "'test run demonstrations': 3 of 8 prompts labelled; ann 3/4, bob 0/4" in capfd.readouterr().out

    # The rest are labelled while the pipeline waits: it trains SFT on them, samples, publishes
    # the samples for ranking and waits again until those are ranked too.
    stop = threading.Event()

    def keep_labelling() -> None:
        while not stop.is_set():
            if not (ann.label() + bob.label()):
                time.sleep(0.1)

    people = threading.Thread(target=keep_labelling, daemon=True)
    people.start()
    waiting = replace(config, label_wait_minutes=10.0)
    try:
        outputs = run_stages(build_stages(waiting)[:4], config.out_dir)
    finally:
        stop.set()
        people.join(60)

    demonstrations = read_records(config.out_dir / "sft" / "train.jsonl", "demonstrations")
    assert len(demonstrations) == 8 and {d.labeler_id for d in demonstrations} == {"ann", "bob"}
    samples = (config.out_dir / "samples" / "train.jsonl").read_text().splitlines()
    rankings = read_records(outputs["rankings"]["train"], "rankings")
    assert len(rankings) == len(samples) and {r.labeler_id for r in rankings} == {"ann", "bob"}
    assert all(r.ranks == list(range(len(r.responses))) for r in rankings)  # the scripted labelers' order
    log = capfd.readouterr().out
    assert f"'test run rankings': {len(samples)} of {len(samples)} prompts labelled" in log
    assert "RM validation rankings: the simulated panel's, not people's" in log  # said plainly
    panel = json.loads((config.out_dir / "rankings" / "panel.json").read_text())
    assert panel["labeling_app"] == len(rankings) and "no held-out group" in panel["validation_rankings_note"]

    # Done: a re-run skips every stage.
    run_stages(build_stages(config)[:4], config.out_dir)
    assert capfd.readouterr().out.count("(done, skipped)") == 4


def test_the_summary_says_the_rm_validation_rankings_are_simulated(tmp_path):
    from instructgpt.pipeline.people import SIMULATED_VALIDATION
    from instructgpt.pipeline.summary import collect, render

    (tmp_path / "rankings").mkdir()
    panel = {"labeling_app": 8, "human": 0, "agreement": None, "validation_rankings_note": SIMULATED_VALIDATION}
    (tmp_path / "rankings" / "panel.json").write_text(json.dumps(panel))
    text = render(collect(tmp_path))
    assert "rankings: 0 simulated + 8 labeling-app + 0 human; training-labeler agreement n/a" in text
    assert "RM validation rankings: the simulated panel's, not people's" in text


def test_app_labels_are_checked_before_anything_runs(served, tmp_path):
    from instructgpt.cli.pipeline import main
    from instructgpt.config import ConfigError

    _, database_url = served
    argv = ["--out-dir", str(tmp_path), "--labelers", "app", "--label-database-url", database_url]
    assert main([*argv, "--label-overlap", "0"]) == 2
    with pytest.raises(ConfigError, match="give exports or labelers=app"):
        PipelineConfig(labelers="app", round_human_rankings=(tmp_path / "x.jsonl",)).validate()


def test_an_unknown_labeler_account_is_named(served, tmp_path):
    from instructgpt.config import ConfigError
    from instructgpt.data.schemas import Prompt
    from instructgpt.pipeline.people import collect

    _, database_url = served
    config = PipelineConfig(labelers="app", label_database_url=database_url, label_labelers=("ann", "zed"))
    prompt = Prompt(id="p1", text="Say hi.", user_id="u", source="api")
    with pytest.raises(ConfigError, match="label_labelers: no account 'zed'"):
        collect(config, "demonstration", "demonstrations", [prompt])


def test_people_judge_the_evaluation_blind(served):
    """The evaluation's pairs go to a comparison project; unjudged pairs tie and count as open
    until people choose (here: the longer output), whatever order the app showed them in."""
    from instructgpt.pipeline.people import AppJudge

    base, database_url = served
    config = PipelineConfig(
        labelers="app", label_database_url=database_url, label_project="judge", label_labelers=("ann",)
    )
    prompts, a, b = ["Say hi.", "Count to two.", "Name a colour."], ["hello there", "1 2", ""], ["hi", "one two", "red"]
    judge = AppJudge(config, "eval comparisons")
    assert judge.compare(prompts, a, b) == ["tie", "tie", "b"] and judge.open == 2  # an empty output loses
    assert Labeler(base, "ann").label() == 2
    judged = AppJudge(config, "eval comparisons")
    assert judged.compare(prompts, a, b) == ["a", "b", "b"] and judged.open == 0
    assert judged.compare(prompts[:2], b[:2], a[:2]) == ["b", "a"]  # the same pairs, the other way round


def test_people_rate_every_models_output_on_one_board(served):
    """Likert ratings and metadata: each prompt's outputs on one ranking board of '<prefix> eval
    ratings'; unrated outputs have none and count as open; a near-duplicate shares its twin's
    rating; an empty output and a prompt with one distinct output get none."""
    from instructgpt.pipeline.people import AppJudge

    base, database_url = served
    config = PipelineConfig(
        labelers="app", label_database_url=database_url, label_project="judge", label_labelers=("ann",)
    )
    prompts, shown = ["Say hi.", "Count to two."], [["hello there", "hi", "Hi ", ""], ["1 2", "1  2"]]
    judge = AppJudge(config, "eval comparisons")
    rated = judge.rate_outputs(prompts, shown)
    assert judge.open == 1 and all(r.likert is None for row in rated for r in row)
    assert Labeler(base, "ann").label() == 1  # one board: the second prompt has one distinct output
    again = AppJudge(config, "eval comparisons")
    rated = again.rate_outputs(prompts, shown)
    assert again.open == 0 and [r.likert for r in rated[0]] == [7, 6, 6, None]  # board order, rated 7 down
    assert rated[0][0].metadata and not any(rated[0][0].metadata.values())  # statements left unticked: no
    assert [r.likert for r in rated[1]] == [None, None]


def test_several_labelers_ratings_combine_by_median_and_majority():
    from instructgpt.pipeline.people import combine_ratings

    rating = combine_ratings([(3, {"hallucination": True}), (6, {"hallucination": False}), (5, {})])
    assert (rating.likert, rating.metadata) == (5, {"hallucination": False})  # 1 of 2 answers: not a majority
    rating = combine_ratings([(3, {"hallucination": True}), (6, {"hallucination": True})])
    assert (rating.likert, rating.metadata) == (3, {"hallucination": True})
    assert combine_ratings([]).likert is None


@pytest.mark.slow
def test_the_evaluation_stops_for_people_and_a_rerun_reads_their_choices(served, tmp_path):
    from instructgpt.evaluation.suite import EvalConfig
    from instructgpt.models.tiny import save_tiny
    from instructgpt.pipeline.people import evaluate_with_people

    base, database_url = served
    prompts = tmp_path / "test_prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"id": f"t{i}", "text": f"Tell me about the number {i}.", "user_id": "u", "source": "api"})
            + "\n"
            for i in range(3)
        )
    )
    evaluation = EvalConfig(
        models=(f"sft={save_tiny(str(tmp_path / 'sft'))}", f"ppo={save_tiny(str(tmp_path / 'ppo'), seed=1)}"),
        prompts_file=prompts,
        tasks=("winrate",),
        task_limits=("winrate=3",),
        win_max_new_tokens=6,
        out_dir=tmp_path / "eval",
    )
    config = PipelineConfig(
        labelers="app", label_database_url=database_url, label_project="run", label_labelers=("ann",)
    )
    with pytest.raises(AwaitingLabels, match=r"0 of \d+ prompts labelled in project 'run eval comparisons'"):
        evaluate_with_people(config, evaluation, "eval comparisons")
    assert Labeler(base, "ann").label() >= 1
    evaluate_with_people(config, evaluation, "eval comparisons")  # the re-run: every pair judged

    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["winrate"]["judge"] == "people" and results["winrate"]["per_model"]["ppo"]["n"] == 3
    records = [json.loads(line) for line in (tmp_path / "eval" / "comparisons.jsonl").read_text().splitlines()]
    judged = [r for r in records if r["response"].strip() and r["baseline_response"].strip()]
    assert judged and all(r["outcome"] in ("win", "loss") for r in judged)  # people always chose one
    likert = results["winrate"]["likert"]  # the ratings people gave on the boards of 'run eval ratings'
    rated = [v for name, v in likert.items() if results["winrate"]["likert_ci"][name]["n"]]
    assert set(likert) == {"sft", "ppo"} and rated and all(1 <= v <= 7 for v in rated)


def test_a_later_round_is_ranked_in_its_own_project(served, tmp_path):
    from instructgpt.pipeline import rounds

    base, database_url = served

    def write(name: str, rows: list[dict]):
        path = tmp_path / name
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return path

    texts = {"p1": "Say hi.", "p2": "Count to two.", "v1": "Name a colour."}
    samples = {
        split: write(f"{split}.jsonl", [{"prompt_id": p, "prompt": texts[p], "responses": ["a b", "c"]} for p in ids])
        for split, ids in (("train", ("p1", "p2")), ("valid", ("v1",)))
    }
    results = {
        "prepare": {
            "rm_train": write(
                "rm.jsonl", [{"id": p, "text": t, "user_id": "u", "source": "api"} for p, t in texts.items()]
            )
        },
        "rankings": {"panel": tmp_path / "panel.json"},  # round 1's panel, uncalibrated here
        "round-2/samples": samples,
    }
    (tmp_path / "panel.json").write_text(json.dumps({"calibrations": []}))
    config = PipelineConfig(
        out_dir=tmp_path,
        rounds=2,
        labelers="app",
        label_database_url=database_url,
        label_project="r",
        label_labelers=("ann",),
    )
    folder = tmp_path / "round-2" / "rankings"
    folder.mkdir(parents=True)
    with pytest.raises(AwaitingLabels, match="0 of 2 prompts labelled in project 'r round-2 rankings'"):
        rounds.rankings_stage(config, folder, results, 2)
    assert Labeler(base, "ann").label() == 2
    out = rounds.rankings_stage(config, folder, results, 2)
    ranked = read_records(out["train"], "rankings")
    assert [(r.prompt_id, r.labeler_id, r.ranks) for r in ranked] == [("p1", "ann", [0, 1]), ("p2", "ann", [0, 1])]
    panel = json.loads(out["panel"].read_text())
    assert panel["human"] == 2 and "not people's" in panel["validation_rankings_note"]  # said plainly


def test_the_simulated_panel_keeps_its_fingerprints():
    simulated = {s.name: s.settings for s in build_stages(PipelineConfig(rounds=2))}
    assert not any(k == "labelers" or k.startswith("label_") for settings in simulated.values() for k in settings)
    config = PipelineConfig(labelers="app", ppo_init_from_pretrain_mix=True, rounds=2)
    labelled = {s.name for s in build_stages(config) if "labelers" in s.settings}
    assert labelled == {"sft", "sft_ppo_init", "rankings", "round-1/eval", "round-2/rankings", "eval"}
