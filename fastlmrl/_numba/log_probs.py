"""Numba kernels over logits (same arithmetic as fastlmrl/_python/log_probs.py, bit for bit).

Rows are split into ``n_blocks`` contiguous blocks (one per thread, ``prange``); every row is computed
by the same code whichever block holds it, so results do not depend on the thread count.  The (N,)
results are collected in a float64 work array and copied out only after every row was found valid.
"""

__all__ = ["entropy", "log_prob_grad", "log_softmax", "logsumexp", "token_log_probs"]
import math

import numpy as np
from numba import njit, prange

from ._common import NJIT, out_of_range
from .fast_math import CHUNK, grad_fill, row_entropy, row_stats

BAD_LOGITS = 20
BAD_TOKENS = 21
PARALLEL_MIN_ELEMENTS = 1 << 16


@njit(**NJIT)
def n_blocks(num_threads, n, n_vocab):
    """Blocks of rows (one per thread): 1 unless more than one thread and a large enough batch."""
    if num_threads <= 1 or n < 2 or n * n_vocab < PARALLEL_MIN_ELEMENTS:
        return 1
    return min(num_threads, n)


@njit(**NJIT)
def work(nb, n_vocab):
    """Per-block scratch, allocated once per call: the exp row buffer and the chunk maxima."""
    return np.empty((nb, n_vocab)), np.empty((nb, (n_vocab + CHUNK - 1) // CHUNK))


@njit(**NJIT)
def block_bounds(b, nb, n):
    return b * n // nb, (b + 1) * n // nb


# ---- one block of rows per kernel ---------------------------------------------------------------

@njit(**NJIT)
def _lse_block(logits, res, e, mc, lo, hi):
    bad = 0
    for i in range(lo, hi):
        m, s, ok = row_stats(logits[i], e, mc)
        if not ok:
            bad += 1
            continue
        res[i] = m + math.log(s)
    return bad


@njit(**NJIT)
def _token_block(logits, tokens, res, e, mc, lo, hi):
    bad = 0
    for i in range(lo, hi):
        row = logits[i]
        m, s, ok = row_stats(row, e, mc)
        if not ok:
            bad += 1
            continue
        res[i] = np.float64(row[tokens[i]]) - (m + math.log(s))
    return bad


@njit(**NJIT)
def _entropy_block(logits, res, e, mc, lo, hi):
    bad = 0
    for i in range(lo, hi):
        row = logits[i]
        m, s, ok = row_stats(row, e, mc)
        if not ok:
            bad += 1
            continue
        res[i] = row_entropy(row, e, mc, m, s, m + math.log(s))
    return bad


@njit(**NJIT)
def _log_softmax_block(logits, out, e, mc, lo, hi):
    bad = 0
    for i in range(lo, hi):
        row = logits[i]
        m, s, ok = row_stats(row, e, mc)
        if not ok:
            bad += 1
            continue
        lse = m + math.log(s)
        dst = out[i]
        for j in range(row.shape[0]):
            dst[j] = np.float64(row[j]) - lse
    return bad


@njit(**NJIT)
def _grad_block(logits, tokens, out, e, mc, lo, hi):
    bad = 0
    for i in range(lo, hi):
        row = logits[i]
        m, s, ok = row_stats(row, e, mc)
        if not ok:
            bad += 1
            continue
        grad_fill(row, e, mc, m, s, tokens[i], 1.0, out[i])
    return bad


# ---- parallel drivers (prange over blocks) ------------------------------------------------------

@njit(cache=True, nogil=True, parallel=True)
def _lse_par(logits, res, e, mc, nb):
    n = logits.shape[0]
    bad = 0
    for b in prange(nb):
        lo, hi = block_bounds(b, nb, n)
        bad += _lse_block(logits, res, e[b], mc[b], lo, hi)
    return bad


@njit(cache=True, nogil=True, parallel=True)
def _token_par(logits, tokens, res, e, mc, nb):
    n = logits.shape[0]
    bad = 0
    for b in prange(nb):
        lo, hi = block_bounds(b, nb, n)
        bad += _token_block(logits, tokens, res, e[b], mc[b], lo, hi)
    return bad


@njit(cache=True, nogil=True, parallel=True)
def _entropy_par(logits, res, e, mc, nb):
    n = logits.shape[0]
    bad = 0
    for b in prange(nb):
        lo, hi = block_bounds(b, nb, n)
        bad += _entropy_block(logits, res, e[b], mc[b], lo, hi)
    return bad


@njit(cache=True, nogil=True, parallel=True)
def _log_softmax_par(logits, out, e, mc, nb):
    n = logits.shape[0]
    bad = 0
    for b in prange(nb):
        lo, hi = block_bounds(b, nb, n)
        bad += _log_softmax_block(logits, out, e[b], mc[b], lo, hi)
    return bad


@njit(cache=True, nogil=True, parallel=True)
def _grad_par(logits, tokens, out, e, mc, nb):
    n = logits.shape[0]
    bad = 0
    for b in prange(nb):
        lo, hi = block_bounds(b, nb, n)
        bad += _grad_block(logits, tokens, out, e[b], mc[b], lo, hi)
    return bad


@njit(**NJIT)
def _copy_out(res, out):
    for i in range(res.shape[0]):
        out[i] = res[i]


# ---- kernels ------------------------------------------------------------------------------------

@njit(**NJIT)
def logsumexp(logits, out, num_threads):
    n, v = logits.shape
    nb = n_blocks(num_threads, n, v)
    e, mc = work(nb, v)
    res = np.empty(n)
    if nb > 1:
        bad = _lse_par(logits, res, e, mc, nb)
    else:
        bad = _lse_block(logits, res, e[0], mc[0], 0, n)
    if bad:
        return BAD_LOGITS
    _copy_out(res, out)
    return 0


@njit(**NJIT)
def token_log_probs(logits, tokens, out, num_threads):
    n, v = logits.shape
    if out_of_range(tokens, v):
        return BAD_TOKENS
    nb = n_blocks(num_threads, n, v)
    e, mc = work(nb, v)
    res = np.empty(n)
    if nb > 1:
        bad = _token_par(logits, tokens, res, e, mc, nb)
    else:
        bad = _token_block(logits, tokens, res, e[0], mc[0], 0, n)
    if bad:
        return BAD_LOGITS
    _copy_out(res, out)
    return 0


@njit(**NJIT)
def entropy(logits, out, num_threads):
    n, v = logits.shape
    nb = n_blocks(num_threads, n, v)
    e, mc = work(nb, v)
    res = np.empty(n)
    if nb > 1:
        bad = _entropy_par(logits, res, e, mc, nb)
    else:
        bad = _entropy_block(logits, res, e[0], mc[0], 0, n)
    if bad:
        return BAD_LOGITS
    _copy_out(res, out)
    return 0


@njit(**NJIT)
def log_softmax(logits, out, num_threads):
    n, v = logits.shape
    nb = n_blocks(num_threads, n, v)
    e, mc = work(nb, v)
    if nb > 1:
        bad = _log_softmax_par(logits, out, e, mc, nb)
    else:
        bad = _log_softmax_block(logits, out, e[0], mc[0], 0, n)
    return BAD_LOGITS if bad else 0


@njit(**NJIT)
def log_prob_grad(logits, tokens, out, num_threads):
    n, v = logits.shape
    if out_of_range(tokens, v):
        return BAD_TOKENS
    nb = n_blocks(num_threads, n, v)
    e, mc = work(nb, v)
    if nb > 1:
        bad = _grad_par(logits, tokens, out, e, mc, nb)
    else:
        bad = _grad_block(logits, tokens, out, e[0], mc[0], 0, n)
    return BAD_LOGITS if bad else 0
