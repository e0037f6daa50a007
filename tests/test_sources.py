"""Demonstrations and rankings from the formats people have (issue 21, point 2): our JSONL, TRL's
prompt/completion and messages records, chosen/rejected pairs, and what ``datasets`` loads locally
(a save_to_disk folder, parquet, JSON, CSV) with a column mapping; one clear line for the rest."""

import json
import logging

import pytest

from instructgpt.cli.data import main
from instructgpt.data.jsonl import DataError, Problem, read_records
from instructgpt.data.schemas import Demonstration, Message, Ranking
from instructgpt.data.sources import load_records, parse_columns
from instructgpt.data.validate import validate_file

USER = [{"role": "user", "content": "Say hi."}]
CHAT = [{"role": "system", "content": "Be brief."}, *USER, {"role": "assistant", "content": "Hi!"}]
SAY_HI = Demonstration(prompt="Say hi.", response="Hi!")


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def problems(path, kind, columns=None) -> list[str]:
    with pytest.raises(DataError) as info:
        load_records(path, kind, columns)
    return [str(p) for p in info.value.problems]


@pytest.fixture
def datasets():
    return pytest.importorskip("datasets")


def test_our_jsonl_reads_as_before_and_labeler_id_is_optional(tmp_path):
    rows = [{"prompt": "Say hi.", "response": "Hi!", "labeler_id": "l1"}, {"prompt": "Say hi.", "response": "Hi!"}]
    path = jsonl(tmp_path / "demos.jsonl", rows)
    records = load_records(path, "demonstrations")
    assert records == read_records(path, "demonstrations")
    assert [r.labeler_id for r in records] == ["l1", None]


def test_our_errors_keep_file_line_and_field(tmp_path):
    path = jsonl(tmp_path / "demos.jsonl", [{"prompt": "p", "response": "r"}, {"prompt": "p", "response": 3}])
    assert problems(path, "demonstrations") == [f"{path}:2: response: Input should be a valid string, got number"]


@pytest.mark.parametrize(
    "row",
    [
        {"prompt": "Say hi.", "completion": "Hi!"},  # TRL prompt-completion, text
        {"prompt": USER, "completion": [{"role": "assistant", "content": "Hi!"}]},  # TRL prompt-completion, chat
        {"messages": CHAT},  # TRL conversational
    ],
)
def test_trl_demonstration_records(tmp_path, row):
    [record] = load_records(jsonl(tmp_path / "trl.jsonl", [row]), "demonstrations")
    assert record.response == "Hi!"
    assert record.prompt == "Say hi." or record.prompt[-1] == Message(role="user", content="Say hi.")
    assert record.labeler_id is None


def test_messages_keep_the_system_turn_and_carry_ids(tmp_path):
    path = jsonl(tmp_path / "chat.jsonl", [{"messages": CHAT, "labeler_id": "l7", "prompt_id": "p1"}])
    [record] = load_records(path, "demonstrations")
    assert [m.role for m in record.prompt] == ["system", "user"]
    assert (record.labeler_id, record.prompt_id) == ("l7", "p1")


def test_trl_errors_name_the_source_field(tmp_path):
    rows = [
        {"messages": CHAT},
        {"messages": USER},  # no assistant turn
        {"messages": [*USER, {"role": "bot", "content": "x"}]},
    ]
    path = jsonl(tmp_path / "chat.jsonl", rows)
    found = problems(path, "demonstrations")
    assert found[0].startswith(f"{path}:2: messages: ") and "at least 2" in found[0]
    assert found[1].startswith(f"{path}:3: messages.1.role: ")
    path = jsonl(tmp_path / "pc.jsonl", [{"prompt": "p", "completion": ""}])
    assert problems(path, "demonstrations") == [f"{path}:1: completion: must not be empty or only whitespace"]


def test_save_to_disk_folder_parquet_json_and_csv(tmp_path, datasets):
    rows = [{"prompt": "Say hi.", "response": "Hi!"}, {"prompt": "Say bye.", "response": "Bye!"}]
    table = datasets.Dataset.from_list(rows)
    table.save_to_disk(str(tmp_path / "folder"))
    datasets.DatasetDict({"train": table, "test": table}).save_to_disk(str(tmp_path / "splits"))
    table.to_parquet(str(tmp_path / "demos.parquet"))
    table.to_csv(str(tmp_path / "demos.csv"), index=False)
    (tmp_path / "demos.json").write_text(json.dumps(rows))  # one JSON array, like Alpaca's
    for name in ("no-suffix", "misnamed.jsonl"):  # parquet is told by its PAR1 magic, whatever the name
        (tmp_path / name).write_bytes((tmp_path / "demos.parquet").read_bytes())
    for name in ("folder", "splits", "demos.parquet", "demos.csv", "demos.json", "no-suffix", "misnamed.jsonl"):
        records = load_records(tmp_path / name, "demonstrations")
        assert [(r.prompt, r.response) for r in records] == [("Say hi.", "Hi!"), ("Say bye.", "Bye!")], name


def test_column_mapping_and_rows_named_in_errors(tmp_path, datasets):
    table = datasets.Dataset.from_list([{"question": "Say hi.", "answer": "Hi!"}, {"question": "Q", "answer": None}])
    path = tmp_path / "qa.parquet"
    table.to_parquet(str(path))
    [line] = problems(path, "demonstrations")
    assert line.startswith(f"{path}: row 0: -: cannot tell the demonstrations format from the fields")
    assert "--columns" in line
    columns = parse_columns(["prompt=question", "response=answer"])
    assert problems(path, "demonstrations", columns) == [
        f"{path}: row 1: answer: Input should be a valid string, got null"
    ]
    with pytest.raises(ValueError, match="OURS=THEIRS"):
        parse_columns(["prompt"])


def test_rankings_ours_and_chosen_rejected_pairs(tmp_path, datasets, caplog):
    ours = {"prompt": "Say hi.", "responses": ["Hi!", "Yo", "Go away."], "ranks": [0, 1, 2]}
    pairs = [
        {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "Go away."},  # text
        {
            "chosen": [*USER, {"role": "assistant", "content": "Hi!"}],
            "rejected": [*USER, {"role": "assistant", "content": "No."}],
        },
        {"chosen": "\n\nHuman: Say hi.\n\nAssistant: Hi!", "rejected": "\n\nHuman: Say hi.\n\nAssistant: No."},  # hh
        {"prompt": "Say hi.", "chosen": "Same", "rejected": "Same"},  # unusable: skipped, counted
    ]
    assert load_records(jsonl(tmp_path / "ours.jsonl", [ours]), "rankings")[0].ranks == [0, 1, 2]
    datasets.Dataset.from_list(pairs[:1] * 2).to_parquet(str(tmp_path / "pairs.parquet"))
    with caplog.at_level(logging.WARNING):
        records = load_records(jsonl(tmp_path / "pairs.jsonl", pairs), "rankings")
    assert "skipped 1 unusable pairs" in caplog.text
    assert [(r.responses, r.ranks, r.labeler_id) for r in records] == [(["Hi!", "Go away."], [0, 1], None)] + [
        (["Hi!", "No."], [0, 1], None)
    ] * 2
    assert records[1].prompt == [Message(role="user", content="Say hi.")]
    assert len(load_records(tmp_path / "pairs.parquet", "rankings")) == 2


def test_the_wrong_kind_says_so(tmp_path):
    path = jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    [line] = problems(path, "demonstrations")
    assert line.startswith(f"{path}:1: -: ") and "these look like rankings, not demonstrations" in line


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.mkdir(), "a folder, but not one written by datasets' save_to_disk"),
        (lambda p: p.with_suffix(".txt").write_text("hello"), "unsupported format '.txt'"),
        (lambda p: p.with_suffix(".parquet").write_bytes(b"PAR1 broken"), "cannot read as parquet"),
        (lambda p: None, "no such file"),
    ],
)
def test_unsupported_or_unreadable_sources_get_one_line_naming_the_file(tmp_path, make, reason, datasets):
    source = tmp_path / "data"
    make(source)
    source = next(iter(tmp_path.iterdir()), source)
    [line] = problems(source, "demonstrations")
    assert line.startswith(f"{source}:0: -: ") and reason in line and "\n" not in line


def test_validate_and_convert_cli(tmp_path, datasets, capsys):
    datasets.Dataset.from_list([{"q": "Say hi.", "a": "Hi!"}]).to_csv(str(tmp_path / "qa.csv"), index=False)
    assert main(["validate", str(tmp_path / "qa.csv"), "--kind", "demonstrations"]) == 1
    assert "cannot tell the demonstrations format" in capsys.readouterr().out
    assert main(["validate", str(tmp_path / "qa.csv"), "--columns", "prompt=q", "response=a"]) == 0
    out = tmp_path / "demos.jsonl"
    args = ["convert", str(tmp_path / "qa.csv"), "--kind", "demonstrations", "--out", str(out)]
    assert main([*args, "--columns", "prompt=q", "response=a"]) == 0
    assert read_records(out, "demonstrations") == [SAY_HI]
    assert main([*args, "--columns", "prompt"]) == 2
    chat = jsonl(tmp_path / "chat.jsonl", [{"messages": CHAT}])
    assert validate_file(chat).kind == "demonstrations" and validate_file(chat).records == 1


def test_validate_keeps_prompts_to_json_lines(tmp_path, datasets):
    datasets.Dataset.from_list([{"id": "p", "text": "t", "user_id": "u", "source": "api"}]).to_parquet(
        str(tmp_path / "p.parquet")
    )
    [problem] = validate_file(tmp_path / "p.parquet").problems
    assert problem == Problem(str(tmp_path / "p.parquet"), 0, "-", problem.reason) and "JSON Lines" in problem.reason


def test_sft_and_rm_read_other_formats(tmp_path, datasets, tokenizer):
    from instructgpt.training.rm import RMConfig, build_groups
    from instructgpt.training.sft import SFTConfig, build_examples

    datasets.Dataset.from_list([{"messages": CHAT}] * 4).save_to_disk(str(tmp_path / "sft"))
    train, _ = build_examples(SFTConfig(data=(tmp_path / "sft",), val_fraction=0.0, template="raw"), tokenizer, False)
    assert len(train) == 4
    pairs = [{"prompt": f"Say hi {i}.", "chosen": "Hi!", "rejected": "No."} for i in range(4)]
    datasets.Dataset.from_list(pairs).to_parquet(str(tmp_path / "pairs.parquet"))
    config = RMConfig(data=(tmp_path / "pairs.parquet",), val_fraction=0.0, template="raw")
    groups, _, records = build_groups(config, tokenizer, False)
    assert len(groups) == 4 and all(r.ranks == [0, 1] for r in records)


def test_labeler_cross_validation_says_it_needs_labeler_ids():
    from instructgpt.config import ConfigError
    from instructgpt.training.rm_cv import _group_key

    ranking = Ranking(prompt="p", responses=["a", "b"], ranks=[0, 1])
    with pytest.raises(ConfigError, match="needs labeler_id on every ranking"):
        _group_key(ranking, "labeler")
    assert _group_key(ranking, "prompt") == '"p"'


def test_iter_csv_gives_each_records_first_line_and_names_missing_columns(tmp_path):
    from instructgpt.data.jsonl import DataError, iter_csv

    path = tmp_path / "t.csv"
    path.write_text('a,b\n1,"two\nlines"\n3,4\n', encoding="utf-8")
    assert list(iter_csv(path, ("a",))) == [(2, {"a": "1", "b": "two\nlines"}), (4, {"a": "3", "b": "4"})]
    with pytest.raises(DataError, match=r"t.csv:1: c: missing column"):
        list(iter_csv(path, ("a", "c")))
