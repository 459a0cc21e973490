"""Benchmarks: discounted returns, λ-returns, GAE and masked whitening over (B, T) batches.

    pytest benchmarks/bench_advantages.py --benchmark-enable --benchmark-group-by=group \
        --benchmark-columns=mean,ops

Backends: the raw kernels of python / numba / cython (outputs preallocated, the reference on a
smaller batch of rows), a NumPy implementation vectorised over B with a Python loop over T (the
usual PyTorch/NumPy way), and JAX/rlax when installed (skipped otherwise).  ``items`` = valid steps.
Issue target: GAE over (B=1024, T=1024) float32 at least 5x the NumPy loop.
"""
import numpy as np
import pytest

from conftest import measure
from fastlmrl import _backend

SIZES = [(64, 256), (1024, 1024)]
REFERENCE_ROWS = 4  # rows the pure-Python reference gets per call
KERNELS = ["gae", "discounted_returns", "lambda_returns", "masked_whiten"]
GAMMA, LAM = 0.99, 0.95


def size_id(size):
    return f"B{size[0]}xT{size[1]}"


def batch(n_rows, n_steps, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    r = rng.standard_normal((n_rows, n_steps)).astype(dtype)
    v = rng.standard_normal((n_rows, n_steps)).astype(dtype)
    lengths = rng.integers(n_steps // 2, n_steps + 1, n_rows)
    m = np.arange(n_steps)[None, :] < lengths[:, None]
    term = rng.random(n_rows) < 0.5
    boot = rng.standard_normal(n_rows).astype(dtype)
    return r, v, m, term, ~term, boot


def kernel_call(mod, kernel, data):
    r, v, m, term, trunc, boot = data
    m8, t8, u8 = m.view(np.uint8), term.view(np.uint8), trunc.view(np.uint8)
    out1, out2 = np.empty_like(r), np.empty_like(r)
    if kernel == "gae":
        return mod.gae, (r, v, m8, t8, u8, boot, GAMMA, LAM, out1, out2)
    if kernel == "discounted_returns":
        return mod.discounted_returns, (r, m8, t8, u8, boot, GAMMA, out1)
    if kernel == "lambda_returns":
        return mod.lambda_returns, (r, v, m8, t8, u8, boot, GAMMA, LAM, out1)
    return mod.masked_whiten, (r, m8, 1e-8, out1)


@pytest.mark.parametrize("size", SIZES, ids=size_id)
@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel(benchmark, kernels, kernel, size):
    name, module = kernels
    n_rows, n_steps = size
    if name == "python":
        n_rows = REFERENCE_ROWS
    data = batch(n_rows, n_steps)
    fn, args = kernel_call(module, kernel, data)
    assert fn(*args) == 0
    measure(benchmark, fn, *args, items=int(data[2].sum()), group=f"{kernel} {size_id(size)}")


# ----------------------------------------------------------------------------- NumPy baselines

def numpy_gae(r, v, m, term, trunc, boot, gamma, lam):
    """GAE vectorised over B, Python loop over T (masked steps skipped like the kernels)."""
    n_rows, n_steps = r.shape
    adv = np.zeros_like(r)
    last = np.zeros(n_rows, dtype=r.dtype)
    v_next = np.where(term, 0, boot).astype(r.dtype)
    for t in range(n_steps - 1, -1, -1):
        valid = m[:, t]
        delta = r[:, t] + gamma * v_next - v[:, t]
        a = delta + gamma * lam * last
        last = np.where(valid, a, last)
        v_next = np.where(valid, v[:, t], v_next)
        adv[:, t] = np.where(valid, a, 0)
    return adv, np.where(m, adv + v, 0)


def numpy_discounted_returns(r, v, m, term, trunc, boot, gamma, lam):
    n_rows, n_steps = r.shape
    out = np.zeros_like(r)
    g = np.where(term, 0, boot).astype(r.dtype)
    for t in range(n_steps - 1, -1, -1):
        valid = m[:, t]
        g = np.where(valid, r[:, t] + gamma * g, g)
        out[:, t] = np.where(valid, g, 0)
    return out


def numpy_lambda_returns(r, v, m, term, trunc, boot, gamma, lam):
    n_rows, n_steps = r.shape
    out = np.zeros_like(r)
    g = np.where(term, 0, boot).astype(r.dtype)
    v_next = g.copy()
    for t in range(n_steps - 1, -1, -1):
        valid = m[:, t]
        g = np.where(valid, r[:, t] + gamma * ((1 - lam) * v_next + lam * g), g)
        v_next = np.where(valid, v[:, t], v_next)
        out[:, t] = np.where(valid, g, 0)
    return out


def numpy_masked_whiten(r, v, m, term, trunc, boot, gamma, lam):
    valid = r[m]
    return np.where(m, (r - valid.mean()) / (valid.std() + 1e-8), 0)


NUMPY = {"gae": numpy_gae, "discounted_returns": numpy_discounted_returns,
         "lambda_returns": numpy_lambda_returns, "masked_whiten": numpy_masked_whiten}


@pytest.mark.parametrize("size", SIZES, ids=size_id)
@pytest.mark.parametrize("kernel", KERNELS)
def test_numpy(benchmark, kernel, size):
    data = batch(*size)
    measure(benchmark, NUMPY[kernel], *data, GAMMA, LAM, items=int(data[2].sum()),
            group=f"{kernel} {size_id(size)}")


@pytest.mark.parametrize("size", SIZES, ids=size_id)
def test_rlax_gae(benchmark, size):
    jax = pytest.importorskip("jax")
    rlax = pytest.importorskip("rlax")
    r, v, m, term, trunc, boot = batch(*size)
    values = np.concatenate([v, np.where(term, 0, boot)[:, None]], axis=1)
    discounts = np.full_like(r, GAMMA)
    fn = jax.jit(jax.vmap(lambda r_, d_, v_: rlax.truncated_generalized_advantage_estimation(
        r_, d_, LAM, v_)))

    def run():
        return fn(r, discounts, values).block_until_ready()

    measure(benchmark, run, items=r.size, group=f"gae {size_id(size)}")


def test_gae_speedup_over_numpy_loop(benchmark):
    """The issue's target: GAE (1024, 1024) float32, compiled kernel vs the NumPy loop over T."""
    import time

    data = batch(1024, 1024)
    fn, args = kernel_call(_backend.backend_module("numba"), "gae", data)

    def best(f, *a, repeat=5):
        f(*a)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            f(*a)
            times.append(time.perf_counter() - t0)
        return min(times)

    t_numpy = best(numpy_gae, *data, GAMMA, LAM)
    cy_fn, cy_args = kernel_call(_backend.backend_module("cython"), "gae", data)
    t_cython = best(cy_fn, *cy_args)
    measure(benchmark, fn, *args, items=int(data[2].sum()), group="gae speedup B1024xT1024")
    t_numba = benchmark.stats.stats.min
    benchmark.extra_info["numpy_loop_ms"] = round(t_numpy * 1e3, 3)
    benchmark.extra_info["speedup_numba_vs_numpy"] = round(t_numpy / t_numba, 2)
    benchmark.extra_info["speedup_cython_vs_numpy"] = round(t_numpy / t_cython, 2)
