"""Argument checks shared by the public functions.

Everything here runs before a kernel touches any table: a bad argument raises a ValueError or
TypeError that names it, and nothing has been written.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from . import _status

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))


def table(q, name: str = "q", writeable: bool = True, ndim: int = 2) -> np.ndarray:
    """A float32/float64 C-contiguous array with ``ndim`` dims and no empty axis, used as is."""
    if not isinstance(q, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(q).__name__}")
    if q.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {q.dtype}")
    if q.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {q.shape}")
    if 0 in q.shape:
        raise ValueError(f"{name} must not have an empty axis, got shape {q.shape}")
    if not q.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use numpy.ascontiguousarray)")
    if writeable and not q.flags.writeable:
        raise ValueError(f"{name} is read-only but is updated in place")
    return q


def ids(x, name: str, length: int | None = None) -> np.ndarray:
    """A 1-D int32/int64 contiguous array (other integer dtypes are converted to int64)."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu":
        if arr.size == 0 and arr.dtype.kind == "f":  # np.asarray([]) is float64
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"{name} must hold integer ids, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {arr.shape}")
    if length is not None and arr.shape[0] != length:
        raise ValueError(f"{name} must have length {length}, got {arr.shape[0]}")
    if arr.dtype not in INDEX_DTYPES:
        if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
            raise ValueError(f"{name} holds ids too large for int64")
        arr = arr.astype(np.int64)
    return np.ascontiguousarray(arr)


def same_index_dtype(*arrays: np.ndarray) -> list[np.ndarray]:
    """Cast id arrays to one dtype (int32 only when all are int32) so kernels get one signature."""
    if all(a.dtype == np.int32 for a in arrays):
        return list(arrays)
    return [a.astype(np.int64, copy=False) for a in arrays]


def values(x, name: str, length: int | None, dtype) -> np.ndarray:
    """A 1-D contiguous array of real numbers converted to ``dtype``."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {arr.shape}")
    if length is not None and arr.shape[0] != length:
        raise ValueError(f"{name} must have length {length}, got {arr.shape[0]}")
    return np.ascontiguousarray(arr, dtype=dtype)


def flags(x, name: str, length: int) -> np.ndarray:
    """A 1-D boolean array returned as a uint8 view (what the kernels read)."""
    arr = np.asarray(x)
    if arr.dtype != np.bool_:
        if arr.dtype.kind in "iu" or (arr.size == 0 and arr.dtype.kind == "f"):
            if arr.size and not np.isin(arr, (0, 1)).all():
                raise ValueError(f"{name} must be boolean (or 0/1 integers)")
            arr = arr.astype(np.bool_)
        else:
            raise TypeError(f"{name} must be a boolean array, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {arr.shape}")
    if arr.shape[0] != length:
        raise ValueError(f"{name} must have length {length}, got {arr.shape[0]}")
    return np.ascontiguousarray(arr).view(np.uint8)


def real(x, name: str, low: float | None = None, high: float | None = None,
         low_open: bool = False, high_open: bool = False) -> float:
    """A finite real scalar inside the given interval, as a Python float."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(x).__name__}")
    v = float(x)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    lo_ok = low is None or (v > low if low_open else v >= low)
    hi_ok = high is None or (v < high if high_open else v <= high)
    if not (lo_ok and hi_ok):
        lb = "(" if low_open else "["
        hb = ")" if high_open else "]"
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{name} must be in {lb}{lo}, {hi}{hb}, got {v}")
    return v


def positive_int(x, name: str, minimum: int = 1) -> int:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(x).__name__}")
    if x < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {x}")
    return int(x)


def raise_for_status(status: int, bounds: dict) -> None:
    """Turn a kernel status code into a ValueError naming the argument (no-op for 0).

    ``bounds`` maps argument names to ``(array, upper_bound)``; for ``rewards`` the bound is None
    and the complaint is a non-finite value.
    """
    if status == _status.OK:
        return
    name = _status.ARGUMENT.get(status, f"argument #{status}")
    if name in bounds:
        arr, bound = bounds[name]
        arr = np.asarray(arr)
        if bound is None:
            bad = np.flatnonzero(~np.isfinite(arr))
            if bad.size:
                i = int(bad[0])
                raise ValueError(f"{name}[{i}] = {arr[i]} is not finite")
        else:
            bad = np.flatnonzero((arr < 0) | (arr >= bound))
            if bad.size:
                i = int(bad[0])
                raise ValueError(f"{name}[{i}] = {int(arr[i])} is out of range [0, {bound})")
    raise ValueError(f"invalid {name}")
