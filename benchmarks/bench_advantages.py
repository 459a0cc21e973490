"""Benchmarks: discounted returns, λ-returns, GAE and masked whitening over (B, T) batches.

    pytest benchmarks/bench_advantages.py --benchmark-enable --benchmark-group-by=group \
        --benchmark-columns=mean,ops

Backends: the raw kernels of python / numba / cython (outputs preallocated, the reference on a
smaller batch of rows), a NumPy implementation vectorised over B with a Python loop over T (the
usual PyTorch/NumPy way), and JAX/rlax when installed (skipped otherwise).  ``items`` = valid steps.
Issue target: GAE over (B=1024, T=1024) float32 at least 5x the NumPy loop.

Issue 15 item 3 (GAE and λ-returns over (1024, 1024) float32 >= 0.5 G steps/s on 2 idle cores),
one command, rates and ratios from one run (rounds interleaved):

    python benchmarks/bench_advantages.py            # or: pytest benchmarks/bench_advantages.py \
        -k rows_in_parallel --benchmark-enable -s
    python benchmarks/bench_advantages.py --cpu-time --no-busy   # 1 thread, CPU time (loaded)

prints, for GAE and λ-returns, the numba and cython kernels at 1 and 2 threads and the public
functions (default threads, capped by the free cores), idle and with a busy-loop process pinned
to one core, next to ``one row`` (the kernels before issue 15: their
branchy input check, then one row at a time, one thread; kept here as a Numba function).
"""

import os
import sys
import time

import numpy as np
import pytest
from numba import njit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import measure  # noqa: E402

from fastlmrl import _backend  # noqa: E402

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


def kernel_call(mod, kernel, data, num_threads=None):
    """(kernel, args) of a raw call; ``num_threads`` None = fastlmrl.get_num_threads()."""
    r, v, m, term, trunc, boot = data
    m8, t8, u8 = m.view(np.uint8), term.view(np.uint8), trunc.view(np.uint8)
    out1, out2 = np.empty_like(r), np.empty_like(r)
    nt = _backend.get_num_threads() if num_threads is None else num_threads
    if kernel == "gae":
        return mod.gae, (r, v, m8, t8, u8, boot, GAMMA, LAM, out1, out2, nt)
    if kernel == "discounted_returns":
        return mod.discounted_returns, (r, m8, t8, u8, boot, GAMMA, out1, nt)
    if kernel == "lambda_returns":
        return mod.lambda_returns, (r, v, m8, t8, u8, boot, GAMMA, LAM, out1, nt)
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


NUMPY = {
    "gae": numpy_gae,
    "discounted_returns": numpy_discounted_returns,
    "lambda_returns": numpy_lambda_returns,
    "masked_whiten": numpy_masked_whiten,
}


@pytest.mark.parametrize("size", SIZES, ids=size_id)
@pytest.mark.parametrize("kernel", KERNELS)
def test_numpy(benchmark, kernel, size):
    data = batch(*size)
    measure(
        benchmark,
        NUMPY[kernel],
        *data,
        GAMMA,
        LAM,
        items=int(data[2].sum()),
        group=f"{kernel} {size_id(size)}",
    )


@pytest.mark.parametrize("size", SIZES, ids=size_id)
def test_rlax_gae(benchmark, size):
    jax = pytest.importorskip("jax")
    rlax = pytest.importorskip("rlax")
    r, v, m, term, trunc, boot = batch(*size)
    values = np.concatenate([v, np.where(term, 0, boot)[:, None]], axis=1)
    discounts = np.full_like(r, GAMMA)
    fn = jax.jit(
        jax.vmap(
            lambda r_, d_, v_: rlax.truncated_generalized_advantage_estimation(r_, d_, LAM, v_)
        )
    )

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


# ----------------------------------------------------------------------------- issue 15, item 3


@njit(cache=True, nogil=True)
def _old_check(rewards, values, has_values, mask, terminated, truncated, bootstrap_values):
    """The kernels' input check before issue 15 (branchy, one entry at a time)."""
    n_rows, n_steps = mask.shape
    for b in range(n_rows):
        n_valid = 0
        for t in range(n_steps):
            if mask[b, t]:
                n_valid += 1
                if not np.isfinite(rewards[b, t]):
                    return 5
                if has_values and not np.isfinite(values[b, t]):
                    return 41
        if n_valid and not terminated[b]:
            if not truncated[b]:
                return 43
            if not np.isfinite(bootstrap_values[b]):
                return 42
    return 0


@njit(cache=True, nogil=True)
def _gae_one_row_at_a_time(
    rewards,
    values,
    mask,
    terminated,
    truncated,
    bootstrap_values,
    gamma,
    lam,
    advantages_out,
    returns_out,
):
    """The GAE kernel before issue 15 (its check, then one row at a time, one thread): the
    baseline of the ratios."""
    status = _old_check(rewards, values, True, mask, terminated, truncated, bootstrap_values)
    if status != 0:
        return status
    n_rows, n_steps = mask.shape
    gl = gamma * lam
    for b in range(n_rows):
        v_next = 0.0 if terminated[b] else np.float64(bootstrap_values[b])
        a = 0.0
        for t in range(n_steps - 1, -1, -1):
            if mask[b, t]:
                v = np.float64(values[b, t])
                delta = np.float64(rewards[b, t]) + gamma * v_next - v
                a = delta + gl * a
                advantages_out[b, t] = a
                returns_out[b, t] = a + v
                v_next = v
            else:
                advantages_out[b, t] = 0.0
                returns_out[b, t] = 0.0
    return 0


@njit(cache=True, nogil=True)
def _lambda_one_row_at_a_time(
    rewards, values, mask, terminated, truncated, bootstrap_values, gamma, lam, returns_out
):
    status = _old_check(rewards, values, True, mask, terminated, truncated, bootstrap_values)
    if status != 0:
        return status
    n_rows, n_steps = mask.shape
    one_minus_lam = 1.0 - lam
    for b in range(n_rows):
        g = 0.0 if terminated[b] else np.float64(bootstrap_values[b])
        v_next = g
        for t in range(n_steps - 1, -1, -1):
            if mask[b, t]:
                g = np.float64(rewards[b, t]) + gamma * (one_minus_lam * v_next + lam * g)
                returns_out[b, t] = g
                v_next = np.float64(values[b, t])
            else:
                returns_out[b, t] = 0.0
    return 0


def _busy_core(cpu):
    """A busy-loop process pinned to ``cpu`` (stop it with .terminate())."""
    import multiprocessing as mp

    def spin():
        os.sched_setaffinity(0, {cpu})
        while True:
            pass

    proc = mp.get_context("fork").Process(target=spin, daemon=True)
    proc.start()
    time.sleep(0.2)
    return proc


def _variants(kernel, data):
    """{label: (fn, args)}: the one-row baseline and the kernels at 1 and 2 threads."""
    r, v, m, term, trunc, boot = data
    m8, t8, u8 = m.view(np.uint8), term.view(np.uint8), trunc.view(np.uint8)
    out1, out2 = np.empty_like(r), np.empty_like(r)
    if kernel == "gae":
        out = {
            "one row (numba)": (
                _gae_one_row_at_a_time,
                (r, v, m8, t8, u8, boot, GAMMA, LAM, out1, out2),
            )
        }
    else:
        out = {
            "one row (numba)": (
                _lambda_one_row_at_a_time,
                (r, v, m8, t8, u8, boot, GAMMA, LAM, out1),
            )
        }
    for backend in ("numba", "cython"):
        for threads in (1, 2):
            out[f"{backend} {threads}t"] = kernel_call(
                _backend.backend_module(backend), kernel, data, num_threads=threads
            )
    for backend in ("numba", "cython"):
        out[f"{backend} public"] = (_public_call, (backend, kernel, data))
    return out


def _public_call(backend, kernel, data):
    """The public function (validation, fresh outputs, threads capped by the free cores)."""
    import fastlmrl

    r, v, m, term, trunc, boot = data
    with fastlmrl.use_backend(backend):
        if kernel == "gae":
            fastlmrl.gae(r, v, m, term, trunc, boot, gamma=GAMMA, lam=LAM)
        else:
            fastlmrl.lambda_returns(r, v, m, term, trunc, boot, gamma=GAMMA, lam=LAM)
    return 0


def rates_table(rounds=30, busy=True, cpu_time=False):
    """Rates (G valid steps/s, best of ``rounds`` interleaved rounds) of GAE and λ-returns over
    (1024, 1024) float32, idle and with one core busy; returns {(kernel, load, label): rate}.

    ``cpu_time``: time the one-thread variants by the calling thread's CPU time
    (``time.thread_time``) instead of the wall clock -- on a machine shared with other work this
    leaves out the time the thread waited for a core (not meaningful for 2 threads, skipped)."""
    data = batch(1024, 1024)
    items = int(data[2].sum())
    loads = ["idle", "one core busy"] if busy and len(os.sched_getaffinity(0)) >= 2 else ["idle"]
    clock = time.thread_time if cpu_time else time.perf_counter
    rates = {}
    for kernel in ("gae", "lambda_returns"):
        variants = _variants(kernel, data)
        if cpu_time:
            variants = {
                k: v
                for k, v in variants.items()
                if not k.endswith("2t") and not k.endswith("public")
            }
        for fn, args in variants.values():
            assert fn(*args) == 0  # compile / warm up
        for load in loads:
            proc = _busy_core(max(os.sched_getaffinity(0))) if load != "idle" else None
            try:
                best = dict.fromkeys(variants, float("inf"))
                for _ in range(rounds):
                    for label, (fn, args) in variants.items():
                        t0 = clock()
                        fn(*args)
                        best[label] = min(best[label], clock() - t0)
            finally:
                if proc is not None:
                    proc.terminate()
                    proc.join()
            for label, t in best.items():
                rates[(kernel, load, label)] = items / t / 1e9
    return rates


def print_rates(rates):
    print("\n(1024, 1024) float32, G valid steps/s (best of interleaved rounds); ratio = / one row")
    for (kernel, load, label), rate in rates.items():
        base = rates[(kernel, load, "one row (numba)")]
        print(f"{kernel:15s} {load:14s} {label:16s} {rate:6.3f}  x{rate / base:5.2f}")


def test_rows_in_parallel_rates(benchmark):
    """Issue 15 item 3: the rates table (printed with -s; also in extra_info)."""
    rates = benchmark.pedantic(rates_table, kwargs=dict(rounds=20), rounds=1, iterations=1)
    print_rates(rates)
    for (kernel, load, label), rate in rates.items():
        benchmark.extra_info[f"{kernel} {load} {label}"] = round(rate, 4)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--no-busy", action="store_true", help="skip the one-core-busy runs")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="one-thread variants only, timed by thread CPU time (loaded machine)",
    )
    a = parser.parse_args()
    print_rates(rates_table(a.rounds, busy=not a.no_busy, cpu_time=a.cpu_time))
