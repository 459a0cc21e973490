# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython kernels over logits (same arithmetic as fastlmrl/_python/log_probs.py, bit for bit).

Rows are split into ``n_blocks`` contiguous blocks (one per thread, ``prange``); each block has its
own float64 row buffer (malloc'ed once per call).  (N,) results are gathered in a float64 work array
and copied out only after every row was found valid.
"""

__all__ = ["entropy", "log_prob_grad", "log_softmax", "logsumexp", "token_log_probs"]
from cython.parallel cimport prange
from libc.math cimport log
from libc.stdlib cimport free, malloc

from fastlmrl._cython._common cimport real_t, index_t, out_of_range
from fastlmrl._cython.fast_math cimport (row_stats, grad_fill, row_entropy, n_chunks)

cdef int BAD_LOGITS = 20
cdef int BAD_TOKENS = 21
cdef int NO_MEMORY = 99
cdef Py_ssize_t PARALLEL_MIN_ELEMENTS = 1 << 16


cdef inline Py_ssize_t n_blocks(int num_threads, Py_ssize_t n, Py_ssize_t n_vocab) noexcept nogil:
    if num_threads <= 1 or n < 2 or n * n_vocab < PARALLEL_MIN_ELEMENTS:
        return 1
    return num_threads if num_threads < n else n


cdef inline double* work(Py_ssize_t nb, Py_ssize_t n_vocab) noexcept nogil:
    """nb row buffers of n_vocab doubles followed by nb chunk-max buffers."""
    return <double*>malloc(sizeof(double) * nb * (n_vocab + n_chunks(n_vocab)) + 8)


cdef inline Py_ssize_t lo_of(Py_ssize_t b, Py_ssize_t nb, Py_ssize_t n) noexcept nogil:
    return b * n // nb


cdef int _lse_block(const real_t[:, ::1] logits, double* res, double* e, double* mc,
                  Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t i, j, v = logits.shape[1]
    cdef int bad = 0
    cdef double m, s, lse
    cdef const real_t* row
    for i in range(lo, hi):
        row = &logits[i, 0]
        if not row_stats(row, v, e, mc, &m, &s):
            bad += 1
            continue
        res[i] = m + log(s)
    return bad

cdef int _token_block(const real_t[:, ::1] logits, const index_t[::1] tokens, double* res, double* e, double* mc,
                  Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t i, j, v = logits.shape[1]
    cdef int bad = 0
    cdef double m, s, lse
    cdef const real_t* row
    for i in range(lo, hi):
        row = &logits[i, 0]
        if not row_stats(row, v, e, mc, &m, &s):
            bad += 1
            continue
        res[i] = <double>row[tokens[i]] - (m + log(s))
    return bad

cdef int _entropy_block(const real_t[:, ::1] logits, double* res, double* e, double* mc,
                  Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t i, j, v = logits.shape[1]
    cdef int bad = 0
    cdef double m, s, lse
    cdef const real_t* row
    for i in range(lo, hi):
        row = &logits[i, 0]
        if not row_stats(row, v, e, mc, &m, &s):
            bad += 1
            continue
        res[i] = row_entropy(row, v, e, mc, m, s, m + log(s))
    return bad

cdef int _log_softmax_block(const real_t[:, ::1] logits, real_t[:, ::1] out, double* e, double* mc,
                  Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t i, j, v = logits.shape[1]
    cdef int bad = 0
    cdef double m, s, lse
    cdef const real_t* row
    for i in range(lo, hi):
        row = &logits[i, 0]
        if not row_stats(row, v, e, mc, &m, &s):
            bad += 1
            continue
        lse = m + log(s)
        for j in range(v):
            out[i, j] = <real_t>(<double>row[j] - lse)
    return bad

cdef int _grad_block(const real_t[:, ::1] logits, const index_t[::1] tokens, real_t[:, ::1] out, double* e, double* mc,
                  Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t i, j, v = logits.shape[1]
    cdef int bad = 0
    cdef double m, s, lse
    cdef const real_t* row
    for i in range(lo, hi):
        row = &logits[i, 0]
        if not row_stats(row, v, e, mc, &m, &s):
            bad += 1
            continue
        grad_fill(row, v, e, mc, m, s, tokens[i], 1.0, &out[i, 0])
    return bad


cdef int logsumexp_core(const real_t[:, ::1] logits, real_t[::1] out, int num_threads) noexcept nogil:
    cdef Py_ssize_t n = logits.shape[0], v = logits.shape[1], b, i, nc = n_chunks(logits.shape[1])
    cdef Py_ssize_t nb = n_blocks(num_threads, logits.shape[0], logits.shape[1])
    cdef int bad = 0
    cdef double* w = NULL
    cdef double* res = NULL
    w = work(nb, v)
    res = <double*>malloc(sizeof(double) * n + 8)
    if w == NULL or res == NULL:
        free(w)
        free(res)
        return NO_MEMORY
    if nb > 1:
        for b in prange(nb, num_threads=nb, schedule="static"):
            bad += _lse_block(logits, res, w + b * v, w + nb * v + b * nc,
                                  lo_of(b, nb, n), lo_of(b + 1, nb, n))
    else:
        bad = _lse_block(logits, res, w, w + v, 0, n)
    free(w)
    if bad:
        free(res)
        return BAD_LOGITS
    for i in range(n):
        out[i] = <real_t>res[i]
    free(res)
    return 0


cdef int token_log_probs_core(const real_t[:, ::1] logits, const index_t[::1] tokens, real_t[::1] out, int num_threads) noexcept nogil:
    cdef Py_ssize_t n = logits.shape[0], v = logits.shape[1], b, i, nc = n_chunks(logits.shape[1])
    cdef Py_ssize_t nb = n_blocks(num_threads, logits.shape[0], logits.shape[1])
    cdef int bad = 0
    cdef double* w = NULL
    cdef double* res = NULL
    if out_of_range(tokens, logits.shape[1]):
        return BAD_TOKENS
    w = work(nb, v)
    res = <double*>malloc(sizeof(double) * n + 8)
    if w == NULL or res == NULL:
        free(w)
        free(res)
        return NO_MEMORY
    if nb > 1:
        for b in prange(nb, num_threads=nb, schedule="static"):
            bad += _token_block(logits, tokens, res, w + b * v, w + nb * v + b * nc,
                                  lo_of(b, nb, n), lo_of(b + 1, nb, n))
    else:
        bad = _token_block(logits, tokens, res, w, w + v, 0, n)
    free(w)
    if bad:
        free(res)
        return BAD_LOGITS
    for i in range(n):
        out[i] = <real_t>res[i]
    free(res)
    return 0


cdef int entropy_core(const real_t[:, ::1] logits, real_t[::1] out, int num_threads) noexcept nogil:
    cdef Py_ssize_t n = logits.shape[0], v = logits.shape[1], b, i, nc = n_chunks(logits.shape[1])
    cdef Py_ssize_t nb = n_blocks(num_threads, logits.shape[0], logits.shape[1])
    cdef int bad = 0
    cdef double* w = NULL
    cdef double* res = NULL
    w = work(nb, v)
    res = <double*>malloc(sizeof(double) * n + 8)
    if w == NULL or res == NULL:
        free(w)
        free(res)
        return NO_MEMORY
    if nb > 1:
        for b in prange(nb, num_threads=nb, schedule="static"):
            bad += _entropy_block(logits, res, w + b * v, w + nb * v + b * nc,
                                  lo_of(b, nb, n), lo_of(b + 1, nb, n))
    else:
        bad = _entropy_block(logits, res, w, w + v, 0, n)
    free(w)
    if bad:
        free(res)
        return BAD_LOGITS
    for i in range(n):
        out[i] = <real_t>res[i]
    free(res)
    return 0


cdef int log_softmax_core(const real_t[:, ::1] logits, real_t[:, ::1] out, int num_threads) noexcept nogil:
    cdef Py_ssize_t n = logits.shape[0], v = logits.shape[1], b, i, nc = n_chunks(logits.shape[1])
    cdef Py_ssize_t nb = n_blocks(num_threads, logits.shape[0], logits.shape[1])
    cdef int bad = 0
    cdef double* w = NULL
    cdef double* res = NULL
    w = work(nb, v)
    if w == NULL:
        return NO_MEMORY
    if nb > 1:
        for b in prange(nb, num_threads=nb, schedule="static"):
            bad += _log_softmax_block(logits, out, w + b * v, w + nb * v + b * nc,
                                  lo_of(b, nb, n), lo_of(b + 1, nb, n))
    else:
        bad = _log_softmax_block(logits, out, w, w + v, 0, n)
    free(w)
    return BAD_LOGITS if bad else 0


cdef int log_prob_grad_core(const real_t[:, ::1] logits, const index_t[::1] tokens, real_t[:, ::1] out, int num_threads) noexcept nogil:
    cdef Py_ssize_t n = logits.shape[0], v = logits.shape[1], b, i, nc = n_chunks(logits.shape[1])
    cdef Py_ssize_t nb = n_blocks(num_threads, logits.shape[0], logits.shape[1])
    cdef int bad = 0
    cdef double* w = NULL
    cdef double* res = NULL
    if out_of_range(tokens, logits.shape[1]):
        return BAD_TOKENS
    w = work(nb, v)
    if w == NULL:
        return NO_MEMORY
    if nb > 1:
        for b in prange(nb, num_threads=nb, schedule="static"):
            bad += _grad_block(logits, tokens, out, w + b * v, w + nb * v + b * nc,
                                  lo_of(b, nb, n), lo_of(b + 1, nb, n))
    else:
        bad = _grad_block(logits, tokens, out, w, w + v, 0, n)
    free(w)
    return BAD_LOGITS if bad else 0


def logsumexp(const real_t[:, ::1] logits, real_t[::1] out, int num_threads):
    cdef int status
    with nogil:
        status = logsumexp_core(logits, out, num_threads)
    return status


def token_log_probs(const real_t[:, ::1] logits, const index_t[::1] tokens, real_t[::1] out, int num_threads):
    cdef int status
    with nogil:
        status = token_log_probs_core(logits, tokens, out, num_threads)
    return status


def entropy(const real_t[:, ::1] logits, real_t[::1] out, int num_threads):
    cdef int status
    with nogil:
        status = entropy_core(logits, out, num_threads)
    return status


def log_softmax(const real_t[:, ::1] logits, real_t[:, ::1] out, int num_threads):
    cdef int status
    with nogil:
        status = log_softmax_core(logits, out, num_threads)
    return status


def log_prob_grad(const real_t[:, ::1] logits, const index_t[::1] tokens, real_t[:, ::1] out, int num_threads):
    cdef int status
    with nogil:
        status = log_prob_grad_core(logits, tokens, out, num_threads)
    return status
