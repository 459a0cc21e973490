"""Reference tabular Monte Carlo kernels (plain Python): the specification of the compiled ones.

Episodes arrive flat, in CSR form: episode ``e`` is steps ``offsets[e] .. offsets[e+1] - 1`` of
``states`` / ``actions`` / ``rewards``.  Returns are accumulated backward in double precision,
``G = gamma * G + r_t``, and every stored value (return, table entry) is rounded once.

Status codes (:class:`fastlmrl.Status`; the contract is ``fastlmrl.monte_carlo.CONTRACT``):
OVERLAPPING_ARRAYS a written array sharing memory with another argument (checked first);
BAD_STATES, BAD_ACTIONS an id out of range; BAD_REWARDS a reward not finite; BAD_OFFSETS offsets
invalid (or array lengths inconsistent with them); BAD_COUNTS counts missing/mis-shaped;
BAD_COUNT_VALUES a visit count of a pair of the batch negative or within T of the int64 limit (so
``counts[s, a] + 1`` can never reach 0 or overflow: checked before any write); BAD_SCRATCH hash
scratch too small / not a power of two; BAD_FINAL_VALUES a final value not finite.
"""

__all__ = ["episode_returns", "mc_control_update"]
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
from ._common import all_finite, first_out_of_range, overlapping, written_overlaps

INT64_MAX = 2**63 - 1


def _bad_offsets(offsets, n_steps) -> bool:
    """True unless offsets is non-empty, starts at 0, ends at n_steps and never decreases."""
    if len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != n_steps:
        return True
    for e in range(len(offsets) - 1):
        if offsets[e + 1] < offsets[e]:
            return True
    return False


def _max_length(offsets) -> int:
    longest = 0
    for e in range(len(offsets) - 1):
        longest = max(longest, offsets[e + 1] - offsets[e])
    return longest


def episode_returns(rewards, episode_offsets, gamma, final_values, returns_out):
    """G_t = r_t + gamma * G_{t+1}, G after the last step of episode e = final_values[e].
    ``returns_out`` sharing memory with an input is OVERLAPPING_ARRAYS (a write could move an
    offset)."""
    if written_overlaps(returns_out, rewards, episode_offsets, final_values):
        return OVERLAPPING_ARRAYS
    r_, o_, f_ = rewards.tolist(), episode_offsets.tolist(), final_values.tolist()
    if not all_finite(r_):
        return BAD_REWARDS
    if _bad_offsets(o_, len(r_)) or len(returns_out) != len(r_) or len(f_) != len(o_) - 1:
        return BAD_OFFSETS
    if not all_finite(f_):
        return BAD_FINAL_VALUES
    for e in range(len(o_) - 1):
        g = f_[e]
        for t in range(o_[e + 1] - 1, o_[e] - 1, -1):
            g = gamma * g + r_[t]
            returns_out[t] = g
    return 0


def _check_mc(q, s_, a_, r_, o_, n_out, first_visit, alpha, counts, n_keys, n_first):
    n_states, n_actions = q.shape
    if first_out_of_range(s_, n_states):
        return BAD_STATES
    if first_out_of_range(a_, n_actions):
        return BAD_ACTIONS
    if not all_finite(r_):
        return BAD_REWARDS
    n = len(s_)
    if _bad_offsets(o_, n) or len(a_) != n or len(r_) != n or n_out != n:
        return BAD_OFFSETS
    has_counts = counts.shape[0] != 0
    if (has_counts and counts.shape != q.shape) or (alpha == 0.0 and not has_counts):
        return BAD_COUNTS
    if has_counts:
        for t in range(n):
            c = int(counts[s_[t], a_[t]])
            if c < 0 or c > INT64_MAX - n:
                return BAD_COUNT_VALUES
    if first_visit:
        size = n_keys
        if size == 0 or size & (size - 1) or n_first != size or size < 2 * _max_length(o_):
            return BAD_SCRATCH
    return 0


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
    """First- or every-visit Monte Carlo control update of ``q`` (see fastlmrl.monte_carlo).

    ``alpha == 0`` selects the sample average (step 1/N(s,a), needs ``counts``); otherwise the
    constant step ``alpha``.  ``counts`` of shape (0, 0) means "no counts".  The reference finds
    first visits with a Python dict; ``slot_keys`` / ``slot_first`` (the compiled kernels' hash
    scratch) are only validated, so that every backend returns the same status.
    OVERLAPPING_ARRAYS when an array the compiled kernels write (``q``, ``counts``, the scratch,
    ``returns_out``) shares memory with another argument.
    """
    for name, arr in (("q", q), ("counts", counts), ("returns_out", returns_out)):
        if not arr.flags.writeable:  # refused before any write, as by the compiled signatures
            raise ValueError(f"{name} is read-only")
    if overlapping(
        (q, counts, slot_keys, slot_first, returns_out), (states, actions, rewards, episode_offsets)
    ):
        return OVERLAPPING_ARRAYS  # e.g. the scratch over states: a write would change an id
    s_, a_, r_, o_ = (x.tolist() for x in (states, actions, rewards, episode_offsets))
    status = _check_mc(
        q,
        s_,
        a_,
        r_,
        o_,
        len(returns_out),
        first_visit,
        alpha,
        counts,
        len(slot_keys),
        len(slot_first),
    )
    if status:
        return status
    has_counts = counts.shape[0] != 0
    for e in range(len(o_) - 1):
        start, stop = o_[e], o_[e + 1]
        first = {}
        if first_visit:
            for t in range(start, stop):
                first.setdefault((s_[t], a_[t]), t)
        g = 0.0
        for t in range(stop - 1, start - 1, -1):
            g = gamma * g + r_[t]
            returns_out[t] = g
            s, a = s_[t], a_[t]
            if first_visit and first[(s, a)] != t:
                continue  # (s_t, a_t) also occurs earlier in this episode
            q_sa = float(q[s, a])
            if has_counts:
                n = int(counts[s, a]) + 1
                counts[s, a] = n
            if alpha == 0.0:
                q[s, a] = q_sa + (g - q_sa) / n
            else:
                q[s, a] = q_sa + alpha * (g - q_sa)
    return 0
