"""Atomic file writes: a reader sees the old file or the complete new one, never a partial file.

The new content goes to a temporary file in the destination folder, named

    .tmp-fastlmrl-<host>-<pid>-<random>.<destination name>

(``host``: 8 hex digits of a hash of the host name; ``pid``: the writing process), which is
fsynced and then renamed over the destination (``os.replace``, atomic on POSIX and Windows).
The temporary file is created like ``open(path, "w")`` creates a file: mode ``0o666`` minus the
process's umask (not ``tempfile.mkstemp``'s 0600).

A process killed during a write (``kill -9``, power loss) leaves its temporary file behind.
:func:`remove_stale_temp_files` deletes such leftovers — only names of the pattern above — and
runs on every :func:`atomic_write` and every checkpoint load in that folder: a leftover is stale
when its writer was this host's process ``pid`` and that process no longer exists (or is this
process, which is not writing it), or, for writers on other hosts (a shared file system) or
whose pid is in use again, when it has not been modified for :data:`STALE_AFTER_SECONDS`.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO

#: A file path argument: str, bytes or os.PathLike (checked by :func:`as_path`).
PathArg = str | bytes | os.PathLike[str] | os.PathLike[bytes]

__all__ = [
    "STALE_AFTER_SECONDS",
    "as_path",
    "atomic_write",
    "atomic_write_text",
    "remove_stale_temp_files",
    "temp_name",
]

#: A leftover temporary file whose writer cannot be checked is removed after this long unchanged.
STALE_AFTER_SECONDS = 3600.0

_PREFIX = ".tmp-fastlmrl-"
_PATTERN = re.compile(r"^\.tmp-fastlmrl-([0-9a-f]{8})-([0-9]+)-([0-9a-f]{8})\.(.+)$")
# tempfile.mkstemp names of earlier versions (".tmp-" + 8 characters + the destination name) for
# the files fastlmrl writes: checkpoints, metrics, results
_LEGACY = re.compile(r"^\.tmp-[a-z0-9_]{8}.+\.(ckpt|jsonl|csv|json)$")

_in_flight: set = set()  # temporary paths this process is writing now
_lock = threading.Lock()


def as_path(path: Any, name: str = "path") -> str:
    """``path`` (str, bytes or os.PathLike) as a str; TypeError / ValueError naming ``name``."""
    try:
        text = os.fsdecode(os.fspath(path))
    except TypeError:
        raise TypeError(
            f"{name} must be a str, bytes or os.PathLike file path, got {type(path).__name__}"
        ) from None
    if not text:
        raise ValueError(f"{name} is empty")
    if "\0" in text:
        raise ValueError(f"{name} {text!r} contains a NUL character")
    return text


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def temp_name(path: str | os.PathLike[str]) -> str:
    """A fresh temporary path for ``path`` (same folder, the module's naming pattern)."""
    path = os.fspath(path)
    folder, base = os.path.split(os.path.abspath(path))
    name = f"{_PREFIX}{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}.{base}"
    return os.path.join(folder, name)


def _pid_alive(pid: int) -> bool | None:
    """True / False when known, None when this platform cannot tell without side effects."""
    if sys.platform.startswith("win"):
        return None  # os.kill(pid, 0) would terminate the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return None
    return True


def remove_stale_temp_files(folder: PathArg, now: float | None = None) -> list[str]:
    """Delete the stale temporary files of :func:`atomic_write` in ``folder`` (module docstring);
    return their paths.  Files of other names are never touched; errors are ignored (another
    process may be cleaning the same folder)."""
    try:
        folder = os.fsdecode(os.fspath(folder)) or "."
        names = os.listdir(folder)
    except (OSError, TypeError, ValueError):
        return []
    now = time.time() if now is None else now
    host, me = _host_tag(), os.getpid()
    removed = []
    for name in names:
        if not name.startswith(".tmp-"):
            continue
        full = os.path.join(folder, name)
        match = _PATTERN.match(name)
        if match is None and _LEGACY.match(name) is None:
            continue
        try:
            age = now - os.stat(full).st_mtime
        except OSError:
            continue
        stale = age > STALE_AFTER_SECONDS
        if match is not None and match.group(1) == host and not stale:
            pid = int(match.group(2))
            if pid == me:
                with _lock:
                    stale = full not in _in_flight
            else:
                stale = _pid_alive(pid) is False
        if stale:
            try:
                os.unlink(full)
            except OSError:
                continue
            removed.append(full)
    return removed


def atomic_write(path: PathArg, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(binary_file)`` on a temporary file in ``path``'s folder, fsync it, then rename
    it over ``path`` (``os.replace``) and fsync the folder.  On any error the temporary file is
    removed and ``path`` is untouched.  The file gets mode ``0o666 & ~umask``; stale temporary
    files of earlier, killed writers in the folder are removed first."""
    path = as_path(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"path {path!r} is a folder, not a file")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"path {path!r}: the folder {folder!r} does not exist")
    remove_stale_temp_files(folder)
    tmp = temp_name(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    with _lock:
        _in_flight.add(tmp)
    try:
        fd = os.open(tmp, flags, 0o666)  # the umask applies, as for open()
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
    finally:
        with _lock:
            _in_flight.discard(tmp)
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


def atomic_write_text(path: PathArg, text: str) -> None:
    """Write ``text`` as UTF-8 (newlines kept as given) to ``path`` atomically."""
    data = text.encode("utf-8")
    atomic_write(path, lambda handle: handle.write(data))
