"""The chunked sampler: exact distribution, log-probabilities and entropy as a naive full softmax, seeded."""

import copy

import pytest
import torch

from instructgpt.models.reward import RewardModel
from instructgpt.models.tiny import tiny_model
from instructgpt.rollout import generation, sampling
from instructgpt.rollout.collect import collect_rollout
from instructgpt.rollout.decoding import have_compiler
from instructgpt.rollout.forward import response_logprobs
from instructgpt.rollout.generation import HFBackend, SamplingSettings, compiled_sampling_pays
from instructgpt.rollout.sampling import (
    VocabProjection,
    _packable,
    inverse_cdf_sample,
    next_logits,
    sample_next,
)


def _naive(hidden, weight, temperature=1.0, softcap=None):
    logits = (hidden @ weight.T).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    logp = torch.log_softmax(logits / temperature, -1)
    return logp, -(logp.exp() * logp).sum(-1)


@pytest.mark.parametrize("vocab,chunk,block", [(300, 128, 16), (256, 64, 64), (1000, 1000, 64), (97, 8192, 64)])
@pytest.mark.parametrize("softcap", [None, 5.0])
def test_logprob_and_entropy_equal_a_full_log_softmax(vocab, chunk, block, softcap):
    generator = torch.Generator().manual_seed(0)
    weight, hidden = torch.randn(vocab, 16, generator=generator), torch.randn(7, 16, generator=generator)
    step = sample_next(
        hidden, weight, torch.Generator().manual_seed(1), temperature=0.7, softcap=softcap, chunk=chunk, block=block
    )
    logp, entropy = _naive(hidden, weight, 0.7, softcap)
    torch.testing.assert_close(step.logprob, logp.gather(1, step.token[:, None])[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step.entropy, entropy, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "chunk,block,compiled",
    [
        (128, 16, False),
        (300, 300, False),
        (64, 64, False),
        pytest.param(128, 16, True, marks=pytest.mark.skipif(not have_compiler(), reason="no C++ compiler")),
    ],
)
def test_samples_follow_the_softmax(chunk, block, compiled):
    """Eager, and with the chunk reductions compiled (inductor's own exp and sums), as the fused decode path runs
    them for real-sized vocabularies."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(300, 8, generator=generator)
    hidden = torch.randn(1, 8, generator=generator).expand(40_000, 8).contiguous()
    step = sample_next(hidden, weight, torch.Generator().manual_seed(2), chunk=chunk, block=block, compiled=compiled)
    logp, entropy = _naive(hidden[:1], weight)
    torch.testing.assert_close(step.logprob, logp[0, step.token], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step.entropy, entropy.expand(len(step.token)), atol=1e-5, rtol=1e-5)
    expected = torch.softmax(hidden[:1] @ weight.T, -1)[0]
    observed = torch.bincount(step.token, minlength=300).float() / len(step.token)
    assert 0.5 * (observed - expected).abs().sum() < 0.03  # total variation; 40k draws over 300 words give ~0.015
    assert (observed[expected < 1e-9] == 0).all()  # 40k draws: a word this unlikely is drawn with probability < 4e-5


def test_failed_compile_falls_back_to_the_eager_reductions(monkeypatch):
    """Where inductor cannot build (no toolchain, an unsupported op), the reductions run eagerly, with a warning,
    and give what the eager sampler gives."""

    def broken(*args):
        raise RuntimeError("no working C++ compiler")

    monkeypatch.setattr(sampling, "_compiled_chunk_stats", lambda: broken)
    monkeypatch.setattr(sampling, "_compile_failed", [])
    weight, hidden = torch.randn(1000, 16), torch.randn(9, 16)
    with pytest.warns(RuntimeWarning, match="run eagerly"):
        compiled = sample_next(hidden, weight, torch.Generator().manual_seed(5), chunk=256, compiled=True)
    eager = sample_next(hidden, weight, torch.Generator().manual_seed(5), chunk=256)
    assert torch.equal(compiled.token, eager.token)
    assert torch.equal(compiled.logprob, eager.logprob) and torch.equal(compiled.entropy, eager.entropy)


def test_compiled_sampling_only_where_it_pays(monkeypatch):
    """The fused decode path compiles the reductions for full-size vocabularies on a CPU with a compiler (or
    CUDA), never for the tests' small ones nor a trimmed 66k-word one."""
    big, small = VocabProjection.of(torch.zeros(262144, 4)), VocabProjection.of(torch.zeros(66250, 4))
    cpu = torch.device("cpu")
    monkeypatch.setattr(generation, "have_compiler", lambda: True)
    assert compiled_sampling_pays(big, cpu) and not compiled_sampling_pays(small, cpu)
    assert not compiled_sampling_pays(big, torch.device("meta"))
    monkeypatch.setattr(generation, "have_compiler", lambda: False)
    assert not compiled_sampling_pays(big, cpu) and compiled_sampling_pays(big, torch.device("cuda"))


def test_zero_mass_words_are_never_drawn():
    mass = torch.zeros(500, 130)
    mass[:, 3] = 1e-30  # a tiny positive word after zeros, in the first block
    mass[:, 129] = 1.0  # the last word, in a partial block
    tokens = inverse_cdf_sample(mass, torch.Generator().manual_seed(0), block=64)
    assert set(tokens.tolist()) <= {3, 129}
    assert (tokens == 129).sum() > 490


@pytest.mark.skipif(not _packable(torch.zeros(1, 1, dtype=torch.bfloat16)), reason="no native bf16 oneDNN on this CPU")
def test_packed_bf16_projection_equals_the_split_one():
    """oneDNN's packed weight gives the same bf16 logits as the split chunks, so the same samples."""
    generator = torch.Generator().manual_seed(0)
    weight, hidden = (
        torch.randn(1000, 32, generator=generator).bfloat16(),
        torch.randn(9, 32, generator=generator).bfloat16(),
    )
    packed, split = VocabProjection.of(weight, chunk=256, pack=True), VocabProjection.of(weight, chunk=256, pack=False)
    assert packed.packed is not None and split.packed is None
    torch.testing.assert_close(next_logits(hidden, packed), next_logits(hidden, split), atol=0, rtol=0)
    a = sample_next(hidden, packed, torch.Generator().manual_seed(3), chunk=256)
    b = sample_next(hidden, split, torch.Generator().manual_seed(3), chunk=256)
    assert torch.equal(a.token, b.token)
    logp, entropy = _naive(hidden, weight)  # the same bf16 logits, then fp32
    torch.testing.assert_close(a.logprob, logp.gather(1, a.token[:, None])[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.entropy, entropy, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.logprob, a.logprob, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(b.entropy, a.entropy, atol=1e-6, rtol=1e-6)


@pytest.mark.skipif(not _packable(torch.zeros(1, 1)), reason="no oneDNN on this CPU")
def test_packed_fp32_projection_equals_the_split_one():
    """In fp32 the unembedding is packed for oneDNN too: the same logits as the split chunks within fp32 rounding, so
    the same samples, log-probabilities and entropies."""
    generator = torch.Generator().manual_seed(0)
    weight, hidden = torch.randn(1000, 32, generator=generator), torch.randn(9, 32, generator=generator)
    packed, split = VocabProjection.of(weight, chunk=128, pack=True), VocabProjection.of(weight, chunk=128, pack=False)
    assert packed.packed is not None and split.packed is None
    torch.testing.assert_close(next_logits(hidden, packed), hidden @ weight.T, atol=1e-5, rtol=1e-5)
    a = sample_next(hidden, packed, torch.Generator().manual_seed(3), chunk=128)
    b = sample_next(hidden, split, torch.Generator().manual_seed(3), chunk=128)
    assert torch.equal(a.token, b.token)
    torch.testing.assert_close(a.logprob, b.logprob, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.entropy, b.entropy, atol=1e-5, rtol=1e-5)


def test_sampling_is_seeded():
    weight, hidden = torch.randn(1000, 16), torch.randn(9, 16)
    first = sample_next(hidden, weight, torch.Generator().manual_seed(5), chunk=256).token
    again = sample_next(hidden, weight, torch.Generator().manual_seed(5), chunk=256).token
    other = sample_next(hidden, weight, torch.Generator().manual_seed(6), chunk=256).token
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_top_k_restricts_the_sample_but_not_the_recorded_distribution():
    weight, hidden = torch.randn(50, 8), torch.randn(200, 8)
    step = sample_next(hidden, weight, torch.Generator().manual_seed(0), top_k=3)
    logits = next_logits(hidden, weight)
    assert (logits.gather(1, step.token[:, None]) >= logits.topk(3).values[:, -1:]).all()
    logp, entropy = _naive(hidden, weight)
    torch.testing.assert_close(step.logprob, logp.gather(1, step.token[:, None])[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step.entropy, entropy, atol=1e-5, rtol=1e-5)


def test_bf16_sampling_logprobs_match_the_bf16_training_forward(tokenizer):
    """Under bf16 autocast the recorded log-probabilities equal the training forward's (same bf16
    products) within 2e-2 nats: the sampler and the trainer round the logits the same way, but
    their matmuls differ in shape and so in accumulation order."""
    policy = tiny_model(tokenizer, seed=0)
    reward_model = RewardModel.from_causal_lm(tiny_model(tokenizer, seed=1))
    backend = HFBackend(
        policy, SamplingSettings(12), tokenizer.eos_token_id, tokenizer.pad_token_id, batch_size=4, dtype=torch.bfloat16
    )
    prompts = [
        [tokenizer.bos_token_id] + tokenizer(t, add_special_tokens=False)["input_ids"]
        for t in ("Hello there", "Say something long", "x", "abc def")
    ]
    batch, _ = collect_rollout(
        policy,
        copy.deepcopy(policy),
        copy.deepcopy(reward_model),
        reward_model,
        backend,
        prompts,
        [0, 1, 2, 3],
        torch.Generator().manual_seed(0),
        tokenizer.pad_token_id,
        1.0,
        dtype=torch.bfloat16,
    )
    policy.train()
    recomputed = response_logprobs(
        policy, batch.input_ids, batch.attention_mask, batch.prompt_width, batch.response_mask, dtype=torch.bfloat16
    )
    torch.testing.assert_close(batch.logprobs, recomputed.detach(), atol=2e-2, rtol=0)
