"""Importers: the bundled public datasets as the project's own records.

The paper's demonstrations and rankings come from OpenAI's labelers and are not public. These
pure functions turn the public stand-ins under ``shared/data`` (see its README) into
``Demonstration`` records for SFT and ``Ranking`` records for the reward model (OpenAssistant
K-wise rankings, Anthropic hh-rlhf pairs, and any file in the common chosen/rejected format). Each takes a
path and returns a list; what each keeps, drops and how it maps fields is in its docstring.
Records dropped from a source are counted in an INFO log line.

The source formats are described by small lax pydantic models, so a file in the wrong format
fails with a ``DataError`` naming the line and field rather than a ``KeyError``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from instructgpt.data.jsonl import DataError, Problem, problems_from_error, read_models
from instructgpt.data.schemas import Demonstration, Message, Ranking

logger = logging.getLogger(__name__)

DATA_ROOT_ENV = "INSTRUCTGPT_DATA"
"""Environment variable naming the data root (the folder holding ``oasst/``, ``alpaca/``...)."""

DEFAULT_PATHS: dict[str, str] = {
    "oasst": "oasst/model_eval_manual_data/en_100_tree.jsonl",
    "alpaca": "alpaca/alpaca_5000.json",
    "self-instruct": "self-instruct/data/seed_tasks.jsonl",
    "oasst-rankings": "oasst/derived/en_100_kwise_rankings.jsonl",
    "hh-rlhf": "hh-rlhf/harmless-base/test.jsonl.gz",
}
"""Each importer's bundled input, relative to the data root."""

OASST_ROLES: dict[str, Literal["user", "assistant"]] = {"prompter": "user", "assistant": "assistant"}


class _Source(BaseModel):
    """Source records: lax types, unknown fields ignored."""

    model_config = ConfigDict(extra="ignore")


class OasstMessage(_Source):
    """A node of an OpenAssistant message tree (only the fields used here)."""

    message_id: str
    text: str
    role: Literal["prompter", "assistant"]
    deleted: bool = False
    synthetic: bool = False
    rank: int | None = None
    user_id: str | None = None
    replies: list[OasstMessage] = []


class OasstTree(_Source):
    """One line of ``en_100_tree.jsonl``."""

    message_tree_id: str
    prompt: OasstMessage


class OasstTurn(_Source):
    role: Literal["prompter", "assistant"]
    text: str


class OasstRankedGroup(_Source):
    """One line of ``derived/en_100_kwise_rankings.jsonl``."""

    parent_message_id: str
    conversation: list[OasstTurn]
    responses: list[str]
    ranks: list[int]


class InstructionItem(_Source):
    """An Alpaca item or a self-instruct instance (self-instruct keeps the instruction on
    the task)."""

    instruction: str = ""
    input: str = ""
    output: str


class SeedTask(_Source):
    """One line of self-instruct's ``seed_tasks.jsonl``."""

    id: str
    instruction: str
    instances: list[InstructionItem]


def find_data_root(start: str | os.PathLike | None = None) -> Path:
    """The data root: ``$INSTRUCTGPT_DATA`` if set, else the first ``shared/data`` folder
    found in ``start`` (default: the current folder) or one of its parents."""
    if env := os.environ.get(DATA_ROOT_ENV):
        if not Path(env).is_dir():
            raise FileNotFoundError(f"{DATA_ROOT_ENV}={env} is not a folder")
        return Path(env)
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in [here, *here.parents]:
        if (folder / "shared" / "data").is_dir():
            return folder / "shared" / "data"
    raise FileNotFoundError(f"no data root: set {DATA_ROOT_ENV}, or work below a folder that holds shared/data")


def instruction_prompt(instruction: str, input: str) -> str:
    """The prompt for an instruction-tuning item: the instruction, then a blank line and the
    input when there is one. No template words are added, so the model sees the same kind
    of bare prompt a user would type."""
    return f"{instruction}\n\n{input}" if input.strip() else instruction


def _log_skipped(source: str, count: int, why: str) -> None:
    if count:
        logger.info("%s: skipped %d %s", source, count, why)


def _best_reply(prompter: OasstMessage) -> OasstMessage | None:
    for reply in prompter.replies:
        if reply.rank == 0 and not reply.deleted:
            return reply
    return None


def _oasst_demonstrations(message: OasstMessage, history: list[Message]) -> Iterator[tuple[Demonstration, bool]]:
    """Depth-first over a tree, yielding each demonstration and whether its response is
    synthetic; ``history`` is the conversation before ``message``."""
    if message.deleted:
        return  # nothing below a deleted message is used
    history = [*history, Message(role=OASST_ROLES[message.role], content=message.text)]
    best = _best_reply(message) if message.role == "prompter" else None
    if best is not None:
        demonstration = Demonstration(
            prompt=history,
            response=best.text,
            labeler_id=f"oasst:{best.user_id}" if best.user_id else "oasst",
            prompt_id=message.message_id,
            source="oasst",
        )
        yield demonstration, best.synthetic
    for reply in message.replies:
        yield from _oasst_demonstrations(reply, history)


def import_oasst(path: str | os.PathLike, include_synthetic: bool = False) -> list[Demonstration]:
    """Demonstrations from OpenAssistant message trees (``en_100_tree.jsonl``).

    For every prompter message, the response is its best-ranked (``rank == 0``), non-deleted
    assistant reply; the prompt is the conversation from the root down to that prompter
    message, with prompter turns as ``user`` and assistant turns as ``assistant`` messages.
    Prompter messages with no rank-0 reply (one reply, or none, is never ranked) give
    nothing, nor does anything below a deleted message. A rank-0 reply written by a model
    (``synthetic``) is skipped unless ``include_synthetic``; the next-ranked reply is not used
    in its place, since it is not the labelers' choice. Synthetic turns inside the prompt are
    kept. ``labeler_id`` is ``oasst:<user_id>`` when the data names the reply's author (the
    bundled trees do not) and ``oasst`` otherwise; ``prompt_id`` is the prompter message id.
    """
    demonstrations, skipped = [], 0
    for tree in read_models(path, OasstTree):
        for demonstration, synthetic in _oasst_demonstrations(tree.prompt, []):
            if synthetic and not include_synthetic:
                skipped += 1
            else:
                demonstrations.append(demonstration)
    _log_skipped("oasst", skipped, "model-written (synthetic) best replies")
    return demonstrations


def _read_json_list(path: str | os.PathLike, model: type[BaseModel]) -> list:
    """A file holding one JSON list of ``model`` items; DataError when it does not."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DataError([Problem(str(path), 0, "-", f"cannot read: {e.strerror}")]) from None
    try:
        return TypeAdapter(list[model]).validate_json(data)  # type: ignore[valid-type]
    except ValidationError as e:
        raise DataError(problems_from_error(str(path), 0, e)) from None


def _instruction_demo(source: str, instruction: str, input: str, output: str, prompt_id: str) -> Demonstration:
    """An instruction-tuning item as a demonstration labelled by its dataset."""
    return Demonstration(
        prompt=instruction_prompt(instruction, input),
        response=output,
        labeler_id=source,
        prompt_id=prompt_id,
        source=source,
    )


def import_alpaca(path: str | os.PathLike) -> list[Demonstration]:
    """Demonstrations from Stanford Alpaca (a JSON list of ``{instruction, input, output}``).

    The prompt is ``instruction_prompt(instruction, input)``: the instruction, plus a blank
    line and the input when the input is not empty. The response is the output, the
    labeler_id and source ``alpaca`` and the prompt_id ``alpaca-<index in the file>``. Items
    whose instruction or output is empty are skipped and counted.
    """
    demonstrations, skipped = [], 0
    for i, item in enumerate(_read_json_list(path, InstructionItem)):
        if not item.instruction.strip() or not item.output.strip():
            skipped += 1
            continue
        demonstrations.append(_instruction_demo("alpaca", item.instruction, item.input, item.output, f"alpaca-{i}"))
    _log_skipped("alpaca", skipped, "items with an empty instruction or output")
    return demonstrations


def import_self_instruct(path: str | os.PathLike) -> list[Demonstration]:
    """Demonstrations from self-instruct's human-written seed tasks (``seed_tasks.jsonl``).

    One demonstration per instance of a task: the prompt is
    ``instruction_prompt(task instruction, instance input)``, the response the instance
    output, the labeler_id and source ``self-instruct`` and the prompt_id
    ``<task id>:<instance index>``. Instances with an empty output are skipped and counted.
    """
    demonstrations, skipped = [], 0
    for task in read_models(path, SeedTask):
        for i, instance in enumerate(task.instances):
            if not instance.output.strip():
                skipped += 1
                continue
            demonstrations.append(
                _instruction_demo("self-instruct", task.instruction, instance.input, instance.output, f"{task.id}:{i}")
            )
    _log_skipped("self-instruct", skipped, "instances with an empty output")
    return demonstrations


def import_rankings_oasst(path: str | os.PathLike) -> list[Ranking]:
    """Rankings from the derived OpenAssistant K-wise file (``en_100_kwise_rankings.jsonl``).

    The conversation becomes the prompt (prompter turns ``user``, assistant turns
    ``assistant``), the responses and ranks are kept as given (best first, ranks 0..K-1), the
    labeler_id is ``oasst`` and the prompt_id is the prompter message id. Model-written
    (synthetic) responses are kept: ranking model outputs is what the reward model learns
    from.
    """
    return [
        Ranking(
            prompt=[Message(role=OASST_ROLES[t.role], content=t.text) for t in group.conversation],
            responses=group.responses,
            ranks=group.ranks,
            labeler_id="oasst",
            prompt_id=group.parent_message_id,
        )
        for group in read_models(path, OasstRankedGroup)
    ]


class ChosenRejectedText(_Source):
    """One line of Anthropic's hh-rlhf: two whole transcripts."""

    chosen: str
    rejected: str


Turns = list[Message]


class PreferencePair(_Source):
    """The common preference format: an optional prompt, a chosen and a rejected response.

    Text (``"prompt": str, "chosen": str, "rejected": str``) or conversational (lists of
    ``{role, content}`` messages; without ``prompt``, the common leading messages of chosen and
    rejected are the prompt), as TRL and Hugging Face preference datasets write it.
    """

    prompt: str | Turns | None = None
    chosen: str | Turns
    rejected: str | Turns


HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


def hh_transcript(text: str) -> list[Message]:
    """An hh-rlhf transcript (``"\\n\\nHuman: ...\\n\\nAssistant: ..."``) as messages.

    >>> [(m.role, m.content) for m in hh_transcript("\\n\\nHuman: Hi\\n\\nAssistant: Hello!")]
    [('user', 'Hi'), ('assistant', 'Hello!')]
    """
    parts = HH_TURN.split(text)  # ["", "Human", "Hi", "Assistant", "Hello!"]
    roles = {"Human": "user", "Assistant": "assistant"}
    return [
        Message.model_construct(role=roles[who], content=said.strip()) for who, said in zip(parts[1::2], parts[2::2])
    ]


def _pair_ranking(prompt: list[Message] | str, chosen: str, rejected: str, source: str, prompt_id: str) -> Ranking:
    return Ranking(prompt=prompt, responses=[chosen, rejected], ranks=[0, 1], labeler_id=source, prompt_id=prompt_id)


def _split_pair(chosen: list[Message], rejected: list[Message]) -> tuple[list[Message], str, str] | None:
    """``(prompt, chosen reply, rejected reply)`` when the two conversations differ only in their last assistant
    turn."""
    if len(chosen) < 2 or len(chosen) != len(rejected) or chosen[:-1] != rejected[:-1]:
        return None
    if chosen[-1].role != "assistant" or rejected[-1].role != "assistant" or chosen[-2].role != "user":
        return None
    return chosen[:-1], chosen[-1].content, rejected[-1].content


def _usable(prompt: Any, chosen: str, rejected: str) -> bool:
    """A pair the Ranking schema accepts: non-empty, different replies and a non-empty prompt."""
    if not chosen.strip() or not rejected.strip() or chosen == rejected:
        return False
    if isinstance(prompt, str):
        return bool(prompt.strip())
    return bool(prompt) and all(m.content.strip() for m in prompt)


def import_rankings_hh(path: str | os.PathLike) -> list[Ranking]:
    """K = 2 rankings from Anthropic hh-rlhf (``{"chosen": transcript, "rejected": transcript}``).

    The transcripts are split into turns (``Human`` -> user, ``Assistant`` -> assistant); the
    prompt is the conversation up to the last human turn, the responses are the two final
    assistant turns, chosen first (ranks ``[0, 1]``). Pairs whose dialogues differ before the
    final turn (5 in the bundled file), end with an empty or identical reply, or hold an empty
    turn, are skipped and counted. ``labeler_id`` is ``hh-rlhf`` (the data names no labeler),
    ``prompt_id`` ``hh-rlhf:<record index>``.
    """
    rankings, skipped = [], 0
    for i, pair in enumerate(read_models(path, ChosenRejectedText)):
        split = _split_pair(hh_transcript(pair.chosen), hh_transcript(pair.rejected))
        if split is None or not _usable(*split):
            skipped += 1
            continue
        prompt, chosen, rejected = split
        rankings.append(
            _pair_ranking(
                [Message(role=m.role, content=m.content) for m in prompt], chosen, rejected, "hh-rlhf", f"hh-rlhf:{i}"
            )
        )
    _log_skipped("hh-rlhf", skipped, "pairs that differ before the last turn, or with an empty or identical reply")
    return rankings


def import_rankings_pairs(path: str | os.PathLike) -> list[Ranking]:
    """K = 2 rankings from the common chosen/rejected JSONL format (:class:`PreferencePair`).

    Each pair is split by :func:`pair_parts`; unusable pairs (empty or identical replies, no shared
    prompt) are skipped and counted. ``labeler_id`` is
    ``pairs``, ``prompt_id`` ``pairs:<record index>``.
    """
    rankings, skipped = [], 0
    for i, pair in enumerate(read_models(path, PreferencePair)):
        split = pair_parts(pair)
        if split is None:
            skipped += 1
            continue
        rankings.append(_pair_ranking(*split, "pairs", f"pairs:{i}"))
    _log_skipped("pairs", skipped, "unusable pairs (empty or identical replies, or no shared prompt)")
    return rankings


def pair_parts(pair: PreferencePair) -> tuple[list[Message] | str, str, str] | None:
    """``(prompt, chosen reply, rejected reply)`` of a pair, or None when it is unusable.

    With an explicit ``prompt`` the replies are ``chosen`` and ``rejected`` (a message list reduced to its assistant
    text). Without one, the two are conversations (message lists, or hh-rlhf ``Human:``/``Assistant:`` transcripts)
    that must differ only in their last assistant turn; the shared turns are the prompt. Unusable: empty or
    identical replies, no shared prompt.
    """
    split: tuple[list[Message] | str, str, str] | None
    if pair.prompt is None:
        split = _split_pair(_as_turns(pair.chosen), _as_turns(pair.rejected))
    else:
        split = (pair.prompt, _reply_text(pair.chosen), _reply_text(pair.rejected))
    return split if split is not None and _usable(*split) else None


def _as_turns(value: str | list[Message]) -> list[Message]:
    if isinstance(value, list):
        return value
    return hh_transcript(value)  # unvalidated: _usable rejects an empty turn


def _reply_text(value: str | list[Message]) -> str:
    if isinstance(value, str):
        return value
    return "\n\n".join(m.content for m in value if m.role == "assistant")


IMPORTERS: dict[str, Callable[..., list]] = {
    "oasst": import_oasst,
    "alpaca": import_alpaca,
    "self-instruct": import_self_instruct,
    "oasst-rankings": import_rankings_oasst,
    "hh-rlhf": import_rankings_hh,
    "pairs": import_rankings_pairs,
}
"""Importers by source name, as used by ``instructgpt data import``."""
