# cython: language_level=3
# Per-token policy-gradient terms shared by the Cython loss kernels (policy_losses.pyx over
# logits rows, tabular_losses.pyx over a logits table): the loss of one token given its log-prob
# and d loss / d log pi.  Same arithmetic as ``token_terms`` in fastlmrl/_python/policy_losses.py.
from libc.math cimport exp

from fastlmrl._cython._common cimport real_t

cdef enum:
    REINFORCE = 0
    PPO = 1
    KL = 2

cdef struct Params:
    double clip_low
    double clip_high
    double dual_clip
    double kl_coef
    int estimator
    int has_ref

cdef struct Terms:
    double loss
    double dloss
    double ratio
    double pg
    double kl
    double clipped
    double dual


cdef inline double at(const real_t* x, Py_ssize_t i) noexcept nogil:
    """x[i] as a double; a NULL array reads as zeros."""
    if x == NULL:
        return 0.0
    return x[i]


cdef inline void kl_term(double logp, double ref, int estimator, double* d_out,
                         double* dd_out) noexcept nogil:
    cdef double d, u, eu
    if estimator == 1:
        d_out[0] = logp - ref
        dd_out[0] = 1.0
    elif estimator == 2:
        d = logp - ref
        d_out[0] = 0.5 * d * d
        dd_out[0] = d
    else:
        u = ref - logp
        eu = exp(u)
        d_out[0] = (eu - 1.0) - u
        dd_out[0] = 1.0 - eu


cdef inline Terms token_terms(int mode, double logp, double x1, double x2, double x3, double lr,
                              Params p) noexcept nogil:
    cdef Terms t
    cdef double adv, kl = 0.0, dkl = 0.0, rho, lo, hi, rc, un, cl, d, l3
    t.clipped = 0.0
    t.dual = 0.0
    if mode == REINFORCE:
        adv = x1 - x2
        t.pg = -adv * logp
        t.loss = t.pg
        t.dloss = -adv
        t.ratio = 1.0
        t.kl = 0.0
        return t
    if p.has_ref:
        kl_term(logp, x3, p.estimator, &kl, &dkl)
    if mode == KL:
        t.loss = kl
        t.dloss = dkl
        t.ratio = 1.0
        t.pg = 0.0
        t.kl = kl
        return t
    adv = x2
    rho = exp(lr)
    lo = 1.0 - p.clip_low
    hi = 1.0 + p.clip_high
    rc = lo if rho < lo else (hi if rho > hi else rho)
    un = -adv * rho
    cl = -adv * rc
    if un >= cl:
        t.pg = un
        d = -adv * rho
    else:
        t.pg = cl
        d = 0.0
        t.clipped = 1.0
    if p.dual_clip > 0.0 and adv < 0.0:
        l3 = -p.dual_clip * adv
        if t.pg > l3:
            t.pg = l3
            d = 0.0
            t.dual = 1.0
    t.loss = t.pg + p.kl_coef * kl
    t.dloss = d + p.kl_coef * dkl
    t.ratio = rho
    t.kl = kl
    return t


cdef inline double value_terms(double v, double ret, double old, double value_clip,
                               double* dl) noexcept nogil:
    cdef double d = v - ret, lu, dv, vc, dc, lc
    cdef bint inside
    lu = d * d
    if value_clip <= 0.0:
        dl[0] = 2.0 * d
        return lu
    dv = v - old
    inside = -value_clip <= dv and dv <= value_clip
    vc = old + (-value_clip if dv < -value_clip else (value_clip if dv > value_clip else dv))
    dc = vc - ret
    lc = dc * dc
    if lu >= lc:
        dl[0] = 2.0 * d
        return lu
    dl[0] = 2.0 * dc if inside else 0.0
    return lc
