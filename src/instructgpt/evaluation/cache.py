"""Offline scorers are trained once and cached under ``cache_dir()/evaluation``.

The cache key is the scorer's name, a version string, the scikit-learn version (pickles do not
travel across its versions) and the size and modification time of every data file it was
trained on, so new data, a new training recipe or a new scikit-learn retrains it.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from instructgpt.files import digest, file_identity, load_or_compute

T = TypeVar("T")


def cache_key(name: str, version: str, files: Sequence[Path]) -> str:
    import sklearn

    inputs = [file_identity(f, resolve=False) for f in files]  # names only: moved data keeps its scorer
    return f"{name}-{digest([name, version, sklearn.__version__, inputs])}"


def cached(name: str, version: str, files: Sequence[Path], train: Callable[[], T], folder: Path | None = None) -> T:
    """Load the pickled scorer for (name, version, files), or ``train()`` it and store it (a corrupt or stale entry
    is trained again)."""
    from instructgpt.models.loader import cache_dir

    folder = Path(folder) if folder is not None else cache_dir() / "evaluation"
    return load_or_compute(folder / f"{cache_key(name, version, files)}.pkl", train, _unpickle, pickle.dump)


def _unpickle(path: Path):
    with path.open("rb") as handle:
        return pickle.load(handle)
