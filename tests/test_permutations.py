"""permutations: every backend returns numpy's stable argsort of the counter-based uniforms,
advances a RandomStream by n, draws permutations uniformly, and rejects bad arguments."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import fastlmrl
from fastlmrl import Status
from fastlmrl.rng import RandomStream, uniforms


@settings(max_examples=40)
@given(n=st.integers(0, 3000), seed=st.integers(0, 2**64 - 1), counter=st.integers(0, 2**64 - 1))
@example(n=2, seed=0, counter=2**64 - 2)  # the last counters a stream has (uniforms wrap there)
def test_compiled_equals_stable_argsort_of_uniforms(n, seed, counter):
    counter = min(counter, 2**64 - n)  # a stream has 2**64 counters: n must fit
    expected = np.argsort(uniforms(RandomStream(seed, 0, counter), n), kind="stable")
    for b in ("numba", "cython"):
        with fastlmrl.use_backend(b):
            got = fastlmrl.permutation(RandomStream(seed, 0, counter), n)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("n", [0, 1, 2, 7, 300])
def test_reference_equals_stable_argsort(n):
    with fastlmrl.use_backend("python"):
        got = fastlmrl.permutation(11, n)
    np.testing.assert_array_equal(got, np.argsort(uniforms(11, n), kind="stable"))


def test_large_permutation_is_a_permutation(backend):
    n = 100_003 if backend != "python" else 2_000
    p = fastlmrl.permutation(5, n)
    np.testing.assert_array_equal(np.sort(p), np.arange(n))


def test_stream_advances_by_n_and_int_seed_is_fresh(backend):
    s = RandomStream(3)
    a = fastlmrl.permutation(s, 50)
    assert s.counter == 50
    b = fastlmrl.permutation(s, 50)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(fastlmrl.permutation(3, 50), a)  # an int: counter 0 again
    np.testing.assert_array_equal(fastlmrl.rng.permutation(RandomStream(3, 0, 50), 50), b)


def test_permutations_are_uniform():
    # n = 4: 24 orders, 24,000 draws from one stream -> 1,000 expected each.  Pearson's statistic
    # has 23 degrees of freedom; P(chi2_23 > 70) ~ 1e-6, so a correct generator fails ~never.
    s = RandomStream(2024)
    counts = dict.fromkeys(itertools.permutations(range(4)), 0)
    for _ in range(24_000):
        counts[tuple(fastlmrl.permutation(s, 4).tolist())] += 1
    chi2 = sum((c - 1000) ** 2 / 1000 for c in counts.values())
    assert chi2 < 70, chi2
    # and every position is equally likely to hold index 0 (first-order check, same draws)
    assert math.isclose(sum(c for k, c in counts.items() if k[0] == 0), 6000, rel_tol=0.05)


@pytest.mark.parametrize("n, error", [(-1, ValueError), (2.0, TypeError), (True, TypeError)])
def test_bad_n(n, error):
    with pytest.raises(error, match="n must"):
        fastlmrl.permutation(0, n)


def test_bad_seed():
    with pytest.raises(ValueError, match="seed"):
        fastlmrl.permutation(-1, 3)


@pytest.mark.parametrize("short", ["uniforms", "starts"])
def test_kernel_rejects_short_scratch_before_writing(compiled, reference, short):
    # a direct caller (Numba/Cython user) passing too small scratch arrays gets BAD_SHAPES and
    # an untouched ``out`` instead of writes out of bounds
    n = 50
    for module in (compiled, reference):
        out = np.full(n, -7, dtype=np.int64)
        scratch = {"uniforms": np.empty(n), "starts": np.empty(n + 1, dtype=np.int64)}
        scratch[short] = scratch[short][:-1]
        status = module.random_permutation(
            np.uint64(3), np.uint64(0), out, scratch["uniforms"], scratch["starts"]
        )
        assert status == Status.BAD_SHAPES
        assert (out == -7).all()
