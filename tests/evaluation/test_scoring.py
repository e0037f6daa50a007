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
