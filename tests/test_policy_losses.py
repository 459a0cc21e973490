"""policy_losses: reference equivalence (bit for bit), independent NumPy losses, finite-difference
gradients, identities, serial = parallel, bad input for every argument, nothing modified on
error."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shape_checks import assert_rejects_bad_shapes

import fastlmrl
from fastlmrl import _backend
from fastlmrl._status import BAD_SHAPES

FLOATS = (np.float32, np.float64)
KERNELS = ["a2c_loss", "kl_penalty_loss", "ppo_loss", "reinforce_loss"]


def np_log_softmax(x):
    x = x.astype(np.float64)
    m = np.max(x, axis=1, keepdims=True)
    return x - (m + np.log(np.sum(np.exp(x - m), axis=1, keepdims=True)))


def case(seed, n, v, dtype=np.float64, mask=0.0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, v)) * 2
    t = rng.integers(0, v, n)
    if mask:
        x[rng.random((n, v)) < mask] = -np.inf
        x[np.arange(n), t] = rng.standard_normal(n)
    d = dict(
        x=np.ascontiguousarray(x.astype(dtype)),
        t=t,
        adv=rng.standard_normal(n).astype(dtype),
        w=rng.random(n).astype(dtype),
        old=(rng.standard_normal(n) * 0.5 - 2).astype(dtype),
        ref=(rng.standard_normal(n) * 0.5 - 2).astype(dtype),
        values=rng.standard_normal(n).astype(dtype),
        returns=rng.standard_normal(n).astype(dtype),
        old_values=rng.standard_normal(n).astype(dtype),
    )
    if n > 2:
        d["w"][1] = 0.0
    return d


def raw(module, name, d, threads=1, seq=False, offs=None, kl_est=3, dual=3.0, clip=0.2):
    x, t, n = d["x"], d["t"], d["x"].shape[0]
    g = np.full(x.shape, 5.0, dtype=x.dtype)
    tl, lp, extra1, extra2 = (np.full(n, 5.0) for _ in range(4))
    stats = np.zeros(7)
    if name == "reinforce_loss":
        s = module.reinforce_loss(
            x, t, d["returns"], d["values"], d["w"], tl, lp, g, stats, threads
        )
    elif name == "ppo_loss":
        offs = np.array([0, n], np.int64) if offs is None else offs
        s = module.ppo_loss(
            x,
            t,
            d["old"],
            d["adv"],
            d["w"],
            d["ref"],
            offs,
            clip,
            0.28,
            dual,
            0.05,
            kl_est,
            int(seq),
            tl,
            lp,
            extra1,
            g,
            stats,
            threads,
        )
    elif name == "kl_penalty_loss":
        s = module.kl_penalty_loss(x, t, d["ref"], d["w"], kl_est, tl, lp, g, stats, threads)
    else:
        s = module.a2c_loss(
            x,
            t,
            d["adv"],
            d["values"],
            d["returns"],
            d["old_values"],
            d["w"],
            0.3,
            0.5,
            0.02,
            tl,
            lp,
            extra1,
            g,
            extra2,
            stats,
            threads,
        )
    return s, [g, tl, lp, extra1, extra2, stats]


# ---- reference equivalence ----------------------------------------------------------------------


@settings(max_examples=20)
@given(
    n=st.integers(0, 6),
    v=st.sampled_from([1, 3, 8, 513, 1030]),
    float_idx=st.integers(0, 1),
    int32=st.booleans(),
    mask=st.sampled_from([0.0, 0.5]),
    seq=st.booleans(),
    kl_est=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_compiled_kernels_equal_reference(
    compiled, reference, n, v, float_idx, int32, mask, seq, kl_est, seed
):
    d = case(seed, n, v, FLOATS[float_idx], mask)
    d["t"] = d["t"].astype(np.int32 if int32 else np.int64)
    offs = np.array(sorted({0, n, *np.random.default_rng(seed).integers(0, n + 1, 2)}), np.int64)
    for name in KERNELS:
        s_ref, o_ref = raw(reference, name, d, seq=seq, offs=offs, kl_est=kl_est)
        s_c, o_c = raw(compiled, name, d, seq=seq, offs=offs, kl_est=kl_est)
        assert s_ref == s_c == 0
        for a, b in zip(o_c, o_ref):
            np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("dtype", FLOATS)
def test_serial_equals_parallel(compiled, dtype):
    d = case(7, 70, 1200, dtype, 0.1)
    offs = np.array([0, 10, 11, 40, 70], np.int64)
    for name in KERNELS:
        for seq in (False, True):
            _, serial = raw(compiled, name, d, 1, seq, offs)
            _, parallel = raw(compiled, name, d, 2, seq, offs)
            for a, b in zip(serial, parallel):
                np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("dtype", FLOATS)
def test_streaming_store_path_equals_ordinary_stores(compiled, dtype):
    # gradient outputs of >= 64 MiB are written with streaming stores: same bits as small batches
    from fastlmrl._numba.fast_math import NT_MIN_BYTES

    v = 16411
    n = NT_MIN_BYTES // (v * np.dtype(dtype).itemsize) + 3
    d = case(12, n, v, dtype, 0.05)
    for name in ("ppo_loss", "a2c_loss"):
        for threads in (1, 2):
            _, big = raw(compiled, name, d, threads)
            for lo in (0, 7, n - 5):
                sub = {
                    k: (a[lo : lo + 5] if isinstance(a, np.ndarray) else a) for k, a in d.items()
                }
                _, small = raw(compiled, name, sub)
                for a, b in zip(big[:5], small[:5]):  # per-row outputs (not the batch sums)
                    np.testing.assert_array_equal(a[lo : lo + 5], b, err_msg=name)
            del big


@pytest.mark.parametrize("v", [16, 17, 31, 64, 100, 128])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", ["ppo_loss", "reinforce_loss", "kl_penalty_loss"])
def test_short_float32_rows_equal_reference(compiled, reference, name, v, threads):
    # token-level passes over float32 rows of at most 128 entries have their own code in the
    # Cython AVX-512 build (groups of rows in stages, full and partial 16-lane chunks): bit for
    # bit the reference, with masked entries, a NaN row, an infinite row, int32 tokens, each KL
    # estimator, PPO's reference policy and dual clipping
    d = case(v, 43, v, np.float32, 0.3)
    for tokens in (d["t"], d["t"].astype(np.int32)):
        d["t"] = tokens
        for kl_est, dual in ((3, 3.0), (1, -1.0), (2, -1.0)):
            s_ref, o_ref = raw(reference, name, d, kl_est=kl_est, dual=dual)
            s_c, o_c = raw(compiled, name, d, threads, kl_est=kl_est, dual=dual)
            assert s_ref == s_c == 0
            for a, b in zip(o_c, o_ref):
                np.testing.assert_array_equal(a, b)
    for bad, column, value in ((5, 1, np.nan), (11, 1, np.inf), (7, d["t"][7], -np.inf)):
        x = d["x"].copy()  # a NaN row, an infinite row, a sampled token of logit -inf
        x[bad, column] = value
        e = dict(d, x=x)
        assert raw(reference, name, e)[0] == raw(compiled, name, e, threads)[0] != 0


# ---- blocked batch sums
# ---------------------------------------------------------------------------


def test_reduce_rows():
    from fastlmrl._python.policy_losses import reduce_rows

    # min(256, 1 + 65536 // V), written out by hand
    assert [reduce_rows(v) for v in (1, 64, 255, 256, 257, 1000, 50257, 65536, 65537, 151936)] == [
        256,
        256,
        256,
        256,
        256,
        66,
        2,
        2,
        1,
        1,
    ]


def _blocked_sum(values, rows):
    """sum over blocks (in order) of the sums over each block's rows (in order), from 0.0."""
    total = 0.0
    for lo in range(0, len(values), rows):
        part = 0.0
        for x in values[lo : lo + rows]:
            part += x
        total += part
    return total


@pytest.mark.parametrize(
    "n, v, dtype", [(600, 64, np.float32), (3, 66000, np.float64), (257, 3, np.float32)]
)
def test_multi_block_sums_equal_reference_for_any_thread_count(compiled, reference, n, v, dtype):
    # 3 blocks of 256 / 256 / 88 rows; 3 blocks of one row; 2 blocks of 256 + 1 rows
    d = case(30, n, v, dtype, 0.1)
    d["old"] = (np_log_softmax(d["x"])[np.arange(n), d["t"]] + 0.3 * d["adv"]).astype(dtype)
    offs = np.array([0, n // 3, n // 3, n], np.int64)
    for name in ("ppo_loss", "reinforce_loss", "kl_penalty_loss"):
        for seq in (False, True) if name == "ppo_loss" else (False,):
            s_ref, o_ref = raw(reference, name, d, 1, seq, offs)
            assert s_ref == 0
            for threads in (1, 2, 3):
                s_c, o_c = raw(compiled, name, d, threads, seq, offs)
                assert s_c == 0
                for a, b in zip(o_c, o_ref):
                    np.testing.assert_array_equal(a, b, err_msg=f"{name} threads={threads}")


def test_batch_sums_are_blocked_in_row_order(backend):
    # the documented order: serial over each block of reduce_rows(V) = 256 rows, then over blocks
    n, v = 700, 64
    d = case(31, n, v)
    d["w"] = np.random.default_rng(5).random(n) * 10.0 ** np.random.default_rng(6).integers(
        -8, 8, n
    )
    res = fastlmrl.ppo_loss(d["x"], d["t"], d["old"], d["adv"], d["w"], clip_low=0.2)
    w = d["w"].tolist()
    tl = res.token_loss.tolist()
    assert res.loss == _blocked_sum([wi * li for wi, li in zip(w, tl)], 256)
    lp = np_log_softmax(d["x"])[np.arange(n), d["t"]]
    logr = lp - d["old"]
    np.testing.assert_allclose(
        res.approx_kl_k1, np.sum(d["w"] * -logr) / np.sum(d["w"]), rtol=1e-12
    )
    rf = fastlmrl.reinforce_loss(d["x"], d["t"], d["returns"], d["w"])
    assert rf.loss == _blocked_sum([wi * li for wi, li in zip(w, rf.token_loss.tolist())], 256)


@pytest.mark.parametrize("bad_row", range(5))
@pytest.mark.parametrize("kind", ["logits", "token"])
def test_bad_row_in_any_position_of_a_row_pair(compiled, reference, bad_row, kind):
    # rows are processed in pairs: a bad first or second row (or the odd last row) is reported
    d = case(32, 5, 6)
    if kind == "logits":
        d["x"][bad_row, 2] = np.nan
    else:
        d["x"][bad_row, d["t"][bad_row]] = -np.inf
    for name in KERNELS:
        s_ref, _ = raw(reference, name, d)
        s_c, outs = raw(compiled, name, d)
        assert s_c == s_ref == (20 if kind == "logits" else 21), name
        assert (outs[5] == 0.0).all()  # the batch sums are written only on success


def test_all_backends_export_the_same_kernels():
    names = [sorted(_backend.backend_module(b).policy_losses.__all__) for b in fastlmrl.BACKENDS]
    assert names[0] == names[1] == names[2] == KERNELS


# ---- independent NumPy implementations ----------------------------------------------------------


def softmax_grad(lsm, t, coef):
    onehot = np.zeros_like(lsm)
    onehot[np.arange(len(t)), t] = 1.0
    return coef[:, None] * (onehot - np.exp(lsm))


@pytest.mark.parametrize("dtype", FLOATS)
def test_reinforce_against_numpy(backend, dtype):
    d = case(1, 6, 40, dtype, 0.3)
    rtol = 2e-5 if dtype == np.float32 else 1e-11
    lsm = np_log_softmax(d["x"])
    lp = lsm[np.arange(6), d["t"]]
    r64, w64 = d["returns"].astype(np.float64), d["w"].astype(np.float64)
    for baseline, b in (
        (None, 0.0),
        ("mean", np.sum(w64 * r64) / np.sum(w64)),
        (d["values"], d["values"].astype(np.float64)),
    ):
        res = fastlmrl.reinforce_loss(d["x"], d["t"], d["returns"], d["w"], baseline=baseline)
        adv = r64 - b
        np.testing.assert_allclose(res.loss, np.sum(w64 * -adv * lp), rtol=rtol)
        np.testing.assert_allclose(
            res.grad_logits, softmax_grad(lsm, d["t"], -w64 * adv), rtol=rtol, atol=rtol
        )
        np.testing.assert_allclose(res.log_probs, lp, rtol=rtol)


def np_ppo(lp, old, adv, w, eps_low, eps_high, dual, ref=None, beta=0.0, est="k3", lr=None):
    ratio = np.exp(lp - old if lr is None else lr)
    un, cl = -adv * ratio, -adv * np.clip(ratio, 1 - eps_low, 1 + eps_high)
    pg = np.maximum(un, cl)
    dpg = np.where(un >= cl, -adv * ratio, 0.0)
    if dual:
        capped = (adv < 0) & (pg > -dual * adv)
        pg = np.where(capped, -dual * adv, pg)
        dpg = np.where(capped, 0.0, dpg)
    kl = dkl = 0.0
    if ref is not None:
        u = ref - lp
        kl = {"k1": -u, "k2": 0.5 * u * u, "k3": np.exp(u) - 1 - u}[est]
        dkl = {"k1": np.ones_like(u), "k2": -u, "k3": 1 - np.exp(u)}[est]
    return np.sum(w * (pg + beta * kl)), w * (dpg + beta * dkl), (un < cl).astype(float)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("dual", [None, 2.0])
@pytest.mark.parametrize("est", ["k1", "k2", "k3"])
def test_ppo_against_numpy(backend, dtype, dual, est):
    d = case(2, 8, 30, dtype, 0.2)
    d["old"] = (
        np_log_softmax(d["x"])[np.arange(8), d["t"]] + np.random.default_rng(0).normal(0, 0.4, 8)
    ).astype(dtype)
    d["adv"][::2] *= 5
    rtol = 3e-5 if dtype == np.float32 else 1e-10
    lsm = np_log_softmax(d["x"])
    lp = lsm[np.arange(8), d["t"]]
    f64 = {k: d[k].astype(np.float64) for k in ("old", "adv", "w", "ref")}
    loss, coef, clipped = np_ppo(
        lp, f64["old"], f64["adv"], f64["w"], 0.2, 0.3, dual, f64["ref"], 0.1, est
    )
    res = fastlmrl.ppo_loss(
        d["x"],
        d["t"],
        d["old"],
        d["adv"],
        d["w"],
        clip_low=0.2,
        clip_high=0.3,
        dual_clip=dual,
        ref_log_probs=d["ref"],
        kl_coef=0.1,
        kl_estimator=est,
    )
    np.testing.assert_allclose(res.loss, loss, rtol=rtol)
    np.testing.assert_allclose(
        res.grad_logits, softmax_grad(lsm, d["t"], coef), rtol=rtol, atol=rtol
    )
    sw = f64["w"].sum()
    np.testing.assert_allclose(res.clip_fraction, np.sum(f64["w"] * clipped) / sw, rtol=1e-12)
    logr = lp - f64["old"]
    np.testing.assert_allclose(res.approx_kl_k1, np.sum(f64["w"] * -logr) / sw, rtol=rtol)
    np.testing.assert_allclose(
        res.approx_kl_k3, np.sum(f64["w"] * (np.exp(logr) - 1 - logr)) / sw, rtol=rtol
    )
    assert 0.0 < res.clip_fraction < 1.0


def test_gspo_sequence_ratio_against_numpy(backend):
    d = case(3, 7, 20)
    offs = [0, 3, 3, 7]
    lsm = np_log_softmax(d["x"])
    lp = lsm[np.arange(7), d["t"]]
    lr = np.empty(7)
    for k in range(3):
        rows = np.arange(offs[k], offs[k + 1])
        rows_w = rows[d["w"][rows] != 0]
        if rows.size:
            lr[rows] = np.mean(lp[rows_w] - d["old"][rows_w])
    loss, coef, _ = np_ppo(lp, d["old"], d["adv"], d["w"], 0.2, 0.2, None, lr=lr)
    res = fastlmrl.ppo_loss(
        d["x"], d["t"], d["old"], d["adv"], d["w"], ratio_level="sequence", sequence_offsets=offs
    )
    np.testing.assert_allclose(res.ratios, np.exp(lr), rtol=1e-13)
    np.testing.assert_allclose(res.loss, loss, rtol=1e-12)
    np.testing.assert_allclose(res.grad_logits, softmax_grad(lsm, d["t"], coef), atol=1e-13)


@pytest.mark.parametrize("est", ["k1", "k2", "k3"])
def test_kl_penalty_against_numpy(backend, est):
    d = case(4, 5, 12)
    lsm = np_log_softmax(d["x"])
    lp = lsm[np.arange(5), d["t"]]
    loss, coef, _ = np_ppo(lp, lp, np.zeros(5), d["w"], 0.2, 0.2, None, d["ref"], 1.0, est)
    res = fastlmrl.kl_penalty_loss(d["x"], d["t"], d["ref"], d["w"], estimator=est)
    np.testing.assert_allclose(res.loss, loss, rtol=1e-12)
    np.testing.assert_allclose(res.grad_logits, softmax_grad(lsm, d["t"], coef), atol=1e-13)
    if est == "k3":
        assert (res.token_kl >= 0).all()


@pytest.mark.parametrize("clip", [None, 0.3])
def test_a2c_against_numpy(backend, clip):
    d = case(5, 6, 25, np.float64, 0.3)
    lsm = np_log_softmax(d["x"])
    p = np.exp(lsm)
    lp = lsm[np.arange(6), d["t"]]
    plogp = np.where(p > 0, p * np.where(p > 0, lsm, 0.0), 0.0)
    h = -plogp.sum(1)
    v, r, o = d["values"], d["returns"], d["old_values"]
    lv = (v - r) ** 2
    dlv = 2 * (v - r)
    if clip:
        vc = o + np.clip(v - o, -clip, clip)
        use_c = (vc - r) ** 2 > lv
        dlv = np.where(use_c, 2 * (vc - r) * (np.abs(v - o) <= clip), dlv)
        lv = np.maximum(lv, (vc - r) ** 2)
    w, a = d["w"], d["adv"]
    loss = np.sum(w * (-a * lp + 0.5 * lv - 0.02 * h))
    dh = -np.where(p > 0, p * (np.where(p > 0, lsm, 0.0) + h[:, None]), 0.0)
    grad = softmax_grad(lsm, d["t"], -w * a) - 0.02 * w[:, None] * dh
    res = fastlmrl.a2c_loss(
        d["x"],
        d["t"],
        a,
        v,
        r,
        w,
        value_coef=0.5,
        entropy_coef=0.02,
        old_values=o if clip else None,
        value_clip=clip,
    )
    np.testing.assert_allclose(res.loss, loss, rtol=1e-12)
    np.testing.assert_allclose(res.grad_logits, grad, atol=1e-13)
    np.testing.assert_allclose(res.grad_values, w * 0.5 * dlv, atol=1e-13)
    np.testing.assert_allclose(res.entropy, h, rtol=1e-12)
    np.testing.assert_allclose(res.mean_entropy, np.sum(w * h) / w.sum(), rtol=1e-12)


def test_hand_computed_reinforce_and_ppo(backend):
    # two tokens, uniform policy over 2 actions: log pi = -log 2, p = 0.5
    x = np.zeros((2, 2))
    res = fastlmrl.reinforce_loss(x, [0, 1], [2.0, -1.0], weights=[1.0, 1.0])
    assert res.loss == pytest.approx(-(2.0 - 1.0) * -math.log(2))
    np.testing.assert_allclose(res.grad_logits, [[-1.0, 1.0], [-0.5, 0.5]])
    # PPO: old log-prob log(0.25) -> rho = 2, clipped at 1.2 for A = 1 (no gradient), A = -1 not
    old = [math.log(0.25)] * 2
    res = fastlmrl.ppo_loss(x, [0, 1], old, [1.0, -1.0], weights=[0.5, 0.5], clip_low=0.2)
    assert res.loss == pytest.approx(0.5 * -1.2 + 0.5 * 2.0)
    assert res.clip_fraction == 0.5
    np.testing.assert_allclose(res.ratios, [2.0, 2.0])
    np.testing.assert_allclose(res.grad_logits, [[0.0, 0.0], [-0.5, 0.5]])
    # dual clip c = 1.5 caps the A = -1 token at 1.5
    res = fastlmrl.ppo_loss(x, [0, 1], old, [1.0, -1.0], weights=[0.5, 0.5], dual_clip=1.5)
    assert res.loss == pytest.approx(0.5 * -1.2 + 0.5 * 1.5)
    assert res.dual_clip_fraction == 0.5
    np.testing.assert_allclose(res.grad_logits, 0.0)
    assert res.approx_kl_k1 == pytest.approx(-math.log(2))
    assert res.approx_kl_k3 == pytest.approx(1 - math.log(2))


# ---- finite differences -------------------------------------------------------------------------


def _fd_check(loss_fn, x, grad, entries, h=1e-6, tol=2e-7):
    for i, j in entries:
        xp, xm = x.copy(), x.copy()
        xp[i, j] += h
        xm[i, j] -= h
        fd = (loss_fn(xp) - loss_fn(xm)) / (2 * h)
        assert abs(fd - grad[i, j]) < tol, (i, j, fd, grad[i, j])


ENTRIES = [(0, 0), (1, 3), (2, 7), (3, 1), (4, 5)]


def test_finite_differences_all_losses():
    d = case(9, 5, 8)
    x, t = d["x"], d["t"]
    # keep PPO ratios away from the clip kinks
    d["old"] = np_log_softmax(x)[np.arange(5), t] + np.array([0.05, -0.5, 0.6, -0.02, 0.01])
    kw = dict(ref_log_probs=d["ref"], kl_coef=0.2, dual_clip=3.0)
    fns = {
        "reinforce": lambda z: fastlmrl.reinforce_loss(z, t, d["returns"], d["w"], "mean"),
        "ppo": lambda z: fastlmrl.ppo_loss(z, t, d["old"], d["adv"], d["w"], **kw),
        "gspo": lambda z: fastlmrl.ppo_loss(
            z, t, d["old"], d["adv"], d["w"], ratio_level="sequence", sequence_offsets=[0, 5]
        ),
        "kl": lambda z: fastlmrl.kl_penalty_loss(z, t, d["ref"], d["w"], "k2"),
        "a2c": lambda z: fastlmrl.a2c_loss(
            z, t, d["adv"], d["values"], d["returns"], d["w"], entropy_coef=0.3
        ),
    }
    for name, fn in fns.items():
        res = fn(x)
        if name == "gspo":
            # GSPO-token gradient: the sequence ratio's own dependence on the other tokens' logp
            # is the sequence-level gradient; with one sequence both agree (see docstring)
            continue
        _fd_check(lambda z, fn=fn: fn(z).loss, x, res.grad_logits, ENTRIES)


def test_gspo_gradient_equals_sequence_objective_gradient():
    # GSPO (sequence-level) with advantage A_k and weights 1/(G |y_k|) : L = -(1/G) sum_k
    # min(s_k A_k, clip(s_k) A_k); its finite-difference gradient equals the kernel's gradient.
    d = case(10, 6, 7)
    x, t = d["x"], d["t"]
    offs = [0, 2, 6]
    lens = np.array([2, 2, 4, 4, 4, 4])
    w = 1.0 / (2 * lens)
    adv = np.array([0.7, 0.7, -1.3, -1.3, -1.3, -1.3])
    lp = np_log_softmax(x)[np.arange(6), t]
    old = lp + np.array([0.01, -0.02, 0.03, 0.0, -0.01, 0.02])

    def seq_loss(z):
        lpz = np_log_softmax(z)[np.arange(6), t]
        total = 0.0
        for k in range(2):
            rows = slice(offs[k], offs[k + 1])
            s = math.exp(np.mean(lpz[rows] - old[rows]))
            a = adv[offs[k]]
            total += -min(s * a, min(max(s, 0.8), 1.2) * a) / 2
        return total

    res = fastlmrl.ppo_loss(x, t, old, adv, w, ratio_level="sequence", sequence_offsets=offs)
    assert res.loss == pytest.approx(seq_loss(x), rel=1e-12)
    _fd_check(seq_loss, x, res.grad_logits, [(0, 0), (1, 2), (2, 6), (5, 3), (3, 3)])


def test_finite_differences_value_gradient():
    d = case(11, 4, 5)
    res = fastlmrl.a2c_loss(
        d["x"],
        d["t"],
        d["adv"],
        d["values"],
        d["returns"],
        d["w"],
        old_values=d["old_values"],
        value_clip=0.3,
    )
    h = 1e-6
    for i in range(4):
        vp, vm = d["values"].copy(), d["values"].copy()
        vp[i] += h
        vm[i] -= h
        lp_ = fastlmrl.a2c_loss(
            d["x"],
            d["t"],
            d["adv"],
            vp,
            d["returns"],
            d["w"],
            old_values=d["old_values"],
            value_clip=0.3,
        ).loss
        lm_ = fastlmrl.a2c_loss(
            d["x"],
            d["t"],
            d["adv"],
            vm,
            d["returns"],
            d["w"],
            old_values=d["old_values"],
            value_clip=0.3,
        ).loss
        assert abs((lp_ - lm_) / (2 * h) - res.grad_values[i]) < 1e-7


# ---- identities ---------------------------------------------------------------------------------


def test_ppo_at_ratio_one_equals_reinforce(backend):
    d = case(12, 9, 33, np.float64, 0.2)
    lp = fastlmrl.token_log_probs(d["x"], d["t"])
    ppo = fastlmrl.ppo_loss(d["x"], d["t"], lp, d["adv"], d["w"], clip_low=0.2)
    rf = fastlmrl.reinforce_loss(d["x"], d["t"], d["adv"], d["w"])
    np.testing.assert_array_equal(ppo.grad_logits, rf.grad_logits)
    np.testing.assert_array_equal(ppo.ratios, 1.0)
    assert ppo.clip_fraction == 0.0 and ppo.approx_kl_k1 == 0.0 and ppo.approx_kl_k3 == 0.0
    assert ppo.loss == pytest.approx(-np.sum(d["w"] * d["adv"]), rel=1e-13)


def test_k3_nonnegative_and_zero_at_reference():
    d = case(13, 50, 6)
    res = fastlmrl.kl_penalty_loss(d["x"], d["t"], d["ref"], d["w"], "k3")
    assert (res.token_kl >= 0).all()
    same = fastlmrl.kl_penalty_loss(d["x"], d["t"], res.log_probs, d["w"], "k3")
    np.testing.assert_array_equal(same.token_kl, 0.0)
    np.testing.assert_allclose(same.grad_logits, 0.0, atol=0)


def test_default_weights_are_a_token_mean(backend):
    d = case(14, 4, 6)
    a = fastlmrl.reinforce_loss(d["x"], d["t"], d["returns"])
    b = fastlmrl.reinforce_loss(d["x"], d["t"], d["returns"], np.full(4, 0.25))
    assert a.loss == b.loss


def test_empty_batch(backend, float_dtype):
    x = np.zeros((0, 4), dtype=float_dtype)
    e = np.zeros(0)
    assert fastlmrl.reinforce_loss(x, [], e, baseline="mean").loss == 0.0
    r = fastlmrl.ppo_loss(x, [], e, e, ratio_level="sequence", sequence_offsets=[0])
    assert r.loss == 0.0 and r.grad_logits.shape == (0, 4) and r.clip_fraction == 0.0
    assert fastlmrl.kl_penalty_loss(x, [], e).loss == 0.0
    assert fastlmrl.a2c_loss(x, [], e, e, e).loss == 0.0


# ---- bad input ----------------------------------------------------------------------------------


def _calls(d, **over):
    x, t = over.get("x", d["x"]), over.get("t", d["t"])
    g = lambda k: over.get(k, d[k])  # noqa: E731
    return {
        "reinforce": lambda: fastlmrl.reinforce_loss(
            x, t, g("returns"), g("w"), baseline=over.get("baseline", None), out=over.get("out")
        ),
        "ppo": lambda: fastlmrl.ppo_loss(
            x,
            t,
            g("old"),
            g("adv"),
            g("w"),
            ref_log_probs=g("ref"),
            kl_coef=0.1,
            out=over.get("out"),
        ),
        "kl": lambda: fastlmrl.kl_penalty_loss(x, t, g("ref"), g("w"), out=over.get("out")),
        "a2c": lambda: fastlmrl.a2c_loss(
            x,
            t,
            g("adv"),
            g("values"),
            g("returns"),
            g("w"),
            old_values=g("old_values"),
            value_clip=0.2,
            out=over.get("out"),
        ),
    }


def test_bad_logits_and_tokens(backend):
    d = case(20, 3, 4)
    for bad in (np.nan, np.inf):
        x = d["x"].copy()
        x[2, 1] = bad
        for f in _calls(d, x=x).values():
            with pytest.raises(ValueError, match="logits row 2"):
                f()
    for over, err, match in (
        (dict(x=d["x"].astype(np.int32)), TypeError, "logits"),
        (dict(x=d["x"][:, ::2]), ValueError, "logits"),
        (dict(t=[0, 1]), ValueError, "tokens"),
        (dict(t=[0, 1, 4]), ValueError, r"tokens\[2\] = 4"),
        (dict(t=[0.0, 1.0, 2.0]), TypeError, "tokens"),
    ):
        for f in _calls(d, **over).values():
            with pytest.raises(err, match=match):
                f()
    x = d["x"].copy()
    x[1, d["t"][1]] = -np.inf
    for f in _calls(d, x=x).values():
        with pytest.raises(ValueError, match=r"tokens\[1\].*masked"):
            f()


@pytest.mark.parametrize("name", ["w", "adv", "old", "ref", "returns", "values", "old_values"])
def test_bad_per_token_arrays(backend, name):
    d = case(21, 3, 4)
    label = {
        "w": "weights",
        "adv": "advantages",
        "old": "old_log_probs",
        "ref": "ref_log_probs",
        "returns": "returns",
        "values": "values",
        "old_values": "old_values",
    }[name]
    calls = _calls(d)
    users = [
        k
        for k, f in calls.items()
        if k
        in {
            "w": ("reinforce", "ppo", "kl", "a2c"),
            "adv": ("ppo", "a2c"),
            "old": ("ppo",),
            "ref": ("ppo", "kl"),
            "returns": ("reinforce", "a2c"),
            "values": ("a2c",),
            "old_values": ("a2c",),
        }[name]
    ]
    for bad in (np.nan, np.inf):
        arr = d[name].copy()
        arr[1] = bad
        for k in users:
            with pytest.raises(ValueError, match=label):
                _calls(d, **{name: arr})[k]()
    for k in users:
        with pytest.raises(ValueError, match=label):
            _calls(d, **{name: d[name][:2]})[k]()
        with pytest.raises(TypeError, match=label):
            _calls(d, **{name: np.array(["a", "b", "c"])})[k]()
    if name == "w":
        arr = d["w"].copy()
        arr[0] = -0.5
        for k in users:
            with pytest.raises(ValueError, match="weights"):
                _calls(d, w=arr)[k]()


def test_bad_scalars_and_options(backend):
    d = case(22, 3, 4)
    x, t, old, adv = d["x"], d["t"], d["old"], d["adv"]
    for kw, err, match in (
        (dict(clip_low=1.0), ValueError, "clip_low"),
        (dict(clip_low=-0.1), ValueError, "clip_low"),
        (dict(clip_low="0.2"), TypeError, "clip_low"),
        (dict(clip_high=-1.0), ValueError, "clip_high"),
        (dict(dual_clip=1.0), ValueError, "dual_clip"),
        (dict(kl_coef=-1.0), ValueError, "kl_coef"),
        (dict(kl_coef=0.1), ValueError, "ref_log_probs"),
        (dict(kl_estimator="k4", ref_log_probs=d["ref"]), ValueError, "kl_estimator"),
        (dict(ratio_level="group"), ValueError, "ratio_level"),
        (dict(ratio_level="sequence"), ValueError, "sequence_offsets"),
        (dict(ratio_level="sequence", sequence_offsets=[0, 2]), ValueError, "sequence_offsets"),
        (
            dict(ratio_level="sequence", sequence_offsets=[0, 2, 1, 3]),
            ValueError,
            "sequence_offsets",
        ),
        (dict(ratio_level="sequence", sequence_offsets=[1, 3]), ValueError, "sequence_offsets"),
    ):
        with pytest.raises(err, match=match):
            fastlmrl.ppo_loss(x, t, old, adv, **kw)
    with pytest.raises(ValueError, match="estimator"):
        fastlmrl.kl_penalty_loss(x, t, d["ref"], estimator="k0")
    with pytest.raises(ValueError, match="baseline"):
        fastlmrl.reinforce_loss(x, t, d["returns"], baseline="median")
    with pytest.raises(ValueError, match="baseline"):
        fastlmrl.reinforce_loss(x, t, d["returns"], baseline=[0.0, np.nan, 0.0])
    with pytest.raises(ValueError, match="old_values"):
        fastlmrl.a2c_loss(x, t, adv, d["values"], d["returns"], value_clip=0.2)
    with pytest.raises(ValueError, match="value_clip"):
        fastlmrl.a2c_loss(x, t, adv, d["values"], d["returns"], old_values=d["old_values"])
    with pytest.raises(ValueError, match="value_clip"):
        fastlmrl.a2c_loss(
            x, t, adv, d["values"], d["returns"], old_values=d["old_values"], value_clip=0.0
        )
    with pytest.raises(ValueError, match="value_coef"):
        fastlmrl.a2c_loss(x, t, adv, d["values"], d["returns"], value_coef=-1.0)
    with pytest.raises(ValueError, match="entropy_coef"):
        fastlmrl.a2c_loss(x, t, adv, d["values"], d["returns"], entropy_coef=np.nan)


def test_bad_out(backend):
    d = case(23, 3, 4)
    for f in _calls(d, out=np.zeros((3, 4), dtype=np.float32)).values():
        with pytest.raises(TypeError, match="out"):
            f()
    for f in _calls(d, out=np.zeros((4, 3))).values():
        with pytest.raises(ValueError, match="out"):
            f()


def test_nothing_modified_on_error(backend):
    d = case(24, 3, 4)
    before = {k: v.copy() for k, v in d.items()}
    adv = d["adv"].copy()
    adv[2] = np.nan
    for f in _calls(
        d,
        adv=adv,
        returns=np.array([1.0, np.nan, 0.0]),
        ref=np.array([0.0, -np.inf, 0.0]),
        out=np.full((3, 4), 9.0),
    ).values():
        with pytest.raises(ValueError):
            f()
    out = np.full((3, 4), 9.0)
    w = d["w"].copy()
    w[0] = -1.0
    for f in _calls(d, w=w, out=out).values():
        with pytest.raises(ValueError, match="weights"):
            f()
    assert (out == 9.0).all()
    for k, v in before.items():
        np.testing.assert_array_equal(d[k], v)


def test_raw_kernels_check_before_writing(compiled, reference):
    d = case(25, 3, 4)
    d["adv"] = d["adv"].copy()
    d["adv"][0] = np.nan
    d["returns"] = d["returns"].copy()
    d["returns"][0] = np.nan
    d["ref"] = d["ref"].copy()
    d["ref"][0] = np.inf
    for module in (compiled, reference):
        for name in KERNELS:
            status, outs = raw(module, name, d)
            assert status != 0
            assert (outs[0] == 5.0).all() and (outs[1] == 5.0).all()


# ---- array shapes (direct callers) -------------------------------------------------------------


def shape_args(kernel):
    """A valid direct call of ``kernel`` (N = 5, V = 4), outputs filled with a sentinel; ``stats``
    as short as the kernel allows."""
    rng = np.random.default_rng(1)
    n, v = 5, 4
    per_token = {
        k: rng.standard_normal(n)
        for k in ("returns", "baselines", "advantages", "values", "old_values")
    }
    head = dict(logits=rng.standard_normal((n, v)), tokens=np.array([0, 3, 1, 2, 3], np.int64))
    outs = dict(token_loss=np.full(n, -7.0), log_probs=np.full(n, -7.0))
    tail = dict(grad=np.full((n, v), -7.0))
    w = np.full(n, 0.2)
    lp = -np.linspace(1.0, 2.0, n)
    if kernel == "reinforce_loss":
        return dict(
            **head,
            returns=per_token["returns"],
            baselines=per_token["baselines"],
            weights=w,
            **outs,
            **tail,
            stats=np.full(1, -7.0),
            num_threads=1,
        )
    if kernel == "kl_penalty_loss":
        return dict(
            **head,
            ref_log_probs=lp,
            weights=w,
            kl_estimator=3,
            **outs,
            **tail,
            stats=np.full(1, -7.0),
            num_threads=1,
        )
    if kernel == "ppo_loss":
        return dict(
            **head,
            old_log_probs=lp - 0.1,
            advantages=per_token["advantages"],
            weights=w,
            ref_log_probs=lp + 0.1,
            sequence_offsets=np.array([0, 2, 5], np.int64),
            clip_low=0.2,
            clip_high=0.3,
            dual_clip=3.0,
            kl_coef=0.1,
            kl_estimator=3,
            sequence_level=1,
            **outs,
            ratios=np.full(n, -7.0),
            **tail,
            stats=np.full(7, -7.0),
            num_threads=1,
        )
    return dict(
        **head,
        advantages=per_token["advantages"],
        values=per_token["values"],
        returns=per_token["returns"],
        old_values=per_token["old_values"],
        weights=w,
        value_clip=0.2,
        value_coef=0.5,
        entropy_coef=0.01,
        **outs,
        entropies=np.full(n, -7.0),
        **tail,
        value_grad=np.full(n, -7.0),
        stats=np.full(4, -7.0),
        num_threads=1,
    )


@pytest.mark.parametrize("kernel", KERNELS)
def test_inconsistent_array_shapes_are_rejected_first(compiled, reference, kernel):
    for module in (reference, compiled):
        # the offsets' length is free (checked as sequence_offsets)
        assert_rejects_bad_shapes(
            module, kernel, shape_args(kernel), skip={("sequence_offsets", 0)}
        )
        fn = getattr(module, kernel)
        args = shape_args(kernel)
        if kernel == "ppo_loss":  # ref_log_probs may be empty: no KL term
            assert fn(*{**args, "ref_log_probs": np.empty(0), "kl_coef": 0.0}.values()) == 0
        if kernel == "a2c_loss":  # old_values may be empty without value clipping
            empty = {**args, "old_values": np.empty(0)}
            assert fn(*{**empty, "value_clip": 0.0}.values()) == 0
            assert fn(*empty.values()) == BAD_SHAPES


def test_output_buffer_is_reused_and_gives_the_same_bits(backend):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((7, 9)).astype(np.float32)
    t = rng.integers(0, 9, 7)
    old, adv = np.full(7, -2.0, np.float32), rng.standard_normal(7).astype(np.float32)
    buf = fastlmrl.OutputBuffer()
    fresh = fastlmrl.ppo_loss(x, t, old, adv)
    first = fastlmrl.ppo_loss(x, t, old, adv, out=buf)
    assert first.grad_logits is buf.array
    assert first.grad_logits.tobytes() == fresh.grad_logits.tobytes()
    assert first.loss == fresh.loss
    again = fastlmrl.reinforce_loss(x, t, adv, out=buf)
    assert again.grad_logits is first.grad_logits  # same shape and dtype: the same array
    assert again.grad_logits.tobytes() == fastlmrl.reinforce_loss(x, t, adv).grad_logits.tobytes()
    wider = fastlmrl.log_prob_grad(np.zeros((7, 10)), t, out=buf)
    assert wider.shape == (7, 10) and wider.dtype == np.float64 and wider is buf.array
    # its own result passed back in as the logits: a new array, the logits left alone
    logits = buf.array
    before = logits.copy()
    res = fastlmrl.log_softmax(logits, out=buf)
    assert res is not logits and np.array_equal(logits, before)
    np.testing.assert_array_equal(res, fastlmrl.log_softmax(before))
    buf.release()
    assert buf.array is None
    with pytest.raises(TypeError, match="out must be a numpy.ndarray or a fastlmrl.OutputBuffer"):
        fastlmrl.ppo_loss(x, t, old, adv, out=[1])
