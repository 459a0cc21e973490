"""Tabular Monte Carlo: episode returns and first-/every-visit MC control.

Reference equivalence (hypothesis), independent NumPy formulas, hand-computed episodes, hash-set
stress, empty inputs, bad input (tables and counts left untouched on error)."""

import inspect
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from shape_checks import assert_rejects_bad_shapes, status_with_short

import fastlmrl
from fastlmrl import _backend
from fastlmrl._status import Status

elements = st.one_of(st.integers(-3, 3).map(float), st.floats(-1e3, 1e3, width=32))


@st.composite
def episode_batches(draw):
    """Few states/actions (pairs repeat within episodes), empty episodes included."""
    n_states = draw(st.integers(1, 4))
    n_actions = draw(st.integers(1, 4))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    index = draw(st.sampled_from([np.int32, np.int64]))
    lengths = draw(st.lists(st.integers(0, 9), max_size=5))
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)
    n = int(offsets[-1])
    states = draw(hnp.arrays(index, n, elements=st.integers(0, n_states - 1)))
    actions = draw(hnp.arrays(index, n, elements=st.integers(0, n_actions - 1)))
    rewards = draw(hnp.arrays(dtype, n, elements=elements))
    q = draw(hnp.arrays(dtype, (n_states, n_actions), elements=elements))
    gamma = draw(st.floats(0.0, 1.0))
    return q, states, actions, rewards, offsets, gamma


def _scratch(offsets):
    longest = int(np.diff(offsets).max()) if offsets.shape[0] > 1 else 0
    size = 2
    while size < 2 * longest:
        size *= 2
    return np.empty(size, np.int64), np.empty(size, np.int64)


def _mc_raw(module, q, counts, states, actions, rewards, offsets, gamma, first_visit, alpha):
    keys, first = _scratch(offsets)
    out = np.empty(states.shape[0], q.dtype)
    status = module.mc_control_update(
        q, states, actions, rewards, offsets, gamma, first_visit, alpha, counts, keys, first, out
    )
    return status, out


# ----------------------------------------------------------------------------- equivalence
@given(
    episode_batches(), st.booleans(), st.one_of(st.just(0.0), st.floats(0.01, 1.0)), st.booleans()
)
def test_mc_control_matches_reference(compiled, reference, batch, first_visit, alpha, with_counts):
    q, states, actions, rewards, offsets, gamma = batch
    if alpha == 0.0 or with_counts:
        counts = np.random.default_rng(len(states)).integers(0, 3, q.shape).astype(np.int64)
    else:
        counts = np.empty((0, 0), np.int64)
    q_ref, q_got, c_ref, c_got = q.copy(), q.copy(), counts.copy(), counts.copy()
    s_ref, g_ref = _mc_raw(
        reference, q_ref, c_ref, states, actions, rewards, offsets, gamma, first_visit, alpha
    )
    s_got, g_got = _mc_raw(
        compiled, q_got, c_got, states, actions, rewards, offsets, gamma, first_visit, alpha
    )
    assert s_ref == s_got == 0
    np.testing.assert_array_equal(q_got, q_ref)
    np.testing.assert_array_equal(c_got, c_ref)
    np.testing.assert_array_equal(g_got, g_ref)


@given(episode_batches(), st.data())
def test_episode_returns_matches_reference(compiled, reference, batch, data):
    _, _, _, rewards, offsets, gamma = batch
    finals = data.draw(hnp.arrays(np.float64, offsets.shape[0] - 1, elements=elements))
    ref = np.empty(rewards.shape[0], rewards.dtype)
    got = np.empty(rewards.shape[0], rewards.dtype)
    assert reference.episode_returns(rewards, offsets, gamma, finals, ref) == 0
    assert compiled.episode_returns(rewards, offsets, gamma, finals, got) == 0
    np.testing.assert_array_equal(got, ref)


def test_backends_export_the_same_kernels():
    from fastlmrl._cython import monte_carlo as cy_mc
    from fastlmrl._numba import monte_carlo as nb_mc
    from fastlmrl._python import monte_carlo as py_mc

    assert (
        py_mc.__all__ == nb_mc.__all__ == cy_mc.__all__ == ["episode_returns", "mc_control_update"]
    )
    for name in py_mc.__all__:
        expected = list(inspect.signature(getattr(py_mc, name)).parameters)
        assert list(inspect.signature(getattr(nb_mc, name).py_func).parameters) == expected
        assert list(inspect.signature(getattr(cy_mc, name)).parameters) == expected


# ----------------------------------------------------------------------------- returns
def _numpy_returns(rewards, offsets, gamma, finals):
    """Independent formula: G_t = sum_k gamma^k r_{t+k} + gamma^(L-t) * final (per episode)."""
    out = np.empty(len(rewards))
    for e in range(len(offsets) - 1):
        r = np.asarray(rewards[offsets[e] : offsets[e + 1]], np.float64)
        length = len(r)
        k = np.arange(length)
        # discount[t, u] = gamma^(u - t) for u >= t
        discount = np.triu(gamma ** np.clip(k[None, :] - k[:, None], 0, None))
        out[offsets[e] : offsets[e + 1]] = discount @ r + gamma ** (length - k) * finals[e]
    return out


def test_episode_returns_vs_numpy(backend):
    rng = np.random.default_rng(7)
    lengths = [5, 0, 1, 17, 3]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    rewards = rng.standard_normal(offsets[-1])
    finals = rng.standard_normal(len(lengths))
    for gamma in (0.0, 0.5, 0.99, 1.0):
        got = fastlmrl.episode_returns(rewards, offsets, gamma, finals)
        np.testing.assert_allclose(
            got, _numpy_returns(rewards, offsets, gamma, finals), rtol=1e-12, atol=1e-12
        )
        got0 = fastlmrl.episode_returns(rewards, offsets, gamma)
        np.testing.assert_allclose(
            got0,
            _numpy_returns(rewards, offsets, gamma, np.zeros(len(lengths))),
            rtol=1e-12,
            atol=1e-12,
        )


def test_episode_returns_hand_computed(backend):
    # episode 0: r = [1]; episode 1: r = [2, 3] truncated with bootstrap value 10; gamma 0.5
    g = fastlmrl.episode_returns([1.0, 2.0, 3.0], [0, 1, 3], 0.5, [0.0, 10.0])
    # G_2 = 3 + 0.5*10 = 8 ; G_1 = 2 + 0.5*8 = 6 ; G_0 = 1
    np.testing.assert_array_equal(g, [1.0, 6.0, 8.0])
    assert g.dtype == np.float64


def test_episode_returns_dtypes_and_empty(backend):
    g = fastlmrl.episode_returns(np.array([1.0, 2.0], np.float32), [0, 2], 0.5)
    assert g.dtype == np.float32 and g.tolist() == [2.0, 2.0]
    assert fastlmrl.episode_returns([1, 2], [0, 2], 1.0).dtype == np.float64  # ints -> float64
    for offsets in ([0], [0, 0, 0]):
        g = fastlmrl.episode_returns([], offsets, 0.9)
        assert g.shape == (0,) and g.dtype == np.float64
    # float32 rounds once: the float64 chain is rounded on store only
    r = np.array([0.1, 0.2, 0.3], np.float32)
    g = fastlmrl.episode_returns(r, [0, 3], 0.7)
    r64 = r.astype(np.float64)
    g2 = r64[2]
    g1 = 0.7 * g2 + r64[1]
    g0 = 0.7 * g1 + r64[0]
    np.testing.assert_array_equal(g, np.array([g0, g1, g2]).astype(np.float32))


# ----------------------------------------------------------------------------- hand cases
# One episode, gamma = 1: (0,1) r=1, (1,0) r=2, (0,1) r=3  -> G = [6, 5, 3]; (0,1) repeats.
EP = dict(
    states=[0, 1, 0], actions=[1, 0, 1], rewards=[1.0, 2.0, 3.0], episode_offsets=[0, 3], gamma=1.0
)


def test_first_visit_sample_average_hand(backend):
    q, counts = np.zeros((2, 2)), np.zeros((2, 2), np.int64)
    g = fastlmrl.mc_control_update(q, **EP, counts=counts)
    np.testing.assert_array_equal(g, [6.0, 5.0, 3.0])
    np.testing.assert_array_equal(q, [[0.0, 6.0], [5.0, 0.0]])  # only G_0 credits (0, 1)
    np.testing.assert_array_equal(counts, [[0, 1], [1, 0]])


def test_every_visit_sample_average_hand(backend):
    q, counts = np.zeros((2, 2)), np.zeros((2, 2), np.int64)
    fastlmrl.mc_control_update(q, **EP, first_visit=False, counts=counts)
    np.testing.assert_array_equal(q, [[0.0, 4.5], [5.0, 0.0]])  # mean(3, 6)
    np.testing.assert_array_equal(counts, [[0, 2], [1, 0]])


def test_constant_step_hand(backend):
    q = np.zeros((2, 2))
    fastlmrl.mc_control_update(q, **EP, alpha=0.5)
    np.testing.assert_array_equal(q, [[0.0, 3.0], [2.5, 0.0]])
    q, counts = np.zeros((2, 2)), np.zeros((2, 2), np.int64)
    fastlmrl.mc_control_update(q, **EP, first_visit=False, alpha=0.5, counts=counts)
    # backward: t=2, G=3: 0 -> 1.5 ; t=1: Q10 = 2.5 ; t=0, G=6: 1.5 + 0.5*4.5 = 3.75
    np.testing.assert_array_equal(q, [[0.0, 3.75], [2.5, 0.0]])
    np.testing.assert_array_equal(counts, [[0, 2], [1, 0]])  # still counted


def test_discounted_episodes_in_order(backend):
    # two episodes on the same pair, gamma 0.5: ep0 r=[1, 2] (G0 = 2, at (0,0) twice -> first
    # visit G=2), ep1 r=[4] at (0,0): G=4 ; sample mean of first visits = 3
    q, counts = np.zeros((1, 1)), np.zeros((1, 1), np.int64)
    g = fastlmrl.mc_control_update(
        q, [0, 0, 0], [0, 0, 0], [1.0, 2.0, 4.0], [0, 2, 3], 0.5, counts=counts
    )
    np.testing.assert_array_equal(g, [2.0, 2.0, 4.0])
    assert q[0, 0] == 3.0 and counts[0, 0] == 2


def _independent_visits(states, actions, rewards, offsets, gamma, first_visit):
    """{(s, a): [returns credited]} by direct forward sums (no backward recursion, no hashing)."""
    credited = {}
    for e in range(len(offsets) - 1):
        lo, hi = offsets[e], offsets[e + 1]
        seen = set()
        for t in range(lo, hi):
            pair = (int(states[t]), int(actions[t]))
            g = sum(gamma ** (u - t) * rewards[u] for u in range(t, hi))
            if first_visit and pair in seen:
                continue
            seen.add(pair)
            credited.setdefault(pair, []).append(g)
    return credited


@pytest.mark.parametrize("first_visit", [True, False])
def test_sample_average_is_mean_of_credited_returns(backend, first_visit):
    rng = np.random.default_rng(11)
    q, counts = np.zeros((3, 2)), np.zeros((3, 2), np.int64)
    credited = {}
    for _ in range(4):  # several calls accumulate into the same mean
        lengths = rng.integers(0, 8, 5)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        s = rng.integers(0, 3, offsets[-1])
        a = rng.integers(0, 2, offsets[-1])
        r = rng.standard_normal(offsets[-1])
        fastlmrl.mc_control_update(q, s, a, r, offsets, 0.9, first_visit=first_visit, counts=counts)
        for pair, gs in _independent_visits(s, a, r, offsets, 0.9, first_visit).items():
            credited.setdefault(pair, []).extend(gs)
    for s in range(3):
        for a in range(2):
            gs = credited.get((s, a), [])
            assert counts[s, a] == len(gs)
            assert q[s, a] == pytest.approx(np.mean(gs) if gs else 0.0, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("first_visit", [True, False])
def test_long_episodes_stress_the_hash_set(backend, first_visit):
    """Long episodes over many keys (probing chains, reused slots across episodes)."""
    rng = np.random.default_rng(3)
    n_states, n_actions = 40, 7
    lengths = [300, 1, 0, 257, 64]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    s = rng.integers(0, n_states, offsets[-1])
    a = rng.integers(0, n_actions, offsets[-1])
    r = rng.standard_normal(offsets[-1])
    q, counts = np.zeros((n_states, n_actions)), np.zeros((n_states, n_actions), np.int64)
    fastlmrl.mc_control_update(q, s, a, r, offsets, 0.95, first_visit=first_visit, counts=counts)
    credited = _independent_visits(s, a, r, offsets, 0.95, first_visit)
    expected_counts = np.zeros_like(counts)
    expected_q = np.zeros_like(q)
    for (si, ai), gs in credited.items():
        expected_counts[si, ai] = len(gs)
        expected_q[si, ai] = np.mean(gs)
    np.testing.assert_array_equal(counts, expected_counts)
    np.testing.assert_allclose(q, expected_q, rtol=1e-9, atol=1e-9)


def test_float32_table_rounds_once(backend):
    q = np.array([[0.1]], np.float32)
    g = fastlmrl.mc_control_update(q, [0], [0], [0.3], [0, 1], 0.9, alpha=0.7)
    q_sa, r = float(np.float32(0.1)), float(np.float32(0.3))
    assert g[0] == np.float32(r) and g.dtype == np.float32
    assert q[0, 0] == np.float32(q_sa + 0.7 * (r - q_sa))


def test_empty_inputs(backend):
    for offsets in ([0], [0, 0, 0]):
        q, counts = np.ones((2, 2), np.float32), np.zeros((2, 2), np.int64)
        g = fastlmrl.mc_control_update(q, [], [], [], offsets, 0.9, counts=counts)
        assert g.shape == (0,) and g.dtype == np.float32
        assert (q == 1).all() and (counts == 0).all()


def test_int32_and_mixed_id_dtypes(backend):
    q1, q2 = np.zeros((3, 3)), np.zeros((3, 3))
    s = np.array([0, 1, 0], np.int32)
    fastlmrl.mc_control_update(
        q1, s, np.array([1, 2, 1], np.int32), [1.0, 2.0, 3.0], [0, 3], 0.9, alpha=0.5
    )
    fastlmrl.mc_control_update(
        q2,
        s.astype(np.uint8),
        [1, 2, 1],
        [1.0, 2.0, 3.0],
        np.array([0, 3], np.int32),
        0.9,
        alpha=0.5,
    )
    np.testing.assert_array_equal(q1, q2)


# ----------------------------------------------------------------------------- bad input
def _q():
    return np.arange(6.0).reshape(2, 3)


def _counts():
    return np.arange(6, dtype=np.int64).reshape(2, 3)


GOOD = dict(
    states=[0, 1, 1],
    actions=[0, 2, 1],
    rewards=[1.0, 2.0, 3.0],
    episode_offsets=[0, 1, 3],
    gamma=0.9,
)


@pytest.mark.parametrize(
    "change, exc, match",
    [
        (dict(states=[0, 2, 0]), ValueError, r"states\[1\] = 2 is out of range \[0, 2\)"),
        (dict(states=[0, -1, 0]), ValueError, r"states\[1\] = -1 is out of range"),
        (dict(actions=[3, 0, 0]), ValueError, r"actions\[0\] = 3 is out of range \[0, 3\)"),
        (dict(states=[0.0, 1.0, 1.0]), TypeError, "states must hold integer ids"),
        (dict(actions=[0, 1]), ValueError, "actions must have length 3"),
        (dict(rewards=[1.0, math.nan, 0.0]), ValueError, r"rewards\[1\] = nan is not finite"),
        (dict(rewards=[1.0, 0.0, -math.inf]), ValueError, r"rewards\[2\] = -inf is not finite"),
        (dict(rewards=[1.0, 2.0]), ValueError, "rewards must have length 3"),
        (dict(rewards=["a", "b", "c"]), TypeError, "rewards must hold real numbers"),
        (dict(episode_offsets=[]), ValueError, "episode_offsets must have length"),
        (dict(episode_offsets=[1, 3]), ValueError, r"episode_offsets\[0\] must be 0"),
        (dict(episode_offsets=[0, 2]), ValueError, r"episode_offsets\[-1\] must equal .* 3"),
        (dict(episode_offsets=[0, 2, 1, 3]), ValueError, "non-decreasing"),
        (dict(episode_offsets=[[0, 3]]), ValueError, "episode_offsets must be 1-dimensional"),
        (dict(episode_offsets=[0.0, 3.0]), TypeError, "episode_offsets must hold integer"),
        (dict(gamma=1.5), ValueError, r"gamma must be in \[0.0, 1.0\]"),
        (dict(gamma=math.nan), ValueError, "gamma must be finite"),
        (dict(gamma="0.9"), TypeError, "gamma must be a real number"),
        (dict(first_visit=1), TypeError, "first_visit must be a bool"),
        (dict(alpha=0.0), ValueError, r"alpha must be in \(0.0, 1.0\]"),
        (dict(alpha=1.5), ValueError, "alpha must be in"),
        (dict(alpha=math.inf), ValueError, "alpha must be finite"),
        (dict(alpha="0.5"), TypeError, "alpha must be None or a real number"),
        (dict(counts=None), ValueError, "counts is required"),
        (dict(counts=_counts().astype(np.int32)), TypeError, "counts must have dtype int64"),
        (dict(counts=_counts().tolist()), TypeError, "counts must be a numpy.ndarray"),
        (dict(counts=np.zeros((3, 2), np.int64)), ValueError, "counts must have the shape"),
        (dict(counts=np.zeros((3, 2), np.int64).T), ValueError, "counts must be C-contiguous"),
    ],
)
def test_mc_bad_input_leaves_q_and_counts_untouched(backend, change, exc, match):
    q, counts = _q(), _counts()
    kwargs = dict(GOOD, counts=counts)
    kwargs.update(change)
    with pytest.raises(exc, match=match):
        fastlmrl.mc_control_update(q, **kwargs)
    np.testing.assert_array_equal(q, _q())
    np.testing.assert_array_equal(counts, _counts())


def test_mc_bad_tables(backend):
    counts = _counts()
    ro = _counts()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="counts is read-only"):
        fastlmrl.mc_control_update(_q(), **GOOD, counts=ro)
    with pytest.raises(ValueError, match="C-contiguous"):
        fastlmrl.mc_control_update(np.zeros((3, 2)).T, **GOOD, counts=counts)
    with pytest.raises(TypeError, match="float32 or float64"):
        fastlmrl.mc_control_update(_q().astype(np.float16), **GOOD, counts=counts)
    q = _q()
    with pytest.raises(ValueError, match="counts shares memory with q"):
        fastlmrl.mc_control_update(q, **GOOD, counts=q.view(np.int64))
    np.testing.assert_array_equal(counts, _counts())


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(rewards=[1.0, math.inf, 0.0]), r"rewards\[1\] = inf is not finite"),
        (dict(final_values=[0.0, math.nan]), r"final_values\[1\] = nan is not finite"),
        (dict(final_values=[0.0]), "final_values must have length 2"),
        (dict(episode_offsets=[0, 4]), r"episode_offsets\[-1\] must equal"),
        (dict(gamma=-0.5), "gamma must be in"),
    ],
)
def test_episode_returns_bad_input(backend, change, match):
    kwargs = dict(
        rewards=[1.0, 2.0, 3.0], episode_offsets=[0, 1, 3], gamma=0.9, final_values=[0.0, 1.0]
    )
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        fastlmrl.episode_returns(**kwargs)


def test_raw_kernels_reject_bad_scratch_counts_and_lengths():
    """Direct kernel calls (no wrapper) return a status and write nothing."""
    for name in ("python", "numba", "cython"):
        k = _backend.backend_module(name)
        s = np.array([0, 1, 0, 1])
        a = np.array([0, 0, 1, 0])  # noqa: E702
        r = np.ones(4)
        off = np.array([0, 4])  # noqa: E702
        q, c = np.zeros((2, 2)), np.zeros((2, 2), np.int64)
        out = np.full(4, 7.0)
        none = np.empty((0, 0), np.int64)
        big, big2 = np.empty(8, np.int64), np.empty(8, np.int64)

        def call(
            q=q,
            c=c,
            s=s,
            a=a,
            r=r,
            off=off,
            first=True,
            alpha=0.0,
            keys=big,
            slots=big2,
            out=out,
            k=k,
        ):
            return k.mc_control_update(q, s, a, r, off, 0.9, first, alpha, c, keys, slots, out)

        assert (
            call(keys=np.empty(4, np.int64), slots=np.empty(4, np.int64)) == Status.BAD_SCRATCH
        )  # < 2*4
        assert (
            call(keys=np.empty(12, np.int64), slots=np.empty(12, np.int64)) == Status.BAD_SCRATCH
        )  # not 2^k
        assert call(slots=np.empty(16, np.int64)) == Status.BAD_SCRATCH  # sizes differ
        assert call(slots=big) == 8  # one array as both halves of the scratch (OVERLAPPING_ARRAYS)
        assert call(keys=s) == 8  # the scratch over the states: the Cython kernel hung
        assert call(c=none) == Status.BAD_COUNTS  # sample average without counts
        assert call(c=np.zeros((2, 3), np.int64), alpha=0.5) == Status.BAD_COUNTS
        assert call(out=np.empty(3)) == 6
        assert call(a=np.array([0, 0, 1])) == 6
        assert call(off=np.array([0, 3, 2, 4])) == 6
        assert call(s=np.array([0, 1, 2, 1])) == 1
        assert call(a=np.array([0, 0, 2, 0])) == 2
        assert call(r=np.array([1.0, np.nan, 1.0, 1.0])) == 5
        np.testing.assert_array_equal(q, 0.0)
        np.testing.assert_array_equal(c, 0)
        np.testing.assert_array_equal(out, 7.0)
        # every-visit needs no scratch at all
        assert call(first=False, keys=np.empty(0, np.int64), slots=np.empty(0, np.int64)) == 0
        f = np.zeros(1)
        ret = np.empty(4)
        assert k.episode_returns(r, off, 0.9, np.array([np.inf]), ret) == Status.BAD_FINAL_VALUES
        assert k.episode_returns(r, off, 0.9, np.zeros(2), ret) == 6
        assert k.episode_returns(r, np.array([0, 5]), 0.9, f, ret) == 6


@settings(max_examples=20)
@given(st.integers(1, 30), st.integers(0, 2**32))
def test_first_visit_counts_equal_distinct_pairs(length, seed):
    """With counts from 0 and one episode, first-visit counts are 1 exactly on the pairs seen."""
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 5, length)
    a = rng.integers(0, 3, length)
    for name in fastlmrl.BACKENDS:
        with fastlmrl.use_backend(name):
            q, counts = np.zeros((5, 3)), np.zeros((5, 3), np.int64)
            fastlmrl.mc_control_update(q, s, a, np.ones(length), [0, length], 1.0, counts=counts)
            seen = np.zeros((5, 3), np.int64)
            seen[s, a] = 1
            np.testing.assert_array_equal(counts, seen)


@given(episode_batches(), st.data())
def test_corrupted_batch_changes_nothing_in_any_backend(batch, data):
    """One bad id or one non-finite reward anywhere: every backend raises, nothing is written."""
    q, states, actions, rewards, offsets, gamma = batch
    if states.shape[0] == 0:
        return
    i = data.draw(st.integers(0, states.shape[0] - 1))
    states, actions, rewards = states.copy(), actions.copy(), rewards.copy()
    kind = data.draw(st.sampled_from(["states", "actions", "rewards"]))
    if kind == "states":
        states[i] = data.draw(st.sampled_from([-1, q.shape[0]]))
    elif kind == "actions":
        actions[i] = data.draw(st.sampled_from([-1, q.shape[1]]))
    else:
        rewards[i] = data.draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    first_visit = data.draw(st.booleans())
    for name in fastlmrl.BACKENDS:
        with fastlmrl.use_backend(name):
            q1, counts = q.copy(), np.zeros(q.shape, np.int64)
            with pytest.raises(ValueError, match=rf"{kind}\[{i}\]"):
                fastlmrl.mc_control_update(
                    q1,
                    states,
                    actions,
                    rewards,
                    offsets,
                    gamma,
                    first_visit=first_visit,
                    counts=counts,
                )
            np.testing.assert_array_equal(q1, q)
            assert (counts == 0).all()


# ---------------------------------------------------------------------------------------------
# array shapes (direct callers)


@pytest.mark.parametrize("kernel", ["episode_returns", "mc_control_update"])
def test_inconsistent_array_shapes_are_rejected_first(compiled, reference, kernel):
    """Each array one entry short along each axis.  This topic sized every array before
    BAD_SHAPES existed, under its own codes (kept): BAD_OFFSETS lengths / offsets, BAD_COUNTS
    counts, BAD_SCRATCH hash scratch.  Nothing is written."""
    rewards, offsets = np.array([1.0, -0.5, 0.25, 2.0]), np.array([0, 1, 4], np.int64)
    args = {
        "episode_returns": dict(
            rewards=rewards,
            episode_offsets=offsets,
            gamma=0.9,
            final_values=np.array([0.5, -1.0]),
            returns_out=np.full(4, -7.0),
        ),
        "mc_control_update": dict(
            q=np.linspace(-1.0, 1.0, 6).reshape(3, 2),
            states=np.array([0, 2, 1, 2], np.int64),
            actions=np.array([1, 0, 0, 1], np.int64),
            rewards=rewards,
            episode_offsets=offsets,
            gamma=0.9,
            first_visit=True,
            alpha=0.0,
            counts=np.zeros((3, 2), np.int64),
            slot_keys=np.full(8, -7, np.int64),
            slot_first=np.full(8, -7, np.int64),
            returns_out=np.full(4, -7.0),
        ),
    }[kernel]
    codes = {"counts": Status.BAD_COUNTS, "slot_keys": Status.BAD_SCRATCH}
    codes["slot_first"] = Status.BAD_SCRATCH
    # q may have any shape (a short q only moves the id ranges)
    sized = {
        (k, axis)
        for k, v in args.items()
        if isinstance(v, np.ndarray) and k != "q"
        for axis in range(v.ndim)
    }
    for module in (reference, compiled):
        assert_rejects_bad_shapes(module, kernel, args, skip=sized | {("q", 0), ("q", 1)})
        for name, axis in sized:
            status = status_with_short(module, kernel, args, name, axis)
            assert status == codes.get(name, 6), (name, axis)


@pytest.mark.parametrize("first_visit", [True, False])
def test_large_table_prefetch_path_matches_the_reference(first_visit):
    """Tables above 2**17 cells take the compiled kernels' prefetching update loop: same bits
    as the reference (episodes of 1..40 steps, repeated pairs, sample average with counts)."""
    rng = np.random.default_rng(11)
    shape = (600, 300)  # 180000 cells
    lengths = rng.integers(1, 41, 80)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n = int(offsets[-1])
    states = rng.integers(0, 40, n)  # few states: pairs repeat within episodes
    actions = rng.integers(0, 5, n)
    rewards = rng.standard_normal(n)
    q0 = rng.standard_normal(shape)
    counts0 = rng.integers(0, 5, shape).astype(np.int64)
    results = {}
    for name in ("python", "numba", "cython"):
        q, counts = q0.copy(), counts0.copy()
        with fastlmrl.use_backend(name):
            g = fastlmrl.mc_control_update(
                q, states, actions, rewards, offsets, 0.95, first_visit=first_visit, counts=counts
            )
        results[name] = (q, counts, g)
    for name in ("numba", "cython"):
        for got, want in zip(results[name], results["python"]):
            np.testing.assert_array_equal(got, want)
    assert not np.array_equal(results["python"][0], q0)
