"""Numba policy-gradient losses over logits (same arithmetic as fastlmrl/_python/policy_losses.py).

One fused pass per row: row statistics, log pi(a), the per-token loss and
``c_i = w_i dl_i/dlogp_i``, then the gradient row ``c_i (onehot - p)``.  Rows are grouped in
reduction blocks of ``reduce_rows(V)`` consecutive rows (at most 256; the reference defines them);
``prange`` workers take the next block from an atomic counter, and each block adds its rows' terms
to (N_SUMS,) partial sums in row order, stored in ``part[b]``; the batch sums add ``part`` in block
order afterwards.  No per-token term array, and the blocks do not depend on the thread count, so
neither do the bits.  Within a block rows are taken in pairs (both rows' statistics, then both
rows' per-token work) so that the two dependency chains (log, exp, gradient) overlap, and the
token-level PPO block loop is compiled with its mode and ordinary stores as constants (together
about 15% less time per row at V = 64; the generic loop serves the other cases, keeping the
compile time down).
Sequence-level (GSPO) ratios need every log-prob of a sequence first: a statistics pass, the
per-sequence means (serial), then the fused pass.
"""

__all__ = ["a2c_loss", "kl_penalty_loss", "ppo_loss", "reinforce_loss"]
import math

import numpy as np
from numba import njit, prange

from .._status import (
    BAD_ADVANTAGES,
    BAD_BASELINES,
    BAD_LOGITS,
    BAD_OLD_LOG_PROBS,
    BAD_OLD_VALUES,
    BAD_REF_LOG_PROBS,
    BAD_RETURNS,
    BAD_SEQUENCE_OFFSETS,
    BAD_SHAPES,
    BAD_TOKENS,
    BAD_VALUES,
    BAD_WEIGHTS,
    OVERLAPPING_ARRAYS,
)
from ._common import NJIT, not_all_finite, out_of_range
from .fast_math import (
    INLINE,
    fetch_add,
    grad_fill,
    row_entropy,
    row_stats,
    store_fence,
    streaming_base,
)
from .log_probs import (
    PARALLEL_MIN_ELEMENTS,
    TOKEN_LOG_PROB,
    _stat_block,
    _stat_par,
    in_place_span,
    n_threads,
    next_block,
    rows_per_block,
    span,
    work,
)
from .overlap import spans_overlap

REINFORCE = 0
PPO = 1
KL = 2
# Batch sums are taken per block of reduce_rows(V) consecutive rows, then over blocks in order.
REDUCE_MAX_ROWS = 256
N_SUMS = 8  # per block: sw, loss, pg, kl, clipped, dual, k1, k3


@njit(**NJIT)
def kl_term(logp, ref, estimator):
    if estimator == 1:
        return logp - ref, 1.0
    if estimator == 2:
        d = logp - ref
        return 0.5 * d * d, d
    u = ref - logp
    eu = math.exp(u)
    return (eu - 1.0) - u, 1.0 - eu


def _token_terms(
    mode, logp, x1, x2, x3, lr, clip_low, clip_high, dual_clip, kl_coef, estimator, has_ref
):
    """(loss, dloss/dlogp, ratio, pg, kl, clipped, dual_clipped): see the reference."""
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
    rho = math.exp(lr)
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


token_terms = njit(**NJIT)(_token_terms)
_token_terms_inline = njit(**INLINE)(_token_terms)


@njit(**NJIT)
def present(length, n):
    """The length an optional per-token array is checked at: empty (absent) passes as n."""
    return length if length else n


@njit(**NJIT)
def lengths_ok(n, lengths):
    """Every per-token array (``lengths``: their lengths) is n long.  Shared with the tabular
    losses."""
    for k in lengths:
        if k != n:
            return False
    return True


@njit(**NJIT)
def shapes_ok(logits, lengths, grad, stats, n_stats):
    """The shape check every loss kernel does first: each per-token array (``lengths``, tokens
    included) of length N, ``grad`` (N, V) like ``logits``, ``stats`` at least ``n_stats`` long."""
    return (
        lengths_ok(logits.shape[0], lengths)
        and grad.shape == logits.shape
        and stats.shape[0] >= n_stats
    )


@njit(**NJIT)
def _bad_weights(weights):
    for i in range(weights.shape[0]):
        w = weights[i]
        if not (np.isfinite(w) and w >= 0.0):
            return True
    return False


@njit(**NJIT)
def sequence_log_ratios(logp, old, weights, offsets, out):
    """out[i] = the mean of logp - old over the tokens of i's sequence with non-zero weight
    (GSPO); ``out`` may be ``logp`` itself.  Shared with the tabular losses."""
    for k in range(offsets.shape[0] - 1):
        total = 0.0
        count = 0
        for i in range(offsets[k], offsets[k + 1]):
            if weights[i] != 0.0:
                total += logp[i] - np.float64(old[i])
                count += 1
        mean = total / count if count > 0 else 0.0
        for i in range(offsets[k], offsets[k + 1]):
            out[i] = mean


@njit(**NJIT)
def reduce_rows(n_vocab):
    """Rows per reduction block: min(REDUCE_MAX_ROWS, 1 + 65536 // V) (see the reference)."""
    r = 1 + PARALLEL_MIN_ELEMENTS // max(n_vocab, 1)
    return r if r < REDUCE_MAX_ROWS else REDUCE_MAX_ROWS


@njit(**INLINE)
def _pg_token(
    logits,
    tokens,
    mode,
    x1,
    x2,
    x3,
    weights,
    lr_in,
    use_lr,
    params,
    token_loss,
    log_probs,
    ratios,
    grad,
    e,
    nt_base,
    i,
    m,
    s,
):
    """Row i after its statistics (m, s; exponentials in ``e``): log pi(a_i), the token terms,
    the gradient row and the per-token outputs.  Returns (ok, w, loss, pg, kl, clipped, dual, k1,
    k3) -- the summands of row i (ok False: the sampled token has logit -inf, nothing written)."""
    clip_low, clip_high, dual_clip, kl_coef, estimator, has_ref = params
    a = tokens[i]
    lp = np.float64(logits[i, a]) - (m + math.log(s))
    if lp == -np.inf:
        return False, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    o = np.float64(x1[i])
    if use_lr:
        lr = lr_in[i]
    elif mode == PPO:
        lr = lp - o
    else:
        lr = 0.0
    t = _token_terms_inline(
        mode,
        lp,
        o,
        np.float64(x2[i]),
        np.float64(x3[i]),
        lr,
        clip_low,
        clip_high,
        dual_clip,
        kl_coef,
        estimator,
        has_ref,
    )
    w = np.float64(weights[i])
    grad_fill(e, 1.0 / s, a, w * t[1], grad, i, nt_base)
    token_loss[i] = t[0]
    log_probs[i] = lp
    ratios[i] = t[2]
    k1 = 0.0
    k3 = 0.0
    if mode == PPO:
        d = lp - o
        # exp(d) of the token-level ratio is rho = exp(lr) itself (same argument, same bits)
        ed = t[2] if not use_lr else math.exp(d)
        k1 = w * -d
        k3 = w * ((ed - 1.0) - d)
    return True, w, w * t[0], w * t[3], w * t[4], w * t[5], w * t[6], k1, k3


@njit(**INLINE)
def _pg_rows(
    logits,
    tokens,
    mode,
    x1,
    x2,
    x3,
    weights,
    lr_in,
    use_lr,
    params,
    token_loss,
    log_probs,
    ratios,
    part,
    b,
    rows,
    grad,
    e,
    e2,
    nt_base,
):
    """The fused pass over the rows of reduction block ``b``; part[b] = its partial sums
    (sw, loss, pg, kl, clipped, dual, k1, k3), each accumulated serially in row order.

    Rows are taken in pairs (statistics of both rows into the buffers ``e`` and ``e2``, then the
    per-token work of both): the two rows' dependency chains (log, exp, gradient) overlap, which
    matters for short rows.  The arithmetic of each row is unchanged."""
    lo = b * rows
    hi = min(lo + rows, logits.shape[0])
    bad_logits = 0
    bad_tokens = 0
    sw = loss = pg = kl = clipped = dual = k1 = k3 = 0.0
    for i in range(lo, hi, 2):
        j = i + 1
        m0, s0, ok0 = row_stats(logits, i, e)
        m1 = s1 = 0.0
        ok1 = False
        if j < hi:
            m1, s1, ok1 = row_stats(logits, j, e2)
            if not ok1:
                bad_logits += 1
        if ok0:
            r = _pg_token(
                logits,
                tokens,
                mode,
                x1,
                x2,
                x3,
                weights,
                lr_in,
                use_lr,
                params,
                token_loss,
                log_probs,
                ratios,
                grad,
                e,
                nt_base,
                i,
                m0,
                s0,
            )
            if r[0]:
                sw += r[1]
                loss += r[2]
                pg += r[3]
                kl += r[4]
                clipped += r[5]
                dual += r[6]
                k1 += r[7]
                k3 += r[8]
            else:
                bad_tokens += 1
        else:
            bad_logits += 1
        if ok1:
            r = _pg_token(
                logits,
                tokens,
                mode,
                x1,
                x2,
                x3,
                weights,
                lr_in,
                use_lr,
                params,
                token_loss,
                log_probs,
                ratios,
                grad,
                e2,
                nt_base,
                j,
                m1,
                s1,
            )
            if r[0]:
                sw += r[1]
                loss += r[2]
                pg += r[3]
                kl += r[4]
                clipped += r[5]
                dual += r[6]
                k1 += r[7]
                k3 += r[8]
            else:
                bad_tokens += 1
    part[b, 0] = sw
    part[b, 1] = loss
    part[b, 2] = pg
    part[b, 3] = kl
    part[b, 4] = clipped
    part[b, 5] = dual
    part[b, 6] = k1
    part[b, 7] = k3
    return bad_logits, bad_tokens


@njit(**NJIT)
def _pg_block(
    logits,
    tokens,
    mode,
    x1,
    x2,
    x3,
    weights,
    lr_in,
    use_lr,
    params,
    token_loss,
    log_probs,
    ratios,
    part,
    b,
    rows,
    grad,
    e,
    e2,
    nt_base,
):
    """_pg_rows over block b: the token-level PPO loop with ordinary stores is compiled with
    ``mode``, ``use_lr`` and ``nt_base`` = -1 as constants (no dead branches or streaming code in
    the loop: measured about 10% faster at V = 64); every other case runs the generic loop."""
    if mode == PPO and not use_lr and nt_base < 0:
        return _pg_rows(
            logits,
            tokens,
            PPO,
            x1,
            x2,
            x3,
            weights,
            lr_in,
            False,
            params,
            token_loss,
            log_probs,
            ratios,
            part,
            b,
            rows,
            grad,
            e,
            e2,
            -1,
        )
    res = _pg_rows(
        logits,
        tokens,
        mode,
        x1,
        x2,
        x3,
        weights,
        lr_in,
        use_lr,
        params,
        token_loss,
        log_probs,
        ratios,
        part,
        b,
        rows,
        grad,
        e,
        e2,
        nt_base,
    )
    if nt_base >= 0:
        store_fence()
    return res


@njit(cache=True, nogil=True, parallel=True)
def _pg_par(
    logits,
    tokens,
    mode,
    x1,
    x2,
    x3,
    weights,
    lr_in,
    use_lr,
    params,
    token_loss,
    log_probs,
    ratios,
    part,
    rows,
    grad,
    e,
    nt,
    nt_base,
):
    nb = part.shape[0]
    bad_logits = 0
    bad_tokens = 0
    counter = np.zeros(1, dtype=np.int64)
    for t in prange(nt):
        et = e[2 * t]
        et2 = e[2 * t + 1]
        sl = 0
        st = 0
        b = fetch_add(counter, 1)
        while b < nb:
            bl, bt = _pg_block(
                logits,
                tokens,
                mode,
                x1,
                x2,
                x3,
                weights,
                lr_in,
                use_lr,
                params,
                token_loss,
                log_probs,
                ratios,
                part,
                b,
                rows,
                grad,
                et,
                et2,
                nt_base,
            )
            sl += bl
            st += bt
            b = fetch_add(counter, 1)
        bad_logits += sl
        bad_tokens += st
    return bad_logits, bad_tokens


@njit(**NJIT)
def _reduce(mode, part, stats):
    """The batch sums: the block partial sums added serially in block order."""
    sw = loss = pg = kl = clipped = dual = k1 = k3 = 0.0
    for b in range(part.shape[0]):
        sw += part[b, 0]
        loss += part[b, 1]
        pg += part[b, 2]
        kl += part[b, 3]
        clipped += part[b, 4]
        dual += part[b, 5]
        k1 += part[b, 6]
        k3 += part[b, 7]
    stats[0] = loss
    if mode == PPO:
        stats[1] = pg
        stats[2] = kl
        stats[3] = clipped / sw if sw > 0.0 else 0.0
        stats[4] = dual / sw if sw > 0.0 else 0.0
        stats[5] = k1 / sw if sw > 0.0 else 0.0
        stats[6] = k3 / sw if sw > 0.0 else 0.0


@njit(**NJIT)
def _run_pg(
    logits,
    tokens,
    mode,
    x1,
    x2,
    x3,
    weights,
    seq_offsets,
    seq_level,
    params,
    token_loss,
    log_probs,
    ratios,
    grad,
    stats,
    num_threads,
):
    n, v = logits.shape
    nt = n_threads(num_threads, n, v)
    e = work(2 * nt, logits)  # two row buffers per worker (rows are taken in pairs)
    rows = reduce_rows(v)
    nb = (n + rows - 1) // rows
    # every block either writes its partial sums or the call returns an error first
    part = np.empty((nb, N_SUMS))
    nt_base = streaming_base(grad)
    lr = np.zeros(n if seq_level else 0)
    use_lr = False
    if seq_level:
        # pass 1: log-probs only (nothing but work arrays is written before every row is valid)
        if nt > 1:
            bad = _stat_par(TOKEN_LOG_PROB, logits, tokens, lr, e[:nt], nt)
        else:
            bad = _stat_block(TOKEN_LOG_PROB, logits, tokens, lr, e[0], 0, n)
        if bad:
            return BAD_LOGITS
        for i in range(n):
            if lr[i] == -np.inf:
                return BAD_TOKENS
        sequence_log_ratios(lr, x1, weights, seq_offsets, lr)
        use_lr = True
    bl = 0
    bt = 0
    if nt > 1:
        bl, bt = _pg_par(
            logits,
            tokens,
            mode,
            x1,
            x2,
            x3,
            weights,
            lr,
            use_lr,
            params,
            token_loss,
            log_probs,
            ratios,
            part,
            rows,
            grad,
            e,
            nt,
            nt_base,
        )
    else:
        e0 = e[0]
        e1 = e[1]
        for b in range(nb):
            sl, st = _pg_block(
                logits,
                tokens,
                mode,
                x1,
                x2,
                x3,
                weights,
                lr,
                use_lr,
                params,
                token_loss,
                log_probs,
                ratios,
                part,
                b,
                rows,
                grad,
                e0,
                e1,
                nt_base,
            )
            bl += sl
            bt += st
    if bl:
        return BAD_LOGITS
    if bt:
        return BAD_TOKENS
    _reduce(mode, part, stats)
    return 0


@njit(**NJIT)
def _check_offsets(offsets, n):
    if offsets.shape[0] < 1 or offsets[0] != 0 or offsets[offsets.shape[0] - 1] != n:
        return False
    for k in range(offsets.shape[0] - 1):
        if offsets[k + 1] < offsets[k]:
            return False
    return True


@njit(**NJIT)
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
    # written arrays first; grad == logits exactly is allowed (in place, row by row)
    if spans_overlap(
        (
            span(token_loss),
            span(log_probs),
            span(grad),
            span(stats),
            in_place_span(grad, logits),
            span(tokens),
            span(returns),
            span(baselines),
            span(weights),
        ),
        4,
    ):
        return OVERLAPPING_ARRAYS
    n = tokens.shape[0]
    if out_of_range(tokens, logits.shape[1]):
        return BAD_TOKENS
    if _bad_weights(weights):
        return BAD_WEIGHTS
    if not_all_finite(returns):
        return BAD_RETURNS
    if not_all_finite(baselines):
        return BAD_BASELINES
    params = (0.0, 0.0, 0.0, 0.0, 3, 0)
    # x3 (reference log-probs) is unused without a reference (has_ref = 0): any array will do
    return _run_pg(
        logits,
        tokens,
        REINFORCE,
        returns,
        baselines,
        returns,
        weights,
        tokens[:0],
        False,
        params,
        token_loss,
        log_probs,
        np.empty(n),
        grad,
        stats,
        num_threads,
    )


@njit(**NJIT)
def ppo_arguments(
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
):
    """The PPO-specific checks and (status, reference array, params) for the loss passes; shared
    with the tabular losses.  Without a reference x3 is unused (has_ref = 0): any array of
    length n is passed."""
    has_ref = 1 if ref_log_probs.shape[0] > 0 else 0
    ref = ref_log_probs if has_ref else old_log_probs
    params = (
        np.float64(clip_low),
        np.float64(clip_high),
        np.float64(dual_clip),
        np.float64(kl_coef),
        np.int64(kl_estimator),
        np.int64(has_ref),
    )
    status = 0
    if not_all_finite(advantages):
        status = BAD_ADVANTAGES
    elif not_all_finite(old_log_probs):
        status = BAD_OLD_LOG_PROBS
    elif not_all_finite(ref_log_probs):
        status = BAD_REF_LOG_PROBS
    elif sequence_level and not _check_offsets(sequence_offsets, n):
        status = BAD_SEQUENCE_OFFSETS
    return status, ref, params


@njit(**NJIT)
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
    # written arrays first; grad == logits exactly is allowed (in place, row by row)
    if spans_overlap(
        (
            span(token_loss),
            span(log_probs),
            span(ratios),
            span(grad),
            span(stats),
            in_place_span(grad, logits),
            span(tokens),
            span(old_log_probs),
            span(advantages),
            span(weights),
            span(ref_log_probs),
            span(sequence_offsets),
        ),
        5,
    ):
        return OVERLAPPING_ARRAYS
    if out_of_range(tokens, logits.shape[1]):
        return BAD_TOKENS
    if _bad_weights(weights):
        return BAD_WEIGHTS
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
    return _run_pg(
        logits,
        tokens,
        PPO,
        old_log_probs,
        advantages,
        ref,
        weights,
        sequence_offsets,
        bool(sequence_level),
        params,
        token_loss,
        log_probs,
        ratios,
        grad,
        stats,
        num_threads,
    )


@njit(**NJIT)
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
    # written arrays first; grad == logits exactly is allowed (in place, row by row)
    if spans_overlap(
        (
            span(token_loss),
            span(log_probs),
            span(grad),
            span(stats),
            in_place_span(grad, logits),
            span(tokens),
            span(ref_log_probs),
            span(weights),
        ),
        4,
    ):
        return OVERLAPPING_ARRAYS
    n = tokens.shape[0]
    if out_of_range(tokens, logits.shape[1]):
        return BAD_TOKENS
    if _bad_weights(weights):
        return BAD_WEIGHTS
    if not_all_finite(ref_log_probs):
        return BAD_REF_LOG_PROBS
    params = (0.0, 0.0, 0.0, 0.0, np.int64(kl_estimator), np.int64(1))
    # the KL mode does not use x1 / x2 (old log-probs, advantages): pass any array of length n
    return _run_pg(
        logits,
        tokens,
        KL,
        ref_log_probs,
        ref_log_probs,
        ref_log_probs,
        weights,
        tokens[:0],
        False,
        params,
        token_loss,
        log_probs,
        np.empty(n),
        grad,
        stats,
        num_threads,
    )


# ---- A2C ----------------------------------------------------------------------------------------


@njit(**NJIT)
def value_terms(v, ret, old, value_clip):
    d = v - ret
    lu = d * d
    if value_clip <= 0.0:
        return lu, 2.0 * d
    dv = v - old
    inside = -value_clip <= dv and dv <= value_clip
    vc = old + (-value_clip if dv < -value_clip else (value_clip if dv > value_clip else dv))
    dc = vc - ret
    lc = dc * dc
    if lu >= lc:
        return lu, 2.0 * d
    return lc, (2.0 * dc if inside else 0.0)


@njit(**NJIT)
def _a2c_grad_fill(x, i, e, g, lse, h, a, c, ce, out):
    """out_j = (-c) p_j + ce h_j with p_j = e_j g, h_j = p_j ((x_j - lse) + H) (0 where p_j = 0);
    out_a = c (1 - p_a) + ce h_a."""
    nc = -c
    for j in range(x.shape[1]):
        p = e[j] * g
        hj = p * ((np.float64(x[i, j]) - lse) + h) if p > 0.0 else 0.0
        out[i, j] = nc * p + ce * hj
    pa = e[a] * g
    ha = pa * ((np.float64(x[i, a]) - lse) + h) if pa > 0.0 else 0.0
    out[i, a] = c * (1.0 - pa) + ce * ha


@njit(**NJIT)
def _a2c_block(
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
    e,
    lo,
    hi,
):
    bad_logits = 0
    bad_tokens = 0
    for i in range(lo, hi):
        m, s, ok = row_stats(logits, i, e)
        if not ok:
            bad_logits += 1
            continue
        a = tokens[i]
        lse = m + math.log(s)
        g = 1.0 / s
        lp = np.float64(logits[i, a]) - lse
        if lp == -np.inf:
            bad_tokens += 1
            continue
        h = row_entropy(logits, i, e, g, lse)
        old = np.float64(old_values[i]) if value_clip > 0.0 else 0.0
        lv, dlv = value_terms(np.float64(values[i]), np.float64(returns[i]), old, value_clip)
        adv = np.float64(advantages[i])
        pg = -adv * lp
        w = np.float64(weights[i])
        _a2c_grad_fill(logits, i, e, g, lse, h, a, w * -adv, w * entropy_coef, grad)
        token_loss[i] = pg + value_coef * lv - entropy_coef * h
        log_probs[i] = lp
        entropies[i] = h
        value_grad[i] = (w * value_coef) * dlv
    return bad_logits, bad_tokens


@njit(cache=True, nogil=True, parallel=True)
def _a2c_par(
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
    e,
    nt,
):
    n = logits.shape[0]
    bad_logits = 0
    bad_tokens = 0
    counter = np.zeros(1, dtype=np.int64)
    rpb = rows_per_block(logits.shape[1])
    for t in prange(nt):
        et = e[t]
        sl = 0
        st = 0
        lo, hi = next_block(counter, rpb, n)
        while lo < hi:
            bl, bt = _a2c_block(
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
                et,
                lo,
                hi,
            )
            sl += bl
            st += bt
            lo, hi = next_block(counter, rpb, n)
        bad_logits += sl
        bad_tokens += st
    return bad_logits, bad_tokens


@njit(**NJIT)
def a2c_status(advantages, values, returns, old_values, value_clip):
    """The A2C per-token checks (0 or the status of the first bad argument); shared with the
    tabular loss."""
    if not_all_finite(advantages):
        return BAD_ADVANTAGES
    if not_all_finite(values):
        return BAD_VALUES
    if not_all_finite(returns):
        return BAD_RETURNS
    if value_clip > 0.0 and not_all_finite(old_values):
        return BAD_OLD_VALUES
    return 0


@njit(**NJIT)
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
    n, v = logits.shape
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
    # written arrays first; grad may not be logits either (the entropy gradient reads the row
    # after writing it)
    if spans_overlap(
        (
            span(token_loss),
            span(log_probs),
            span(entropies),
            span(grad),
            span(value_grad),
            span(stats),
            span(logits),
            span(tokens),
            span(advantages),
            span(values),
            span(returns),
            span(old_values),
            span(weights),
        ),
        6,
    ):
        return OVERLAPPING_ARRAYS
    if out_of_range(tokens, v):
        return BAD_TOKENS
    if _bad_weights(weights):
        return BAD_WEIGHTS
    status = a2c_status(advantages, values, returns, old_values, value_clip)
    if status:
        return status
    old = old_values if value_clip > 0.0 else values
    nt = n_threads(num_threads, n, v)
    e = work(nt, logits)
    if nt > 1:
        bl, bt = _a2c_par(
            logits,
            tokens,
            advantages,
            values,
            returns,
            old,
            weights,
            value_clip,
            value_coef,
            entropy_coef,
            token_loss,
            log_probs,
            entropies,
            grad,
            value_grad,
            e,
            nt,
        )
    else:
        bl, bt = _a2c_block(
            logits,
            tokens,
            advantages,
            values,
            returns,
            old,
            weights,
            value_clip,
            value_coef,
            entropy_coef,
            token_loss,
            log_probs,
            entropies,
            grad,
            value_grad,
            e[0],
            0,
            n,
        )
    if bl:
        return BAD_LOGITS
    if bt:
        return BAD_TOKENS
    sw = loss = pgs = vls = hs = 0.0
    for i in range(n):
        w = np.float64(weights[i])
        lp = log_probs[i]
        h = entropies[i]
        oldv = np.float64(old[i]) if value_clip > 0.0 else 0.0
        lv, _ = value_terms(np.float64(values[i]), np.float64(returns[i]), oldv, value_clip)
        sw += w
        loss += w * token_loss[i]
        pgs += w * (-np.float64(advantages[i]) * lp)
        vls += w * lv
        hs += w * h
    stats[0] = loss
    stats[1] = pgs
    stats[2] = vls
    stats[3] = hs / sw if sw > 0.0 else 0.0
    return 0
