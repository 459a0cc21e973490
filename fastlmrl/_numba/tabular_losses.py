"""Numba policy-gradient losses of a tabular softmax policy (same arithmetic as
fastlmrl/_python/tabular_losses.py): one softmax per visited context, gradient rows per context.

Passes: mark the visited contexts (serial), row statistics of each visited row (parallel over
rows; the exps of visited row k are left in the gradient output's row k), the tokens in index
order (serial: log-probs, per-token terms, per-row sums of ``c_i`` and the batch sums), the
gradient rows, written in place of those exps (parallel over rows; every row independent, so the
bits do not depend on the thread count).  The row passes hand out small blocks of rows from an
atomic counter (``next_block``): a worker on a busy core takes fewer instead of holding up the
other.  Every check, the rows' and tokens' included, comes before the first write (but a
float64 log-probability that overflows to -inf, after which the gradient output holds unspecified
values).  Every array a kernel writes must not share memory with another argument (status 8,
O(1)).
"""

__all__ = [
    "a2c_loss_tabular",
    "kl_penalty_loss_tabular",
    "ppo_loss_tabular",
    "reinforce_loss_tabular",
    "token_log_probs_tabular",
]
import math

import numpy as np
from numba import njit, prange

from .._status import (
    BAD_BASELINES,
    BAD_CONTEXTS,
    BAD_LOGITS,
    BAD_REF_LOG_PROBS,
    BAD_RETURNS,
    BAD_SHAPES,
    BAD_TOKENS,
    BAD_WEIGHTS,
    OVERLAPPING_ARRAYS,
)
from ._common import NJIT, not_all_finite, out_of_range
from .fast_math import row_entropy, row_stats
from .log_probs import n_threads, next_block, rows_per_block, work
from .overlap import _bounds, spans_overlap
from .policy_losses import (
    KL,
    PPO,
    REINFORCE,
    _bad_weights,
    _token_terms_inline,
    a2c_status,
    lengths_ok,
    ppo_arguments,
    present,
    sequence_log_ratios,
    value_terms,
)

# The row passes go parallel from this many visited entries (U * V) on: below it they take well
# under a millisecond, and a second thread only adds wake-up cost (or waits for a busy core).
PARALLEL_MIN_ENTRIES = 1 << 20


@njit(**NJIT)
def _row_ok(table, s):
    """Does row s hold no NaN or +inf and a finite entry (what row_stats accepts)?"""
    row = table[s]
    high = False  # a NaN or +inf entry
    finite = False  # a finite entry
    for j in range(row.shape[0]):
        x = row[j]
        high |= not (x < np.inf)
        finite |= x > -np.inf
    return finite and not high


@njit(**NJIT)
def _step0(table, contexts, tokens):
    """Step 0 (see the reference), before anything is written: (status, visited marks, U).
    BAD_LOGITS when a visited row holds NaN or +inf or no finite entry (rows checked in
    increasing order), BAD_TOKENS when a token selects a -inf logit."""
    seen = np.zeros(table.shape[0], dtype=np.uint8)
    masked = False
    for i in range(contexts.shape[0]):
        s = np.uint64(contexts[i])  # (ids checked in range: no wrap check)
        seen[s] = 1
        masked |= table[s, np.uint64(tokens[i])] == -np.inf
    u = 0
    for s in range(table.shape[0]):
        if seen[s]:
            if not _row_ok(table, s):
                return BAD_LOGITS, seen, u
            u += 1
    return (BAD_TOKENS if masked else 0), seen, u


@njit(**NJIT)
def _visited(seen, index, rows):
    """index[s] = position of s among the distinct contexts (increasing), -1 if absent; rows
    filled with the distinct contexts; returns their number."""
    u = 0
    for s in range(index.shape[0]):
        if seen[s]:
            index[s] = u
            rows[u] = s
            u += 1
        else:
            index[s] = -1
    return u


@njit(**NJIT)
def _lse_rows(table, rows, u0, u1, step, lse, total, ent, e, slot):
    """lse, S (``total``) and, when ``ent`` is not empty, the entropy of rows k = u0, u0 + step,
    ... < u1.  The exps of row k go to e[k] (``slot`` < 0: ``e`` is the gradient output, where the
    gradient pass finds them) or to the scratch row e[slot].  Returns the number of bad rows
    (NaN/+inf/all -inf)."""
    bad = 0
    for k in range(u0, u1, step):
        ek = e[k] if slot < 0 else e[slot]
        m, s, ok = row_stats(table, rows[k], ek)
        if not ok:
            bad += 1
            lse[k] = np.nan
        else:
            lse[k] = m + math.log(s)
            total[k] = s
            if ent.shape[0] > 0:
                ent[k] = row_entropy(table, rows[k], ek, 1.0 / s, lse[k])
    return bad


@njit(**NJIT)
def _grad_rows(table, rows, u0, u1, step, csum, esum, total, lse, ent, acc, grad):
    """grad[k, j] = (-C_k) * p_kj + A[k, j] for rows k = u0, u0 + step, ... < u1, in place of the
    exps e_kj the lse pass left in grad[k] (p_kj = e_kj * (1 / S_k)); with an entropy bonus
    (``esum`` not empty) ((-C_k) * p_kj + E_k * h_kj) + A[k, j]."""
    n_vocab = table.shape[1]
    for k in range(u0, u1, step):
        g = 1.0 / total[k]
        nc = -csum[k]
        if esum.shape[0] > 0:
            ce = esum[k]
            lk = lse[k]
            hk = ent[k]
            r = rows[k]
            for j in range(n_vocab):
                p = np.float64(grad[k, j]) * g
                hj = p * ((np.float64(table[r, j]) - lk) + hk) if p > 0.0 else 0.0
                grad[k, j] = (nc * p + ce * hj) + acc[k, j]
        else:
            for j in range(n_vocab):
                grad[k, j] = nc * (np.float64(grad[k, j]) * g) + acc[k, j]


@njit(cache=True, nogil=True, parallel=True)
def _lse_par(table, rows, u, lse, total, ent, e, nt, scratch):
    """The lse pass on ``nt`` workers, each claiming the next small block of rows from an atomic
    counter (dynamic: a worker on a busy core takes fewer blocks; rows are independent, so the
    bits do not depend on who computes them)."""
    bad = 0
    counter = np.zeros(1, dtype=np.int64)
    rpb = rows_per_block(table.shape[1])
    for t in prange(nt):
        slot = np.int64(t) if scratch else np.int64(-1)  # (prange indices may be unsigned)
        bt = 0
        lo, hi = next_block(counter, rpb, u)
        while lo < hi:
            bt += _lse_rows(table, rows, lo, hi, 1, lse, total, ent, e, slot)
            lo, hi = next_block(counter, rpb, u)
        bad += bt
    return bad


@njit(cache=True, nogil=True, parallel=True)
def _grad_par(table, rows, u, csum, esum, total, lse, ent, acc, grad, nt):
    """The gradient pass on ``nt`` workers claiming blocks of rows (as ``_lse_par``)."""
    counter = np.zeros(1, dtype=np.int64)
    rpb = rows_per_block(table.shape[1])
    for _t in prange(nt):
        lo, hi = next_block(counter, rpb, u)
        while lo < hi:
            _grad_rows(table, rows, lo, hi, 1, csum, esum, total, lse, ent, acc, grad)
            lo, hi = next_block(counter, rpb, u)


@njit(**NJIT)
def _log_probs(
    table, contexts, tokens, index, rows, num_rows, log_probs, with_entropy, grad, num_threads
):
    """Steps 0-2 and the log-probs of step 3: (status, threads for the row passes, S per row,
    lse per row, entropy per row (empty unless ``with_entropy``)).  With a gradient output
    (``grad`` with rows) the exps of row k are left in grad[k] for the gradient pass.  Step 0
    refuses bad rows and tokens before anything is written; on a later error (only a float64
    log-probability overflowing to -inf) ``grad`` holds unspecified values."""
    status, seen, _ = _step0(table, contexts, tokens)
    if status:
        return status, 1, np.empty(0), np.empty(0), np.empty(0)
    u = _visited(seen, index, rows)
    num_rows[0] = u
    nt = (
        n_threads(num_threads, u, table.shape[1])
        if u * table.shape[1] >= PARALLEL_MIN_ENTRIES
        else 1
    )
    scratch = grad.shape[0] == 0
    e = work(nt, table) if scratch else grad
    lse = np.empty(u)
    total = np.empty(u)
    ent = np.empty(u if with_entropy else 0)
    if nt > 1:
        bad = _lse_par(table, rows, u, lse, total, ent, e, nt, scratch)
    else:
        bad = _lse_rows(table, rows, 0, u, 1, lse, total, ent, e, 0 if scratch else -1)
    if bad:
        return BAD_LOGITS, nt, total, lse, ent
    for i in range(tokens.shape[0]):
        s = np.uint64(contexts[i])  # checked in range: unsigned, no wrap checks
        lp = np.float64(table[s, np.uint64(tokens[i])]) - lse[np.uint64(index[s])]
        if lp == -np.inf:
            return BAD_TOKENS, nt, total, lse, ent
        log_probs[i] = lp
    return 0, nt, total, lse, ent


@njit(**NJIT)
def _tabular(
    mode,
    table,
    contexts,
    tokens,
    x1,
    x2,
    x3,
    weights,
    seq_offsets,
    seq_level,
    params,
    index,
    rows,
    num_rows,
    token_loss,
    log_probs,
    ratios,
    grad,
    stats,
    num_threads,
):
    clip_low, clip_high, dual_clip, kl_coef, estimator, has_ref = params
    n = tokens.shape[0]
    n_vocab = table.shape[1]
    status, nt, total, lse, ent = _log_probs(
        table, contexts, tokens, index, rows, num_rows, log_probs, False, grad, num_threads
    )
    if status:
        return status
    u = num_rows[0]
    if mode == PPO:
        if seq_level:
            sequence_log_ratios(log_probs, x1, weights, seq_offsets, ratios)
        else:
            for i in range(n):
                ratios[i] = log_probs[i] - x1[i]
    csum = np.zeros(u)
    acc = np.zeros((u, n_vocab))
    sw = loss = pg = kl = clipped = dual = k1 = k3 = 0.0
    for i in range(n):
        lp = log_probs[i]
        lr = ratios[i] if mode == PPO else 0.0
        t = _token_terms_inline(
            mode,
            lp,
            x1[i],
            x2[i],
            x3[i],
            lr,
            clip_low,
            clip_high,
            dual_clip,
            kl_coef,
            estimator,
            has_ref,
        )
        w = weights[i]
        c = w * t[1]
        # ids checked in range, index[s] >= 0 for a visited s: unsigned, no wrap checks
        k = np.uint64(index[np.uint64(contexts[i])])
        csum[k] += c
        acc[k, np.uint64(tokens[i])] += c
        token_loss[i] = t[0]
        ratios[i] = t[2]
        sw += w
        loss += w * t[0]
        pg += w * t[3]
        kl += w * t[4]
        clipped += w * t[5]
        dual += w * t[6]
        if mode == PPO:
            d = lp - x1[i]
            # token-level ratios: exp(d) is rho = exp(lr) itself (same argument, same bits)
            ed = t[2] if not seq_level else math.exp(d)
            k1 += w * -d
            k3 += w * ((ed - 1.0) - d)
    if nt > 1:
        # ent is empty here: no entropy bonus
        _grad_par(table, rows, u, csum, ent, total, lse, ent, acc, grad, nt)
    else:
        _grad_rows(table, rows, 0, u, 1, csum, ent, total, lse, ent, acc, grad)
    stats[0] = loss
    if mode == PPO:
        stats[1] = pg
        stats[2] = kl
        stats[3] = clipped / sw if sw > 0.0 else 0.0
        stats[4] = dual / sw if sw > 0.0 else 0.0
        stats[5] = k1 / sw if sw > 0.0 else 0.0
        stats[6] = k3 / sw if sw > 0.0 else 0.0
    return 0


@njit(**NJIT)
def _ids_ok(table, contexts, lengths, index, rows, num_rows):
    """The shape check of token_log_probs_tabular: every per-token array (``lengths``) as long as
    ``contexts`` (N), ``index`` (S,), ``rows`` at least min(N, S) long, ``num_rows`` at least 1."""
    n, n_contexts = contexts.shape[0], table.shape[0]
    return (
        lengths_ok(n, lengths)
        and index.shape[0] == n_contexts
        and rows.shape[0] >= min(n, n_contexts)
        and num_rows.shape[0] >= 1
    )


@njit(**NJIT)
def _shapes_ok(table, contexts, lengths, index, rows, num_rows, grad, stats, n_stats):
    """The shape check every loss kernel does first: as ``_ids_ok``, plus ``grad`` with at least
    min(N, S) rows of V entries and ``stats`` at least ``n_stats`` long."""
    return (
        _ids_ok(table, contexts, lengths, index, rows, num_rows)
        and grad.shape[0] >= min(contexts.shape[0], table.shape[0])
        and grad.shape[1] == table.shape[1]
        and stats.shape[0] >= n_stats
    )


@njit(**NJIT)
def _check(table, contexts, tokens, weights):
    if out_of_range(contexts, table.shape[0]):
        return BAD_CONTEXTS
    if out_of_range(tokens, table.shape[1]):
        return BAD_TOKENS
    if _bad_weights(weights):
        return BAD_WEIGHTS
    return 0


@njit(**NJIT)
def token_log_probs_tabular(table, contexts, tokens, index, rows, num_rows, log_probs, num_threads):
    if not _ids_ok(table, contexts, (tokens.shape[0], log_probs.shape[0]), index, rows, num_rows):
        return BAD_SHAPES
    if spans_overlap(
        (
            _bounds(index),
            _bounds(rows),
            _bounds(num_rows),
            _bounds(log_probs),
            _bounds(table),
            _bounds(contexts),
            _bounds(tokens),
        ),
        4,
    ):
        return OVERLAPPING_ARRAYS
    if out_of_range(contexts, table.shape[0]):
        return BAD_CONTEXTS
    if out_of_range(tokens, table.shape[1]):
        return BAD_TOKENS
    no_grad = np.empty((0, table.shape[1]), dtype=table.dtype)  # scratch rows for the exps
    return _log_probs(
        table, contexts, tokens, index, rows, num_rows, log_probs, False, no_grad, num_threads
    )[0]


@njit(**NJIT)
def reinforce_loss_tabular(
    table,
    contexts,
    tokens,
    returns,
    baselines,
    weights,
    index,
    rows,
    num_rows,
    token_loss,
    log_probs,
    grad,
    stats,
    num_threads,
):
    lengths = (
        tokens.shape[0],
        returns.shape[0],
        baselines.shape[0],
        weights.shape[0],
        token_loss.shape[0],
        log_probs.shape[0],
    )
    if not _shapes_ok(table, contexts, lengths, index, rows, num_rows, grad, stats, 1):
        return BAD_SHAPES
    if spans_overlap(
        (
            _bounds(index),
            _bounds(rows),
            _bounds(num_rows),
            _bounds(token_loss),
            _bounds(log_probs),
            _bounds(grad),
            _bounds(stats),
            _bounds(table),
            _bounds(contexts),
            _bounds(tokens),
            _bounds(returns),
            _bounds(baselines),
            _bounds(weights),
        ),
        7,
    ):
        return OVERLAPPING_ARRAYS
    status = _check(table, contexts, tokens, weights)
    if status:
        return status
    if not_all_finite(returns):
        return BAD_RETURNS
    if not_all_finite(baselines):
        return BAD_BASELINES
    n = tokens.shape[0]
    zeros = np.zeros(n)
    params = (0.0, 0.0, 0.0, 0.0, 3, 0)
    return _tabular(
        REINFORCE,
        table,
        contexts,
        tokens,
        returns,
        baselines,
        zeros,
        weights,
        tokens[:0],
        False,
        params,
        index,
        rows,
        num_rows,
        token_loss,
        log_probs,
        np.empty(n),
        grad,
        stats,
        num_threads,
    )


@njit(**NJIT)
def ppo_loss_tabular(
    table,
    contexts,
    tokens,
    old_log_probs,
    advantages,
    weights,
    ref_log_probs,
    sequence_offsets,
    clip_low,
    clip_high,
    dual_clip,
    kl_coef,
    kl_estimator,
    sequence_level,
    index,
    rows,
    num_rows,
    token_loss,
    log_probs,
    ratios,
    grad,
    stats,
    num_threads,
):
    n = tokens.shape[0]
    lengths = (
        n,
        old_log_probs.shape[0],
        advantages.shape[0],
        weights.shape[0],
        present(ref_log_probs.shape[0], n),
        token_loss.shape[0],
        log_probs.shape[0],
        ratios.shape[0],
    )
    if not _shapes_ok(table, contexts, lengths, index, rows, num_rows, grad, stats, 7):
        return BAD_SHAPES
    if spans_overlap(
        (
            _bounds(index),
            _bounds(rows),
            _bounds(num_rows),
            _bounds(token_loss),
            _bounds(log_probs),
            _bounds(ratios),
            _bounds(grad),
            _bounds(stats),
            _bounds(table),
            _bounds(contexts),
            _bounds(tokens),
            _bounds(old_log_probs),
            _bounds(advantages),
            _bounds(weights),
            _bounds(ref_log_probs),
            _bounds(sequence_offsets),
        ),
        8,
    ):
        return OVERLAPPING_ARRAYS
    status = _check(table, contexts, tokens, weights)
    if status:
        return status
    status, ref, params = ppo_arguments(
        old_log_probs,
        advantages,
        ref_log_probs,
        sequence_offsets,
        n,
        clip_low,
        clip_high,
        dual_clip,
        kl_coef,
        kl_estimator,
        sequence_level,
    )
    if status:
        return status
    return _tabular(
        PPO,
        table,
        contexts,
        tokens,
        old_log_probs,
        advantages,
        ref,
        weights,
        sequence_offsets,
        bool(sequence_level),
        params,
        index,
        rows,
        num_rows,
        token_loss,
        log_probs,
        ratios,
        grad,
        stats,
        num_threads,
    )


@njit(**NJIT)
def kl_penalty_loss_tabular(
    table,
    contexts,
    tokens,
    ref_log_probs,
    weights,
    kl_estimator,
    index,
    rows,
    num_rows,
    token_loss,
    log_probs,
    grad,
    stats,
    num_threads,
):
    lengths = (
        tokens.shape[0],
        ref_log_probs.shape[0],
        weights.shape[0],
        token_loss.shape[0],
        log_probs.shape[0],
    )
    if not _shapes_ok(table, contexts, lengths, index, rows, num_rows, grad, stats, 1):
        return BAD_SHAPES
    if spans_overlap(
        (
            _bounds(index),
            _bounds(rows),
            _bounds(num_rows),
            _bounds(token_loss),
            _bounds(log_probs),
            _bounds(grad),
            _bounds(stats),
            _bounds(table),
            _bounds(contexts),
            _bounds(tokens),
            _bounds(ref_log_probs),
            _bounds(weights),
        ),
        7,
    ):
        return OVERLAPPING_ARRAYS
    status = _check(table, contexts, tokens, weights)
    if status:
        return status
    if not_all_finite(ref_log_probs):
        return BAD_REF_LOG_PROBS
    n = tokens.shape[0]
    zeros = np.zeros(n)
    params = (0.0, 0.0, 0.0, 0.0, np.int64(kl_estimator), np.int64(1))
    return _tabular(
        KL,
        table,
        contexts,
        tokens,
        zeros,
        zeros,
        ref_log_probs,
        weights,
        tokens[:0],
        False,
        params,
        index,
        rows,
        num_rows,
        token_loss,
        log_probs,
        np.empty(n),
        grad,
        stats,
        num_threads,
    )


@njit(**NJIT)
def a2c_loss_tabular(
    table,
    contexts,
    tokens,
    advantages,
    values,
    returns,
    old_values,
    weights,
    value_clip,
    value_coef,
    entropy_coef,
    index,
    rows,
    num_rows,
    token_loss,
    log_probs,
    entropies,
    grad,
    value_grad,
    stats,
    num_threads,
):
    n = contexts.shape[0]
    n_old = old_values.shape[0]  # read only with value clipping
    lengths = (
        tokens.shape[0],
        advantages.shape[0],
        values.shape[0],
        returns.shape[0],
        n_old if value_clip > 0.0 else present(n_old, n),
        weights.shape[0],
        token_loss.shape[0],
        log_probs.shape[0],
        entropies.shape[0],
        value_grad.shape[0],
    )
    if not _shapes_ok(table, contexts, lengths, index, rows, num_rows, grad, stats, 4):
        return BAD_SHAPES
    if spans_overlap(
        (
            _bounds(index),
            _bounds(rows),
            _bounds(num_rows),
            _bounds(token_loss),
            _bounds(log_probs),
            _bounds(entropies),
            _bounds(grad),
            _bounds(value_grad),
            _bounds(stats),
            _bounds(table),
            _bounds(contexts),
            _bounds(tokens),
            _bounds(advantages),
            _bounds(values),
            _bounds(returns),
            _bounds(old_values),
            _bounds(weights),
        ),
        9,
    ):
        return OVERLAPPING_ARRAYS
    status = _check(table, contexts, tokens, weights)
    if status:
        return status
    status = a2c_status(advantages, values, returns, old_values, value_clip)
    if status:
        return status
    status, nt, total, lse, ent = _log_probs(
        table, contexts, tokens, index, rows, num_rows, log_probs, True, grad, num_threads
    )
    if status:
        return status
    u = num_rows[0]
    n_vocab = table.shape[1]
    csum = np.zeros(u)
    esum = np.zeros(u)
    acc = np.zeros((u, n_vocab))
    sw = loss = pgs = vls = hs = 0.0
    for i in range(tokens.shape[0]):
        k = np.uint64(index[np.uint64(contexts[i])])  # (checked ids: no wrap checks)
        lp = log_probs[i]
        h = ent[k]
        old = old_values[i] if value_clip > 0.0 else 0.0
        lv, dlv = value_terms(values[i], returns[i], old, value_clip)
        adv = advantages[i]
        pg = -adv * lp
        w = weights[i]
        c = w * -adv
        csum[k] += c
        esum[k] += w * entropy_coef
        acc[k, np.uint64(tokens[i])] += c
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
        _grad_par(table, rows, u, csum, esum, total, lse, ent, acc, grad, nt)
    else:
        _grad_rows(table, rows, 0, u, 1, csum, esum, total, lse, ent, acc, grad)
    stats[0] = loss
    stats[1] = pgs
    stats[2] = vls
    stats[3] = hs / sw if sw > 0.0 else 0.0
    return 0
