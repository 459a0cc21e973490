# cython: language_level=3
from libc.stdint cimport int32_t, int64_t, uint64_t
from fastlmrl._cython._common cimport real_t, index_t

cdef int argmax_tree_build_core(const real_t[:, ::1] q, int32_t[:, ::1] nodes,
                                Py_ssize_t block_size) noexcept nogil
cdef int argmax_tree_refresh_core(const real_t[:, ::1] q, int32_t[:, ::1] nodes,
                                  Py_ssize_t block_size, const index_t[::1] states,
                                  const index_t[::1] actions) noexcept nogil
cdef int greedy_tree_core(const real_t[:, ::1] q, const int32_t[:, ::1] nodes,
                          Py_ssize_t block_size, const index_t[::1] states,
                          int64_t[::1] out) noexcept nogil
cdef int argmax_tree_max_core(const real_t[:, ::1] q, const int32_t[:, ::1] nodes,
                              Py_ssize_t block_size, const index_t[::1] states,
                              real_t[::1] out) noexcept nogil
cdef int epsilon_greedy_tree_core(const real_t[:, ::1] q, const int32_t[:, ::1] nodes,
                                  Py_ssize_t block_size, const index_t[::1] states,
                                  double epsilon, uint64_t key, uint64_t counter,
                                  int64_t[::1] out) noexcept nogil
cdef int q_learning_update_tree_core(real_t[:, ::1] q, int32_t[:, ::1] nodes,
                                     Py_ssize_t block_size, const index_t[::1] states,
                                     const index_t[::1] actions, const real_t[::1] rewards,
                                     const index_t[::1] next_states,
                                     const unsigned char[::1] terminated, double alpha,
                                     double gamma, real_t[::1] td_out) noexcept nogil
cdef int double_q_learning_update_tree_core(real_t[:, ::1] q1, real_t[:, ::1] q2,
                                            int32_t[:, ::1] nodes1, int32_t[:, ::1] nodes2,
                                            Py_ssize_t block_size1, Py_ssize_t block_size2,
                                            const index_t[::1] states,
                                            const index_t[::1] actions, const real_t[::1] rewards,
                                            const index_t[::1] next_states,
                                            const unsigned char[::1] terminated, double alpha,
                                            double gamma, uint64_t key, uint64_t counter,
                                            real_t[::1] td_out) noexcept nogil
