"""Per-user caps and user-disjoint train / validation / test splits (paper section 3.2).

Both are decided by hashes, never by file order, so the same prompts with the same seed give
the same result however the input is ordered or sharded:

- **Cap**: of a user's prompts, the ``cap`` with the smallest seeded hash of their id are kept
  (a uniformly random subset, fixed by the seed).
- **Split**: users are put in the order of a seeded hash of their id and walked in that order,
  each user going whole to the split whose share of the prompts the walk is in: a user
  goes to split ``s`` when the middle of its run of prompts falls inside split ``s``'s
  fraction of all prompts. Splits therefore hold close to the requested fractions of
  *prompts* (not of users), to within one user's prompt count, and no user is in two splits.
  With very few users a split can be empty; ``prepare`` reports the counts.
"""

from __future__ import annotations

import numpy as np

SPLITS: tuple[str, ...] = ("train", "valid", "test")
"""Split names, in the order of ``split_fractions``."""


def mix64(values: np.ndarray, salt: int) -> np.ndarray:
    """A seeded 64-bit hash of each value (splitmix64 finaliser of ``value ^ salt``).

    values: (n,) uint64. Returns (n,) uint64, uniformly spread for distinct inputs.
    """
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) ^ np.uint64(salt & 0xFFFFFFFFFFFFFFFF)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def cap_per_user(users: np.ndarray, order: np.ndarray, cap: int) -> np.ndarray:
    """Keeps at most ``cap`` items per user: those with the smallest ``order``.

    users: (n,) integer user codes; order: (n,) integers (a seeded hash). Returns (n,) bool.
    Equivalent to: for each user, sort its items by (order, index) and keep the first ``cap``.
    """
    n = len(users)
    keep = np.zeros(n, dtype=bool)
    if n == 0:
        return keep
    by_user = np.lexsort((order, users))
    sorted_users = users[by_user]
    starts = np.ones(n, dtype=bool)
    starts[1:] = sorted_users[1:] != sorted_users[:-1]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    rank_in_group = np.arange(n) - group_start  # (n,) 0 for each user's first item
    keep[by_user[rank_in_group < cap]] = True
    return keep


def split_users(user_hashes: np.ndarray, counts: np.ndarray, fractions: tuple[float, ...]) -> np.ndarray:
    """The split of each user (an index into ``fractions``).

    user_hashes: (u,) seeded hashes of the user ids (the walk order); counts: (u,) prompts per
    user; fractions: the share of prompts per split, summing to 1. Returns (u,) int8.
    """
    walk = np.argsort(user_hashes, kind="stable")
    ends = np.cumsum(counts[walk])  # (u,) prompts up to and including each user, walk order
    total = ends[-1] if len(ends) else 0
    middles = (ends - counts[walk] / 2) / max(total, 1)  # (u,) in [0, 1]
    bounds = np.cumsum(fractions)[:-1]
    split = np.empty(len(counts), dtype=np.int8)
    split[walk] = np.searchsorted(bounds, middles, side="right")
    return split
