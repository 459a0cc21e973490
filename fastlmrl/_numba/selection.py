"""Numba action selection: greedy, epsilon-greedy, Boltzmann (same semantics as the reference)."""

__all__ = ["boltzmann", "epsilon_greedy", "epsilon_greedy_one", "greedy"]
import math

import numpy as np
from numba import njit, prange

# status codes: fastlmrl._status.Status, bound as plain ints (Numba globals)
from .._status import (
    BAD_EPSILON,  # epsilon outside [0, 1] (or NaN)
    BAD_SHAPES,
    BAD_STATES,
    BAD_TEMPERATURE,  # temperature not a finite number > 0
    OVERLAPPING_ARRAYS,
)
from ._common import NJIT, out_of_range, row_argmax, row_max, uniform
from .fast_math import fetch_add
from .overlap import written_overlaps
from .td_learning import integer_id

PARALLEL_MIN_BATCH = 8192
SERIAL = 1  # one worker: the serial loop
# Items a worker claims at a time from a shared counter (dynamic schedule: a worker slowed by
# another process on its core takes fewer chunks instead of holding the others up at the end).
CHUNK = 2048


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


@njit(**NJIT)
def _claim(claimed, n):
    """The next chunk [lo, hi) of items (empty when none is left)."""
    lo = min(fetch_add(claimed, CHUNK), n)
    return lo, min(lo + CHUNK, n)


@njit(cache=True, nogil=True, parallel=True)
def _greedy_parallel(q, states, out, nt):
    claimed = np.zeros(1, dtype=np.int64)
    n = states.shape[0]
    for _worker in prange(nt):
        lo, hi = _claim(claimed, n)
        while lo < hi:
            for i in range(lo, hi):
                out[i] = row_argmax(q, np.uint64(states[i]))
            lo, hi = _claim(claimed, n)


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
def _epsilon_greedy_parallel(q, states, epsilon, key, counter, out, nt):
    # written out, not through a helper: measured 1.6x faster here (see DEVELOPING.md)
    n_actions = q.shape[1]
    claimed = np.zeros(1, dtype=np.int64)
    n = states.shape[0]
    for _worker in prange(nt):
        lo, hi = _claim(claimed, n)
        while lo < hi:
            for i in range(lo, hi):
                c = counter + np.uint64(2) * np.uint64(i)
                if uniform(key, c) < epsilon:
                    out[i] = np.int64(uniform(key, c + np.uint64(1)) * n_actions)
                else:
                    out[i] = row_argmax(q, np.uint64(states[i]))
            lo, hi = _claim(claimed, n)


@njit(cache=True, nogil=True, parallel=True)
def _boltzmann_parallel(q, states, temperature, key, counter, out, nt):
    claimed = np.zeros(1, dtype=np.int64)
    n = states.shape[0]
    for _worker in prange(nt):
        lo, hi = _claim(claimed, n)
        while lo < hi:
            for i in range(lo, hi):
                u = uniform(key, counter + np.uint64(i))
                out[i] = _boltzmann_one(q, states[i], temperature, u)
            lo, hi = _claim(claimed, n)


@njit(**NJIT)
def _workers(num_threads, n):
    """Workers of the prange kernel: 1 (serial loop) for small batches or one thread, else
    num_threads, at most one per chunk (numba runs them on its thread pool, sized by
    ``numba.set_num_threads``, which ``fastlmrl.set_num_threads`` calls); results do not depend
    on it."""
    if num_threads <= 1 or n < PARALLEL_MIN_BATCH:
        return SERIAL
    return min(num_threads, (n + CHUNK - 1) // CHUNK)


@njit(**NJIT)
def greedy(q, states, out, num_threads):
    if not _shapes_ok(states, out):
        return BAD_SHAPES
    if written_overlaps(out, q, states, out[:0], out[:0], out[:0], out[:0], out[:0]):
        return OVERLAPPING_ARRAYS
    if out_of_range(states, q.shape[0]):
        return BAD_STATES
    nt = _workers(num_threads, states.shape[0])
    if nt > 1:
        _greedy_parallel(q, states, out, nt)
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
        return BAD_STATES
    key = np.uint64(key)
    counter = np.uint64(counter)
    nt = _workers(num_threads, states.shape[0])
    if nt > 1:
        _epsilon_greedy_parallel(q, states, epsilon, key, counter, out, nt)
    else:
        _epsilon_greedy_serial(q, states, epsilon, key, counter, out)
    return 0


@njit(**NJIT)
def epsilon_greedy_one(q, state, epsilon, key, counter):
    """One state: ``epsilon_greedy`` of a batch of one, with O(1) checks (for a user's ``@njit``
    loop; no arrays to allocate).

    Returns ``(status, action)`` (action 0 when the status is not 0): BAD_EPSILON for epsilon
    outside [0, 1] (or NaN), then BAD_STATES for a state outside [0, S).  Draws the uniforms at
    ``counter`` (explore?) and ``counter + 1`` (which action), like item 0 of ``epsilon_greedy``.
    """
    state = integer_id(state)
    if not (epsilon >= 0.0 and epsilon <= 1.0):
        return BAD_EPSILON, np.int64(0)
    if not (state >= 0 and state < q.shape[0]):
        return BAD_STATES, np.int64(0)
    key = np.uint64(key)
    c = np.uint64(counter)
    if uniform(key, c) < epsilon:
        return 0, np.int64(uniform(key, c + np.uint64(1)) * q.shape[1])
    return 0, np.int64(row_argmax(q, np.uint64(state)))  # checked: unsigned indexing


@njit(**NJIT)
def boltzmann(q, states, temperature, key, counter, out, num_threads):
    if not _shapes_ok(states, out):
        return BAD_SHAPES
    if written_overlaps(out, q, states, out[:0], out[:0], out[:0], out[:0], out[:0]):
        return OVERLAPPING_ARRAYS
    if not (temperature > 0.0 and temperature < np.inf):
        return BAD_TEMPERATURE
    if out_of_range(states, q.shape[0]):
        return BAD_STATES
    key = np.uint64(key)
    counter = np.uint64(counter)
    nt = _workers(num_threads, states.shape[0])
    if nt > 1:
        _boltzmann_parallel(q, states, temperature, key, counter, out, nt)
    else:
        _boltzmann_serial(q, states, temperature, key, counter, out)
    return 0
