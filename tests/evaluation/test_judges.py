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
    ratings = judge.rate_models(["p1", "p2"], {"m": ["good", "bad"]})
    assert ratings == {"m": [Rating(6, {"hallucination": False}), Rating(2, {"hallucination": True})]}
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
    ratings = judge.rate_models(["p1", "p2"], {"sft": ["short", "same"], "ppo": ["long answer", "same"]})
    assert ratings["ppo"][0] == Rating(7, {"hallucination": False}) and ratings["sft"][0] == Rating(
        6, {"hallucination": True}
    )
    assert ratings["ppo"][1] == Rating() == ratings["sft"][1]  # identical outputs cannot be ranked: no rating


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
