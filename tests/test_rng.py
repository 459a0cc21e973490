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


# --- capacity and wrap-around at the top of the counter range (issues 10 and 11) ---------------
from hypothesis import example, given  # noqa: E402
from hypothesis import strategies as st

from fastlmrl import rng  # noqa: E402
from fastlmrl.rng import RandomStreamExhausted, check_capacity  # noqa: E402

TOP = 2**64


@given(counter=st.integers(TOP - 40, TOP), n=st.integers(0, 40))
@example(counter=TOP - 1, n=0)  # issue 10's repro: uniforms(RandomStream(0, 0, 2**64 - 1), 0)
@example(counter=TOP - 1, n=1)  # the very last counter is an ordinary draw
@example(counter=TOP - 3, n=3)
@example(counter=TOP - 3, n=4)  # one counter too many
@example(counter=TOP, n=0)
@example(counter=TOP, n=1)
def test_uniforms_at_the_top_of_the_counter_range(counter, n):
    stream = RandomStream(5, 2, counter)
    if n > TOP - counter:
        with pytest.raises(ValueError, match="seed.*exhausted"):
            rng.uniforms(stream, n)
        assert stream.counter == counter  # nothing consumed
        return
    u = rng.uniforms(stream, n)
    # the scalar definition, counters taken modulo 2**64
    expected = [uniform(stream.key, c % TOP) for c in range(counter, counter + n)]
    assert u.tolist() == expected
    assert stream.counter == counter + n


def test_uniforms_wraps_like_the_scalar_definition_for_an_explicit_key():
    # (i + 1) * G wraps: counter 2**64 - 1 gives key + 2**64 * G = key (mod 2**64)
    key = stream_key(5, 2)
    assert random_bits(key, TOP - 1) == mix64(key)


def test_take_raises_a_value_error_naming_the_argument_and_keeps_the_stream():
    s = RandomStream(1, 0, TOP - 2)
    with pytest.raises(RandomStreamExhausted, match="^rng:"):
        s.take(3, "rng")
    assert s.counter == TOP - 2
    assert issubclass(RandomStreamExhausted, ValueError)
    assert not issubclass(RandomStreamExhausted, OverflowError)
    assert s.take(2) == TOP - 2 and s.counter == TOP and s.remaining() == 0
    with pytest.raises(ValueError, match="seed"):
        s.take(1)
    assert s.take(0) == TOP  # drawing nothing from an exhausted stream is fine


def test_exhausted_state_round_trips():
    s = RandomStream(3, 1, TOP)
    assert RandomStream.from_state(s.state()) == s
    with pytest.raises(ValueError, match="counter"):
        RandomStream(3, 1, TOP + 1)


def test_check_capacity():
    s = RandomStream(9, 0, 10)
    assert check_capacity(s, TOP - 10) == (s.key, 10)
    assert s.counter == 10  # advances nothing
    with pytest.raises(ValueError, match="^weights:"):
        check_capacity(s, TOP - 9, "weights")
    assert check_capacity(7, TOP) == (stream_key(7), 0)
    with pytest.raises(ValueError, match="seed"):
        check_capacity(7, TOP + 1)
    with pytest.raises(TypeError, match="my_seed"):
        check_capacity("7", 1, "my_seed")
    with pytest.raises(TypeError, match="my_seed"):
        check_capacity(None, 1, "my_seed")
    with pytest.raises(ValueError, match="my_seed"):
        check_capacity(-1, 1, "my_seed")
    with pytest.raises(ValueError, match="my_seed"):
        check_capacity(TOP, 1, "my_seed")
    with pytest.raises(TypeError, match="my_seed"):
        check_capacity(True, 1, "my_seed")
    with pytest.raises(ValueError, match="n_counters"):
        check_capacity(7, -1)
