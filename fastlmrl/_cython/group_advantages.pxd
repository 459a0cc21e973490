# cython: language_level=3
from libc.stdint cimport int64_t
from fastlmrl._cython._common cimport real_t, index_t

cdef int grpo_advantages_core(const real_t[::1] rewards, const index_t[::1] group_ids,
                              int64_t scale, double eps, int64_t ddof, double[::1] group_mean,
                              double[::1] group_std, int64_t[::1] group_count,
                              real_t[::1] advantages_out) noexcept nogil
cdef int rloo_advantages_core(const real_t[::1] rewards, const index_t[::1] group_ids,
                              double[::1] group_sum, int64_t[::1] group_count,
                              real_t[::1] advantages_out) noexcept nogil
cdef int loss_weights_core(const unsigned char[:, ::1] mask, int64_t mode, double num_sequences,
                           double num_tokens, double max_length, real_t[:, ::1] out) noexcept nogil
cdef int sequence_importance_ratio_core(const real_t[:, ::1] log_probs,
                                        const real_t[:, ::1] old_log_probs,
                                        const unsigned char[:, ::1] mask, real_t[::1] ratio_out,
                                        real_t[:, ::1] grad_out) noexcept nogil
