"""Model-side primitives of the automatic evaluations: log-probabilities of continuations and
greedy completions truncated at the first newline, all on one rendering of the context.

Rendering (:func:`render_context`, :func:`render_continuation`): every task feeds a model its
contexts the same way, whether it generates (TruthfulQA answers, RealToxicityPrompts
continuations, the NLP tasks) or scores given text (TruthfulQA multiple choice, CrowS-Pairs /
Winogender sentences). ``raw``: BOS and the text as is. ``chat`` (``auto`` for a tokenizer with a
chat template): the context as one user turn and the template's assistant header; the text to
score is the assistant's reply, so its leading whitespace is dropped (a reply starts right after
the header, where a generated answer starts). An empty context (the bias tasks score whole
sentences) is an empty user turn under ``chat``. The paper's GPT-3 models had no chat template,
so ``raw`` is theirs; ``chat`` is our choice for chat-tuned models, named by ``--template``.

The default model's vocabulary has 262,144 tokens, so full-vocabulary fp32 logits for a batch
of 8 x 512 tokens would take 4 GB. :func:`continuation_logprobs` therefore runs the trunk once
per batch, keeps only the hidden states of continuation tokens, and projects them to the
vocabulary in chunks (:func:`instructgpt.losses.lm.token_logprobs`). Items are sorted by length
before batching so little padding is computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from instructgpt.evaluation.metrics import first_line
from instructgpt.losses.lm import token_logprobs


@dataclass(frozen=True)
class Scored:
    """Log-probability of one continuation given its context."""

    total: float
    """Sum of the continuation tokens' log-probabilities."""
    tokens: int
    """Number of continuation tokens."""

    @property
    def average(self) -> float:
        """Average per-token log-probability (multiple choice picks by this)."""
        return self.total / max(self.tokens, 1)


def render_context(tokenizer: Any, context: str, template: str = "auto") -> list[int]:
    """Token ids of an evaluation context, as every task renders it (see the module docstring).

    ``raw``: BOS (when the tokenizer has one) and the context's tokens, nothing appended, since
    contexts end where the answer starts (``"...\\nA:"``, ``"English:"``). ``chat``: the tokenizer's
    chat template applied to one user turn holding the context, with the generation prompt.
    """
    from instructgpt.data.render import render_prompt

    return render_prompt(tokenizer, context, template, separator="")


def render_continuation(tokenizer: Any, continuation: str, template: str = "auto") -> str:
    """The text scored after :func:`render_context`: as is under ``raw`` (it carries its own
    leading space, ``" Paris."``), without leading whitespace under ``chat`` (the reply starts
    right after the assistant header)."""
    from instructgpt.data.render import resolve_template

    return continuation.lstrip() if resolve_template(tokenizer, template) == "chat" else continuation


@torch.no_grad()
def continuation_logprobs(
    model: Any,
    tokenizer: Any,
    contexts: Sequence[str],
    continuations: Sequence[str],
    batch_size: int = 8,
    chunk_size: int = 256,
    max_tokens: int = 1024,
    template: str = "auto",
) -> list[Scored]:
    """``log p(continuation | context)`` for each pair, batched and chunked over the vocabulary.

    Context and continuation are rendered (:func:`render_context`, :func:`render_continuation`),
    tokenised separately and joined; under ``raw`` a BOS token starts the context when the
    tokenizer has one, so an empty context scores a whole sentence. Sequences longer than
    ``max_tokens`` keep their last ``max_tokens`` tokens (the context is cut from the left).

    Equivalent to, for each pair separately::

        logits = model(ids).logits[0, :-1].float().log_softmax(-1)
        logits[range(n_ctx - 1, n - 1), ids[n_ctx:]].sum()
    """
    if len(contexts) != len(continuations):
        raise ValueError(f"{len(contexts)} contexts for {len(continuations)} continuations")
    model.eval()
    device = next(model.parameters()).device
    softcap = getattr(model.config, "final_logit_softcapping", None)
    unembedding = model.get_output_embeddings().weight  # [V, H]
    items = []
    for context, continuation in zip(contexts, continuations):
        ctx = render_context(tokenizer, context, template)
        cont = tokenizer(render_continuation(tokenizer, continuation, template), add_special_tokens=False)["input_ids"]
        ids = (ctx + cont)[-max_tokens:]
        items.append((ids, min(len(cont), len(ids) - 1)))
    order = sorted(range(len(items)), key=lambda i: len(items[i][0]))
    results: list[Scored | None] = [None] * len(items)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(order), batch_size):
        batch = [items[i] for i in order[start : start + batch_size]]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)  # [B, T]
        attention = torch.zeros((len(batch), width), dtype=torch.long)  # [B, T]
        scored = torch.zeros((len(batch), width), dtype=torch.bool)  # [B, T] True = token is scored
        for row, (ids, n_cont) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention[row, : len(ids)] = 1
            scored[row, len(ids) - n_cont : len(ids)] = True
        input_ids, attention, scored = input_ids.to(device), attention.to(device), scored.to(device)
        hidden = model.base_model(
            input_ids=input_ids, attention_mask=attention, use_cache=False
        ).last_hidden_state  # [B, T, H]
        select = scored[:, 1:]  # [B, T-1]: position t predicts token t+1
        logprobs = token_logprobs(
            hidden[:, :-1][select], unembedding, input_ids[:, 1:][select], chunk_size, softcap
        )  # [N]
        per_row = select.sum(dim=1).tolist()  # [B]
        for row, part in zip(order[start : start + batch_size], logprobs.split(per_row)):
            results[row] = Scored(float(part.sum()), len(part))
    return results  # type: ignore[return-value]


def _cache_kwargs(trunk: Any, cache: Any) -> dict:
    """The KV cache argument under its name in this transformers version (``cache`` in 5.x)."""
    import inspect

    name = "cache" if "cache" in inspect.signature(trunk.forward).parameters else "past_key_values"
    return {name: cache}


@torch.no_grad()
def shared_context_logprobs(
    model: Any,
    tokenizer: Any,
    context: str,
    continuations: Sequence[str],
    chunk_size: int = 256,
    template: str = "auto",
) -> list[Scored]:
    """``log p(continuation | context)`` for several continuations of ONE context.

    The context goes through the trunk once; its KV cache is repeated for the continuations,
    which run as one right-padded batch. Same numbers as :func:`continuation_logprobs` with the
    context repeated (tested), at a fraction of the cost when the context is long (TruthfulQA's
    multiple choice: a ~200-token primer and question, ~10 short answers).
    """
    model.eval()
    device = next(model.parameters()).device
    trunk = model.base_model
    ctx = render_context(tokenizer, context, template)
    conts = [
        tokenizer(render_continuation(tokenizer, c, template), add_special_tokens=False)["input_ids"]
        for c in continuations
    ]
    if not conts:
        return []
    out = trunk(input_ids=torch.tensor([ctx], device=device), use_cache=True)
    cache = getattr(out, "cache", None) or out.past_key_values
    last = out.last_hidden_state[:, -1:]  # [1, 1, H] predicts each continuation's first token
    width = max(len(c) for c in conts)
    ids = torch.full((len(conts), width), tokenizer.pad_token_id or 0, dtype=torch.long, device=device)  # [B, W]
    mask = torch.zeros((len(conts), width), dtype=torch.long, device=device)  # [B, W] 1 = a continuation token
    for row, c in enumerate(conts):
        ids[row, : len(c)] = torch.tensor(c)
        mask[row, : len(c)] = 1
    cache.batch_repeat_interleave(len(conts))
    attention = torch.cat(
        [torch.ones((len(conts), len(ctx)), dtype=torch.long, device=device), mask], dim=1
    )  # [B, C + W]
    hidden = trunk(
        input_ids=ids, attention_mask=attention, use_cache=True, **_cache_kwargs(trunk, cache)
    ).last_hidden_state  # [B, W, H]
    predicting = torch.cat(
        [last.expand(len(conts), 1, -1), hidden[:, :-1]], dim=1
    )  # [B, W, H]: position j predicts token j
    select = mask.bool()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    logprobs = token_logprobs(
        predicting[select], model.get_output_embeddings().weight, ids[select], chunk_size, softcap
    )  # [N]
    return [Scored(float(part.sum()), len(part)) for part in logprobs.split(select.sum(dim=1).tolist())]


@torch.no_grad()
def complete(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int = 32,
    batch_size: int = 8,
    template: str = "auto",
) -> list[str]:
    """Greedy (temperature 0) completions of contexts rendered by :func:`render_context`, cut at
    the first newline.

    Under ``raw`` the context is fed as is (no separator appended), since the automatic
    evaluations' contexts already end where the answer starts ("...\\nA:", "English:"). A row stops
    at its first token that holds a newline (like the API's ``stop="\\n"`` the paper used, which
    also saves most of the decoding) or at EOS. Decoding is the rollout's
    (:func:`instructgpt.models.generate.generate_ids`: one vocabulary projection per step, no
    ``[B, V]`` scores kept), in batches of similar lengths, under the autocast in force (if any).
    """
    from instructgpt.models.generate import generate_ids
    from instructgpt.rollout.forward import active_autocast

    ids = [render_context(tokenizer, p, template) for p in prompts]
    responses = generate_ids(
        model,
        tokenizer,
        ids,
        max_new_tokens,
        0.0,
        batch_size,
        autocast=active_autocast(model),
        stop_ids=newline_ids(tokenizer),
    )
    return [first_line(tokenizer.decode(r, skip_special_tokens=True)) for r in responses]


_NEWLINE_IDS: dict[int, tuple[int, ...]] = {}


def newline_ids(tokenizer: Any) -> tuple[int, ...]:
    """Every token whose decoded text holds a newline (32 of Gemma 3's 262,144). Decoding the whole vocabulary
    takes seconds, so it is done once per vocabulary (keyed by its tokens), not once per loaded tokenizer: the
    evaluation loads one tokenizer per model, all of the same vocabulary."""
    key = hash(tuple(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))))
    if key not in _NEWLINE_IDS:
        pieces = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        _NEWLINE_IDS[key] = tuple(i for i, piece in enumerate(pieces) if "\n" in piece)
    return _NEWLINE_IDS[key]
