"""Benchmarks: k1/k2/k3 KL estimates with gradients and KL-penalised rewards over (B, T) tokens.

    pytest benchmarks/bench_kl_divergence.py --benchmark-enable --benchmark-group-by=group

Backends: raw kernels of python / numba / cython (the reference on fewer tokens) and a NumPy
vectorised version.  ``items`` = tokens per call.
"""

import numpy as np
import pytest
from conftest import measure

SIZES = [(64, 256), (1024, 1024)]
REFERENCE_TOKENS = 4096


def size_id(size):
    return f"B{size[0]}xT{size[1]}"


def tokens(n, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    lp = (-rng.random(n) * 4).astype(dtype)
    ref = (lp + rng.standard_normal(n) * 0.3).astype(dtype)
    rw = rng.standard_normal(n).astype(dtype)
    m = np.ones(n, dtype=np.uint8)
    m[rng.random(n) < 0.1] = 0
    return rw, lp, ref, m


@pytest.mark.parametrize("size", SIZES, ids=size_id)
@pytest.mark.parametrize("estimator", [1, 2, 3], ids=["k1", "k2", "k3"])
def test_kl_penalty(benchmark, kernels, estimator, size):
    name, module = kernels
    n = REFERENCE_TOKENS if name == "python" else size[0] * size[1]
    rw, lp, ref, m = tokens(n)
    kl, grad = np.empty_like(lp), np.empty_like(lp)
    args = (lp, ref, m, estimator, kl, grad)
    assert module.kl_penalty(*args) == 0
    measure(
        benchmark,
        module.kl_penalty,
        *args,
        items=n,
        group=f"kl_penalty k{estimator} {size_id(size)}",
    )


@pytest.mark.parametrize("size", SIZES, ids=size_id)
def test_kl_penalized_rewards(benchmark, kernels, size):
    name, module = kernels
    n = REFERENCE_TOKENS if name == "python" else size[0] * size[1]
    rw, lp, ref, m = tokens(n)
    out, kl = np.empty_like(lp), np.empty_like(lp)
    args = (rw, lp, ref, m, 1, 0.05, out, kl)
    assert module.kl_penalized_rewards(*args) == 0
    measure(
        benchmark,
        module.kl_penalized_rewards,
        *args,
        items=n,
        group=f"kl_penalized_rewards k1 {size_id(size)}",
    )


def numpy_kl(lp, ref, m, estimator):
    mb = m.view(bool)
    r = ref.astype(np.float64) - lp
    if estimator == 1:
        kl, grad = -r, np.ones_like(r)
    elif estimator == 2:
        kl, grad = 0.5 * r * r, -r
    else:
        e = np.expm1(r)
        kl, grad = e - r, -e
    return np.where(mb, kl, 0).astype(lp.dtype), np.where(mb, grad, 0).astype(lp.dtype)


@pytest.mark.parametrize("size", SIZES, ids=size_id)
@pytest.mark.parametrize("estimator", [1, 2, 3], ids=["k1", "k2", "k3"])
def test_numpy_kl_penalty(benchmark, estimator, size):
    n = size[0] * size[1]
    _, lp, ref, m = tokens(n)
    measure(
        benchmark,
        numpy_kl,
        lp,
        ref,
        m,
        estimator,
        items=n,
        group=f"kl_penalty k{estimator} {size_id(size)}",
    )
