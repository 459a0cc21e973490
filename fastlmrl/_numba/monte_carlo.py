"""Numba tabular Monte Carlo kernels (same semantics, same rounding as the reference).

First visits are found with an open-addressing hash set (linear probing) over the keys
``s * V + a`` of one episode, in the caller's scratch ``slot_keys`` / ``slot_first`` (a power of
two ``H >= 2 * longest episode``, so the load factor stays <= 1/2).  ``slot_first[h]`` holds the
global step index of the key's first occurrence and doubles as the episode stamp: a slot is in use
for the episode starting at ``start`` iff ``slot_first[h] >= start`` (episodes are processed in
order, so older entries are all smaller).  The scratch is reset once per call (O(H)), never per
episode, so the work is O(T) expected.
"""

__all__ = ["episode_returns", "mc_control_update"]
import numpy as np
from numba import njit

# status codes (fastlmrl.Status; plain ints, Numba globals)
from .._status import (
    BAD_ACTIONS,
    BAD_COUNT_VALUES,
    BAD_COUNTS,
    BAD_FINAL_VALUES,
    BAD_OFFSETS,
    BAD_REWARDS,
    BAD_SCRATCH,
    BAD_STATES,
    OVERLAPPING_ARRAYS,
)
from ._common import NJIT, mix64, not_all_finite
from .argmax_tree import _prefetch
from .overlap import overlap, written_overlaps

INT64_MAX = 2**63 - 1
# On a table larger than the caches every step misses on q[s, a] and counts[s, a]; the update
# asks for the cells of the step PREFETCH_AHEAD steps later (ids checked; a hint, no fault), so
# those misses overlap (65536 x 64 float64: 1.3-1.5x faster).  Small tables skip it.
PREFETCH_CELLS = 1 << 17
PREFETCH_AHEAD = 8


@njit(**NJIT)
def _bad_offsets(offsets, n_steps):
    if offsets.shape[0] == 0 or offsets[0] != 0 or offsets[offsets.shape[0] - 1] != n_steps:
        return True
    for e in range(offsets.shape[0] - 1):
        if offsets[e + 1] < offsets[e]:
            return True
    return False


@njit(**NJIT)
def _max_length(offsets):
    longest = 0
    for e in range(offsets.shape[0] - 1):
        longest = max(longest, offsets[e + 1] - offsets[e])
    return longest


@njit(**NJIT)
def episode_returns(rewards, episode_offsets, gamma, final_values, returns_out):
    n = rewards.shape[0]
    if (
        overlap(returns_out, rewards)
        or overlap(returns_out, episode_offsets)
        or overlap(returns_out, final_values)
    ):
        return OVERLAPPING_ARRAYS
    if not_all_finite(rewards):
        return BAD_REWARDS
    if (
        _bad_offsets(episode_offsets, n)
        or returns_out.shape[0] != n
        or final_values.shape[0] != episode_offsets.shape[0] - 1
    ):
        return BAD_OFFSETS
    if not_all_finite(final_values):
        return BAD_FINAL_VALUES
    for e in range(episode_offsets.shape[0] - 1):
        g = np.float64(final_values[e])
        for t in range(episode_offsets[e + 1] - 1, episode_offsets[e] - 1, -1):
            g = gamma * g + rewards[t]
            returns_out[t] = g
    return 0


@njit(**NJIT)
def _check_mc(
    q, states, actions, rewards, offsets, n_out, first_visit, alpha, counts, n_keys, n_first
):
    """The pre-pass, statuses in the reference's order.  States, actions and the visit counts of
    the batch's pairs are checked in one branch-free pass (unsigned comparisons, so a negative id
    or count is a huge number; flags, no exit): a count is read at ``s * V + a`` when both ids are
    in range, else at 0, and only trusted once the ids, lengths and the shape of ``counts`` have
    passed.  ``counts[s, a] + 1`` then never reaches 0 nor overflows (checked before any write)."""
    n_states, n_actions = q.shape
    n = states.shape[0]
    n_acts = actions.shape[0]
    common = min(n, n_acts)
    has_counts = counts.shape[0] != 0
    gather = (
        has_counts
        and counts.shape[0] == n_states
        and counts.shape[1] == n_actions
        and n_states > 0
        and n_actions > 0
    )
    limit = np.uint64(INT64_MAX - n)
    n_s = np.uint64(n_states)
    n_a = np.uint64(n_actions)
    bad_states = False
    bad_actions = False
    bad_counts = False
    if gather:
        flat = counts.reshape(counts.size)
        for t in range(common):
            s = np.uint64(np.int64(states[t]))
            a = np.uint64(np.int64(actions[t]))
            ok = (s < n_s) & (a < n_a)
            bad_states |= s >= n_s
            bad_actions |= a >= n_a
            index = s * n_a + a if ok else np.uint64(0)
            bad_counts |= np.uint64(flat[index]) > limit
    else:
        for t in range(common):
            bad_states |= np.uint64(np.int64(states[t])) >= n_s
            bad_actions |= np.uint64(np.int64(actions[t])) >= n_a
    for t in range(common, n):
        bad_states |= np.uint64(np.int64(states[t])) >= n_s
    for t in range(common, n_acts):
        bad_actions |= np.uint64(np.int64(actions[t])) >= n_a
    if bad_states:
        return BAD_STATES
    if bad_actions:
        return BAD_ACTIONS
    if not_all_finite(rewards):
        return BAD_REWARDS
    if _bad_offsets(offsets, n) or n_acts != n or rewards.shape[0] != n or n_out != n:
        return BAD_OFFSETS
    if has_counts and (counts.shape[0] != n_states or counts.shape[1] != n_actions):
        return BAD_COUNTS
    if alpha == 0.0 and not has_counts:
        return BAD_COUNTS
    if bad_counts:  # gathered for every step: ids in range, n_acts == n, counts of q's shape
        return BAD_COUNT_VALUES
    if first_visit:
        size = n_keys
        if (
            size == 0
            or (size & (size - 1)) != 0
            or n_first != size
            or size < 2 * _max_length(offsets)
        ):
            return BAD_SCRATCH
    return 0


@njit(**NJIT)
def _slot(key, mask):
    return np.int64(mix64(np.uint64(key)) & np.uint64(mask))


@njit(**NJIT)
def _mc_overlap(q, counts, slot_keys, slot_first, returns_out, states, actions, rewards, offsets):
    """A written array (q, counts, the hash scratch, returns_out) sharing memory with another
    argument (OVERLAPPING_ARRAYS): the scratch over ``states`` changed ids after their range
    check (the Cython kernel hung).  O(1) address ranges."""
    e = offsets[:0]
    return (
        written_overlaps(q, counts, slot_keys, slot_first, returns_out, states, actions, rewards)
        or written_overlaps(q, offsets, e, e, e, e, e, e)
        or written_overlaps(
            counts, slot_keys, slot_first, returns_out, states, actions, rewards, offsets
        )
        or written_overlaps(
            slot_keys, slot_first, returns_out, states, actions, rewards, offsets, e
        )
        or written_overlaps(slot_first, returns_out, states, actions, rewards, offsets, e, e)
        or written_overlaps(returns_out, states, actions, rewards, offsets, e, e, e)
    )


@njit(**NJIT)
def mc_control_update(
    q,
    states,
    actions,
    rewards,
    episode_offsets,
    gamma,
    first_visit,
    alpha,
    counts,
    slot_keys,
    slot_first,
    returns_out,
):
    if _mc_overlap(
        q, counts, slot_keys, slot_first, returns_out, states, actions, rewards, episode_offsets
    ):
        return OVERLAPPING_ARRAYS
    status = _check_mc(
        q,
        states,
        actions,
        rewards,
        episode_offsets,
        returns_out.shape[0],
        first_visit,
        alpha,
        counts,
        slot_keys.shape[0],
        slot_first.shape[0],
    )
    if status != 0:
        return status
    n_actions = q.shape[1]
    has_counts = counts.shape[0] != 0
    mask = slot_keys.shape[0] - 1
    far = q.size > PREFETCH_CELLS
    if first_visit:
        for h in range(slot_first.shape[0]):
            slot_first[h] = -1
    for e in range(episode_offsets.shape[0] - 1):
        start = episode_offsets[e]
        stop = episode_offsets[e + 1]
        if far:  # the cells of the episode's last steps, which the backward loop needs first
            for p in range(max(start, stop - PREFETCH_AHEAD), stop):
                _prefetch(q, states[p], actions[p])
                if has_counts:
                    _prefetch(counts, states[p], actions[p])
        if first_visit:  # insert each pair once, remembering its first step
            for t in range(start, stop):
                key = np.int64(states[t]) * n_actions + actions[t]
                h = _slot(key, mask)
                while slot_first[h] >= start and slot_keys[h] != key:
                    h = (h + 1) & mask
                if slot_first[h] < start:
                    slot_keys[h] = key
                    slot_first[h] = t
        g = 0.0
        for t in range(stop - 1, start - 1, -1):
            if far and t - PREFETCH_AHEAD >= start:
                p = t - PREFETCH_AHEAD
                _prefetch(q, states[p], actions[p])
                if has_counts:
                    _prefetch(counts, states[p], actions[p])
            g = gamma * g + rewards[t]
            returns_out[t] = g
            s = states[t]
            a = actions[t]
            if first_visit:
                key = np.int64(s) * n_actions + a
                h = _slot(key, mask)
                while slot_keys[h] != key or slot_first[h] < start:
                    h = (h + 1) & mask
                if slot_first[h] != t:
                    continue  # (s_t, a_t) also occurs earlier in this episode
            q_sa = np.float64(q[s, a])
            n = np.int64(0)
            if has_counts:
                n = counts[s, a] + 1
                counts[s, a] = n
            if alpha == 0.0:
                q[s, a] = q_sa + (g - q_sa) / n
            else:
                q[s, a] = q_sa + alpha * (g - q_sa)
    return 0
