"""The batched, chunked log-prob scorer against a naive per-pair forward pass."""

import pytest
import torch

from instructgpt.evaluation.scoring import continuation_logprobs, shared_context_logprobs
from instructgpt.models.tiny import tiny_model


def naive(model, tokenizer, context, continuation):
    ctx = [tokenizer.bos_token_id] + tokenizer(context, add_special_tokens=False)["input_ids"]
    cont = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logprobs = model(torch.tensor([ctx + cont])).logits[0, :-1].float().log_softmax(-1)
    return float(logprobs[torch.arange(len(ctx) - 1, len(ctx) + len(cont) - 1), torch.tensor(cont)].sum()), len(cont)


def test_matches_naive_and_does_not_depend_on_batching(tokenizer):
    model = tiny_model(tokenizer)
    contexts = ["Hello", "", "The cat sat on", "Q: What is 2+2?\nA:"]
    continuations = [" world", "A whole sentence.", " the mat", " 4"]
    batched = continuation_logprobs(model, tokenizer, contexts, continuations, batch_size=3, chunk_size=5)
    single = continuation_logprobs(model, tokenizer, contexts, continuations, batch_size=1)
    for c, k, b, s in zip(contexts, continuations, batched, single):
        total, tokens = naive(model, tokenizer, c, k)
        assert b.total == pytest.approx(total, abs=1e-4) and b.tokens == tokens
        assert b.total == pytest.approx(s.total, abs=1e-4)
        assert b.average == pytest.approx(total / tokens, abs=1e-4)


def test_lengths_must_match(tokenizer):
    with pytest.raises(ValueError):
        continuation_logprobs(tiny_model(tokenizer), tokenizer, ["a"], [])


def test_shared_context_matches_repeated_context(tokenizer):
    """The cached context gives the same log-probs, also past the sliding window (64 here)."""
    model = tiny_model(tokenizer)
    context = "Q: What is human life expectancy in the United States?\nA: 78 years.\n\nQ: Why is the sky blue?\nA:"
    answers = [" Because of Rayleigh scattering.", " It is not.", " I have no comment."]
    shared = shared_context_logprobs(model, tokenizer, context, answers, chunk_size=7)
    repeated = continuation_logprobs(model, tokenizer, [context] * 3, answers)
    assert len(tokenizer(context)["input_ids"]) > 64
    for s, r in zip(shared, repeated):
        assert s.total == pytest.approx(r.total, abs=1e-4) and s.tokens == r.tokens
    assert shared_context_logprobs(model, tokenizer, context, []) == []


def chat_naive(model, tokenizer, context, continuation):
    """log p(reply | context) with the context as one chat user turn, computed in one forward pass."""
    head = tokenizer.apply_chat_template(
        [{"role": "user", "content": context}], add_generation_prompt=True, tokenize=False
    )
    ctx = tokenizer(head, add_special_tokens=False)["input_ids"]
    cont = tokenizer(continuation.lstrip(), add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logprobs = model(torch.tensor([ctx + cont])).logits[0, :-1].float().log_softmax(-1)
    return float(logprobs[torch.arange(len(ctx) - 1, len(ctx) + len(cont) - 1), torch.tensor(cont)].sum()), len(cont)


@pytest.mark.parametrize("style", ["chatml", "gemma"])
def test_one_rendering_for_generation_multiple_choice_and_sentences(style, monkeypatch):
    """A chat-template model sees every context as a user turn, whether it generates (complete) or
    scores text (multiple choice: shared_context_logprobs; bias sentences: continuation_logprobs
    with an empty context); the scored text is its reply, without the leading space."""
    from helpers.chat_templates import chat_tokenizer

    from instructgpt.evaluation.bias import pair_entropies
    from instructgpt.evaluation.metrics import pair_entropy_bits
    from instructgpt.evaluation.scoring import complete, render_context, render_continuation

    tokenizer = chat_tokenizer(style)
    model = tiny_model(tokenizer)
    context, answers = "Q: Why is the sky blue?\nA:", [" Rayleigh scattering.", " It is not."]
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": context}], add_generation_prompt=True, tokenize=False
    )
    assert render_context(tokenizer, context, "auto") == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert render_continuation(tokenizer, " Paris.", "auto") == "Paris."
    expected = [chat_naive(model, tokenizer, context, a) for a in answers]
    for scored in (
        continuation_logprobs(model, tokenizer, [context] * 2, answers, template="auto"),
        shared_context_logprobs(model, tokenizer, context, answers, template="chat"),
    ):
        for s, (total, tokens) in zip(scored, expected):
            assert s.total == pytest.approx(total, abs=1e-4) and s.tokens == tokens
    pair = ("The nurse said she was tired.", "The nurse said he was tired.")
    (a, _), (b, _) = (chat_naive(model, tokenizer, "", s) for s in pair)
    assert pair_entropies(model, tokenizer, [pair], template="auto")[0] == pytest.approx(
        pair_entropy_bits(a, b), abs=1e-4
    )

    fed = []

    def generate(input_ids, attention_mask, **kwargs):  # records what generation is fed
        fed.append([t for t, m in zip(input_ids[0].tolist(), attention_mask[0].tolist()) if m])
        return torch.cat([input_ids, torch.tensor([tokenizer("\n")["input_ids"][-1:]])], dim=1)

    monkeypatch.setattr(model, "generate", generate)
    complete(model, tokenizer, [context], template="auto")
    assert fed == [render_context(tokenizer, context, "chat")]


def test_raw_rendering_is_bos_and_the_text(tokenizer):
    from instructgpt.evaluation.scoring import render_context, render_continuation

    assert (
        render_context(tokenizer, "Hello", "auto")
        == [tokenizer.bos_token_id] + tokenizer("Hello", add_special_tokens=False)["input_ids"]
    )
    assert render_context(tokenizer, "", "raw") == [tokenizer.bos_token_id]
    assert render_continuation(tokenizer, " world", "auto") == " world"
