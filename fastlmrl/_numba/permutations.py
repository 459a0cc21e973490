"""Numba random permutation: the stable argsort of n counter-based uniforms in expected O(n).

The uniforms are independent and uniform on [0, 1), so bucket ``floor(u * n)`` (clamped to n - 1)
holds one index on average: a stable counting sort by bucket (indices placed in increasing order),
then an insertion sort of each bucket by u that moves an index only past strictly larger
uniforms.  The result is the stable argsort, as the reference defines it.  The placement pass
regenerates each uniform (a SplitMix64 step costs less than a random read) and stores it next to
its index in bucket order, so the insertion sorts read contiguous memory.  ``uniforms`` (>= n) and
``starts`` (>= n + 1) are scratch; shorter ones give status 7 (``BAD_SHAPES``), any two of
``out``, ``uniforms``, ``starts`` sharing memory status 8 (``OVERLAPPING_ARRAYS``), nothing written.
"""

__all__ = ["random_permutation"]
import numpy as np
from numba import njit

from .._status import (
    BAD_SHAPES,  # scratch shorter than n (uniforms) or n + 1 (starts)
    OVERLAPPING_ARRAYS,  # two of out, uniforms, starts share memory
)
from ._common import NJIT, uniform
from .overlap import overlap


@njit(**NJIT)
def random_permutation(key, counter, out, uniforms, starts):
    n = out.shape[0]
    if uniforms.shape[0] < n or starts.shape[0] < n + 1:
        return BAD_SHAPES
    if overlap(out, uniforms) or overlap(out, starts) or overlap(uniforms, starts):
        return OVERLAPPING_ARRAYS
    key = np.uint64(key)
    counter = np.uint64(counter)
    for b in range(n + 1):
        starts[b] = 0
    for i in range(n):  # bucket sizes
        b = min(np.int64(uniform(key, counter + np.uint64(i)) * n), n - 1)
        starts[b + 1] += 1
    for b in range(n):
        starts[b + 1] += starts[b]
    for i in range(n):  # stable placement (u regenerated: cheaper than a random read)
        u = uniform(key, counter + np.uint64(i))
        b = min(np.int64(u * n), n - 1)
        p = starts[b]
        starts[b] = p + 1
        out[p] = i
        uniforms[p] = u
    lo = 0
    for b in range(n):  # bucket b is out[lo:starts[b]], its uniforms beside it
        hi = starts[b]
        for k in range(lo + 1, hi):
            i = out[k]
            u = uniforms[k]
            j = k
            while j > lo and uniforms[j - 1] > u:
                out[j] = out[j - 1]
                uniforms[j] = uniforms[j - 1]
                j -= 1
            out[j] = i
            uniforms[j] = u
        lo = hi
    return 0
