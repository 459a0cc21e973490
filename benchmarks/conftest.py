"""Benchmark harness (pytest-benchmark).

Run:  pytest benchmarks --benchmark-enable --benchmark-group-by=group

Every benchmark is parametrised backend × kernel × size, warms the JIT (and the table) with one call
before timing, and records ``items`` (updates / states / tokens per call).  The pure-Python
reference runs on a smaller batch, so whole-call times do not compare across backends: ``measure``
therefore stores each round's time **per item**.  In pytest-benchmark's table every time column
(Min, Max, Mean, ...) is seconds per item and ``OPS`` is items per second, so the default sort
(by Min) ranks the fastest backend first.  After the table, a summary lists each group's rates in
M items/s and the speed-up over the Python reference (``×python``) and over NumPy where a NumPy
baseline ran in the same group.  ``--benchmark-histogram`` works with the test extra (pygal).
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


def per_item(benchmark, items) -> None:
    """Turn the recorded round times of ``benchmark`` into seconds per item (see module doc)."""
    stats = benchmark.stats.stats
    stats.data[:] = [t / items for t in stats.data]
    for name in list(vars(stats)):  # drop statistics cached from the whole-call times
        if name != "data":
            delattr(stats, name)
    benchmark.extra_info["items"] = items
    benchmark.extra_info["time_unit"] = "seconds per item"
    benchmark.extra_info["M_items_per_s"] = round(1.0 / stats.mean / 1e6, 6)


def measure(benchmark, fn, *args, items, group, rounds=None):
    """Time ``fn(*args)`` after one warm-up call; record time per item and M items/s."""
    benchmark.group = group
    fn(*args)  # JIT compile / cache load, page in the table
    if rounds is not None:
        result = benchmark.pedantic(fn, args=args, rounds=rounds, iterations=1)
    else:
        result = benchmark(fn, *args)
    per_item(benchmark, items)
    return result


# extra_info entries the summary prints after the rates when a benchmark records them
SUMMARY_EXTRA_INFO = ("peak_extra_MB", "overhead_us", "numpy_ms", "parallel_ms")


def _variant(name: str) -> str:
    """The backend-like part of a benchmark's name: its first parameter (``python``, ``numba``,
    ``numpy``, ...) or the whole name when it has none."""
    params = name[name.find("[") + 1 : name.rfind("]")] if "[" in name else name
    return params.split("-")[0]


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own table
def pytest_terminal_summary(terminalreporter, config):
    """After pytest-benchmark's table: per group, M items/s and speed-ups over the references."""
    session = getattr(config, "_benchmarksession", None)
    benchmarks = [
        b for b in getattr(session, "benchmarks", ()) or () if b.extra_info.get("M_items_per_s")
    ]
    if not benchmarks:
        return
    groups: dict = {}
    for bench in benchmarks:
        groups.setdefault(bench.group or "", []).append(bench)
    write = terminalreporter.write_line
    terminalreporter.section("rates per item (M items/s) and speed-ups over the references")
    write(f"{'group':<40} {'benchmark':<56} {'M items/s':>12} {'xpython':>9} {'xnumpy':>9}")
    for group in sorted(groups):
        rows = sorted(groups[group], key=lambda b: -b.extra_info["M_items_per_s"])
        refs = {}
        for bench in rows:
            refs.setdefault(_variant(bench.name), bench.extra_info["M_items_per_s"])
        for bench in rows:
            rate = bench.extra_info["M_items_per_s"]
            ratios = [
                f"{rate / refs[r]:9.1f}" if r in refs else f"{'':9}" for r in ("python", "numpy")
            ]
            extra = "".join(
                f"  {key}={bench.extra_info[key]}"
                for key in SUMMARY_EXTRA_INFO
                if key in bench.extra_info
            )
            write(
                f"{group[:40]:<40} {bench.name[:56]:<56} {rate:12.4g} {ratios[0]} {ratios[1]}"
                f"{extra}"
            )


def random_table(size, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(size, dtype=np.float64).astype(dtype)
