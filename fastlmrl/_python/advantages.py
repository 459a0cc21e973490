"""Reference returns / advantages over (B, T) sequences (plain Python).

Conventions (see :mod:`fastlmrl.advantages`): ``rewards[b, t]`` is the reward that followed the
action at step ``t`` (S&B's R_{t+1}); ``values[b, t]`` = V(s_t); ``mask[b, t]`` marks valid steps
(any pattern: the valid steps of a row, in order, are that row's episode and padding steps are
skipped); after the last valid step the episode ends terminated (bootstrap 0) or truncated
(bootstrap ``bootstrap_values[b]``).  Arithmetic is float64 on Python floats, each stored value is
rounded once; the compiled backends do the same operations in the same order.  ``num_threads``
(discounted_returns, lambda_returns, gae) is the compiled backends' worker count; the reference
runs one row after the other (results never depend on it).
"""

import math

# Status codes (0 = ok): fastlmrl._status.Status values, as plain ints (the contract:
# fastlmrl.advantages.CONTRACT)
from .._status import (
    BAD_ADVANTAGES,
    BAD_BOOTSTRAP,
    BAD_ENDS,
    BAD_REWARDS,
    BAD_SHAPES,
    BAD_VALUES,
    OVERLAPPING_ARRAYS,
)
from ._common import written_overlaps

__all__ = ["discounted_returns", "gae", "lambda_returns", "masked_whiten"]


def _shapes_ok(rewards, values, mask, terminated, truncated, bootstrap_values, out1, out2):
    """The shape check (first): every (B, T) array of rewards' shape, the per-sequence arrays
    (B,).  A kernel without values (or a second output) passes rewards (the first output) again."""
    shape = rewards.shape
    return (
        len(shape) == 2
        and all(a.shape == shape for a in (values, mask, out1, out2))
        and all(a.shape == shape[:1] for a in (terminated, truncated, bootstrap_values))
    )


def _overlapping(written, inputs):
    """Does an output share memory with an input or with another output (status 8, checked
    after the shapes and before anything is written)?  Every overlap is refused, an output that
    is exactly an input too: the kernels have no in-place mode (the public functions allocate
    their outputs)."""
    for i, w in enumerate(written):
        if written_overlaps(w, *written[i + 1 :], *inputs):
            return True
    return False


def _check(r_, v_, m_, term, trunc, boot):
    """0, or the status of the first bad entry (row-major; per step rewards before values).

    Only valid steps are checked; the end of a row with at least one valid step must be terminated
    or truncated, and a truncated (not terminated) row needs a finite bootstrap value.
    """
    for b in range(len(m_)):
        mrow, rrow = m_[b], r_[b]
        vrow = v_[b] if v_ is not None else None
        n_valid = 0
        for t in range(len(mrow)):
            if mrow[t]:
                n_valid += 1
                if not math.isfinite(rrow[t]):
                    return BAD_REWARDS
                if vrow is not None and not math.isfinite(vrow[t]):
                    return BAD_VALUES
        if n_valid and not term[b]:
            if not trunc[b]:
                return BAD_ENDS
            if not math.isfinite(boot[b]):
                return BAD_BOOTSTRAP
    return 0


def _lists(*arrays):
    return [None if a is None else a.tolist() for a in arrays]


def discounted_returns(
    rewards, mask, terminated, truncated, bootstrap_values, gamma, returns_out, num_threads
):
    if not _shapes_ok(
        rewards, rewards, mask, terminated, truncated, bootstrap_values, returns_out, returns_out
    ):
        return BAD_SHAPES
    if _overlapping((returns_out,), (rewards, mask, terminated, truncated, bootstrap_values)):
        return OVERLAPPING_ARRAYS
    r_, m_, term, trunc, boot = _lists(rewards, mask, terminated, truncated, bootstrap_values)
    status = _check(r_, None, m_, term, trunc, boot)
    if status:
        return status
    for b in range(len(m_)):
        mrow, rrow = m_[b], r_[b]
        g = 0.0 if term[b] else float(boot[b])
        for t in range(len(mrow) - 1, -1, -1):
            if mrow[t]:
                g = rrow[t] + gamma * g
                returns_out[b, t] = g
            else:
                returns_out[b, t] = 0.0
    return 0


def lambda_returns(
    rewards,
    values,
    mask,
    terminated,
    truncated,
    bootstrap_values,
    gamma,
    lam,
    returns_out,
    num_threads,
):
    if not _shapes_ok(
        rewards, values, mask, terminated, truncated, bootstrap_values, returns_out, returns_out
    ):
        return BAD_SHAPES
    if _overlapping(
        (returns_out,), (rewards, values, mask, terminated, truncated, bootstrap_values)
    ):
        return OVERLAPPING_ARRAYS
    r_, v_, m_, term, trunc, boot = _lists(
        rewards, values, mask, terminated, truncated, bootstrap_values
    )
    status = _check(r_, v_, m_, term, trunc, boot)
    if status:
        return status
    one_minus_lam = 1.0 - lam
    for b in range(len(m_)):
        mrow, rrow, vrow = m_[b], r_[b], v_[b]
        g = 0.0 if term[b] else float(boot[b])
        v_next = g
        for t in range(len(mrow) - 1, -1, -1):
            if mrow[t]:
                g = rrow[t] + gamma * (one_minus_lam * v_next + lam * g)
                returns_out[b, t] = g
                v_next = vrow[t]
            else:
                returns_out[b, t] = 0.0
    return 0


def gae(
    rewards,
    values,
    mask,
    terminated,
    truncated,
    bootstrap_values,
    gamma,
    lam,
    advantages_out,
    returns_out,
    num_threads,
):
    if not _shapes_ok(
        rewards, values, mask, terminated, truncated, bootstrap_values, advantages_out, returns_out
    ):
        return BAD_SHAPES
    if _overlapping(
        (advantages_out, returns_out),
        (rewards, values, mask, terminated, truncated, bootstrap_values),
    ):
        return OVERLAPPING_ARRAYS
    r_, v_, m_, term, trunc, boot = _lists(
        rewards, values, mask, terminated, truncated, bootstrap_values
    )
    status = _check(r_, v_, m_, term, trunc, boot)
    if status:
        return status
    gl = gamma * lam
    for b in range(len(m_)):
        mrow, rrow, vrow = m_[b], r_[b], v_[b]
        v_next = 0.0 if term[b] else float(boot[b])
        a = 0.0
        for t in range(len(mrow) - 1, -1, -1):
            if mrow[t]:
                v = vrow[t]
                delta = rrow[t] + gamma * v_next - v
                a = delta + gl * a
                advantages_out[b, t] = a
                returns_out[b, t] = a + v
                v_next = v
            else:
                advantages_out[b, t] = 0.0
                returns_out[b, t] = 0.0
    return 0


def _lane_sum(values):
    """Sum with 4 interleaved float64 accumulators (lane i % 4), combined as (s0+s1)+(s2+s3).

    The compiled backends sum in exactly this order (it lets them overlap the additions).
    """
    s = [0.0, 0.0, 0.0, 0.0]
    n = len(values)
    n4 = n - n % 4
    for i in range(0, n4, 4):
        s[0] += values[i]
        s[1] += values[i + 1]
        s[2] += values[i + 2]
        s[3] += values[i + 3]
    for i in range(n4, n):
        s[0] += values[i]
    return (s[0] + s[1]) + (s[2] + s[3])


def masked_whiten(advantages, mask, eps, out):
    if mask.ndim != 2 or advantages.shape != mask.shape or out.shape != mask.shape:
        return BAD_SHAPES
    if _overlapping((out,), (advantages, mask)):
        return OVERLAPPING_ARRAYS
    a_ = advantages.ravel().tolist()
    m_ = mask.ravel().tolist()
    n_rows, n_steps = mask.shape
    for i in range(len(a_)):
        if m_[i] and not math.isfinite(a_[i]):
            return BAD_ADVANTAGES
    n = 0
    for x in m_:
        if x:
            n += 1
    # masked entries contribute exactly 0.0 to their lane
    mean = _lane_sum([a_[i] if m_[i] else 0.0 for i in range(len(a_))]) / n if n else 0.0
    squares = []
    for i in range(len(a_)):
        d = a_[i] - mean if m_[i] else 0.0
        squares.append(d * d)
    std = math.sqrt(_lane_sum(squares) / n) if n else 0.0
    denom = std + eps
    for b in range(n_rows):
        for t in range(n_steps):
            i = b * n_steps + t
            out[b, t] = (a_[i] - mean) / denom if m_[i] else 0.0
    return 0
