"""Reference KL estimators and KL-penalised rewards (plain Python).

Inputs are flat (the public wrapper ravels any shape).  With ``r = ref_logp - logp`` (float64):
k1 = -r, grad 1; k2 = r*r/2, grad -r; k3 = expm1(r) - r, grad -expm1(r); masked entries give 0.
"""

import math

from .._status import BAD_SHAPES, OVERLAPPING_ARRAYS
from ._common import written_overlaps
from ._ieee import expm1

__all__ = ["kl_penalized_rewards", "kl_penalty"]

BAD_REWARDS = 5
BAD_LOGP = 45
BAD_REF_LOGP = 46
BAD_ESTIMATOR = 47


def _shapes_ok(mask, rewards, logp, ref_logp, out1, out2):
    """Every array of the mask's length N (the kernel without rewards passes logp twice)."""
    n = mask.shape[0]
    return all(a.shape == (n,) for a in (rewards, logp, ref_logp, out1, out2))


def _overlapping(out1, out2, *inputs):
    """Does an output share memory with an input or with the other output (status 8, after the
    shapes, before any write)?  No in-place mode: the public functions allocate the outputs."""
    return written_overlaps(out1, out2, *inputs) or written_overlaps(out2, *inputs)


def _check(rewards, logp, ref_logp, mask, estimator):
    if estimator not in (1, 2, 3):
        return BAD_ESTIMATOR
    for i in range(len(mask)):
        if mask[i]:
            if rewards is not None and not math.isfinite(rewards[i]):
                return BAD_REWARDS
            if not math.isfinite(logp[i]):
                return BAD_LOGP
            if not math.isfinite(ref_logp[i]):
                return BAD_REF_LOGP
    return 0


def _kl(lp, ref, estimator):
    """(estimate, d estimate / d logp) for one token, in float64."""
    r = ref - lp
    if estimator == 1:
        return -r, 1.0
    if estimator == 2:
        return 0.5 * (r * r), -r
    e = expm1(r)
    return e - r, -e


def kl_penalty(logp, ref_logp, mask, estimator, kl_out, grad_out):
    if not _shapes_ok(mask, logp, logp, ref_logp, kl_out, grad_out):
        return BAD_SHAPES
    if _overlapping(kl_out, grad_out, logp, ref_logp, mask):
        return OVERLAPPING_ARRAYS
    lp_, ref_, m_ = logp.tolist(), ref_logp.tolist(), mask.tolist()
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


def kl_penalized_rewards(rewards, logp, ref_logp, mask, estimator, beta, rewards_out, kl_out):
    if not _shapes_ok(mask, rewards, logp, ref_logp, rewards_out, kl_out):
        return BAD_SHAPES
    if _overlapping(rewards_out, kl_out, rewards, logp, ref_logp, mask):
        return OVERLAPPING_ARRAYS
    r_, lp_, ref_, m_ = rewards.tolist(), logp.tolist(), ref_logp.tolist(), mask.tolist()
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
