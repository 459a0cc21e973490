"""The driver of a sweep: :func:`sweep` runs every trial of a grid as one Ray task (at most
``workers`` in flight, retried by Ray) and gathers the results (see :mod:`fastlmrl.sweep`)."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from .. import _validation as check
from .config import SweepConfig, is_int, load_config
from .report import aggregate, fmt, fmt_ci
from .statistics import require_scipy
from .trials import (
    Trial,
    TrialCallback,
    check_buildable,
    config_label,
    expand_trials,
    load_result,
    read_jsonl,
    run_trial,
)

__all__ = ["SweepResult", "sweep"]


@dataclasses.dataclass
class SweepResult:
    """What :func:`sweep` did and found (also on disk under ``out``)."""

    out: str
    trials: list[dict[str, Any]]  # one dict per trial (result.json contents), finished or failed
    results: list[dict[str, Any]]  # one dict per configuration: n, mean, 95% CI of each statistic
    best: dict[str, dict[str, Any]]  # env -> the configuration with the highest mean final reward
    failed: list[dict[str, Any]]  # the failed trials' dicts (with "error" and "traceback")
    ran: int  # trials run by this call
    skipped: int  # trials found finished (or failed) and not run again
    workers: int | None  # concurrent trials
    threads_per_trial: int | None  # Numba/Cython threads of each trial
    wall_seconds: float  # of this call
    plot: str | None  # learning_curves.png, when drawn
    address: str | None = None  # the Ray instance used

    def summary(self) -> str:
        """A few lines: counts, wall time, the best configuration of each environment."""
        lines = [
            f"{len(self.trials)} trials ({self.ran} run now, {self.skipped} already done), "
            f"{len(self.failed)} failed; {len(self.results)} configurations; "
            f"{self.wall_seconds:.1f} s"
        ]
        for env, row in sorted(self.best.items()):
            lines.append(
                f"best on {env}: {row['label']}: final reward "
                f"{fmt_ci(row, 'final_reward')} (n={row['n']})"
            )
        return "\n".join(lines)


def _check_callbacks(callbacks: Any) -> tuple[TrialCallback, ...]:
    if callable(callbacks) or isinstance(callbacks, (str, bytes)):
        raise TypeError(
            "trial_callbacks must be a sequence of callables, got one "
            f"{type(callbacks).__name__}; pass [callback]"
        )
    try:
        items = tuple(callbacks)
    except TypeError:
        raise TypeError(
            f"trial_callbacks must be a sequence of callables, got {type(callbacks).__name__}"
        ) from None
    for i, callback in enumerate(items):
        if not callable(callback):
            raise TypeError(f"trial_callbacks[{i}] is not callable: {callback!r}")
    return items


def _available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _error_text(exc: BaseException) -> tuple[str, str]:
    """(one-line error, full text) of an exception from ray.get."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        line = f"{type(cause).__name__}: {cause}"
    else:
        first = str(exc).strip().splitlines()
        line = f"{type(exc).__name__}: {first[0] if first else ''}"
    return line, re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # without the terminal colours


@check.renamed(deprecated={"log": "progress"})
def sweep(
    config: Any,
    *,
    out: str | None = None,
    address: str | None = None,
    workers: int | None = None,
    retry_failed: bool = False,
    plot: bool = True,
    progress: TextIO | bool | None = None,
    trial_callbacks: Sequence[TrialCallback] = (),
) -> SweepResult:
    """Run a grid of trials on Ray and gather the results (see the module docstring).

    ``config``: a dict, a :class:`SweepConfig` or a TOML/YAML path.  ``out``: the output folder
    (default: the grid's ``out``, else ``sweeps/<config file name>``).  ``address``: an existing
    Ray cluster to join (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``); default: start a
    private local instance — or use the one this process already initialised.  ``workers``:
    concurrent trials (default: the grid's ``workers``, else every core / every cluster CPU).
    ``retry_failed``: run again the trials recorded as failed.  ``progress``: a text stream for
    progress (default stdout; ``False`` for none; ``log`` is its deprecated name).
    ``trial_callbacks``: picklable callables ``callback(attempt, trainer, metrics)`` run inside
    every trial when an attempt starts (``metrics`` None) and after each iteration
    (:data:`fastlmrl.sweep.TrialCallback`; e.g. to log to an experiment tracker); an exception
    they raise fails the attempt, which Ray retries.

    Ray and SciPy (the confidence intervals) are the ``distributed`` extra; a missing one is a
    RuntimeError naming ``pip install 'fastlmrl[distributed]'``, raised before anything runs.
    """
    log: TextIO
    if progress is None or progress is True:
        log = sys.stdout
    elif progress is False:
        log = io.StringIO()
    else:
        log = progress
    started = time.perf_counter()
    cfg = load_config(config)
    if workers is not None and (not is_int(workers) or workers < 1):
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    if out is None:
        out = cfg.out or os.path.join(
            "sweeps", os.path.splitext(os.path.basename(cfg.source))[0] if cfg.source else "sweep"
        )
    out = os.path.abspath(out)
    callbacks = _check_callbacks(trial_callbacks)
    require_scipy()
    trials = expand_trials(cfg)
    check_buildable(trials)

    from .._atomic import atomic_write_text

    trials_dir = os.path.join(out, "trials")
    os.makedirs(trials_dir, exist_ok=True)
    todo, skipped = [], 0
    for trial in trials:
        folder = os.path.join(trials_dir, trial.trial_id)
        os.makedirs(folder, exist_ok=True)
        spec_path = os.path.join(folder, "spec.json")
        spec_text = json.dumps(trial.spec(), indent=1, sort_keys=True) + "\n"
        if os.path.exists(spec_path):
            with open(spec_path, encoding="utf-8") as handle:
                if json.load(handle) != json.loads(spec_text):
                    raise ValueError(
                        f"{spec_path} describes another trial (hash collision or "
                        "edited file); use another output folder"
                    )
        else:
            atomic_write_text(spec_path, spec_text)
        previous = load_result(folder)
        if previous is not None and (previous["status"] == "finished" or not retry_failed):
            skipped += 1
        else:
            todo.append(trial)

    address_used: str | None = None
    threads: int | None = None
    n_workers: int | None = workers or cfg.workers
    ran = 0
    print(
        f"sweep: {len(trials)} trials in {out}; {skipped} already done, {len(todo)} to run",
        file=log,
    )
    if todo:
        try:
            import ray
        except ImportError:
            raise RuntimeError(
                "sweeps run on Ray, which is not installed: pip install 'fastlmrl[distributed]'"
            ) from None
        owns_ray = False
        if address is None and ray.is_initialized():
            address_used = "(this process's Ray session)"
        elif address is None:
            cores = _available_cores()
            n_workers = n_workers or cores
            threads = cfg.threads_per_trial or max(1, cores // n_workers)
            ray.init(
                address="local",
                num_cpus=n_workers * threads,
                include_dashboard=False,
                logging_level=logging.WARNING,
            )
            owns_ray, address_used = True, "local"
            if n_workers * threads > cores:
                print(
                    f"note: {n_workers} workers × {threads} threads exceed the {cores} cores "
                    "of this machine",
                    file=log,
                )
        else:
            ray.init(address=address, logging_level=logging.WARNING)
            owns_ray, address_used = True, address
        try:
            if threads is None:  # an existing cluster: spread its CPUs over the workers
                total = int(ray.cluster_resources().get("CPU", 1))
                per_node = max(
                    [int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
                    or [1]
                )
                n_workers = n_workers or max(1, total)
                threads = cfg.threads_per_trial or max(1, min(per_node, total // n_workers))
                if threads > per_node:
                    raise ValueError(
                        f"threads_per_trial = {threads}, but the largest node of "
                        f"the Ray cluster has {per_node} CPUs"
                    )
            print(
                f"sweep: Ray {address_used}; {n_workers} workers, {threads} Numba/Cython "
                f"thread(s) per trial (fastlmrl.set_num_threads), max_retries "
                f"{cfg.max_retries}",
                file=log,
            )
            assert n_workers is not None and threads is not None  # set in every branch above
            ran = _run_on_ray(ray, todo, trials_dir, cfg, n_workers, threads, callbacks, log)
        except KeyboardInterrupt:
            print("sweep interrupted: run the same command again to resume", file=log)
            raise
        finally:
            if owns_ray:
                ray.shutdown()

    atomic_write_text(
        os.path.join(out, "sweep.json"),
        json.dumps(
            {
                "config": cfg.to_dict(),
                "trials": [t.trial_id for t in trials],
                "workers": n_workers,
                "threads_per_trial": threads,
                "address": address_used,
            },
            indent=1,
        )
        + "\n",
    )
    gathered = aggregate(out, trials, plot=plot, progress=log)
    failed = [t for t in gathered["trials"] if t["status"] != "finished"]
    result = SweepResult(
        out=out,
        trials=gathered["trials"],
        results=gathered["results"],
        best=gathered["best"],
        failed=failed,
        ran=ran,
        skipped=skipped,
        workers=n_workers,
        threads_per_trial=threads,
        wall_seconds=time.perf_counter() - started,
        plot=gathered["plot"],
        address=address_used,
    )
    for row in gathered["results"]:
        print(
            f"  {row['label']:48s} n={row['n']:<3d} reward {fmt_ci(row, 'final_reward'):>18s}"
            f"  KL {fmt_ci(row, 'final_kl'):>16s}  tok/s {fmt(row['tokens_per_second_mean'])}"
            + ("  <- best" if row["best"] else ""),
            file=log,
        )
    for t in failed:
        print(
            f"  FAILED {t['trial_id']} {config_label(t['algorithm'], t['env'], t['params'])} "
            f"seed={t['seed']} after {t['attempts']} attempt(s): {t['error']}",
            file=log,
        )
    print(result.summary(), file=log)
    print(
        f"results: {os.path.join(out, 'results.csv')}, results.jsonl, trials.csv, best.json"
        + (f", {os.path.basename(result.plot)}" if result.plot else ""),
        file=log,
    )
    return result


def _run_on_ray(
    ray: Any,
    todo: list[Trial],
    trials_dir: str,
    cfg: SweepConfig,
    workers: int,
    threads: int,
    callbacks: tuple[TrialCallback, ...],
    log: TextIO,
) -> int:
    """One Ray task per trial, at most ``workers`` in flight (Ray's pattern for limiting pending
    tasks with ``ray.wait``); Ray places them and retries them; write the failed results."""
    from .._atomic import atomic_write_text

    remote = ray.remote(run_trial).options(
        num_cpus=threads, max_retries=cfg.max_retries, retry_exceptions=True
    )
    queue, pending = list(todo), {}

    def submit() -> None:
        trial = queue.pop(0)
        folder = os.path.join(trials_dir, trial.trial_id)
        ref = remote.remote(trial.spec(), folder, cfg.checkpoint_every, threads, callbacks)
        pending[ref] = (trial, time.perf_counter())

    while queue and len(pending) < workers:
        submit()
    done = 0
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        ref = ready[0]
        trial, submitted = pending.pop(ref)
        if queue:
            submit()
        done += 1
        folder = os.path.join(trials_dir, trial.trial_id)
        try:
            res = ray.get(ref)
            msg = (
                f"finished: final reward {fmt(res['final_reward'])}, "
                f"{res['iterations']} iterations (attempt {res['attempts']}"
                + (f", resumed at {res['resumed_from']}" if res["resumed_from"] else "")
                + f"), {res['attempt_seconds']:.1f} s in the worker, "
                f"{time.perf_counter() - submitted:.1f} s since submission"
            )
        except ray.exceptions.RayError as exc:
            line, full = _error_text(exc)
            attempts = len(read_jsonl(os.path.join(folder, "attempts.jsonl")))
            record = {
                **trial.spec(),
                "status": "failed",
                "attempts": attempts,
                "iterations": None,
                "reward_metric": None,
                "final_reward": None,
                "final_kl": None,
                "tokens": None,
                "train_seconds": None,
                "tokens_per_second": None,
                "threads": threads,
                "error": line,
                "traceback": full,
                "finished_at": time.time(),
            }
            atomic_write_text(
                os.path.join(folder, "result.json"), json.dumps(record, indent=1) + "\n"
            )
            msg = f"FAILED after {attempts} attempt(s): {line}"
        print(
            f"[{done}/{len(todo)}] {trial.trial_id} {trial.label} seed={trial.seed}: {msg}",
            file=log,
            flush=True,
        )
    return done
