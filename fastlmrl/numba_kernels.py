"""The raw Numba kernels, for use inside your own ``@njit`` functions.

They take preallocated outputs, never allocate in their loops, check their index/reward arguments
in a pre-pass and return a status code (0 = success, else the code of the first bad argument as in
``fastlmrl.Status``, also importable from here) *before* writing anything.  Random kernels take a
uint64 ``key`` (see
:func:`fastlmrl.rng.stream_key`) and a uint64 ``counter``.  Example::

    from numba import njit
    from fastlmrl.numba_kernels import q_learning_update

    @njit
    def train(q, s, a, r, s2, done, td):
        for epoch in range(100):
            q_learning_update(q, s, a, r, s2, done, 0.1, 0.9, td)

One transition at a time: ``q_learning_update_one(q, state, action, reward, next_state,
terminated, alpha, gamma)`` returns ``(status, td)`` after O(1) checks (alpha, gamma, the three
ids, a finite reward; nothing written otherwise), about the cost of the update written inline::

    from fastlmrl.numba_kernels import Status, q_learning_update_one

    @njit
    def step(q, s, a, r, s2, done):
        status, td = q_learning_update_one(q, s, a, r, s2, done, 0.1, 0.9)
        return status  # 0, or e.g. Status.BAD_STATES (1): Status(status).name outside @njit

Likewise ``epsilon_greedy_one(q, state, epsilon, key, counter)`` returns ``(status, action)``
(``Status.BAD_EPSILON``, then ``Status.BAD_STATES``; counters ``counter`` and ``counter + 1``,
item 0 of ``epsilon_greedy``).

Each kernel's arguments, the arrays it writes and the statuses it returns are declared in the
``CONTRACT`` of its topic's public module (e.g. ``fastlmrl.td_learning.CONTRACT``); each kernel's
``__doc__`` (``help(q_learning_update)``) is that declaration written out: the call, every
argument (dtype and layout, valid range, whether the kernel writes it, the status naming it), every
status it returns with its number, and the named slots of a statistics output.
"""

import importlib as _importlib

from . import _numba
from ._numba import *  # noqa: F401,F403
from ._numba import __all__  # noqa: F401  (the kernel names)
from ._status import Status  # noqa: F401  (the status codes the kernels return)
from ._topics import TOPICS as _TOPICS


def _document_kernels() -> None:
    """Give every kernel the documentation its topic's contract declares (``Kernel.describe``)."""
    for topic in _TOPICS:
        contract = _importlib.import_module(f"fastlmrl.{topic}").CONTRACT
        for kernel in contract.kernels:
            getattr(_numba, kernel.name).__doc__ = (
                kernel.describe() + f"\n\nDeclared in fastlmrl.{topic}.CONTRACT[{kernel.name!r}]."
            )


_document_kernels()
