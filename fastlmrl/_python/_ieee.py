"""IEEE 754 results for the reference's libm calls, as the compiled backends get them.

``math.exp(710.0)`` raises ``OverflowError`` in Python where C's ``exp`` returns +inf (and sets
errno, which nothing reads); the reference follows C, so that every backend gives the same
result for the same input (an infinite loss or ratio, say, for a log-ratio of 1e30).
"""

import math

__all__ = ["exp", "expm1"]

INF = math.inf


def exp(x: float) -> float:
    """``math.exp(x)``, +inf where it overflows (x > ~709.78)."""
    try:
        return math.exp(x)
    except OverflowError:
        return INF


def expm1(x: float) -> float:
    """``math.expm1(x)``, +inf where it overflows."""
    try:
        return math.expm1(x)
    except OverflowError:
        return INF
