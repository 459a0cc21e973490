# cython: language_level=3
"""Inline helpers of the kernels over logits (Cython twin of fastlmrl/_numba/fast_math.py).

The hot row loops are written in C below so that gcc vectorises them (-O3 -march=native):
fast_exp32 is the same sequence of IEEE single operations as the Numba and Python versions, with the
correctly rounded C99 ``fmaf`` (one instruction with -march=native on FMA hardware, libm otherwise)
and bit casts through memcpy; the extension is built with -ffp-contract=off so gcc fuses nothing
else.  Results agree bit for bit with fastlmrl/_python/log_probs.py, which defines the order of
operations.  Gradient rows of large outputs are written with streaming (non-temporal) stores when
AVX is available: the same values, without first reading the destination into the cache.
"""
from libc.math cimport INFINITY, NAN, exp, log
from libc.stdlib cimport malloc
from fastlmrl._cython._common cimport real_t, THREAD_LIMIT

# ---- scheduling of rows over threads (shared by log_probs and policy_losses) -------------------
cdef enum:
    PARALLEL_MIN_ELEMENTS = 1 << 16  # below this many logits a call runs on one thread


cdef inline Py_ssize_t n_threads(int num_threads, Py_ssize_t n, Py_ssize_t n_vocab) noexcept nogil:
    """Threads used: 1 unless more than one is allowed and the batch is large enough."""
    if num_threads <= 1 or n < 2 or n * n_vocab < PARALLEL_MIN_ELEMENTS:
        return 1
    return min(<Py_ssize_t>num_threads, n, <Py_ssize_t>THREAD_LIMIT)


cdef inline Py_ssize_t rows_per_chunk(Py_ssize_t n_vocab) noexcept nogil:
    """Rows handed to a thread at a time (dynamic schedule, about 64k entries)."""
    return 1 + PARALLEL_MIN_ELEMENTS // n_vocab


cdef inline void* work(Py_ssize_t nt, Py_ssize_t n_vocab) noexcept nogil:
    """nt exp row buffers of n_vocab entries of the logits' dtype (room for doubles; cast to
    ``real_t*``), NULL when out of memory."""
    return malloc(sizeof(double) * nt * n_vocab + 8)


cdef extern from *:
    """
    #include <math.h>
    #include <string.h>
    #include <stdint.h>
    #if defined(__AVX__)
    #include <immintrin.h>
    #endif
    #define FASTLMRL_LANES 8
    /* streaming stores for outputs >= 64 MiB with rows >= 4 KiB (as in the Numba backend) */
    #define FASTLMRL_NT_MIN_BYTES (((int64_t)1) << 26)
    #define FASTLMRL_NT_MIN_ROW_BYTES 4096

    /* fast_exp32: exp(d) of a float32 d <= 88 in float32 arithmetic (within 1 ulp of the exact
       exp; 0 below -87): the shifter trick t = fma(d, log2 e, 1.5 * 2**23) gives k = t - SHIFT,
       r = d - k ln2 in two fused steps (Cody-Waite, the first one exact), the degree-7 Taylor
       polynomial of exp(r) in Horner form with fmaf, times 2**k built in the exponent bits. */
    static inline float fastlmrl_fast_exp32(float d) {
        const float LOG2E = 1.4426950216293335f, SHIFT = 12582912.0f;
        const float NEG_LN2_HI = -0.6931471824645996f, NEG_LN2_LO = 1.9046542121259336e-09f;
        const float C2 = 0.5f, C3 = 0.1666666716337204f, C4 = 0.0416666679084301f;
        const float C5 = 0.008333333767950535f, C6 = 0.0013888889225199819f;
        const float C7 = 0.00019841270113829523f;
        float dc = d < -87.0f ? -87.0f : d;
        float t = fmaf(dc, LOG2E, SHIFT);
        float kf = t - SHIFT;
        float r = fmaf(kf, NEG_LN2_HI, dc);
        r = fmaf(kf, NEG_LN2_LO, r);
        float p = fmaf(C7, r, C6);
        p = fmaf(p, r, C5);
        p = fmaf(p, r, C4);
        p = fmaf(p, r, C3);
        p = fmaf(p, r, C2);
        p = fmaf(p, r, 1.0f);
        p = fmaf(p, r, 1.0f);
        int32_t bits;
        float scale;
        memcpy(&bits, &t, sizeof bits);
        bits = (int32_t)((uint32_t)(bits - (int32_t)0x4B400000 + 127) << 23);
        memcpy(&scale, &bits, sizeof scale);
        return d < -87.0f ? 0.0f : p * scale;
    }

    /* max of row[0:n] (n >= 1): `v > m ? v : m` (maxps/maxpd: a NaN v is skipped), in AVX
       vectors of running maxima when available, then a tree.  The result is NaN when row[0] is
       NaN; a row holding a NaN is rejected anyway (NaN max, or NaN sum), so the value is used only
       when it is the exact maximum (order-independent, like Numba's maxnum pass). */
    static inline double fastlmrl_row_max_f(const float* row, Py_ssize_t n) {
        float m = row[0];
        Py_ssize_t j = 0;
    #if defined(__AVX__)
        if (n >= 16) {
            __m256 a = _mm256_set1_ps(m), b = a;
            for (; j + 16 <= n; j += 16) {
                a = _mm256_max_ps(_mm256_loadu_ps(row + j), a);
                b = _mm256_max_ps(_mm256_loadu_ps(row + j + 8), b);
            }
            a = _mm256_max_ps(b, a);
            __m128 c = _mm_max_ps(_mm256_extractf128_ps(a, 1), _mm256_castps256_ps128(a));
            c = _mm_max_ps(_mm_movehl_ps(c, c), c);
            c = _mm_max_ss(_mm_shuffle_ps(c, c, 1), c);
            m = _mm_cvtss_f32(c);
        }
    #endif
        for (; j < n; j++) m = row[j] > m ? row[j] : m;
        return (double)m;
    }
    static inline double fastlmrl_row_max_d(const double* row, Py_ssize_t n) {
        double m = row[0];
        Py_ssize_t j = 0;
    #if defined(__AVX__)
        if (n >= 8) {
            __m256d a = _mm256_set1_pd(m), b = a;
            for (; j + 8 <= n; j += 8) {
                a = _mm256_max_pd(_mm256_loadu_pd(row + j), a);
                b = _mm256_max_pd(_mm256_loadu_pd(row + j + 4), b);
            }
            a = _mm256_max_pd(b, a);
            __m128d c = _mm_max_pd(_mm256_extractf128_pd(a, 1), _mm256_castpd256_pd128(a));
            c = _mm_max_sd(_mm_unpackhi_pd(c, c), c);
            m = _mm_cvtsd_f64(c);
        }
    #endif
        for (; j < n; j++) m = row[j] > m ? row[j] : m;
        return m;
    }

    /* e[j] = EXP(row[j] - m), then S = sum in 8 lanes (lane j % 8), combined in a fixed tree */
    static inline double fastlmrl_lane_sum(const double* e, Py_ssize_t n) {
        double s[FASTLMRL_LANES] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
        Py_ssize_t j, l, n8 = n - n % FASTLMRL_LANES;
        for (j = 0; j < n8; j += FASTLMRL_LANES)
            for (l = 0; l < FASTLMRL_LANES; l++) s[l] += e[j + l];
        for (j = n8; j < n; j++) s[j - n8] += e[j];
        return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    }
    static inline double fastlmrl_lane_sum_f(const float* e, Py_ssize_t n) {
        double s[FASTLMRL_LANES] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
        Py_ssize_t j, l, n8 = n - n % FASTLMRL_LANES;
        for (j = 0; j < n8; j += FASTLMRL_LANES)
            for (l = 0; l < FASTLMRL_LANES; l++) s[l] += (double)e[j + l];
        for (j = n8; j < n; j++) s[j - n8] += (double)e[j];
        return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    }
    static inline double fastlmrl_exp_sum_f(const float* row, Py_ssize_t n, double m, float* e) {
        Py_ssize_t j;
        const float m32 = (float)m;  /* exact: m is a float32 entry of the row */
        for (j = 0; j < n; j++) e[j] = fastlmrl_fast_exp32(row[j] - m32);
        return fastlmrl_lane_sum_f(e, n);
    }
    static inline double fastlmrl_exp_sum_d(const double* row, Py_ssize_t n, double m, double* e) {
        Py_ssize_t j;
        for (j = 0; j < n; j++) e[j] = exp(row[j] - m);
        return fastlmrl_lane_sum(e, n);
    }

    static inline int fastlmrl_use_streaming(Py_ssize_t n_rows, Py_ssize_t n_vocab, size_t item) {
    #if defined(__AVX__)
        int64_t row = (int64_t)n_vocab * (int64_t)item;
        return row >= FASTLMRL_NT_MIN_ROW_BYTES && row * (int64_t)n_rows >= FASTLMRL_NT_MIN_BYTES;
    #else
        return 0;
    #endif
    }
    static inline void fastlmrl_store_fence(void) {
    #if defined(__AVX__)
        _mm_sfence();
    #endif
    }

    /* out[j] = nc * (e[j] * g) for j < n; streaming 64-byte stores from the first 64-byte aligned
       address when nt (ordinary stores before it and after the last full line). */
    static inline void fastlmrl_scaled_f(const float* e, double g, double nc, float* out,
                                         Py_ssize_t n, int nt) {
        Py_ssize_t j = 0;
    #if defined(__AVX__)
        if (nt) {
            Py_ssize_t j0 = (Py_ssize_t)(((64 - (uintptr_t)out % 64) % 64) / sizeof(float));
            if (j0 > n) j0 = n;
            for (; j < j0; j++) out[j] = (float)(nc * ((double)e[j] * g));
            __m256d gv = _mm256_set1_pd(g), ncv = _mm256_set1_pd(nc);
            for (; j + 16 <= n; j += 16) {
                __m128 a = _mm256_cvtpd_ps(_mm256_mul_pd(ncv, _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(e + j)), gv)));
                __m128 b = _mm256_cvtpd_ps(_mm256_mul_pd(ncv, _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(e + j + 4)), gv)));
                __m128 c = _mm256_cvtpd_ps(_mm256_mul_pd(ncv, _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(e + j + 8)), gv)));
                __m128 d = _mm256_cvtpd_ps(_mm256_mul_pd(ncv, _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(e + j + 12)), gv)));
                _mm256_stream_ps(out + j, _mm256_set_m128(b, a));
                _mm256_stream_ps(out + j + 8, _mm256_set_m128(d, c));
            }
        }
    #endif
        for (; j < n; j++) out[j] = (float)(nc * ((double)e[j] * g));
    }
    static inline void fastlmrl_scaled_d(const double* e, double g, double nc, double* out,
                                         Py_ssize_t n, int nt) {
        Py_ssize_t j = 0;
    #if defined(__AVX__)
        if (nt) {
            Py_ssize_t j0 = (Py_ssize_t)(((64 - (uintptr_t)out % 64) % 64) / sizeof(double));
            if (j0 > n) j0 = n;
            for (; j < j0; j++) out[j] = nc * (e[j] * g);
            __m256d gv = _mm256_set1_pd(g), ncv = _mm256_set1_pd(nc);
            for (; j + 8 <= n; j += 8) {
                _mm256_stream_pd(out + j, _mm256_mul_pd(ncv, _mm256_mul_pd(_mm256_loadu_pd(e + j), gv)));
                _mm256_stream_pd(out + j + 4, _mm256_mul_pd(ncv, _mm256_mul_pd(_mm256_loadu_pd(e + j + 4), gv)));
            }
        }
    #endif
        for (; j < n; j++) out[j] = nc * (e[j] * g);
    }
    """
    float fastlmrl_fast_exp32(float d) noexcept nogil
    double fastlmrl_row_max_f(const float* row, Py_ssize_t n) noexcept nogil
    double fastlmrl_row_max_d(const double* row, Py_ssize_t n) noexcept nogil
    double fastlmrl_exp_sum_f(const float* row, Py_ssize_t n, double m, float* e) noexcept nogil
    double fastlmrl_exp_sum_d(const double* row, Py_ssize_t n, double m, double* e) noexcept nogil
    bint fastlmrl_use_streaming(Py_ssize_t n_rows, Py_ssize_t n_vocab, size_t item) noexcept nogil
    void fastlmrl_store_fence() noexcept nogil
    void fastlmrl_scaled_f(const float* e, double g, double nc, float* out, Py_ssize_t n,
                           bint nt) noexcept nogil
    void fastlmrl_scaled_d(const double* e, double g, double nc, double* out, Py_ssize_t n,
                           bint nt) noexcept nogil

DEF LANES = 8


cdef inline float fast_exp32(float d) noexcept nogil:
    return fastlmrl_fast_exp32(d)


cdef inline bint use_streaming(Py_ssize_t n_rows, Py_ssize_t n_vocab, const real_t* sample) noexcept nogil:
    """Streaming stores for an (n_rows, n_vocab) output of sample's dtype?"""
    return fastlmrl_use_streaming(n_rows, n_vocab, sizeof(real_t))


cdef inline void store_fence() noexcept nogil:
    fastlmrl_store_fence()


cdef inline bint row_stats(const real_t* row, Py_ssize_t n, real_t* e, double* m_out,
                           double* s_out) noexcept nogil:
    """m (row max), S (float64 sum of e); e[j] = EXP(row[j] - m) (fast_exp32 in float32 arithmetic
    for float32 rows, exp for float64 ones); False for a bad row (e unspecified)."""
    cdef double m, s
    if real_t is float:
        m = fastlmrl_row_max_f(row, n)
    else:
        m = fastlmrl_row_max_d(row, n)
    m_out[0] = m
    if not (m > -INFINITY and m < INFINITY):
        s_out[0] = NAN
        return False
    if real_t is float:
        s = fastlmrl_exp_sum_f(row, n, m, e)
    else:
        s = fastlmrl_exp_sum_d(row, n, m, e)
    s_out[0] = s
    return s == s


cdef inline void grad_fill(Py_ssize_t n, const real_t* e, double g, Py_ssize_t a, double c,
                           real_t* out, bint nt) noexcept nogil:
    """out = c * (onehot(a) - p), p_j = e_j * g: out[j] = (-c) * p_j, then out[a] = c * (1 - p_a)."""
    if real_t is float:
        fastlmrl_scaled_f(e, g, -c, out, n, nt)
    else:
        fastlmrl_scaled_d(e, g, -c, out, n, nt)
    out[a] = <real_t>(c * (1.0 - e[a] * g))


cdef inline double plogp(double p, double x, double lse) noexcept nogil:
    return p * (x - lse) if p > 0.0 else 0.0


cdef inline double row_entropy(const real_t* row, Py_ssize_t n, const real_t* e, double g,
                               double lse) noexcept nogil:
    """H = -sum_j p_j (x_j - lse), p_j = e_j * g, terms with p_j = 0 omitted (lane j % 8)."""
    cdef double t[LANES]
    cdef Py_ssize_t j, l, k8 = n - n % LANES
    for l in range(LANES):
        t[l] = 0.0
    j = 0
    while j < k8:
        for l in range(LANES):
            t[l] += plogp(e[j + l] * g, row[j + l], lse)
        j += LANES
    for j in range(k8, n):
        t[j - k8] += plogp(e[j] * g, row[j], lse)
    return -(((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7])))
