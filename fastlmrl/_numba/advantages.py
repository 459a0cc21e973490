"""Numba returns / advantages over (B, T) sequences (same semantics and rounding as the reference).

Layout: (B, T) C-contiguous, so a row is contiguous in t.  The backward recursions are a serial
dependency chain per row (a float64 multiply and add per step); to hide its latency the kernels
walk two rows side by side (t backward, two independent recursions in one loop).  Rows run in
parallel (``num_threads``; batches of at least 2**16 steps and 4 rows): each worker claims blocks
of about 8k steps from an atomic counter (dynamic schedule).  Every row is computed by the same
code whichever worker takes it, with the reference's operations in its order, so results are
bit-identical at every thread count.  The input check before any write is one branch-free pass
per row (vectorised; the exact status of the first bad entry is looked up only when a row fails).

Alternatives measured in C prototypes (gcc -O3 -march=native, float32 (1024, 1024), thread CPU
time, one core of this machine): one row at a time 0.33 G steps/s, two rows interleaved 0.43;
four or eight rows 0.10 / 0.05 at T = 1024 (rows 4 KiB apart: cache-set aliasing) and 0.42 at
T = 1000; a block of 8-16 rows per time step through a transposed tile (t-major scratch, the row
loop vectorised) 0.10-0.15: the vectorised recursion alone ran at 1.2-1.5 G steps/s, but the
scalar copies into and out of the tile (about ten loads and stores per step) took ~1.6 ns per
step with the data in cache and ~5 ns from memory (16 rows x 5 arrays of short segments defeat
the hardware prefetcher); it would need SIMD transposes.
"""

__all__ = ["discounted_returns", "gae", "lambda_returns", "masked_whiten"]
import math

import numpy as np
from numba import njit, prange

# Status codes: fastlmrl._status.Status values as plain ints (Numba globals; the contract:
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
from ._common import NJIT
from .fast_math import fetch_add
from .overlap import written_overlaps

PARALLEL_MIN_ELEMENTS = 1 << 16  # below this many (B * T) steps the kernels use one thread
SERIAL = 1  # one worker


@njit(**NJIT)
def _shapes_ok(rewards, values, mask, terminated, truncated, bootstrap_values, out1, out2):
    """The shape check (first): every (B, T) array of rewards' shape, the per-sequence arrays
    (B,).  A kernel without values (or a second output) passes rewards (the first output) again."""
    shape = rewards.shape
    n_rows = shape[0]
    return (
        values.shape == shape
        and mask.shape == shape
        and out1.shape == shape
        and out2.shape == shape
        and terminated.shape[0] == n_rows
        and truncated.shape[0] == n_rows
        and bootstrap_values.shape[0] == n_rows
    )


@njit(**NJIT)
def _overlapping(out1, out2, rewards, values, mask, terminated, truncated, bootstrap_values):
    """Does an output share memory with an input or with the other output (status 8; O(1),
    address ranges)?  A kernel with one output passes an empty view of it as ``out2``, one
    without values an empty view of rewards."""
    return written_overlaps(
        out1, out2, rewards, values, mask, terminated, truncated, bootstrap_values
    ) or written_overlaps(
        out2, rewards, values, mask, terminated, truncated, bootstrap_values, rewards[:0]
    )


@njit(**NJIT)
def _first_bad(rewards, values, has_values, mask, terminated, truncated, bootstrap_values):
    """The status of the first bad entry (row-major; per step rewards before values, then the end
    of the row): the reference's check, run only when the fast pass found a bad row."""
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
def _row_ok(rewards, values, has_values, mask, terminated, truncated, bootstrap_values, b):
    """Row b passes the check (branch-free over t, so that it vectorises: ``x - x`` is 0 exactly
    for a finite x, NaN for inf and NaN)."""
    r = rewards[b]
    v = values[b]
    m = mask[b]
    bad = False
    seen = False
    if has_values:
        for t in range(m.shape[0]):
            x = r[t] - r[t]
            y = v[t] - v[t]
            valid = m[t] != 0
            bad = bad | (valid & ((x != 0.0) | (y != 0.0)))
            seen = seen | valid
    else:
        for t in range(m.shape[0]):
            x = r[t] - r[t]
            valid = m[t] != 0
            bad = bad | (valid & (x != 0.0))
            seen = seen | valid
    if bad:
        return False
    return (
        not seen or terminated[b] != 0 or (truncated[b] != 0 and np.isfinite(bootstrap_values[b]))
    )


@njit(cache=True, nogil=True, parallel=True)
def _bad_rows_par(rewards, values, has_values, mask, terminated, truncated, bootstrap_values, nt):
    """The number of rows that fail the check, nt workers claiming blocks of rows."""
    n = mask.shape[0]
    counter = np.zeros(1, dtype=np.int64)
    rpb = rows_per_block(mask.shape[1])
    bad = 0
    for _ in prange(nt):
        bt = 0
        lo = min(fetch_add(counter, rpb), n)
        while lo < n:
            for b in range(lo, min(lo + rpb, n)):
                if not _row_ok(
                    rewards, values, has_values, mask, terminated, truncated, bootstrap_values, b
                ):
                    bt += 1
            lo = min(fetch_add(counter, rpb), n)
        bad += bt
    return bad


@njit(**NJIT)
def _check(rewards, values, has_values, mask, terminated, truncated, bootstrap_values, nt):
    """0, or the status of the first bad entry (as the reference): a branch-free pass over the
    rows (in parallel with ``nt`` > 1 workers) finds whether a row is bad; only then is the exact
    status looked up."""
    n = mask.shape[0]
    bad = 0
    if nt > 1:
        bad = _bad_rows_par(
            rewards, values, has_values, mask, terminated, truncated, bootstrap_values, nt
        )
    else:
        for b in range(n):
            if not _row_ok(
                rewards, values, has_values, mask, terminated, truncated, bootstrap_values, b
            ):
                bad = 1
                break
    if bad:
        return _first_bad(
            rewards, values, has_values, mask, terminated, truncated, bootstrap_values
        )
    return 0


@njit(**NJIT)
def n_threads(num_threads, n_rows, n_steps):
    """Workers: 1 unless more than one thread is allowed and the batch is large enough."""
    if num_threads <= 1 or n_rows < 4 or n_rows * n_steps < PARALLEL_MIN_ELEMENTS:
        return SERIAL
    return min(num_threads, n_rows // 2)


@njit(**NJIT)
def rows_per_block(n_steps):
    """Rows a worker claims at a time: an even number, about 8k steps."""
    half = max(1, (PARALLEL_MIN_ELEMENTS // 8) // max(n_steps, 1) // 2)
    return 2 * half


# ---- rows lo..hi-1 of each kernel: two rows at a time (two independent recursions interleaved,
# each with the reference's operations in the reference's order), then a last single row.  The
# rows are walked through reversed views (``row[::-1]``, t = T-1 first) with a forward range, so
# that Numba knows every index is non-negative (no wrap-around check: 1.4x faster).


@njit(**NJIT)
def _discounted_rows(rewards, mask, terminated, bootstrap_values, gamma, returns_out, lo, hi):
    n_steps = mask.shape[1]
    b = lo
    while b + 1 < hi:
        r0, r1 = rewards[b, ::-1], rewards[b + 1, ::-1]
        m0, m1 = mask[b, ::-1], mask[b + 1, ::-1]
        o0, o1 = returns_out[b, ::-1], returns_out[b + 1, ::-1]
        g0 = _boot(terminated, bootstrap_values, b)
        g1 = _boot(terminated, bootstrap_values, b + 1)
        for t in range(n_steps):
            if m0[t]:
                g0 = np.float64(r0[t]) + gamma * g0
                o0[t] = g0
            else:
                o0[t] = 0.0
            if m1[t]:
                g1 = np.float64(r1[t]) + gamma * g1
                o1[t] = g1
            else:
                o1[t] = 0.0
        b += 2
    if b < hi:
        r0, m0, o0 = rewards[b, ::-1], mask[b, ::-1], returns_out[b, ::-1]
        g0 = _boot(terminated, bootstrap_values, b)
        for t in range(n_steps):
            if m0[t]:
                g0 = np.float64(r0[t]) + gamma * g0
                o0[t] = g0
            else:
                o0[t] = 0.0


@njit(**NJIT)
def _lambda_rows(
    rewards, values, mask, terminated, bootstrap_values, gamma, lam, returns_out, lo, hi
):
    n_steps = mask.shape[1]
    one_minus_lam = 1.0 - lam
    b = lo
    while b + 1 < hi:
        r0, r1 = rewards[b, ::-1], rewards[b + 1, ::-1]
        v0, v1 = values[b, ::-1], values[b + 1, ::-1]
        m0, m1 = mask[b, ::-1], mask[b + 1, ::-1]
        o0, o1 = returns_out[b, ::-1], returns_out[b + 1, ::-1]
        g0 = _boot(terminated, bootstrap_values, b)
        g1 = _boot(terminated, bootstrap_values, b + 1)
        vn0, vn1 = g0, g1
        for t in range(n_steps):
            if m0[t]:
                g0 = np.float64(r0[t]) + gamma * (one_minus_lam * vn0 + lam * g0)
                o0[t] = g0
                vn0 = np.float64(v0[t])
            else:
                o0[t] = 0.0
            if m1[t]:
                g1 = np.float64(r1[t]) + gamma * (one_minus_lam * vn1 + lam * g1)
                o1[t] = g1
                vn1 = np.float64(v1[t])
            else:
                o1[t] = 0.0
        b += 2
    if b < hi:
        r0, v0, m0, o0 = rewards[b, ::-1], values[b, ::-1], mask[b, ::-1], returns_out[b, ::-1]
        g0 = _boot(terminated, bootstrap_values, b)
        vn0 = g0
        for t in range(n_steps):
            if m0[t]:
                g0 = np.float64(r0[t]) + gamma * (one_minus_lam * vn0 + lam * g0)
                o0[t] = g0
                vn0 = np.float64(v0[t])
            else:
                o0[t] = 0.0


@njit(**NJIT)
def _gae_rows(
    rewards,
    values,
    mask,
    terminated,
    bootstrap_values,
    gamma,
    lam,
    advantages_out,
    returns_out,
    lo,
    hi,
):
    n_steps = mask.shape[1]
    gl = gamma * lam
    b = lo
    while b + 1 < hi:
        r0, r1 = rewards[b, ::-1], rewards[b + 1, ::-1]
        v0, v1 = values[b, ::-1], values[b + 1, ::-1]
        m0, m1 = mask[b, ::-1], mask[b + 1, ::-1]
        a0_out, a1_out = advantages_out[b, ::-1], advantages_out[b + 1, ::-1]
        o0, o1 = returns_out[b, ::-1], returns_out[b + 1, ::-1]
        vn0 = _boot(terminated, bootstrap_values, b)
        vn1 = _boot(terminated, bootstrap_values, b + 1)
        a0 = 0.0
        a1 = 0.0
        for t in range(n_steps):
            if m0[t]:
                x0 = np.float64(v0[t])
                a0 = (np.float64(r0[t]) + gamma * vn0 - x0) + gl * a0
                a0_out[t] = a0
                o0[t] = a0 + x0
                vn0 = x0
            else:
                a0_out[t] = 0.0
                o0[t] = 0.0
            if m1[t]:
                x1 = np.float64(v1[t])
                a1 = (np.float64(r1[t]) + gamma * vn1 - x1) + gl * a1
                a1_out[t] = a1
                o1[t] = a1 + x1
                vn1 = x1
            else:
                a1_out[t] = 0.0
                o1[t] = 0.0
        b += 2
    if b < hi:
        r0, v0, m0 = rewards[b, ::-1], values[b, ::-1], mask[b, ::-1]
        a0_out, o0 = advantages_out[b, ::-1], returns_out[b, ::-1]
        vn0 = _boot(terminated, bootstrap_values, b)
        a0 = 0.0
        for t in range(n_steps):
            if m0[t]:
                x0 = np.float64(v0[t])
                a0 = (np.float64(r0[t]) + gamma * vn0 - x0) + gl * a0
                a0_out[t] = a0
                o0[t] = a0 + x0
                vn0 = x0
            else:
                a0_out[t] = 0.0
                o0[t] = 0.0


# ---- parallel drivers: each of nt workers claims blocks of rows from an atomic counter until
# none is left (dynamic schedule: a worker slowed by another process leaves the rest to the
# others).  A row's result does not depend on the worker or the block that computes it.


@njit(cache=True, nogil=True, parallel=True)
def _discounted_par(rewards, mask, terminated, bootstrap_values, gamma, returns_out, nt):
    n = mask.shape[0]
    counter = np.zeros(1, dtype=np.int64)
    rpb = rows_per_block(mask.shape[1])
    for _ in prange(nt):
        lo = min(fetch_add(counter, rpb), n)
        while lo < n:
            _discounted_rows(
                rewards,
                mask,
                terminated,
                bootstrap_values,
                gamma,
                returns_out,
                lo,
                min(lo + rpb, n),
            )
            lo = min(fetch_add(counter, rpb), n)


@njit(cache=True, nogil=True, parallel=True)
def _lambda_par(rewards, values, mask, terminated, bootstrap_values, gamma, lam, returns_out, nt):
    n = mask.shape[0]
    counter = np.zeros(1, dtype=np.int64)
    rpb = rows_per_block(mask.shape[1])
    for _ in prange(nt):
        lo = min(fetch_add(counter, rpb), n)
        while lo < n:
            _lambda_rows(
                rewards,
                values,
                mask,
                terminated,
                bootstrap_values,
                gamma,
                lam,
                returns_out,
                lo,
                min(lo + rpb, n),
            )
            lo = min(fetch_add(counter, rpb), n)


@njit(cache=True, nogil=True, parallel=True)
def _gae_par(
    rewards, values, mask, terminated, bootstrap_values, gamma, lam, advantages_out, returns_out, nt
):
    n = mask.shape[0]
    counter = np.zeros(1, dtype=np.int64)
    rpb = rows_per_block(mask.shape[1])
    for _ in prange(nt):
        lo = min(fetch_add(counter, rpb), n)
        while lo < n:
            _gae_rows(
                rewards,
                values,
                mask,
                terminated,
                bootstrap_values,
                gamma,
                lam,
                advantages_out,
                returns_out,
                lo,
                min(lo + rpb, n),
            )
            lo = min(fetch_add(counter, rpb), n)


# ---- kernels ------------------------------------------------------------------------------------


@njit(**NJIT)
def discounted_returns(
    rewards, mask, terminated, truncated, bootstrap_values, gamma, returns_out, num_threads
):
    if not _shapes_ok(
        rewards, rewards, mask, terminated, truncated, bootstrap_values, returns_out, returns_out
    ):
        return BAD_SHAPES
    if _overlapping(
        returns_out,
        returns_out[:0],
        rewards,
        rewards[:0],
        mask,
        terminated,
        truncated,
        bootstrap_values,
    ):
        return OVERLAPPING_ARRAYS
    n_rows, n_steps = mask.shape
    nt = n_threads(num_threads, n_rows, n_steps)
    status = _check(rewards, rewards, False, mask, terminated, truncated, bootstrap_values, nt)
    if status != 0:
        return status
    if nt > 1:
        _discounted_par(rewards, mask, terminated, bootstrap_values, gamma, returns_out, nt)
    else:
        _discounted_rows(rewards, mask, terminated, bootstrap_values, gamma, returns_out, 0, n_rows)
    return 0


@njit(**NJIT)
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
        returns_out, returns_out[:0], rewards, values, mask, terminated, truncated, bootstrap_values
    ):
        return OVERLAPPING_ARRAYS
    n_rows, n_steps = mask.shape
    nt = n_threads(num_threads, n_rows, n_steps)
    status = _check(rewards, values, True, mask, terminated, truncated, bootstrap_values, nt)
    if status != 0:
        return status
    if nt > 1:
        _lambda_par(
            rewards, values, mask, terminated, bootstrap_values, gamma, lam, returns_out, nt
        )
    else:
        _lambda_rows(
            rewards, values, mask, terminated, bootstrap_values, gamma, lam, returns_out, 0, n_rows
        )
    return 0


@njit(**NJIT)
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
        advantages_out, returns_out, rewards, values, mask, terminated, truncated, bootstrap_values
    ):
        return OVERLAPPING_ARRAYS
    n_rows, n_steps = mask.shape
    nt = n_threads(num_threads, n_rows, n_steps)
    status = _check(rewards, values, True, mask, terminated, truncated, bootstrap_values, nt)
    if status != 0:
        return status
    if nt > 1:
        _gae_par(
            rewards,
            values,
            mask,
            terminated,
            bootstrap_values,
            gamma,
            lam,
            advantages_out,
            returns_out,
            nt,
        )
    else:
        _gae_rows(
            rewards,
            values,
            mask,
            terminated,
            bootstrap_values,
            gamma,
            lam,
            advantages_out,
            returns_out,
            0,
            n_rows,
        )
    return 0


@njit(**NJIT)
def masked_whiten(advantages, mask, eps, out):
    if advantages.shape != mask.shape or out.shape != mask.shape:
        return BAD_SHAPES
    if written_overlaps(out, advantages, mask, mask[:0], mask[:0], mask[:0], mask[:0], mask[:0]):
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
