"""Numba kernels over logits (same arithmetic as fastlmrl/_python/log_probs.py, bit for bit).

Rows are split into blocks of ``rows_per_block`` rows (about 64k entries); each of ``n_threads``
workers (``prange``, one exp row buffer of the logits' dtype each) takes the next block from an
atomic counter until none is left (dynamic schedule: a thread slowed by another process does not
hold the others up).  Every row is computed by the same code whichever worker takes it, so results
do not depend on the thread count.  The (N,) results are collected in a float64 work array and
copied out only after every row was found valid.
"""

__all__ = ["entropy", "log_prob_grad", "log_softmax", "logsumexp", "token_log_probs"]
import math

import numpy as np
from numba import njit, prange

# status codes: fastlmrl._status.Status as plain ints (Numba globals); the contract:
# fastlmrl.log_probs.CONTRACT
from .._status import (
    BAD_LOGITS,
    BAD_SHAPES,
    BAD_TOKENS,
    OVERLAPPING_ARRAYS,
)
from ._common import NJIT, out_of_range
from .fast_math import fetch_add, grad_fill, row_entropy, row_stats, store_fence, streaming_base
from .overlap import _bounds, spans_overlap

PARALLEL_MIN_ELEMENTS = 1 << 16
SERIAL = 1  # one worker


@njit(**NJIT)
def n_threads(num_threads, n, n_vocab):
    """Workers: 1 unless more than one thread is allowed and the batch is large enough."""
    if num_threads <= 1 or n < 2 or n * n_vocab < PARALLEL_MIN_ELEMENTS:
        return SERIAL
    return min(num_threads, n)


@njit(**NJIT)
def rows_per_block(n_vocab):
    """Rows a worker takes at a time (about 64k entries)."""
    return 1 + PARALLEL_MIN_ELEMENTS // n_vocab


@njit(**NJIT)
def next_block(counter, rpb, n):
    """Claim the next block of rows: (lo, hi), empty when none is left."""
    lo = min(fetch_add(counter, rpb), n)
    return lo, min(lo + rpb, n)


@njit(**NJIT)
def work(nt, logits):
    """Per-worker scratch, allocated once per call: the exp row buffer of each worker, of the
    logits' dtype (``fast_exp32`` gives float32 values for float32 logits)."""
    return np.empty((nt, logits.shape[1]), dtype=logits.dtype)


# ---- overlap checks (status 8, O(1)) ------------------------------------------------------------


@njit(**NJIT)
def span(a):
    """[lo, hi): the bytes a's elements span ((0, 0) when a is empty)."""
    return _bounds(a)


@njit(**NJIT)
def same_span(a, b):
    """Are a and b exactly the same memory (same first byte, same extent)?"""
    alo, ahi = _bounds(a)
    blo, bhi = _bounds(b)
    return alo == blo and ahi == bhi


@njit(**NJIT)
def in_place_span(out, logits):
    """The span the overlap check records for ``logits`` next to a written ``out`` that may be
    exactly ``logits`` (a gradient or log-softmax written over its logits, row by row): empty when
    it is exactly, else logits' own span (a partial overlap is refused)."""
    if same_span(out, logits):
        return np.int64(0), np.int64(0)
    return _bounds(logits)


# ---- one block of rows per kernel ---------------------------------------------------------------

# Per-row statistics written to ``res[i]`` (float64), one kernel for the three of them.
LSE, TOKEN_LOG_PROB, ENTROPY = 0, 1, 2


@njit(**NJIT)
def _stat_block(stat, logits, tokens, res, e, lo, hi):
    """res[i] for rows lo..hi-1: lse, log pi(tokens[i]) or entropy (``stat``); returns #bad rows."""
    bad = 0
    for i in range(lo, hi):
        m, s, ok = row_stats(logits, i, e)
        if not ok:
            bad += 1
            continue
        lse = m + math.log(s)
        if stat == LSE:
            res[i] = lse
        elif stat == TOKEN_LOG_PROB:
            res[i] = np.float64(logits[i, tokens[i]]) - lse
        else:
            res[i] = row_entropy(logits, i, e, 1.0 / s, lse)
    return bad


@njit(**NJIT)
def _log_softmax_block(logits, out, e, lo, hi):
    bad = 0
    for i in range(lo, hi):
        m, s, ok = row_stats(logits, i, e)
        if not ok:
            bad += 1
            continue
        lse = m + math.log(s)
        for j in range(logits.shape[1]):
            out[i, j] = np.float64(logits[i, j]) - lse
    return bad


@njit(**NJIT)
def _grad_block(logits, tokens, out, e, lo, hi, nt_base):
    bad = 0
    for i in range(lo, hi):
        m, s, ok = row_stats(logits, i, e)
        if not ok:
            bad += 1
            continue
        grad_fill(e, 1.0 / s, tokens[i], 1.0, out, i, nt_base)
    if nt_base >= 0:
        store_fence()
    return bad


# ---- parallel drivers (prange over workers) ------------------------------------------------------


@njit(cache=True, nogil=True, parallel=True)
def _stat_par(stat, logits, tokens, res, e, nt):
    n = logits.shape[0]
    bad = 0
    counter = np.zeros(1, dtype=np.int64)
    rpb = rows_per_block(logits.shape[1])
    for t in prange(nt):
        et = e[t]
        bt = 0
        lo, hi = next_block(counter, rpb, n)
        while lo < hi:
            bt += _stat_block(stat, logits, tokens, res, et, lo, hi)
            lo, hi = next_block(counter, rpb, n)
        bad += bt
    return bad


@njit(cache=True, nogil=True, parallel=True)
def _log_softmax_par(logits, out, e, nt):
    n = logits.shape[0]
    bad = 0
    counter = np.zeros(1, dtype=np.int64)
    rpb = rows_per_block(logits.shape[1])
    for t in prange(nt):
        et = e[t]
        bt = 0
        lo, hi = next_block(counter, rpb, n)
        while lo < hi:
            bt += _log_softmax_block(logits, out, et, lo, hi)
            lo, hi = next_block(counter, rpb, n)
        bad += bt
    return bad


@njit(cache=True, nogil=True, parallel=True)
def _grad_par(logits, tokens, out, e, nt, nt_base):
    n = logits.shape[0]
    bad = 0
    counter = np.zeros(1, dtype=np.int64)
    rpb = rows_per_block(logits.shape[1])
    for t in prange(nt):
        et = e[t]
        bt = 0
        lo, hi = next_block(counter, rpb, n)
        while lo < hi:
            bt += _grad_block(logits, tokens, out, et, lo, hi, nt_base)
            lo, hi = next_block(counter, rpb, n)
        bad += bt
    return bad


@njit(**NJIT)
def _copy_out(res, out):
    for i in range(res.shape[0]):
        out[i] = res[i]


# ---- kernels ------------------------------------------------------------------------------------


@njit(**NJIT)
def shapes_ok(logits, tokens, out, per_row):
    """The shape check every kernel does first: ``tokens`` (None for the kernels without) (N,),
    ``out`` (N,) for a per-row result (``per_row``) or (N, V) like ``logits``."""
    n = logits.shape[0]
    if tokens is not None and tokens.shape[0] != n:
        return False
    if per_row:
        return out.shape == (n,)
    return out.shape == logits.shape


@njit(**NJIT)
def _row_stat(stat, logits, tokens, out, num_threads):
    """out[i] = the per-row statistic; nothing is written to ``out`` unless every row is valid."""
    n, v = logits.shape
    nt = n_threads(num_threads, n, v)
    e = work(nt, logits)
    res = np.empty(n)
    if nt > 1:
        bad = _stat_par(stat, logits, tokens, res, e, nt)
    else:
        bad = _stat_block(stat, logits, tokens, res, e[0], 0, n)
    if bad:
        return BAD_LOGITS
    _copy_out(res, out)
    return 0


@njit(**NJIT)
def logsumexp(logits, out, num_threads):
    if not shapes_ok(logits, None, out, True):
        return BAD_SHAPES
    if spans_overlap((span(out), span(logits)), 1):
        return OVERLAPPING_ARRAYS
    return _row_stat(LSE, logits, np.empty(0, dtype=np.int64), out, num_threads)


@njit(**NJIT)
def token_log_probs(logits, tokens, out, num_threads):
    if not shapes_ok(logits, tokens, out, True):
        return BAD_SHAPES
    if spans_overlap((span(out), span(logits), span(tokens)), 1):
        return OVERLAPPING_ARRAYS
    if out_of_range(tokens, logits.shape[1]):
        return BAD_TOKENS
    return _row_stat(TOKEN_LOG_PROB, logits, tokens, out, num_threads)


@njit(**NJIT)
def entropy(logits, out, num_threads):
    if not shapes_ok(logits, None, out, True):
        return BAD_SHAPES
    if spans_overlap((span(out), span(logits)), 1):
        return OVERLAPPING_ARRAYS
    return _row_stat(ENTROPY, logits, np.empty(0, dtype=np.int64), out, num_threads)


@njit(**NJIT)
def log_softmax(logits, out, num_threads):
    if not shapes_ok(logits, None, out, False):
        return BAD_SHAPES
    if spans_overlap((span(out), in_place_span(out, logits)), 1):
        return OVERLAPPING_ARRAYS  # out == logits exactly is allowed (in place, row by row)
    n, v = logits.shape
    nt = n_threads(num_threads, n, v)
    e = work(nt, logits)
    if nt > 1:
        bad = _log_softmax_par(logits, out, e, nt)
    else:
        bad = _log_softmax_block(logits, out, e[0], 0, n)
    return BAD_LOGITS if bad else 0


@njit(**NJIT)
def log_prob_grad(logits, tokens, out, num_threads):
    if not shapes_ok(logits, tokens, out, False):
        return BAD_SHAPES
    # out == logits exactly is allowed (in place, row by row); any other overlap is not
    if spans_overlap((span(out), in_place_span(out, logits), span(tokens)), 1):
        return OVERLAPPING_ARRAYS
    n, v = logits.shape
    if out_of_range(tokens, v):
        return BAD_TOKENS
    nt = n_threads(num_threads, n, v)
    e = work(nt, logits)
    if nt > 1:
        bad = _grad_par(logits, tokens, out, e, nt, streaming_base(out))
    else:
        bad = _grad_block(logits, tokens, out, e[0], 0, n, streaming_base(out))
    return BAD_LOGITS if bad else 0
