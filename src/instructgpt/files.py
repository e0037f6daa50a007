"""Atomic writes that leave files and folders with the modes ``open()`` and ``mkdir()`` would give.

``tempfile.mkstemp`` creates files 0600 and ``mkdtemp`` folders 0700 whatever the umask, so a
file renamed into place from one would be private to its writer. Every atomic write of the
package passes its temporary file or folder through :func:`with_umask` before the rename.
"""

from __future__ import annotations

import os
import threading

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
