"""Trim a model's vocabulary to the tokens a corpus uses: a smaller unembedding, the same tokens.

Why: Gemma 3 has 262,144 tokens, and its tied embedding (168M of its 270M parameters) is the
largest product of every step that needs next-token probabilities: SFT's loss, PPO's log-probs
(policy and reference), every sampled token. On the bundled data about a quarter of the
vocabulary is ever used; the rest (other scripts, code, placeholders) costs FLOPs and memory
traffic in each of those products. The paper's GPT-3 kept its vocabulary; this is a departure,
off by default (``PipelineConfig.trim_vocabulary``), named in the README with its measured cost.

What is kept (:func:`kept_ids`):

- every token the tokenizer produces on the corpus;
- every symbol BPE builds on the way to one of those (:func:`merged_symbols`): with the merges whose
  parts and result are kept, in their order, **the corpus tokenizes exactly as before** (checked on
  the whole corpus when a model is trimmed);
- what any other text needs to encode: the 256 byte tokens of a byte-fallback BPE (Gemma's,
  Llama's), or every one-character piece of a byte-level BPE (GPT-2's), and the unknown token;
- the added tokens (special and not), except unused placeholders (``<unusedN>``).

Ids are renumbered in their original order (pad, EOS, BOS keep theirs when they come first). The
trimmed model keeps the embedding rows of the kept tokens (tied unembedding included), so its
next-token distribution is the original one conditioned on the kept tokens:
``log p_trim(t) = log p(t) - log p(kept)``; :func:`mass_outside` measures the dropped mass
``1 - p(kept)`` on texts. Text outside the corpus still encodes, in smaller pieces where a
piece it would have used was dropped.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from instructgpt.files import with_umask
from instructgpt.models.loader import ModelLoadError, cache_dir, resolve_model

TRIM_JSON = "vocabulary.json"
"""Written beside a trimmed model: the source, the corpus digest and the kept original ids."""

PLACEHOLDER = re.compile(r"<unused\d+>|<\|reserved_special_token_\d+\|>")
"""Added tokens that are never produced nor read: dropped."""

TEXT_SUFFIXES = (".jsonl", ".json", ".txt", ".csv", ".tsv", ".md")
"""Files (also gzipped) whose text joins the corpus; other files (zip archives) are skipped."""


class VocabularyError(ModelLoadError):
    """A tokenizer or model this module cannot trim; the message says why."""


def corpus_files(sources: Path | Sequence[Path]) -> list[Path]:
    """The text files of ``sources`` (files, or folders searched recursively), sorted within each folder so the corpus
    digest does not depend on the file system's order."""
    files = []
    for source in [sources] if isinstance(sources, Path) else sources:
        if source.is_dir():
            files += sorted(p for p in source.rglob("*") if p.is_file() and _is_text(p))
        elif source.is_file():
            files.append(source)
        else:
            raise FileNotFoundError(f"no such file or folder: {source}")
    return files


def _is_text(path: Path) -> bool:
    return path.name.removesuffix(".gz").endswith(TEXT_SUFFIXES)


def corpus_texts(files: Iterable[Path]) -> Iterator[str]:
    """Every string in ``files``: the string values of JSON and JSON-lines records, other files whole."""
    for path in files:
        opener = gzip.open if path.suffix == ".gz" else open
        name = path.name.removesuffix(".gz")
        with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
            if name.endswith(".jsonl"):
                for line in handle:
                    if line.strip():
                        yield from _strings(json.loads(line))
            elif name.endswith(".json"):
                yield from _strings(json.load(handle))
            else:
                yield handle.read()


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def corpus_digest(files: Iterable[Path]) -> str:
    """A digest of the files' contents, in order (the same text in another folder trims to the same model)."""
    digest = hashlib.sha256()
    for path in files:
        content = path.read_bytes()
        digest.update(f"{len(content)}:".encode() + content)
    return digest.hexdigest()


def encode(tokenizer_json: dict, texts: list[str]) -> list[list[int]]:
    """The ids of every text under the tokenizer ``tokenizer_json`` describes, without special tokens."""
    from tokenizers import Tokenizer

    encodings = Tokenizer.from_str(json.dumps(tokenizer_json)).encode_batch(texts, add_special_tokens=False)
    return [e.ids for e in encodings]


def kept_ids(tokenizer_json: dict, encoded: list[list[int]]) -> list[int]:
    """The original ids to keep (sorted) for texts whose ids under ``tokenizer_json`` are ``encoded``
    (:func:`encode`; the module docstring says which)."""
    model = tokenizer_json["model"]
    if model.get("type") != "BPE":
        raise VocabularyError(f"only BPE tokenizers can be trimmed; this one is {model.get('type')!r}")
    vocab: dict[str, int] = model["vocab"]
    used = {i for ids in encoded for i in ids}
    piece = {i: p for p, i in vocab.items()}
    ranks = {tuple(_pair(m)): rank for rank, m in enumerate(model["merges"])}
    kept = set(used)
    for i in used:
        if i in piece:  # (an added token outside the model's vocabulary is never built from merges)
            kept.update(vocab[s] for s in merged_symbols(piece[i], ranks) if s in vocab)
    if model.get("byte_fallback"):
        kept.update(vocab[b] for b in (f"<0x{n:02X}>" for n in range(256)) if b in vocab)
    else:
        kept.update(i for p, i in vocab.items() if len(p) == 1)
    if model.get("unk_token") in vocab:
        kept.add(vocab[model["unk_token"]])
    kept.update(t["id"] for t in tokenizer_json.get("added_tokens", []) if not PLACEHOLDER.fullmatch(t["content"]))
    return sorted(kept)


def merged_symbols(text: str, ranks: dict[tuple[str, str], int]) -> set[str]:
    """Every symbol BPE holds while it encodes ``text`` alone: its characters and each merge's result.

    Within a word, the merges that build one of its final tokens are those BPE applies to that token's
    text alone (lowest rank first, leftmost on ties): a merge across the token's edge never wins, or the
    token would not be final. So the symbols of each used token's own encoding are all the corpus needs.
    """
    symbols = list(text)
    seen = set(symbols)
    while len(symbols) > 1:
        best = min(
            ((ranks[pair], n) for n, pair in enumerate(zip(symbols, symbols[1:])) if pair in ranks), default=None
        )
        if best is None:
            break
        n = best[1]
        symbols[n : n + 2] = [symbols[n] + symbols[n + 1]]
        seen.add(symbols[n])
    return seen


def _pair(merge: list[str] | str) -> list[str]:
    return merge if isinstance(merge, list) else merge.split(" ", 1)


def trimmed_tokenizer_json(tokenizer_json: dict, kept: list[int]) -> dict:
    """``tokenizer_json`` with only the ``kept`` ids (renumbered in order) and the merges among them."""
    new_id = {old: new for new, old in enumerate(kept)}
    out = copy.deepcopy(tokenizer_json)
    model = out["model"]
    vocab = {p: new_id[i] for p, i in model["vocab"].items() if i in new_id}
    model["vocab"] = vocab
    model["merges"] = [m for m in model["merges"] if _merge_kept(m, vocab)]
    out["added_tokens"] = [t | {"id": new_id[t["id"]]} for t in out.get("added_tokens", []) if t["id"] in new_id]
    _remap_ids(out.get("post_processor"), new_id)
    return out


def _merge_kept(merge: list[str] | str, vocab: dict[str, int]) -> bool:
    left, right = _pair(merge)
    return left in vocab and right in vocab and left + right in vocab


def _remap_ids(node: Any, new_id: dict[int, int]) -> None:
    """Renumber the ``ids`` lists of a post-processor's special tokens (e.g. BOS added to every sequence)."""
    if isinstance(node, dict):
        if isinstance(node.get("ids"), list):
            node["ids"] = [new_id[i] for i in node["ids"]]
        for value in node.values():
            _remap_ids(value, new_id)
    elif isinstance(node, list):
        for value in node:
            _remap_ids(value, new_id)


def check_same_tokens(before: list[list[int]], trimmed_json: dict, kept: list[int], texts: list[str]) -> None:
    """Raise unless every text encodes with the trimmed tokenizer to its ids ``before`` (trimmed ids mapped back)."""
    after = encode(trimmed_json, texts)
    differ = [n for n, (a, b) in enumerate(zip(before, after)) if a != [kept[i] for i in b]]
    if differ:
        raise VocabularyError(
            f"{len(differ)} of {len(texts)} corpus texts tokenize differently after trimming "
            f"(first: text {differ[0]}, {texts[differ[0]][:80]!r}); the tokenizer's merges are not plain BPE"
        )


def trim_model(source: Path, target: Path, texts: list[str], digest: str) -> Path:
    """Write the ``source`` model folder with its vocabulary trimmed to ``texts`` into ``target`` (atomically)."""
    tokenizer_json = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    before = encode(tokenizer_json, texts)  # once: what the kept tokens come from, and what trimming must reproduce
    kept = kept_ids(tokenizer_json, before)
    trimmed = trimmed_tokenizer_json(tokenizer_json, kept)
    check_same_tokens(before, trimmed, kept, texts)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    with_umask(staging, folder=True)
    try:
        for path in source.iterdir():
            if (
                path.is_file()
                and path.suffix not in (".safetensors", ".bin")
                and path.name != "model.safetensors.index.json"
            ):
                shutil.copy2(path, staging / path.name)
        (staging / "tokenizer.json").write_text(json.dumps(trimmed, ensure_ascii=False), encoding="utf-8")
        vocab_size = _trim_weights(source, staging, kept)
        _trim_configs(staging, kept, vocab_size)
        record = {"source": str(source), "corpus_sha256": digest, "corpus_texts": len(texts), "kept_ids": kept}
        (staging / TRIM_JSON).write_text(json.dumps(record), encoding="utf-8")
        os.replace(staging, target)  # atomic: a crash never leaves a half-written model
    except OSError:
        if not (target / TRIM_JSON).is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _trim_weights(source: Path, target: Path, kept: list[int]) -> int:
    """Keep the ``kept`` rows of the token embedding (and of an untied unembedding); returns the old vocabulary size."""
    import torch
    from safetensors.torch import load_file, save_file

    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    vocab_size = config.get("vocab_size") or config.get("text_config", {}).get("vocab_size")
    files = sorted(source.glob("*.safetensors"))
    if not files:
        raise VocabularyError(f"{source} has no .safetensors weights to trim")
    rows = torch.tensor(kept)
    trimmed_any = False
    for path in files:
        tensors = load_file(path)
        for name, tensor in tensors.items():
            if tensor.ndim >= 1 and tensor.shape[0] == vocab_size:
                if not name.endswith(("embed_tokens.weight", "lm_head.weight", "wte.weight", "embed_out.weight")):
                    raise VocabularyError(f"{path.name}: {name} has a vocabulary-sized first dimension; not trimmed")
                tensors[name] = tensor.index_select(0, rows).contiguous()
                trimmed_any = True
        save_file(tensors, target / path.name, metadata={"format": "pt"})
    index = source / "model.safetensors.index.json"
    if index.is_file():
        shutil.copy2(index, target / index.name)
    if not trimmed_any:
        raise VocabularyError(f"{source}: no embedding with {vocab_size} rows found")
    return vocab_size


def _trim_configs(folder: Path, kept: list[int], old_size: int) -> None:
    new_id = {old: new for new, old in enumerate(kept)}
    for name in ("config.json", "generation_config.json"):
        path = folder / name
        if not path.is_file():
            continue
        config = json.loads(path.read_text(encoding="utf-8"))
        for scope in (config, config.get("text_config")):
            if not isinstance(scope, dict):
                continue
            if scope.get("vocab_size") == old_size:
                scope["vocab_size"] = len(kept)
            for key in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"):
                value = scope.get(key)
                if isinstance(value, int):
                    scope[key] = new_id[value]
                elif isinstance(value, list):
                    scope[key] = [new_id[v] for v in value]
        path.write_text(json.dumps(config, indent=2), encoding="utf-8")


def trimmed_model(model: str, data: Path | Sequence[Path]) -> Path:
    """The folder of ``model`` (anything ``load_model`` accepts) trimmed to the text of ``data`` (files, or folders
    searched for JSON, JSON-lines and text files, gzipped or not); built once and cached beside the converted models
    (``loader.cache_dir()``), keyed by the source and the corpus digest."""
    source = Path(resolve_model(model))
    if not (source / "tokenizer.json").is_file():
        raise VocabularyError(f"{model}: no local folder with a tokenizer.json to trim (Hub ids: download first)")
    if (source / TRIM_JSON).is_file():
        return source  # trimmed already
    files = corpus_files(data)
    digest = corpus_digest(files)
    source_key = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:8]
    target = cache_dir() / "models" / f"{source.name}-vocab-{source_key}{digest[:12]}"
    if (target / TRIM_JSON).is_file():
        return target
    return trim_model(source, target, list(corpus_texts(files)), digest)


def mass_outside(model: Any, input_ids: Any, kept: list[int]) -> Any:
    """``1 - p(kept)`` at every position of ``input_ids`` [B, T] under the untrimmed ``model``: [B, T]."""
    import torch

    with torch.no_grad():
        logprobs = model(input_ids=input_ids).logits.float().log_softmax(-1)  # [B, T, V]
        return 1 - logprobs[..., torch.tensor(kept)].logsumexp(-1).exp()
