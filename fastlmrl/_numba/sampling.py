"""Numba token sampling (same arithmetic as fastlmrl/_python/sampling.py, bit for bit).

Rows are shared out to workers in blocks (``prange`` over workers, an atomic block counter, as in
``log_probs``); each worker owns a weight row buffer of the logits' dtype and a float64 scratch row
(the top-k heap, the top-p candidates).  Row i always uses counter + i, so results do not depend on
the thread count.  Results are collected in work arrays and copied out after every row was valid.

Thresholds are found from the weights' values, never from an order of indices: top-k (k <= 128)
keeps a heap of the k largest weights in one pass, a larger k selects among the weights above the
power-of-two cutoff that holds at least k of them; top-p gathers the weights above the
power-of-two cutoff whose mass reaches the target (binary searches with vectorised counts and
masked lane sums) and pops them from a max-heap in descending order.  Any correct heap gives the
same values, so the result is the reference's (which sorts).  After a top-k with k <= 1024 the
lane sums and the block search run over the index-ordered list of the weights >= t_k (the dense
passes' values exactly: the entries left out would add 0).
"""

__all__ = ["sample_tokens"]
import math

import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import cgutils, types
from numba.extending import intrinsic

# status codes: fastlmrl._status.Status as plain ints (Numba globals); the contract:
# fastlmrl.sampling.CONTRACT
from .._status import (
    BAD_LOGITS,
    BAD_MIN_P,
    BAD_SHAPES,
    BAD_TEMPERATURE,
    BAD_TOP_K,
    BAD_TOP_P,
    OVERLAPPING_ARRAYS,
)
from ._common import NJIT, uniform
from .fast_math import F32, INLINE, LANES, combine, fast_exp32, row_stats
from .log_probs import n_threads, next_block, rows_per_block, span
from .overlap import spans_overlap

BLOCK = 64
MIN_TEMPERATURE = 2.2250738585072014e-308  # the smallest normal double: 1 / T stays finite
F32_TINY = 1.401298464324817e-45  # the smallest positive float32 (subnormal)
F32_MAX = 3.4028234663852886e38  # the largest finite float32
SMALL_K = 128  # top-k up to this k: one heap pass over the row
DIRECT_K = 1024  # top-k up to this k: the rest of the row works on the candidate list
LAST_EXPONENT = 60  # candidate cutoffs 2**-e, 0 <= e <= 60; below: every weight
LAST_CUTOFF = 2.0**-LAST_EXPONENT


@njit(**NJIT)
def shapes_ok(logits, tokens_out, log_probs_out, model_log_probs_out):
    """The shape check (first): three (N,) outputs for (N, V) logits, V >= 1."""
    n = logits.shape[0]
    return (
        logits.shape[1] >= 1
        and tokens_out.shape[0] == n
        and log_probs_out.shape[0] == n
        and model_log_probs_out.shape[0] == n
    )


@njit(**NJIT)
def arguments_status(temperature, top_k, top_p, min_p):
    """0, or the status of the first bad scalar argument (NaN fails every comparison)."""
    if not (temperature == 0.0 or (temperature >= MIN_TEMPERATURE and temperature < np.inf)):
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


@intrinsic
def lane_sum_range(typingctx, w, lo, hi, t):
    """Lane sum of the w[j] >= t for lo <= j < hi: lane l adds the entries j = lo + l (mod 8) in
    order (float64; float32 weights widened exactly), then ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7)).

    The same additions as eight scalar running sums, as one <8 x double> compare, select and add
    per 8 entries (LLVM keeps FP adds in order, so it would not vectorise the scalar form).
    """
    if not (
        isinstance(w, types.Array)
        and w.ndim == 1
        and w.dtype in (types.float32, types.float64)
        and isinstance(lo, types.Integer)
        and isinstance(hi, types.Integer)
        and t == types.float64
    ):
        return None

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        i32 = ir.IntType(32)
        dbl = ir.DoubleType()
        vty = ir.VectorType(dbl, 8)
        data = cgutils.create_struct_proxy(signature.args[0])(context, builder, value=args[0]).data
        elem = data.type.pointee
        lo_v = context.cast(builder, args[1], signature.args[1], types.int64)
        hi_v = context.cast(builder, args[2], signature.args[2], types.int64)
        t_v = args[3]
        span = builder.sub(hi_v, lo_v)
        end = builder.add(lo_v, builder.sub(span, builder.srem(span, ir.Constant(i64, 8))))
        zeros = ir.Constant(vty, [0.0] * 8)
        t_one = builder.insert_element(ir.Constant(vty, ir.Undefined), t_v, ir.Constant(i32, 0))
        t_vec = builder.shuffle_vector(
            t_one, ir.Constant(vty, ir.Undefined), ir.Constant(ir.VectorType(i32, 8), [0] * 8)
        )
        acc = cgutils.alloca_once_value(builder, zeros)

        def widen(v, ty):
            return v if elem == dbl else builder.fpext(v, ty)

        with cgutils.for_range_slice(builder, lo_v, end, ir.Constant(i64, 8), intp=i64) as (j, _):
            v = builder.load(
                builder.bitcast(builder.gep(data, [j]), ir.VectorType(elem, 8).as_pointer()),
                align=4 if elem != dbl else 8,
            )
            v = widen(v, vty)
            kept = builder.select(builder.fcmp_ordered(">=", v, t_vec), v, zeros)
            builder.store(builder.fadd(builder.load(acc), kept), acc)
        lanes = []
        for l in range(8):
            slot = cgutils.alloca_once_value(
                builder, builder.extract_element(builder.load(acc), ir.Constant(i32, l))
            )
            idx = builder.add(end, ir.Constant(i64, l))
            with builder.if_then(builder.icmp_signed("<", idx, hi_v)):
                x = widen(builder.load(builder.gep(data, [idx])), dbl)
                kept = builder.select(builder.fcmp_ordered(">=", x, t_v), x, ir.Constant(dbl, 0.0))
                builder.store(builder.fadd(builder.load(slot), kept), slot)
            lanes.append(builder.load(slot))
        a = builder.fadd(builder.fadd(lanes[0], lanes[1]), builder.fadd(lanes[2], lanes[3]))
        b = builder.fadd(builder.fadd(lanes[4], lanes[5]), builder.fadd(lanes[6], lanes[7]))
        return builder.fadd(a, b)

    return types.float64(w, lo, hi, t), codegen


@njit(**NJIT)
def weights(logits, i, m, temperature, w):
    """w[j] = exp((x_j - m) * (1 / T)); float32 logits: fast_exp32 of the float32 product by
    g = float32(1 / T) (clamped to the finite positive float32 range)."""
    n = logits.shape[1]
    inv_t = 1.0 / temperature
    if logits.itemsize == 4:
        m32 = F32(m)
        g = F32(min(max(inv_t, F32_TINY), F32_MAX))
        for j in range(n):
            w[j] = fast_exp32((F32(logits[i, j]) - m32) * g)
    else:
        for j in range(n):
            w[j] = math.exp((np.float64(logits[i, j]) - m) * inv_t)


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
def _heap_select(h, size, k):
    """The k-th largest of h[0:size] (1 <= k <= size), in place: a heap of min(k, size - k + 1)
    in h's front while the rest of h streams past it."""
    r = size - k + 1
    if k <= r:  # the k largest, negated in a max-heap: the root is minus the smallest of them
        for j in range(k):
            h[j] = -h[j]
        heapify(h, k)
        for j in range(k, size):
            v = -h[j]
            if v < h[0]:
                h[0] = v
                sift_down(h, k, 0)
        return -h[0]
    heapify(h, r)  # the r smallest in a max-heap: the root is the r-th smallest
    for j in range(r, size):
        v = h[j]
        if v < h[0]:
            h[0] = v
            sift_down(h, r, 0)
    return h[0]


@njit(**NJIT)
def count_at_least(w, lo, hi, c):
    """How many w[j] >= c for lo <= j < hi (vectorised)."""
    count = 0
    for j in range(np.uint64(lo), np.uint64(hi)):  # unsigned: no wraparound check, vectorised
        count += 1 if w[j] >= c else 0
    return count


@njit(**NJIT)
def count_greater(w, lo, hi, c):
    """How many w[j] > c for lo <= j < hi (vectorised)."""
    count = 0
    for j in range(np.uint64(lo), np.uint64(hi)):  # unsigned: no wraparound check, vectorised
        count += 1 if w[j] > c else 0
    return count


@njit(**NJIT)
def gather(w, n, c, h):
    """h[0:size] = the positive w[j] >= c (in index order); blocks of 64 below c are skipped."""
    size = 0
    for lo in range(0, n, BLOCK):
        hi = min(lo + BLOCK, n)
        if count_at_least(w, lo, hi, c) > 0:
            for j in range(lo, hi):
                v = np.float64(w[j])
                if v >= c and v > 0.0:
                    h[size] = v
                    size += 1
    return size


@njit(**NJIT)
def kth_largest(w, n, k, h):
    """The k-th largest of w[0:n] (1 <= k < n, with multiplicity).

    Small k: a heap of the k largest in one pass (blocks of 64 whose max does not beat the heap's
    smallest are skipped).  Larger k: the smallest power-of-two cutoff with at least k weights
    above it (binary search over the exponent, one vectorised count per step), then a heap select
    among those candidates only.
    """
    if k <= SMALL_K:
        for j in range(k):
            h[j] = -np.float64(w[j])
        heapify(h, k)
        for lo in range(k, n, BLOCK):
            hi = min(lo + BLOCK, n)
            if count_greater(w, lo, hi, -h[0]) > 0:
                for j in range(lo, hi):
                    v = -np.float64(w[j])
                    if v < h[0]:
                        h[0] = v
                        sift_down(h, k, 0)
        return -h[0]
    if count_at_least(w, 0, n, LAST_CUTOFF) < k:  # the k-th largest is below 2**-60 (or zero)
        for j in range(n):
            h[j] = np.float64(w[j])
        return _heap_select(h, n, k)
    e_lo, e_hi = -1, LAST_EXPONENT  # count(2**-e_hi) >= k; count(2**-e_lo) < k (2**1: none)
    while e_hi - e_lo > 1:
        e = (e_lo + e_hi) // 2
        if count_at_least(w, 0, n, 2.0**-e) >= k:
            e_hi = e
        else:
            e_lo = e
    size = gather(w, n, 2.0**-e_hi, h)
    return _heap_select(h, size, k)


@njit(**NJIT)
def top_p_threshold(w, n, t_k, top_p, total_k, h):
    """t_p: the weight v_r at which the descending cumulative mass first reaches top_p * W.

    The candidates are the weights above the smallest power-of-two cutoff whose (vectorised,
    any-order) mass reaches the target, found by binary search over the exponent; they are popped
    from a max-heap in descending order and added exactly.  Should rounding leave the exact sum
    below the target, the cutoff is halved and the pass repeated (down to t_k: all of K).
    """
    target = top_p * total_k
    e_lo, e_hi = -1, LAST_EXPONENT + 1  # mass at 2**-e_hi (e_hi > 60: at t_k) >= target
    while e_hi - e_lo > 1:
        e = (e_lo + e_hi) // 2
        if lane_sum_range(w, 0, n, max(2.0**-e, t_k)) >= target:
            e_hi = e
        else:
            e_lo = e
    e = e_hi
    while True:
        c = 2.0**-e
        last = c <= t_k or e > LAST_EXPONENT
        if last:
            c = t_k
        v = pop_until(h, gather(w, n, c, h), target)
        if v >= 0.0:
            return v
        if last:
            return 0.0
        e += 1


@njit(**NJIT)
def pop_until(h, size, target):
    """Add the values h[0:size] in descending order (popped from a max-heap); the value whose
    addition first brings the sum to >= target, or -1 when the sum of all stays below it."""
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
    return -1.0


# ---- the same sums and search over an index-ordered candidate list (a small top-k) -------------
# The candidates are every positive w[j] >= t_k; the entries they leave out are 0 in the dense
# passes, and adding 0.0 changes no sum, so these give the dense passes' values bit for bit.


@njit(**NJIT)
def gather_indexed(w, n, c, h, idx):
    """h[0:size], idx[0:size] = the positive w[j] >= c and their j, in index order."""
    size = 0
    for lo in range(0, n, BLOCK):
        hi = min(lo + BLOCK, n)
        if count_at_least(w, lo, hi, c) > 0:
            for j in range(lo, hi):
                v = np.float64(w[j])
                if v >= c and v > 0.0:
                    h[size] = v
                    idx[size] = j
                    size += 1
    return size


@njit(**NJIT)
def sparse_lane_sum(w, idx, lo, hi, t, lanes):
    """The lane sum (lane j % 8) of the w[j] >= t over the candidates idx[lo:hi]."""
    for l in range(LANES):
        lanes[l] = 0.0
    for c in range(lo, hi):
        j = idx[c]
        v = np.float64(w[j])
        if v >= t:
            lanes[j & 7] += v
    return combine(lanes[0], lanes[1], lanes[2], lanes[3], lanes[4], lanes[5], lanes[6], lanes[7])


@njit(**NJIT)
def _sparse_last_positive(w, idx, lo, hi, t):
    for c in range(hi - 1, lo - 1, -1):
        if _kept(w[idx[c]], t) > 0.0:
            return idx[c]
    return idx[lo]


@njit(**NJIT)
def sparse_block_search(w, idx, size, t, target, lanes):
    """``block_search`` over the candidates (blocks without one add 0 and are skipped)."""
    cumulative = 0.0
    c = 0
    while c < size:
        b = idx[c] // BLOCK
        end = c + 1
        while end < size and idx[end] // BLOCK == b:
            end += 1
        after = cumulative + sparse_lane_sum(w, idx, c, end, t, lanes)
        if after > target:
            r = cumulative
            for cc in range(c, end):
                r += _kept(w[idx[cc]], t)
                if r > target:
                    return idx[cc]
            return _sparse_last_positive(w, idx, c, end, t)
        cumulative = after
        c = end
    return _sparse_last_positive(w, idx, 0, size, t)


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
def sample_row(
    logits, i, temperature, top_k, top_p, min_p, u, w, h, idx, lanes, res_tok, res_lp, res_mlp
):
    """Row i into res_*[i]; returns True for an invalid row (nothing stored), else False."""
    n = logits.shape[1]
    m, s, ok = row_stats(logits, i, w)
    if not ok:
        return True
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
        return False
    # one remembered lane sum of the kept weights: at threshold 0 it is S when T = 1
    memo_t = 0.0
    memo = s if temperature == 1.0 else -1.0  # -1: not computed yet
    if temperature != 1.0:  # T = 1: the weights are the model's exps, already in w
        weights(logits, i, m, temperature, w)
    t_k = 0.0
    if top_k > 0 and top_k < n:  # (k >= 1 and k < n: the heap of k fits)
        t_k = kth_largest(w, n, top_k, h)
        if top_k <= DIRECT_K:  # few candidates: work on their list, not on the row
            size = gather_indexed(w, n, t_k, h, idx)
            t = t_k
            if top_p < 1.0:  # (pop_until's -1, target not reached, leaves t = t_k)
                t = max(t, pop_until(h, size, top_p * sparse_lane_sum(w, idx, 0, size, t_k, lanes)))
            if min_p > 0.0:
                t = max(t, min_p)
            z = sparse_lane_sum(w, idx, 0, size, t, lanes)
            a = sparse_block_search(w, idx, size, t, u * z, lanes)
            x_a = np.float64(logits[i, a])
            res_tok[i] = a
            res_lp[i] = (x_a - m) / temperature - math.log(z)
            res_mlp[i] = x_a - model_lse
            return False
    t = t_k
    if top_p < 1.0:
        if memo < 0.0 or memo_t != t_k:
            memo_t = t_k
            memo = lane_sum_range(w, 0, n, t_k)
        t = max(t, top_p_threshold(w, n, t_k, top_p, memo, h))
    if min_p > 0.0:
        t = max(t, min_p)
    if memo < 0.0 or memo_t != t:
        memo = lane_sum_range(w, 0, n, t)
    z = memo
    a = block_search(w, n, t, u * z)
    x_a = np.float64(logits[i, a])
    res_tok[i] = a
    res_lp[i] = (x_a - m) / temperature - math.log(z)
    res_mlp[i] = x_a - model_lse
    return False


@njit(**NJIT)
def _sample_block(
    logits,
    temperature,
    top_k,
    top_p,
    min_p,
    key,
    counter,
    w,
    h,
    idx,
    lanes,
    res_tok,
    res_lp,
    res_mlp,
    lo,
    hi,
):
    bad = 0
    for i in range(lo, hi):
        u = uniform(key, counter + np.uint64(i))
        bad += sample_row(
            logits,
            i,
            temperature,
            top_k,
            top_p,
            min_p,
            u,
            w,
            h,
            idx,
            lanes,
            res_tok,
            res_lp,
            res_mlp,
        )
    return bad


@njit(cache=True, nogil=True, parallel=True)
def _sample_par(
    logits,
    temperature,
    top_k,
    top_p,
    min_p,
    key,
    counter,
    w,
    h,
    idx,
    lanes,
    res_tok,
    res_lp,
    res_mlp,
    nt,
):
    n = logits.shape[0]
    bad = 0
    blocks = np.zeros(1, dtype=np.int64)
    rpb = rows_per_block(logits.shape[1])
    for t in prange(nt):
        wt = w[t]
        ht = h[t]
        it = idx[t]
        lt = lanes[t]
        bt = 0
        lo, hi = next_block(blocks, rpb, n)
        while lo < hi:
            bt += _sample_block(
                logits,
                temperature,
                top_k,
                top_p,
                min_p,
                key,
                counter,
                wt,
                ht,
                it,
                lt,
                res_tok,
                res_lp,
                res_mlp,
                lo,
                hi,
            )
            lo, hi = next_block(blocks, rpb, n)
        bad += bt
    return bad


@njit(**NJIT)
def sample_tokens(
    logits,
    temperature,
    top_k,
    top_p,
    min_p,
    key,
    counter,
    tokens_out,
    log_probs_out,
    model_log_probs_out,
    num_threads,
):
    if not shapes_ok(logits, tokens_out, log_probs_out, model_log_probs_out):
        return BAD_SHAPES
    if spans_overlap(
        (span(tokens_out), span(log_probs_out), span(model_log_probs_out), span(logits)), 3
    ):
        return OVERLAPPING_ARRAYS
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
    idx = np.empty((nt, v if 0 < top_k <= DIRECT_K else 1), dtype=np.int64)
    lanes = np.empty((nt, LANES))
    res_tok = np.empty(n, dtype=np.int64)
    res_lp = np.empty(n)
    res_mlp = np.empty(n)
    if nt > 1:
        bad = _sample_par(
            logits,
            temperature,
            top_k,
            top_p,
            min_p,
            key,
            counter,
            w,
            h,
            idx,
            lanes,
            res_tok,
            res_lp,
            res_mlp,
            nt,
        )
    else:
        bad = _sample_block(
            logits,
            temperature,
            top_k,
            top_p,
            min_p,
            key,
            counter,
            w[0],
            h[0],
            idx[0],
            lanes[0],
            res_tok,
            res_lp,
            res_mlp,
            0,
            n,
        )
    if bad:
        return BAD_LOGITS
    for i in range(n):
        tokens_out[i] = res_tok[i]
        log_probs_out[i] = res_lp[i]
        model_log_probs_out[i] = res_mlp[i]
    return 0
