"""RM data: importers of the bundled rankings, validation of bad rankings, rendering and packing."""

import json
from pathlib import Path

import pytest
import torch

from instructgpt.data.importers import (
    DEFAULT_PATHS,
    find_data_root,
    hh_transcript,
    import_rankings_hh,
    import_rankings_oasst,
    import_rankings_pairs,
)
from instructgpt.data.jsonl import DataError, read_records
from instructgpt.models.reward import RewardModel
from instructgpt.models.tiny import tiny_model, tiny_tokenizer
from instructgpt.training.rm_data import flatten, pack_sequences, pad_sequences, render_groups, score_sequences


@pytest.fixture(scope="module")
def data_root() -> Path:
    try:
        return find_data_root(Path(__file__).parent)
    except FileNotFoundError as e:
        pytest.skip(f"bundled data not found: {e}")


def test_oasst_kwise_rankings(data_root):
    rankings = import_rankings_oasst(data_root / DEFAULT_PATHS["oasst-rankings"])
    sizes = [len(r.responses) for r in rankings]
    assert len(rankings) == 212 and min(sizes) == 2 and max(sizes) == 9
    multi_turn = [r for r in rankings if len(r.prompt) > 1]
    assert len(multi_turn) == 113 and all(r.prompt[-1].role == "user" for r in rankings)


def test_hh_rlhf_pairs(data_root, caplog):
    rankings = import_rankings_hh(data_root / DEFAULT_PATHS["hh-rlhf"])
    assert 2290 <= len(rankings) <= 2307  # 2,312 pairs; 5 differ before the last turn, a few are unusable
    first = rankings[0]
    assert first.ranks == [0, 1] and first.prompt[-1].role == "user" and first.labeler_id == "hh-rlhf"
    assert "\n\nHuman:" not in first.responses[0] and "\n\nAssistant:" not in first.responses[1]


def test_hh_transcript_turns():
    turns = hh_transcript("\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Bye\n\nAssistant: See you.")
    assert [(m.role, m.content) for m in turns] == [
        ("user", "Hi"),
        ("assistant", "Hello!"),
        ("user", "Bye"),
        ("assistant", "See you."),
    ]


def test_chosen_rejected_format(tmp_path):
    lines = [
        {"prompt": "Say hi.", "chosen": "hi!", "rejected": "no."},
        {
            "chosen": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
            "rejected": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}],
        },
        {
            "prompt": [{"role": "user", "content": "Name a colour."}],
            "chosen": [{"role": "assistant", "content": "Blue."}],
            "rejected": [{"role": "assistant", "content": "Dog."}],
        },
        {"prompt": "Same?", "chosen": "yes", "rejected": "yes"},  # identical: skipped
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    rankings = import_rankings_pairs(path)
    assert [r.responses for r in rankings] == [["hi!", "no."], ["4", "5"], ["Blue.", "Dog."]]
    assert rankings[1].prompt[0].content == "2+2?" and rankings[0].ranks == [0, 1]
    path.write_text('{"prompt": "x", "chosen": 3}\n')
    with pytest.raises(DataError) as err:
        import_rankings_pairs(path)
    assert f"{path}:1:" in str(err.value)


BAD_RANKINGS = {
    "duplicate": (
        {"prompt": "p", "responses": ["a", "a"], "ranks": [0, 1], "labeler_id": "l"},
        "responses",
        "identical",
    ),
    "missing responses": ({"prompt": "p", "ranks": [0, 1], "labeler_id": "l"}, "responses", "Field required"),
    "ranks do not cover": (
        {"prompt": "p", "responses": ["a", "b", "c"], "ranks": [0, 1], "labeler_id": "l"},
        "ranks",
        "2 entries for 3",
    ),
    "ranks not dense": (
        {"prompt": "p", "responses": ["a", "b"], "ranks": [0, 2], "labeler_id": "l"},
        "ranks",
        "0..m-1",
    ),
    "k below 2": ({"prompt": "p", "responses": ["a"], "ranks": [0], "labeler_id": "l"}, "responses", "at least 2"),
    "empty text": (
        {"prompt": "p", "responses": ["a", "  "], "ranks": [0, 1], "labeler_id": "l"},
        "responses.1",
        "empty",
    ),
    "empty prompt": ({"prompt": "", "responses": ["a", "b"], "ranks": [0, 1], "labeler_id": "l"}, "prompt", "empty"),
    "all tied": ({"prompt": "p", "responses": ["a", "b"], "ranks": [0, 0], "labeler_id": "l"}, "ranks", "tie"),
}


def test_every_bad_ranking_is_reported_with_file_and_line(tmp_path):
    good = {"prompt": "p", "responses": ["a", "b"], "ranks": [1, 0], "labeler_id": "l"}
    path = tmp_path / "bad.jsonl"
    lines = [good] + [record for record, _, _ in BAD_RANKINGS.values()]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(DataError) as err:
        read_records(path, "rankings")
    problems = err.value.problems
    for line, (name, (_, field, reason)) in enumerate(BAD_RANKINGS.items(), start=2):
        mine = [str(p) for p in problems if p.line == line]
        assert any(f"{path}:{line}: {field}" in m and reason in m for m in mine), (name, mine)
    assert not [p for p in problems if p.line == 1]


def test_groups_render_each_response_after_the_same_prompt(tmp_path):
    from tests.helpers.rm_run import write_rankings

    tokenizer = tiny_tokenizer()
    rankings = read_records(write_rankings(tmp_path / "r.jsonl", 6), "rankings")
    groups, stats = render_groups(tokenizer, rankings, max_response_tokens=8)
    assert len(groups) == 6 and stats.counts["responses"] == sum(len(r.responses) for r in rankings)
    prompt_len = len(tokenizer(rankings[0].prompt + "\n\n")["input_ids"]) + 1  # + BOS
    assert all(s[:prompt_len] == groups[0].sequences[0][:prompt_len] for s in groups[0].sequences)
    assert stats.counts["truncated_response"] > 0 and max(len(s) - prompt_len for s in groups[0].sequences) <= 8
    sequences, index, ranks = flatten(groups[:2])
    assert index.tolist() == [0] * groups[0].k + [1] * groups[1].k and ranks.tolist() == list(
        groups[0].ranks + groups[1].ranks
    )


def test_packed_scores_equal_padded_scores_and_single_scores():
    tokenizer = tiny_tokenizer()
    model = RewardModel.from_causal_lm(tiny_model(tokenizer), seed=2).eval()
    sequences = [[1, 40, 41, 42, 2], [1, 50, 2], [1, 60, 61, 62, 63, 64, 65, 2], [1, 70, 2]]
    with torch.no_grad():
        alone = torch.stack([model(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))[0] for s in sequences])
        packed = score_sequences(model, sequences, tokenizer.pad_token_id, packing=True, row_tokens=9)
        padded = score_sequences(model, sequences, tokenizer.pad_token_id, packing=False)
        left = pad_sequences(sequences, tokenizer.pad_token_id, "left")
        left_scores = model(left["input_ids"], left["attention_mask"])
    assert pack_sequences(sequences, 9, 0)["input_ids"].shape[0] == 3  # 19 tokens in rows of 9: 3 rows for 4 sequences
    for scores in (packed, padded, left_scores):
        torch.testing.assert_close(scores, alone, rtol=1e-5, atol=1e-5)
