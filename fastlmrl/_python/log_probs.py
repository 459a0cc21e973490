"""Reference kernels over logits (plain Python): log-sum-exp, log-softmax, token log-probs, entropy,
d log pi(a) / d logits.  This file defines the exact arithmetic every backend reproduces.

Row statistics of one row ``x[0:V]`` (``LANES`` = 8)::

    m = max_j x_j  (NaN entries ignored)
    if m is not finite (+inf, or no finite entry): the row is invalid
    e_j = EXP(x_j - m);  s[j % 8] += e_j   (float64 sums, entries in order; a NaN entry makes S
                                             NaN: invalid)
    S = ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7));  lse = m + log(S)
    p_j = e_j * g  with  g = 1 / S          (softmax probability)

(The compiled backends store the ``e_j`` in a row buffer of the logits' dtype, add them in vector
registers lane by lane, and reuse them for the gradient; none of this changes the arithmetic.)
EXP is, for float32 logits, ``fast_exp32`` of the float32 difference ``x_j - m``: a polynomial
exp in float32 arithmetic, within 1 ulp of float32 of the exact exp (see
fastlmrl/_numba/fast_math.py), eight float32 lanes per 256-bit vector; for float64 logits it is
``math.exp`` of the double difference.  A row is
invalid when it holds NaN or +inf or no finite entry (status BAD_LOGITS).  Masked logits (-inf) get
probability 0 and log-probability -inf.
"""

import math
import struct

# status codes: fastlmrl._status.Status (the contract: fastlmrl.log_probs.CONTRACT)
from .._status import (
    BAD_LOGITS,
    BAD_SHAPES,
    BAD_TOKENS,
    OVERLAPPING_ARRAYS,
)
from ._common import written_overlaps

__all__ = ["entropy", "log_prob_grad", "log_softmax", "logsumexp", "token_log_probs"]


LANES = 8

_D = struct.Struct("<d")
_Q = struct.Struct("<q")
_F = struct.Struct("<f")
NEG_INF = -math.inf
_F32_OVERFLOW = 3.4028235677973366e38  # (2 - 2**-24) * 2**127: halfway to 2**128, rounds to inf

# fast_exp32: the same constants as fastlmrl/_numba/fast_math.py, as the float32 values they are
LOG2E_32 = 1.4426950216293335  # float32(log2 e)
SHIFT_32 = 12582912.0  # 1.5 * 2**23
NEG_LN2_HI_32 = -0.6931471824645996  # float32(-ln 2)
NEG_LN2_LO_32 = 1.9046542121259336e-09  # float32(-(ln 2 - LN2_HI))
EXP_LO_32 = -87.0
C2_32 = 0.5
C3_32 = 0.1666666716337204
C4_32 = 0.0416666679084301
C5_32 = 0.008333333767950535
C6_32 = 0.0013888889225199819
C7_32 = 0.00019841270113829523


def _two_sum(a: float, b: float):
    """(s, t) with s = fl(a + b) and s + t = a + b exactly (Knuth's TwoSum)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def round32(hi: float, lo: float = 0.0) -> float:
    """The float32 nearest to the exact hi + lo (ties to even), as a Python float.

    hi = fl(hi + lo) (a TwoSum pair).  Rounding hi to odd in the direction of lo first (a double has
    29 more bits than a float32) makes the single rounding to float32 correct: no double rounding.
    """
    if hi != hi or abs(hi) >= _F32_OVERFLOW:  # NaN, or beyond float32's range: inf
        return hi if hi != hi else math.copysign(math.inf, hi)
    if lo != 0.0 and not _Q.unpack(_D.pack(hi))[0] & 1:
        hi = math.nextafter(hi, math.inf if lo > 0.0 else -math.inf)
    return _F.unpack(_F.pack(hi))[0]


def fma32(a: float, b: float, c: float) -> float:
    """float32 fusedMultiplyAdd of float32 values: a * b + c rounded once to float32, exactly
    (a * b is exact in double, the sum is a TwoSum pair, then ``round32``)."""
    return round32(*_two_sum(a * b, c))


def sub32(a: float, b: float) -> float:
    """a - b of float32 values, rounded to float32 (IEEE single subtraction)."""
    s = a - b
    if not -math.inf < s < math.inf:  # an infinite or NaN operand, or an inf difference
        return round32(s)
    return round32(*_two_sum(a, -b))


def fast_exp32(d: float) -> float:
    """The float32 polynomial exp of the compiled backends, bit for bit (d a float32 <= 88; 0 below
    -87): every operation a float32 one (``fma32``; t - SHIFT, the product by 2**k are exact)."""
    if d != d:
        return d
    dc = EXP_LO_32 if d < EXP_LO_32 else d
    t = fma32(dc, LOG2E_32, SHIFT_32)
    kf = t - SHIFT_32
    r = fma32(kf, NEG_LN2_HI_32, dc)
    r = fma32(kf, NEG_LN2_LO_32, r)
    p = fma32(C7_32, r, C6_32)
    p = fma32(p, r, C5_32)
    p = fma32(p, r, C4_32)
    p = fma32(p, r, C3_32)
    p = fma32(p, r, C2_32)
    p = fma32(p, r, 1.0)
    p = fma32(p, r, 1.0)
    return 0.0 if d < EXP_LO_32 else p * math.ldexp(1.0, int(kf))


def _row_exp32(x: float, m: float) -> float:
    return fast_exp32(sub32(x, m))


def exp_for(is_f32: bool):
    """EXP(x, m) = exp(x - m) of a row entry x and the row max m: ``fast_exp32`` of the float32
    difference for float32 logits, ``math.exp`` of the double difference for float64 ones."""
    return _row_exp32 if is_f32 else _row_exp64


def _row_exp64(x: float, m: float) -> float:
    return math.exp(x - m)


def _combine(s):
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))


def row_stats(x, exp):
    """(m, S, e, ok) of the row ``x`` (a list of floats): see the module docstring."""
    n = len(x)
    finite_or_inf = [v for v in x if v == v]
    m = max(finite_or_inf) if finite_or_inf else math.nan
    if not NEG_INF < m < math.inf:
        return m, math.nan, [], False
    s = [0.0] * LANES
    e = [0.0] * n
    for j in range(n):
        v = exp(x[j], m)
        e[j] = v
        s[j % LANES] += v
    total = _combine(s)
    return m, total, e, total == total


def probs(e, total):
    """p_j = e_j * g, g = 1 / S."""
    g = 1.0 / total
    return [v * g for v in e]


def row_entropy(x, p, lse):
    """H = -sum_j p_j (x_j - lse), terms with p_j = 0 omitted, in LANES partial sums."""
    t = [0.0] * LANES
    for j in range(len(x)):
        pj = p[j]
        t[j % LANES] += pj * (x[j] - lse) if pj > 0.0 else 0.0
    return -_combine(t)


def _rows(logits):
    return logits.tolist(), logits.dtype.itemsize == 4


def _same_memory(a, b):
    """Are a and b exactly the same memory (same first byte, same size)?"""
    return (
        a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.nbytes == b.nbytes
    )


def overlapping(written, read, in_place=None):
    """Does an array a kernel writes (``written``, a list) share memory with another argument
    (``written`` or ``read``)?  By address range, as the compiled kernels (O(1), status 8).
    ``in_place``: (out, logits) where ``out`` may be exactly ``logits`` (written over them row by
    row); only a partial overlap of that pair is refused."""
    arrays = list(written) + list(read)
    for i, w in enumerate(written):
        for j in range(i + 1, len(arrays)):
            o = arrays[j]
            if (
                in_place is not None
                and w is in_place[0]
                and o is in_place[1]
                and _same_memory(w, o)
            ):
                continue
            if written_overlaps(w, o):
                return True
    return False


def shapes_ok(logits, tokens, out, per_row):
    """The shape check every kernel does first: ``tokens`` (None for the kernels without) (N,),
    ``out`` (N,) for a per-row result (``per_row``) or (N, V) like ``logits``."""
    n = logits.shape[0]
    if tokens is not None and tokens.shape != (n,):
        return False
    return out.shape == ((n,) if per_row else logits.shape)


def logsumexp(logits, out, num_threads):
    if not shapes_ok(logits, None, out, True):
        return BAD_SHAPES
    if overlapping([out], [logits]):
        return OVERLAPPING_ARRAYS
    rows, f32 = _rows(logits)
    exp = exp_for(f32)
    res = []
    for x in rows:
        m, total, _, ok = row_stats(x, exp)
        if not ok:
            return BAD_LOGITS
        res.append(m + math.log(total))
    for i, v in enumerate(res):
        out[i] = v
    return 0


def log_softmax(logits, out, num_threads):
    if not shapes_ok(logits, None, out, False):
        return BAD_SHAPES
    if overlapping([out], [logits], (out, logits)):
        return OVERLAPPING_ARRAYS  # out == logits exactly is allowed (in place)
    rows, f32 = _rows(logits)
    exp = exp_for(f32)
    res = []
    for x in rows:
        m, total, _, ok = row_stats(x, exp)
        if not ok:
            return BAD_LOGITS
        lse = m + math.log(total)
        res.append([v - lse for v in x])
    for i, r in enumerate(res):
        out[i] = r
    return 0


def token_log_probs(logits, tokens, out, num_threads):
    if not shapes_ok(logits, tokens, out, True):
        return BAD_SHAPES
    if overlapping([out], [logits, tokens]):
        return OVERLAPPING_ARRAYS
    a_ = tokens.tolist()
    n_vocab = logits.shape[1]
    for a in a_:
        if a < 0 or a >= n_vocab:
            return BAD_TOKENS
    rows, f32 = _rows(logits)
    exp = exp_for(f32)
    res = []
    for x, a in zip(rows, a_):
        m, total, _, ok = row_stats(x, exp)
        if not ok:
            return BAD_LOGITS
        res.append(x[a] - (m + math.log(total)))
    for i, v in enumerate(res):
        out[i] = v
    return 0


def entropy(logits, out, num_threads):
    if not shapes_ok(logits, None, out, True):
        return BAD_SHAPES
    if overlapping([out], [logits]):
        return OVERLAPPING_ARRAYS
    rows, f32 = _rows(logits)
    exp = exp_for(f32)
    res = []
    for x in rows:
        m, total, e, ok = row_stats(x, exp)
        if not ok:
            return BAD_LOGITS
        lse = m + math.log(total)
        res.append(row_entropy(x, probs(e, total), lse))
    for i, v in enumerate(res):
        out[i] = v
    return 0


def grad_row(p, a, c):
    """c * (onehot(a) - p): entries -c*p_j, then entry a = c * (1 - p_a)."""
    nc = -c
    g = [nc * v for v in p]
    g[a] = c * (1.0 - p[a])
    return g


def log_prob_grad(logits, tokens, out, num_threads):
    if not shapes_ok(logits, tokens, out, False):
        return BAD_SHAPES
    if overlapping([out], [logits, tokens], (out, logits)):
        return OVERLAPPING_ARRAYS  # out == logits exactly is allowed (in place); nothing else
    a_ = tokens.tolist()
    n_vocab = logits.shape[1]
    for a in a_:
        if a < 0 or a >= n_vocab:
            return BAD_TOKENS
    rows, f32 = _rows(logits)
    exp = exp_for(f32)
    res = []
    for x, a in zip(rows, a_):
        m, total, e, ok = row_stats(x, exp)
        if not ok:
            return BAD_LOGITS
        res.append(grad_row(probs(e, total), a, 1.0))
    for i, r in enumerate(res):
        out[i] = r
    return 0
