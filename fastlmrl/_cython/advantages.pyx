# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython returns / advantages over (B, T) sequences (same semantics, same rounding as the reference).

Rows are processed one at a time, t backward over the contiguous row; the kernels are limited by
memory traffic (see benchmarks/bench_advantages.py).
"""

__all__ = ["discounted_returns", "gae", "lambda_returns", "masked_whiten"]
from libc.math cimport isfinite, sqrt

from fastlmrl._cython._common cimport real_t
from fastlmrl._cython.overlap cimport span_1d, span_2d, written_overlap

cdef enum:
    BAD_REWARDS = 5
    BAD_VALUES = 41
    BAD_BOOTSTRAP = 42
    BAD_ENDS = 43
    BAD_ADVANTAGES = 44
    BAD_SHAPES = 7  # fastlmrl._status.BAD_SHAPES
    OVERLAPPING_ARRAYS = 8  # fastlmrl._status: an output shares memory with another argument


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


cdef inline int _check(const real_t[:, ::1] rewards, const real_t[:, ::1] values, bint has_values,
                       const unsigned char[:, ::1] mask, const unsigned char[::1] terminated,
                       const unsigned char[::1] truncated,
                       const real_t[::1] bootstrap_values) noexcept nogil:
    cdef Py_ssize_t b, t, n_valid
    for b in range(mask.shape[0]):
        n_valid = 0
        for t in range(mask.shape[1]):
            if mask[b, t]:
                n_valid += 1
                if not isfinite(rewards[b, t]):
                    return BAD_REWARDS
                if has_values and not isfinite(values[b, t]):
                    return BAD_VALUES
        if n_valid and not terminated[b]:
            if not truncated[b]:
                return BAD_ENDS
            if not isfinite(bootstrap_values[b]):
                return BAD_BOOTSTRAP
    return 0


cdef inline double _boot(const unsigned char[::1] terminated, const real_t[::1] bootstrap_values,
                         Py_ssize_t b) noexcept nogil:
    if terminated[b]:
        return 0.0
    return <double>bootstrap_values[b]


cdef int discounted_returns_core(const real_t[:, ::1] rewards, const unsigned char[:, ::1] mask,
                                 const unsigned char[::1] terminated,
                                 const unsigned char[::1] truncated,
                                 const real_t[::1] bootstrap_values, double gamma,
                                 real_t[:, ::1] returns_out) noexcept nogil:
    cdef Py_ssize_t b, t
    cdef double g
    cdef int status
    if not _shapes_ok(rewards, rewards, mask, terminated, truncated, bootstrap_values,
                      returns_out, returns_out):
        return BAD_SHAPES
    if _overlapping(returns_out, returns_out, rewards, rewards, mask, terminated, truncated,
                    bootstrap_values, 1):
        return OVERLAPPING_ARRAYS
    status = _check(rewards, rewards, False, mask, terminated, truncated, bootstrap_values)
    if status:
        return status
    for b in range(mask.shape[0]):
        g = _boot(terminated, bootstrap_values, b)
        for t in range(mask.shape[1] - 1, -1, -1):
            if mask[b, t]:
                g = <double>rewards[b, t] + gamma * g
                returns_out[b, t] = <real_t>g
            else:
                returns_out[b, t] = 0
    return 0


cdef int lambda_returns_core(const real_t[:, ::1] rewards, const real_t[:, ::1] values,
                             const unsigned char[:, ::1] mask, const unsigned char[::1] terminated,
                             const unsigned char[::1] truncated,
                             const real_t[::1] bootstrap_values, double gamma, double lam,
                             real_t[:, ::1] returns_out) noexcept nogil:
    cdef Py_ssize_t b, t
    cdef double g, v_next, one_minus_lam = 1.0 - lam
    cdef int status
    if not _shapes_ok(rewards, values, mask, terminated, truncated, bootstrap_values,
                      returns_out, returns_out):
        return BAD_SHAPES
    if _overlapping(returns_out, returns_out, rewards, values, mask, terminated, truncated,
                    bootstrap_values, 1):
        return OVERLAPPING_ARRAYS
    status = _check(rewards, values, True, mask, terminated, truncated, bootstrap_values)
    if status:
        return status
    for b in range(mask.shape[0]):
        g = _boot(terminated, bootstrap_values, b)
        v_next = g
        for t in range(mask.shape[1] - 1, -1, -1):
            if mask[b, t]:
                g = <double>rewards[b, t] + gamma * (one_minus_lam * v_next + lam * g)
                returns_out[b, t] = <real_t>g
                v_next = <double>values[b, t]
            else:
                returns_out[b, t] = 0
    return 0


cdef int gae_core(const real_t[:, ::1] rewards, const real_t[:, ::1] values,
                  const unsigned char[:, ::1] mask, const unsigned char[::1] terminated,
                  const unsigned char[::1] truncated, const real_t[::1] bootstrap_values,
                  double gamma, double lam, real_t[:, ::1] advantages_out,
                  real_t[:, ::1] returns_out) noexcept nogil:
    cdef Py_ssize_t b, t
    cdef double a, v, v_next, delta, gl = gamma * lam
    cdef int status
    if not _shapes_ok(rewards, values, mask, terminated, truncated, bootstrap_values,
                      advantages_out, returns_out):
        return BAD_SHAPES
    if _overlapping(advantages_out, returns_out, rewards, values, mask, terminated, truncated,
                    bootstrap_values, 2):
        return OVERLAPPING_ARRAYS
    status = _check(rewards, values, True, mask, terminated, truncated, bootstrap_values)
    if status:
        return status
    for b in range(mask.shape[0]):
        v_next = _boot(terminated, bootstrap_values, b)
        a = 0.0
        for t in range(mask.shape[1] - 1, -1, -1):
            if mask[b, t]:
                v = <double>values[b, t]
                delta = <double>rewards[b, t] + gamma * v_next - v
                a = delta + gl * a
                advantages_out[b, t] = <real_t>a
                returns_out[b, t] = <real_t>(a + v)
                v_next = v
            else:
                advantages_out[b, t] = 0
                returns_out[b, t] = 0
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
        return BAD_SHAPES
    span_2d(&out[0, 0], mask.shape[0], mask.shape[1], sizeof(real_t), start, size, 0)
    span_2d(&advantages[0, 0], mask.shape[0], mask.shape[1], sizeof(real_t), start, size, 1)
    span_2d(&mask[0, 0], mask.shape[0], mask.shape[1], 1, start, size, 2)
    if written_overlap(1, 3, start, size):
        return OVERLAPPING_ARRAYS
    if n == 0:
        return 0
    a = &advantages[0, 0]
    m = &mask[0, 0]
    o = &out[0, 0]
    for i in range(n):
        if m[i] and not isfinite(a[i]):
            return BAD_ADVANTAGES
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
                       real_t[:, ::1] returns_out):
    cdef int status
    with nogil:
        status = discounted_returns_core(rewards, mask, terminated, truncated, bootstrap_values,
                                         gamma, returns_out)
    return status


def lambda_returns(const real_t[:, ::1] rewards, const real_t[:, ::1] values,
                   const unsigned char[:, ::1] mask, const unsigned char[::1] terminated,
                   const unsigned char[::1] truncated, const real_t[::1] bootstrap_values,
                   double gamma, double lam, real_t[:, ::1] returns_out):
    cdef int status
    with nogil:
        status = lambda_returns_core(rewards, values, mask, terminated, truncated,
                                     bootstrap_values, gamma, lam, returns_out)
    return status


def gae(const real_t[:, ::1] rewards, const real_t[:, ::1] values,
        const unsigned char[:, ::1] mask, const unsigned char[::1] terminated,
        const unsigned char[::1] truncated, const real_t[::1] bootstrap_values, double gamma,
        double lam, real_t[:, ::1] advantages_out, real_t[:, ::1] returns_out):
    cdef int status
    with nogil:
        status = gae_core(rewards, values, mask, terminated, truncated, bootstrap_values, gamma,
                          lam, advantages_out, returns_out)
    return status


def masked_whiten(const real_t[:, ::1] advantages, const unsigned char[:, ::1] mask, double eps,
                  real_t[:, ::1] out):
    cdef int status
    with nogil:
        status = masked_whiten_core(advantages, mask, eps, out)
    return status
