# cython: language_level=3
"""Inline helpers of the kernels over logits (Cython twin of fastlmrl/_numba/fast_math.py).

fast_exp is written in C (bit casts through memcpy) and is the same sequence of IEEE double
operations as the Numba and Python versions (the extension is built with -ffp-contract=off), so
results agree bit for bit.  Row statistics follow fastlmrl/_python/log_probs.py exactly.
"""
from libc.math cimport INFINITY, NAN, exp, log
from fastlmrl._cython._common cimport real_t

cdef extern from *:
    """
    #include <string.h>
    #include <stdint.h>
    static inline double fastlmrl_fast_exp(double x) {
        const double LOG2E = 1.4426950408889634, SHIFT = 6755399441055744.0;
        const double LN2_HI = 6.93147180369123816490e-01, LN2_LO = 1.90821492927058770002e-10;
        const double C2 = 1.0 / 2.0, C3 = 1.0 / 6.0, C4 = 1.0 / 24.0, C5 = 1.0 / 120.0;
        const double C6 = 1.0 / 720.0, C7 = 1.0 / 5040.0;
        double xc = x < -708.0 ? -708.0 : x;
        double t = xc * LOG2E + SHIFT;
        double kf = t - SHIFT;
        double r = (xc - kf * LN2_HI) - kf * LN2_LO;
        double r2 = r * r;
        double r4 = r2 * r2;
        double q0 = (1.0 + r) + r2 * (C2 + r * C3);
        double q1 = (C4 + r * C5) + r2 * (C6 + r * C7);
        double p = q0 + r4 * q1;
        int64_t bits;
        double scale;
        memcpy(&bits, &t, sizeof bits);
        bits = (bits - (int64_t)0x4338000000000000LL + 1023) << 52;
        memcpy(&scale, &bits, sizeof scale);
        return x < -708.0 ? 0.0 : p * scale;
    }
    """
    double fastlmrl_fast_exp(double x) noexcept nogil

DEF CHUNK = 512
DEF LANES = 8


cdef inline double fast_exp(double x) noexcept nogil:
    return fastlmrl_fast_exp(x)


cdef inline double exp_for(const real_t* sample, double x) noexcept nogil:
    """fast_exp for float32 logits, libm exp for float64 logits."""
    if real_t is float:
        return fastlmrl_fast_exp(x)
    else:
        return exp(x)


cdef inline Py_ssize_t n_chunks(Py_ssize_t n_vocab) noexcept nogil:
    return (n_vocab + CHUNK - 1) // CHUNK


cdef inline double seg_max(const real_t* seg, Py_ssize_t k) noexcept nogil:
    """max ignoring NaN (NaN when all are NaN), like LLVM's maxnum."""
    cdef real_t m = seg[0]
    cdef Py_ssize_t j
    for j in range(k):
        if seg[j] > m or m != m:
            m = seg[j]
    return m


cdef inline void seg_exp(const real_t* seg, Py_ssize_t k, double m, double* dst) noexcept nogil:
    cdef Py_ssize_t j
    if real_t is float:
        for j in range(k):
            dst[j] = fastlmrl_fast_exp(<double>seg[j] - m)
    else:
        for j in range(k):
            dst[j] = exp(<double>seg[j] - m)


cdef inline double combine(const double* s) noexcept nogil:
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))


cdef inline bint row_stats(const real_t* row, Py_ssize_t n, double* e, double* mc, double* m_out,
                           double* s_out) noexcept nogil:
    """m (running max), S (sum of e); e[j] = EXP(row[j] - mc[chunk]); False for a bad row."""
    cdef double m = -INFINITY, cm, alpha
    cdef double s[LANES]
    cdef Py_ssize_t c0, k, j, l, c = 0, k8
    cdef const real_t* seg
    cdef double* dst
    for l in range(LANES):
        s[l] = 0.0
    c0 = 0
    while c0 < n:
        k = n - c0
        if k > CHUNK:
            k = CHUNK
        seg = row + c0
        dst = e + c0
        cm = seg_max(seg, k)
        if cm > m:
            if m > -INFINITY:
                alpha = exp_for(row, m - cm)
                for l in range(LANES):
                    s[l] *= alpha
            m = cm
        mc[c] = m
        c += 1
        if m == -INFINITY:
            for j in range(k):
                if seg[j] != seg[j]:
                    m_out[0] = m
                    s_out[0] = NAN
                    return False
                dst[j] = 0.0
            c0 += k
            continue
        seg_exp(seg, k, m, dst)
        k8 = k - k % LANES
        j = 0
        while j < k8:
            s[0] += dst[j]
            s[1] += dst[j + 1]
            s[2] += dst[j + 2]
            s[3] += dst[j + 3]
            s[4] += dst[j + 4]
            s[5] += dst[j + 5]
            s[6] += dst[j + 6]
            s[7] += dst[j + 7]
            j += LANES
        for j in range(k8, k):
            s[j - k8] += dst[j]
        c0 += k
    m_out[0] = m
    s_out[0] = combine(s)
    return m < INFINITY and m > -INFINITY and s_out[0] == s_out[0]


cdef inline double chunk_scale(const real_t* row, const double* mc, Py_ssize_t c, double m,
                               double s) noexcept nogil:
    return exp_for(row, mc[c] - m) / s


cdef inline double prob_at(const real_t* row, const double* e, const double* mc, double m,
                           double s, Py_ssize_t j) noexcept nogil:
    return e[j] * chunk_scale(row, mc, j // CHUNK, m, s)


cdef inline void grad_fill(const real_t* row, Py_ssize_t n, const double* e, const double* mc,
                           double m, double s, Py_ssize_t a, double c, real_t* out) noexcept nogil:
    """out = c * (onehot(a) - p): out[j] = (-c) * p_j, then out[a] = c * (1 - p_a)."""
    cdef double nc = -c, g
    cdef Py_ssize_t c0, k, j, ci = 0
    c0 = 0
    while c0 < n:
        k = n - c0
        if k > CHUNK:
            k = CHUNK
        g = chunk_scale(row, mc, ci, m, s)
        ci += 1
        for j in range(k):
            out[c0 + j] = <real_t>(nc * (e[c0 + j] * g))
        c0 += k
    out[a] = <real_t>(c * (1.0 - prob_at(row, e, mc, m, s, a)))


cdef inline double plogp(double p, double x, double lse) noexcept nogil:
    return p * (x - lse) if p > 0.0 else 0.0


cdef inline double row_entropy(const real_t* row, Py_ssize_t n, const double* e, const double* mc,
                               double m, double s, double lse) noexcept nogil:
    """H = -sum_j p_j (x_j - lse), terms with p_j = 0 omitted (lane j % 8)."""
    cdef double t[LANES]
    cdef double g
    cdef Py_ssize_t c0, k, j, l, ci = 0, k8
    for l in range(LANES):
        t[l] = 0.0
    c0 = 0
    while c0 < n:
        k = n - c0
        if k > CHUNK:
            k = CHUNK
        g = chunk_scale(row, mc, ci, m, s)
        ci += 1
        k8 = k - k % LANES
        j = 0
        while j < k8:
            for l in range(LANES):
                t[l] += plogp(e[c0 + j + l] * g, row[c0 + j + l], lse)
            j += LANES
        for j in range(k8, k):
            t[j - k8] += plogp(e[c0 + j] * g, row[c0 + j], lse)
        c0 += k
    return -combine(t)
