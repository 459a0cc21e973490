# cython: language_level=3
from fastlmrl._cython._common cimport real_t, index_t

cdef int logsumexp_core(const real_t[:, ::1] logits, real_t[::1] out, int num_threads) noexcept nogil
cdef int token_log_probs_core(const real_t[:, ::1] logits, const index_t[::1] tokens, real_t[::1] out, int num_threads) noexcept nogil
cdef int entropy_core(const real_t[:, ::1] logits, real_t[::1] out, int num_threads) noexcept nogil
cdef int log_softmax_core(const real_t[:, ::1] logits, real_t[:, ::1] out, int num_threads) noexcept nogil
cdef int log_prob_grad_core(const real_t[:, ::1] logits, const index_t[::1] tokens, real_t[:, ::1] out, int num_threads) noexcept nogil

from fastlmrl._cython.overlap cimport span_2d
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.number cimport PyNumber_Index
from libc.limits cimport INT_MAX, INT_MIN


cdef inline void in_place_span(const void* out_first, const void* logits_first, Py_ssize_t rows,
                               Py_ssize_t cols, size_t itemsize, const char** start, size_t* size,
                               int k) noexcept nogil:
    """Record the logits' span in slot k of an overlap table (fastlmrl/_cython/overlap.pxd) next to
    a written (N, V) ``out`` of the same shape (checked first) that may be exactly the logits (a
    gradient or log-softmax written over its logits, row by row): empty when it is, so only a
    partial overlap is refused."""
    span_2d(logits_first, rows, cols, itemsize, start, size, k)
    if <const char*>out_first == start[k]:
        size[k] = 0


cdef inline int thread_count(object num_threads) except? -1:
    """``num_threads`` of a ``def`` wrapper (any Python integer; TypeError otherwise) as the C int
    a ``_core`` takes: itself when it fits, else INT_MAX / INT_MIN (a thread count is capped by
    the rows and cores anyway), so no integer gives an OverflowError at the call."""
    cdef int overflow = 0
    cdef long long n = PyLong_AsLongLongAndOverflow(PyNumber_Index(num_threads), &overflow)
    if overflow > 0 or n > INT_MAX:
        return INT_MAX
    if overflow < 0 or n < INT_MIN:
        return INT_MIN
    return <int>n
