"""log_probs: float32 fast exp accuracy, reference equivalence (bit for bit), NumPy formulas,
hand-computed values, finite differences, serial = parallel, bad input and "nothing modified on
error"."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit
from shape_checks import assert_rejects_bad_shapes

import fastlmrl
from fastlmrl import _backend
from fastlmrl._contract import raise_for_status
from fastlmrl._numba import fast_math
from fastlmrl._python import log_probs as ref_lp
from fastlmrl._status import BAD_SHAPES

KERNELS = ["entropy", "log_prob_grad", "log_softmax", "logsumexp", "token_log_probs"]
FLOATS = (np.float32, np.float64)


def np_log_softmax(x):
    x = x.astype(np.float64)
    m = np.max(x, axis=1, keepdims=True)
    return x - (m + np.log(np.sum(np.exp(x - m), axis=1, keepdims=True)))


def np_entropy(x):
    lp = np_log_softmax(x)
    p = np.exp(lp)
    return -np.sum(np.where(p > 0, p * np.where(p > 0, lp, 0.0), 0.0), axis=1)


def random_logits(rng, n, v, dtype, mask_frac=0.0, scale=3.0):
    x = rng.standard_normal((n, v)) * scale
    if mask_frac:
        x[rng.random((n, v)) < mask_frac] = -np.inf
        x[np.arange(n), rng.integers(0, v, n)] = 0.5  # keep one finite entry per row
    return np.ascontiguousarray(x.astype(dtype))


def call(module, name, logits, tokens, threads=1):
    n, v = logits.shape
    if name in ("log_softmax", "log_prob_grad"):
        out = np.full((n, v), 7.0, dtype=logits.dtype)
    else:
        out = np.full(n, 7.0, dtype=logits.dtype)
    if name in ("token_log_probs", "log_prob_grad"):
        status = getattr(module, name)(logits, tokens, out, threads)
    else:
        status = getattr(module, name)(logits, out, threads)
    return status, out


# ---- the fast exp -------------------------------------------------------------------------------


@njit
def _fast_exp32_array(x, out):
    for i in range(x.shape[0]):
        out[i] = fast_math.fast_exp32(x[i])


def _ulps(a, b):
    """|a - b| in units in the last place of float32 (same-sign finite values)."""
    return np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64))


def test_fast_exp32_error_against_numpy():
    rng = np.random.default_rng(7)
    x = np.concatenate(
        [
            np.linspace(-87.0, 88.0, 2_000_001),
            np.linspace(-1.0, 1.0, 200_001),
            rng.uniform(-87.0, 0.0, 200_000),
            -np.logspace(-30, 1.9, 20_001),
            [0.0, -0.0, -87.0, 88.0],
        ]
    ).astype(np.float32)
    out = np.empty_like(x)
    _fast_exp32_array(x, out)
    exact = np.exp(x.astype(np.float64))
    # within 1 ulp of the correctly rounded float32 exp (float64 exp rounded to float32)
    assert _ulps(out, exact.astype(np.float32)).max() <= 1
    assert (np.abs(out / exact - 1.0)).max() <= 1.2e-7
    # and within NumPy's own float32 error + 1 ulp of NumPy's float32 exp of the same argument
    numpy32 = np.exp(x)
    numpy_error = _ulps(numpy32, exact.astype(np.float32)).max()
    assert _ulps(out, numpy32).max() <= numpy_error + 1


def test_fast_exp32_underflow_and_special_values():
    x = np.array([-87.0, -87.5, -104.0, -1e30, -np.inf, 0.0, np.nan], dtype=np.float32)
    out = np.empty_like(x)
    _fast_exp32_array(x, out)
    assert abs(out[0] / math.exp(-87.0) - 1) < 1.2e-7
    assert (out[1:5] == 0.0).all()
    assert out[5] == 1.0
    assert np.isnan(out[6])


def test_fast_exp32_python_twin_is_bit_identical():
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            rng.uniform(-95, 5, 4000),
            rng.uniform(-1, 1, 1000),
            [-np.inf, 0.0, -87.0, -87.00001, -0.3465736],
        ]
    ).astype(np.float32)
    out = np.empty_like(x)
    _fast_exp32_array(x, out)
    assert [ref_lp.fast_exp32(v) for v in x.tolist()] == out.astype(np.float64).tolist()


def _nearest_float32(q):
    """The float32 nearest to the rational q (ties to even), found independently of the code
    under test: the neighbours of a first guess, compared exactly."""
    from fractions import Fraction

    guess = np.float32(float(q))
    candidates = [
        np.nextafter(guess, np.float32(-np.inf)),
        guess,
        np.nextafter(guess, np.float32(np.inf)),
    ]
    best = min(
        candidates, key=lambda c: (abs(Fraction(float(c)) - q), int(np.array(c).view(np.int32)) & 1)
    )
    return float(best)


def test_python_float32_fma_and_subtraction_are_exactly_rounded():
    from fractions import Fraction

    rng = np.random.default_rng(4)
    n = 3000
    a = (rng.standard_normal(n) * np.exp2(rng.integers(-40, 40, n))).astype(np.float32)
    b = (rng.standard_normal(n) * np.exp2(rng.integers(-40, 40, n))).astype(np.float32)
    c = (rng.standard_normal(n) * np.exp2(rng.integers(-80, 80, n))).astype(np.float32)
    c[:500] = -(a[:500] * b[:500])  # heavy cancellation (the float32 product, rounded)
    c[500:1000] = (a[500:1000].astype(np.float64) * b[500:1000] * 2.0**-24).astype(np.float32)
    for x, y, z in zip(a.tolist(), b.tolist(), c.tolist()):
        assert ref_lp.fma32(x, y, z) == _nearest_float32(Fraction(x) * Fraction(y) + Fraction(z))
    # subtraction agrees with NumPy's float32 subtraction (IEEE single)
    got = np.array([ref_lp.sub32(x, z) for x, z in zip(a.tolist(), c.tolist())])
    np.testing.assert_array_equal(got, (a - c).astype(np.float64))
    big = float(np.finfo(np.float32).max)
    assert ref_lp.sub32(-big, big) == -math.inf
    assert ref_lp.sub32(-math.inf, 1.0) == -math.inf
    assert math.isnan(ref_lp.sub32(math.nan, 1.0))


@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 1001])
@pytest.mark.parametrize("dtype", FLOATS)
def test_numba_vector_row_max_and_lane_sums(n, dtype):
    @njit
    def row_max(x, i):
        return fast_math.row_max(x, i)

    @njit
    def lane_sums(e, n):
        return fast_math.lane_sums(e, n)

    rng = np.random.default_rng(n)
    x = rng.standard_normal((4, n)).astype(dtype)
    x[1, rng.integers(0, n)] = np.nan
    x[2, :] = np.nan
    x[3, :] = -np.inf
    assert row_max(x, 0) == x[0].max()
    if n > 1 and not np.isnan(x[1]).all():
        assert row_max(x, 1) == np.nanmax(x[1])
    assert np.isnan(row_max(x, 2))
    assert row_max(x, 3) == -np.inf
    e = rng.random(n)
    lanes = [0.0] * 8
    for j, v in enumerate(e.tolist()):
        lanes[j % 8] += v  # eight running sums, each in index order
    assert list(lane_sums(e, n)) == lanes


@pytest.mark.parametrize("dtype", FLOATS)
def test_streaming_store_path_equals_ordinary_stores(compiled, dtype):
    # a gradient output of >= 64 MiB is written with streaming stores (fast_math.NT_MIN_BYTES);
    # rows of 16411 entries start at every alignment, and the output itself is misaligned
    v = 16411
    n = (fast_math.NT_MIN_BYTES // (v * np.dtype(dtype).itemsize)) + 2
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((n, v)) * 3).astype(dtype)
    x[5, ::7] = -np.inf
    tokens = rng.integers(0, v, n)
    buf = np.empty(n * v + 16, dtype=dtype)
    out = buf[3 : 3 + n * v].reshape(n, v)
    assert out.flags.c_contiguous and out.ctypes.data % 64 != 0
    for threads in (1, 2):
        out[:] = 7.0
        assert compiled.log_prob_grad(x, tokens, out, threads) == 0
        for lo in (0, 5, 640, n - 9):
            hi = lo + 9
            _, small = call(compiled, "log_prob_grad", x[lo:hi], tokens[lo:hi])  # ordinary stores
            np.testing.assert_array_equal(out[lo:hi], small)
    del buf, out


# ---- reference equivalence (hypothesis) ---------------------------------------------------------


@settings(max_examples=25)
@given(
    n=st.integers(0, 5),
    v=st.sampled_from([1, 2, 7, 9, 511, 512, 513, 1100]),
    float_idx=st.integers(0, 1),
    int32=st.booleans(),
    mask=st.sampled_from([0.0, 0.3, 0.95]),
    scale=st.sampled_from([0.1, 3.0, 80.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_compiled_kernels_equal_reference(
    compiled, reference, n, v, float_idx, int32, mask, scale, seed
):
    rng = np.random.default_rng(seed)
    dtype = FLOATS[float_idx]
    x = random_logits(rng, n, v, dtype, mask, scale)
    tokens = rng.integers(0, v, n).astype(np.int32 if int32 else np.int64)
    for name in KERNELS:
        s_ref, o_ref = call(reference, name, x, tokens)
        s_c, o_c = call(compiled, name, x, tokens)
        assert s_ref == s_c == 0
        np.testing.assert_array_equal(o_c, o_ref, err_msg=name)


@pytest.mark.parametrize("dtype", FLOATS)
def test_serial_equals_parallel(compiled, dtype):
    rng = np.random.default_rng(5)
    x = random_logits(rng, 67, 1500, dtype, 0.2)
    tokens = rng.integers(0, 1500, 67)
    for name in KERNELS:
        _, serial = call(compiled, name, x, tokens, 1)
        _, parallel = call(compiled, name, x, tokens, 2)
        np.testing.assert_array_equal(serial, parallel, err_msg=name)


def test_all_backends_export_the_same_kernels():
    names = [sorted(_backend.backend_module(b).log_probs.__all__) for b in fastlmrl.BACKENDS]
    assert names[0] == names[1] == names[2] == KERNELS


# ---- independent formulas and hand-computed values ---------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS)
def test_against_numpy_formulas(backend, dtype):
    rng = np.random.default_rng(1)
    x = random_logits(rng, 6, 1300, dtype, 0.3)
    t = rng.integers(0, 1300, 6)
    x[np.arange(6), t] = 1.0
    rtol = 2e-6 if dtype == np.float32 else 1e-12
    lsm = np_log_softmax(x)
    np.testing.assert_allclose(
        fastlmrl.logsumexp(x), np.logaddexp.reduce(x.astype(np.float64), axis=1), rtol=rtol
    )
    got = fastlmrl.log_softmax(x)
    finite = np.isfinite(lsm)
    np.testing.assert_allclose(got[finite], lsm[finite], rtol=rtol, atol=rtol * 10)
    assert (got[~finite] == -np.inf).all()
    np.testing.assert_allclose(
        fastlmrl.token_log_probs(x, t), lsm[np.arange(6), t], rtol=rtol, atol=rtol
    )
    np.testing.assert_allclose(fastlmrl.entropy(x), np_entropy(x), rtol=rtol * 10, atol=rtol)
    onehot = np.zeros_like(lsm)
    onehot[np.arange(6), t] = 1.0
    np.testing.assert_allclose(
        fastlmrl.log_prob_grad(x, t), onehot - np.exp(lsm), rtol=rtol, atol=rtol
    )


def test_hand_computed(backend, float_dtype):
    x = np.array([[0.0, 0.0], [0.0, math.log(3.0)], [0.0, -np.inf]], dtype=float_dtype)
    tol = 1e-7 if float_dtype == np.float32 else 1e-15
    np.testing.assert_allclose(fastlmrl.logsumexp(x), [math.log(2), math.log(4), 0.0], atol=tol)
    np.testing.assert_allclose(
        fastlmrl.token_log_probs(x, [0, 1, 0]), [-math.log(2), math.log(0.75), 0.0], atol=tol
    )
    assert fastlmrl.token_log_probs(x, [0, 0, 1])[2] == -np.inf
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    np.testing.assert_allclose(fastlmrl.entropy(x), [math.log(2), h, 0.0], atol=tol)
    np.testing.assert_allclose(
        fastlmrl.log_prob_grad(x, [0, 1, 0]), [[0.5, -0.5], [-0.25, 0.25], [0.0, 0.0]], atol=tol
    )
    lsm = fastlmrl.log_softmax(x)
    np.testing.assert_allclose(
        lsm[:2], [[-math.log(2)] * 2, [math.log(0.25), math.log(0.75)]], atol=tol
    )
    assert lsm[2, 0] == 0.0 and lsm[2, 1] == -np.inf


def test_large_logits_do_not_overflow(backend):
    x = np.array([[1000.0, 1000.0, -1000.0]])
    np.testing.assert_allclose(fastlmrl.logsumexp(x), [1000.0 + math.log(2)])
    np.testing.assert_allclose(fastlmrl.entropy(x), [math.log(2)])


def test_max_at_the_end_of_a_long_row(backend, float_dtype):
    # increasing logits: the max is the last entry, far from the first
    x = np.linspace(-50.0, 50.0, 2000, dtype=np.float64)[None, :].astype(float_dtype)
    expect = np.logaddexp.reduce(x.astype(np.float64), axis=1)
    np.testing.assert_allclose(fastlmrl.logsumexp(x), expect, rtol=1e-6)


def test_finite_differences():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 600))
    t = np.array([5, 0, 599])
    grad = fastlmrl.log_prob_grad(x, t)
    h = 1e-6
    for i in range(3):
        for j in (0, 5, 599, 300):
            xp, xm = x.copy(), x.copy()
            xp[i, j] += h
            xm[i, j] -= h
            fd = (fastlmrl.token_log_probs(xp, t)[i] - fastlmrl.token_log_probs(xm, t)[i]) / (2 * h)
            assert abs(fd - grad[i, j]) < 1e-7
            # dH/dz_j = -p_j (log p_j + H)
            fdh = (fastlmrl.entropy(xp)[i] - fastlmrl.entropy(xm)[i]) / (2 * h)
            lp = fastlmrl.log_softmax(x)[i, j]
            assert abs(fdh - (-math.exp(lp) * (lp + fastlmrl.entropy(x)[i]))) < 1e-7


def test_empty_batch(backend, float_dtype):
    x = np.zeros((0, 5), dtype=float_dtype)
    assert fastlmrl.logsumexp(x).shape == (0,)
    assert fastlmrl.entropy(x).shape == (0,)
    assert fastlmrl.token_log_probs(x, []).shape == (0,)
    assert fastlmrl.log_softmax(x).shape == (0, 5)
    assert fastlmrl.log_prob_grad(x, np.array([], dtype=np.int32)).shape == (0, 5)


def test_out_argument_is_used(backend):
    x = np.random.default_rng(0).standard_normal((4, 9)).astype(np.float32)
    out = np.empty_like(x)
    assert fastlmrl.log_softmax(x, out=out) is out
    assert fastlmrl.log_prob_grad(x, [0, 1, 2, 3], out=out) is out


# ---- bad input ----------------------------------------------------------------------------------

FUNCS = {
    "logsumexp": lambda x, t: fastlmrl.logsumexp(x),
    "entropy": lambda x, t: fastlmrl.entropy(x),
    "log_softmax": lambda x, t: fastlmrl.log_softmax(x),
    "token_log_probs": fastlmrl.token_log_probs,
    "log_prob_grad": fastlmrl.log_prob_grad,
}


@pytest.mark.parametrize("name", sorted(FUNCS))
def test_bad_logits(backend, name):
    f = FUNCS[name]
    good = np.zeros((2, 3))
    t = [0, 1]
    with pytest.raises(TypeError, match="logits"):
        f(good.tolist(), t)
    with pytest.raises(TypeError, match="logits"):
        f(good.astype(np.int64), t)
    with pytest.raises(TypeError, match="logits"):
        f(good.astype(np.float16), t)
    with pytest.raises(ValueError, match="logits"):
        f(np.zeros(3), t)
    with pytest.raises(ValueError, match="logits"):
        f(np.zeros((2, 0)), t)
    with pytest.raises(ValueError, match="logits"):
        f(np.zeros((2, 6))[:, ::2], t)
    for bad in (np.nan, np.inf):
        x = good.copy()
        x[1, 2] = bad
        with pytest.raises(ValueError, match="logits row 1"):
            f(x, t)
    x = good.copy()
    x[0] = -np.inf
    with pytest.raises(ValueError, match="logits row 0"):
        f(x, t)


def test_nan_hidden_among_masked_entries(backend):
    x = np.full((1, 1200), -np.inf)
    x[0, 3] = np.nan
    x[0, 1100] = 1.0
    with pytest.raises(ValueError, match="logits"):
        fastlmrl.logsumexp(x)


@pytest.mark.parametrize("name", ["token_log_probs", "log_prob_grad"])
def test_bad_tokens(backend, name):
    f = FUNCS[name]
    x = np.zeros((2, 3))
    with pytest.raises(TypeError, match="tokens"):
        f(x, [0.0, 1.0])
    with pytest.raises(ValueError, match="tokens"):
        f(x, [0])
    with pytest.raises(ValueError, match="tokens"):
        f(x, [[0, 1]])
    with pytest.raises(ValueError, match=r"tokens\[1\] = 3 is out of range"):
        f(x, [0, 3])
    with pytest.raises(ValueError, match=r"tokens\[0\] = -1"):
        f(x, np.array([-1, 0], dtype=np.int32))


@pytest.mark.parametrize("name", ["log_softmax", "log_prob_grad"])
def test_bad_out(backend, name):
    x = np.zeros((2, 3))
    if name == "log_softmax":
        f = lambda out: fastlmrl.log_softmax(x, out=out)  # noqa: E731
    else:
        f = lambda out: fastlmrl.log_prob_grad(x, [0, 1], out=out)  # noqa: E731
    with pytest.raises(TypeError, match="out"):
        f([[0.0] * 3] * 2)
    with pytest.raises(TypeError, match="out"):
        f(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="out"):
        f(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="out"):
        f(np.zeros((2, 6))[:, ::2])
    ro = np.zeros((2, 3))
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out"):
        f(ro)
    with pytest.raises(ValueError, match="overlap"):
        f(x)


def test_nothing_modified_on_error(backend):
    x = np.random.default_rng(0).standard_normal((3, 5))
    x_before = x.copy()
    out = np.full((3, 5), 4.0)
    with pytest.raises(ValueError, match="tokens"):
        fastlmrl.log_prob_grad(x, [0, 1, 9], out=out)
    assert (out == 4.0).all()
    np.testing.assert_array_equal(x, x_before)


def test_raw_kernels_check_before_writing(compiled, reference):
    x = np.zeros((2, 3))
    x[1, 0] = np.nan
    for module in (compiled, reference):
        for name in ("logsumexp", "entropy", "token_log_probs"):
            status, out = call(module, name, x, np.array([0, 1]))
            assert status == 20 and (out == 7.0).all()
        status, out = call(module, "log_prob_grad", np.zeros((2, 3)), np.array([0, 5]))
        assert status == 21 and (out == 7.0).all()


# ---- array shapes (direct callers) -------------------------------------------------------------


@pytest.mark.parametrize("kernel", KERNELS)
def test_inconsistent_array_shapes_are_rejected_first(compiled, reference, kernel):
    logits = np.random.default_rng(2).standard_normal((5, 4))
    args = dict(logits=logits)
    if kernel in ("token_log_probs", "log_prob_grad"):
        args["tokens"] = np.array([0, 3, 1, 2, 3], np.int64)
    full = kernel in ("log_softmax", "log_prob_grad")  # (N, V) output, else (N,)
    args["out"] = np.full(logits.shape if full else 5, -7.0)
    args["num_threads"] = 1
    for module in (reference, compiled):
        assert_rejects_bad_shapes(module, kernel, args, skip=() if full else {("logits", 1)})


def test_bad_shapes_status_is_an_internal_error():
    # never reached through the public API (the wrappers pass consistent shapes); still mapped
    with pytest.raises(ValueError, match="internal error: array arguments of inconsistent shapes"):
        raise_for_status(BAD_SHAPES, fastlmrl.log_probs.CONTRACT["token_log_probs"], {})
    with pytest.raises(ValueError, match="inconsistent shapes"):  # the tabular losses' mapping
        fastlmrl.tabular_losses._raise(
            BAD_SHAPES, np.zeros((2, 3)), np.zeros(1, np.int64), np.zeros(1, np.int64), {}
        )
