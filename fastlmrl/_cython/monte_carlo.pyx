# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython tabular Monte Carlo kernels (same semantics, same rounding as the reference).

First visits: open-addressing hash set (linear probing) of the keys ``s * V + a`` of one episode
in the caller's scratch ``slot_keys`` / ``slot_first`` (power of two ``H >= 2 * longest
episode``); ``slot_first[h]`` is the global step of the key's first occurrence and doubles as the
episode stamp (slot in use for the episode starting at ``start`` iff ``slot_first[h] >= start``).
The scratch is reset once per call, so the work is O(T) expected.
"""

__all__ = ["episode_returns", "mc_control_update"]
from libc.stdint cimport int64_t, uint64_t, INT64_MAX

from fastlmrl._cython._common cimport real_t, index_t, mix64, not_all_finite
from fastlmrl._cython.overlap cimport span_1d, span_2d, written_overlap
# status codes: fastlmrl._status.Status (status.pxd is generated from it)
from fastlmrl._cython cimport status as st



cdef inline bint _bad_offsets(const int64_t[::1] offsets, Py_ssize_t n_steps) noexcept nogil:
    cdef Py_ssize_t e, n_off = offsets.shape[0]
    if n_off == 0 or offsets[0] != 0 or offsets[n_off - 1] != n_steps:
        return True
    for e in range(n_off - 1):
        if offsets[e + 1] < offsets[e]:
            return True
    return False


cdef inline int64_t _max_length(const int64_t[::1] offsets) noexcept nogil:
    cdef int64_t longest = 0
    cdef Py_ssize_t e
    for e in range(offsets.shape[0] - 1):
        if offsets[e + 1] - offsets[e] > longest:
            longest = offsets[e + 1] - offsets[e]
    return longest


cdef int episode_returns_core(const real_t[::1] rewards, const int64_t[::1] episode_offsets,
                              double gamma, const double[::1] final_values,
                              real_t[::1] returns_out) noexcept nogil:
    cdef Py_ssize_t e, t, n = rewards.shape[0]
    cdef double g
    cdef const char* start[4]
    cdef size_t size[4]
    span_1d(&returns_out[0], returns_out.shape[0], sizeof(real_t), start, size, 0)
    span_1d(&rewards[0], n, sizeof(real_t), start, size, 1)
    span_1d(&episode_offsets[0], episode_offsets.shape[0], sizeof(int64_t), start, size, 2)
    span_1d(&final_values[0], final_values.shape[0], sizeof(double), start, size, 3)
    if written_overlap(1, 4, start, size):
        return st.OVERLAPPING_ARRAYS
    if not_all_finite(rewards):
        return st.BAD_REWARDS
    if (_bad_offsets(episode_offsets, n) or returns_out.shape[0] != n
            or final_values.shape[0] != episode_offsets.shape[0] - 1):
        return st.BAD_OFFSETS
    if not_all_finite(final_values):
        return st.BAD_FINAL_VALUES
    for e in range(episode_offsets.shape[0] - 1):
        g = final_values[e]
        t = episode_offsets[e + 1] - 1
        while t >= episode_offsets[e]:
            g = gamma * g + rewards[t]
            returns_out[t] = <real_t>g
            t -= 1
    return 0


cdef inline int _check_mc(Py_ssize_t n_states, Py_ssize_t n_actions, const index_t[::1] states,
                          const index_t[::1] actions, const real_t[::1] rewards,
                          const int64_t[::1] offsets, Py_ssize_t n_out, bint first_visit,
                          double alpha, int64_t[:, ::1] counts, Py_ssize_t n_keys,
                          Py_ssize_t n_first) noexcept nogil:
    """The pre-pass, statuses in the reference's order.  States, actions and the visit counts of
    the batch's pairs are checked in one branch-free pass (a vectorisable loop: unsigned
    comparisons, so a negative id or count is a huge number; flags, no exit): a count is read at
    ``s * V + a`` when both ids are in range, else at 0, and only trusted once the ids, lengths and
    the shape of ``counts`` have passed.  ``counts[s, a] + 1`` then never reaches 0 nor overflows
    (checked before any write)."""
    cdef Py_ssize_t n = states.shape[0], n_acts = actions.shape[0], t
    cdef Py_ssize_t common = n if n < n_acts else n_acts
    cdef bint has_counts = counts.shape[0] != 0
    cdef bint gather = (has_counts and counts.shape[0] == n_states
                        and counts.shape[1] == n_actions and n_states > 0 and n_actions > 0)
    cdef uint64_t limit = <uint64_t>(INT64_MAX - n), s, a, n_s = n_states, n_a = n_actions
    cdef bint bad_states = False, bad_actions = False, bad_counts = False, ok
    cdef const int64_t* flat = &counts[0, 0]
    if gather:
        for t in range(common):
            s = <uint64_t><int64_t>states[t]
            a = <uint64_t><int64_t>actions[t]
            ok = (s < n_s) & (a < n_a)
            bad_states = bad_states | (s >= n_s)
            bad_actions = bad_actions | (a >= n_a)
            bad_counts = bad_counts | (<uint64_t>flat[(s * n_a + a) if ok else 0] > limit)
    else:
        for t in range(common):
            bad_states = bad_states | (<uint64_t><int64_t>states[t] >= n_s)
            bad_actions = bad_actions | (<uint64_t><int64_t>actions[t] >= n_a)
    for t in range(common, n):
        bad_states = bad_states | (<uint64_t><int64_t>states[t] >= n_s)
    for t in range(common, n_acts):
        bad_actions = bad_actions | (<uint64_t><int64_t>actions[t] >= n_a)
    if bad_states:
        return st.BAD_STATES
    if bad_actions:
        return st.BAD_ACTIONS
    if not_all_finite(rewards):
        return st.BAD_REWARDS
    if _bad_offsets(offsets, n) or n_acts != n or rewards.shape[0] != n or n_out != n:
        return st.BAD_OFFSETS
    if has_counts and (counts.shape[0] != n_states or counts.shape[1] != n_actions):
        return st.BAD_COUNTS
    if alpha == 0.0 and not has_counts:
        return st.BAD_COUNTS
    if bad_counts:  # gathered for every step: ids in range, n_acts == n, counts of q's shape
        return st.BAD_COUNT_VALUES
    if first_visit:
        if (n_keys == 0 or (n_keys & (n_keys - 1)) != 0 or n_first != n_keys
                or n_keys < 2 * _max_length(offsets)):
            return st.BAD_SCRATCH
    return 0


# On a table larger than the caches every step misses on q[s, a] and counts[s, a]; the update asks
# for the cells of the step PREFETCH_AHEAD steps later (ids checked; a hint, no fault), so those
# misses overlap.  Small tables (up to PREFETCH_CELLS cells) skip it.  C constants (not a Cython
# enum: the package's only enum of codes is fastlmrl/_cython/status.pxd).
cdef extern from *:
    """
    #define FASTLMRL_MC_PREFETCH(p) __builtin_prefetch((const void *)(p), 0, 3)
    #define FASTLMRL_MC_PREFETCH_CELLS (1 << 17)
    #define FASTLMRL_MC_PREFETCH_AHEAD 8
    """
    void FASTLMRL_MC_PREFETCH(const void* p) noexcept nogil
    const Py_ssize_t PREFETCH_CELLS "FASTLMRL_MC_PREFETCH_CELLS"
    const Py_ssize_t PREFETCH_AHEAD "FASTLMRL_MC_PREFETCH_AHEAD"


cdef inline void _prefetch_step(const real_t[:, ::1] q, const int64_t[:, ::1] counts,
                                bint has_counts, const index_t[::1] states,
                                const index_t[::1] actions, Py_ssize_t p) noexcept nogil:
    FASTLMRL_MC_PREFETCH(&q[states[p], actions[p]])
    if has_counts:
        FASTLMRL_MC_PREFETCH(&counts[states[p], actions[p]])


cdef inline Py_ssize_t _slot(int64_t key, Py_ssize_t mask) noexcept nogil:
    return <Py_ssize_t>(mix64(<uint64_t>key) & <uint64_t>mask)


cdef int mc_control_update_core(real_t[:, ::1] q, const index_t[::1] states,
                                const index_t[::1] actions, const real_t[::1] rewards,
                                const int64_t[::1] episode_offsets, double gamma, bint first_visit,
                                double alpha, int64_t[:, ::1] counts, int64_t[::1] slot_keys,
                                int64_t[::1] slot_first, real_t[::1] returns_out) noexcept nogil:
    cdef Py_ssize_t e, t, h, s, a, start, stop
    cdef Py_ssize_t n_actions = q.shape[1], mask = slot_keys.shape[0] - 1
    cdef int64_t key, n = 0
    cdef double g, q_sa
    cdef bint has_counts = counts.shape[0] != 0, far
    cdef const char* spans[9]
    cdef size_t sizes[9]
    cdef int status
    # written arrays first: the scratch over states changed ids after their range check (a hang)
    span_2d(&q[0, 0], q.shape[0], q.shape[1], sizeof(real_t), spans, sizes, 0)
    span_2d(&counts[0, 0], counts.shape[0], counts.shape[1], sizeof(int64_t), spans, sizes, 1)
    span_1d(&slot_keys[0], slot_keys.shape[0], sizeof(int64_t), spans, sizes, 2)
    span_1d(&slot_first[0], slot_first.shape[0], sizeof(int64_t), spans, sizes, 3)
    span_1d(&returns_out[0], returns_out.shape[0], sizeof(real_t), spans, sizes, 4)
    span_1d(&states[0], states.shape[0], sizeof(index_t), spans, sizes, 5)
    span_1d(&actions[0], actions.shape[0], sizeof(index_t), spans, sizes, 6)
    span_1d(&rewards[0], rewards.shape[0], sizeof(real_t), spans, sizes, 7)
    span_1d(&episode_offsets[0], episode_offsets.shape[0], sizeof(int64_t), spans, sizes, 8)
    if written_overlap(5, 9, spans, sizes):
        return st.OVERLAPPING_ARRAYS
    status = _check_mc(q.shape[0], n_actions, states, actions, rewards, episode_offsets,
                       returns_out.shape[0], first_visit, alpha, counts, slot_keys.shape[0],
                       slot_first.shape[0])
    if status:
        return status
    far = q.shape[0] * q.shape[1] > PREFETCH_CELLS
    if first_visit:
        for h in range(slot_first.shape[0]):
            slot_first[h] = -1
    for e in range(episode_offsets.shape[0] - 1):
        start = episode_offsets[e]
        stop = episode_offsets[e + 1]
        if far:  # the cells of the episode's last steps, which the backward loop needs first
            for t in range(stop - PREFETCH_AHEAD if stop - PREFETCH_AHEAD > start else start,
                           stop):
                _prefetch_step(q, counts, has_counts, states, actions, t)
        if first_visit:  # insert each pair once, remembering its first step
            for t in range(start, stop):
                key = <int64_t>states[t] * n_actions + actions[t]
                h = _slot(key, mask)
                while slot_first[h] >= start and slot_keys[h] != key:
                    h = (h + 1) & mask
                if slot_first[h] < start:
                    slot_keys[h] = key
                    slot_first[h] = t
        g = 0.0
        t = stop - 1
        while t >= start:
            if far and t - PREFETCH_AHEAD >= start:
                _prefetch_step(q, counts, has_counts, states, actions, t - PREFETCH_AHEAD)
            g = gamma * g + rewards[t]
            returns_out[t] = <real_t>g
            s = states[t]
            a = actions[t]
            if first_visit:
                key = <int64_t>s * n_actions + a
                h = _slot(key, mask)
                while slot_keys[h] != key or slot_first[h] < start:
                    h = (h + 1) & mask
                if slot_first[h] != t:
                    t -= 1
                    continue  # (s_t, a_t) also occurs earlier in this episode
            q_sa = q[s, a]
            if has_counts:
                n = counts[s, a] + 1
                counts[s, a] = n
            if alpha == 0.0:
                q[s, a] = <real_t>(q_sa + (g - q_sa) / <double>n)
            else:
                q[s, a] = <real_t>(q_sa + alpha * (g - q_sa))
            t -= 1
    return 0


def episode_returns(const real_t[::1] rewards, const int64_t[::1] episode_offsets, double gamma,
                    const double[::1] final_values, real_t[::1] returns_out):
    cdef int status
    with nogil:
        status = episode_returns_core(rewards, episode_offsets, gamma, final_values, returns_out)
    return status


def mc_control_update(real_t[:, ::1] q, const index_t[::1] states, const index_t[::1] actions,
                      const real_t[::1] rewards, const int64_t[::1] episode_offsets, double gamma,
                      bint first_visit, double alpha, int64_t[:, ::1] counts,
                      int64_t[::1] slot_keys, int64_t[::1] slot_first, real_t[::1] returns_out):
    cdef int status
    with nogil:
        status = mc_control_update_core(q, states, actions, rewards, episode_offsets, gamma,
                                        first_visit, alpha, counts, slot_keys, slot_first,
                                        returns_out)
    return status
