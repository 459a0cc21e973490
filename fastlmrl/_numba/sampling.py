"""Numba token sampling (same arithmetic as fastlmrl/_python/sampling.py, bit for bit).

Rows are shared out to workers in blocks (``prange`` over workers, an atomic block counter, as in
``log_probs``); each worker owns a weight row buffer of the logits' dtype and a float64 scratch row
(the top-k heap, the top-p candidates).  Row i always uses counter + i, so results do not depend on
the thread count.  Results are collected in work arrays and copied out after every row was valid.

Thresholds are found from the weights' values, never from an order of indices: top-k keeps a heap
of the k largest (or the V - k + 1 smallest) weights in one pass, top-p gathers only the weights
above a cutoff (lowered 8x at a time until their mass may reach the target) and pops them from a
max-heap in descending order.  Any correct heap gives the same values, so the result is the
reference's.
"""

__all__ = ["sample_tokens"]
import math

import numpy as np
from numba import njit, prange

from .._status import BAD_SHAPES
from ._common import NJIT, uniform
from .fast_math import F32, INLINE, combine, fast_exp32, lane_sums, row_stats
from .log_probs import n_threads, next_block, rows_per_block

BAD_LOGITS = 20
BAD_TEMPERATURE = 30
BAD_TOP_K = 31
BAD_TOP_P = 32
BAD_MIN_P = 33
BLOCK = 64
FIRST_CUTOFF = 0.125      # top-p: first cutoff of the candidate weights
CUTOFF_STEP = 0.125       # lowered by this factor while the mass above it is below the target
LAST_CUTOFF = 2.0 ** -60  # below it: every positive weight is a candidate


@njit(**NJIT)
def shapes_ok(logits, tokens_out, log_probs_out, model_log_probs_out):
    """The shape check (first): three (N,) outputs for (N, V) logits, V >= 1."""
    n = logits.shape[0]
    return (logits.shape[1] >= 1 and tokens_out.shape[0] == n and log_probs_out.shape[0] == n
            and model_log_probs_out.shape[0] == n)


@njit(**NJIT)
def arguments_status(temperature, top_k, top_p, min_p):
    """0, or the status of the first bad scalar argument (NaN fails every comparison)."""
    if not (temperature >= 0.0 and temperature < np.inf):
        return BAD_TEMPERATURE
    if top_k < 0:
        return BAD_TOP_K
    if not (top_p > 0.0 and top_p <= 1.0):
        return BAD_TOP_P
    if not (min_p >= 0.0 and min_p <= 1.0):
        return BAD_MIN_P
    return 0


@njit(**INLINE)
def _kept(v, t):
    return np.float64(v) if v >= t else 0.0


@njit(**NJIT)
def lane_sum_range(w, lo, hi, t):
    """Lane sum (lane (j - lo) % 8, entries in order, fixed tree) of the w[j] >= t, lo <= j < hi."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    end = lo + (hi - lo) // 8 * 8
    for j in range(lo, end, 8):
        s0 += _kept(w[j], t)
        s1 += _kept(w[j + 1], t)
        s2 += _kept(w[j + 2], t)
        s3 += _kept(w[j + 3], t)
        s4 += _kept(w[j + 4], t)
        s5 += _kept(w[j + 5], t)
        s6 += _kept(w[j + 6], t)
        s7 += _kept(w[j + 7], t)
    rem = hi - end
    if rem > 0:
        s0 += _kept(w[end], t)
    if rem > 1:
        s1 += _kept(w[end + 1], t)
    if rem > 2:
        s2 += _kept(w[end + 2], t)
    if rem > 3:
        s3 += _kept(w[end + 3], t)
    if rem > 4:
        s4 += _kept(w[end + 4], t)
    if rem > 5:
        s5 += _kept(w[end + 5], t)
    if rem > 6:
        s6 += _kept(w[end + 6], t)
    return combine(s0, s1, s2, s3, s4, s5, s6, s7)


@njit(**NJIT)
def weights(logits, i, m, temperature, w):
    """w[j] = exp((x_j - m) / T): fast_exp32 of the float32-rounded quotient for float32 logits."""
    n = logits.shape[1]
    if logits.itemsize == 4:
        m32 = F32(m)
        for j in range(n):
            w[j] = fast_exp32(F32(np.float64(F32(logits[i, j]) - m32) / temperature))
    else:
        for j in range(n):
            w[j] = math.exp((np.float64(logits[i, j]) - m) / temperature)


# ---- a max-heap of float64 values in h[0:size] --------------------------------------------------

@njit(**NJIT)
def sift_down(h, size, k):
    v = h[k]
    while True:
        c = 2 * k + 1
        if c >= size:
            break
        if c + 1 < size and h[c + 1] > h[c]:
            c += 1
        if not h[c] > v:
            break
        h[k] = h[c]
        k = c
    h[k] = v


@njit(**NJIT)
def heapify(h, size):
    for k in range(size // 2 - 1, -1, -1):
        sift_down(h, size, k)


@njit(**NJIT)
def kth_largest(w, n, k, h):
    """The k-th largest of w[0:n] (1 <= k <= n, with multiplicity), by a heap of min(k, n-k+1)."""
    r = n - k + 1
    if k <= r:  # the k largest, negated in a max-heap: the root is minus the smallest of them
        for j in range(k):
            h[j] = -np.float64(w[j])
        heapify(h, k)
        for j in range(k, n):
            v = -np.float64(w[j])
            if v < h[0]:
                h[0] = v
                sift_down(h, k, 0)
        return -h[0]
    for j in range(r):  # the r smallest in a max-heap: the root is the r-th smallest
        h[j] = np.float64(w[j])
    heapify(h, r)
    for j in range(r, n):
        v = np.float64(w[j])
        if v < h[0]:
            h[0] = v
            sift_down(h, r, 0)
    return h[0]


@njit(**NJIT)
def _mass_above(w, n, c):
    """sum of the w[j] >= c (a guess: any order)."""
    return lane_sum_range(w, 0, n, c)


@njit(**NJIT)
def top_p_threshold(w, n, t_k, top_p, total_k, h):
    """t_p: the weight v_r at which the descending cumulative mass first reaches top_p * W."""
    target = top_p * total_k
    cutoff = FIRST_CUTOFF
    while True:
        last = cutoff <= t_k or cutoff < LAST_CUTOFF
        c = t_k if last else cutoff
        if not last and _mass_above(w, n, c) < target:
            cutoff *= CUTOFF_STEP
            continue
        size = 0
        for j in range(n):
            v = np.float64(w[j])
            if v >= c and v > 0.0:
                h[size] = v
                size += 1
        heapify(h, size)
        cumulative = 0.0
        while size > 0:
            v = h[0]
            cumulative += v
            if cumulative >= target:
                return v
            size -= 1
            h[0] = h[size]
            sift_down(h, size, 0)
        if last:
            return 0.0
        cutoff *= CUTOFF_STEP


@njit(**NJIT)
def _last_positive(w, lo, hi, t):
    for j in range(hi - 1, lo - 1, -1):
        if _kept(w[j], t) > 0.0:
            return j
    return lo


@njit(**NJIT)
def block_search(w, n, t, target):
    """The inverse-CDF search over the kept weights (w >= t) in blocks of 64 entries."""
    cumulative = 0.0
    for lo in range(0, n, BLOCK):
        hi = min(lo + BLOCK, n)
        after = cumulative + lane_sum_range(w, lo, hi, t)
        if after > target:
            r = cumulative
            for j in range(lo, hi):
                r += _kept(w[j], t)
                if r > target:
                    return j
            return _last_positive(w, lo, hi, t)
        cumulative = after
    return _last_positive(w, 0, n, t)


@njit(**NJIT)
def sample_row(logits, i, temperature, top_k, top_p, min_p, u, w, h, res_tok, res_lp, res_mlp):
    """Row i into res_*[i]; returns 1 for an invalid row (nothing stored), else 0."""
    n = logits.shape[1]
    m, s, ok = row_stats(logits, i, w)
    if not ok:
        return 1
    model_lse = m + math.log(s)
    if temperature == 0.0:
        a = 0
        for j in range(n):
            if logits[i, j] == m:
                a = j
                break
        res_tok[i] = a
        res_lp[i] = 0.0
        res_mlp[i] = np.float64(logits[i, a]) - model_lse
        return 0
    total = s
    if temperature != 1.0:  # T = 1: the weights are the model's exps, already in w
        weights(logits, i, m, temperature, w)
        s0, s1, s2, s3, s4, s5, s6, s7 = lane_sums(w, n)
        total = combine(s0, s1, s2, s3, s4, s5, s6, s7)
    t_k = 0.0
    if top_k > 0 and top_k < n:
        t_k = kth_largest(w, n, top_k, h)
    t = t_k
    if top_p < 1.0:
        total_k = total if t_k == 0.0 else lane_sum_range(w, 0, n, t_k)
        t = max(t, top_p_threshold(w, n, t_k, top_p, total_k, h))
    if min_p > 0.0:
        t = max(t, min_p)
    z = total if t == 0.0 else lane_sum_range(w, 0, n, t)
    a = block_search(w, n, t, u * z)
    x_a = np.float64(logits[i, a])
    res_tok[i] = a
    res_lp[i] = (x_a - m) / temperature - math.log(z)
    res_mlp[i] = x_a - model_lse
    return 0


@njit(**NJIT)
def _sample_block(logits, temperature, top_k, top_p, min_p, key, counter, w, h, res_tok,
                  res_lp, res_mlp, lo, hi):
    bad = 0
    for i in range(lo, hi):
        u = uniform(key, counter + np.uint64(i))
        bad += sample_row(logits, i, temperature, top_k, top_p, min_p, u, w, h, res_tok,
                          res_lp, res_mlp)
    return bad


@njit(cache=True, nogil=True, parallel=True)
def _sample_par(logits, temperature, top_k, top_p, min_p, key, counter, w, h, res_tok, res_lp,
                res_mlp, nt):
    n = logits.shape[0]
    bad = 0
    blocks = np.zeros(1, dtype=np.int64)
    rpb = rows_per_block(logits.shape[1])
    for t in prange(nt):
        wt = w[t]
        ht = h[t]
        bt = 0
        lo, hi = next_block(blocks, rpb, n)
        while lo < hi:
            bt += _sample_block(logits, temperature, top_k, top_p, min_p, key, counter, wt, ht,
                                res_tok, res_lp, res_mlp, lo, hi)
            lo, hi = next_block(blocks, rpb, n)
        bad += bt
    return bad


@njit(**NJIT)
def sample_tokens(logits, temperature, top_k, top_p, min_p, key, counter, tokens_out,
                  log_probs_out, model_log_probs_out, num_threads):
    if not shapes_ok(logits, tokens_out, log_probs_out, model_log_probs_out):
        return BAD_SHAPES
    status = arguments_status(temperature, top_k, top_p, min_p)
    if status:
        return status
    key = np.uint64(key)
    counter = np.uint64(counter)
    temperature = np.float64(temperature)
    top_p = np.float64(top_p)
    min_p = np.float64(min_p)
    top_k = np.int64(top_k)
    n, v = logits.shape
    nt = n_threads(num_threads, n, v)
    w = np.empty((nt, v), dtype=logits.dtype)
    h = np.empty((nt, v), dtype=np.float64)
    res_tok = np.empty(n, dtype=np.int64)
    res_lp = np.empty(n)
    res_mlp = np.empty(n)
    if nt > 1:
        bad = _sample_par(logits, temperature, top_k, top_p, min_p, key, counter, w, h, res_tok,
                          res_lp, res_mlp, nt)
    else:
        bad = _sample_block(logits, temperature, top_k, top_p, min_p, key, counter, w[0], h[0],
                            res_tok, res_lp, res_mlp, 0, n)
    if bad:
        return BAD_LOGITS
    for i in range(n):
        tokens_out[i] = res_tok[i]
        log_probs_out[i] = res_lp[i]
        model_log_probs_out[i] = res_mlp[i]
    return 0
