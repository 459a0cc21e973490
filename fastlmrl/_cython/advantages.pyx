# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython returns / advantages over (B, T) sequences (same semantics, same rounding as the reference).

Two rows at a time, t backward over the contiguous rows (two independent recursions interleaved
hide the latency of each), row pairs in parallel (``num_threads``, batches of at least 2**16
steps; ``prange`` with a dynamic schedule, chunks of about 8k steps).  Each row is computed by the
same code whichever thread takes it: results are bit-identical at every thread count.  See
fastlmrl/_numba/advantages.py for the alternatives measured (a transposed tile of 16 rows was
slower).
"""

__all__ = ["discounted_returns", "gae", "lambda_returns", "masked_whiten"]
from cython.parallel cimport prange
from libc.math cimport isfinite, sqrt

from fastlmrl._cython._common cimport real_t
from fastlmrl._cython.overlap cimport span_1d, span_2d, written_overlap
# status codes: fastlmrl._status.Status (status.pxd is generated from it; the contract:
# fastlmrl.advantages.CONTRACT)
from fastlmrl._cython cimport status as st

import operator
import os

cdef Py_ssize_t PARALLEL_MIN_ELEMENTS = 65536  # below this many (B * T) steps: one thread
cdef int SERIAL = 1
# More threads than cores gain nothing (results never depend on the count); a huge num_threads
# from a direct caller is clamped instead of asking OpenMP for billions of threads.
cdef int MAX_THREADS = max(1, os.cpu_count() or 1)


cdef int _thread_count(object num_threads) except -1:
    """num_threads (any Python integer; TypeError otherwise) clamped to [1, cores]."""
    n = operator.index(num_threads)
    return <int>min(max(n, SERIAL), MAX_THREADS)


cdef inline bint _same_shape(const Py_ssize_t* a, const Py_ssize_t* b) noexcept nogil:
    """The shapes of two 2-D memoryviews are equal."""
    return a[0] == b[0] and a[1] == b[1]


cdef inline bint _shapes_ok(const real_t[:, ::1] rewards, const real_t[:, ::1] values,
                            const unsigned char[:, ::1] mask, const unsigned char[::1] terminated,
                            const unsigned char[::1] truncated,
                            const real_t[::1] bootstrap_values, const real_t[:, ::1] out1,
                            const real_t[:, ::1] out2) noexcept nogil:
    """The shape check (first): every (B, T) array of rewards' shape, the per-sequence arrays
    (B,).  A kernel without values (or a second output) passes rewards (the first output) again."""
    cdef Py_ssize_t b = rewards.shape[0]
    return (_same_shape(rewards.shape, values.shape) and _same_shape(rewards.shape, mask.shape)
            and _same_shape(rewards.shape, out1.shape) and _same_shape(rewards.shape, out2.shape)
            and terminated.shape[0] == b and truncated.shape[0] == b
            and bootstrap_values.shape[0] == b)


cdef inline bint _overlapping(const real_t[:, ::1] out1, const real_t[:, ::1] out2,
                              const real_t[:, ::1] rewards, const real_t[:, ::1] values,
                              const unsigned char[:, ::1] mask,
                              const unsigned char[::1] terminated,
                              const unsigned char[::1] truncated,
                              const real_t[::1] bootstrap_values, int n_out) noexcept nogil:
    """Does one of the ``n_out`` outputs (1: ``out2`` is not used; 2) share memory with an
    input or with the other output (status 8; O(1), address ranges)?  ``values`` may repeat
    ``rewards`` (a kernel without values): inputs may share memory with each other."""
    cdef const char* start[8]
    cdef size_t size[8]
    cdef Py_ssize_t n = rewards.shape[0], horizon = rewards.shape[1]
    span_2d(&out1[0, 0], n, horizon, sizeof(real_t), start, size, 0)
    span_2d(&out2[0, 0], n, horizon, sizeof(real_t), start, size, 1)
    if n_out == 1:
        size[1] = 0
    span_2d(&rewards[0, 0], n, horizon, sizeof(real_t), start, size, 2)
    span_2d(&values[0, 0], n, horizon, sizeof(real_t), start, size, 3)
    span_2d(&mask[0, 0], n, horizon, 1, start, size, 4)
    span_1d(&terminated[0], n, 1, start, size, 5)
    span_1d(&truncated[0], n, 1, start, size, 6)
    span_1d(&bootstrap_values[0], n, sizeof(real_t), start, size, 7)
    return written_overlap(2, 8, start, size)


cdef int _first_bad(const real_t[:, ::1] rewards, const real_t[:, ::1] values, bint has_values,
                    const unsigned char[:, ::1] mask, const unsigned char[::1] terminated,
                    const unsigned char[::1] truncated,
                    const real_t[::1] bootstrap_values) noexcept nogil:
    """The status of the first bad entry (row-major; per step rewards before values, then the end
    of the row): the reference's check, run only when the fast pass found a bad row."""
    cdef Py_ssize_t b, t, n_valid
    for b in range(mask.shape[0]):
        n_valid = 0
        for t in range(mask.shape[1]):
            if mask[b, t]:
                n_valid += 1
                if not isfinite(rewards[b, t]):
                    return st.BAD_REWARDS
                if has_values and not isfinite(values[b, t]):
                    return st.BAD_VALUES
        if n_valid and not terminated[b]:
            if not truncated[b]:
                return st.BAD_ENDS
            if not isfinite(bootstrap_values[b]):
                return st.BAD_BOOTSTRAP
    return 0


cdef inline int _n_threads(int num_threads, Py_ssize_t n_rows, Py_ssize_t n_steps) noexcept nogil:
    """Workers: 1 unless more than one thread is allowed and the batch is large enough."""
    if num_threads <= 1 or n_rows < 4 or n_rows * n_steps < PARALLEL_MIN_ELEMENTS:
        return SERIAL
    return <int>min(<Py_ssize_t>num_threads, n_rows // 2)


cdef inline Py_ssize_t _pairs_per_chunk(Py_ssize_t n_steps) noexcept nogil:
    """Row pairs a thread claims at a time (about 8k steps)."""
    return max(1, (PARALLEL_MIN_ELEMENTS // 8) // max(n_steps, 1) // 2)


cdef inline bint _row_ok(const real_t* r, const real_t* v, const unsigned char* m,
                         Py_ssize_t n_steps, bint has_values, const unsigned char* terminated,
                         const unsigned char* truncated, const real_t* bootstrap_values,
                         Py_ssize_t b) noexcept nogil:
    """Row b passes the check (branch-free over t, so that it vectorises: ``x - x`` is 0 exactly
    for a finite x, NaN for inf and NaN; pointers to row b)."""
    cdef Py_ssize_t t
    cdef unsigned char bad = 0, seen = 0
    cdef real_t x, y
    if has_values:
        for t in range(n_steps):
            x = r[t] - r[t]
            y = v[t] - v[t]
            bad |= (m[t] != 0) & ((x != 0) | (y != 0))
            seen |= m[t]
    else:
        for t in range(n_steps):
            x = r[t] - r[t]
            bad |= (m[t] != 0) & (x != 0)
            seen |= m[t]
    if bad:
        return False
    return (not seen or terminated[b]
            or (truncated[b] and isfinite(bootstrap_values[b])))


cdef int _check(const real_t[:, ::1] rewards, const real_t[:, ::1] values, bint has_values,
                const unsigned char[:, ::1] mask, const unsigned char[::1] terminated,
                const unsigned char[::1] truncated, const real_t[::1] bootstrap_values,
                int nt) noexcept nogil:
    """0, or the status of the first bad entry (as the reference): a branch-free pass over the
    rows (in parallel with ``nt`` > 1 threads) counts the bad rows; only when there is one is the
    exact status looked up."""
    cdef Py_ssize_t b, n = mask.shape[0], n_steps = mask.shape[1]
    cdef Py_ssize_t n_bad = 0
    if n == 0 or n_steps == 0:
        return 0
    cdef const real_t* r = &rewards[0, 0]
    cdef const real_t* v = &values[0, 0]
    cdef const unsigned char* m = &mask[0, 0]
    cdef const unsigned char* term = &terminated[0]
    cdef const unsigned char* trunc = &truncated[0]
    cdef const real_t* boot = &bootstrap_values[0]
    if nt > 1:
        for b in prange(n, num_threads=nt, schedule="dynamic",
                        chunksize=2 * _pairs_per_chunk(n_steps)):
            if not _row_ok(r + b * n_steps, v + b * n_steps, m + b * n_steps, n_steps,
                           has_values, term, trunc, boot, b):
                n_bad += 1
    else:
        for b in range(n):
            if not _row_ok(r + b * n_steps, v + b * n_steps, m + b * n_steps, n_steps,
                           has_values, term, trunc, boot, b):
                n_bad += 1
                break
    if n_bad:
        return _first_bad(rewards, values, has_values, mask, terminated, truncated,
                          bootstrap_values)
    return 0


cdef inline double _boot(const unsigned char* terminated, const real_t* bootstrap_values,
                         Py_ssize_t b) noexcept nogil:
    if terminated[b]:
        return 0.0
    return <double>bootstrap_values[b]


# ---- rows lo..hi-1 (hi <= lo + 2) of each kernel: two rows side by side (two independent
# recursions interleaved in one loop over t, each with the reference's operations in its order).
# Pointers are to the first element of each C-contiguous (B, T) / (B,) array.

cdef void _discounted_rows(const real_t* rewards, const unsigned char* mask,
                           const unsigned char* terminated, const real_t* bootstrap_values,
                           double gamma, real_t* returns_out, Py_ssize_t n_steps, Py_ssize_t lo,
                           Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t t
    cdef double g0, g1
    cdef const real_t* r0 = rewards + lo * n_steps
    cdef const real_t* r1 = r0 + n_steps
    cdef const unsigned char* m0 = mask + lo * n_steps
    cdef const unsigned char* m1 = m0 + n_steps
    cdef real_t* o0 = returns_out + lo * n_steps
    cdef real_t* o1 = o0 + n_steps
    g0 = _boot(terminated, bootstrap_values, lo)
    if hi - lo == 2:
        g1 = _boot(terminated, bootstrap_values, lo + 1)
        for t in range(n_steps - 1, -1, -1):
            if m0[t]:
                g0 = <double>r0[t] + gamma * g0
                o0[t] = <real_t>g0
            else:
                o0[t] = 0
            if m1[t]:
                g1 = <double>r1[t] + gamma * g1
                o1[t] = <real_t>g1
            else:
                o1[t] = 0
    else:
        for t in range(n_steps - 1, -1, -1):
            if m0[t]:
                g0 = <double>r0[t] + gamma * g0
                o0[t] = <real_t>g0
            else:
                o0[t] = 0


cdef void _lambda_rows(const real_t* rewards, const real_t* values, const unsigned char* mask,
                       const unsigned char* terminated, const real_t* bootstrap_values,
                       double gamma, double lam, real_t* returns_out, Py_ssize_t n_steps,
                       Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t t
    cdef double g0, g1, vn0, vn1, one_minus_lam = 1.0 - lam
    cdef const real_t* r0 = rewards + lo * n_steps
    cdef const real_t* r1 = r0 + n_steps
    cdef const real_t* v0 = values + lo * n_steps
    cdef const real_t* v1 = v0 + n_steps
    cdef const unsigned char* m0 = mask + lo * n_steps
    cdef const unsigned char* m1 = m0 + n_steps
    cdef real_t* o0 = returns_out + lo * n_steps
    cdef real_t* o1 = o0 + n_steps
    g0 = _boot(terminated, bootstrap_values, lo)
    vn0 = g0
    if hi - lo == 2:
        g1 = _boot(terminated, bootstrap_values, lo + 1)
        vn1 = g1
        for t in range(n_steps - 1, -1, -1):
            if m0[t]:
                g0 = <double>r0[t] + gamma * (one_minus_lam * vn0 + lam * g0)
                o0[t] = <real_t>g0
                vn0 = <double>v0[t]
            else:
                o0[t] = 0
            if m1[t]:
                g1 = <double>r1[t] + gamma * (one_minus_lam * vn1 + lam * g1)
                o1[t] = <real_t>g1
                vn1 = <double>v1[t]
            else:
                o1[t] = 0
    else:
        for t in range(n_steps - 1, -1, -1):
            if m0[t]:
                g0 = <double>r0[t] + gamma * (one_minus_lam * vn0 + lam * g0)
                o0[t] = <real_t>g0
                vn0 = <double>v0[t]
            else:
                o0[t] = 0


cdef void _gae_rows(const real_t* rewards, const real_t* values, const unsigned char* mask,
                    const unsigned char* terminated, const real_t* bootstrap_values, double gamma,
                    double lam, real_t* advantages_out, real_t* returns_out, Py_ssize_t n_steps,
                    Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t t
    cdef double a0 = 0.0, a1 = 0.0, x0, x1, vn0, vn1, gl = gamma * lam
    cdef const real_t* r0 = rewards + lo * n_steps
    cdef const real_t* r1 = r0 + n_steps
    cdef const real_t* v0 = values + lo * n_steps
    cdef const real_t* v1 = v0 + n_steps
    cdef const unsigned char* m0 = mask + lo * n_steps
    cdef const unsigned char* m1 = m0 + n_steps
    cdef real_t* adv0 = advantages_out + lo * n_steps
    cdef real_t* adv1 = adv0 + n_steps
    cdef real_t* o0 = returns_out + lo * n_steps
    cdef real_t* o1 = o0 + n_steps
    vn0 = _boot(terminated, bootstrap_values, lo)
    if hi - lo == 2:
        vn1 = _boot(terminated, bootstrap_values, lo + 1)
        for t in range(n_steps - 1, -1, -1):
            if m0[t]:
                x0 = <double>v0[t]
                a0 = (<double>r0[t] + gamma * vn0 - x0) + gl * a0
                adv0[t] = <real_t>a0
                o0[t] = <real_t>(a0 + x0)
                vn0 = x0
            else:
                adv0[t] = 0
                o0[t] = 0
            if m1[t]:
                x1 = <double>v1[t]
                a1 = (<double>r1[t] + gamma * vn1 - x1) + gl * a1
                adv1[t] = <real_t>a1
                o1[t] = <real_t>(a1 + x1)
                vn1 = x1
            else:
                adv1[t] = 0
                o1[t] = 0
    else:
        for t in range(n_steps - 1, -1, -1):
            if m0[t]:
                x0 = <double>v0[t]
                a0 = (<double>r0[t] + gamma * vn0 - x0) + gl * a0
                adv0[t] = <real_t>a0
                o0[t] = <real_t>(a0 + x0)
                vn0 = x0
            else:
                adv0[t] = 0
                o0[t] = 0


cdef int discounted_returns_core(const real_t[:, ::1] rewards, const unsigned char[:, ::1] mask,
                                 const unsigned char[::1] terminated,
                                 const unsigned char[::1] truncated,
                                 const real_t[::1] bootstrap_values, double gamma,
                                 real_t[:, ::1] returns_out, int num_threads) noexcept nogil:
    cdef Py_ssize_t p, n = mask.shape[0], n_steps = mask.shape[1]
    cdef int status, nt
    if not _shapes_ok(rewards, rewards, mask, terminated, truncated, bootstrap_values,
                      returns_out, returns_out):
        return st.BAD_SHAPES
    if _overlapping(returns_out, returns_out, rewards, rewards, mask, terminated, truncated,
                    bootstrap_values, 1):
        return st.OVERLAPPING_ARRAYS
    nt = _n_threads(num_threads, n, n_steps)
    status = _check(rewards, rewards, False, mask, terminated, truncated, bootstrap_values, nt)
    if status:
        return status
    if n == 0 or n_steps == 0:
        return 0
    cdef const real_t* r = &rewards[0, 0]
    cdef const unsigned char* m = &mask[0, 0]
    cdef const unsigned char* term = &terminated[0]
    cdef const real_t* boot = &bootstrap_values[0]
    cdef real_t* out = &returns_out[0, 0]
    if nt > 1:
        for p in prange((n + 1) // 2, num_threads=nt, schedule="dynamic",
                        chunksize=_pairs_per_chunk(n_steps)):
            _discounted_rows(r, m, term, boot, gamma, out, n_steps, 2 * p, min(2 * p + 2, n))
    else:
        for p in range((n + 1) // 2):
            _discounted_rows(r, m, term, boot, gamma, out, n_steps, 2 * p, min(2 * p + 2, n))
    return 0


cdef int lambda_returns_core(const real_t[:, ::1] rewards, const real_t[:, ::1] values,
                             const unsigned char[:, ::1] mask, const unsigned char[::1] terminated,
                             const unsigned char[::1] truncated,
                             const real_t[::1] bootstrap_values, double gamma, double lam,
                             real_t[:, ::1] returns_out, int num_threads) noexcept nogil:
    cdef Py_ssize_t p, n = mask.shape[0], n_steps = mask.shape[1]
    cdef int status, nt
    if not _shapes_ok(rewards, values, mask, terminated, truncated, bootstrap_values,
                      returns_out, returns_out):
        return st.BAD_SHAPES
    if _overlapping(returns_out, returns_out, rewards, values, mask, terminated, truncated,
                    bootstrap_values, 1):
        return st.OVERLAPPING_ARRAYS
    nt = _n_threads(num_threads, n, n_steps)
    status = _check(rewards, values, True, mask, terminated, truncated, bootstrap_values, nt)
    if status:
        return status
    if n == 0 or n_steps == 0:
        return 0
    cdef const real_t* r = &rewards[0, 0]
    cdef const real_t* v = &values[0, 0]
    cdef const unsigned char* m = &mask[0, 0]
    cdef const unsigned char* term = &terminated[0]
    cdef const real_t* boot = &bootstrap_values[0]
    cdef real_t* out = &returns_out[0, 0]
    if nt > 1:
        for p in prange((n + 1) // 2, num_threads=nt, schedule="dynamic",
                        chunksize=_pairs_per_chunk(n_steps)):
            _lambda_rows(r, v, m, term, boot, gamma, lam, out, n_steps, 2 * p, min(2 * p + 2, n))
    else:
        for p in range((n + 1) // 2):
            _lambda_rows(r, v, m, term, boot, gamma, lam, out, n_steps, 2 * p, min(2 * p + 2, n))
    return 0


cdef int gae_core(const real_t[:, ::1] rewards, const real_t[:, ::1] values,
                  const unsigned char[:, ::1] mask, const unsigned char[::1] terminated,
                  const unsigned char[::1] truncated, const real_t[::1] bootstrap_values,
                  double gamma, double lam, real_t[:, ::1] advantages_out,
                  real_t[:, ::1] returns_out, int num_threads) noexcept nogil:
    cdef Py_ssize_t p, n = mask.shape[0], n_steps = mask.shape[1]
    cdef int status, nt
    if not _shapes_ok(rewards, values, mask, terminated, truncated, bootstrap_values,
                      advantages_out, returns_out):
        return st.BAD_SHAPES
    if _overlapping(advantages_out, returns_out, rewards, values, mask, terminated, truncated,
                    bootstrap_values, 2):
        return st.OVERLAPPING_ARRAYS
    nt = _n_threads(num_threads, n, n_steps)
    status = _check(rewards, values, True, mask, terminated, truncated, bootstrap_values, nt)
    if status:
        return status
    if n == 0 or n_steps == 0:
        return 0
    cdef const real_t* r = &rewards[0, 0]
    cdef const real_t* v = &values[0, 0]
    cdef const unsigned char* m = &mask[0, 0]
    cdef const unsigned char* term = &terminated[0]
    cdef const real_t* boot = &bootstrap_values[0]
    cdef real_t* adv = &advantages_out[0, 0]
    cdef real_t* ret = &returns_out[0, 0]
    if nt > 1:
        for p in prange((n + 1) // 2, num_threads=nt, schedule="dynamic",
                        chunksize=_pairs_per_chunk(n_steps)):
            _gae_rows(r, v, m, term, boot, gamma, lam, adv, ret, n_steps, 2 * p,
                      min(2 * p + 2, n))
    else:
        for p in range((n + 1) // 2):
            _gae_rows(r, v, m, term, boot, gamma, lam, adv, ret, n_steps, 2 * p,
                      min(2 * p + 2, n))
    return 0


cdef int masked_whiten_core(const real_t[:, ::1] advantages, const unsigned char[:, ::1] mask,
                            double eps, real_t[:, ::1] out) noexcept nogil:
    # Flat pointers into the C-contiguous (B, T) arrays; sums use 4 interleaved accumulators in
    # the reference's order (see fastlmrl._python.advantages._lane_sum).
    cdef Py_ssize_t i, n4, count = 0, n = mask.shape[0] * mask.shape[1]
    cdef double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0, d0, d1, d2, d3
    cdef double mean = 0.0, std = 0.0, denom
    cdef const real_t* a
    cdef const unsigned char* m
    cdef real_t* o
    cdef const char* start[3]
    cdef size_t size[3]
    if not (_same_shape(mask.shape, advantages.shape) and _same_shape(mask.shape, out.shape)):
        return st.BAD_SHAPES
    span_2d(&out[0, 0], mask.shape[0], mask.shape[1], sizeof(real_t), start, size, 0)
    span_2d(&advantages[0, 0], mask.shape[0], mask.shape[1], sizeof(real_t), start, size, 1)
    span_2d(&mask[0, 0], mask.shape[0], mask.shape[1], 1, start, size, 2)
    if written_overlap(1, 3, start, size):
        return st.OVERLAPPING_ARRAYS
    if n == 0:
        return 0
    a = &advantages[0, 0]
    m = &mask[0, 0]
    o = &out[0, 0]
    for i in range(n):
        if m[i] and not isfinite(a[i]):
            return st.BAD_ADVANTAGES
    for i in range(n):
        count += m[i] != 0
    n4 = n - n % 4
    # (values are loaded unconditionally so that the C compiler can use selects, not branches)
    for i in range(0, n4, 4):
        d0 = a[i]
        d1 = a[i + 1]
        d2 = a[i + 2]
        d3 = a[i + 3]
        s0 += d0 if m[i] else 0.0
        s1 += d1 if m[i + 1] else 0.0
        s2 += d2 if m[i + 2] else 0.0
        s3 += d3 if m[i + 3] else 0.0
    for i in range(n4, n):
        d0 = a[i]
        s0 += d0 if m[i] else 0.0
    if count:
        mean = ((s0 + s1) + (s2 + s3)) / <double>count
    s0 = s1 = s2 = s3 = 0.0
    for i in range(0, n4, 4):
        d0 = <double>a[i] - mean
        d1 = <double>a[i + 1] - mean
        d2 = <double>a[i + 2] - mean
        d3 = <double>a[i + 3] - mean
        s0 += d0 * d0 if m[i] else 0.0
        s1 += d1 * d1 if m[i + 1] else 0.0
        s2 += d2 * d2 if m[i + 2] else 0.0
        s3 += d3 * d3 if m[i + 3] else 0.0
    for i in range(n4, n):
        d0 = <double>a[i] - mean
        s0 += d0 * d0 if m[i] else 0.0
    if count:
        std = sqrt(((s0 + s1) + (s2 + s3)) / <double>count)
    denom = std + eps
    for i in range(n):
        d0 = (<double>a[i] - mean) / denom
        o[i] = <real_t>d0 if m[i] else <real_t>0
    return 0


def discounted_returns(const real_t[:, ::1] rewards, const unsigned char[:, ::1] mask,
                       const unsigned char[::1] terminated, const unsigned char[::1] truncated,
                       const real_t[::1] bootstrap_values, double gamma,
                       real_t[:, ::1] returns_out, num_threads):
    cdef int status, threads = _thread_count(num_threads)
    with nogil:
        status = discounted_returns_core(rewards, mask, terminated, truncated, bootstrap_values,
                                         gamma, returns_out, threads)
    return status


def lambda_returns(const real_t[:, ::1] rewards, const real_t[:, ::1] values,
                   const unsigned char[:, ::1] mask, const unsigned char[::1] terminated,
                   const unsigned char[::1] truncated, const real_t[::1] bootstrap_values,
                   double gamma, double lam, real_t[:, ::1] returns_out, num_threads):
    cdef int status, threads = _thread_count(num_threads)
    with nogil:
        status = lambda_returns_core(rewards, values, mask, terminated, truncated,
                                     bootstrap_values, gamma, lam, returns_out,
                                     threads)
    return status


def gae(const real_t[:, ::1] rewards, const real_t[:, ::1] values,
        const unsigned char[:, ::1] mask, const unsigned char[::1] terminated,
        const unsigned char[::1] truncated, const real_t[::1] bootstrap_values, double gamma,
        double lam, real_t[:, ::1] advantages_out, real_t[:, ::1] returns_out,
        num_threads):
    cdef int status, threads = _thread_count(num_threads)
    with nogil:
        status = gae_core(rewards, values, mask, terminated, truncated, bootstrap_values, gamma,
                          lam, advantages_out, returns_out, threads)
    return status


def masked_whiten(const real_t[:, ::1] advantages, const unsigned char[:, ::1] mask, double eps,
                  real_t[:, ::1] out):
    cdef int status
    with nogil:
        status = masked_whiten_core(advantages, mask, eps, out)
    return status
