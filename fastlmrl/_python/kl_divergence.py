"""Reference KL estimators and KL-penalised rewards (plain Python).

Inputs are flat (the public wrapper ravels any shape).  With ``r = ref_log_probs - log_probs``
(float64): k1 = -r, grad 1; k2 = r*r/2, grad -r; k3 = expm1(r) - r, grad -expm1(r); masked
entries give 0.
"""

import math

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
from ._common import written_overlaps
from ._ieee import expm1

__all__ = ["kl_penalized_rewards", "kl_penalty"]


def _shapes_ok(mask, rewards, log_probs, ref_log_probs, out1, out2):
    """Every array of the mask's length N (the kernel without rewards passes log_probs twice)."""
    n = mask.shape[0]
    return all(a.shape == (n,) for a in (rewards, log_probs, ref_log_probs, out1, out2))


def _overlapping(out1, out2, *inputs):
    """Does an output share memory with an input or with the other output (status 8, after the
    shapes, before any write)?  No in-place mode: the public functions allocate the outputs."""
    return written_overlaps(out1, out2, *inputs) or written_overlaps(out2, *inputs)


def _check(rewards, log_probs, ref_log_probs, mask, estimator):
    if estimator not in (1, 2, 3):
        return BAD_ESTIMATOR
    for i in range(len(mask)):
        if mask[i]:
            if rewards is not None and not math.isfinite(rewards[i]):
                return BAD_REWARDS
            if not math.isfinite(log_probs[i]):
                return BAD_LOG_PROBS
            if not math.isfinite(ref_log_probs[i]):
                return BAD_REF_LOG_PROBS
    return 0


def _kl(lp, ref, estimator):
    """(estimate, d estimate / d log_probs) for one token, in float64."""
    r = ref - lp
    if estimator == 1:
        return -r, 1.0
    if estimator == 2:
        return 0.5 * (r * r), -r
    e = expm1(r)
    return e - r, -e


def kl_penalty(log_probs, ref_log_probs, mask, estimator, kl_out, grad_out):
    if not _shapes_ok(mask, log_probs, log_probs, ref_log_probs, kl_out, grad_out):
        return BAD_SHAPES
    if _overlapping(kl_out, grad_out, log_probs, ref_log_probs, mask):
        return OVERLAPPING_ARRAYS
    lp_, ref_, m_ = log_probs.tolist(), ref_log_probs.tolist(), mask.tolist()
    estimator = int(estimator)
    status = _check(None, lp_, ref_, m_, estimator)
    if status:
        return status
    for i in range(len(m_)):
        if m_[i]:
            kl, grad = _kl(lp_[i], ref_[i], estimator)
            kl_out[i] = kl
            grad_out[i] = grad
        else:
            kl_out[i] = 0.0
            grad_out[i] = 0.0
    return 0


def kl_penalized_rewards(
    rewards, log_probs, ref_log_probs, mask, estimator, beta, rewards_out, kl_out
):
    if not _shapes_ok(mask, rewards, log_probs, ref_log_probs, rewards_out, kl_out):
        return BAD_SHAPES
    if _overlapping(rewards_out, kl_out, rewards, log_probs, ref_log_probs, mask):
        return OVERLAPPING_ARRAYS
    r_, lp_, ref_, m_ = rewards.tolist(), log_probs.tolist(), ref_log_probs.tolist(), mask.tolist()
    estimator = int(estimator)
    status = _check(r_, lp_, ref_, m_, estimator)
    if status:
        return status
    for i in range(len(m_)):
        if m_[i]:
            kl = _kl(lp_[i], ref_[i], estimator)[0]
            rewards_out[i] = r_[i] - beta * kl
            kl_out[i] = kl
        else:
            rewards_out[i] = 0.0
            kl_out[i] = 0.0
    return 0
