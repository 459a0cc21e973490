"""The raw Numba kernels, for use inside your own ``@njit`` functions.

They take preallocated outputs, never allocate in their loops, check their index/reward arguments
in a pre-pass and return a status code (0 = success, else the code of the first bad argument as in
``fastlmrl.Status``, also importable from here) *before* writing anything.  Random kernels take a uint64 ``key`` (see
:func:`fastlmrl.rng.stream_key`) and a uint64 ``counter``.  Example::

    from numba import njit
    from fastlmrl.numba_kernels import q_learning_update

    @njit
    def train(q, s, a, r, s2, done, td):
        for epoch in range(100):
            q_learning_update(q, s, a, r, s2, done, 0.1, 0.9, td)
"""
from ._numba import __all__  # noqa: F401  (the kernel names)
from ._numba import *  # noqa: F401,F403
from ._status import Status  # noqa: F401  (the status codes the kernels return)
