"""Trials: the grid expanded into runs (:func:`expand_trials`), and one trial run or resumed in its
folder (:func:`run_trial`, the body of a Ray task; it can be called in-process too)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..runs import build_run, build_task, write_metrics
from .config import SweepConfig, load_config
from .statistics import summarize_history

__all__ = [
    "Trial",
    "TrialAttempt",
    "TrialCallback",
    "build_trainer",
    "check_buildable",
    "config_label",
    "expand_trials",
    "run_trial",
]


@dataclasses.dataclass(frozen=True)
class Trial:
    """One run: an algorithm with one configuration on one environment with one seed.

    ``trial_id``: a hash of everything below but the id fields (a restarted sweep recognises its
    trials); ``config_id``: the same without the seed (the trials aggregated together);
    ``params``: the typed hyper-parameters of this configuration; ``task``: the task options
    (a :class:`fastlmrl.runs.TaskSpec` as a dict); ``backend``: the kernel backend (None: the
    default of the worker)."""

    trial_id: str
    config_id: str
    algorithm: str
    env: str
    params: dict[str, Any]
    seed: int
    steps: int
    task: dict[str, Any]
    backend: str | None

    def spec(self) -> dict[str, Any]:
        """The trial as a JSON-ready dict (``spec.json``; what :func:`run_trial` runs)."""
        return {
            "trial_id": self.trial_id,
            "config_id": self.config_id,
            "algorithm": self.algorithm,
            "env": self.env,
            "params": dict(self.params),
            "seed": self.seed,
            "steps": self.steps,
            "task": dict(self.task),
            "backend": self.backend,
        }

    @property
    def label(self) -> str:
        """``algorithm/env k=v ...``: the configuration, for humans."""
        return config_label(self.algorithm, self.env, self.params)


def config_label(algorithm: str, env: str, params: dict[str, Any]) -> str:
    """``algorithm/env k=v ...`` (parameters in name order)."""
    inner = " ".join(f"{k}={v}" for k, v in sorted(params.items()))
    return f"{algorithm}/{env}" + (f" {inner}" if inner else "")


def _short_hash(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _task_spec(env: str, task: dict[str, Any]) -> dict[str, Any]:
    if env == "toy":
        return {"env": "toy", "num_envs": task.get("num_envs")}
    return {
        "env": "text",
        "corpus": task.get("corpus"),
        "order": task.get("order", 2),
        "max_new_tokens": task.get("max_new_tokens", 48),
        "num_envs": task.get("num_envs"),
    }


def expand_trials(config: Any) -> list[Trial]:
    """The grid's trials in a deterministic order (algorithm, env, params, seed).  ``config``:
    what :func:`fastlmrl.sweep.load_config` reads."""
    from ..trainers import ALGORITHMS, TEXT_ALGORITHMS

    cfg: SweepConfig = load_config(config)
    trials: list[Trial] = []
    seen: set[str] = set()
    for algorithm in cfg.algorithms:
        text = algorithm in TEXT_ALGORITHMS
        envs = cfg.envs if cfg.envs is not None else (["text"] if text else ["toy"])
        envs = [e for e in envs if e == "text" or not text]
        names = {f.name for f in dataclasses.fields(ALGORITHMS[algorithm].Config)}
        keys = sorted(k for k in cfg.params if k in names)
        for env in envs:
            task = _task_spec(env, cfg.task)
            for combo in itertools.product(*(cfg.params[k] for k in keys)):
                params = dict(zip(keys, combo))
                config_key = {
                    "algorithm": algorithm,
                    "env": env,
                    "params": params,
                    "steps": cfg.steps,
                    "task": task,
                    "backend": cfg.backend,
                }
                config_id = _short_hash(config_key)
                for seed in cfg.seeds:
                    trial_id = _short_hash(dict(config_key, seed=seed))
                    if trial_id in seen:
                        continue
                    seen.add(trial_id)
                    trials.append(
                        Trial(
                            trial_id,
                            config_id,
                            algorithm,
                            env,
                            params,
                            seed,
                            cfg.steps,
                            task,
                            cfg.backend,
                        )
                    )
    return trials


def build_trainer(spec: dict[str, Any], cache: dict[str, Any] | None = None) -> Any:
    """The trainer of a trial spec, built by :func:`fastlmrl.runs.build_run` with the typed
    params (``cache``: tasks already built, by their options)."""
    key = json.dumps(spec["task"], sort_keys=True)
    task = cache.get(key) if cache is not None else None
    if task is None:
        task = build_task(spec["task"])
        if cache is not None:
            cache[key] = task
    return build_run(
        spec["algorithm"],
        spec["task"],
        spec["seed"],
        spec["params"],
        task=task,
        option="sweep config 'params'",
    )


def check_buildable(trials: Sequence[Trial]) -> None:
    """Build each configuration's trainer once (seed of its first trial): bad values, missing
    corpora and impossible algorithm/env pairs fail here, before Ray starts."""
    cache: dict[str, Any] = {}
    done: set[str] = set()
    for trial in trials:
        if trial.config_id in done:
            continue
        done.add(trial.config_id)
        try:
            build_trainer(trial.spec(), cache)
        except (ValueError, TypeError, OSError) as exc:
            raise ValueError(
                f"sweep config: configuration {trial.label} cannot be built: {exc}"
            ) from None


# ---------------------------------------------------------------------------------------------
# files of a trial folder


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """The records of a JSON-lines file ([] when it does not exist)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    except FileNotFoundError:
        return []


def append_line(path: str, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync it."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def load_result(folder: str) -> dict[str, Any] | None:
    """A trial folder's ``result.json`` (None while the trial has not finished or failed)."""
    path = os.path.join(folder, "result.json")
    try:
        with open(path, encoding="utf-8") as handle:
            result: dict[str, Any] = json.load(handle)
            return result
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:  # never written by us (atomic writes); treat as not finished
        return None


# ---------------------------------------------------------------------------------------------
# one trial (runs inside a Ray worker, or in-process)


@dataclasses.dataclass(frozen=True)
class TrialAttempt:
    """One attempt at a trial, as a trial callback sees it.

    ``spec``: the trial (:meth:`Trial.spec`); ``folder``: its folder; ``attempt``: 1 for the
    first attempt, 2 for the first retry, ...; ``start_iteration``: the iteration it resumed at
    (0 for a fresh start)."""

    spec: dict[str, Any]
    folder: str
    attempt: int
    start_iteration: int

    @property
    def checkpoint_path(self) -> str:
        return os.path.join(self.folder, "checkpoint.ckpt")

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.folder, "metrics.jsonl")

    def checkpoint(self, trainer: Any) -> None:
        """Save the trainer's checkpoint and rewrite ``metrics.jsonl`` from its history: a later
        attempt resumes exactly here."""
        trainer.save(self.checkpoint_path)
        write_metrics(trainer.history, self.metrics_path)


#: ``callback(attempt, trainer, metrics)``: called inside the trial once when an attempt starts
#: (after it resumed from the checkpoint; ``metrics`` None) and after every training iteration
#: (after that iteration's periodic checkpoint, if any; ``metrics`` that iteration's dict).  An
#: exception it raises fails the attempt (which Ray retries).  Callbacks travel to Ray workers:
#: they must be picklable.
TrialCallback = Callable[[TrialAttempt, Any, "dict[str, Any] | None"], None]


def run_trial(
    spec: dict[str, Any],
    folder: str,
    checkpoint_every: int = 10,
    threads: int | None = None,
    callbacks: Sequence[TrialCallback] = (),
) -> dict[str, Any]:
    """Run (or resume) one trial in ``folder`` and return its result (also written, atomically, to
    ``folder/result.json``).  This is the body of the Ray task; it can be called in-process too.

    Each attempt appends a line to ``attempts.jsonl``, resumes from ``checkpoint.ckpt`` when it
    exists, saves a checkpoint and rewrites ``metrics.jsonl`` (from the trainer's history) every
    ``checkpoint_every`` iterations and at the end.  ``threads``: the Numba/Cython thread count
    of this trial; ``callbacks``: :data:`TrialCallback` s, called at the start of the attempt and
    after every iteration.
    """
    from .. import _backend

    saved_threads = _backend._num_threads
    try:  # the backend and thread count apply to this trial only (this matters in-process)
        if threads is not None:
            _backend.set_num_threads(int(threads))
        backend = spec.get("backend")
        with _backend.use_backend(backend) if backend else contextlib.nullcontext():
            return _run_trial(spec, folder, checkpoint_every, tuple(callbacks))
    finally:
        _backend.set_num_threads(saved_threads)


def _run_trial(
    spec: dict[str, Any],
    folder: str,
    checkpoint_every: int,
    callbacks: tuple[TrialCallback, ...],
) -> dict[str, Any]:
    from .. import _backend
    from .._atomic import atomic_write_text

    started = time.perf_counter()
    os.makedirs(folder, exist_ok=True)
    attempts_path = os.path.join(folder, "attempts.jsonl")
    number = len(read_jsonl(attempts_path)) + 1
    trainer = build_trainer(spec)
    checkpoint = os.path.join(folder, "checkpoint.ckpt")
    if os.path.exists(checkpoint):
        trainer.load(checkpoint)
    start_iteration = trainer.iterations_done
    append_line(
        attempts_path,
        {
            "attempt": number,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "start_iteration": start_iteration,
            "threads": _backend.get_num_threads(),
            "time": time.time(),
        },
    )
    attempt = TrialAttempt(
        spec=spec, folder=folder, attempt=number, start_iteration=start_iteration
    )

    def on_iteration(tr: Any, metrics: dict[str, Any]) -> None:
        if checkpoint_every and tr.iterations_done % checkpoint_every == 0:
            attempt.checkpoint(tr)
        for callback in callbacks:
            callback(attempt, tr, metrics)

    for callback in callbacks:
        callback(attempt, trainer, None)
    trainer.train(max(0, spec["steps"] - trainer.iterations_done), callbacks=[on_iteration])
    attempt.checkpoint(trainer)
    result = {
        **spec,
        "status": "finished",
        **summarize_history(trainer.history),
        "attempts": number,
        "resumed_from": start_iteration,
        "threads": _backend.get_num_threads(),
        "backend_used": _backend.get_backend(),
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "attempt_seconds": time.perf_counter() - started,
        "finished_at": time.time(),
        "error": None,
    }
    atomic_write_text(os.path.join(folder, "result.json"), json.dumps(result, indent=1) + "\n")
    return result
