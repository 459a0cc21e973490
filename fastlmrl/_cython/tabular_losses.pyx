# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython policy-gradient losses of a tabular softmax policy (same arithmetic as
fastlmrl/_python/tabular_losses.py): one softmax per visited context, gradient rows per context.

Passes: mark the visited contexts (serial), row statistics of each visited row (``prange`` over
rows; the exps of visited row k are left in the gradient output's row k), the tokens in index
order (serial), the gradient rows written in place of those exps (``prange`` over rows; rows are
independent, so the bits do not depend on the thread count).  Both row passes use a dynamic
schedule in small chunks (``rows_per_chunk``): a thread on a busy core takes fewer of them
instead of holding up the other at a barrier.  Every array the kernels write must not share
memory with another argument (status 8, checked in O(1)).  Every check, the visited rows' and
the tokens' included (step 0), comes before the first write, but a float64 log-probability that
overflows to -inf, after which the gradient output holds unspecified values.  Statuses are
``fastlmrl._status.Status`` values (``status.pxd``).
"""

__all__ = ["a2c_loss_tabular", "kl_penalty_loss_tabular", "ppo_loss_tabular",
           "reinforce_loss_tabular", "token_log_probs_tabular"]
import operator

from cython.parallel cimport prange, threadid
from libc.math cimport INFINITY, NAN, exp, log, isfinite
from libc.stdint cimport int64_t
from libc.stdlib cimport calloc, free, malloc

from libc.limits cimport INT_MAX, INT_MIN
from fastlmrl._cython cimport status as st
from fastlmrl._cython._common cimport real_t, index_t, not_all_finite, out_of_range
from fastlmrl._cython.fast_math cimport row_stats, row_entropy, n_threads, rows_per_chunk, work
from fastlmrl._cython.pg_terms cimport (KL, PPO, REINFORCE, Params, Terms, bad_weights,
                                        lengths_ok, ppo_arguments, present, sequence_log_ratios,
                                        token_terms, value_terms)
from fastlmrl._cython.overlap cimport span_1d, span_2d, written_overlap

# The row passes go parallel from this many visited entries (U * V) on: below it they take well
# under a millisecond, and a second thread only adds wake-up cost (or waits for a busy core).

cdef inline int _c_int(int64_t x) noexcept nogil:
    """An int64 argument of a ``def`` wrapper as the C int its core takes: itself when it fits,
    else INT_MAX / INT_MIN (an invalid option, or a thread count capped by the rows anyway), so a
    Python int up to 2**63 - 1 gives a status code instead of an OverflowError at the call."""
    if x > INT_MAX:
        return INT_MAX
    if x < INT_MIN:
        return INT_MIN
    return <int>x

cdef Py_ssize_t PARALLEL_MIN_ENTRIES = 1 << 20


cdef int _thread_arg(object num_threads) except? -1:
    """A ``def`` wrapper's num_threads (any Python integer; TypeError otherwise) as the C int
    its core takes, clamped to [INT_MIN, INT_MAX] (the core caps it by the rows anyway)."""
    n = operator.index(num_threads)
    if n > INT_MAX:
        return INT_MAX
    if n < INT_MIN:
        return INT_MIN
    return <int>n


cdef inline bint _ids_ok(const real_t[:, ::1] table, const index_t[::1] contexts,
                         const Py_ssize_t* lengths, int count, const int64_t[::1] index,
                         const int64_t[::1] rows, const int64_t[::1] num_rows) noexcept nogil:
    """The shape check of token_log_probs_tabular: every per-token array (``lengths[0:count]``) as
    long as ``contexts`` (N), ``index`` (S,), ``rows`` at least min(N, S) long, ``num_rows`` at
    least 1."""
    cdef Py_ssize_t n = contexts.shape[0], n_contexts = table.shape[0]
    return (lengths_ok(n, lengths, count) and index.shape[0] == n_contexts
            and rows.shape[0] >= (n if n < n_contexts else n_contexts)
            and num_rows.shape[0] >= 1)


cdef inline bint _shapes_ok(const real_t[:, ::1] table, const index_t[::1] contexts,
                            const Py_ssize_t* lengths, int count, const int64_t[::1] index,
                            const int64_t[::1] rows, const int64_t[::1] num_rows,
                            const real_t[:, ::1] grad, const double[::1] stats,
                            Py_ssize_t n_stats) noexcept nogil:
    """The shape check every loss kernel does first: as ``_ids_ok``, plus ``grad`` with at least
    min(N, S) rows of V entries and ``stats`` at least ``n_stats`` long."""
    cdef Py_ssize_t n = contexts.shape[0], n_contexts = table.shape[0]
    return (_ids_ok(table, contexts, lengths, count, index, rows, num_rows)
            and grad.shape[0] >= (n if n < n_contexts else n_contexts)
            and grad.shape[1] == table.shape[1] and stats.shape[0] >= n_stats)


cdef inline void _spans_index(int64_t[::1] index, int64_t[::1] rows, int64_t[::1] num_rows,
                              const char** start, size_t* size) noexcept nogil:
    """Spans 0-2 of the overlap check: the written index, rows and num_rows."""
    span_1d(&index[0], index.shape[0], sizeof(int64_t), start, size, 0)
    span_1d(&rows[0], rows.shape[0], sizeof(int64_t), start, size, 1)
    span_1d(&num_rows[0], num_rows.shape[0], sizeof(int64_t), start, size, 2)


cdef inline void _spans_ids(const real_t[:, ::1] table, const index_t[::1] contexts,
                            const index_t[::1] tokens, const char** start, size_t* size,
                            int k) noexcept nogil:
    """Spans k .. k + 2 of the overlap check: the read table, contexts and tokens."""
    span_2d(&table[0, 0], table.shape[0], table.shape[1], sizeof(real_t), start, size, k)
    span_1d(&contexts[0], contexts.shape[0], sizeof(index_t), start, size, k + 1)
    span_1d(&tokens[0], tokens.shape[0], sizeof(index_t), start, size, k + 2)


cdef inline void _span_d(const double[::1] x, const char** start, size_t* size,
                         int k) noexcept nogil:
    span_1d(&x[0], x.shape[0], sizeof(double), start, size, k)


cdef inline int check_ids_weights(const real_t[:, ::1] table, const index_t[::1] contexts,
                                  const index_t[::1] tokens,
                                  const double[::1] weights) noexcept nogil:
    if out_of_range(contexts, table.shape[0]):
        return st.BAD_CONTEXTS
    if out_of_range(tokens, table.shape[1]):
        return st.BAD_TOKENS
    if bad_weights(weights):
        return st.BAD_WEIGHTS
    return 0


cdef inline bint _lse_row(const real_t[:, ::1] table, Py_ssize_t s, double* lse_k,
                          double* total_k, double* ent_k, real_t* e) noexcept nogil:
    """lse and S of table row s into lse_k, total_k (and its entropy into ent_k unless NULL), the
    exps into e; True for a bad row (NaN/+inf/all -inf)."""
    cdef double m, total
    if not row_stats(&table[s, 0], table.shape[1], e, &m, &total):
        lse_k[0] = NAN
        return True
    lse_k[0] = m + log(total)
    total_k[0] = total
    if ent_k != NULL:
        ent_k[0] = row_entropy(&table[s, 0], table.shape[1], e, 1.0 / total, lse_k[0])
    return False


cdef inline void _grad_row(Py_ssize_t v, double nc, double total, const double* acc,
                           real_t* out) noexcept nogil:
    """out[j] = (-C) * p_j + A[j], in place of the exps e_j the lse pass left in ``out``
    (p_j = e_j * (1 / S))."""
    cdef double g = 1.0 / total
    cdef Py_ssize_t j
    for j in range(v):
        out[j] = <real_t>(nc * (<double>out[j] * g) + acc[j])


cdef inline void _grad_row_entropy(const real_t[:, ::1] table, Py_ssize_t s, double nc,
                                   double ce, double total, double lse, double h,
                                   const double* acc, real_t* out) noexcept nogil:
    """out[j] = ((-C) * p_j + E * h_j) + A[j], h_j = p_j ((x_j - lse) + H) (0 where p_j = 0), in
    place of the exps the lse pass left in ``out``."""
    cdef double g = 1.0 / total, p, hj
    cdef Py_ssize_t j, v = table.shape[1]
    cdef const real_t* x = &table[s, 0]
    for j in range(v):
        p = <double>out[j] * g
        hj = p * ((<double>x[j] - lse) + h) if p > 0.0 else 0.0
        out[j] = <real_t>((nc * p + ce * hj) + acc[j])


cdef inline real_t* _cache(real_t[:, ::1] grad) noexcept nogil:
    """Where the lse pass leaves the exps of visited row k: grad[k] (NULL for an empty output)."""
    return &grad[0, 0] if grad.shape[0] > 0 else NULL


cdef inline bint _row_ok(const real_t* x, Py_ssize_t v) noexcept nogil:
    """Does the row hold no NaN or +inf and a finite entry (what row_stats accepts)?"""
    cdef Py_ssize_t j
    cdef int high = 0, finite = 0
    for j in range(v):
        high |= not (x[j] < INFINITY)
        finite |= x[j] > -INFINITY
    return finite and not high


cdef int _log_probs(const real_t[:, ::1] table, const index_t[::1] contexts,
                    const index_t[::1] tokens, int64_t[::1] index, int64_t[::1] rows,
                    int64_t[::1] num_rows, double[::1] log_probs, int num_threads,
                    bint with_entropy, real_t* cache, Py_ssize_t* nt_out, double** total_out,
                    double** lse_out, double** ent_out) noexcept nogil:
    """Steps 0-2 and the log-probs of step 3.  The exps of visited row k go to cache + k * V (the
    gradient output, for the gradient pass; unspecified values there after an error), or to
    per-thread scratch rows when ``cache`` is NULL.  On success (0) ``*total_out`` holds S,
    ``*lse_out`` the lse and ``*ent_out`` the entropy (NULL unless ``with_entropy``) of every
    visited row; the caller frees the three.  Step 0 refuses bad rows and tokens (and a failed
    allocation) before anything is written; after a later error (only a float64 log-probability
    overflowing to -inf) the cache holds unspecified values."""
    cdef Py_ssize_t n = tokens.shape[0], v = table.shape[1], i, k, u = 0, s, nt
    cdef int bad = 0, masked = 0
    cdef double lp
    cdef real_t* e = NULL
    cdef double* lse
    cdef double* total
    cdef double* ent = NULL
    cdef unsigned char* seen = <unsigned char*>calloc(table.shape[0] + 1, 1)
    if seen == NULL:
        return st.NO_MEMORY
    # 0. before anything is written: mark the visited contexts (scratch), check their rows (in
    #    increasing order) and the tokens' logits, allocate
    for i in range(n):
        s = contexts[i]
        seen[s] = 1
        masked |= table[s, tokens[i]] == -INFINITY
    for s in range(table.shape[0]):
        if seen[s]:
            if not _row_ok(&table[s, 0], v):
                free(seen)
                return st.BAD_LOGITS
            u += 1
    if masked:
        free(seen)
        return st.BAD_TOKENS
    nt = n_threads(num_threads, u, v) if u * v >= PARALLEL_MIN_ENTRIES else 1
    if cache == NULL:
        e = <real_t*>work(nt, v)
    lse = <double*>malloc(sizeof(double) * 2 * u + 8)
    total = lse + u
    if with_entropy:
        ent = <double*>malloc(sizeof(double) * u + 8)
    if (cache == NULL and e == NULL) or lse == NULL or (with_entropy and ent == NULL):
        free(seen)
        free(e)
        free(lse)
        free(ent)
        return st.NO_MEMORY
    # 1. distinct contexts, increasing
    u = 0
    for s in range(table.shape[0]):
        if seen[s]:
            index[s] = u
            rows[u] = s
            u += 1
        else:
            index[s] = -1
    free(seen)
    num_rows[0] = u
    # 2. row statistics
    if nt > 1:
        for k in prange(u, num_threads=nt, schedule="dynamic", chunksize=rows_per_chunk(v)):
            bad += _lse_row(table, rows[k], lse + k, total + k, ent + k if with_entropy else NULL,
                            cache + k * v if cache != NULL else e + threadid() * v)
    else:
        for k in range(u):
            bad += _lse_row(table, rows[k], lse + k, total + k, ent + k if with_entropy else NULL,
                            cache + k * v if cache != NULL else e)
    free(e)
    if bad:
        free(lse)
        free(ent)
        return st.BAD_LOGITS
    # 3. (first) log-probs of the tokens in order
    for i in range(n):
        lp = <double>table[contexts[i], tokens[i]] - lse[index[contexts[i]]]
        if lp == -INFINITY:
            free(lse)
            free(ent)
            return st.BAD_TOKENS
        log_probs[i] = lp
    nt_out[0] = nt
    total_out[0] = total
    lse_out[0] = lse
    ent_out[0] = ent
    return 0


cdef int _tabular(int mode, const real_t[:, ::1] table, const index_t[::1] contexts,
                  const index_t[::1] tokens, const double* x1, const double* x2,
                  const double* x3, const double[::1] weights, const int64_t* offsets,
                  Py_ssize_t n_offsets, bint seq_level, Params p, int64_t[::1] index,
                  int64_t[::1] rows, int64_t[::1] num_rows, double[::1] token_loss,
                  double[::1] log_probs, double* ratios, real_t[:, ::1] grad, double[::1] stats,
                  int num_threads) noexcept nogil:
    cdef Py_ssize_t n = tokens.shape[0], v = table.shape[1], i, k, u, nt = 1
    cdef int status
    cdef double lp, lr, c, w, d, ed
    cdef double sw = 0.0, loss = 0.0, pg = 0.0, kl = 0.0, clipped = 0.0, dual = 0.0
    cdef double k1 = 0.0, k3 = 0.0
    cdef Terms t
    cdef double* total = NULL
    cdef double* lse = NULL
    cdef double* ent = NULL
    cdef double* csum
    cdef double* acc
    status = _log_probs(table, contexts, tokens, index, rows, num_rows, log_probs, num_threads,
                        False, _cache(grad), &nt, &total, &lse, &ent)
    if status:
        return status
    u = num_rows[0]
    csum = <double*>calloc(u + 1, sizeof(double))
    acc = <double*>calloc(u * v + 1, sizeof(double))
    if csum == NULL or acc == NULL:
        free(lse)
        free(csum)
        free(acc)
        return st.NO_MEMORY
    # 3. the tokens in index order
    if mode == PPO:
        if seq_level:
            sequence_log_ratios(&log_probs[0], x1, weights, offsets, n_offsets, ratios)
        else:
            for i in range(n):
                ratios[i] = log_probs[i] - x1[i]
    for i in range(n):
        lp = log_probs[i]
        lr = ratios[i] if mode == PPO else 0.0
        t = token_terms(mode, lp, x1[i] if x1 != NULL else 0.0, x2[i] if x2 != NULL else 0.0,
                        x3[i] if x3 != NULL else 0.0, lr, p)
        w = weights[i]
        c = w * t.dloss
        k = index[contexts[i]]
        csum[k] += c
        acc[k * v + tokens[i]] += c
        token_loss[i] = t.loss
        ratios[i] = t.ratio
        sw += w
        loss += w * t.loss
        pg += w * t.pg
        kl += w * t.kl
        clipped += w * t.clipped
        dual += w * t.dual
        if mode == PPO:
            d = lp - x1[i]
            # token-level ratios: exp(d) is rho = exp(lr) itself (same argument, same bits)
            ed = t.ratio if not seq_level else exp(d)
            k1 += w * -d
            k3 += w * ((ed - 1.0) - d)
    # 4. gradient rows
    if nt > 1:
        for k in prange(u, num_threads=nt, schedule="dynamic", chunksize=rows_per_chunk(v)):
            _grad_row(v, -csum[k], total[k], acc + k * v, &grad[k, 0])
    else:
        for k in range(u):
            _grad_row(v, -csum[k], total[k], acc + k * v, &grad[k, 0])
    free(lse)
    free(csum)
    free(acc)
    stats[0] = loss
    if mode == PPO:
        stats[1] = pg
        stats[2] = kl
        stats[3] = clipped / sw if sw > 0.0 else 0.0
        stats[4] = dual / sw if sw > 0.0 else 0.0
        stats[5] = k1 / sw if sw > 0.0 else 0.0
        stats[6] = k3 / sw if sw > 0.0 else 0.0
    return 0


cdef int token_log_probs_tabular_core(const real_t[:, ::1] table, const index_t[::1] contexts,
                                      const index_t[::1] tokens, int64_t[::1] index,
                                      int64_t[::1] rows, int64_t[::1] num_rows,
                                      double[::1] log_probs, int num_threads) noexcept nogil:
    cdef Py_ssize_t nt = 1
    cdef double* total = NULL
    cdef double* lse = NULL
    cdef double* ent = NULL
    cdef int status
    cdef Py_ssize_t lengths[2]
    cdef const char* start[7]
    cdef size_t size[7]
    lengths[:] = [tokens.shape[0], log_probs.shape[0]]
    if not _ids_ok(table, contexts, lengths, 2, index, rows, num_rows):
        return st.BAD_SHAPES
    _spans_index(index, rows, num_rows, start, size)
    _span_d(log_probs, start, size, 3)
    _spans_ids(table, contexts, tokens, start, size, 4)
    if written_overlap(4, 7, start, size):
        return st.OVERLAPPING_ARRAYS
    if out_of_range(contexts, table.shape[0]):
        return st.BAD_CONTEXTS
    if out_of_range(tokens, table.shape[1]):
        return st.BAD_TOKENS
    status = _log_probs(table, contexts, tokens, index, rows, num_rows, log_probs, num_threads,
                        False, <real_t*>NULL, &nt, &total, &lse, &ent)
    if status == 0:
        free(lse)
    return status


cdef int reinforce_loss_tabular_core(const real_t[:, ::1] table, const index_t[::1] contexts,
                                     const index_t[::1] tokens, const double[::1] returns,
                                     const double[::1] baselines, const double[::1] weights,
                                     int64_t[::1] index, int64_t[::1] rows,
                                     int64_t[::1] num_rows, double[::1] token_loss,
                                     double[::1] log_probs, real_t[:, ::1] grad,
                                     double[::1] stats, int num_threads) noexcept nogil:
    cdef Params p
    cdef Py_ssize_t n = tokens.shape[0]
    cdef Py_ssize_t lengths[6]
    cdef const char* start[13]
    cdef size_t size[13]
    cdef double* ratios
    cdef int status
    lengths[:] = [n, returns.shape[0], baselines.shape[0], weights.shape[0], token_loss.shape[0],
                  log_probs.shape[0]]
    if not _shapes_ok(table, contexts, lengths, 6, index, rows, num_rows, grad, stats, 1):
        return st.BAD_SHAPES
    _spans_index(index, rows, num_rows, start, size)
    _span_d(token_loss, start, size, 3)
    _span_d(log_probs, start, size, 4)
    span_2d(&grad[0, 0], grad.shape[0], grad.shape[1], sizeof(real_t), start, size, 5)
    _span_d(stats, start, size, 6)
    _spans_ids(table, contexts, tokens, start, size, 7)
    _span_d(returns, start, size, 10)
    _span_d(baselines, start, size, 11)
    _span_d(weights, start, size, 12)
    if written_overlap(7, 13, start, size):
        return st.OVERLAPPING_ARRAYS
    status = check_ids_weights(table, contexts, tokens, weights)
    if status:
        return status
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
    status = _tabular(REINFORCE, table, contexts, tokens, &returns[0] if n else NULL,
                      &baselines[0] if n else NULL, <const double*>NULL, weights,
                      <const int64_t*>NULL, 0, False, p, index, rows, num_rows, token_loss,
                      log_probs, ratios, grad, stats, num_threads)
    free(ratios)
    return status


cdef int ppo_loss_tabular_core(const real_t[:, ::1] table, const index_t[::1] contexts,
                               const index_t[::1] tokens, const double[::1] old_log_probs,
                               const double[::1] advantages, const double[::1] weights,
                               const double[::1] ref_log_probs,
                               const int64_t[::1] sequence_offsets, double clip_low,
                               double clip_high, double dual_clip, double kl_coef,
                               int64_t kl_estimator, int64_t sequence_level, int64_t[::1] index,
                               int64_t[::1] rows, int64_t[::1] num_rows, double[::1] token_loss,
                               double[::1] log_probs, double[::1] ratios, real_t[:, ::1] grad,
                               double[::1] stats, int num_threads) noexcept nogil:
    cdef Params p
    cdef Py_ssize_t n = tokens.shape[0]
    cdef Py_ssize_t lengths[8]
    cdef const char* start[16]
    cdef size_t size[16]
    cdef int status
    lengths[:] = [n, old_log_probs.shape[0], advantages.shape[0], weights.shape[0],
                  present(ref_log_probs.shape[0], n), token_loss.shape[0], log_probs.shape[0],
                  ratios.shape[0]]
    if not _shapes_ok(table, contexts, lengths, 8, index, rows, num_rows, grad, stats, 7):
        return st.BAD_SHAPES
    _spans_index(index, rows, num_rows, start, size)
    _span_d(token_loss, start, size, 3)
    _span_d(log_probs, start, size, 4)
    _span_d(ratios, start, size, 5)
    span_2d(&grad[0, 0], grad.shape[0], grad.shape[1], sizeof(real_t), start, size, 6)
    _span_d(stats, start, size, 7)
    _spans_ids(table, contexts, tokens, start, size, 8)
    _span_d(old_log_probs, start, size, 11)
    _span_d(advantages, start, size, 12)
    _span_d(weights, start, size, 13)
    _span_d(ref_log_probs, start, size, 14)
    span_1d(&sequence_offsets[0], sequence_offsets.shape[0], sizeof(int64_t), start, size, 15)
    if written_overlap(8, 16, start, size):
        return st.OVERLAPPING_ARRAYS
    status = check_ids_weights(table, contexts, tokens, weights)
    if status:
        return status
    status = ppo_arguments(old_log_probs, advantages, ref_log_probs, sequence_offsets, n,
                           _c_int(sequence_level), clip_low, clip_high, dual_clip, kl_coef,
                           _c_int(kl_estimator), &p)
    if status:
        return status
    return _tabular(PPO, table, contexts, tokens, &old_log_probs[0] if n else NULL,
                    &advantages[0] if n else NULL,
                    &ref_log_probs[0] if (n and p.has_ref) else NULL, weights,
                    &sequence_offsets[0], sequence_offsets.shape[0], sequence_level != 0, p,
                    index, rows, num_rows, token_loss, log_probs, &ratios[0] if n else NULL,
                    grad, stats, num_threads)


cdef int kl_penalty_loss_tabular_core(const real_t[:, ::1] table, const index_t[::1] contexts,
                                      const index_t[::1] tokens, const double[::1] ref_log_probs,
                                      const double[::1] weights, int64_t kl_estimator,
                                      int64_t[::1] index, int64_t[::1] rows,
                                      int64_t[::1] num_rows, double[::1] token_loss,
                                      double[::1] log_probs, real_t[:, ::1] grad,
                                      double[::1] stats, int num_threads) noexcept nogil:
    cdef Params p
    cdef Py_ssize_t n = tokens.shape[0]
    cdef Py_ssize_t lengths[5]
    cdef const char* start[12]
    cdef size_t size[12]
    cdef double* ratios
    cdef int status
    lengths[:] = [n, ref_log_probs.shape[0], weights.shape[0], token_loss.shape[0],
                  log_probs.shape[0]]
    if not _shapes_ok(table, contexts, lengths, 5, index, rows, num_rows, grad, stats, 1):
        return st.BAD_SHAPES
    _spans_index(index, rows, num_rows, start, size)
    _span_d(token_loss, start, size, 3)
    _span_d(log_probs, start, size, 4)
    span_2d(&grad[0, 0], grad.shape[0], grad.shape[1], sizeof(real_t), start, size, 5)
    _span_d(stats, start, size, 6)
    _spans_ids(table, contexts, tokens, start, size, 7)
    _span_d(ref_log_probs, start, size, 10)
    _span_d(weights, start, size, 11)
    if written_overlap(7, 12, start, size):
        return st.OVERLAPPING_ARRAYS
    status = check_ids_weights(table, contexts, tokens, weights)
    if status:
        return status
    if not_all_finite(ref_log_probs):
        return st.BAD_REF_LOG_PROBS
    p.clip_low = p.clip_high = p.dual_clip = p.kl_coef = 0.0
    p.estimator = _c_int(kl_estimator)
    p.has_ref = 1
    ratios = <double*>malloc(sizeof(double) * n + 8)
    if ratios == NULL:
        return st.NO_MEMORY
    status = _tabular(KL, table, contexts, tokens, <const double*>NULL, <const double*>NULL,
                      &ref_log_probs[0] if n else NULL, weights, <const int64_t*>NULL, 0, False,
                      p, index, rows, num_rows, token_loss, log_probs, ratios, grad, stats,
                      num_threads)
    free(ratios)
    return status


cdef int a2c_loss_tabular_core(const real_t[:, ::1] table, const index_t[::1] contexts,
                               const index_t[::1] tokens, const double[::1] advantages,
                               const double[::1] values, const double[::1] returns,
                               const double[::1] old_values, const double[::1] weights,
                               double value_clip, double value_coef, double entropy_coef,
                               int64_t[::1] index, int64_t[::1] rows, int64_t[::1] num_rows,
                               double[::1] token_loss, double[::1] log_probs,
                               double[::1] entropies, real_t[:, ::1] grad,
                               double[::1] value_grad, double[::1] stats,
                               int num_threads) noexcept nogil:
    cdef Py_ssize_t n = tokens.shape[0], v = table.shape[1], i, k, u, nt = 1
    cdef int status
    cdef double sw = 0.0, loss = 0.0, pgs = 0.0, vls = 0.0, hs = 0.0
    cdef double lp, h, old, lv, dlv, adv, pg, w, c, tl
    cdef double* total = NULL
    cdef double* lse = NULL
    cdef double* ent = NULL
    cdef double* csum
    cdef double* esum
    cdef double* acc
    cdef Py_ssize_t lengths[10]
    cdef const char* start[17]
    cdef size_t size[17]
    cdef Py_ssize_t n_old = old_values.shape[0]  # read only with value clipping
    lengths[:] = [n, advantages.shape[0], values.shape[0], returns.shape[0],
                  n_old if value_clip > 0.0 else present(n_old, n), weights.shape[0],
                  token_loss.shape[0], log_probs.shape[0], entropies.shape[0],
                  value_grad.shape[0]]
    if not _shapes_ok(table, contexts, lengths, 10, index, rows, num_rows, grad, stats, 4):
        return st.BAD_SHAPES
    _spans_index(index, rows, num_rows, start, size)
    _span_d(token_loss, start, size, 3)
    _span_d(log_probs, start, size, 4)
    _span_d(entropies, start, size, 5)
    span_2d(&grad[0, 0], grad.shape[0], grad.shape[1], sizeof(real_t), start, size, 6)
    _span_d(value_grad, start, size, 7)
    _span_d(stats, start, size, 8)
    _spans_ids(table, contexts, tokens, start, size, 9)
    _span_d(advantages, start, size, 12)
    _span_d(values, start, size, 13)
    _span_d(returns, start, size, 14)
    _span_d(old_values, start, size, 15)
    _span_d(weights, start, size, 16)
    if written_overlap(9, 17, start, size):
        return st.OVERLAPPING_ARRAYS
    status = check_ids_weights(table, contexts, tokens, weights)
    if status:
        return status
    if not_all_finite(advantages):
        return st.BAD_ADVANTAGES
    if not_all_finite(values):
        return st.BAD_VALUES
    if not_all_finite(returns):
        return st.BAD_RETURNS
    if value_clip > 0.0 and not_all_finite(old_values):
        return st.BAD_OLD_VALUES
    status = _log_probs(table, contexts, tokens, index, rows, num_rows, log_probs, num_threads,
                        True, _cache(grad), &nt, &total, &lse, &ent)
    if status:
        return status
    u = num_rows[0]
    csum = <double*>calloc(u + 1, sizeof(double))
    esum = <double*>calloc(u + 1, sizeof(double))
    acc = <double*>calloc(u * v + 1, sizeof(double))
    if csum == NULL or esum == NULL or acc == NULL:
        free(lse)
        free(ent)
        free(csum)
        free(esum)
        free(acc)
        return st.NO_MEMORY
    for i in range(n):
        k = index[contexts[i]]
        lp = log_probs[i]
        h = ent[k]
        old = old_values[i] if value_clip > 0.0 else 0.0
        lv = value_terms(values[i], returns[i], old, value_clip, &dlv)
        adv = advantages[i]
        pg = -adv * lp
        w = weights[i]
        c = w * -adv
        csum[k] += c
        esum[k] += w * entropy_coef
        acc[k * v + tokens[i]] += c
        tl = pg + value_coef * lv - entropy_coef * h
        token_loss[i] = tl
        entropies[i] = h
        value_grad[i] = (w * value_coef) * dlv
        sw += w
        loss += w * tl
        pgs += w * pg
        vls += w * lv
        hs += w * h
    if nt > 1:
        for k in prange(u, num_threads=nt, schedule="dynamic", chunksize=rows_per_chunk(v)):
            _grad_row_entropy(table, rows[k], -csum[k], esum[k], total[k], lse[k], ent[k],
                              acc + k * v, &grad[k, 0])
    else:
        for k in range(u):
            _grad_row_entropy(table, rows[k], -csum[k], esum[k], total[k], lse[k], ent[k],
                              acc + k * v, &grad[k, 0])
    free(lse)
    free(ent)
    free(csum)
    free(esum)
    free(acc)
    stats[0] = loss
    stats[1] = pgs
    stats[2] = vls
    stats[3] = hs / sw if sw > 0.0 else 0.0
    return 0


# ---- Python-callable kernels --------------------------------------------------------------------

def token_log_probs_tabular(const real_t[:, ::1] table, const index_t[::1] contexts,
                            const index_t[::1] tokens, int64_t[::1] index, int64_t[::1] rows,
                            int64_t[::1] num_rows, double[::1] log_probs, num_threads):
    cdef int status, threads = _thread_arg(num_threads)
    with nogil:
        status = token_log_probs_tabular_core(table, contexts, tokens, index, rows, num_rows,
                                              log_probs, threads)
    return status


def reinforce_loss_tabular(const real_t[:, ::1] table, const index_t[::1] contexts,
                           const index_t[::1] tokens, const double[::1] returns,
                           const double[::1] baselines, const double[::1] weights,
                           int64_t[::1] index, int64_t[::1] rows, int64_t[::1] num_rows,
                           double[::1] token_loss, double[::1] log_probs, real_t[:, ::1] grad,
                           double[::1] stats, num_threads):
    cdef int status, threads = _thread_arg(num_threads)
    with nogil:
        status = reinforce_loss_tabular_core(table, contexts, tokens, returns, baselines,
                                             weights, index, rows, num_rows, token_loss,
                                             log_probs, grad, stats, threads)
    return status


def ppo_loss_tabular(const real_t[:, ::1] table, const index_t[::1] contexts,
                     const index_t[::1] tokens, const double[::1] old_log_probs,
                     const double[::1] advantages, const double[::1] weights,
                     const double[::1] ref_log_probs, const int64_t[::1] sequence_offsets,
                     double clip_low, double clip_high, double dual_clip, double kl_coef,
                     int64_t kl_estimator, int64_t sequence_level, int64_t[::1] index,
                     int64_t[::1] rows, int64_t[::1] num_rows, double[::1] token_loss,
                     double[::1] log_probs, double[::1] ratios, real_t[:, ::1] grad,
                     double[::1] stats, num_threads):
    cdef int status, threads = _thread_arg(num_threads)
    with nogil:
        status = ppo_loss_tabular_core(table, contexts, tokens, old_log_probs, advantages,
                                       weights, ref_log_probs, sequence_offsets, clip_low,
                                       clip_high, dual_clip, kl_coef, kl_estimator,
                                       sequence_level, index, rows, num_rows, token_loss,
                                       log_probs, ratios, grad, stats, threads)
    return status


def kl_penalty_loss_tabular(const real_t[:, ::1] table, const index_t[::1] contexts,
                            const index_t[::1] tokens, const double[::1] ref_log_probs,
                            const double[::1] weights, int64_t kl_estimator, int64_t[::1] index,
                            int64_t[::1] rows, int64_t[::1] num_rows, double[::1] token_loss,
                            double[::1] log_probs, real_t[:, ::1] grad, double[::1] stats,
                            num_threads):
    cdef int status, threads = _thread_arg(num_threads)
    with nogil:
        status = kl_penalty_loss_tabular_core(table, contexts, tokens, ref_log_probs, weights,
                                              kl_estimator, index, rows, num_rows,
                                              token_loss,
                                              log_probs, grad, stats, threads)
    return status


def a2c_loss_tabular(const real_t[:, ::1] table, const index_t[::1] contexts,
                     const index_t[::1] tokens, const double[::1] advantages,
                     const double[::1] values, const double[::1] returns,
                     const double[::1] old_values, const double[::1] weights, double value_clip,
                     double value_coef, double entropy_coef, int64_t[::1] index,
                     int64_t[::1] rows, int64_t[::1] num_rows, double[::1] token_loss,
                     double[::1] log_probs, double[::1] entropies, real_t[:, ::1] grad,
                     double[::1] value_grad, double[::1] stats, num_threads):
    cdef int status, threads = _thread_arg(num_threads)
    with nogil:
        status = a2c_loss_tabular_core(table, contexts, tokens, advantages, values, returns,
                                       old_values, weights, value_clip, value_coef, entropy_coef,
                                       index, rows, num_rows, token_loss, log_probs, entropies,
                                       grad, value_grad, stats, threads)
    return status
