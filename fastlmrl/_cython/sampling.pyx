# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython token sampling (same arithmetic as fastlmrl/_python/sampling.py, bit for bit).

Rows are shared out to the threads in chunks (``prange``, dynamic schedule); each thread has a
weight row buffer of the logits' dtype and a float64 scratch row (the top-k heap, the top-p
candidates), malloc'ed once per call.  Row i always uses counter + i, so results do not depend on
the thread count.  Results are collected in work arrays and copied out after every row was valid.
Thresholds are found from the weights' values only (heaps of values), so any correct heap gives the
reference's result; after a top-k with k <= 1024 the sums and the search run over the candidate
list (see fastlmrl/_numba/sampling.py).
"""

__all__ = ["sample_tokens"]
from cython.parallel cimport prange, threadid
from libc.float cimport DBL_MIN
from libc.math cimport INFINITY, exp, ldexp, log
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free, malloc

from fastlmrl._cython._common cimport real_t, uniform
from fastlmrl._cython.fast_math cimport fast_exp32, n_threads, row_stats, rows_per_chunk, work
from fastlmrl._cython.overlap cimport span_1d, span_2d, written_overlap

# status codes: fastlmrl._status.Status (status.pxd is generated from it); the contract:
# fastlmrl.sampling.CONTRACT
from fastlmrl._cython cimport status as st
from fastlmrl._cython.log_probs cimport thread_count

# Sizes, as C compile-time constants (``idx // BLOCK`` stays a shift)
cdef extern from *:
    """
    enum {
        FASTLMRL_SAMPLING_BLOCK = 64,
        FASTLMRL_SAMPLING_SMALL_K = 128,
        FASTLMRL_SAMPLING_DIRECT_K = 1024,
        FASTLMRL_SAMPLING_LAST_EXPONENT = 60
    };
    """
    enum:
        BLOCK "FASTLMRL_SAMPLING_BLOCK"
        SMALL_K "FASTLMRL_SAMPLING_SMALL_K"  # top-k up to this k: one heap pass over the row
        # top-k up to this k: the rest of the row works on the candidate list
        DIRECT_K "FASTLMRL_SAMPLING_DIRECT_K"
        # candidate cutoffs 2**-e, 0 <= e <= 60; below: every weight
        LAST_EXPONENT "FASTLMRL_SAMPLING_LAST_EXPONENT"


cdef double F32_TINY = 1.401298464324817e-45  # the smallest positive float32 (subnormal)
cdef double F32_MAX = 3.4028234663852886e38  # the largest finite float32


cdef inline bint _shapes_ok(const real_t[:, ::1] logits, Py_ssize_t n_tokens, Py_ssize_t n_lp,
                            Py_ssize_t n_mlp) noexcept nogil:
    """The shape check (first): three (N,) outputs for (N, V) logits, V >= 1."""
    cdef Py_ssize_t n = logits.shape[0]
    return logits.shape[1] >= 1 and n_tokens == n and n_lp == n and n_mlp == n


cdef inline int _arguments_status(double temperature, int64_t top_k, double top_p,
                                  double min_p) noexcept nogil:
    """0, or the status of the first bad scalar argument (NaN fails every comparison)."""
    if not (temperature == 0.0 or (temperature >= DBL_MIN and temperature < INFINITY)):
        return st.BAD_TEMPERATURE  # (DBL_MIN, the smallest normal double: 1 / T stays finite)
    if top_k < 0:
        return st.BAD_TOP_K
    if not (top_p > 0.0 and top_p <= 1.0):
        return st.BAD_TOP_P
    if not (min_p >= 0.0 and min_p <= 1.0):
        return st.BAD_MIN_P
    return 0


cdef inline double _kept(real_t v, double t) noexcept nogil:
    return <double>v if v >= t else 0.0


cdef inline double _lane_sum_range(const real_t* w, Py_ssize_t lo, Py_ssize_t hi,
                                   double t) noexcept nogil:
    """Lane sum (lane (j - lo) % 8, entries in order, fixed tree) of the w[j] >= t, lo <= j < hi."""
    cdef double s[8]
    cdef Py_ssize_t j, l, end = lo + (hi - lo) // 8 * 8
    for l in range(8):
        s[l] = 0.0
    j = lo
    while j < end:
        for l in range(8):
            s[l] += _kept(w[j + l], t)
        j += 8
    for j in range(end, hi):
        s[j - end] += _kept(w[j], t)
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))


cdef inline void _weights(const real_t* row, Py_ssize_t n, double m, double temperature,
                          real_t* w) noexcept nogil:
    """w[j] = exp((x_j - m) * (1 / T)); float32 logits: fast_exp32 of the float32 product by
    g = float32(1 / T) (clamped to the finite positive float32 range)."""
    cdef Py_ssize_t j
    cdef float m32, g
    cdef double inv_t = 1.0 / temperature
    if real_t is float:
        m32 = <float>m
        g = <float>(F32_MAX if inv_t > F32_MAX else (F32_TINY if inv_t < F32_TINY else inv_t))
        for j in range(n):
            w[j] = fast_exp32((row[j] - m32) * g)
    else:
        for j in range(n):
            w[j] = exp((row[j] - m) * inv_t)


# ---- a max-heap of doubles in h[0:size] ---------------------------------------------------------

cdef inline void _sift_down(double* h, Py_ssize_t size, Py_ssize_t k) noexcept nogil:
    cdef double v = h[k]
    cdef Py_ssize_t c
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


cdef inline void _heapify(double* h, Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(size // 2 - 1, -1, -1):
        _sift_down(h, size, k)


cdef double _heap_select(double* h, Py_ssize_t size, Py_ssize_t k) noexcept nogil:
    """The k-th largest of h[0:size] (1 <= k <= size), in place: a heap of min(k, size - k + 1)
    in h's front while the rest of h streams past it."""
    cdef Py_ssize_t j, r = size - k + 1
    cdef double v
    if k <= r:  # the k largest, negated in a max-heap: the root is minus the smallest of them
        for j in range(k):
            h[j] = -h[j]
        _heapify(h, k)
        for j in range(k, size):
            v = -h[j]
            if v < h[0]:
                h[0] = v
                _sift_down(h, k, 0)
        return -h[0]
    _heapify(h, r)  # the r smallest in a max-heap: the root is the r-th smallest
    for j in range(r, size):
        v = h[j]
        if v < h[0]:
            h[0] = v
            _sift_down(h, r, 0)
    return h[0]


cdef inline Py_ssize_t _count_at_least(const real_t* w, Py_ssize_t lo, Py_ssize_t hi,
                                       double c) noexcept nogil:
    """How many w[j] >= c for lo <= j < hi (vectorised)."""
    cdef Py_ssize_t j, count = 0
    for j in range(lo, hi):
        count += w[j] >= c
    return count


cdef inline Py_ssize_t _count_greater(const real_t* w, Py_ssize_t lo, Py_ssize_t hi,
                                      double c) noexcept nogil:
    """How many w[j] > c for lo <= j < hi (vectorised)."""
    cdef Py_ssize_t j, count = 0
    for j in range(lo, hi):
        count += w[j] > c
    return count


cdef Py_ssize_t _gather(const real_t* w, Py_ssize_t n, double c, double* h) noexcept nogil:
    """h[0:size] = the positive w[j] >= c (in index order); blocks of 64 below c are skipped."""
    cdef Py_ssize_t size = 0, lo = 0, hi, j
    cdef double v
    while lo < n:
        hi = lo + BLOCK if lo + BLOCK < n else n
        if _count_at_least(w, lo, hi, c) > 0:
            for j in range(lo, hi):
                v = <double>w[j]
                if v >= c and v > 0.0:
                    h[size] = v
                    size += 1
        lo = hi
    return size


cdef double _kth_largest(const real_t* w, Py_ssize_t n, Py_ssize_t k, double* h) noexcept nogil:
    """The k-th largest of w[0:n] (1 <= k < n, with multiplicity).

    Small k: a heap of the k largest in one pass (blocks of 64 with nothing above the heap's
    smallest are skipped).  Larger k: the smallest power-of-two cutoff with at least k weights
    above it (binary search over the exponent, one vectorised count per step), then a heap select
    among those candidates only.
    """
    cdef Py_ssize_t j, lo, hi, size
    cdef int e, e_lo, e_hi
    cdef double v
    if k <= SMALL_K:
        for j in range(k):
            h[j] = -<double>w[j]
        _heapify(h, k)
        lo = k
        while lo < n:
            hi = lo + BLOCK if lo + BLOCK < n else n
            if _count_greater(w, lo, hi, -h[0]) > 0:
                for j in range(lo, hi):
                    v = -<double>w[j]
                    if v < h[0]:
                        h[0] = v
                        _sift_down(h, k, 0)
            lo = hi
        return -h[0]
    if _count_at_least(w, 0, n, ldexp(1.0, -LAST_EXPONENT)) < k:  # the k-th largest < 2**-60
        for j in range(n):
            h[j] = <double>w[j]
        return _heap_select(h, n, k)
    e_lo = -1  # count(2**-e_hi) >= k; count(2**-e_lo) < k (2**1: none)
    e_hi = LAST_EXPONENT
    while e_hi - e_lo > 1:
        e = (e_lo + e_hi) // 2
        if _count_at_least(w, 0, n, ldexp(1.0, -e)) >= k:
            e_hi = e
        else:
            e_lo = e
    size = _gather(w, n, ldexp(1.0, -e_hi), h)
    return _heap_select(h, size, k)


cdef double _top_p_threshold(const real_t* w, Py_ssize_t n, double t_k, double top_p,
                             double total_k, double* h) noexcept nogil:
    """t_p: the weight v_r at which the descending cumulative mass first reaches top_p * W.

    The candidates are the weights above the smallest power-of-two cutoff whose (vectorised,
    any-order) mass reaches the target, found by binary search over the exponent; they are popped
    from a max-heap in descending order and added exactly.  Should rounding leave the exact sum
    below the target, the cutoff is halved and the pass repeated (down to t_k: all of K).
    """
    cdef double target = top_p * total_k, c, v, cumulative
    cdef bint last
    cdef int e, e_lo = -1, e_hi = LAST_EXPONENT + 1  # mass at 2**-e_hi (> 60: at t_k) >= target
    cdef Py_ssize_t size
    while e_hi - e_lo > 1:
        e = (e_lo + e_hi) // 2
        c = ldexp(1.0, -e)
        if _lane_sum_range(w, 0, n, c if c > t_k else t_k) >= target:
            e_hi = e
        else:
            e_lo = e
    e = e_hi
    while True:
        c = ldexp(1.0, -e)
        last = c <= t_k or e > LAST_EXPONENT
        if last:
            c = t_k
        v = _pop_until(h, _gather(w, n, c, h), target)
        if v >= 0.0:
            return v
        if last:
            return 0.0
        e += 1


cdef double _pop_until(double* h, Py_ssize_t size, double target) noexcept nogil:
    """Add the values h[0:size] in descending order (popped from a max-heap); the value whose
    addition first brings the sum to >= target, or -1 when the sum of all stays below it."""
    cdef double v, cumulative = 0.0
    _heapify(h, size)
    while size > 0:
        v = h[0]
        cumulative += v
        if cumulative >= target:
            return v
        size -= 1
        h[0] = h[size]
        _sift_down(h, size, 0)
    return -1.0


# ---- the same sums and search over an index-ordered candidate list (a small top-k) -------------
# The candidates are every positive w[j] >= t_k; the entries they leave out are 0 in the dense
# passes, and adding 0.0 changes no sum, so these give the dense passes' values bit for bit.

cdef Py_ssize_t _gather_indexed(const real_t* w, Py_ssize_t n, double c, double* h,
                                int64_t* idx) noexcept nogil:
    """h[0:size], idx[0:size] = the positive w[j] >= c and their j, in index order."""
    cdef Py_ssize_t size = 0, lo = 0, hi, j
    cdef double v
    while lo < n:
        hi = lo + BLOCK if lo + BLOCK < n else n
        if _count_at_least(w, lo, hi, c) > 0:
            for j in range(lo, hi):
                v = <double>w[j]
                if v >= c and v > 0.0:
                    h[size] = v
                    idx[size] = j
                    size += 1
        lo = hi
    return size


cdef inline double _sparse_lane_sum(const real_t* w, const int64_t* idx, Py_ssize_t lo,
                                    Py_ssize_t hi, double t) noexcept nogil:
    """The lane sum (lane j % 8) of the w[j] >= t over the candidates idx[lo:hi]."""
    cdef double s[8]
    cdef double v
    cdef Py_ssize_t c, l
    cdef int64_t j
    for l in range(8):
        s[l] = 0.0
    for c in range(lo, hi):
        j = idx[c]
        v = <double>w[j]
        if v >= t:
            s[j & 7] += v
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))


cdef inline Py_ssize_t _sparse_last_positive(const real_t* w, const int64_t* idx, Py_ssize_t lo,
                                             Py_ssize_t hi, double t) noexcept nogil:
    cdef Py_ssize_t c
    for c in range(hi - 1, lo - 1, -1):
        if _kept(w[idx[c]], t) > 0.0:
            return idx[c]
    return idx[lo]


cdef Py_ssize_t _sparse_block_search(const real_t* w, const int64_t* idx, Py_ssize_t size,
                                     double t, double target) noexcept nogil:
    """``_block_search`` over the candidates (blocks without one add 0 and are skipped)."""
    cdef double cumulative = 0.0, after, r
    cdef Py_ssize_t c = 0, end, cc
    cdef int64_t b
    while c < size:
        b = idx[c] // BLOCK
        end = c + 1
        while end < size and idx[end] // BLOCK == b:
            end += 1
        after = cumulative + _sparse_lane_sum(w, idx, c, end, t)
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


cdef inline Py_ssize_t _last_positive(const real_t* w, Py_ssize_t lo, Py_ssize_t hi,
                                      double t) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(hi - 1, lo - 1, -1):
        if _kept(w[j], t) > 0.0:
            return j
    return lo


cdef Py_ssize_t _block_search(const real_t* w, Py_ssize_t n, double t,
                              double target) noexcept nogil:
    """The inverse-CDF search over the kept weights (w >= t) in blocks of 64 entries."""
    cdef double cumulative = 0.0, after, r
    cdef Py_ssize_t lo = 0, hi, j
    while lo < n:
        hi = lo + BLOCK if lo + BLOCK < n else n
        after = cumulative + _lane_sum_range(w, lo, hi, t)
        if after > target:
            r = cumulative
            for j in range(lo, hi):
                r += _kept(w[j], t)
                if r > target:
                    return j
            return _last_positive(w, lo, hi, t)
        cumulative = after
        lo = hi
    return _last_positive(w, 0, n, t)


cdef bint _sample_row(const real_t[:, ::1] logits, Py_ssize_t i, double temperature,
                      int64_t top_k, double top_p, double min_p, double u, real_t* w, double* h,
                      int64_t* idx, int64_t* res_tok, double* res_lp,
                      double* res_mlp) noexcept nogil:
    """Row i into res_*[i]; returns True for an invalid row (nothing stored), else False."""
    cdef Py_ssize_t n = logits.shape[1], j, a = 0, size
    cdef const real_t* row = &logits[i, 0]
    cdef double m, s, model_lse, memo, memo_t = 0.0, t_k = 0.0, t, t_p, z, x_a
    if not row_stats(row, n, w, &m, &s):
        return True
    model_lse = m + log(s)
    if temperature == 0.0:
        for j in range(n):
            if row[j] == m:
                a = j
                break
        res_tok[i] = a
        res_lp[i] = 0.0
        res_mlp[i] = <double>row[a] - model_lse
        return False
    # one remembered lane sum of the kept weights: at threshold 0 it is S when T = 1
    memo = s if temperature == 1.0 else -1.0  # -1: not computed yet
    if temperature != 1.0:  # T = 1: the weights are the model's exps, already in w
        _weights(row, n, m, temperature, w)
    if top_k > 0 and top_k < n:
        t_k = _kth_largest(w, n, top_k, h)
        if top_k <= DIRECT_K:  # few candidates: work on their list, not on the row
            size = _gather_indexed(w, n, t_k, h, idx)
            t = t_k
            if top_p < 1.0:
                t_p = _pop_until(h, size, top_p * _sparse_lane_sum(w, idx, 0, size, t_k))
                t = t_p if t_p > t else t
            if min_p > 0.0:
                t = min_p if min_p > t else t
            z = _sparse_lane_sum(w, idx, 0, size, t)
            a = _sparse_block_search(w, idx, size, t, u * z)
            x_a = <double>row[a]
            res_tok[i] = a
            res_lp[i] = (x_a - m) / temperature - log(z)
            res_mlp[i] = x_a - model_lse
            return False
    t = t_k
    if top_p < 1.0:
        if memo < 0.0 or memo_t != t_k:
            memo_t = t_k
            memo = _lane_sum_range(w, 0, n, t_k)
        t_p = _top_p_threshold(w, n, t_k, top_p, memo, h)
        t = t_p if t_p > t else t
    if min_p > 0.0:
        t = min_p if min_p > t else t
    if memo < 0.0 or memo_t != t:
        memo = _lane_sum_range(w, 0, n, t)
    z = memo
    a = _block_search(w, n, t, u * z)
    x_a = <double>row[a]
    res_tok[i] = a
    res_lp[i] = (x_a - m) / temperature - log(z)
    res_mlp[i] = x_a - model_lse
    return False


cdef int sample_tokens_core(const real_t[:, ::1] logits, double temperature, int64_t top_k,
                            double top_p, double min_p, uint64_t key, uint64_t counter,
                            int64_t[::1] tokens_out, real_t[::1] log_probs_out,
                            real_t[::1] model_log_probs_out, int num_threads) noexcept nogil:
    cdef Py_ssize_t n = logits.shape[0], v = logits.shape[1], i
    cdef Py_ssize_t nt
    cdef int status, bad = 0
    cdef real_t* w
    cdef double* h
    cdef int64_t* idx
    cdef Py_ssize_t idx_stride
    cdef int64_t* res_tok
    cdef double* res_lp
    cdef double* res_mlp
    cdef const char* start[4]
    cdef size_t size[4]
    if not _shapes_ok(logits, tokens_out.shape[0], log_probs_out.shape[0],
                      model_log_probs_out.shape[0]):
        return st.BAD_SHAPES
    span_1d(&tokens_out[0], n, sizeof(int64_t), start, size, 0)
    span_1d(&log_probs_out[0], n, sizeof(real_t), start, size, 1)
    span_1d(&model_log_probs_out[0], n, sizeof(real_t), start, size, 2)
    span_2d(&logits[0, 0], n, v, sizeof(real_t), start, size, 3)
    if written_overlap(3, 4, start, size):
        return st.OVERLAPPING_ARRAYS
    status = _arguments_status(temperature, top_k, top_p, min_p)
    if status:
        return status
    nt = n_threads(num_threads, n, v)
    w = <real_t*>work(nt, v)
    h = <double*>malloc(sizeof(double) * nt * v + 8)
    idx_stride = v if 0 < top_k <= DIRECT_K else 1
    idx = <int64_t*>malloc(sizeof(int64_t) * nt * idx_stride + 8)
    res_tok = <int64_t*>malloc(sizeof(int64_t) * n + 8)
    res_lp = <double*>malloc(sizeof(double) * n + 8)
    res_mlp = <double*>malloc(sizeof(double) * n + 8)
    if (w == NULL or h == NULL or idx == NULL or res_tok == NULL or res_lp == NULL
            or res_mlp == NULL):
        free(w)
        free(h)
        free(idx)
        free(res_tok)
        free(res_lp)
        free(res_mlp)
        return st.NO_MEMORY
    if nt > 1:
        for i in prange(n, num_threads=nt, schedule="dynamic", chunksize=rows_per_chunk(v)):
            bad += _sample_row(logits, i, temperature, top_k, top_p, min_p,
                               uniform(key, counter + <uint64_t>i), w + threadid() * v,
                               h + threadid() * v, idx + threadid() * idx_stride, res_tok,
                               res_lp, res_mlp)
    else:
        for i in range(n):
            bad += _sample_row(logits, i, temperature, top_k, top_p, min_p,
                               uniform(key, counter + <uint64_t>i), w, h, idx, res_tok,
                               res_lp, res_mlp)
    if not bad:
        for i in range(n):
            tokens_out[i] = res_tok[i]
            log_probs_out[i] = <real_t>res_lp[i]
            model_log_probs_out[i] = <real_t>res_mlp[i]
    free(w)
    free(h)
    free(idx)
    free(res_tok)
    free(res_lp)
    free(res_mlp)
    return st.BAD_LOGITS if bad else 0


def sample_tokens(const real_t[:, ::1] logits, double temperature, int64_t top_k, double top_p,
                  double min_p, uint64_t key, uint64_t counter, int64_t[::1] tokens_out,
                  real_t[::1] log_probs_out, real_t[::1] model_log_probs_out, num_threads):
    cdef int status, threads = thread_count(num_threads)
    with nogil:
        status = sample_tokens_core(logits, temperature, top_k, top_p, min_p, key, counter,
                                    tokens_out, log_probs_out, model_log_probs_out, threads)
    return status
