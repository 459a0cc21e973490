# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython policy-gradient losses over logits (same arithmetic as fastlmrl/_python/policy_losses.py).

One fused pass per row: row statistics, log pi(a), the per-token loss and ``c_i = w_i
dl_i/dlogp_i``, then the gradient row ``c_i (onehot - p)``.  ``prange`` (dynamic schedule) over
reduction blocks of ``reduce_rows(V)`` consecutive rows (the reference defines them): each block
adds its rows' terms to N_SUMS partial sums in row order, and the batch sums add the blocks' sums in
block order, so results do not depend on the thread count.  Rows of a block are taken in pairs so
that two rows' dependency chains (log, exp, gradient) overlap; the block loop is specialised per
mode (constant ``mode``).  Sequence-level (GSPO) ratios: a statistics pass, the per-sequence means
(serial), then the fused pass.  Token-level passes (REINFORCE, PPO, KL) over short float32 rows
(V <= 128, ordinary stores) run in C with AVX-512 intrinsics when the build targets AVX-512 (``-march=native`` on
such a CPU): up to eight rows at a time in stages, the same values bit for bit (see
``fastlmrl_pl_short_rows`` below).
"""

__all__ = ["a2c_loss", "kl_penalty_loss", "ppo_loss", "reinforce_loss"]
from cython.parallel cimport prange, threadid
from libc.math cimport INFINITY, exp, log, isfinite
from libc.stdint cimport int32_t, int64_t
from libc.limits cimport INT_MAX, INT_MIN
from libc.stdlib cimport free, malloc

from fastlmrl._cython._common cimport real_t, index_t, out_of_range, not_all_finite
from fastlmrl._cython cimport status as st
from fastlmrl._cython.pg_terms cimport *
from fastlmrl._cython.overlap cimport span_1d, span_2d, written_overlap
from fastlmrl._cython.log_probs cimport in_place_span, thread_count
from fastlmrl._cython.fast_math cimport (row_stats, grad_fill, row_entropy, store_fence,
                                         n_threads, rows_per_chunk, work, use_streaming,
                                         PARALLEL_MIN_ELEMENTS)


# ---- short float32 rows in AVX-512 registers (builds that target AVX-512) ----------------------
# Token-level REINFORCE, PPO and KL passes over float32 rows of at most SHORT_ROW_MAX entries with
# ordinary stores run in C below: up to SHORT_GROUP rows at a time, in stages -- the statistics of the group (two rows
# interleaved), the log-probs (log), the ratios (exp), the token terms in row order, then the
# gradient rows -- so that the dependency chains of several rows overlap (a short row is too
# little work to hide one row's chain of max, exp, sum, log, exp, gradient).  The float32
# exponentials are kept for the gradient (their float64 conversions, exact, are the values the
# sums add and the gradient multiplies).  Every value is computed by the same IEEE operations in the same order as in
# _pg_rows / row_stats / grad_fill (fastlmrl/_python/log_probs.py defines them), so results are
# bit-identical to the generic path.
cdef extern from *:
    """
    #define FASTLMRL_PL_GROUP 8
    #define FASTLMRL_PL_SHORT_MAX 128
    #define FASTLMRL_PL_ALIAS_BYTES 4096
    #if defined(__AVX512F__) && defined(__AVX512DQ__)
    #include <immintrin.h>
    #define FASTLMRL_PL_AVX512 1
    /* the modes of pg_terms.pxd */
    #define FASTLMRL_PL_REINFORCE 0
    #define FASTLMRL_PL_PPO 1

    /* fast_exp32 (fastlmrl/_cython/fast_math.pxd) on 16 lanes: the same IEEE single operations,
       lane by lane.  The clamp of d to -87 is not needed: lanes with d < -87 are set to 0 at the
       end (as fast_exp32 does), and the others have dc = d.  A NaN lane stays NaN. */
    static inline __m512 fastlmrl_pl_exp16(__m512 d) {
        const __m512 shift = _mm512_set1_ps(12582912.0f), one = _mm512_set1_ps(1.0f);
        __mmask16 keep = _mm512_cmp_ps_mask(d, _mm512_set1_ps(-87.0f), _CMP_NLT_UQ);
        __m512 t = _mm512_fmadd_ps(d, _mm512_set1_ps(1.4426950216293335f), shift);
        __m512 kf = _mm512_sub_ps(t, shift);
        __m512 r = _mm512_fmadd_ps(kf, _mm512_set1_ps(-0.6931471824645996f), d);
        r = _mm512_fmadd_ps(kf, _mm512_set1_ps(1.9046542121259336e-09f), r);
        __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(0.00019841270113829523f), r,
                                   _mm512_set1_ps(0.0013888889225199819f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.008333333767950535f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.0416666679084301f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.1666666716337204f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
        p = _mm512_fmadd_ps(p, r, one);
        p = _mm512_fmadd_ps(p, r, one);
        /* 2**k: ((bits(t) - 0x4B400000 + 127) << 23) modulo 2**32 */
        __m512i e = _mm512_slli_epi32(
            _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(0x4B400000 - 127)), 23);
        return _mm512_maskz_mul_ps(keep, p, _mm512_castsi512_ps(e));
    }

    /* acc[l] += x[l] for the 8 low lanes, then for the 8 high lanes, in float64; the float32
       values of the lanes in `keep` are stored at ef[0:16] (their float64 conversions, the
       values added, are exact: the gradient converts them again) */
    static inline __m512d fastlmrl_pl_add16(__m512d acc, __m512 x, float* ef, __mmask16 keep) {
        __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(x));
        __m512d hi = _mm512_cvtps_pd(
            _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
        if (keep == (__mmask16)0xFFFF)
            _mm512_storeu_ps(ef, x);
        else
            _mm512_mask_storeu_ps(ef, keep, x);
        return _mm512_add_pd(_mm512_add_pd(acc, lo), hi);
    }

    /* ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7)) of the 8 lanes */
    static inline double fastlmrl_pl_combine(__m512d s) {
        __m512d t = _mm512_add_pd(s, _mm512_permute_pd(s, 0x55));
        t = _mm512_add_pd(t, _mm512_permutex_pd(t, 0x4E));
        return _mm512_cvtsd_f64(t) + _mm512_cvtsd_f64(_mm512_shuffle_f64x2(t, t, 0x0E));
    }

    /* row_stats (fast_math.pxd) of two float32 rows r0, r1 of n entries, interleaved: m, S and
       e_j = fast_exp32(x_j - m) (float32) in e0 / e1.  Lanes past the end of a row read as
       -inf (exp 0: a +0 added to a lane sum changes nothing).  The max runs over 16 lanes from
       -inf, NaN entries skipped; a row holding a NaN gets a NaN e_j, so a NaN S, and is rejected
       as in row_stats.  Returns bit 0: row 0 valid, bit 1: row 1 valid. */
    static inline int fastlmrl_pl_stats2(const float* r0, const float* r1, Py_ssize_t n,
                                         float* e0, float* e1, double* m0, double* s0,
                                         double* m1, double* s1) {
        const __m512 ninf = _mm512_set1_ps(-INFINITY);
        Py_ssize_t nf = n & ~(Py_ssize_t)15, j;
        __mmask16 tail = (__mmask16)((1u << (n & 15)) - 1u);
        __m512 a0 = ninf, a1 = ninf, b0 = ninf, b1 = ninf;
        for (j = 0; j + 32 <= nf; j += 32) {
            a0 = _mm512_max_ps(_mm512_loadu_ps(r0 + j), a0);
            b0 = _mm512_max_ps(_mm512_loadu_ps(r1 + j), b0);
            a1 = _mm512_max_ps(_mm512_loadu_ps(r0 + j + 16), a1);
            b1 = _mm512_max_ps(_mm512_loadu_ps(r1 + j + 16), b1);
        }
        if (j < nf) {
            a0 = _mm512_max_ps(_mm512_loadu_ps(r0 + j), a0);
            b0 = _mm512_max_ps(_mm512_loadu_ps(r1 + j), b0);
        }
        if (tail) {
            a1 = _mm512_max_ps(_mm512_mask_loadu_ps(ninf, tail, r0 + nf), a1);
            b1 = _mm512_max_ps(_mm512_mask_loadu_ps(ninf, tail, r1 + nf), b1);
        }
        float ma = _mm512_reduce_max_ps(_mm512_max_ps(a1, a0));
        float mb = _mm512_reduce_max_ps(_mm512_max_ps(b1, b0));
        int oka = ma > -INFINITY && ma < INFINITY, okb = mb > -INFINITY && mb < INFINITY;
        *m0 = ma;
        *m1 = mb;
        /* an invalid row runs with m = 0 (its values are not used) */
        const __m512 va = _mm512_set1_ps(oka ? ma : 0.0f), vb = _mm512_set1_ps(okb ? mb : 0.0f);
        __m512d sa = _mm512_setzero_pd(), sb = _mm512_setzero_pd();
        for (j = 0; j < nf; j += 16) {
            __m512 ea = fastlmrl_pl_exp16(_mm512_sub_ps(_mm512_loadu_ps(r0 + j), va));
            __m512 eb = fastlmrl_pl_exp16(_mm512_sub_ps(_mm512_loadu_ps(r1 + j), vb));
            sa = fastlmrl_pl_add16(sa, ea, e0 + j, (__mmask16)0xFFFF);
            sb = fastlmrl_pl_add16(sb, eb, e1 + j, (__mmask16)0xFFFF);
        }
        if (tail) {
            __m512 ea = fastlmrl_pl_exp16(
                _mm512_sub_ps(_mm512_mask_loadu_ps(ninf, tail, r0 + nf), va));
            __m512 eb = fastlmrl_pl_exp16(
                _mm512_sub_ps(_mm512_mask_loadu_ps(ninf, tail, r1 + nf), vb));
            sa = fastlmrl_pl_add16(sa, ea, e0 + nf, tail);
            sb = fastlmrl_pl_add16(sb, eb, e1 + nf, tail);
        }
        double ta = fastlmrl_pl_combine(sa), tb = fastlmrl_pl_combine(sb);
        *s0 = oka ? ta : NAN;
        *s1 = okb ? tb : NAN;
        return (oka && ta == ta) | ((okb && tb == tb) << 1);
    }

    /* out[j] = (float)(nc * (e[j] * g)) for j < n: grad_fill's values (e[j] the float32
       exponential, converted exactly) */
    static inline void fastlmrl_pl_scaled(const float* e, double g, double nc, float* out,
                                          Py_ssize_t n) {
        const __m512d gv = _mm512_set1_pd(g), cv = _mm512_set1_pd(nc);
        Py_ssize_t nf = n & ~(Py_ssize_t)7, j;
        for (j = 0; j < nf; j += 8)
            _mm256_storeu_ps(out + j, _mm512_cvtpd_ps(_mm512_mul_pd(
                cv, _mm512_mul_pd(_mm512_cvtps_pd(_mm256_loadu_ps(e + j)), gv))));
        if (j < n) {
            __mmask8 k = (__mmask8)((1u << (n - j)) - 1u);
            _mm256_mask_storeu_ps(out + j, k, _mm512_cvtpd_ps(_mm512_mul_pd(
                cv, _mm512_mul_pd(_mm512_cvtps_pd(_mm256_maskz_loadu_ps(k, e + j)), gv))));
        }
    }

    /* kl_term of pg_terms.pxd */
    static inline void fastlmrl_pl_kl(double logp, double ref, int estimator, double* k,
                                      double* dk) {
        if (estimator == 1) {
            *k = logp - ref;
            *dk = 1.0;
        } else if (estimator == 2) {
            double d = logp - ref;
            *k = 0.5 * d * d;
            *dk = d;
        } else {
            double u = ref - logp, eu = exp(u);
            *k = (eu - 1.0) - u;
            *dk = 1.0 - eu;
        }
    }

    /* _pg_rows for a token-level pass (mode REINFORCE, PPO or KL; x1..x3 as there) over
       float32 rows lo..hi-1 (v <= FASTLMRL_PL_SHORT_MAX entries, ordinary stores): the values
       of _pg_token / token_terms, FASTLMRL_PL_GROUP rows at a time in stages (see above);
       part[0:8] = the block's sums, each added in row order.  Tokens from t64 when not NULL,
       else t32; x3 read only when has_ref; e: FASTLMRL_PL_GROUP * v doubles of scratch (used
       as floats).  Returns bad-logits rows + 65536 * (any row whose token has logit -inf). */
    static int fastlmrl_pl_short_rows(
            const float* logits, Py_ssize_t ld, Py_ssize_t v, const int32_t* t32,
            const int64_t* t64, int mode, const float* x1, const float* x2, const float* x3,
            const float* weights, double clip_low, double clip_high, double dual_clip,
            double kl_coef, int estimator, int has_ref, double* token_loss, double* log_probs,
            double* ratios, float* grad, Py_ssize_t gld, double* e, Py_ssize_t lo,
            Py_ssize_t hi, double* part) {
        float* ef = (float*)e;
        double acc[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};  /* (PPO: all eight) */
        double m[FASTLMRL_PL_GROUP], s[FASTLMRL_PL_GROUP], lp[FASTLMRL_PL_GROUP];
        double rho[FASTLMRL_PL_GROUP], c[FASTLMRL_PL_GROUP];
        Py_ssize_t a[FASTLMRL_PL_GROUP];
        int ok[FASTLMRL_PL_GROUP];
        const double lo_r = 1.0 - clip_low, hi_r = 1.0 + clip_high;
        int bad_logits = 0, bad_tokens = 0, k, r, cnt;
        /* rows per group: the next group's loads stay within 4 KiB - 1 row of the stores of
           the group before, so none falsely aliases a pending gradient store (4K aliasing of
           logits and gradient rows at the same page offset, out of cache: 8 rows of 256
           entries measured 0.68x of the generic pass, 2 rows 0.89x, hence V <= 128) */
        int group = (int)(FASTLMRL_PL_ALIAS_BYTES / (2 * v * (Py_ssize_t)sizeof(float)));
        Py_ssize_t i, q;
        group = group < 2 ? 2 : (group > FASTLMRL_PL_GROUP ? FASTLMRL_PL_GROUP : group);
        for (i = lo; i < hi; i += group) {
            cnt = hi - i < group ? (int)(hi - i) : group;
            for (r = 0; r < cnt; r += 2) {
                /* an odd last row goes through as its own pair (second result unused) */
                q = r + 1 < cnt ? r + 1 : r;
                k = fastlmrl_pl_stats2(logits + (i + r) * ld, logits + (i + q) * ld, v,
                                       ef + r * v, ef + (r + 1) * v, &m[r], &s[r], &m[r + 1],
                                       &s[r + 1]);
                ok[r] = k & 1;
                ok[r + 1] = k >> 1;
            }
            for (r = 0; r < cnt; r++) {
                a[r] = t64 ? (Py_ssize_t)t64[i + r] : (Py_ssize_t)t32[i + r];
                lp[r] = ok[r] ? (double)logits[(i + r) * ld + a[r]] - (m[r] + log(s[r])) : 0.0;
            }
            if (mode == FASTLMRL_PL_PPO)
                for (r = 0; r < cnt; r++)
                    rho[r] = ok[r] ? exp(lp[r] - (double)x1[i + r]) : 0.0;
            for (r = 0; r < cnt; r++) {
                q = i + r;
                if (!ok[r]) {
                    bad_logits++;
                    continue;
                }
                if (lp[r] == -INFINITY) {
                    bad_tokens++;
                    ok[r] = 0;
                    continue;
                }
                double w = weights[q];
                if (mode != FASTLMRL_PL_PPO) {
                    /* token_terms of REINFORCE (x1 returns, x2 baselines or NULL) and KL (x3
                       the reference log-probs): only the weight and loss sums are used */
                    double loss;
                    if (mode == FASTLMRL_PL_REINFORCE) {
                        double g_adv = (double)x1[q] - (x2 ? (double)x2[q] : 0.0);
                        loss = -g_adv * lp[r];
                        c[r] = w * -g_adv;
                    } else {
                        double kl = 0.0, dkl = 0.0;
                        if (has_ref) fastlmrl_pl_kl(lp[r], (double)x3[q], estimator, &kl, &dkl);
                        loss = kl;
                        c[r] = w * dkl;
                    }
                    token_loss[q] = loss;
                    log_probs[q] = lp[r];
                    ratios[q] = 1.0;
                    acc[0] += w;
                    acc[1] += w * loss;
                    continue;
                }
                double o = x1[q], x2v = x2[q], lr = lp[r] - o;
                double kl = 0.0, dkl = 0.0, pg, d, clipped = 0.0, dual = 0.0;
                if (has_ref) fastlmrl_pl_kl(lp[r], (double)x3[q], estimator, &kl, &dkl);
                double rr = rho[r], rc = rr < lo_r ? lo_r : (rr > hi_r ? hi_r : rr);
                double un = -x2v * rr, cl = -x2v * rc;
                /* un >= cl ? (pg, d, clipped) = (un, -x2 rr, 0) : (cl, 0, 1), without a branch
                   (which side wins is as random as the advantages' signs) */
                __m128d unv = _mm_set_sd(un), keep = _mm_cmp_sd(unv, _mm_set_sd(cl), _CMP_GE_OQ);
                pg = _mm_cvtsd_f64(_mm_blendv_pd(_mm_set_sd(cl), unv, keep));
                d = _mm_cvtsd_f64(_mm_and_pd(keep, unv));
                clipped = _mm_cvtsd_f64(_mm_andnot_pd(keep, _mm_set_sd(1.0)));
                if (dual_clip > 0.0 && x2v < 0.0) {
                    double l3 = -dual_clip * x2v;
                    if (pg > l3) {
                        pg = l3;
                        d = 0.0;
                        dual = 1.0;
                    }
                }
                double loss = pg + kl_coef * kl;
                c[r] = w * (d + kl_coef * dkl);
                token_loss[q] = loss;
                log_probs[q] = lp[r];
                ratios[q] = rr;
                acc[0] += w;
                acc[1] += w * loss;
                acc[2] += w * pg;
                acc[3] += w * kl;
                acc[4] += w * clipped;
                acc[5] += w * dual;
                acc[6] += w * -lr;
                acc[7] += w * ((rr - 1.0) - lr);
            }
            for (r = 0; r < cnt; r++) {
                if (!ok[r]) continue;
                double g = 1.0 / s[r];
                float* out = grad + (i + r) * gld;
                fastlmrl_pl_scaled(ef + r * v, g, -c[r], out, v);
                out[a[r]] = (float)(c[r] * (1.0 - (double)ef[r * v + a[r]] * g));
            }
        }
        for (k = 0; k < 8; k++) part[k] = acc[k];
        return (bad_logits < 65536 ? bad_logits : 65535) + 65536 * (bad_tokens > 0);
    }
    #else
    #define FASTLMRL_PL_AVX512 0
    static int fastlmrl_pl_short_rows(
            const float* logits, Py_ssize_t ld, Py_ssize_t v, const int32_t* t32,
            const int64_t* t64, int mode, const float* x1, const float* x2, const float* x3,
            const float* weights, double clip_low, double clip_high, double dual_clip,
            double kl_coef, int estimator, int has_ref, double* token_loss, double* log_probs,
            double* ratios, float* grad, Py_ssize_t gld, double* e, Py_ssize_t lo,
            Py_ssize_t hi, double* part) { return 0; }
    #endif
    """
    bint FASTLMRL_PL_AVX512
    Py_ssize_t SHORT_GROUP "FASTLMRL_PL_GROUP"
    Py_ssize_t SHORT_ROW_MAX "FASTLMRL_PL_SHORT_MAX"
    int fastlmrl_pl_short_rows(const float* logits, Py_ssize_t ld, Py_ssize_t v,
                             const int32_t* t32, const int64_t* t64, int mode, const float* x1,
                             const float* x2, const float* x3, const float* weights,
                             double clip_low, double clip_high, double dual_clip, double kl_coef,
                             int estimator, int has_ref, double* token_loss, double* log_probs,
                             double* ratios, float* grad, Py_ssize_t gld, double* e,
                             Py_ssize_t lo, Py_ssize_t hi, double* part) noexcept nogil


cdef inline int _c_int(int64_t x) noexcept nogil:
    """An int64 option of a kernel (kl_estimator, sequence_level) as a C int: itself when it fits,
    else INT_MAX / INT_MIN (an invalid option), so a Python int up to 2**63 - 1 gives the same
    result as before instead of an OverflowError at the call."""
    if x > INT_MAX:
        return INT_MAX
    if x < INT_MIN:
        return INT_MIN
    return <int>x


# Batch sums are taken per block of reduce_rows(V) consecutive rows, then over blocks in order;
# the row passes flag a row with bad logits, or whose sampled token has logit -inf (C constants;
# the statuses are fastlmrl._status.Status, cimported as st).
cdef extern from *:
    """
    enum {
        FASTLMRL_PL_REDUCE_MAX_ROWS = 256,
        FASTLMRL_PL_N_SUMS = 8,
        FASTLMRL_PL_ROW_BAD_LOGITS = 1,
        FASTLMRL_PL_ROW_MASKED_TOKEN = 2
    };
    """
    enum:
        REDUCE_MAX_ROWS "FASTLMRL_PL_REDUCE_MAX_ROWS"
        N_SUMS "FASTLMRL_PL_N_SUMS"  # per block: sw, loss, pg, kl, clipped, dual, k1, k3
        ROW_BAD_LOGITS "FASTLMRL_PL_ROW_BAD_LOGITS"
        ROW_MASKED_TOKEN "FASTLMRL_PL_ROW_MASKED_TOKEN"

cdef inline Py_ssize_t reduce_rows(Py_ssize_t n_vocab) noexcept nogil:
    """Rows per reduction block: min(REDUCE_MAX_ROWS, 1 + 65536 // V) (see the reference)."""
    cdef Py_ssize_t r = 1 + PARALLEL_MIN_ELEMENTS // (n_vocab if n_vocab > 1 else 1)
    return r if r < REDUCE_MAX_ROWS else REDUCE_MAX_ROWS


cdef inline bint _shapes_ok(const real_t[:, ::1] logits, const Py_ssize_t* lengths, int count,
                            const real_t[:, ::1] grad, const double[::1] stats,
                            Py_ssize_t n_stats) noexcept nogil:
    """The shape check every loss kernel does first: each per-token array (``lengths[0:count]``,
    tokens included) of length N, ``grad`` (N, V) like ``logits``, ``stats`` at least ``n_stats``
    long."""
    return (lengths_ok(logits.shape[0], lengths, count) and grad.shape[0] == logits.shape[0]
            and grad.shape[1] == logits.shape[1] and stats.shape[0] >= n_stats)


cdef inline void _d1(const double[::1] x, const char** start, size_t* size, int k) noexcept nogil:
    span_1d(&x[0], x.shape[0], sizeof(double), start, size, k)


cdef inline void _r1(const real_t[::1] x, const char** start, size_t* size, int k) noexcept nogil:
    span_1d(&x[0], x.shape[0], sizeof(real_t), start, size, k)


cdef inline bint _loss_overlaps(const real_t[:, ::1] logits, const index_t[::1] tokens,
                                real_t[:, ::1] grad, bint in_place, const char** start,
                                size_t* size, int n_written, int k) noexcept nogil:
    """Complete an overlap table whose written per-token arrays and stats fill slots 0..n_written-2
    and whose per-token inputs fill slots n_written+2..k-1: ``grad`` (written) in slot
    n_written-1, ``logits`` and ``tokens`` after it; True when a written array shares memory with
    another argument.  ``in_place``: grad may be exactly logits (written over them row by row)."""
    span_2d(&grad[0, 0], grad.shape[0], grad.shape[1], sizeof(real_t), start, size, n_written - 1)
    if in_place:
        in_place_span(&grad[0, 0], &logits[0, 0], logits.shape[0], logits.shape[1],
                      sizeof(real_t), start, size, n_written)
    else:
        span_2d(&logits[0, 0], logits.shape[0], logits.shape[1], sizeof(real_t), start, size,
                n_written)
    span_1d(&tokens[0], tokens.shape[0], sizeof(index_t), start, size, n_written + 1)
    return written_overlap(n_written, k, start, size)


cdef inline int _pg_token(const real_t[:, ::1] logits, const index_t[::1] tokens, Py_ssize_t i,
                          double m, double s, int mode, const real_t* x1, const real_t* x2,
                          const real_t* x3, const real_t[::1] weights, const double* lr_in,
                          Params p, double* token_loss, double* log_probs, double* ratios,
                          real_t[:, ::1] grad, const real_t* e, bint nt,
                          double* acc) noexcept nogil:
    """Row i after its statistics (m, s; exponentials in e): log pi(a_i), the token terms, the
    gradient row, the per-token outputs; adds the row's summands to acc[0:N_SUMS].  0, or
    ROW_MASKED_TOKEN (2) when the sampled token has logit -inf (nothing written)."""
    cdef Py_ssize_t a = tokens[i], v = logits.shape[1]
    cdef double lp, lr, o, w, d, ed
    cdef Terms t
    lp = <double>logits[i, a] - (m + log(s))
    if lp == -INFINITY:
        return ROW_MASKED_TOKEN
    o = at(x1, i)
    if lr_in != NULL:
        lr = lr_in[i]
    elif mode == PPO:
        lr = lp - o
    else:
        lr = 0.0
    t = token_terms(mode, lp, o, at(x2, i), at(x3, i), lr, p)
    w = weights[i]
    grad_fill(v, e, 1.0 / s, a, w * t.dloss, &grad[i, 0], nt)
    token_loss[i] = t.loss
    log_probs[i] = lp
    ratios[i] = t.ratio
    acc[0] += w
    acc[1] += w * t.loss
    acc[2] += w * t.pg
    acc[3] += w * t.kl
    acc[4] += w * t.clipped
    acc[5] += w * t.dual
    if mode == PPO:
        d = lp - o
        # exp(d) of the token-level ratio is rho = exp(lr) itself (same argument, same bits)
        ed = t.ratio if lr_in == NULL else exp(d)
        acc[6] += w * -d
        acc[7] += w * ((ed - 1.0) - d)
    return 0


cdef inline int _pg_rows(const real_t[:, ::1] logits, const index_t[::1] tokens, int mode,
                         const real_t* x1, const real_t* x2, const real_t* x3,
                         const real_t[::1] weights, const double* lr_in, Params p,
                         double* token_loss, double* log_probs, double* ratios, double* part,
                         Py_ssize_t b, Py_ssize_t rows, real_t[:, ::1] grad, real_t* e,
                         real_t* e2, bint nt) noexcept nogil:
    """The fused pass over reduction block b; part[N_SUMS b:N_SUMS (b + 1)] = its partial sums
    (sw, loss, pg, kl, clipped, dual, k1, k3), each accumulated in row order.  Rows are taken in
    pairs (both rows' statistics into e and e2, then both rows' per-token work) so that the two
    rows' dependency chains overlap.  Returns bad-logits rows + 65536 * bad-token rows."""
    cdef Py_ssize_t i, j, k, v = logits.shape[1]
    cdef Py_ssize_t lo = b * rows
    cdef Py_ssize_t hi = lo + rows if lo + rows < logits.shape[0] else logits.shape[0]
    cdef double acc[N_SUMS]
    cdef double m0, s0, m1 = 0.0, s1 = 0.0
    cdef bint ok0, ok1
    cdef int bad_logits = 0, bad_tokens = 0
    for k in range(N_SUMS):
        acc[k] = 0.0
    i = lo
    while i < hi:
        j = i + 1
        ok0 = row_stats(&logits[i, 0], v, e, &m0, &s0)
        ok1 = False
        if j < hi:
            ok1 = row_stats(&logits[j, 0], v, e2, &m1, &s1)
            if not ok1:
                bad_logits += 1
        if ok0:
            bad_tokens += _pg_token(logits, tokens, i, m0, s0, mode, x1, x2, x3, weights, lr_in,
                                    p, token_loss, log_probs, ratios, grad, e, nt, acc) >> 1
        else:
            bad_logits += 1
        if ok1:
            bad_tokens += _pg_token(logits, tokens, j, m1, s1, mode, x1, x2, x3, weights, lr_in,
                                    p, token_loss, log_probs, ratios, grad, e2, nt, acc) >> 1
        i += 2
    for k in range(N_SUMS):
        part[N_SUMS * b + k] = acc[k]
    if nt:
        store_fence()
    return (bad_logits if bad_logits < 65536 else 65535) + 65536 * (bad_tokens > 0)


cdef int _pg_block(const real_t[:, ::1] logits, const index_t[::1] tokens, int mode,
                   const real_t* x1, const real_t* x2, const real_t* x3,
                   const real_t[::1] weights, const double* lr_in, Params p,
                   double* token_loss, double* log_probs, double* ratios, double* part,
                   Py_ssize_t b, Py_ssize_t rows, real_t[:, ::1] grad, real_t* e, real_t* e2,
                   bint nt, double* short_work) noexcept nogil:
    """_pg_rows with the mode (and whether sequence ratios are used) as constants; with
    ``short_work`` (see _short_rows) the C pass over short float32 rows."""
    cdef Py_ssize_t lo = b * rows
    cdef Py_ssize_t hi = lo + rows if lo + rows < logits.shape[0] else logits.shape[0]
    if real_t is float:
        if short_work != NULL:
            return fastlmrl_pl_short_rows(
                &logits[0, 0], logits.strides[0] // sizeof(float), logits.shape[1],
                <const int32_t*>&tokens[0] if index_t is int32_t else NULL,
                <const int64_t*>&tokens[0] if index_t is int64_t else NULL, mode, x1, x2, x3,
                &weights[0], p.clip_low, p.clip_high, p.dual_clip, p.kl_coef, p.estimator,
                p.has_ref, token_loss, log_probs, ratios, &grad[0, 0],
                grad.strides[0] // sizeof(float), short_work, lo, hi, &part[N_SUMS * b])
    if mode == PPO and lr_in == NULL:
        return _pg_rows(logits, tokens, PPO, x1, x2, x3, weights, NULL, p, token_loss,
                        log_probs, ratios, part, b, rows, grad, e, e2, nt)
    if mode == REINFORCE:
        return _pg_rows(logits, tokens, REINFORCE, x1, x2, x3, weights, NULL, p, token_loss,
                        log_probs, ratios, part, b, rows, grad, e, e2, nt)
    if mode == KL:
        return _pg_rows(logits, tokens, KL, x1, x2, x3, weights, NULL, p, token_loss,
                        log_probs, ratios, part, b, rows, grad, e, e2, nt)
    return _pg_rows(logits, tokens, mode, x1, x2, x3, weights, lr_in, p, token_loss, log_probs,
                    ratios, part, b, rows, grad, e, e2, nt)


cdef inline int _token_lp_row(const real_t[:, ::1] logits, const index_t[::1] tokens,
                              Py_ssize_t i, double* res, real_t* e) noexcept nogil:
    cdef double m, s
    cdef const real_t* row = &logits[i, 0]
    if not row_stats(row, logits.shape[1], e, &m, &s):
        return ROW_BAD_LOGITS
    res[i] = <double>row[tokens[i]] - (m + log(s))
    return 0


cdef void _reduce(int mode, const double* part, Py_ssize_t nb, double[::1] stats) noexcept nogil:
    """The batch sums: the block partial sums added serially in block order."""
    cdef double sums[N_SUMS]
    cdef double sw
    cdef Py_ssize_t b, k
    for k in range(N_SUMS):
        sums[k] = 0.0
    for b in range(nb):
        for k in range(N_SUMS):
            sums[k] += part[N_SUMS * b + k]
    sw = sums[0]
    stats[0] = sums[1]
    if mode == PPO:
        stats[1] = sums[2]
        stats[2] = sums[3]
        stats[3] = sums[4] / sw if sw > 0.0 else 0.0
        stats[4] = sums[5] / sw if sw > 0.0 else 0.0
        stats[5] = sums[6] / sw if sw > 0.0 else 0.0
        stats[6] = sums[7] / sw if sw > 0.0 else 0.0


cdef inline bint _short_rows(int mode, bint seq_level, bint stream, Py_ssize_t v,
                             const real_t* sample) noexcept nogil:
    """Does the pass take fastlmrl_pl_short_rows (token-level REINFORCE / PPO / KL over float32
    rows of at most SHORT_ROW_MAX entries with ordinary stores, AVX-512 builds)?"""
    return (real_t is float and FASTLMRL_PL_AVX512 and not seq_level and not stream
            and v <= SHORT_ROW_MAX)


cdef int _run_pg(const real_t[:, ::1] logits, const index_t[::1] tokens, int mode,
                 const real_t* x1, const real_t* x2, const real_t* x3, const real_t[::1] weights,
                 const int64_t* offsets, Py_ssize_t n_offsets, bint seq_level, Params p,
                 double* token_loss, double* log_probs, double* ratios, real_t[:, ::1] grad,
                 double[::1] stats, int num_threads) noexcept nogil:
    cdef Py_ssize_t n = logits.shape[0], v = logits.shape[1]
    cdef Py_ssize_t nt = n_threads(num_threads, logits.shape[0], logits.shape[1]), i, k, b
    cdef Py_ssize_t rows = reduce_rows(v)
    cdef Py_ssize_t nb = (n + rows - 1) // rows
    cdef int bad = 0, bad_tokens = 0, r
    cdef bint stream = use_streaming(n, v, &logits[0, 0])
    cdef bint short_rows = _short_rows(mode, seq_level, stream, v, <const real_t*>NULL)
    # per thread two row buffers (room for doubles; short rows: SHORT_GROUP float64 rows), then
    # the block partial sums, then the sequence log-ratios
    cdef Py_ssize_t per = SHORT_GROUP * v if short_rows else 2 * v
    cdef double* mem = <double*>malloc(
        sizeof(double) * (nt * per + N_SUMS * nb + (n if seq_level else 0)) + 8)
    cdef real_t* w = <real_t*>mem
    cdef double* part = mem + nt * per
    cdef double* lr = NULL
    if w == NULL:
        return st.NO_MEMORY
    # every block either writes its partial sums or the call returns an error first
    if seq_level:
        lr = part + N_SUMS * nb
        if nt > 1:
            for i in prange(n, num_threads=nt, schedule="dynamic", chunksize=rows_per_chunk(v)):
                bad += _token_lp_row(logits, tokens, i, lr, w + threadid() * v)
        else:
            for i in range(n):
                bad += _token_lp_row(logits, tokens, i, lr, w)
        if bad:
            free(w)
            return st.BAD_LOGITS
        for i in range(n):
            if lr[i] == -INFINITY:
                free(w)
                return st.BAD_TOKENS
        sequence_log_ratios(lr, x1, weights, offsets, n_offsets, lr)
    if nt > 1:
        for b in prange(nb, num_threads=nt, schedule="dynamic", chunksize=1):
            r = _pg_block(logits, tokens, mode, x1, x2, x3, weights, lr, p, token_loss,
                          log_probs, ratios, part, b, rows, grad, w + 2 * threadid() * v,
                          w + (2 * threadid() + 1) * v, stream,
                          mem + threadid() * per if short_rows else NULL)
            bad += r & 65535
            bad_tokens += r >> 16
    else:
        for b in range(nb):
            r = _pg_block(logits, tokens, mode, x1, x2, x3, weights, lr, p, token_loss,
                          log_probs, ratios, part, b, rows, grad, w, w + v, stream,
                          mem if short_rows else NULL)
            bad += r & 65535
            bad_tokens += r >> 16
    if bad or bad_tokens:
        free(w)
        return st.BAD_LOGITS if bad else st.BAD_TOKENS
    _reduce(mode, part, nb, stats)
    free(w)
    return 0


cdef int reinforce_loss_core(const real_t[:, ::1] logits, const index_t[::1] tokens,
                             const real_t[::1] returns, const real_t[::1] baselines,
                             const real_t[::1] weights, double[::1] token_loss,
                             double[::1] log_probs, real_t[:, ::1] grad, double[::1] stats,
                             int num_threads) noexcept nogil:
    cdef Params p
    cdef Py_ssize_t n = tokens.shape[0]
    cdef Py_ssize_t lengths[6]
    cdef double* ratios
    cdef int status
    cdef const char* start[9]
    cdef size_t size[9]
    lengths[:] = [n, returns.shape[0], baselines.shape[0], weights.shape[0], token_loss.shape[0],
                  log_probs.shape[0]]
    if not _shapes_ok(logits, lengths, 6, grad, stats, 1):
        return st.BAD_SHAPES
    _d1(token_loss, start, size, 0)
    _d1(log_probs, start, size, 1)
    _d1(stats, start, size, 2)
    _r1(returns, start, size, 6)
    _r1(baselines, start, size, 7)
    _r1(weights, start, size, 8)
    if _loss_overlaps(logits, tokens, grad, True, start, size, 4, 9):
        return st.OVERLAPPING_ARRAYS
    if out_of_range(tokens, logits.shape[1]):
        return st.BAD_TOKENS
    if bad_weights(weights):
        return st.BAD_WEIGHTS
    if not_all_finite(returns):
        return st.BAD_RETURNS
    if not_all_finite(baselines):
        return st.BAD_BASELINES
    p.clip_low = p.clip_high = p.dual_clip = p.kl_coef = 0.0
    p.estimator = 3
    p.has_ref = 0
    ratios = <double*>malloc(sizeof(double) * n + 8)
    if ratios == NULL:
        return st.NO_MEMORY
    status = _run_pg(logits, tokens, REINFORCE, &returns[0] if n else NULL,
                     &baselines[0] if n else NULL, <const real_t*>NULL, weights,
                     <const int64_t*>NULL, 0, False, p, &token_loss[0] if n else NULL,
                     &log_probs[0] if n else NULL, ratios, grad, stats, num_threads)
    free(ratios)
    return status


cdef int ppo_loss_core(const real_t[:, ::1] logits, const index_t[::1] tokens,
                       const real_t[::1] old_log_probs, const real_t[::1] advantages,
                       const real_t[::1] weights, const real_t[::1] ref_log_probs,
                       const int64_t[::1] sequence_offsets, double clip_low, double clip_high,
                       double dual_clip, double kl_coef, int64_t kl_estimator,
                       int64_t sequence_level, double[::1] token_loss, double[::1] log_probs,
                       double[::1] ratios, real_t[:, ::1] grad, double[::1] stats,
                       int num_threads) noexcept nogil:
    cdef Params p
    cdef int estimator = _c_int(kl_estimator), seq_level = _c_int(sequence_level)
    cdef Py_ssize_t n = tokens.shape[0]
    cdef Py_ssize_t lengths[8]
    cdef int status
    cdef const char* start[12]
    cdef size_t size[12]
    lengths[:] = [n, old_log_probs.shape[0], advantages.shape[0], weights.shape[0],
                  present(ref_log_probs.shape[0], n), token_loss.shape[0], log_probs.shape[0],
                  ratios.shape[0]]
    if not _shapes_ok(logits, lengths, 8, grad, stats, 7):
        return st.BAD_SHAPES
    _d1(token_loss, start, size, 0)
    _d1(log_probs, start, size, 1)
    _d1(ratios, start, size, 2)
    _d1(stats, start, size, 3)
    _r1(old_log_probs, start, size, 7)
    _r1(advantages, start, size, 8)
    _r1(weights, start, size, 9)
    _r1(ref_log_probs, start, size, 10)
    span_1d(&sequence_offsets[0], sequence_offsets.shape[0], sizeof(int64_t), start, size, 11)
    if _loss_overlaps(logits, tokens, grad, True, start, size, 5, 12):
        return st.OVERLAPPING_ARRAYS
    if out_of_range(tokens, logits.shape[1]):
        return st.BAD_TOKENS
    if bad_weights(weights):
        return st.BAD_WEIGHTS
    status = ppo_arguments(old_log_probs, advantages, ref_log_probs, sequence_offsets, n,
                           seq_level, clip_low, clip_high, dual_clip, kl_coef, estimator, &p)
    if status:
        return status
    return _run_pg(logits, tokens, PPO, &old_log_probs[0] if n else NULL,
                   &advantages[0] if n else NULL,
                   &ref_log_probs[0] if (n and p.has_ref) else NULL, weights, &sequence_offsets[0],
                   sequence_offsets.shape[0], seq_level != 0, p,
                   &token_loss[0] if n else NULL, &log_probs[0] if n else NULL,
                   &ratios[0] if n else NULL, grad, stats, num_threads)


cdef int kl_penalty_loss_core(const real_t[:, ::1] logits, const index_t[::1] tokens,
                              const real_t[::1] ref_log_probs, const real_t[::1] weights,
                              int64_t kl_estimator, double[::1] token_loss,
                              double[::1] log_probs, real_t[:, ::1] grad, double[::1] stats,
                              int num_threads) noexcept nogil:
    cdef Params p
    cdef Py_ssize_t n = tokens.shape[0]
    cdef Py_ssize_t lengths[5]
    cdef double* ratios
    cdef int status
    cdef const char* start[8]
    cdef size_t size[8]
    lengths[:] = [n, ref_log_probs.shape[0], weights.shape[0], token_loss.shape[0],
                  log_probs.shape[0]]
    if not _shapes_ok(logits, lengths, 5, grad, stats, 1):
        return st.BAD_SHAPES
    _d1(token_loss, start, size, 0)
    _d1(log_probs, start, size, 1)
    _d1(stats, start, size, 2)
    _r1(ref_log_probs, start, size, 6)
    _r1(weights, start, size, 7)
    if _loss_overlaps(logits, tokens, grad, True, start, size, 4, 8):
        return st.OVERLAPPING_ARRAYS
    if out_of_range(tokens, logits.shape[1]):
        return st.BAD_TOKENS
    if bad_weights(weights):
        return st.BAD_WEIGHTS
    if not_all_finite(ref_log_probs):
        return st.BAD_REF_LOG_PROBS
    p.clip_low = p.clip_high = p.dual_clip = p.kl_coef = 0.0
    p.estimator = _c_int(kl_estimator)
    p.has_ref = 1
    ratios = <double*>malloc(sizeof(double) * n + 8)
    if ratios == NULL:
        return st.NO_MEMORY
    status = _run_pg(logits, tokens, KL, <const real_t*>NULL, <const real_t*>NULL,
                     &ref_log_probs[0] if n else NULL, weights, <const int64_t*>NULL, 0, False, p,
                     &token_loss[0] if n else NULL, &log_probs[0] if n else NULL, ratios, grad,
                     stats, num_threads)
    free(ratios)
    return status


# ---- A2C ----------------------------------------------------------------------------------------

cdef inline void _a2c_grad_fill(const real_t* row, Py_ssize_t n, const real_t* e, double g,
                                double lse, double h, Py_ssize_t a, double c, double ce,
                                real_t* out) noexcept nogil:
    """out_j = (-c) p_j + ce h_j with p_j = e_j g, h_j = p_j ((x_j - lse) + H) (0 where p_j = 0);
    out_a = c (1 - p_a) + ce h_a."""
    cdef double nc = -c, pj, hj, pa, ha
    cdef Py_ssize_t j
    for j in range(n):
        pj = e[j] * g
        hj = pj * ((<double>row[j] - lse) + h) if pj > 0.0 else 0.0
        out[j] = <real_t>(nc * pj + ce * hj)
    pa = e[a] * g
    ha = pa * ((<double>row[a] - lse) + h) if pa > 0.0 else 0.0
    out[a] = <real_t>(c * (1.0 - pa) + ce * ha)


cdef inline int _a2c_row(const real_t[:, ::1] logits, const index_t[::1] tokens, Py_ssize_t i,
                         const real_t[::1] advantages, const real_t[::1] values,
                         const real_t[::1] returns, const real_t[::1] old_values,
                         const real_t[::1] weights, double value_clip, double value_coef,
                         double entropy_coef, double[::1] token_loss, double[::1] log_probs,
                         double[::1] entropies, real_t[:, ::1] grad, double[::1] value_grad,
                         real_t* e) noexcept nogil:
    """0, ROW_BAD_LOGITS (1) or ROW_MASKED_TOKEN (2: the sampled token has logit -inf)."""
    cdef Py_ssize_t a, v = logits.shape[1]
    cdef double m, s, g, lse, lp, h, old, lv, dlv, adv, pg, w
    cdef const real_t* row = &logits[i, 0]
    if not row_stats(row, v, e, &m, &s):
        return ROW_BAD_LOGITS
    a = tokens[i]
    lse = m + log(s)
    g = 1.0 / s
    lp = <double>row[a] - lse
    if lp == -INFINITY:
        return ROW_MASKED_TOKEN
    h = row_entropy(row, v, e, g, lse)
    old = <double>old_values[i] if value_clip > 0.0 else 0.0
    lv = value_terms(values[i], returns[i], old, value_clip, &dlv)
    adv = advantages[i]
    pg = -adv * lp
    w = weights[i]
    _a2c_grad_fill(row, v, e, g, lse, h, a, w * -adv, w * entropy_coef, &grad[i, 0])
    token_loss[i] = pg + value_coef * lv - entropy_coef * h
    log_probs[i] = lp
    entropies[i] = h
    value_grad[i] = (w * value_coef) * dlv
    return 0


cdef int a2c_loss_core(const real_t[:, ::1] logits, const index_t[::1] tokens,
                       const real_t[::1] advantages, const real_t[::1] values,
                       const real_t[::1] returns, const real_t[::1] old_values,
                       const real_t[::1] weights, double value_clip, double value_coef,
                       double entropy_coef, double[::1] token_loss, double[::1] log_probs,
                       double[::1] entropies, real_t[:, ::1] grad, double[::1] value_grad,
                       double[::1] stats, int num_threads) noexcept nogil:
    cdef Py_ssize_t n = logits.shape[0], v = logits.shape[1], i
    cdef Py_ssize_t nt = n_threads(num_threads, logits.shape[0], logits.shape[1])
    cdef int bad = 0, bad_tokens = 0, r
    cdef double sw = 0.0, loss = 0.0, pgs = 0.0, vls = 0.0, hs = 0.0, wi, oldv, lv, dlv
    cdef real_t* w
    cdef Py_ssize_t lengths[10]
    cdef Py_ssize_t n_old = old_values.shape[0]  # read only with value clipping
    lengths[:] = [tokens.shape[0], advantages.shape[0], values.shape[0], returns.shape[0],
                  n_old if value_clip > 0.0 else present(n_old, n), weights.shape[0],
                  token_loss.shape[0], log_probs.shape[0], entropies.shape[0],
                  value_grad.shape[0]]
    cdef const char* start[13]
    cdef size_t size[13]
    if not _shapes_ok(logits, lengths, 10, grad, stats, 4):
        return st.BAD_SHAPES
    _d1(token_loss, start, size, 0)
    _d1(log_probs, start, size, 1)
    _d1(entropies, start, size, 2)
    _d1(value_grad, start, size, 3)
    _d1(stats, start, size, 4)
    _r1(advantages, start, size, 8)
    _r1(values, start, size, 9)
    _r1(returns, start, size, 10)
    _r1(old_values, start, size, 11)
    _r1(weights, start, size, 12)
    # grad may not be logits either: the entropy gradient reads the row after writing it
    if _loss_overlaps(logits, tokens, grad, False, start, size, 6, 13):
        return st.OVERLAPPING_ARRAYS
    if out_of_range(tokens, v):
        return st.BAD_TOKENS
    if bad_weights(weights):
        return st.BAD_WEIGHTS
    if not_all_finite(advantages):
        return st.BAD_ADVANTAGES
    if not_all_finite(values):
        return st.BAD_VALUES
    if not_all_finite(returns):
        return st.BAD_RETURNS
    if value_clip > 0.0 and not_all_finite(old_values):
        return st.BAD_OLD_VALUES
    if not value_clip > 0.0:
        old_values = values
    w = <real_t*>work(nt, v)
    if w == NULL:
        return st.NO_MEMORY
    if nt > 1:
        for i in prange(n, num_threads=nt, schedule="dynamic", chunksize=rows_per_chunk(v)):
            r = _a2c_row(logits, tokens, i, advantages, values, returns, old_values, weights,
                         value_clip, value_coef, entropy_coef, token_loss, log_probs, entropies,
                         grad, value_grad, w + threadid() * v)
            bad += r & 1
            bad_tokens += r >> 1
    else:
        for i in range(n):
            r = _a2c_row(logits, tokens, i, advantages, values, returns, old_values, weights,
                         value_clip, value_coef, entropy_coef, token_loss, log_probs, entropies,
                         grad, value_grad, w)
            bad += r & 1
            bad_tokens += r >> 1
    free(w)
    if bad:
        return st.BAD_LOGITS
    if bad_tokens:
        return st.BAD_TOKENS
    for i in range(n):
        wi = weights[i]
        oldv = <double>old_values[i] if value_clip > 0.0 else 0.0
        lv = value_terms(values[i], returns[i], oldv, value_clip, &dlv)
        sw += wi
        loss += wi * token_loss[i]
        pgs += wi * (-<double>advantages[i] * log_probs[i])
        vls += wi * lv
        hs += wi * entropies[i]
    stats[0] = loss
    stats[1] = pgs
    stats[2] = vls
    stats[3] = hs / sw if sw > 0.0 else 0.0
    return 0


# ---- Python-callable kernels --------------------------------------------------------------------

def reinforce_loss(const real_t[:, ::1] logits, const index_t[::1] tokens,
                   const real_t[::1] returns, const real_t[::1] baselines,
                   const real_t[::1] weights, double[::1] token_loss, double[::1] log_probs,
                   real_t[:, ::1] grad, double[::1] stats, num_threads):
    cdef int status, threads = thread_count(num_threads)
    with nogil:
        status = reinforce_loss_core(logits, tokens, returns, baselines, weights, token_loss,
                                     log_probs, grad, stats, threads)
    return status


def ppo_loss(const real_t[:, ::1] logits, const index_t[::1] tokens,
             const real_t[::1] old_log_probs, const real_t[::1] advantages,
             const real_t[::1] weights, const real_t[::1] ref_log_probs,
             const int64_t[::1] sequence_offsets, double clip_low, double clip_high,
             double dual_clip, double kl_coef, int64_t kl_estimator, int64_t sequence_level,
             double[::1] token_loss, double[::1] log_probs, double[::1] ratios,
             real_t[:, ::1] grad, double[::1] stats, num_threads):
    cdef int status, threads = thread_count(num_threads)
    with nogil:
        status = ppo_loss_core(logits, tokens, old_log_probs, advantages, weights, ref_log_probs,
                               sequence_offsets, clip_low, clip_high, dual_clip, kl_coef,
                               kl_estimator, sequence_level, token_loss, log_probs, ratios, grad,
                               stats, threads)
    return status


def kl_penalty_loss(const real_t[:, ::1] logits, const index_t[::1] tokens,
                    const real_t[::1] ref_log_probs, const real_t[::1] weights,
                    int64_t kl_estimator,
                    double[::1] token_loss, double[::1] log_probs, real_t[:, ::1] grad,
                    double[::1] stats, num_threads):
    cdef int status, threads = thread_count(num_threads)
    with nogil:
        status = kl_penalty_loss_core(logits, tokens, ref_log_probs, weights, kl_estimator,
                                      token_loss, log_probs, grad, stats, threads)
    return status


def a2c_loss(const real_t[:, ::1] logits, const index_t[::1] tokens,
             const real_t[::1] advantages, const real_t[::1] values, const real_t[::1] returns,
             const real_t[::1] old_values, const real_t[::1] weights, double value_clip,
             double value_coef, double entropy_coef, double[::1] token_loss,
             double[::1] log_probs, double[::1] entropies, real_t[:, ::1] grad,
             double[::1] value_grad, double[::1] stats, num_threads):
    cdef int status, threads = thread_count(num_threads)
    with nogil:
        status = a2c_loss_core(logits, tokens, advantages, values, returns, old_values, weights,
                               value_clip, value_coef, entropy_coef, token_loss, log_probs,
                               entropies, grad, value_grad, stats, threads)
    return status
