"""The one interface every labeler implements (paper section 3.4, appendix B).

A labeler turns prompts and model outputs into the records the method trains and evaluates
on (``instructgpt.data.schemas``):

- ``rank(prompt, responses) -> Ranking``: the K outputs ranked, 0 best, equal ranks a tie,
  with a 1-7 Likert rating and the Table 3 yes/no flags per output where the labeler gives
  them (``Ranking.likert`` / ``Ranking.metadata``; a flag left out was not answered);
- ``compare(prompt, response_a, response_b) -> Comparison``: a blind choice ``a``, ``b`` or
  ``tie`` ("which output would you rather receive from a customer assistant?");
- ``demonstrate(prompt) -> Demonstration | None``: the response the labeler would write, or
  None when the labeler cannot write one (the simulated labeler, a person who has not yet).

``rank_many`` and ``compare_many`` label a batch; the default loops, and labelers that batch
(the simulated one embeds every text of the batch at once) override them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from instructgpt.data.schemas import Comparison, Demonstration, Message, Ranking

PromptInput = str | list[Message]
"""A prompt as the records carry it: raw text or a conversation ending with the user."""


class LabelerError(RuntimeError):
    """A labeler could not label an item (an unreachable endpoint, an unparseable reply, a
    person who has not labelled it yet); the message says which and why."""


class Labeler(ABC):
    """A source of labels; ``labeler_id`` goes into every record it makes."""

    labeler_id: str

    @abstractmethod
    def rank(self, prompt: PromptInput, responses: Sequence[str]) -> Ranking:
        """Ranks ``responses`` (K >= 2, all different) to ``prompt``."""

    @abstractmethod
    def compare(self, prompt: PromptInput, response_a: str, response_b: str) -> Comparison:
        """Chooses between two responses, blind to which model wrote them."""

    def demonstrate(self, prompt: PromptInput) -> Demonstration | None:
        """The response this labeler would write; None when it cannot write one."""
        return None

    def rank_many(self, items: Sequence[tuple[PromptInput, Sequence[str]]]) -> list[Ranking]:
        """``rank`` for each ``(prompt, responses)`` item."""
        return [self.rank(prompt, responses) for prompt, responses in items]

    def compare_many(self, items: Sequence[tuple[PromptInput, str, str]]) -> list[Comparison]:
        """``compare`` for each ``(prompt, response_a, response_b)`` item."""
        return [self.compare(*item) for item in items]
