"""tabular_losses: reference equivalence (bit for bit), agreement with the per-token losses over
gathered logits, an independent NumPy formula, finite-difference gradients, serial = parallel,
bad input for every argument, nothing modified on error."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shape_checks import assert_rejects_bad_shapes

import fastlmrl
from fastlmrl import _backend
from fastlmrl._status import BAD_SHAPES

FLOATS = (np.float32, np.float64)


def case(seed, n_contexts, v, n, dtype=np.float64, mask=0.0, visited=None):
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((n_contexts, v)) * 2
    pool = rng.choice(n_contexts, size=min(visited or n_contexts, n_contexts), replace=False)
    contexts = pool[rng.integers(0, pool.size, n)]
    tokens = rng.integers(0, v, n)
    if mask:
        table[rng.random(table.shape) < mask] = -np.inf
        table[contexts, tokens] = rng.standard_normal(n)  # sampled tokens stay finite
    w = rng.random(n) / max(n, 1)
    if n > 2:
        w[1] = 0.0
    return dict(
        table=np.ascontiguousarray(table.astype(dtype)),
        contexts=contexts,
        tokens=tokens,
        old=rng.standard_normal(n) * 0.5 - 2,
        adv=rng.standard_normal(n),
        w=w,
        ref=rng.standard_normal(n) * 0.5 - 2,
        returns=rng.standard_normal(n),
        base=rng.standard_normal(n),
        values=rng.standard_normal(n),
        old_values=rng.standard_normal(n),
    )


def raw(module, name, d, threads=1, seq=False, offs=None, kl_est=3, dual=3.0, has_ref=True):
    """Call a raw kernel with poisoned outputs; return (status, outputs)."""
    table, c, t = d["table"], d["contexts"], d["tokens"]
    n, (s, v) = c.shape[0], table.shape
    index = np.full(s, 7, np.int64)
    rows = np.full(min(n, s), 7, np.int64)
    num_rows = np.zeros(1, np.int64)
    grad = np.full((min(n, s), v), 5.0, dtype=table.dtype)
    tl, lp, ratios = (np.full(n, 5.0) for _ in range(3))
    stats = np.zeros(7)
    if name == "ppo_loss_tabular":
        offs = np.array([0, n], np.int64) if offs is None else offs
        ref = d["ref"] if has_ref else np.empty(0)
        st_ = module.ppo_loss_tabular(
            table,
            c,
            t,
            d["old"],
            d["adv"],
            d["w"],
            ref,
            offs,
            0.2,
            0.28,
            dual,
            0.05 if has_ref else 0.0,
            kl_est,
            int(seq),
            index,
            rows,
            num_rows,
            tl,
            lp,
            ratios,
            grad,
            stats,
            threads,
        )
    elif name == "reinforce_loss_tabular":
        st_ = module.reinforce_loss_tabular(
            table,
            c,
            t,
            d["returns"],
            d["base"],
            d["w"],
            index,
            rows,
            num_rows,
            tl,
            lp,
            grad,
            stats,
            threads,
        )
    elif name == "a2c_loss_tabular":
        # value_clip 0.3 with old values; ratios holds the entropies, extra the value gradients
        extra = np.full(n, 5.0)
        st_ = module.a2c_loss_tabular(
            table,
            c,
            t,
            d["adv"],
            d["values"],
            d["returns"],
            d["old_values"],
            d["w"],
            0.3,
            0.5,
            0.02,
            index,
            rows,
            num_rows,
            tl,
            lp,
            ratios,
            grad,
            extra,
            stats,
            threads,
        )
        stats = np.concatenate([stats, extra])
    elif name == "kl_penalty_loss_tabular":
        st_ = module.kl_penalty_loss_tabular(
            table,
            c,
            t,
            d["ref"],
            d["w"],
            kl_est,
            index,
            rows,
            num_rows,
            tl,
            lp,
            grad,
            stats,
            threads,
        )
    else:
        st_ = module.token_log_probs_tabular(table, c, t, index, rows, num_rows, lp, threads)
    u = int(num_rows[0])
    return st_, [rows[:u], grad[:u], tl, lp, ratios, stats]


KERNELS = [
    "ppo_loss_tabular",
    "reinforce_loss_tabular",
    "kl_penalty_loss_tabular",
    "a2c_loss_tabular",
    "token_log_probs_tabular",
]


# ---- reference equivalence ----------------------------------------------------------------------


@settings(max_examples=25)
@given(
    n=st.integers(0, 40),
    s=st.integers(1, 12),
    v=st.sampled_from([1, 2, 5, 64, 130]),
    float_idx=st.integers(0, 1),
    int32=st.booleans(),
    mask=st.sampled_from([0.0, 0.5]),
    seq=st.booleans(),
    kl_est=st.integers(1, 3),
    has_ref=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_compiled_kernels_equal_reference(
    compiled, reference, n, s, v, float_idx, int32, mask, seq, kl_est, has_ref, seed
):
    d = case(seed, s, v, n, FLOATS[float_idx], mask)
    ids = np.int32 if int32 else np.int64
    d["contexts"], d["tokens"] = d["contexts"].astype(ids), d["tokens"].astype(ids)
    cuts = np.random.default_rng(seed).integers(0, n + 1, 3)
    offs = np.array(sorted({0, n, *cuts}), np.int64)
    for name in KERNELS:
        s_ref, o_ref = raw(reference, name, d, seq=seq, offs=offs, kl_est=kl_est, has_ref=has_ref)
        s_c, o_c = raw(compiled, name, d, seq=seq, offs=offs, kl_est=kl_est, has_ref=has_ref)
        assert s_ref == s_c == 0
        for a, b in zip(o_c, o_ref):
            np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("dtype", FLOATS)
def test_threads_do_not_change_bits(compiled, dtype):
    # 1100 visited rows x 1000 tokens > the parallel threshold (2**20 entries): rows run threaded
    d = case(3, 1300, 1000, 8000, dtype, mask=0.1, visited=1250)
    assert np.unique(d["contexts"]).size * 1000 >= 2**20
    for name in KERNELS:
        _, one = raw(compiled, name, d, threads=1)
        _, two = raw(compiled, name, d, threads=2)
        for a, b in zip(one, two):
            np.testing.assert_array_equal(a, b, err_msg=name)


def assert_gradient_matches_finite_differences(result_of, table, h=1e-6):
    """Central differences of ``result_of(table).loss`` in every entry of the visited rows."""
    r = result_of(table)
    for k, s in enumerate(r.rows):
        for j in range(table.shape[1]):
            up, down = table.copy(), table.copy()
            up[s, j] += h
            down[s, j] -= h
            fd = (result_of(up).loss - result_of(down).loss) / (2 * h)
            assert abs(fd - r.grad_rows[k, j]) < 1e-6 * max(1.0, abs(fd)), (s, j)


# ---- agreement with the per-token losses ---------------------------------------------------------


def dense_sum(table, contexts, grad_logits):
    g = np.zeros(table.shape)
    np.add.at(g, contexts, grad_logits.astype(np.float64))
    return g


@pytest.mark.parametrize("seq", [False, True])
def test_ppo_equals_per_token_loss_summed_by_context(backend, seq):
    # float64 everywhere, so the per-token loss sees the same inputs (no rounding to the dtype)
    d = case(11, 30, 17, 400, np.float64, mask=0.2, visited=20)
    offs = np.array([0, 50, 50, 210, 400])
    kw = dict(
        weights=d["w"],
        clip_low=0.2,
        clip_high=0.28,
        dual_clip=3.0,
        ratio_level="sequence" if seq else "token",
        sequence_offsets=offs if seq else None,
        ref_log_probs=d["ref"],
        kl_coef=0.07,
        kl_estimator="k2",
    )
    tab = fastlmrl.ppo_loss_tabular(
        d["table"], d["contexts"], d["tokens"], d["old"], d["adv"], **kw
    )
    dense = fastlmrl.ppo_loss(d["table"][d["contexts"]], d["tokens"], d["old"], d["adv"], **kw)
    np.testing.assert_array_equal(tab.rows, np.unique(d["contexts"]))
    g = dense_sum(d["table"], d["contexts"], dense.grad_logits)
    np.testing.assert_allclose(tab.grad_rows, g[tab.rows], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(tab.log_probs, dense.log_probs, rtol=1e-13)
    np.testing.assert_allclose(tab.ratios, dense.ratios, rtol=1e-13)
    np.testing.assert_allclose(tab.token_loss, dense.token_loss, rtol=1e-12, atol=1e-15)
    for field in (
        "loss",
        "pg_loss",
        "kl_loss",
        "clip_fraction",
        "dual_clip_fraction",
        "approx_kl_k1",
        "approx_kl_k3",
    ):
        np.testing.assert_allclose(
            getattr(tab, field), getattr(dense, field), rtol=1e-12, atol=1e-15, err_msg=field
        )


def test_reinforce_and_kl_equal_per_token_losses(backend):
    d = case(12, 25, 9, 300, np.float64, visited=15)
    for baseline in (None, "mean", d["base"]):
        tab = fastlmrl.reinforce_loss_tabular(
            d["table"], d["contexts"], d["tokens"], d["returns"], weights=d["w"], baseline=baseline
        )
        dense = fastlmrl.reinforce_loss(
            d["table"][d["contexts"]], d["tokens"], d["returns"], weights=d["w"], baseline=baseline
        )
        g = dense_sum(d["table"], d["contexts"], dense.grad_logits)
        np.testing.assert_allclose(tab.grad_rows, g[tab.rows], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(tab.loss, dense.loss, rtol=1e-12)
    for est in ("k1", "k2", "k3"):
        tab = fastlmrl.kl_penalty_loss_tabular(
            d["table"], d["contexts"], d["tokens"], d["ref"], weights=d["w"], estimator=est
        )
        dense = fastlmrl.kl_penalty_loss(
            d["table"][d["contexts"]], d["tokens"], d["ref"], weights=d["w"], estimator=est
        )
        g = dense_sum(d["table"], d["contexts"], dense.grad_logits)
        np.testing.assert_allclose(tab.grad_rows, g[tab.rows], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(tab.token_kl, dense.token_kl, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("clip", [None, 0.3])
def test_a2c_equals_per_token_loss_summed_by_context(backend, clip):
    d = case(14, 25, 11, 300, np.float64, mask=0.2, visited=15)
    kw = dict(
        weights=d["w"],
        value_coef=0.4,
        entropy_coef=0.03,
        value_clip=clip,
        old_values=d["old_values"] if clip else None,
    )
    tab = fastlmrl.a2c_loss_tabular(
        d["table"], d["contexts"], d["tokens"], d["adv"], d["values"], d["returns"], **kw
    )
    dense = fastlmrl.a2c_loss(
        d["table"][d["contexts"]], d["tokens"], d["adv"], d["values"], d["returns"], **kw
    )
    g = dense_sum(d["table"], d["contexts"], dense.grad_logits)
    np.testing.assert_allclose(tab.grad_rows, g[tab.rows], rtol=1e-12, atol=1e-15)
    for field in ("grad_values", "log_probs", "entropy", "token_loss"):
        np.testing.assert_allclose(
            getattr(tab, field), getattr(dense, field), rtol=1e-12, atol=1e-15, err_msg=field
        )
    for field in ("loss", "policy_loss", "value_loss", "mean_entropy"):
        np.testing.assert_allclose(
            getattr(tab, field), getattr(dense, field), rtol=1e-12, err_msg=field
        )


def test_a2c_finite_difference_gradient(backend):
    # the entropy bonus included: d/dtable of -A log pi - c_e H summed over tokens
    d = case(6, 5, 4, 25, np.float64, visited=3)

    assert_gradient_matches_finite_differences(
        lambda table: fastlmrl.a2c_loss_tabular(
            table,
            d["contexts"],
            d["tokens"],
            d["adv"],
            d["values"],
            d["returns"],
            weights=d["w"],
            entropy_coef=0.3,
        ),
        d["table"],
    )


def test_a2c_bad_arguments(backend):
    d = good()
    args = (d["table"], d["contexts"], d["tokens"], d["adv"], d["values"], d["returns"])
    for i, name in ((3, "advantages"), (4, "values"), (5, "returns")):
        bad = list(args)
        bad[i] = bad[i].copy()
        bad[i][2] = np.nan
        with pytest.raises(ValueError, match=rf"{name}\[2\] = nan is not finite"):
            fastlmrl.a2c_loss_tabular(*bad)
    old = d["values"].copy()
    old[0] = np.inf
    with pytest.raises(ValueError, match=r"old_values\[0\] = inf"):
        fastlmrl.a2c_loss_tabular(*args, value_clip=0.2, old_values=old)
    with pytest.raises(ValueError, match="value_clip needs old_values"):
        fastlmrl.a2c_loss_tabular(*args, value_clip=0.2)
    with pytest.raises(ValueError, match="old_values is only used with value_clip"):
        fastlmrl.a2c_loss_tabular(*args, old_values=old)
    with pytest.raises(ValueError, match=r"contexts\[0\] = 9"):
        fastlmrl.a2c_loss_tabular(d["table"], [9, 0, 0, 0, 0, 0], *args[2:])


def test_ppo_hand_case_by_numpy(backend):
    # Independent NumPy: softmax rows, rho = exp(logp - old), clipped surrogate, and the gradient
    # sum_i c_i (onehot(a_i) - p(s_i)) with c_i = w_i * (-A_i rho_i) when unclipped, else 0.
    table = np.array([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0], [9.0, 9.0, 9.0]])
    contexts = np.array([1, 0, 1, 1])
    tokens = np.array([0, 2, 1, 0])
    old = np.array([-0.5, -2.0, -2.5, -0.1])
    adv = np.array([1.0, -2.0, 0.5, 3.0])
    w = np.full(4, 0.25)
    r = fastlmrl.ppo_loss_tabular(table, contexts, tokens, old, adv, weights=w, clip_low=0.2)
    logp = table - np.log(np.exp(table).sum(axis=1, keepdims=True))
    lp = logp[contexts, tokens]
    rho = np.exp(lp - old)
    un, cl = -adv * rho, -adv * np.clip(rho, 0.8, 1.2)
    c = np.where(un >= cl, w * -adv * rho, 0.0)
    p = np.exp(logp)
    expected = np.zeros((2, 3))
    for i, k in enumerate(contexts):  # the visited rows are [0, 1]: row k is context k
        expected[k] -= c[i] * p[k]
        expected[k, tokens[i]] += c[i]
    np.testing.assert_array_equal(r.rows, [0, 1])
    np.testing.assert_allclose(r.grad_rows, expected, rtol=1e-12, atol=1e-16)
    np.testing.assert_allclose(r.loss, float(w @ np.maximum(un, cl)), rtol=1e-12)
    np.testing.assert_allclose(r.clip_fraction, float(w @ (un < cl)) / w.sum(), rtol=1e-12)


def test_finite_difference_gradient(backend):
    d = case(5, 6, 4, 30, np.float64, visited=4)
    kw = dict(weights=d["w"], clip_low=0.3, clip_high=0.3, ref_log_probs=d["ref"], kl_coef=0.2)
    d["old"] = d["old"] * 0.1 - 1.2  # ratios near 1: mostly unclipped tokens

    assert_gradient_matches_finite_differences(
        lambda table: fastlmrl.ppo_loss_tabular(
            table, d["contexts"], d["tokens"], d["old"], d["adv"], **kw
        ),
        d["table"],
    )


def test_token_log_probs_match_log_softmax(backend, float_dtype):
    d = case(8, 20, 33, 200, float_dtype, mask=0.3)
    lp = fastlmrl.token_log_probs_tabular(d["table"], d["contexts"], d["tokens"])
    assert lp.dtype == np.float64
    x = d["table"].astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    expected = (x - (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True))))[
        d["contexts"], d["tokens"]
    ]
    np.testing.assert_allclose(lp, expected, rtol=1e-7 if float_dtype == np.float32 else 1e-13)
    r = fastlmrl.ppo_loss_tabular(d["table"], d["contexts"], d["tokens"], d["old"], d["adv"])
    np.testing.assert_array_equal(r.log_probs, lp)


def test_empty_batch(backend, float_dtype):
    table = np.zeros((3, 4), dtype=float_dtype)
    r = fastlmrl.ppo_loss_tabular(table, [], [], [], [])
    assert r.rows.shape == (0,) and r.grad_rows.shape == (0, 4) and r.loss == 0.0
    assert r.grad_rows.dtype == float_dtype


def test_unvisited_rows_are_not_read(backend):
    table = np.array([[np.nan, np.inf, 0.0], [0.0, 1.0, 2.0]])
    r = fastlmrl.reinforce_loss_tabular(table, [1, 1], [0, 2], [1.0, -1.0])
    np.testing.assert_array_equal(r.rows, [1])
    assert np.isfinite(r.grad_rows).all()


# ---- bad input ----------------------------------------------------------------------------------


def good():
    d = case(1, 5, 4, 6, np.float64)
    return d


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(contexts=[0, 1, 2, 3, 4, 5]), r"contexts\[5\] = 5 is out of range"),
        (dict(contexts=[0, -1, 2, 3, 4, 0]), r"contexts\[1\] = -1"),
        (dict(tokens=[0, 1, 2, 3, 4, 0]), r"tokens\[4\] = 4 is out of range"),
        (dict(weights=[0.1, np.nan, 0, 0, 0, 0]), r"weights\[1\] = nan is not finite"),
        (dict(weights=[0.1, -1.0, 0, 0, 0, 0]), r"weights\[1\] = -1.0 is negative"),
        (dict(advantages=[0.1, 0, np.inf, 0, 0, 0]), r"advantages\[2\] = inf is not finite"),
        (dict(old_log_probs=[0.1, 0, 0, np.nan, 0, 0]), r"old_log_probs\[3\] = nan"),
        (dict(ref_log_probs=[0.1, 0, 0, 0, np.nan, 0], kl_coef=0.1), r"ref_log_probs\[4\] = nan"),
        (dict(contexts=[0, 1]), r"tokens must have length 2"),
        (dict(advantages=[0.0]), r"advantages must have length 6"),
        (dict(contexts=np.zeros(6)), r"contexts must hold integer ids"),
        (dict(kl_coef=0.1), r"kl_coef > 0 needs ref_log_probs"),
        (dict(kl_estimator="k4", ref_log_probs=np.zeros(6)), r"kl_estimator must be one of"),
        (dict(ratio_level="seq"), r"ratio_level must be"),
        (dict(ratio_level="sequence"), r"needs sequence_offsets"),
        (
            dict(ratio_level="sequence", sequence_offsets=[0, 7]),
            r"sequence_offsets must start at 0",
        ),
        (dict(clip_low=1.0), r"clip_low"),
    ],
)
def test_ppo_bad_arguments(backend, change, message):
    d = good()
    args = dict(
        table=d["table"],
        contexts=d["contexts"],
        tokens=d["tokens"],
        old_log_probs=d["old"],
        advantages=d["adv"],
        weights=d["w"],
    )
    args.update(change)
    before = d["table"].copy()
    with pytest.raises(ValueError if "integer" not in message else TypeError, match=message):
        fastlmrl.ppo_loss_tabular(**args)
    np.testing.assert_array_equal(d["table"], before)


@pytest.mark.parametrize(
    "table, message, error",
    [
        (np.zeros((5, 4), dtype=np.int64), "float32 or float64", TypeError),
        (np.zeros(4), "2-dimensional", ValueError),
        (np.zeros((4, 5)).T, "C-contiguous", ValueError),
        ([[0.0] * 4] * 5, "numpy.ndarray", TypeError),
    ],
)
def test_bad_table(backend, table, message, error):
    d = good()
    with pytest.raises(error, match=message):
        fastlmrl.reinforce_loss_tabular(table, d["contexts"], d["tokens"], d["returns"])


def test_nan_in_visited_row_and_masked_token(backend):
    table = np.zeros((3, 4))
    table[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"table row 2 \(a visited context\)"):
        fastlmrl.token_log_probs_tabular(table, [0, 2], [0, 0])
    table = np.zeros((3, 4))
    table[1, 3] = -np.inf
    with pytest.raises(ValueError, match=r"tokens\[1\] = 3 selects a masked \(-inf\) logit"):
        fastlmrl.kl_penalty_loss_tabular(table, [0, 1], [3, 3], [0.0, 0.0])


def test_reinforce_bad_returns_and_baseline(backend):
    d = good()
    bad = d["returns"].copy()
    bad[2] = np.nan
    with pytest.raises(ValueError, match=r"returns\[2\] = nan"):
        fastlmrl.reinforce_loss_tabular(d["table"], d["contexts"], d["tokens"], bad)
    with pytest.raises(ValueError, match=r"baseline\[2\] = nan"):
        fastlmrl.reinforce_loss_tabular(
            d["table"], d["contexts"], d["tokens"], d["returns"], baseline=bad
        )
    with pytest.raises(ValueError, match="baseline must be None, 'mean' or an array"):
        fastlmrl.reinforce_loss_tabular(
            d["table"], d["contexts"], d["tokens"], d["returns"], baseline="median"
        )
    with pytest.raises(ValueError, match="estimator must be one of"):
        fastlmrl.kl_penalty_loss_tabular(
            d["table"], d["contexts"], d["tokens"], d["ref"], estimator="k0"
        )


def test_read_only_table_is_accepted_and_untouched(backend):
    d = good()
    table = d["table"].copy()
    table.flags.writeable = False
    r = fastlmrl.ppo_loss_tabular(table, d["contexts"], d["tokens"], d["old"], d["adv"])
    assert np.isfinite(r.grad_rows).all()
    np.testing.assert_array_equal(table, d["table"])


def test_every_backend_exports_the_kernels():
    for name in KERNELS:
        for b in fastlmrl.BACKENDS:
            assert callable(getattr(_backend.backend_module(b), name))


# ---- array shapes (direct callers) -------------------------------------------------------------


def shape_args(kernel):
    """A valid direct call of ``kernel`` (N = 6 tokens, S = 4 contexts, V = 3): work arrays and
    outputs filled with a sentinel, ``rows`` / ``grad`` with min(N, S) rows, ``num_rows`` (1,),
    ``stats`` as short as the kernel allows."""
    d = case(5, 4, 3, 6)
    n, (s, v) = 6, d["table"].shape
    head = dict(table=d["table"], contexts=d["contexts"], tokens=d["tokens"])
    work = dict(
        index=np.full(s, -7, np.int64),
        rows=np.full(min(n, s), -7, np.int64),
        num_rows=np.full(1, -7, np.int64),
    )
    outs = dict(token_loss=np.full(n, -7.0), log_probs=np.full(n, -7.0))
    grad = np.full((min(n, s), v), -7.0)
    if kernel == "token_log_probs_tabular":
        return dict(**head, **work, log_probs=outs["log_probs"], num_threads=1)
    if kernel == "reinforce_loss_tabular":
        return dict(
            **head,
            returns=d["returns"],
            baselines=d["base"],
            weights=d["w"],
            **work,
            **outs,
            grad=grad,
            stats=np.full(1, -7.0),
            num_threads=1,
        )
    if kernel == "kl_penalty_loss_tabular":
        return dict(
            **head,
            ref_log_probs=d["ref"],
            weights=d["w"],
            kl_estimator=3,
            **work,
            **outs,
            grad=grad,
            stats=np.full(1, -7.0),
            num_threads=1,
        )
    if kernel == "ppo_loss_tabular":
        return dict(
            **head,
            old_log_probs=d["old"],
            advantages=d["adv"],
            weights=d["w"],
            ref_log_probs=d["ref"],
            sequence_offsets=np.array([0, 2, 6], np.int64),
            clip_low=0.2,
            clip_high=0.3,
            dual_clip=3.0,
            kl_coef=0.1,
            kl_estimator=3,
            sequence_level=1,
            **work,
            **outs,
            ratios=np.full(n, -7.0),
            grad=grad,
            stats=np.full(7, -7.0),
            num_threads=1,
        )
    return dict(
        **head,
        advantages=d["adv"],
        values=d["values"],
        returns=d["returns"],
        old_values=d["old_values"],
        weights=d["w"],
        value_clip=0.2,
        value_coef=0.5,
        entropy_coef=0.01,
        **work,
        **outs,
        entropies=np.full(n, -7.0),
        grad=grad,
        value_grad=np.full(n, -7.0),
        stats=np.full(4, -7.0),
        num_threads=1,
    )


@pytest.mark.parametrize("kernel", KERNELS)
def test_inconsistent_array_shapes_are_rejected_first(compiled, reference, kernel):
    skip = {("sequence_offsets", 0)}  # its length is free (checked as sequence_offsets)
    if kernel == "token_log_probs_tabular":
        skip.add(("table", 1))  # no other array of V entries
    for module in (reference, compiled):
        assert_rejects_bad_shapes(module, kernel, shape_args(kernel), skip)
        fn = getattr(module, kernel)
        args = shape_args(kernel)
        if kernel == "ppo_loss_tabular":  # ref_log_probs may be empty: no KL term
            assert fn(*{**args, "ref_log_probs": np.empty(0), "kl_coef": 0.0}.values()) == 0
        if kernel == "a2c_loss_tabular":  # old_values may be empty without value clipping
            empty = {**args, "old_values": np.empty(0)}
            assert fn(*{**empty, "value_clip": 0.0}.values()) == 0
            assert fn(*empty.values()) == BAD_SHAPES
