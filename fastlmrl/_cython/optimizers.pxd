# cython: language_level=3
from libc.stdint cimport int64_t
from fastlmrl._cython._common cimport real_t, index_t

cdef int sgd_step_core(real_t[:, ::1] table, const index_t[::1] rows,
                       const real_t[:, ::1] grads, const int64_t[::1] order, double lr,
                       bint maximize, double[::1] acc) noexcept nogil
cdef int adam_step_core(real_t[:, ::1] table, const index_t[::1] rows,
                        const real_t[:, ::1] grads, const int64_t[::1] order, real_t[:, ::1] m,
                        real_t[:, ::1] v, int64_t step, double lr, double beta1, double beta2,
                        double eps, bint maximize, double[::1] acc) noexcept nogil
