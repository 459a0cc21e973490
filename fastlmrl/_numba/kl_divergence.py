"""Numba KL estimators and KL-penalised rewards (same semantics, same rounding as the reference)."""

__all__ = ["kl_penalized_rewards", "kl_penalty"]
import math

import numpy as np
from numba import njit

# Status codes: fastlmrl._status.Status values as plain ints (the contract:
# fastlmrl.kl_divergence.CONTRACT)
from .._status import (
    BAD_ESTIMATOR,
    BAD_LOG_PROBS,
    BAD_REF_LOG_PROBS,
    BAD_REWARDS,
    BAD_SHAPES,
    OVERLAPPING_ARRAYS,
)
from ._common import NJIT
from .overlap import written_overlaps


@njit(**NJIT)
def _shapes_ok(mask, rewards, log_probs, ref_log_probs, out1, out2):
    """Every array of the mask's length N (the kernel without rewards passes log_probs twice)."""
    n = mask.shape[0]
    return (
        rewards.shape[0] == n
        and log_probs.shape[0] == n
        and ref_log_probs.shape[0] == n
        and out1.shape[0] == n
        and out2.shape[0] == n
    )


@njit(**NJIT)
def _overlapping(out1, out2, rewards, log_probs, ref_log_probs, mask):
    """Does an output share memory with an input or with the other output (status 8; O(1))?
    kl_penalty passes an empty view of log_probs as ``rewards``."""
    e = log_probs[:0]
    return written_overlaps(
        out1, out2, rewards, log_probs, ref_log_probs, mask, e, e
    ) or written_overlaps(out2, rewards, log_probs, ref_log_probs, mask, e, e, e)


@njit(**NJIT)
def _check(rewards, has_rewards, log_probs, ref_log_probs, mask, estimator):
    if estimator != 1 and estimator != 2 and estimator != 3:
        return BAD_ESTIMATOR
    for i in range(mask.shape[0]):
        if mask[i]:
            if has_rewards and not np.isfinite(rewards[i]):
                return BAD_REWARDS
            if not np.isfinite(log_probs[i]):
                return BAD_LOG_PROBS
            if not np.isfinite(ref_log_probs[i]):
                return BAD_REF_LOG_PROBS
    return 0


@njit(**NJIT)
def kl_penalty(log_probs, ref_log_probs, mask, estimator, kl_out, grad_out):
    if not _shapes_ok(mask, log_probs, log_probs, ref_log_probs, kl_out, grad_out):
        return BAD_SHAPES
    if _overlapping(kl_out, grad_out, log_probs[:0], log_probs, ref_log_probs, mask):
        return OVERLAPPING_ARRAYS
    status = _check(log_probs, False, log_probs, ref_log_probs, mask, estimator)
    if status != 0:
        return status
    n = mask.shape[0]
    if estimator == 1:
        for i in range(n):
            if mask[i]:
                r = np.float64(ref_log_probs[i]) - np.float64(log_probs[i])
                kl_out[i] = -r
                grad_out[i] = 1.0
            else:
                kl_out[i] = 0.0
                grad_out[i] = 0.0
    elif estimator == 2:
        for i in range(n):
            if mask[i]:
                r = np.float64(ref_log_probs[i]) - np.float64(log_probs[i])
                kl_out[i] = 0.5 * (r * r)
                grad_out[i] = -r
            else:
                kl_out[i] = 0.0
                grad_out[i] = 0.0
    else:
        for i in range(n):
            if mask[i]:
                r = np.float64(ref_log_probs[i]) - np.float64(log_probs[i])
                e = math.expm1(r)
                kl_out[i] = e - r
                grad_out[i] = -e
            else:
                kl_out[i] = 0.0
                grad_out[i] = 0.0
    return 0


@njit(**NJIT)
def kl_penalized_rewards(
    rewards, log_probs, ref_log_probs, mask, estimator, beta, rewards_out, kl_out
):
    if not _shapes_ok(mask, rewards, log_probs, ref_log_probs, rewards_out, kl_out):
        return BAD_SHAPES
    if _overlapping(rewards_out, kl_out, rewards, log_probs, ref_log_probs, mask):
        return OVERLAPPING_ARRAYS
    status = _check(rewards, True, log_probs, ref_log_probs, mask, estimator)
    if status != 0:
        return status
    for i in range(mask.shape[0]):
        if mask[i]:
            r = np.float64(ref_log_probs[i]) - np.float64(log_probs[i])
            if estimator == 1:
                kl = -r
            elif estimator == 2:
                kl = 0.5 * (r * r)
            else:
                kl = math.expm1(r) - r
            rewards_out[i] = np.float64(rewards[i]) - beta * kl
            kl_out[i] = kl
        else:
            rewards_out[i] = 0.0
            kl_out[i] = 0.0
    return 0
