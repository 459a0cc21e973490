"""How many threads a parallel kernel call should use: the requested count, capped by the cores that
other processes leave free.

Why.  The parallel kernels share rows out in small chunks claimed from a counter (dynamic
schedule), but a call still ends by joining its threads: when another process keeps a core busy
(a shared machine, a laptop, a Ray worker next to another), the second thread waits for that core
before it can even find that no chunk is left, and the call waits for it.  Measured on a 2-core
machine with a spinning process on one core: two threads 0.4-0.7x the speed of one for
``ppo_loss`` at (65536, 64), and 0.02-0.25x for ``token_log_probs`` on a machine loaded by
several processes (``benchmarks/bench_threads.py``, columns "fixed").  So a call takes only as
many threads as there are cores that are free.

How.  From ``/proc/stat`` (Linux), the larger of two estimates of the cores other processes
occupy: the busy time of the cores this process may run on minus this process's own CPU time,
over the interval since the last estimate (what they used), and the runnable tasks now
(``procs_running``) minus this process's runnable threads (``/proc/self/task``), spread over the
online cores (what they want: when this process's worker threads spin, they use the cores the
others would have had, and the first estimate alone misses them).  A core counts as taken when
other processes use or want more than half of it.  The estimate is refreshed at most every
``INTERVAL`` seconds (~0.1-0.3 ms); in between a call costs one clock read.  Elsewhere (no
/proc/stat) the requested count is used as is.  Results never depend on the thread count (every
kernel computes each row the same way whichever thread takes it), so this changes speed only.

``enabled = False`` (or the environment variable ``FASTLMRL_ADAPTIVE_THREADS=0`` at import)
turns it off: then every call uses the requested count.
"""

from __future__ import annotations

import os
import threading
import time

INTERVAL = 0.1  # seconds between two estimates
enabled = os.environ.get("FASTLMRL_ADAPTIVE_THREADS", "1") != "0"

_lock = threading.Lock()
_state = {"t": None, "busy": 0.0, "own": 0.0, "free": None}
try:
    _TICK = 1.0 / os.sysconf("SC_CLK_TCK")
except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
    _TICK = 0.01


def _read_stat(cores):
    """(busy seconds of ``cores`` since boot (all but idle and iowait), runnable tasks now
    (``procs_running``, every core)); None without /proc/stat."""
    try:
        with open("/proc/stat", "rb") as f:
            text = f.read()
    except OSError:
        return None
    busy = 0
    running = 0
    for line in text.split(b"\n"):
        if line.startswith(b"cpu") and line[3:4] != b" ":
            fields = line.split()
            try:
                cpu = int(fields[0][3:])
            except ValueError:
                continue
            if cpu in cores:
                ticks = [int(x) for x in fields[1:9]]
                busy += sum(ticks) - ticks[3] - ticks[4]  # minus idle, iowait
        elif line.startswith(b"procs_running"):
            running = int(line.split()[1])
    return busy * _TICK, running


def _own_running() -> int:
    """Threads of this process that are runnable now (the caller, worker threads spinning)."""
    count = 0
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return 1
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                stat = f.read(512)
        except OSError:
            continue
        count += stat[stat.rfind(b")") + 2 :][:1] == b"R"
    return max(count, 1)


def _cores():
    try:
        return os.sched_getaffinity(0)
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return set(range(os.cpu_count() or 1))


def free_cores() -> int | None:
    """The estimated number of cores (of this process's affinity) not taken by other processes,
    refreshed at most every INTERVAL seconds; None when unknown (no estimate yet, or no
    /proc/stat)."""
    now = time.monotonic()
    st = _state
    if st["t"] is not None and now - st["t"] < INTERVAL:
        return st["free"]
    with _lock:
        if st["t"] is not None and now - st["t"] < INTERVAL:
            return st["free"]
        cores = _cores()
        stat = _read_stat(cores)
        own = time.process_time()
        if stat is None:
            st["t"], st["free"] = now, None
            return None
        busy, running = stat
        # other processes' runnable tasks now, spread over all online cores
        online = os.cpu_count() or len(cores)
        waiting = max(0, running - _own_running()) * len(cores) / max(online, len(cores))
        if st["t"] is not None:
            elapsed = now - st["t"]
            used = max(0.0, (busy - st["busy"]) - (own - st["own"])) / elapsed
            others = max(used, waiting)
            # a core is taken when other processes use (or want) more than half of it
            st["free"] = max(1, min(len(cores), int(len(cores) - others + 0.5)))
        st["t"], st["busy"], st["own"] = now, busy, own
        return st["free"]


def kernel_threads(requested: int) -> int:
    """The thread count for one parallel kernel call: ``requested`` (fastlmrl.get_num_threads()),
    capped by the free cores when ``enabled``."""
    if requested <= 1 or not enabled:
        return requested
    free = free_cores()
    return requested if free is None else max(1, min(requested, free))


def threads() -> int:
    """kernel_threads(fastlmrl.get_num_threads()): what the public functions pass to a kernel."""
    from . import _backend

    return kernel_threads(_backend.get_num_threads())
