# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython KL estimators and KL-penalised rewards (same semantics, same rounding as the reference)."""

__all__ = ["kl_penalized_rewards", "kl_penalty"]
from libc.math cimport expm1, isfinite

from libc.stdint cimport int64_t
from fastlmrl._cython._common cimport real_t
from fastlmrl._cython.overlap cimport span_1d, written_overlap
# status codes: fastlmrl._status.Status (status.pxd is generated from it; the contract:
# fastlmrl.kl_divergence.CONTRACT)
from fastlmrl._cython cimport status as st


cdef inline bint _shapes_ok(const unsigned char[::1] mask, const real_t[::1] rewards,
                            const real_t[::1] log_probs, const real_t[::1] ref_log_probs,
                            const real_t[::1] out1, const real_t[::1] out2) noexcept nogil:
    """Every array of the mask's length N (the kernel without rewards passes log_probs twice)."""
    cdef Py_ssize_t n = mask.shape[0]
    return (rewards.shape[0] == n and log_probs.shape[0] == n and ref_log_probs.shape[0] == n
            and out1.shape[0] == n and out2.shape[0] == n)

cdef inline bint _overlapping(const real_t[::1] out1, const real_t[::1] out2,
                              const real_t[::1] rewards, bint has_rewards,
                              const real_t[::1] log_probs, const real_t[::1] ref_log_probs,
                              const unsigned char[::1] mask) noexcept nogil:
    """Does an output share memory with an input or with the other output (status 8; O(1))?"""
    cdef const char* start[6]
    cdef size_t size[6]
    cdef Py_ssize_t n = mask.shape[0]
    span_1d(&out1[0], n, sizeof(real_t), start, size, 0)
    span_1d(&out2[0], n, sizeof(real_t), start, size, 1)
    span_1d(&rewards[0], n if has_rewards else 0, sizeof(real_t), start, size, 2)
    span_1d(&log_probs[0], n, sizeof(real_t), start, size, 3)
    span_1d(&ref_log_probs[0], n, sizeof(real_t), start, size, 4)
    span_1d(&mask[0], n, 1, start, size, 5)
    return written_overlap(2, 6, start, size)


cdef inline int _check(const real_t[::1] rewards, bint has_rewards, const real_t[::1] log_probs,
                       const real_t[::1] ref_log_probs, const unsigned char[::1] mask,
                       int64_t estimator) noexcept nogil:
    cdef Py_ssize_t i
    if estimator != 1 and estimator != 2 and estimator != 3:
        return st.BAD_ESTIMATOR
    for i in range(mask.shape[0]):
        if mask[i]:
            if has_rewards and not isfinite(rewards[i]):
                return st.BAD_REWARDS
            if not isfinite(log_probs[i]):
                return st.BAD_LOG_PROBS
            if not isfinite(ref_log_probs[i]):
                return st.BAD_REF_LOG_PROBS
    return 0


cdef int kl_penalty_core(const real_t[::1] log_probs, const real_t[::1] ref_log_probs,
                         const unsigned char[::1] mask, int64_t estimator, real_t[::1] kl_out,
                         real_t[::1] grad_out) noexcept nogil:
    cdef Py_ssize_t i, n = mask.shape[0]
    cdef double r, e
    cdef int status
    if not _shapes_ok(mask, log_probs, log_probs, ref_log_probs, kl_out, grad_out):
        return st.BAD_SHAPES
    if _overlapping(kl_out, grad_out, log_probs, False, log_probs, ref_log_probs, mask):
        return st.OVERLAPPING_ARRAYS
    status = _check(log_probs, False, log_probs, ref_log_probs, mask, estimator)
    if status:
        return status
    if estimator == 1:
        for i in range(n):
            if mask[i]:
                r = <double>ref_log_probs[i] - <double>log_probs[i]
                kl_out[i] = <real_t>(-r)
                grad_out[i] = 1
            else:
                kl_out[i] = 0
                grad_out[i] = 0
    elif estimator == 2:
        for i in range(n):
            if mask[i]:
                r = <double>ref_log_probs[i] - <double>log_probs[i]
                kl_out[i] = <real_t>(0.5 * (r * r))
                grad_out[i] = <real_t>(-r)
            else:
                kl_out[i] = 0
                grad_out[i] = 0
    else:
        for i in range(n):
            if mask[i]:
                r = <double>ref_log_probs[i] - <double>log_probs[i]
                e = expm1(r)
                kl_out[i] = <real_t>(e - r)
                grad_out[i] = <real_t>(-e)
            else:
                kl_out[i] = 0
                grad_out[i] = 0
    return 0


cdef int kl_penalized_rewards_core(const real_t[::1] rewards, const real_t[::1] log_probs,
                                   const real_t[::1] ref_log_probs, const unsigned char[::1] mask,
                                   int64_t estimator, double beta, real_t[::1] rewards_out,
                                   real_t[::1] kl_out) noexcept nogil:
    cdef Py_ssize_t i
    cdef double r, kl
    cdef int status
    if not _shapes_ok(mask, rewards, log_probs, ref_log_probs, rewards_out, kl_out):
        return st.BAD_SHAPES
    if _overlapping(rewards_out, kl_out, rewards, True, log_probs, ref_log_probs, mask):
        return st.OVERLAPPING_ARRAYS
    status = _check(rewards, True, log_probs, ref_log_probs, mask, estimator)
    if status:
        return status
    for i in range(mask.shape[0]):
        if mask[i]:
            r = <double>ref_log_probs[i] - <double>log_probs[i]
            if estimator == 1:
                kl = -r
            elif estimator == 2:
                kl = 0.5 * (r * r)
            else:
                kl = expm1(r) - r
            rewards_out[i] = <real_t>(<double>rewards[i] - beta * kl)
            kl_out[i] = <real_t>kl
        else:
            rewards_out[i] = 0
            kl_out[i] = 0
    return 0


def kl_penalty(const real_t[::1] log_probs, const real_t[::1] ref_log_probs,
               const unsigned char[::1] mask, int64_t estimator, real_t[::1] kl_out,
               real_t[::1] grad_out):
    cdef int status
    with nogil:
        status = kl_penalty_core(log_probs, ref_log_probs, mask, estimator, kl_out, grad_out)
    return status


def kl_penalized_rewards(const real_t[::1] rewards, const real_t[::1] log_probs,
                         const real_t[::1] ref_log_probs, const unsigned char[::1] mask,
                         int64_t estimator,
                         double beta, real_t[::1] rewards_out, real_t[::1] kl_out):
    cdef int status
    with nogil:
        status = kl_penalized_rewards_core(rewards, log_probs, ref_log_probs, mask, estimator,
                                           beta, rewards_out, kl_out)
    return status
