# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython temporal-difference updates (same semantics, same rounding as the reference)."""

__all__ = ["double_q_learning_update", "expected_sarsa_update", "q_learning_update",
           "q_learning_update_one", "sarsa_update"]
from libc.math cimport isfinite
from libc.stdint cimport uint64_t

from fastlmrl._cython._common cimport (real_t, index_t, uniform, row_max, row_argmax,
                                       out_of_range)

from fastlmrl._cython.overlap cimport span_1d, span_2d, written_overlap
# status codes: fastlmrl._status.Status (status.pxd is generated from it)
from fastlmrl._cython cimport status as st


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
    BAD_ALPHA alpha outside (0, 1] (or NaN), BAD_GAMMA gamma outside [0, 1], BAD_EPSILON epsilon
    outside [0, 1]."""
    if not (alpha > 0.0 and alpha <= 1.0):
        return st.BAD_ALPHA
    if not (gamma >= 0.0 and gamma <= 1.0):
        return st.BAD_GAMMA
    if not (epsilon >= 0.0 and epsilon <= 1.0):
        return st.BAD_EPSILON
    return st.OK


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
        return st.BAD_STATES
    if out_of_range(actions, n_actions):
        return st.BAD_ACTIONS
    if out_of_range(next_states, n_states):
        return st.BAD_NEXT_STATES
    if out_of_range(next_actions, n_actions):
        return st.BAD_NEXT_ACTIONS
    return st.BAD_REWARDS


cdef int q_learning_update_core(real_t[:, ::1] q, const index_t[::1] states,
                                const index_t[::1] actions, const real_t[::1] rewards,
                                const index_t[::1] next_states, const unsigned char[::1] terminated,
                                double alpha, double gamma, real_t[::1] td_out) noexcept nogil:
    cdef Py_ssize_t i, s, a, n_actions = q.shape[1]
    cdef double q_sa, target, td
    cdef int status
    if not _shapes_ok(q, q, states, actions, rewards, next_states, states, terminated, td_out):
        return st.BAD_SHAPES
    if _batch_overlaps(q, q, False, states, actions, rewards, next_states, states[:0], terminated,
                       td_out):
        return st.OVERLAPPING_ARRAYS
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


cdef int q_learning_update_one_core(real_t[:, ::1] q, Py_ssize_t state, Py_ssize_t action,
                                    double reward, Py_ssize_t next_state, bint terminated,
                                    double alpha, double gamma, double* td) noexcept nogil:
    """One transition (O(1) checks: alpha, gamma, state, action, next_state, reward); writes the
    TD error, rounded to the table's dtype, to ``*td`` (0.0 when the status is not 0).  The
    reward is rounded to the table's dtype first, as the public API does."""
    cdef double q_sa, target, delta, r
    cdef int status = rates_status(alpha, gamma, 0.0)
    td[0] = 0.0
    if status:
        return status
    if not (0 <= state < q.shape[0]):
        return st.BAD_STATES
    if not (0 <= action < q.shape[1]):
        return st.BAD_ACTIONS
    if not (0 <= next_state < q.shape[0]):
        return st.BAD_NEXT_STATES
    r = <real_t>reward
    if not isfinite(r):
        return st.BAD_REWARDS
    q_sa = q[state, action]
    target = r
    if not terminated:
        target = target + gamma * row_max(&q[next_state, 0], q.shape[1])
    delta = target - q_sa
    q[state, action] = <real_t>(q_sa + alpha * delta)
    td[0] = <real_t>delta
    return st.OK


cdef int sarsa_update_core(real_t[:, ::1] q, const index_t[::1] states, const index_t[::1] actions,
                           const real_t[::1] rewards, const index_t[::1] next_states,
                           const index_t[::1] next_actions, const unsigned char[::1] terminated,
                           double alpha, double gamma, real_t[::1] td_out) noexcept nogil:
    cdef Py_ssize_t i, s, a
    cdef double q_sa, target, td
    cdef int status
    if not _shapes_ok(q, q, states, actions, rewards, next_states, next_actions, terminated,
                      td_out):
        return st.BAD_SHAPES
    if _batch_overlaps(q, q, False, states, actions, rewards, next_states, next_actions,
                       terminated, td_out):
        return st.OVERLAPPING_ARRAYS
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
        return st.BAD_SHAPES
    if _batch_overlaps(q, q, False, states, actions, rewards, next_states, states[:0], terminated,
                       td_out):
        return st.OVERLAPPING_ARRAYS
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
        return st.BAD_SHAPES
    if _batch_overlaps(q1, q2, True, states, actions, rewards, next_states, states[:0],
                       terminated, td_out):
        return st.OVERLAPPING_ARRAYS
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


def q_learning_update_one(real_t[:, ::1] q, Py_ssize_t state, Py_ssize_t action, double reward,
                          Py_ssize_t next_state, bint terminated, double alpha, double gamma):
    """One transition: ``q_learning_update`` of a batch of one; returns ``(status, td)``."""
    cdef int status
    cdef double td
    status = q_learning_update_one_core(q, state, action, reward, next_state, terminated, alpha,
                                        gamma, &td)
    return status, td


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
