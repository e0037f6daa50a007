"""Prompt rendering builds the ids and the loss mask together, and never drops silently."""

import doctest

import pytest
from helpers.chat_templates import STYLES, chat_tokenizer

import instructgpt.data.collate
from instructgpt.data.render import RenderStats, chat_turn, render_all, render_example, render_prompt, response_ids
from instructgpt.models.tiny import tiny_tokenizer


def test_collate_worked_example():
    result = doctest.testmod(instructgpt.data.collate)
    assert result.attempted >= 4 and result.failed == 0


def test_raw_rendering_masks_only_the_response_and_eos(tokenizer):
    example = render_example(tokenizer, "Say hi.", "hi", template="raw")
    text = tokenizer.decode(example.input_ids)
    assert text == "<bos>Say hi.\n\nhi<eos>"
    masked = [t for t, m in zip(example.input_ids, example.loss_mask) if m]
    assert tokenizer.decode(masked) == "hi<eos>"
    assert example.input_ids[: len(render_prompt(tokenizer, "Say hi.", "raw"))] == render_prompt(
        tokenizer, "Say hi.", "raw"
    )


def test_conversation_prompt_renders_as_transcript(tokenizer):
    prompt = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye?"},
    ]
    text = tokenizer.decode(render_prompt(tokenizer, prompt, "raw"))
    assert text == "<bos>User: Hi\n\nAssistant: Hello\n\nUser: Bye?\n\nAssistant:\n\n"


def test_chat_template_rendering_splits_at_the_generation_prompt():
    tokenizer = tiny_tokenizer(chat_template=True)
    example = render_example(tokenizer, "Say hi.", "hi", template="auto")
    masked = [t for t, m in zip(example.input_ids, example.loss_mask) if m]
    assert tokenizer.decode(masked) == "hi<|end|><eos>"  # the template's marker, then EOS (not the marker)
    full = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi"}], tokenize=False
    )
    assert tokenizer.decode(example.input_ids) == full.rstrip() + "<eos>"


CONVERSATION = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello"},
    {"role": "user", "content": "Tell a joke."},
]


@pytest.mark.parametrize("style", sorted(STYLES))
def test_chat_target_ends_with_one_end_of_turn_marker(style):
    """The target is the template's own assistant turn through its end-of-turn marker, once; EOS
    follows only when the tokenizer's EOS is not that marker (Gemma, a Llama-3 base EOS)."""
    tokenizer, spec = chat_tokenizer(style), STYLES[style]
    marker = tokenizer.convert_tokens_to_ids(spec["end_of_turn"])
    example = render_example(tokenizer, CONVERSATION, "Why not?", template="chat")
    masked = [t for t, m in zip(example.input_ids, example.loss_mask) if m]
    eos = [] if marker == tokenizer.eos_token_id else [tokenizer.eos_token_id]
    assert masked[-1 - len(eos) :] == [marker, *eos]
    assert masked.count(marker) == 1 and masked.count(tokenizer.eos_token_id) == 1
    assert tokenizer.decode(masked) == "Why not?" + spec["end_of_turn"] + "".join(tokenizer.convert_ids_to_tokens(eos))
    # the mask covers exactly the assistant turn: a False prefix (the prompt, as generation sees it), then True
    prompt = render_prompt(tokenizer, CONVERSATION, "chat")
    assert example.loss_mask == [False] * len(prompt) + [True] * len(masked)
    assert example.input_ids[: len(prompt)] == prompt
    # and the whole sequence is the template's own rendering, less the whitespace after the last marker
    full = tokenizer.apply_chat_template([*CONVERSATION, {"role": "assistant", "content": "Why not?"}], tokenize=False)
    assert tokenizer.decode(example.input_ids) == full.rstrip() + "".join(tokenizer.convert_ids_to_tokens(eos))


def test_chatml_target_is_not_doubled():
    """Issue 21: ChatML's EOS is ``<|im_end|>``, which the template writes followed by a newline."""
    tokenizer = chat_tokenizer("chatml")
    target = tokenizer.decode(response_ids(tokenizer, "Say hi.", "hi", "chat"))
    assert target == "hi<|im_end|>"
    assert chat_turn(tokenizer, "Say hi.", "hi") == "hi<|im_end|>"


def test_a_template_that_writes_eos_itself_gets_no_second_one():
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
        "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
    )
    ids = response_ids(tokenizer, "Say hi.", "hi", "chat")
    assert tokenizer.decode(ids) == "hi<eos>" and ids.count(tokenizer.eos_token_id) == 1


def test_long_prompts_dropped_and_long_responses_truncated_with_counts(tokenizer):
    pairs = [("x" * 50, "ok"), ("short", "y" * 40), ("short", "fine")]
    examples, stats = render_all(tokenizer, pairs, template="raw", max_prompt_tokens=20, max_response_tokens=10)
    assert len(examples) == 2
    assert stats.counts == {"rendered": 2, "dropped_long_prompt": 1, "truncated_response": 1}
    assert sum(examples[0].loss_mask) == 10 and examples[0].input_ids[-1] != tokenizer.eos_token_id
    assert "1 dropped" in stats.summary() and "1 responses truncated" in stats.summary()


def test_response_ids_end_with_eos(tokenizer):
    assert response_ids(tokenizer, "p", "abc", "raw")[-1] == tokenizer.eos_token_id
    assert isinstance(RenderStats().summary(), str)


def test_pack_spreads_examples_evenly_over_rows():
    from instructgpt.data.collate import pack
    from instructgpt.data.render import Example

    examples = [Example(list(range(1, n + 1)), [False] + [True] * (n - 1)) for n in (10, 9, 8, 7, 6, 5, 4, 3)]
    batch = pack(examples, row_tokens=20)
    assert batch["input_ids"].shape == (3, 19)  # 52 tokens in ceil(52 / 20) = 3 rows: 19, 18, 15
    assert sorted(batch["input_ids"][batch["input_ids"] > 0].tolist()) == sorted(
        t for e in examples for t in e.input_ids
    )
    assert batch["loss_mask"].sum() == sum(sum(e.loss_mask) for e in examples)
