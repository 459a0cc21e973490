# cython: language_level=3
from libc.stdint cimport int64_t, uint64_t

cdef int random_permutation_core(uint64_t key, uint64_t counter, int64_t[::1] out,
                                 double[::1] uniforms, int64_t[::1] starts) noexcept nogil
