"""Action selection for a batch of states: greedy, epsilon-greedy and Boltzmann (softmax).

All three read a table ``q`` of shape (S, V) (S states, e.g. context ids; V actions, e.g. token
ids) and return one action per entry of ``states`` as an int64 array.  Random draws come from the
counter-based generator in :mod:`fastlmrl.rng`, so a seed gives the same actions in every backend and
at every thread count.  NaN entries of a row are ignored by the max/argmax.
"""
from __future__ import annotations

import numpy as np

from . import _backend, _free_cores
from . import _validation as check
from ._status import BAD_SHAPES
from .argmax_tree import raise_for_tree_status, tree_args
from .rng import advance, check_capacity

__all__ = ["boltzmann", "epsilon_greedy", "greedy"]


def _prepare(q, states):
    """(q as the kernels take it, states, out).  A read-only q comes back as a writeable alias
    (no new Numba specialisation); tree_args must see the caller's q (``tree.table is q``)."""
    table = check.table(q, "q", writeable=False)
    states = check.ids(states, "states")
    return table, states, np.empty(states.shape[0], dtype=np.int64)


def _finish(status, states, q):
    if status == 10:  # kernel scalar checks (the wrappers check both first)
        raise ValueError("epsilon must be in [0, 1]")
    if status == 11:
        raise ValueError("temperature must be a finite number > 0")
    if status == BAD_SHAPES:  # the wrappers always pass consistent shapes
        raise ValueError("internal error: array arguments of inconsistent shapes "
                         f"(status {BAD_SHAPES})")
    check.raise_for_status(status, {"states": (states, q.shape[0])})


def greedy(q, states, argmax_tree=None) -> np.ndarray:
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
        status = _backend.kernels().greedy(table, states, out, _free_cores.threads())
    else:
        nodes, block_size = tree_args(argmax_tree, q)
        q = table
        status = _backend.kernels().greedy_tree(q, nodes, block_size, states, out)
        raise_for_tree_status(status, {"states": (states, q.shape[0])})
    _finish(status, states, q)
    return out


def epsilon_greedy(q, states, epsilon: float, seed, argmax_tree=None) -> np.ndarray:
    r"""ε-greedy actions (Sutton & Barto 2018, §2.2/§5.4).

    With probability ε a uniformly random action among all V (the greedy one included), otherwise
    the greedy action, so :math:`\pi(a|s) = \varepsilon / V + (1-\varepsilon)\,[a = \arg\max Q(s,\cdot)]`.

    Randomness: item ``i`` uses counters ``c + 2i`` (explore when its uniform < ε) and ``c + 2i + 1``
    (which action: ``floor(u * V)``); the call consumes ``2 * len(states)`` counters of ``seed``
    (an int, or a :class:`fastlmrl.RandomStream` that is advanced).  With ``argmax_tree`` (a
    :class:`fastlmrl.ArgmaxTree` built for ``q``) the greedy action is read from the tree in O(1);
    the draws and the result are identical.
    """
    epsilon = check.real(epsilon, "epsilon", 0.0, 1.0)
    table, states, out = _prepare(q, states)
    key, counter = check_capacity(seed, 2 * states.shape[0])
    if argmax_tree is None:
        status = _backend.kernels().epsilon_greedy(
            table, states, epsilon, np.uint64(key), np.uint64(counter), out,
            _free_cores.threads()
        )
    else:
        nodes, block_size = tree_args(argmax_tree, q)
        q = table
        status = _backend.kernels().epsilon_greedy_tree(
            q, nodes, block_size, states, epsilon, np.uint64(key), np.uint64(counter), out
        )
        raise_for_tree_status(status, {"states": (states, q.shape[0])})
    _finish(status, states, table)
    advance(seed, 2 * states.shape[0])
    return out


def boltzmann(q, states, temperature: float, seed) -> np.ndarray:
    r"""Boltzmann (softmax) exploration: :math:`\pi(a|s) \propto \exp(Q(s,a)/\tau)` (Sutton & Barto §13.1).

    Sampled by inverse CDF in float64: with :math:`m = \max_a Q(s,a)`,
    :math:`w_a = \exp((Q(s,a) - m)/\tau)`, the action is the first ``a`` with
    :math:`u \sum_b w_b < \sum_{b \le a} w_b`.  Item ``i`` uses counter ``c + i``; the call consumes
    ``len(states)`` counters.  Anneal τ with :class:`fastlmrl.schedules.ExponentialSchedule`.
    """
    temperature = check.real(temperature, "temperature", 0.0, None, low_open=True)
    q, states, out = _prepare(q, states)
    key, counter = check_capacity(seed, states.shape[0])
    status = _backend.kernels().boltzmann(
        q, states, temperature, np.uint64(key), np.uint64(counter), out, _free_cores.threads()
    )
    _finish(status, states, q)
    advance(seed, states.shape[0])
    return out
