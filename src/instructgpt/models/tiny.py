"""Tiny random models and a byte-level tokenizer, built from a config, for tests and demos.

Nothing is downloaded: the tokenizer maps every byte to one token (plus special tokens) and the
model is a randomly initialised Gemma 3 text model a few hundred kilobytes in size.
"""

from __future__ import annotations

from typing import Any

SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def tiny_tokenizer(chat_template: bool = False) -> Any:
    """A byte-level tokenizer: 4 special tokens then the 256 bytes (vocabulary 260)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_chars = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for char in sorted(byte_chars):
        vocab[char] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_model(tokenizer: Any, seed: int = 0, hidden_size: int = 32, layers: int = 2) -> Any:
    """A random Gemma 3 text model sized for unit tests (vocabulary from ``tokenizer``)."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=512,
        sliding_window=64,
        layer_types=["sliding_attention", "full_attention"] * (layers // 2) + ["full_attention"] * (layers % 2),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return Gemma3ForCausalLM(config).eval()


def save_tiny(folder: str, seed: int = 0, chat_template: bool = False) -> str:
    """Write a tiny model + tokenizer to ``folder`` (a loadable Hugging Face folder)."""
    tokenizer = tiny_tokenizer(chat_template=chat_template)
    model = tiny_model(tokenizer, seed=seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


GEMMA_3_270M_SHAPE = dict(
    hidden_size=640,
    intermediate_size=2048,
    num_hidden_layers=18,
    num_attention_heads=4,
    num_key_value_heads=1,
    head_dim=256,
    query_pre_attn_scalar=256,
    sliding_window=512,
    max_position_embeddings=32768,
    vocab_size=262144,
    layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 3,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)
"""Gemma 3 270M's shapes (the embedded base model's config.json), for machines without its weights."""


def random_gemma_270m(tokenizer: Any, seed: int = 0) -> Any:
    """A randomly initialised model of Gemma 3 270M's shapes (262,144-word vocabulary, 18 layers).

    Same FLOPs and memory as the embedded base model, no weights needed: for speed checks where the
    GGUF cannot travel (a GPU machine with no network). ``tokenizer``'s special ids are used, so
    the byte-level :func:`tiny_tokenizer` renders prompts for it.
    """
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        **GEMMA_3_270M_SHAPE,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    return Gemma3ForCausalLM(config).eval()


def tiny_bpe_tokenizer(texts: list[str], vocab_size: int = 400) -> Any:
    """A Gemma-style BPE trained on ``texts``: spaces as '▁', merges, the 256 byte tokens as fallback for the rest.

    Unlike :func:`tiny_tokenizer` it has merges, so a trimmed vocabulary (``models/vocabulary.py``) has something to
    drop; its special tokens come first, as Gemma's do.
    """
    import json

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    def gemma_like(model: Any) -> Any:
        core = Tokenizer(model)
        core.normalizer = normalizers.Replace(" ", "▁")
        core.pre_tokenizer = pre_tokenizers.Split("▁", "merged_with_next")
        core.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
        return core

    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    trained = gemma_like(models.BPE(unk_token="<unk>"))
    trained.train_from_iterator(texts, trainer)
    state = json.loads(trained.to_str())["model"]
    vocab = dict(state["vocab"])
    for n in range(256):
        vocab.setdefault(f"<0x{n:02X}>", len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in state["merges"]]
    core = gemma_like(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )
