# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython action selection: greedy, epsilon-greedy, Boltzmann (same semantics as the reference)."""

__all__ = ["boltzmann", "epsilon_greedy", "epsilon_greedy_one", "greedy"]
from cython.parallel cimport prange
from libc.math cimport exp, INFINITY
from libc.stdint cimport int64_t, uint64_t

from fastlmrl._cython._common cimport (real_t, index_t, uniform, row_max, row_argmax,
                                       out_of_range)

cdef Py_ssize_t PARALLEL_MIN_BATCH = 8192
# Items a thread claims at a time (dynamic schedule: a thread slowed by another process on its
# core takes fewer chunks instead of holding the others up at the end).
cdef Py_ssize_t CHUNK = 2048
cdef int SERIAL = 1  # one thread: the serial loop

from fastlmrl._cython.overlap cimport span_1d, span_2d, written_overlap

# status codes: fastlmrl._status.Status (status.pxd is generated from it)
from fastlmrl._cython cimport status as st

import operator
import os

# More threads than cores gain nothing (results never depend on the count); a huge num_threads
# from a direct caller is clamped instead of asking OpenMP for billions of threads.
cdef int MAX_THREADS = max(1, os.cpu_count() or 1)


cdef int _thread_count(object num_threads) except -1:
    """num_threads (any Python integer; TypeError otherwise) clamped to [1, cores]."""
    n = operator.index(num_threads)
    return <int>min(max(n, SERIAL), MAX_THREADS)


cdef inline bint _out_overlaps(const real_t[:, ::1] q, const index_t[::1] states,
                               const int64_t[::1] out) noexcept nogil:
    cdef const char* start[3]
    cdef size_t size[3]
    span_1d(&out[0], out.shape[0], sizeof(int64_t), start, size, 0)
    span_2d(&q[0, 0], q.shape[0], q.shape[1], sizeof(real_t), start, size, 1)
    span_1d(&states[0], states.shape[0], sizeof(index_t), start, size, 2)
    return written_overlap(1, 3, start, size)


cdef inline bint _shapes_ok(Py_ssize_t n_states, Py_ssize_t n_out) noexcept nogil:
    """The shape check (first): one output per state (the lengths of states and out)."""
    return n_out == n_states


cdef inline int _threads(int num_threads, Py_ssize_t n) noexcept nogil:
    if num_threads <= 1 or n < PARALLEL_MIN_BATCH:
        return SERIAL
    return num_threads


cdef inline int64_t _epsilon_greedy_one(const real_t[:, ::1] q, Py_ssize_t s, double epsilon,
                                        uint64_t key, uint64_t c) noexcept nogil:
    cdef Py_ssize_t n_actions = q.shape[1]
    if uniform(key, c) < epsilon:
        return <int64_t>(uniform(key, c + 1) * n_actions)
    return row_argmax(&q[s, 0], n_actions)


cdef inline int64_t _boltzmann_one(const real_t[:, ::1] q, Py_ssize_t s, double temperature,
                                   double u) noexcept nogil:
    cdef Py_ssize_t n_actions = q.shape[1]
    cdef const real_t* row = &q[s, 0]
    cdef double m = row_max(row, n_actions)
    cdef double total = 0.0, cumulative = 0.0, target, w
    cdef Py_ssize_t a, last_positive = 0
    for a in range(n_actions):
        total += exp((row[a] - m) / temperature)
    target = u * total
    for a in range(n_actions):
        w = exp((row[a] - m) / temperature)
        if w > 0.0:
            last_positive = a
        cumulative += w
        if target < cumulative:
            return a
    return last_positive


cdef int greedy_core(const real_t[:, ::1] q, const index_t[::1] states, int64_t[::1] out,
                     int num_threads) noexcept nogil:
    cdef Py_ssize_t i, n = states.shape[0], n_actions = q.shape[1]
    cdef int threads
    if not _shapes_ok(states.shape[0], out.shape[0]):
        return st.BAD_SHAPES
    if _out_overlaps(q, states, out):
        return st.OVERLAPPING_ARRAYS
    if out_of_range(states, q.shape[0]):
        return st.BAD_STATES
    threads = _threads(num_threads, n)
    if threads > 1:
        for i in prange(n, num_threads=threads, schedule="dynamic", chunksize=CHUNK):
            out[i] = row_argmax(&q[states[i], 0], n_actions)
    else:
        for i in range(n):
            out[i] = row_argmax(&q[states[i], 0], n_actions)
    return st.OK


cdef int epsilon_greedy_core(const real_t[:, ::1] q, const index_t[::1] states, double epsilon,
                             uint64_t key, uint64_t counter, int64_t[::1] out,
                             int num_threads) noexcept nogil:
    cdef Py_ssize_t i, n = states.shape[0]
    cdef int threads
    if not _shapes_ok(states.shape[0], out.shape[0]):
        return st.BAD_SHAPES
    if _out_overlaps(q, states, out):
        return st.OVERLAPPING_ARRAYS
    if not (epsilon >= 0.0 and epsilon <= 1.0):
        return st.BAD_EPSILON
    if out_of_range(states, q.shape[0]):
        return st.BAD_STATES
    threads = _threads(num_threads, n)
    if threads > 1:
        for i in prange(n, num_threads=threads, schedule="dynamic", chunksize=CHUNK):
            out[i] = _epsilon_greedy_one(q, states[i], epsilon, key, counter + 2 * <uint64_t>i)
    else:
        for i in range(n):
            out[i] = _epsilon_greedy_one(q, states[i], epsilon, key, counter + 2 * <uint64_t>i)
    return st.OK


cdef int epsilon_greedy_one_core(const real_t[:, ::1] q, Py_ssize_t state, double epsilon,
                                 uint64_t key, uint64_t counter, int64_t* action) noexcept nogil:
    """One state (O(1) checks: epsilon, state); writes the action to ``*action`` (0 when the
    status is not 0).  Counters ``counter`` and ``counter + 1``, like item 0 of the batch."""
    action[0] = 0
    if not (epsilon >= 0.0 and epsilon <= 1.0):
        return st.BAD_EPSILON
    if not (0 <= state < q.shape[0]):
        return st.BAD_STATES
    action[0] = _epsilon_greedy_one(q, state, epsilon, key, counter)
    return st.OK


cdef int boltzmann_core(const real_t[:, ::1] q, const index_t[::1] states, double temperature,
                        uint64_t key, uint64_t counter, int64_t[::1] out,
                        int num_threads) noexcept nogil:
    cdef Py_ssize_t i, n = states.shape[0]
    cdef int threads
    if not _shapes_ok(states.shape[0], out.shape[0]):
        return st.BAD_SHAPES
    if _out_overlaps(q, states, out):
        return st.OVERLAPPING_ARRAYS
    if not (temperature > 0.0 and temperature < INFINITY):
        return st.BAD_TEMPERATURE
    if out_of_range(states, q.shape[0]):
        return st.BAD_STATES
    threads = _threads(num_threads, n)
    if threads > 1:
        for i in prange(n, num_threads=threads, schedule="dynamic", chunksize=CHUNK):
            out[i] = _boltzmann_one(q, states[i], temperature, uniform(key, counter + <uint64_t>i))
    else:
        for i in range(n):
            out[i] = _boltzmann_one(q, states[i], temperature, uniform(key, counter + <uint64_t>i))
    return st.OK


def greedy(const real_t[:, ::1] q, const index_t[::1] states, int64_t[::1] out, num_threads):
    cdef int status, threads = _thread_count(num_threads)
    with nogil:
        status = greedy_core(q, states, out, threads)
    return status


def epsilon_greedy(const real_t[:, ::1] q, const index_t[::1] states, double epsilon,
                   uint64_t key, uint64_t counter, int64_t[::1] out, num_threads):
    cdef int status, threads = _thread_count(num_threads)
    with nogil:
        status = epsilon_greedy_core(q, states, epsilon, key, counter, out, threads)
    return status


def epsilon_greedy_one(const real_t[:, ::1] q, Py_ssize_t state, double epsilon, uint64_t key,
                       uint64_t counter):
    """One state: ``epsilon_greedy`` of a batch of one; returns ``(status, action)``."""
    cdef int status
    cdef int64_t action
    status = epsilon_greedy_one_core(q, state, epsilon, key, counter, &action)
    return status, action


def boltzmann(const real_t[:, ::1] q, const index_t[::1] states, double temperature,
              uint64_t key, uint64_t counter, int64_t[::1] out, num_threads):
    cdef int status, threads = _thread_count(num_threads)
    with nogil:
        status = boltzmann_core(q, states, temperature, key, counter, out, threads)
    return status
