# cython: language_level=3
from libc.stdint cimport int64_t, uint8_t
from fastlmrl._cython._common cimport index_t

cdef int keyword_scores_core(const index_t[:, ::1] tokens, const int64_t[::1] lengths,
                             const index_t[::1] gram_tokens, const int64_t[::1] gram_offsets,
                             const double[::1] gram_weights, int64_t presence,
                             const uint8_t[::1] word_flags,
                             double[:, ::1] out) noexcept nogil
