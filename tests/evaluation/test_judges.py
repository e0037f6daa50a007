"""Judges: blind order, identities hidden, choices mapped back; adapters and human records."""

import json

import numpy as np
import pytest

from instructgpt.data.schemas import Comparison, Ranking
from instructgpt.evaluation.judges import (
    HumanComparisonsJudge,
    LabelerJudge,
    Rating,
    RewardModelJudge,
    blind_outcomes,
    blind_ratings,
    load_callable,
    tally_comparisons,
)


class LongerWins:
    """Prefers the longer response and records what it was shown."""

    name, description = "longer", "longer wins"

    def __init__(self):
        self.seen = []

    def compare(self, prompts, responses_a, responses_b):
        self.seen += list(zip(responses_a, responses_b))
        return ["a" if len(a) > len(b) else "b" if len(b) > len(a) else "tie" for a, b in zip(responses_a, responses_b)]


def test_blind_outcomes_randomise_order_and_map_back():
    judge = LongerWins()
    prompts = [f"p{i}" for i in range(40)]
    ours = ["long answer"] * 20 + ["x"] * 10 + ["same"] * 10
    base = ["short"] * 20 + ["longer one"] * 10 + ["same"] * 10
    outcomes = blind_outcomes(judge, prompts, ours, base, np.random.default_rng(0))
    assert outcomes == ["win"] * 20 + ["loss"] * 10 + ["tie"] * 10
    firsts = [a for a, _ in judge.seen]
    assert "long answer" in firsts and "short" in firsts  # both orders were shown
    assert len(judge.seen) == 30  # identical outputs are a tie without asking


def test_win_rates_per_test_set_are_the_pooled_outcomes_split_by_set():
    from instructgpt.evaluation.metrics import win_rate
    from instructgpt.evaluation.suite import judge_win_rates

    judge = LongerWins()
    judge.can_rate = False
    prompts = [f"p{i}" for i in range(12)]
    sets = ["api"] * 8 + ["self-instruct"] * 4
    responses = {"sft": ["short"] * 12, "ppo": ["long answer"] * 6 + ["x"] * 2 + ["x"] * 2 + ["short"] * 2}
    result, records = judge_win_rates(judge, prompts, responses, "sft", np.random.default_rng(0), sets=sets)
    assert result["per_model"]["ppo"] == win_rate(["win"] * 6 + ["loss"] * 4 + ["tie"] * 2).to_dict()
    assert result["by_set"]["api"] == {
        "n_prompts": 8,
        "per_model": {"ppo": win_rate(["win"] * 6 + ["loss"] * 2).to_dict()},
    }
    assert result["by_set"]["self-instruct"]["per_model"]["ppo"] == win_rate(["loss"] * 2 + ["tie"] * 2).to_dict()
    assert [r["set"] for r in records] == sets
    single, _ = judge_win_rates(judge, prompts, responses, "sft", np.random.default_rng(0), sets=["api"] * 12)
    assert "by_set" not in single and single["per_model"] == result["per_model"]  # one set: only the pooled figure


def test_a_prompts_file_names_each_prompts_test_set(tmp_path):
    from instructgpt.data.jsonl import DataError
    from instructgpt.evaluation.suite import EvalConfig, load_win_prompts

    path = tmp_path / "prompts.jsonl"
    path.write_text('{"text": "a", "set": "api"}\n{"prompt": "b"}\n')
    config = EvalConfig(prompts_file=path, limit=10)
    assert load_win_prompts(config, tmp_path) == (["a", "b"], ["api", ""])
    path.write_text('{"text": "a", "set": "api"}\n{"text": "b", "set": 3}\n')
    with pytest.raises(DataError, match=r"prompts.jsonl:2: set: must be a string"):
        load_win_prompts(config, tmp_path)


def test_reward_model_judge_with_ties():
    judge = RewardModelJudge(lambda prompts, responses: [float(len(r)) for r in responses], tie_margin=1.0)
    assert judge.compare(["p"] * 3, ["aaaa", "a", "aa"], ["a", "aaaa", "a"]) == ["a", "b", "tie"]


class FakeLabeler:
    labeler_id = "held-out-1"

    def compare(self, prompt, a, b):
        return Comparison(
            prompt=prompt, response_a=a, response_b=b, preferred="a" if "good" in a else "b", labeler_id=self.labeler_id
        )

    def rate(self, prompt, response):
        return {
            "likert": 6 if "good" in response else 2,
            "metadata": {"hallucination": "good" not in response, "not_a_flag": True},
        }


def test_labeler_adapter_compares_and_rates():
    judge = LabelerJudge([FakeLabeler()])
    outcomes = blind_outcomes(judge, ["p1", "p2"], ["good", "bad"], ["meh", "good"], np.random.default_rng(1))
    assert outcomes == ["win", "loss"]
    ratings = judge.rate_outputs(["p1", "p2"], [["good"], ["bad"]])
    assert ratings == [[Rating(6, {"hallucination": False})], [Rating(2, {"hallucination": True})]]
    assert "held-out-1" in judge.description


class RankingLabeler:
    """Like the simulated labelers: batched compare_many, and Likert / metadata through rank."""

    def __init__(self, labeler_id):
        self.labeler_id, self.batches = labeler_id, []

    def compare_many(self, items):
        self.batches.append(len(items))
        return [
            Comparison(
                prompt=p,
                response_a=a,
                response_b=b,
                preferred="a" if len(a) >= len(b) else "b",
                labeler_id=self.labeler_id,
            )
            for p, a, b in items
        ]

    def rank(self, prompt, responses):
        order = sorted(range(len(responses)), key=lambda i: -len(responses[i]))
        ranks = [order.index(i) for i in range(len(responses))]
        return Ranking(
            prompt=prompt,
            responses=list(responses),
            ranks=ranks,
            labeler_id=self.labeler_id,
            likert=[7 - r for r in ranks],
            metadata=[{"hallucination": r > 0} for r in ranks],
        )


def test_labeler_adapter_batches_round_robin_and_rates_by_ranking():
    labelers = [RankingLabeler("h1"), RankingLabeler("h2")]
    judge = LabelerJudge(labelers)
    outcomes = blind_outcomes(judge, ["p"] * 5, ["long answer"] * 5, ["short"] * 5, np.random.default_rng(0))
    assert outcomes == ["win"] * 5 and [l.batches for l in labelers] == [[3], [2]]
    ratings = blind_ratings(
        judge, ["p1", "p2"], {"sft": ["short", "same"], "ppo": ["long answer", "same"]}, np.random.default_rng(0)
    )
    assert ratings["ppo"][0] == Rating(7, {"hallucination": False}) and ratings["sft"][0] == Rating(
        6, {"hallucination": True}
    )
    assert ratings["ppo"][1] == Rating() == ratings["sft"][1]  # identical outputs cannot be ranked: no rating


class FirstShownBest:
    """A position-biased judge that ignores the text: it prefers output "a", ranks the outputs of a
    prompt in the order shown (Likert 7, 6, ...; "hallucination" for all but the first), and records
    what it saw first."""

    name, description = "first-shown", "prefers whatever it is shown first"

    def __init__(self):
        self.first_seen = []

    def compare(self, prompts, responses_a, responses_b):
        return ["a"] * len(prompts)

    def rate_outputs(self, prompts, outputs):
        self.first_seen += [texts[0] for texts in outputs]
        return [[Rating(7 - k, {"hallucination": k > 0}) for k in range(len(texts))] for texts in outputs]


class FirstRatedBest:
    """The same bias through ``rate(prompts, responses)``: the first output of each prompt scores 7."""

    name, description = "first-rated", "rates the first output of a prompt higher"

    def compare(self, prompts, responses_a, responses_b):
        return ["a"] * len(prompts)

    def rate(self, prompts, responses):
        return [Rating(7 if i == 0 or prompts[i] != prompts[i - 1] else 3) for i in range(len(prompts))]


@pytest.mark.parametrize("judge_class", [FirstShownBest, FirstRatedBest])
def test_position_biased_judge_shows_no_order_effect_in_any_figure(judge_class):
    """Win rate, Likert and every metadata rate come out the same for every model (within sampling
    noise: a tenth of the effect the bias would have in a fixed order, and overlapping 95% intervals)."""
    from instructgpt.evaluation.suite import judge_win_rates

    judge = judge_class()
    n, names = 300, ["sft", "ppo", "ppo-ptx"]
    prompts = [f"prompt {i}" for i in range(n)]
    responses = {name: [f"{name} answer {i}" for i in range(n)] for name in names}
    result, _ = judge_win_rates(judge, prompts, responses, "sft", np.random.default_rng(0), np.random.default_rng(1))

    def same_for_all(cells: list[dict], fair: float, effect: float) -> None:
        assert all(abs(c["value"] - fair) < effect / 10 for c in cells), (cells, fair)
        assert max(c["low"] for c in cells) < min(c["high"] for c in cells), cells  # intervals overlap

    same_for_all([{"value": w["rate"], **w} for w in result["per_model"].values()], 0.5, 1.0)
    likert = [
        {"value": result["likert"][m], "low": c["ci"][0], "high": c["ci"][1]} for m, c in result["likert_ci"].items()
    ]
    fair, effect = (6.0, 2.0) if judge_class is FirstShownBest else (13 / 3, 4.0)  # mean, first - last position
    same_for_all(likert, fair, effect)
    assert all(c["n"] == n for c in result["likert_ci"].values())
    if judge_class is FirstShownBest:
        flags = [
            {"value": result["metadata"][m]["hallucination"], "low": c["ci"][0], "high": c["ci"][1]}
            for m, c in ((m, result["metadata_ci"][m]["hallucination"]) for m in names)
        ]
        same_for_all(flags, 2 / 3, 1.0)
        shown_first = [t.split(" answer")[0] for t in judge.first_seen]
        assert all(shown_first.count(name) > n / 4 for name in names)  # every model is shown first, about n/3 times
    assert result["rating_order"].startswith("random")


def test_blind_ratings_map_back_through_any_order():
    """A judge that rates by content gets the same ratings per model whatever order it sees."""

    class ByLength:
        def rate(self, prompts, responses):
            return [Rating(len(r)) for r in responses]

    responses = {"a": ["x", "xx"], "b": ["xxx", "xxxx"], "c": ["xxxxx", "x" * 6]}
    for seed in range(5):
        ratings = blind_ratings(ByLength(), ["p", "q"], responses, np.random.default_rng(seed))
        assert {n: [r.likert for r in rs] for n, rs in ratings.items()} == {"a": [1, 2], "b": [3, 4], "c": [5, 6]}


def test_human_comparisons_any_order_and_missing(tmp_path):
    path = tmp_path / "human.jsonl"
    rows = [
        {"prompt": "p1", "response_a": "B1", "response_b": "A1", "preferred": "a", "labeler_id": "h1"},
        {"prompt": "p2", "response_a": "A2", "response_b": "B2", "preferred": "tie", "labeler_id": "h2"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    judge = HumanComparisonsJudge([path])
    assert judge.compare(["p1", "p2"], ["A1", "A2"], ["B1", "B2"]) == ["b", "tie"]
    with pytest.raises(KeyError, match="1 of 1"):
        judge.compare(["p3"], ["x"], ["y"])
    assert judge.compare(["p4", "p5"], ["", "x"], ["y", " "]) == ["b", "a"]  # the app cannot show an empty output


def test_tally_comparisons_by_model_names():
    records = [
        Comparison(
            prompt="p", response_a="x", response_b="y", preferred="a", labeler_id="h", model_a="ppo", model_b="sft"
        ),
        Comparison(
            prompt="p", response_a="x", response_b="y", preferred="a", labeler_id="h", model_a="sft", model_b="ppo"
        ),
        Comparison(
            prompt="p", response_a="x", response_b="y", preferred="tie", labeler_id="h", model_a="sft", model_b="gpt"
        ),
    ]
    assert tally_comparisons(records, "sft") == {"ppo": ["win", "loss"], "gpt": ["tie"]}


def test_load_callable():
    assert load_callable("json:dumps") is json.dumps
    with pytest.raises(ValueError):
        load_callable("no_such_module_xyz:f")
    with pytest.raises(ValueError):
        load_callable("json")
