"""Reference token sampling from logits (plain Python): temperature, top-k, top-p, min-p.

This file defines the exact arithmetic of ``sample_tokens`` that every backend reproduces bit for
bit.  Row ``i`` of ``logits`` (``x[0:V]``) gives one token ``a``, drawn with the single uniform
``u = uniform(key, counter + i)``:

1. Row statistics of the model (temperature 1) distribution, exactly as
   ``fastlmrl/_python/log_probs.py``: ``m = max x`` (the row must hold no NaN, no +inf and one
   finite entry), ``e_j = EXP(x_j - m)``, ``S`` = their float64 sum in 8 lanes (lane ``j % 8``,
   combined ``((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7))``).  ``model_log_prob = x_a - (m + log S)``.
2. ``temperature == 0``: ``a`` = the lowest index holding ``m`` (greedy), ``log_prob = 0``.
3. Sampling weights ``w_j = exp((x_j - m) / T)`` in ``[0, 1]``, ``w = 1`` at the maximum.
   Float64 logits: ``math.exp`` of the double ``(x_j - m) * (1 / T)``.  Float32 logits, in float32
   arithmetic like the softmax: ``g = float32(1 / T)`` (1 / T clamped to the positive finite
   float32 range first), ``w_j = fast_exp32(float32(x_j - m) * g)`` (a float32 product), so
   ``T = 1`` gives exactly ``e_j``.
4. One threshold ``t``; the kept set is ``F = {j : w_j >= t}`` (ties at a threshold are all kept):

   * top-k (``0 < k < V``): ``t_k`` = the k-th largest ``w_j`` (counted with multiplicity), else 0;
   * top-p (``p < 1``): ``W`` = the lane sum (as ``S``) of the ``w_j >= t_k``, target ``p * W``;
     the positive ``w_j >= t_k`` in descending order ``v_1 >= v_2 >= ...`` are added one by one
     (``C_r = C_{r-1} + v_r``, float64) and ``t_p = v_r`` for the first ``r`` with
     ``C_r >= p * W`` (0 when rounding keeps every ``C_r`` below it);
   * min-p: ``t_m = min_p`` (``min_p * w_max`` with ``w_max = 1``);
   * ``t = max(t_k, t_p, t_m)``.
5. ``w'_j = w_j if w_j >= t else 0``; ``Z`` = lane sum of ``w'`` (``Z = S`` when ``T = 1`` and
   nothing is filtered); ``target = u * Z``.
6. Inverse CDF in blocks of 64 entries (block ``b`` = ``[64 b, min(64 b + 64, V))``): ``beta_b``
   = the lane sum of the block's ``w'``; ``R_b = R_{b-1} + beta_b`` (``R_{-1} = 0``).  In the first
   block with ``R_b > target``: ``r = R_{b-1}``, then ``r += w'_j`` entry by entry and ``a`` = the
   first ``j`` with ``r > target`` (if rounding leaves none: the block's last ``j`` with
   ``w'_j > 0``).  No block: the row's last ``j`` with ``w'_j > 0``.
7. ``log_prob = (x_a - m) / T - log Z`` (float64).

Results are stored after every row was found valid (tokens int64, log-probs rounded once to the
logits' dtype).
"""

import math

# status codes: fastlmrl._status.Status (the contract: fastlmrl.sampling.CONTRACT)
from .._status import (
    BAD_LOGITS,
    BAD_MIN_P,
    BAD_SHAPES,
    BAD_TEMPERATURE,
    BAD_TOP_K,
    BAD_TOP_P,
    OVERLAPPING_ARRAYS,
)
from ..rng import uniform
from .log_probs import LANES, exp_for, fast_exp32, overlapping, round32, row_stats, sub32

__all__ = ["sample_tokens"]

BLOCK = 64
MIN_TEMPERATURE = 2.2250738585072014e-308  # the smallest normal double: 1 / T stays finite
F32_TINY = 1.401298464324817e-45  # the smallest positive float32 (subnormal)
F32_MAX = 3.4028234663852886e38  # the largest finite float32


def shapes_ok(logits, tokens_out, log_probs_out, model_log_probs_out):
    """The shape check (first): three (N,) outputs for (N, V) logits, V >= 1."""
    n = logits.shape[0]
    return (
        logits.shape[1] >= 1
        and tokens_out.shape == (n,)
        and log_probs_out.shape == (n,)
        and model_log_probs_out.shape == (n,)
    )


def arguments_status(temperature, top_k, top_p, min_p):
    """0, or the status of the first bad scalar argument (NaN fails every comparison)."""
    if not (temperature == 0.0 or MIN_TEMPERATURE <= temperature < math.inf):
        return BAD_TEMPERATURE
    if top_k < 0:
        return BAD_TOP_K
    if not (0.0 < top_p <= 1.0):
        return BAD_TOP_P
    if not (0.0 <= min_p <= 1.0):
        return BAD_MIN_P
    return 0


def lane_sum(values):
    """Float64 sum in 8 lanes (lane j % 8, entries in order), combined in a fixed tree."""
    s = [0.0] * LANES
    for j, v in enumerate(values):
        s[j % LANES] += v
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))


def weights(x, m, temperature, f32):
    """w_j = exp((x_j - m) * (1 / T)) (step 3 of the module docstring)."""
    inv_t = 1.0 / temperature
    if f32:
        g = round32(min(max(inv_t, F32_TINY), F32_MAX))
        return [fast_exp32(round32(sub32(v, m) * g)) for v in x]  # (an exact product, rounded)
    return [math.exp((v - m) * inv_t) for v in x]


def threshold(w, top_k, top_p, min_p):
    """The kept-set threshold t (step 4)."""
    n = len(w)
    t_k = sorted(w, reverse=True)[top_k - 1] if 0 < top_k < n else 0.0
    t = t_k
    if top_p < 1.0:
        total = lane_sum([v if v >= t_k else 0.0 for v in w])
        target = top_p * total
        cumulative = 0.0
        for v in sorted((v for v in w if v >= t_k and v > 0.0), reverse=True):
            cumulative += v
            if cumulative >= target:
                t = max(t, v)
                break
    if min_p > 0.0:
        t = max(t, min_p)
    return t


def block_search(w, target):
    """The inverse-CDF search of step 6 over the filtered weights ``w``."""
    n = len(w)
    cumulative = 0.0
    for lo in range(0, n, BLOCK):
        hi = min(lo + BLOCK, n)
        after = cumulative + lane_sum(w[lo:hi])
        if after > target:
            r = cumulative
            for j in range(lo, hi):
                r += w[j]
                if r > target:
                    return j
            return _last_positive(w, lo, hi)
        cumulative = after
    return _last_positive(w, 0, n)


def _last_positive(w, lo, hi):
    for j in range(hi - 1, lo - 1, -1):
        if w[j] > 0.0:
            return j
    return lo  # not reached: the kept set always holds the maximum (w = 1)


def sample_row(x, f32, temperature, top_k, top_p, min_p, u):
    """(token, log_prob, model_log_prob) of one row, or None when the row is invalid."""
    m, total, _, ok = row_stats(x, exp_for(f32))
    if not ok:
        return None
    model_lse = m + math.log(total)
    if temperature == 0.0:
        a = x.index(m)
        return a, 0.0, x[a] - model_lse
    w = weights(x, m, temperature, f32)
    t = threshold(w, top_k, top_p, min_p)
    kept = [v if v >= t else 0.0 for v in w]
    z = lane_sum(kept)
    a = block_search(kept, u * z)
    return a, (x[a] - m) / temperature - math.log(z), x[a] - model_lse


def sample_tokens(
    logits,
    temperature,
    top_k,
    top_p,
    min_p,
    key,
    counter,
    tokens_out,
    log_probs_out,
    model_log_probs_out,
    num_threads,
):
    """Row i -> tokens_out[i], log_probs_out[i], model_log_probs_out[i]; uses counter + i."""
    if not shapes_ok(logits, tokens_out, log_probs_out, model_log_probs_out):
        return BAD_SHAPES
    if overlapping([tokens_out, log_probs_out, model_log_probs_out], [logits]):
        return OVERLAPPING_ARRAYS
    temperature, top_k, top_p, min_p = float(temperature), int(top_k), float(top_p), float(min_p)
    status = arguments_status(temperature, top_k, top_p, min_p)
    if status:
        return status
    key, counter = int(key), int(counter)
    f32 = logits.dtype.itemsize == 4
    res = []
    for i, x in enumerate(logits.tolist()):
        u = uniform(key, (counter + i) & 0xFFFFFFFFFFFFFFFF)
        r = sample_row(x, f32, temperature, top_k, top_p, min_p, u)
        if r is None:
            return BAD_LOGITS
        res.append(r)
    for i, (a, lp, mlp) in enumerate(res):
        tokens_out[i] = a
        log_probs_out[i] = lp
        model_log_probs_out[i] = mlp
    return 0
