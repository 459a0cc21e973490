"""Reference group-relative advantages, loss weights and GSPO sequence ratios (plain Python).

Group statistics accumulate in index order in float64; ``group_mean`` / ``group_std`` /
``group_count`` (GRPO) and ``group_sum`` / ``group_count`` (RLOO) are kernel workspaces that also
report the per-group statistics.  See :mod:`fastlmrl.group_advantages` for the formulas.
"""

import math

# Status codes: fastlmrl._status.Status values as plain ints (the contract:
# fastlmrl.group_advantages.CONTRACT)
from .._status import (
    BAD_GROUP_IDS,
    BAD_GROUP_SIZE,
    BAD_LOG_PROBS,
    BAD_OLD_LOG_PROBS,
    BAD_OPTION,
    BAD_REWARDS,
    BAD_SHAPES,
    OVERLAPPING_ARRAYS,
)
from ._common import written_overlaps
from ._ieee import exp as ieee_exp

__all__ = ["grpo_advantages", "loss_weights", "rloo_advantages", "sequence_importance_ratio"]


SCALE_NONE, SCALE_GROUP, SCALE_BATCH = 0, 1, 2
MODE_GRPO, MODE_BNPO, MODE_DR_GRPO, MODE_DAPO = 0, 1, 2, 3


def _groups_ok(rewards, group_ids, group_stat, group_stat2, group_count, advantages_out):
    """The shape check (first): per-sample arrays of the rewards' length N, per-group arrays of
    group_stat's length G (rloo_advantages passes its one group statistic twice)."""
    n, n_groups = rewards.shape[0], group_stat.shape[0]
    return (
        rewards.ndim == 1
        and group_stat.ndim == 1
        and all(a.shape == (n,) for a in (group_ids, advantages_out))
        and all(a.shape == (n_groups,) for a in (group_stat2, group_count))
    )


def _grid_ok(mask, *arrays):
    """Every array of the (B, T) mask's shape."""
    return mask.ndim == 2 and all(a.shape == mask.shape for a in arrays)


def _overlapping(written, inputs):
    """Does a written array (output or workspace) share memory with an input or with another
    written array (status 8, after the shapes, before any write)?  No kernel here works in place."""
    for i, w in enumerate(written):
        if written_overlaps(w, *written[i + 1 :], *inputs):
            return True
    return False


def _check_groups(r_, g_, n_groups):
    for i in range(len(r_)):
        if g_[i] < 0 or g_[i] >= n_groups:
            return BAD_GROUP_IDS
        if not math.isfinite(r_[i]):
            return BAD_REWARDS
    return 0


def grpo_advantages(
    rewards, group_ids, scale, eps, ddof, group_mean, group_std, group_count, advantages_out
):
    if not _groups_ok(rewards, group_ids, group_mean, group_std, group_count, advantages_out):
        return BAD_SHAPES
    if _overlapping((group_mean, group_std, group_count, advantages_out), (rewards, group_ids)):
        return OVERLAPPING_ARRAYS
    r_, g_ = rewards.tolist(), group_ids.tolist()
    n_groups = group_mean.shape[0]
    scale, ddof = int(scale), int(ddof)
    if scale not in (SCALE_NONE, SCALE_GROUP, SCALE_BATCH) or ddof < 0 or not eps > 0:
        return BAD_OPTION
    status = _check_groups(r_, g_, n_groups)
    if status:
        return status
    n = len(r_)
    sums = [0.0] * n_groups
    counts = [0] * n_groups
    for i in range(n):
        sums[g_[i]] += r_[i]
        counts[g_[i]] += 1
    means = [sums[g] / counts[g] if counts[g] else 0.0 for g in range(n_groups)]
    ss = [0.0] * n_groups
    for i in range(n):
        d = r_[i] - means[g_[i]]
        ss[g_[i]] += d * d
    stds = [
        math.sqrt(ss[g] / (counts[g] - ddof)) if counts[g] > ddof else 0.0 for g in range(n_groups)
    ]
    for g in range(n_groups):
        group_mean[g] = means[g]
        group_std[g] = stds[g]
        group_count[g] = counts[g]
    batch_std = 0.0
    if scale == SCALE_BATCH:
        total = 0.0
        for x in r_:
            total += x
        mean = total / n if n else 0.0
        bss = 0.0
        for x in r_:
            d = x - mean
            bss += d * d
        batch_std = math.sqrt(bss / (n - ddof)) if n > ddof else 0.0
    for i in range(n):
        centred = r_[i] - means[g_[i]]
        if scale == SCALE_NONE:
            advantages_out[i] = centred
        elif scale == SCALE_GROUP:
            advantages_out[i] = centred / (stds[g_[i]] + eps)
        else:
            advantages_out[i] = centred / (batch_std + eps)
    return 0


def rloo_advantages(rewards, group_ids, group_sum, group_count, advantages_out):
    if not _groups_ok(rewards, group_ids, group_sum, group_sum, group_count, advantages_out):
        return BAD_SHAPES
    if _overlapping((group_sum, group_count, advantages_out), (rewards, group_ids)):
        return OVERLAPPING_ARRAYS
    r_, g_ = rewards.tolist(), group_ids.tolist()
    n_groups = group_sum.shape[0]
    status = _check_groups(r_, g_, n_groups)
    if status:
        return status
    sums = [0.0] * n_groups
    counts = [0] * n_groups
    for i in range(len(r_)):
        sums[g_[i]] += r_[i]
        counts[g_[i]] += 1
    for g in range(n_groups):
        group_sum[g] = sums[g]
        group_count[g] = counts[g]
    for g in range(n_groups):
        if counts[g] == 1:
            return BAD_GROUP_SIZE
    for i in range(len(r_)):
        g = g_[i]
        advantages_out[i] = r_[i] - (sums[g] - r_[i]) / (counts[g] - 1)
    return 0


def loss_weights(mask, mode, num_sequences, num_tokens, max_length, out):
    if not _grid_ok(mask, out):
        return BAD_SHAPES
    if _overlapping((out,), (mask,)):
        return OVERLAPPING_ARRAYS
    m_ = mask.tolist()
    mode = int(mode)
    if mode not in (MODE_GRPO, MODE_BNPO, MODE_DR_GRPO, MODE_DAPO):
        return BAD_OPTION
    if not (num_sequences > 0 and num_tokens > 0 and max_length > 0):
        return BAD_OPTION
    n_active = 0
    if mode == MODE_BNPO:
        for row in m_:
            for x in row:
                if x:
                    n_active += 1
    for b in range(len(m_)):
        row = m_[b]
        if mode == MODE_GRPO:
            n_b = 0
            for x in row:
                if x:
                    n_b += 1
            w = 1.0 / (num_sequences * n_b) if n_b else 0.0
        elif mode == MODE_BNPO:
            w = 1.0 / n_active if n_active else 0.0
        elif mode == MODE_DR_GRPO:
            w = 1.0 / (num_sequences * max_length)
        else:
            w = 1.0 / num_tokens
        for t in range(len(row)):
            out[b, t] = w if row[t] else 0.0
    return 0


def sequence_importance_ratio(log_probs, old_log_probs, mask, ratio_out, grad_out):
    if not _grid_ok(mask, log_probs, old_log_probs, grad_out) or ratio_out.shape != mask.shape[:1]:
        return BAD_SHAPES
    if _overlapping((ratio_out, grad_out), (log_probs, old_log_probs, mask)):
        return OVERLAPPING_ARRAYS
    lp_, old_, m_ = log_probs.tolist(), old_log_probs.tolist(), mask.tolist()
    for b in range(len(m_)):
        for t in range(len(m_[b])):
            if m_[b][t]:
                if not math.isfinite(lp_[b][t]):
                    return BAD_LOG_PROBS
                if not math.isfinite(old_[b][t]):
                    return BAD_OLD_LOG_PROBS
    for b in range(len(m_)):
        row = m_[b]
        total = 0.0
        n_b = 0
        for t in range(len(row)):
            if row[t]:
                total += lp_[b][t] - old_[b][t]
                n_b += 1
        if n_b:
            ratio = ieee_exp(total / n_b)
            grad = ratio / n_b
        else:
            ratio = 1.0
            grad = 0.0
        ratio_out[b] = ratio
        for t in range(len(row)):
            grad_out[b, t] = grad if row[t] else 0.0
    return 0
