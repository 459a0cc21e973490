import math

import numpy as np
import pytest

from fastlmrl import ConstantSchedule, ExponentialSchedule, LinearSchedule


def test_constant():
    s = ConstantSchedule(0.1)
    assert s(0) == s(10**9) == 0.1


def test_linear_hand_values():
    s = LinearSchedule(1.0, 0.1, 10)
    assert s(0) == 1.0
    assert s(5) == pytest.approx(0.55)
    assert s(10) == pytest.approx(0.1) and s(1000) == pytest.approx(0.1)
    np.testing.assert_allclose(s.values(3), [1.0, 0.91, 0.82])


def test_exponential_decay_with_floor_and_growth_with_ceiling():
    s = ExponentialSchedule(2.0, 0.5, 0.5)
    assert [s(t) for t in range(4)] == [2.0, 1.0, 0.5, 0.5]
    g = ExponentialSchedule(0.1, 1.0, 2.0)
    assert g(1) == pytest.approx(0.2) and g(10) == 1.0


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: LinearSchedule(1.0, 0.0, 0), "steps must be >= 1"),
        (lambda: ExponentialSchedule(1.0, 0.1, 1.5), "never moves"),
        (lambda: ExponentialSchedule(0.0, 0.1, 0.5), "start must be in"),
        (lambda: ConstantSchedule(math.nan), "value must be finite"),
    ],
)
def test_bad_schedules(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_step():
    with pytest.raises(ValueError, match="step must be >= 0"):
        ConstantSchedule(1.0)(-1)
    with pytest.raises(TypeError, match="step must be an int"):
        ConstantSchedule(1.0)(1.5)
