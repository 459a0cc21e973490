"""Sweep throughput on Ray: trials per minute and trained tokens/s summed over the workers, with 1
and 2 workers, and the per-trial overhead that Ray adds.

Grids (``GRIDS``): ``tiny`` = GRPO on the text task (8 prompts × groups of 4, 16 new tokens) and
Q-learning on the toy MDP, 4 seeds, 10 iterations per trial: 8 trials dominated by fixed costs;
``small`` = GRPO with its default config (32 prompts × 8, 48 new tokens) and Q-learning, 2 seeds,
60 iterations: 4 trials whose training dominates.  Both on the numba backend.

One Ray instance with 2 CPUs is started per module (``ray.init`` costs ~6 s, reported once as
``ray_init_s``); its worker processes are warmed by one untimed sweep first (imports, Numba cache
loads).  With 1 worker each trial asks Ray for 2 CPUs and runs with 2 threads; with 2 workers,
1 CPU and 1 thread each (``fastlmrl.set_num_threads``), so the 2 cores are never oversubscribed;
``workers1-threads1`` shows what the second thread of a lone trial buys (the threaded kernels wait
for a core that another process occupies on a shared machine).

* ``test_sweep_throughput[grid-workersN]``: one timed call = one whole sweep into a fresh folder.
  ``trials_per_minute`` = trials / wall time; ``tokens_per_s_total`` = all trained tokens / wall
  time (what the workers achieve together, every overhead included);
  ``tokens_per_s_in_training`` = workers × trained tokens / the trials' training seconds (the
  rate if the workers did nothing but train).
* ``test_ray_overhead_per_trial[grid]``: the same trials run one after another in this process
  with :func:`fastlmrl.sweep.run_trial` (same checkpoints and files) versus a 1-worker sweep on
  Ray, both with 1 thread: ``overhead_ms_per_trial`` = (Ray sweep wall - in-process wall) / trials
  (best of the rounds; it includes the sweep's own bookkeeping: spec files, aggregation).

Run:  pytest benchmarks/bench_sweep.py --benchmark-enable --benchmark-group-by=group \\
          --benchmark-columns=mean,rounds -p no:cacheprovider
      python benchmarks/bench_sweep.py          # the same figures as a table
"""

from __future__ import annotations

import importlib
import itertools
import os
import shutil
import sys
import tempfile
import time

import pytest

# the module (fastlmrl.sweep may also name the function once fastlmrl/__init__.py exports it)
sw = importlib.import_module("fastlmrl.sweep")

GRIDS = {
    "tiny": {
        "algorithms": ["grpo", "q_learning"],
        "seeds": 4,
        "steps": 10,
        "checkpoint_every": 5,
        "backend": "numba",
        "task": {"max_new_tokens": 16},
        "params": {"num_prompts": [8], "group_size": [4]},
    },
    "small": {
        "algorithms": ["grpo", "q_learning"],
        "seeds": 2,
        "steps": 60,
        "checkpoint_every": 20,
        "backend": "numba",
    },
}
# (workers, threads per trial): the default split of the 2 cores, and 1 worker with 1 thread
WORKERS = ((1, 2), (1, 1), (2, 1))
_counter = itertools.count()


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    start = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    init_s = time.perf_counter() - start
    root = tempfile.mkdtemp(prefix="fastlmrl-bench-sweep-")
    sw.sweep(GRIDS["tiny"], out=os.path.join(root, "warm"), workers=2, plot=False, progress=False)
    yield ray, init_s, root
    ray.shutdown()
    shutil.rmtree(root, ignore_errors=True)


def run_sweep(grid, workers, root, threads=None):
    """One whole sweep into a fresh folder; returns (trials, tokens, training seconds, wall s)."""
    out = os.path.join(root, f"s{next(_counter)}")
    config = dict(GRIDS[grid], threads_per_trial=threads)
    start = time.perf_counter()
    result = sw.sweep(config, out=out, workers=workers, plot=False, progress=False)
    assert result.threads_per_trial == (threads or 2 // workers)
    wall = time.perf_counter() - start
    assert not result.failed and result.ran == len(result.trials)
    tokens = sum(t["tokens"] for t in result.trials)
    train = sum(t["train_seconds"] for t in result.trials)
    return len(result.trials), tokens, train, wall


def run_in_process(grid, root):
    out = os.path.join(root, f"p{next(_counter)}")
    trials = sw.expand_trials(GRIDS[grid])
    start = time.perf_counter()
    for t in trials:
        sw.run_trial(
            t.spec(), os.path.join(out, t.trial_id), GRIDS[grid]["checkpoint_every"], threads=1
        )
    return len(trials), time.perf_counter() - start


@pytest.mark.parametrize(
    "workers, threads", WORKERS, ids=[f"workers{w}-threads{t}" for w, t in WORKERS]
)
@pytest.mark.parametrize("grid", list(GRIDS))
def test_sweep_throughput(benchmark, ray_session, grid, workers, threads):
    _, init_s, root = ray_session
    benchmark.group = f"sweep-{grid}"
    runs = []

    def once():
        runs.append(run_sweep(grid, workers, root, threads))

    benchmark.pedantic(once, rounds=2, iterations=1, warmup_rounds=0)
    trials = sum(r[0] for r in runs)
    tokens = sum(r[1] for r in runs)
    wall = sum(r[3] for r in runs)
    benchmark.extra_info.update(
        {
            "trials": runs[0][0],
            "workers": workers,
            "threads": threads,
            "ray_init_s": round(init_s, 2),
            "trials_per_minute": round(trials / wall * 60, 1),
            "tokens_per_s_total": round(tokens / wall),
            "tokens_per_s_in_training": round(workers * tokens / sum(r[2] for r in runs)),
        }
    )


@pytest.mark.parametrize("grid", list(GRIDS))
def test_ray_overhead_per_trial(benchmark, ray_session, grid):
    _, _, root = ray_session
    benchmark.group = f"sweep-overhead-{grid}"
    run_in_process(grid, root)  # warm this process (imports, Numba cache loads)
    local = []

    def in_process():
        local.append(run_in_process(grid, root))

    benchmark.pedantic(in_process, rounds=2, iterations=1, warmup_rounds=0)
    on_ray = [run_sweep(grid, 1, root, 1) for _ in range(2)]
    n = local[0][0]
    local_s = min(r[1] for r in local) / n
    ray_s = min(r[3] for r in on_ray) / n
    benchmark.extra_info.update(
        {
            "trials": n,
            "in_process_ms_per_trial": round(local_s * 1e3, 1),
            "ray_ms_per_trial": round(ray_s * 1e3, 1),
            "overhead_ms_per_trial": round((ray_s - local_s) * 1e3, 1),
        }
    )


def main() -> int:  # pragma: no cover - a table for the closing note
    import ray

    start = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    print(f"ray.init: {time.perf_counter() - start:.2f} s")
    root = tempfile.mkdtemp(prefix="fastlmrl-bench-sweep-")
    try:
        sw.sweep(
            GRIDS["tiny"], out=os.path.join(root, "warm"), workers=2, plot=False, progress=False
        )
        for grid in GRIDS:
            run_in_process(grid, root)
            local = min(run_in_process(grid, root)[1] for _ in range(3))
            for workers, threads in WORKERS:
                runs = [run_sweep(grid, workers, root, threads) for _ in range(3)]
                n, tokens, train, wall = min(runs, key=lambda r: r[3])
                print(
                    f"{grid:6s} workers={workers} threads={threads}: {n} trials in "
                    f"{wall:6.2f} s = {n / wall * 60:7.1f} trials/min, "
                    f"{tokens / wall / 1e6:6.3f} M tokens/s "
                    f"total ({workers * tokens / train / 1e6:6.3f} M/s counting training "
                    f"time only; workers busy {train / workers / wall:4.0%})"
                )
                if (workers, threads) == (1, 1):
                    print(
                        f"{grid:6s} in-process: {local / n * 1e3:7.1f} ms/trial; on Ray (1 "
                        f"worker): {wall / n * 1e3:7.1f} ms/trial; overhead "
                        f"{(wall - local) / n * 1e3:6.1f} ms/trial"
                    )
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
