# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython temporal-difference updates (same semantics, same rounding as the reference)."""

__all__ = ["double_q_learning_update", "expected_sarsa_update", "q_learning_update", "sarsa_update"]
from libc.math cimport isfinite
from libc.stdint cimport uint64_t

from fastlmrl._cython._common cimport (real_t, index_t, uniform, row_max, row_argmax,
                                       out_of_range)

from fastlmrl._cython.overlap cimport span_1d, span_2d, written_overlap

cdef enum:
    BAD_SHAPES = 7  # fastlmrl._status.BAD_SHAPES
    OVERLAPPING_ARRAYS = 8  # fastlmrl._status.OVERLAPPING_ARRAYS


cdef inline bint _batch_overlaps(const real_t[:, ::1] q, const real_t[:, ::1] q2, bint two_tables,
                                 const index_t[::1] states, const index_t[::1] actions,
                                 const real_t[::1] rewards, const index_t[::1] next_states,
                                 const index_t[::1] next_actions,
                                 const unsigned char[::1] terminated,
                                 const real_t[::1] td_out) noexcept nogil:
    """A written array (q, q2 when two_tables, td_out) sharing memory with another argument
    (next_actions: pass states[:0] when there are none)."""
    cdef const char* start[9]
    cdef size_t size[9]
    span_2d(&q[0, 0], q.shape[0], q.shape[1], sizeof(real_t), start, size, 0)
    span_2d(&q2[0, 0], q2.shape[0] if two_tables else 0, q2.shape[1], sizeof(real_t), start, size,
            1)
    span_1d(&td_out[0], td_out.shape[0], sizeof(real_t), start, size, 2)
    span_1d(&states[0], states.shape[0], sizeof(index_t), start, size, 3)
    span_1d(&actions[0], actions.shape[0], sizeof(index_t), start, size, 4)
    span_1d(&rewards[0], rewards.shape[0], sizeof(real_t), start, size, 5)
    span_1d(&next_states[0], next_states.shape[0], sizeof(index_t), start, size, 6)
    span_1d(&next_actions[0], next_actions.shape[0], sizeof(index_t), start, size, 7)
    span_1d(&terminated[0], terminated.shape[0], 1, start, size, 8)
    return written_overlap(3, 9, start, size)


cdef inline bint _shapes_ok(const real_t[:, ::1] q, const real_t[:, ::1] q2,
                            const index_t[::1] states, const index_t[::1] actions,
                            const real_t[::1] rewards, const index_t[::1] next_states,
                            const index_t[::1] next_actions, const unsigned char[::1] terminated,
                            const real_t[::1] td_out) noexcept nogil:
    """The shape check (first): q2 of q's shape, every per-transition array of states' length N.
    A kernel without a second table (next actions) passes q (states) again."""
    cdef Py_ssize_t n = states.shape[0]
    return (q2.shape[0] == q.shape[0] and q2.shape[1] == q.shape[1] and actions.shape[0] == n
            and rewards.shape[0] == n and next_states.shape[0] == n
            and next_actions.shape[0] == n and terminated.shape[0] == n and td_out.shape[0] == n)


cdef inline int rates_status(double alpha, double gamma, double epsilon) noexcept nogil:
    """The step size, discount (and epsilon) a kernel is given, checked like the public API:
    12 alpha outside (0, 1] (or NaN), 13 gamma outside [0, 1], 14 epsilon outside [0, 1]."""
    if not (alpha > 0.0 and alpha <= 1.0):
        return 12
    if not (gamma >= 0.0 and gamma <= 1.0):
        return 13
    if not (epsilon >= 0.0 and epsilon <= 1.0):
        return 14
    return 0


cdef inline int _check(Py_ssize_t n_states, Py_ssize_t n_actions, const index_t[::1] states,
                       const index_t[::1] actions, const real_t[::1] rewards,
                       const index_t[::1] next_states, const index_t[::1] next_actions) noexcept nogil:
    """0, or the status code of the first bad argument: one branch-free pass over the batch;
    only a failing batch pays for finding which argument."""
    cdef Py_ssize_t i
    cdef bint ok = True
    for i in range(states.shape[0]):
        ok &= ((states[i] >= 0) & (states[i] < n_states) & (actions[i] >= 0)
               & (actions[i] < n_actions) & (next_states[i] >= 0)
               & (next_states[i] < n_states) & (isfinite(rewards[i]) != 0))
    for i in range(next_actions.shape[0]):
        ok &= (next_actions[i] >= 0) & (next_actions[i] < n_actions)
    if ok:
        return 0
    if out_of_range(states, n_states):
        return 1
    if out_of_range(actions, n_actions):
        return 2
    if out_of_range(next_states, n_states):
        return 3
    if out_of_range(next_actions, n_actions):
        return 4
    return 5


cdef int q_learning_update_core(real_t[:, ::1] q, const index_t[::1] states,
                                const index_t[::1] actions, const real_t[::1] rewards,
                                const index_t[::1] next_states, const unsigned char[::1] terminated,
                                double alpha, double gamma, real_t[::1] td_out) noexcept nogil:
    cdef Py_ssize_t i, s, a, n_actions = q.shape[1]
    cdef double q_sa, target, td
    cdef int status
    if not _shapes_ok(q, q, states, actions, rewards, next_states, states, terminated, td_out):
        return BAD_SHAPES
    if _batch_overlaps(q, q, False, states, actions, rewards, next_states, states[:0], terminated,
                       td_out):
        return OVERLAPPING_ARRAYS
    status = rates_status(alpha, gamma, 0.0)
    if status:
        return status
    status = _check(q.shape[0], n_actions, states, actions, rewards, next_states, states[:0])
    if status:
        return status
    for i in range(states.shape[0]):
        s = states[i]
        a = actions[i]
        q_sa = q[s, a]
        target = rewards[i]
        if not terminated[i]:
            target = target + gamma * row_max(&q[next_states[i], 0], n_actions)
        td = target - q_sa
        q[s, a] = <real_t>(q_sa + alpha * td)
        td_out[i] = <real_t>td
    return 0


cdef int sarsa_update_core(real_t[:, ::1] q, const index_t[::1] states, const index_t[::1] actions,
                           const real_t[::1] rewards, const index_t[::1] next_states,
                           const index_t[::1] next_actions, const unsigned char[::1] terminated,
                           double alpha, double gamma, real_t[::1] td_out) noexcept nogil:
    cdef Py_ssize_t i, s, a
    cdef double q_sa, target, td
    cdef int status
    if not _shapes_ok(q, q, states, actions, rewards, next_states, next_actions, terminated,
                      td_out):
        return BAD_SHAPES
    if _batch_overlaps(q, q, False, states, actions, rewards, next_states, next_actions,
                       terminated, td_out):
        return OVERLAPPING_ARRAYS
    status = rates_status(alpha, gamma, 0.0)
    if status:
        return status
    status = _check(q.shape[0], q.shape[1], states, actions, rewards, next_states, next_actions)
    if status:
        return status
    for i in range(states.shape[0]):
        s = states[i]
        a = actions[i]
        q_sa = q[s, a]
        target = rewards[i]
        if not terminated[i]:
            target = target + gamma * <double>q[next_states[i], next_actions[i]]
        td = target - q_sa
        q[s, a] = <real_t>(q_sa + alpha * td)
        td_out[i] = <real_t>td
    return 0


cdef int expected_sarsa_update_core(real_t[:, ::1] q, const index_t[::1] states,
                                    const index_t[::1] actions, const real_t[::1] rewards,
                                    const index_t[::1] next_states,
                                    const unsigned char[::1] terminated, double alpha, double gamma,
                                    double epsilon, real_t[::1] td_out) noexcept nogil:
    cdef Py_ssize_t i, s, a, b, n_actions = q.shape[1]
    cdef double q_sa, target, td, total, expectation
    cdef const real_t* row
    cdef int status
    if not _shapes_ok(q, q, states, actions, rewards, next_states, states, terminated, td_out):
        return BAD_SHAPES
    if _batch_overlaps(q, q, False, states, actions, rewards, next_states, states[:0], terminated,
                       td_out):
        return OVERLAPPING_ARRAYS
    status = rates_status(alpha, gamma, epsilon)
    if status:
        return status
    status = _check(q.shape[0], n_actions, states, actions, rewards, next_states, states[:0])
    if status:
        return status
    for i in range(states.shape[0]):
        s = states[i]
        a = actions[i]
        q_sa = q[s, a]
        target = rewards[i]
        if not terminated[i]:
            row = &q[next_states[i], 0]
            total = 0.0
            for b in range(n_actions):
                total += row[b]
            expectation = (1.0 - epsilon) * row_max(row, n_actions) + epsilon * (total / n_actions)
            target = target + gamma * expectation
        td = target - q_sa
        q[s, a] = <real_t>(q_sa + alpha * td)
        td_out[i] = <real_t>td
    return 0


cdef inline double _double_q_step(real_t[:, ::1] learner, real_t[:, ::1] evaluator, Py_ssize_t s,
                                  Py_ssize_t a, double r, Py_ssize_t s2, bint terminal,
                                  double alpha, double gamma) noexcept nogil:
    cdef double q_sa = learner[s, a], target = r, td
    if not terminal:
        target = target + gamma * <double>evaluator[s2, row_argmax(&learner[s2, 0],
                                                                    learner.shape[1])]
    td = target - q_sa
    learner[s, a] = <real_t>(q_sa + alpha * td)
    return td


cdef int double_q_learning_update_core(real_t[:, ::1] q1, real_t[:, ::1] q2,
                                       const index_t[::1] states, const index_t[::1] actions,
                                       const real_t[::1] rewards, const index_t[::1] next_states,
                                       const unsigned char[::1] terminated, double alpha,
                                       double gamma, uint64_t key, uint64_t counter,
                                       real_t[::1] td_out) noexcept nogil:
    cdef Py_ssize_t i
    cdef double td
    cdef int status
    if not _shapes_ok(q1, q2, states, actions, rewards, next_states, states, terminated, td_out):
        return BAD_SHAPES
    if _batch_overlaps(q1, q2, True, states, actions, rewards, next_states, states[:0],
                       terminated, td_out):
        return OVERLAPPING_ARRAYS
    status = rates_status(alpha, gamma, 0.0)
    if status:
        return status
    status = _check(q1.shape[0], q1.shape[1], states, actions, rewards, next_states, states[:0])
    if status:
        return status
    for i in range(states.shape[0]):
        if uniform(key, counter + <uint64_t>i) < 0.5:
            td = _double_q_step(q1, q2, states[i], actions[i], rewards[i], next_states[i],
                                terminated[i], alpha, gamma)
        else:
            td = _double_q_step(q2, q1, states[i], actions[i], rewards[i], next_states[i],
                                terminated[i], alpha, gamma)
        td_out[i] = <real_t>td
    return 0


def q_learning_update(real_t[:, ::1] q, const index_t[::1] states, const index_t[::1] actions,
                      const real_t[::1] rewards, const index_t[::1] next_states,
                      const unsigned char[::1] terminated, double alpha, double gamma,
                      real_t[::1] td_out):
    cdef int status
    with nogil:
        status = q_learning_update_core(q, states, actions, rewards, next_states, terminated,
                                        alpha, gamma, td_out)
    return status


def sarsa_update(real_t[:, ::1] q, const index_t[::1] states, const index_t[::1] actions,
                 const real_t[::1] rewards, const index_t[::1] next_states,
                 const index_t[::1] next_actions, const unsigned char[::1] terminated,
                 double alpha, double gamma, real_t[::1] td_out):
    cdef int status
    with nogil:
        status = sarsa_update_core(q, states, actions, rewards, next_states, next_actions,
                                   terminated, alpha, gamma, td_out)
    return status


def expected_sarsa_update(real_t[:, ::1] q, const index_t[::1] states, const index_t[::1] actions,
                          const real_t[::1] rewards, const index_t[::1] next_states,
                          const unsigned char[::1] terminated, double alpha, double gamma,
                          double epsilon, real_t[::1] td_out):
    cdef int status
    with nogil:
        status = expected_sarsa_update_core(q, states, actions, rewards, next_states, terminated,
                                            alpha, gamma, epsilon, td_out)
    return status


def double_q_learning_update(real_t[:, ::1] q1, real_t[:, ::1] q2, const index_t[::1] states,
                             const index_t[::1] actions, const real_t[::1] rewards,
                             const index_t[::1] next_states, const unsigned char[::1] terminated,
                             double alpha, double gamma, uint64_t key, uint64_t counter,
                             real_t[::1] td_out):
    cdef int status
    with nogil:
        status = double_q_learning_update_core(q1, q2, states, actions, rewards, next_states,
                                               terminated, alpha, gamma, key, counter, td_out)
    return status
