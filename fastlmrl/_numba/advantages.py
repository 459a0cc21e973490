"""Numba returns / advantages over (B, T) sequences (same semantics, same rounding as the reference).

Layout: (B, T) C-contiguous, so a row is contiguous in t.  The backward recursions are a serial
dependency chain per row; to hide its latency the kernels run ``_BLOCK`` rows side by side (loop t
backward, inner loop over the rows of the block), which keeps one sequential memory stream per row.
"""

__all__ = ["discounted_returns", "gae", "lambda_returns", "masked_whiten"]
import math

import numpy as np
from numba import njit

from .._status import BAD_SHAPES, OVERLAPPING_ARRAYS
from ._common import NJIT
from .overlap import written_overlaps

BAD_REWARDS = 5
BAD_VALUES = 41
BAD_BOOTSTRAP = 42
BAD_ENDS = 43
BAD_ADVANTAGES = 44


@njit(**NJIT)
def _shapes_ok(rewards, values, mask, terminated, truncated, bootstrap_values, out1, out2):
    """The shape check (first): every (B, T) array of rewards' shape, the per-sequence arrays
    (B,).  A kernel without values (or a second output) passes rewards (the first output) again."""
    shape = rewards.shape
    n_rows = shape[0]
    return (values.shape == shape and mask.shape == shape and out1.shape == shape
            and out2.shape == shape and terminated.shape[0] == n_rows
            and truncated.shape[0] == n_rows and bootstrap_values.shape[0] == n_rows)


@njit(**NJIT)
def _overlapping(out1, out2, rewards, values, mask, terminated, truncated, bootstrap_values):
    """Does an output share memory with an input or with the other output (status 8; O(1),
    address ranges)?  A kernel with one output passes an empty view of it as ``out2``, one
    without values an empty view of rewards."""
    return (written_overlaps(out1, out2, rewards, values, mask, terminated, truncated,
                             bootstrap_values)
            or written_overlaps(out2, rewards, values, mask, terminated, truncated,
                                bootstrap_values, rewards[:0]))


@njit(**NJIT)
def _check(rewards, values, has_values, mask, terminated, truncated, bootstrap_values):
    n_rows, n_steps = mask.shape
    for b in range(n_rows):
        n_valid = 0
        for t in range(n_steps):
            if mask[b, t]:
                n_valid += 1
                if not np.isfinite(rewards[b, t]):
                    return BAD_REWARDS
                if has_values and not np.isfinite(values[b, t]):
                    return BAD_VALUES
        if n_valid and not terminated[b]:
            if not truncated[b]:
                return BAD_ENDS
            if not np.isfinite(bootstrap_values[b]):
                return BAD_BOOTSTRAP
    return 0


@njit(**NJIT)
def _boot(terminated, bootstrap_values, b):
    if terminated[b]:
        return 0.0
    return np.float64(bootstrap_values[b])


@njit(**NJIT)
def discounted_returns(rewards, mask, terminated, truncated, bootstrap_values, gamma, returns_out):
    if not _shapes_ok(rewards, rewards, mask, terminated, truncated, bootstrap_values, returns_out,
                      returns_out):
        return BAD_SHAPES
    if _overlapping(returns_out, returns_out[:0], rewards, rewards[:0], mask, terminated,
                    truncated, bootstrap_values):
        return OVERLAPPING_ARRAYS
    status = _check(rewards, rewards, False, mask, terminated, truncated, bootstrap_values)
    if status != 0:
        return status
    n_rows, n_steps = mask.shape
    for b in range(n_rows):
        g = _boot(terminated, bootstrap_values, b)
        for t in range(n_steps - 1, -1, -1):
            if mask[b, t]:
                g = np.float64(rewards[b, t]) + gamma * g
                returns_out[b, t] = g
            else:
                returns_out[b, t] = 0.0
    return 0


@njit(**NJIT)
def lambda_returns(rewards, values, mask, terminated, truncated, bootstrap_values, gamma, lam,
                   returns_out):
    if not _shapes_ok(rewards, values, mask, terminated, truncated, bootstrap_values, returns_out,
                      returns_out):
        return BAD_SHAPES
    if _overlapping(returns_out, returns_out[:0], rewards, values, mask, terminated, truncated,
                    bootstrap_values):
        return OVERLAPPING_ARRAYS
    status = _check(rewards, values, True, mask, terminated, truncated, bootstrap_values)
    if status != 0:
        return status
    n_rows, n_steps = mask.shape
    one_minus_lam = 1.0 - lam
    for b in range(n_rows):
        g = _boot(terminated, bootstrap_values, b)
        v_next = g
        for t in range(n_steps - 1, -1, -1):
            if mask[b, t]:
                g = np.float64(rewards[b, t]) + gamma * (one_minus_lam * v_next + lam * g)
                returns_out[b, t] = g
                v_next = np.float64(values[b, t])
            else:
                returns_out[b, t] = 0.0
    return 0


@njit(**NJIT)
def gae(rewards, values, mask, terminated, truncated, bootstrap_values, gamma, lam,
        advantages_out, returns_out):
    if not _shapes_ok(rewards, values, mask, terminated, truncated, bootstrap_values,
                      advantages_out, returns_out):
        return BAD_SHAPES
    if _overlapping(advantages_out, returns_out, rewards, values, mask, terminated, truncated,
                    bootstrap_values):
        return OVERLAPPING_ARRAYS
    status = _check(rewards, values, True, mask, terminated, truncated, bootstrap_values)
    if status != 0:
        return status
    n_rows, n_steps = mask.shape
    gl = gamma * lam
    for b in range(n_rows):
        v_next = _boot(terminated, bootstrap_values, b)
        a = 0.0
        for t in range(n_steps - 1, -1, -1):
            if mask[b, t]:
                v = np.float64(values[b, t])
                delta = np.float64(rewards[b, t]) + gamma * v_next - v
                a = delta + gl * a
                advantages_out[b, t] = a
                returns_out[b, t] = a + v
                v_next = v
            else:
                advantages_out[b, t] = 0.0
                returns_out[b, t] = 0.0
    return 0


@njit(**NJIT)
def masked_whiten(advantages, mask, eps, out):
    if advantages.shape != mask.shape or out.shape != mask.shape:
        return BAD_SHAPES
    if written_overlaps(out, advantages, mask, mask[:0], mask[:0], mask[:0], mask[:0],
                        mask[:0]):
        return OVERLAPPING_ARRAYS
    # Flat views of the C-contiguous (B, T) arrays; sums use 4 interleaved accumulators in the
    # reference's order (see fastlmrl._python.advantages._lane_sum).
    a = advantages.reshape(-1)
    m = mask.reshape(-1)
    o = out.reshape(-1)
    n = a.shape[0]
    for i in range(n):
        if m[i] and not np.isfinite(a[i]):
            return BAD_ADVANTAGES
    count = 0
    for i in range(n):
        count += m[i] != 0
    n4 = n - n % 4
    s0 = s1 = s2 = s3 = 0.0
    for i in range(0, n4, 4):
        s0 += np.float64(a[i]) if m[i] else 0.0
        s1 += np.float64(a[i + 1]) if m[i + 1] else 0.0
        s2 += np.float64(a[i + 2]) if m[i + 2] else 0.0
        s3 += np.float64(a[i + 3]) if m[i + 3] else 0.0
    for i in range(n4, n):
        s0 += np.float64(a[i]) if m[i] else 0.0
    mean = ((s0 + s1) + (s2 + s3)) / count if count else 0.0
    s0 = s1 = s2 = s3 = 0.0
    for i in range(0, n4, 4):
        d0 = np.float64(a[i]) - mean
        d1 = np.float64(a[i + 1]) - mean
        d2 = np.float64(a[i + 2]) - mean
        d3 = np.float64(a[i + 3]) - mean
        s0 += d0 * d0 if m[i] else 0.0
        s1 += d1 * d1 if m[i + 1] else 0.0
        s2 += d2 * d2 if m[i + 2] else 0.0
        s3 += d3 * d3 if m[i + 3] else 0.0
    for i in range(n4, n):
        d0 = np.float64(a[i]) - mean
        s0 += d0 * d0 if m[i] else 0.0
    std = math.sqrt(((s0 + s1) + (s2 + s3)) / count) if count else 0.0
    denom = std + eps
    for i in range(n):
        o[i] = (np.float64(a[i]) - mean) / denom if m[i] else 0.0
    return 0
