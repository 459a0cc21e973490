# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython per-row argmax tournament trees (same layout, semantics and rounding as the reference)."""

__all__ = [
    "argmax_tree_build",
    "argmax_tree_max",
    "argmax_tree_refresh",
    "double_q_learning_update_tree",
    "epsilon_greedy_tree",
    "greedy_tree",
    "q_learning_update_tree",
]
from libc.math cimport INFINITY
from libc.stdint cimport int32_t, int64_t, uint64_t

from fastlmrl._cython._common cimport real_t, index_t, uniform, out_of_range, not_all_finite
from fastlmrl._cython.overlap cimport span_1d, span_2d, written_overlap

# status codes: fastlmrl._status.Status (status.pxd is generated from it;
# fastlmrl.argmax_tree.CONTRACT)
from fastlmrl._cython cimport status as st

cdef Py_ssize_t INT32_MAX = 2147483647


cdef inline Py_ssize_t _n_blocks(Py_ssize_t n_actions, Py_ssize_t block_size) noexcept nogil:
    """ceil(V / B) for V >= 1, without overflow for any block size."""
    return (n_actions - 1) // block_size + 1


cdef inline Py_ssize_t _n_leaves(Py_ssize_t n_actions, Py_ssize_t block_size) noexcept nogil:
    cdef Py_ssize_t n_blocks = _n_blocks(n_actions, block_size), p = 1
    while p < n_blocks:
        p *= 2
    return p


cdef inline bint _bad_tree(Py_ssize_t n_states, Py_ssize_t n_actions, Py_ssize_t tree_rows,
                           Py_ssize_t tree_cols, Py_ssize_t block_size) noexcept nogil:
    if block_size < 1 or n_actions < 1 or n_actions > INT32_MAX:
        return True
    return tree_rows != n_states or tree_cols != 2 * _n_leaves(n_actions, block_size)


cdef inline bint _span_ok(Py_ssize_t w, Py_ssize_t n_actions, Py_ssize_t block_size,
                          Py_ssize_t n_blocks, Py_ssize_t first_block,
                          Py_ssize_t width) noexcept nogil:
    """May a node covering blocks [first_block, first_block + width) hold column w?"""
    cdef Py_ssize_t lo, hi
    if first_block >= n_blocks:
        return w == -1
    lo = first_block * block_size
    if first_block + width >= n_blocks:
        hi = n_actions
    else:
        hi = (first_block + width) * block_size
    return lo <= w < hi


cdef inline bint _path_ok(const int32_t* tree, Py_ssize_t p, Py_ssize_t n_actions,
                          Py_ssize_t block_size, Py_ssize_t a, bint check_leaf) noexcept nogil:
    """The nodes an update (check_leaf) or a refresh of column a reads as columns (see the
    reference): the leaf of a's block and the sibling of every node on the path to the root."""
    cdef Py_ssize_t n_blocks = _n_blocks(n_actions, block_size), k = p + a // block_size
    cdef Py_ssize_t width = 1, sibling
    if check_leaf and not _span_ok(tree[k], n_actions, block_size, n_blocks, k - p, 1):
        return False
    while k > 1:
        sibling = k ^ 1
        if not _span_ok(tree[sibling], n_actions, block_size, n_blocks, sibling * width - p,
                        width):
            return False
        k >>= 1
        width <<= 1
    return True


cdef inline int _states_roots_status(const int32_t[:, ::1] nodes, const index_t[::1] states,
                                     Py_ssize_t n_states, Py_ssize_t n_actions) noexcept nogil:
    """One pass: BAD_STATES if a state is out of range (first priority), else CORRUPT_TREE if the
    root of some state's row is not a column of the table, else 0."""
    cdef Py_ssize_t i, s, w
    cdef bint damaged = False
    for i in range(states.shape[0]):
        s = states[i]
        if s < 0 or s >= n_states:
            return st.BAD_STATES
        w = nodes[s, 1]
        damaged |= (w < 0) | (w >= n_actions)
    return st.CORRUPT_TREE if damaged else 0


cdef extern from *:
    """
    #define FASTLMRL_PREFETCH(p) __builtin_prefetch((const void *)(p), 0, 3)
    """
    void FASTLMRL_PREFETCH(const void* p) noexcept nogil


cdef inline bint _update_paths_ok(const int32_t[:, ::1] nodes, Py_ssize_t block_size,
                                  const index_t[::1] states, const index_t[::1] actions,
                                  const index_t[::1] next_states,
                                  Py_ssize_t n_actions) noexcept nogil:
    cdef Py_ssize_t i, w, k, p = nodes.shape[1] // 2, n = states.shape[0], ahead = 16
    for i in range(n):
        if i + ahead < n:  # the path lines of a later cell are fetched while this one is checked
            k = p + actions[i + ahead] // block_size
            while k > 1:
                FASTLMRL_PREFETCH(&nodes[states[i + ahead], k])
                k >>= 1
            FASTLMRL_PREFETCH(&nodes[next_states[i + ahead], 0])
        if not _path_ok(&nodes[states[i], 0], p, n_actions, block_size, actions[i], True):
            return False
        w = nodes[next_states[i], 1]
        if w < 0 or w >= n_actions:
            return False
    return True


cdef inline int _rates_status(double alpha, double gamma) noexcept nogil:
    """alpha in (0, 1] (else BAD_ALPHA), gamma in [0, 1] (else BAD_GAMMA), as td_learning's
    kernels."""
    if not (alpha > 0.0 and alpha <= 1.0):
        return st.BAD_ALPHA
    if not (gamma >= 0.0 and gamma <= 1.0):
        return st.BAD_GAMMA
    return 0


cdef inline bint _batch_ok(const index_t[::1] states, const index_t[::1] actions,
                           const real_t[::1] rewards, const index_t[::1] next_states,
                           const unsigned char[::1] terminated,
                           const real_t[::1] td_out) noexcept nogil:
    """The shape check (first) of the update kernels: every per-transition array of states'
    length."""
    cdef Py_ssize_t n = states.shape[0]
    return (actions.shape[0] == n and rewards.shape[0] == n and next_states.shape[0] == n
            and terminated.shape[0] == n and td_out.shape[0] == n)


cdef inline bint _better(real_t v_right, real_t v_left) noexcept nogil:
    """Does a later column with value v_right beat an earlier one with value v_left?"""
    return v_right > v_left or (v_left != v_left and v_right == v_right)


cdef inline Py_ssize_t _block_argmax(const real_t* row, Py_ssize_t lo,
                                     Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t best = lo, c
    cdef real_t best_v = row[lo], v
    for c in range(lo + 1, hi):
        v = row[c]
        if _better(v, best_v):
            best = c
            best_v = v
    return best


cdef inline Py_ssize_t _pick(const real_t* row, Py_ssize_t left, Py_ssize_t right) noexcept nogil:
    if right < 0:
        return left
    if left < 0:
        return right
    if _better(row[right], row[left]):
        return right
    return left


cdef inline void _build_row(const real_t* row, Py_ssize_t n_actions, int32_t* tree, Py_ssize_t p,
                            Py_ssize_t block_size) noexcept nogil:
    cdef Py_ssize_t n_blocks = _n_blocks(n_actions, block_size), b, k, hi
    tree[0] = -1
    for b in range(p):
        if b < n_blocks:
            hi = (b + 1) * block_size
            if hi > n_actions:
                hi = n_actions
            tree[p + b] = <int32_t>_block_argmax(row, b * block_size, hi)
        else:
            tree[p + b] = -1
    k = p - 1
    while k > 0:
        tree[k] = <int32_t>_pick(row, tree[2 * k], tree[2 * k + 1])
        k -= 1


cdef inline void _walk_up(const real_t* row, int32_t* tree, Py_ssize_t k, Py_ssize_t a,
                          Py_ssize_t old, Py_ssize_t new, bint early_exit) noexcept nogil:
    """Replay the matches above node k (see the reference for early_exit)."""
    while k > 1 and (not early_exit or old == a or new == a):
        k >>= 1
        old = tree[k]
        new = _pick(row, tree[2 * k], tree[2 * k + 1])
        tree[k] = <int32_t>new


cdef inline Py_ssize_t _block_scan(const real_t* row, Py_ssize_t n_actions, Py_ssize_t a,
                                   Py_ssize_t block_size) noexcept nogil:
    cdef Py_ssize_t lo = (a // block_size) * block_size, hi = n_actions
    if block_size < n_actions - lo:  # (lo + block_size could overflow for a huge block size)
        hi = lo + block_size
    return _block_argmax(row, lo, hi)


cdef inline void _refresh_cell(const real_t* row, Py_ssize_t n_actions, int32_t* tree,
                               Py_ssize_t p, Py_ssize_t a, Py_ssize_t block_size) noexcept nogil:
    cdef Py_ssize_t k = p + a // block_size
    cdef Py_ssize_t new = _block_scan(row, n_actions, a, block_size)
    tree[k] = <int32_t>new
    _walk_up(row, tree, k, a, -1, new, False)


cdef inline void _update_cell(const real_t* row, Py_ssize_t n_actions, int32_t* tree,
                              Py_ssize_t p, Py_ssize_t a, double old_value,
                              Py_ssize_t block_size) noexcept nogil:
    """After row[a] changed from old_value alone (see the reference)."""
    cdef Py_ssize_t k = p + a // block_size, old = tree[k], new
    cdef real_t v = row[a], w_v
    cdef bint a_wins
    if old == a:
        if v >= old_value or old_value != old_value:
            new = a
        else:
            new = _block_scan(row, n_actions, a, block_size)
    else:
        w_v = row[old]
        if a > old:
            a_wins = _better(v, w_v)
        else:
            a_wins = not _better(w_v, v)
        if not a_wins:
            return
        new = a
    tree[k] = <int32_t>new
    _walk_up(row, tree, k, a, old, new, True)


cdef inline int64_t _root_argmax(const real_t* row, const int32_t* tree) noexcept nogil:
    cdef Py_ssize_t w = tree[1]
    if row[w] != row[w]:
        return 0
    return w


cdef inline double _root_max(const real_t* row, const int32_t* tree) noexcept nogil:
    cdef real_t v = row[tree[1]]
    if v != v:
        return -INFINITY
    return <double>v


cdef int argmax_tree_build_core(const real_t[:, ::1] q, int32_t[:, ::1] nodes,
                                Py_ssize_t block_size) noexcept nogil:
    cdef Py_ssize_t s, n_actions = q.shape[1], p
    cdef const char* start[10]
    cdef size_t size[10]
    span_2d(&nodes[0, 0], nodes.shape[0], nodes.shape[1], sizeof(int32_t), start, size, 0)
    span_2d(&q[0, 0], q.shape[0], q.shape[1], sizeof(real_t), start, size, 1)
    if written_overlap(1, 2, start, size):
        return st.OVERLAPPING_ARRAYS
    if _bad_tree(q.shape[0], n_actions, nodes.shape[0], nodes.shape[1], block_size):
        return st.BAD_TREE
    p = nodes.shape[1] // 2
    for s in range(q.shape[0]):
        _build_row(&q[s, 0], n_actions, &nodes[s, 0], p, block_size)
    return 0


cdef int argmax_tree_refresh_core(const real_t[:, ::1] q, int32_t[:, ::1] nodes,
                                  Py_ssize_t block_size, const index_t[::1] states,
                                  const index_t[::1] actions) noexcept nogil:
    cdef Py_ssize_t i, s, n_actions = q.shape[1], p
    if actions.shape[0] != states.shape[0]:
        return st.BAD_SHAPES
    cdef const char* start[10]
    cdef size_t size[10]
    span_2d(&nodes[0, 0], nodes.shape[0], nodes.shape[1], sizeof(int32_t), start, size, 0)
    span_2d(&q[0, 0], q.shape[0], q.shape[1], sizeof(real_t), start, size, 1)
    span_1d(&states[0], states.shape[0], sizeof(index_t), start, size, 2)
    span_1d(&actions[0], actions.shape[0], sizeof(index_t), start, size, 3)
    if written_overlap(1, 4, start, size):
        return st.OVERLAPPING_ARRAYS
    if _bad_tree(q.shape[0], n_actions, nodes.shape[0], nodes.shape[1], block_size):
        return st.BAD_TREE
    if out_of_range(states, q.shape[0]):
        return st.BAD_STATES
    if out_of_range(actions, n_actions):
        return st.BAD_ACTIONS
    p = nodes.shape[1] // 2
    for i in range(states.shape[0]):
        if not _path_ok(&nodes[states[i], 0], p, n_actions, block_size, actions[i], False):
            return st.CORRUPT_TREE
    for i in range(states.shape[0]):
        s = states[i]
        _refresh_cell(&q[s, 0], n_actions, &nodes[s, 0], p, actions[i], block_size)
    return 0


cdef int greedy_tree_core(const real_t[:, ::1] q, const int32_t[:, ::1] nodes,
                          Py_ssize_t block_size, const index_t[::1] states,
                          int64_t[::1] out) noexcept nogil:
    cdef int status
    cdef Py_ssize_t i, s
    if out.shape[0] != states.shape[0]:
        return st.BAD_SHAPES
    cdef const char* start[10]
    cdef size_t size[10]
    span_1d(&out[0], out.shape[0], sizeof(int64_t), start, size, 0)
    span_2d(&q[0, 0], q.shape[0], q.shape[1], sizeof(real_t), start, size, 1)
    span_2d(&nodes[0, 0], nodes.shape[0], nodes.shape[1], sizeof(int32_t), start, size, 2)
    span_1d(&states[0], states.shape[0], sizeof(index_t), start, size, 3)
    if written_overlap(1, 4, start, size):
        return st.OVERLAPPING_ARRAYS
    if _bad_tree(q.shape[0], q.shape[1], nodes.shape[0], nodes.shape[1], block_size):
        return st.BAD_TREE
    status = _states_roots_status(nodes, states, q.shape[0], q.shape[1])
    if status:
        return status
    for i in range(states.shape[0]):
        s = states[i]
        out[i] = _root_argmax(&q[s, 0], &nodes[s, 0])
    return 0


cdef int argmax_tree_max_core(const real_t[:, ::1] q, const int32_t[:, ::1] nodes,
                              Py_ssize_t block_size, const index_t[::1] states,
                              real_t[::1] out) noexcept nogil:
    cdef int status
    cdef Py_ssize_t i, s
    if out.shape[0] != states.shape[0]:
        return st.BAD_SHAPES
    cdef const char* start[10]
    cdef size_t size[10]
    span_1d(&out[0], out.shape[0], sizeof(real_t), start, size, 0)
    span_2d(&q[0, 0], q.shape[0], q.shape[1], sizeof(real_t), start, size, 1)
    span_2d(&nodes[0, 0], nodes.shape[0], nodes.shape[1], sizeof(int32_t), start, size, 2)
    span_1d(&states[0], states.shape[0], sizeof(index_t), start, size, 3)
    if written_overlap(1, 4, start, size):
        return st.OVERLAPPING_ARRAYS
    if _bad_tree(q.shape[0], q.shape[1], nodes.shape[0], nodes.shape[1], block_size):
        return st.BAD_TREE
    status = _states_roots_status(nodes, states, q.shape[0], q.shape[1])
    if status:
        return status
    for i in range(states.shape[0]):
        s = states[i]
        out[i] = <real_t>_root_max(&q[s, 0], &nodes[s, 0])
    return 0


cdef int epsilon_greedy_tree_core(const real_t[:, ::1] q, const int32_t[:, ::1] nodes,
                                  Py_ssize_t block_size, const index_t[::1] states,
                                  double epsilon, uint64_t key, uint64_t counter,
                                  int64_t[::1] out) noexcept nogil:
    cdef int status
    cdef Py_ssize_t i, s, n_actions = q.shape[1]
    cdef uint64_t c
    if out.shape[0] != states.shape[0]:
        return st.BAD_SHAPES
    cdef const char* start[10]
    cdef size_t size[10]
    span_1d(&out[0], out.shape[0], sizeof(int64_t), start, size, 0)
    span_2d(&q[0, 0], q.shape[0], q.shape[1], sizeof(real_t), start, size, 1)
    span_2d(&nodes[0, 0], nodes.shape[0], nodes.shape[1], sizeof(int32_t), start, size, 2)
    span_1d(&states[0], states.shape[0], sizeof(index_t), start, size, 3)
    if written_overlap(1, 4, start, size):
        return st.OVERLAPPING_ARRAYS
    if not (epsilon >= 0.0 and epsilon <= 1.0):
        return st.BAD_EPSILON
    if _bad_tree(q.shape[0], n_actions, nodes.shape[0], nodes.shape[1], block_size):
        return st.BAD_TREE
    status = _states_roots_status(nodes, states, q.shape[0], q.shape[1])
    if status:
        return status
    for i in range(states.shape[0]):
        c = counter + 2 * <uint64_t>i
        if uniform(key, c) < epsilon:
            out[i] = <int64_t>(uniform(key, c + 1) * n_actions)
        else:
            s = states[i]
            out[i] = _root_argmax(&q[s, 0], &nodes[s, 0])
    return 0


cdef inline int _check(Py_ssize_t n_states, Py_ssize_t n_actions, const int32_t[:, ::1] nodes,
                       Py_ssize_t block_size, const index_t[::1] states,
                       const index_t[::1] actions, const real_t[::1] rewards,
                       const index_t[::1] next_states) noexcept nogil:
    if _bad_tree(n_states, n_actions, nodes.shape[0], nodes.shape[1], block_size):
        return st.BAD_TREE
    if out_of_range(states, n_states):
        return st.BAD_STATES
    if out_of_range(actions, n_actions):
        return st.BAD_ACTIONS
    if out_of_range(next_states, n_states):
        return st.BAD_NEXT_STATES
    if not_all_finite(rewards):
        return st.BAD_REWARDS
    return 0


cdef int q_learning_update_tree_core(real_t[:, ::1] q, int32_t[:, ::1] nodes,
                                     Py_ssize_t block_size, const index_t[::1] states,
                                     const index_t[::1] actions, const real_t[::1] rewards,
                                     const index_t[::1] next_states,
                                     const unsigned char[::1] terminated, double alpha,
                                     double gamma, real_t[::1] td_out) noexcept nogil:
    cdef Py_ssize_t i, s, a, s2, p, n_actions = q.shape[1]
    cdef double q_sa, target, td
    cdef int status
    if not _batch_ok(states, actions, rewards, next_states, terminated, td_out):
        return st.BAD_SHAPES
    cdef const char* start[10]
    cdef size_t size[10]
    span_2d(&q[0, 0], q.shape[0], q.shape[1], sizeof(real_t), start, size, 0)
    span_2d(&nodes[0, 0], nodes.shape[0], nodes.shape[1], sizeof(int32_t), start, size, 1)
    span_1d(&td_out[0], td_out.shape[0], sizeof(real_t), start, size, 2)
    span_1d(&states[0], states.shape[0], sizeof(index_t), start, size, 3)
    span_1d(&actions[0], actions.shape[0], sizeof(index_t), start, size, 4)
    span_1d(&rewards[0], rewards.shape[0], sizeof(real_t), start, size, 5)
    span_1d(&next_states[0], next_states.shape[0], sizeof(index_t), start, size, 6)
    span_1d(&terminated[0], terminated.shape[0], sizeof(unsigned char), start, size, 7)
    if written_overlap(3, 8, start, size):
        return st.OVERLAPPING_ARRAYS
    status = _rates_status(alpha, gamma)
    if status:
        return status
    status = _check(q.shape[0], n_actions, nodes, block_size, states, actions, rewards,
                    next_states)
    if status:
        return status
    if not _update_paths_ok(nodes, block_size, states, actions, next_states, n_actions):
        return st.CORRUPT_TREE
    p = nodes.shape[1] // 2
    for i in range(states.shape[0]):
        s = states[i]
        a = actions[i]
        q_sa = q[s, a]
        target = rewards[i]
        if not terminated[i]:
            s2 = next_states[i]
            target = target + gamma * _root_max(&q[s2, 0], &nodes[s2, 0])
        td = target - q_sa
        q[s, a] = <real_t>(q_sa + alpha * td)
        td_out[i] = <real_t>td
        _update_cell(&q[s, 0], n_actions, &nodes[s, 0], p, a, q_sa, block_size)
    return 0


cdef inline double _double_q_step(real_t[:, ::1] learner, real_t[:, ::1] evaluator,
                                  int32_t[:, ::1] nodes, Py_ssize_t block_size, Py_ssize_t s,
                                  Py_ssize_t a, double r, Py_ssize_t s2, bint terminal,
                                  double alpha, double gamma) noexcept nogil:
    cdef double q_sa = learner[s, a], target = r, td
    if not terminal:
        target = target + gamma * <double>evaluator[s2, _root_argmax(&learner[s2, 0],
                                                                      &nodes[s2, 0])]
    td = target - q_sa
    learner[s, a] = <real_t>(q_sa + alpha * td)
    _update_cell(&learner[s, 0], learner.shape[1], &nodes[s, 0], nodes.shape[1] // 2, a, q_sa,
                 block_size)
    return td


cdef int double_q_learning_update_tree_core(real_t[:, ::1] q1, real_t[:, ::1] q2,
                                            int32_t[:, ::1] nodes1, int32_t[:, ::1] nodes2,
                                            Py_ssize_t block_size1, Py_ssize_t block_size2,
                                            const index_t[::1] states,
                                            const index_t[::1] actions, const real_t[::1] rewards,
                                            const index_t[::1] next_states,
                                            const unsigned char[::1] terminated, double alpha,
                                            double gamma, uint64_t key, uint64_t counter,
                                            real_t[::1] td_out) noexcept nogil:
    cdef Py_ssize_t i, w, k, n_actions = q1.shape[1]
    cdef double td
    cdef int status
    cdef bint ok
    if not _batch_ok(states, actions, rewards, next_states, terminated, td_out):
        return st.BAD_SHAPES
    cdef const char* start[10]
    cdef size_t size[10]
    span_2d(&q1[0, 0], q1.shape[0], q1.shape[1], sizeof(real_t), start, size, 0)
    span_2d(&q2[0, 0], q2.shape[0], q2.shape[1], sizeof(real_t), start, size, 1)
    span_2d(&nodes1[0, 0], nodes1.shape[0], nodes1.shape[1], sizeof(int32_t), start, size, 2)
    span_2d(&nodes2[0, 0], nodes2.shape[0], nodes2.shape[1], sizeof(int32_t), start, size, 3)
    span_1d(&td_out[0], td_out.shape[0], sizeof(real_t), start, size, 4)
    span_1d(&states[0], states.shape[0], sizeof(index_t), start, size, 5)
    span_1d(&actions[0], actions.shape[0], sizeof(index_t), start, size, 6)
    span_1d(&rewards[0], rewards.shape[0], sizeof(real_t), start, size, 7)
    span_1d(&next_states[0], next_states.shape[0], sizeof(index_t), start, size, 8)
    span_1d(&terminated[0], terminated.shape[0], sizeof(unsigned char), start, size, 9)
    if written_overlap(5, 10, start, size):
        return st.OVERLAPPING_ARRAYS
    status = _rates_status(alpha, gamma)
    if status:
        return status
    if (q2.shape[0] != q1.shape[0] or q2.shape[1] != q1.shape[1]
            or _bad_tree(q2.shape[0], q2.shape[1], nodes2.shape[0], nodes2.shape[1], block_size2)):
        return st.BAD_TREE
    status = _check(q1.shape[0], q1.shape[1], nodes1, block_size1, states, actions, rewards,
                    next_states)
    if status:
        return status
    for i in range(states.shape[0]):  # the learner's tree (same coins as below)
        if i + 16 < states.shape[0]:  # fetch a later cell's path lines meanwhile (both trees)
            k = nodes1.shape[1] // 2 + actions[i + 16] // block_size1
            while k > 1:
                FASTLMRL_PREFETCH(&nodes1[states[i + 16], k])
                k >>= 1
            k = nodes2.shape[1] // 2 + actions[i + 16] // block_size2
            while k > 1:
                FASTLMRL_PREFETCH(&nodes2[states[i + 16], k])
                k >>= 1
        if uniform(key, counter + <uint64_t>i) < 0.5:
            ok = _path_ok(&nodes1[states[i], 0], nodes1.shape[1] // 2, n_actions, block_size1,
                          actions[i], True)
            w = nodes1[next_states[i], 1]
        else:
            ok = _path_ok(&nodes2[states[i], 0], nodes2.shape[1] // 2, n_actions, block_size2,
                          actions[i], True)
            w = nodes2[next_states[i], 1]
        if not ok or w < 0 or w >= n_actions:
            return st.CORRUPT_TREE
    for i in range(states.shape[0]):
        if uniform(key, counter + <uint64_t>i) < 0.5:
            td = _double_q_step(q1, q2, nodes1, block_size1, states[i], actions[i], rewards[i],
                                next_states[i], terminated[i], alpha, gamma)
        else:
            td = _double_q_step(q2, q1, nodes2, block_size2, states[i], actions[i], rewards[i],
                                next_states[i], terminated[i], alpha, gamma)
        td_out[i] = <real_t>td
    return 0


def argmax_tree_build(const real_t[:, ::1] q, int32_t[:, ::1] nodes, Py_ssize_t block_size):
    cdef int status
    with nogil:
        status = argmax_tree_build_core(q, nodes, block_size)
    return status


def argmax_tree_refresh(const real_t[:, ::1] q, int32_t[:, ::1] nodes, Py_ssize_t block_size,
                        const index_t[::1] states, const index_t[::1] actions):
    cdef int status
    with nogil:
        status = argmax_tree_refresh_core(q, nodes, block_size, states, actions)
    return status


def greedy_tree(const real_t[:, ::1] q, const int32_t[:, ::1] nodes, Py_ssize_t block_size,
                const index_t[::1] states, int64_t[::1] out):
    cdef int status
    with nogil:
        status = greedy_tree_core(q, nodes, block_size, states, out)
    return status


def argmax_tree_max(const real_t[:, ::1] q, const int32_t[:, ::1] nodes, Py_ssize_t block_size,
                    const index_t[::1] states, real_t[::1] out):
    cdef int status
    with nogil:
        status = argmax_tree_max_core(q, nodes, block_size, states, out)
    return status


def epsilon_greedy_tree(const real_t[:, ::1] q, const int32_t[:, ::1] nodes,
                        Py_ssize_t block_size, const index_t[::1] states, double epsilon,
                        uint64_t key, uint64_t counter, int64_t[::1] out):
    cdef int status
    with nogil:
        status = epsilon_greedy_tree_core(q, nodes, block_size, states, epsilon, key, counter, out)
    return status


def q_learning_update_tree(real_t[:, ::1] q, int32_t[:, ::1] nodes, Py_ssize_t block_size,
                           const index_t[::1] states, const index_t[::1] actions,
                           const real_t[::1] rewards, const index_t[::1] next_states,
                           const unsigned char[::1] terminated, double alpha, double gamma,
                           real_t[::1] td_out):
    cdef int status
    with nogil:
        status = q_learning_update_tree_core(q, nodes, block_size, states, actions, rewards,
                                             next_states, terminated, alpha, gamma, td_out)
    return status


def double_q_learning_update_tree(real_t[:, ::1] q1, real_t[:, ::1] q2, int32_t[:, ::1] nodes1,
                                  int32_t[:, ::1] nodes2, Py_ssize_t block_size1,
                                  Py_ssize_t block_size2, const index_t[::1] states,
                                  const index_t[::1] actions, const real_t[::1] rewards,
                                  const index_t[::1] next_states,
                                  const unsigned char[::1] terminated, double alpha, double gamma,
                                  uint64_t key, uint64_t counter, real_t[::1] td_out):
    cdef int status
    with nogil:
        status = double_q_learning_update_tree_core(q1, q2, nodes1, nodes2, block_size1,
                                                    block_size2, states, actions, rewards,
                                                    next_states, terminated, alpha, gamma, key,
                                                    counter, td_out)
    return status
