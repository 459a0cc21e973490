"""Tests for fastlmrl.dynamic_programming: kernels (compiled vs reference) and the solvers."""

import importlib
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shape_checks import assert_rejects_bad_shapes

import fastlmrl
from fastlmrl import (
    DenseMDP,
    DPResult,
    TokenMDP,
    action_values,
    bellman_backup,
    evaluate_policy,
    modified_policy_iteration,
    policy_iteration,
    value_iteration,
)
from fastlmrl._status import BAD_SHAPES

FLOATS = (np.float32, np.float64)
INDEX = (np.int32, np.int64)
SOLVERS = (value_iteration, policy_iteration, modified_policy_iteration)
GAMMAS = st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0]) | st.floats(0.0, 1.0)


def topic(backend_module):
    return importlib.import_module(f"{backend_module.__name__}.dynamic_programming")


def test_same_kernel_names():
    names = [
        sorted(importlib.import_module(f"fastlmrl._{b}.dynamic_programming").__all__)
        for b in ("python", "numba", "cython")
    ]
    assert names[0] == names[1] == names[2]
    assert len(names[0]) == 10


# ---------------------------------------------------------------------------------------------
# random MDPs


def random_token(rng, S, A, fdt=np.float64, idt=np.int64, p_terminal=0.3, ties=False):
    next_state = rng.integers(0, S, (S, A)).astype(idt)
    if ties:
        reward = rng.integers(-2, 3, (S, A)).astype(fdt)
    else:
        reward = (rng.standard_normal((S, A)) * 3).astype(fdt)
    terminal = rng.random(S) < p_terminal
    return next_state, reward, terminal


def random_dense(rng, S, A, fdt=np.float64, ties=False):
    P = rng.random((S, A, S))
    P[P < 0.4] = 0.0
    P[np.arange(S)[:, None], np.arange(A)[None, :], rng.integers(0, S, (S, A))] += 0.5
    P /= P.sum(axis=2, keepdims=True)
    if ties:
        R = rng.integers(-2, 3, (S, A)).astype(fdt)
    else:
        R = (rng.standard_normal((S, A)) * 3).astype(fdt)
    return P.astype(fdt), R


@st.composite
def token_case(draw):
    S = draw(st.integers(1, 8))
    A = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    fdt = draw(st.sampled_from(FLOATS))
    idt = draw(st.sampled_from(INDEX))
    next_state, reward, terminal = random_token(rng, S, A, fdt, idt, ties=draw(st.booleans()))
    v = rng.standard_normal(S) * 5
    if draw(st.booleans()):
        v[terminal] = 0.0
    policy = rng.integers(0, A, S).astype(np.int64)
    return dict(
        next_state=next_state,
        reward=reward,
        terminal=terminal.view(np.uint8),
        v=v,
        policy=policy,
        gamma=draw(GAMMAS),
    )


@st.composite
def dense_case(draw):
    S = draw(st.integers(1, 7))
    A = draw(st.integers(1, 9))  # both the 4-action blocks and the remainder
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    P, R = random_dense(rng, S, A, draw(st.sampled_from(FLOATS)), ties=draw(st.booleans()))
    return dict(
        P=P,
        R=R,
        v=rng.standard_normal(S) * 5,
        policy=rng.integers(0, A, S).astype(np.int64),
        gamma=draw(GAMMAS),
    )


def run_token(mod, name, c, *extra_in, **kw):
    """Call a token kernel of ``mod`` on fresh outputs; return (status, outputs)."""
    S, A = c["next_state"].shape
    base = (c["next_state"], c["reward"], c["terminal"])
    v = c["v"].copy()
    if name == "token_mdp_bellman_backup":
        out = (np.full(S, -7.0), np.full(S, -7, np.int64))
        st_ = mod.token_mdp_bellman_backup(*base, c["gamma"], v, *out)
    elif name == "token_mdp_action_values":
        out = (np.full((S, A), -7.0),)
        st_ = mod.token_mdp_action_values(*base, c["gamma"], v, *out)
    elif name == "token_mdp_policy_sweeps":
        out = (v, np.full(S, -7.0))
        st_ = mod.token_mdp_policy_sweeps(*base, c["policy"], c["gamma"], kw["k"], *out)
        out = (v,)
    elif name == "token_mdp_find_cycle":
        out = (np.full(1, -7, np.int64), np.full(3 * S, -7, np.int64))
        st_ = mod.token_mdp_find_cycle(c["next_state"], c["terminal"], *out)
        out = out[:1]
    elif name == "token_mdp_policy_value":
        out = (np.full(S, -7.0), np.full(2 * S, -7, np.int64))
        st_ = mod.token_mdp_policy_value(*base, c["policy"], c["gamma"], *out)
        out = out[:1]
    else:
        out = (v, np.full(S, -7.0), np.full(S, -7, np.int64), np.full(2, -7, np.int64))
        st_ = mod.token_mdp_value_iteration(*base, c["gamma"], kw["tol"], kw["max_iter"], *out)
        out = (out[0], out[2], out[3])
    return st_, out


def run_dense(mod, name, c, **kw):
    S, A = c["R"].shape
    v = c["v"].copy()
    if name == "dense_mdp_bellman_backup":
        out = (np.full(S, -7.0), np.full(S, -7, np.int64))
        st_ = mod.dense_mdp_bellman_backup(c["P"], c["R"], c["gamma"], v, *out)
    elif name == "dense_mdp_action_values":
        out = (np.full((S, A), -7.0),)
        st_ = mod.dense_mdp_action_values(c["P"], c["R"], c["gamma"], v, *out)
    elif name == "dense_mdp_policy_sweeps":
        st_ = mod.dense_mdp_policy_sweeps(
            c["P"], c["R"], c["policy"], c["gamma"], kw["k"], v, np.full(S, -7.0)
        )
        out = (v,)
    else:
        out = (v, np.full(S, -7.0), np.full(S, -7, np.int64), np.full(2, -7, np.int64))
        st_ = mod.dense_mdp_value_iteration(
            c["P"], c["R"], c["gamma"], kw["tol"], kw["max_iter"], *out
        )
        out = (out[0], out[2], out[3])
    return st_, out


def assert_same(a, b):
    assert a[0] == b[0]
    for x, y in zip(a[1], b[1]):
        np.testing.assert_array_equal(x, y)


TOKEN_KERNELS = (
    "token_mdp_bellman_backup",
    "token_mdp_action_values",
    "token_mdp_policy_sweeps",
    "token_mdp_policy_value",
    "token_mdp_value_iteration",
    "token_mdp_find_cycle",
)
DENSE_KERNELS = (
    "dense_mdp_bellman_backup",
    "dense_mdp_action_values",
    "dense_mdp_policy_sweeps",
    "dense_mdp_value_iteration",
)
KW = st.fixed_dictionaries(
    {
        "k": st.integers(0, 5),
        "max_iter": st.integers(0, 40),
        "tol": st.sampled_from([0.0, 1e-9, 1e-3, 0.5, np.inf]),
    }
)


# ---------------------------------------------------------------------------------------------
# compiled kernels == reference, bit for bit


@pytest.mark.parametrize("name", TOKEN_KERNELS)
@given(c=token_case(), kw=KW)
def test_token_kernels_match_reference(compiled, reference, name, c, kw):
    expected = run_token(topic(reference), name, c, **kw)
    assert expected[0] == 0
    assert_same(run_token(topic(compiled), name, c, **kw), expected)


@pytest.mark.parametrize("name", DENSE_KERNELS)
@settings(max_examples=40)
@given(c=dense_case(), kw=KW)
def test_dense_kernels_match_reference(compiled, reference, name, c, kw):
    expected = run_dense(topic(reference), name, c, **kw)
    assert expected[0] == 0
    assert_same(run_dense(topic(compiled), name, c, **kw), expected)


@pytest.mark.parametrize("name", TOKEN_KERNELS)
@given(
    c=token_case(),
    bad=st.sampled_from(["low", "high", "nan", "inf", "policy"]),
    where=st.integers(0, 10**6),
)
def test_token_kernels_bad_input_status(compiled, reference, name, c, bad, where):
    """Same status in every backend, and no output written."""
    S, A = c["next_state"].shape
    live = np.flatnonzero(~c["terminal"].astype(bool))
    if name == "token_mdp_find_cycle" and bad in ("nan", "inf", "policy"):
        return  # it reads next_state only
    if bad == "policy":
        if name not in ("token_mdp_policy_sweeps", "token_mdp_policy_value"):
            return
        c["policy"][where % S] = A if where % 2 else -1
        code = 2
    else:
        if live.size == 0:
            return
        s, a = live[where % live.size], (where // 7) % A
        if bad in ("low", "high"):
            c["next_state"][s, a] = -1 if bad == "low" else S
            code = 3
        else:
            c["reward"][s, a] = np.nan if bad == "nan" else -np.inf
            code = 5
    kw = dict(k=2, max_iter=3, tol=0.0)
    expected = run_token(topic(reference), name, c, **kw)
    got = run_token(topic(compiled), name, c, **kw)
    assert expected[0] == got[0] == code
    for out in got[1]:  # outputs untouched (v for the in-place kernels)
        assert np.all((out == -7) | np.isin(out, c["v"]))
    if name in ("token_mdp_policy_sweeps", "token_mdp_value_iteration"):
        np.testing.assert_array_equal(got[1][0], c["v"])


@pytest.mark.parametrize("name", DENSE_KERNELS)
@settings(max_examples=30)
@given(c=dense_case(), bad=st.sampled_from(["nan", "inf", "policy"]), where=st.integers(0, 10**6))
def test_dense_kernels_bad_input_status(compiled, reference, name, c, bad, where):
    S, A = c["R"].shape
    if bad == "policy":
        if name != "dense_mdp_policy_sweeps":
            return
        c["policy"][where % S] = A if where % 2 else -1
        code = 2
    else:
        c["R"][where % S, (where // 7) % A] = np.nan if bad == "nan" else np.inf
        code = 5
    kw = dict(k=2, max_iter=3, tol=0.0)
    expected = run_dense(topic(reference), name, c, **kw)
    got = run_dense(topic(compiled), name, c, **kw)
    assert expected[0] == got[0] == code
    if name in ("dense_mdp_policy_sweeps", "dense_mdp_value_iteration"):
        np.testing.assert_array_equal(got[1][0], c["v"])
    else:
        assert np.all(got[1][0] == -7)


@given(c=token_case(), dag=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_find_cycle_vs_matrix_power(compiled, reference, c, dag, seed):
    """Acyclic iff the adjacency matrix among non-terminal states is nilpotent (A^S = 0); a
    reported state lies on a cycle ((A^k)[s, s] > 0 for some k <= S)."""
    S, A = c["next_state"].shape
    if dag:  # forward edges only, the last state terminal: acyclic unless a random back edge
        rng = np.random.default_rng(seed)
        c["next_state"] = np.minimum(
            np.arange(S)[:, None] + rng.integers(1, 3, (S, A)), S - 1
        ).astype(c["next_state"].dtype)
        c["terminal"][-1] = 1
        if rng.random() < 0.3 and S > 2:
            c["next_state"][S - 2, 0] = rng.integers(0, S - 2)
            c["terminal"][S - 2] = 0
    term = c["terminal"].astype(bool)
    adj = np.zeros((S, S), dtype=np.int64)
    for s in np.flatnonzero(~term):
        for t in c["next_state"][s]:
            if not term[t]:
                adj[s, t] = 1
    expected = run_token(topic(reference), "token_mdp_find_cycle", c)
    got = run_token(topic(compiled), "token_mdp_find_cycle", c)
    assert_same(got, expected)
    found = int(got[1][0][0])
    assert (found == -1) == (not np.linalg.matrix_power(adj, S).any())
    if found >= 0:
        powers = [np.linalg.matrix_power(adj, k)[found, found] for k in range(1, S + 1)]
        assert max(powers) > 0


@pytest.mark.parametrize("A", [0, 3])
def test_kernels_empty_inputs(compiled, reference, A):
    """S = 0 (and A = 0): nothing to do, status 0, identical bookkeeping in every backend."""
    empty_token = dict(
        next_state=np.zeros((0, A), np.int64),
        reward=np.zeros((0, A)),
        terminal=np.zeros(0, np.uint8),
        v=np.zeros(0),
        policy=np.zeros(0, np.int64),
        gamma=0.9,
    )
    empty_dense = dict(
        P=np.zeros((0, A, 0)),
        R=np.zeros((0, A)),
        v=np.zeros(0),
        policy=np.zeros(0, np.int64),
        gamma=0.9,
    )
    kw = dict(k=3, max_iter=5, tol=1e-6)
    for name in TOKEN_KERNELS:
        expected = run_token(topic(reference), name, empty_token, **kw)
        assert expected[0] == 0
        assert_same(run_token(topic(compiled), name, empty_token, **kw), expected)
    for name in DENSE_KERNELS:
        expected = run_dense(topic(reference), name, empty_dense, **kw)
        assert expected[0] == 0
        assert_same(run_dense(topic(compiled), name, empty_dense, **kw), expected)
    # value iteration on nothing: one sweep, no change, converged
    assert list(
        run_token(topic(compiled), "token_mdp_value_iteration", empty_token, **kw)[1][2]
    ) == [1, 1]


def test_kernels_no_actions(compiled, reference):
    """A == 0 with a non-terminal state is status 2; when every state is terminal it is fine."""
    for term in ([0, 1], [1, 1]):
        c = dict(
            next_state=np.zeros((2, 0), np.int64),
            reward=np.zeros((2, 0)),
            terminal=np.array(term, np.uint8),
            v=np.ones(2),
            policy=np.zeros(2, np.int64),
            gamma=0.5,
        )
        for name in (
            "token_mdp_bellman_backup",
            "token_mdp_action_values",
            "token_mdp_value_iteration",
        ):
            expected = run_token(topic(reference), name, c, k=1, max_iter=3, tol=0.0)
            assert expected[0] == (2 if term[0] == 0 else 0)
            assert_same(run_token(topic(compiled), name, c, k=1, max_iter=3, tol=0.0), expected)
    d = dict(
        P=np.zeros((2, 0, 2)),
        R=np.zeros((2, 0)),
        v=np.ones(2),
        policy=np.zeros(2, np.int64),
        gamma=0.5,
    )
    for name in DENSE_KERNELS:
        assert run_dense(topic(reference), name, d, k=1, max_iter=3, tol=0.0)[0] == 2
        assert run_dense(topic(compiled), name, d, k=1, max_iter=3, tol=0.0)[0] == 2


# ---------------------------------------------------------------------------------------------
# hand-computed cases


def toy_mdp(fdt=np.float64, idt=np.int64):
    """The toy token MDP.  Contexts: 0 = "x1", 1 = "x1 v1", 2 = "x1 v2", 3 = end (terminal).
    Tokens: 0 = v1, 1 = v2.

        x1    --v1--> x1v1  reward 1      x1    --v2--> x1v2  reward 2
        x1v1  --v1--> end   reward 0      x1v1  --v2--> end   reward 5
        x1v2  --v1--> end   reward 1      x1v2  --v2--> end   reward 1   (a tie)

    By hand, with gamma = 1/2: Q*(x1v1) = (0, 5), V* = 5; Q*(x1v2) = (1, 1), V* = 1 (tie -> v1);
    Q*(x1) = (1 + 5/2, 2 + 1/2) = (3.5, 2.5), V* = 3.5, pi*(x1) = v1 (the greedy-now v2 loses).
    With gamma = 1: Q*(x1) = (6, 3), V* = 6.
    """
    next_state = np.array([[1, 2], [3, 3], [3, 3], [-1, -1]], dtype=idt)  # row 3 is padding
    reward = np.array([[1, 2], [0, 5], [1, 1], [np.nan, np.nan]], dtype=fdt)
    return TokenMDP(next_state, reward, terminal=[False, False, False, True])


TOY = {
    0.5: ([3.5, 5.0, 1.0, 0.0], [[3.5, 2.5], [0.0, 5.0], [1.0, 1.0], [0.0, 0.0]]),
    1.0: ([6.0, 5.0, 1.0, 0.0], [[6.0, 3.0], [0.0, 5.0], [1.0, 1.0], [0.0, 0.0]]),
}


@pytest.mark.parametrize("gamma", [0.5, 1.0])
@pytest.mark.parametrize("solver", SOLVERS)
def test_toy_token_mdp(backend, float_dtype, index_dtype, solver, gamma):
    mdp = toy_mdp(float_dtype, index_dtype)
    v_star, q_star = TOY[gamma]
    res = solver(mdp, gamma)
    assert res.converged
    np.testing.assert_allclose(res.values, v_star, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(res.policy, [0, 1, 0, 0])
    np.testing.assert_allclose(res.q, q_star, rtol=0, atol=1e-6)
    assert res.values.dtype == np.float64 and res.policy.dtype == np.int64
    if gamma == 0.5:  # the same MDP in the dense layout
        dense = solver(mdp.to_dense(), gamma)
        np.testing.assert_allclose(dense.values, v_star, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(dense.policy, [0, 1, 0, 0])


@pytest.mark.parametrize("gamma", [0.5, 1.0])
def test_toy_exact_operators(backend, gamma):
    mdp = toy_mdp()
    v_star, q_star = TOY[gamma]
    np.testing.assert_array_equal(action_values(mdp, v_star, gamma), q_star)
    tv, pol = bellman_backup(mdp, v_star, gamma)
    np.testing.assert_array_equal(tv, v_star)  # v* is the fixed point, exactly
    np.testing.assert_array_equal(pol, [0, 1, 0, 0])
    np.testing.assert_array_equal(evaluate_policy(mdp, [0, 1, 0, 0], gamma), v_star)
    np.testing.assert_array_equal(
        evaluate_policy(mdp, [1, 0, 1, 1], gamma), [2 + gamma * 1, 0, 1, 0]
    )
    # value iteration with gamma = 1 is backward induction: exact values
    if gamma == 1.0:
        res = value_iteration(mdp, 1.0)
        np.testing.assert_array_equal(res.values, v_star)
        assert res.num_iter <= 3  # longest path 2, plus the sweep that changes nothing


def chain(n, stay=True):
    """States 0..n-1 and the terminal n.  Action 0 'right': s -> s+1, reward -1.
    stay=True: action 1 'stay': s -> s, reward -2.  stay=False: action 1 'skip':
    s -> min(s+2, n), reward -1.5."""
    s = np.arange(n + 1)
    right = np.minimum(s + 1, n)
    other = s if stay else np.minimum(s + 2, n)
    reward = np.stack([np.full(n + 1, -1.0), np.full(n + 1, -2.0 if stay else -1.5)], axis=1)
    terminal = s == n
    return TokenMDP(np.stack([right, other], axis=1), reward, terminal)


@pytest.mark.parametrize("solver", SOLVERS)
def test_chain_closed_form(backend, solver):
    n, gamma = 12, 0.9
    mdp = chain(n)
    d = n - np.arange(n + 1)  # steps to the end
    # V*(s) = -sum_{j < d} gamma^j = -(1 - gamma^d) / (1 - gamma): always 'right'
    v_star = -(1 - gamma**d) / (1 - gamma)
    res = solver(mdp, gamma, **({} if solver is policy_iteration else {"epsilon": 1e-9}))
    assert res.converged
    np.testing.assert_allclose(res.values, v_star, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(res.policy, np.zeros(n + 1))
    with pytest.raises(ValueError, match="acyclic"):  # 'stay' is a self-loop
        solver(mdp, 1.0)
    # the skip chain is acyclic: undiscounted, by hand V*(d) = -0.75 d (d even),
    # -(0.75 (d - 1) + 1) (d odd: one 'right' step, the rest skips)
    skip = chain(n, stay=False)
    v_undiscounted = np.where(d % 2 == 0, -0.75 * d, -(0.75 * (d - 1) + 1))
    res = solver(skip, 1.0)
    assert res.converged
    np.testing.assert_array_equal(res.values, v_undiscounted)
    if solver is policy_iteration:
        # at odd d, 'right' then skips and 'skip' then 'right' tie exactly: PI keeps the action
        # it holds (Puterman §6.4: d_{n+1}(s) = d_n(s) if possible), either is optimal
        np.testing.assert_array_equal(res.policy[:-1][d[:-1] % 2 == 0], 1)
        np.testing.assert_array_equal(evaluate_policy(skip, res.policy, 1.0), v_undiscounted)
    else:  # greedy of the values, ties to the lowest action
        np.testing.assert_array_equal(res.policy[:-1], np.where(d[:-1] % 2 == 0, 1, 0))


@pytest.mark.parametrize("solver", SOLVERS)
def test_dense_two_state_by_hand(backend, float_dtype, solver):
    """s0: a0 stay, reward 1; a1 -> s1, reward 0.  s1: a0 reward 2, -> s0 or s1 w.p. 1/2;
    a1 stay, reward 0.  gamma = 0.9.  Policy (a1, a0): V0 = 0.9 V1,
    V1 = 2 + 0.45 V1 + 0.45 V0  =>  V1 = 2 / 0.145, V0 = 1.8 / 0.145; the alternatives
    1 + 0.9 V0 < V0 and 0.9 V1 < V1 confirm optimality."""
    P = np.zeros((2, 2, 2), dtype=float_dtype)
    P[0, 0, 0] = 1
    P[0, 1, 1] = 1
    P[1, 0] = [0.5, 0.5]
    P[1, 1, 1] = 1
    R = np.array([[1, 0], [2, 0]], dtype=float_dtype)
    res = solver(DenseMDP(P, R), 0.9, **({} if solver is policy_iteration else {"epsilon": 1e-9}))
    np.testing.assert_allclose(res.values, [1.8 / 0.145, 2 / 0.145], rtol=1e-10, atol=1e-9)
    np.testing.assert_array_equal(res.policy, [1, 0])


def brute_force(P, R, gamma):
    """V* of a small dense MDP: the componentwise max over all A^S deterministic policies of
    v_pi = (I - gamma P_pi)^{-1} r_pi (numpy only)."""
    S, A = R.shape
    P, R = P.astype(np.float64), R.astype(np.float64)
    best = np.full(S, -np.inf)
    for pol in itertools.product(range(A), repeat=S):
        pol = np.array(pol)
        v = np.linalg.solve(np.eye(S) - gamma * P[np.arange(S), pol], R[np.arange(S), pol])
        best = np.maximum(best, v)
    return best


@settings(max_examples=25)
@given(
    seed=st.integers(0, 2**32 - 1),
    S=st.integers(1, 4),
    A=st.integers(1, 3),
    gamma=st.sampled_from([0.0, 0.3, 0.9, 0.97]),
    fdt=st.sampled_from(FLOATS),
)
def test_dense_solvers_vs_brute_force(seed, S, A, gamma, fdt):
    rng = np.random.default_rng(seed)
    mdp = DenseMDP(*random_dense(rng, S, A, fdt))
    v_star = brute_force(mdp.P, mdp.R, gamma)
    eps = 1e-6
    pi = policy_iteration(mdp, gamma)
    assert pi.converged
    np.testing.assert_allclose(pi.values, v_star, rtol=0, atol=1e-9)
    # The stopping bounds assume exactly stochastic rows; a float32 P's rows sum to 1 only
    # within ~1e-7 (= delta).  VI's bound then moves by about gamma/(1-gamma) * delta * |v|;
    # MPI's midpoint correction c ~ gamma/(1-gamma) * |v| is itself applied through rows that
    # sum to 1 - delta, adding about gamma/(1-gamma) * delta * c: (gamma/(1-gamma))**2 * delta
    # * |v| in all (a hypothesis example at gamma = 0.97 exceeded the first-order allowance).
    row_error = np.abs(mdp.P.sum(axis=2, dtype=np.float64) - 1).max()
    horizon = gamma / (1 - gamma)
    slack = 1e-12 + 4 * (horizon + horizon**2) * row_error * (np.abs(v_star).max() + 1)
    for res in (
        value_iteration(mdp, gamma, epsilon=eps),
        modified_policy_iteration(mdp, gamma, epsilon=eps, k=3),
    ):
        assert res.converged
        assert np.abs(res.values - v_star).max() < eps / 2 + slack  # Puterman 6.3.1 / 6.6.5
        # the returned policy is eps-optimal
        assert (evaluate_policy(mdp, res.policy, gamma) >= v_star - eps - slack).all()


@settings(max_examples=40)
@given(
    seed=st.integers(0, 2**32 - 1),
    S=st.integers(1, 9),
    A=st.integers(1, 5),
    gamma=st.sampled_from([0.0, 0.5, 0.9, 0.99]),
    fdt=st.sampled_from(FLOATS),
    idt=st.sampled_from(INDEX),
    ties=st.booleans(),
)
def test_token_vs_dense_layout(seed, S, A, gamma, fdt, idt, ties):
    """The same MDP in both layouts: VI agrees bit for bit (a one-hot row sums exactly),
    PI agrees to rounding (functional-graph solve vs numpy.linalg.solve); all agree with each
    other within epsilon."""
    rng = np.random.default_rng(seed)
    token = TokenMDP(*random_token(rng, S, A, fdt, idt, ties=ties))
    dense = token.to_dense()
    live = ~token.terminal
    eps = 1e-7
    vt, vd = value_iteration(token, gamma, epsilon=eps), value_iteration(dense, gamma, epsilon=eps)
    np.testing.assert_array_equal(vt.values, vd.values)
    np.testing.assert_array_equal(vt.policy, vd.policy)
    assert vt.num_iter == vd.num_iter
    mt = modified_policy_iteration(token, gamma, epsilon=eps)
    md = modified_policy_iteration(dense, gamma, epsilon=eps)
    # (MPI's default start min R / (1 - gamma) also lands on the absorbing states of the dense
    # form, so the two runs differ, each within eps / 2 of v*)
    assert np.abs(mt.values - md.values).max() < eps
    assert (mt.values[~live] == 0).all()
    pt, pd = policy_iteration(token, gamma), policy_iteration(dense, gamma)
    assert pt.converged and pd.converged
    np.testing.assert_allclose(pt.values, pd.values, rtol=1e-10, atol=1e-10)
    for res in (vt, mt):
        assert np.abs(res.values - pt.values).max() < eps / 2 + 1e-9
    for pol in (vt.policy, mt.policy, md.policy, pd.policy):  # every policy is (eps-)optimal
        assert (evaluate_policy(token, pol, gamma) >= pt.values - eps - 1e-9).all()
    # evaluation: functional graph vs linear solve
    pol = rng.integers(0, A, S)
    np.testing.assert_allclose(
        evaluate_policy(token, pol, gamma),
        evaluate_policy(dense, pol, gamma),
        rtol=1e-10,
        atol=1e-10,
    )


@settings(max_examples=30)
@given(
    seed=st.integers(0, 2**32 - 1),
    S=st.integers(1, 9),
    A=st.integers(1, 4),
    gamma=st.floats(0.0, 0.99),
)
def test_operators_vs_numpy(seed, S, A, gamma):
    """Bellman backup and action values against independent NumPy formulas."""
    rng = np.random.default_rng(seed)
    token = TokenMDP(*random_token(rng, S, A))
    v = rng.standard_normal(S)
    v[token.terminal] = 0.0
    q = np.where(token.terminal[:, None], 0.0, token.reward + gamma * v[token.next_state])
    np.testing.assert_array_equal(action_values(token, v, gamma), q)
    tv, pol = bellman_backup(token, v, gamma)
    np.testing.assert_array_equal(tv, q.max(axis=1))
    np.testing.assert_array_equal(pol, q.argmax(axis=1))  # numpy: first maximum
    P, R = random_dense(rng, S, A)
    dense = DenseMDP(P, R)
    np.testing.assert_allclose(
        action_values(dense, v, gamma), R + gamma * P @ v, rtol=1e-12, atol=1e-12
    )


# ---------------------------------------------------------------------------------------------
# solver details


def test_backends_agree_exactly():
    rng = np.random.default_rng(7)
    token = TokenMDP(*random_token(rng, 40, 6, ties=True))
    dense = DenseMDP(*random_dense(rng, 12, 5, np.float32, ties=True))
    results = {}
    for b in fastlmrl.BACKENDS:
        with fastlmrl.use_backend(b):
            results[b] = [f(m, 0.95) for m in (token, dense) for f in SOLVERS]
    for b in ("numba", "cython"):
        for r, e in zip(results[b], results["python"]):
            np.testing.assert_array_equal(r.values, e.values)
            np.testing.assert_array_equal(r.policy, e.policy)
            assert (r.num_iter, r.converged) == (e.num_iter, e.converged)


def test_result_fields(backend):
    mdp = toy_mdp()
    vi = value_iteration(mdp, 0.5, epsilon=1e-4, max_iter=50)
    assert isinstance(vi, DPResult)
    assert (vi.method, vi.epsilon, vi.max_iter, vi.gamma, vi.k) == (
        "value iteration",
        1e-4,
        50,
        0.5,
        None,
    )
    np.testing.assert_array_equal(vi.q, action_values(mdp, vi.values, 0.5))
    np.testing.assert_array_equal(vi.policy, vi.q.argmax(axis=1))
    pi = policy_iteration(mdp, 0.5)
    assert (pi.method, pi.epsilon, pi.k) == ("policy iteration", None, None)
    mpi = modified_policy_iteration(mdp, 0.5, k=3)
    assert (mpi.method, mpi.epsilon, mpi.k) == ("modified policy iteration", 1e-6, 3)
    assert "values" in repr(vi) and "mdp" not in repr(vi)


def test_gamma_zero_is_one_step(backend):
    rng = np.random.default_rng(3)
    for mdp in (TokenMDP(*random_token(rng, 10, 4)), DenseMDP(*random_dense(rng, 5, 3))):
        R = mdp.reward if isinstance(mdp, TokenMDP) else mdp.R
        r_max = np.where(getattr(mdp, "terminal", np.zeros(mdp.num_states, bool)), 0, R.max(axis=1))
        for solver in SOLVERS:
            res = solver(mdp, 0.0, v_init=np.full(mdp.num_states, 9.0))
            assert res.converged
            np.testing.assert_array_equal(res.values, r_max)
            assert res.num_iter <= 2


def test_max_iter_reached(backend):
    mdp = chain(30)
    vi = value_iteration(mdp, 0.999, max_iter=3)
    assert (vi.converged, vi.num_iter) == (False, 3)
    mpi = modified_policy_iteration(mdp, 0.999, max_iter=2, k=1)
    assert (mpi.converged, mpi.num_iter) == (False, 2)
    # PI from a bad start needs several steps; with max_iter=1 it returns the evaluated policy
    start = np.where(np.arange(31) % 2 == 0, 100.0, -100.0)
    pi = policy_iteration(mdp, 0.9, max_iter=1, v_init=start)
    assert not pi.converged and pi.num_iter == 1
    np.testing.assert_allclose(pi.values, evaluate_policy(mdp, pi.policy, 0.9), rtol=0, atol=0)


def test_v_init_is_used_and_not_modified(backend):
    mdp = chain(8)
    v0 = np.linspace(-3, 3, 9)
    keep = v0.copy()
    a = value_iteration(mdp, 0.9, v_init=v0)
    b = value_iteration(mdp, 0.9)
    np.testing.assert_array_equal(v0, keep)
    assert a.num_iter != b.num_iter
    np.testing.assert_allclose(a.values, b.values, atol=1e-6)
    # the value of a terminal state is 0 whatever v_init says
    assert value_iteration(mdp, 0.9, v_init=v0, max_iter=1).values[-1] == 0.0


def test_mpi_k_zero_and_large(backend):
    rng = np.random.default_rng(11)
    mdp = DenseMDP(*random_dense(rng, 6, 3))
    v_star = policy_iteration(mdp, 0.9).values
    for k in (0, 1, 50):
        res = modified_policy_iteration(mdp, 0.9, k=k, epsilon=1e-8)
        assert res.converged
        np.testing.assert_allclose(res.values, v_star, atol=1e-8)


def test_non_contiguous_and_other_dtypes(backend):
    rng = np.random.default_rng(5)
    ns, r, term = random_token(rng, 9, 4)
    base = value_iteration(TokenMDP(ns, r, term), 0.9)
    other = TokenMDP(
        np.asfortranarray(ns.astype(np.int16)), np.asfortranarray(r), term.astype(np.int8)
    )
    assert other.next_state.dtype == np.int64 and other.next_state.flags.c_contiguous
    res = value_iteration(other, 0.9)
    np.testing.assert_array_equal(res.values, base.values)
    P, R = random_dense(rng, 4, 3)
    dense = DenseMDP(P.transpose(1, 0, 2).copy().transpose(1, 0, 2), R.astype(np.float32))
    assert dense.dtype == np.float64 and dense.P.flags.c_contiguous
    np.testing.assert_array_equal(
        value_iteration(dense, 0.9).values,
        value_iteration(DenseMDP(P, R.astype(np.float32)), 0.9).values,
    )
    assert DenseMDP(P.astype(np.float32), R.astype(np.float32)).dtype == np.float32
    assert TokenMDP(ns, r.astype(np.int64)).dtype == np.float64


@pytest.mark.parametrize("backend_name", ["numba", "cython"])
def test_large_token_mdp_policy_iteration(backend_name):
    """PI on a token MDP uses the O(S) evaluation: fine far beyond a dense solve's reach.
    (Compiled backends only: the reference is for small inputs.)"""
    import fastlmrl

    with fastlmrl.use_backend(backend_name):
        _large_token_mdp_policy_iteration()


def _large_token_mdp_policy_iteration():
    rng = np.random.default_rng(2)
    mdp = TokenMDP(*random_token(rng, 20_000, 8, p_terminal=0.01))
    pi = policy_iteration(mdp, 0.95)
    vi = value_iteration(mdp, 0.95, epsilon=1e-8)
    assert pi.converged and vi.converged
    assert np.abs(vi.values - pi.values).max() < 1e-8


# ---------------------------------------------------------------------------------------------
# bad input


def test_token_mdp_bad_input():
    ns = np.array([[1, 2], [2, 0], [0, 0]])
    r = np.ones((3, 2))
    with pytest.raises(TypeError, match="next_state"):
        TokenMDP(ns.astype(float), r)
    with pytest.raises(ValueError, match="next_state"):
        TokenMDP(ns[0], r)
    with pytest.raises(ValueError, match="next_state"):
        TokenMDP(np.zeros((0, 2), np.int64), np.zeros((0, 2)))
    with pytest.raises(ValueError, match="next_state"):
        TokenMDP(np.zeros((2, 0), np.int64), np.zeros((2, 0)))
    with pytest.raises(ValueError, match="too large"):
        TokenMDP(np.full((3, 2), 2**63, dtype=np.uint64), r)
    for bad, where in ((-1, (1, 0)), (3, (2, 1))):
        x = ns.copy()
        x[where] = bad
        with pytest.raises(ValueError, match=rf"next_state\[{where[0]}, {where[1]}\] = {bad}"):
            TokenMDP(x, r)
        TokenMDP(x, r, terminal=[i == where[0] for i in range(3)])  # terminal rows: padding ok
    with pytest.raises(TypeError, match="reward"):
        TokenMDP(ns, r.astype(complex))
    with pytest.raises(TypeError, match="reward"):
        TokenMDP(ns, np.full((3, 2), "a"))
    with pytest.raises(ValueError, match="reward"):
        TokenMDP(ns, np.ones((3, 3)))
    for bad in (np.nan, np.inf, -np.inf):
        x = r.copy()
        x[2, 1] = bad
        with pytest.raises(ValueError, match=r"reward\[2, 1\]"):
            TokenMDP(ns, x)
        TokenMDP(ns, x, terminal=[0, 0, 1])
    with pytest.raises(ValueError, match="terminal"):
        TokenMDP(ns, r, terminal=[True, False])
    with pytest.raises(TypeError, match="terminal"):
        TokenMDP(ns, r, terminal=[0.5, 0, 0])
    with pytest.raises(ValueError, match="terminal"):
        TokenMDP(ns, r, terminal=[2, 0, 0])


def test_dense_mdp_bad_input():
    P = np.full((2, 3, 2), 0.5)
    R = np.zeros((2, 3))
    with pytest.raises(TypeError, match="P"):
        DenseMDP(P.astype(complex), R)
    with pytest.raises(ValueError, match="P must have shape"):
        DenseMDP(P[0], R)
    with pytest.raises(ValueError, match="P must have shape"):
        DenseMDP(np.full((2, 3, 3), 1 / 3), R)
    with pytest.raises(ValueError, match="empty"):
        DenseMDP(np.zeros((0, 3, 0)), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="R must have shape"):
        DenseMDP(P, R.T)
    with pytest.raises(TypeError, match="R"):
        DenseMDP(P, R.astype(str))
    x = P.copy()
    x[1, 2] = [1.5, -0.5]
    with pytest.raises(ValueError, match=r"P\[1, 2, 1\] = -0.5 is negative"):
        DenseMDP(x, R)
    x = P.copy()
    x[0, 1] = [0.5, 0.49]
    with pytest.raises(ValueError, match=r"P\[0, 1, :\] sums to"):
        DenseMDP(x, R)
    x[0, 1] = [0.5, 0.49995]  # off by 5e-5: accepted in float32 (tolerance 1e-4) only
    DenseMDP(x.astype(np.float32), R.astype(np.float32))
    with pytest.raises(ValueError, match="sums to"):
        DenseMDP(x, R)
    for bad in (np.nan, np.inf):
        x = P.copy()
        x[1, 0, 1] = bad
        with pytest.raises(ValueError, match=r"P\[1, 0, 1\]"):
            DenseMDP(x, R)
        y = R.copy()
        y[0, 2] = bad
        with pytest.raises(ValueError, match=r"R\[0, 2\]"):
            DenseMDP(P, y)


@pytest.mark.parametrize("solver", SOLVERS)
def test_solver_bad_arguments(solver):
    mdp = toy_mdp()
    dense = mdp.to_dense()
    with pytest.raises(TypeError, match="mdp"):
        solver((mdp.next_state, mdp.reward), 0.9)
    for g in (-0.1, 1.5, np.nan, np.inf):
        with pytest.raises(ValueError, match="gamma"):
            solver(mdp, g)
    for g in ("0.9", True, None):
        with pytest.raises(TypeError, match="gamma"):
            solver(mdp, g)
    with pytest.raises(ValueError, match="DenseMDP"):
        solver(dense, 1.0)
    with pytest.raises(ValueError, match="acyclic"):
        solver(TokenMDP([[1], [0], [2]], np.zeros((3, 1)), [0, 0, 1]), 1.0)
    with pytest.raises(ValueError, match="state 2"):  # 2 -> 0 -> 1 -> 3 (terminal), 2 -> 2
        solver(TokenMDP([[1, 1], [3, 3], [0, 2], [0, 0]], np.zeros((4, 2)), [0, 0, 0, 1]), 1.0)
    for m in (0, -3):
        with pytest.raises(ValueError, match="max_iter"):
            solver(mdp, 0.9, max_iter=m)
    for m in (2.0, True):
        with pytest.raises(TypeError, match="max_iter"):
            solver(mdp, 0.9, max_iter=m)
    with pytest.raises(ValueError, match="v_init"):
        solver(mdp, 0.9, v_init=np.zeros(3))
    with pytest.raises(ValueError, match=r"v_init\[1\] = nan"):
        solver(mdp, 0.9, v_init=[0, np.nan, 0, 0])
    with pytest.raises(TypeError, match="v_init"):
        solver(mdp, 0.9, v_init=["a"] * 4)
    if solver is not policy_iteration:
        for e in (0.0, -1e-3, np.nan, np.inf):
            with pytest.raises(ValueError, match="epsilon"):
                solver(mdp, 0.9, epsilon=e)
    if solver is modified_policy_iteration:
        with pytest.raises(ValueError, match="k"):
            solver(mdp, 0.9, k=-1)
        with pytest.raises(TypeError, match="k"):
            solver(mdp, 0.9, k=2.5)


def test_operator_bad_arguments():
    mdp = toy_mdp()
    for f in (bellman_backup, action_values):
        with pytest.raises(TypeError, match="mdp"):
            f("mdp", np.zeros(4), 0.5)
        with pytest.raises(ValueError, match="values"):
            f(mdp, np.zeros(5), 0.5)
        with pytest.raises(ValueError, match="values"):
            f(mdp, [0, 0, np.inf, 0], 0.5)
        with pytest.raises(ValueError, match="gamma"):
            f(mdp, np.zeros(4), 2.0)
        f(mdp.to_dense(), np.zeros(4), 1.0)  # one backup is always defined
    with pytest.raises(ValueError, match=r"policy\[2\] = 2"):
        evaluate_policy(mdp, [0, 0, 2, 0], 0.5)
    with pytest.raises(ValueError, match=r"policy\[0\] = -1"):
        evaluate_policy(mdp.to_dense(), [-1, 0, 0, 0], 0.5)
    with pytest.raises(TypeError, match="policy"):
        evaluate_policy(mdp, [0.0, 0, 0, 0], 0.5)
    with pytest.raises(ValueError, match="policy"):
        evaluate_policy(mdp, [0, 0, 0], 0.5)
    with pytest.raises(ValueError, match="DenseMDP"):
        evaluate_policy(mdp.to_dense(), [0, 0, 0, 0], 1.0)
    # gamma = 1 needs only the policy's own graph to be acyclic
    loop = TokenMDP([[1, 2], [0, 2], [0, 0]], np.ones((3, 2)), [0, 0, 1])
    np.testing.assert_array_equal(evaluate_policy(loop, [1, 1, 0], 1.0), [1, 1, 0])
    with pytest.raises(ValueError, match="acyclic"):
        evaluate_policy(loop, [0, 0, 0], 1.0)


def test_nothing_modified(backend):
    """No argument is ever written, on success or on error; arrays changed after construction
    are caught by the kernels' pre-pass and reported by name."""
    rng = np.random.default_rng(1)
    ns, r, term = random_token(rng, 6, 3)
    term[-1] = True
    mdp = TokenMDP(ns, r, term)
    P, R = random_dense(rng, 4, 2)
    dense = DenseMDP(P, R)
    arrays = [mdp.next_state, mdp.reward, mdp.terminal, dense.P, dense.R]
    copies = [a.copy() for a in arrays]
    v0 = rng.standard_normal(6)
    v0_copy = v0.copy()
    pol = np.zeros(6, np.int64)
    for solver in SOLVERS:
        solver(mdp, 0.9, v_init=v0)
        solver(dense, 0.9)
        with pytest.raises(ValueError):
            solver(mdp, 0.9, v_init=v0, max_iter=0)
    bellman_backup(mdp, v0, 0.9)
    action_values(mdp, v0, 0.9)
    evaluate_policy(mdp, pol, 0.9)
    for a, c in zip(arrays + [v0, pol], copies + [v0_copy, np.zeros(6, np.int64)]):
        np.testing.assert_array_equal(a, c)
    # corrupt the MDP after construction: the kernels refuse, the error names the entry
    live = int(np.flatnonzero(~mdp.terminal)[0])
    mdp.next_state[live, 1] = 99
    for call in (
        lambda: value_iteration(mdp, 0.9),
        lambda: policy_iteration(mdp, 0.9),
        lambda: modified_policy_iteration(mdp, 0.9),
        lambda: bellman_backup(mdp, v0, 0.9),
        lambda: action_values(mdp, v0, 0.9),
        lambda: evaluate_policy(mdp, pol, 0.9),
    ):
        with pytest.raises(ValueError, match=rf"next_state\[{live}, 1\] = 99"):
            call()
    mdp.next_state[live, 1] = 0
    mdp.reward[live, 2] = np.nan
    with pytest.raises(ValueError, match=rf"reward\[{live}, 2\] = nan"):
        value_iteration(mdp, 0.9)
    dense.R[3, 1] = np.inf
    with pytest.raises(ValueError, match=r"R\[3, 1\] = inf"):
        modified_policy_iteration(dense, 0.9)
    np.testing.assert_array_equal(v0, v0_copy)


# ---------------------------------------------------------------------------------------------
# array shapes (direct callers)

SHAPE_KERNELS = sorted(importlib.import_module("fastlmrl._python.dynamic_programming").__all__)


@pytest.mark.parametrize("kernel", SHAPE_KERNELS)
def test_inconsistent_array_shapes_are_rejected_first(compiled, reference, kernel):
    S, A = 3, 2
    token = dict(
        next_state=np.array([[1, 2], [2, 0], [0, 0]], np.int64),
        reward=np.linspace(-1.0, 1.0, S * A).reshape(S, A),
        terminal=np.array([0, 0, 1], np.uint8),
    )
    P = np.full((S, A, S), 1.0 / S)
    dense = dict(P=P, R=np.linspace(-1.0, 1.0, S * A).reshape(S, A))
    v, policy = np.array([0.5, -1.0, 0.0]), np.array([1, 0, 0], np.int64)

    def vec(fill=-7.0):
        return np.full(S, fill, np.float64 if isinstance(fill, float) else np.int64)

    layout, name = kernel.split("_mdp_")
    mdp = token if layout == "token" else dense
    args = {
        "bellman_backup": dict(**mdp, gamma=0.9, v=v, v_out=vec(), policy_out=vec(-7)),
        "action_values": dict(**mdp, gamma=0.9, v=v, q_out=np.full((S, A), -7.0)),
        "policy_sweeps": dict(**mdp, policy=policy, gamma=0.9, k=3, v=v, v_tmp=vec()),
        "policy_value": dict(
            **mdp, policy=policy, gamma=0.9, v_out=vec(), work=np.full(2 * S, -7, np.int64)
        ),
        "find_cycle": dict(
            next_state=token["next_state"],
            terminal=token["terminal"],
            found_out=np.full(1, -7, np.int64),
            work=np.full(3 * S, -7, np.int64),
        ),
        "value_iteration": dict(
            **mdp,
            gamma=0.9,
            tol=1e-6,
            max_iter=50,
            v=v,
            v_tmp=vec(),
            policy_out=vec(-7),
            info_out=np.full(2, -7, np.int64),
        ),
    }[name]
    # find_cycle reads no reward: the number of actions is free
    skip = {("next_state", 1)} if name == "find_cycle" else set()
    for module in (reference, compiled):
        assert_rejects_bad_shapes(topic(module), kernel, args, skip=skip)


def test_bad_shapes_status_is_an_internal_error():
    # never reached through the public API (the wrappers pass consistent shapes); still mapped
    mdp = TokenMDP(np.zeros((1, 1), np.int64), np.zeros((1, 1)))
    args = (mdp.next_state, mdp.reward, mdp.terminal.view(np.uint8), 0.5, np.zeros(1))
    args += (np.zeros(1), np.zeros(1, np.int64))
    with pytest.raises(ValueError, match="internal error: array arguments of inconsistent shapes"):
        fastlmrl.dynamic_programming._finish(BAD_SHAPES, "token_mdp_bellman_backup", args)
