"""Backend registry: selection, context manager, env var, reporting, warn-once, same names."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastlmrl
from fastlmrl import _backend
from fastlmrl._topics import TOPICS


def test_all_backends_load_here():
    # CI builds every backend: a missing one must fail loudly, not be skipped.
    assert fastlmrl.available_backends() == ("cython", "numba", "python")


def test_backends_expose_identical_names():
    names = {b: sorted(_backend.backend_module(b).__all__) for b in fastlmrl.BACKENDS}
    assert names["numba"] == names["python"] == names["cython"]
    assert len(names["python"]) == len(set(names["python"]))


def test_each_topic_has_the_same_names_in_every_backend():
    import importlib

    for topic in TOPICS:
        per_backend = {
            b: sorted(importlib.import_module(f"fastlmrl._{b}.{topic}").__all__)
            for b in fastlmrl.BACKENDS
        }
        assert per_backend["python"] == per_backend["numba"] == per_backend["cython"], topic


def test_default_is_the_ahead_of_time_compiled_backend(monkeypatch):
    # cython first: compiled at install, so a first run does not wait for Numba's JIT
    monkeypatch.delenv("FASTLMRL_BACKEND", raising=False)
    fastlmrl.set_backend(None)
    assert fastlmrl.get_backend() == "cython"


def test_numba_cache_is_kept_out_of_the_package_folder(tmp_path):
    # A kernel compiled in a fresh cache writes its cache files under the user cache folder
    # (here $XDG_CACHE_HOME) and nothing under the package folder (a leftover
    # fastlmrl/_numba/__pycache__ in site-packages shadows a later editable install).
    import os

    package = os.path.dirname(fastlmrl.__file__)

    def package_files():
        return {
            os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
            for d, _, files in os.walk(package)
            for f in files
        }

    before = package_files()
    code = textwrap.dedent("""
        import numpy as np
        from fastlmrl._numba._common import mix64, numba_cache_dir  # a small cached kernel
        assert int(mix64(np.uint64(0))) == 0
        assert int(mix64(np.uint64(1))) == 0x5692161D100B05E5  # SplitMix64's finaliser of 1
        print(numba_cache_dir())
    """)
    env = {
        k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "FASTLMRL_CACHE_DIR")
    }
    env["XDG_CACHE_HOME"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    cache = result.stdout.strip().splitlines()[-1]
    assert cache.startswith(str(tmp_path))
    # the first compilation in the process is announced once on stderr
    assert result.stderr.count("fastlmrl: compiling Numba kernels") == 1
    written = [f for _, _, files in os.walk(cache) for f in files]
    assert any(f.endswith(".nbi") for f in written) and any(f.endswith(".nbc") for f in written)
    after = package_files()
    new = sorted(p for p in after if after[p] != before.get(p) and p.endswith((".nbi", ".nbc")))
    assert new == [], new
    # a second process loads the cache: no compilation, no message
    again = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0 and "compiling" not in again.stderr, again.stderr


def test_set_backend_and_context_manager():
    try:
        fastlmrl.set_backend("cython")
        assert fastlmrl.get_backend() == "cython"
        with fastlmrl.use_backend("python") as name:
            assert name == "python" and fastlmrl.get_backend() == "python"
            with fastlmrl.use_backend("NUMBA"):
                assert fastlmrl.get_backend() == "numba"
            assert fastlmrl.get_backend() == "python"
        assert fastlmrl.get_backend() == "cython"
    finally:
        fastlmrl.set_backend(None)


def test_environment_variable(monkeypatch):
    monkeypatch.setenv("FASTLMRL_BACKEND", "python")
    assert fastlmrl.get_backend() == "python"
    monkeypatch.setenv("FASTLMRL_BACKEND", "fortran")
    with pytest.raises(ValueError, match="FASTLMRL_BACKEND must be one of"):
        fastlmrl.get_backend()


@pytest.mark.parametrize("bad, exc", [("jax", ValueError), (3, TypeError)])
def test_unknown_backend(bad, exc):
    with pytest.raises(exc, match="backend"):
        fastlmrl.set_backend(bad)
    with pytest.raises(exc, match="backend"):
        with fastlmrl.use_backend(bad):
            pass


def test_show_config_reports_everything(capsys):
    info = fastlmrl.show_config()
    out = capsys.readouterr().out
    assert set(info["backends"]) == {"python", "numba", "cython"}
    assert all(entry["loaded"] for entry in info["backends"].values())
    assert "numba" in out and "cython" in out and info["numpy"] == np.__version__


def test_missing_compiled_backend_warns_once_and_is_reported():
    """Run in a subprocess so that the broken backend does not leak into other tests."""
    code = textwrap.dedent(
        """
        import warnings, numpy as np
        import fastlmrl
        from fastlmrl import _backend
        _backend._MODULES["numba"] = "fastlmrl._does_not_exist"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            a = fastlmrl.greedy(np.eye(3), [0, 1, 2])
            b = fastlmrl.greedy(np.eye(3), [2])
            info = fastlmrl.show_config(print_out=False)
        msgs = [str(w.message) for w in caught
                if issubclass(w.category, fastlmrl.BackendUnavailableWarning)]
        assert len(msgs) == 1, msgs
        assert "numba backend is unavailable" in msgs[0]
        assert fastlmrl.get_backend() == "cython"
        assert info["backends"]["numba"]["loaded"] is False
        assert "No module named" in info["backends"]["numba"]["error"]
        try:
            fastlmrl.set_backend("numba")
        except RuntimeError as e:
            assert "cannot be loaded" in str(e)
        else:
            raise AssertionError("set_backend accepted a broken backend")
        print("OK", a.tolist(), b.tolist())
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "OK [0, 1, 2] [2]" in result.stdout


def test_use_backend_is_per_thread():
    import threading

    seen = {}
    with fastlmrl.use_backend("python"):
        t = threading.Thread(target=lambda: seen.setdefault("other", fastlmrl.get_backend()))
        t.start()
        t.join()
        assert fastlmrl.get_backend() == "python"
    assert seen["other"] == "cython"


def test_num_threads():
    try:
        fastlmrl.set_num_threads(1)
        assert fastlmrl.get_num_threads() == 1
        with pytest.raises(ValueError, match="num_threads"):
            fastlmrl.set_num_threads(0)
        with pytest.raises(TypeError, match="num_threads"):
            fastlmrl.set_num_threads(1.5)
    finally:
        fastlmrl.set_num_threads(None)
    assert fastlmrl.get_num_threads() >= 1


# ---- direct binding (issue 14) ------------------------------------------------------------------


def test_topic_kernels_are_bound_directly_and_rebound_by_set_backend():
    from fastlmrl import td_learning

    try:
        fastlmrl.set_backend("numba")
        fastlmrl.q_learning_update(np.zeros((2, 2)), [0], [1], [1.0], [1], [False], 0.5, 0.9)
        assert td_learning._kernels is _backend.backend_module("numba")  # a plain module
        fastlmrl.set_backend("python")
        fastlmrl.get_backend()
        assert td_learning._kernels is _backend.backend_module("python")
        with fastlmrl.use_backend("cython"):  # per thread: a dispatcher while a block is open
            assert td_learning._kernels is _backend._DISPATCH
            assert (
                td_learning._kernels.q_learning_update
                is _backend.backend_module("cython").q_learning_update
            )
        assert td_learning._kernels is _backend.backend_module("python")
    finally:
        fastlmrl.set_backend(None)


def test_use_backend_in_one_thread_leaves_the_others_on_theirs():
    import threading

    from fastlmrl import td_learning

    inside, release, seen = threading.Event(), threading.Event(), {}

    def worker():
        with fastlmrl.use_backend("python"):
            inside.set()
            release.wait(30)
            seen["worker"] = td_learning._kernels.q_learning_update

    t = threading.Thread(target=worker)
    t.start()
    inside.wait(30)
    seen["main"] = td_learning._kernels.q_learning_update  # no override here: the default
    release.set()
    t.join()
    assert seen["worker"] is _backend.backend_module("python").q_learning_update
    assert seen["main"] is _backend.backend_module("cython").q_learning_update


def test_kernel_calls_do_not_read_the_environment(monkeypatch):
    """FASTLMRL_BACKEND is read when the backend is resolved (first call, set_backend,
    get_backend), not by each kernel call."""
    import os

    reads = []
    real_get = os.environ.get

    class Spy(dict):
        def get(self, key, default=None):
            reads.append(key)
            return real_get(key, default)

    fastlmrl.set_backend(None)
    q = np.zeros((2, 2))
    fastlmrl.q_learning_update(q, [0], [1], [1.0], [1], [False], 0.5, 0.9)  # resolves
    monkeypatch.setattr(_backend.os, "environ", Spy(os.environ))
    for _ in range(3):
        fastlmrl.q_learning_update(
            q,
            np.array([0]),
            np.array([1]),
            np.array([1.0]),
            np.array([1]),
            np.array([False]),
            0.5,
            0.9,
        )
        fastlmrl.q_learning_update(q, [0, 1], [1, 0], [1.0, 2.0], [1, 0], [False, True], 0.5, 0.9)
        fastlmrl.greedy(q, [0])  # a topic still dispatched by _backend.kernels()
    assert reads == []
    assert fastlmrl.get_backend() == "cython" and reads == ["FASTLMRL_BACKEND"]


def test_num_threads_is_counted_once(monkeypatch):
    import os

    calls = []
    real = os.sched_getaffinity
    monkeypatch.setattr(
        _backend.os, "sched_getaffinity", lambda pid: calls.append(pid) or real(pid)
    )
    fastlmrl.set_num_threads(None)  # recounts
    n = len(calls)
    for _ in range(5):
        assert fastlmrl.get_num_threads() == max(1, len(real(0)))
    assert len(calls) == n
    fastlmrl.set_num_threads(None)
    assert len(calls) == n + 1
