"""sample_tokens: reference equivalence (bit for bit), hand-computed cases, the sampled
distribution, threads, RandomStream, bad input (public API and raw kernels)."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from shape_checks import assert_rejects_bad_shapes

import fastlmrl
from fastlmrl import RandomStream
from fastlmrl._backend import backend_module
from fastlmrl.rng import stream_key, uniform
from fastlmrl.sampling import BAD_LOGITS, BAD_MIN_P, BAD_TEMPERATURE, BAD_TOP_K, BAD_TOP_P

SETTINGS = st.tuples(
    st.one_of(
        st.just(1.0),
        st.just(0.0),
        st.floats(0.05, 5.0),  # temperature
        st.sampled_from([1e-300, 1e-8, 1e8, 1e300]),
    ),
    st.one_of(st.just(0), st.integers(1, 300)),  # top_k
    st.one_of(st.just(1.0), st.floats(0.01, 1.0)),  # top_p
    st.one_of(st.just(0.0), st.floats(0.0, 1.0), st.just(1.0)),  # min_p
)

# logits with ties (small integers), wide values and masked entries; each row gets a finite entry
cell = st.one_of(st.integers(-3, 3).map(float), st.floats(-30, 30, width=32), st.just(-math.inf))


@st.composite
def logit_rows(draw, max_vocab=80):
    n = draw(st.integers(1, 5))
    v = draw(st.integers(1, max_vocab))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    x = draw(hnp.arrays(dtype, (n, v), elements=cell))
    col = draw(st.integers(0, v - 1))
    x[:, col] = np.where(np.isfinite(x[:, col]), x[:, col], 0.0)
    return x


def _raw(module, x, settings, key, counter, threads=1):
    n = x.shape[0]
    tokens = np.full(n, -7, np.int64)
    lp = np.full(n, 7.0, x.dtype)
    mlp = np.full(n, 7.0, x.dtype)
    status = module.sample_tokens(
        x, *settings, np.uint64(key), np.uint64(counter), tokens, lp, mlp, threads
    )
    return status, tokens, lp, mlp


def _assert_same(got, expected):
    assert got[0] == expected[0]
    np.testing.assert_array_equal(got[1], expected[1])
    assert got[2].tobytes() == expected[2].tobytes()  # bit for bit (NaN-safe)
    assert got[3].tobytes() == expected[3].tobytes()


@given(logit_rows(), SETTINGS, st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_matches_reference(compiled, reference, x, settings, seed, counter):
    key = stream_key(seed)
    expected = _raw(reference, x, settings, key, counter)
    assert expected[0] == 0
    _assert_same(_raw(compiled, x, settings, key, counter), expected)


@given(logit_rows(max_vocab=1500), SETTINGS, st.integers(0, 2**64 - 1))
def test_matches_reference_on_long_rows(compiled, reference, x, settings, seed):
    """Rows of several blocks of 64 entries; top-k beyond the one-pass heap (k > 128)."""
    key = stream_key(seed)
    _assert_same(_raw(compiled, x, settings, key, 3), _raw(reference, x, settings, key, 3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "settings",
    [
        (1.0, 0, 1.0, 0.0),  # plain sampling
        (0.7, 50, 0.9, 0.0),  # small top-k (one heap pass) then top-p over its candidates
        (1.0, 700, 1.0, 0.0),  # top-k by exponent cutoff + candidate heap
        (1.3, 2900, 1.0, 0.0),  # top-k near V: heap of the V - k + 1 smallest
        (0.9, 0, 0.93, 0.0),  # top-p alone: binary search of the candidate cutoff
        (1.0, 2000, 0.5, 0.01),  # top-k above DIRECT_K, top-p, min-p
        (2.5, 0, 1.0, 0.02),  # min-p alone
    ],
)
def test_matches_reference_at_lm_like_sizes(compiled, reference, dtype, settings):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((3, 3000)) * 3).astype(dtype)
    x[1, ::7] = -np.inf
    x[2] = np.round(x[2])  # many ties
    _assert_same(
        _raw(compiled, x, settings, stream_key(9), 11),
        _raw(reference, x, settings, stream_key(9), 11),
    )


# ----------------------------------------------------------------------------- hand-computed
P4 = np.array([0.4, 0.3, 0.2, 0.1])


def _rows_of(p, n, dtype=np.float64, shift=0.7):
    """n copies of the row log(p) + shift (a shift does not change the softmax)."""
    return np.tile(np.log(p) + shift, (n, 1)).astype(dtype)


def _counter_with_uniform_in(key_seed, lo, hi):
    key = stream_key(key_seed)
    for c in range(10_000):
        if lo < uniform(key, c) < hi:
            return c
    raise AssertionError("no such counter")  # pragma: no cover


@pytest.mark.parametrize(
    "interval, token", [((0.0, 0.39), 0), ((0.41, 0.69), 1), ((0.71, 0.89), 2), ((0.91, 1.0), 3)]
)
def test_one_uniform_picks_the_token_of_its_cdf_interval(backend, interval, token):
    """CDF of (0.4, 0.3, 0.2, 0.1): [0, .4) -> 0, [.4, .7) -> 1, [.7, .9) -> 2, [.9, 1) -> 3."""
    c = _counter_with_uniform_in(5, *interval)
    stream = RandomStream(5, counter=c)
    tokens, lp, mlp = fastlmrl.sample_tokens(_rows_of(P4, 1), stream)
    assert tokens[0] == token
    assert lp[0] == pytest.approx(math.log(P4[token]), abs=1e-12)
    assert mlp[0] == pytest.approx(math.log(P4[token]), abs=1e-12)
    assert stream.counter == c + 1


def test_the_same_uniform_in_a_filtered_distribution(backend):
    """top_p = 0.5 keeps {0, 1}, renormalised to (4/7, 3/7): u in (0.6, 0.99) -> token 1."""
    c = _counter_with_uniform_in(6, 0.6, 0.99)
    tokens, lp, mlp = fastlmrl.sample_tokens(_rows_of(P4, 1), RandomStream(6, counter=c), top_p=0.5)
    assert tokens[0] == 1
    assert lp[0] == pytest.approx(math.log(3 / 7), abs=1e-12)
    assert mlp[0] == pytest.approx(math.log(0.3), abs=1e-12)


@pytest.mark.parametrize(
    "kwargs, kept",
    [
        (dict(top_k=1), {0: 1.0}),
        (dict(top_k=2), {0: 4 / 7, 1: 3 / 7}),
        (dict(top_k=3), {0: 4 / 9, 1: 3 / 9, 2: 2 / 9}),
        (dict(top_k=4), {0: 0.4, 1: 0.3, 2: 0.2, 3: 0.1}),
        (dict(top_p=0.35), {0: 1.0}),  # 0.4 >= 0.35
        (dict(top_p=0.45), {0: 4 / 7, 1: 3 / 7}),  # 0.4 < 0.45 <= 0.7
        (dict(top_p=0.75), {0: 4 / 9, 1: 3 / 9, 2: 2 / 9}),  # 0.7 < 0.75 <= 0.9
        (dict(min_p=0.6), {0: 4 / 7, 1: 3 / 7}),  # p / p_max = 1, .75 | .5, .25
        (dict(min_p=0.3), {0: 4 / 9, 1: 3 / 9, 2: 2 / 9}),
        (dict(min_p=1.0), {0: 1.0}),
        # top-p is relative to the top-k set (transformers' order): after top_k=2 the head has
        # 4/7 = 0.571 >= 0.55, so only token 0 remains (top-p alone would keep 0 and 1)
        (dict(top_k=2, top_p=0.55), {0: 1.0}),
        (dict(top_p=0.55), {0: 4 / 7, 1: 3 / 7}),
        # min-p after top-p: top_p = 0.95 keeps all four, min_p = 0.4 drops 0.1 (ratio .25)
        (dict(top_p=0.95, min_p=0.4), {0: 4 / 9, 1: 3 / 9, 2: 2 / 9}),
        # temperature 2: q ∝ p**(1/2)
        (dict(temperature=2.0), dict(enumerate(np.sqrt(P4) / np.sqrt(P4).sum()))),
        # temperature then top-k
        (dict(temperature=0.5, top_k=2), {0: 16 / 25, 1: 9 / 25}),
    ],
)
def test_kept_sets_and_renormalised_log_probs(backend, kwargs, kept):
    n = 4000
    for dtype in (np.float64, np.float32):
        tokens, lp, mlp = fastlmrl.sample_tokens(_rows_of(P4, n, dtype), 123, **kwargs)
        assert set(np.unique(tokens).tolist()) == set(kept)
        tol = 1e-12 if dtype == np.float64 else 2e-6
        np.testing.assert_allclose(lp, np.log([kept[a] for a in tokens]), rtol=0, atol=tol)
        np.testing.assert_allclose(mlp, np.log(P4[tokens]), rtol=0, atol=tol)


def test_top_k_keeps_ties_with_the_kth(backend):
    x = np.tile(np.array([1.0, 3.0, 2.0, 3.0, 0.0]), (3000, 1))
    tokens, lp, _ = fastlmrl.sample_tokens(x, 1, top_k=1)
    assert set(np.unique(tokens).tolist()) == {1, 3}
    np.testing.assert_allclose(lp, math.log(0.5), atol=1e-12)
    assert abs((tokens == 1).mean() - 0.5) < 0.05


def test_top_p_keeps_ties_with_the_last_kept(backend):
    """(0.3, 0.3, 0.3, 0.1): top_p = 0.2 is reached by the first 0.3; its ties stay."""
    x = np.tile(np.log([0.3, 0.1, 0.3, 0.3]), (3000, 1))
    tokens, lp, _ = fastlmrl.sample_tokens(x, 2, top_p=0.2)
    assert set(np.unique(tokens).tolist()) == {0, 2, 3}
    np.testing.assert_allclose(lp, math.log(1 / 3), atol=1e-12)


def test_greedy(backend):
    x = np.array([[0.5, 2.0, 2.0, -np.inf], [-np.inf, -1.0, -3.0, -1.0], [7.0, 1.0, 1.0, 1.0]])
    for dtype in (np.float32, np.float64):
        xd = x.astype(dtype)
        tokens, lp, mlp = fastlmrl.sample_tokens(xd, 0, temperature=0.0, top_k=2, top_p=0.3)
        np.testing.assert_array_equal(tokens, [1, 1, 0])
        np.testing.assert_array_equal(lp, 0.0)
        np.testing.assert_array_equal(mlp, fastlmrl.token_log_probs(xd, tokens))


def test_masked_tokens_are_never_drawn(backend):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 9))
    x[:, ::2] = -np.inf
    tokens, lp, mlp = fastlmrl.sample_tokens(x, 8, temperature=1.7, min_p=0.0)
    assert np.isin(tokens, [1, 3, 5, 7]).all()
    assert np.isfinite(lp).all() and np.isfinite(mlp).all()


def test_model_log_probs_equal_token_log_probs_exactly(backend, float_dtype):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((50, 700)) * 4).astype(float_dtype)
    for kwargs in ({}, dict(temperature=0.6, top_k=40, top_p=0.8), dict(temperature=0.0)):
        tokens, _, mlp = fastlmrl.sample_tokens(x, 3, **kwargs)
        np.testing.assert_array_equal(mlp, fastlmrl.token_log_probs(x, tokens))


def test_plain_sampling_log_probs_are_the_model_log_probs(backend, float_dtype):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((64, 300)) * 2).astype(float_dtype)
    _, lp, mlp = fastlmrl.sample_tokens(x, 4)
    tol = 1e-6 if float_dtype == np.float32 else 1e-13
    np.testing.assert_allclose(lp, mlp, rtol=tol, atol=tol)


def test_disabled_filters_change_nothing(backend):
    x = np.random.default_rng(3).standard_normal((40, 30)).astype(np.float32)
    base = fastlmrl.sample_tokens(x, 5, temperature=0.8)
    for kwargs in (dict(top_k=30), dict(top_k=10**12), dict(top_p=1.0), dict(min_p=0.0)):
        other = fastlmrl.sample_tokens(x, 5, temperature=0.8, **kwargs)
        for a, b in zip(base, other):
            np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- distribution
def _filtered_distribution(logits, temperature, top_k, top_p, min_p):
    """Independent NumPy statement of the documented filters (for a row without ties)."""
    q = np.exp((logits - logits.max()) / temperature)
    q /= q.sum()
    order = np.argsort(-q, kind="stable")
    keep = np.zeros(q.size, bool)
    keep[order[:top_k]] = True
    qk = np.where(keep, q, 0.0) / q[keep].sum()
    cum = np.cumsum(qk[order])
    last = int(np.searchsorted(cum, top_p))  # first index with cum >= top_p
    keep_p = np.zeros(q.size, bool)
    keep_p[order[: last + 1]] = True
    keep &= keep_p
    keep &= q >= min_p * q.max()
    return np.where(keep, q, 0.0) / q[keep].sum()


def test_frequencies_match_the_filtered_distribution(backend):
    logits = np.array([2.0, 1.4, 1.1, 0.3, -0.2, -0.9, -2.5])
    params = (0.8, 6, 0.97, 0.07)  # top-k drops token 6, top-p token 5, min-p token 4
    expected = _filtered_distribution(logits, *params)
    assert (expected > 0).tolist() == [True] * 4 + [False] * 3
    n = 200_000
    tokens, lp, _ = fastlmrl.sample_tokens(np.tile(logits, (n, 1)), 2024, *params)
    counts = np.bincount(tokens, minlength=logits.size)
    support = expected > 0
    assert counts[~support].sum() == 0
    chi2 = (((counts - n * expected)[support]) ** 2 / (n * expected[support])).sum()
    # fixed seed: deterministic; the bound is the 1 - 1e-6 quantile of chi-square with 3 dof
    assert chi2 < 30.66, chi2
    np.testing.assert_allclose(lp, np.log(expected[tokens]), atol=1e-12)


@pytest.mark.parametrize(
    "params",
    [
        (0.8, 0, 0.9, 0.0),
        (1.0, 300, 0.8, 0.0),
        (1.3, 0, 1.0, 0.1),
        (0.6, 2000, 0.95, 0.001),
        (1.0, 40, 1.0, 0.0),
    ],
)
def test_large_vocabulary_kept_sets_match_numpy(compiled, params):
    """At V = 5000 (the cutoff searches of the compiled backends), every drawn token lies in the
    kept set of the NumPy statement of the filters and its log-prob is its renormalised one."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((60, 5000)) * 3
    with fastlmrl.use_backend(compiled.NAME):
        tokens, lp, _ = fastlmrl.sample_tokens(x, 11, *params)
    for i in range(x.shape[0]):
        q = _filtered_distribution(x[i], params[0], params[1] or x.shape[1], params[2], params[3])
        assert q[tokens[i]] > 0, i
        assert lp[i] == pytest.approx(math.log(q[tokens[i]]), abs=1e-9)


# ----------------------------------------------------------------------------- seeds and threads
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(temperature=0.9, top_k=60, top_p=0.9, min_p=0.01),
        dict(temperature=1.2, top_p=0.7),
        dict(top_k=250),
    ],
)
def test_same_tokens_in_every_backend_and_thread_count(float_dtype, kwargs, monkeypatch):
    monkeypatch.setattr(
        fastlmrl._free_cores, "enabled", False
    )  # two threads even on a busy machine
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((300, 400)) * 3).astype(float_dtype)  # above the parallel threshold
    results = []
    for name in fastlmrl.BACKENDS:
        for threads in (1, 2):
            fastlmrl.set_num_threads(threads)
            try:
                with fastlmrl.use_backend(name):
                    results.append(fastlmrl.sample_tokens(x, 17, **kwargs))
            finally:
                fastlmrl.set_num_threads(None)
    for r in results[1:]:
        for a, b in zip(r, results[0]):
            assert a.tobytes() == b.tobytes()


def test_random_stream_is_advanced_by_n(backend):
    x = np.zeros((3, 4))
    s = RandomStream(1)
    first = fastlmrl.sample_tokens(x, s)
    assert s.counter == 3
    fastlmrl.sample_tokens(x[:2], s)
    assert s.counter == 5
    again = fastlmrl.sample_tokens(x, RandomStream(1))
    np.testing.assert_array_equal(first.tokens, again.tokens)


def test_int_seed_is_a_fresh_stream(backend):
    x = np.zeros((200, 50))
    a = fastlmrl.sample_tokens(x, 9).tokens
    np.testing.assert_array_equal(a, fastlmrl.sample_tokens(x, 9).tokens)
    assert (a != fastlmrl.sample_tokens(x, 10).tokens).any()
    # row i uses counter c + i: the rows of a batch are the draws of consecutive counters
    np.testing.assert_array_equal(
        a[5:], fastlmrl.sample_tokens(x[5:], RandomStream(9, counter=5)).tokens
    )


def test_exhausted_stream_raises_value_error_naming_seed_and_writes_nothing(backend):
    x = np.zeros((3, 4))
    s = RandomStream(1, counter=2**64 - 2)
    out = (np.full(3, -1, np.int64), np.full(3, 5.0), np.full(3, 5.0))
    with pytest.raises(ValueError, match="seed"):
        fastlmrl.sample_tokens(x, s, out=out)
    assert s.counter == 2**64 - 2
    np.testing.assert_array_equal(out[0], -1)
    np.testing.assert_array_equal(out[1], 5.0)
    tokens = fastlmrl.sample_tokens(x[:2], s).tokens  # the last two counters still work
    assert s.counter == 2**64 and tokens.shape == (2,)


def test_out_arrays_are_filled_and_returned(backend):
    x = np.random.default_rng(6).standard_normal((10, 20)).astype(np.float32)
    out = (np.empty(10, np.int64), np.empty(10, np.float32), np.empty(10, np.float32))
    res = fastlmrl.sample_tokens(x, 3, top_k=5, out=out)
    assert all(r is o for r, o in zip(res, out))
    for a, b in zip(res, fastlmrl.sample_tokens(x, 3, top_k=5)):
        np.testing.assert_array_equal(a, b)


def test_empty_batch(backend):
    res = fastlmrl.sample_tokens(np.zeros((0, 5), np.float32), 0, top_k=2)
    assert res.tokens.shape == (0,) and res.tokens.dtype == np.int64
    assert res.log_probs.dtype == np.float32


# ----------------------------------------------------------------------------- bad input
X = np.zeros((4, 3))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(logits=X.tolist()), TypeError, "logits must be a numpy.ndarray"),
        (dict(logits=X.astype(np.int64)), TypeError, "logits must have dtype"),
        (dict(logits=X[0]), ValueError, "logits must be 2-dimensional"),
        (dict(logits=np.zeros((4, 0))), ValueError, "logits must have at least one column"),
        (dict(logits=np.zeros((3, 4)).T), ValueError, "C-contiguous"),
        (dict(logits=np.array([[0.0, np.nan, 1.0]])), ValueError, "logits row 0"),
        (dict(logits=np.array([[0.0, 1.0], [-np.inf, -np.inf]])), ValueError, "logits row 1"),
        (dict(logits=np.array([[0.0, np.inf]])), ValueError, "logits row 0"),
        (dict(temperature=-0.1), ValueError, "temperature must be in"),
        (dict(temperature=math.inf), ValueError, "temperature must be finite"),
        (dict(temperature=math.nan), ValueError, "temperature must be finite"),
        (dict(temperature="1"), TypeError, "temperature must be a real"),
        (dict(temperature=1e-310), ValueError, "temperature must be 0 .greedy. or at least"),
        (dict(top_k=-1), ValueError, "top_k must be >= 0"),
        (dict(top_k=2.0), TypeError, "top_k must be an int"),
        (dict(top_k=True), TypeError, "top_k must be an int"),
        (dict(top_p=0.0), ValueError, "top_p must be in"),
        (dict(top_p=1.01), ValueError, "top_p must be in"),
        (dict(top_p=math.nan), ValueError, "top_p must be finite"),
        (dict(min_p=-0.01), ValueError, "min_p must be in"),
        (dict(min_p=1.5), ValueError, "min_p must be in"),
        (dict(seed=-1), ValueError, "seed must be in"),
        (dict(seed=0.5), TypeError, "seed must be"),
        (dict(out=(np.empty(3, np.int64), np.empty(4), np.empty(4))), ValueError, r"out\[0\]"),
        (dict(out=(np.empty(4, np.int32), np.empty(4), np.empty(4))), TypeError, r"out\[0\]"),
        (
            dict(out=(np.empty(4, np.int64), np.empty(4, np.float32), np.empty(4))),
            TypeError,
            r"out\[1\]",
        ),
        (dict(out=(np.empty(4, np.int64), np.empty(4))), TypeError, "out must be a tuple"),
    ],
)
def test_bad_input_raises_and_writes_nothing(backend, kwargs, exc, match):
    args = dict(logits=X, seed=RandomStream(4), out=None)
    args.update(kwargs)
    logits = args["logits"]
    if (
        args["out"] is None
        and isinstance(logits, np.ndarray)
        and logits.ndim == 2
        and logits.dtype == np.float64
    ):
        n = logits.shape[0]
        args["out"] = (np.full(n, -1, np.int64), np.full(n, 5.0), np.full(n, 5.0))
    before = [o.copy() for o in args["out"]] if args["out"] is not None else []
    with pytest.raises(exc, match=match):
        fastlmrl.sample_tokens(**args)
    for b, o in zip(before, args["out"] or ()):
        np.testing.assert_array_equal(o, b)
    if isinstance(args["seed"], RandomStream):
        assert args["seed"].counter == 0


def test_overlapping_outputs_are_rejected(backend):
    buf = np.empty(8)
    with pytest.raises(ValueError, match="must not overlap"):
        fastlmrl.sample_tokens(np.zeros((4, 3)), 0, out=(np.empty(4, np.int64), buf[:4], buf[:4]))
    x = np.zeros((4, 4))
    with pytest.raises(ValueError, match="must not overlap logits"):
        fastlmrl.sample_tokens(x, 0, out=(np.empty(4, np.int64), x[0], np.empty(4)))


# raw kernels: status codes before any write
GOOD = (1.0, 2, 0.9, 0.1)


@pytest.mark.parametrize(
    "settings, status",
    [
        ((-1.0, 0, 1.0, 0.0), BAD_TEMPERATURE),
        ((math.nan, 0, 1.0, 0.0), BAD_TEMPERATURE),
        ((math.inf, 0, 1.0, 0.0), BAD_TEMPERATURE),
        ((1e-310, 0, 1.0, 0.0), BAD_TEMPERATURE),  # subnormal: 1 / T overflows
        ((1.0, -1, 1.0, 0.0), BAD_TOP_K),
        ((1.0, 0, 0.0, 0.0), BAD_TOP_P),
        ((1.0, 0, 1.5, 0.0), BAD_TOP_P),
        ((1.0, 0, math.nan, 0.0), BAD_TOP_P),
        ((1.0, 0, 1.0, -0.5), BAD_MIN_P),
        ((1.0, 0, 1.0, math.nan), BAD_MIN_P),
    ],
)
@pytest.mark.parametrize("name", fastlmrl.BACKENDS)
def test_raw_kernel_argument_status(name, settings, status):
    x = np.random.default_rng(0).standard_normal((3, 5))
    got = _raw(backend_module(name), x, settings, 1, 0)
    assert got[0] == status
    np.testing.assert_array_equal(got[1], -7)
    np.testing.assert_array_equal(got[2], 7.0)


@pytest.mark.parametrize("name", fastlmrl.BACKENDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, "all -inf"])
def test_raw_kernel_bad_logits_status_writes_nothing(name, bad, float_dtype):
    x = np.random.default_rng(0).standard_normal((300, 400)).astype(float_dtype)
    if bad == "all -inf":
        x[250] = -np.inf
    else:
        x[250, 17] = bad
    for threads in (1, 2):
        got = _raw(backend_module(name), x, GOOD, 1, 0, threads)
        assert got[0] == BAD_LOGITS
        np.testing.assert_array_equal(got[1], -7)
        np.testing.assert_array_equal(got[3], 7.0)


@pytest.mark.parametrize("name", fastlmrl.BACKENDS)
def test_raw_kernel_rejects_bad_shapes(name, float_dtype):
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(float_dtype)
    args = dict(
        logits=x,
        temperature=1.0,
        top_k=2,
        top_p=0.9,
        min_p=0.0,
        key=np.uint64(1),
        counter=np.uint64(0),
        tokens_out=np.zeros(3, np.int64),
        log_probs_out=np.zeros(3, float_dtype),
        model_log_probs_out=np.zeros(3, float_dtype),
        num_threads=1,
    )
    # one row fewer in logits is a valid (smaller) call only if the outputs shrink too
    assert_rejects_bad_shapes(backend_module(name), "sample_tokens", args, skip={("logits", 1)})
    # a logits row of zero entries is rejected, not read
    args["logits"] = np.zeros((3, 0), float_dtype)
    assert backend_module(name).sample_tokens(*args.values()) == 7
