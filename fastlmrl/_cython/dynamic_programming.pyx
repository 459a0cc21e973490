# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython dynamic-programming kernels (same semantics, same operation order as the reference).

Values are float64; every sum is accumulated in float64 in the reference's order, so results are
bit-identical to :mod:`fastlmrl._python.dynamic_programming` (built with -ffp-contract=off).
"""

__all__ = [
    "dense_mdp_action_values",
    "dense_mdp_bellman_backup",
    "dense_mdp_policy_sweeps",
    "dense_mdp_value_iteration",
    "token_mdp_action_values",
    "token_mdp_bellman_backup",
    "token_mdp_find_cycle",
    "token_mdp_policy_sweeps",
    "token_mdp_policy_value",
    "token_mdp_value_iteration",
]
from libc.stdint cimport int64_t
from libc.math cimport isfinite, fabs, NAN

from fastlmrl._cython cimport status as st
from fastlmrl._cython._common cimport real_t, index_t
from fastlmrl._cython.overlap cimport span_1d, span_2d, written_overlap

cdef Py_ssize_t MAX_ITERATIONS = 2147483647  # 2**31 - 1: k, max_iter above it -> BAD_ITERATIONS


# ---------------------------------------------------------------------------------------------
# argument checks (pre-pass)

cdef inline bint _token_shapes_ok(const Py_ssize_t* table, const Py_ssize_t* reward,
                                  Py_ssize_t n_terminal, Py_ssize_t n1, Py_ssize_t n2,
                                  Py_ssize_t n3) noexcept nogil:
    """The shape check (first) of the token layout: ``reward`` of next_state's shape (S, A)
    (``table``), ``terminal`` and the lengths n1..n3 of the kernel's per-state arrays S (a kernel
    with fewer per-state arrays passes a length again)."""
    cdef Py_ssize_t n_states = table[0]
    return (reward[0] == n_states and reward[1] == table[1] and n_terminal == n_states
            and n1 == n_states and n2 == n_states and n3 == n_states)


cdef inline bint _dense_shapes_ok(const Py_ssize_t* P, const Py_ssize_t* R, Py_ssize_t n1,
                                  Py_ssize_t n2, Py_ssize_t n3) noexcept nogil:
    """The shape check (first) of the dense layout: ``P`` (S, A, S) for ``R`` (S, A), and the
    lengths n1..n3 of the kernel's per-state arrays S."""
    cdef Py_ssize_t n_states = R[0]
    return (P[0] == n_states and P[1] == R[1] and P[2] == n_states and n1 == n_states
            and n2 == n_states and n3 == n_states)

cdef inline int _check_token(const index_t[:, ::1] next_state, const real_t[:, ::1] reward,
                             const unsigned char[::1] terminal) noexcept nogil:
    cdef Py_ssize_t s, a, n_states = next_state.shape[0], n_actions = next_state.shape[1]
    cdef index_t t
    if n_actions == 0:
        for s in range(n_states):
            if not terminal[s]:
                return st.BAD_ACTIONS
        return 0
    for s in range(n_states):
        if terminal[s]:
            continue
        for a in range(n_actions):
            t = next_state[s, a]
            if t < 0 or t >= n_states:
                return st.BAD_NEXT_STATES
    for s in range(n_states):
        if terminal[s]:
            continue
        for a in range(n_actions):
            if not isfinite(reward[s, a]):
                return st.BAD_REWARDS
    return 0


cdef inline int _check_dense(const real_t[:, ::1] R) noexcept nogil:
    cdef Py_ssize_t s, a, n_states = R.shape[0], n_actions = R.shape[1]
    if n_actions == 0 and n_states > 0:
        return st.BAD_ACTIONS
    for s in range(n_states):
        for a in range(n_actions):
            if not isfinite(R[s, a]):
                return st.BAD_REWARDS
    return 0


cdef inline int _check_policy(const int64_t[::1] policy, Py_ssize_t n_actions) noexcept nogil:
    cdef Py_ssize_t s
    for s in range(policy.shape[0]):
        if policy[s] < 0 or policy[s] >= n_actions:
            return st.BAD_ACTIONS
    return 0


cdef inline void _token_spans(const index_t[:, ::1] next_state, const real_t[:, ::1] reward,
                              const unsigned char[::1] terminal, const char** start, size_t* size,
                              int k) noexcept nogil:
    """The byte ranges of the token layout's tables in slots k, k + 1, k + 2 of the overlap
    table (next_state, reward, terminal)."""
    span_2d(&next_state[0, 0], next_state.shape[0], next_state.shape[1], sizeof(index_t), start,
            size, k)
    span_2d(&reward[0, 0], reward.shape[0], reward.shape[1], sizeof(real_t), start, size, k + 1)
    span_1d(&terminal[0], terminal.shape[0], sizeof(unsigned char), start, size, k + 2)


cdef inline void _dense_spans(const real_t[:, :, ::1] P, const real_t[:, ::1] R,
                              const char** start, size_t* size, int k) noexcept nogil:
    """The byte ranges of the dense layout's tables in slots k, k + 1 (P, R)."""
    span_2d(&P[0, 0, 0], P.shape[0] * P.shape[1], P.shape[2], sizeof(real_t), start, size, k)
    span_2d(&R[0, 0], R.shape[0], R.shape[1], sizeof(real_t), start, size, k + 1)


cdef inline double* _ptr(double[::1] x) noexcept nogil:
    if x.shape[0] == 0:
        return NULL
    return &x[0]


cdef inline int64_t* _iptr(int64_t[::1] x) noexcept nogil:
    if x.shape[0] == 0:
        return NULL
    return &x[0]


# ---------------------------------------------------------------------------------------------
# sweeps: write T v into v_out and the greedy actions into policy_out, return ||T v - v||_inf

cdef double _token_sweep(const index_t[:, ::1] next_state, const real_t[:, ::1] reward,
                         const unsigned char[::1] terminal, double gamma, const double* v,
                         double* v_out, int64_t* policy_out) noexcept nogil:
    cdef Py_ssize_t s, a, best_a, n_states = next_state.shape[0], n_actions = next_state.shape[1]
    cdef double best, q, d, change = 0.0
    cdef const index_t* row_n
    cdef const real_t* row_r
    for s in range(n_states):
        best = 0.0
        best_a = 0
        if not terminal[s]:
            row_n = &next_state[s, 0]
            row_r = &reward[s, 0]
            best = <double>row_r[0] + gamma * v[row_n[0]]
            for a in range(1, n_actions):
                q = <double>row_r[a] + gamma * v[row_n[a]]
                if q > best:
                    best = q
                    best_a = a
        d = fabs(best - v[s])
        if d > change:
            change = d
        v_out[s] = best
        policy_out[s] = best_a
    return change


cdef inline double _dense_dot(const real_t* row, const double* v, Py_ssize_t n) noexcept nogil:
    cdef double acc = 0.0
    cdef Py_ssize_t t
    for t in range(n):
        acc += <double>row[t] * v[t]
    return acc


cdef inline void _dense_dot4(const real_t* row, Py_ssize_t stride, const double* v,
                             Py_ssize_t n, double* out) noexcept nogil:
    """Four dot products row[j * stride:] . v (j < 4), each summed in index order: the four
    independent chains only add instruction-level parallelism, the rounding is unchanged."""
    cdef double acc0 = 0.0, acc1 = 0.0, acc2 = 0.0, acc3 = 0.0, vt
    cdef Py_ssize_t t
    for t in range(n):
        vt = v[t]
        acc0 += <double>row[t] * vt
        acc1 += <double>row[stride + t] * vt
        acc2 += <double>row[2 * stride + t] * vt
        acc3 += <double>row[3 * stride + t] * vt
    out[0] = acc0
    out[1] = acc1
    out[2] = acc2
    out[3] = acc3


cdef inline void _dense_q_row(const real_t[:, :, ::1] P, const real_t[:, ::1] R, Py_ssize_t s,
                              double gamma, const double* v, double* q_row) noexcept nogil:
    """q_row[a] = R[s, a] + gamma * (P[s, a] . v) for every action a."""
    cdef Py_ssize_t a = 0, j, n_states = R.shape[0], n_actions = R.shape[1]
    cdef double d[4]
    while a + 4 <= n_actions:
        _dense_dot4(&P[s, a, 0], n_states, v, n_states, d)
        for j in range(4):
            q_row[a + j] = <double>R[s, a + j] + gamma * d[j]
        a += 4
    while a < n_actions:
        q_row[a] = <double>R[s, a] + gamma * _dense_dot(&P[s, a, 0], v, n_states)
        a += 1


cdef double _dense_sweep(const real_t[:, :, ::1] P, const real_t[:, ::1] R, double gamma,
                         const double* v, double* v_out, int64_t* policy_out) noexcept nogil:
    cdef Py_ssize_t s, a, j, best_a, n_states = R.shape[0], n_actions = R.shape[1]
    cdef double best, q, d, change = 0.0
    cdef double dots[4]
    for s in range(n_states):
        best = 0.0
        best_a = 0
        a = 0
        while a + 4 <= n_actions:
            _dense_dot4(&P[s, a, 0], n_states, v, n_states, dots)
            for j in range(4):
                q = <double>R[s, a + j] + gamma * dots[j]
                # running argmax in action order: the first action, then strictly larger only
                if a + j == 0 or q > best:
                    best = q
                    best_a = a + j
            a += 4
        while a < n_actions:
            q = <double>R[s, a] + gamma * _dense_dot(&P[s, a, 0], v, n_states)
            if a == 0 or q > best:
                best = q
                best_a = a
            a += 1
        d = fabs(best - v[s])
        if d > change:
            change = d
        v_out[s] = best
        policy_out[s] = best_a
    return change


# ---------------------------------------------------------------------------------------------
# token (deterministic) layout

cdef int token_mdp_bellman_backup_core(const index_t[:, ::1] next_state,
                                       const real_t[:, ::1] reward,
                                       const unsigned char[::1] terminal, double gamma,
                                       const double[::1] v, double[::1] v_out,
                                       int64_t[::1] policy_out) noexcept nogil:
    cdef int status
    cdef const char* start[6]
    cdef size_t size[6]
    span_1d(&v_out[0], v_out.shape[0], sizeof(double), start, size, 0)
    span_1d(&policy_out[0], policy_out.shape[0], sizeof(int64_t), start, size, 1)
    _token_spans(next_state, reward, terminal, start, size, 2)
    span_1d(&v[0], v.shape[0], sizeof(double), start, size, 5)
    if written_overlap(2, 6, start, size):  # before any check that reads them
        return st.OVERLAPPING_ARRAYS
    if not _token_shapes_ok(next_state.shape, reward.shape, terminal.shape[0], v.shape[0],
                            v_out.shape[0], policy_out.shape[0]):
        return st.BAD_SHAPES
    status = _check_token(next_state, reward, terminal)
    if status or next_state.shape[0] == 0:
        return status
    _token_sweep(next_state, reward, terminal, gamma, &v[0], &v_out[0], &policy_out[0])
    return 0


cdef int token_mdp_action_values_core(const index_t[:, ::1] next_state,
                                      const real_t[:, ::1] reward,
                                      const unsigned char[::1] terminal, double gamma,
                                      const double[::1] v, double[:, ::1] q_out) noexcept nogil:
    cdef Py_ssize_t s, a, n_states = next_state.shape[0], n_actions = next_state.shape[1]
    cdef int status
    cdef const char* start[5]
    cdef size_t size[5]
    span_2d(&q_out[0, 0], q_out.shape[0], q_out.shape[1], sizeof(double), start, size, 0)
    _token_spans(next_state, reward, terminal, start, size, 1)
    span_1d(&v[0], v.shape[0], sizeof(double), start, size, 4)
    if written_overlap(1, 5, start, size):  # before any check that reads them
        return st.OVERLAPPING_ARRAYS
    if (not _token_shapes_ok(next_state.shape, reward.shape, terminal.shape[0], v.shape[0],
                             v.shape[0], v.shape[0])
            or q_out.shape[0] != n_states or q_out.shape[1] != n_actions):
        return st.BAD_SHAPES
    status = _check_token(next_state, reward, terminal)
    if status:
        return status
    for s in range(n_states):
        if terminal[s]:
            for a in range(n_actions):
                q_out[s, a] = 0.0
        else:
            for a in range(n_actions):
                q_out[s, a] = <double>reward[s, a] + gamma * v[next_state[s, a]]
    return 0


cdef inline void _token_policy_sweep(const index_t[:, ::1] next_state,
                                     const real_t[:, ::1] reward,
                                     const unsigned char[::1] terminal,
                                     const int64_t[::1] policy, double gamma, const double* src,
                                     double* dst) noexcept nogil:
    cdef Py_ssize_t s, a
    for s in range(next_state.shape[0]):
        if terminal[s]:
            dst[s] = 0.0
        else:
            a = policy[s]
            dst[s] = <double>reward[s, a] + gamma * src[next_state[s, a]]


cdef int token_mdp_policy_sweeps_core(const index_t[:, ::1] next_state,
                                      const real_t[:, ::1] reward,
                                      const unsigned char[::1] terminal,
                                      const int64_t[::1] policy, double gamma, Py_ssize_t k,
                                      double[::1] v, double[::1] v_tmp) noexcept nogil:
    cdef Py_ssize_t it, s
    cdef int status
    cdef const char* start[6]
    cdef size_t size[6]
    span_1d(&v[0], v.shape[0], sizeof(double), start, size, 0)
    span_1d(&v_tmp[0], v_tmp.shape[0], sizeof(double), start, size, 1)
    _token_spans(next_state, reward, terminal, start, size, 2)
    span_1d(&policy[0], policy.shape[0], sizeof(int64_t), start, size, 5)
    if written_overlap(2, 6, start, size):  # before any check that reads them
        return st.OVERLAPPING_ARRAYS
    if not _token_shapes_ok(next_state.shape, reward.shape, terminal.shape[0], policy.shape[0],
                            v.shape[0], v_tmp.shape[0]):
        return st.BAD_SHAPES
    if k < 0 or k > MAX_ITERATIONS:  # 2**31 sweeps would run for days
        return st.BAD_ITERATIONS
    status = _check_token(next_state, reward, terminal)
    if status == 0:
        status = _check_policy(policy, next_state.shape[1])
    if status or next_state.shape[0] == 0:
        return status
    for it in range(k):
        if it % 2 == 0:
            _token_policy_sweep(next_state, reward, terminal, policy, gamma, &v[0], &v_tmp[0])
        else:
            _token_policy_sweep(next_state, reward, terminal, policy, gamma, &v_tmp[0], &v[0])
    if k > 0 and k % 2 == 1:
        for s in range(v.shape[0]):
            v[s] = v_tmp[s]
    return 0


cdef int token_mdp_policy_value_core(const index_t[:, ::1] next_state,
                                     const real_t[:, ::1] reward,
                                     const unsigned char[::1] terminal,
                                     const int64_t[::1] policy, double gamma,
                                     double[::1] v_out, int64_t[::1] work) noexcept nogil:
    cdef Py_ssize_t n_states = next_state.shape[0], s0, j, n, p
    cdef int64_t s, c, head
    cdef double val, acc, g, denom, nxt
    cdef int64_t* path
    cdef int64_t* mark
    cdef int status
    cdef const char* start[6]
    cdef size_t size[6]
    span_1d(&v_out[0], v_out.shape[0], sizeof(double), start, size, 0)
    span_1d(&work[0], work.shape[0], sizeof(int64_t), start, size, 1)
    _token_spans(next_state, reward, terminal, start, size, 2)
    span_1d(&policy[0], policy.shape[0], sizeof(int64_t), start, size, 5)
    if written_overlap(2, 6, start, size):  # before any check that reads them
        return st.OVERLAPPING_ARRAYS
    if (not _token_shapes_ok(next_state.shape, reward.shape, terminal.shape[0], policy.shape[0],
                             v_out.shape[0], v_out.shape[0])
            or work.shape[0] != 2 * n_states):
        return st.BAD_SHAPES
    status = _check_token(next_state, reward, terminal)
    if status == 0:
        status = _check_policy(policy, next_state.shape[1])
    if status or n_states == 0:
        return status
    path = &work[0]
    mark = &work[n_states]  # -1 unvisited, -2 solved, >= 0 position on the current path
    for s0 in range(n_states):
        mark[s0] = -1
    for s0 in range(n_states):
        if mark[s0] != -1:
            continue
        n = 0
        s = s0
        val = 0.0
        while True:
            if mark[s] == -2:
                val = v_out[s]
                break
            if mark[s] >= 0:
                p = mark[s]
                acc = 0.0
                g = 1.0
                for j in range(p, n):
                    c = path[j]
                    acc += g * <double>reward[c, policy[c]]
                    g *= gamma
                denom = 1.0 - g
                if denom != 0.0:
                    val = acc / denom
                else:
                    val = NAN
                head = path[p]
                v_out[head] = val
                mark[head] = -2
                nxt = val
                for j in range(n - 1, p, -1):
                    c = path[j]
                    nxt = <double>reward[c, policy[c]] + gamma * nxt
                    v_out[c] = nxt
                    mark[c] = -2
                n = p
                break
            if terminal[s]:
                val = 0.0
                v_out[s] = 0.0
                mark[s] = -2
                break
            mark[s] = n
            path[n] = s
            n += 1
            s = next_state[s, policy[s]]
        for j in range(n - 1, -1, -1):
            c = path[j]
            val = <double>reward[c, policy[c]] + gamma * val
            v_out[c] = val
            mark[c] = -2
    return 0


cdef int token_mdp_find_cycle_core(const index_t[:, ::1] next_state,
                                   const unsigned char[::1] terminal, int64_t[::1] found_out,
                                   int64_t[::1] work) noexcept nogil:
    cdef Py_ssize_t s, a, root, top, n_states = next_state.shape[0], n_actions = next_state.shape[1]
    cdef int64_t t, found = -1
    cdef int64_t* colour
    cdef int64_t* stack_s
    cdef int64_t* stack_a
    cdef const char* start[4]
    cdef size_t size[4]
    span_1d(&found_out[0], found_out.shape[0], sizeof(int64_t), start, size, 0)
    span_1d(&work[0], work.shape[0], sizeof(int64_t), start, size, 1)
    span_2d(&next_state[0, 0], next_state.shape[0], next_state.shape[1], sizeof(index_t), start,
            size, 2)
    span_1d(&terminal[0], terminal.shape[0], sizeof(unsigned char), start, size, 3)
    if written_overlap(2, 4, start, size):  # before any check that reads them
        return st.OVERLAPPING_ARRAYS
    if (not _token_shapes_ok(next_state.shape, next_state.shape, terminal.shape[0], n_states,
                             n_states, n_states)
            or found_out.shape[0] < 1 or work.shape[0] != 3 * n_states):
        return st.BAD_SHAPES
    for s in range(n_states):
        if terminal[s]:
            continue
        for a in range(n_actions):
            t = next_state[s, a]
            if t < 0 or t >= n_states:
                return st.BAD_NEXT_STATES
    if n_states == 0:
        found_out[0] = -1
        return 0
    colour = &work[0]  # 0 unvisited, 1 on the current path, 2 finished
    stack_s = &work[n_states]
    stack_a = &work[2 * n_states]
    for s in range(n_states):
        colour[s] = 0
    for root in range(n_states):
        if terminal[root] or colour[root] != 0:
            continue
        top = 0
        stack_s[0] = root
        stack_a[0] = 0
        colour[root] = 1
        while top >= 0:
            s = stack_s[top]
            a = stack_a[top]
            if a == n_actions:
                colour[s] = 2
                top -= 1
                continue
            stack_a[top] = a + 1
            t = next_state[s, a]
            if terminal[t] or colour[t] == 2:
                continue
            if colour[t] == 1:
                found = t
                break
            top += 1
            stack_s[top] = t
            stack_a[top] = 0
            colour[t] = 1
        if found >= 0:
            break
    found_out[0] = found
    return 0


cdef int token_mdp_value_iteration_core(const index_t[:, ::1] next_state,
                                        const real_t[:, ::1] reward,
                                        const unsigned char[::1] terminal, double gamma,
                                        double tol, Py_ssize_t max_iter, double[::1] v,
                                        double[::1] v_tmp, int64_t[::1] policy_out,
                                        int64_t[::1] info_out) noexcept nogil:
    cdef Py_ssize_t it, s, n_iter = 0
    cdef int converged = 0
    cdef double change
    cdef double* pv = _ptr(v)
    cdef double* pt = _ptr(v_tmp)
    cdef int64_t* pp = _iptr(policy_out)
    cdef int status
    cdef const char* start[7]
    cdef size_t size[7]
    span_1d(&v[0], v.shape[0], sizeof(double), start, size, 0)
    span_1d(&v_tmp[0], v_tmp.shape[0], sizeof(double), start, size, 1)
    span_1d(&policy_out[0], policy_out.shape[0], sizeof(int64_t), start, size, 2)
    span_1d(&info_out[0], info_out.shape[0], sizeof(int64_t), start, size, 3)
    _token_spans(next_state, reward, terminal, start, size, 4)
    if written_overlap(4, 7, start, size):  # before any check that reads them
        return st.OVERLAPPING_ARRAYS
    if (not _token_shapes_ok(next_state.shape, reward.shape, terminal.shape[0], v.shape[0],
                             v_tmp.shape[0], policy_out.shape[0])
            or info_out.shape[0] < 2):
        return st.BAD_SHAPES
    if max_iter < 0 or max_iter > MAX_ITERATIONS:  # 2**31 sweeps would run for days
        return st.BAD_ITERATIONS
    status = _check_token(next_state, reward, terminal)
    if status:
        return status
    for it in range(max_iter):
        # even sweeps v -> v_tmp, odd sweeps v_tmp -> v
        if it % 2 == 0:
            change = _token_sweep(next_state, reward, terminal, gamma, pv, pt, pp)
        else:
            change = _token_sweep(next_state, reward, terminal, gamma, pt, pv, pp)
        n_iter = it + 1
        if change < tol or change == 0.0:
            converged = 1
            break
    if n_iter % 2 == 1:
        for s in range(v.shape[0]):
            v[s] = v_tmp[s]
    _token_sweep(next_state, reward, terminal, gamma, pv, pt, pp)
    info_out[0] = n_iter
    info_out[1] = converged
    return 0


# ---------------------------------------------------------------------------------------------
# dense layout

cdef int dense_mdp_bellman_backup_core(const real_t[:, :, ::1] P, const real_t[:, ::1] R,
                                       double gamma, const double[::1] v, double[::1] v_out,
                                       int64_t[::1] policy_out) noexcept nogil:
    cdef int status
    cdef const char* start[5]
    cdef size_t size[5]
    span_1d(&v_out[0], v_out.shape[0], sizeof(double), start, size, 0)
    span_1d(&policy_out[0], policy_out.shape[0], sizeof(int64_t), start, size, 1)
    _dense_spans(P, R, start, size, 2)
    span_1d(&v[0], v.shape[0], sizeof(double), start, size, 4)
    if written_overlap(2, 5, start, size):  # before any check that reads them
        return st.OVERLAPPING_ARRAYS
    if not _dense_shapes_ok(P.shape, R.shape, v.shape[0], v_out.shape[0], policy_out.shape[0]):
        return st.BAD_SHAPES
    status = _check_dense(R)
    if status or R.shape[0] == 0:
        return status
    _dense_sweep(P, R, gamma, &v[0], &v_out[0], &policy_out[0])
    return 0


cdef int dense_mdp_action_values_core(const real_t[:, :, ::1] P, const real_t[:, ::1] R,
                                      double gamma, const double[::1] v,
                                      double[:, ::1] q_out) noexcept nogil:
    cdef Py_ssize_t s, a, n_states = R.shape[0], n_actions = R.shape[1]
    cdef int status
    cdef const char* start[4]
    cdef size_t size[4]
    span_2d(&q_out[0, 0], q_out.shape[0], q_out.shape[1], sizeof(double), start, size, 0)
    _dense_spans(P, R, start, size, 1)
    span_1d(&v[0], v.shape[0], sizeof(double), start, size, 3)
    if written_overlap(1, 4, start, size):  # before any check that reads them
        return st.OVERLAPPING_ARRAYS
    if (not _dense_shapes_ok(P.shape, R.shape, v.shape[0], v.shape[0], v.shape[0])
            or q_out.shape[0] != n_states or q_out.shape[1] != n_actions):
        return st.BAD_SHAPES
    status = _check_dense(R)
    if status or n_states == 0:
        return status
    for s in range(n_states):
        _dense_q_row(P, R, s, gamma, &v[0], &q_out[s, 0])
    return 0


cdef inline void _dense_policy_sweep(const real_t[:, :, ::1] P, const real_t[:, ::1] R,
                                     const int64_t[::1] policy, double gamma, const double* src,
                                     double* dst) noexcept nogil:
    cdef Py_ssize_t s, a, n_states = R.shape[0]
    for s in range(n_states):
        a = policy[s]
        dst[s] = <double>R[s, a] + gamma * _dense_dot(&P[s, a, 0], src, n_states)


cdef int dense_mdp_policy_sweeps_core(const real_t[:, :, ::1] P, const real_t[:, ::1] R,
                                      const int64_t[::1] policy, double gamma, Py_ssize_t k,
                                      double[::1] v, double[::1] v_tmp) noexcept nogil:
    cdef Py_ssize_t it, s
    cdef int status
    cdef const char* start[5]
    cdef size_t size[5]
    span_1d(&v[0], v.shape[0], sizeof(double), start, size, 0)
    span_1d(&v_tmp[0], v_tmp.shape[0], sizeof(double), start, size, 1)
    _dense_spans(P, R, start, size, 2)
    span_1d(&policy[0], policy.shape[0], sizeof(int64_t), start, size, 4)
    if written_overlap(2, 5, start, size):  # before any check that reads them
        return st.OVERLAPPING_ARRAYS
    if not _dense_shapes_ok(P.shape, R.shape, policy.shape[0], v.shape[0], v_tmp.shape[0]):
        return st.BAD_SHAPES
    if k < 0 or k > MAX_ITERATIONS:  # 2**31 sweeps would run for days
        return st.BAD_ITERATIONS
    status = _check_dense(R)
    if status == 0:
        status = _check_policy(policy, R.shape[1])
    if status or R.shape[0] == 0:
        return status
    for it in range(k):
        if it % 2 == 0:
            _dense_policy_sweep(P, R, policy, gamma, &v[0], &v_tmp[0])
        else:
            _dense_policy_sweep(P, R, policy, gamma, &v_tmp[0], &v[0])
    if k > 0 and k % 2 == 1:
        for s in range(v.shape[0]):
            v[s] = v_tmp[s]
    return 0


cdef int dense_mdp_value_iteration_core(const real_t[:, :, ::1] P, const real_t[:, ::1] R,
                                        double gamma, double tol, Py_ssize_t max_iter,
                                        double[::1] v, double[::1] v_tmp,
                                        int64_t[::1] policy_out,
                                        int64_t[::1] info_out) noexcept nogil:
    cdef Py_ssize_t it, s, n_iter = 0
    cdef int converged = 0
    cdef double change
    cdef double* pv = _ptr(v)
    cdef double* pt = _ptr(v_tmp)
    cdef int64_t* pp = _iptr(policy_out)
    cdef int status
    cdef const char* start[6]
    cdef size_t size[6]
    span_1d(&v[0], v.shape[0], sizeof(double), start, size, 0)
    span_1d(&v_tmp[0], v_tmp.shape[0], sizeof(double), start, size, 1)
    span_1d(&policy_out[0], policy_out.shape[0], sizeof(int64_t), start, size, 2)
    span_1d(&info_out[0], info_out.shape[0], sizeof(int64_t), start, size, 3)
    _dense_spans(P, R, start, size, 4)
    if written_overlap(4, 6, start, size):  # before any check that reads them
        return st.OVERLAPPING_ARRAYS
    if (not _dense_shapes_ok(P.shape, R.shape, v.shape[0], v_tmp.shape[0], policy_out.shape[0])
            or info_out.shape[0] < 2):
        return st.BAD_SHAPES
    if max_iter < 0 or max_iter > MAX_ITERATIONS:  # 2**31 sweeps would run for days
        return st.BAD_ITERATIONS
    status = _check_dense(R)
    if status:
        return status
    for it in range(max_iter):
        if it % 2 == 0:
            change = _dense_sweep(P, R, gamma, pv, pt, pp)
        else:
            change = _dense_sweep(P, R, gamma, pt, pv, pp)
        n_iter = it + 1
        if change < tol or change == 0.0:
            converged = 1
            break
    if n_iter % 2 == 1:
        for s in range(v.shape[0]):
            v[s] = v_tmp[s]
    _dense_sweep(P, R, gamma, pv, pt, pp)
    info_out[0] = n_iter
    info_out[1] = converged
    return 0


# ---------------------------------------------------------------------------------------------
# Python-callable wrappers (same names and signatures as the other backends)

def token_mdp_bellman_backup(const index_t[:, ::1] next_state, const real_t[:, ::1] reward,
                             const unsigned char[::1] terminal, double gamma,
                             const double[::1] v, double[::1] v_out, int64_t[::1] policy_out):
    cdef int status
    with nogil:
        status = token_mdp_bellman_backup_core(next_state, reward, terminal, gamma, v, v_out,
                                               policy_out)
    return status


def token_mdp_action_values(const index_t[:, ::1] next_state, const real_t[:, ::1] reward,
                            const unsigned char[::1] terminal, double gamma, const double[::1] v,
                            double[:, ::1] q_out):
    cdef int status
    with nogil:
        status = token_mdp_action_values_core(next_state, reward, terminal, gamma, v, q_out)
    return status


def token_mdp_policy_sweeps(const index_t[:, ::1] next_state, const real_t[:, ::1] reward,
                            const unsigned char[::1] terminal, const int64_t[::1] policy,
                            double gamma, Py_ssize_t k, double[::1] v, double[::1] v_tmp):
    cdef int status
    with nogil:
        status = token_mdp_policy_sweeps_core(next_state, reward, terminal, policy, gamma, k, v,
                                              v_tmp)
    return status


def token_mdp_policy_value(const index_t[:, ::1] next_state, const real_t[:, ::1] reward,
                           const unsigned char[::1] terminal, const int64_t[::1] policy,
                           double gamma, double[::1] v_out, int64_t[::1] work):
    cdef int status
    with nogil:
        status = token_mdp_policy_value_core(next_state, reward, terminal, policy, gamma, v_out,
                                             work)
    return status


def token_mdp_find_cycle(const index_t[:, ::1] next_state, const unsigned char[::1] terminal,
                         int64_t[::1] found_out, int64_t[::1] work):
    cdef int status
    with nogil:
        status = token_mdp_find_cycle_core(next_state, terminal, found_out, work)
    return status


def token_mdp_value_iteration(const index_t[:, ::1] next_state, const real_t[:, ::1] reward,
                              const unsigned char[::1] terminal, double gamma, double tol,
                              Py_ssize_t max_iter, double[::1] v, double[::1] v_tmp,
                              int64_t[::1] policy_out, int64_t[::1] info_out):
    cdef int status
    with nogil:
        status = token_mdp_value_iteration_core(next_state, reward, terminal, gamma, tol,
                                                max_iter, v, v_tmp, policy_out, info_out)
    return status


def dense_mdp_bellman_backup(const real_t[:, :, ::1] P, const real_t[:, ::1] R, double gamma,
                             const double[::1] v, double[::1] v_out, int64_t[::1] policy_out):
    cdef int status
    with nogil:
        status = dense_mdp_bellman_backup_core(P, R, gamma, v, v_out, policy_out)
    return status


def dense_mdp_action_values(const real_t[:, :, ::1] P, const real_t[:, ::1] R, double gamma,
                            const double[::1] v, double[:, ::1] q_out):
    cdef int status
    with nogil:
        status = dense_mdp_action_values_core(P, R, gamma, v, q_out)
    return status


def dense_mdp_policy_sweeps(const real_t[:, :, ::1] P, const real_t[:, ::1] R,
                            const int64_t[::1] policy, double gamma, Py_ssize_t k,
                            double[::1] v, double[::1] v_tmp):
    cdef int status
    with nogil:
        status = dense_mdp_policy_sweeps_core(P, R, policy, gamma, k, v, v_tmp)
    return status


def dense_mdp_value_iteration(const real_t[:, :, ::1] P, const real_t[:, ::1] R, double gamma,
                              double tol, Py_ssize_t max_iter, double[::1] v, double[::1] v_tmp,
                              int64_t[::1] policy_out, int64_t[::1] info_out):
    cdef int status
    with nogil:
        status = dense_mdp_value_iteration_core(P, R, gamma, tol, max_iter, v, v_tmp,
                                                policy_out, info_out)
    return status
