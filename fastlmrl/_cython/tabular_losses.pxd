# cython: language_level=3
from libc.stdint cimport int64_t
from fastlmrl._cython._common cimport real_t, index_t

cdef int token_log_probs_tabular_core(const real_t[:, ::1] table, const index_t[::1] contexts,
                                      const index_t[::1] tokens, int64_t[::1] index,
                                      int64_t[::1] rows, int64_t[::1] num_rows,
                                      double[::1] log_probs, int num_threads) noexcept nogil
cdef int reinforce_loss_tabular_core(const real_t[:, ::1] table, const index_t[::1] contexts,
                                     const index_t[::1] tokens, const double[::1] returns,
                                     const double[::1] baselines, const double[::1] weights,
                                     int64_t[::1] index, int64_t[::1] rows,
                                     int64_t[::1] num_rows, double[::1] token_loss,
                                     double[::1] log_probs, real_t[:, ::1] grad,
                                     double[::1] stats, int num_threads) noexcept nogil
cdef int ppo_loss_tabular_core(const real_t[:, ::1] table, const index_t[::1] contexts,
                               const index_t[::1] tokens, const double[::1] old_log_probs,
                               const double[::1] advantages, const double[::1] weights,
                               const double[::1] ref_log_probs,
                               const int64_t[::1] sequence_offsets, double clip_low,
                               double clip_high, double dual_clip, double kl_coef,
                               int64_t kl_estimator, int64_t sequence_level,
                               int64_t[::1] index,
                               int64_t[::1] rows, int64_t[::1] num_rows, double[::1] token_loss,
                               double[::1] log_probs, double[::1] ratios, real_t[:, ::1] grad,
                               double[::1] stats, int num_threads) noexcept nogil
cdef int kl_penalty_loss_tabular_core(const real_t[:, ::1] table, const index_t[::1] contexts,
                                      const index_t[::1] tokens, const double[::1] ref_log_probs,
                                      const double[::1] weights, int64_t kl_estimator,
                                      int64_t[::1] index, int64_t[::1] rows,
                                      int64_t[::1] num_rows, double[::1] token_loss,
                                      double[::1] log_probs, real_t[:, ::1] grad,
                                      double[::1] stats, int num_threads) noexcept nogil
cdef int a2c_loss_tabular_core(const real_t[:, ::1] table, const index_t[::1] contexts,
                               const index_t[::1] tokens, const double[::1] advantages,
                               const double[::1] values, const double[::1] returns,
                               const double[::1] old_values, const double[::1] weights,
                               double value_clip, double value_coef, double entropy_coef,
                               int64_t[::1] index, int64_t[::1] rows, int64_t[::1] num_rows,
                               double[::1] token_loss, double[::1] log_probs,
                               double[::1] entropies, real_t[:, ::1] grad,
                               double[::1] value_grad, double[::1] stats,
                               int num_threads) noexcept nogil
