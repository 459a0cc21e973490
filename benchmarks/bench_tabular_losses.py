"""Benchmarks: PPO loss + gradient of a tabular policy (one softmax per distinct context), and the
minibatch permutation.

    pytest benchmarks/bench_tabular_losses.py --benchmark-enable --benchmark-group-by=group \\
        --benchmark-columns=mean,ops

``ppo_loss_tabular``: N tokens over U distinct contexts of an (S, V) float32 table, as in one PPO
minibatch of ``fastlmrl.PPOTrainer`` on the character task (S = V**2).  Implementations: the
python reference (a small batch), numba, cython; ``numpy_grouped`` (the same algorithm in NumPy:
``np.unique`` + per-row softmax + ``np.bincount`` sums) and ``numpy_dense`` (the per-token loss
on the gathered ``table[contexts]`` rows, then the gradient rows summed per context by a stable
argsort + ``np.add.reduceat``).  Items = tokens.

``a2c_loss_tabular``: the same batches, A2C with the entropy bonus (python, numba, cython).

``permutation``: the stable argsort of n counter-based uniforms (:func:`fastlmrl.permutation`)
against ``np.argsort(fastlmrl.rng.uniforms(...), kind="stable")``, the same permutation.
"""

import functools
import sys
from pathlib import Path

import numpy as np
import pytest

import fastlmrl
from fastlmrl.rng import RandomStream, uniforms

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import measure  # noqa: E402
from numpy_trainers import ppo_loss, ppo_loss_grouped, scatter_rows  # noqa: E402

# (S, V, N tokens, U distinct contexts)
CASES = [(2704, 52, 8192, 330), (9604, 98, 32768, 2000), (65536, 64, 65536, 20000)]
IMPLS = ["python", "numba", "cython", "numpy_grouped", "numpy_dense"]
PYTHON_TOKENS = 256


def case_id(case):
    s, v, n, u = case
    return f"S{s}xV{v}_N{n}_U{u}"


@functools.cache
def data(case):
    s, v, n, u = case
    rng = np.random.default_rng(0)
    table = (2.0 * rng.standard_normal((s, v))).astype(np.float32)
    pool = rng.choice(s, size=u, replace=False)
    contexts = pool[rng.integers(0, u, n)]
    tokens = rng.integers(0, v, n)
    old = rng.standard_normal(n) * 0.1 - 3.0
    adv = rng.standard_normal(n)
    w = np.full(n, 1.0 / n)
    return table, contexts, tokens, old, adv, w


def numpy_dense(table, contexts, tokens, old, adv, w):
    _, grad, *_ = ppo_loss(table[contexts], tokens, old, adv, w, 0.2, 0.2)
    return scatter_rows(contexts, grad)


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("impl", IMPLS)
def test_ppo_loss_tabular(benchmark, impl, case):
    table, contexts, tokens, old, adv, w = data(case)
    n = PYTHON_TOKENS if impl == "python" else contexts.shape[0]
    args = (table, contexts[:n], tokens[:n], old[:n], adv[:n], w[:n])
    group = f"ppo_loss_tabular {case_id(case)}"
    if impl == "numpy_grouped":
        measure(
            benchmark, lambda: ppo_loss_grouped(*args, 0.2, 0.2), items=n, group=group, rounds=10
        )
    elif impl == "numpy_dense":
        measure(benchmark, numpy_dense, *args, items=n, group=group, rounds=5)
    else:
        with fastlmrl.use_backend(impl):
            measure(
                benchmark,
                fastlmrl.ppo_loss_tabular,
                *args,
                items=n,
                group=group,
                rounds=3 if impl == "python" else 30,
            )


@pytest.mark.parametrize("case", CASES[:2], ids=case_id)
@pytest.mark.parametrize("impl", ["python", "numba", "cython"])
def test_a2c_loss_tabular(benchmark, impl, case):
    """A2C with the entropy bonus (the row entropy and its gradient per visited row)."""
    table, contexts, tokens, old, adv, w = data(case)
    n = PYTHON_TOKENS if impl == "python" else contexts.shape[0]
    args = (table, contexts[:n], tokens[:n], adv[:n], old[:n], adv[:n], w[:n])
    with fastlmrl.use_backend(impl):
        measure(
            benchmark,
            fastlmrl.a2c_loss_tabular,
            *args,
            items=n,
            group=f"a2c_loss_tabular {case_id(case)}",
            rounds=3 if impl == "python" else 30,
        )


@pytest.mark.parametrize("n", [32768, 1_000_000])
@pytest.mark.parametrize("impl", ["numba", "cython", "numpy"])
def test_permutation(benchmark, impl, n):
    stream = RandomStream(0)  # advances every round: fresh uniforms each time
    group = f"permutation n={n}"
    if impl == "numpy":
        measure(
            benchmark,
            lambda: np.argsort(uniforms(stream, n), kind="stable"),
            items=n,
            group=group,
            rounds=10,
        )
    else:
        with fastlmrl.use_backend(impl):
            measure(benchmark, fastlmrl.permutation, stream, n, items=n, group=group, rounds=20)
