"""Numba action selection: greedy, epsilon-greedy, Boltzmann (same semantics as the reference)."""

__all__ = ["boltzmann", "epsilon_greedy", "greedy"]
import math

import numpy as np
from numba import njit, prange

from .._status import BAD_SHAPES, OVERLAPPING_ARRAYS
from .overlap import written_overlaps

BAD_EPSILON = 10  # epsilon outside [0, 1] (or NaN)
BAD_TEMPERATURE = 11  # temperature not a finite number > 0
from ._common import NJIT, out_of_range, row_argmax, row_max, uniform

PARALLEL_MIN_BATCH = 8192


@njit(**NJIT)
def _shapes_ok(states, out):
    """The shape check (first): one output per state."""
    return out.shape[0] == states.shape[0]


@njit(**NJIT)
def _boltzmann_one(q, s, temperature, u):
    m = row_max(q, s)
    total = 0.0
    for a in range(q.shape[1]):
        total += math.exp((q[s, a] - m) / temperature)
    target = u * total
    cumulative = 0.0
    last_positive = 0
    for a in range(q.shape[1]):
        w = math.exp((q[s, a] - m) / temperature)
        if w > 0.0:
            last_positive = a
        cumulative += w
        if target < cumulative:
            return a
    return last_positive


# The serial loops are separate functions: inlined into the dispatching kernel (which also holds
# the prange call) they ran 1.6x slower (measured, numba 0.68).
@njit(**NJIT)
def _greedy_serial(q, states, out):
    for i in range(states.shape[0]):
        out[i] = row_argmax(q, np.uint64(states[i]))


@njit(**NJIT)
def _boltzmann_serial(q, states, temperature, key, counter, out):
    for i in range(states.shape[0]):
        u = uniform(key, counter + np.uint64(i))
        out[i] = _boltzmann_one(q, np.uint64(states[i]), temperature, u)


@njit(cache=True, nogil=True, parallel=True)
def _greedy_parallel(q, states, out):
    for i in prange(states.shape[0]):
        out[i] = row_argmax(q, np.uint64(states[i]))


@njit(**NJIT)
def _epsilon_greedy_serial(q, states, epsilon, key, counter, out):
    n_actions = q.shape[1]
    for i in range(states.shape[0]):
        c = counter + np.uint64(2) * np.uint64(i)
        if uniform(key, c) < epsilon:
            out[i] = np.int64(uniform(key, c + np.uint64(1)) * n_actions)
        else:
            out[i] = row_argmax(q, np.uint64(states[i]))  # ids checked: unsigned indexing


@njit(cache=True, nogil=True, parallel=True)
def _epsilon_greedy_parallel(q, states, epsilon, key, counter, out):
    # written out, not through a helper: measured 1.6x faster here (see DEVELOPING.md)
    n_actions = q.shape[1]
    for i in prange(states.shape[0]):
        c = counter + np.uint64(2) * np.uint64(i)
        if uniform(key, c) < epsilon:
            out[i] = np.int64(uniform(key, c + np.uint64(1)) * n_actions)
        else:
            out[i] = row_argmax(q, np.uint64(states[i]))


@njit(cache=True, nogil=True, parallel=True)
def _boltzmann_parallel(q, states, temperature, key, counter, out):
    for i in prange(states.shape[0]):
        u = uniform(key, counter + np.uint64(i))
        out[i] = _boltzmann_one(q, states[i], temperature, u)


@njit(**NJIT)
def _parallel(num_threads, n):
    """Use the prange kernel? Only for large batches when more than one thread is asked for.

    The thread count itself is numba's (``numba.set_num_threads``, which
    ``fastlmrl.set_num_threads`` calls); results do not depend on it.
    """
    return num_threads > 1 and n >= PARALLEL_MIN_BATCH


@njit(**NJIT)
def greedy(q, states, out, num_threads):
    if not _shapes_ok(states, out):
        return BAD_SHAPES
    if written_overlaps(out, q, states, out[:0], out[:0], out[:0], out[:0], out[:0]):
        return OVERLAPPING_ARRAYS
    if out_of_range(states, q.shape[0]):
        return 1
    if _parallel(num_threads, states.shape[0]):
        _greedy_parallel(q, states, out)
    else:
        _greedy_serial(q, states, out)
    return 0


@njit(**NJIT)
def epsilon_greedy(q, states, epsilon, key, counter, out, num_threads):
    if not _shapes_ok(states, out):
        return BAD_SHAPES
    if written_overlaps(out, q, states, out[:0], out[:0], out[:0], out[:0], out[:0]):
        return OVERLAPPING_ARRAYS
    if not (epsilon >= 0.0 and epsilon <= 1.0):
        return BAD_EPSILON
    if out_of_range(states, q.shape[0]):
        return 1
    key = np.uint64(key)
    counter = np.uint64(counter)
    if _parallel(num_threads, states.shape[0]):
        _epsilon_greedy_parallel(q, states, epsilon, key, counter, out)
    else:
        _epsilon_greedy_serial(q, states, epsilon, key, counter, out)
    return 0


@njit(**NJIT)
def boltzmann(q, states, temperature, key, counter, out, num_threads):
    if not _shapes_ok(states, out):
        return BAD_SHAPES
    if written_overlaps(out, q, states, out[:0], out[:0], out[:0], out[:0], out[:0]):
        return OVERLAPPING_ARRAYS
    if not (temperature > 0.0 and temperature < np.inf):
        return BAD_TEMPERATURE
    if out_of_range(states, q.shape[0]):
        return 1
    key = np.uint64(key)
    counter = np.uint64(counter)
    if _parallel(num_threads, states.shape[0]):
        _boltzmann_parallel(q, states, temperature, key, counter, out)
    else:
        _boltzmann_serial(q, states, temperature, key, counter, out)
    return 0
