# cython: language_level=3
from fastlmrl._cython._common cimport real_t

cdef int discounted_returns_core(const real_t[:, ::1] rewards, const unsigned char[:, ::1] mask,
                                 const unsigned char[::1] terminated,
                                 const unsigned char[::1] truncated,
                                 const real_t[::1] bootstrap_values, double gamma,
                                 real_t[:, ::1] returns_out, int num_threads) noexcept nogil
cdef int lambda_returns_core(const real_t[:, ::1] rewards, const real_t[:, ::1] values,
                             const unsigned char[:, ::1] mask, const unsigned char[::1] terminated,
                             const unsigned char[::1] truncated,
                             const real_t[::1] bootstrap_values, double gamma, double lam,
                             real_t[:, ::1] returns_out, int num_threads) noexcept nogil
cdef int gae_core(const real_t[:, ::1] rewards, const real_t[:, ::1] values,
                  const unsigned char[:, ::1] mask, const unsigned char[::1] terminated,
                  const unsigned char[::1] truncated, const real_t[::1] bootstrap_values,
                  double gamma, double lam, real_t[:, ::1] advantages_out,
                  real_t[:, ::1] returns_out, int num_threads) noexcept nogil
cdef int masked_whiten_core(const real_t[:, ::1] advantages, const unsigned char[:, ::1] mask,
                            double eps, real_t[:, ::1] out) noexcept nogil
