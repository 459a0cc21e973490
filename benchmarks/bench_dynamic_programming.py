"""Dynamic programming: one Bellman optimality sweep and a full value iteration, backend × size.

Token (deterministic) MDPs of (S, A) in {(1024, 16), (65536, 64)}: uniformly random next states
(int32) and rewards (float32), 1% terminal states; a dense MDP of (S, A, S) = (256, 16, 256) in
float64.  The raw kernels are timed with outputs preallocated.  ``items`` = state-action backups
per call: S·A for a sweep, S·A·(iterations + 1) for value iteration (gamma = 0.9, epsilon = 1e-6:
about 160 sweeps, plus the final greedy sweep).  The pure-Python reference runs the small token
size and the dense size only, and its value iteration is capped at ``PYTHON_VI_SWEEPS`` sweeps.

    pytest benchmarks/bench_dynamic_programming.py --benchmark-enable --benchmark-group-by=group \
        --benchmark-columns=mean,ops
"""

import numpy as np
import pytest
from conftest import measure, size_id

TOKEN_SIZES = [(1024, 16), (65536, 64)]
DENSE_SIZE = (256, 16)
GAMMA = 0.9
EPSILON = 1e-6
TOL = EPSILON * (1 - GAMMA) / (2 * GAMMA)  # the public value_iteration's stopping threshold
PYTHON_VI_SWEEPS = 3


def token_mdp(size, seed=0):
    rng = np.random.default_rng(seed)
    n_states, n_actions = size
    next_state = rng.integers(0, n_states, size).astype(np.int32)
    reward = rng.random(size, dtype=np.float64).astype(np.float32)
    terminal = (rng.random(n_states) < 0.01).astype(np.uint8)
    return next_state, reward, terminal


def dense_mdp(size, seed=0):
    rng = np.random.default_rng(seed)
    n_states, n_actions = size
    P = rng.random((n_states, n_actions, n_states))
    P /= P.sum(axis=2, keepdims=True)
    return P, rng.random(size)


def skip_large_reference(name, size):
    if name == "python" and size[0] * size[1] > 100_000:
        pytest.skip("the reference runs the small sizes only")


@pytest.mark.parametrize("size", TOKEN_SIZES, ids=size_id)
def test_token_bellman_backup(benchmark, kernels, size):
    name, module = kernels
    skip_large_reference(name, size)
    next_state, reward, terminal = token_mdp(size)
    v = np.random.default_rng(1).random(size[0])
    v_out = np.empty(size[0])
    policy = np.empty(size[0], np.int64)
    status = measure(
        benchmark,
        module.token_mdp_bellman_backup,
        next_state,
        reward,
        terminal,
        GAMMA,
        v,
        v_out,
        policy,
        items=size[0] * size[1],
        group=f"dp bellman_backup token {size_id(size)}",
    )
    assert status == 0


@pytest.mark.parametrize("size", TOKEN_SIZES, ids=size_id)
def test_token_value_iteration(benchmark, kernels, size):
    name, module = kernels
    skip_large_reference(name, size)
    next_state, reward, terminal = token_mdp(size)
    max_iter = PYTHON_VI_SWEEPS if name == "python" else 10_000
    v0 = np.where(terminal, 0.0, reward.max(axis=1))  # the public default start
    v, v_tmp = np.empty(size[0]), np.empty(size[0])
    policy = np.empty(size[0], np.int64)
    info = np.zeros(2, np.int64)

    def run():
        v[:] = v0
        return module.token_mdp_value_iteration(
            next_state, reward, terminal, GAMMA, TOL, max_iter, v, v_tmp, policy, info
        )

    run()
    sweeps = int(info[0]) + 1
    status = measure(
        benchmark,
        run,
        items=size[0] * size[1] * sweeps,
        rounds=3,
        group=f"dp value_iteration token {size_id(size)}",
    )
    assert status == 0
    benchmark.extra_info["sweeps"] = sweeps
    benchmark.extra_info["converged"] = bool(info[1])


def test_dense_bellman_backup(benchmark, kernels):
    name, module = kernels
    P, R = dense_mdp(DENSE_SIZE)
    n_states = DENSE_SIZE[0]
    v = np.random.default_rng(1).random(n_states)
    v_out = np.empty(n_states)
    policy = np.empty(n_states, np.int64)
    status = measure(
        benchmark,
        module.dense_mdp_bellman_backup,
        P,
        R,
        GAMMA,
        v,
        v_out,
        policy,
        items=n_states * DENSE_SIZE[1],
        group=f"dp bellman_backup dense S{n_states}xA{DENSE_SIZE[1]}xS{n_states}",
    )
    assert status == 0


def test_dense_value_iteration(benchmark, kernels):
    name, module = kernels
    P, R = dense_mdp(DENSE_SIZE)
    n_states = DENSE_SIZE[0]
    max_iter = PYTHON_VI_SWEEPS if name == "python" else 10_000
    v0 = R.max(axis=1)
    v, v_tmp = np.empty(n_states), np.empty(n_states)
    policy = np.empty(n_states, np.int64)
    info = np.zeros(2, np.int64)

    def run():
        v[:] = v0
        return module.dense_mdp_value_iteration(P, R, GAMMA, TOL, max_iter, v, v_tmp, policy, info)

    run()
    sweeps = int(info[0]) + 1
    status = measure(
        benchmark,
        run,
        items=n_states * DENSE_SIZE[1] * sweeps,
        rounds=3,
        group=f"dp value_iteration dense S{n_states}xA{DENSE_SIZE[1]}xS{n_states}",
    )
    assert status == 0
    benchmark.extra_info["sweeps"] = sweeps
    benchmark.extra_info["converged"] = bool(info[1])
