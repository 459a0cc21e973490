# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython policy-gradient losses over logits (same arithmetic as fastlmrl/_python/policy_losses.py).

One fused pass per row: row statistics, log pi(a), the per-token loss and ``c_i = w_i
dl_i/dlogp_i``, then the gradient row ``c_i (onehot - p)``.  ``prange`` (dynamic schedule) over
reduction blocks of ``reduce_rows(V)`` consecutive rows (the reference defines them): each block
adds its rows' terms to N_SUMS partial sums in row order, and the batch sums add the blocks' sums in
block order, so results do not depend on the thread count.  Rows of a block are taken in pairs so
that two rows' dependency chains (log, exp, gradient) overlap; the block loop is specialised per
mode (constant ``mode``).  Sequence-level (GSPO) ratios: a statistics pass, the per-sequence means
(serial), then the fused pass.
"""

__all__ = ["a2c_loss", "kl_penalty_loss", "ppo_loss", "reinforce_loss"]
from cython.parallel cimport prange, threadid
from libc.math cimport INFINITY, exp, log, isfinite
from libc.stdint cimport int64_t
from libc.limits cimport INT_MAX, INT_MIN
from libc.stdlib cimport free, malloc

from fastlmrl._cython._common cimport real_t, index_t, out_of_range, not_all_finite
from fastlmrl._cython.pg_terms cimport *
from fastlmrl._cython.overlap cimport span_1d, span_2d, written_overlap
from fastlmrl._cython.log_probs cimport in_place_span
from fastlmrl._cython.fast_math cimport (row_stats, grad_fill, row_entropy, store_fence,
                                         n_threads, rows_per_chunk, work, use_streaming,
                                         PARALLEL_MIN_ELEMENTS)


cdef inline int _c_int(int64_t x) noexcept nogil:
    """An int64 argument of a ``def`` wrapper as the C int its core takes: itself when it fits,
    else INT_MAX / INT_MIN (an invalid option, or a thread count capped by the rows anyway), so a
    Python int up to 2**63 - 1 gives a status code instead of an OverflowError at the call."""
    if x > INT_MAX:
        return INT_MAX
    if x < INT_MIN:
        return INT_MIN
    return <int>x


cdef enum:
    OVERLAPPING_ARRAYS = 8  # fastlmrl._status.OVERLAPPING_ARRAYS


# Batch sums are taken per block of reduce_rows(V) consecutive rows, then over blocks in order.
cdef enum:
    REDUCE_MAX_ROWS = 256
    N_SUMS = 8  # per block: sw, loss, pg, kl, clipped, dual, k1, k3

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
    gradient row, the per-token outputs; adds the row's summands to acc[0:N_SUMS].  0, or 2 when
    the sampled token has logit -inf (nothing written)."""
    cdef Py_ssize_t a = tokens[i], v = logits.shape[1]
    cdef double lp, lr, o, w, d, ed
    cdef Terms t
    lp = <double>logits[i, a] - (m + log(s))
    if lp == -INFINITY:
        return 2
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
                   bint nt) noexcept nogil:
    """_pg_rows with the mode (and whether sequence ratios are used) as constants."""
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
        return 1
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
    # two row buffers per thread (room for doubles), then the block partial sums, then the
    # sequence log-ratios
    cdef double* mem = <double*>malloc(
        sizeof(double) * (2 * nt * v + N_SUMS * nb + (n if seq_level else 0)) + 8)
    cdef real_t* w = <real_t*>mem
    cdef double* part = mem + 2 * nt * v
    cdef double* lr = NULL
    if w == NULL:
        return NO_MEMORY
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
            return BAD_LOGITS
        for i in range(n):
            if lr[i] == -INFINITY:
                free(w)
                return BAD_TOKENS
        sequence_log_ratios(lr, x1, weights, offsets, n_offsets, lr)
    if nt > 1:
        for b in prange(nb, num_threads=nt, schedule="dynamic", chunksize=1):
            r = _pg_block(logits, tokens, mode, x1, x2, x3, weights, lr, p, token_loss,
                          log_probs, ratios, part, b, rows, grad, w + 2 * threadid() * v,
                          w + (2 * threadid() + 1) * v, stream)
            bad += r & 65535
            bad_tokens += r >> 16
    else:
        for b in range(nb):
            r = _pg_block(logits, tokens, mode, x1, x2, x3, weights, lr, p, token_loss,
                          log_probs, ratios, part, b, rows, grad, w, w + v, stream)
            bad += r & 65535
            bad_tokens += r >> 16
    if bad or bad_tokens:
        free(w)
        return BAD_LOGITS if bad else BAD_TOKENS
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
        return BAD_SHAPES
    _d1(token_loss, start, size, 0)
    _d1(log_probs, start, size, 1)
    _d1(stats, start, size, 2)
    _r1(returns, start, size, 6)
    _r1(baselines, start, size, 7)
    _r1(weights, start, size, 8)
    if _loss_overlaps(logits, tokens, grad, True, start, size, 4, 9):
        return OVERLAPPING_ARRAYS
    if out_of_range(tokens, logits.shape[1]):
        return BAD_TOKENS
    if bad_weights(weights):
        return BAD_WEIGHTS
    if not_all_finite(returns):
        return BAD_RETURNS
    if not_all_finite(baselines):
        return BAD_BASELINES
    p.clip_low = p.clip_high = p.dual_clip = p.kl_coef = 0.0
    p.estimator = 3
    p.has_ref = 0
    ratios = <double*>malloc(sizeof(double) * n + 8)
    if ratios == NULL:
        return NO_MEMORY
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
                       double dual_clip, double kl_coef, int kl_estimator, int sequence_level,
                       double[::1] token_loss, double[::1] log_probs, double[::1] ratios,
                       real_t[:, ::1] grad, double[::1] stats, int num_threads) noexcept nogil:
    cdef Params p
    cdef Py_ssize_t n = tokens.shape[0]
    cdef Py_ssize_t lengths[8]
    cdef int status
    cdef const char* start[12]
    cdef size_t size[12]
    lengths[:] = [n, old_log_probs.shape[0], advantages.shape[0], weights.shape[0],
                  present(ref_log_probs.shape[0], n), token_loss.shape[0], log_probs.shape[0],
                  ratios.shape[0]]
    if not _shapes_ok(logits, lengths, 8, grad, stats, 7):
        return BAD_SHAPES
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
        return OVERLAPPING_ARRAYS
    if out_of_range(tokens, logits.shape[1]):
        return BAD_TOKENS
    if bad_weights(weights):
        return BAD_WEIGHTS
    status = ppo_arguments(old_log_probs, advantages, ref_log_probs, sequence_offsets, n,
                           sequence_level, clip_low, clip_high, dual_clip, kl_coef, kl_estimator,
                           &p)
    if status:
        return status
    return _run_pg(logits, tokens, PPO, &old_log_probs[0] if n else NULL,
                   &advantages[0] if n else NULL,
                   &ref_log_probs[0] if (n and p.has_ref) else NULL, weights, &sequence_offsets[0],
                   sequence_offsets.shape[0], sequence_level != 0, p,
                   &token_loss[0] if n else NULL, &log_probs[0] if n else NULL,
                   &ratios[0] if n else NULL, grad, stats, num_threads)


cdef int kl_penalty_loss_core(const real_t[:, ::1] logits, const index_t[::1] tokens,
                              const real_t[::1] ref_log_probs, const real_t[::1] weights,
                              int kl_estimator, double[::1] token_loss, double[::1] log_probs,
                              real_t[:, ::1] grad, double[::1] stats,
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
        return BAD_SHAPES
    _d1(token_loss, start, size, 0)
    _d1(log_probs, start, size, 1)
    _d1(stats, start, size, 2)
    _r1(ref_log_probs, start, size, 6)
    _r1(weights, start, size, 7)
    if _loss_overlaps(logits, tokens, grad, True, start, size, 4, 8):
        return OVERLAPPING_ARRAYS
    if out_of_range(tokens, logits.shape[1]):
        return BAD_TOKENS
    if bad_weights(weights):
        return BAD_WEIGHTS
    if not_all_finite(ref_log_probs):
        return BAD_REF_LOG_PROBS
    p.clip_low = p.clip_high = p.dual_clip = p.kl_coef = 0.0
    p.estimator = kl_estimator
    p.has_ref = 1
    ratios = <double*>malloc(sizeof(double) * n + 8)
    if ratios == NULL:
        return NO_MEMORY
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
    """0, 1 (bad logits) or 2 (the sampled token has logit -inf)."""
    cdef Py_ssize_t a, v = logits.shape[1]
    cdef double m, s, g, lse, lp, h, old, lv, dlv, adv, pg, w
    cdef const real_t* row = &logits[i, 0]
    if not row_stats(row, v, e, &m, &s):
        return 1
    a = tokens[i]
    lse = m + log(s)
    g = 1.0 / s
    lp = <double>row[a] - lse
    if lp == -INFINITY:
        return 2
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
        return BAD_SHAPES
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
        return OVERLAPPING_ARRAYS
    if out_of_range(tokens, v):
        return BAD_TOKENS
    if bad_weights(weights):
        return BAD_WEIGHTS
    if not_all_finite(advantages):
        return BAD_ADVANTAGES
    if not_all_finite(values):
        return BAD_VALUES
    if not_all_finite(returns):
        return BAD_RETURNS
    if value_clip > 0.0 and not_all_finite(old_values):
        return BAD_OLD_VALUES
    if not value_clip > 0.0:
        old_values = values
    w = <real_t*>work(nt, v)
    if w == NULL:
        return NO_MEMORY
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
        return BAD_LOGITS
    if bad_tokens:
        return BAD_TOKENS
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
                   real_t[:, ::1] grad, double[::1] stats, int64_t num_threads):
    cdef int status
    with nogil:
        status = reinforce_loss_core(logits, tokens, returns, baselines, weights, token_loss,
                                     log_probs, grad, stats, _c_int(num_threads))
    return status


def ppo_loss(const real_t[:, ::1] logits, const index_t[::1] tokens,
             const real_t[::1] old_log_probs, const real_t[::1] advantages,
             const real_t[::1] weights, const real_t[::1] ref_log_probs,
             const int64_t[::1] sequence_offsets, double clip_low, double clip_high,
             double dual_clip, double kl_coef, int64_t kl_estimator, int64_t sequence_level,
             double[::1] token_loss, double[::1] log_probs, double[::1] ratios,
             real_t[:, ::1] grad, double[::1] stats, int64_t num_threads):
    cdef int status
    with nogil:
        status = ppo_loss_core(logits, tokens, old_log_probs, advantages, weights, ref_log_probs,
                               sequence_offsets, clip_low, clip_high, dual_clip, kl_coef,
                               _c_int(kl_estimator), _c_int(sequence_level), token_loss,
                               log_probs, ratios, grad,
                               stats, _c_int(num_threads))
    return status


def kl_penalty_loss(const real_t[:, ::1] logits, const index_t[::1] tokens,
                    const real_t[::1] ref_log_probs, const real_t[::1] weights,
                    int64_t kl_estimator,
                    double[::1] token_loss, double[::1] log_probs, real_t[:, ::1] grad,
                    double[::1] stats, int64_t num_threads):
    cdef int status
    with nogil:
        status = kl_penalty_loss_core(logits, tokens, ref_log_probs, weights, _c_int(kl_estimator),
                                      token_loss, log_probs, grad, stats, _c_int(num_threads))
    return status


def a2c_loss(const real_t[:, ::1] logits, const index_t[::1] tokens,
             const real_t[::1] advantages, const real_t[::1] values, const real_t[::1] returns,
             const real_t[::1] old_values, const real_t[::1] weights, double value_clip,
             double value_coef, double entropy_coef, double[::1] token_loss,
             double[::1] log_probs, double[::1] entropies, real_t[:, ::1] grad,
             double[::1] value_grad, double[::1] stats, int64_t num_threads):
    cdef int status
    with nogil:
        status = a2c_loss_core(logits, tokens, advantages, values, returns, old_values, weights,
                               value_clip, value_coef, entropy_coef, token_loss, log_probs,
                               entropies, grad, value_grad, stats, _c_int(num_threads))
    return status
