"""Memory-overlap checks shared by the Numba kernels (status 8, ``OVERLAPPING_ARRAYS`` of
``fastlmrl._status``): an array a kernel writes must not share memory with another argument, or a
write could change an id after its range check.  O(1): address ranges, no loop over the data.

A module of its own rather than ``_common.py``: every kernel imports ``_common``, and an edit
there recompiles all of them (the cache is keyed by the contents of the imported files)."""

import numpy as np
from numba import njit

from ._common import NJIT


@njit(**NJIT)
def _bounds(a):
    """[lo, hi): the byte addresses spanned by a's elements ((0, 0) when a is empty)."""
    lo = np.int64(a.ctypes.data)
    hi = lo
    for d in range(a.ndim):
        if a.shape[d] == 0:
            return np.int64(0), np.int64(0)
        span = np.int64(a.shape[d] - 1) * np.int64(a.strides[d])
        if span < 0:
            lo += span
        else:
            hi += span
    return lo, hi + np.int64(a.itemsize)


@njit(**NJIT)
def overlap(a, b):
    """Do arrays a and b share any byte (by address range, like numpy.may_share_memory)?"""
    alo, ahi = _bounds(a)
    blo, bhi = _bounds(b)
    return alo < ahi and blo < bhi and alo < bhi and blo < ahi


@njit(**NJIT)
def written_overlaps(w, a, b, c, d, e, f, g):
    """Does the written array w share memory with any of a..g (pass an empty array for unused
    slots)?  O(1): a write must never change an id after its range check."""
    return (
        overlap(w, a)
        or overlap(w, b)
        or overlap(w, c)
        or overlap(w, d)
        or overlap(w, e)
        or overlap(w, f)
        or overlap(w, g)
    )


@njit(**NJIT)
def spans_overlap(spans, n_written):
    """Does one of the first ``n_written`` byte ranges of ``spans`` (a tuple of (lo, hi) from
    :func:`_bounds`, the arrays a kernel writes first) share a byte with any later one (the other
    written arrays and every array the kernel reads)?  O(number of pairs), no loop over the data."""
    for i in range(n_written):
        lo, hi = spans[i]
        if lo >= hi:
            continue
        for j in range(i + 1, len(spans)):
            lo2, hi2 = spans[j]
            if lo2 < hi2 and lo < hi2 and lo2 < hi:
                return True
    return False
