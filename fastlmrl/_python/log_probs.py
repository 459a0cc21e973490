"""Reference kernels over logits (plain Python): log-sum-exp, log-softmax, token log-probs, entropy,
d log pi(a) / d logits.  This file defines the exact arithmetic every backend reproduces.

Row statistics of one row ``x[0:V]`` (``LANES`` = 8)::

    m = max_j x_j  (NaN entries ignored)
    if m is not finite (+inf, or no finite entry): the row is invalid
    e_j = EXP(x_j - m);  s[j % 8] += e_j   (entries in order; a NaN entry makes S NaN: invalid)
    S = ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7));  lse = m + log(S)
    p_j = e_j * g  with  g = 1 / S          (softmax probability)

(The compiled backends store the ``e_j`` in a float64 row buffer, add them in vector registers lane
by lane, and reuse them for the gradient; none of this changes the arithmetic.)  EXP is the
polynomial ``fast_exp`` (relative error <= 1e-8, see fastlmrl/_numba/fast_math.py) for float32
logits and ``math.exp`` for float64 logits.  A row is
invalid when it holds NaN or +inf or no finite entry (status 20).  Masked logits (-inf) get
probability 0 and log-probability -inf.
"""
import math
import struct

__all__ = ["entropy", "log_prob_grad", "log_softmax", "logsumexp", "token_log_probs"]

LANES = 8
BAD_LOGITS = 20
BAD_TOKENS = 21

LOG2E = 1.4426950408889634
SHIFT = 6755399441055744.0  # 1.5 * 2**52
NEG_LN2 = -0.6931471805599453
EXP_LO = -708.0
C2 = 1.0 / 2.0
C3 = 1.0 / 6.0
C4 = 1.0 / 24.0
C5 = 1.0 / 120.0
C6 = 1.0 / 720.0
C7 = 1.0 / 5040.0
_SHIFT_BITS = 0x4338000000000000
_D = struct.Struct("<d")
_Q = struct.Struct("<q")
NEG_INF = -math.inf


def fma(a: float, b: float, c: float) -> float:
    """a * b + c rounded once to the nearest double (IEEE 754 fusedMultiplyAdd), exactly.

    The exact value is formed with integers (every finite double is an integer over a power of two)
    and rounded by Python's correctly rounded int / int division.
    """
    try:
        na, da = a.as_integer_ratio()
        nb, db = b.as_integer_ratio()
        nc, dc = c.as_integer_ratio()
    except (OverflowError, ValueError):  # an inf or NaN operand
        if math.isinf(c) and math.isfinite(a) and math.isfinite(b):
            return c
        return a * b + c  # the product is exact (inf/NaN) or the result is NaN
    num = na * nb
    den = da * db
    if den >= dc:
        num += nc * (den // dc)
    else:
        num = num * (dc // den) + nc
        den = dc
    if num == 0:  # exact zero: the sign rules of a * b + c (a * b is exact here)
        return a * b + c
    try:
        return num / den
    except OverflowError:
        return math.inf if num > 0 else -math.inf


def fast_exp(x: float) -> float:
    """The polynomial exp of the compiled backends, bit for bit (x <= 709; 0 below -708)."""
    if x != x:
        return x
    xc = EXP_LO if x < EXP_LO else x
    t = fma(xc, LOG2E, SHIFT)
    kf = t - SHIFT
    r = fma(kf, NEG_LN2, xc)
    p = fma(C7, r, C6)
    p = fma(p, r, C5)
    p = fma(p, r, C4)
    p = fma(p, r, C3)
    p = fma(p, r, C2)
    p = fma(p, r, 1.0)
    p = fma(p, r, 1.0)
    k = _Q.unpack(_D.pack(t))[0] - _SHIFT_BITS
    scale = math.ldexp(1.0, k)
    return 0.0 if x < EXP_LO else p * scale


def exp_for(is_f32: bool):
    return fast_exp if is_f32 else math.exp


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
        v = exp(x[j] - m)
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


def logsumexp(logits, out, num_threads):
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
