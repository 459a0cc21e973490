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

import numpy as np

from . import _backend
from . import _validation as check
from .rng import advance, resolve_seed

__all__ = ["permutation"]


def permutation(seed, n: int) -> np.ndarray:
    """A random permutation of ``range(n)`` (int64), consuming ``n`` counters of ``seed`` (an int
    or a :class:`fastlmrl.RandomStream`); see the module docstring."""
    n = check.positive_int(n, "n", minimum=0)
    key, counter = resolve_seed(seed)
    out = np.empty(n, dtype=np.int64)
    status = _backend.kernels().random_permutation(np.uint64(key), np.uint64(counter), out,
                                                    np.empty(n), np.empty(n + 1, dtype=np.int64))
    if status:
        raise ValueError(f"internal error: permutation kernel returned status {status}")
    advance(seed, n)
    return out
