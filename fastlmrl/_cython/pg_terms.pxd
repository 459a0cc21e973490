# cython: language_level=3, boundscheck=False, wraparound=False
# Per-token policy-gradient terms shared by the Cython loss kernels (policy_losses.pyx over
# logits rows, tabular_losses.pyx over a logits table): the loss of one token given its log-prob
# and d loss / d log pi.  Same arithmetic as ``token_terms`` in fastlmrl/_python/policy_losses.py.
from libc.math cimport exp, isfinite
from libc.stdint cimport int64_t

from fastlmrl._cython._common cimport real_t, not_all_finite

cdef enum:
    REINFORCE = 0
    PPO = 1
    KL = 2

# Status codes: fastlmrl._status.Status (status.pxd, generated).  tabular_losses.pyx cimports
# BAD_ADVANTAGES from here.
from fastlmrl._cython cimport status as st
from fastlmrl._cython.status cimport BAD_ADVANTAGES


cdef inline Py_ssize_t present(Py_ssize_t length, Py_ssize_t n) noexcept nogil:
    """The length an optional per-token array is checked at: empty (absent) passes as n."""
    return length if length else n


cdef inline bint lengths_ok(Py_ssize_t n, const Py_ssize_t* lengths, int count) noexcept nogil:
    """Every per-token array (``lengths[0:count]``: their lengths) is n long."""
    cdef int k
    for k in range(count):
        if lengths[k] != n:
            return False
    return True


cdef inline bint bad_weights(const real_t[::1] weights) noexcept nogil:
    cdef Py_ssize_t i
    cdef double w
    for i in range(weights.shape[0]):
        w = weights[i]
        if not (isfinite(w) and w >= 0.0):
            return True
    return False


cdef inline bint bad_offsets(const int64_t[::1] offsets, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t k, s = offsets.shape[0]
    if s < 1 or offsets[0] != 0 or offsets[s - 1] != n:
        return True
    for k in range(s - 1):
        if offsets[k + 1] < offsets[k]:
            return True
    return False


cdef inline void sequence_log_ratios(const double* logp, const real_t* old,
                                     const real_t[::1] weights, const int64_t* offsets,
                                     Py_ssize_t n_offsets, double* out) noexcept nogil:
    """out[i] = the mean of logp - old over the tokens of i's sequence with non-zero weight
    (GSPO); ``out`` may be ``logp`` itself."""
    cdef Py_ssize_t k, i
    cdef int count
    cdef double total, mean
    for k in range(n_offsets - 1):
        total = 0.0
        count = 0
        for i in range(offsets[k], offsets[k + 1]):
            if weights[i] != 0.0:
                total += logp[i] - <double>old[i]
                count += 1
        mean = total / count if count > 0 else 0.0
        for i in range(offsets[k], offsets[k + 1]):
            out[i] = mean

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


cdef inline int ppo_arguments(const real_t[::1] old_log_probs, const real_t[::1] advantages,
                              const real_t[::1] ref_log_probs,
                              const int64_t[::1] sequence_offsets, Py_ssize_t n,
                              int sequence_level, double clip_low, double clip_high,
                              double dual_clip, double kl_coef, int kl_estimator,
                              Params* p) noexcept nogil:
    """The PPO-specific checks (0 or the status of the first bad argument) and ``*p``; shared by
    the logits and the tabular PPO losses."""
    if not_all_finite(advantages):
        return st.BAD_ADVANTAGES
    if not_all_finite(old_log_probs):
        return st.BAD_OLD_LOG_PROBS
    if not_all_finite(ref_log_probs):
        return st.BAD_REF_LOG_PROBS
    if sequence_level and bad_offsets(sequence_offsets, n):
        return st.BAD_SEQUENCE_OFFSETS
    p.clip_low = clip_low
    p.clip_high = clip_high
    p.dual_clip = dual_clip
    p.kl_coef = kl_coef
    p.estimator = kl_estimator
    p.has_ref = 1 if ref_log_probs.shape[0] > 0 else 0
    return 0
