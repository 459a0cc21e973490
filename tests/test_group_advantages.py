"""GRPO / RLOO advantages, loss-normalisation weights and GSPO sequence ratios."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shape_checks import assert_rejects_bad_shapes

import fastlmrl
from fastlmrl import _backend
from fastlmrl._status import Status

BAD_REWARDS, BAD_OPTION = Status.BAD_REWARDS, Status.BAD_OPTION
BAD_GROUP_IDS, BAD_GROUP_SIZE = Status.BAD_GROUP_IDS, Status.BAD_GROUP_SIZE
BAD_LOGP, BAD_OLD_LOGP = Status.BAD_LOG_PROBS, Status.BAD_OLD_LOG_PROBS

KERNELS = ["grpo_advantages", "loss_weights", "rloo_advantages", "sequence_importance_ratio"]


def test_every_backend_exports_the_same_kernels():
    for name in ("python", "numba", "cython"):
        topic = __import__(f"fastlmrl._{name}.group_advantages", fromlist=["__all__"])
        assert sorted(topic.__all__) == KERNELS
        for kernel in KERNELS:
            assert callable(getattr(_backend.backend_module(name), kernel))
    assert sorted(fastlmrl.group_advantages.__all__) == KERNELS


# ----------------------------------------------------------------------------- raw kernels


def make_groups(seed, n, n_groups, dtype, index_dtype, min_size=1):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, n_groups, n).astype(index_dtype)
    if min_size > 1:  # every group that appears gets >= min_size members
        ids = np.repeat(np.arange(n_groups, dtype=index_dtype), min_size)
        ids = np.concatenate([ids, rng.integers(0, n_groups, n).astype(index_dtype)])
        rng.shuffle(ids)
    r = rng.standard_normal(ids.shape[0]).astype(dtype)
    if rng.random() < 0.3:
        r = np.round(r).astype(dtype)  # ties and exactly equal rewards
    return r, ids


def run_grpo(mod, r, ids, n_groups, scale, eps, ddof):
    mean = np.full(n_groups, -7.0)
    std = np.full(n_groups, -7.0)
    count = np.full(n_groups, -7, dtype=np.int64)
    out = np.full(r.shape, -7.0, dtype=r.dtype)
    status = mod.grpo_advantages(r, ids, scale, eps, ddof, mean, std, count, out)
    return status, out, mean, std, count


def run_rloo(mod, r, ids, n_groups):
    total = np.full(n_groups, -7.0)
    count = np.full(n_groups, -7, dtype=np.int64)
    out = np.full(r.shape, -7.0, dtype=r.dtype)
    status = mod.rloo_advantages(r, ids, total, count, out)
    return status, out, total, count


dtypes = st.sampled_from([np.float32, np.float64])
index_dtypes = st.sampled_from([np.int32, np.int64])


@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 30),
    n_groups=st.integers(1, 6),
    dtype=dtypes,
    index_dtype=index_dtypes,
    scale=st.sampled_from([0, 1, 2]),
    ddof=st.sampled_from([0, 1]),
    eps=st.sampled_from([1e-12, 1e-4, 1.0]),
)
def test_grpo_compiled_matches_reference(
    compiled, reference, seed, n, n_groups, dtype, index_dtype, scale, ddof, eps
):
    r, ids = make_groups(seed, n, n_groups, dtype, index_dtype)
    expected = run_grpo(reference, r, ids, n_groups, scale, eps, ddof)
    got = run_grpo(compiled, r, ids, n_groups, scale, eps, ddof)
    assert got[0] == expected[0] == 0
    for a, b in zip(got[1:], expected[1:]):
        np.testing.assert_array_equal(a, b)


@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 30),
    n_groups=st.integers(1, 6),
    dtype=dtypes,
    index_dtype=index_dtypes,
)
def test_rloo_compiled_matches_reference(
    compiled, reference, seed, n, n_groups, dtype, index_dtype
):
    r, ids = make_groups(seed, n, n_groups, dtype, index_dtype, min_size=2)
    expected = run_rloo(reference, r, ids, n_groups)
    got = run_rloo(compiled, r, ids, n_groups)
    assert got[0] == expected[0] == 0
    for a, b in zip(got[1:], expected[1:]):
        np.testing.assert_array_equal(a, b)


@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 12),
    index_dtype=index_dtypes,
    where=st.sampled_from(["id_low", "id_high", "reward", "singleton", "option"]),
)
@settings(max_examples=40)
def test_group_kernels_report_the_same_status_and_write_nothing(
    compiled, reference, seed, n, index_dtype, where
):
    r, ids = make_groups(seed, n, 3, np.float64, index_dtype, min_size=2)
    i = np.random.default_rng(seed).integers(ids.shape[0])
    scale = 1
    if where == "id_low":
        ids[i] = -1
    elif where == "id_high":
        ids[i] = 3
    elif where == "reward":
        r[i] = np.inf
    elif where == "singleton":
        ids = np.append(ids, index_dtype(3))
        r = np.append(r, 1.0)
    else:
        scale = int(np.random.default_rng(seed).choice([7, -1]))
    n_groups = 4 if where == "singleton" else 3
    e_g = run_grpo(reference, r, ids, n_groups, scale, 1e-4, 1)
    c_g = run_grpo(compiled, r, ids, n_groups, scale, 1e-4, 1)
    e_r = run_rloo(reference, r, ids, n_groups)
    c_r = run_rloo(compiled, r, ids, n_groups)
    assert c_g[0] == e_g[0] and c_r[0] == e_r[0]
    expected = {
        "id_low": BAD_GROUP_IDS,
        "id_high": BAD_GROUP_IDS,
        "reward": BAD_REWARDS,
        "singleton": 0,
        "option": BAD_OPTION,
    }[where]
    assert e_g[0] == expected
    assert e_r[0] == {"singleton": BAD_GROUP_SIZE, "option": 0}.get(where, expected)
    for status, out in ((e_g[0], e_g[1]), (c_g[0], c_g[1]), (e_r[0], e_r[1]), (c_r[0], c_r[1])):
        if status:
            assert (out == -7.0).all()
    if where == "option":  # eps must be > 0 (NaN rejected too)
        for eps in (0.0, -1.0, np.nan):
            e = run_grpo(reference, r, ids, n_groups, 1, eps, 1)
            c = run_grpo(compiled, r, ids, n_groups, 1, eps, 1)
            assert e[0] == c[0] == BAD_OPTION and (c[1] == -7.0).all()


def run_weights(mod, m, mode, n_seq, n_tok, t_max, dtype):
    out = np.full(m.shape, -7.0, dtype=dtype)
    status = mod.loss_weights(m.view(np.uint8), mode, n_seq, n_tok, t_max, out)
    return status, out


@given(
    seed=st.integers(0, 2**32 - 1),
    n_rows=st.integers(0, 6),
    n_steps=st.integers(0, 8),
    mode=st.sampled_from([0, 1, 2, 3]),
    dtype=dtypes,
    n_seq=st.sampled_from([1.0, 3.0, 7.0]),
    n_tok=st.sampled_from([1.0, 13.0, 1000.0]),
    t_max=st.sampled_from([1.0, 8.0, 4096.0]),
)
def test_loss_weights_compiled_matches_reference(
    compiled, reference, seed, n_rows, n_steps, mode, dtype, n_seq, n_tok, t_max
):
    m = np.random.default_rng(seed).random((n_rows, n_steps)) < 0.6
    expected = run_weights(reference, m, mode, n_seq, n_tok, t_max, dtype)
    got = run_weights(compiled, m, mode, n_seq, n_tok, t_max, dtype)
    assert got[0] == expected[0] == 0
    np.testing.assert_array_equal(got[1], expected[1])
    for bad in (
        (7, n_seq, n_tok, t_max),
        (mode, 0.0, n_tok, t_max),
        (mode, n_seq, -1.0, t_max),
        (mode, n_seq, n_tok, np.nan),
    ):
        e = run_weights(reference, m, *bad, dtype)
        g = run_weights(compiled, m, *bad, dtype)
        assert e[0] == g[0] == BAD_OPTION
        assert (e[1] == -7.0).all() and (g[1] == -7.0).all()


def run_ratio(mod, lp, old, m):
    ratio = np.full(lp.shape[0], -7.0, dtype=lp.dtype)
    grad = np.full(lp.shape, -7.0, dtype=lp.dtype)
    status = mod.sequence_importance_ratio(lp, old, m.view(np.uint8), ratio, grad)
    return status, ratio, grad


def make_logps(seed, n_rows, n_steps, dtype):
    rng = np.random.default_rng(seed)
    lp = (-rng.random((n_rows, n_steps)) * 3).astype(dtype)
    old = (lp - rng.standard_normal((n_rows, n_steps)) * 0.2).astype(dtype)
    m = rng.random((n_rows, n_steps)) < 0.7
    lp[~m], old[~m] = np.nan, -np.inf
    return lp, old, m


@given(
    seed=st.integers(0, 2**32 - 1),
    n_rows=st.integers(0, 6),
    n_steps=st.integers(0, 9),
    dtype=dtypes,
)
def test_sequence_ratio_compiled_matches_reference(
    compiled, reference, seed, n_rows, n_steps, dtype
):
    lp, old, m = make_logps(seed, n_rows, n_steps, dtype)
    expected = run_ratio(reference, lp, old, m)
    got = run_ratio(compiled, lp, old, m)
    assert got[0] == expected[0] == 0
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[2], expected[2])
    if m.any():
        b, t = np.argwhere(m)[0]
        for arr, code in ((lp, BAD_LOGP), (old, BAD_OLD_LOGP)):
            saved = arr[b, t]
            arr[b, t] = np.nan
            e, g = run_ratio(reference, lp, old, m), run_ratio(compiled, lp, old, m)
            assert e[0] == g[0] == code
            assert (g[1] == -7.0).all() and (g[2] == -7.0).all()
            arr[b, t] = saved


# ----------------------------------------------------------------------------- hand-computed


def test_grpo_hand_computed(backend):
    r = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 5.0])
    # group 0: mean 2.5, sample std sqrt(5/3), population std sqrt(1.25); group 1: std 0
    adv = fastlmrl.grpo_advantages(r[:4], 4, eps=1e-300)
    np.testing.assert_allclose(adv, (r[:4] - 2.5) / np.sqrt(5 / 3), rtol=1e-15)
    adv = fastlmrl.grpo_advantages(r[:4], 4, eps=1e-300, ddof=0)
    np.testing.assert_allclose(adv, (r[:4] - 2.5) / np.sqrt(1.25), rtol=1e-15)
    adv = fastlmrl.grpo_advantages(r, group_ids=[7, 7, 7, 7, -2, -2], scale="none")
    np.testing.assert_array_equal(adv, [-1.5, -0.5, 0.5, 1.5, 0.0, 0.0])
    adv = fastlmrl.grpo_advantages(r, group_ids=[7, 7, 7, 7, -2, -2])
    np.testing.assert_allclose(adv[:4], (r[:4] - 2.5) / (np.sqrt(5 / 3) + 1e-4), rtol=1e-15)
    np.testing.assert_array_equal(adv[4:], 0.0)
    # batch std of all six rewards (sample): mean 20/6
    batch_std = np.sqrt(np.sum((r - 20 / 6) ** 2) / 5)
    adv = fastlmrl.grpo_advantages(r, 2, scale="batch", eps=1e-300)
    np.testing.assert_allclose(adv, [-0.5 / batch_std, 0.5 / batch_std] * 2 + [0, 0], rtol=1e-14)
    single = fastlmrl.grpo_advantages([3.0, 4.0], 1)
    np.testing.assert_array_equal(single, [0.0, 0.0])


def test_rloo_hand_computed(backend):
    r = np.array([1.0, 2.0, 6.0, 10.0, 4.0])
    # group 0 (1, 2, 6): 1 - 4 = -3, 2 - 3.5 = -1.5, 6 - 1.5 = 4.5; group 1 (10, 4): +-6
    adv = fastlmrl.rloo_advantages(r, group_ids=[0, 0, 0, 1, 1])
    np.testing.assert_array_equal(adv, [-3.0, -1.5, 4.5, 6.0, -6.0])


@given(seed=st.integers(0, 2**32 - 1), n_groups=st.integers(1, 8))
@settings(max_examples=30)
def test_rloo_with_two_samples_is_the_pairwise_difference(backend, seed, n_groups):
    rng = np.random.default_rng(seed)
    r = rng.integers(-1000, 1000, 2 * n_groups) / 8.0  # exact in float64
    adv = fastlmrl.rloo_advantages(r, 2)
    np.testing.assert_array_equal(adv[0::2], r[0::2] - r[1::2])
    np.testing.assert_array_equal(adv[1::2], r[1::2] - r[0::2])
    r = rng.standard_normal(2 * n_groups)
    adv = fastlmrl.rloo_advantages(r, 2)
    np.testing.assert_allclose(adv[0::2], r[0::2] - r[1::2], rtol=1e-14, atol=1e-15)


@given(
    seed=st.integers(0, 2**32 - 1),
    k=st.integers(2, 6),
    n_groups=st.integers(1, 5),
    ddof=st.sampled_from([0, 1]),
)
@settings(max_examples=30)
def test_group_advantages_match_numpy(backend, seed, k, n_groups, ddof):
    rng = np.random.default_rng(seed)
    r = rng.standard_normal(k * n_groups)
    grid = r.reshape(n_groups, k)
    centred = grid - grid.mean(axis=1, keepdims=True)
    std = grid.std(axis=1, ddof=ddof, keepdims=True)
    np.testing.assert_allclose(
        fastlmrl.grpo_advantages(r, k, ddof=ddof),
        (centred / (std + 1e-4)).ravel(),
        rtol=1e-12,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        fastlmrl.grpo_advantages(r, k, scale="batch", eps=1e-3, ddof=ddof),
        (centred / (r.std(ddof=ddof) + 1e-3)).ravel(),
        rtol=1e-12,
        atol=1e-12,
    )
    loo = np.array(
        [[grid[g, i] - np.mean(np.delete(grid[g], i)) for i in range(k)] for g in range(n_groups)]
    )
    np.testing.assert_allclose(fastlmrl.rloo_advantages(r, k), loo.ravel(), rtol=1e-12, atol=1e-12)
    # RLOO = K/(K-1) * (r - mean)
    np.testing.assert_allclose(
        fastlmrl.rloo_advantages(r, k), (centred * k / (k - 1)).ravel(), rtol=1e-12, atol=1e-12
    )
    # group ids in any order give the same as the contiguous layout
    perm = rng.permutation(r.shape[0])
    ids = (np.arange(r.shape[0]) // k)[perm] * 10 - 3
    np.testing.assert_allclose(
        fastlmrl.grpo_advantages(r[perm], group_ids=ids, ddof=ddof),
        fastlmrl.grpo_advantages(r, k, ddof=ddof)[perm],
        rtol=1e-12,
        atol=1e-12,
    )


def test_float32_in_float32_out(backend):
    r = np.arange(8, dtype=np.float32)
    assert fastlmrl.grpo_advantages(r, 4).dtype == np.float32
    assert fastlmrl.rloo_advantages(r, 4).dtype == np.float32
    assert fastlmrl.grpo_advantages(np.arange(8), 4).dtype == np.float64
    assert (
        fastlmrl.loss_weights(np.ones((2, 2), bool), "grpo", dtype=np.float32).dtype == np.float32
    )


def test_empty_batches(backend):
    assert fastlmrl.grpo_advantages(np.zeros(0), 3).shape == (0,)
    assert fastlmrl.rloo_advantages(np.zeros(0), group_ids=[]).shape == (0,)
    assert fastlmrl.loss_weights(np.zeros((0, 4), bool), "bnpo").shape == (0, 4)
    ratio, grad = fastlmrl.sequence_importance_ratio(np.zeros((0, 3)), np.zeros((0, 3)))
    assert ratio.shape == (0,) and grad.shape == (0, 3)


# ----------------------------------------------------------------------------- loss weights


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_weights_reproduce_each_aggregation(backend, dtype):
    rng = np.random.default_rng(4)
    mask = rng.random((5, 7)) < 0.6
    mask[2] = False  # an empty row
    loss = rng.standard_normal((5, 7))
    n_b = mask.sum(axis=1)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    # grpo: ((loss * mask).sum(1) / n_b.clamp(1)).mean()
    expected = np.mean((loss * mask).sum(axis=1) / np.maximum(n_b, 1))
    w = fastlmrl.loss_weights(mask, "grpo", dtype=dtype)
    assert np.sum(w * loss) == pytest.approx(expected, rel=tol)
    # bnpo: (loss * mask).sum() / mask.sum()
    w = fastlmrl.loss_weights(mask, "bnpo", dtype=dtype)
    assert np.sum(w * loss) == pytest.approx((loss * mask).sum() / mask.sum(), rel=tol)
    # dr_grpo: (loss * mask).sum() / (B * max_length)
    w = fastlmrl.loss_weights(mask, "dr_grpo", max_length=16, dtype=dtype)
    assert np.sum(w * loss) == pytest.approx((loss * mask).sum() / (5 * 16), rel=tol)
    w = fastlmrl.loss_weights(mask, "dr_grpo", dtype=dtype)
    assert np.sum(w * loss) == pytest.approx((loss * mask).sum() / (5 * 7), rel=tol)
    # dapo with a global token count (two micro-batches of an optimisation step)
    w = fastlmrl.loss_weights(mask, "dapo", num_tokens=100, dtype=dtype)
    assert np.sum(w * loss) == pytest.approx((loss * mask).sum() / 100, rel=tol)
    w = fastlmrl.loss_weights(mask, "dapo", dtype=dtype)
    np.testing.assert_array_equal(w, fastlmrl.loss_weights(mask, "bnpo", dtype=dtype))
    # grpo over 12 sequences in all (global count)
    w = fastlmrl.loss_weights(mask, "GRPO", num_sequences=12, dtype=dtype)
    assert np.sum(w * loss) == pytest.approx(expected * 5 / 12, rel=tol)
    assert (w[~mask] == 0).all()


def test_loss_weights_hand_computed(backend):
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=bool)
    np.testing.assert_array_equal(
        fastlmrl.loss_weights(mask, "grpo"), [[0.25, 0.25, 0, 0], [0.125] * 4]
    )
    np.testing.assert_array_equal(
        fastlmrl.loss_weights(mask, "bnpo"), [[1 / 6, 1 / 6, 0, 0], [1 / 6] * 4]
    )
    np.testing.assert_array_equal(
        fastlmrl.loss_weights(mask, "dr_grpo"), [[0.125, 0.125, 0, 0], [0.125] * 4]
    )
    np.testing.assert_array_equal(fastlmrl.loss_weights(np.zeros((2, 2), bool), "bnpo"), 0.0)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(mode="sum"), ValueError, "mode"),
        (dict(mode=1), TypeError, "mode"),
        (dict(mode="grpo", num_sequences=0), ValueError, "num_sequences"),
        (dict(mode="dapo", num_tokens=0), ValueError, "num_tokens"),
        (dict(mode="dapo", num_tokens=2.5), TypeError, "num_tokens"),
        (dict(mode="dr_grpo", max_length=-3), ValueError, "max_length"),
        (dict(mode="grpo", dtype=np.int32), TypeError, "dtype"),
        (dict(mode="grpo", mask=np.ones(4, bool)), ValueError, "mask"),
        (dict(mode="grpo", mask=np.ones((2, 2))), TypeError, "mask"),
        (dict(mode="grpo", mask=np.full((2, 2), 5)), ValueError, "mask"),
    ],
)
def test_loss_weights_bad_arguments(backend, kwargs, exc, match):
    kwargs.setdefault("mask", np.ones((2, 3), bool))
    with pytest.raises(exc, match=match):
        fastlmrl.loss_weights(**kwargs)


# ----------------------------------------------------------------------------- GSPO ratio


def test_sequence_ratio_matches_numpy_and_finite_differences(backend):
    lp, old, m = make_logps(6, 5, 9, np.float64)
    m[3] = False
    ratio, grad = fastlmrl.sequence_importance_ratio(lp, old, m)
    for b in range(5):
        if m[b].any():
            expected = np.exp(np.mean(lp[b, m[b]] - old[b, m[b]]))
            assert ratio[b] == pytest.approx(expected, rel=1e-14)
            np.testing.assert_allclose(grad[b, m[b]], expected / m[b].sum(), rtol=1e-14)
        else:
            assert ratio[b] == 1.0
        assert (grad[b, ~m[b]] == 0).all()
    h = 1e-6
    for b, t in np.argwhere(m)[:12]:
        up, down = lp.copy(), lp.copy()
        up[b, t] += h
        down[b, t] -= h
        fd = (
            fastlmrl.sequence_importance_ratio(up, old, m)[0][b]
            - fastlmrl.sequence_importance_ratio(down, old, m)[0][b]
        ) / (2 * h)
        assert grad[b, t] == pytest.approx(fd, rel=1e-6)


def test_sequence_ratio_of_identical_policies_is_one(backend, float_dtype):
    lp = np.log(np.full((3, 4), 0.3)).astype(float_dtype)
    ratio, grad = fastlmrl.sequence_importance_ratio(lp, lp)
    np.testing.assert_array_equal(ratio, 1.0)
    np.testing.assert_array_equal(grad, 0.25)
    assert ratio.dtype == grad.dtype == float_dtype


@pytest.mark.parametrize(
    "arg,value,exc,match",
    [
        ("log_probs", np.full((2, 3), np.nan), ValueError, r"log_probs\[0, 0\]"),
        ("old_log_probs", np.full((2, 3), np.inf), ValueError, r"old_log_probs\[0, 0\]"),
        ("old_log_probs", np.zeros((2, 4)), ValueError, "old_log_probs"),
        ("log_probs", np.zeros(3), ValueError, "log_probs"),
        ("log_probs", np.array([["a"] * 3] * 2), TypeError, "log_probs"),
        ("mask", np.ones((3, 2), bool), ValueError, "mask"),
        ("mask", np.ones((2, 3)), TypeError, "mask"),
    ],
)
def test_sequence_ratio_bad_arguments(backend, arg, value, exc, match):
    args = dict(log_probs=-np.ones((2, 3)), old_log_probs=-np.ones((2, 3)), mask=None)
    args[arg] = value
    with pytest.raises(exc, match=match):
        fastlmrl.sequence_importance_ratio(**args)


# ----------------------------------------------------------------------------- bad group input


@pytest.mark.parametrize("fn", ["grpo_advantages", "rloo_advantages"])
@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(rewards=[1.0, np.nan, 2.0, 3.0], group_size=2), ValueError, r"rewards\[1\]"),
        (dict(rewards=[1.0, 2.0, -np.inf, 3.0], group_size=2), ValueError, r"rewards\[2\]"),
        (dict(rewards=np.ones((2, 2)), group_size=2), ValueError, "rewards"),
        (dict(rewards=["a", "b"], group_size=2), TypeError, "rewards"),
        (dict(rewards=np.ones(5), group_size=2), ValueError, "group_size"),
        (dict(rewards=np.ones(4), group_size=0), ValueError, "group_size"),
        (dict(rewards=np.ones(4), group_size=2.0), TypeError, "group_size"),
        (dict(rewards=np.ones(4)), ValueError, "group_size and group_ids"),
        (dict(rewards=np.ones(4), group_size=2, group_ids=[0, 0, 1, 1]), ValueError, "exactly one"),
        (dict(rewards=np.ones(4), group_ids=[0, 0, 1]), ValueError, "group_ids"),
        (dict(rewards=np.ones(4), group_ids=[0.0, 0.0, 1.0, 1.0]), TypeError, "group_ids"),
    ],
)
def test_group_bad_arguments(backend, fn, kwargs, exc, match):
    rewards = np.array(kwargs["rewards"]) if not isinstance(kwargs["rewards"], list) else None
    before = None if rewards is None else rewards.copy()
    with pytest.raises(exc, match=match):
        getattr(fastlmrl, fn)(**kwargs)
    if before is not None:
        np.testing.assert_array_equal(kwargs["rewards"], before)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(scale="std"), ValueError, "scale"),
        (dict(scale=None), TypeError, "scale"),
        (dict(eps=-1e-3), ValueError, "eps"),
        (dict(eps=0.0), ValueError, "eps"),
        (dict(eps=np.nan), ValueError, "eps"),
        (dict(ddof=2), ValueError, "ddof"),
        (dict(ddof=1.0), TypeError, "ddof"),
    ],
)
def test_grpo_bad_options(backend, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fastlmrl.grpo_advantages(np.ones(4), 2, **kwargs)


def test_rloo_rejects_a_single_sample_group(backend):
    with pytest.raises(ValueError, match=r"at least 2 samples per group.*rewards\[2\]"):
        fastlmrl.rloo_advantages([1.0, 2.0, 3.0], group_ids=[4, 4, 5])
    with pytest.raises(ValueError, match="at least 2"):
        fastlmrl.rloo_advantages([1.0, 2.0], 1)


# ---- array shapes (direct callers) -------------------------------------------------------------


@pytest.mark.parametrize("kernel", KERNELS)
def test_inconsistent_array_shapes_are_rejected_first(compiled, reference, kernel):
    r = np.linspace(-1.0, 2.0, 6)
    ids = np.array([0, 0, 1, 1, 1, 0], np.int64)
    stat1, stat2, count = np.full(2, -7.0), np.full(2, -7.0), np.full(2, -7, np.int64)
    out = np.full(6, -7.0)
    lp, old, m = make_logps(4, 3, 4, np.float64)
    grid = np.full(m.shape, -7.0)
    args = {
        "grpo_advantages": dict(
            rewards=r,
            group_ids=ids,
            scale=1,
            eps=1e-6,
            ddof=1,
            group_mean=stat1,
            group_std=stat2,
            group_count=count,
            advantages_out=out,
        ),
        "rloo_advantages": dict(
            rewards=r, group_ids=ids, group_sum=stat1, group_count=count, advantages_out=out
        ),
        "loss_weights": dict(
            mask=m.view(np.uint8),
            mode=0,
            num_sequences=3.0,
            num_tokens=12.0,
            max_length=4.0,
            out=grid,
        ),
        "sequence_importance_ratio": dict(
            log_probs=lp,
            old_log_probs=old,
            mask=m.view(np.uint8),
            ratio_out=np.full(3, -7.0),
            grad_out=grid,
        ),
    }[kernel]
    for module in (reference, compiled):
        assert_rejects_bad_shapes(module, kernel, args)
