# cython: language_level=3
from libc.stdint cimport int64_t, uint64_t
from fastlmrl._cython._common cimport real_t, index_t

cdef int greedy_core(const real_t[:, ::1] q, const index_t[::1] states, int64_t[::1] out,
                     int num_threads) noexcept nogil
cdef int epsilon_greedy_core(const real_t[:, ::1] q, const index_t[::1] states, double epsilon,
                             uint64_t key, uint64_t counter, int64_t[::1] out,
                             int num_threads) noexcept nogil
cdef int epsilon_greedy_one_core(const real_t[:, ::1] q, Py_ssize_t state, double epsilon,
                                 uint64_t key, uint64_t counter, int64_t* action) noexcept nogil
cdef int boltzmann_core(const real_t[:, ::1] q, const index_t[::1] states, double temperature,
                        uint64_t key, uint64_t counter, int64_t[::1] out,
                        int num_threads) noexcept nogil
