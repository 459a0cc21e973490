"""Helpers shared by the reference kernels (plain Python)."""

import math

import numpy as np

NEG_INF = -math.inf


def row_max(row) -> float:
    """max of the non-NaN entries of ``row`` (a list of floats); -inf if there are none."""
    best = NEG_INF
    for v in row:
        if v > best:
            best = v
    return best


def row_argmax(row) -> int:
    """Lowest index of the maximum of the non-NaN entries; 0 for an all-NaN row."""
    best = row_max(row)
    for a, v in enumerate(row):
        if v == best:
            return a
    return 0


def first_out_of_range(ids, bound: int) -> bool:
    """True when some id is outside [0, bound)."""
    for i in ids:
        if i < 0 or i >= bound:
            return True
    return False


def all_finite(values) -> bool:
    for v in values:
        if not math.isfinite(v):
            return False
    return True


def written_overlaps(written, *others):
    """Does the array a kernel writes share memory with any of ``others`` (by address range, as
    numpy.may_share_memory; empty arrays share nothing)?  A write must never change an id after
    its range check; the compiled kernels check the same in O(1) (status 8, OVERLAPPING_ARRAYS)."""
    return written.size > 0 and any(o.size > 0 and np.may_share_memory(written, o) for o in others)


def overlapping(written, read):
    """Does one of the ``written`` arrays share memory with another written array or with one of
    ``read`` (status 8, OVERLAPPING_ARRAYS, checked before any write)?"""
    for i, w in enumerate(written):
        if written_overlaps(w, *written[i + 1 :], *read):
            return True
    return False
