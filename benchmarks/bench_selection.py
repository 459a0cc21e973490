"""greedy / epsilon_greedy / boltzmann over a batch of states: backend × kernel × size × threads.

Items are states per call.  Also a NumPy-vectorised greedy (``q[states].argmax(1)``) for
comparison.  Run: pytest benchmarks/bench_selection.py --benchmark-enable --benchmark-group-by=group
"""

import numpy as np
import pytest
from conftest import BATCH, SIZES, measure, random_table, size_id

import fastlmrl
from fastlmrl.rng import stream_key

KERNELS = ("greedy", "epsilon_greedy", "boltzmann")


def _batch(name, size):
    n = BATCH[name]
    if size[1] > 1000:  # a full-row pass per state at V = 50257: fewer states per call
        n = max(n // 200, 200) if name != "python" else 20
    return n


@pytest.mark.parametrize("size", SIZES, ids=size_id)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("threads", [1, 2])
def test_selection(benchmark, kernels, kernel, size, threads):
    name, module = kernels
    if threads > 1 and name == "python":
        pytest.skip("the reference is single-threaded")
    q = random_table(size, np.float32)
    n = _batch(name, size)
    states = np.random.default_rng(1).integers(0, size[0], n)
    out = np.empty(n, np.int64)
    key, counter = np.uint64(stream_key(0)), np.uint64(0)
    fn = getattr(module, kernel)
    args = {
        "greedy": (q, states, out, threads),
        "epsilon_greedy": (q, states, 0.1, key, counter, out, threads),
        "boltzmann": (q, states, 1.0, key, counter, out, threads),
    }[kernel]
    fastlmrl.set_num_threads(threads)
    try:
        measure(benchmark, fn, *args, items=n, group=f"{kernel} {size_id(size)}")
    finally:
        fastlmrl.set_num_threads(None)
    benchmark.extra_info["threads"] = threads


@pytest.mark.parametrize("size", SIZES, ids=size_id)
def test_greedy_numpy(benchmark, size):
    q = random_table(size, np.float32)
    n = BATCH["numba"] if size[1] < 1000 else 5000
    states = np.random.default_rng(1).integers(0, size[0], n)
    measure(benchmark, lambda: q[states].argmax(1), items=n, group=f"greedy {size_id(size)}")
