# cython: language_level=3
from libc.stdint cimport int64_t
from fastlmrl._cython._common cimport real_t, index_t

cdef int reinforce_loss_core(const real_t[:, ::1] logits, const index_t[::1] tokens,
                             const real_t[::1] returns, const real_t[::1] baselines,
                             const real_t[::1] weights, double[::1] token_loss,
                             double[::1] log_probs, real_t[:, ::1] grad, double[::1] stats,
                             int num_threads) noexcept nogil
cdef int ppo_loss_core(const real_t[:, ::1] logits, const index_t[::1] tokens,
                       const real_t[::1] old_log_probs, const real_t[::1] advantages,
                       const real_t[::1] weights, const real_t[::1] ref_log_probs,
                       const int64_t[::1] sequence_offsets, double clip_low, double clip_high,
                       double dual_clip, double kl_coef, int64_t kl_estimator,
                       int64_t sequence_level, double[::1] token_loss, double[::1] log_probs,
                       double[::1] ratios, real_t[:, ::1] grad, double[::1] stats,
                       int num_threads) noexcept nogil
cdef int kl_penalty_loss_core(const real_t[:, ::1] logits, const index_t[::1] tokens,
                              const real_t[::1] ref_log_probs, const real_t[::1] weights,
                              int64_t kl_estimator, double[::1] token_loss, double[::1] log_probs,
                              real_t[:, ::1] grad, double[::1] stats,
                              int num_threads) noexcept nogil
cdef int a2c_loss_core(const real_t[:, ::1] logits, const index_t[::1] tokens,
                       const real_t[::1] advantages, const real_t[::1] values,
                       const real_t[::1] returns, const real_t[::1] old_values,
                       const real_t[::1] weights, double value_clip, double value_coef,
                       double entropy_coef, double[::1] token_loss, double[::1] log_probs,
                       double[::1] entropies, real_t[:, ::1] grad, double[::1] value_grad,
                       double[::1] stats, int num_threads) noexcept nogil
