"""Checkpoints: atomic, self-checking files holding arrays and JSON metadata.

A checkpoint is a ZIP archive (NumPy ``.npz`` layout, uncompressed) with

* ``fastlmrl.json`` — ``{"format": "fastlmrl-checkpoint", "version": 1, "meta": {...},
  "arrays": {name: {"dtype", "shape", "sha256"}}}``;
* one ``<name>.npy`` member per array.

:func:`save_checkpoint` writes to a temporary file in the destination folder, flushes and fsyncs
it, then renames it over the destination (``os.replace``, atomic on POSIX and Windows), so a reader
sees either the old file or the complete new one, never a partial checkpoint.
:func:`load_checkpoint` refuses (:class:`CheckpointError`, a ValueError naming the file and the
problem) a file that is missing, not a ZIP, truncated, damaged anywhere, from another program, of
an unknown version, or whose arrays do not match their recorded SHA-256 digests.  A save killed
midway leaves only a temporary file, which the next save or load in that folder removes
(:mod:`fastlmrl._atomic`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from typing import Any, BinaryIO

import numpy as np

from ._atomic import as_path, atomic_write, remove_stale_temp_files

__all__ = ["CheckpointError", "load_checkpoint", "save_checkpoint"]

FORMAT = "fastlmrl-checkpoint"
VERSION = 1
HEADER = "fastlmrl.json"


class CheckpointError(ValueError):
    """A checkpoint file cannot be used (corrupted, truncated, foreign or incompatible)."""


def _digest(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def save_checkpoint(
    path: str | os.PathLike[str], arrays: dict[str, np.ndarray], meta: dict[str, Any] | None = None
) -> None:
    """Write ``arrays`` (name -> ndarray) and JSON-serialisable ``meta`` to ``path`` atomically."""
    path = as_path(path)
    if not isinstance(arrays, dict) or not all(isinstance(k, str) for k in arrays):
        raise TypeError("arrays must be a dict mapping str names to numpy arrays")
    for name, arr in arrays.items():
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"arrays[{name!r}] must be a numpy.ndarray, got {type(arr).__name__}")
        if arr.dtype.hasobject:
            raise TypeError(f"arrays[{name!r}] has dtype object, which cannot be saved safely")
        if "/" in name or name == HEADER:
            raise ValueError(f"invalid array name {name!r}")
    header = {
        "format": FORMAT,
        "version": VERSION,
        "meta": meta if meta is not None else {},
        "arrays": {
            name: {"dtype": arr.dtype.str, "shape": list(arr.shape), "sha256": _digest(arr)}
            for name, arr in arrays.items()
        },
    }
    try:
        header_bytes = json.dumps(header, sort_keys=True, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise TypeError(f"meta must be JSON-serialisable (finite numbers only): {exc}") from None

    def write(handle: BinaryIO) -> None:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED) as archive:
            archive.writestr(HEADER, header_bytes)
            for name, arr in arrays.items():
                buffer = io.BytesIO()
                np.save(buffer, np.ascontiguousarray(arr), allow_pickle=False)
                archive.writestr(f"{name}.npy", buffer.getvalue())

    atomic_write(path, write)


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`; return ``(arrays, meta)``.

    Any damage — a missing, truncated or foreign file, a flipped byte anywhere, an archive member
    of an unsupported kind — raises :class:`CheckpointError` (a ValueError) naming ``path``; never
    another exception type.  Stale temporary files of interrupted saves in the same folder are
    removed (:func:`fastlmrl._atomic.remove_stale_temp_files`).
    """
    path = as_path(path)
    remove_stale_temp_files(os.path.dirname(os.path.abspath(path)))
    if not os.path.isfile(path):
        if os.path.exists(path):
            raise CheckpointError(f"checkpoint {path!r} is not a file")
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    try:
        return _read(path)
    except CheckpointError:
        raise
    except MemoryError:
        raise CheckpointError(
            f"{path!r}: corrupted checkpoint (a recorded size is too large to be real)"
        ) from None
    except Exception as exc:  # zipfile/zlib/struct/EOF/NotImplemented/... on a damaged byte
        raise CheckpointError(
            f"{path!r} is not a readable fastlmrl checkpoint (damaged or truncated: "
            f"{type(exc).__name__}: {exc})"
        ) from None


def _read(path: str) -> tuple[dict, dict]:
    try:
        archive = zipfile.ZipFile(path, "r")
    except (zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(
            f"{path!r} is not a fastlmrl checkpoint (not a readable archive: {exc})"
        ) from None
    with archive:
        names = archive.namelist()
        try:
            raw_header = archive.read(HEADER)
        except KeyError:
            raise CheckpointError(f"{path!r} is not a fastlmrl checkpoint (no {HEADER})") from None
        except Exception as exc:
            raise CheckpointError(f"{path!r}: corrupted checkpoint header ({exc})") from None
        try:
            header = json.loads(raw_header.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise CheckpointError(f"{path!r}: corrupted checkpoint header ({exc})") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise CheckpointError(f"{path!r} is not a fastlmrl checkpoint (foreign format)")
        if header.get("version") != VERSION:
            raise CheckpointError(
                f"{path!r}: checkpoint version {header.get('version')!r} is not supported "
                f"(this fastlmrl reads version {VERSION})"
            )
        specs, meta = header.get("arrays", {}), header.get("meta", {})
        if (
            not isinstance(specs, dict)
            or not all(isinstance(v, dict) for v in specs.values())
            or not isinstance(meta, dict)
        ):
            raise CheckpointError(f"{path!r}: corrupted checkpoint header (bad layout)")
        expected = {HEADER} | {f"{name}.npy" for name in specs}
        if len(names) != len(set(names)) or set(names) != expected:
            raise CheckpointError(
                f"{path!r}: corrupted checkpoint (archive members {names}, "
                f"expected {sorted(expected)})"
            )
        arrays = {}
        for name, spec in specs.items():
            try:
                raw = archive.read(f"{name}.npy")
                arr = np.load(io.BytesIO(raw), allow_pickle=False)
            except Exception as exc:  # zlib/CRC errors, truncated .npy, bad header ...
                raise CheckpointError(f"{path!r}: array {name!r} is corrupted ({exc})") from None
            if (
                not isinstance(arr, np.ndarray)
                or arr.dtype.str != spec.get("dtype")
                or list(arr.shape) != spec.get("shape")
                or _digest(arr) != spec.get("sha256")
            ):
                raise CheckpointError(f"{path!r}: array {name!r} does not match its checksum")
            arrays[name] = arr
    return arrays, meta
