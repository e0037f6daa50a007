"""``instructgpt label``: a team's set-up from the command line, then export."""

from __future__ import annotations

import json

from label_helpers import PASSWORD, open_db
from sqlalchemy import select

from instructgpt.cli.data import main as data_main
from instructgpt.cli.main import main
from instructgpt.labeling import store
from instructgpt.labeling.models import Assignment


def test_set_up_a_project_from_the_command_line(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path / 'team.db'}"
    db = ["--database-url", url]
    assert main(["label", "migrate", *db]) == 0 and "revision 0002" in capsys.readouterr().out
    monkeypatch.setenv("INSTRUCTGPT_LABEL_PASSWORD", PASSWORD)
    assert main(["label", "create-user", *db, "--username", "boss"]) == 0
    assert main(["label", "create-user", *db, "--username", "ann", "--role", "labeler"]) == 0
    assert main(["label", "create-user", *db, "--username", "ann", "--role", "labeler"]) == 1
    assert "is taken" in capsys.readouterr().err
    (tmp_path / "rules.txt").write_text("Prefer the truthful answer.")
    assert (
        main(
            [
                "label",
                "project",
                *db,
                "--name",
                "eval",
                "--kind",
                "comparison",
                "--instructions-file",
                str(tmp_path / "rules.txt"),
            ]
        )
        == 0
    )
    prompts, outputs = tmp_path / "prompts.jsonl", tmp_path / "outputs.jsonl"
    prompts.write_text(
        "".join(json.dumps({"id": f"q{i}", "text": f"Q{i}?", "user_id": "c", "source": "api"}) + "\n" for i in range(2))
    )
    outputs.write_text(
        "".join(
            json.dumps({"prompt_id": f"q{i}", "response": f"{m} says {i}", "model": m}) + "\n"
            for i in range(2)
            for m in ("sft", "ppo")
        )
    )
    assert main(["label", "import-prompts", *db, "--project", "eval", "--file", str(prompts)]) == 0
    assert main(["label", "attach-outputs", *db, "--project", "eval", "--file", str(outputs)]) == 0
    assert main(["label", "members", *db, "--project", "eval", "--usernames", "ann"]) == 0
    assert "2 new assignments" in capsys.readouterr().out
    assert main(["label", "invite", *db, "--project", "eval", "--base-url", "https://label.example"]) == 0
    assert capsys.readouterr().out.startswith("https://label.example/invite/")
    prompts.write_text('{"id": "x"}\n')
    assert main(["label", "import-prompts", *db, "--project", "eval", "--file", str(prompts)]) == 1
    assert "prompts.jsonl:1: text: Field required" in capsys.readouterr().err

    _, sessions = open_db(url)
    with sessions() as session:
        user_id, assignment_ids = session.execute(select(Assignment.user_id, Assignment.id)).all()[0]
        store.submit(session, user_id, "ann", assignment_ids, "cli-test-key", {"preferred": ["tie"]})
    out = tmp_path / "comparisons.jsonl"
    assert main(["label", "export", *db, "--project", "eval", "--out", str(out)]) == 0
    assert data_main(["validate", "--kind", "comparisons", str(out)]) == 0
    [record] = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["preferred"] == "tie" and record["labeler_id"] == "ann"


def test_usage(capsys):
    assert main(["label"]) == 0 and "instructgpt label serve" in capsys.readouterr().out
    assert main(["label", "nope"]) == 2
    assert main(["label", "serve", "--port", "0"]) == 2 and "port" in capsys.readouterr().err


def test_deactivate_from_the_command_line_logs_the_user_out(tmp_path, capsys):
    from fastapi.testclient import TestClient
    from label_helpers import login, setup_project

    from instructgpt.labeling.app import create_app

    url = f"sqlite:///{tmp_path / 'team.db'}"
    app = create_app(url)
    setup_project(app.state.sessions, n=1, k=2, labelers=("ann",))
    ann = TestClient(app, follow_redirects=False)
    login(ann, "ann")
    assert ann.get("/").status_code == 200
    assert main(["label", "deactivate", "--database-url", url, "--username", "ann"]) == 0
    assert ann.get("/").headers["location"] == "/login"
    assert main(["label", "deactivate", "--database-url", url, "--username", "nobody"]) == 1
    assert "no user named 'nobody'" in capsys.readouterr().err
    assert main(["label", "reactivate", "--database-url", url, "--username", "ann"]) == 0
    login(TestClient(app, follow_redirects=False), "ann")
    app.state.engine.dispose()


def test_a_refused_output_file_exits_1_naming_each_line(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'team.db'}"
    db = ["--database-url", url]
    assert main(["label", "project", *db, "--name", "rank", "--kind", "ranking"]) == 0
    prompts, outputs = tmp_path / "prompts.jsonl", tmp_path / "outputs.jsonl"
    prompts.write_text(json.dumps({"id": "q", "text": "Q?", "user_id": "c", "source": "api"}) + "\n")
    assert main(["label", "import-prompts", *db, "--project", "rank", "--file", str(prompts)]) == 0
    lines = [{"prompt_id": "q", "response": f"answer {j}"} for j in range(10)] + [{"prompt_id": "x", "response": "a"}]
    outputs.write_text("".join(json.dumps(line) + "\n" for line in lines))
    capsys.readouterr()
    assert main(["label", "attach-outputs", *db, "--project", "rank", "--file", str(outputs)]) == 1
    err = capsys.readouterr().err
    assert "outputs.jsonl:10: prompt_id: prompt 'q' already has the most outputs a task shows (9)" in err
    assert "outputs.jsonl:11: prompt_id: no prompt 'x' in this project" in err
    outputs.write_text("".join(json.dumps(line) + "\n" for line in lines[:9]))
    assert main(["label", "attach-outputs", *db, "--project", "rank", "--file", str(outputs)]) == 0
    assert "9 added, 0 already there" in capsys.readouterr().out
    prompts.write_text("\n" + json.dumps({"id": "long", "text": "x" * 50_001, "user_id": "c", "source": "api"}))
    assert main(["label", "import-prompts", *db, "--project", "rank", "--file", str(prompts)]) == 1
    assert "prompts.jsonl:2: text: longer than 50,000 characters" in capsys.readouterr().err
