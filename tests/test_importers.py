"""Importers on the real bundled datasets, the data root, and ``instructgpt data import``."""

import json
import logging
from pathlib import Path

import pytest

from instructgpt.cli.data import main
from instructgpt.data.importers import (
    DATA_ROOT_ENV,
    DEFAULT_PATHS,
    IMPORTERS,
    find_data_root,
    import_alpaca,
    import_oasst,
    import_rankings_oasst,
    import_self_instruct,
    instruction_prompt,
)
from instructgpt.data.jsonl import DataError, read_records, write_jsonl_atomic
from instructgpt.data.schemas import Demonstration, Ranking
from instructgpt.data.validate import validate_file


@pytest.fixture(scope="module")
def data_root() -> Path:
    try:
        return find_data_root(Path(__file__).parent)
    except FileNotFoundError as e:
        pytest.skip(f"bundled data not found: {e}")


def source(data_root: Path, name: str) -> Path:
    return data_root / DEFAULT_PATHS[name]


def test_alpaca(data_root, caplog):
    with caplog.at_level(logging.INFO):
        demonstrations = import_alpaca(source(data_root, "alpaca"))
    assert len(demonstrations) == 4998  # 5,000 items, 2 with an empty output
    assert "skipped 2" in caplog.text
    raw = json.loads(source(data_root, "alpaca").read_text())
    with_input = sum(1 for d in demonstrations if "\n\n" in d.prompt)
    assert with_input >= 1943  # every non-empty input is appended after a blank line
    first = demonstrations[0]
    assert first.prompt == f"{raw[0]['instruction']}\n\n{raw[0]['input']}"
    assert first.response == raw[0]["output"]
    assert (first.labeler_id, first.source, first.prompt_id) == ("alpaca", "alpaca", "alpaca-0")


def test_self_instruct(data_root):
    demonstrations = import_self_instruct(source(data_root, "self-instruct"))
    assert len(demonstrations) == 175
    assert demonstrations[0].prompt_id == "seed_task_0:0"
    assert {d.labeler_id for d in demonstrations} == {"self-instruct"}
    assert len({d.prompt_id for d in demonstrations}) == 175


def test_oasst(data_root):
    demonstrations = import_oasst(source(data_root, "oasst"))
    with_synthetic = import_oasst(source(data_root, "oasst"), include_synthetic=True)
    # 212 prompter messages have a rank-0 reply; 5 of those replies are model-written.
    assert (len(demonstrations), len(with_synthetic)) == (207, 212)
    multi_turn = [d for d in with_synthetic if len(d.prompt) > 1]
    assert len(multi_turn) == 113
    for d in with_synthetic:
        roles = [m.role for m in d.prompt]
        assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"]
        assert d.labeler_id == "oasst" and d.source == "oasst"
    assert len({d.prompt_id for d in with_synthetic}) == 212


def test_oasst_agrees_with_the_derived_rankings(data_root):
    """The rank-0 reply of each ranked group is the demonstration for its prompt."""
    demonstrations = import_oasst(source(data_root, "oasst"), include_synthetic=True)
    rankings = import_rankings_oasst(source(data_root, "oasst-rankings"))
    best = {r.prompt_id: (r.prompt, r.responses[r.ranks.index(0)]) for r in rankings}
    assert {d.prompt_id: (d.prompt, d.response) for d in demonstrations} == best


def test_oasst_rankings(data_root):
    rankings = import_rankings_oasst(source(data_root, "oasst-rankings"))
    assert len(rankings) == 212
    assert sum(len(r.comparisons()) for r in rankings) == sum(
        len(r.responses) * (len(r.responses) - 1) // 2 for r in rankings
    )
    assert max(len(r.responses) for r in rankings) == 9


def test_oasst_options(tmp_path):
    """Deleted replies and everything below them are dropped; user ids become labeler ids."""
    reply = {"message_id": "a1", "text": "Hi!", "role": "assistant", "rank": 0, "user_id": "u7"}
    deleted = {
        "message_id": "a2",
        "text": "Yo",
        "role": "assistant",
        "rank": 0,
        "deleted": True,
        "replies": [
            {"message_id": "p2", "text": "And?", "role": "prompter", "replies": [{**reply, "message_id": "a3"}]}
        ],
    }
    tree = {
        "message_tree_id": "t",
        "prompt": {"message_id": "p1", "text": "Hello", "role": "prompter", "replies": [deleted, reply]},
    }
    path = tmp_path / "trees.jsonl"
    path.write_text(json.dumps(tree) + "\n")
    [demonstration] = import_oasst(path)
    assert (demonstration.response, demonstration.labeler_id) == ("Hi!", "oasst:u7")


@pytest.mark.parametrize("name", sorted(DEFAULT_PATHS))  # the importers with a bundled input
def test_imported_records_round_trip(data_root, tmp_path, name):
    records = IMPORTERS[name](source(data_root, name))
    kind = "rankings" if name in ("oasst-rankings", "hh-rlhf") else "demonstrations"
    assert all(isinstance(r, Ranking if kind == "rankings" else Demonstration) for r in records)
    out = tmp_path / f"{name}.jsonl"
    write_jsonl_atomic(out, records)
    report = validate_file(out)
    assert (report.kind, report.records, report.problems) == (kind, len(records), [])
    assert read_records(out, kind) == records


def test_wrong_format_is_a_data_error(data_root):
    with pytest.raises(DataError, match=r"en_100_tree.jsonl:1: id: Field required"):
        import_self_instruct(source(data_root, "oasst"))
    with pytest.raises(DataError, match=r"alpaca_5000.json:1: -: line is 2,044,701 bytes"):
        import_oasst(source(data_root, "alpaca"))
    with pytest.raises(DataError, match="seed_tasks.jsonl:0: -: Invalid JSON"):
        import_alpaca(source(data_root, "self-instruct"))


def test_instruction_prompt():
    assert instruction_prompt("Translate.", "") == "Translate."
    assert instruction_prompt("Translate.", "  ") == "Translate."
    assert instruction_prompt("Translate.", "bonjour") == "Translate.\n\nbonjour"


def test_find_data_root(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "repo" / "src").mkdir(parents=True)
    assert find_data_root(tmp_path / "repo" / "src") == tmp_path.resolve() / "shared" / "data"
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    assert find_data_root() == tmp_path
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match=DATA_ROOT_ENV):
        find_data_root()


def test_find_data_root_not_found(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    if any((p / "shared" / "data").is_dir() for p in [tmp_path, *tmp_path.parents]):
        pytest.skip("a shared/data folder sits above the temporary folder")
    with pytest.raises(FileNotFoundError, match="no data root"):
        find_data_root(tmp_path)


def test_cli_import(data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(DATA_ROOT_ENV, str(data_root))
    out = tmp_path / "alpaca.jsonl"
    assert main(["import", "alpaca", "--out", str(out)]) == 0
    assert "4998 records" in capsys.readouterr().out
    assert main(["validate", str(out)]) == 0
    assert "OK: 1 file, 4998 records" in capsys.readouterr().err
    out = tmp_path / "oasst.jsonl"
    assert main(["import", "oasst", "--include-synthetic", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 212


def test_cli_import_refusals(data_root, tmp_path, capsys):
    copy = tmp_path / "alpaca.json"
    copy.write_bytes(source(data_root, "alpaca").read_bytes())
    assert main(["import", "alpaca", "--input", str(copy), "--out", str(copy)]) == 2
    assert copy.read_bytes() == source(data_root, "alpaca").read_bytes()
    assert main(["import", "alpaca", "--include-synthetic", "--out", str(tmp_path / "x")]) == 2
    assert main(["import", "alpaca", "--out", str(tmp_path / "no" / "x.jsonl")]) == 2
    missing = tmp_path / "missing.json"
    assert main(["import", "alpaca", "--input", str(missing), "--out", str(tmp_path / "x")]) == 2
    assert main(["import", "oasst", "--input", str(copy), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "refusing to overwrite" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_pairs_without_a_prompt_split_messages_or_hh_transcripts():
    from instructgpt.data.importers import PreferencePair, pair_parts
    from instructgpt.data.schemas import Message

    user = Message(role="user", content="Hi")
    transcript = PreferencePair(chosen="\n\nHuman: Hi\n\nAssistant: Hello!", rejected="\n\nHuman: Hi\n\nAssistant: Go.")
    messages = PreferencePair(
        chosen=[user, Message(role="assistant", content="Hello!")],
        rejected=[user, Message(role="assistant", content="Go.")],
    )
    for pair in (transcript, messages):
        prompt, chosen, rejected = pair_parts(pair)
        assert ([(m.role, m.content) for m in prompt], chosen, rejected) == ([("user", "Hi")], "Hello!", "Go.")
    assert pair_parts(PreferencePair(prompt="Hi", chosen="Same", rejected="Same")) is None
    assert pair_parts(PreferencePair(chosen="no transcript", rejected="at all")) is None
