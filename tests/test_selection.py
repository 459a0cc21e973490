"""greedy / epsilon_greedy / boltzmann: reference equivalence, hand cases, seeds, bad input."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from shape_checks import assert_rejects_bad_shapes

import fastlmrl
from fastlmrl import RandomStream
from fastlmrl._status import BAD_SHAPES
from fastlmrl.rng import stream_key

# Tables with many ties (small integers), NaN and infinities mixed in.
cell = st.one_of(
    st.integers(-3, 3).map(float),
    st.floats(-1e6, 1e6, allow_nan=False, width=32),
    st.sampled_from([math.nan, -math.inf]),
)


@st.composite
def problems(draw, max_actions=9):
    n_states = draw(st.integers(1, 6))
    n_actions = draw(st.integers(1, max_actions))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    q = draw(hnp.arrays(dtype, (n_states, n_actions), elements=cell))
    index = draw(st.sampled_from([np.int32, np.int64]))
    states = draw(hnp.arrays(index, st.integers(0, 40), elements=st.integers(0, n_states - 1)))
    return q, states


@st.composite
def finite_problems(draw):
    """Boltzmann needs a finite max per row (documented)."""
    q, states = draw(problems())
    q = np.where(np.isfinite(q), q, 0).astype(q.dtype)
    return q, states


@given(problems())
def test_greedy_matches_reference(compiled, reference, problem):
    q, states = problem
    expected = np.empty(len(states), np.int64)
    got = np.empty(len(states), np.int64)
    assert reference.greedy(q, states, expected, 1) == 0
    assert compiled.greedy(q, states, got, 1) == 0
    np.testing.assert_array_equal(got, expected)


@given(problems(max_actions=300))
def test_greedy_matches_reference_on_long_rows(compiled, reference, problem):
    """Rows of 64+ entries take the unrolled / vectorised max paths of the compiled backends."""
    q, states = problem
    expected = np.empty(len(states), np.int64)
    got = np.empty(len(states), np.int64)
    reference.greedy(q, states, expected, 1)
    compiled.greedy(q, states, got, 1)
    np.testing.assert_array_equal(got, expected)


@given(problems(), st.floats(0, 1), st.integers(0, 2**64 - 1), st.integers(0, 2**40))
def test_epsilon_greedy_matches_reference(compiled, reference, problem, eps, seed, counter):
    q, states = problem
    key = np.uint64(stream_key(seed))
    expected = np.empty(len(states), np.int64)
    got = np.empty(len(states), np.int64)
    reference.epsilon_greedy(q, states, eps, key, np.uint64(counter), expected, 1)
    compiled.epsilon_greedy(q, states, eps, key, np.uint64(counter), got, 1)
    np.testing.assert_array_equal(got, expected)


@given(finite_problems(), st.floats(1e-3, 1e3), st.integers(0, 2**64 - 1))
def test_boltzmann_matches_reference(compiled, reference, problem, temperature, seed):
    q, states = problem
    key = np.uint64(stream_key(seed))
    expected = np.empty(len(states), np.int64)
    got = np.empty(len(states), np.int64)
    reference.boltzmann(q, states, temperature, key, np.uint64(5), expected, 1)
    compiled.boltzmann(q, states, temperature, key, np.uint64(5), got, 1)
    np.testing.assert_array_equal(got, expected)


def test_greedy_hand_cases(backend):
    q = np.array(
        [
            [1.0, 3.0, 3.0, 2.0],  # tie -> lowest index 1
            [np.nan, -1.0, -2.0, -1.0],  # NaN ignored, tie -> 1
            [np.nan, np.nan, np.nan, np.nan],  # all NaN -> 0
            [-np.inf, -np.inf, -5.0, -np.inf],
        ]
    )
    np.testing.assert_array_equal(fastlmrl.greedy(q, [0, 1, 2, 3, 0]), [1, 1, 0, 2, 1])


def test_epsilon_extremes(backend):
    q = np.random.default_rng(1).standard_normal((50, 7))
    states = np.arange(50)
    np.testing.assert_array_equal(fastlmrl.epsilon_greedy(q, states, 0.0, 3), q.argmax(1))
    # epsilon = 1: uniform over all actions, independent of q
    a = fastlmrl.epsilon_greedy(q, np.zeros(70000, np.int64), 1.0, 3)
    freq = np.bincount(a, minlength=7) / a.size
    assert np.abs(freq - 1 / 7).max() < 0.01


def test_epsilon_greedy_distribution(backend):
    q = np.array([[0.0, 5.0, 1.0, 2.0]])
    a = fastlmrl.epsilon_greedy(q, np.zeros(80000, np.int64), 0.2, 11)
    freq = np.bincount(a, minlength=4) / a.size
    expected = np.array([0.05, 0.85, 0.05, 0.05])  # eps/V + (1-eps)[greedy]
    assert np.abs(freq - expected).max() < 0.01


def test_boltzmann_distribution(backend):
    q = np.array([[0.0, 1.0, 2.0]])
    tau = 0.8
    a = fastlmrl.boltzmann(q, np.zeros(80000, np.int64), tau, 5)
    freq = np.bincount(a, minlength=3) / a.size
    p = np.exp(q[0] / tau) / np.exp(q[0] / tau).sum()
    assert np.abs(freq - p).max() < 0.01


def test_boltzmann_tiny_temperature_is_greedy(backend):
    q = np.random.default_rng(2).standard_normal((30, 5))
    np.testing.assert_array_equal(fastlmrl.boltzmann(q, np.arange(30), 1e-6, 1), q.argmax(1))


@pytest.mark.parametrize("fn", ["greedy", "epsilon_greedy", "boltzmann"])
def test_same_seed_same_actions_across_backends_and_threads(fn, monkeypatch):
    monkeypatch.setattr(
        fastlmrl._free_cores, "enabled", False
    )  # two threads even on a busy machine
    rng = np.random.default_rng(3)
    q = rng.integers(0, 3, (300, 11)).astype(np.float32)
    states = rng.integers(0, 300, 20000)  # above the parallel threshold
    args = {"greedy": (), "epsilon_greedy": (0.3, 17), "boltzmann": (0.5, 17)}[fn]
    results = []
    for name in fastlmrl.BACKENDS:
        for threads in (1, 2):
            fastlmrl.set_num_threads(threads)
            try:
                with fastlmrl.use_backend(name):
                    results.append(getattr(fastlmrl, fn)(q, states, *args))
            finally:
                fastlmrl.set_num_threads(None)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_random_stream_is_advanced_by_the_documented_amount(backend):
    q = np.zeros((3, 4))
    s = RandomStream(1)
    fastlmrl.epsilon_greedy(q, [0, 1, 2], 0.5, s)
    assert s.counter == 6
    fastlmrl.boltzmann(q, [0, 1], 1.0, s)
    assert s.counter == 8


def test_int_seed_is_a_fresh_stream(backend):
    q = np.zeros((1, 50))
    a = fastlmrl.epsilon_greedy(q, np.zeros(100, int), 1.0, 9)
    b = fastlmrl.epsilon_greedy(q, np.zeros(100, int), 1.0, 9)
    c = fastlmrl.epsilon_greedy(q, np.zeros(100, int), 1.0, 10)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_empty_batch(backend):
    q = np.zeros((2, 3), np.float32)
    for out in (
        fastlmrl.greedy(q, []),
        fastlmrl.epsilon_greedy(q, [], 0.1, 0),
        fastlmrl.boltzmann(q, [], 1.0, 0),
    ):
        assert out.shape == (0,) and out.dtype == np.int64


# ----------------------------------------------------------------------------- bad input
Q = np.zeros((4, 3))


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: fastlmrl.greedy(Q.tolist(), [0]), TypeError, "q must be a numpy.ndarray"),
        (lambda: fastlmrl.greedy(Q.astype(np.int64), [0]), TypeError, "q must have dtype"),
        (lambda: fastlmrl.greedy(Q[None], [0]), ValueError, "q must be 2-dimensional"),
        (lambda: fastlmrl.greedy(np.zeros((4, 0)), [0]), ValueError, "empty axis"),
        (lambda: fastlmrl.greedy(np.zeros((3, 4)).T, [0]), ValueError, "C-contiguous"),
        (lambda: fastlmrl.greedy(Q, [4]), ValueError, r"states\[0\] = 4 is out of range"),
        (lambda: fastlmrl.greedy(Q, [0, -1]), ValueError, r"states\[1\] = -1"),
        (lambda: fastlmrl.greedy(Q, [0.5]), TypeError, "states must hold integer ids"),
        (lambda: fastlmrl.greedy(Q, [[0]]), ValueError, "states must be 1-dimensional"),
        (lambda: fastlmrl.epsilon_greedy(Q, [0], 1.5, 0), ValueError, "epsilon must be in"),
        (
            lambda: fastlmrl.epsilon_greedy(Q, [0], math.nan, 0),
            ValueError,
            "epsilon must be finite",
        ),
        (lambda: fastlmrl.epsilon_greedy(Q, [0], "0.1", 0), TypeError, "epsilon must be a real"),
        (lambda: fastlmrl.epsilon_greedy(Q, [0], 0.1, -1), ValueError, "seed must be in"),
        (lambda: fastlmrl.epsilon_greedy(Q, [0], 0.1, 0.5), TypeError, "seed must be an int"),
        (lambda: fastlmrl.boltzmann(Q, [0], 0.0, 0), ValueError, "temperature must be in"),
        (lambda: fastlmrl.boltzmann(Q, [0], -1.0, 0), ValueError, "temperature must be in"),
        (lambda: fastlmrl.boltzmann(Q, [9], 1.0, 0), ValueError, "states"),
    ],
)
def test_bad_input(backend, call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_failed_call_does_not_advance_the_stream(backend):
    s = RandomStream(5)
    with pytest.raises(ValueError):
        fastlmrl.epsilon_greedy(Q, [0, 7], 0.5, s)
    assert s.counter == 0


def test_read_only_table_is_accepted_for_selection(backend):
    q = np.arange(12.0).reshape(4, 3)
    q.flags.writeable = False
    np.testing.assert_array_equal(fastlmrl.greedy(q, [0, 3]), [2, 2])


# ---- array shapes (direct callers) -------------------------------------------------------------


@pytest.mark.parametrize("kernel", ["boltzmann", "epsilon_greedy", "greedy"])
def test_inconsistent_array_shapes_are_rejected_first(compiled, reference, kernel):
    q = np.linspace(-1.0, 1.0, 12).reshape(3, 4)
    states, out = np.array([0, 2, 1, 2], np.int64), np.full(4, -7, np.int64)
    seed = dict(key=np.uint64(5), counter=np.uint64(0))
    args = {
        "greedy": dict(q=q, states=states, out=out, num_threads=1),
        "epsilon_greedy": dict(q=q, states=states, epsilon=0.5, **seed, out=out, num_threads=1),
        "boltzmann": dict(q=q, states=states, temperature=1.0, **seed, out=out, num_threads=1),
    }[kernel]
    for module in (reference, compiled):
        # q's shape is free (a short q only moves the id range)
        assert_rejects_bad_shapes(module, kernel, args, skip={("q", 0), ("q", 1)})


def test_bad_shapes_status_is_an_internal_error():
    # never reached through the public API (the wrappers pass consistent shapes); still mapped
    with pytest.raises(ValueError, match="internal error: array arguments of inconsistent shapes"):
        fastlmrl.selection._finish(BAD_SHAPES, np.zeros(1, np.int64), np.zeros((1, 1)))


# ---- batch of one: epsilon_greedy_one and the direct call of the public function ---------------


@given(
    problems(),
    st.sampled_from([0.0, 0.3, 1.0]),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 3),
)
def test_epsilon_greedy_one_is_item_zero_of_the_batch(
    compiled, reference, problem, eps, seed, counter
):
    q, states = problem
    key = stream_key(seed)
    for s in states[:3].tolist():
        batch = np.empty(1, np.int64)
        assert (
            reference.epsilon_greedy(
                q, np.array([s]), eps, np.uint64(key), np.uint64(counter), batch, 1
            )
            == 0
        )
        for module in (reference, compiled):
            assert module.epsilon_greedy_one(q, s, eps, np.uint64(key), np.uint64(counter)) == (
                0,
                batch[0],
            )


@pytest.mark.parametrize(
    "eps, state, status",
    [
        (1.5, 0, int(fastlmrl.Status.BAD_EPSILON)),
        (math.nan, 0, int(fastlmrl.Status.BAD_EPSILON)),
        (-0.1, 9, int(fastlmrl.Status.BAD_EPSILON)),  # epsilon is checked first
        (0.5, -1, int(fastlmrl.Status.BAD_STATES)),
        (0.5, 4, int(fastlmrl.Status.BAD_STATES)),
    ],
)
def test_epsilon_greedy_one_statuses(compiled, reference, eps, state, status):
    for module in (reference, compiled):
        for dtype in (np.float32, np.float64):
            assert module.epsilon_greedy_one(np.zeros((4, 3), dtype), state, eps, 7, 0) == (
                status,
                0,
            )


@pytest.mark.parametrize("states", [[2], np.array([2]), np.array([2], np.int32)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_of_one_equals_the_full_path(backend, states, dtype):
    """The direct call (RandomStream, one state, float epsilon) gives what the validated batch
    path gives (a read-only table takes that path) and advances the stream by 2."""
    q = np.random.default_rng(3).standard_normal((4, 5)).astype(dtype)
    q_read_only = q.copy()
    q_read_only.flags.writeable = False
    for eps in (0.0, 0.5, 1.0):
        direct, validated = RandomStream(11, counter=40), RandomStream(11, counter=40)
        for _ in range(20):
            a = fastlmrl.epsilon_greedy(q, states, eps, direct)
            b = fastlmrl.epsilon_greedy(q_read_only, states, eps, validated)
            assert a.dtype == np.int64 and a.shape == (1,)
            np.testing.assert_array_equal(a, b)
        assert direct.counter == validated.counter == 80


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (
            lambda s: fastlmrl.epsilon_greedy(Q, [4], 0.5, s),
            ValueError,
            r"states\[0\] = 4 is out of range \[0, 4\)",
        ),
        (
            lambda s: fastlmrl.epsilon_greedy(Q, np.array([-1]), 0.5, s),
            ValueError,
            r"states\[0\] = -1",
        ),
        (lambda s: fastlmrl.epsilon_greedy(Q, [0], 1.5, s), ValueError, "epsilon must be in"),
        (
            lambda s: fastlmrl.epsilon_greedy(Q, [0], math.nan, s),
            ValueError,
            "epsilon must be finite",
        ),
        (lambda s: fastlmrl.epsilon_greedy(Q, [2**63], 0.5, s), ValueError, "states"),
    ],
)
def test_batch_of_one_errors_name_the_argument(backend, call, exc, match):
    s = RandomStream(5, counter=3)
    with pytest.raises(exc, match=match):
        call(s)
    assert s.counter == 3


def test_batch_of_one_refuses_an_exhausted_stream(backend):
    s = RandomStream(5, counter=2**64 - 1)  # one counter left, the call needs two
    with pytest.raises(fastlmrl.rng.RandomStreamExhausted):
        fastlmrl.epsilon_greedy(Q, [0], 0.5, s)
    assert s.counter == 2**64 - 1
    s = RandomStream(5, counter=2**64 - 2)
    fastlmrl.epsilon_greedy(Q, [0], 0.5, s)
    assert s.counter == 2**64


def test_epsilon_greedy_one_in_a_users_njit_loop_equals_the_batch():
    from numba import njit

    from fastlmrl import numba_kernels

    @njit
    def choose_each(q, states, epsilon, key, counter):
        out = np.empty(states.shape[0], np.int64)
        bad = 0
        for i in range(states.shape[0]):
            status, action = numba_kernels.epsilon_greedy_one(
                q, states[i], epsilon, key, counter + np.uint64(2 * i)
            )
            bad += status
            out[i] = action
        return bad, out

    q = np.random.default_rng(4).standard_normal((5, 7))
    states = np.random.default_rng(5).integers(0, 5, 200)
    key, counter = np.uint64(stream_key(9)), np.uint64(2**63 + 11)
    expected = np.empty(200, np.int64)
    assert numba_kernels.epsilon_greedy(q, states, 0.4, key, counter, expected, 1) == 0
    bad, got = choose_each(q, states, 0.4, key, counter)
    assert bad == 0
    np.testing.assert_array_equal(got, expected)
    assert 0 < (got != q[states].argmax(axis=1)).sum() < 200  # some explored, some greedy


def test_batch_of_one_follows_backend_and_dtype_switches():
    """The batch-1 call keeps the kernel it last used (with a Cython kernel's float32 / float64
    specialisations); switching backends and table dtypes between calls still draws exactly what
    the batched call draws (every other call uses a table of the other dtype, which consumes the
    same two counters)."""
    rng = np.random.default_rng(4)
    tables = {dt: rng.standard_normal((9, 5)).astype(dt) for dt in (np.float32, np.float64)}
    states = np.arange(60) % 9
    for dtype, q in tables.items():
        expected = fastlmrl.epsilon_greedy(q, states, 0.4, fastlmrl.RandomStream(21))
        stream, got = fastlmrl.RandomStream(21), []
        for i, s in enumerate(states):
            backend = ("cython", "numba", "python")[i % 3]
            with fastlmrl.use_backend(backend):
                q_i = q if i % 2 else tables[np.float64 if dtype is np.float32 else np.float32]
                action = fastlmrl.epsilon_greedy(q_i, np.array([s]), 0.4, stream)
            if i % 2:
                got.append((i, int(action[0])))
        assert all(expected[i] == a for i, a in got)
        assert stream.counter == fastlmrl.RandomStream(21).counter + 2 * len(states)
