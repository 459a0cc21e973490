"""Numba random permutation: the stable argsort of n counter-based uniforms in expected O(n).

The uniforms are independent and uniform on [0, 1), so bucket ``floor(u * n)`` (clamped to n - 1)
holds one index on average: a stable counting sort by bucket (indices placed in increasing order),
then an insertion sort of each bucket by u that moves an index only past strictly larger
uniforms.  The result is the stable argsort, as the reference defines it.
"""

__all__ = ["random_permutation"]
import numpy as np
from numba import njit

from ._common import NJIT, uniform


@njit(**NJIT)
def random_permutation(key, counter, out, uniforms, starts):
    n = out.shape[0]
    key = np.uint64(key)
    counter = np.uint64(counter)
    for b in range(n + 1):
        starts[b] = 0
    for i in range(n):
        u = uniform(key, counter + np.uint64(i))
        uniforms[i] = u
        b = min(np.int64(u * n), n - 1)
        starts[b + 1] += 1
    for b in range(n):
        starts[b + 1] += starts[b]
    for i in range(n):  # stable placement; starts[b] moves to the end of bucket b
        b = min(np.int64(uniforms[i] * n), n - 1)
        out[starts[b]] = i
        starts[b] += 1
    lo = 0
    for b in range(n):  # bucket b is out[lo:starts[b]]
        hi = starts[b]
        for k in range(lo + 1, hi):
            i = out[k]
            u = uniforms[i]
            j = k
            while j > lo and uniforms[out[j - 1]] > u:
                out[j] = out[j - 1]
                j -= 1
            out[j] = i
        lo = hi
    return 0
