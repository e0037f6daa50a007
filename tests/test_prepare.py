"""``instructgpt data prepare``: dedup, per-user cap, user split, PII, token limit, report."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from instructgpt.cli.main import main
from instructgpt.config import ConfigError
from instructgpt.data.dedup import keep_one_per_group, prefix_key
from instructgpt.data.jsonl import DataError
from instructgpt.data.prepare import DATASETS, PrepareConfig, bytes_token_counter, prepare, tokenizer_counter
from instructgpt.data.splits import SPLITS, cap_per_user, mix64, split_users


def write_prompts(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def prompt(i: int, text: str, user: str, **extra) -> dict:
    return {"id": f"p{i}", "text": text, "user_id": user, "source": "api", **extra}


def read_outputs(out_dir: Path) -> dict[tuple[str, str], list[dict]]:
    return {
        (d, s): [json.loads(line) for line in (out_dir / d / f"{s}.jsonl").read_text().splitlines()]
        for d in DATASETS
        for s in SPLITS
    }


# --- dedup -------------------------------------------------------------------------------


def naive_dedup(texts: list[str], ids: list[str], prefix_chars: int) -> set[str]:
    """Quadratic reference: group prompts whose normalised prefixes are equal (transitively),
    keep the smallest id hash of each group."""
    norm = [" ".join(t.split()).casefold()[:prefix_chars] for t in texts]
    parent = list(range(len(texts)))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(len(texts)):
        for j in range(i):
            if norm[i] == norm[j]:
                parent[find(i)] = find(j)
    from instructgpt.data.dedup import hash64

    groups: dict[int, list[int]] = {}
    for i in range(len(texts)):
        groups.setdefault(find(i), []).append(i)
    return {ids[min(g, key=lambda i: (hash64(ids[i]), i))] for g in groups.values()}


texts_strategy = st.lists(st.text(alphabet="ab \n", min_size=1, max_size=12).filter(str.strip), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(texts=texts_strategy, prefix=st.integers(1, 8))
def test_dedup_matches_the_quadratic_reference(texts, prefix):
    ids = [f"id{i}" for i in range(len(texts))]
    keys = np.array([prefix_key(t, prefix) for t in texts], dtype=np.uint64)
    from instructgpt.data.dedup import hash64

    order = np.array([hash64(i) for i in ids], dtype=np.uint64)
    kept = {ids[i] for i in np.flatnonzero(keep_one_per_group(keys, order))}
    assert kept == naive_dedup(texts, ids, prefix)


@settings(max_examples=40, deadline=None)
@given(texts=texts_strategy, prefix=st.integers(1, 8), seed=st.integers(0, 1000))
def test_kept_prompt_does_not_depend_on_input_order(texts, prefix, seed, tmp_path_factory):
    records = [prompt(i, t, f"u{i % 3}") for i, t in enumerate(texts)]
    shuffled = records[:]
    random.Random(seed).shuffle(shuffled)
    kept = []
    for rs in (records, shuffled):
        folder = tmp_path_factory.mktemp("order")
        config = PrepareConfig(
            inputs=(write_prompts(folder / "in.jsonl", rs),),
            out_dir=folder / "out",
            prefix_chars=prefix,
            tokenizer="bytes",
            pii="keep",
        )
        prepare(config)
        kept.append({r["id"] for rows in read_outputs(folder / "out").values() for r in rows})
    assert kept[0] == kept[1]


def test_prompts_sharing_a_long_prefix_are_one_prompt(tmp_path):
    base = "Write a short story about a lighthouse keeper who finds a message in a bottle"
    records = [
        prompt(0, base + " and keeps it.", "a"),
        prompt(1, base + ", then loses it.", "b"),
        prompt(2, "  " + base.upper().replace(" ", "   ") + " and more", "c"),
        prompt(3, "Write a short poem.", "d"),
    ]
    config = PrepareConfig(
        inputs=(write_prompts(tmp_path / "in.jsonl", records),),
        out_dir=tmp_path / "out",
        prefix_chars=60,
        tokenizer="bytes",
    )
    report = prepare(config)
    assert report["dropped"]["duplicates"] == 2
    assert report["stages"]["deduplicated"]["prompts"] == 2


# --- cap and split -------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(users=st.lists(st.integers(0, 6), min_size=1, max_size=80), cap=st.integers(1, 10), seed=st.integers(0, 99))
def test_cap_keeps_at_most_cap_per_user_and_all_when_under(users, cap, seed):
    users = np.array(users)
    order = mix64(np.arange(len(users), dtype=np.uint64), seed)
    keep = cap_per_user(users, order, cap)
    for u in np.unique(users):
        mine = users == u
        assert keep[mine].sum() == min(cap, mine.sum())
        # the kept ones are those with the smallest order
        kept_orders, dropped_orders = order[mine & keep], order[mine & ~keep]
        assert not len(dropped_orders) or kept_orders.max() <= dropped_orders.min()


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(1, 50), min_size=1, max_size=40), seed=st.integers(0, 99), train=st.floats(0.1, 0.9))
def test_split_fractions_are_met_to_within_one_user(counts, seed, train):
    fractions = (train, (1 - train) / 2, (1 - train) / 2)
    counts = np.array(counts)
    split = split_users(mix64(np.arange(len(counts), dtype=np.uint64), seed), counts, fractions)
    total = counts.sum()
    for s, fraction in enumerate(fractions):
        assert abs(counts[split == s].sum() - fraction * total) <= counts.max() + 1e-9


@settings(max_examples=25, deadline=None)
@given(users=st.lists(st.integers(0, 12), min_size=1, max_size=60), cap=st.integers(1, 6), seed=st.integers(0, 9))
def test_no_user_in_two_splits_and_cap_respected_end_to_end(users, cap, seed, tmp_path_factory):
    folder = tmp_path_factory.mktemp("split")
    records = [prompt(i, f"Prompt number {i}: say {i} things.", f"user-{u}") for i, u in enumerate(users)]
    config = PrepareConfig(
        inputs=(write_prompts(folder / "in.jsonl", records),),
        out_dir=folder / "out",
        max_per_user=cap,
        seed=seed,
        tokenizer="bytes",
    )
    prepare(config)
    outputs = read_outputs(folder / "out")
    split_of_user: dict[str, set[str]] = {}
    per_user: dict[str, int] = {}
    for (_, s), rows in outputs.items():
        for r in rows:
            split_of_user.setdefault(r["user_id"], set()).add(s)
            per_user[r["user_id"]] = per_user.get(r["user_id"], 0) + 1
    assert all(len(s) == 1 for s in split_of_user.values())
    assert all(n <= cap for n in per_user.values())
    assert sum(per_user.values()) == sum(min(cap, users.count(u)) for u in set(users))


def test_same_seed_same_output_other_seed_other_cap(tmp_path):
    records = [prompt(i, f"Task {i}: describe item {i}.", f"u{i % 4}") for i in range(200)]
    inp = write_prompts(tmp_path / "in.jsonl", records)
    outs = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        prepare(PrepareConfig(inputs=(inp,), out_dir=tmp_path / name, max_per_user=10, seed=seed, tokenizer="bytes"))
        outs.append(read_outputs(tmp_path / name))
    assert outs[0] == outs[1]
    assert outs[0] != outs[2]


# --- PII, token limit, report ----------------------------------------------------------------


def test_pii_dropped_or_redacted_in_train_only_and_counted(tmp_path):
    records = [prompt(i, f"Question {i}: mail me at person{i}@example.com please", f"u{i}") for i in range(40)]
    inp = write_prompts(tmp_path / "in.jsonl", records)
    report = prepare(PrepareConfig(inputs=(inp,), out_dir=tmp_path / "drop", tokenizer="bytes"))
    outputs = read_outputs(tmp_path / "drop")
    assert all(not rows for (d, s), rows in outputs.items() if s == "train")
    train_users = report["splits"]["train"]["prompts"]
    assert report["dropped"]["pii"] == train_users == report["pii"]["prompts"]["email"] > 0
    assert sum(len(rows) for (d, s), rows in outputs.items() if s != "train") == 40 - train_users

    prepare(PrepareConfig(inputs=(inp,), out_dir=tmp_path / "redact", tokenizer="bytes", pii="redact"))
    redacted = read_outputs(tmp_path / "redact")
    train = [r for (d, s), rows in redacted.items() if s == "train" for r in rows]
    assert len(train) == train_users and all("[EMAIL]" in r["text"] and "@" not in r["text"] for r in train)


def test_token_limit_counts_only_long_prompts_and_drops_them(tmp_path, tokenizer):
    records = [prompt(0, "short prompt", "a"), prompt(1, "x" * 30, "b"), prompt(2, "é" * 12, "c")]
    seen: list[str] = []
    count = tokenizer_counter(tokenizer)

    def spy(texts):
        seen.extend(texts)
        return count(texts)

    inp = write_prompts(tmp_path / "in.jsonl", records)
    report = prepare(PrepareConfig(inputs=(inp,), out_dir=tmp_path / "out", max_prompt_tokens=20), count_tokens=spy)
    assert seen == ["x" * 30, "é" * 12]  # "é" is 2 bytes: 24 bytes may be over 20 tokens
    assert report["dropped"]["over_token_limit"] == 2  # the byte tokenizer gives 30 and 24 tokens
    assert bytes_token_counter(["é"]) == [2]


def test_report_counts_every_stage_per_source_type_and_category(tmp_path):
    records = [
        prompt(0, "Write a haiku.", "a", category="generation"),
        prompt(1, "Write a haiku.", "b", category="generation"),  # duplicate
        {**prompt(2, "List three fruits.", "c", category="brainstorming", type="plain"), "source": "labeler"},
        prompt(3, "y" * 50, "d"),  # over the limit
    ]
    inp = write_prompts(tmp_path / "in.jsonl", records)
    report = prepare(PrepareConfig(inputs=(inp,), out_dir=tmp_path / "out", max_prompt_tokens=40, tokenizer="bytes"))
    assert list(report["stages"]) == ["read", "within_token_limit", "deduplicated", "capped"]
    read = report["stages"]["read"]
    assert read["prompts"] == 4 and read["by_source"] == {"api": 3, "labeler": 1}
    assert read["by_type"] == {"none": 3, "plain": 1}
    assert read["by_category"] == {"none": 1, "generation": 2, "brainstorming": 1}
    assert report["stages"]["deduplicated"]["prompts"] == 2
    assert report["dropped"] == {"over_token_limit": 1, "duplicates": 1, "over_user_cap": 0, "pii": 0}
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == report


# --- bad input ---------------------------------------------------------------------------------


def test_bad_records_are_reported_with_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(
        json.dumps(prompt(0, "fine", "a")).encode()
        + b"\n"
        + json.dumps({"id": "p1", "text": "no user", "source": "api"}).encode()
        + b"\n"
        + b'{"id": "p2", "text": "caf\xe9", "user_id": "a", "source": "api"}\n'
        + json.dumps(prompt(3, "   ", "a")).encode()
        + b"\n"
    )
    with pytest.raises(DataError) as err:
        prepare(PrepareConfig(inputs=(path,), out_dir=tmp_path / "out", tokenizer="bytes"))
    lines = str(err.value).splitlines()
    assert lines == [
        f"{path}:2: user_id: Field required",
        f"{path}:3: -: invalid UTF-8 at byte 25 of the line",
        f"{path}:4: text: must not be empty or only whitespace",
    ]
    assert not (tmp_path / "out").exists()  # nothing written

    report = prepare(PrepareConfig(inputs=(path,), out_dir=tmp_path / "out", tokenizer="bytes", skip_invalid=True))
    assert report["invalid_records"] == 3 and report["stages"]["read"]["prompts"] == 1


def test_cli_prepare_refuses_to_overwrite_its_input_and_reports_bad_lines(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "sft").mkdir(parents=True)
    inp = write_prompts(out / "sft" / "train.jsonl", [prompt(0, "hello", "a")])
    assert main(["data", "prepare", "--inputs", str(inp), "--out-dir", str(out), "--tokenizer", "bytes"]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert json.loads(inp.read_text().splitlines()[0])["text"] == "hello"

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "p1", "text": "x", "source": "api"}\n')
    assert (
        main(["data", "prepare", "--inputs", str(bad), "--out-dir", str(tmp_path / "o2"), "--tokenizer", "bytes"]) == 1
    )
    assert f"{bad}:1: user_id: Field required" in capsys.readouterr().err


def test_cli_prepare_writes_sets_and_prints_a_summary(tmp_path, capsys):
    inp = write_prompts(tmp_path / "in.jsonl", [prompt(i, f"Prompt {i}", f"u{i % 7}") for i in range(70)])
    code = main(
        [
            "data",
            "prepare",
            "--inputs",
            str(inp),
            "--out-dir",
            str(tmp_path / "out"),
            "--tokenizer",
            "bytes",
            "--max-per-user",
            "5",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "capped" in out and "dropped:" in out and "over user cap 35" in out
    assert sum(len(rows) for rows in read_outputs(tmp_path / "out").values()) == 35


def test_config_checks_fractions():
    with pytest.raises(ConfigError, match="split_fractions: must sum to 1"):
        PrepareConfig(inputs=(Path("x"),), split_fractions=(0.5, 0.2, 0.2)).validate()


def test_failed_run_leaves_previous_outputs_whole(tmp_path, monkeypatch):
    inp = write_prompts(tmp_path / "in.jsonl", [prompt(i, f"Prompt {i}", f"u{i}") for i in range(30)])
    config = PrepareConfig(inputs=(inp,), out_dir=tmp_path / "out", tokenizer="bytes")
    prepare(config)
    before = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}

    def broken(text):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("instructgpt.data.prepare.find_pii", broken)
    with pytest.raises(RuntimeError):
        prepare(PrepareConfig(inputs=(inp,), out_dir=tmp_path / "out", tokenizer="bytes", seed=5))
    after = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert after == before  # same files, same bytes, no temporary file left


def test_gzip_input_and_several_files(tmp_path):
    import gzip

    with gzip.open(tmp_path / "a.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps(prompt(0, "First prompt", "a")) + "\n")
    b = write_prompts(tmp_path / "b.jsonl", [prompt(1, "Second prompt", "b")])
    report = prepare(PrepareConfig(inputs=(tmp_path / "a.jsonl.gz", b), out_dir=tmp_path / "out", tokenizer="bytes"))
    assert report["stages"]["read"]["prompts"] == 2
    assert sum(len(rows) for rows in read_outputs(tmp_path / "out").values()) == 2
