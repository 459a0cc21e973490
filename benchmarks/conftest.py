"""Benchmark harness (pytest-benchmark).

Run:  pytest benchmarks --benchmark-enable --benchmark-group-by=group --benchmark-columns=mean,ops

Every benchmark is parametrised backend × kernel × size, warms the JIT (and the table) with one call
before timing, and records ``items`` (updates / states / tokens per call) so that
``extra_info["M_items_per_s"]`` can be compared across backends.  The pure-Python reference runs on
a smaller batch; rates per item are what compare.
"""
import numpy as np
import pytest

from fastlmrl import _backend

# (S, V) table sizes from the foundation issue.
SIZES = [(2, 2), (1024, 16), (65536, 64), (4096, 50257)]
BACKEND_NAMES = ("python", "numba", "cython")
# Batch length per call: the reference gets fewer items (it is ~1000x slower).
BATCH = {"python": 2_000, "numba": 1_000_000, "cython": 1_000_000}


def size_id(size):
    return f"S{size[0]}xV{size[1]}"


@pytest.fixture(params=BACKEND_NAMES)
def kernels(request):
    """(name, module) of each backend; a missing compiled backend is an error, not a skip."""
    return request.param, _backend.backend_module(request.param)


def measure(benchmark, fn, *args, items, group, rounds=None):
    """Time ``fn(*args)`` after one warm-up call; report millions of items per second."""
    benchmark.group = group
    fn(*args)  # JIT compile / cache load, page in the table
    if rounds is not None:
        result = benchmark.pedantic(fn, args=args, rounds=rounds, iterations=1)
    else:
        result = benchmark(fn, *args)
    mean = benchmark.stats.stats.mean
    benchmark.extra_info["items"] = items
    benchmark.extra_info["M_items_per_s"] = round(items / mean / 1e6, 3)
    return result


def random_table(size, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(size, dtype=np.float64).astype(dtype)
