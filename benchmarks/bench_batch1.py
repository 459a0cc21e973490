"""Batch-1 cost (issue 14): one transition per call, against NumPy's own one-line update.

Run (one command, baselines and our calls in the same run -- quote ratios, not absolute times):

    pytest benchmarks/bench_batch1.py --benchmark-enable --benchmark-group-by=group

Groups:

* ``q_learning_update batch 1 from Python``: NumPy's
  ``q[s, a] += alpha * (r + gamma * q[s2].max() - q[s, a])`` (Python scalars) against the public
  ``fastlmrl.q_learning_update`` with length-1 arrays (int64 ids, float64 rewards, bool
  terminated: the direct call) under each backend, and with one-element lists (the full
  validation).  Target (issue 14): ≤ 1.5x NumPy.  The summary's ``xnumpy`` column is the ratio.
* ``epsilon_greedy batch 1 from Python``: NumPy's own ε-greedy choice for one state,
  ``rng.integers(V) if rng.random() < eps else q[s].argmax()`` (``rng`` a
  ``numpy.random.Generator``, as a NumPy user writes it; it returns a scalar, ours an int64
  array of one), against the public ``fastlmrl.epsilon_greedy(q, states, eps, stream)`` with a
  ``RandomStream`` and a length-1 int64 array (the direct call of ``epsilon_greedy_one``) under
  each backend, and with a one-element list.  ε = 0.1, a (1024, 16) float64 table.  Target
  (issue 14): ≤ 1.5x NumPy.
* ``q_learning_update batch 1 in @njit``: a user's ``@njit`` loop over 100k transitions calling
  ``numba_kernels.q_learning_update_one`` per transition, against the same update written inline
  and against the batched kernel called on length-1 slices.  Target: ≤ 30 ns per transition.
"""

import numpy as np
import pytest
from conftest import measure
from numba import njit

import fastlmrl
from fastlmrl import numba_kernels

SIZE = (1024, 16)
ALPHA, GAMMA = 0.1, 0.9


def _one_transition(seed=0):
    rng = np.random.default_rng(seed)
    return (
        int(rng.integers(0, SIZE[0])),
        int(rng.integers(0, SIZE[1])),
        float(rng.standard_normal()),
        int(rng.integers(0, SIZE[0])),
    )


@pytest.mark.parametrize("variant", ["numpy", "cython", "numba", "python", "cython-lists"])
def test_q_learning_batch1_from_python(benchmark, variant):
    q = np.random.default_rng(1).standard_normal(SIZE)
    s, a, r, s2 = _one_transition()
    group = "q_learning_update batch 1 from Python"
    if variant == "numpy":

        def update():
            q[s, a] += ALPHA * (r + GAMMA * q[s2].max() - q[s, a])

        measure(benchmark, update, items=1, group=group)
        return
    backend = variant.split("-")[0]
    if variant.endswith("lists"):
        args = ([s], [a], [r], [s2], [False])
    else:
        args = (np.array([s]), np.array([a]), np.array([r]), np.array([s2]), np.array([False]))
    fastlmrl.set_backend(backend)
    try:
        fastlmrl.get_backend()
        measure(benchmark, fastlmrl.q_learning_update, q, *args, ALPHA, GAMMA, items=1, group=group)
    finally:
        fastlmrl.set_backend(None)


EPSILON = 0.1


@pytest.mark.parametrize("variant", ["numpy", "cython", "numba", "python", "cython-lists"])
def test_epsilon_greedy_batch1_from_python(benchmark, variant):
    q = np.random.default_rng(1).standard_normal(SIZE)
    s = _one_transition()[0]
    group = "epsilon_greedy batch 1 from Python"
    if variant == "numpy":
        rng = np.random.default_rng(3)
        n_actions = q.shape[1]

        def choose():
            return rng.integers(n_actions) if rng.random() < EPSILON else q[s].argmax()

        measure(benchmark, choose, items=1, group=group)
        return
    backend = variant.split("-")[0]
    states = [s] if variant.endswith("lists") else np.array([s])
    fastlmrl.set_backend(backend)
    try:
        fastlmrl.get_backend()
        measure(
            benchmark,
            fastlmrl.epsilon_greedy,
            q,
            states,
            EPSILON,
            fastlmrl.RandomStream(3),
            items=1,
            group=group,
        )
    finally:
        fastlmrl.set_backend(None)


@njit(cache=True)
def _inline_loop(q, s, a, r, s2, t, alpha, gamma):
    for i in range(s.shape[0]):
        target = r[i]
        if not t[i]:
            target += gamma * q[s2[i]].max()
        q[s[i], a[i]] += alpha * (target - q[s[i], a[i]])


@njit(cache=True)
def _one_loop(q, s, a, r, s2, t, alpha, gamma):
    bad = 0
    for i in range(s.shape[0]):
        status, td = numba_kernels.q_learning_update_one(
            q, s[i], a[i], r[i], s2[i], t[i] != 0, alpha, gamma
        )
        bad += status
    return bad


@njit(cache=True)
def _batch1_loop(q, s, a, r, s2, t, alpha, gamma, td):
    bad = 0
    for i in range(s.shape[0]):
        bad += numba_kernels.q_learning_update(
            q,
            s[i : i + 1],
            a[i : i + 1],
            r[i : i + 1],
            s2[i : i + 1],
            t[i : i + 1],
            alpha,
            gamma,
            td[i : i + 1],
        )
    return bad


@pytest.mark.parametrize("variant", ["inline", "numba-one", "numba-batch1"])
def test_q_learning_batch1_in_njit(benchmark, variant):
    n = 100_000
    rng = np.random.default_rng(2)
    q = rng.standard_normal(SIZE)
    s, a = rng.integers(0, SIZE[0], n), rng.integers(0, SIZE[1], n)
    r, s2 = rng.standard_normal(n), rng.integers(0, SIZE[0], n)
    t = (rng.random(n) < 0.05).view(np.uint8)
    group = "q_learning_update batch 1 in @njit"
    if variant == "inline":
        measure(benchmark, _inline_loop, q, s, a, r, s2, t, ALPHA, GAMMA, items=n, group=group)
    elif variant == "numba-one":
        assert _one_loop(q, s, a, r, s2, t, ALPHA, GAMMA) == 0
        measure(benchmark, _one_loop, q, s, a, r, s2, t, ALPHA, GAMMA, items=n, group=group)
    else:
        td = np.empty(n)
        measure(benchmark, _batch1_loop, q, s, a, r, s2, t, ALPHA, GAMMA, td, items=n, group=group)
