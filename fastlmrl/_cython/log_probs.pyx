# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython kernels over logits (same arithmetic as fastlmrl/_python/log_probs.py, bit for bit).

Rows are shared out to the threads in chunks (``prange``, dynamic schedule: a thread slowed by
another process does not hold the others up); each thread has its own exp row buffer (logits dtype)
(malloc'ed once per call).  Every row is computed by the same code whichever thread takes it, so
results do not depend on the thread count.  (N,) results are gathered in a float64 work array and
copied out only after every row was found valid.
"""

__all__ = ["entropy", "log_prob_grad", "log_softmax", "logsumexp", "token_log_probs"]
from cython.parallel cimport prange, threadid
from libc.math cimport log
from libc.stdlib cimport free, malloc

from libc.stdint cimport int64_t
from fastlmrl._cython._common cimport real_t, index_t, out_of_range
from fastlmrl._cython.overlap cimport span_1d, span_2d, written_overlap
from fastlmrl._cython.fast_math cimport (row_stats, grad_fill, row_entropy, store_fence,
                                         n_threads, rows_per_chunk, work,
                                         use_streaming)
# status codes: fastlmrl._status.Status (status.pxd is generated from it); the contract:
# fastlmrl.log_probs.CONTRACT
from fastlmrl._cython cimport status as st


cdef inline bint _shapes_ok(const real_t[:, ::1] logits, Py_ssize_t n_tokens,
                            const Py_ssize_t* out_shape, bint per_row) noexcept nogil:
    """The shape check every kernel does first: tokens (``n_tokens`` long; -1 for the kernels
    without) (N,), ``out`` (``out_shape``) (N,) for a per-row result (``per_row``) or (N, V) like
    ``logits``."""
    cdef Py_ssize_t n = logits.shape[0]
    if n_tokens != -1 and n_tokens != n:
        return False
    return out_shape[0] == n and (per_row or out_shape[1] == logits.shape[1])


# The row helpers return True for an invalid row (NaN, +inf or no finite entry; nothing stored);
# the kernels count them.

cdef inline bint _lse_row(const real_t[:, ::1] logits, Py_ssize_t i, double* res,
                         real_t* e) noexcept nogil:
    cdef double m, s
    if not row_stats(&logits[i, 0], logits.shape[1], e, &m, &s):
        return True
    res[i] = m + log(s)
    return False


cdef inline bint _token_row(const real_t[:, ::1] logits, const index_t[::1] tokens, Py_ssize_t i,
                           double* res, real_t* e) noexcept nogil:
    cdef double m, s
    cdef const real_t* row = &logits[i, 0]
    if not row_stats(row, logits.shape[1], e, &m, &s):
        return True
    res[i] = <double>row[tokens[i]] - (m + log(s))
    return False


cdef inline bint _entropy_row(const real_t[:, ::1] logits, Py_ssize_t i, double* res,
                             real_t* e) noexcept nogil:
    cdef double m, s
    cdef const real_t* row = &logits[i, 0]
    if not row_stats(row, logits.shape[1], e, &m, &s):
        return True
    res[i] = row_entropy(row, logits.shape[1], e, 1.0 / s, m + log(s))
    return False


cdef inline bint _log_softmax_row(const real_t[:, ::1] logits, Py_ssize_t i, real_t[:, ::1] out,
                                 real_t* e) noexcept nogil:
    cdef double m, s, lse
    cdef Py_ssize_t j, v = logits.shape[1]
    cdef const real_t* row = &logits[i, 0]
    cdef real_t* dst = &out[i, 0]
    if not row_stats(row, v, e, &m, &s):
        return True
    lse = m + log(s)
    for j in range(v):
        dst[j] = <real_t>(<double>row[j] - lse)
    return False


cdef inline bint _grad_row(const real_t[:, ::1] logits, const index_t[::1] tokens, Py_ssize_t i,
                          real_t[:, ::1] out, real_t* e, bint nt) noexcept nogil:
    cdef double m, s
    if not row_stats(&logits[i, 0], logits.shape[1], e, &m, &s):
        return True
    grad_fill(logits.shape[1], e, 1.0 / s, tokens[i], 1.0, &out[i, 0], nt)
    if nt:
        store_fence()
    return False


cdef inline int _alloc(Py_ssize_t nt, Py_ssize_t v, Py_ssize_t n, real_t** w,
                       double** res) noexcept nogil:
    """Per-thread exp buffers and the float64 result row; st.NO_MEMORY (nothing held) on failure."""
    w[0] = <real_t*>work(nt, v)
    res[0] = <double*>malloc(sizeof(double) * n + 8)
    if w[0] == NULL or res[0] == NULL:
        free(w[0])
        free(res[0])
        return st.NO_MEMORY
    return 0


cdef inline int _finish(Py_ssize_t bad, real_t* w, double* res, real_t[::1] out) noexcept nogil:
    """Free the buffers; copy the results into ``out`` only when every row was valid."""
    cdef Py_ssize_t i
    free(w)
    if not bad:
        for i in range(out.shape[0]):
            out[i] = <real_t>res[i]
    free(res)
    return st.BAD_LOGITS if bad else 0


cdef inline bint _out_overlaps(const real_t[:, ::1] logits, const void* tokens,
                               Py_ssize_t n_tokens, size_t token_size,
                               const real_t[::1] out) noexcept nogil:
    """Does the (N,) ``out`` share memory with ``logits`` or ``tokens`` (n_tokens = 0: none)?"""
    cdef const char* start[3]
    cdef size_t size[3]
    span_1d(&out[0], out.shape[0], sizeof(real_t), start, size, 0)
    span_2d(&logits[0, 0], logits.shape[0], logits.shape[1], sizeof(real_t), start, size, 1)
    span_1d(tokens, n_tokens, token_size, start, size, 2)
    return written_overlap(1, 3, start, size)


cdef int _row_stat(bint entropy, const real_t[:, ::1] logits, real_t[::1] out,
                   int num_threads) noexcept nogil:
    """out[i] = logsumexp (or entropy) of row i; ``out`` untouched unless every row is valid."""
    cdef Py_ssize_t n = logits.shape[0], v = logits.shape[1], i
    cdef Py_ssize_t nt = n_threads(num_threads, logits.shape[0], logits.shape[1])
    cdef int bad = 0
    cdef real_t* w = NULL
    cdef double* res = NULL
    if _out_overlaps(logits, NULL, 0, 1, out):
        return st.OVERLAPPING_ARRAYS
    if _alloc(nt, v, n, &w, &res):
        return st.NO_MEMORY
    if nt > 1:
        for i in prange(n, num_threads=nt, schedule="dynamic", chunksize=rows_per_chunk(v)):
            if entropy:
                bad += _entropy_row(logits, i, res, w + threadid() * v)
            else:
                bad += _lse_row(logits, i, res, w + threadid() * v)
    else:
        for i in range(n):
            if entropy:
                bad += _entropy_row(logits, i, res, w)
            else:
                bad += _lse_row(logits, i, res, w)
    return _finish(bad, w, res, out)


cdef int logsumexp_core(const real_t[:, ::1] logits, real_t[::1] out, int num_threads) noexcept nogil:
    if not _shapes_ok(logits, -1, out.shape, True):
        return st.BAD_SHAPES
    return _row_stat(False, logits, out, num_threads)


cdef int token_log_probs_core(const real_t[:, ::1] logits, const index_t[::1] tokens, real_t[::1] out, int num_threads) noexcept nogil:
    cdef Py_ssize_t n = logits.shape[0], v = logits.shape[1], i
    cdef Py_ssize_t nt = n_threads(num_threads, logits.shape[0], logits.shape[1])
    cdef int bad = 0
    cdef real_t* w = NULL
    cdef double* res = NULL
    if not _shapes_ok(logits, tokens.shape[0], out.shape, True):
        return st.BAD_SHAPES
    if _out_overlaps(logits, &tokens[0], tokens.shape[0], sizeof(index_t), out):
        return st.OVERLAPPING_ARRAYS
    if out_of_range(tokens, logits.shape[1]):
        return st.BAD_TOKENS
    if _alloc(nt, v, n, &w, &res):
        return st.NO_MEMORY
    if nt > 1:
        for i in prange(n, num_threads=nt, schedule="dynamic", chunksize=rows_per_chunk(v)):
            bad += _token_row(logits, tokens, i, res, w + threadid() * v)
    else:
        for i in range(n):
            bad += _token_row(logits, tokens, i, res, w)
    return _finish(bad, w, res, out)


cdef int entropy_core(const real_t[:, ::1] logits, real_t[::1] out, int num_threads) noexcept nogil:
    if not _shapes_ok(logits, -1, out.shape, True):
        return st.BAD_SHAPES
    return _row_stat(True, logits, out, num_threads)


cdef int log_softmax_core(const real_t[:, ::1] logits, real_t[:, ::1] out, int num_threads) noexcept nogil:
    cdef Py_ssize_t n = logits.shape[0], v = logits.shape[1], i
    cdef Py_ssize_t nt = n_threads(num_threads, logits.shape[0], logits.shape[1])
    cdef int bad = 0
    cdef real_t* w = NULL
    cdef const char* start[2]
    cdef size_t size[2]
    if not _shapes_ok(logits, -1, out.shape, False):
        return st.BAD_SHAPES
    # out == logits exactly is allowed (in place, row by row); a partial overlap is not
    span_2d(&out[0, 0], out.shape[0], out.shape[1], sizeof(real_t), start, size, 0)
    in_place_span(&out[0, 0], &logits[0, 0], n, v, sizeof(real_t), start, size, 1)
    if written_overlap(1, 2, start, size):
        return st.OVERLAPPING_ARRAYS
    w = <real_t*>work(nt, v)
    if w == NULL:
        return st.NO_MEMORY
    if nt > 1:
        for i in prange(n, num_threads=nt, schedule="dynamic", chunksize=rows_per_chunk(v)):
            bad += _log_softmax_row(logits, i, out, w + threadid() * v)
    else:
        for i in range(n):
            bad += _log_softmax_row(logits, i, out, w)
    free(w)
    return st.BAD_LOGITS if bad else 0


cdef int log_prob_grad_core(const real_t[:, ::1] logits, const index_t[::1] tokens, real_t[:, ::1] out, int num_threads) noexcept nogil:
    cdef bint stream
    cdef Py_ssize_t n = logits.shape[0], v = logits.shape[1], i
    cdef Py_ssize_t nt = n_threads(num_threads, logits.shape[0], logits.shape[1])
    cdef int bad = 0
    cdef real_t* w = NULL
    cdef double* res = NULL
    cdef const char* start[3]
    cdef size_t size[3]
    if not _shapes_ok(logits, tokens.shape[0], out.shape, False):
        return st.BAD_SHAPES
    # out == logits exactly is allowed (in place, row by row); a partial overlap, or one with
    # tokens, is not
    span_2d(&out[0, 0], out.shape[0], out.shape[1], sizeof(real_t), start, size, 0)
    span_1d(&tokens[0], tokens.shape[0], sizeof(index_t), start, size, 1)
    in_place_span(&out[0, 0], &logits[0, 0], n, v, sizeof(real_t), start, size, 2)
    if written_overlap(1, 3, start, size):
        return st.OVERLAPPING_ARRAYS
    if out_of_range(tokens, logits.shape[1]):
        return st.BAD_TOKENS
    w = <real_t*>work(nt, v)
    if w == NULL:
        return st.NO_MEMORY
    stream = use_streaming(n, v, &logits[0, 0])
    if nt > 1:
        for i in prange(n, num_threads=nt, schedule="dynamic", chunksize=rows_per_chunk(v)):
            bad += _grad_row(logits, tokens, i, out, w + threadid() * v, stream)
    else:
        for i in range(n):
            bad += _grad_row(logits, tokens, i, out, w, stream)
    free(w)
    return st.BAD_LOGITS if bad else 0


def logsumexp(const real_t[:, ::1] logits, real_t[::1] out, num_threads):
    cdef int status, threads = thread_count(num_threads)
    with nogil:
        status = logsumexp_core(logits, out, threads)
    return status


def token_log_probs(const real_t[:, ::1] logits, const index_t[::1] tokens, real_t[::1] out,
                    num_threads):
    cdef int status, threads = thread_count(num_threads)
    with nogil:
        status = token_log_probs_core(logits, tokens, out, threads)
    return status


def entropy(const real_t[:, ::1] logits, real_t[::1] out, num_threads):
    cdef int status, threads = thread_count(num_threads)
    with nogil:
        status = entropy_core(logits, out, threads)
    return status


def log_softmax(const real_t[:, ::1] logits, real_t[:, ::1] out, num_threads):
    cdef int status, threads = thread_count(num_threads)
    with nogil:
        status = log_softmax_core(logits, out, threads)
    return status


def log_prob_grad(const real_t[:, ::1] logits, const index_t[::1] tokens, real_t[:, ::1] out,
                  num_threads):
    cdef int status, threads = thread_count(num_threads)
    with nogil:
        status = log_prob_grad_core(logits, tokens, out, threads)
    return status
