"""``instructgpt data prepare``: raw prompt records in, the SFT / RM / PPO prompt sets out.

The stages follow the paper's section 3.2, in this order (the paper gives the steps, not the
order):

1. **read** every input file; a bad record (missing ``user_id``, empty text, invalid UTF-8,
   broken JSON...) is reported as ``file:line: field: reason`` and stops the run, unless
   ``skip_invalid`` is set, which counts and skips it;
2. **token limit**: prompts over ``max_prompt_tokens`` (1k) are dropped. Only prompts longer
   than the limit in UTF-8 *bytes* are tokenized, in batches: every token of a byte-level or
   byte-fallback tokenizer covers at least one byte, so a prompt of at most N bytes has at
   most N tokens (special tokens are not counted);
3. **dedup**: prompts sharing their first ``prefix_chars`` normalised characters are one
   prompt; the kept one is chosen by a hash of its id (``instructgpt.data.dedup``);
4. **cap**: at most ``max_per_user`` (200) prompts per user, a seeded random subset;
5. **split** train / valid / test by user id (``instructgpt.data.splits``);
6. **PII**: prompts of the splits in ``pii_splits`` (the training split) that contain PII are
   dropped or redacted (``instructgpt.data.pii``), with counts per kind;
7. **datasets**: each remaining prompt goes to the SFT, RM or PPO prompt set by a seeded hash
   of its id, in ``dataset_fractions`` (default: the shares of the paper's Table 6 training
   sets, 12,725 / 33,207 / 31,144 prompts); the split carries over, so the three sets are
   disjoint and each is user-split.

Out come ``OUT/{sft,rm,ppo}/{train,valid,test}.jsonl`` and ``OUT/report.json`` (counts at every
stage, per source, per prompt type and per use-case category). All files are written atomically:
a failed run leaves the previous outputs whole, and an output path that is an input is refused.

Memory stays bounded by a few dozen bytes per prompt: the first pass over the input keeps
only fixed-size columns (hashes, user code, labels), and the second pass streams the kept
records straight to the output files.
"""

from __future__ import annotations

import json
import os
import tempfile
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
from pydantic import ValidationError

from instructgpt.config import check
from instructgpt.data.dedup import hash64, keep_one_per_group, prefix_key
from instructgpt.data.jsonl import MAX_LINE_BYTES, DataError, Problem, iter_objects, problems_from_error
from instructgpt.data.pii import PII_KINDS, find_pii, redact
from instructgpt.data.schemas import Prompt
from instructgpt.data.splits import SPLITS, cap_per_user, mix64, split_users
from instructgpt.files import with_umask

DATASETS: tuple[str, ...] = ("sft", "rm", "ppo")
"""The prompt sets written, in the order of ``dataset_fractions``."""

SOURCES: tuple[str, ...] = ("api", "labeler")
TYPES: tuple[str, ...] = ("none", "plain", "few-shot", "user-based")  # "none": no type given
PROMPT_FIELDS: tuple[str, ...] = tuple(Prompt.model_fields)

CountTokens = Callable[[list[str]], list[int]]
"""Token counts of a batch of texts."""


@dataclass
class PrepareConfig:
    """Turn raw prompt records into user-split SFT / RM / PPO prompt sets (dedup, per-user
    cap, PII filtering, token limit) with a stats report."""

    inputs: tuple[Path, ...] = ()
    """Prompt record files (JSONL, .gz accepted)."""
    out_dir: Path = Path("data/prepared")
    """Folder for {sft,rm,ppo}/{train,valid,test}.jsonl and report.json."""
    prefix_chars: int = 100
    """Prompts whose first this many characters agree (whitespace collapsed, case folded) are duplicates."""
    max_per_user: int = 200
    """Most prompts kept per user id."""
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """Shares of prompts for train, valid and test; users are never in two splits."""
    dataset_fractions: tuple[float, float, float] = (0.165, 0.43, 0.405)
    """Shares of prompts for the SFT, RM and PPO sets (default: the paper's Table 6 train sizes)."""
    pii: Literal["drop", "redact", "keep"] = "drop"
    """What to do with a prompt containing PII in a filtered split: drop it, redact it to [KIND], or keep it."""
    pii_splits: tuple[str, ...] = ("train",)
    """Splits filtered for PII (the paper filters the training split)."""
    max_prompt_tokens: int = 1024
    """Prompts longer than this many tokens are dropped."""
    tokenizer: str = "gemma-3-270m"
    """Tokenizer counting prompt tokens: a model name the loader accepts, or 'bytes' (UTF-8 bytes, an upper bound, no
    model)."""
    seed: int = 0
    """Seed of the per-user cap, the user split and the dataset assignment."""
    skip_invalid: bool = False
    """Skip and count invalid records instead of stopping with their file:line list."""
    max_line_bytes: int = MAX_LINE_BYTES
    """Longest input line accepted, in bytes."""

    def validate(self) -> None:
        check(len(self.inputs) > 0, "inputs", "give at least one prompt file (--inputs FILE...)")
        check(self.prefix_chars >= 1, "prefix_chars", "must be at least 1")
        check(self.max_per_user >= 1, "max_per_user", "must be at least 1")
        check(self.max_prompt_tokens >= 1, "max_prompt_tokens", "must be at least 1")
        for name in ("split_fractions", "dataset_fractions"):
            values = getattr(self, name)
            check(all(v >= 0 for v in values), name, f"must not be negative, got {values}")
            check(abs(sum(values) - 1) < 1e-6, name, f"must sum to 1, got {sum(values):g}")
        unknown = sorted(set(self.pii_splits) - set(SPLITS))
        check(not unknown, "pii_splits", f"unknown split {unknown}; splits are {', '.join(SPLITS)}")
        inputs = {p.resolve() for p in self.inputs}
        clash = [p for p in output_paths(self.out_dir) if p.resolve() in inputs]
        check(not clash, "out_dir", f"would overwrite the input {clash[0]}" if clash else "")


def output_paths(out_dir: Path) -> list[Path]:
    """Every file ``prepare`` writes under ``out_dir``."""
    return [out_dir / d / f"{s}.jsonl" for d in DATASETS for s in SPLITS] + [out_dir / "report.json"]


@dataclass
class _Columns:
    """One entry per valid record, in input order: what the stages need, a few dozen bytes each."""

    file: array = field(default_factory=lambda: array("H"))
    line: array = field(default_factory=lambda: array("I"))
    prefix: array = field(default_factory=lambda: array("Q"))  # dedup key
    id_hash: array = field(default_factory=lambda: array("Q"))
    user: array = field(default_factory=lambda: array("I"))  # code into users
    source: array = field(default_factory=lambda: array("B"))  # code into SOURCES
    type: array = field(default_factory=lambda: array("B"))  # code into TYPES
    category: array = field(default_factory=lambda: array("I"))  # code into categories
    too_long: array = field(default_factory=lambda: array("B"))
    users: dict[str, int] = field(default_factory=dict)
    categories: dict[str, int] = field(default_factory=lambda: {"none": 0})


def bytes_token_counter(texts: list[str]) -> list[int]:
    """UTF-8 byte counts: the token counts of a byte-level tokenizer without merges."""
    return [len(t.encode("utf-8")) for t in texts]


def tokenizer_counter(tokenizer: Any, batch_size: int = 256) -> CountTokens:
    """Token counts (special tokens excluded) from a Hugging Face tokenizer, in batches."""

    def count(texts: list[str]) -> list[int]:
        counts = []
        for i in range(0, len(texts), batch_size):
            ids = tokenizer(texts[i : i + batch_size], add_special_tokens=False)["input_ids"]
            counts += [len(x) for x in ids]
        return counts

    return count


def _scan(config: PrepareConfig, count_tokens: CountTokens) -> tuple[_Columns, list[Problem]]:
    """First pass: validate every record and keep its columns."""
    cols, problems = _Columns(), []
    pending: list[tuple[int, str]] = []  # (position, text) of prompts that may be over the limit

    def flush() -> None:
        counts = count_tokens([text for _, text in pending])
        for (position, _), n in zip(pending, counts):
            cols.too_long[position] = n > config.max_prompt_tokens
        pending.clear()

    for file_index, path in enumerate(config.inputs):
        for item in iter_objects(path, config.max_line_bytes):
            if isinstance(item, Problem):
                problems.append(item)
                continue
            line, value = item
            try:
                record = Prompt.model_validate(value)
            except ValidationError as e:
                problems += problems_from_error(str(path), line, e)
                continue
            position = len(cols.line)
            cols.file.append(file_index)
            cols.line.append(line)
            cols.prefix.append(prefix_key(record.text, config.prefix_chars))
            cols.id_hash.append(hash64(record.id))
            cols.user.append(cols.users.setdefault(record.user_id, len(cols.users)))
            cols.source.append(SOURCES.index(record.source))
            cols.type.append(TYPES.index(record.type or "none"))
            cols.category.append(cols.categories.setdefault(record.category or "none", len(cols.categories)))
            cols.too_long.append(0)
            if len(record.text.encode("utf-8")) > config.max_prompt_tokens:
                pending.append((position, record.text))
                if len(pending) >= 256:
                    flush()
    if pending:
        flush()
    return cols, problems


def prepare(config: PrepareConfig, count_tokens: CountTokens | None = None) -> dict:
    """Runs every stage (see the module docstring) and returns the report it also writes."""
    config.validate()
    count_tokens = count_tokens or token_counter(config.tokenizer)
    cols, problems = _scan(config, count_tokens)
    if problems and not config.skip_invalid:
        raise DataError(problems)
    n = len(cols.line)
    if n == 0:
        raise DataError(problems or [Problem(str(config.inputs[0]), 0, "-", "no valid prompt records")])
    users = np.frombuffer(cols.user, dtype=np.uint32).astype(np.int64)
    id_hash = np.frombuffer(cols.id_hash, dtype=np.uint64)
    stage = {"read": np.ones(n, dtype=bool)}
    stage["within_token_limit"] = np.frombuffer(cols.too_long, dtype=np.uint8) == 0
    alive = np.flatnonzero(stage["within_token_limit"])
    keep = keep_one_per_group(np.frombuffer(cols.prefix, dtype=np.uint64)[alive], id_hash[alive])
    stage["deduplicated"] = _mask(n, alive[keep])
    alive = np.flatnonzero(stage["deduplicated"])
    keep = cap_per_user(users[alive], mix64(id_hash[alive], config.seed), config.max_per_user)
    stage["capped"] = _mask(n, alive[keep])
    alive = np.flatnonzero(stage["capped"])

    user_split = split_users(
        mix64(np.array([hash64(u) for u in cols.users], dtype=np.uint64), config.seed ^ 0x5_1117),
        np.bincount(users[alive], minlength=len(cols.users)),
        config.split_fractions,
    )
    split = np.full(n, -1, dtype=np.int8)
    split[alive] = user_split[users[alive]]
    dataset = np.full(n, -1, dtype=np.int8)
    uniform = mix64(id_hash[alive], config.seed ^ 0xDA7A5E7) / np.float64(2**64)
    dataset[alive] = np.searchsorted(np.cumsum(config.dataset_fractions)[:-1], uniform, side="right")

    pii_counts, written, pii_dropped = _write(config, cols, split, dataset)
    report = _report(config, cols, stage, split, pii_counts, pii_dropped, written, problems)
    write_json_atomic(config.out_dir / "report.json", report)
    return report


def _mask(n: int, indices: np.ndarray) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[indices] = True
    return mask


def token_counter(name: str) -> CountTokens:
    """The token counter of ``PrepareConfig.tokenizer``: ``bytes``, or a model's tokenizer."""
    if name == "bytes":
        return bytes_token_counter
    from instructgpt.models.loader import load_tokenizer

    return tokenizer_counter(load_tokenizer(name))


class _AtomicFiles:
    """Several output files written in one pass, each replaced atomically at the end.

    ``write_jsonl_atomic`` takes one iterable per file; the second pass produces all outputs
    interleaved, so it writes to temporary files beside the targets, fsyncs them and renames
    them over the targets only when every record was written. On an error every temporary
    file is removed and the targets keep their old content.
    """

    def __init__(self, paths: Sequence[Path]):
        self.paths = list(paths)
        self.temps: list[str] = []
        self.handles: list[IO[bytes]] = []

    def __enter__(self) -> list[IO[bytes]]:
        try:
            for path in self.paths:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
                with_umask(fd)
                self.temps.append(tmp)
                self.handles.append(os.fdopen(fd, "wb"))
        except BaseException:
            self._discard()
            raise
        return self.handles

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None:
            self._discard()
            return
        try:
            for handle in self.handles:
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()
            for tmp, path in zip(self.temps, self.paths):
                os.replace(tmp, path)
        except BaseException:
            self._discard()
            raise

    def _discard(self) -> None:
        for handle in self.handles:
            handle.close()
        for tmp in self.temps:
            Path(tmp).unlink(missing_ok=True)


def write_json_atomic(path: Path, data: dict) -> None:
    """``data`` as indented UTF-8 JSON, written atomically."""
    with _AtomicFiles([path]) as (handle,):
        handle.write((json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def _write(config: PrepareConfig, cols: _Columns, split: np.ndarray, dataset: np.ndarray):
    """Second pass: stream every kept record to its output file, filtering PII.

    Returns (PII counts {"prompts": {kind: n}, "matches": {kind: n}}, written (dataset,
    split) counts, the mask of records dropped for PII)."""
    pii_splits = {SPLITS.index(s) for s in config.pii_splits}
    prompts_with = dict.fromkeys(PII_KINDS, 0)
    matches_of = dict.fromkeys(PII_KINDS, 0)
    written = np.zeros((len(DATASETS), len(SPLITS)), dtype=np.int64)
    pii_dropped = np.zeros(len(split), dtype=bool)
    files = np.frombuffer(cols.file, dtype=np.uint16)
    lines = np.frombuffer(cols.line, dtype=np.uint32)
    targets = [config.out_dir / d / f"{s}.jsonl" for d in DATASETS for s in SPLITS]
    with _AtomicFiles(targets) as handles:
        for file_index, path in enumerate(config.inputs):
            positions = np.flatnonzero(files == file_index)
            wanted = {int(lines[p]): int(p) for p in positions if split[p] >= 0}
            for item in iter_objects(path, config.max_line_bytes):
                if isinstance(item, Problem) or item[0] not in wanted:
                    continue
                position, value = wanted[item[0]], item[1]
                s, d = int(split[position]), int(dataset[position])
                record = {k: value[k] for k in PROMPT_FIELDS if value.get(k) is not None}
                if s in pii_splits and config.pii != "keep":
                    found = find_pii(record["text"])
                    for kind in {m.kind for m in found}:
                        prompts_with[kind] += 1
                    for m in found:
                        matches_of[m.kind] += 1
                    if found and config.pii == "drop":
                        pii_dropped[position] = True
                        continue
                    if found:
                        record["text"] = redact(record["text"], found)
                line = json.dumps(record, ensure_ascii=False) + "\n"
                handles[d * len(SPLITS) + s].write(line.encode("utf-8"))
                written[d, s] += 1
    return {"prompts": prompts_with, "matches": matches_of}, written, pii_dropped


def _tally(cols: _Columns, mask: np.ndarray) -> dict:
    """Counts of the records in ``mask``: total, per source, per prompt type, per category."""

    def by(codes: array, names: Sequence[str]) -> dict[str, int]:
        counts = np.bincount(np.frombuffer(codes, dtype=_DTYPES[codes.typecode])[mask], minlength=len(names))
        return {name: int(c) for name, c in zip(names, counts) if c}

    return {
        "prompts": int(mask.sum()),
        "by_source": by(cols.source, SOURCES),
        "by_type": by(cols.type, TYPES),
        "by_category": by(cols.category, list(cols.categories)),
        "users": int(len(np.unique(np.frombuffer(cols.user, dtype=np.uint32)[mask]))),
    }


_DTYPES = {"B": np.uint8, "H": np.uint16, "I": np.uint32, "Q": np.uint64}


def _report(config, cols, stage, split, pii_counts, pii_dropped, written, problems) -> dict:
    final = stage["capped"] & ~pii_dropped
    return {
        "config": json.loads(json.dumps(vars(config), default=str)),  # tuples as lists, Paths as strings
        "invalid_records": len(problems),
        "stages": {name: _tally(cols, mask) for name, mask in stage.items()},
        "dropped": {
            "over_token_limit": int((~stage["within_token_limit"]).sum()),
            "duplicates": int((stage["within_token_limit"] & ~stage["deduplicated"]).sum()),
            "over_user_cap": int((stage["deduplicated"] & ~stage["capped"]).sum()),
            "pii": int(pii_dropped.sum()),
        },
        "splits": {name: _tally(cols, stage["capped"] & (split == i)) for i, name in enumerate(SPLITS)},
        "pii": {"action": config.pii, "splits": list(config.pii_splits), **pii_counts},
        "final": {name: _tally(cols, final & (split == i)) for i, name in enumerate(SPLITS)},
        "datasets": {d: {s: int(written[i, j]) for j, s in enumerate(SPLITS)} for i, d in enumerate(DATASETS)},
    }


def summary(report: dict) -> str:
    """The report's counts as a short plain-text table."""
    stages = report["stages"]
    lines = [f"{'stage':<22}{'prompts':>10}{'users':>8}"]
    lines += [f"{name:<22}{s['prompts']:>10,}{s['users']:>8,}" for name, s in stages.items()]
    lines += [f"{'split ' + name:<22}{s['prompts']:>10,}{s['users']:>8,}" for name, s in report["splits"].items()]
    dropped = report["dropped"]
    lines.append("dropped: " + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in dropped.items()))
    pii = {k: v for k, v in report["pii"]["prompts"].items() if v}
    lines.append(
        f"PII ({report['pii']['action']}): " + (", ".join(f"{k} {v:,}" for k, v in pii.items()) or "none found")
    )
    for name, splits in report["datasets"].items():
        lines.append(f"{name}: " + ", ".join(f"{s} {n:,}" for s, n in splits.items()))
    return "\n".join(lines)
