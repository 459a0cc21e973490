"""Reference policy-gradient losses over logits (plain Python); defines the arithmetic of every
backend.

Every loss is ``L = sum_i w_i * l_i`` over tokens i (row i of the (N, V) logits, sampled token a_i).
Row statistics, softmax ``p`` and ``EXP`` are those of :mod:`fastlmrl._python.log_probs`;
``logp_i = x_{i,a_i} - lse_i``.  For the pure policy-gradient losses the gradient of a row is
``c_i * (onehot(a_i) - p_i)`` with ``c_i = w_i * dl_i/dlogp_i`` (written by ``grad_row``).

Per-token terms (``token_terms``) -- modes: 0 REINFORCE, 1 PPO (clipped, optional dual clip and KL
penalty), 2 KL penalty alone.  Scalar exps/logs of log-ratios use ``math.exp`` in every backend.
Reductions over tokens are in float64, blocked (``reduce_rows``): serial over the rows of each
block of consecutive rows, then serial over the blocks in order.
"""

import math

# statuses: fastlmrl._status.Status values, as plain ints
from .._status import (
    BAD_ADVANTAGES,
    BAD_BASELINES,
    BAD_OLD_LOG_PROBS,
    BAD_OLD_VALUES,
    BAD_REF_LOG_PROBS,
    BAD_RETURNS,
    BAD_SEQUENCE_OFFSETS,
    BAD_SHAPES,
    BAD_VALUES,
    BAD_WEIGHTS,
    OVERLAPPING_ARRAYS,
)
from ._ieee import exp as ieee_exp
from .log_probs import (
    BAD_LOGITS,
    BAD_TOKENS,
    exp_for,
    grad_row,
    overlapping,
    probs,
    row_entropy,
    row_stats,
)

__all__ = ["a2c_loss", "kl_penalty_loss", "ppo_loss", "reinforce_loss"]


REINFORCE, PPO, KL = 0, 1, 2

# Batch sums over tokens are blocked: rows are grouped in consecutive blocks of reduce_rows(V)
# rows (V = vocabulary size), each sum is accumulated serially over the rows of a block (from
# 0.0), and the block sums are added serially in block order (from 0.0).  The blocks do not depend
# on the number of threads, so neither do the results; the compiled backends compute one block per
# task and keep only (N_SUMS,) partial sums per block instead of per-token terms.
PARALLEL_MIN_ELEMENTS = 1 << 16
REDUCE_MAX_ROWS = 256
N_SUMS = 8  # sw, loss, pg, kl, clipped, dual, k1, k3


def reduce_rows(n_vocab):
    """Rows per reduction block: min(256, 1 + 65536 // V) -- about 64k logits, at most 256 rows."""
    r = 1 + PARALLEL_MIN_ELEMENTS // max(n_vocab, 1)
    return min(r, REDUCE_MAX_ROWS)


def kl_term(logp, ref, estimator):
    """(D, dD/dlogp) of Schulman's estimator k1/k2/k3 of KL(pi || pi_ref) at the sampled token."""
    if estimator == 1:
        return logp - ref, 1.0
    if estimator == 2:
        d = logp - ref
        return 0.5 * d * d, d
    u = ref - logp
    eu = ieee_exp(u)
    return (eu - 1.0) - u, 1.0 - eu


def token_terms(
    mode, logp, x1, x2, x3, lr, clip_low, clip_high, dual_clip, kl_coef, estimator, has_ref
):
    """(loss, dloss/dlogp, ratio, pg, kl, clipped, dual_clipped) of one token.

    REINFORCE: x1 = return, x2 = baseline.  PPO: x1 = old log-prob, x2 = advantage, x3 = ref
    log-prob, ``lr`` = the log-ratio used (token: logp - old; sequence: the sequence mean).
    KL: x3 = ref log-prob.
    """
    if mode == REINFORCE:
        adv = x1 - x2
        pg = -adv * logp
        return pg, -adv, 1.0, pg, 0.0, 0, 0
    kl = 0.0
    dkl = 0.0
    if has_ref:
        kl, dkl = kl_term(logp, x3, estimator)
    if mode == KL:
        return kl, dkl, 1.0, 0.0, kl, 0, 0
    adv = x2
    rho = ieee_exp(lr)
    lo = 1.0 - clip_low
    hi = 1.0 + clip_high
    rc = lo if rho < lo else (hi if rho > hi else rho)
    un = -adv * rho
    cl = -adv * rc
    clipped = 0
    dual = 0
    if un >= cl:
        pg = un
        d = -adv * rho
    else:
        pg = cl
        d = 0.0
        clipped = 1
    if dual_clip > 0.0 and adv < 0.0:
        l3 = -dual_clip * adv
        if pg > l3:
            pg = l3
            d = 0.0
            dual = 1
    return pg + kl_coef * kl, d + kl_coef * dkl, rho, pg, kl, clipped, dual


def present(length, n):
    """The length an optional per-token array is checked at: empty (absent) passes as n."""
    return length if length else n


def lengths_ok(n, lengths):
    """Every per-token array (``lengths``: their lengths) is n long.  Shared with the tabular
    losses."""
    return all(k == n for k in lengths)


def shapes_ok(logits, lengths, grad, stats, n_stats):
    """The shape check every loss kernel does first: each per-token array (``lengths``, tokens
    included) of length N, ``grad`` (N, V) like ``logits``, ``stats`` at least ``n_stats`` long."""
    return (
        lengths_ok(logits.shape[0], lengths)
        and grad.shape == logits.shape
        and stats.ndim == 1
        and stats.shape[0] >= n_stats
    )


def _finite(values):
    for v in values:
        if not math.isfinite(v):
            return False
    return True


def _check_common(logits, tokens, weights):
    n_vocab = logits.shape[1]
    for a in tokens:
        if a < 0 or a >= n_vocab:
            return BAD_TOKENS
    for w in weights:
        if not (math.isfinite(w) and w >= 0.0):
            return BAD_WEIGHTS
    return 0


def log_ratios(logp, old, weights, seq_offsets, seq_level):
    """The log-ratio each token uses: logp - old (token level), or the mean of logp - old over
    the sequence's tokens with non-zero weight (GSPO).  Shared with the tabular losses."""
    if not seq_level:
        return [lp - o for lp, o in zip(logp, old)]
    lr = [0.0] * len(logp)
    for k in range(len(seq_offsets) - 1):
        total = 0.0
        count = 0
        for i in range(seq_offsets[k], seq_offsets[k + 1]):
            if weights[i] != 0.0:
                total += logp[i] - old[i]
                count += 1
        mean = total / count if count > 0 else 0.0
        for i in range(seq_offsets[k], seq_offsets[k + 1]):
            lr[i] = mean
    return lr


def _stats_rows(logits, tokens):
    """Row statistics of every row, or a status (BAD_LOGITS, or BAD_TOKENS for a -inf token)."""
    rows = logits.tolist()
    f32 = logits.dtype.itemsize == 4
    exp = exp_for(f32)
    out = []
    for x, a in zip(rows, tokens):
        m, total, e, ok = row_stats(x, exp)
        if not ok:
            return BAD_LOGITS, None
        lse = m + math.log(total)
        out.append((x, m, total, e, lse, x[a] - lse))
    for r in out:
        if r[5] == -math.inf:
            return BAD_TOKENS, None
    return 0, (out, exp)


def _pg(
    mode,
    logits,
    tokens,
    x1,
    x2,
    x3,
    weights,
    seq_offsets,
    params,
    token_loss,
    log_probs,
    ratios,
    grad,
    stats,
):
    clip_low, clip_high, dual_clip, kl_coef, estimator, has_ref, seq_level = params
    status, res = _stats_rows(logits, tokens)
    if status:
        return status
    rows, exp = res
    n = len(rows)
    logp = [r[5] for r in rows]
    lr = log_ratios(logp, x1, weights, seq_offsets, seq_level) if mode == PPO else [0.0] * n
    terms = [
        token_terms(
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
        for i in range(n)
    ]
    for i, (_x, _m, total, e, _lse, lp) in enumerate(rows):
        c = weights[i] * terms[i][1]
        grad[i] = grad_row(probs(e, total), tokens[i], c)
        token_loss[i] = terms[i][0]
        log_probs[i] = lp
        ratios[i] = terms[i][2]
    # batch sums: serially over the rows of each block of reduce_rows(V) rows, then over blocks
    rows_b = reduce_rows(logits.shape[1])
    sums = [0.0] * N_SUMS
    for lo in range(0, n, rows_b):
        part = [0.0] * N_SUMS
        for i in range(lo, min(lo + rows_b, n)):
            w = weights[i]
            t = terms[i]
            part[0] += w
            part[1] += w * t[0]
            part[2] += w * t[3]
            part[3] += w * t[4]
            part[4] += w * t[5]
            part[5] += w * t[6]
            if mode == PPO:
                d = logp[i] - x1[i]
                part[6] += w * -d
                part[7] += w * ((ieee_exp(d) - 1.0) - d)
        for k in range(N_SUMS):
            sums[k] += part[k]
    sw, loss, pg, kl, clipped, dual, k1, k3 = sums
    stats[0] = loss
    if mode == PPO:
        stats[1] = pg
        stats[2] = kl
        stats[3] = clipped / sw if sw > 0.0 else 0.0
        stats[4] = dual / sw if sw > 0.0 else 0.0
        stats[5] = k1 / sw if sw > 0.0 else 0.0
        stats[6] = k3 / sw if sw > 0.0 else 0.0
    return 0


def reinforce_loss(
    logits, tokens, returns, baselines, weights, token_loss, log_probs, grad, stats, num_threads
):
    lengths = (
        tokens.shape[0],
        returns.shape[0],
        baselines.shape[0],
        weights.shape[0],
        token_loss.shape[0],
        log_probs.shape[0],
    )
    if not shapes_ok(logits, lengths, grad, stats, 1):
        return BAD_SHAPES
    if overlapping(
        [token_loss, log_probs, grad, stats],
        [logits, tokens, returns, baselines, weights],
        (grad, logits),
    ):
        return OVERLAPPING_ARRAYS  # grad == logits exactly is allowed (in place)
    t_, r_, b_, w_ = (a.tolist() for a in (tokens, returns, baselines, weights))
    status = _check_common(logits, t_, w_)
    if status:
        return status
    if not _finite(r_):
        return BAD_RETURNS
    if not _finite(b_):
        return BAD_BASELINES
    n = len(t_)
    return _pg(
        REINFORCE,
        logits,
        t_,
        r_,
        b_,
        [0.0] * n,
        w_,
        [],
        (0.0, 0.0, 0.0, 0.0, 3, 0, 0),
        token_loss,
        log_probs,
        [0.0] * n,
        grad,
        stats,
    )


def _check_offsets(offsets, n):
    if len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != n:
        return False
    for k in range(len(offsets) - 1):
        if offsets[k + 1] < offsets[k]:
            return False
    return True


def ppo_arguments(
    o_, a_, r_, s_, n, clip_low, clip_high, dual_clip, kl_coef, kl_estimator, sequence_level
):
    """The PPO-specific checks (status first) and (ref log-probs, params) for ``_pg``; shared
    with the tabular losses."""
    if not _finite(a_):
        return BAD_ADVANTAGES, None, None
    if not _finite(o_):
        return BAD_OLD_LOG_PROBS, None, None
    if not _finite(r_):
        return BAD_REF_LOG_PROBS, None, None
    if sequence_level and not _check_offsets(s_, n):
        return BAD_SEQUENCE_OFFSETS, None, None
    has_ref = 1 if len(r_) > 0 else 0
    if not has_ref:
        r_ = [0.0] * n
    return (
        0,
        r_,
        (clip_low, clip_high, dual_clip, kl_coef, int(kl_estimator), has_ref, int(sequence_level)),
    )


def ppo_loss(
    logits,
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
    token_loss,
    log_probs,
    ratios,
    grad,
    stats,
    num_threads,
):
    n = logits.shape[0]
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
    if not shapes_ok(logits, lengths, grad, stats, 7):
        return BAD_SHAPES
    if overlapping(
        [token_loss, log_probs, ratios, grad, stats],
        [logits, tokens, old_log_probs, advantages, weights, ref_log_probs, sequence_offsets],
        (grad, logits),
    ):
        return OVERLAPPING_ARRAYS  # grad == logits exactly is allowed (in place)
    t_, o_, a_, w_, r_, s_ = (
        x.tolist()
        for x in (tokens, old_log_probs, advantages, weights, ref_log_probs, sequence_offsets)
    )
    status = _check_common(logits, t_, w_)
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
    return _pg(
        PPO, logits, t_, o_, a_, r_, w_, s_, params, token_loss, log_probs, ratios, grad, stats
    )


def kl_penalty_loss(
    logits,
    tokens,
    ref_log_probs,
    weights,
    kl_estimator,
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
    if not shapes_ok(logits, lengths, grad, stats, 1):
        return BAD_SHAPES
    if overlapping(
        [token_loss, log_probs, grad, stats],
        [logits, tokens, ref_log_probs, weights],
        (grad, logits),
    ):
        return OVERLAPPING_ARRAYS  # grad == logits exactly is allowed (in place)
    t_, r_, w_ = (x.tolist() for x in (tokens, ref_log_probs, weights))
    status = _check_common(logits, t_, w_)
    if status:
        return status
    if not _finite(r_):
        return BAD_REF_LOG_PROBS
    n = len(t_)
    return _pg(
        KL,
        logits,
        t_,
        [0.0] * n,
        [0.0] * n,
        r_,
        w_,
        [],
        (0.0, 0.0, 0.0, 0.0, int(kl_estimator), 1, 0),
        token_loss,
        log_probs,
        [0.0] * n,
        grad,
        stats,
    )


def value_terms(v, ret, old, value_clip):
    """(L^V, dL^V/dV): (V - R)^2, or max((V - R)^2, (V_clip - R)^2) with
    V_clip = V_old + clip(V - V_old, -eps, eps) when value_clip = eps > 0."""
    d = v - ret
    lu = d * d
    if value_clip <= 0.0:
        return lu, 2.0 * d
    dv = v - old
    inside = -value_clip <= dv <= value_clip
    vc = old + (-value_clip if dv < -value_clip else (value_clip if dv > value_clip else dv))
    dc = vc - ret
    lc = dc * dc
    if lu >= lc:
        return lu, 2.0 * d
    return lc, (2.0 * dc if inside else 0.0)


def a2c_loss(
    logits,
    tokens,
    advantages,
    values,
    returns,
    old_values,
    weights,
    value_clip,
    value_coef,
    entropy_coef,
    token_loss,
    log_probs,
    entropies,
    grad,
    value_grad,
    stats,
    num_threads,
):
    n = logits.shape[0]
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
    if not shapes_ok(logits, lengths, grad, stats, 4):
        return BAD_SHAPES
    if overlapping(
        [token_loss, log_probs, entropies, grad, value_grad, stats],
        [logits, tokens, advantages, values, returns, old_values, weights],
    ):
        return OVERLAPPING_ARRAYS  # grad over logits too (the compiled entropy gradient reads
        # the row after writing it)
    t_, a_, v_, r_, o_, w_ = (
        x.tolist() for x in (tokens, advantages, values, returns, old_values, weights)
    )
    status = _check_common(logits, t_, w_)
    if status:
        return status
    if not _finite(a_):
        return BAD_ADVANTAGES
    if not _finite(v_):
        return BAD_VALUES
    if not _finite(r_):
        return BAD_RETURNS
    if value_clip > 0.0 and not _finite(o_):
        return BAD_OLD_VALUES
    status, res = _stats_rows(logits, t_)
    if status:
        return status
    rows, exp = res
    n = len(rows)
    per = []
    for i, (x, _m, total, e, lse, lp) in enumerate(rows):
        p = probs(e, total)
        h = row_entropy(x, p, lse)
        old = o_[i] if value_clip > 0.0 else 0.0
        lv, dlv = value_terms(v_[i], r_[i], old, value_clip)
        pg = -a_[i] * lp
        w = w_[i]
        c = w * -a_[i]
        ce = w * entropy_coef
        nc = -c
        hj = [pj * (x[j] - lse + h) if pj > 0.0 else 0.0 for j, pj in enumerate(p)]
        g = [nc * pj + ce * hj[j] for j, pj in enumerate(p)]
        a = t_[i]
        g[a] = c * (1.0 - p[a]) + ce * hj[a]
        per.append(
            (g, pg + value_coef * lv - entropy_coef * h, lp, h, pg, lv, (w * value_coef) * dlv)
        )
    sw = loss = pgs = vls = hs = 0.0
    for i, (g, tl, lp, h, pg, lv, dv) in enumerate(per):
        grad[i] = g
        token_loss[i] = tl
        log_probs[i] = lp
        entropies[i] = h
        value_grad[i] = dv
        w = w_[i]
        sw += w
        loss += w * tl
        pgs += w * pg
        vls += w * lv
        hs += w * h
    stats[0] = loss
    stats[1] = pgs
    stats[2] = vls
    stats[3] = hs / sw if sw > 0.0 else 0.0
    return 0
