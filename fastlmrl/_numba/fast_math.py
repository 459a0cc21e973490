"""Inline helpers for the kernels over logits (``log_probs``, ``policy_losses``).

``fast_exp``: a vectorisable exp for float64 arguments ``x <= 709`` used on float32 logits::

    k = round_half_even(x * log2(e))            (shifter trick: t = x*log2e + 1.5*2**52)
    r = (x - k*ln2_hi) - k*ln2_lo               (fdlibm's split of ln 2, |r| <= ln2/2)
    exp(x) ~ 2**k * P7(r),  P7 = degree-7 Taylor polynomial of exp in Estrin's form
             ((1 + r) + r2*(1/2 + r/6)) + r4*((1/24 + r/120) + r2*(1/720 + r/5040))
    exp(x) := 0 for x < -708 (so exp(-inf) = 0: masked logits), NaN stays NaN

Relative error <= 1e-8 over [-708, 709] (Taylor remainder (ln2/2)**8 / 8! = 5.3e-9 plus rounding;
measured 7.1e-9), i.e. below 0.2 ulp of float32 before the result is rounded to float32.  Every operation is an
IEEE double add/multiply (no FMA), so the Python reference (``fastlmrl._python.log_probs``) and the
Cython twin (``fastlmrl/_cython/fast_math.pxd``) reproduce it bit for bit.

The row passes stream one row of logits in chunks of ``CHUNK`` entries (online max and sum, see
:func:`row_stats`): the chunk max, a rescale of the partial sums when the max grows, then
``e_j = exp(x_j - m)`` into a per-thread float64 row buffer (a map that LLVM vectorises; the
gradient pass reuses it instead of a second exp) which is summed into ``LANES`` independent partial
sums (lane ``j % LANES`` for entry ``j``), combined at the end as
``((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7))``.  The same order is used by every backend.
"""
import math

import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import types
from numba.extending import intrinsic

from ._common import NJIT, maxnum

CHUNK = 512
LANES = 8

LOG2E = 1.4426950408889634
SHIFT = 6755399441055744.0  # 1.5 * 2**52
LN2_HI = 6.93147180369123816490e-01
LN2_LO = 1.90821492927058770002e-10
EXP_LO = -708.0
C2 = 1.0 / 2.0
C3 = 1.0 / 6.0
C4 = 1.0 / 24.0
C5 = 1.0 / 120.0
C6 = 1.0 / 720.0
C7 = 1.0 / 5040.0
_SHIFT_BITS = np.int64(0x4338000000000000)
_BIAS = np.int64(1023)
_FIFTY_TWO = np.int64(52)

INLINE = dict(NJIT, inline="always")


@intrinsic
def f64_as_i64(typingctx, x):
    """Reinterpret the bits of a float64 as an int64."""
    if x != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def i64_as_f64(typingctx, x):
    """Reinterpret the bits of an int64 as a float64."""
    if x != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@njit(**INLINE)
def fast_exp(x):
    """exp(x) for a float64 x <= 709 with relative error <= 1e-8 (see the module docstring)."""
    xc = EXP_LO if x < EXP_LO else x
    t = xc * LOG2E + SHIFT
    kf = t - SHIFT
    r = (xc - kf * LN2_HI) - kf * LN2_LO
    r2 = r * r
    r4 = r2 * r2
    q0 = (1.0 + r) + r2 * (C2 + r * C3)
    q1 = (C4 + r * C5) + r2 * (C6 + r * C7)
    p = q0 + r4 * q1
    scale = i64_as_f64((f64_as_i64(t) - _SHIFT_BITS + _BIAS) << _FIFTY_TWO)
    return 0.0 if x < EXP_LO else p * scale


@njit(**INLINE)
def exp_for(sample, x):
    """The exp used for logits of ``sample``'s dtype: fast_exp for float32, math.exp for float64."""
    if sample.itemsize == 4:
        return fast_exp(x)
    return math.exp(x)


@njit(**NJIT)
def seg_max(seg):
    m = seg[0]
    for j in range(seg.shape[0]):
        m = maxnum(m, seg[j])
    return np.float64(m)


@njit(**NJIT)
def seg_has_nan(seg):
    for j in range(seg.shape[0]):
        if seg[j] != seg[j]:
            return True
    return False


@njit(**NJIT)
def seg_exp(seg, m, dst):
    """dst[j] = EXP(seg[j] - m)."""
    if seg.itemsize == 4:
        for j in range(seg.shape[0]):
            dst[j] = fast_exp(np.float64(seg[j]) - m)
    else:
        for j in range(seg.shape[0]):
            dst[j] = math.exp(np.float64(seg[j]) - m)


@njit(**INLINE)
def combine(s0, s1, s2, s3, s4, s5, s6, s7):
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@njit(**NJIT)
def row_stats(row, e, mc):
    """(m, S, ok) of one row; e[j] = EXP(row[j] - mc[chunk]) and mc[chunk] (running max) stored.

    ``ok`` is False when the row holds NaN or +inf or has no finite entry.  lse = m + log(S);
    softmax p_j = e_j * EXP(mc[c] - m) / S.  Order of operations: fastlmrl/_python/log_probs.py.
    """
    n = row.shape[0]
    m = -np.inf
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    c = 0
    for c0 in range(0, n, CHUNK):
        seg = row[c0:c0 + CHUNK]
        k = seg.shape[0]
        dst = e[c0:c0 + k]
        cm = seg_max(seg)
        if cm > m:
            if m > -np.inf:
                alpha = exp_for(row, m - cm)
                s0 *= alpha
                s1 *= alpha
                s2 *= alpha
                s3 *= alpha
                s4 *= alpha
                s5 *= alpha
                s6 *= alpha
                s7 *= alpha
            m = cm
        mc[c] = m
        c += 1
        if m == -np.inf:  # everything so far is -inf (masked) or NaN: no contribution
            if seg_has_nan(seg):
                return m, np.nan, False
            for j in range(k):
                dst[j] = 0.0
            continue
        seg_exp(seg, m, dst)
        k8 = k - k % LANES
        for j in range(0, k8, LANES):
            s0 += dst[j]
            s1 += dst[j + 1]
            s2 += dst[j + 2]
            s3 += dst[j + 3]
            s4 += dst[j + 4]
            s5 += dst[j + 5]
            s6 += dst[j + 6]
            s7 += dst[j + 7]
        rem = k - k8
        if rem > 0:
            s0 += dst[k8]
        if rem > 1:
            s1 += dst[k8 + 1]
        if rem > 2:
            s2 += dst[k8 + 2]
        if rem > 3:
            s3 += dst[k8 + 3]
        if rem > 4:
            s4 += dst[k8 + 4]
        if rem > 5:
            s5 += dst[k8 + 5]
        if rem > 6:
            s6 += dst[k8 + 6]
    s = combine(s0, s1, s2, s3, s4, s5, s6, s7)
    ok = m < np.inf and m > -np.inf and s == s
    return m, s, ok


@njit(**NJIT)
def chunk_scale(row, mc, c, m, s):
    """g_c = EXP(mc[c] - m) / S: softmax p_j = e_j * g_c for the entries of chunk c."""
    return exp_for(row, mc[c] - m) / s


@njit(**NJIT)
def prob_at(row, e, mc, m, s, j):
    return e[j] * chunk_scale(row, mc, j // CHUNK, m, s)


@njit(**NJIT)
def seg_scaled(src, f, dst):
    """dst[j] = f * src[j] (rounded to dst's dtype)."""
    for j in range(src.shape[0]):
        dst[j] = f * src[j]


@njit(**NJIT)
def seg_scaled2(src, g, f, dst):
    """dst[j] = f * (src[j] * g) (rounded to dst's dtype)."""
    for j in range(src.shape[0]):
        dst[j] = f * (src[j] * g)


@njit(**NJIT)
def grad_fill(row, e, mc, m, s, a, c, out):
    """out = c * (onehot(a) - p): out[j] = (-c) * p_j, then out[a] = c * (1 - p_a)."""
    n = row.shape[0]
    nc = -c
    ci = 0
    for c0 in range(0, n, CHUNK):
        g = chunk_scale(row, mc, ci, m, s)
        ci += 1
        seg_scaled2(e[c0:c0 + CHUNK], g, nc, out[c0:c0 + CHUNK])
    out[a] = c * (1.0 - prob_at(row, e, mc, m, s, a))


@njit(**NJIT)
def row_entropy(row, e, mc, m, s, lse):
    """H = -sum_j p_j (x_j - lse), terms with p_j = 0 omitted (lane j % 8)."""
    n = row.shape[0]
    t0 = t1 = t2 = t3 = t4 = t5 = t6 = t7 = 0.0
    ci = 0
    for c0 in range(0, n, CHUNK):
        g = chunk_scale(row, mc, ci, m, s)
        ci += 1
        seg = row[c0:c0 + CHUNK]
        k = seg.shape[0]
        src = e[c0:c0 + k]
        k8 = k - k % LANES
        for j in range(0, k8, LANES):
            t0 += _plogp(src[j] * g, seg[j], lse)
            t1 += _plogp(src[j + 1] * g, seg[j + 1], lse)
            t2 += _plogp(src[j + 2] * g, seg[j + 2], lse)
            t3 += _plogp(src[j + 3] * g, seg[j + 3], lse)
            t4 += _plogp(src[j + 4] * g, seg[j + 4], lse)
            t5 += _plogp(src[j + 5] * g, seg[j + 5], lse)
            t6 += _plogp(src[j + 6] * g, seg[j + 6], lse)
            t7 += _plogp(src[j + 7] * g, seg[j + 7], lse)
        rem = k - k8
        if rem > 0:
            t0 += _plogp(src[k8] * g, seg[k8], lse)
        if rem > 1:
            t1 += _plogp(src[k8 + 1] * g, seg[k8 + 1], lse)
        if rem > 2:
            t2 += _plogp(src[k8 + 2] * g, seg[k8 + 2], lse)
        if rem > 3:
            t3 += _plogp(src[k8 + 3] * g, seg[k8 + 3], lse)
        if rem > 4:
            t4 += _plogp(src[k8 + 4] * g, seg[k8 + 4], lse)
        if rem > 5:
            t5 += _plogp(src[k8 + 5] * g, seg[k8 + 5], lse)
        if rem > 6:
            t6 += _plogp(src[k8 + 6] * g, seg[k8 + 6], lse)
    return -combine(t0, t1, t2, t3, t4, t5, t6, t7)


@njit(**INLINE)
def _plogp(p, x, lse):
    return p * (np.float64(x) - lse) if p > 0.0 else 0.0
