"""Benchmarks: GRPO / RLOO advantages, loss weights and the GSPO sequence ratio.

    pytest benchmarks/bench_group_advantages.py --benchmark-enable --benchmark-group-by=group

Backends: raw kernels of python / numba / cython (the reference on a smaller batch) and NumPy
vectorised versions.  ``items`` = sequences (advantages) or tokens (weights, ratios) per call.
"""

import numpy as np
import pytest
from conftest import measure

# (number of sequences B, group size K) and (B, T) token grids
GROUPS = [(256, 8), (65536, 16)]
GRIDS = [(64, 256), (1024, 1024)]
REFERENCE_SEQUENCES = 4096
REFERENCE_ROWS = 4


def group_id(g):
    return f"B{g[0]}xK{g[1]}"


def grid_id(g):
    return f"B{g[0]}xT{g[1]}"


def group_batch(n, k, seed=0):
    rng = np.random.default_rng(seed)
    r = rng.standard_normal(n).astype(np.float32)
    ids = np.arange(n, dtype=np.int64) // k
    return r, ids, n // k


@pytest.mark.parametrize("groups", GROUPS, ids=group_id)
@pytest.mark.parametrize("kernel", ["grpo", "rloo"])
def test_group_advantages(benchmark, kernels, kernel, groups):
    name, module = kernels
    n, k = groups
    if name == "python":
        n = min(n, REFERENCE_SEQUENCES)
    r, ids, n_groups = group_batch(n, k)
    out = np.empty_like(r)
    if kernel == "grpo":
        fn = module.grpo_advantages
        args = (
            r,
            ids,
            1,
            1e-4,
            1,
            np.empty(n_groups),
            np.empty(n_groups),
            np.empty(n_groups, dtype=np.int64),
            out,
        )
    else:
        fn = module.rloo_advantages
        args = (r, ids, np.empty(n_groups), np.empty(n_groups, dtype=np.int64), out)
    assert fn(*args) == 0
    measure(benchmark, fn, *args, items=n, group=f"{kernel} {group_id(groups)}")


def numpy_grpo(r, k):
    g = r.reshape(-1, k).astype(np.float64)
    return ((g - g.mean(1, keepdims=True)) / (g.std(1, ddof=1, keepdims=True) + 1e-4)).ravel()


def numpy_rloo(r, k):
    g = r.reshape(-1, k).astype(np.float64)
    return (g - (g.sum(1, keepdims=True) - g) / (k - 1)).ravel()


@pytest.mark.parametrize("groups", GROUPS, ids=group_id)
@pytest.mark.parametrize("kernel", ["grpo", "rloo"])
def test_numpy_group_advantages(benchmark, kernel, groups):
    n, k = groups
    r, _, _ = group_batch(n, k)
    fn = numpy_grpo if kernel == "grpo" else numpy_rloo
    measure(benchmark, fn, r, k, items=n, group=f"{kernel} {group_id(groups)}")


def grid(n_rows, n_steps, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(n_steps // 2, n_steps + 1, n_rows)
    m = np.arange(n_steps)[None, :] < lengths[:, None]
    lp = (-rng.random((n_rows, n_steps)) * 3).astype(np.float32)
    old = (lp + rng.standard_normal((n_rows, n_steps)) * 0.1).astype(np.float32)
    return m, lp, old


@pytest.mark.parametrize("size", GRIDS, ids=grid_id)
@pytest.mark.parametrize("mode", [0, 1, 2, 3], ids=["grpo", "bnpo", "dr_grpo", "dapo"])
def test_loss_weights(benchmark, kernels, mode, size):
    name, module = kernels
    n_rows = REFERENCE_ROWS if name == "python" else size[0]
    m, _, _ = grid(n_rows, size[1])
    out = np.empty(m.shape, dtype=np.float32)
    args = (m.view(np.uint8), mode, float(n_rows), float(m.sum()), float(size[1]), out)
    assert module.loss_weights(*args) == 0
    measure(
        benchmark, module.loss_weights, *args, items=m.size, group=f"loss_weights {grid_id(size)}"
    )


@pytest.mark.parametrize("size", GRIDS, ids=grid_id)
def test_sequence_importance_ratio(benchmark, kernels, size):
    name, module = kernels
    n_rows = REFERENCE_ROWS if name == "python" else size[0]
    m, lp, old = grid(n_rows, size[1])
    ratio = np.empty(n_rows, dtype=np.float32)
    grad = np.empty_like(lp)
    args = (lp, old, m.view(np.uint8), ratio, grad)
    assert module.sequence_importance_ratio(*args) == 0
    measure(
        benchmark,
        module.sequence_importance_ratio,
        *args,
        items=m.size,
        group=f"sequence_importance_ratio {grid_id(size)}",
    )


def numpy_sequence_ratio(lp, old, m):
    n = m.sum(1)
    s = np.exp(np.where(m, lp.astype(np.float64) - old, 0).sum(1) / np.maximum(n, 1))
    return s, np.where(m, (s / np.maximum(n, 1))[:, None], 0)


@pytest.mark.parametrize("size", GRIDS, ids=grid_id)
def test_numpy_sequence_importance_ratio(benchmark, size):
    m, lp, old = grid(*size)
    measure(
        benchmark,
        numpy_sequence_ratio,
        lp,
        old,
        m,
        items=m.size,
        group=f"sequence_importance_ratio {grid_id(size)}",
    )
