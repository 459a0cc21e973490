"""KL estimators k1/k2/k3, their gradients, KL-penalised rewards and the adaptive KL controller."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shape_checks import assert_rejects_bad_shapes

import fastlmrl
from fastlmrl import _backend
from fastlmrl._status import Status

BAD_REWARDS, BAD_ESTIMATOR = Status.BAD_REWARDS, Status.BAD_ESTIMATOR
BAD_LOGP, BAD_REF_LOGP = Status.BAD_LOG_PROBS, Status.BAD_REF_LOG_PROBS

KERNELS = ["kl_penalized_rewards", "kl_penalty"]
PUBLIC = ["AdaptiveKLController", "FixedKLController", "kl_penalized_rewards", "kl_penalty"]


def test_every_backend_exports_the_same_kernels():
    for name in ("python", "numba", "cython"):
        topic = __import__(f"fastlmrl._{name}.kl_divergence", fromlist=["__all__"])
        assert sorted(topic.__all__) == KERNELS
        for kernel in KERNELS:
            assert callable(getattr(_backend.backend_module(name), kernel))
    assert sorted(fastlmrl.kl_divergence.__all__) == PUBLIC


def make_tokens(seed, n, dtype, spread=3.0):
    rng = np.random.default_rng(seed)
    lp = (-rng.random(n) * spread).astype(dtype)
    ref = (-rng.random(n) * spread).astype(dtype)
    rw = rng.standard_normal(n).astype(dtype)
    m = rng.random(n) < 0.75
    lp[~m], ref[~m], rw[~m] = np.nan, np.inf, np.nan  # padding garbage is never read
    return lp, ref, rw, m.view(np.uint8)


def run(mod, kernel, lp, ref, rw, m, estimator, beta=0.1):
    out1 = np.full(lp.shape, -7.0, dtype=lp.dtype)
    out2 = np.full(lp.shape, -7.0, dtype=lp.dtype)
    if kernel == "kl_penalty":
        status = mod.kl_penalty(lp, ref, m, estimator, out1, out2)
    else:
        status = mod.kl_penalized_rewards(rw, lp, ref, m, estimator, beta, out1, out2)
    return status, out1, out2


@pytest.mark.parametrize("kernel", KERNELS)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 40),
    estimator=st.sampled_from([1, 2, 3]),
    use_f32=st.booleans(),
    spread=st.sampled_from([1e-6, 1.0, 30.0]),
    beta=st.floats(0.0, 2.0),
)
def test_compiled_matches_reference_bit_for_bit(
    compiled, reference, kernel, seed, n, estimator, use_f32, spread, beta
):
    args = make_tokens(seed, n, np.float32 if use_f32 else np.float64, spread)
    expected = run(reference, kernel, *args, estimator, beta)
    got = run(compiled, kernel, *args, estimator, beta)
    assert got[0] == expected[0] == 0
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[2], expected[2])


@pytest.mark.parametrize("kernel", KERNELS)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 20),
    where=st.sampled_from(["logp", "ref_logp", "rewards", "estimator"]),
)
@settings(max_examples=30)
def test_compiled_reports_the_same_status_and_writes_nothing(
    compiled, reference, kernel, seed, n, where
):
    lp, ref, rw, m = make_tokens(seed, n, np.float64)
    i = np.random.default_rng(seed).integers(n)
    m[i] = 1
    lp[i], ref[i], rw[i] = -1.0, -2.0, 0.5
    estimator = 3
    if where == "estimator":
        estimator = 4
    else:
        {"logp": lp, "ref_logp": ref, "rewards": rw}[where][i] = np.nan
    expected = run(reference, kernel, lp, ref, rw, m, estimator)
    got = run(compiled, kernel, lp, ref, rw, m, estimator)
    assert got[0] == expected[0]
    codes = {
        "logp": BAD_LOGP,
        "ref_logp": BAD_REF_LOGP,
        "rewards": BAD_REWARDS,
        "estimator": BAD_ESTIMATOR,
    }
    if where == "rewards" and kernel == "kl_penalty":
        assert expected[0] == 0
        return
    assert expected[0] == codes[where]
    for out in got[1:] + expected[1:]:
        assert (out == -7.0).all()


# ----------------------------------------------------------------------------- values, by hand


def test_hand_computed_estimators(backend):
    # logp = log 0.5, ref = log 0.25 -> r = log(0.5) = -ln 2
    lp = np.log([0.5, 0.2])
    ref = np.log([0.25, 0.2])
    ln2 = np.log(2.0)
    k1, g1 = fastlmrl.kl_penalty(lp, ref, estimator="k1")
    np.testing.assert_allclose(k1, [ln2, 0.0], atol=1e-15)
    np.testing.assert_array_equal(g1, [1.0, 1.0])
    k2, g2 = fastlmrl.kl_penalty(lp, ref, estimator="k2")
    np.testing.assert_allclose(k2, [ln2**2 / 2, 0.0], atol=1e-15)
    np.testing.assert_allclose(g2, [ln2, 0.0], atol=1e-15)
    k3, g3 = fastlmrl.kl_penalty(lp, ref, estimator="k3")
    # exp(-ln 2) - 1 + ln 2 = ln 2 - 0.5;  grad = 1 - exp(r) = 0.5
    np.testing.assert_allclose(k3, [ln2 - 0.5, 0.0], atol=1e-15)
    np.testing.assert_allclose(g3, [0.5, 0.0], atol=1e-15)


@given(seed=st.integers(0, 2**32 - 1), use_f32=st.booleans())
@settings(max_examples=30)
def test_estimators_match_numpy_formulas(backend, seed, use_f32):
    dtype = np.float32 if use_f32 else np.float64
    lp, ref, _, m = make_tokens(seed, 50, dtype, spread=5.0)
    mb = m.astype(bool)
    r = ref.astype(np.float64) - lp.astype(np.float64)
    formulas = {
        "k1": (-r, np.ones_like(r)),
        "k2": (r**2 / 2, -r),
        "k3": (np.exp(r) - 1 - r, 1 - np.exp(r)),
    }
    rtol = 1e-6 if use_f32 else 1e-12
    for name, (value, grad) in formulas.items():
        kl, g = fastlmrl.kl_penalty(lp, ref, m.astype(bool), estimator=name)
        assert kl.dtype == dtype
        np.testing.assert_allclose(kl[mb], value[mb], rtol=rtol, atol=rtol * 1e-2)
        np.testing.assert_allclose(g[mb], grad[mb], rtol=rtol, atol=rtol * 1e-2)
        assert (kl[~mb] == 0).all() and (g[~mb] == 0).all()


@given(seed=st.integers(0, 2**32 - 1), spread=st.sampled_from([1e-9, 1e-3, 1.0, 50.0]))
@settings(max_examples=30)
def test_k3_is_never_negative(backend, seed, spread):
    for dtype in (np.float32, np.float64):
        lp, ref, _, m = make_tokens(seed, 64, dtype, spread)
        kl, _ = fastlmrl.kl_penalty(lp, ref, m.astype(bool), estimator="k3")
        assert (kl >= 0).all()


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_gradients_match_finite_differences(backend, estimator):
    rng = np.random.default_rng(3)
    lp = -rng.random(30) * 4
    ref = -rng.random(30) * 4
    _, grad = fastlmrl.kl_penalty(lp, ref, estimator=estimator)
    h = 1e-6
    up, _ = fastlmrl.kl_penalty(lp + h, ref, estimator=estimator)
    down, _ = fastlmrl.kl_penalty(lp - h, ref, estimator=estimator)
    np.testing.assert_allclose(grad, (up - down) / (2 * h), rtol=1e-6, atol=1e-8)


def test_k1_and_k3_are_unbiased_and_k2_close_for_nearby_policies():
    """Monte Carlo: the mean of each estimator under pi approaches KL(pi || pi_ref) (Schulman)."""
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(20)
    p = np.exp(logits) / np.exp(logits).sum()
    q = np.exp(logits + 0.1 * rng.standard_normal(20))
    q /= q.sum()
    true_kl = np.sum(p * np.log(p / q))
    tokens = rng.choice(20, size=400_000, p=p)
    lp, ref = np.log(p)[tokens], np.log(q)[tokens]
    for name, tol in (("k1", 0.05), ("k2", 0.05), ("k3", 0.05)):
        kl, _ = fastlmrl.kl_penalty(lp, ref, estimator=name)
        assert kl.mean() == pytest.approx(true_kl, rel=tol), name


def test_kl_penalized_rewards_hand_computed(backend):
    rewards = np.array([[0.0, 0.0, 1.0, 5.0]])
    lp = np.log([[0.5, 0.5, 0.25, 0.9]])
    ref = np.log([[0.25, 0.5, 0.5, 0.9]])
    mask = np.array([[True, True, True, False]])
    shaped, kl = fastlmrl.kl_penalized_rewards(rewards, lp, ref, mask, beta=0.5)
    ln2 = np.log(2.0)
    np.testing.assert_allclose(kl, [[ln2, 0.0, -ln2, 0.0]], atol=1e-15)
    np.testing.assert_allclose(shaped, [[-0.5 * ln2, 0.0, 1.0 + 0.5 * ln2, 0.0]], atol=1e-15)
    assert shaped.shape == (1, 4)


def test_kl_penalized_rewards_agree_with_kl_penalty(backend, float_dtype):
    lp, ref, rw, m = make_tokens(8, 60, float_dtype)
    mb = m.astype(bool)
    for est in ("k1", "k2", "k3"):
        shaped, kl = fastlmrl.kl_penalized_rewards(
            rw.reshape(6, 10),
            lp.reshape(6, 10),
            ref.reshape(6, 10),
            mb.reshape(6, 10),
            beta=0.3,
            estimator=est,
        )
        kl2, _ = fastlmrl.kl_penalty(lp, ref, mb, estimator=est)
        np.testing.assert_array_equal(kl.ravel(), kl2)
        expected = np.where(mb, rw.astype(np.float64) - 0.3 * kl2.astype(np.float64), 0.0)
        np.testing.assert_allclose(shaped.ravel(), expected, rtol=1e-6, atol=1e-6)


def test_empty_inputs(backend):
    kl, g = fastlmrl.kl_penalty(np.zeros((0, 3)), np.zeros((0, 3)))
    assert kl.shape == g.shape == (0, 3)
    shaped, kl = fastlmrl.kl_penalized_rewards([], [], [], beta=0.1)
    assert shaped.shape == kl.shape == (0,)


# ----------------------------------------------------------------------------- bad input


def good():
    rng = np.random.default_rng(0)
    return dict(
        rewards=rng.standard_normal((2, 3)),
        log_probs=-rng.random((2, 3)),
        ref_log_probs=-rng.random((2, 3)),
        mask=np.ones((2, 3), bool),
    )


BAD = [
    ("log_probs", np.array([["a"] * 3] * 2), TypeError, "log_probs"),
    ("log_probs", np.full((2, 3), np.nan), ValueError, "log_probs"),
    ("log_probs", np.full((2, 3), -np.inf), ValueError, "log_probs"),
    ("ref_log_probs", np.zeros((3, 2)), ValueError, "ref_log_probs"),
    ("ref_log_probs", np.full((2, 3), -np.inf), ValueError, "ref_log_probs"),
    ("mask", np.ones((2, 2), bool), ValueError, "mask"),
    ("mask", np.ones((2, 3)), TypeError, "mask"),
    ("mask", np.full((2, 3), 3), ValueError, "mask"),
    ("kl_estimator", "k4", ValueError, "kl_estimator"),
    ("kl_estimator", 3, TypeError, "kl_estimator"),
    ("rewards", np.full((2, 3), np.inf), ValueError, "rewards"),
    ("rewards", np.zeros(6), ValueError, "rewards"),
    ("kl_coef", -0.1, ValueError, "kl_coef"),
    ("kl_coef", np.nan, ValueError, "kl_coef"),
]


@pytest.mark.parametrize("arg,value,exc,match", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_arguments_raise_and_modify_nothing(backend, arg, value, exc, match):
    args = good()
    copies = {k: v.copy() for k, v in args.items()}
    args[arg] = value
    kwargs = {"kl_coef": 0.2, "kl_estimator": "k3"}
    if arg in kwargs:
        kwargs[arg] = value
        del args[arg]
    with pytest.raises(exc, match=match):
        fastlmrl.kl_penalized_rewards(**args, **kwargs)
    if arg not in ("rewards", "kl_coef"):
        kw = {k: v for k, v in args.items() if k != "rewards"}
        with pytest.raises(exc, match=match):
            fastlmrl.kl_penalty(**kw, kl_estimator=kwargs["kl_estimator"])
    for k, v in copies.items():
        if k in args and k != arg:
            np.testing.assert_array_equal(args[k], v)


def test_masked_entries_are_not_checked(backend):
    args = good()
    args["mask"][0, 1] = False
    args["log_probs"][0, 1] = np.nan
    args["rewards"][0, 1] = np.inf
    shaped, kl = fastlmrl.kl_penalized_rewards(**args, beta=0.1)
    assert shaped[0, 1] == 0 and kl[0, 1] == 0 and np.isfinite(shaped).all()


# ----------------------------------------------------------------------------- controllers


def test_adaptive_controller_follows_ziegler_et_al():
    c = fastlmrl.AdaptiveKLController(0.2, target=6.0, horizon=10_000)
    # KL twice the target: error clipped to 0.2, K_beta = 256 / 10000
    assert c.update(12.0, 256) == pytest.approx(0.2 * (1 + 0.2 * 0.0256))
    before = c.value
    # KL at 6.3: error 0.05 (not clipped)
    assert c.update(6.3, 100) == pytest.approx(before * (1 + 0.05 * 0.01))
    before = c.value
    assert c.update(0.0, 1000) == pytest.approx(before * (1 - 0.2 * 0.1))
    assert c.update(6.0, 5000) == pytest.approx(before * 0.98)  # on target: unchanged
    state = c.state()
    assert fastlmrl.AdaptiveKLController(**state).value == c.value
    fixed = fastlmrl.FixedKLController(0.05)
    assert fixed.update(100.0, 10) == 0.05


@pytest.mark.parametrize(
    "kwargs,exc",
    [
        (dict(init_kl_coef=-1, target=1, horizon=1), ValueError),
        (dict(init_kl_coef=0.1, target=0, horizon=1), ValueError),
        (dict(init_kl_coef=0.1, target=1, horizon=0), ValueError),
        (dict(init_kl_coef="a", target=1, horizon=1), TypeError),
    ],
)
def test_adaptive_controller_bad_arguments(kwargs, exc):
    with pytest.raises(exc):
        fastlmrl.AdaptiveKLController(**kwargs)


def test_adaptive_controller_bad_update():
    c = fastlmrl.AdaptiveKLController(0.1, 1.0, 100)
    with pytest.raises(ValueError, match="current_kl"):
        c.update(np.nan, 1)
    with pytest.raises(TypeError, match="n_steps"):
        c.update(1.0, 1.5)
    with pytest.raises(ValueError, match="n_steps"):
        c.update(1.0, -1)
    assert c.value == 0.1


# ---- array shapes (direct callers) -------------------------------------------------------------


@pytest.mark.parametrize("kernel", KERNELS)
def test_inconsistent_array_shapes_are_rejected_first(compiled, reference, kernel):
    lp, ref, rw = -np.linspace(0.5, 2.0, 6), -np.linspace(1.0, 1.5, 6), np.linspace(-1, 1, 6)
    m = np.array([1, 0, 1, 1, 0, 1], np.uint8)
    out1, out2 = np.full(6, -7.0), np.full(6, -7.0)
    if kernel == "kl_penalty":
        args = dict(
            log_probs=lp, ref_log_probs=ref, mask=m, estimator=3, kl_out=out1, grad_out=out2
        )
    else:
        args = dict(
            rewards=rw,
            log_probs=lp,
            ref_log_probs=ref,
            mask=m,
            estimator=3,
            beta=0.1,
            rewards_out=out1,
            kl_out=out2,
        )
    for module in (reference, compiled):
        assert_rejects_bad_shapes(module, kernel, args)
