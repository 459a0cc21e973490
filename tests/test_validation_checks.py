"""fastlmrl._validation's shared checks (issue 14 item 3): the one "too large" check and the array
helpers that topics used to import from each other."""

import numpy as np
import pytest

from fastlmrl import _validation as check


def test_size_refuses_more_than_2_31_elements_naming_the_argument():
    check.size(2**31, "n", "n = 2**31", 0)  # the limit itself is allowed
    with pytest.raises(
        ValueError,
        match=r"^num_envs: num_envs \* max_new_tokens = 3 \* 1099511627776 is too large: "
        r"3298534883328 elements, more than 2\*\*31 = 2147483648$",
    ):
        check.size(3 * 2**40, "num_envs", "num_envs * max_new_tokens = 3 * 1099511627776")


def test_size_refuses_more_bytes_than_this_machine_has(monkeypatch):
    monkeypatch.setattr(check, "physical_memory", lambda: 1000)
    check.size(125, "n", "n = 125")  # 1000 bytes: fits
    with pytest.raises(
        ValueError,
        match=r"^n: n = 126 is too large: 126 elements need 1008 bytes \(0\.0 GiB\), more than "
        r"the 0\.0 GiB of memory of this machine$",
    ):
        check.size(126, "n", "n = 126")
    check.size(10**6, "k", "k = 1000000", 0, unit="iterations")  # a loop needs no memory


def test_size_of_iterations_and_shapes():
    with pytest.raises(ValueError, match=r"^k: k = 2\*\*32 is too large: 4294967296 iterations"):
        check.size(2**32, "k", "k = 2**32", 0, unit="iterations")
    check.array_size((10, 10), "n")
    with pytest.raises(
        ValueError, match=r"^size: an array of shape \(9223372036854775808,\) is too large"
    ):
        check.array_size((2**63,), "size", itemsize=1)
    # an array shape has no element limit, only the memory one
    check.array_size((2**31 + 1,), "n", itemsize=0)


def test_not_finite_names_the_first_bad_entry_read():
    x = np.array([[1.0, np.nan, 2.0], [np.inf, 0.0, -np.inf]])
    assert check.not_finite("rewards", x) == "rewards[0, 1] = nan is not finite"
    where = np.array([[1, 0, 1], [0, 1, 1]], np.uint8)
    assert check.not_finite("rewards", x, where) == "rewards[1, 2] = -inf is not finite"
    assert check.not_finite("r", np.array([1.0, np.inf])) == "r[1] = inf is not finite"
    assert check.not_finite("r", np.ones(3)) == "invalid r"


def test_mask_real_array_and_dtypes():
    m = check.mask([[True, False]], (1, 2))
    assert m.dtype == np.uint8 and m.tolist() == [[1, 0]]
    assert check.mask(None, (2, 3)).tolist() == [[1] * 3] * 2
    assert check.mask(np.array([[0, 1]]), (1, 2)).tolist() == [[0, 1]]
    with pytest.raises(ValueError, match="^keep must be boolean"):
        check.mask([[2, 0]], (1, 2), "keep")
    with pytest.raises(TypeError, match="^mask must be a boolean array"):
        check.mask([[0.5, 1.0]], (1, 2))
    with pytest.raises(ValueError, match=r"^mask must have shape \(1, 3\)"):
        check.mask([[True, False]], (1, 3))
    with pytest.raises(TypeError, match="^values must hold real numbers"):
        check.real_array(["a"], "values")
    with pytest.raises(ValueError, match="^values must be 2-dimensional"):
        check.real_array([1.0], "values", 2)
    f32, f64 = np.zeros(2, np.float32), np.zeros(2)
    assert check.work_dtype(f32, None, f32) == np.float32
    assert check.work_dtype(f32, f64) == np.float64
    frozen = np.arange(4.0)
    frozen.flags.writeable = False
    converted = check.as_dtype(frozen, np.float64)
    assert converted.flags.writeable and np.shares_memory(converted, frozen)
    assert check.as_dtype(np.arange(4), np.float32).dtype == np.float32
