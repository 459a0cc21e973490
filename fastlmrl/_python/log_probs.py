"""Reference kernels over logits (plain Python): log-sum-exp, log-softmax, token log-probs, entropy,
d log pi(a) / d logits.  This file defines the exact arithmetic every backend reproduces.

Row statistics of one row ``x[0:V]`` (``CHUNK`` = 512 entries per chunk, ``LANES`` = 8)::

    m = -inf, s[0..7] = 0
    for each chunk c (entries c*512 .. min(c*512+512, V)):
        cm = max of the chunk ignoring NaN (NaN when all are NaN)
        if cm > m:  (if m > -inf: s[l] *= EXP(m - cm) for every lane)  m = cm
        mc[c] = m                              # the running max the chunk is exponentiated with
        if m == -inf: e_j = 0 for the chunk (a NaN there makes the row invalid); next chunk
        e_j = EXP(x_j - m);  s[j % 8] += e_j   (entries in order)
    S = ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7));  lse = m + log(S)
    p_j = e_j * g_c  with  g_c = EXP(mc[c] - m) / S        (softmax probability, c = chunk of j)

EXP is the polynomial ``fast_exp`` (relative error <= 1e-8, see fastlmrl/_numba/fast_math.py) for
float32 logits and ``math.exp`` for float64 logits.  A row is invalid when it holds NaN or +inf or
no finite entry (status 20).  Masked logits (-inf) get probability 0 and log-probability -inf.
"""
import math
import struct

__all__ = ["entropy", "log_prob_grad", "log_softmax", "logsumexp", "token_log_probs"]

CHUNK = 512
LANES = 8
BAD_LOGITS = 20
BAD_TOKENS = 21

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
_SHIFT_BITS = 0x4338000000000000
_D = struct.Struct("<d")
_Q = struct.Struct("<q")
NEG_INF = -math.inf


def fast_exp(x: float) -> float:
    """The polynomial exp of the compiled backends, bit for bit (x <= 709; 0 below -708)."""
    if x != x:
        return x
    xc = EXP_LO if x < EXP_LO else x
    t = xc * LOG2E + SHIFT
    kf = t - SHIFT
    r = (xc - kf * LN2_HI) - kf * LN2_LO
    r2 = r * r
    r4 = r2 * r2
    q0 = (1.0 + r) + r2 * (C2 + r * C3)
    q1 = (C4 + r * C5) + r2 * (C6 + r * C7)
    p = q0 + r4 * q1
    k = _Q.unpack(_D.pack(t))[0] - _SHIFT_BITS
    scale = math.ldexp(1.0, k)
    return 0.0 if x < EXP_LO else p * scale


def exp_for(is_f32: bool):
    return fast_exp if is_f32 else math.exp


def _maxnum(a, b):
    if a != a:
        return b
    if b != b:
        return a
    return a if a >= b else b


def _combine(s):
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))


def row_stats(x, exp):
    """(m, S, e, mc, ok) of the row ``x`` (a list of floats): see the module docstring."""
    n = len(x)
    m = NEG_INF
    s = [0.0] * LANES
    e = [0.0] * n
    mc = []
    for c0 in range(0, n, CHUNK):
        c1 = min(c0 + CHUNK, n)
        cm = x[c0]
        for j in range(c0 + 1, c1):
            cm = _maxnum(cm, x[j])
        if cm > m:
            if m > NEG_INF:
                alpha = exp(m - cm)
                s = [v * alpha for v in s]
            m = cm
        mc.append(m)
        if m == NEG_INF:
            for j in range(c0, c1):
                if x[j] != x[j]:
                    return m, math.nan, e, mc, False
            continue
        for j in range(c0, c1):
            v = exp(x[j] - m)
            e[j] = v
            s[j % LANES] += v
    total = _combine(s)
    ok = NEG_INF < m < math.inf and total == total
    return m, total, e, mc, ok


def probs(e, mc, m, total, exp):
    """p_j = e_j * g_c, g_c = EXP(mc[c] - m) / S."""
    p = list(e)
    for c, mcv in enumerate(mc):
        g = exp(mcv - m) / total
        for j in range(c * CHUNK, min(c * CHUNK + CHUNK, len(e))):
            p[j] = e[j] * g
    return p


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
        m, total, _, _, ok = row_stats(x, exp)
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
        m, total, _, _, ok = row_stats(x, exp)
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
        m, total, _, _, ok = row_stats(x, exp)
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
        m, total, e, mc, ok = row_stats(x, exp)
        if not ok:
            return BAD_LOGITS
        lse = m + math.log(total)
        res.append(row_entropy(x, probs(e, mc, m, total, exp), lse))
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
        m, total, e, mc, ok = row_stats(x, exp)
        if not ok:
            return BAD_LOGITS
        res.append(grad_row(probs(e, mc, m, total, exp), a, 1.0))
    for i, r in enumerate(res):
        out[i] = r
    return 0
