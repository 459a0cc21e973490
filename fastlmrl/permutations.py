r"""Random permutations from the counter-based generator (:mod:`fastlmrl.rng`), e.g. minibatch
shuffles.

:func:`permutation` returns the **stable argsort of n uniforms** :math:`u_i` =
``uniform(key, c + i)`` (counters ``c .. c + n - 1`` of ``seed``): the indices in increasing order
of :math:`u_i`, ties (probability about :math:`n^2/2^{54}`) in increasing index order -- exactly
``numpy.argsort(fastlmrl.rng.uniforms(seed, n), kind="stable")``.  Since the :math:`u_i` are
i.i.d. uniform, every permutation is equally likely (up to the 53-bit resolution of the uniforms).
The compiled kernels sort in expected O(n) (a counting sort by bucket :math:`\lfloor u_i n\rfloor`,
about one index per bucket, then insertion sort inside buckets); every backend returns the same
permutation.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np

from . import _backend
from . import _validation as check
from ._contract import Arg, Kernel, Kind, Topic
from ._status import Status
from .rng import advance, check_capacity

if TYPE_CHECKING:  # what readers and tools follow: the reference kernel
    from ._python import permutations as _kernels
else:  # the active backend's kernels, rebound by set_backend (fastlmrl._backend.bind)
    _kernels = _backend.bind(__name__, "_kernels")

__all__ = ["permutation"]

#: The kernel of this topic, in every backend (``fastlmrl._python/_numba/_cython.permutations``);
#: tests/test_contract.py checks each implementation against it.  ``out`` receives the
#: permutation of ``range(len(out))``; ``uniforms`` (>= n entries) and ``starts`` (>= n + 1) are
#: scratch the call overwrites.  Shorter scratch: BAD_SHAPES; two of the three arrays sharing
#: memory: OVERLAPPING_ARRAYS (a bucket start could be overwritten before it is used as an index).
CONTRACT = Topic(
    "permutations",
    (
        Kernel(
            "random_permutation",
            (
                Arg("key", Kind.UINT64),
                Arg("counter", Kind.UINT64),
                Arg("out", Kind.ACTIONS, written=True),
                Arg("uniforms", Kind.ARRAY, written=True, ctype="double[::1]"),
                Arg("starts", Kind.ARRAY, written=True, ctype="int64_t[::1]"),
            ),
            (Status.BAD_SHAPES, Status.OVERLAPPING_ARRAYS),
            doc="the stable argsort of the uniforms at counters counter .. counter + n - 1",
        ),
    ),
)

# The kernels' scratch (n uniforms, n + 1 bucket starts), kept per thread and grown as needed:
# allocating ~2 x 8n fresh bytes per call cost more than the sort itself at n ~ 4e4 (the memory
# came back from the OS page by page).
_scratch = threading.local()


def _scratch_arrays(n: int):
    buffers = getattr(_scratch, "buffers", None)
    if buffers is None or buffers[0].shape[0] < n:
        buffers = (np.empty(n), np.empty(n + 1, dtype=np.int64))
        _scratch.buffers = buffers
    return buffers[0][:n], buffers[1][: n + 1]


def permutation(seed, n: int) -> np.ndarray:
    """A random permutation of ``range(n)`` (int64), consuming ``n`` counters of ``seed`` (an int
    or a :class:`fastlmrl.RandomStream`); see the module docstring."""
    n = check.positive_int(n, "n", minimum=0)
    # out, the uniforms and the bucket starts: 24 bytes per element, refused at once if they
    # cannot fit (with the number), not a MemoryError after minutes of paging
    check.array_size((n,), "n", itemsize=24)
    key, counter = check_capacity(seed, n)  # a RandomStream with fewer than n counters left
    out = np.empty(n, dtype=np.int64)
    uniforms, starts = _scratch_arrays(n)
    args = (np.uint64(key), np.uint64(counter), out, uniforms, starts)
    status = _kernels.random_permutation(*args)
    # never expected: the scratch is sized and owned here
    CONTRACT["random_permutation"].raise_for_call(status, args)
    advance(seed, n)
    return out
