"""The benchmark harness (benchmarks/conftest.py) reports time per item, so backends that time
different batch sizes rank correctly, and prints the speed-up over the Python reference."""

import os
import re
import subprocess
import sys
import types

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _harness():
    """benchmarks/conftest.py as a module of its own (``conftest`` is tests/conftest.py here)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "fastlmrl_benchmarks_conftest", os.path.join(ROOT, "benchmarks", "conftest.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_per_item_turns_round_times_into_seconds_per_item():
    from pytest_benchmark.stats import Stats

    stats = Stats()
    for t in (2.0, 4.0, 6.0):
        stats.update(t)
    assert stats.mean == 4.0  # cached from the whole-call times; per_item must drop it
    bench = types.SimpleNamespace(stats=types.SimpleNamespace(stats=stats), extra_info={})
    _harness().per_item(bench, 1000)
    assert stats.data == [0.002, 0.004, 0.006]
    assert stats.mean == pytest.approx(0.004)
    assert stats.min == pytest.approx(0.002)
    assert bench.extra_info["M_items_per_s"] == pytest.approx(1 / 0.004 / 1e6)
    assert bench.extra_info["items"] == 1000


def test_benchmark_run_ranks_by_time_per_item_and_shows_the_speed_up(tmp_path):
    """A real (short) run: the reference timed on 500x fewer items must not rank first."""
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "bench_td_learning.py",
        "-q",
        "-p",
        "no:cacheprovider",
        "--benchmark-enable",
        "-k",
        "S2xV2 and test_td_update and q_learning_update and not double",
        "--benchmark-max-time=0.02",
        "--benchmark-min-rounds=3",
        f"--benchmark-histogram={tmp_path / 'hist'}",
    ]
    run = subprocess.run(
        cmd, cwd=os.path.join(ROOT, "benchmarks"), capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    table = [line for line in run.stdout.splitlines() if line.startswith("test_td_update[")]
    assert [re.search(r"\[(\w+)-", line).group(1) for line in table][-1] == "python"
    summary = run.stdout[run.stdout.index("speed-ups over the references") :]
    python_row = next(line for line in summary.splitlines() if "[python-" in line)
    assert python_row.split()[-1] == "1.0"
    assert list(tmp_path.glob("hist*.svg"))
