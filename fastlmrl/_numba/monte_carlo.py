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

from ._common import NJIT, mix64, not_all_finite, out_of_range
from .overlap import overlap

BAD_STATES = 1
BAD_ACTIONS = 2
BAD_REWARDS = 5
BAD_OFFSETS = 6
BAD_COUNTS = 20
BAD_SCRATCH = 21
BAD_FINAL_VALUES = 22
OVERLAPPING_ARRAYS = 8  # fastlmrl._status: returns_out shares memory with an input
BAD_COUNT_VALUES = 23
INT64_MAX = 2**63 - 1


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
    if (overlap(returns_out, rewards) or overlap(returns_out, episode_offsets)
            or overlap(returns_out, final_values)):
        return OVERLAPPING_ARRAYS
    if not_all_finite(rewards):
        return BAD_REWARDS
    if (_bad_offsets(episode_offsets, n) or returns_out.shape[0] != n
            or final_values.shape[0] != episode_offsets.shape[0] - 1):
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
def _check_mc(q, states, actions, rewards, offsets, n_out, first_visit, alpha, counts, n_keys,
              n_first):
    n_states, n_actions = q.shape
    if out_of_range(states, n_states):
        return BAD_STATES
    if out_of_range(actions, n_actions):
        return BAD_ACTIONS
    if not_all_finite(rewards):
        return BAD_REWARDS
    n = states.shape[0]
    if (_bad_offsets(offsets, n) or actions.shape[0] != n or rewards.shape[0] != n
            or n_out != n):
        return BAD_OFFSETS
    has_counts = counts.shape[0] != 0
    if has_counts and (counts.shape[0] != n_states or counts.shape[1] != n_actions):
        return BAD_COUNTS
    if alpha == 0.0 and not has_counts:
        return BAD_COUNTS
    if has_counts:  # counts[s, a] + 1 never reaches 0 nor overflows (checked before any write)
        # one unsigned comparison per step (a negative count is a huge uint64), no early exit
        limit = np.uint64(INT64_MAX - n)
        bad = False
        for t in range(n):
            bad |= np.uint64(counts[states[t], actions[t]]) > limit
        if bad:
            return BAD_COUNT_VALUES
    if first_visit:
        size = n_keys
        if (size == 0 or (size & (size - 1)) != 0 or n_first != size
                or size < 2 * _max_length(offsets)):
            return BAD_SCRATCH
    return 0


@njit(**NJIT)
def _slot(key, mask):
    return np.int64(mix64(np.uint64(key)) & np.uint64(mask))


@njit(**NJIT)
def mc_control_update(q, states, actions, rewards, episode_offsets, gamma, first_visit, alpha,
                      counts, slot_keys, slot_first, returns_out):
    status = _check_mc(q, states, actions, rewards, episode_offsets, returns_out.shape[0],
                       first_visit, alpha, counts, slot_keys.shape[0], slot_first.shape[0])
    if status != 0:
        return status
    n_actions = q.shape[1]
    has_counts = counts.shape[0] != 0
    mask = slot_keys.shape[0] - 1
    if first_visit:
        for h in range(slot_first.shape[0]):
            slot_first[h] = -1
    for e in range(episode_offsets.shape[0] - 1):
        start = episode_offsets[e]
        stop = episode_offsets[e + 1]
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
