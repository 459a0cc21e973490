r"""Annealing schedules for the exploration rate ε and the Boltzmann temperature τ.

A schedule is a callable ``schedule(step) -> float`` of the global step count ``step = 0, 1, ...``
(the number of updates or environment steps taken so far; the caller decides which), plus
``schedule.values(n)`` for the first ``n`` steps as a float64 array.

* :class:`ConstantSchedule`: :math:`x_t = x_0`.
* :class:`LinearSchedule`: :math:`x_t = x_0 + (x_1 - x_0)\min(t/T, 1)` — linear from ``start`` to
  ``end`` over ``steps`` steps, then held (the DQN ε schedule, Mnih et al. 2015).
* :class:`ExponentialSchedule`: :math:`x_t = \max(x_1, x_0\,d^{t})` for decreasing schedules
  (``end <= start``), :math:`\min(x_1, x_0 d^t)` for increasing ones — geometric decay by ``decay``
  per step toward a floor (annealed Boltzmann exploration, Sutton & Barto §2.7/§13).
"""

from __future__ import annotations

import math

import numpy as np

from . import _validation as check

__all__ = ["ConstantSchedule", "ExponentialSchedule", "LinearSchedule"]


def _step(step: object) -> int:
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer)):
        raise TypeError(f"step must be an int, got {type(step).__name__}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return int(step)


class _Schedule:
    """Base of the schedules: ``schedule(step)`` and ``schedule.values(n)`` over ``_value``."""

    def _value(self, t: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, step: int) -> float:
        """The value at ``step`` (an int >= 0)."""
        return self._value(_step(step))

    def values(self, n: int) -> np.ndarray:
        """The schedule at steps 0 .. n-1."""
        n = check.positive_int(n, "n", minimum=0)
        return np.array([self._value(t) for t in range(n)], dtype=np.float64)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class ConstantSchedule(_Schedule):
    """The same value at every step: :math:`x_t = x_0`.

    ``value`` (attribute and argument): :math:`x_0`, a finite real (ε or τ, in their own units).
    """

    def __init__(self, value: float) -> None:
        self.value = check.real(value, "value")

    def _value(self, t: int) -> float:
        return self.value


class LinearSchedule(_Schedule):
    r"""Linear interpolation from ``start`` (step 0) to ``end`` (step ``steps``), then ``end``:
    :math:`x_t = x_0 + (x_1 - x_0)\min(t/T, 1)` (the DQN ε schedule, Mnih et al. 2015).

    Attributes (and arguments): ``start`` :math:`x_0` and ``end`` :math:`x_1`, finite reals;
    ``steps`` :math:`T \ge 1`, the number of steps of the ramp.
    """

    def __init__(self, start: float, end: float, steps: int) -> None:
        self.start = check.real(start, "start")
        self.end = check.real(end, "end")
        self.steps = check.positive_int(steps, "steps")

    def _value(self, t: int) -> float:
        frac = min(t / self.steps, 1.0)
        return self.start + (self.end - self.start) * frac


class ExponentialSchedule(_Schedule):
    r"""``start * decay**t``, clipped at ``end`` (a floor when decaying, a ceiling when growing):
    :math:`x_t = \max(x_1, x_0 d^t)` for ``end <= start``, else :math:`\min(x_1, x_0 d^t)`
    (annealed Boltzmann exploration, Sutton & Barto §2.7/§13).

    Attributes (and arguments): ``start`` :math:`x_0 > 0`, ``end`` :math:`x_1 > 0`, ``decay``
    :math:`d > 0`, the factor per step (< 1 to decrease toward ``end``, > 1 to grow toward it).
    """

    def __init__(self, start: float, end: float, decay: float) -> None:
        self.start = check.real(start, "start", 0.0, None, low_open=True)
        self.end = check.real(end, "end", 0.0, None, low_open=True)
        self.decay = check.real(decay, "decay", 0.0, None, low_open=True)
        if (end < start and decay >= 1.0) or (end > start and decay <= 1.0):
            raise ValueError(f"decay={decay} never moves start={start} toward end={end}")

    def _value(self, t: int) -> float:
        value = self.start * math.exp(t * math.log(self.decay))
        return max(self.end, value) if self.end <= self.start else min(self.end, value)
