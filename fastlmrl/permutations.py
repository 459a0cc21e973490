r"""Random permutations from the counter-based generator (:mod:`fastlmrl.rng`), e.g. minibatch
shuffles.

:func:`permutation` returns the **stable argsort of n uniforms** :math:`u_i` =
``uniform(key, c + i)`` (counters ``c .. c + n - 1`` of ``seed``): the indices in increasing order of
:math:`u_i`, ties (probability about :math:`n^2/2^{54}`) in increasing index order -- exactly
``numpy.argsort(fastlmrl.rng.uniforms(seed, n), kind="stable")``.  Since the :math:`u_i` are
i.i.d. uniform, every permutation is equally likely (up to the 53-bit resolution of the uniforms).
The compiled kernels sort in expected O(n) (a counting sort by bucket :math:`\lfloor u_i n\rfloor`,
about one index per bucket, then insertion sort inside buckets); every backend returns the same
permutation.
"""

from __future__ import annotations

import threading

import numpy as np

from . import _backend
from . import _validation as check
from .rng import advance, check_capacity

__all__ = ["permutation"]

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
    status = _backend.kernels().random_permutation(
        np.uint64(key), np.uint64(counter), out, uniforms, starts
    )
    if status:
        raise ValueError(f"internal error: permutation kernel returned status {status}")
    advance(seed, n)
    return out
