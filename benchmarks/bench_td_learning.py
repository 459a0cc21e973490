"""Tabular TD updates: backend × kernel × size; items are transitions per call.

Run: pytest benchmarks/bench_td_learning.py --benchmark-enable --benchmark-group-by=group

Includes rlax.q_learning under jax.lax.scan when jax and rlax are installed (skipped otherwise):
the same sequential semantics (each transition sees the previous ones), float32.
"""

import numpy as np
import pytest
from conftest import BATCH, SIZES, measure, random_table, size_id

from fastlmrl.rng import stream_key

KERNELS = ("q_learning_update", "sarsa_update", "expected_sarsa_update", "double_q_learning_update")


def _transitions(size, n, seed=0):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, size[0], n)
    return dict(
        s=s,
        a=rng.integers(0, size[1], n),
        r=rng.standard_normal(n).astype(np.float32),
        s2=rng.integers(0, size[0], n),
        a2=rng.integers(0, size[1], n),
        t=(rng.random(n) < 0.05).view(np.uint8),
    )


@pytest.mark.parametrize("size", SIZES, ids=size_id)
@pytest.mark.parametrize("kernel", KERNELS)
def test_td_update(benchmark, kernels, kernel, size):
    name, module = kernels
    n = BATCH[name] if size[1] < 1000 else (20 if name == "python" else 2000)
    q = random_table(size, np.float32)
    b = _transitions(size, n)
    td = np.empty(n, np.float32)
    fn = getattr(module, kernel)
    args = {
        "q_learning_update": (q, b["s"], b["a"], b["r"], b["s2"], b["t"], 0.1, 0.9, td),
        "sarsa_update": (q, b["s"], b["a"], b["r"], b["s2"], b["a2"], b["t"], 0.1, 0.9, td),
        "expected_sarsa_update": (q, b["s"], b["a"], b["r"], b["s2"], b["t"], 0.1, 0.9, 0.1, td),
        "double_q_learning_update": (
            q,
            q.copy(),
            b["s"],
            b["a"],
            b["r"],
            b["s2"],
            b["t"],
            0.1,
            0.9,
            np.uint64(stream_key(0)),
            np.uint64(0),
            td,
        ),
    }[kernel]
    measure(benchmark, fn, *args, items=n, group=f"{kernel} {size_id(size)}")


@pytest.mark.parametrize("size", [(1024, 16), (65536, 64)], ids=size_id)
def test_q_learning_public_api(benchmark, size):
    """The checked public function (validation + allocation + numba kernel)."""
    import fastlmrl

    n = 1_000_000
    q = random_table(size, np.float32)
    b = _transitions(size, n)
    terminated = b["t"].view(np.bool_)
    measure(
        benchmark,
        fastlmrl.q_learning_update,
        q,
        b["s"],
        b["a"],
        b["r"],
        b["s2"],
        terminated,
        0.1,
        0.9,
        items=n,
        group=f"q_learning_update {size_id(size)}",
    )


@pytest.mark.parametrize("size", [(1024, 16)], ids=size_id)
def test_q_learning_rlax_scan(benchmark, size):
    jax = pytest.importorskip("jax")
    rlax = pytest.importorskip("rlax")
    import jax.numpy as jnp

    n = 100_000
    b = _transitions(size, n)
    alpha, gamma = 0.1, 0.9

    def step(q, x):
        s, a, r, s2, t = x
        discount = gamma * (1.0 - t)
        td = rlax.q_learning(q[s], a, r, discount, q[s2])
        return q.at[s, a].add(alpha * td), td

    @jax.jit
    def run(q, xs):
        return jax.lax.scan(step, q, xs)

    q = jnp.asarray(random_table(size, np.float32))
    xs = tuple(jnp.asarray(v) for v in (b["s"], b["a"], b["r"], b["s2"], b["t"].astype(np.float32)))

    def call():
        out = run(q, xs)
        out[0].block_until_ready()

    measure(benchmark, call, items=n, group=f"q_learning_update {size_id(size)}")
