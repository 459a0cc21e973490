# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython group-relative advantages, loss weights and GSPO ratios (same semantics and rounding as
the reference)."""

__all__ = ["grpo_advantages", "loss_weights", "rloo_advantages", "sequence_importance_ratio"]
from libc.math cimport exp, isfinite, sqrt
from libc.stdint cimport int64_t

from fastlmrl._cython._common cimport real_t, index_t
from fastlmrl._cython.overlap cimport span_1d, span_2d, written_overlap
# status codes: fastlmrl._status.Status (status.pxd is generated from it; the contract:
# fastlmrl.group_advantages.CONTRACT)
from fastlmrl._cython cimport status as st


cdef inline bint _groups_ok(const real_t[::1] rewards, const index_t[::1] group_ids,
                            const double[::1] group_stat, const double[::1] group_stat2,
                            const int64_t[::1] group_count,
                            const real_t[::1] advantages_out) noexcept nogil:
    """The shape check (first): per-sample arrays of the rewards' length N, per-group arrays of
    group_stat's length G (rloo_advantages passes its one group statistic twice)."""
    cdef Py_ssize_t n = rewards.shape[0], n_groups = group_stat.shape[0]
    return (group_ids.shape[0] == n and advantages_out.shape[0] == n
            and group_stat2.shape[0] == n_groups and group_count.shape[0] == n_groups)


cdef inline bint _same_shape(const Py_ssize_t* a, const Py_ssize_t* b) noexcept nogil:
    """The shapes of two 2-D memoryviews are equal."""
    return a[0] == b[0] and a[1] == b[1]


cdef inline bint _groups_overlap(const double[::1] stat, const double[::1] stat2,
                                 const int64_t[::1] count, const real_t[::1] out,
                                 const real_t[::1] rewards, const index_t[::1] group_ids,
                                 bint has_stat2) noexcept nogil:
    """Does a written array (the group workspaces, the output) share memory with an input or
    with another written array (status 8; O(1))?  rloo_advantages has no ``stat2``."""
    cdef const char* start[6]
    cdef size_t size[6]
    span_1d(&stat[0], stat.shape[0], sizeof(double), start, size, 0)
    span_1d(&stat2[0], stat2.shape[0] if has_stat2 else 0, sizeof(double), start, size, 1)
    span_1d(&count[0], count.shape[0], sizeof(int64_t), start, size, 2)
    span_1d(&out[0], out.shape[0], sizeof(real_t), start, size, 3)
    span_1d(&rewards[0], rewards.shape[0], sizeof(real_t), start, size, 4)
    span_1d(&group_ids[0], group_ids.shape[0], sizeof(index_t), start, size, 5)
    return written_overlap(4, 6, start, size)


cdef inline int _check_groups(const real_t[::1] rewards, const index_t[::1] group_ids,
                              Py_ssize_t n_groups) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(rewards.shape[0]):
        if group_ids[i] < 0 or group_ids[i] >= n_groups:
            return st.BAD_GROUP_IDS
        if not isfinite(rewards[i]):
            return st.BAD_REWARDS
    return 0


cdef int grpo_advantages_core(const real_t[::1] rewards, const index_t[::1] group_ids,
                              int64_t scale, double eps, int64_t ddof, double[::1] group_mean,
                              double[::1] group_std, int64_t[::1] group_count,
                              real_t[::1] advantages_out) noexcept nogil:
    cdef Py_ssize_t i, g, n = rewards.shape[0], n_groups = group_mean.shape[0]
    cdef double d, centred, total, mean, bss, batch_std = 0.0
    cdef int status
    if not _groups_ok(rewards, group_ids, group_mean, group_std, group_count, advantages_out):
        return st.BAD_SHAPES
    if _groups_overlap(group_mean, group_std, group_count, advantages_out, rewards, group_ids,
                       True):
        return st.OVERLAPPING_ARRAYS
    if (scale != 0 and scale != 1 and scale != 2) or ddof < 0 or not eps > 0:
        return st.BAD_OPTION
    status = _check_groups(rewards, group_ids, n_groups)
    if status:
        return status
    for g in range(n_groups):
        group_mean[g] = 0.0
        group_std[g] = 0.0
        group_count[g] = 0
    for i in range(n):
        g = group_ids[i]
        group_mean[g] += <double>rewards[i]
        group_count[g] += 1
    for g in range(n_groups):
        if group_count[g] > 0:
            group_mean[g] = group_mean[g] / <double>group_count[g]
    for i in range(n):
        g = group_ids[i]
        d = <double>rewards[i] - group_mean[g]
        group_std[g] += d * d
    for g in range(n_groups):
        if group_count[g] > ddof:
            group_std[g] = sqrt(group_std[g] / <double>(group_count[g] - ddof))
        else:
            group_std[g] = 0.0
    if scale == 2:
        total = 0.0
        for i in range(n):
            total += <double>rewards[i]
        mean = total / <double>n if n > 0 else 0.0
        bss = 0.0
        for i in range(n):
            d = <double>rewards[i] - mean
            bss += d * d
        batch_std = sqrt(bss / <double>(n - ddof)) if n > ddof else 0.0
    for i in range(n):
        g = group_ids[i]
        centred = <double>rewards[i] - group_mean[g]
        if scale == 0:
            advantages_out[i] = <real_t>centred
        elif scale == 1:
            advantages_out[i] = <real_t>(centred / (group_std[g] + eps))
        else:
            advantages_out[i] = <real_t>(centred / (batch_std + eps))
    return 0


cdef int rloo_advantages_core(const real_t[::1] rewards, const index_t[::1] group_ids,
                              double[::1] group_sum, int64_t[::1] group_count,
                              real_t[::1] advantages_out) noexcept nogil:
    cdef Py_ssize_t i, g, n_groups = group_sum.shape[0]
    cdef double r
    cdef int status
    if not _groups_ok(rewards, group_ids, group_sum, group_sum, group_count, advantages_out):
        return st.BAD_SHAPES
    if _groups_overlap(group_sum, group_sum, group_count, advantages_out, rewards, group_ids,
                       False):
        return st.OVERLAPPING_ARRAYS
    status = _check_groups(rewards, group_ids, n_groups)
    if status:
        return status
    for g in range(n_groups):
        group_sum[g] = 0.0
        group_count[g] = 0
    for i in range(rewards.shape[0]):
        g = group_ids[i]
        group_sum[g] += <double>rewards[i]
        group_count[g] += 1
    for g in range(n_groups):
        if group_count[g] == 1:
            return st.BAD_GROUP_SIZE
    for i in range(rewards.shape[0]):
        g = group_ids[i]
        r = <double>rewards[i]
        advantages_out[i] = <real_t>(r - (group_sum[g] - r) / <double>(group_count[g] - 1))
    return 0


cdef int loss_weights_core(const unsigned char[:, ::1] mask, int64_t mode, double num_sequences,
                           double num_tokens, double max_length, real_t[:, ::1] out) noexcept nogil:
    cdef Py_ssize_t b, t, n_b, n_active = 0, n_steps = mask.shape[1]
    cdef double w
    cdef real_t* row_out
    cdef const unsigned char* row_mask
    cdef const char* start[2]
    cdef size_t size[2]
    if not _same_shape(mask.shape, out.shape):
        return st.BAD_SHAPES
    span_2d(&out[0, 0], mask.shape[0], mask.shape[1], sizeof(real_t), start, size, 0)
    span_2d(&mask[0, 0], mask.shape[0], mask.shape[1], 1, start, size, 1)
    if written_overlap(1, 2, start, size):
        return st.OVERLAPPING_ARRAYS
    if n_steps == 0:
        return 0 if (mode >= 0 and mode <= 3 and num_sequences > 0 and num_tokens > 0
                     and max_length > 0) else st.BAD_OPTION
    if mode != 0 and mode != 1 and mode != 2 and mode != 3:
        return st.BAD_OPTION
    if not (num_sequences > 0 and num_tokens > 0 and max_length > 0):
        return st.BAD_OPTION
    if mode == 1:
        for b in range(mask.shape[0]):
            for t in range(mask.shape[1]):
                if mask[b, t]:
                    n_active += 1
    for b in range(mask.shape[0]):
        if mode == 0:
            n_b = 0
            for t in range(mask.shape[1]):
                if mask[b, t]:
                    n_b += 1
            w = 1.0 / (num_sequences * <double>n_b) if n_b > 0 else 0.0
        elif mode == 1:
            w = 1.0 / <double>n_active if n_active > 0 else 0.0
        elif mode == 2:
            w = 1.0 / (num_sequences * max_length)
        else:
            w = 1.0 / num_tokens
        row_out = &out[b, 0]
        row_mask = &mask[b, 0]
        for t in range(n_steps):
            row_out[t] = <real_t>w if row_mask[t] else <real_t>0
    return 0


cdef int sequence_importance_ratio_core(const real_t[:, ::1] log_probs,
                                        const real_t[:, ::1] old_log_probs,
                                        const unsigned char[:, ::1] mask, real_t[::1] ratio_out,
                                        real_t[:, ::1] grad_out) noexcept nogil:
    cdef Py_ssize_t b, t, n_b
    cdef double total, ratio, grad
    cdef const char* start[5]
    cdef size_t size[5]
    cdef Py_ssize_t n = mask.shape[0], horizon = mask.shape[1]
    if (not _same_shape(mask.shape, log_probs.shape)
            or not _same_shape(mask.shape, old_log_probs.shape)
            or not _same_shape(mask.shape, grad_out.shape)
            or ratio_out.shape[0] != mask.shape[0]):
        return st.BAD_SHAPES
    span_1d(&ratio_out[0], n, sizeof(real_t), start, size, 0)
    span_2d(&grad_out[0, 0], n, horizon, sizeof(real_t), start, size, 1)
    span_2d(&log_probs[0, 0], n, horizon, sizeof(real_t), start, size, 2)
    span_2d(&old_log_probs[0, 0], n, horizon, sizeof(real_t), start, size, 3)
    span_2d(&mask[0, 0], n, horizon, 1, start, size, 4)
    if written_overlap(2, 5, start, size):
        return st.OVERLAPPING_ARRAYS
    for b in range(mask.shape[0]):
        for t in range(mask.shape[1]):
            if mask[b, t]:
                if not isfinite(log_probs[b, t]):
                    return st.BAD_LOG_PROBS
                if not isfinite(old_log_probs[b, t]):
                    return st.BAD_OLD_LOG_PROBS
    for b in range(mask.shape[0]):
        total = 0.0
        n_b = 0
        for t in range(mask.shape[1]):
            if mask[b, t]:
                total += <double>log_probs[b, t] - <double>old_log_probs[b, t]
                n_b += 1
        if n_b > 0:
            ratio = exp(total / <double>n_b)
            grad = ratio / <double>n_b
        else:
            ratio = 1.0
            grad = 0.0
        ratio_out[b] = <real_t>ratio
        for t in range(mask.shape[1]):
            if mask[b, t]:
                grad_out[b, t] = <real_t>grad
            else:
                grad_out[b, t] = 0
    return 0


def grpo_advantages(const real_t[::1] rewards, const index_t[::1] group_ids, int64_t scale,
                    double eps, int64_t ddof, double[::1] group_mean,
                    double[::1] group_std,
                    int64_t[::1] group_count, real_t[::1] advantages_out):
    cdef int status
    with nogil:
        status = grpo_advantages_core(rewards, group_ids, scale, eps, ddof,
                                      group_mean, group_std,
                                      group_count, advantages_out)
    return status


def rloo_advantages(const real_t[::1] rewards, const index_t[::1] group_ids,
                    double[::1] group_sum, int64_t[::1] group_count, real_t[::1] advantages_out):
    cdef int status
    with nogil:
        status = rloo_advantages_core(rewards, group_ids, group_sum, group_count, advantages_out)
    return status


def loss_weights(const unsigned char[:, ::1] mask, int64_t mode, double num_sequences,
                 double num_tokens, double max_length, real_t[:, ::1] out):
    cdef int status
    with nogil:
        status = loss_weights_core(mask, mode, num_sequences, num_tokens, max_length, out)
    return status


def sequence_importance_ratio(const real_t[:, ::1] log_probs,
                              const real_t[:, ::1] old_log_probs,
                              const unsigned char[:, ::1] mask, real_t[::1] ratio_out,
                              real_t[:, ::1] grad_out):
    cdef int status
    with nogil:
        status = sequence_importance_ratio_core(log_probs, old_log_probs, mask, ratio_out, grad_out)
    return status
