"""Returns / advantages over (B, T) sequences: reference equivalence, hand-computed values,
independent NumPy formulas, identities, bad input, nothing modified on error."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shape_checks import assert_rejects_bad_shapes

import fastlmrl
from fastlmrl import _backend
from fastlmrl._contract import raise_for_status
from fastlmrl._status import BAD_SHAPES, Status

BAD_REWARDS, BAD_VALUES = Status.BAD_REWARDS, Status.BAD_VALUES
BAD_BOOTSTRAP, BAD_ENDS, BAD_ADVANTAGES = (
    Status.BAD_BOOTSTRAP,
    Status.BAD_ENDS,
    Status.BAD_ADVANTAGES,
)

KERNELS = ["discounted_returns", "gae", "lambda_returns", "masked_whiten"]


def test_every_backend_exports_the_same_kernels():
    for name in fastlmrl.BACKENDS:
        mod = _backend.backend_module(name)
        for kernel in KERNELS:
            assert callable(getattr(mod, kernel)), (name, kernel)
    for name in ("python", "numba", "cython"):
        topic = __import__(f"fastlmrl._{name}.advantages", fromlist=["__all__"])
        assert sorted(topic.__all__) == KERNELS
    assert sorted(fastlmrl.advantages.__all__) == KERNELS


# ----------------------------------------------------------------------------- random batches


def make_batch(seed, n_rows, n_steps, dtype, prefix=False, garbage=True):
    """Random sequences; padding entries hold NaN garbage when ``garbage``."""
    rng = np.random.default_rng(seed)
    r = rng.standard_normal((n_rows, n_steps)).astype(dtype)
    v = rng.standard_normal((n_rows, n_steps)).astype(dtype)
    if prefix:
        lengths = rng.integers(0, n_steps + 1, n_rows)
        m = np.arange(n_steps)[None, :] < lengths[:, None]
    else:
        m = rng.random((n_rows, n_steps)) < 0.7
    if garbage and m.size:
        r[~m] = np.nan
        v[~m] = np.inf
    term = rng.random(n_rows) < 0.5
    trunc = ~term | (rng.random(n_rows) < 0.3)  # some rows both: terminated wins
    boot = rng.standard_normal(n_rows).astype(dtype)
    boot[term] = np.nan  # never read for a terminated row
    return r, v, m, term, trunc, boot


def raw_args(batch):
    r, v, m, term, trunc, boot = batch
    return (r, v, m.view(np.uint8), term.view(np.uint8), trunc.view(np.uint8), boot)


def run_kernel(mod, kernel, batch, gamma, lam, eps=1e-8, num_threads=1):
    """Call a raw kernel; outputs start as a sentinel so untouched entries are visible."""
    r, v, m, term, trunc, boot = raw_args(batch)
    out1 = np.full(r.shape, -7.0, dtype=r.dtype)
    out2 = np.full(r.shape, -7.0, dtype=r.dtype)
    if kernel == "discounted_returns":
        status = mod.discounted_returns(r, m, term, trunc, boot, gamma, out1, num_threads)
    elif kernel == "lambda_returns":
        status = mod.lambda_returns(r, v, m, term, trunc, boot, gamma, lam, out1, num_threads)
    elif kernel == "gae":
        status = mod.gae(r, v, m, term, trunc, boot, gamma, lam, out1, out2, num_threads)
    else:
        status = mod.masked_whiten(r, m, eps, out1)
    return status, out1, out2


unit = st.floats(0.0, 1.0)


@pytest.mark.parametrize("kernel", ["discounted_returns", "lambda_returns", "gae"])
@pytest.mark.parametrize("shape", [(257, 256), (1, 70000), (5, 20000), (64, 1)])
def test_rows_in_parallel_are_bit_identical_at_every_thread_count(
    compiled, reference, kernel, shape, float_dtype
):
    """Batches of 2**16 steps or more run in parallel (row pairs claimed dynamically); an odd
    number of rows leaves a single last row.  Every thread count gives the reference's bits."""
    batch = make_batch(11, *shape, float_dtype)
    status, want1, want2 = run_kernel(reference, kernel, batch, 0.97, 0.9)
    assert status == 0
    for num_threads in (1, 2, 3, 8, 2**40):
        status, got1, got2 = run_kernel(compiled, kernel, batch, 0.97, 0.9, num_threads=num_threads)
        assert status == 0
        assert got1.tobytes() == want1.tobytes(), num_threads
        assert got2.tobytes() == want2.tobytes(), num_threads


@pytest.mark.parametrize("kernel", KERNELS)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_rows=st.integers(0, 6),
    n_steps=st.integers(0, 9),
    gamma=unit,
    lam=unit,
    prefix=st.booleans(),
    use_f32=st.booleans(),
)
def test_compiled_matches_reference_bit_for_bit(
    compiled, reference, kernel, seed, n_rows, n_steps, gamma, lam, prefix, use_f32
):
    dtype = np.float32 if use_f32 else np.float64
    batch = make_batch(seed, n_rows, n_steps, dtype, prefix=prefix)
    if kernel == "masked_whiten":
        batch = (np.where(batch[2], batch[0], np.nan).astype(dtype),) + batch[1:]
    expected = run_kernel(reference, kernel, batch, gamma, lam)
    got = run_kernel(compiled, kernel, batch, gamma, lam)
    assert got[0] == expected[0] == 0
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[2], expected[2])


@pytest.mark.parametrize("kernel", KERNELS)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_rows=st.integers(1, 5),
    n_steps=st.integers(1, 7),
    where=st.sampled_from(["rewards", "values", "ends", "bootstrap"]),
)
@settings(max_examples=30)
def test_compiled_reports_the_same_status_and_writes_nothing(
    compiled, reference, kernel, seed, n_rows, n_steps, where
):
    rng = np.random.default_rng(seed)
    r, v, m, term, trunc, boot = make_batch(seed, n_rows, n_steps, np.float64, garbage=False)
    m[rng.integers(n_rows), rng.integers(n_steps)] = True
    r[~m] = np.nan  # padding garbage is never an error
    b, t = np.argwhere(m)[rng.integers(np.count_nonzero(m))]
    if where == "rewards":
        r[b, t] = rng.choice([np.nan, np.inf, -np.inf])
    elif where == "values":
        v[b, t] = np.nan
    elif where == "ends":
        term[b] = trunc[b] = False
    else:
        term[b], trunc[b], boot[b] = False, True, np.inf
    batch = (r, v, m, term, trunc, boot)
    expected = run_kernel(reference, kernel, batch, 0.9, 0.8)
    got = run_kernel(compiled, kernel, batch, 0.9, 0.8)
    assert got[0] == expected[0]
    if kernel == "masked_whiten":
        assert expected[0] in (0, BAD_ADVANTAGES)
    elif kernel == "discounted_returns" and where == "values":
        assert expected[0] == 0
    else:
        assert expected[0] in (BAD_REWARDS, BAD_VALUES, BAD_ENDS, BAD_BOOTSTRAP)
    if expected[0]:
        for out in got[1:] + expected[1:]:
            assert (out == -7.0).all()


# ----------------------------------------------------------------------------- hand-computed

R = np.array([[1.0, 2.0, 3.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
V = np.array([[0.5, 0.5, 0.5, 9.0], [1.0, 1.0, 9.0, 9.0]])
M = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=bool)


def test_gae_hand_computed(backend):
    # row 0 terminated, row 1 truncated with V(s_2) = 3; gamma = 0.9, lam = 0.8 -> gamma*lam = 0.72
    # row 0: delta_2 = 3 - 0.5 = 2.5; delta_1 = 2 + 0.9*0.5 - 0.5 = 1.95;
    #        delta_0 = 1 + 0.45 - 0.5 = 0.95
    #        A_2 = 2.5; A_1 = 1.95 + 0.72*2.5 = 3.75; A_0 = 0.95 + 0.72*3.75 = 3.65
    # row 1: delta_1 = 1 + 0.9*3 - 1 = 2.7; delta_0 = 1 + 0.9*1 - 1 = 0.9
    #        A_1 = 2.7; A_0 = 0.9 + 0.72*2.7 = 2.844
    adv, ret = fastlmrl.gae(R, V, M, [True, False], None, [np.nan, 3.0], gamma=0.9, lam=0.8)
    np.testing.assert_allclose(adv, [[3.65, 3.75, 2.5, 0], [2.844, 2.7, 0, 0]], rtol=1e-14)
    np.testing.assert_allclose(ret, [[4.15, 4.25, 3.0, 0], [3.844, 3.7, 0, 0]], rtol=1e-14)


def test_discounted_and_lambda_returns_hand_computed(backend):
    # discounted, gamma = 0.5: row 0 terminated: G_2 = 3, G_1 = 2 + 1.5 = 3.5, G_0 = 1 + 1.75
    # row 1 truncated, bootstrap 4: G_1 = 1 + 2 = 3, G_0 = 1 + 1.5 = 2.5
    g = fastlmrl.discounted_returns(R, M, [True, False], [False, True], [0.0, 4.0], gamma=0.5)
    np.testing.assert_array_equal(g, [[2.75, 3.5, 3.0, 0], [2.5, 3.0, 0, 0]])
    # lambda-returns, gamma = 0.5, lam = 0.5:
    # row 0: G_2 = 3; G_1 = 2 + 0.5*(0.5*0.5 + 0.5*3) = 2.875; G_0 = 1 + 0.5*(0.25 + 1.4375)
    # row 1: G_1 = 1 + 0.5*(0.5*4 + 0.5*4) = 3; G_0 = 1 + 0.5*(0.5*1 + 0.5*3) = 2
    g = fastlmrl.lambda_returns(R, V, M, [True, False], None, [0.0, 4.0], gamma=0.5, lam=0.5)
    np.testing.assert_array_equal(g, [[1.84375, 2.875, 3.0, 0], [2.0, 3.0, 0, 0]])


def test_masked_whiten_hand_computed(backend):
    # valid: 1, 2, 3, 1, 1 -> mean 1.6, population var = (0.36+0.16+1.96+0.36+0.36)/5 = 0.64
    out = fastlmrl.masked_whiten(R, M, eps=1e-8)
    expected = np.where(M, (R - 1.6) / (0.8 + 1e-8), 0.0)
    np.testing.assert_allclose(out, expected, rtol=1e-13, atol=1e-15)


# ----------------------------------------------------------------------------- independent NumPy


def numpy_gae(r, v, lengths, boot_next, gamma, lam):
    """Explicit sums of Schulman et al. eq. 16 over prefix masks (no recursion)."""
    n_rows, n_steps = r.shape
    adv = np.zeros((n_rows, n_steps))
    for b in range(n_rows):
        n = lengths[b]
        v_next = np.append(v[b, 1:n], boot_next[b])
        delta = r[b, :n] + gamma * v_next - v[b, :n]
        for t in range(n):
            weights = (gamma * lam) ** np.arange(n - t)
            adv[b, t] = np.sum(weights * delta[t:n])
    return adv


def numpy_lambda_return(r, v, n, boot_next, gamma, lam):
    """Forward view, S&B eq. 12.3 with the truncated-episode form: n-step returns weighted."""
    v_next = np.append(v[1:n], boot_next)
    out = np.zeros(n)
    for t in range(n):
        total = 0.0
        steps = n - t
        for k in range(1, steps + 1):  # G_{t:t+k} = sum_{i<k} g^i r_{t+i} + g^k V(s_{t+k})
            g_tk = sum(gamma**i * r[t + i] for i in range(k)) + gamma**k * v_next[t + k - 1]
            weight = (1 - lam) * lam ** (k - 1) if k < steps else lam ** (steps - 1)
            total += weight * g_tk
        out[t] = total
    return out


@given(seed=st.integers(0, 2**32 - 1), gamma=unit, lam=unit)
@settings(max_examples=25)
def test_gae_and_lambda_returns_match_explicit_sums(backend, seed, gamma, lam):
    rng = np.random.default_rng(seed)
    n_rows, n_steps = 4, 7
    r, v, m, term, trunc, boot = make_batch(seed, n_rows, n_steps, np.float64, prefix=True)
    lengths = m.sum(axis=1)
    boot_next = np.where(term, 0.0, boot)
    adv, ret = fastlmrl.gae(r, v, m, term, trunc, boot, gamma=gamma, lam=lam)
    expected = numpy_gae(np.nan_to_num(r), v, lengths, boot_next, gamma, lam)
    np.testing.assert_allclose(adv, expected, rtol=1e-10, atol=1e-10)
    lam_ret = fastlmrl.lambda_returns(r, v, m, term, trunc, boot, gamma=gamma, lam=lam)
    for b in range(n_rows):
        n = lengths[b]
        exp_b = numpy_lambda_return(r[b], v[b], n, boot_next[b], gamma, lam)
        np.testing.assert_allclose(lam_ret[b, :n], exp_b, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(ret[b, :n], exp_b, rtol=1e-10, atol=1e-10)
        assert (lam_ret[b, n:] == 0).all() and (ret[b, n:] == 0).all()
    del rng


def test_discounted_returns_match_explicit_sums(backend):
    r, v, m, term, trunc, boot = make_batch(3, 5, 9, np.float64, prefix=True)
    g = fastlmrl.discounted_returns(r, m, term, trunc, boot, gamma=0.9)
    for b in range(5):
        n = m[b].sum()
        tail = 0.0 if term[b] else boot[b]
        for t in range(n):
            expected = sum(0.9**i * r[b, t + i] for i in range(n - t)) + 0.9 ** (n - t) * tail
            assert g[b, t] == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_masked_whiten_matches_numpy(backend, float_dtype):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((6, 11)).astype(float_dtype) * 3 + 1
    m = rng.random((6, 11)) < 0.6
    out = fastlmrl.masked_whiten(a, m, eps=1e-6)
    valid = a[m].astype(np.float64)
    expected = np.where(m, (a - valid.mean()) / (valid.std() + 1e-6), 0.0)
    assert out.dtype == float_dtype
    rtol = 1e-5 if float_dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, expected, rtol=rtol, atol=rtol)
    assert abs(out[m].astype(np.float64).mean()) < 10 * rtol
    assert out[m].astype(np.float64).std() == pytest.approx(1.0, rel=1e-4)


# ----------------------------------------------------------------------------- identities


@given(seed=st.integers(0, 2**32 - 1), gamma=unit)
@settings(max_examples=25)
def test_gae_with_lambda_one_is_returns_minus_values(backend, seed, gamma):
    r, v, m, term, trunc, boot = make_batch(seed, 4, 8, np.float64)
    adv, ret = fastlmrl.gae(r, v, m, term, trunc, boot, gamma=gamma, lam=1.0)
    g = fastlmrl.discounted_returns(r, m, term, trunc, boot, gamma=gamma)
    np.testing.assert_allclose(adv, np.where(m, g - v, 0.0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ret, g, rtol=1e-9, atol=1e-9)
    lam1 = fastlmrl.lambda_returns(r, v, m, term, trunc, boot, gamma=gamma, lam=1.0)
    np.testing.assert_allclose(lam1, g, rtol=1e-9, atol=1e-9)


def test_gae_with_lambda_zero_is_the_td_error(backend):
    r, v, m, term, trunc, boot = make_batch(11, 3, 6, np.float64, prefix=True)
    adv, _ = fastlmrl.gae(r, v, m, term, trunc, boot, gamma=0.7, lam=0.0)
    for b in range(3):
        n = m[b].sum()
        v_next = np.append(v[b, 1:n], 0.0 if term[b] else boot[b])
        np.testing.assert_allclose(adv[b, :n], r[b, :n] + 0.7 * v_next - v[b, :n], rtol=1e-14)


@given(seed=st.integers(0, 2**32 - 1), gamma=unit, lam=unit)
@settings(max_examples=25)
def test_masked_steps_are_skipped_exactly(backend, seed, gamma, lam):
    """A row with holes equals the compacted row (valid steps moved to a prefix), bit for bit."""
    r, v, m, term, trunc, boot = make_batch(seed, 4, 9, np.float32)
    adv, ret = fastlmrl.gae(r, v, m, term, trunc, boot, gamma=gamma, lam=lam)
    g = fastlmrl.discounted_returns(r, m, term, trunc, boot, gamma=gamma)
    lr = fastlmrl.lambda_returns(r, v, m, term, trunc, boot, gamma=gamma, lam=lam)
    rc, vc, mc = np.zeros_like(r), np.zeros_like(v), np.zeros_like(m)
    for b in range(4):
        n = m[b].sum()
        rc[b, :n], vc[b, :n], mc[b, :n] = r[b, m[b]], v[b, m[b]], True
    adv_c, ret_c = fastlmrl.gae(rc, vc, mc, term, trunc, boot, gamma=gamma, lam=lam)
    g_c = fastlmrl.discounted_returns(rc, mc, term, trunc, boot, gamma=gamma)
    lr_c = fastlmrl.lambda_returns(rc, vc, mc, term, trunc, boot, gamma=gamma, lam=lam)
    for out, out_c in ((adv, adv_c), (ret, ret_c), (g, g_c), (lr, lr_c)):
        for b in range(4):
            n = m[b].sum()
            np.testing.assert_array_equal(out[b, m[b]], out_c[b, :n])
            assert (out[b, ~m[b]] == 0).all()


def test_padding_garbage_and_unused_bootstrap_do_not_matter(backend):
    r, v, m, term, trunc, boot = make_batch(2, 5, 6, np.float64)
    a1, r1 = fastlmrl.gae(r, v, m, term, trunc, boot, gamma=0.9, lam=0.9)
    r2, v2, boot2 = r.copy(), v.copy(), boot.copy()
    r2[~m], v2[~m] = 123.0, -5.0
    boot2[term] = 1e300
    a2, ret2 = fastlmrl.gae(r2, v2, m, term, trunc, boot2, gamma=0.9, lam=0.9)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(r1, ret2)


def test_terminated_wins_over_truncated(backend):
    r = np.array([[1.0, 1.0]])
    g = fastlmrl.discounted_returns(r, None, [True], [True], [100.0], gamma=1.0)
    np.testing.assert_array_equal(g, [[2.0, 1.0]])
    g = fastlmrl.discounted_returns(r, None, [False], [True], [100.0], gamma=1.0)
    np.testing.assert_array_equal(g, [[102.0, 101.0]])


def test_defaults_and_dtypes(backend):
    r32 = R.astype(np.float32)
    adv, ret = fastlmrl.gae(r32, V.astype(np.float32), M, [True, True], gamma=1.0, lam=1.0)
    assert adv.dtype == ret.dtype == np.float32
    adv64, _ = fastlmrl.gae(r32, V, M, [True, True], gamma=1.0, lam=1.0)
    assert adv64.dtype == np.float64
    g = fastlmrl.discounted_returns(np.ones((2, 3), dtype=np.int64), None, [1, 1], gamma=1.0)
    assert g.dtype == np.float64
    np.testing.assert_array_equal(g, [[3, 2, 1], [3, 2, 1]])


def test_non_contiguous_inputs_are_accepted(backend):
    r, v, m, term, trunc, boot = make_batch(4, 6, 10, np.float64)
    expected = fastlmrl.gae(r[:, ::2], v[:, ::2], m[:, ::2], term, trunc, boot, gamma=0.9, lam=0.7)
    got = fastlmrl.gae(
        np.ascontiguousarray(r[:, ::2]),
        np.ascontiguousarray(v[:, ::2]),
        np.ascontiguousarray(m[:, ::2]),
        term,
        trunc,
        boot,
        gamma=0.9,
        lam=0.7,
    )
    np.testing.assert_array_equal(expected[0], got[0])
    f_order = np.asfortranarray(r)
    np.testing.assert_array_equal(
        fastlmrl.discounted_returns(f_order, m, term, trunc, boot, gamma=0.5),
        fastlmrl.discounted_returns(r, m, term, trunc, boot, gamma=0.5),
    )


@pytest.mark.parametrize("shape", [(0, 5), (3, 0), (0, 0)])
def test_empty_inputs(backend, shape):
    r = np.zeros(shape)
    n_rows = shape[0]
    term = np.zeros(n_rows, dtype=bool)
    adv, ret = fastlmrl.gae(r, r, None, term, None, np.zeros(n_rows), gamma=0.9, lam=0.9)
    assert adv.shape == ret.shape == shape
    assert fastlmrl.discounted_returns(r, None, term, gamma=0.9).shape == shape
    assert fastlmrl.lambda_returns(r, r, None, term, gamma=0.9, lam=0.5).shape == shape
    assert fastlmrl.masked_whiten(r).shape == shape


def test_rows_without_valid_steps_need_no_ends(backend):
    r = np.ones((2, 3))
    m = np.array([[True, True, False], [False, False, False]])
    adv, ret = fastlmrl.gae(r, r, m, [True, False], [False, False], None, gamma=1.0, lam=1.0)
    np.testing.assert_array_equal(adv[1], 0.0)
    np.testing.assert_array_equal(fastlmrl.masked_whiten(r, np.zeros((2, 3), bool)), 0.0)


# ----------------------------------------------------------------------------- bad input


def good_args():
    r, v, m, term, trunc, boot = make_batch(9, 3, 4, np.float64, prefix=True, garbage=False)
    m[:, 0] = True
    term[:] = [True, False, False]
    trunc[:] = [False, True, True]
    return dict(
        rewards=r, values=v, mask=m, terminated=term, truncated=trunc, bootstrap_values=boot
    )


BAD = [
    ("rewards", "text", TypeError, "rewards"),
    ("rewards", np.ones(12), ValueError, "rewards"),
    ("rewards", np.full((3, 4), np.nan), ValueError, r"rewards\[0, 0\] = nan"),
    ("rewards", np.full((3, 4), np.inf), ValueError, "rewards"),
    ("values", np.ones((3, 5)), ValueError, "values"),
    ("values", np.array([["a"] * 4] * 3), TypeError, "values"),
    ("values", np.full((3, 4), -np.inf), ValueError, r"values\[0, 0\]"),
    ("mask", np.ones((3, 5), bool), ValueError, "mask"),
    ("mask", np.ones((3, 4)), TypeError, "mask"),
    ("mask", np.full((3, 4), 2), ValueError, "mask"),
    ("terminated", [True, False], ValueError, "terminated"),
    ("terminated", [0.5, 0.5, 0.5], TypeError, "terminated"),
    ("truncated", [True], ValueError, "truncated"),
    ("truncated", [False, False, False], ValueError, "neither terminated nor truncated"),
    ("bootstrap_values", [1.0, np.nan, 2.0], ValueError, r"bootstrap_values\[1\]"),
    ("bootstrap_values", [1.0, 2.0], ValueError, "bootstrap_values"),
    ("bootstrap_values", None, ValueError, "bootstrap_values is required"),
    ("gamma", 1.5, ValueError, "gamma"),
    ("gamma", np.nan, ValueError, "gamma"),
    ("gamma", "0.9", TypeError, "gamma"),
    ("lam", -0.1, ValueError, "lam"),
    ("lam", None, TypeError, "lam"),
]


BAD_CASES = [
    pytest.param(kernel, *case, id=f"{kernel}-{case[0]}-{i}")
    for kernel in ("gae", "lambda_returns", "discounted_returns")
    for i, case in enumerate(BAD)
    if not (kernel == "discounted_returns" and case[0] in ("values", "lam"))
]


@pytest.mark.parametrize("kernel,arg,value,exc,match", BAD_CASES)
def test_bad_arguments_raise_and_modify_nothing(backend, kernel, arg, value, exc, match):
    args = good_args()
    copies = {k: np.copy(a) for k, a in args.items()}
    args[arg] = value
    kwargs = {"gamma": 0.9, "lam": 0.8}
    if arg in kwargs:
        kwargs[arg] = value
        args.pop(arg)
    fn = getattr(fastlmrl, kernel)
    if kernel == "discounted_returns":
        kwargs.pop("lam")
        args.pop("values", None)
    with pytest.raises(exc, match=match):
        fn(**args, **kwargs)
    for k, a in copies.items():
        if k in args and args[k] is not value:
            np.testing.assert_array_equal(args[k], a)


def test_values_none_is_rejected():
    with pytest.raises(TypeError, match="values"):
        fastlmrl.gae(R, None, M, [True, True], gamma=0.9, lam=0.9)


@pytest.mark.parametrize("eps", [0.0, -1.0, np.inf, "x"])
def test_masked_whiten_bad_eps(backend, eps):
    with pytest.raises((ValueError, TypeError), match="eps"):
        fastlmrl.masked_whiten(R, M, eps=eps)


def test_masked_whiten_bad_input(backend):
    a = R.copy()
    a[1, 1] = np.nan
    with pytest.raises(ValueError, match=r"advantages\[1, 1\]"):
        fastlmrl.masked_whiten(a, M)
    a[1, 1] = 1.0
    a[1, 3] = np.nan  # padding: ignored
    assert np.isfinite(fastlmrl.masked_whiten(a, M)).all()
    with pytest.raises(ValueError, match="mask"):
        fastlmrl.masked_whiten(a, M[:, :3])
    with pytest.raises(ValueError, match="advantages"):
        fastlmrl.masked_whiten(np.ones(4))
    with pytest.raises(TypeError, match="advantages"):
        fastlmrl.masked_whiten(np.array([["x"]]))


# ----------------------------------------------------------------------------- array shapes


@pytest.mark.parametrize("kernel", KERNELS)
def test_inconsistent_array_shapes_are_rejected_first(compiled, reference, kernel):
    r, v, m, term, trunc, boot = raw_args(make_batch(3, 3, 4, np.float64))
    out1, out2 = np.full(r.shape, -7.0), np.full(r.shape, -7.0)
    per_row = dict(mask=m, terminated=term, truncated=trunc, bootstrap_values=boot)
    args = {
        "discounted_returns": dict(
            rewards=r, **per_row, gamma=0.9, returns_out=out1, num_threads=1
        ),
        "lambda_returns": dict(
            rewards=r, values=v, **per_row, gamma=0.9, lam=0.8, returns_out=out1, num_threads=1
        ),
        "gae": dict(
            rewards=r,
            values=v,
            **per_row,
            gamma=0.9,
            lam=0.8,
            advantages_out=out1,
            returns_out=out2,
            num_threads=1,
        ),
        "masked_whiten": dict(advantages=r, mask=m, eps=1e-8, out=out1),
    }[kernel]
    for module in (reference, compiled):
        assert_rejects_bad_shapes(module, kernel, args)


def test_bad_shapes_status_is_an_internal_error():
    # never reached through the public API (the wrappers pass consistent shapes); still mapped by
    # raise_for_status through each kernel's contract
    for kernel in fastlmrl.advantages.CONTRACT.kernels:
        with pytest.raises(
            ValueError, match="internal error: array arguments of inconsistent shapes"
        ):
            raise_for_status(BAD_SHAPES, kernel, {})
