"""Numba group-relative advantages, loss weights and GSPO ratios (same semantics and rounding as
the reference)."""

__all__ = ["grpo_advantages", "loss_weights", "rloo_advantages", "sequence_importance_ratio"]
import math

import numpy as np
from numba import njit

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
from ._common import NJIT
from .overlap import written_overlaps


@njit(**NJIT)
def _groups_ok(rewards, group_ids, group_stat, group_stat2, group_count, advantages_out):
    """The shape check (first): per-sample arrays of the rewards' length N, per-group arrays of
    group_stat's length G (rloo_advantages passes its one group statistic twice)."""
    n, n_groups = rewards.shape[0], group_stat.shape[0]
    return (
        group_ids.shape[0] == n
        and advantages_out.shape[0] == n
        and group_stat2.shape[0] == n_groups
        and group_count.shape[0] == n_groups
    )


@njit(**NJIT)
def _groups_overlap(stat, stat2, count, out, rewards, group_ids):
    """Does a written array (workspaces, output) share memory with an input or with another
    written array (status 8; O(1))?  rloo_advantages passes an empty view as ``stat2``."""
    e = rewards[:0]
    return (
        written_overlaps(stat, stat2, count, out, rewards, group_ids, e, e)
        or written_overlaps(stat2, count, out, rewards, group_ids, e, e, e)
        or written_overlaps(count, out, rewards, group_ids, e, e, e, e)
        or written_overlaps(out, rewards, group_ids, e, e, e, e, e)
    )


@njit(**NJIT)
def _check_groups(rewards, group_ids, n_groups):
    for i in range(rewards.shape[0]):
        if group_ids[i] < 0 or group_ids[i] >= n_groups:
            return BAD_GROUP_IDS
        if not np.isfinite(rewards[i]):
            return BAD_REWARDS
    return 0


@njit(**NJIT)
def grpo_advantages(
    rewards, group_ids, scale, eps, ddof, group_mean, group_std, group_count, advantages_out
):
    if not _groups_ok(rewards, group_ids, group_mean, group_std, group_count, advantages_out):
        return BAD_SHAPES
    if _groups_overlap(group_mean, group_std, group_count, advantages_out, rewards, group_ids):
        return OVERLAPPING_ARRAYS
    n_groups = group_mean.shape[0]
    if (scale != 0 and scale != 1 and scale != 2) or ddof < 0 or not eps > 0:
        return BAD_OPTION
    status = _check_groups(rewards, group_ids, n_groups)
    if status != 0:
        return status
    n = rewards.shape[0]
    for g in range(n_groups):
        group_mean[g] = 0.0
        group_std[g] = 0.0
        group_count[g] = 0
    for i in range(n):
        g = group_ids[i]
        group_mean[g] += np.float64(rewards[i])
        group_count[g] += 1
    for g in range(n_groups):
        if group_count[g] > 0:
            group_mean[g] = group_mean[g] / group_count[g]
    for i in range(n):
        g = group_ids[i]
        d = np.float64(rewards[i]) - group_mean[g]
        group_std[g] += d * d
    for g in range(n_groups):
        if group_count[g] > ddof:
            group_std[g] = math.sqrt(group_std[g] / (group_count[g] - ddof))
        else:
            group_std[g] = 0.0
    batch_std = 0.0
    if scale == 2:
        total = 0.0
        for i in range(n):
            total += np.float64(rewards[i])
        mean = total / n if n > 0 else 0.0
        bss = 0.0
        for i in range(n):
            d = np.float64(rewards[i]) - mean
            bss += d * d
        batch_std = math.sqrt(bss / (n - ddof)) if n > ddof else 0.0
    for i in range(n):
        g = group_ids[i]
        centred = np.float64(rewards[i]) - group_mean[g]
        if scale == 0:
            advantages_out[i] = centred
        elif scale == 1:
            advantages_out[i] = centred / (group_std[g] + eps)
        else:
            advantages_out[i] = centred / (batch_std + eps)
    return 0


@njit(**NJIT)
def rloo_advantages(rewards, group_ids, group_sum, group_count, advantages_out):
    if not _groups_ok(rewards, group_ids, group_sum, group_sum, group_count, advantages_out):
        return BAD_SHAPES
    if _groups_overlap(group_sum, group_sum[:0], group_count, advantages_out, rewards, group_ids):
        return OVERLAPPING_ARRAYS
    n_groups = group_sum.shape[0]
    status = _check_groups(rewards, group_ids, n_groups)
    if status != 0:
        return status
    for g in range(n_groups):
        group_sum[g] = 0.0
        group_count[g] = 0
    for i in range(rewards.shape[0]):
        g = group_ids[i]
        group_sum[g] += np.float64(rewards[i])
        group_count[g] += 1
    for g in range(n_groups):
        if group_count[g] == 1:
            return BAD_GROUP_SIZE
    for i in range(rewards.shape[0]):
        g = group_ids[i]
        r = np.float64(rewards[i])
        advantages_out[i] = r - (group_sum[g] - r) / (group_count[g] - 1)
    return 0


@njit(**NJIT)
def loss_weights(mask, mode, num_sequences, num_tokens, max_length, out):
    if out.shape != mask.shape:
        return BAD_SHAPES
    e = mask[:0, 0]
    if written_overlaps(out, mask, e, e, e, e, e, e):
        return OVERLAPPING_ARRAYS
    if mode != 0 and mode != 1 and mode != 2 and mode != 3:
        return BAD_OPTION
    if not (num_sequences > 0 and num_tokens > 0 and max_length > 0):
        return BAD_OPTION
    n_rows, n_steps = mask.shape
    n_active = 0
    if mode == 1:
        for b in range(n_rows):
            for t in range(n_steps):
                if mask[b, t]:
                    n_active += 1
    for b in range(n_rows):
        if mode == 0:
            n_b = 0
            for t in range(n_steps):
                if mask[b, t]:
                    n_b += 1
            w = 1.0 / (num_sequences * n_b) if n_b > 0 else 0.0
        elif mode == 1:
            w = 1.0 / n_active if n_active > 0 else 0.0
        elif mode == 2:
            w = 1.0 / (num_sequences * max_length)
        else:
            w = 1.0 / num_tokens
        for t in range(n_steps):
            if mask[b, t]:
                out[b, t] = w
            else:
                out[b, t] = 0.0
    return 0


@njit(**NJIT)
def sequence_importance_ratio(log_probs, old_log_probs, mask, ratio_out, grad_out):
    if (
        log_probs.shape != mask.shape
        or old_log_probs.shape != mask.shape
        or grad_out.shape != mask.shape
        or ratio_out.shape[0] != mask.shape[0]
    ):
        return BAD_SHAPES
    if written_overlaps(
        ratio_out,
        grad_out,
        log_probs,
        old_log_probs,
        mask,
        ratio_out[:0],
        ratio_out[:0],
        ratio_out[:0],
    ) or written_overlaps(
        grad_out,
        log_probs,
        old_log_probs,
        mask,
        ratio_out[:0],
        ratio_out[:0],
        ratio_out[:0],
        ratio_out[:0],
    ):
        return OVERLAPPING_ARRAYS
    n_rows, n_steps = mask.shape
    for b in range(n_rows):
        for t in range(n_steps):
            if mask[b, t]:
                if not np.isfinite(log_probs[b, t]):
                    return BAD_LOG_PROBS
                if not np.isfinite(old_log_probs[b, t]):
                    return BAD_OLD_LOG_PROBS
    for b in range(n_rows):
        total = 0.0
        n_b = 0
        for t in range(n_steps):
            if mask[b, t]:
                total += np.float64(log_probs[b, t]) - np.float64(old_log_probs[b, t])
                n_b += 1
        if n_b > 0:
            ratio = math.exp(total / n_b)
            grad = ratio / n_b
        else:
            ratio = 1.0
            grad = 0.0
        ratio_out[b] = ratio
        for t in range(n_steps):
            if mask[b, t]:
                grad_out[b, t] = grad
            else:
                grad_out[b, t] = 0.0
    return 0
