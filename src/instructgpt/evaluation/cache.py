"""Offline scorers are trained once and cached under ``cache_dir()/evaluation``.

The cache key is the scorer's name, a version string, the scikit-learn version (pickles do not
travel across its versions) and the size and modification time of every data file it was
trained on, so new data, a new training recipe or a new scikit-learn retrains it.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from instructgpt.files import with_umask

T = TypeVar("T")


def cache_key(name: str, version: str, files: Sequence[Path]) -> str:
    import sklearn

    parts = [name, version, sklearn.__version__] + [
        f"{Path(f).name}:{Path(f).stat().st_size}:{Path(f).stat().st_mtime_ns}" for f in files
    ]
    return f"{name}-{hashlib.sha256('|'.join(parts).encode()).hexdigest()[:16]}"


def cached(name: str, version: str, files: Sequence[Path], train: Callable[[], T], folder: Path | None = None) -> T:
    """Load the pickled scorer for (name, version, files), or ``train()`` it and store it."""
    from instructgpt.models.loader import cache_dir

    folder = Path(folder) if folder is not None else cache_dir() / "evaluation"
    path = folder / f"{cache_key(name, version, files)}.pkl"
    if path.is_file():
        try:
            with path.open("rb") as handle:
                return pickle.load(handle)
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError):
            pass  # a corrupt or stale cache entry: train again
    value = train()
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with_umask(fd)
    with os.fdopen(fd, "wb") as handle:
        pickle.dump(value, handle)
    os.replace(tmp, path)
    return value
