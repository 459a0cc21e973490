"""In-worker machinery of the fuzz campaign: guard bands, state snapshots, one case's run and the
classification of its outcome.

Everything here runs inside a worker process (see ``worker.py``); a crash or a hang kills only the
worker, and the parent (``campaign.py``) records the case that was running.
"""

from __future__ import annotations

import re

import numpy as np

#: Outcome categories, in the order of the report's columns.
OK = "ok"  # the call was accepted (public API: returned; kernel: status 0)
REJECTED = "rejected"  # ValueError/TypeError naming the argument, or a kernel status != 0
UNNAMED = "unnamed"  # ValueError/TypeError whose message does not name the argument
WRONG_EXC = "wrong-exc"  # any other exception (OverflowError, IndexError, ZeroDivisionError...)
CRASH = "crash"  # the worker died (a signal: SIGSEGV, SIGBUS, SIGABRT ...)
HANG = "hang"  # no answer within the per-case time limit
OOB = "oob-write"  # a guard band around an array changed
HALF = "half-applied"  # the call was rejected but some state changed
OUTCOMES = (OK, REJECTED, UNNAMED, WRONG_EXC, CRASH, HANG, OOB, HALF)
BAD = (UNNAMED, WRONG_EXC, CRASH, HANG, OOB, HALF)

GUARD = 256  # bytes of sentinel on each side of every array handed to a target
_HEAD, _TAIL = 0xA5, 0x5A


class Guards:
    """Allocates arrays as views into larger byte buffers whose margins hold sentinels."""

    def __init__(self):
        self._buffers = []

    def g(self, a, noncontiguous: bool = False, readonly: bool = False):
        """A guarded copy of ``a`` (same dtype, shape and values).  Object arrays are returned as
        plain copies (no byte layout to guard)."""
        a = np.asarray(a)
        if a.dtype == object:
            return a.copy()
        if noncontiguous and a.ndim > 0:
            wide = np.repeat(a, 2, axis=-1)
            view = self.g(wide)[..., ::2]
        else:
            nbytes = a.nbytes
            buf = np.empty(nbytes + 2 * GUARD, dtype=np.uint8)
            buf[:GUARD] = _HEAD
            buf[GUARD + nbytes :] = _TAIL
            view = buf[GUARD : GUARD + nbytes].view(a.dtype).reshape(a.shape)
            view[...] = a
            self._buffers.append((buf, nbytes))
        if readonly:
            view.flags.writeable = False
        return view

    def intact(self) -> bool:
        for buf, nbytes in self._buffers:
            if (buf[:GUARD] != _HEAD).any() or (buf[GUARD + nbytes :] != _TAIL).any():
                return False
        return True


# ----------------------------------------------------------------------------------- snapshots
_SKIP_ATTRS = ("_scratch", "_cache", "_lock")


def _slots(obj):
    names = []
    for klass in type(obj).__mro__:
        slots = klass.__dict__.get("__slots__", ())
        if isinstance(slots, str):
            slots = (slots,)
        names.extend(slots)
    return names


def snapshot(obj, depth: int = 0, seen=None):
    """A comparable image of ``obj``: array bytes (with dtype and shape), scalars, and the
    attributes of plain objects (``__dict__`` and ``__slots__``), recursively."""
    if seen is None:
        seen = set()
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            return ("objarr", obj.shape, tuple(repr(x) for x in obj.ravel().tolist()))
        return ("arr", obj.dtype.str, obj.shape, np.ascontiguousarray(obj).tobytes())
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes, np.generic)):
        return ("val", type(obj).__name__, repr(obj))
    if depth > 5 or id(obj) in seen:
        return ("ref", type(obj).__name__)
    seen.add(id(obj))
    if isinstance(obj, (list, tuple)):
        return ("seq", type(obj).__name__, tuple(snapshot(x, depth + 1, seen) for x in obj))
    if isinstance(obj, dict):
        return ("dict", tuple((repr(k), snapshot(v, depth + 1, seen)) for k, v in obj.items()))
    if callable(obj) and not hasattr(obj, "__dict__"):
        return ("callable", repr(type(obj)))
    if type(obj).__module__.startswith(("builtins", "numpy")) and not hasattr(obj, "__dict__"):
        return ("opaque", type(obj).__name__)
    items = []
    attrs = dict(getattr(obj, "__dict__", {}) or {})
    for name in _slots(obj):
        if hasattr(obj, name):
            attrs[name] = getattr(obj, name)
    for name in sorted(attrs):
        if name.startswith(_SKIP_ATTRS) or name.startswith("__"):
            continue
        value = attrs[name]
        if callable(value) and not isinstance(value, np.ndarray) and not hasattr(value, "__dict__"):
            continue
        items.append((name, snapshot(value, depth + 1, seen)))
    return ("obj", type(obj).__name__, tuple(items))


def diff_path(a, b, path="") -> str:
    """The first place where two snapshots differ ('' if none)."""
    if a == b:
        return ""
    if a[0] != b[0] or a[0] in ("arr", "val", "objarr", "ref", "callable", "opaque"):
        return path or "<value>"
    if a[0] == "seq":
        for i, (x, y) in enumerate(zip(a[2], b[2])):
            d = diff_path(x, y, f"{path}[{i}]")
            if d:
                return d
        return path + "<len>"
    if a[0] == "dict":
        for (k, x), (_, y) in zip(a[1], b[1]):
            d = diff_path(x, y, f"{path}[{k}]")
            if d:
                return d
        return path + "<keys>"
    for (k, x), (_, y) in zip(a[2], b[2]):
        d = diff_path(x, y, f"{path}.{k}")
        if d:
            return d
    return path + "<attrs>"


# ----------------------------------------------------------------------------------- outcomes
def _is_clean_type(exc) -> bool:
    return isinstance(exc, (ValueError, TypeError))


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _exc_text(exc) -> str:
    text = _ANSI.sub("", f"{type(exc).__name__}: {exc}").replace("\n", " ")
    return text if len(text) < 400 else text[:400] + "..."


def classify_api(exc, names, guards_ok: bool, changed: str):
    """Outcome of a public-API call: ``exc`` is the exception raised (None if it returned),
    ``names`` the words of which one must appear in the message, ``changed`` where the state
    differs after the call ('' if nowhere)."""
    if not guards_ok:
        return OOB, _exc_text(exc) if exc else ""
    if exc is None:
        return OK, ""
    if changed:
        return HALF, f"{changed} changed; raised {_exc_text(exc)}"
    if not _is_clean_type(exc):
        return WRONG_EXC, _exc_text(exc)
    message = str(exc)
    if any(n in message for n in names):
        return REJECTED, _exc_text(exc)
    return UNNAMED, _exc_text(exc)


def classify_kernel(result, exc, type_level: bool, guards_ok: bool, changed: str):
    """Outcome of a raw kernel call: status 0 is OK, a non-zero status a clean rejection if no
    state changed.  An exception is acceptable only for a type-level mutation (the dispatcher of a
    compiled kernel refuses a wrong dtype, ``None``...); for a value-level mutation (ids, NaN,
    sizes, corrupted structures, an exhausted counter) the kernel must return a status."""
    if not guards_ok:
        return OOB, _exc_text(exc) if exc else f"status {result}"
    if exc is not None:
        if changed:
            return HALF, f"{changed} changed; raised {_exc_text(exc)}"
        if type_level:
            return REJECTED, _exc_text(exc)
        return WRONG_EXC, _exc_text(exc)
    status = result[0] if isinstance(result, tuple) else result
    try:
        status = int(status)
    except Exception:  # noqa: BLE001 - a kernel that returns something odd
        return WRONG_EXC, f"returned {result!r:.100}"
    if status == 0:
        return OK, ""
    if changed:
        return HALF, f"{changed} changed; status {status}"
    return REJECTED, f"status {status}"
