"""Near-duplicate prompts: prompts that share a long common prefix are one prompt.

The paper deduplicates "heuristically by checking for prompts that share a long common
prefix" (section 3.2) without giving the length. Here a prompt's *prefix key* is a 64-bit
hash of its first ``prefix_chars`` characters after whitespace runs are collapsed to one space
and case is folded; prompts with equal keys form a duplicate group. A prompt shorter than
``prefix_chars`` keys on its whole (normalised) text, so it only groups with its exact
duplicates: "Tell me a joke" and "Tell me a joke about cats" stay apart unless the prefix is
at most 14 characters.

Which prompt of a group is kept: the one whose ``order`` value is smallest (``prepare`` uses a
hash of the prompt id), so the choice never depends on file order: shuffling or re-splitting
the input keeps the same prompt. Grouping sorts the keys once: O(n log n) time, O(n) memory
of 16 bytes per prompt.

A 64-bit key collides with probability about n^2 / 2^65 (3e-8 for a million prompts).
"""

from __future__ import annotations

import hashlib

import numpy as np


def normalise(text: str) -> str:
    """Whitespace runs collapsed to one space, ends stripped, case folded."""
    return " ".join(text.split()).casefold()


def hash64(text: str) -> int:
    """A stable 64-bit hash of a string (BLAKE2b), the same in every process and run."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def prefix_key(text: str, prefix_chars: int) -> int:
    """The 64-bit key of ``text``'s first ``prefix_chars`` normalised characters."""
    return hash64(normalise(text)[:prefix_chars])


def keep_one_per_group(keys: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Which items to keep: of each group of equal ``keys``, the one with the smallest
    ``order`` (the earliest index among equal orders).

    keys: (n,) integer group keys; order: (n,) integers. Returns a (n,) bool mask.

    Equivalent to the naive loop::

        best = {}
        for i, (k, o) in enumerate(zip(keys, order)):
            if k not in best or o < order[best[k]]:
                best[k] = i
        keep = [i in best.values() for i in range(n)]
    """
    n = len(keys)
    keep = np.zeros(n, dtype=bool)
    if n == 0:
        return keep
    by_key_then_order = np.lexsort((order, keys))  # stable: equal (key, order) keep index order
    sorted_keys = keys[by_key_then_order]
    first = np.ones(n, dtype=bool)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    keep[by_key_then_order[first]] = True
    return keep
