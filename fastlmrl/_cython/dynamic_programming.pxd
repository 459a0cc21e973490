# cython: language_level=3
from libc.stdint cimport int64_t
from fastlmrl._cython._common cimport real_t, index_t

cdef int token_mdp_bellman_backup_core(const index_t[:, ::1] next_state,
                                       const real_t[:, ::1] reward,
                                       const unsigned char[::1] terminal, double gamma,
                                       const double[::1] v, double[::1] v_out,
                                       int64_t[::1] policy_out) noexcept nogil
cdef int token_mdp_action_values_core(const index_t[:, ::1] next_state,
                                      const real_t[:, ::1] reward,
                                      const unsigned char[::1] terminal, double gamma,
                                      const double[::1] v, double[:, ::1] q_out) noexcept nogil
cdef int token_mdp_policy_sweeps_core(const index_t[:, ::1] next_state,
                                      const real_t[:, ::1] reward,
                                      const unsigned char[::1] terminal,
                                      const int64_t[::1] policy, double gamma, Py_ssize_t k,
                                      double[::1] v, double[::1] v_tmp) noexcept nogil
cdef int token_mdp_policy_value_core(const index_t[:, ::1] next_state,
                                     const real_t[:, ::1] reward,
                                     const unsigned char[::1] terminal,
                                     const int64_t[::1] policy, double gamma,
                                     double[::1] v_out, int64_t[::1] work) noexcept nogil
cdef int token_mdp_find_cycle_core(const index_t[:, ::1] next_state,
                                   const unsigned char[::1] terminal, int64_t[::1] found_out,
                                   int64_t[::1] work) noexcept nogil
cdef int token_mdp_value_iteration_core(const index_t[:, ::1] next_state,
                                        const real_t[:, ::1] reward,
                                        const unsigned char[::1] terminal, double gamma,
                                        double tol, Py_ssize_t max_iter, double[::1] v,
                                        double[::1] v_tmp, int64_t[::1] policy_out,
                                        int64_t[::1] info_out) noexcept nogil
cdef int dense_mdp_bellman_backup_core(const real_t[:, :, ::1] P, const real_t[:, ::1] R,
                                       double gamma, const double[::1] v, double[::1] v_out,
                                       int64_t[::1] policy_out) noexcept nogil
cdef int dense_mdp_action_values_core(const real_t[:, :, ::1] P, const real_t[:, ::1] R,
                                      double gamma, const double[::1] v,
                                      double[:, ::1] q_out) noexcept nogil
cdef int dense_mdp_policy_sweeps_core(const real_t[:, :, ::1] P, const real_t[:, ::1] R,
                                      const int64_t[::1] policy, double gamma, Py_ssize_t k,
                                      double[::1] v, double[::1] v_tmp) noexcept nogil
cdef int dense_mdp_value_iteration_core(const real_t[:, :, ::1] P, const real_t[:, ::1] R,
                                        double gamma, double tol, Py_ssize_t max_iter,
                                        double[::1] v, double[::1] v_tmp,
                                        int64_t[::1] policy_out,
                                        int64_t[::1] info_out) noexcept nogil
