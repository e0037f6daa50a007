"""Byte-level tokenizers with the three common chat-template styles, built offline.

Each is :func:`instructgpt.models.tiny.tiny_tokenizer` plus the style's special tokens (one id
each, as in the real tokenizers) and a template written in the style of the real one:

- ``chatml`` (SmolLM2, Qwen): ``<|im_start|>role\\n...<|im_end|>\\n``; EOS is ``<|im_end|>``.
- ``llama3`` (Llama 3.1): ``<|start_header_id|>role<|end_header_id|>\\n\\n...<|eot_id|>``; EOS is
  ``<|eot_id|>``; ``llama3-base-eos`` keeps the base model's EOS ``<|end_of_text|>``.
- ``gemma`` (Gemma 2/3): ``<start_of_turn>user|model\\n...<end_of_turn>\\n``; EOS is ``<eos>``, not the
  end-of-turn marker.
"""

from __future__ import annotations

from typing import Any

CHATML = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
GEMMA = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<start_of_turn>{{ role }}\n{{ message['content'] | trim }}<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

STYLES: dict[str, dict[str, Any]] = {
    "chatml": {
        "template": CHATML,
        "special": ["<|im_start|>", "<|im_end|>"],
        "bos": None,
        "eos": "<|im_end|>",
        "end_of_turn": "<|im_end|>",
    },
    "llama3": {
        "template": LLAMA3,
        "special": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "bos": "<|begin_of_text|>",
        "eos": "<|eot_id|>",
        "end_of_turn": "<|eot_id|>",
    },
    "llama3-base-eos": {
        "template": LLAMA3,
        "special": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "bos": "<|begin_of_text|>",
        "eos": "<|end_of_text|>",
        "end_of_turn": "<|eot_id|>",
    },
    "gemma": {
        "template": GEMMA,
        "special": ["<start_of_turn>", "<end_of_turn>"],
        "bos": "<bos>",
        "eos": "<eos>",
        "end_of_turn": "<end_of_turn>",
    },
}


def chat_tokenizer(style: str) -> Any:
    """A byte-level tokenizer with ``style``'s special tokens, BOS/EOS and chat template."""
    from instructgpt.models.tiny import tiny_tokenizer

    spec = STYLES[style]
    tokenizer = tiny_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": spec["special"]})
    tokenizer.eos_token = spec["eos"]
    tokenizer.bos_token = spec["bos"]
    tokenizer.chat_template = spec["template"]
    return tokenizer
