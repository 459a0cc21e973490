# cython: language_level=3
from libc.stdint cimport int64_t
from fastlmrl._cython._common cimport real_t, index_t

cdef int episode_returns_core(const real_t[::1] rewards, const int64_t[::1] episode_offsets,
                              double gamma, const double[::1] final_values,
                              real_t[::1] returns_out) noexcept nogil
cdef int mc_control_update_core(real_t[:, ::1] q, const index_t[::1] states,
                                const index_t[::1] actions, const real_t[::1] rewards,
                                const int64_t[::1] episode_offsets, double gamma, bint first_visit,
                                double alpha, int64_t[:, ::1] counts, int64_t[::1] slot_keys,
                                int64_t[::1] slot_first, real_t[::1] returns_out) noexcept nogil
