"""A Numba user calls fastlmrl's raw kernels from their own @njit function."""

import numpy as np
from numba import njit

import fastlmrl
from fastlmrl import numba_kernels
from fastlmrl.rng import stream_key


@njit
def _user_training_loop(q, states, actions, rewards, next_states, terminated, td, epochs):
    total = 0
    for _ in range(epochs):
        total += numba_kernels.q_learning_update(
            q, states, actions, rewards, next_states, terminated, 0.5, 0.9, td
        )
    return total


@njit
def _user_rollout(q, key, out):
    states = np.zeros(out.shape[0], np.int64)
    return numba_kernels.epsilon_greedy(q, states, 0.25, key, np.uint64(0), out, 1)


def test_kernels_are_callable_from_user_njit_code():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((5, 3))
    s, a, s2 = rng.integers(0, 5, 20), rng.integers(0, 3, 20), rng.integers(0, 5, 20)
    r, t = rng.standard_normal(20), rng.random(20) < 0.2
    td = np.empty(20)
    mine = q.copy()
    assert _user_training_loop(mine, s, a, r, s2, t.view(np.uint8), td, 3) == 0
    expected = q.copy()
    for _ in range(3):
        fastlmrl.q_learning_update(expected, s, a, r, s2, t, 0.5, 0.9)
    np.testing.assert_array_equal(mine, expected)


def test_status_code_protects_user_code_from_bad_ids():
    q = np.zeros((2, 2))
    td = np.empty(1)
    bad = np.array([5])
    status = _user_training_loop(q, bad, bad * 0, np.ones(1), bad * 0, np.zeros(1, np.uint8), td, 1)
    assert status == 1 and (q == 0).all()


def test_random_kernel_from_user_code_matches_public_api():
    q = np.random.default_rng(1).standard_normal((1, 6))
    out = np.empty(100, np.int64)
    assert _user_rollout(q, np.uint64(stream_key(8)), out) == 0
    np.testing.assert_array_equal(out, fastlmrl.epsilon_greedy(q, np.zeros(100, int), 0.25, 8))
