"""Rollout: sampling log-probabilities equal a forward pass, EOS and padding, the typed batch."""

import copy

import pytest
import torch

from instructgpt.models.reward import RewardModel
from instructgpt.models.tiny import tiny_model
from instructgpt.rollout.batch import RolloutBatch
from instructgpt.rollout.collect import assemble, collect_rollout
from instructgpt.rollout.forward import response_entropy, response_logprobs
from instructgpt.rollout.generation import HFBackend, SamplingSettings
from instructgpt.rollout.sampling import filter_logits


def _prompts(tokenizer):
    texts = ["Hello there", "Say something long and winding", "x"]
    return [[tokenizer.bos_token_id] + tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def _rollout(tokenizer, max_new_tokens=12, seed=0, temperature=1.0, recompute=False, decode="auto", end_id=None):
    policy = tiny_model(tokenizer, seed=0)
    reward_model = RewardModel.from_causal_lm(tiny_model(tokenizer, seed=1))
    value_model = copy.deepcopy(reward_model)
    backend = HFBackend(
        policy,
        SamplingSettings(max_new_tokens, temperature),
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
        batch_size=2,
        decode=decode,
    )
    prompts = _prompts(tokenizer)
    batch, _ = collect_rollout(
        policy,
        copy.deepcopy(policy),
        value_model,
        reward_model,
        backend,
        prompts,
        [0, 1, 2],
        torch.Generator().manual_seed(seed),
        tokenizer.pad_token_id,
        temperature,
        recompute_logprobs=recompute,
        end_id=end_id,
    )
    return batch, policy, reward_model, prompts


def test_sampling_logprobs_and_entropy_equal_a_full_forward(tokenizer):
    batch, policy, _, _ = _rollout(tokenizer, temperature=0.7)
    args = (batch.input_ids, batch.attention_mask, batch.prompt_width, batch.response_mask)
    torch.testing.assert_close(batch.logprobs, response_logprobs(policy, *args, temperature=0.7), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(batch.entropy, response_entropy(policy, *args, temperature=0.7), atol=1e-4, rtol=1e-4)
    # same policy as reference: the KL is zero to rounding
    torch.testing.assert_close(batch.ref_logprobs, batch.logprobs, atol=1e-4, rtol=1e-4)
    recomputed, _, _, _ = _rollout(tokenizer, temperature=0.7, recompute=True)
    torch.testing.assert_close(recomputed.logprobs, batch.logprobs, atol=1e-4, rtol=1e-4)


def test_static_cache_decoding_equals_eager_and_a_full_forward(tokenizer):
    """The static KV cache (fixed-length cache and mask, uncompiled step) samples the same tokens as
    the eager DynamicCache loop and records the training forward's log-probabilities."""
    batch, policy, _, _ = _rollout(tokenizer, max_new_tokens=20, temperature=0.7, decode="static")
    eager, _, _, _ = _rollout(tokenizer, max_new_tokens=20, temperature=0.7, decode="eager")
    assert torch.equal(batch.input_ids, eager.input_ids)
    args = (batch.input_ids, batch.attention_mask, batch.prompt_width, batch.response_mask)
    torch.testing.assert_close(batch.logprobs, response_logprobs(policy, *args, temperature=0.7), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(batch.entropy, response_entropy(policy, *args, temperature=0.7), atol=1e-4, rtol=1e-4)


def test_one_query_attention_equals_sdpa():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from instructgpt.rollout.decoding import one_query_attention

    generator = torch.Generator().manual_seed(0)
    module = torch.nn.Module().eval()
    module.num_key_value_groups, module.is_causal = 4, True
    query, key, value = (
        torch.randn(shape, generator=generator) for shape in ((3, 8, 1, 16), (3, 2, 10, 16), (3, 2, 10, 16))
    )
    mask = torch.rand(3, 1, 1, 10, generator=generator) > 0.3
    mask[:, :, :, -1] = True  # the current token always sees itself
    for m in (mask, None):
        ours, _ = one_query_attention(module, query, key, value, m, scaling=0.3)
        reference, _ = sdpa_attention_forward(module, query, key, value, m, scaling=0.3)
        torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_compiled_decoding_records_the_training_forward(tokenizer):
    """The compiled static-cache step (inductor, ~20-40 s compile on 2 CPU cores, once per process)."""
    from instructgpt.rollout.decoding import decode_path

    if decode_path("compiled", tiny_model(tokenizer), torch.device("cpu"), 64) != "compiled":
        pytest.skip("no C++ compiler for inductor")
    batch, policy, _, _ = _rollout(tokenizer, max_new_tokens=20, temperature=0.7, decode="compiled")
    args = (batch.input_ids, batch.attention_mask, batch.prompt_width, batch.response_mask)
    torch.testing.assert_close(batch.logprobs, response_logprobs(policy, *args, temperature=0.7), atol=1e-4, rtol=1e-4)
    again, _, _, _ = _rollout(
        tokenizer, max_new_tokens=20, temperature=0.7, decode="compiled"
    )  # a new model of the same architecture
    assert torch.equal(again.input_ids, batch.input_ids)


def test_batch_layout_eos_and_padding(tokenizer):
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    batch, _, reward_model, prompts = _rollout(tokenizer, max_new_tokens=40)
    P = batch.prompt_width
    assert P == max(len(p) for p in prompts)
    for row, prompt in enumerate(prompts):
        n = int(batch.response_mask[row].sum())
        assert batch.response_mask[row, :n].all() and not batch.response_mask[row, n:].any()  # right-padded
        assert batch.input_ids[row, P - len(prompt) : P].tolist() == prompt  # left-padded prompt
        assert batch.attention_mask[row].sum() == len(prompt) + n
        response = batch.response_ids[row, :n].tolist()
        assert (response[-1] == eos) == bool(batch.ended_with_eos[row])
        assert eos not in response[:-1]  # sampling stops at the first EOS
        assert (batch.response_ids[row, n:] == pad).all()
        for name in ("logprobs", "ref_logprobs", "values", "entropy"):
            assert (getattr(batch, name)[row, n:] == 0).all(), name
        # the RM scores exactly prompt + response, with nothing padded around it
        alone = torch.tensor([prompt + response])
        score = reward_model(alone, torch.ones_like(alone))
        torch.testing.assert_close(batch.scores[row : row + 1], score, atol=1e-5, rtol=1e-5)
    assert (batch.logprobs[batch.response_mask] < 0).all()


def test_a_cut_off_episode_is_scored_with_eos_appended_as_the_rm_was_trained(tokenizer):
    """end_id: the RM reads an episode without EOS as prompt + response + EOS (every ranked response's form in
    RM training); an episode that ended is scored as it is; the episode's own tokens do not change."""
    eos = tokenizer.eos_token_id
    as_is, _, reward_model, prompts = _rollout(tokenizer, max_new_tokens=6, seed=3)
    marked, _, _, _ = _rollout(tokenizer, max_new_tokens=6, seed=3, end_id=eos)
    assert torch.equal(marked.input_ids, as_is.input_ids) and torch.equal(marked.ended_with_eos, as_is.ended_with_eos)
    assert (~marked.ended_with_eos).any()  # the case under test occurs
    for row, prompt in enumerate(prompts):
        response = marked.response_ids[row, : int(marked.response_mask[row].sum())].tolist()
        scored = torch.tensor([prompt + response + ([] if marked.ended_with_eos[row] else [eos])])
        expected = reward_model(scored, torch.ones_like(scored))
        torch.testing.assert_close(marked.scores[row : row + 1], expected, atol=1e-5, rtol=1e-5)
        if marked.ended_with_eos[row]:
            assert marked.scores[row] == as_is.scores[row]
        else:
            assert marked.scores[row] != as_is.scores[row]


def test_length_limit_without_eos(tokenizer):
    batch, _, _, _ = _rollout(tokenizer, max_new_tokens=3)
    assert batch.response_mask.shape[1] == 3
    for row in range(batch.size):
        if not batch.ended_with_eos[row]:
            assert batch.response_mask[row].all()


def test_a_stop_token_ends_a_row_like_eos_but_is_not_eos(tokenizer):
    """stop_ids: a row ends at its first stop token (kept, like EOS), the other rows are unchanged up to their own
    first stop, and ended_with_eos stays False for a row that stopped on one."""
    policy, prompts = tiny_model(tokenizer, seed=0), _prompts(tokenizer)
    settings = SamplingSettings(12, temperature=0.0)

    def greedy(stop_ids=()):
        backend = HFBackend(policy, settings, tokenizer.eos_token_id, tokenizer.pad_token_id, 2, stop_ids=stop_ids)
        return backend.generate(prompts, torch.Generator())

    free = greedy()
    stop = int(free.response_ids[0, 2])  # a token row 0 produces: the case under test occurs
    stopped = greedy((stop,))
    for row in range(len(prompts)):
        tokens = free.response_ids[row][free.response_mask[row]].tolist()
        cut = tokens[: tokens.index(stop) + 1] if stop in tokens else tokens
        assert stopped.response_ids[row][stopped.response_mask[row]].tolist() == cut
        assert bool(stopped.ended_with_eos[row]) == (cut[-1] == tokenizer.eos_token_id)
    assert not stopped.ended_with_eos[0] and stopped.response_mask[0].sum() <= 3


def test_sampling_is_reproducible_with_the_same_generator(tokenizer):
    a, _, _, _ = _rollout(tokenizer, seed=5)
    b, _, _, _ = _rollout(tokenizer, seed=5)
    c, _, _, _ = _rollout(tokenizer, seed=6)
    assert torch.equal(a.input_ids, b.input_ids)
    assert not torch.equal(a.input_ids, c.input_ids) if a.input_ids.shape == c.input_ids.shape else True


def test_select_trims_padding_columns(tokenizer):
    batch, policy, _, _ = _rollout(tokenizer, max_new_tokens=20)
    shortest = int(torch.argmin(batch.attention_mask.sum(-1)))
    part = batch.select(torch.tensor([shortest]))
    assert part.attention_mask.all()  # a single row has no padding left
    assert part.input_ids[0].tolist() == batch.input_ids[shortest][batch.attention_mask[shortest].bool()].tolist()
    args = (part.input_ids, part.attention_mask, part.prompt_width, part.response_mask)
    n = int(part.response_mask.sum())
    torch.testing.assert_close(
        response_logprobs(policy, *args)[0, :n], batch.logprobs[shortest, :n], atol=1e-4, rtol=1e-4
    )
    with pytest.raises(TypeError):
        RolloutBatch(input_ids=batch.input_ids)  # every field is required


def test_assemble():
    ids, mask = assemble(
        [[1, 5, 6], [1]],
        torch.tensor([[7, 2, 0], [8, 9, 9]]),
        torch.tensor([[True, True, False], [True, True, True]]),
        pad_id=0,
    )
    assert ids.tolist() == [[1, 5, 6, 7, 2, 0], [0, 0, 1, 8, 9, 9]]
    assert mask.tolist() == [[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]]


def test_filter_logits():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True]]
    probs = torch.softmax(logits, -1)  # 0.64, 0.24, 0.09, 0.03
    assert probs[0, 0] < 0.7
    assert torch.isinf(filter_logits(logits, top_p=0.7)).tolist() == [[False, False, True, True]]
    assert not torch.isinf(filter_logits(logits)).any()


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_fused_decoding_records_the_training_forward(tokenizer, dtype):
    """The written-out Gemma 3 step (merged projections, static cache, attention over every slot):
    its log-probabilities and entropies are those of a training forward of the sampled tokens (fp32,
    and under bf16 autocast, where both sides round to bf16 in different places)."""
    from instructgpt.rollout.decoding import decode_path

    policy = tiny_model(tokenizer, layers=3)  # sliding, full, full: both rotary bases
    assert decode_path("auto", policy, torch.device("cpu"), 64) == "fused"
    backend = HFBackend(
        policy, SamplingSettings(20, 0.7), tokenizer.eos_token_id, tokenizer.pad_token_id, batch_size=2, dtype=dtype
    )
    prompts = _prompts(tokenizer)
    out = backend.generate(prompts, torch.Generator().manual_seed(0))
    input_ids, attention_mask = assemble(prompts, out.response_ids, out.response_mask, tokenizer.pad_token_id)
    width = max(len(p) for p in prompts)
    args = (input_ids, attention_mask, width, out.response_mask)
    tolerance = 1e-4 if dtype is None else 1e-2  # bf16: 3.3e-3 measured (the eager loop: 3.8e-3)
    forward = response_logprobs(policy, *args, temperature=0.7, dtype=dtype)
    torch.testing.assert_close(out.logprobs, forward, atol=tolerance, rtol=tolerance)
    entropy = response_entropy(policy, *args, temperature=0.7, dtype=dtype)
    torch.testing.assert_close(out.entropy, entropy, atol=tolerance, rtol=tolerance)


def test_fused_step_equals_the_models_forward_step_by_step(tokenizer):
    """Fed the same tokens, the fused decoder's hidden states equal transformers' cached forward
    (fp32) at every step, left padding included."""
    from instructgpt.rollout.decoding import EagerDecoder, text_config
    from instructgpt.rollout.forward import trunk
    from instructgpt.rollout.fused_decode import FusedDecoder, FusedWeights

    policy = tiny_model(tokenizer, layers=3)
    body, config = trunk(policy), text_config(policy)
    prompts = _prompts(tokenizer)
    width = max(len(p) for p in prompts)
    ids = torch.full((3, width), tokenizer.pad_token_id)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :], mask[row, width - len(p) :] = torch.tensor(p), 1
    steps = torch.randint(5, 50, (12, 3), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fused = FusedDecoder(FusedWeights.of(body, config, None, 3), body, mask, width + len(steps))
        eager = EagerDecoder(body, config, mask)
        torch.testing.assert_close(fused(ids), eager(ids))
        for token in steps:
            torch.testing.assert_close(fused(token[:, None]), eager(token[:, None]), atol=1e-5, rtol=1e-5)


def test_fused_decoding_is_used_only_where_it_computes_the_same(tokenizer):
    """LoRA-wrapped projections, a context past the sliding window, or a GPU (not measured there) decode as
    before."""
    from peft import LoraConfig, get_peft_model

    from instructgpt.rollout.decoding import decode_path
    from instructgpt.rollout.forward import causal_lm

    cpu = torch.device("cpu")
    policy = tiny_model(tokenizer, layers=2)  # sliding window 64
    assert decode_path("auto", policy, cpu, 64) == "fused"
    assert decode_path("auto", policy, cpu, 65) == "eager"
    assert decode_path("fused", policy, cpu, 65) == "eager"
    assert decode_path("eager", policy, cpu, 64) == "eager"
    assert decode_path("auto", policy, torch.device("cuda"), 64) == "eager"  # measured on CPUs only
    lora = get_peft_model(tiny_model(tokenizer), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert decode_path("auto", causal_lm(lora), cpu, 64) == "eager"
    with pytest.raises(ValueError, match="decode must be"):
        decode_path("fast", policy, cpu, 64)


def test_fused_prompt_pass_runs_once_per_distinct_prompt(tokenizer):
    """K samples of a prompt in one batch share one prompt pass (the trunk sees the real tokens of 2 prompts, not
    the padded 5), and each row samples what it would alone: the same tokens as a batch of distinct prompts with the
    same uniforms."""
    policy = tiny_model(tokenizer, layers=3)
    prompts = _prompts(tokenizer)
    repeated = [prompts[0], prompts[1], prompts[0], prompts[1], prompts[0]]
    seen = []
    handle = policy.model.embed_tokens.register_forward_pre_hook(lambda _, args: seen.append(args[0].shape))
    uniforms = torch.rand(5, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    backend = HFBackend(policy, SamplingSettings(12), tokenizer.eos_token_id, tokenizer.pad_token_id, batch_size=5)
    out = backend.generate(repeated, uniforms)
    handle.remove()
    assert len(prompts[0]) != len(prompts[1])  # so the prompt pass below is unpadded
    assert seen[0] == (len(prompts[0]) + len(prompts[1]),)  # the prompt pass: the real tokens only, once each
    assert seen[1] == (5,)  # the first decode step: one token per row
    for row in range(5):
        alone = backend.generate([repeated[row]], uniforms[row : row + 1])
        width = int(alone.response_mask.sum())
        assert torch.equal(out.response_ids[row, :width], alone.response_ids[0, :width])
        torch.testing.assert_close(out.logprobs[row, :width], alone.logprobs[0, :width], atol=1e-5, rtol=1e-5)
