"""Reading, validating and writing JSONL: the bad-file corpus, limits, atomic writes, the CLI."""

import gzip
import json
from pathlib import Path

import pytest

from instructgpt.cli.data import main
from instructgpt.data.jsonl import (
    DataError,
    Problem,
    iter_problems,
    read_records,
    write_jsonl_atomic,
)
from instructgpt.data.schemas import Demonstration
from instructgpt.data.validate import validate_file, validate_files

DATA = Path(__file__).parent / "data"
BAD = DATA / "bad"
GOOD = DATA / "good"
DEMONSTRATION = {"prompt": "Say hi.", "response": "Hi!", "labeler_id": "l1"}

# For each file of the bad corpus: its detected kind and every (line, field) at fault.
EXPECTED = {
    "truncated.jsonl": ("demonstrations", [(3, "-")]),
    "wrong_types.jsonl": ("prompts", [(2, "user_id"), (3, "metadata.ambiguous"), (4, "text")]),
    "missing_fields.jsonl": ("demonstrations", [(3, "prompt"), (3, "response")]),  # labeler_id is optional
    "empty_text.jsonl": ("prompts", [(2, "text"), (3, "text"), (4, "user_id")]),
    "bad_utf8.jsonl": ("demonstrations", [(2, "-")]),
    "empty.jsonl": (None, [(0, "-")]),
    "not_object.jsonl": ("demonstrations", [(1, "-"), (3, "-"), (4, "-")]),
    "bad_ranks.jsonl": (
        "rankings",
        [(2, "ranks"), (3, "ranks"), (4, "ranks"), (5, "ranks.1"), (6, "ranks.1"), (7, "ranks.0")],
    ),
    "duplicate_responses.jsonl": ("rankings", [(2, "responses"), (3, "responses")]),
    "bad_likert.jsonl": (
        "rankings",
        [(2, "likert.0"), (3, "likert.0"), (4, "likert"), (5, "likert.0"), (5, "likert.1")],
    ),
    "unknown_flag.jsonl": ("rankings", [(2, "metadata.0"), (3, "metadata.0.hallucination"), (4, "metadata")]),
}


def located(problems: list[Problem]) -> list[tuple[int, str]]:
    return [(p.line, p.field) for p in problems]


def test_corpus_is_complete():
    assert sorted(p.name for p in BAD.glob("*.jsonl")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_file(name):
    kind, expected = EXPECTED[name]
    report = validate_file(BAD / name)
    assert report.kind == kind
    assert located(report.problems) == expected
    assert all(str(p).startswith(f"{BAD / name}:{p.line}: {p.field}: ") for p in report.problems)


@pytest.mark.parametrize("name", sorted(n for n, (kind, _) in EXPECTED.items() if kind))
def test_read_records_lists_every_problem(name):
    kind, expected = EXPECTED[name]
    with pytest.raises(DataError) as info:
        read_records(BAD / name, kind)
    assert located(info.value.problems) == expected
    assert str(info.value).count("\n") == len(expected) - 1


def test_reasons_say_what_is_wrong():
    reasons = {p.line: p.reason for p in validate_file(BAD / "bad_ranks.jsonl").problems}
    assert "0..m-1" in reasons[2] and "tie" in reasons[3] and "2 entries for 3" in reasons[4]
    assert "truncated" in validate_file(BAD / "truncated.jsonl").problems[0].reason
    assert "UTF-8" in validate_file(BAD / "bad_utf8.jsonl").problems[0].reason
    assert "got array" in validate_file(BAD / "not_object.jsonl").problems[0].reason
    assert "'toxic'" in validate_file(BAD / "unknown_flag.jsonl").problems[0].reason


def test_good_files_have_no_problems():
    paths = sorted(GOOD.glob("*.jsonl"))
    assert len(paths) == 4 and validate_files(paths) == []


def test_huge_line_is_skipped_not_loaded(tmp_path):
    path = tmp_path / "huge.jsonl"
    huge = json.dumps({**DEMONSTRATION, "response": "x" * 3_000_000})
    lines = [json.dumps(DEMONSTRATION), huge, json.dumps(DEMONSTRATION)]
    path.write_text("\n".join(lines) + "\n")
    report = validate_file(path, max_line_bytes=1_000_000)
    assert report.records == 2
    assert located(report.problems) == [(2, "-")]
    assert report.problems[0].reason == (f"line is {len(huge):,} bytes, over the limit of 1,000,000")


def test_line_at_the_limit_is_accepted(tmp_path):
    path = tmp_path / "exact.jsonl"
    line = json.dumps(DEMONSTRATION)
    path.write_text(line + "\n" + line)  # the last line has no newline
    assert validate_file(path, max_line_bytes=len(line)).records == 2
    too_long = validate_file(path, max_line_bytes=len(line) - 1).problems
    assert located(too_long) == [(1, "-"), (2, "-")]


def test_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "blank.jsonl"
    path.write_text("\n" + json.dumps(DEMONSTRATION) + "\n   \n\n" + json.dumps(DEMONSTRATION))
    assert validate_file(path).records == 2
    path.write_text("\n  \n\t\n")
    assert [(p.line, p.reason) for p in validate_file(path).problems] == [(0, "file is empty: no records")]


def test_missing_file_is_a_problem_not_a_crash(tmp_path):
    problems = validate_files([tmp_path / "nope.jsonl"])
    assert [(p.line, p.reason) for p in problems] == [(0, "no such file")]
    with pytest.raises(DataError, match="nope.jsonl:0: -: no such file"):
        read_records(tmp_path / "nope.jsonl", "rankings")


def test_a_folder_is_a_problem(tmp_path):
    assert located(validate_files([tmp_path])) == [(0, "-")]


def test_undetectable_kind_says_how_to_fix(tmp_path):
    path = tmp_path / "odd.jsonl"
    path.write_text("[1]\n" + json.dumps({"question": "Hi?"}) + "\n")
    problems = validate_file(path).problems
    assert located(problems) == [(1, "-"), (2, "-")]
    assert "prompts, demonstrations, rankings" in problems[1].reason
    assert "--kind" in problems[1].reason


def test_explicit_kind_overrides_detection():
    problems = validate_files([GOOD / "demonstrations.jsonl"], kind="rankings")
    assert len(problems) == 1 and "look like demonstrations, not rankings" in problems[0].reason  # one line
    problems = validate_files([BAD / "missing_fields.jsonl"], kind="demonstrations")
    assert {p.field for p in problems} == {"prompt", "response"}


def test_iter_problems_without_kind_checks_lines_only():
    assert located(iter_problems(BAD / "bad_ranks.jsonl")) == []
    assert located(iter_problems(BAD / "bad_ranks.jsonl", "rankings"))[0] == (2, "ranks")


def test_gzip_round_trip(tmp_path):
    records = read_records(GOOD / "rankings.jsonl", "rankings")
    path = tmp_path / "rankings.jsonl.gz"
    write_jsonl_atomic(path, records)
    assert gzip.decompress(path.read_bytes()).count(b"\n") == len(records)
    assert read_records(path, "rankings") == records


def test_corrupt_gzip_is_a_problem(tmp_path):
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"a": 1}\n' * 1000)[:50])
    problems = validate_files([path])
    assert problems and problems[-1].reason.startswith("cannot read")


def test_write_models_and_dicts(tmp_path):
    path = tmp_path / "out.jsonl"
    records = [Demonstration(**DEMONSTRATION), {**DEMONSTRATION, "response": "Salut é"}]
    write_jsonl_atomic(path, records)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0]) == DEMONSTRATION  # None fields are left out
    assert "Salut é" in lines[1]  # not ASCII-escaped
    assert len(read_records(path, "demonstrations")) == 2


def test_failed_write_leaves_old_file_intact(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text("old content\n")

    def records():
        yield DEMONSTRATION
        yield {"response": object()}  # not JSON-serialisable: fails midway

    with pytest.raises(TypeError):
        write_jsonl_atomic(path, records())
    assert path.read_text() == "old content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temporary file left


def test_cli_validate_ok(capsys):
    paths = [str(p) for p in sorted(GOOD.glob("*.jsonl"))]
    assert main(["validate", *paths]) == 0
    out, err = capsys.readouterr()
    assert out == "" and err.strip() == "OK: 4 files, 12 records"


def test_cli_validate_problems(capsys):
    paths = [str(GOOD / "prompts.jsonl"), str(BAD / "bad_ranks.jsonl"), str(BAD / "empty.jsonl")]
    assert main(["validate", *paths]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[0].startswith(f"{BAD / 'bad_ranks.jsonl'}:2: ranks: ")
    assert len(out.splitlines()) == 7
    assert err.strip() == "3 files, 2 with problems, 7 problems"
    assert "Traceback" not in out + err


def test_cli_validate_options(capsys):
    assert main(["validate", "--kind", "prompts", str(GOOD / "prompts.jsonl")]) == 0
    assert main(["validate", "--max-line-bytes", "10", str(GOOD / "prompts.jsonl")]) == 1
    assert main(["validate", "--kind", "comments", str(GOOD / "prompts.jsonl")]) == 2
    assert main(["validate", "--max-line-bytes", "0", str(GOOD / "prompts.jsonl")]) == 2
    assert main(["validate"]) == 2
    assert main([]) == 2
    assert main(["--help"]) == 0
    capsys.readouterr()
