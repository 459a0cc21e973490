"""The thread count of a parallel kernel call is capped by the cores other processes leave free
(fastlmrl/_free_cores.py; the speed it buys is measured in benchmarks/bench_threads.py)."""

import numpy as np
import pytest

import fastlmrl
from fastlmrl import _free_cores


class FakeMachine:
    """Two cores; ``others`` cores' worth of busy time from other processes per second and
    ``own`` from this process."""

    def __init__(self, monkeypatch, others, own=0.0):
        self.t = 100.0
        self.others, self.own = others, own
        monkeypatch.setattr(
            _free_cores, "_state", {"t": None, "busy": 0.0, "own": 0.0, "free": None}
        )
        monkeypatch.setattr(_free_cores, "_cores", lambda: {0, 1})
        monkeypatch.setattr(
            _free_cores,
            "_read_stat",
            lambda cores: ((self.others + self.own) * self.t, self.running),
        )
        monkeypatch.setattr(_free_cores, "_own_running", lambda: 1)
        monkeypatch.setattr(_free_cores.os, "cpu_count", lambda: 2)
        self.running = 1
        monkeypatch.setattr(_free_cores.time, "monotonic", lambda: self.t)
        monkeypatch.setattr(_free_cores.time, "process_time", lambda: self.own * self.t)
        monkeypatch.setattr(_free_cores, "enabled", True)

    def advance(self, seconds):
        self.t += seconds


@pytest.mark.parametrize(
    "others,own,expected",
    [(0.0, 0.0, 2), (0.0, 1.9, 2), (0.3, 1.0, 2), (0.7, 0.0, 1), (1.0, 1.0, 1), (2.0, 0.0, 1)],
)
def test_threads_are_capped_by_the_cores_other_processes_leave(monkeypatch, others, own, expected):
    m = FakeMachine(monkeypatch, others, own)
    assert _free_cores.kernel_threads(2) == 2  # no estimate yet: as requested
    m.advance(0.5)
    assert _free_cores.kernel_threads(2) == expected
    assert _free_cores.kernel_threads(1) == 1
    assert _free_cores.kernel_threads(8) == expected  # at most the two cores


def test_estimate_is_refreshed_at_most_every_interval(monkeypatch):
    m = FakeMachine(monkeypatch, 0.0)
    _free_cores.kernel_threads(2)
    m.advance(0.2)
    assert _free_cores.kernel_threads(2) == 2
    m.others = 1.0  # another process starts spinning (busy time accrues from now on)
    base = m.t
    monkeypatch.setattr(_free_cores, "_read_stat", lambda cores: (m.others * (m.t - base), 1))
    m.advance(_free_cores.INTERVAL / 2)
    assert _free_cores.kernel_threads(2) == 2  # within the interval: the last estimate
    m.advance(_free_cores.INTERVAL)
    assert _free_cores.kernel_threads(2) == 1


@pytest.mark.parametrize("running,expected", [(1, 2), (2, 1), (5, 1)])
def test_runnable_tasks_of_other_processes_count_too(monkeypatch, running, expected):
    """Busy time alone misses another process displaced by this one's spinning threads: its
    runnable task counts (procs_running minus this process's runnable threads)."""
    m = FakeMachine(monkeypatch, 0.0, 2.0)  # this process used both cores
    m.running = running
    _free_cores.kernel_threads(2)
    m.advance(0.5)
    assert _free_cores.kernel_threads(2) == expected


def test_disabled_uses_the_requested_count(monkeypatch):
    FakeMachine(monkeypatch, 2.0)
    monkeypatch.setattr(_free_cores, "enabled", False)
    assert _free_cores.kernel_threads(2) == 2


def test_reads_this_machine():
    """On Linux the estimate comes from /proc/stat: a count between 1 and the cores."""
    _free_cores.free_cores()
    _free_cores._state["t"] -= 1.0  # as if the last estimate was a second ago
    free = _free_cores.free_cores()
    if free is not None:
        assert 1 <= free <= len(_free_cores._cores())


def test_results_do_not_depend_on_it(monkeypatch):
    x = np.random.default_rng(0).standard_normal((2000, 40)).astype(np.float32)
    tokens = np.arange(2000) % 40
    fastlmrl.set_num_threads(2)
    try:
        monkeypatch.setattr(_free_cores, "enabled", False)
        a = fastlmrl.ppo_loss(x, tokens, np.full(2000, -3.7, np.float32), np.ones(2000, np.float32))
        monkeypatch.setattr(_free_cores, "enabled", True)
        b = fastlmrl.ppo_loss(x, tokens, np.full(2000, -3.7, np.float32), np.ones(2000, np.float32))
    finally:
        fastlmrl.set_num_threads(None)
    assert a.loss == b.loss and a.grad_logits.tobytes() == b.grad_logits.tobytes()
