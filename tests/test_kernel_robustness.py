"""Robustness of the optimizers, monte_carlo, dynamic_programming, kl_divergence, policy_losses,
log_probs, tabular_losses, advantages and group_advantages topics under malformed input
(issue 11): refusals happen before the first write (public API and raw kernels of every backend),
name the argument, and follow one semantics in every backend."""

import numpy as np
import pytest

import fastlmrl
from fastlmrl import _backend
from fastlmrl import _validation as check

BACKEND_NAMES = ("python", "numba", "cython")


def raw(name):
    return _backend.backend_module(name)


# --------------------------------------------------------------------------- half-applied updates


def _adam_args(v_bad, dtype=np.float64):
    table = np.arange(8, dtype=dtype).reshape(4, 2)
    m = np.full((4, 2), 0.5, dtype=dtype)
    v = np.full((4, 2), 0.25, dtype=dtype)
    v[2, 1] = v_bad
    rows = np.array([0, 2], dtype=np.int64)
    grads = np.ones((2, 2), dtype=dtype)
    return table, rows, grads, m, v


@pytest.mark.parametrize("v_bad", [-1.0, -1e-30, np.nan])
def test_adam_negative_second_moment_refused_before_writing(backend, v_bad, float_dtype):
    table, rows, grads, m, v = _adam_args(v_bad, float_dtype)
    before = [a.copy() for a in (table, m, v)]
    with pytest.raises(ValueError, match=r"^v\[2, 1\]"):
        fastlmrl.adam_step(table, rows, grads, m, v, 1, 0.1)
    for a, b in zip((table, m, v), before):
        np.testing.assert_array_equal(a, b)
    # the Adam class too (its t is not advanced)
    opt = fastlmrl.Adam(table, lr=0.1)
    opt.v[3, 0] = v_bad
    with pytest.raises(ValueError, match="v"):
        opt.step([3], np.ones((1, 2)))
    assert opt.t == 0 and (opt.m == 0).all()
    np.testing.assert_array_equal(table, before[0])


@pytest.mark.parametrize("name", BACKEND_NAMES)
@pytest.mark.parametrize("ncols", [1, 3])
def test_adam_raw_kernel_negative_second_moment(name, ncols):
    """A Numba/Cython user calling the kernel directly gets status 35, nothing written, also in
    the one-column path and with an explicit order."""
    kern = raw(name)
    table = np.zeros((4, ncols))
    m = np.zeros((4, ncols))
    v = np.zeros((4, ncols))
    v[3, ncols - 1] = -2.0
    rows = np.array([3, 0, 3], dtype=np.int64)
    grads = np.ones((3, ncols))
    acc = np.empty(ncols)
    for order in (np.empty(0, dtype=np.int64), np.array([1, 0, 2], dtype=np.int64)):
        before = [a.copy() for a in (table, m, v)]
        status = kern.adam_step(
            table, rows, grads, order, m, v, 1, 0.1, 0.9, 0.999, 1e-8, False, acc
        )
        assert status == (34 if order.size == 0 else 35)  # unsorted rows are reported first
        for a, b in zip((table, m, v), before):
            np.testing.assert_array_equal(a, b)
    # a row of the batch that is fine, a bad row outside it: accepted (only the batch is read)
    rows = np.array([0, 1], dtype=np.int64)
    assert (
        kern.adam_step(
            table,
            rows,
            np.ones((2, ncols)),
            np.empty(0, dtype=np.int64),
            m,
            v,
            1,
            0.1,
            0.9,
            0.999,
            1e-8,
            False,
            acc,
        )
        == 0
    )


def _mc_args(count):
    q = np.zeros((3, 2))
    counts = np.zeros((3, 2), dtype=np.int64)
    counts[1, 1] = count
    states = np.array([0, 1, 2], dtype=np.int64)
    actions = np.array([0, 1, 1], dtype=np.int64)
    rewards = np.array([1.0, 2.0, 3.0])
    offsets = np.array([0, 3], dtype=np.int64)
    return q, counts, states, actions, rewards, offsets


@pytest.mark.parametrize("count", [-1, -(2**63), 2**63 - 1, 2**63 - 3])
def test_mc_control_bad_counts_refused_before_writing(backend, count):
    q, counts, states, actions, rewards, offsets = _mc_args(count)
    before = q.copy(), counts.copy()
    with pytest.raises(ValueError, match=r"^counts\[1, 1\]"):
        fastlmrl.mc_control_update(q, states, actions, rewards, offsets, 0.9, counts=counts)
    np.testing.assert_array_equal(q, before[0])
    np.testing.assert_array_equal(counts, before[1])
    # the largest accepted count: 2**63 - 1 - T
    counts[1, 1] = 2**63 - 1 - 3
    fastlmrl.mc_control_update(q, states, actions, rewards, offsets, 0.9, counts=counts)
    assert counts[1, 1] == 2**63 - 1 - 2


@pytest.mark.parametrize("name", BACKEND_NAMES)
@pytest.mark.parametrize("first_visit", [True, False])
def test_mc_control_raw_kernel_negative_counts(name, first_visit):
    q, counts, states, actions, rewards, offsets = _mc_args(-1)
    keys = np.empty(8, dtype=np.int64) if first_visit else np.empty(0, dtype=np.int64)
    first = np.empty(8, dtype=np.int64) if first_visit else np.empty(0, dtype=np.int64)
    out = np.full(3, 7.0)
    for alpha in (0.0, 0.5):
        status = raw(name).mc_control_update(
            q, states, actions, rewards, offsets, 0.9, first_visit, alpha, counts, keys, first, out
        )
        assert status == 23
        assert (q == 0).all() and counts[1, 1] == -1 and (out == 7.0).all()


# --------------------------------------------------------------------------- integer bounds


def test_positive_int_bounds():
    assert check.positive_int(2**63 - 1, "n") == 2**63 - 1
    for bad in (2**63, 2**64, np.uint64(2**63)):
        with pytest.raises(ValueError, match=r"^n must be <= 2\*\*63 - 1, got"):
            check.positive_int(bad, "n")
    assert check.iterations(2**31 - 1, "max_iter") == 2**31 - 1
    with pytest.raises(ValueError, match=r"^max_iter must be <= 2\*\*31 - 1, got 2147483648"):
        check.iterations(2**31, "max_iter")


def _chain_mdp():
    next_state = np.array([[1, 0], [2, 1], [2, 2]])
    reward = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    return fastlmrl.TokenMDP(next_state, reward, np.array([False, False, True]))


@pytest.mark.parametrize("huge", [2**31, 2**63, 2**64 + 5])
def test_huge_ints_refused_naming_the_argument(backend, huge):
    table, rows, grads, m, v = _adam_args(0.0)
    with pytest.raises(ValueError, match="^step must be <="):
        fastlmrl.adam_step(table, rows, grads, m, v, 2**63 + 0 * huge, 0.1)
    mdp = _chain_mdp()
    for solver in (
        fastlmrl.value_iteration,
        fastlmrl.policy_iteration,
        fastlmrl.modified_policy_iteration,
    ):
        with pytest.raises(ValueError, match="^max_iter must be <= 2"):
            solver(mdp, 0.9, max_iter=huge)
    with pytest.raises(ValueError, match="^k must be <= 2"):
        fastlmrl.modified_policy_iteration(mdp, 0.9, k=huge)
    with pytest.raises(ValueError, match="^group_size must be <="):
        fastlmrl.grpo_advantages(np.ones(4), group_size=2**63 + 0 * huge)


def test_largest_valid_step_runs_everywhere(backend):
    """step = 2**63 - 1 is accepted by every backend (it was an OverflowError in Numba/Cython
    at 2**63 and accepted by Python): same bits everywhere."""
    table, rows, grads, m, v = _adam_args(0.0)
    fastlmrl.adam_step(table, rows, grads, m, v, 2**63 - 1, 0.1)
    ref_t, _, _, ref_m, ref_v = _adam_args(0.0)
    with fastlmrl.use_backend("python"):
        fastlmrl.adam_step(ref_t, rows, grads, ref_m, ref_v, 2**63 - 1, 0.1)
    np.testing.assert_array_equal(table, ref_t)


# --------------------------------------------------------------------------- wrong types


def test_kl_penalized_rewards_none_rewards(backend):
    lp = np.zeros((2, 3))
    with pytest.raises(TypeError, match="^rewards"):
        fastlmrl.kl_penalized_rewards(None, lp, lp, beta=0.1)


@pytest.mark.parametrize("bad", [["k1"], None, 3, {"k1": 1}])
def test_estimator_of_wrong_type_names_the_argument(backend, bad):
    logits = np.zeros((2, 3))
    tokens = np.array([0, 1])
    lp = np.zeros(2)
    table = np.zeros((2, 3))
    calls = {
        "kl_estimator": [
            lambda: fastlmrl.ppo_loss(logits, tokens, lp, lp, kl_estimator=bad),
            lambda: fastlmrl.ppo_loss_tabular(table, tokens, tokens, lp, lp, kl_estimator=bad),
            lambda: fastlmrl.kl_penalty_loss(logits, tokens, lp, kl_estimator=bad),
            lambda: fastlmrl.kl_penalty_loss_tabular(table, tokens, tokens, lp, kl_estimator=bad),
            lambda: fastlmrl.kl_penalty(lp, lp, kl_estimator=bad),
        ],
        "ratio_level": [
            lambda: fastlmrl.ppo_loss(logits, tokens, lp, lp, ratio_level=bad),
            lambda: fastlmrl.ppo_loss_tabular(table, tokens, tokens, lp, lp, ratio_level=bad),
        ],
    }
    for name, fns in calls.items():
        for fn in fns:
            with pytest.raises(TypeError, match=f"^{name}"):
                fn()


# --------------------------------------------------------------------------- read-only inputs


def _frozen(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


def test_read_only_inputs_compile_nothing_new():
    """Read-only input arrays run the Numba specialisation already compiled for writeable ones
    (Numba types a read-only array differently; the wrappers pass a writeable alias, no copy)."""
    from fastlmrl._numba import kl_divergence as nkl
    from fastlmrl._numba import monte_carlo as nmc
    from fastlmrl._numba import optimizers as nopt

    def run(freeze):
        f = _frozen if freeze else np.array
        table, m, v = np.zeros((4, 2)), np.zeros((4, 2)), np.zeros((4, 2))
        fastlmrl.adam_step(table, f([0, 2]), f(np.ones((2, 2))), m, v, 1, 0.1)
        q, counts = np.zeros((3, 2)), np.zeros((3, 2), dtype=np.int64)
        fastlmrl.mc_control_update(
            q, f([0, 1]), f([1, 0]), f([1.0, 2.0]), f([0, 2]), 0.9, counts=counts
        )
        kl = fastlmrl.kl_penalty(f(np.zeros((2, 3))), f(np.ones((2, 3))), f(np.ones((2, 3), bool)))[
            0
        ]
        logits = f(np.arange(6.0).reshape(2, 3))
        lsm = fastlmrl.log_softmax(logits)
        loss = fastlmrl.ppo_loss_tabular(
            logits, f([0, 1]), f([2, 0]), f([0.0, -1.0]), f([1.0, 2.0])
        ).loss
        mdp = fastlmrl.TokenMDP(f([[1, 0], [1, 1]]), f([[1.0, 0.0], [0.0, 0.0]]), f([0, 1]))
        vi = fastlmrl.value_iteration(mdp, 0.9, v_init=f([0.0, 0.0])).values
        dense = fastlmrl.DenseMDP(f(np.full((2, 2, 2), 0.5)), f([[1.0, 0.0], [0.0, 2.0]]))
        pi = fastlmrl.evaluate_policy(dense, f([0, 1]), 0.5)
        return table, q, kl, lsm, np.array(loss), vi, pi

    from fastlmrl._numba import dynamic_programming as ndp
    from fastlmrl._numba import log_probs as nlp
    from fastlmrl._numba import tabular_losses as ntl

    kernels = (
        nopt.adam_step,
        nmc.mc_control_update,
        nkl.kl_penalty,
        nlp.log_softmax,
        ntl.ppo_loss_tabular,
        ndp.token_mdp_value_iteration,
        ndp.dense_mdp_bellman_backup,
    )
    with fastlmrl.use_backend("numba"):
        expected = run(False)
        counts = [len(k.signatures) for k in kernels]
        got = run(True)
        assert [len(k.signatures) for k in kernels] == counts
    for a, b in zip(expected, got):
        np.testing.assert_array_equal(a, b)


def test_kernel_input_aliases_without_copy():
    a = _frozen(np.arange(6.0).reshape(2, 3))
    b = check.kernel_input(a)
    assert b.flags.writeable and np.shares_memory(a, b) and b.shape == a.shape
    np.testing.assert_array_equal(a, b)
    w = np.arange(3.0)
    assert check.kernel_input(w) is w
    # inputs only: a read-only table updated in place is still refused
    with pytest.raises(ValueError, match="table is read-only"):
        fastlmrl.sgd_step(_frozen(np.zeros((2, 2))), [0], np.ones((1, 2)), 0.1)


# --------------------------------------------------------------------------- DenseMDP tolerance


def test_float32_transition_rows_accepted_at_float32_precision(backend):
    rng = np.random.default_rng(0)
    P = rng.random((50, 3, 50)).astype(np.float32)
    P /= P.sum(axis=2, keepdims=True)  # rows sum to 1 within ~1e-7 (float32), not 1e-8
    assert np.abs(P.sum(axis=2, dtype=np.float64) - 1).max() > 1e-8
    R = rng.random((50, 3))  # float64 rewards make the tables float64
    mdp = fastlmrl.DenseMDP(P, R)
    assert mdp.dtype == np.float64
    assert fastlmrl.value_iteration(mdp, 0.9).converged
    # a float64 row that is off by 1e-7 is still refused (float64 tolerance 1e-8)
    with pytest.raises(ValueError, match="^P\\[0, 0, :\\] sums to"):
        P64 = P.astype(np.float64)
        P64 /= P64.sum(axis=2, keepdims=True)
        P64[0, 0, 0] += 1e-7
        fastlmrl.DenseMDP(P64, R)
    from fastlmrl.dynamic_programming import row_sum_tolerance

    assert row_sum_tolerance(np.float64, 10) == 1e-8
    assert row_sum_tolerance(np.float32, 10) == 1e-4
    assert row_sum_tolerance(np.float32, 10**6) == 4e6 * float(np.finfo(np.float32).eps)
    assert row_sum_tolerance(np.float16, 2) == 8 * float(np.finfo(np.float16).eps)


# --------------------------------------------------------------------------- policy iteration ties


def test_stopping_rule_tolerates_rounding_ties_only():
    from fastlmrl.dynamic_programming import _stable

    v = np.array([1.0, -2.0, 0.0])
    assert _stable(v, v, 1e-10)
    assert _stable(v + np.array([4e-16, 0.0, 1e-11]), v, 1e-10)  # rounding-level gains
    assert not _stable(v + np.array([0.0, 1e-6, 0.0]), v, 1e-10)  # a real improvement
    assert not _stable(v + np.array([4e-16, 0.0, 0.0]), v, 0.0)  # tol = 0: exact
    big = np.array([1e6, 0.0])
    assert _stable(big + np.array([1e-5, 0.0]), big, 1e-10)  # margin scales with |v|
    assert not _stable(big + np.array([0.0, 1e-3]), big, 1e-10)


def test_policy_iteration_keeps_a_tied_action(backend):
    """Two actions of state 0 tie exactly; PI started on the second one keeps it (Puterman
    §6.4: d_{n+1}(s) = d_n(s) whenever possible) and stops after one evaluation."""
    P = np.zeros((2, 2, 2))
    P[0, :, 1] = 1.0
    P[1, :, 1] = 1.0
    R = np.array([[1.0, 1.0], [0.0, 0.0]])
    res = fastlmrl.policy_iteration(fastlmrl.DenseMDP(P, R), 0.9, v_init=np.zeros(2))
    assert res.converged and res.num_iter == 1
    np.testing.assert_array_equal(res.policy, [0, 0])
    mdp = fastlmrl.TokenMDP(np.array([[1, 1], [1, 1]]), R, np.array([False, True]))
    start = fastlmrl.policy_iteration(mdp, 0.9, max_iter=1)
    assert start.converged and start.num_iter == 1


def _frozen_lake():
    gym = pytest.importorskip("gymnasium")
    env = gym.make("FrozenLake-v1")
    table = env.unwrapped.P
    n_states, n_actions = env.observation_space.n, env.action_space.n
    P = np.zeros((n_states, n_actions, n_states))
    R = np.zeros((n_states, n_actions))
    for s in range(n_states):
        for a in range(n_actions):
            for p, s_next, r, _done in table[s][a]:
                P[s, a, s_next] += p
                R[s, a] += p * r
    return fastlmrl.DenseMDP(P, R)


def test_policy_iteration_converges_on_frozen_lake():
    """Gymnasium's FrozenLake 4x4 at gamma = 0.99 has actions that tie up to rounding: PI used to
    flip between them for 1000 iterations without converging."""
    mdp = _frozen_lake()
    results = {}
    for name in BACKEND_NAMES:
        with fastlmrl.use_backend(name):
            results[name] = fastlmrl.policy_iteration(mdp, 0.99)
    for name, res in results.items():
        assert res.converged and res.num_iter < 20, name
        np.testing.assert_array_equal(res.policy, results["python"].policy)
        np.testing.assert_array_equal(res.values, results["python"].values)
    vi = fastlmrl.value_iteration(mdp, 0.99, epsilon=1e-10)
    assert np.abs(results["python"].values - vi.values).max() < 1e-9


# --------------------------------------------------------------------------- IEEE in the reference


def _same(a, b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _extreme_calls():
    lp = np.array([[0.0, -1e-3, -2.0]])
    far = np.array([[-1e30, 800.0, -800.0]])
    logits = np.array([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    tokens = np.array([0, 1, 2])
    old = np.array([-1e30, -800.0, 800.0])
    adv = np.array([1.0, -1.0, 0.5])
    table = logits.copy()
    return {
        "kl_penalty": lambda: fastlmrl.kl_penalty(lp, far, estimator="k3"),
        "kl_penalized_rewards": lambda: fastlmrl.kl_penalized_rewards(
            np.ones((1, 3)), lp, far, beta=0.5, estimator="k3"
        ),
        "ppo_loss": lambda: fastlmrl.ppo_loss(logits, tokens, old, adv),
        "ppo_loss_kl": lambda: fastlmrl.ppo_loss(
            logits, tokens, np.zeros(3), adv, ref_log_probs=-old, kl_coef=0.1
        ),
        "kl_penalty_loss": lambda: fastlmrl.kl_penalty_loss(logits, tokens, -old),
        "ppo_loss_tabular": lambda: fastlmrl.ppo_loss_tabular(table, tokens, tokens, old, adv),
        "kl_penalty_loss_tabular": lambda: fastlmrl.kl_penalty_loss_tabular(
            table, tokens, tokens, -old
        ),
        "sequence_importance_ratio": lambda: fastlmrl.sequence_importance_ratio(
            np.array([[0.0, 0.0], [1e30, 0.0]]), np.array([[-1e30, 0.0], [0.0, 0.0]])
        ),
    }


def _flat(result):
    if isinstance(result, tuple):
        return [_flat(x) for x in result]
    return np.asarray(result)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("call", sorted(_extreme_calls()))
def test_extreme_log_ratios_follow_ieee_in_every_backend(call):
    """exp of a huge log-ratio is +inf in C; the reference used to raise OverflowError ('math
    range error') there.  All three backends now return the same (infinite) values."""
    results = {}
    for name in BACKEND_NAMES:
        with fastlmrl.use_backend(name):
            results[name] = _flat(_extreme_calls()[call]())
    flat = {
        k: np.concatenate(
            [
                np.ravel(np.asarray(x, dtype=np.float64))
                for x in (v if isinstance(v, list) else [v])
                for x in (x if isinstance(x, list) else [x])
            ]
        )
        for k, v in results.items()
    }
    assert np.isinf(flat["python"]).any()
    for name in ("numba", "cython"):
        np.testing.assert_array_equal(flat[name], flat["python"], err_msg=name)


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_optimizer_raw_kernels_check_hyperparameters(name):
    """A zero or negative divisor (eps = 0, step = 0, beta = 1) or a non-finite lr is refused with
    status 36 before anything is written (the reference would raise ZeroDivisionError
    mid-update)."""
    kern = raw(name)
    table, m, v = np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((2, 2))
    rows, grads, acc = np.array([0, 1]), np.zeros((2, 2)), np.empty(2)
    order = np.empty(0, dtype=np.int64)
    good = dict(step=1, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)
    for key, bad in [
        ("step", 0),
        ("step", -5),
        ("lr", -1.0),
        ("lr", np.inf),
        ("lr", np.nan),
        ("beta1", 1.0),
        ("beta2", -0.1),
        ("beta2", np.nan),
        ("eps", 0.0),
        ("eps", np.inf),
    ]:
        args = dict(good, **{key: bad})
        status = kern.adam_step(
            table,
            rows,
            grads,
            order,
            m,
            v,
            args["step"],
            args["lr"],
            args["beta1"],
            args["beta2"],
            args["eps"],
            False,
            acc,
        )
        assert status == 36, (key, bad)
    for bad in (-1.0, np.inf, np.nan):
        assert kern.sgd_step(table, rows, grads, order, bad, False, acc) == 36
    assert (table == 0).all() and (m == 0).all() and (v == 0).all()


def test_adam_state_step_count_bounded():
    opt = fastlmrl.Adam(np.zeros((2, 2)))
    state = opt.state_dict()
    for bad in (2**63 - 1, 2**63, -1):
        with pytest.raises(ValueError, match=r"state\['t'\]"):
            opt.load_state_dict(dict(state, t=bad))
    opt.load_state_dict(dict(state, t=2**63 - 2))
    opt.step([0], np.ones((1, 2)))  # step 2**63 - 1, the largest int64
    assert opt.t == 2**63 - 1


def test_array_size_refuses_what_cannot_fit():
    check.array_size((10, 10), "n")
    with pytest.raises(
        ValueError, match=r"^num_envs: an array of shape \(2147483648, 2147483648\)"
    ):
        check.array_size((2**31, 2**31), "num_envs")
    with pytest.raises(ValueError, match="9223372036854775808"):
        check.array_size((2**63,), "size", itemsize=1)


# --------------------------------------------------------------------------- replaced MDP arrays


@pytest.mark.parametrize(
    "attr, value, error",
    [
        ("next_state", np.zeros((3, 2)), TypeError),
        ("next_state", [[1, 0]], TypeError),
        ("next_state", np.zeros((2, 2), dtype=np.int64), ValueError),
        ("reward", np.zeros(3), ValueError),
        ("reward", np.zeros((3, 2), np.float16), TypeError),
        ("terminal", np.zeros(5, bool), ValueError),
        ("terminal", None, TypeError),
        ("next_state", np.full((3, 2), 7), ValueError),
    ],
)
def test_token_mdp_with_replaced_arrays(backend, attr, value, error):
    """An MDP whose arrays were replaced after construction gets a ValueError/TypeError naming
    the array (it leaked IndexError, AttributeError or a Numba TypingError)."""
    mdp = fastlmrl.TokenMDP(
        np.array([[1, 0], [2, 1], [2, 2]]), np.zeros((3, 2)), np.array([0, 0, 1], bool)
    )
    setattr(mdp, attr, value)
    for call in (
        lambda: fastlmrl.value_iteration(mdp, 0.9),
        lambda: fastlmrl.policy_iteration(mdp, 1.0),
        lambda: fastlmrl.modified_policy_iteration(mdp, 0.9),
        lambda: fastlmrl.bellman_backup(mdp, np.zeros(3), 0.9),
        lambda: fastlmrl.evaluate_policy(mdp, [0, 0, 0], 0.9),
    ):
        with pytest.raises(error, match="next_state|reward|terminal"):
            call()


@pytest.mark.parametrize(
    "attr, value, error",
    [
        ("P", np.zeros((2, 2, 3)), ValueError),
        ("P", np.zeros((2, 2, 2), np.float32), TypeError),
        ("R", [[0.0]], TypeError),
        ("R", np.zeros(2), ValueError),
    ],
)
def test_dense_mdp_with_replaced_arrays(backend, attr, value, error):
    mdp = fastlmrl.DenseMDP(np.full((2, 2, 2), 0.5), np.zeros((2, 2)))
    setattr(mdp, attr, value)
    with pytest.raises(error, match="mdp\\.[PR]"):
        fastlmrl.value_iteration(mdp, 0.9)


# --------------------------------------------------------------------------- raw kernels, corrupted


def _valid_public_calls():
    logits = np.zeros((3, 4))
    toks = np.array([0, 1, 2])
    per = np.zeros(3)
    mask = np.ones((2, 3), bool)
    term = np.ones(2, bool)
    mdp = fastlmrl.TokenMDP(
        np.array([[1, 0], [2, 1], [2, 2]]), np.ones((3, 2)), np.array([0, 0, 1], bool)
    )
    dense = mdp.to_dense()
    return [
        lambda: fastlmrl.sgd_step(np.zeros((3, 2)), [2, 0], np.ones((2, 2)), 0.1),
        lambda: fastlmrl.adam_step(
            np.zeros((3, 2)), [0, 2, 2], np.ones((3, 2)), np.zeros((3, 2)), np.zeros((3, 2)), 1, 0.1
        ),
        lambda: fastlmrl.episode_returns(np.ones(3), [0, 1, 3], 0.9),
        lambda: fastlmrl.mc_control_update(
            np.zeros((3, 2)),
            [0, 1, 0],
            [0, 1, 0],
            np.ones(3),
            [0, 3],
            0.9,
            counts=np.zeros((3, 2), np.int64),
        ),
        lambda: fastlmrl.value_iteration(mdp, 0.9, max_iter=5),
        lambda: fastlmrl.evaluate_policy(mdp, [1, 0, 0], 0.9),
        lambda: fastlmrl.modified_policy_iteration(mdp, 0.9, k=2, max_iter=5),
        lambda: fastlmrl.value_iteration(dense, 0.9, max_iter=5),
        lambda: fastlmrl.modified_policy_iteration(dense, 0.9, k=2, max_iter=5),
        lambda: fastlmrl.kl_penalized_rewards(
            np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 3)), mask, beta=0.1
        ),
        lambda: fastlmrl.ppo_loss(
            logits,
            toks,
            per,
            per,
            ratio_level="sequence",
            sequence_offsets=[0, 1, 3],
            ref_log_probs=per,
            kl_coef=0.1,
        ),
        lambda: fastlmrl.a2c_loss(logits, toks, per, per, per),
        lambda: fastlmrl.log_prob_grad(logits, toks),
        lambda: fastlmrl.ppo_loss_tabular(
            logits, toks, toks, per, per, ratio_level="sequence", sequence_offsets=[0, 2, 3]
        ),
        lambda: fastlmrl.a2c_loss_tabular(logits, toks, toks, per, per, per),
        lambda: fastlmrl.gae(np.zeros((2, 3)), np.zeros((2, 3)), mask, term, gamma=0.9, lam=0.9),
        lambda: fastlmrl.grpo_advantages(np.arange(4.0), group_ids=[0, 1, 0, 1]),
        lambda: fastlmrl.rloo_advantages(np.arange(4.0), group_size=2),
        lambda: fastlmrl.loss_weights(mask, "dapo"),
        lambda: fastlmrl.sequence_importance_ratio(np.zeros((2, 3)), np.zeros((2, 3)), mask),
    ]


def _recorded_kernel_calls(name):
    """(kernel name, args) of every kernel call the valid public calls make under ``name``."""
    module = raw(name)
    calls = []

    class Recorder:
        def __getattr__(self, attr):
            def record(*args):
                calls.append((attr, [a.copy() if isinstance(a, np.ndarray) else a for a in args]))
                return getattr(module, attr)(*args)

            return record

    original = _backend.kernels
    _backend.kernels = Recorder
    try:
        with fastlmrl.use_backend(name):
            for call in _valid_public_calls():
                call()
    finally:
        _backend.kernels = original
    first = {}
    for kernel, args in calls:
        first.setdefault(kernel, args)
    return first


def _corrupted_statuses(name):
    """Every integer array of every recorded call corrupted in turn (first/last entry set to
    -1, a large id or the dtype's extremes): the kernel's status, and whether it modified an
    array although it refused the call."""
    module = raw(name)
    out = {}
    for kernel, args in sorted(_recorded_kernel_calls(name).items()):
        for i, arr in enumerate(args):
            if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iu" or arr.size == 0:
                continue
            info = np.iinfo(arr.dtype)
            for value in (-1, 10**6, info.max, info.min):
                for pos in (0, -1):
                    if not info.min <= value <= info.max:
                        continue
                    call = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
                    call[i].flat[pos] = value
                    before = [a.copy() if isinstance(a, np.ndarray) else None for a in call]
                    status = getattr(module, kernel)(*call)
                    touched = status != 0 and any(
                        b is not None and not np.array_equal(a, b, equal_nan=True)
                        for a, b in zip(call, before)
                    )
                    out[(kernel, i, value, pos)] = (status, touched)
    return out


def test_raw_kernels_refuse_corrupted_structures_before_writing():
    """A Numba/Cython user passing corrupted ids, offsets, orders, group ids or transition
    tables gets a status code (never a crash, an exception or an out-of-bounds access), the
    same status in every backend, and a refused call writes nothing."""
    results = {name: _corrupted_statuses(name) for name in BACKEND_NAMES}
    assert len(results["python"]) > 300
    assert sum(s != 0 for s, _ in results["python"].values()) > 150
    for name, res in results.items():
        assert not [k for k, (_, touched) in res.items() if touched], name
        assert res == results["python"], name


@pytest.mark.parametrize("bad", [None, np.array([]), [1, 2], "t"])
def test_optimizer_load_state_dict_of_wrong_type(bad):
    for opt in (fastlmrl.Adam(np.zeros((2, 2))), fastlmrl.SGD(np.zeros((2, 2)), 0.1)):
        with pytest.raises(ValueError, match="^not an (Adam|SGD) state: state must be a dict"):
            opt.load_state_dict(bad)


@pytest.mark.parametrize("big", [2**31, -(2**31) - 1, 2**63 - 1])
def test_raw_kernels_take_int64_options_and_thread_counts(big):
    """Option codes and thread counts up to int64 give the reference's status (Cython's def
    wrappers used to raise OverflowError above 2**31 - 1)."""
    logits = np.arange(6.0).reshape(2, 3)
    tokens = np.array([0, 2])
    flat = np.zeros(4)
    mask = np.ones(4, np.uint8)
    got = {}
    for name in BACKEND_NAMES:
        kern = raw(name)
        got[name] = (
            kern.log_softmax(logits, np.empty((2, 3)), big),
            kern.token_log_probs(logits, tokens, np.empty(2), big),
            kern.kl_penalty(flat, flat, mask, big, np.empty(4), np.empty(4)),
            kern.loss_weights(np.ones((2, 2), np.uint8), big, 2.0, 4.0, 2.0, np.empty((2, 2))),
            kern.grpo_advantages(
                np.arange(4.0),
                np.array([0, 0, 1, 1]),
                1,
                1e-4,
                big,
                np.empty(2),
                np.empty(2),
                np.empty(2, np.int64),
                np.empty(4),
            ),
            kern.kl_penalty_loss(
                logits,
                tokens,
                np.zeros(2),
                np.ones(2),
                big,
                np.empty(2),
                np.empty(2),
                np.empty((2, 3)),
                np.zeros(7),
                big,
            ),
        )
    assert got["python"][2] != 0 and got["python"][3] != 0  # invalid estimator, mode
    assert got["numba"] == got["python"] and got["cython"] == got["python"]


@pytest.mark.parametrize("name", ["numba", "cython"])
def test_huge_thread_counts_on_large_batches(name):
    """A direct call asking for 10**6 threads on a batch large enough to run in parallel gives
    the one-thread results (the Cython logits kernels used to hand that count to OpenMP, which
    crashed the process with a segmentation fault when it tried to start ~10**5 threads)."""
    kern = raw(name)
    rng = np.random.default_rng(5)
    n, v = 200_000, 8
    logits = rng.standard_normal((n, v)).astype(np.float32)
    tokens = rng.integers(0, v, n)
    old, adv, w = np.full(n, -2.0, np.float32), np.ones(n, np.float32), np.ones(n, np.float32)
    results = []
    for threads in (1, 10**6):
        lse = np.empty(n, np.float32)
        outs = (np.empty(n), np.empty(n), np.empty(n), np.empty((n, v), np.float32), np.zeros(7))
        statuses = (
            kern.logsumexp(logits, lse, threads),
            kern.ppo_loss(
                logits, tokens, old, adv, w, np.empty(0, np.float32), np.zeros(1, np.int64),
                0.2, 0.2, 0.0, 0.0, 3, 0, *outs, threads,
            ),
        )  # fmt: skip
        assert statuses == (0, 0)
        results.append([lse, *outs])
    for a, b in zip(*results):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_dp_raw_kernels_refuse_2_31_sweeps(name):
    """k or max_iter of 2**31 (or negative) is status 60 at once, not days of sweeps."""
    kern = raw(name)
    ns = np.array([[1, 0], [1, 1]])
    rw = np.array([[1.0, 0.0], [0.0, 0.0]])
    term = np.array([0, 1], np.uint8)
    P = np.full((2, 2, 2), 0.5)
    policy = np.zeros(2, np.int64)
    for bad in (2**31, -1):
        v = np.zeros(2)
        assert kern.token_mdp_policy_sweeps(ns, rw, term, policy, 0.9, bad, v, np.empty(2)) == 60
        assert kern.dense_mdp_policy_sweeps(P, rw, policy, 0.9, bad, v, np.empty(2)) == 60
        out = (np.empty(2), np.empty(2, np.int64), np.zeros(2, np.int64))
        assert kern.token_mdp_value_iteration(ns, rw, term, 0.9, 0.0, bad, v, *out) == 60
        assert kern.dense_mdp_value_iteration(P, rw, 0.9, 0.0, bad, v, *out) == 60
        assert (v == 0).all()
    assert kern.token_mdp_policy_sweeps(ns, rw, term, policy, 0.9, 2, v, np.empty(2)) == 0


@pytest.mark.parametrize("state", ["table", "m", "v"])
def test_reference_adam_refuses_read_only_state_before_writing(state):
    table, rows, grads, m, v = _adam_args(0.0)
    arrays = {"table": table, "m": m, "v": v}
    arrays[state].flags.writeable = False
    before = [a.copy() for a in (table, m, v)]
    with pytest.raises(ValueError, match=f"^{state} is read-only"):
        raw("python").adam_step(
            table,
            rows,
            grads,
            np.empty(0, np.int64),
            m,
            v,
            1,
            0.1,
            0.9,
            0.999,
            1e-8,
            False,
            np.empty(2),
        )
    for a, b in zip((table, m, v), before):
        np.testing.assert_array_equal(a, b)


def test_reference_mc_control_refuses_read_only_q_before_writing():
    q, counts, states, actions, rewards, offsets = _mc_args(0)
    q.flags.writeable = False
    with pytest.raises(ValueError, match="^q is read-only"):
        raw("python").mc_control_update(
            q,
            states,
            actions,
            rewards,
            offsets,
            0.9,
            False,
            0.0,
            counts,
            np.empty(0, np.int64),
            np.empty(0, np.int64),
            np.empty(3),
        )
    assert (counts == 0).all()


@pytest.mark.parametrize("bad", ["readonly", "2d"])
def test_reference_dp_kernels_check_outputs_before_writing(bad):
    ns = np.array([[1, 0], [1, 1]])
    rw = np.array([[1.0, 0.0], [0.0, 0.0]])
    v = np.zeros(2)
    policy_out = np.empty(2, np.int64) if bad == "readonly" else np.empty((2, 1), np.int64)
    policy_out.flags.writeable = bad != "readonly"
    kern = raw("python")
    if bad == "readonly":
        with pytest.raises(ValueError, match="^policy_out is read-only"):
            kern.token_mdp_value_iteration(
                ns,
                rw,
                np.array([0, 1], np.uint8),
                0.9,
                0.0,
                5,
                v,
                np.empty(2),
                policy_out,
                np.zeros(2, np.int64),
            )
    else:
        assert (
            kern.token_mdp_value_iteration(
                ns,
                rw,
                np.array([0, 1], np.uint8),
                0.9,
                0.0,
                5,
                v,
                np.empty(2),
                policy_out,
                np.zeros(2, np.int64),
            )
            == 7
        )
    assert (v == 0).all()


def test_rloo_singleton_group_names_group_ids(backend):
    with pytest.raises(ValueError, match=r"^group_ids\[3\] = 1: RLOO needs at least 2"):
        fastlmrl.rloo_advantages(np.arange(4.0), group_ids=[0, 0, 5, 1])
    with pytest.raises(ValueError, match="^group_size must be >= 2"):
        fastlmrl.rloo_advantages(np.arange(4.0), group_size=1)
