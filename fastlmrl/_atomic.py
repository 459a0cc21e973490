"""Atomic file writes: a reader sees the old file or the complete new one, never a partial file."""
from __future__ import annotations

import os
import tempfile


def atomic_write(path, write) -> None:
    """Call ``write(binary_file)`` on a temporary file in ``path``'s folder, fsync it, then rename
    it over ``path`` (``os.replace``) and fsync the folder.  On any error the temporary file is
    removed and ``path`` is untouched."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable where the platform allows it
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(dir_fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dir_fd)


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` as UTF-8 (newlines kept as given) to ``path`` atomically."""
    data = text.encode("utf-8")
    atomic_write(path, lambda handle: handle.write(data))
