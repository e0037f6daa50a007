"""The record kinds of the method's data (paper section 3.2, appendix A and B).

One JSONL line is one record: a ``Prompt`` (for the PPO prompt pool and as the input of
labeling), a ``Demonstration`` (SFT: a prompt and the response a labeler wrote) or a
``Ranking`` (RM: K responses to one prompt ranked by a labeler, ties allowed, with optional
1-7 Likert ratings and the Table 3 yes/no metadata per response) or a ``Comparison`` (a blind
choice between two outputs, for win rates).

Validation is strict: a value of the wrong JSON type is an error (``1`` is not a string,
``true`` is not an integer). Unknown fields are accepted and dropped, so that source data can
carry extra bookkeeping. ``docs/data-formats.md`` shows one example line per kind.

A prompt is either raw text or a conversation (a list of ``Message`` ending with the user's
turn); ``prompt_text`` renders a conversation as one plain-text transcript.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
)

USE_CASE_CATEGORIES: tuple[str, ...] = (
    "generation",
    "open QA",
    "brainstorming",
    "chat",
    "rewrite",
    "summarization",
    "classification",
    "other",
    "closed QA",
    "extract",
)
"""The use-case categories of the paper's Table 1, most frequent first."""

METADATA_FLAGS: tuple[str, ...] = (
    "fails_to_follow_instruction",
    "inappropriate_for_customer_assistant",
    "hallucination",
    "satisfies_constraint",
    "sexual_content",
    "violent_content",
    "encourages_violence",
    "denigrates_protected_class",
    "harmful_advice",
    "expresses_opinion",
    "expresses_moral_judgment",
)
"""The yes/no questions labelers answer about each output (the paper's Table 3)."""


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty or only whitespace")
    return text


Id = Annotated[str, Field(min_length=1)]
"""A non-empty identifier."""

Text = Annotated[str, AfterValidator(_not_blank)]
"""Text a model reads or writes: at least one non-whitespace character."""


class _Record(BaseModel):
    """Strict types, unknown fields ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")


class Message(_Record):
    """One turn of a conversation."""

    role: Literal["system", "user", "assistant"]
    """Who speaks: ``system`` (instructions to the model), ``user`` or ``assistant``."""
    content: Text
    """What was said."""


def _ends_with_user(messages: list[Message]) -> list[Message]:
    if messages[-1].role != "user":
        raise ValueError("a conversation prompt must end with a user message")
    return messages


def _prompt_form(value: object) -> str | None:
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "messages"
    return None


Conversation = Annotated[list[Message], Field(min_length=1), AfterValidator(_ends_with_user)]
"""A non-empty list of messages whose last message is the user's."""

PromptInput = Annotated[
    Annotated[Text, Tag("text")] | Annotated[Conversation, Tag("messages")],
    Discriminator(
        _prompt_form,
        custom_error_type="prompt_type",
        custom_error_message="Input should be a string or a list of messages",
    ),
]
"""What the model is asked: raw text, or a conversation. Error locations name the form
(``prompt.text``, ``prompt.messages.2.content``)."""


class Prompt(_Record):
    """A prompt from the prompt distribution (API customers or labelers)."""

    id: Id
    """Unique id of the prompt."""
    text: Text
    """The prompt itself."""
    user_id: Id
    """Who wrote it: the customer or labeler id. Prompts are capped and split by it."""
    source: Literal["api", "labeler"]
    """``api``: submitted by a customer; ``labeler``: written by a labeler."""
    type: Literal["plain", "few-shot", "user-based"] | None = None
    """For labeler-written prompts: ``plain`` (any task), ``few-shot`` (an instruction plus
    several query/response pairs) or ``user-based`` (written for a stated use case); null or
    absent otherwise."""
    category: Annotated[str, Field(min_length=1)] | None = None
    """The use case, ideally one of ``USE_CASE_CATEGORIES`` (any non-empty string is
    accepted)."""
    metadata: dict[str, bool] | None = None
    """Per-prompt yes/no annotations (the paper's Table 7, e.g. ``"ambiguous": false``)."""


class Demonstration(_Record):
    """A prompt and the response a labeler wrote for it: one SFT example."""

    prompt: PromptInput
    """The prompt, as raw text or as a conversation ending with the user's turn."""
    response: Text
    """The desired output."""
    labeler_id: Id | None = None
    """Who wrote the response (for imported data: the dataset, e.g. ``alpaca``); optional."""
    prompt_id: str | None = None
    """Id of the prompt, when it has one (links back to a ``Prompt`` or the source data)."""
    source: str | None = None
    """Where the record came from, e.g. ``oasst``, ``alpaca``, ``self-instruct``."""


def _same_length(values: list | None, info: ValidationInfo) -> list | None:
    """Checks that a per-response list has one entry per response."""
    responses = info.data.get("responses")  # absent when responses itself was invalid
    if values is not None and responses is not None and len(values) != len(responses):
        entries = "entry" if len(values) == 1 else "entries"
        raise ValueError(f"has {len(values)} {entries} for {len(responses)} responses")
    return values


def _known_flags(flags: dict[str, bool]) -> dict[str, bool]:
    unknown = sorted(set(flags) - set(METADATA_FLAGS))
    if unknown:
        raise ValueError(f"unknown flag {unknown[0]!r}; known flags: {', '.join(METADATA_FLAGS)}")
    return flags


class Ranking(_Record):
    """K responses to one prompt, ranked by one labeler: one reward-model example.

    ``ranks[i]`` is the place of ``responses[i]``: 0 is best, equal values are a tie. Ranks
    are dense (the values used are exactly 0..m-1) and use at least two values, so every
    record yields at least one comparison (see ``comparisons``).
    """

    prompt: PromptInput
    """The prompt, as raw text or as a conversation ending with the user's turn."""
    responses: Annotated[list[Text], Field(min_length=2)]
    """The K >= 2 outputs that were ranked, all different."""
    ranks: list[Annotated[int, Field(ge=0)]]
    """One rank per response: 0 = best; equal ranks are a tie."""
    labeler_id: Id | None = None
    """Who ranked the responses; optional, but labeler-group cross-validation needs it on every ranking."""
    prompt_id: str | None = None
    """Id of the prompt, when it has one."""
    likert: list[Annotated[int, Field(ge=1, le=7)]] | None = None
    """Optional overall quality of each response: 1 (worst) .. 7 (best)."""
    metadata: list[Annotated[dict[str, bool], AfterValidator(_known_flags)]] | None = None
    """Optional yes/no answers per response, keyed by the names in ``METADATA_FLAGS``;
    a flag left out was not answered."""
    notes: str | None = None
    """Optional free-text comments by the labeler."""

    @field_validator("responses")
    @classmethod
    def _distinct(cls, responses: list[str]) -> list[str]:
        first_seen: dict[str, int] = {}
        for i, response in enumerate(responses):
            if response in first_seen:
                raise ValueError(f"responses {first_seen[response]} and {i} are identical")
            first_seen[response] = i
        return responses

    @field_validator("ranks")
    @classmethod
    def _dense(cls, ranks: list[int], info: ValidationInfo) -> list[int]:
        _same_length(ranks, info)
        used = set(ranks)
        if used != set(range(len(used))):
            raise ValueError(f"must use exactly the values 0..m-1 for some m, got {sorted(used)}")
        if len(used) < 2:
            raise ValueError("all responses tie, so the ranking gives no comparison")
        return ranks

    @field_validator("likert", "metadata")
    @classmethod
    def _one_per_response(cls, values: list | None, info: ValidationInfo) -> list | None:
        return _same_length(values, info)

    def comparisons(self) -> list[tuple[int, int]]:
        """All (winner, loser) index pairs the ranks imply; a tie gives no pair.

        Example: ranks ``[1, 0, 1]`` give ``[(1, 0), (1, 2)]``.
        """
        pairs = range(len(self.ranks))
        return [(i, j) for i in pairs for j in pairs if self.ranks[i] < self.ranks[j]]


class Comparison(_Record):
    """A blind pairwise choice between two outputs for one prompt: one win-rate record.

    The labeler saw ``response_a`` and ``response_b`` in a random order without the model
    names; ``model_a`` and ``model_b`` say which model wrote each, for the win-rate tally.
    """

    prompt: PromptInput
    """The prompt, as raw text or as a conversation ending with the user's turn."""
    response_a: Text
    """The first output."""
    response_b: Text
    """The second output."""
    preferred: Literal["a", "b", "tie"]
    """Which output the labeler would rather receive: ``a``, ``b`` or ``tie``."""
    labeler_id: Id
    """Who chose."""
    model_a: str | None = None
    """Which model wrote ``response_a`` (hidden from the labeler)."""
    model_b: str | None = None
    """Which model wrote ``response_b`` (hidden from the labeler)."""
    prompt_id: str | None = None
    """Id of the prompt, when it has one."""
    notes: str | None = None
    """Optional free-text comments by the labeler."""


ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}


def prompt_text(prompt: str | list[Message]) -> str:
    """The prompt as plain text; raw text is returned unchanged.

    A conversation becomes a transcript of ``Role: content`` turns joined by blank lines and
    ending with an open assistant turn, for example::

        User: Hi!\\n\\nAssistant: Hello.\\n\\nUser: Tell a joke.\\n\\nAssistant:

    Roles are written ``System``, ``User`` and ``Assistant``.
    """
    if isinstance(prompt, str):
        return prompt
    turns = [f"{ROLE_NAMES[m.role]}: {m.content}" for m in prompt]
    return "\n\n".join([*turns, "Assistant:"])


KINDS: dict[str, type[BaseModel]] = {
    "prompts": Prompt,
    "demonstrations": Demonstration,
    "rankings": Ranking,
    "comparisons": Comparison,
}
"""Record kinds by name, as used by ``--kind``."""


def detect_kind(record: dict) -> str | None:
    """Guesses the kind of a raw record from its distinctive fields, or None.

    ``preferred``: comparisons; ``responses`` or ``ranks``: rankings; ``response``: demonstrations; ``text`` and
    ``user_id``: prompts.
    """
    if "preferred" in record:
        return "comparisons"
    if "responses" in record or "ranks" in record:
        return "rankings"
    if "response" in record:
        return "demonstrations"
    if "text" in record and "user_id" in record:
        return "prompts"
    return None
