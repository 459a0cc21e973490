"""The counter-based generator: known SplitMix64 values, uniformity, stream bookkeeping."""
import numpy as np
import pytest

import fastlmrl
from fastlmrl.rng import RandomStream, mix64, random_bits, stream_key, uniform


def test_splitmix64_matches_the_published_sequence():
    # SplitMix64 seeded with 1234567: first outputs from Vigna's reference C implementation
    # (splitmix64.c: z = (x += 0x9e3779b97f4a7c15); ...).
    x = 1234567
    expected = [6457827717110365317, 3203168211198807973, 9817491932198370423]
    assert [random_bits(x, i) for i in range(3)] == expected


def test_mix64_is_a_bijection_on_a_sample():
    values = {mix64(i) for i in range(10000)}
    assert len(values) == 10000


def test_uniform_is_in_unit_interval_and_roughly_uniform():
    key = stream_key(42)
    u = np.array([uniform(key, i) for i in range(20000)])
    assert u.min() >= 0.0 and u.max() < 1.0
    counts, _ = np.histogram(u, bins=10, range=(0, 1))
    # chi-square with 9 dof: 99.9% quantile is 27.9
    chi2 = ((counts - 2000) ** 2 / 2000).sum()
    assert chi2 < 27.9


def test_streams_and_seeds_differ():
    assert stream_key(1, 0) != stream_key(1, 1)
    assert stream_key(1, 0) != stream_key(2, 0)


def test_random_stream_advances_and_restores():
    s = RandomStream(7)
    assert s.take(5) == 0 and s.counter == 5
    saved = s.state()
    t = RandomStream.from_state(saved)
    assert t == s and t.key == s.key
    assert s.spawn(3).stream == 3


@pytest.mark.parametrize("bad", [-1, 2**64, 1.5, "1", True])
def test_bad_seed(bad):
    with pytest.raises((TypeError, ValueError), match="seed"):
        RandomStream(bad)


def test_from_state_rejects_garbage():
    with pytest.raises(ValueError, match="RandomStream state"):
        RandomStream.from_state({"seed": 1})


def test_resumed_stream_draws_what_an_uninterrupted_one_would(backend):
    q = np.random.default_rng(0).standard_normal((10, 6))
    states = np.arange(10).repeat(3)
    whole = RandomStream(99)
    a1 = fastlmrl.epsilon_greedy(q, states, 0.5, whole)
    a2 = fastlmrl.boltzmann(q, states, 0.7, whole)
    first = RandomStream(99)
    b1 = fastlmrl.epsilon_greedy(q, states, 0.5, first)
    resumed = RandomStream.from_state(first.state())  # e.g. after a checkpoint
    b2 = fastlmrl.boltzmann(q, states, 0.7, resumed)
    np.testing.assert_array_equal(a1, b1)
    np.testing.assert_array_equal(a2, b2)
    assert resumed.counter == whole.counter == 2 * 30 + 30
