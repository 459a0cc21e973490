# cython: language_level=3
from libc.stdint cimport int64_t, uint64_t
from fastlmrl._cython._common cimport real_t

cdef int sample_tokens_core(const real_t[:, ::1] logits, double temperature, int64_t top_k,
                            double top_p, double min_p, uint64_t key, uint64_t counter,
                            int64_t[::1] tokens_out, real_t[::1] log_probs_out,
                            real_t[::1] model_log_probs_out, int num_threads) noexcept nogil
