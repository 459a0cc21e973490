"""Reference random permutation (plain Python): defines the result every backend returns.

``out`` = the stable argsort of the uniforms u_i = uniform(key, counter + i), i < n: indices in
increasing order of u, equal uniforms (probability ~n**2 / 2**54) in increasing index order.
``uniforms`` (>= n entries) and ``starts`` (>= n + 1) are the compiled backends' scratch; shorter
ones give status 7 (``BAD_SHAPES``), and any two of ``out``, ``uniforms``, ``starts`` sharing
memory status 8 (``OVERLAPPING_ARRAYS``: a bucket start could be overwritten before it is used as
an index), before anything is written (``fastlmrl.permutations.CONTRACT``).
"""

from .._status import (
    BAD_SHAPES,  # scratch shorter than n (uniforms) or n + 1 (starts)
    OVERLAPPING_ARRAYS,  # two of out, uniforms, starts share memory
)
from ..rng import MASK64, uniform
from .td_learning import written_overlaps

__all__ = ["random_permutation"]


def random_permutation(key, counter, out, uniforms, starts):
    n = out.shape[0]
    if uniforms.shape[0] < n or starts.shape[0] < n + 1:
        return BAD_SHAPES
    if written_overlaps(out, uniforms, starts) or written_overlaps(uniforms, starts):
        return OVERLAPPING_ARRAYS
    u = [uniform(int(key), (int(counter) + i) & MASK64) for i in range(n)]
    for k, i in enumerate(sorted(range(n), key=u.__getitem__)):  # sorted() is stable
        out[k] = i
    return 0
