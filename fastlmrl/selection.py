"""Action selection for a batch of states: greedy, epsilon-greedy and Boltzmann (softmax).

All three read a table ``q`` of shape (S, V) (S states, e.g. context ids; V actions, e.g. token
ids) and return one action per entry of ``states`` as an int64 array.  Random draws come from the
counter-based generator in :mod:`fastlmrl.rng`, so a seed gives the same actions in every backend
and at every thread count.  NaN entries of a row are ignored by the max/argmax.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from . import _backend, _free_cores
from . import _validation as check
from ._contract import Arg, Kernel, Kind, Topic, raise_for_status
from ._status import Status
from .argmax_tree import ArgmaxTree, raise_for_tree_status, tree_args
from .rng import NUM_COUNTERS, RandomStream, advance, check_capacity

if TYPE_CHECKING:  # what readers and tools follow: the reference kernels
    from ._python import argmax_tree as _tree_kernels
    from ._python import selection as _kernels
else:  # the active backend's kernels, rebound by set_backend (fastlmrl._backend.bind)
    _kernels = _tree_kernels = _backend.bind(__name__, "_kernels", "_tree_kernels")

__all__ = ["boltzmann", "epsilon_greedy", "greedy"]


# ----------------------------------------------------------------------------- the contract
_Q = Arg("q", Kind.TABLE)
_STATES = Arg("states", Kind.IDS, status=Status.BAD_STATES, bound=("q", 0))
_EPSILON = Arg("epsilon", Kind.REAL, status=Status.BAD_EPSILON, domain="[0, 1]")
_KEY, _COUNTER = Arg("key", Kind.UINT64), Arg("counter", Kind.UINT64)
_OUT = Arg("out", Kind.ACTIONS, written=True)
_THREADS = Arg("num_threads", Kind.THREADS)
_BATCH = (Status.BAD_SHAPES, Status.OVERLAPPING_ARRAYS)

#: The kernels of this topic, in every backend (``fastlmrl._python/_numba/_cython.selection``);
#: tests/test_contract.py checks each implementation against it.
CONTRACT = Topic(
    "selection",
    (
        Kernel(
            "boltzmann",
            (
                _Q,
                _STATES,
                Arg("temperature", Kind.REAL, status=Status.BAD_TEMPERATURE, domain="(0, inf)"),
                _KEY,
                _COUNTER,
                _OUT,
                _THREADS,
            ),
            _BATCH,
        ),
        Kernel("epsilon_greedy", (_Q, _STATES, _EPSILON, _KEY, _COUNTER, _OUT, _THREADS), _BATCH),
        Kernel(
            "epsilon_greedy_one",
            (
                _Q,
                Arg("state", Kind.INDEX, status=Status.BAD_STATES, bound=("q", 0)),
                _EPSILON,
                _KEY,
                _COUNTER,
            ),
            returns=("status", "action"),
            return_types={"action": "int64_t"},
            doc="one state, O(1) checks; returns (status, action): item 0 of epsilon_greedy",
        ),
        Kernel("greedy", (_Q, _STATES, _OUT, _THREADS), _BATCH),
    ),
)


# ----------------------------------------------------------------------------- direct calls
# A batch of one whose arguments already are exactly what the single-state kernel takes goes to
# it at once (``epsilon_greedy_one``: O(1) checks of epsilon and the state before it draws);
# anything else, or a call the kernel refuses, takes the full validation (which converts, or
# raises the error naming the argument).  Same draws, same result bit for bit.
_ndarray = np.ndarray
_F64, _F32 = np.dtype(np.float64), np.dtype(np.float32)
_I64, _I32 = np.dtype(np.int64), np.dtype(np.int32)
_INT64_LIMIT = 2**63
_LAST_PAIR = NUM_COUNTERS - 2  # the last counter a call drawing two can start at
_uint64, _empty, _INT64 = np.uint64, np.empty, np.int64
_KEY_SCALARS: dict[int, np.uint64] = {}


def _key_scalar(key: int) -> np.uint64:
    """A stream key as a NumPy uint64 (a Python int above 2**63 fails Numba's call of a kernel
    compiled for an int64 first; ``np.uint64(key)`` costs ~0.3 us, so the few keys in use are
    kept)."""
    if len(_KEY_SCALARS) >= 256:
        _KEY_SCALARS.clear()
    scalar = _KEY_SCALARS[key] = _uint64(key)
    return scalar


#: (the epsilon_greedy_one last called, its (float32, float64) versions): the batch-1 call reads
#: this tuple once and checks the bound kernel by identity (set_backend / use_backend rebind it)
_one: tuple[Any, tuple[Any, Any]] = (None, (None, None))


def _specialise(kernel: Any) -> tuple[Any, tuple[Any, Any]]:
    """Remember ``kernel`` with its float32 and float64 versions: a Cython fused-type kernel's
    specialisations (calling one skips the fused dispatch, ~0.16 us of a ~1.2 us batch-1 call),
    else the kernel itself twice (Numba and Python dispatch on their own).  Same function, same
    results."""
    global _one
    pair = (kernel["float"], kernel["double"]) if hasattr(kernel, "__signatures__") else None
    _one = (kernel, pair or (kernel, kernel))
    return _one


def _prepare(q: object, states: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q as the kernels take it, states, out).  A read-only q comes back as a writeable alias
    (no new Numba specialisation); tree_args must see the caller's q (``tree.table is q``)."""
    table = check.table(q, "q", writeable=False)
    states = check.ids(states, "states")
    return table, states, np.empty(states.shape[0], dtype=np.int64)


def _finish(status, states, q, kernel="greedy", **scalars):
    """The error of a kernel's status (no-op for 0), through the contract of ``kernel``."""
    raise_for_status(status, CONTRACT[kernel], {"q": q, "states": states, **scalars})


def greedy(q: np.ndarray, states: ArrayLike, argmax_tree: ArgmaxTree | None = None) -> np.ndarray:
    r"""Greedy actions :math:`a_i = \arg\max_a Q(s_i, a)`, ties broken toward the lowest index.

    Parameters
    ----------
    q : ndarray (S, V), float32 or float64, C-contiguous
    states : 1-D integer array of state ids in [0, S)
    argmax_tree : :class:`fastlmrl.ArgmaxTree` built for ``q``, optional
        Read each action from the row's tree root in O(1) instead of scanning the row (O(V));
        the result is identical.

    Returns
    -------
    int64 array with one action per state.
    """
    table, states, out = _prepare(q, states)
    if argmax_tree is None:
        status = _kernels.greedy(table, states, out, _free_cores.threads())
    else:
        nodes, block_size = tree_args(argmax_tree, q)
        q = table
        status = _tree_kernels.greedy_tree(q, nodes, block_size, states, out)
        raise_for_tree_status(status, {"states": (states, q.shape[0])})
    _finish(status, states, q)
    return out


def epsilon_greedy(
    q: np.ndarray,
    states: ArrayLike,
    epsilon: float,
    seed: int | RandomStream,
    argmax_tree: ArgmaxTree | None = None,
) -> np.ndarray:
    r"""ε-greedy actions (Sutton & Barto 2018, §2.2/§5.4).

    With probability ε a uniformly random action among all V (the greedy one included), otherwise
    the greedy action, so :math:`\pi(a|s) = \varepsilon / V + (1-\varepsilon)\,[a = \arg\max
    Q(s,\cdot)]`.

    Randomness: item ``i`` uses counters ``c + 2i`` (explore when its uniform < ε) and ``c + 2i +
    1`` (which action: ``floor(u * V)``); the call consumes ``2 * len(states)`` counters of ``seed``
    (an int, or a :class:`fastlmrl.RandomStream` that is advanced).  With ``argmax_tree`` (a
    :class:`fastlmrl.ArgmaxTree` built for ``q``) the greedy action is read from the tree in O(1);
    the draws and the result are identical.
    """
    if (
        argmax_tree is None
        and type(epsilon) is float
        and type(seed) is RandomStream
        and type(q) is _ndarray
        and q.ndim == 2
        and (q.dtype is _F64 or q.dtype is _F32)
        and q.size != 0
        and q.flags.carray
    ):  # an exact C-contiguous writeable float table
        # a batch of one (written out: each helper call costs ~0.1 us of a ~1 us call)
        state = None
        ids: Any = states  # narrowed by type(...) is, which mypy does not follow through t
        t = type(ids)
        if t is _ndarray:
            if ids.shape == (1,) and (ids.dtype is _I64 or ids.dtype is _I32):
                state = ids.item()
        elif t is list and len(ids) == 1:
            state = ids[0]
            if type(state) is not int or not -_INT64_LIMIT <= state < _INT64_LIMIT:
                state = None
        counter = seed.counter
        if state is not None and counter <= _LAST_PAIR:
            key_scalar = _KEY_SCALARS.get(seed.key)
            if key_scalar is None:
                key_scalar = _key_scalar(seed.key)
            c = counter if counter < _INT64_LIMIT else _uint64(counter)
            kernel = _kernels.epsilon_greedy_one
            one = _one
            if one[0] is not kernel:
                one = _specialise(kernel)
            status, action = one[1][q.dtype is _F64](q, state, epsilon, key_scalar, c)
            if status == 0:
                seed.counter = counter + 2
                out = _empty(1, _INT64)
                out[0] = action
                return out
    # the full validation (and the error of a refused call: nothing was drawn)
    epsilon = check.real(epsilon, "epsilon", 0.0, 1.0)
    table, states, out = _prepare(q, states)
    key, counter = check_capacity(seed, 2 * states.shape[0])
    if argmax_tree is None:
        status = _kernels.epsilon_greedy(
            table, states, epsilon, np.uint64(key), np.uint64(counter), out, _free_cores.threads()
        )
    else:
        nodes, block_size = tree_args(argmax_tree, q)
        q = table
        status = _tree_kernels.epsilon_greedy_tree(
            q, nodes, block_size, states, epsilon, np.uint64(key), np.uint64(counter), out
        )
        raise_for_tree_status(status, {"states": (states, q.shape[0])})
    _finish(status, states, table, "epsilon_greedy", epsilon=epsilon)
    advance(seed, 2 * states.shape[0])
    return out


def boltzmann(
    q: np.ndarray, states: ArrayLike, temperature: float, seed: int | RandomStream
) -> np.ndarray:
    r"""Boltzmann (softmax) exploration: :math:`\pi(a|s) \propto \exp(Q(s,a)/\tau)` (Sutton & Barto
    §13.1).

    Sampled by inverse CDF in float64: with :math:`m = \max_a Q(s,a)`,
    :math:`w_a = \exp((Q(s,a) - m)/\tau)`, the action is the first ``a`` with
    :math:`u \sum_b w_b < \sum_{b \le a} w_b`.  Item ``i`` uses counter ``c + i``; the call consumes
    ``len(states)`` counters.  Anneal τ with :class:`fastlmrl.schedules.ExponentialSchedule`.
    """
    temperature = check.real(temperature, "temperature", 0.0, None, low_open=True)
    q, states, out = _prepare(q, states)
    key, counter = check_capacity(seed, states.shape[0])
    status = _kernels.boltzmann(
        q, states, temperature, np.uint64(key), np.uint64(counter), out, _free_cores.threads()
    )
    _finish(status, states, q, "boltzmann", temperature=temperature)
    advance(seed, states.shape[0])
    return out
