"""Render (prompt, response) pairs into token ids with the loss mask built alongside.

Two renderings:

- ``raw`` (the paper's): the prompt is plain text, as sent to the API, followed by
  ``separator`` (default a blank line, a choice the paper leaves open) and then the response
  and EOS. A conversation prompt is flattened to a "User: ... / Assistant: ..." transcript.
- ``chat``: the tokenizer's chat template. The prompt is the template applied with the
  generation prompt; the response part is what the template itself writes after it for the
  assistant turn, through its end-of-turn marker (``<|im_end|>``, ``<|eot_id|>``,
  ``<end_of_turn>``), so the boundary and the end come from the template's own rendering. The
  whitespace a template writes after the marker, between turns (ChatML's and Gemma's ``\n``),
  is not a target: a reply ends at its marker. EOS is appended only when the rendered turn
  does not already end with it: not for ChatML or Llama-3 tokenizers whose EOS is the marker
  (SmolLM2, Qwen, Llama-3.1), nor for templates that write EOS themselves; but after Gemma's
  ``<end_of_turn>`` (its tokenizer's EOS is ``<eos>``), since generation here stops at the
  tokenizer's EOS and the model must learn to emit it. Never two markers.

``auto`` picks ``chat`` when the tokenizer has a chat template and ``raw`` otherwise, so the
embedded base model (no template) is trained on raw text, like the paper's GPT-3.

Prompt and response are tokenized separately: generation feeds the prompt ids and the model
produces response tokens, so training sees exactly the split generation sees. The loss mask is
True on response tokens (the targets the model must predict, EOS included). Prompts longer
than ``max_prompt_tokens`` are dropped and counted; responses longer than
``max_response_tokens`` are truncated (losing their EOS) and counted. Nothing is silent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

TEMPLATES = ("auto", "raw", "chat")


@dataclass
class Example:
    """One training sequence: ``input_ids`` and ``loss_mask`` (True = a response token)."""

    input_ids: list[int]
    loss_mask: list[bool]

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class RenderStats:
    """What happened to each record: rendered, dropped (too long), truncated."""

    counts: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        c = self.counts
        return (
            f"{c['rendered']} rendered, {c['dropped_long_prompt']} dropped (prompt over the limit), "
            f"{c['truncated_response']} responses truncated"
        )


def resolve_template(tokenizer: Any, template: str) -> str:
    """``auto`` -> ``chat`` if the tokenizer has a chat template, else ``raw``."""
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
    if template == "auto":
        return "chat" if getattr(tokenizer, "chat_template", None) else "raw"
    if template == "chat" and not getattr(tokenizer, "chat_template", None):
        raise ValueError("template 'chat' asked for, but the tokenizer has no chat template")
    return template


def as_messages(prompt: str | Sequence[Any]) -> list[dict[str, str]]:
    """A prompt as chat messages: a string becomes one user turn."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": _get(m, "role"), "content": _get(m, "content")} for m in prompt]


def as_text(prompt: str | Sequence[Any]) -> str:
    """A prompt as raw text: a conversation becomes a "User:/Assistant:" transcript."""
    from instructgpt.data.schemas import Message, prompt_text

    if isinstance(prompt, str):
        return prompt
    return prompt_text([Message.model_validate(m) for m in as_messages(prompt)])


def render_prompt(
    tokenizer: Any, prompt: str | Sequence[Any], template: str = "auto", separator: str = "\n\n"
) -> list[int]:
    """Token ids of a prompt, ready for generation or for a response to be appended."""
    if resolve_template(tokenizer, template) == "chat":
        text = tokenizer.apply_chat_template(as_messages(prompt), add_generation_prompt=True, tokenize=False)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = tokenizer(as_text(prompt) + separator, add_special_tokens=False)["input_ids"]
    return _with_bos(tokenizer, ids)


def response_ids(tokenizer: Any, prompt: str | Sequence[Any], response: str, template: str = "auto") -> list[int]:
    """Token ids of the response part, end marker (EOS, or the template's end-of-turn) included."""
    if resolve_template(tokenizer, template) == "chat":
        ids = tokenizer(chat_turn(tokenizer, prompt, response), add_special_tokens=False)["input_ids"]
        return ids if ids and ids[-1] == tokenizer.eos_token_id else ids + [tokenizer.eos_token_id]
    return tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def chat_turn(tokenizer: Any, prompt: str | Sequence[Any], response: str) -> str:
    """The assistant turn as the chat template writes it after the generation prompt, through its
    end-of-turn marker: the template's rendering of the whole conversation minus its rendering of
    the prompt, less the whitespace that follows the marker.

    With a ChatML template, prompt ``"Hi"`` and response ``"Hello"`` give ``"Hello<|im_end|>"``.
    """
    messages = as_messages(prompt)
    head = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response}], tokenize=False)
    if not full.startswith(head):
        raise ValueError("the chat template does not render the prompt as a prefix of the conversation")
    return full[len(head) :].rstrip()


def render_example(
    tokenizer: Any,
    prompt: str | Sequence[Any],
    response: str,
    template: str = "auto",
    separator: str = "\n\n",
    max_prompt_tokens: int = 1024,
    max_response_tokens: int = 1024,
    stats: RenderStats | None = None,
) -> Example | None:
    """Render one pair; ``None`` (and a count in ``stats``) when the prompt is too long."""
    stats = stats if stats is not None else RenderStats()
    prompt_ids = render_prompt(tokenizer, prompt, template, separator)
    if len(prompt_ids) > max_prompt_tokens:
        stats.counts["dropped_long_prompt"] += 1
        return None
    answer = response_ids(tokenizer, prompt, response, template)
    if len(answer) > max_response_tokens:
        stats.counts["truncated_response"] += 1
        answer = answer[:max_response_tokens]
    stats.counts["rendered"] += 1
    return Example(prompt_ids + answer, [False] * len(prompt_ids) + [True] * len(answer))


def render_all(tokenizer: Any, pairs: Iterable[tuple[Any, str]], **kwargs: Any) -> tuple[list[Example], RenderStats]:
    """Render many (prompt, response) pairs; returns the examples and the counts."""
    stats = RenderStats()
    examples = [render_example(tokenizer, p, r, stats=stats, **kwargs) for p, r in pairs]
    return [e for e in examples if e is not None], stats


def _with_bos(tokenizer: Any, ids: list[int]) -> list[int]:
    bos = tokenizer.bos_token_id
    if bos is None or (ids and ids[0] == bos):
        return ids
    return [bos] + ids


def _get(message: Any, key: str) -> str:
    return message[key] if isinstance(message, dict) else getattr(message, key)
