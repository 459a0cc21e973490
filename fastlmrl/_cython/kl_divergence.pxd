# cython: language_level=3
from libc.stdint cimport int64_t
from fastlmrl._cython._common cimport real_t

cdef int kl_penalty_core(const real_t[::1] log_probs, const real_t[::1] ref_log_probs,
                         const unsigned char[::1] mask, int64_t estimator, real_t[::1] kl_out,
                         real_t[::1] grad_out) noexcept nogil
cdef int kl_penalized_rewards_core(const real_t[::1] rewards, const real_t[::1] log_probs,
                                   const real_t[::1] ref_log_probs, const unsigned char[::1] mask,
                                   int64_t estimator, double beta, real_t[::1] rewards_out,
                                   real_t[::1] kl_out) noexcept nogil
