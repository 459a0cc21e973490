"""Reference policy-gradient losses of a tabular softmax policy (plain Python); defines the
arithmetic of every backend.

The policy is a logits table (S, V): token i (context ``ctx_i``, sampled token ``a_i``) has
``logp_i = table[ctx_i, a_i] - lse(ctx_i)``, the row statistics (m, S, e, lse) being those of
:mod:`fastlmrl._python.log_probs` (same fast exp for float32 tables).  The per-token terms are
``token_terms`` of :mod:`fastlmrl._python.policy_losses` (modes REINFORCE / PPO / KL), with every
per-token input in float64 (no rounding to the table's dtype).

Order of operations (the kernels follow it exactly):

0. after the checks of the arguments, still before anything is written: every visited row must
   hold no NaN or +inf and a finite entry (else BAD_LOGITS), and no token may select a -inf
   logit (else BAD_TOKENS);
1. distinct contexts ``rows`` in increasing order; ``index[s]`` = position of s in rows (-1 if s
   was not visited);
2. ``lse_u`` of every row u;
3. tokens in index order: logp_i; for sequence-level ratios the per-sequence mean log-ratio (as in
   policy_losses); the per-token terms, ``c_i = w_i * dl_i/dlogp_i``;
   ``C_u += c_i`` and ``A[u, a_i] += c_i`` (float64, starting from 0.0, in token order); the
   weighted batch sums (float64, token order);
4. every row: ``G[u, j] = (-C_u) * p_uj + A[u, j]`` in float64 (p_uj = e_j * (1 / S_u)), rounded
   once to the table's dtype.
"""

import math

# The statuses these kernels return (fastlmrl._status.Status, as plain ints).
from .._status import (
    BAD_ADVANTAGES,
    BAD_BASELINES,
    BAD_CONTEXTS,
    BAD_LOGITS,
    BAD_OLD_VALUES,
    BAD_REF_LOG_PROBS,
    BAD_RETURNS,
    BAD_SHAPES,
    BAD_TOKENS,
    BAD_VALUES,
    BAD_WEIGHTS,
    OVERLAPPING_ARRAYS,
)
from ._common import written_overlaps
from ._ieee import exp as ieee_exp
from .log_probs import exp_for, probs, row_entropy, row_stats
from .policy_losses import (
    KL,
    PPO,
    REINFORCE,
    lengths_ok,
    log_ratios,
    ppo_arguments,
    present,
    token_terms,
    value_terms,
)

__all__ = [
    "a2c_loss_tabular",
    "kl_penalty_loss_tabular",
    "ppo_loss_tabular",
    "reinforce_loss_tabular",
    "token_log_probs_tabular",
]


def _finite(values):
    return all(math.isfinite(v) for v in values)


def _ids_ok(table, contexts, lengths, index, rows, num_rows):
    """The shape check of token_log_probs_tabular: every per-token array (``lengths``) as long as
    ``contexts`` (N), ``index`` (S,), ``rows`` at least min(N, S) long, ``num_rows`` at least 1."""
    n, n_contexts = contexts.shape[0], table.shape[0]
    return (
        table.ndim == 2
        and lengths_ok(n, lengths)
        and index.shape == (n_contexts,)
        and rows.ndim == 1
        and rows.shape[0] >= min(n, n_contexts)
        and num_rows.ndim == 1
        and num_rows.shape[0] >= 1
    )


def _shapes_ok(table, contexts, lengths, index, rows, num_rows, grad, stats, n_stats):
    """The shape check every loss kernel does first: as ``_ids_ok``, plus ``grad`` with at least
    min(N, S) rows of V entries and ``stats`` at least ``n_stats`` long."""
    return (
        _ids_ok(table, contexts, lengths, index, rows, num_rows)
        and grad.ndim == 2
        and grad.shape[0] >= min(contexts.shape[0], table.shape[0])
        and grad.shape[1] == table.shape[1]
        and stats.ndim == 1
        and stats.shape[0] >= n_stats
    )


def _overlapping(written, read):
    """Does an array the kernel writes (``written``: index, rows, num_rows, the outputs) share
    memory with another written array or with one of ``read`` (status 8, OVERLAPPING_ARRAYS,
    checked before the first write; O(1) per pair, by address range)?"""
    for k, w in enumerate(written):
        if written_overlaps(w, *written[k + 1 :], *read):
            return True
    return False


def _check(table, contexts, tokens, weights):
    n_contexts, n_vocab = table.shape
    for s in contexts:
        if s < 0 or s >= n_contexts:
            return BAD_CONTEXTS
    for a in tokens:
        if a < 0 or a >= n_vocab:
            return BAD_TOKENS
    for w in weights:
        if not (math.isfinite(w) and w >= 0.0):
            return BAD_WEIGHTS
    return 0


def _rows_ok(table, contexts, tokens):
    """Step 0, before anything is written: BAD_LOGITS when a visited row holds NaN or +inf or no
    finite entry (the rows step 2 refuses), BAD_TOKENS when a token selects a -inf logit (a
    log-probability of -inf), else 0."""
    seen = set()
    for s in contexts:
        if s not in seen:
            seen.add(s)
            x = table[s].tolist()
            if not (all(v < math.inf for v in x) and any(v > -math.inf for v in x)):
                return BAD_LOGITS
    for s, a in zip(contexts, tokens):
        if table[s, a] == -math.inf:
            return BAD_TOKENS
    return 0


def _log_probs(table, contexts, tokens, index, rows, num_rows):
    """Steps 0-2 and the log-probs of step 3: (status, row statistics, log-probs)."""
    status = _rows_ok(table, contexts, tokens)
    if status:
        return status, None, None
    # 1. distinct contexts, increasing
    for s in range(table.shape[0]):
        index[s] = -1
    for s in contexts:
        index[s] = 0
    u = 0
    for s in range(table.shape[0]):
        if index[s] == 0:
            index[s] = u
            rows[u] = s
            u += 1
    num_rows[0] = u
    # 2. row statistics
    exp = exp_for(table.dtype.itemsize == 4)
    stat = []
    for k in range(u):
        x = table[rows[k]].tolist()
        m, total, e, ok = row_stats(x, exp)
        if not ok:  # (refused by step 0 already)
            return BAD_LOGITS, None, None
        stat.append((x, total, e, m + math.log(total)))
    # 3. (first) log-probs of the tokens in order
    logp = [0.0] * len(tokens)
    for i in range(len(tokens)):
        k = index[contexts[i]]
        lp = stat[k][0][tokens[i]] - stat[k][3]
        if lp == -math.inf:  # step 0 missed only x - lse overflowing (float64 x near -1e308)
            return BAD_TOKENS, None, None
        logp[i] = lp
    return 0, stat, logp


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
    params,
    index,
    rows,
    num_rows,
    token_loss,
    log_probs,
    ratios,
    grad,
    stats,
):
    clip_low, clip_high, dual_clip, kl_coef, estimator, has_ref, seq_level = params
    n = len(tokens)
    status, stat, logp = _log_probs(table, contexts, tokens, index, rows, num_rows)
    if status:
        return status
    u = len(stat)
    lr = log_ratios(logp, x1, weights, seq_offsets, seq_level) if mode == PPO else [0.0] * n
    csum = [0.0] * u
    acc = [[0.0] * table.shape[1] for _ in range(u)]
    sw = loss = pg = kl = clipped = dual = k1 = k3 = 0.0
    for i in range(n):
        t = token_terms(
            mode,
            logp[i],
            x1[i],
            x2[i],
            x3[i],
            lr[i],
            clip_low,
            clip_high,
            dual_clip,
            kl_coef,
            estimator,
            has_ref,
        )
        w = weights[i]
        c = w * t[1]
        k = index[contexts[i]]
        csum[k] += c
        acc[k][tokens[i]] += c
        token_loss[i] = t[0]
        log_probs[i] = logp[i]
        ratios[i] = t[2]
        sw += w
        loss += w * t[0]
        pg += w * t[3]
        kl += w * t[4]
        clipped += w * t[5]
        dual += w * t[6]
        if mode == PPO:
            d = logp[i] - x1[i]
            k1 += w * -d
            k3 += w * ((ieee_exp(d) - 1.0) - d)
    # 4. gradient rows
    for k in range(u):
        _, total, e, _ = stat[k]
        g = 1.0 / total
        nc = -csum[k]
        grad[k] = [nc * (e[j] * g) + acc[k][j] for j in range(len(e))]
    stats[0] = loss
    if mode == PPO:
        stats[1] = pg
        stats[2] = kl
        stats[3] = clipped / sw if sw > 0.0 else 0.0
        stats[4] = dual / sw if sw > 0.0 else 0.0
        stats[5] = k1 / sw if sw > 0.0 else 0.0
        stats[6] = k3 / sw if sw > 0.0 else 0.0
    return 0


def token_log_probs_tabular(table, contexts, tokens, index, rows, num_rows, log_probs, num_threads):
    if not _ids_ok(table, contexts, (tokens.shape[0], log_probs.shape[0]), index, rows, num_rows):
        return BAD_SHAPES
    if _overlapping((index, rows, num_rows, log_probs), (table, contexts, tokens)):
        return OVERLAPPING_ARRAYS
    c_, t_ = contexts.tolist(), tokens.tolist()
    status = _check(table, c_, t_, [])
    if status:
        return status
    status, _, logp = _log_probs(table, c_, t_, index, rows, num_rows)
    if status:
        return status
    for i, lp in enumerate(logp):
        log_probs[i] = lp
    return 0


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
    if _overlapping(
        (index, rows, num_rows, token_loss, log_probs, grad, stats),
        (table, contexts, tokens, returns, baselines, weights),
    ):
        return OVERLAPPING_ARRAYS
    c_, t_, r_, b_, w_ = (a.tolist() for a in (contexts, tokens, returns, baselines, weights))
    status = _check(table, c_, t_, w_)
    if status:
        return status
    if not _finite(r_):
        return BAD_RETURNS
    if not _finite(b_):
        return BAD_BASELINES
    n = len(t_)
    return _tabular(
        REINFORCE,
        table,
        c_,
        t_,
        r_,
        b_,
        [0.0] * n,
        w_,
        [],
        (0.0, 0.0, 0.0, 0.0, 3, 0, 0),
        index,
        rows,
        num_rows,
        token_loss,
        log_probs,
        [0.0] * n,
        grad,
        stats,
    )


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
    n = contexts.shape[0]
    lengths = (
        tokens.shape[0],
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
    if _overlapping(
        (index, rows, num_rows, token_loss, log_probs, ratios, grad, stats),
        (
            table,
            contexts,
            tokens,
            old_log_probs,
            advantages,
            weights,
            ref_log_probs,
            sequence_offsets,
        ),
    ):
        return OVERLAPPING_ARRAYS
    c_, t_, o_, a_, w_, r_, s_ = (
        x.tolist()
        for x in (
            contexts,
            tokens,
            old_log_probs,
            advantages,
            weights,
            ref_log_probs,
            sequence_offsets,
        )
    )
    status = _check(table, c_, t_, w_)
    if status:
        return status
    status, r_, params = ppo_arguments(
        o_,
        a_,
        r_,
        s_,
        len(t_),
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
        c_,
        t_,
        o_,
        a_,
        r_,
        w_,
        s_,
        params,
        index,
        rows,
        num_rows,
        token_loss,
        log_probs,
        ratios,
        grad,
        stats,
    )


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
    if _overlapping(
        (index, rows, num_rows, token_loss, log_probs, grad, stats),
        (table, contexts, tokens, ref_log_probs, weights),
    ):
        return OVERLAPPING_ARRAYS
    c_, t_, r_, w_ = (x.tolist() for x in (contexts, tokens, ref_log_probs, weights))
    status = _check(table, c_, t_, w_)
    if status:
        return status
    if not _finite(r_):
        return BAD_REF_LOG_PROBS
    n = len(t_)
    return _tabular(
        KL,
        table,
        c_,
        t_,
        [0.0] * n,
        [0.0] * n,
        r_,
        w_,
        [],
        (0.0, 0.0, 0.0, 0.0, int(kl_estimator), 1, 0),
        index,
        rows,
        num_rows,
        token_loss,
        log_probs,
        [0.0] * n,
        grad,
        stats,
    )


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
    """A2C (policy term, value term, entropy bonus) on a table.  Row statistics as above plus the
    row entropy H_u; per token the terms of the per-token a2c_loss; per row
    ``G[u, j] = ((-C_u) * p_uj + E_u * h_uj) + A[u, j]`` with ``E_u`` = sum of w_i * entropy_coef
    over the row's tokens and ``h_uj = p_uj * ((x_j - lse_u) + H_u)`` (0 where p_uj = 0)."""
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
    if _overlapping(
        (index, rows, num_rows, token_loss, log_probs, entropies, grad, value_grad, stats),
        (table, contexts, tokens, advantages, values, returns, old_values, weights),
    ):
        return OVERLAPPING_ARRAYS
    c_, t_, a_, v_, r_, o_, w_ = (
        x.tolist() for x in (contexts, tokens, advantages, values, returns, old_values, weights)
    )
    status = _check(table, c_, t_, w_)
    if status:
        return status
    for arr, code in ((a_, BAD_ADVANTAGES), (v_, BAD_VALUES), (r_, BAD_RETURNS)):
        if not _finite(arr):
            return code
    if value_clip > 0.0 and not _finite(o_):
        return BAD_OLD_VALUES
    status, stat, logp = _log_probs(table, c_, t_, index, rows, num_rows)
    if status:
        return status
    u, n = len(stat), len(t_)
    ent = [row_entropy(x, probs(e, total), lse) for x, total, e, lse in stat]
    csum = [0.0] * u
    esum = [0.0] * u
    acc = [[0.0] * table.shape[1] for _ in range(u)]
    sw = loss = pgs = vls = hs = 0.0
    for i in range(n):
        k = index[c_[i]]
        lp, h = logp[i], ent[k]
        old = o_[i] if value_clip > 0.0 else 0.0
        lv, dlv = value_terms(v_[i], r_[i], old, value_clip)
        adv = a_[i]
        pg = -adv * lp
        w = w_[i]
        c = w * -adv
        csum[k] += c
        esum[k] += w * entropy_coef
        acc[k][t_[i]] += c
        token_loss[i] = pg + value_coef * lv - entropy_coef * h
        log_probs[i] = lp
        entropies[i] = h
        value_grad[i] = (w * value_coef) * dlv
        sw += w
        loss += w * token_loss[i]
        pgs += w * pg
        vls += w * lv
        hs += w * h
    for k in range(u):
        x, total, e, lse = stat[k]
        p = probs(e, total)
        nc, ce = -csum[k], esum[k]
        grad[k] = [
            (nc * p[j] + ce * (p[j] * ((x[j] - lse) + ent[k]) if p[j] > 0.0 else 0.0)) + acc[k][j]
            for j in range(len(x))
        ]
    stats[0] = loss
    stats[1] = pgs
    stats[2] = vls
    stats[3] = hs / sw if sw > 0.0 else 0.0
    return 0
