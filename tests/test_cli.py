"""The `fastlmrl` command: the README's demo learns its task, identically in every backend."""
import io
import subprocess
import sys

import pytest

from fastlmrl import cli


def test_demo_learns_the_task_in_every_backend_with_identical_trajectories():
    results = {}
    for backend in ("numba", "cython", "python"):
        out = io.StringIO()
        results[backend] = cli.run_demo(backend, episodes=20000, batch=64, seed=0, out=out)
        assert "after training the greedy policy writes" in out.getvalue()
    import fastlmrl

    fastlmrl.set_backend(None)
    for r in results.values():
        assert r["output"] == r["target"] == "reinforcement learning"
        # mean return per batch rises from near 0 to the maximum, 22 correct tokens
        assert r["history"][0] < 2 and r["history"][-1] > 15
    assert results["numba"]["history"] == results["python"]["history"] == results["cython"]["history"]
    assert results["numba"]["transitions"] == results["python"]["transitions"]


def test_spelling_task_step():
    import numpy as np

    task = cli.SpellingTask("ab", "ab")
    s2, r, done = task.step(np.array([0, 0, 1]), np.array([0, 1, 1]))
    assert s2.tolist() == [1, 0, 2] and r.tolist() == [1, 0, 1]
    assert done.tolist() == [False, True, True]


def test_console_entry_points():
    assert cli.main(["info"]) == 0
    with pytest.raises(SystemExit):
        cli.main(["demo", "--episodes", "0"])
    with pytest.raises(SystemExit):
        cli.main(["demo", "--backend", "fortran"])


def test_installed_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "fastlmrl.cli", "info"], capture_output=True,
                            text=True)
    assert result.returncode == 0 and "cython" in result.stdout
