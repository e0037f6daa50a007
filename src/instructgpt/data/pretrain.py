"""Pretraining text for the SFT mix (10% in the model that initialises PPO) and for PPO-ptx.

The default corpus is ``shared/data/pretrain/derived/ptx_documents.jsonl.gz`` (545 public-domain
and CC BY-SA documents, ``{"source", "id", "text"}`` per line); a user's own corpus is any JSONL
(optionally gzipped) with a ``text`` field, or a folder of ``.txt`` files. Documents are
tokenized, joined with EOS, and cut into sequences of ``seq_len`` tokens, each starting with BOS;
every token but the first is a target (the loss mask is True).
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

from instructgpt.data.render import Example


def read_documents(path: str | Path) -> list[str]:
    """Texts of a JSONL(.gz) file with a ``text`` field, or of the ``.txt`` files in a folder."""
    path = Path(path)
    if path.is_dir():
        return [p.read_text(encoding="utf-8") for p in sorted(path.rglob("*.txt"))]
    opener = gzip.open if path.suffix == ".gz" else open
    texts = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                texts.append(json.loads(line)["text"])
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{number}: text: not a JSON object with a 'text' field ({err})") from None
    return texts


def pretrain_examples(tokenizer: Any, texts: list[str], seq_len: int, count: int, seed: int) -> list[Example]:
    """``count`` random windows of ``seq_len`` tokens from the documents, in a seeded order.

    Documents are shuffled and tokenized only until the stream holds about twice the tokens
    needed, so a small mix does not pay for tokenizing a large corpus.
    """
    rng = random.Random(seed)
    width = seq_len - 1 if tokenizer.bos_token_id is not None else seq_len
    stream: list[int] = []
    for text in rng.sample(texts, len(texts)):
        stream += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if len(stream) >= 2 * width * max(count, 1):
            break
    if len(stream) < width:
        raise ValueError(f"pretraining corpus has {len(stream)} tokens, fewer than one sequence of {seq_len}")
    starts = [rng.randrange(0, len(stream) - width + 1) for _ in range(count)]
    head = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    return [Example(head + stream[s : s + width], [False] * len(head) + [True] * width) for s in starts]
