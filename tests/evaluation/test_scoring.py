"""The batched, chunked log-prob scorer against a naive per-pair forward pass."""

import pytest
import torch

from instructgpt.evaluation.metrics import first_line
from instructgpt.evaluation.scoring import complete, continuation_logprobs, newline_ids, shared_context_logprobs
from instructgpt.models.tiny import tiny_model
from instructgpt.rollout.generation import HFBackend


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

    original = HFBackend.generate

    def generate(self, prompt_ids, random):  # records what generation is fed
        fed.extend(prompt_ids)
        return original(self, prompt_ids, random)

    monkeypatch.setattr(HFBackend, "generate", generate)
    complete(model, tokenizer, [context], max_new_tokens=2, template="auto")
    assert fed == [render_context(tokenizer, context, "chat")]


def test_raw_rendering_is_bos_and_the_text(tokenizer):
    from instructgpt.evaluation.scoring import render_context, render_continuation

    assert (
        render_context(tokenizer, "Hello", "auto")
        == [tokenizer.bos_token_id] + tokenizer("Hello", add_special_tokens=False)["input_ids"]
    )
    assert render_context(tokenizer, "", "raw") == [tokenizer.bos_token_id]
    assert render_continuation(tokenizer, " world", "auto") == " world"


def test_complete_equals_transformers_generate_stopped_at_a_newline(tokenizer):
    """The rollout backend's greedy one-line answers are transformers ``generate``'s (one prompt at a time, no
    padding, ``stop_strings=["\\n"]``), whatever the batching; a row stops at a token holding a newline."""
    model = tiny_model(tokenizer)
    newline = newline_ids(tokenizer)
    assert newline and all("\n" in tokenizer.decode([i]) for i in newline)
    contexts = ["Q: Why?\nA:", "English:", "The cat sat on the", "x", "A much longer context:", "one two three four"]
    with torch.no_grad():  # the (tied) newline row along the mean final hidden state: some answers stop early
        ids = [[tokenizer.bos_token_id] + tokenizer(c, add_special_tokens=False)["input_ids"] for c in contexts]
        mean = torch.cat([model.model(torch.tensor([i])).last_hidden_state[0] for i in ids]).mean(0)
        model.get_output_embeddings().weight[list(newline)] = 0.3 * mean / mean.norm() ** 2
    raw = []
    for context in contexts:
        ids = torch.tensor([[tokenizer.bos_token_id] + tokenizer(context, add_special_tokens=False)["input_ids"]])
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=10,
            do_sample=False,
            stop_strings=["\n"],
            tokenizer=tokenizer,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        raw.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    expected = [first_line(text) for text in raw]
    assert 0 < sum("\n" in text for text in raw) < len(raw)  # some answers stop at a newline, some run to the limit
    for batch_size in (1, 2, 5):
        assert (
            complete(model, tokenizer, contexts, max_new_tokens=10, batch_size=batch_size, template="raw") == expected
        )
