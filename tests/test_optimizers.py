"""Sparse SGD and lazy Adam over gradient rows: reference equivalence (hypothesis, and at vector
widths), dense NumPy implementations with np.add.at (Adam as printed in Kingma & Ba 2015,
Algorithm 1), repeated ids, sorted rows without an order (empty ``order``), the Adam class and its
checkpoints, bad input (nothing modified on error)."""

import inspect
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastlmrl
from fastlmrl import _backend
from fastlmrl._status import Status

elements = st.one_of(st.integers(-3, 3).map(float), st.floats(-1e3, 1e3, width=32))


@st.composite
def batches(draw):
    n_states = draw(st.integers(1, 5))
    n_cols = draw(st.integers(1, 5))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    index = draw(st.sampled_from([np.int32, np.int64]))
    n = draw(st.integers(0, 12))
    table = draw(hnp.arrays(dtype, (n_states, n_cols), elements=elements))
    rows = draw(hnp.arrays(index, n, elements=st.integers(0, n_states - 1)))  # repeats are common
    if draw(st.booleans()):
        rows = np.sort(rows)  # the trainers' case (ppo_loss_tabular's rows are sorted)
    grads = draw(hnp.arrays(dtype, (n, n_cols), elements=elements))
    return table, rows, grads


NO_ORDER = np.empty(0, np.int64)


def _is_sorted(rows):
    return bool(np.all(rows[1:] >= rows[:-1]))


def _raw_inputs(table, rows, grads, empty_if_sorted=False):
    """(order, acc) as the wrapper passes them: the empty order (identity) for sorted rows."""
    if empty_if_sorted and _is_sorted(rows):
        order = NO_ORDER
    else:
        order = np.argsort(rows, kind="stable").astype(np.int64)
    return order, np.empty(table.shape[1])


# ----------------------------------------------------------------------------- equivalence
@given(batches(), st.floats(0.0, 2.0), st.booleans(), st.booleans())
def test_sgd_matches_reference(compiled, reference, batch, lr, maximize, empty_order):
    table, rows, grads = batch
    order, acc = _raw_inputs(table, rows, grads, empty_order)
    ref, got = table.copy(), table.copy()
    assert reference.sgd_step(ref, rows, grads, order, lr, maximize, acc) == 0
    assert compiled.sgd_step(got, rows, grads, order, lr, maximize, acc) == 0
    np.testing.assert_array_equal(got, ref)


@given(batches(), st.data())
def test_adam_matches_reference(compiled, reference, batch, data):
    table, rows, grads = batch
    order, acc = _raw_inputs(table, rows, grads, data.draw(st.booleans()))
    moment = hnp.arrays(table.dtype, table.shape, elements=st.floats(-10, 10, width=32))
    m = data.draw(moment)
    v = np.abs(data.draw(moment))
    step = data.draw(st.integers(1, 10_000))
    lr = data.draw(st.floats(0.0, 1.0))
    beta1 = data.draw(st.floats(0.0, 0.999))
    beta2 = data.draw(st.floats(0.0, 0.9999))
    eps = data.draw(st.floats(1e-12, 1.0))
    maximize = data.draw(st.booleans())
    results = []
    for module in (reference, compiled):
        t, m1, v1 = table.copy(), m.copy(), v.copy()
        status = module.adam_step(
            t, rows, grads, order, m1, v1, np.int64(step), lr, beta1, beta2, eps, maximize, acc
        )
        assert status == 0
        results.append((t, m1, v1))
    for want, have in zip(*results):
        np.testing.assert_array_equal(have, want)


def test_backends_export_the_same_kernels():
    from fastlmrl._cython import optimizers as cy
    from fastlmrl._numba import optimizers as nb
    from fastlmrl._python import optimizers as py

    assert py.__all__ == nb.__all__ == cy.__all__ == ["adam_step", "sgd_step"]
    for name in py.__all__:
        expected = list(inspect.signature(getattr(py, name)).parameters)
        assert list(inspect.signature(getattr(nb, name).py_func).parameters) == expected
        assert list(inspect.signature(getattr(cy, name)).parameters) == expected


@pytest.mark.parametrize("n_cols", [1, 3, 8, 13, 52, 67])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows_kind", ["sorted distinct", "sorted repeats", "unsorted repeats"])
def test_kernels_match_reference_at_vector_widths(compiled, reference, n_cols, dtype, rows_kind):
    """Rows long enough for the compiled row loops to vectorise (and to have remainders): still
    bit-identical to the reference, through an explicit order and through the empty one."""
    rng = np.random.default_rng(n_cols)
    n_states = 40
    if rows_kind == "sorted distinct":
        rows = np.sort(rng.choice(n_states, 25, replace=False))
    else:
        rows = rng.integers(0, n_states, 30)
        if rows_kind == "sorted repeats":
            rows = np.sort(rows)
    grads = (rng.standard_normal((rows.shape[0], n_cols)) * 3).astype(dtype)
    table = rng.standard_normal((n_states, n_cols)).astype(dtype)
    m = (rng.standard_normal(table.shape) * 0.1).astype(dtype)
    v = rng.random(table.shape).astype(dtype)
    orders = [np.argsort(rows, kind="stable").astype(np.int64)]
    if rows_kind != "unsorted repeats":
        orders.append(NO_ORDER)
    acc = np.empty(n_cols)
    for order in orders:
        for step, maximize in ((1, False), (7, True), (1000, False)):
            results = []
            for module in (reference, compiled):
                t, m1, v1 = table.copy(), m.copy(), v.copy()
                assert (
                    module.adam_step(
                        t,
                        rows,
                        grads,
                        order,
                        m1,
                        v1,
                        np.int64(step),
                        0.01,
                        0.9,
                        0.999,
                        1e-8,
                        maximize,
                        acc,
                    )
                    == 0
                )
                t2 = table.copy()
                assert module.sgd_step(t2, rows, grads, order, 0.1, maximize, acc) == 0
                results.append((t, m1, v1, t2))
            for want, have in zip(*results):
                np.testing.assert_array_equal(have, want)


# ----------------------------------------------------------------------------- dense NumPy
def _dense_grad(shape, rows, grads):
    g = np.zeros(shape)
    np.add.at(g, np.asarray(rows), np.asarray(grads, np.float64))
    return g


def _present(shape, rows):
    mask = np.zeros(shape[0], bool)
    mask[np.asarray(rows, np.int64)] = True
    return mask


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("maximize", [False, True])
def test_sgd_equals_dense_numpy(backend, dtype, maximize):
    rng = np.random.default_rng(5)
    table = rng.standard_normal((7, 6)).astype(dtype)
    rows = rng.integers(0, 7, 20)  # 20 rows over 7 ids: many repeats, some ids absent
    grads = rng.standard_normal((20, 6)).astype(dtype)
    g = _dense_grad(table.shape, rows, grads)
    sign = -1.0 if maximize else 1.0
    expected = (table.astype(np.float64) - 0.3 * (sign * g)).astype(dtype)
    got = table.copy()
    fastlmrl.sgd_step(got, rows, grads, 0.3, maximize=maximize)
    np.testing.assert_array_equal(got, expected)
    absent = ~_present(table.shape, rows)
    np.testing.assert_array_equal(got[absent], table[absent])


def _dense_lazy_adam(table, m, v, rows, grads, t, lr, b1, b2, eps, maximize=False):
    """Adam (Kingma & Ba, Algorithm 1) on the present rows only, vectorised in float64."""
    g = _dense_grad(table.shape, rows, grads) * (-1.0 if maximize else 1.0)
    p = _present(table.shape, rows)
    m, v, table = m.astype(np.float64), v.astype(np.float64), table.astype(np.float64)
    m[p] = b1 * m[p] + (1 - b1) * g[p]
    v[p] = b2 * v[p] + (1 - b2) * g[p] ** 2
    m_hat = m[p] / (1 - b1**t)
    v_hat = v[p] / (1 - b2**t)
    table[p] -= lr * m_hat / (np.sqrt(v_hat) + eps)
    return table, m, v


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-6), (np.float64, 1e-13)])
def test_adam_class_equals_dense_numpy_over_steps(backend, dtype, rtol):
    rng = np.random.default_rng(9)
    shape = (9, 5)
    table = rng.standard_normal(shape).astype(dtype)
    opt = fastlmrl.Adam(table, lr=0.05, betas=(0.8, 0.95), eps=1e-6)
    ref_t, ref_m, ref_v = table.astype(np.float64), np.zeros(shape), np.zeros(shape)
    for t in range(1, 6):
        rows = rng.integers(0, 4, 6)  # ids 4..8 are never present: must stay untouched
        grads = rng.standard_normal((6, 5)).astype(dtype)
        opt.step(rows, grads)
        ref_t, ref_m, ref_v = _dense_lazy_adam(
            ref_t, ref_m, ref_v, rows, grads, t, 0.05, 0.8, 0.95, 1e-6
        )
        assert opt.t == t
        np.testing.assert_allclose(table, ref_t, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(opt.m, ref_m, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(opt.v, ref_v, rtol=rtol, atol=rtol)
    assert (opt.m[4:] == 0).all() and (opt.v[4:] == 0).all()


def test_adam_step_function_with_maximize_equals_dense(backend):
    rng = np.random.default_rng(2)
    table, m, v = rng.standard_normal((4, 3)), rng.standard_normal((4, 3)), rng.random((4, 3))
    rows, grads = [2, 0, 2], rng.standard_normal((3, 3))
    expected = _dense_lazy_adam(table, m, v, rows, grads, 7, 0.1, 0.9, 0.999, 1e-8, True)
    fastlmrl.adam_step(table, rows, grads, m, v, 7, 0.1, maximize=True)
    for got, want in zip((table, m, v), expected):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)


def _algorithm1(theta, m, v, g, t, lr, b1, b2, eps):
    """Kingma & Ba (2015), Algorithm 1, as printed (float64 arrays of the rows present)."""
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g**2
    m_hat = m / (1 - b1**t)
    v_hat = v / (1 - b2**t)
    return theta - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_cols", [52, 1])
def test_adam_trainer_case_each_step_equals_algorithm1(backend, dtype, n_cols):
    """As the PPO trainer calls it: sorted distinct rows (no sort, empty order), float64 gradient
    rows for the table's dtype, policy (S, 52) and value (S, 1) tables.  Each step is compared
    with Algorithm 1 applied to the state stored by the previous step: m and v have the same
    operation order (equal), theta differs only through the folded bias corrections (<= 1 ulp of
    float32; rtol 1e-13 in float64)."""
    rng = np.random.default_rng(11)
    n_states, lr, b1, b2, eps = 300, 0.01, 0.9, 0.999, 1e-8
    table = rng.standard_normal((n_states, n_cols)).astype(dtype)
    opt = fastlmrl.Adam(table, lr=lr, betas=(b1, b2), eps=eps)
    for t in range(1, 6):
        rows = np.sort(rng.choice(n_states, 60, replace=False))
        grads = rng.standard_normal((60, n_cols))  # float64, converted to the table's dtype
        g = grads.astype(dtype).astype(np.float64)
        before = [a[rows].astype(np.float64) for a in (table, opt.m, opt.v)]
        others = np.setdiff1d(np.arange(n_states), rows)
        untouched = [a[others].copy() for a in (table, opt.m, opt.v)]
        want_theta, want_m, want_v = _algorithm1(*before, g, t, lr, b1, b2, eps)
        opt.step(rows, grads)
        np.testing.assert_array_equal(opt.m[rows], want_m.astype(dtype))
        np.testing.assert_array_equal(opt.v[rows], want_v.astype(dtype))
        if dtype == np.float32:
            np.testing.assert_array_max_ulp(table[rows], want_theta.astype(dtype), maxulp=1)
        else:
            np.testing.assert_allclose(table[rows], want_theta, rtol=1e-13, atol=1e-15)
        for a, keep in zip((table, opt.m, opt.v), untouched):
            np.testing.assert_array_equal(a[others], keep)


@pytest.mark.parametrize("t", [1, 2, 50, 10**6])
@pytest.mark.parametrize("b1, b2", [(0.9, 0.999), (0.999999, 0.99999999), (0.0, 0.0), (0.5, 0.0)])
def test_adam_folded_bias_corrections_equal_algorithm1_float64(backend, t, b1, b2):
    """The per-step scalars lr / (1 - b1^t) and 1 / sqrt(1 - b2^t) give Algorithm 1's update to
    rounding, from tiny bias corrections (t = 1, beta near 1) to none (t = 10**6; beta = 0)."""
    rng = np.random.default_rng(t)
    table, m, v = rng.standard_normal((6, 9)), rng.standard_normal((6, 9)), rng.random((6, 9))
    rows, grads = np.arange(6), rng.standard_normal((6, 9))
    for eps in (1e-8, 1e-3, 1e-300):
        want_theta, want_m, want_v = _algorithm1(table, m, v, grads, t, 0.1, b1, b2, eps)
        got, m1, v1 = table.copy(), m.copy(), v.copy()
        fastlmrl.adam_step(got, rows, grads, m1, v1, t, 0.1, b1, b2, eps)
        np.testing.assert_array_equal(m1, want_m)
        np.testing.assert_array_equal(v1, want_v)
        np.testing.assert_allclose(table - got, table - want_theta, rtol=1e-13, atol=1e-300)


def test_unsorted_rows_give_the_sorted_result(backend):
    """Distinct rows in any order (sorted through order by the wrapper) or sorted (empty order):
    the same bits, for Adam and SGD, float32 and float64."""
    rng = np.random.default_rng(6)
    for dtype in (np.float32, np.float64):
        rows = rng.choice(50, 20, replace=False)
        grads = rng.standard_normal((20, 13)).astype(dtype)
        by_id = np.argsort(rows)
        base = rng.standard_normal((50, 13)).astype(dtype)
        results = []
        for r, g in ((rows, grads), (rows[by_id], grads[by_id])):
            t, m, v = base.copy(), np.zeros_like(base), np.zeros_like(base)
            for step in (1, 2):
                fastlmrl.adam_step(t, r, g, m, v, step, 0.01)
            t2 = base.copy()
            fastlmrl.sgd_step(t2, r, g, 0.1)
            results.append((t, m, v, t2))
        for a, b in zip(*results):
            np.testing.assert_array_equal(a, b)


def test_numpy_scalar_arguments_equal_python_ones(backend):
    """The wrapper's fast path (exact float/int/bool) and the general one give the same step."""
    rng = np.random.default_rng(8)
    table, grads, rows = rng.standard_normal((5, 4)), rng.standard_normal((3, 4)), [4, 1, 4]
    results = []
    for args in (
        (3, 0.05, 0.8, 0.99, 1e-6, True),
        (
            np.int64(3),
            np.float64(0.05),
            np.float64(0.8),
            np.float64(0.99),
            np.float64(1e-6),
            np.bool_(True),
        ),
    ):
        step, lr, b1, b2, eps, maximize = args
        t, m, v = table.copy(), np.zeros_like(table), np.zeros_like(table)
        fastlmrl.adam_step(t, rows, grads, m, v, step, lr, b1, b2, eps, maximize=maximize)
        t2 = table.copy()
        fastlmrl.sgd_step(t2, np.array(rows, np.int32), grads, lr, maximize=maximize)
        results.append((t, m, v, t2))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    t = table.copy()
    fastlmrl.sgd_step(t, rows, grads, 1)  # an int learning rate is a real number too
    expected = table.copy()
    np.add.at(expected, rows, -grads)
    np.testing.assert_array_equal(t, expected)


# ----------------------------------------------------------------------------- hand cases
def test_sgd_repeated_ids_accumulate_hand(backend):
    table = np.zeros((2, 2))
    fastlmrl.sgd_step(table, [1, 1], [[1.0, 2.0], [3.0, 4.0]], 0.5)
    np.testing.assert_array_equal(table, [[0.0, 0.0], [-2.0, -3.0]])
    fastlmrl.sgd_step(table, [0], [[1.0, -1.0]], 1.0, maximize=True)
    np.testing.assert_array_equal(table, [[1.0, -1.0], [-2.0, -3.0]])


def test_sgd_float32_sums_in_float64_and_rounds_once(backend):
    table = np.ones((1, 1), np.float32)
    # 2^-24 twice: in float32 each addition to 1 would be lost; summed first in float64 it is not
    g = np.array([[2.0**-24], [2.0**-24]], np.float32)
    fastlmrl.sgd_step(table, [0, 0], g, 1.0, maximize=True)  # ascend by 2^-23
    assert table[0, 0] == np.float32(1.0 + 2.0**-23)


def test_adam_first_step_hand(backend):
    # t = 1: m = (1-b1) g, v = (1-b2) g^2, m_hat = g, v_hat = g^2 -> step = lr * g / (|g| + eps)
    table, m, v = np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((3, 2))
    fastlmrl.adam_step(table, [1, 1], [[1.0, -2.0], [3.0, -4.0]], m, v, 1, 0.1, eps=1e-8)
    g = np.array([4.0, -6.0])
    np.testing.assert_allclose(table[1], -0.1 * g / (np.abs(g) + 1e-8), rtol=1e-15)
    np.testing.assert_allclose(m[1], 0.1 * g, rtol=1e-15)
    np.testing.assert_allclose(v[1], 0.001 * g * g, rtol=1e-12)
    assert (table[[0, 2]] == 0).all() and (m[[0, 2]] == 0).all() and (v[[0, 2]] == 0).all()


def test_absent_rows_keep_their_moments(backend):
    table, m, v = np.zeros((2, 1)), np.full((2, 1), 0.5), np.full((2, 1), 0.25)
    fastlmrl.adam_step(table, [0], [[1.0]], m, v, 3, 0.1)
    assert m[1, 0] == 0.5 and v[1, 0] == 0.25 and table[1, 0] == 0.0
    assert m[0, 0] == 0.9 * 0.5 + 0.1 * 1.0


def test_empty_batch(backend):
    table, m, v = (
        np.ones((2, 3), np.float32),
        np.ones((2, 3), np.float32),
        np.ones((2, 3), np.float32),
    )
    fastlmrl.sgd_step(table, [], [], 0.1)
    fastlmrl.sgd_step(table, np.empty(0, np.int32), np.empty((0, 3), np.float32), 0.1)
    fastlmrl.adam_step(table, [], [], m, v, 1, 0.1)
    assert (table == 1).all() and (m == 1).all() and (v == 1).all()


def test_int32_and_other_integer_ids(backend):
    rng = np.random.default_rng(0)
    base, grads = rng.standard_normal((5, 4)), rng.standard_normal((6, 4))
    rows = np.array([4, 0, 4, 1, 0, 4])
    results = []
    for r in (rows, rows.astype(np.int32), rows.astype(np.uint8), rows.tolist()):
        t = base.copy()
        fastlmrl.sgd_step(t, r, grads, 0.1)
        results.append(t)
    for t in results[1:]:
        np.testing.assert_array_equal(t, results[0])


def test_grads_converted_to_table_dtype(backend):
    t32 = np.zeros((2, 2), np.float32)
    fastlmrl.sgd_step(t32, [0], np.array([[0.1, 0.2]]), 1.0)
    np.testing.assert_array_equal(t32[0], -np.array([0.1, 0.2], np.float32))


# ----------------------------------------------------------------------------- classes
def test_adam_checkpoint_resumes_bit_identically(backend):
    rng = np.random.default_rng(1)
    init = rng.standard_normal((6, 3)).astype(np.float32)
    batches = [
        (rng.integers(0, 6, 4), rng.standard_normal((4, 3)).astype(np.float32)) for _ in range(5)
    ]
    straight = fastlmrl.Adam(init.copy(), lr=0.01, betas=(0.5, 0.9), eps=1e-5, maximize=True)
    for rows, grads in batches:
        straight.step(rows, grads)

    first = fastlmrl.Adam(init.copy(), lr=0.01, betas=(0.5, 0.9), eps=1e-5, maximize=True)
    for rows, grads in batches[:3]:
        first.step(rows, grads)
    state = first.state_dict()
    saved_table = first.table.copy()
    first.step(*batches[3])  # state is a copy: later steps do not leak into it
    resumed = fastlmrl.Adam(saved_table, lr=1.0)  # hyper-parameters come from the state
    resumed.load_state_dict(state)
    assert resumed.t == 3 and resumed.betas == (0.5, 0.9) and resumed.maximize
    for rows, grads in batches[3:]:
        resumed.step(rows, grads)
    np.testing.assert_array_equal(resumed.table, straight.table)
    np.testing.assert_array_equal(resumed.m, straight.m)
    np.testing.assert_array_equal(resumed.v, straight.v)
    assert resumed.t == straight.t == 5
    live = straight.state_dict(copy=False)
    assert live["m"] is straight.m and live["v"] is straight.v


def test_adam_failed_step_changes_nothing(backend):
    table = np.zeros((2, 2))
    opt = fastlmrl.Adam(table, lr=0.1)
    opt.step([0], [[1.0, 1.0]])
    snapshot = (table.copy(), opt.m.copy(), opt.v.copy())
    with pytest.raises(ValueError, match=r"grads\[1, 0\] = nan"):
        opt.step([1, 0], [[1.0, 1.0], [math.nan, 0.0]])
    assert opt.t == 1
    for got, want in zip((table, opt.m, opt.v), snapshot):
        np.testing.assert_array_equal(got, want)


def test_adam_load_state_dict_validates_all_first(backend):
    opt = fastlmrl.Adam(np.zeros((2, 2)), lr=0.1)
    good = opt.state_dict()
    bad_states = [
        ({k: v for k, v in good.items() if k != "m"}, ValueError, "not an Adam state"),
        (dict(good, m=np.zeros((3, 2))), ValueError, r"state\['m'\] must have the table's shape"),
        (dict(good, v=np.array([["a", "b"], ["c", "d"]])), TypeError, "real numbers"),
        (dict(good, t=-1), ValueError, r"state\['t'\] must be an int"),
        (dict(good, t=1.5), ValueError, r"state\['t'\] must be an int"),
        (dict(good, lr=-1.0, m=np.ones((2, 2))), ValueError, "lr must be in"),
        (dict(good, betas=(0.9, 1.0), m=np.ones((2, 2))), ValueError, "beta2 must be in"),
        (dict(good, betas=0.9), TypeError, "betas must be a pair"),
        (dict(good, eps=0.0), ValueError, "eps must be in"),
        (dict(good, maximize="yes"), TypeError, "maximize must be a bool"),
        ("state", ValueError, "not an Adam state"),
    ]
    for state, exc, match in bad_states:
        with pytest.raises(exc, match=match):
            opt.load_state_dict(state)
        assert opt.t == 0 and opt.lr == 0.1 and (opt.m == 0).all() and (opt.v == 0).all()


def test_sgd_class(backend):
    table = np.zeros((3, 2))
    opt = fastlmrl.SGD(table, lr=0.5)
    opt.step([2, 2], [[1.0, 0.0], [1.0, 2.0]])
    np.testing.assert_array_equal(table, [[0, 0], [0, 0], [-1.0, -1.0]])
    state = opt.state_dict()
    other = fastlmrl.SGD(np.zeros((3, 2)), lr=0.1, maximize=True)
    other.load_state_dict(state)
    assert other.lr == 0.5 and other.maximize is False
    with pytest.raises(ValueError, match="lr must be in"):
        other.load_state_dict({"lr": -1.0, "maximize": False})
    with pytest.raises(ValueError, match="not an SGD state"):
        other.load_state_dict({"lr": 0.1})
    assert other.lr == 0.5
    with pytest.raises(TypeError, match="maximize must be a bool"):
        fastlmrl.SGD(table, lr=0.1, maximize=1)


def test_adam_constructor_validates(backend):
    with pytest.raises(ValueError, match="beta1 must be in"):
        fastlmrl.Adam(np.zeros((2, 2)), betas=(1.0, 0.9))
    with pytest.raises(TypeError, match="betas must be a pair"):
        fastlmrl.Adam(np.zeros((2, 2)), betas=(0.9,))
    with pytest.raises(ValueError, match="eps must be in"):
        fastlmrl.Adam(np.zeros((2, 2)), eps=-1.0)
    with pytest.raises(ValueError, match="C-contiguous"):
        fastlmrl.Adam(np.zeros((2, 3)).T)


# ----------------------------------------------------------------------------- bad input
def _table():
    return np.arange(6.0).reshape(3, 2)


GOOD = dict(rows=[0, 2], grads=[[1.0, 2.0], [3.0, 4.0]], lr=0.1)


@pytest.mark.parametrize(
    "change, exc, match",
    [
        (dict(rows=[0, 3]), ValueError, r"rows\[1\] = 3 is out of range \[0, 3\)"),
        (dict(rows=[-1, 0]), ValueError, r"rows\[0\] = -1 is out of range"),
        (dict(rows=[0.0, 1.0]), TypeError, "rows must hold integer ids"),
        (dict(rows=[[0, 1]]), ValueError, "rows must be 1-dimensional"),
        (dict(rows=[0]), ValueError, r"grads must have shape \(len\(rows\), V\) = \(1, 2\)"),
        (dict(grads=[[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]), ValueError, "grads must have shape"),
        (dict(grads=[1.0, 2.0]), ValueError, "grads must be 2-dimensional"),
        (dict(grads=np.zeros((2, 2, 1))), ValueError, "grads must be 2-dimensional"),
        (dict(grads=[["a", "b"], ["c", "d"]]), TypeError, "grads must hold real numbers"),
        (dict(grads=[[1.0, 2.0], [math.nan, 4.0]]), ValueError, r"grads\[1, 0\] = nan"),
        (dict(grads=[[1.0, math.inf], [3.0, 4.0]]), ValueError, r"grads\[0, 1\] = inf"),
        (dict(lr=-0.1), ValueError, r"lr must be in \[0.0, inf\]"),
        (dict(lr=math.nan), ValueError, "lr must be finite"),
        (dict(lr=None), TypeError, "lr must be a real number"),
        (dict(maximize=0), TypeError, "maximize must be a bool"),
    ],
)
def test_sgd_bad_input_leaves_table_untouched(backend, change, exc, match):
    table = _table()
    with pytest.raises(exc, match=match):
        fastlmrl.sgd_step(table, **dict(GOOD, **change))
    np.testing.assert_array_equal(table, _table())


@pytest.mark.parametrize(
    "change, exc, match",
    [
        (dict(rows=[0, 5]), ValueError, r"rows\[1\] = 5 is out of range"),
        (dict(grads=[[1.0, 2.0], [3.0, math.nan]]), ValueError, r"grads\[1, 1\] = nan"),
        (dict(grads=[[1.0, 2.0]]), ValueError, "grads must have shape"),
        (dict(step=0), ValueError, "step must be >= 1"),
        (dict(step=1.0), TypeError, "step must be an int"),
        (dict(beta1=1.0), ValueError, r"beta1 must be in \[0.0, 1.0\)"),
        (dict(beta2=-0.1), ValueError, "beta2 must be in"),
        (dict(eps=0.0), ValueError, r"eps must be in \(0.0, inf\]"),
        (dict(lr=-1.0), ValueError, "lr must be in"),
        (dict(m=np.zeros((3, 3))), ValueError, "m must have the shape and dtype of table"),
        (dict(v=np.zeros((3, 2), np.float32)), ValueError, "v must have the shape and dtype"),
        (dict(m=np.zeros((2, 3)).T), ValueError, "m must be C-contiguous"),
        (dict(m=[[0.0, 0.0]] * 3), TypeError, "m must be a numpy.ndarray"),
    ],
)
def test_adam_bad_input_leaves_everything_untouched(backend, change, exc, match):
    table, m, v = _table(), np.full((3, 2), 0.5), np.full((3, 2), 0.25)
    kwargs = dict(GOOD, m=m, v=v, step=1)
    kwargs.update(change)
    with pytest.raises(exc, match=match):
        fastlmrl.adam_step(table, **kwargs)
    np.testing.assert_array_equal(table, _table())
    assert (m == 0.5).all() and (v == 0.25).all()


def test_adam_aliasing_and_bad_table(backend):
    table = _table()
    m = np.zeros((3, 2))
    with pytest.raises(ValueError, match="must not share memory with table"):
        fastlmrl.adam_step(table, [0], [[1.0, 1.0]], table, m, 1, 0.1)
    with pytest.raises(ValueError, match="two different arrays"):
        fastlmrl.adam_step(table, [0], [[1.0, 1.0]], m, m, 1, 0.1)
    big = np.zeros((6, 2))
    with pytest.raises(ValueError, match="must not share memory with table"):  # views of one buffer
        fastlmrl.adam_step(big[:3], [0], [[1.0, 1.0]], big[2:5], np.zeros((3, 2)), 1, 0.1)
    with pytest.raises(ValueError, match="two different arrays"):  # overlapping views
        fastlmrl.adam_step(table, [0], [[1.0, 1.0]], big[:3], big[1:4], 1, 0.1)
    assert (big == 0).all()
    ro = _table()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="table is read-only"):
        fastlmrl.sgd_step(ro, [0], [[1.0, 1.0]], 0.1)
    with pytest.raises(TypeError, match="table must have dtype float32 or float64"):
        fastlmrl.sgd_step(_table().astype(np.float16), [0], [[1.0, 1.0]], 0.1)
    np.testing.assert_array_equal(table, _table())
    assert (m == 0).all()


def test_raw_kernels_reject_bad_order_and_shapes():
    """Direct kernel calls check everything before writing (no out-of-bounds write possible)."""
    for name in ("python", "numba", "cython"):
        k = _backend.backend_module(name)
        table, m, v = np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((3, 2))
        rows, grads = np.array([2, 0, 2]), np.ones((3, 2))
        good_order, acc = np.array([1, 0, 2]), np.empty(2)

        def sgd(order=good_order, rows=rows, grads=grads, acc=acc, k=k, table=table):
            return k.sgd_step(table, rows, grads, order, 0.1, False, acc)

        def adam(order=good_order, mm=m, vv=v, acc=acc, grads=grads, k=k, table=table, rows=rows):
            return k.adam_step(
                table, rows, grads, order, mm, vv, np.int64(1), 0.1, 0.9, 0.999, 1e-8, False, acc
            )

        for bad in ([0, 1, 2], [1, 2, 0], [1, 0, 0], [1, 0, 3], [1, 0, -1]):
            assert sgd(order=np.array(bad)) == Status.BAD_ORDER
            assert adam(order=np.array(bad)) == Status.BAD_ORDER
        assert sgd(order=np.array([1, 0])) == Status.BAD_SHAPES
        assert sgd(acc=np.empty(1)) == Status.BAD_SHAPES
        assert sgd(grads=np.ones((3, 3))) == Status.BAD_SHAPES
        assert adam(mm=np.zeros((2, 2))) == Status.BAD_SHAPES
        assert adam(vv=np.zeros((3, 1))) == Status.BAD_SHAPES
        assert sgd(rows=np.array([2, 0, 3])) == Status.BAD_ROWS
        assert adam(grads=np.array([[1.0, 1.0], [1.0, -np.inf], [1.0, 1.0]])) == Status.BAD_GRADS
        # an empty order means "rows is sorted": 34 when it is not (the wrapper then sorts)
        assert sgd(order=np.empty(0, np.int64)) == Status.UNSORTED
        assert adam(order=np.empty(0, np.int64)) == Status.UNSORTED
        assert (
            sgd(order=np.empty(0, np.int64), rows=np.array([2, 0, 3])) == Status.BAD_ROWS
        )  # ids first
        assert (table == 0).all() and (m == 0).all() and (v == 0).all()
        assert sgd() == 0 and adam() == 0
        sorted_rows = np.array([0, 2, 2])
        assert k.sgd_step(table, sorted_rows, grads, np.empty(0, np.int64), 0.1, False, acc) == 0
        assert (
            k.adam_step(
                table,
                sorted_rows,
                grads,
                np.empty(0, np.int64),
                m,
                v,
                np.int64(1),
                0.1,
                0.9,
                0.999,
                1e-8,
                False,
                acc,
            )
            == 0
        )


def test_numba_kernels_accept_strided_arrays(reference):
    """A Numba user may pass non-contiguous arrays (a strided scratch, a column slice of grads):
    same bits as the reference."""
    from fastlmrl._numba import optimizers as nb

    rng = np.random.default_rng(12)
    rows = np.array([3, 0, 3, 1, 3])
    grads = rng.standard_normal((5, 26))[:, ::2]
    table = rng.standard_normal((4, 13))
    order = np.argsort(rows, kind="stable")
    results = []
    for module, acc in ((reference, np.empty(13)), (nb, np.empty(39)[::3])):
        t, m, v = table.copy(), np.zeros_like(table), np.zeros_like(table)
        assert (
            module.adam_step(
                t, rows, grads, order, m, v, np.int64(2), 0.1, 0.9, 0.999, 1e-8, False, acc
            )
            == 0
        )
        t2 = table.copy()
        assert module.sgd_step(t2, rows, grads, order, 0.1, True, acc) == 0
        results.append((t, m, v, t2))
    for want, have in zip(*results):
        np.testing.assert_array_equal(have, want)


@pytest.mark.parametrize("n_cols", [1, 19, 52])
def test_every_non_finite_position_is_caught(compiled, reference, n_cols, float_dtype):
    """The compiled finiteness check is branch-free and vectorised: any column (vector body or
    remainder) of any row, NaN or +-inf, gives BAD_GRADS before anything is written."""
    rows = np.array([0, 3, 3, 5])
    acc = np.empty(n_cols)
    for module in (reference, compiled):
        for order in (NO_ORDER, np.arange(4)):
            for i in range(4):
                for j in range(n_cols):
                    for bad in (math.nan, math.inf, -math.inf):
                        table = np.zeros((6, n_cols), float_dtype)
                        m, v = np.zeros_like(table), np.zeros_like(table)
                        grads = np.ones((4, n_cols), float_dtype)
                        grads[i, j] = bad
                        assert (
                            module.sgd_step(table, rows, grads, order, 0.1, False, acc)
                            == Status.BAD_GRADS
                        )
                        assert (
                            module.adam_step(
                                table,
                                rows,
                                grads,
                                order,
                                m,
                                v,
                                np.int64(1),
                                0.1,
                                0.9,
                                0.999,
                                1e-8,
                                False,
                                acc,
                            )
                            == Status.BAD_GRADS
                        )
                        assert (table == 0).all() and (m == 0).all() and (v == 0).all()


@given(batches(), st.data())
def test_corrupted_batch_changes_nothing_in_any_backend(batch, data):
    """One bad id or one non-finite gradient anywhere: every backend raises, nothing is written."""
    table, rows, grads = batch
    if rows.shape[0] == 0:
        return
    i = data.draw(st.integers(0, rows.shape[0] - 1))
    rows, grads = rows.copy(), grads.copy()
    if data.draw(st.booleans()):
        rows[i] = data.draw(st.sampled_from([-1, table.shape[0], table.shape[0] + 7]))
        match = rf"rows\[{i}\]"
    else:
        grads[i, data.draw(st.integers(0, table.shape[1] - 1))] = data.draw(
            st.sampled_from([math.nan, math.inf, -math.inf])
        )
        match = "is not finite"
    for name in fastlmrl.BACKENDS:
        with fastlmrl.use_backend(name):
            t, m, v = table.copy(), np.zeros_like(table), np.ones_like(table)
            with pytest.raises(ValueError, match=match):
                fastlmrl.sgd_step(t, rows, grads, 0.1)
            with pytest.raises(ValueError, match=match):
                fastlmrl.adam_step(t, rows, grads, m, v, 1, 0.1)
            np.testing.assert_array_equal(t, table)
            assert (m == 0).all() and (v == 1).all()
