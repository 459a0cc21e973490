# cython: language_level=3
from fastlmrl._cython._common cimport real_t, index_t

cdef int logsumexp_core(const real_t[:, ::1] logits, real_t[::1] out, int num_threads) noexcept nogil
cdef int token_log_probs_core(const real_t[:, ::1] logits, const index_t[::1] tokens, real_t[::1] out, int num_threads) noexcept nogil
cdef int entropy_core(const real_t[:, ::1] logits, real_t[::1] out, int num_threads) noexcept nogil
cdef int log_softmax_core(const real_t[:, ::1] logits, real_t[:, ::1] out, int num_threads) noexcept nogil
cdef int log_prob_grad_core(const real_t[:, ::1] logits, const index_t[::1] tokens, real_t[:, ::1] out, int num_threads) noexcept nogil
