"""The record schemas: good records pass, each bad case fails at the right field."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from instructgpt.data.jsonl import read_records
from instructgpt.data.schemas import (
    KINDS,
    METADATA_FLAGS,
    USE_CASE_CATEGORIES,
    Demonstration,
    Message,
    Prompt,
    Ranking,
    detect_kind,
    prompt_text,
)

GOOD = Path(__file__).parent / "data" / "good"

PROMPT = {"id": "p1", "text": "Say hi.", "user_id": "u1", "source": "api"}
DEMONSTRATION = {"prompt": "Say hi.", "response": "Hi!", "labeler_id": "l1"}
RANKING = {"prompt": "Say hi.", "responses": ["Hi!", "Hello."], "ranks": [0, 1], "labeler_id": "l1"}
CONVERSATION = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Tell a joke."},
]


def error_fields(model, record) -> list[str]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(record)
    return [".".join(str(part) for part in e["loc"]) for e in info.value.errors()]


@pytest.mark.parametrize("kind", list(KINDS))
def test_good_examples_validate(kind):
    records = read_records(GOOD / f"{kind}.jsonl", kind)
    assert records and all(isinstance(r, KINDS[kind]) for r in records)


def test_unknown_fields_are_ignored():
    prompt = Prompt.model_validate({**PROMPT, "note": "extra"})
    assert "note" not in prompt.model_dump()


def test_optional_prompt_fields():
    prompt = Prompt.model_validate(
        {**PROMPT, "source": "labeler", "type": "few-shot", "category": "closed QA", "metadata": {"ambiguous": True}}
    )
    assert prompt.type == "few-shot" and prompt.metadata == {"ambiguous": True}
    assert Prompt.model_validate({**PROMPT, "type": None}).type is None
    assert Prompt.model_validate({**PROMPT, "category": "poetry"}).category == "poetry"
    assert "generation" in USE_CASE_CATEGORIES and len(USE_CASE_CATEGORIES) == 10


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"id": ""}, "id"),
        ({"text": ""}, "text"),
        ({"text": " \n\t"}, "text"),
        ({"text": 3}, "text"),
        ({"user_id": 17}, "user_id"),
        ({"source": "web"}, "source"),
        ({"type": "free-form"}, "type"),
        ({"category": ""}, "category"),
        ({"metadata": {"ambiguous": "no"}}, "metadata.ambiguous"),
        ({"metadata": {"ambiguous": 1}}, "metadata.ambiguous"),
    ],
)
def test_bad_prompt(change, field):
    assert error_fields(Prompt, {**PROMPT, **change}) == [field]


@pytest.mark.parametrize("missing", ["id", "text", "user_id", "source"])
def test_prompt_missing_field(missing):
    record = {k: v for k, v in PROMPT.items() if k != missing}
    assert error_fields(Prompt, record) == [missing]


def test_conversation_prompt():
    demonstration = Demonstration.model_validate({**DEMONSTRATION, "prompt": CONVERSATION})
    assert [m.role for m in demonstration.prompt] == ["user", "assistant", "user"]


@pytest.mark.parametrize(
    ("prompt", "field"),
    [
        ("", "prompt.text"),
        (7, "prompt"),
        (None, "prompt"),
        ([], "prompt.messages"),
        (CONVERSATION[:2], "prompt.messages"),  # ends with the assistant
        ([{"role": "human", "content": "Hi"}], "prompt.messages.0.role"),
        ([{"role": "user", "content": ""}], "prompt.messages.0.content"),
        ([{"role": "user"}], "prompt.messages.0.content"),
        (["Hi"], "prompt.messages.0"),
    ],
)
def test_bad_prompt_input(prompt, field):
    assert error_fields(Demonstration, {**DEMONSTRATION, "prompt": prompt}) == [field]
    assert error_fields(Ranking, {**RANKING, "prompt": prompt}) == [field]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"response": ""}, "response"),
        ({"response": ["Hi!"]}, "response"),
        ({"labeler_id": ""}, "labeler_id"),
        ({"labeler_id": 3}, "labeler_id"),
        ({"prompt_id": 3}, "prompt_id"),
        ({"source": False}, "source"),
    ],
)
def test_bad_demonstration(change, field):
    assert error_fields(Demonstration, {**DEMONSTRATION, **change}) == [field]


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        ({"responses": ["Hi!"], "ranks": [0]}, ["responses", "ranks"]),
        ({"responses": ["Hi!", "Hi!"]}, ["responses"]),
        ({"responses": ["Hi!", " "]}, ["responses.1"]),
        ({"responses": "Hi!"}, ["responses"]),
        ({"ranks": [0, 2]}, ["ranks"]),
        ({"ranks": [1, 1]}, ["ranks"]),
        ({"ranks": [0, 1, 2]}, ["ranks"]),
        ({"ranks": [0, -1]}, ["ranks.1"]),
        ({"ranks": [0, True]}, ["ranks.1"]),
        ({"ranks": [0, "1"]}, ["ranks.1"]),
        ({"likert": [0, 7]}, ["likert.0"]),
        ({"likert": [1, 8]}, ["likert.1"]),
        ({"likert": [4]}, ["likert"]),
        ({"likert": [4.0, 5]}, ["likert.0"]),
        ({"metadata": [{"toxic": True}, {}]}, ["metadata.0"]),
        ({"metadata": [{}, {"hallucination": "yes"}]}, ["metadata.1.hallucination"]),
        ({"metadata": [{}]}, ["metadata"]),
        ({"notes": 5}, ["notes"]),
        ({"labeler_id": ""}, ["labeler_id"]),
    ],
)
def test_bad_ranking(change, fields):
    assert error_fields(Ranking, {**RANKING, **change}) == fields


def test_ranking_with_every_optional_field():
    flags = {flag: False for flag in METADATA_FLAGS}
    ranking = Ranking.model_validate(
        {**RANKING, "prompt_id": "p1", "likert": [7, 2], "metadata": [flags, {}], "notes": "ok"}
    )
    assert ranking.metadata[0] == flags and len(METADATA_FLAGS) == 11


@pytest.mark.parametrize(
    ("ranks", "pairs"),
    [
        ([0, 1], [(0, 1)]),
        ([1, 0], [(1, 0)]),
        ([1, 0, 1], [(1, 0), (1, 2)]),
        ([0, 0, 1], [(0, 2), (1, 2)]),
        ([2, 0, 1, 0], [(1, 0), (1, 2), (2, 0), (3, 0), (3, 2)]),
        ([0, 1, 2, 3], [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]),
    ],
)
def test_comparisons(ranks, pairs):
    responses = [f"response {i}" for i in range(len(ranks))]
    ranking = Ranking.model_validate({**RANKING, "responses": responses, "ranks": ranks})
    assert sorted(ranking.comparisons()) == pairs


def test_comparisons_count_is_k_choose_2_without_ties():
    ranking = Ranking.model_validate(
        {**RANKING, "responses": [str(i) for i in range(9)], "ranks": list(range(9))[::-1]}
    )
    assert len(ranking.comparisons()) == 36


def test_prompt_text():
    assert prompt_text("Say hi.") == "Say hi."
    messages = [Message.model_validate(m) for m in CONVERSATION]
    assert prompt_text(messages) == ("User: Hi\n\nAssistant: Hello.\n\nUser: Tell a joke.\n\nAssistant:")
    system = [Message(role="system", content="Be brief."), Message(role="user", content="Hi")]
    assert prompt_text(system) == "System: Be brief.\n\nUser: Hi\n\nAssistant:"


@pytest.mark.parametrize(
    ("record", "kind"),
    [
        (PROMPT, "prompts"),
        (DEMONSTRATION, "demonstrations"),
        (RANKING, "rankings"),
        ({"ranks": [0, 1]}, "rankings"),
        ({"text": "Say hi."}, None),
        ({}, None),
    ],
)
def test_detect_kind(record, kind):
    assert detect_kind(record) == kind


def test_documented_examples_validate():
    """Each format's example line in docs/data-formats.md is a valid record of its kind."""
    doc = (Path(__file__).parents[1] / "docs" / "data-formats.md").read_text()
    examples = [block.split("```")[0].strip() for block in doc.split("```json\n")[1:]]
    assert len(examples) == len(KINDS)
    for (kind, model), example in zip(KINDS.items(), examples):
        record = model.model_validate_json(example)
        assert detect_kind(record.model_dump()) == kind


def test_labeler_id_is_optional_but_never_empty():
    without = {k: v for k, v in DEMONSTRATION.items() if k != "labeler_id"}
    assert Demonstration.model_validate(without).labeler_id is None
    assert Ranking.model_validate({k: v for k, v in RANKING.items() if k != "labeler_id"}).labeler_id is None
    assert error_fields(Demonstration, {**without, "labeler_id": ""}) == ["labeler_id"]
