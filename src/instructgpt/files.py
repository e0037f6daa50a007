"""Atomic writes that leave files and folders with the modes ``open()`` and ``mkdir()`` would give.

``tempfile.mkstemp`` creates files 0600 and ``mkdtemp`` folders 0700 whatever the umask, so a
file renamed into place from one would be private to its writer. Every atomic write of the
package passes its temporary file or folder through :func:`with_umask` before the rename
(:func:`atomic_file` for single files). Caches of computed values (:func:`load_or_compute`) key their inputs by
:func:`file_identity` and :func:`digest`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

T = TypeVar("T")

_LOCK = threading.Lock()


def umask() -> int:
    """The process's umask (read by setting it and setting it back, under a lock)."""
    with _LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def with_umask(path: str | os.PathLike | int, folder: bool = False) -> None:
    """Give ``path`` (or an open file descriptor) the mode a new file (0666) or folder (0777) gets under the umask."""
    mode = (0o777 if folder else 0o666) & ~umask()
    if isinstance(path, int):
        os.fchmod(path, mode)
    else:
        os.chmod(path, mode)


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary handle whose content becomes ``path`` only when the block ends without error: it is written to a
    temporary file in the same folder (the umask's mode), flushed, fsynced and renamed over ``path``; on an error the
    temporary file is removed and ``path`` keeps its old content (or stays absent)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with_umask(fd)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_identity(path: str | os.PathLike, resolve: bool = True) -> list:
    """A file or folder as its path (resolved, or its name only with ``resolve=False``, so that moved data keeps its
    identity) and its files' names, sizes and modification times: what a cache keys an input by, so that a file
    written again is a new key. A path that does not exist (a Hub id) is itself."""
    root = Path(path)
    if not root.exists():
        return [str(path)]
    files = [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file())
    return [str(root.resolve()) if resolve else root.name] + [
        [str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns] for f in files
    ]


def digest(value: Any, length: int = 16) -> str:
    """A short hex SHA-256 of ``value`` as sorted JSON (anything JSON cannot write goes in as ``str``)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:length]


def load_or_compute(
    path: str | os.PathLike, compute: Callable[[], T], load: Callable[[Path], T], dump: Callable[[T, BinaryIO], None]
) -> T:
    """``load(path)`` when ``path`` is a readable cache entry, else ``compute()``, written there by ``dump`` through
    :func:`atomic_file` (a crash leaves no partial entry). A corrupt entry (``load`` raises) is computed again."""
    path = Path(path)
    if path.is_file():
        try:
            return load(path)
        except Exception:  # noqa: BLE001 - a corrupt or stale entry: compute it again
            pass
    value = compute()
    with atomic_file(path) as handle:
        dump(value, handle)
    return value
