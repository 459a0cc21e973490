r"""Statistics of a sweep: a run's final reward, means and Student t confidence intervals.

The interval over ``n`` seeds is the two-sided Student t interval

.. math::  \bar x \pm t_{(1 + c)/2,\, n - 1}\, s / \sqrt{n}

with the sample standard deviation :math:`s` (``ddof = 1``) and the quantile of Student's t
distribution with ``n - 1`` degrees of freedom from :data:`scipy.stats.t` (SciPy is part of the
``distributed`` extra: ``pip install 'fastlmrl[distributed]'``; without it the interval is an
error naming that command, never a normal approximation).  For a quantity that cannot be negative
(``lower_bound=0``: KL divergences, throughputs, the text task's keyword score) the interval is
cut at 0: the true value lies in ``[max(0, low), high]`` whenever it lies in ``[low, high]``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "FINAL_FRACTION",
    "NON_NEGATIVE_METRICS",
    "mean_ci",
    "student_t_ppf",
    "summarize_history",
]

#: the final reward of a run is the mean over this fraction of its last iterations (at least one)
FINAL_FRACTION = 0.1

#: per-iteration metrics that are never negative: the text task's keyword score (a count of
#: lexicon words, weight 1 each), the exact KL to the reference, token counts and seconds
NON_NEGATIVE_METRICS = frozenset({"score", "kl", "tokens", "seconds"})

SCIPY_MISSING = (
    "the Student t confidence intervals of a sweep need SciPy (scipy.stats), part of the "
    "distributed extra: pip install 'fastlmrl[distributed]'"
)


def _student_t() -> Any:
    try:
        from scipy import stats
    except ImportError:
        raise RuntimeError(SCIPY_MISSING) from None
    return stats.t


def require_scipy() -> None:
    """Raise a RuntimeError naming the install command when SciPy is missing."""
    _student_t()


def student_t_ppf(p: float, df: float) -> float:
    """Quantile ``t_{p, df}`` of Student's t distribution with ``df`` degrees of freedom
    (``scipy.stats.t.ppf``)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if not df > 0:
        raise ValueError(f"df must be > 0, got {df}")
    return float(_student_t().ppf(p, df))


def mean_ci(
    values: Iterable[float | None],
    confidence: float = 0.95,
    lower_bound: float | None = None,
) -> dict[str, Any]:
    """n, mean, sample std and the two-sided Student t interval ``mean ± t·s/√n`` of the values
    that are not None (the interval is None for n < 2).

    ``ci95``: the half-width ``t·s/√n``; ``ci_low``/``ci_high``: the interval, ``ci_low`` raised
    to ``lower_bound`` when given (a quantity known to be at least ``lower_bound``)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    kept = [float(v) for v in values if v is not None]
    n = len(kept)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci95": None, "ci_low": None, "ci_high": None}
    mean = math.fsum(kept) / n
    if n < 2:
        return {"n": 1, "mean": mean, "std": None, "ci95": None, "ci_low": None, "ci_high": None}
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in kept) / (n - 1))
    half = student_t_ppf(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    low = mean - half
    if lower_bound is not None:
        low = max(float(lower_bound), low)
    return {"n": n, "mean": mean, "std": std, "ci95": half, "ci_low": low, "ci_high": mean + half}


def summarize_history(history: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Final reward / KL (mean over the last 10% of iterations, at least one), trained tokens and
    training seconds of one run's metrics history.  The reward is ``score`` (text tasks: the task
    reward per sequence, without the KL penalty) when the history has it, else ``reward``."""
    if not history:
        return {
            "iterations": 0,
            "reward_metric": None,
            "final_reward": None,
            "final_kl": None,
            "tokens": 0,
            "train_seconds": 0.0,
            "tokens_per_second": None,
        }
    metric = "score" if "score" in history[-1] else "reward"
    window = history[-max(1, math.ceil(FINAL_FRACTION * len(history))) :]

    def mean(key: str) -> float | None:
        kept = [float(v) for v in (m.get(key) for m in window) if v is not None]
        return math.fsum(kept) / len(kept) if kept else None

    tokens = int(sum(int(m.get("tokens", 0)) for m in history))
    seconds = math.fsum(float(m.get("seconds", 0.0)) for m in history)
    return {
        "iterations": len(history),
        "reward_metric": metric,
        "final_reward": mean(metric),
        "final_kl": mean("kl") if "kl" in history[-1] else None,
        "tokens": tokens,
        "train_seconds": seconds,
        "tokens_per_second": tokens / seconds if seconds else None,
    }
