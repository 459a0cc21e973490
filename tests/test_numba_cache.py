"""fastlmrl's Numba cache stays consistent when processes compile the same kernel at once.

Numba's ``IndexDataCacheFile.save`` reads the index, picks the first data-file number it does not
use and writes both: two processes saving at once can pick the same ``.1.nbc``, and the index then
names the other's machine code (seen on this project: ``a2c_loss`` failed with "Known
signatures: (int64, UniTuple(int64, 5))" for a 10-tuple after parallel compilations).
``fastlmrl._numba._common`` serialises saves into fastlmrl's cache with a lock of the index.
"""

import fcntl
import os
import threading
import time

import pytest

pytest.importorskip("numba")

from numba.core import caching  # noqa: E402

from fastlmrl._numba import _common  # noqa: E402


def _cache_file(folder):
    return caching.IndexDataCacheFile(folder, "kernel-1.py311", ("stamp", 1))


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """fastlmrl's Numba cache folder moved into tmp_path (FASTLMRL_CACHE_DIR is read per save)."""
    monkeypatch.setenv("FASTLMRL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def test_a_save_into_fastlmrl_cache_waits_for_the_index_lock(own_cache):
    folder = os.path.join(_common.numba_cache_dir(), "test-numba-cache-lock")
    os.makedirs(folder, exist_ok=True)
    cache = _cache_file(folder)
    done = []
    with open(cache._index_path + ".lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        worker = threading.Thread(target=lambda: done.append(cache.save(("sig", 10), b"code10")))
        worker.start()
        time.sleep(0.3)
        assert worker.is_alive() and not done  # blocked by the lock held here
        fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    worker.join(10)
    assert done and cache.load(("sig", 10)) == b"code10"


def test_concurrent_saves_keep_each_signature_with_its_own_code(own_cache):
    """Saves of two signatures racing (each reads the index before the other writes it) would pick
    the same data file without the lock; with it each key loads its own data."""
    folder = os.path.join(_common.numba_cache_dir(), "test-numba-cache-race")
    os.makedirs(folder, exist_ok=True)
    first, second = _cache_file(folder), _cache_file(folder)
    original = caching.IndexDataCacheFile._load_index
    barrier = threading.Barrier(2, timeout=2)

    def slow_load(self):  # both savers read the index, then meet, before either writes
        index = original(self)
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            pass  # the lock let only one in: the other reads the index after the first save
        return index

    caching.IndexDataCacheFile._load_index = slow_load
    try:
        threads = [
            threading.Thread(target=first.save, args=(("sig", 5), b"code5")),
            threading.Thread(target=second.save, args=(("sig", 10), b"code10")),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    finally:
        caching.IndexDataCacheFile._load_index = original
    assert _cache_file(folder).load(("sig", 5)) == b"code5"
    assert _cache_file(folder).load(("sig", 10)) == b"code10"


def test_other_numba_caches_keep_numbas_own_save(own_cache):
    """Users' ``@njit(cache=True)`` files are not fastlmrl's: no lock file is made there."""
    folder = own_cache / "user"
    folder.mkdir()
    cache = _cache_file(str(folder))
    cache.save(("sig", 1), b"x")
    assert cache.load(("sig", 1)) == b"x"
    assert not any(name.endswith(".lock") for name in os.listdir(folder))
