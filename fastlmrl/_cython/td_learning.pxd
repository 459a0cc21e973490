# cython: language_level=3
from libc.stdint cimport uint64_t
from fastlmrl._cython._common cimport real_t, index_t

cdef int q_learning_update_core(real_t[:, ::1] q, const index_t[::1] states,
                                const index_t[::1] actions, const real_t[::1] rewards,
                                const index_t[::1] next_states, const unsigned char[::1] terminated,
                                double alpha, double gamma, real_t[::1] td_out) noexcept nogil
cdef int q_learning_update_one_core(real_t[:, ::1] q, Py_ssize_t state, Py_ssize_t action,
                                    double reward, Py_ssize_t next_state, bint terminated,
                                    double alpha, double gamma, double* td) noexcept nogil
cdef int sarsa_update_core(real_t[:, ::1] q, const index_t[::1] states, const index_t[::1] actions,
                           const real_t[::1] rewards, const index_t[::1] next_states,
                           const index_t[::1] next_actions, const unsigned char[::1] terminated,
                           double alpha, double gamma, real_t[::1] td_out) noexcept nogil
cdef int expected_sarsa_update_core(real_t[:, ::1] q, const index_t[::1] states,
                                    const index_t[::1] actions, const real_t[::1] rewards,
                                    const index_t[::1] next_states,
                                    const unsigned char[::1] terminated, double alpha, double gamma,
                                    double epsilon, real_t[::1] td_out) noexcept nogil
cdef int double_q_learning_update_core(real_t[:, ::1] q1, real_t[:, ::1] q2,
                                       const index_t[::1] states, const index_t[::1] actions,
                                       const real_t[::1] rewards, const index_t[::1] next_states,
                                       const unsigned char[::1] terminated, double alpha,
                                       double gamma, uint64_t key, uint64_t counter,
                                       real_t[::1] td_out) noexcept nogil
