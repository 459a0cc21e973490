"""Sweeps: every algorithm × environment × hyper-parameter setting × seed, run on Ray.

A researcher reports means with confidence intervals over seeds, for many algorithms and
settings: hundreds of runs.  :func:`sweep` (and ``fastlmrl sweep CONFIG``) expands a grid into
*trials*, runs each one as an ordinary trainer run (its own checkpoint and metrics file) as one
Ray task, and gathers the results into one table.

Ray is the optional extra ``fastlmrl[distributed]`` and is imported only when a sweep has trials
to run.  By default the sweep starts a private local Ray instance (``ray.init(address="local",
num_cpus=...)``); ``address=`` / ``--address`` joins an existing cluster instead (then the output
folder must be on a file system that every node sees, as for Ray Tune's ``storage_path``).

The grid (a TOML file, a YAML file when PyYAML is installed, or a dict)::

    algorithms = ["grpo", "rloo", "q_learning"]   # names of fastlmrl.trainers.ALGORITHMS
    envs = ["text", "toy"]          # optional; default: text for policy-gradient, toy for value
    seeds = 5                       # a count (seeds 0..4) or a list of ints
    steps = 200                     # training iterations per trial
    checkpoint_every = 20           # iterations between checkpoints (0: only at the end)
    max_retries = 2                 # retries of a trial that raises or whose worker dies
    workers = 2                     # concurrent trials (default: the cores of this machine)
    threads_per_trial = 1           # optional; default max(1, cores // workers)
    backend = "numba"               # optional; the kernel backend inside each trial
    out = "sweeps/example"          # optional output folder (relative to the working directory)

    [task]                          # options of the text task (and num_envs of both)
    max_new_tokens = 24
    order = 2
    # corpus = "corpus.txt"         # relative to the config file
    # num_envs = 128

    [params]                        # hyper-parameter -> list of values
    lr = [0.01, 0.03]
    num_prompts = [8]
    alpha = [0.1, 0.5]

Only ``algorithms`` is required; the defaults are ``seeds = 1`` (seed 0), ``steps = 100``,
``checkpoint_every = 10``, ``max_retries = 2`` and the task options of ``fastlmrl train``.
A parameter applies to an algorithm only when the algorithm's ``Config`` dataclass has a field of
that name; each algorithm's configurations are the product of the lists of its own fields (so
``alpha`` multiplies the Q-learning trials, not the GRPO ones).  A text-policy algorithm pairs only
with the ``text`` environment; a value method or planner pairs with both.  Everything is checked —
unknown keys, algorithms, environments, parameters that no listed algorithm has, values of the
wrong type, empty lists, and every configuration by building its trainer once — before Ray starts.

Layout of the output folder ``OUT``::

    OUT/sweep.json                   the normalised grid, the trial ids, workers and threads
    OUT/trials/<id>/spec.json        what the trial is (algorithm, env, params, seed, steps, task)
    OUT/trials/<id>/checkpoint.ckpt  the trainer's state (every ``checkpoint_every`` iterations)
    OUT/trials/<id>/metrics.jsonl    one line per iteration, rewritten from the trainer's history
    OUT/trials/<id>/attempts.jsonl   one line per attempt (pid, host, the iteration it resumed at)
    OUT/trials/<id>/result.json      written atomically once the trial finished or failed for good
    OUT/trials.csv                   one row per trial
    OUT/results.csv, results.jsonl   one row per configuration: n, mean and 95% CI
    OUT/best.json                    the best configuration of each environment
    OUT/learning_curves.png          mean ± 95% CI across seeds per iteration (needs matplotlib)

The trial id is a hash of (algorithm, env, params, seed, steps, task options, backend): a sweep
started again over the same folder skips trials whose ``result.json`` exists and resumes the others
from their checkpoints.  A checkpoint holds the trainer's whole history, and the metrics file is
rewritten from it, so an iteration is never counted twice and a resumed trial ends bit-identical
to one that never stopped.  Failed trials stay failed on a restart unless ``retry_failed=True``
(``--retry-failed``).

Fault handling is Ray's: each trial is a task with ``max_retries`` (a dead worker) and
``retry_exceptions=True`` (an exception); every attempt resumes from the trial's checkpoint.  A task
that exhausted its retries is recorded as failed with its error and traceback.

Workers and threads: at most ``workers`` trials are in flight (default: every core of this machine
for a local instance, every CPU of a cluster).  Each trial sets ``fastlmrl.set_num_threads(T)``
(which also sets Numba's) with ``T = threads_per_trial`` or, by default, ``max(1, cores // workers)``
(local: the cores of this machine; a cluster: its CPUs, at most those of its largest node), and
asks Ray for ``num_cpus=T``, so that the trials on a node never use more threads than it has CPUs.
A local instance is started with ``num_cpus = workers × T``.  The setting is printed and saved
(``sweep.json``, and ``threads`` in each ``result.json``).

Aggregation (per configuration = algorithm, env, params, steps, task; over its finished seeds):
the *final reward* of a trial is the mean over its last 10% of iterations (at least one) of
``score`` (text tasks: the task reward per sequence, without the KL penalty) or of ``reward``
(value methods: return per episode); the final KL likewise (text only); tokens/s is the trained
tokens over the training seconds.  The interval is the two-sided 95% Student t interval
``mean ± t(0.975, n-1) · s / sqrt(n)`` with the sample standard deviation ``s`` (none for n = 1).
The best configuration is the one with the highest mean final reward in each environment (rewards
of different environments are not comparable; a tie goes to the first in label order).

Test hook: the environment variable ``FASTLMRL_SWEEP_FAULTS`` (read by the driver, passed to the
trials) injects faults, e.g. ``FASTLMRL_SWEEP_FAULTS="q_learning:1=raise@2;ab12cd34ef56=exit-once"``.
Each entry is ``SELECTOR=ACTION[@N]``: SELECTOR is a trial id or ``ALGORITHM:SEED``; the action
fires once the trial has done N iterations (default 0), after a checkpoint: ``raise`` (every
attempt raises RuntimeError), ``raise-once`` (only the trial's first attempt), ``exit`` /
``exit-once`` (the worker process dies, ``os._exit(1)``), ``kill-driver-once`` (SIGKILL the
driver process, then die: an interrupted sweep).
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import signal
import socket
import sys
import time

from . import _validation as check

__all__ = ["SweepConfig", "SweepResult", "Trial", "load_config", "expand_trials", "run_trial",
           "aggregate", "mean_ci", "student_t_ppf", "summarize_history", "sweep"]

FAULTS_ENV = "FASTLMRL_SWEEP_FAULTS"
ENVS = ("text", "toy")
_TOP_KEYS = {"algorithms", "envs", "seeds", "steps", "params", "task", "checkpoint_every",
             "max_retries", "workers", "threads_per_trial", "backend", "out"}
_TASK_KEYS = {"corpus", "order", "max_new_tokens", "num_envs"}
_FAULT_ACTIONS = ("raise", "raise-once", "exit", "exit-once", "kill-driver-once")
FINAL_FRACTION = 0.1


# ---------------------------------------------------------------------------------------------
# the grid


@dataclasses.dataclass(frozen=True)
class Trial:
    """One run: an algorithm with one configuration on one environment with one seed."""

    trial_id: str
    config_id: str
    algorithm: str
    env: str
    params: dict
    seed: int
    steps: int
    task: dict
    backend: str | None

    def spec(self) -> dict:
        return {"trial_id": self.trial_id, "config_id": self.config_id,
                "algorithm": self.algorithm, "env": self.env, "params": dict(self.params),
                "seed": self.seed, "steps": self.steps, "task": dict(self.task),
                "backend": self.backend}

    @property
    def label(self) -> str:
        return config_label(self.algorithm, self.env, self.params)


@dataclasses.dataclass
class SweepConfig:
    """A validated grid (see the module docstring for the keys)."""

    algorithms: list
    envs: list | None
    seeds: list
    steps: int
    params: dict
    task: dict
    checkpoint_every: int = 10
    max_retries: int = 2
    workers: int | None = None
    threads_per_trial: int | None = None
    backend: str | None = None
    out: str | None = None
    source: str | None = None  # the file the grid came from

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def config_label(algorithm: str, env: str, params: dict) -> str:
    inner = " ".join(f"{k}={v}" for k, v in sorted(params.items()))
    return f"{algorithm}/{env}" + (f" {inner}" if inner else "")


def _short_hash(obj) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def load_config(config) -> SweepConfig:
    """Read and validate a grid: a dict, a :class:`SweepConfig`, or a path to a ``.toml`` file
    (or ``.yaml``/``.yml`` when PyYAML is installed — it is not a dependency of fastlmrl).
    Raises ValueError/TypeError naming the offending key."""
    if isinstance(config, SweepConfig):
        return config
    base_dir, source = os.getcwd(), None
    if isinstance(config, (str, os.PathLike)):
        path = os.fspath(config)
        if not os.path.isfile(path):
            raise ValueError(f"sweep config {path!r} does not exist")
        source, base_dir = os.path.abspath(path), os.path.dirname(os.path.abspath(path))
        lower = path.lower()
        if lower.endswith(".toml"):
            import tomllib

            with open(path, "rb") as handle:
                try:
                    raw = tomllib.load(handle)
                except tomllib.TOMLDecodeError as exc:
                    raise ValueError(f"{path}: invalid TOML: {exc}") from None
        elif lower.endswith((".yaml", ".yml")):
            try:
                import yaml
            except ImportError:
                raise RuntimeError(
                    f"{path}: YAML sweep configs need PyYAML (pip install pyyaml), which fastlmrl "
                    "does not depend on; or write the grid as TOML") from None
            with open(path, encoding="utf-8") as handle:
                try:
                    raw = yaml.safe_load(handle)
                except yaml.YAMLError as exc:
                    raise ValueError(f"{path}: invalid YAML: {exc}") from None
        else:
            raise ValueError(f"sweep config {path!r}: expected a .toml, .yaml or .yml file")
    elif isinstance(config, dict):
        raw = config
    else:
        raise TypeError(f"config must be a dict or a path, got {type(config).__name__}")
    if not isinstance(raw, dict):
        raise TypeError(f"sweep config must be a table/mapping, got {type(raw).__name__}")
    return _validate(raw, base_dir, source)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int_key(raw, key, default, minimum, allow_none=False):
    v = raw.get(key, default)
    if v is None and allow_none:
        return None
    if not _is_int(v):
        raise TypeError(f"sweep config {key!r} must be an int, got {v!r}")
    if v < minimum:
        raise ValueError(f"sweep config {key!r} must be >= {minimum}, got {v}")
    return v


def _str_list(raw, key, choices=None) -> list:
    v = raw[key]
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list):
        raise TypeError(f"sweep config {key!r} must be a list of names, got {v!r}")
    if not v:
        raise ValueError(f"sweep config {key!r} is empty")
    for item in v:
        if not isinstance(item, str):
            raise TypeError(f"sweep config {key!r}: {item!r} is not a name")
        if choices is not None and item not in choices:
            raise ValueError(f"sweep config {key!r}: unknown {key[:-1]} {item!r}; choose from "
                             f"{', '.join(sorted(choices))}")
    if len(set(v)) != len(v):
        raise ValueError(f"sweep config {key!r} lists a name twice: {v}")
    return list(v)


def _validate(raw: dict, base_dir: str, source) -> SweepConfig:
    from . import _backend
    from .trainers import ALGORITHMS

    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ValueError(f"sweep config: unknown key(s) {sorted(unknown)}; allowed: "
                         f"{', '.join(sorted(_TOP_KEYS))}")
    if "algorithms" not in raw:
        raise ValueError("sweep config: 'algorithms' is required")
    algorithms = _str_list(raw, "algorithms", ALGORITHMS)
    envs = _str_list(raw, "envs", ENVS) if raw.get("envs") is not None else None

    seeds = raw.get("seeds", 1)
    if _is_int(seeds):
        if seeds < 1:
            raise ValueError(f"sweep config 'seeds': a count must be >= 1, got {seeds}")
        seeds = list(range(seeds))
    elif isinstance(seeds, list):
        if not seeds:
            raise ValueError("sweep config 'seeds' is empty")
        for s in seeds:
            if not _is_int(s) or s < 0:
                raise TypeError(f"sweep config 'seeds': {s!r} is not a non-negative int")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"sweep config 'seeds' lists a seed twice: {seeds}")
    else:
        raise TypeError(f"sweep config 'seeds' must be an int count or a list of ints, got "
                        f"{seeds!r}")

    steps = _int_key(raw, "steps", 100, 1)
    checkpoint_every = _int_key(raw, "checkpoint_every", 10, 0)
    max_retries = _int_key(raw, "max_retries", 2, 0)
    workers = _int_key(raw, "workers", None, 1, allow_none=True)
    threads = _int_key(raw, "threads_per_trial", None, 1, allow_none=True)
    backend = raw.get("backend")
    if backend is not None and backend not in _backend.BACKENDS:
        raise ValueError(f"sweep config 'backend': unknown backend {backend!r}; choose from "
                         f"{', '.join(_backend.BACKENDS)}")
    out = raw.get("out")
    if out is not None and not isinstance(out, str):
        raise TypeError(f"sweep config 'out' must be a path string, got {out!r}")

    task_raw = raw.get("task") or {}
    if not isinstance(task_raw, dict):
        raise TypeError(f"sweep config 'task' must be a table, got {task_raw!r}")
    unknown = set(task_raw) - _TASK_KEYS
    if unknown:
        raise ValueError(f"sweep config 'task': unknown key(s) {sorted(unknown)}; allowed: "
                         f"{', '.join(sorted(_TASK_KEYS))}")
    task = {"corpus": None, "order": _int_key(task_raw, "order", 2, 1),
            "max_new_tokens": _int_key(task_raw, "max_new_tokens", 48, 1),
            "num_envs": _int_key(task_raw, "num_envs", None, 1, allow_none=True)}
    corpus = task_raw.get("corpus")
    if corpus is not None:
        if not isinstance(corpus, str):
            raise TypeError(f"sweep config 'task.corpus' must be a path string, got {corpus!r}")
        corpus = os.path.join(base_dir, os.path.expanduser(corpus))
        if not os.path.isfile(corpus):
            raise ValueError(f"sweep config 'task.corpus': {corpus!r} does not exist")
        task["corpus"] = os.path.abspath(corpus)

    params_raw = raw.get("params") or {}
    if not isinstance(params_raw, dict):
        raise TypeError(f"sweep config 'params' must be a table of name -> list, got "
                        f"{params_raw!r}")
    fields = {a: {f.name: f for f in dataclasses.fields(ALGORITHMS[a].Config)}
              for a in algorithms}
    params = {}
    for name, values in params_raw.items():
        if not isinstance(values, list):
            values = [values]
        if not values:
            raise ValueError(f"sweep config 'params.{name}' is an empty list")
        owners = [a for a in algorithms if name in fields[a]]
        if not owners:
            raise ValueError(f"sweep config 'params.{name}': none of {algorithms} has a "
                             f"hyper-parameter {name!r}")
        for a in owners:  # the value must fit the field of every algorithm that has it
            for v in values:
                _coerce(name, v, fields[a][name], a)
        coerced = [_coerce(name, v, fields[owners[0]][name], owners[0]) for v in values]
        if len({json.dumps(v) for v in coerced}) != len(coerced):
            raise ValueError(f"sweep config 'params.{name}' lists a value twice: {values}")
        params[name] = coerced

    if envs is not None:
        from .trainers import TEXT_ALGORITHMS

        for a in algorithms:
            if a in TEXT_ALGORITHMS and "text" not in envs:
                raise ValueError(f"sweep config: algorithm {a!r} trains a text policy and needs "
                                 f"env 'text', but envs = {envs}")
    return SweepConfig(algorithms=algorithms, envs=envs, seeds=list(seeds), steps=steps,
                       params=params, task=task, checkpoint_every=checkpoint_every,
                       max_retries=max_retries, workers=workers, threads_per_trial=threads,
                       backend=backend, out=out, source=source)


def _coerce(name, value, field, algorithm):
    """A TOML/YAML value -> the type of the config field (ints accepted for float fields)."""
    default = field.default
    where = f"sweep config 'params.{name}' ({algorithm})"
    if value is None:
        if default is None:
            return None
        raise TypeError(f"{where}: None is not allowed (default {default!r})")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise TypeError(f"{where}: expected true/false, got {value!r}")
        return value
    if _is_int(default):
        if not _is_int(value):
            raise TypeError(f"{where}: expected an int, got {value!r}")
        return value
    if isinstance(default, float) or default is None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{where}: expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value!r} is not finite")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise TypeError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported field type {type(default).__name__}")


def _task_spec(env: str, task: dict) -> dict:
    if env == "toy":
        return {"env": "toy", "num_envs": task.get("num_envs")}
    return {"env": "text", "corpus": task.get("corpus"), "order": task.get("order", 2),
            "max_new_tokens": task.get("max_new_tokens", 48), "num_envs": task.get("num_envs")}


def expand_trials(config) -> list:
    """The grid's trials in a deterministic order (algorithm, env, params, seed)."""
    import itertools

    from .trainers import ALGORITHMS, TEXT_ALGORITHMS

    cfg = load_config(config)
    trials, seen = [], set()
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
                config_key = {"algorithm": algorithm, "env": env, "params": params,
                              "steps": cfg.steps, "task": task, "backend": cfg.backend}
                config_id = _short_hash(config_key)
                for seed in cfg.seeds:
                    trial_id = _short_hash(dict(config_key, seed=seed))
                    if trial_id in seen:
                        continue
                    seen.add(trial_id)
                    trials.append(Trial(trial_id, config_id, algorithm, env, params, seed,
                                        cfg.steps, task, cfg.backend))
    return trials


def _overrides(params: dict) -> list:
    """params -> the ``key=value`` strings of ``fastlmrl train --set`` (kept in checkpoints so that
    ``fastlmrl sample OUT/trials/<id>`` works); ``str`` of a float round-trips exactly."""
    return [f"{k}={v}" for k, v in sorted(params.items())]


def _build(spec: dict, cache=None):
    from .cli import build_task, make_trainer

    key = json.dumps(spec["task"], sort_keys=True)
    if cache is not None and key in cache:
        task = cache[key]
    else:
        task = build_task(spec["task"])
        if cache is not None:
            cache[key] = task
    trainer = make_trainer(spec["algorithm"], task, spec["seed"], _overrides(spec["params"]))
    trainer.task_spec = dict(spec["task"], algo=spec["algorithm"],
                             overrides=_overrides(spec["params"]))
    return trainer


def _check_buildable(trials) -> None:
    """Build each configuration's trainer once (seed of its first trial): bad values, missing
    corpora and impossible algorithm/env pairs fail here, before Ray starts."""
    cache, done = {}, set()
    for trial in trials:
        if trial.config_id in done:
            continue
        done.add(trial.config_id)
        try:
            _build(trial.spec(), cache)
        except (ValueError, TypeError, OSError) as exc:
            raise ValueError(f"sweep config: configuration {trial.label} cannot be built: "
                             f"{exc}") from None


# ---------------------------------------------------------------------------------------------
# one trial (runs inside a Ray worker, or in-process)


def _parse_faults(text: str | None) -> dict:
    """``FASTLMRL_SWEEP_FAULTS`` -> {selector: (action, at_iteration)}."""
    faults = {}
    for entry in (text or "").replace(",", ";").split(";"):
        entry = entry.strip()
        if not entry:
            continue
        if "=" not in entry:
            raise ValueError(f"{FAULTS_ENV}: expected SELECTOR=ACTION[@N], got {entry!r}")
        selector, action = (s.strip() for s in entry.split("=", 1))
        at = 0
        if "@" in action:
            action, n = action.split("@", 1)
            if not n.isdigit():
                raise ValueError(f"{FAULTS_ENV}: {entry!r}: N must be a non-negative int")
            at = int(n)
        if action not in _FAULT_ACTIONS:
            raise ValueError(f"{FAULTS_ENV}: {entry!r}: action must be one of "
                             f"{', '.join(_FAULT_ACTIONS)}")
        faults[selector] = (action, at)
    return faults


def _fault_for(spec: dict, faults: dict | None):
    if not faults:
        return None
    return (faults.get(spec["trial_id"]) or faults.get(f"{spec['algorithm']}:{spec['seed']}"))


def _read_jsonl(path) -> list:
    try:
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    except FileNotFoundError:
        return []


def _append_line(path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def summarize_history(history: list) -> dict:
    """Final reward / KL (mean over the last 10% of iterations, at least one), trained tokens and
    training seconds of one run's metrics history."""
    if not history:
        return {"iterations": 0, "reward_metric": None, "final_reward": None, "final_kl": None,
                "tokens": 0, "train_seconds": 0.0, "tokens_per_second": None}
    metric = "score" if "score" in history[-1] else "reward"
    window = history[-max(1, math.ceil(FINAL_FRACTION * len(history))):]

    def mean(key):
        values = [m.get(key) for m in window]
        values = [float(v) for v in values if v is not None]
        return math.fsum(values) / len(values) if values else None

    tokens = int(sum(int(m.get("tokens", 0)) for m in history))
    seconds = math.fsum(float(m.get("seconds", 0.0)) for m in history)
    return {"iterations": len(history), "reward_metric": metric, "final_reward": mean(metric),
            "final_kl": mean("kl") if "kl" in history[-1] else None, "tokens": tokens,
            "train_seconds": seconds, "tokens_per_second": tokens / seconds if seconds else None}


def run_trial(spec: dict, folder: str, checkpoint_every: int = 10, threads: int | None = None,
              faults: dict | None = None, driver_pid: int | None = None) -> dict:
    """Run (or resume) one trial in ``folder`` and return its result (also written, atomically, to
    ``folder/result.json``).  This is the body of the Ray task; it can be called in-process too.

    Each attempt appends a line to ``attempts.jsonl``, resumes from ``checkpoint.ckpt`` when it
    exists, saves a checkpoint and rewrites ``metrics.jsonl`` (from the trainer's history) every
    ``checkpoint_every`` iterations and at the end.
    """
    import contextlib

    from . import _backend

    saved_threads = _backend._num_threads
    try:  # the backend and thread count apply to this trial only (this matters in-process)
        if threads is not None:
            _backend.set_num_threads(int(threads))
        with (_backend.use_backend(spec["backend"]) if spec.get("backend")
              else contextlib.nullcontext()):
            return _run_trial(spec, folder, checkpoint_every, faults, driver_pid)
    finally:
        _backend.set_num_threads(saved_threads)


def _run_trial(spec, folder, checkpoint_every, faults, driver_pid) -> dict:
    from . import _backend
    from ._atomic import atomic_write_text
    from .cli import write_metrics

    started = time.perf_counter()
    os.makedirs(folder, exist_ok=True)
    attempts_path = os.path.join(folder, "attempts.jsonl")
    attempt = len(_read_jsonl(attempts_path)) + 1
    trainer = _build(spec)
    checkpoint = os.path.join(folder, "checkpoint.ckpt")
    metrics_path = os.path.join(folder, "metrics.jsonl")
    if os.path.exists(checkpoint):
        trainer.load(checkpoint)
    start_iteration = trainer.iterations_done
    _append_line(attempts_path, {"attempt": attempt, "pid": os.getpid(),
                                 "host": socket.gethostname(), "start_iteration": start_iteration,
                                 "threads": _backend.get_num_threads(), "time": time.time()})
    fault = _fault_for(spec, faults)

    def maybe_fault(tr) -> None:
        if fault is None:
            return
        action, at = fault
        if tr.iterations_done < at or (action.endswith("-once") and attempt > 1):
            return
        tr.save(checkpoint)
        write_metrics(tr.history, metrics_path)
        if action.startswith("raise"):
            raise RuntimeError(f"injected fault ({FAULTS_ENV}): trial {spec['trial_id']} "
                               f"attempt {attempt} at iteration {tr.iterations_done}")
        if action == "kill-driver-once" and driver_pid:
            os.kill(driver_pid, signal.SIGKILL)
        os._exit(1)

    def on_iteration(tr, metrics):
        if checkpoint_every and tr.iterations_done % checkpoint_every == 0:
            tr.save(checkpoint)
            write_metrics(tr.history, metrics_path)
        maybe_fault(tr)

    maybe_fault(trainer)
    trainer.train(max(0, spec["steps"] - trainer.iterations_done), callbacks=[on_iteration])
    trainer.save(checkpoint)
    write_metrics(trainer.history, metrics_path)
    result = {**spec, "status": "finished", **summarize_history(trainer.history),
              "attempts": attempt, "resumed_from": start_iteration,
              "threads": _backend.get_num_threads(), "backend_used": _backend.get_backend(),
              "pid": os.getpid(), "host": socket.gethostname(),
              "attempt_seconds": time.perf_counter() - started, "finished_at": time.time(),
              "error": None}
    atomic_write_text(os.path.join(folder, "result.json"), json.dumps(result, indent=1) + "\n")
    return result


# ---------------------------------------------------------------------------------------------
# statistics


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes
    3rd ed. §6.4)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
                + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(ln_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(ln_front) * _betacf(b, a, 1.0 - x) / b


def _t_cdf(t: float, df: float) -> float:
    """Student t CDF: for t >= 0, F(t) = 1 - I_{df/(df+t²)}(df/2, 1/2) / 2."""
    tail = 0.5 * _betainc(0.5 * df, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def student_t_ppf(p: float, df: float) -> float:
    """Quantile of Student's t distribution with ``df`` degrees of freedom (bisection on the CDF
    computed with the regularized incomplete beta function; no SciPy)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if not df > 0:
        raise ValueError(f"df must be > 0, got {df}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -student_t_ppf(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def mean_ci(values, confidence: float = 0.95) -> dict:
    """n, mean, sample std and the two-sided Student t interval mean ± t·s/√n (None for n < 2)."""
    values = [float(v) for v in values if v is not None]
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci95": None, "ci_low": None, "ci_high": None}
    mean = math.fsum(values) / n
    if n < 2:
        return {"n": 1, "mean": mean, "std": None, "ci95": None, "ci_low": None, "ci_high": None}
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = student_t_ppf(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci95": half, "ci_low": mean - half,
            "ci_high": mean + half}


# ---------------------------------------------------------------------------------------------
# gathering results


def _load_result(folder):
    path = os.path.join(folder, "result.json")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:  # never written by us (atomic writes); treat as not finished
        return None


TRIAL_COLUMNS = ["trial_id", "config_id", "algorithm", "env", "params", "seed", "steps",
                 "status", "attempts", "resumed_from", "iterations", "reward_metric",
                 "final_reward", "final_kl", "tokens", "train_seconds", "tokens_per_second",
                 "attempt_seconds", "threads", "host", "error"]
STATS = ("final_reward", "final_kl", "tokens_per_second")
RESULT_COLUMNS = (["config_id", "label", "algorithm", "env", "params", "steps", "n", "n_failed",
                   "seeds"]
                  + [f"{s}_{k}" for s in STATS for k in ("mean", "ci_low", "ci_high", "ci95",
                                                          "std")]
                  + ["best"])


def _csv_text(rows, columns) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else
                             ("" if v is None else v)) for k, v in row.items()})
    return buffer.getvalue()


@check.renamed(deprecated={"log": "progress"})
def aggregate(out: str, trials=None, plot: bool = True, progress=None) -> dict:
    """Read every ``result.json`` under ``out/trials`` (or of ``trials``) and write
    ``trials.csv``, ``results.csv``, ``results.jsonl``, ``best.json`` and (with matplotlib)
    ``learning_curves.png``.  Returns {"trials", "results", "best", "plot"}.  ``progress``: a text
    stream for notes (default stdout; ``log`` is its deprecated name)."""
    log = progress
    from ._atomic import atomic_write_text

    trials_dir = os.path.join(out, "trials")
    if trials is None:
        ids = sorted(os.listdir(trials_dir)) if os.path.isdir(trials_dir) else []
    else:
        ids = [t.trial_id for t in trials]
    rows = []
    for tid in ids:
        result = _load_result(os.path.join(trials_dir, tid))
        if result is not None:
            rows.append(result)
    groups: dict = {}
    for row in rows:
        groups.setdefault(row["config_id"], []).append(row)
    results = []
    for config_id, members in groups.items():
        done = [m for m in members if m["status"] == "finished"]
        first = members[0]
        entry = {"config_id": config_id,
                 "label": config_label(first["algorithm"], first["env"], first["params"]),
                 "algorithm": first["algorithm"], "env": first["env"], "params": first["params"],
                 "steps": first["steps"], "task": first["task"], "n": len(done),
                 "n_failed": len(members) - len(done),
                 "seeds": sorted(m["seed"] for m in done)}
        for stat in STATS:
            ci = mean_ci([m.get(stat) for m in done])
            for k in ("mean", "ci_low", "ci_high", "ci95", "std"):
                entry[f"{stat}_{k}"] = ci[k]
        entry["best"] = False
        results.append(entry)
    results.sort(key=lambda r: (r["env"], r["algorithm"], r["label"]))
    best = {}
    for entry in results:
        m = entry["final_reward_mean"]
        if m is None:
            continue
        cur = best.get(entry["env"])
        if cur is None or m > cur["final_reward_mean"]:
            best[entry["env"]] = entry
    for entry in best.values():
        entry["best"] = True
    os.makedirs(out, exist_ok=True)
    atomic_write_text(os.path.join(out, "trials.csv"), _csv_text(rows, TRIAL_COLUMNS))
    atomic_write_text(os.path.join(out, "results.csv"), _csv_text(results, RESULT_COLUMNS))
    atomic_write_text(os.path.join(out, "results.jsonl"),
                      "".join(json.dumps(r, sort_keys=True) + "\n" for r in results))
    atomic_write_text(os.path.join(out, "best.json"), json.dumps(best, indent=1, sort_keys=True)
                      + "\n")
    plot_path = _plot_curves(out, rows, log) if plot else None
    return {"trials": rows, "results": results, "best": best, "plot": plot_path}


def _plot_curves(out: str, rows: list, log=None):
    """Mean ± 95% CI band across seeds per iteration, one panel per environment."""
    finished = [r for r in rows if r["status"] == "finished"]
    if not finished:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if log is not None:
            print("(matplotlib is not installed: no learning-curve plot; pip install "
                  "'fastlmrl[plot]')", file=log)
        return None
    curves: dict = {}
    for r in finished:
        history = _read_jsonl(os.path.join(out, "trials", r["trial_id"], "metrics.jsonl"))
        values = [m.get(r["reward_metric"]) for m in history]
        if values and all(v is not None for v in values):
            curves.setdefault((r["env"], r["config_id"]), (r, []))[1].append(values)
    envs = sorted({env for env, _ in curves})
    if not envs:
        return None
    fig, axes = plt.subplots(1, len(envs), figsize=(5.5 * len(envs), 3.8), squeeze=False)
    for ax, env in zip(axes[0], envs):
        for (e, _), (r, series) in sorted(curves.items(), key=lambda kv: config_label(
                kv[1][0]["algorithm"], kv[1][0]["env"], kv[1][0]["params"])):
            if e != env:
                continue
            length = min(len(s) for s in series)
            stats = [mean_ci([s[i] for s in series]) for i in range(length)]
            x = list(range(length))
            mean = [s["mean"] for s in stats]
            label = config_label(r["algorithm"], env, r["params"])
            line, = ax.plot(x, mean, lw=1.2, label=f"{label} (n={len(series)})")
            if len(series) > 1:
                ax.fill_between(x, [s["ci_low"] for s in stats], [s["ci_high"] for s in stats],
                                color=line.get_color(), alpha=0.2, lw=0)
        metric = "task reward per sequence" if env == "text" else "return per episode"
        ax.set(xlabel="iteration", ylabel=metric, title=f"{env}: mean ± 95% CI over seeds")
        ax.legend(fontsize=6)
    fig.tight_layout()
    path = os.path.join(out, "learning_curves.png")
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------
# the driver


@dataclasses.dataclass
class SweepResult:
    """What :func:`sweep` did and found (also on disk under ``out``)."""

    out: str
    trials: list          # one dict per trial (result.json contents), finished or failed
    results: list         # one dict per configuration: n, mean, 95% CI of each statistic
    best: dict            # env -> the configuration with the highest mean final reward
    failed: list          # the failed trials' dicts (with "error" and "traceback")
    ran: int              # trials run by this call
    skipped: int          # trials found finished (or failed) and not run again
    workers: int | None
    threads_per_trial: int | None
    wall_seconds: float
    plot: str | None
    address: str | None = None

    def summary(self) -> str:
        lines = [f"{len(self.trials)} trials ({self.ran} run now, {self.skipped} already done), "
                 f"{len(self.failed)} failed; {len(self.results)} configurations; "
                 f"{self.wall_seconds:.1f} s"]
        for env, row in sorted(self.best.items()):
            lines.append(f"best on {env}: {row['label']}: final reward "
                         f"{_fmt_ci(row, 'final_reward')} (n={row['n']})")
        return "\n".join(lines)


def _fmt(v, digits=4):
    return "-" if v is None else f"{v:.{digits}g}"


def _fmt_ci(row, stat):
    mean, half = row.get(f"{stat}_mean"), row.get(f"{stat}_ci95")
    if mean is None:
        return "-"
    return f"{mean:.4g}" + (f" ± {half:.3g}" if half is not None else "")


def _available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _error_text(exc) -> tuple:
    """(one-line error, full text) of an exception from ray.get."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        line = f"{type(cause).__name__}: {cause}"
    else:
        first = str(exc).strip().splitlines()
        line = f"{type(exc).__name__}: {first[0] if first else ''}"
    return line, re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # without the terminal colours


@check.renamed(deprecated={"log": "progress"})
def sweep(config, *, out: str | None = None, address: str | None = None,
          workers: int | None = None, retry_failed: bool = False, plot: bool = True,
          progress=None) -> SweepResult:
    """Run a grid of trials on Ray and gather the results (see the module docstring).

    ``config``: a dict, a :class:`SweepConfig` or a TOML/YAML path.  ``out``: the output folder
    (default: the grid's ``out``, else ``sweeps/<config file name>``).  ``address``: an existing
    Ray cluster to join (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``); default: start a
    private local instance — or use the one this process already initialised.  ``workers``:
    concurrent trials (default: the grid's ``workers``, else every core / every cluster CPU).
    ``retry_failed``: run again the trials recorded as failed.  ``progress``: a text stream for
    progress (default stdout; ``False`` for none; ``log`` is its deprecated name).
    """
    log = progress
    if log is None:
        log = sys.stdout
    elif log is False:
        log = io.StringIO()
    started = time.perf_counter()
    cfg = load_config(config)
    if workers is not None and (not _is_int(workers) or workers < 1):
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    if out is None:
        out = cfg.out or os.path.join(
            "sweeps", os.path.splitext(os.path.basename(cfg.source))[0] if cfg.source else "sweep")
    out = os.path.abspath(out)
    faults = _parse_faults(os.environ.get(FAULTS_ENV))
    trials = expand_trials(cfg)
    _check_buildable(trials)

    from ._atomic import atomic_write_text

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
                    raise ValueError(f"{spec_path} describes another trial (hash collision or "
                                     "edited file); use another output folder")
        else:
            atomic_write_text(spec_path, spec_text)
        result = _load_result(folder)
        if result is not None and (result["status"] == "finished" or not retry_failed):
            skipped += 1
        else:
            todo.append(trial)

    address_used, threads, n_workers = None, None, workers or cfg.workers
    ran = 0
    print(f"sweep: {len(trials)} trials in {out}; {skipped} already done, {len(todo)} to run",
          file=log)
    if todo:
        try:
            import ray
        except ImportError:
            raise RuntimeError("sweeps run on Ray, which is not installed: "
                               "pip install 'fastlmrl[distributed]'") from None
        owns_ray = False
        if address is None and ray.is_initialized():
            address_used = "(this process's Ray session)"
        elif address is None:
            cores = _available_cores()
            n_workers = n_workers or cores
            threads = cfg.threads_per_trial or max(1, cores // n_workers)
            ray.init(address="local", num_cpus=n_workers * threads, include_dashboard=False,
                     logging_level="WARNING")
            owns_ray, address_used = True, "local"
            if n_workers * threads > cores:
                print(f"note: {n_workers} workers × {threads} threads exceed the {cores} cores "
                      "of this machine", file=log)
        else:
            ray.init(address=address, logging_level="WARNING")
            owns_ray, address_used = True, address
        try:
            if threads is None:  # an existing cluster: spread its CPUs over the workers
                total = int(ray.cluster_resources().get("CPU", 1))
                per_node = max([int(n["Resources"].get("CPU", 0)) for n in ray.nodes()
                                if n.get("Alive")] or [1])
                n_workers = n_workers or max(1, total)
                threads = cfg.threads_per_trial or max(1, min(per_node, total // n_workers))
                if threads > per_node:
                    raise ValueError(f"threads_per_trial = {threads}, but the largest node of "
                                     f"the Ray cluster has {per_node} CPUs")
            print(f"sweep: Ray {address_used}; {n_workers} workers, {threads} Numba/Cython "
                  f"thread(s) per trial (fastlmrl.set_num_threads), max_retries "
                  f"{cfg.max_retries}", file=log)
            ran = _run_on_ray(ray, todo, trials_dir, cfg, n_workers, threads, faults, log)
        except KeyboardInterrupt:
            print("sweep interrupted: run the same command again to resume", file=log)
            raise
        finally:
            if owns_ray:
                ray.shutdown()

    atomic_write_text(os.path.join(out, "sweep.json"), json.dumps({
        "config": cfg.to_dict(), "trials": [t.trial_id for t in trials], "workers": n_workers,
        "threads_per_trial": threads, "address": address_used}, indent=1) + "\n")
    gathered = aggregate(out, trials, plot=plot, progress=log)
    failed = [t for t in gathered["trials"] if t["status"] != "finished"]
    result = SweepResult(out=out, trials=gathered["trials"], results=gathered["results"],
                         best=gathered["best"], failed=failed, ran=ran, skipped=skipped,
                         workers=n_workers, threads_per_trial=threads,
                         wall_seconds=time.perf_counter() - started, plot=gathered["plot"],
                         address=address_used)
    for row in gathered["results"]:
        print(f"  {row['label']:48s} n={row['n']:<3d} reward {_fmt_ci(row, 'final_reward'):>18s}"
              f"  KL {_fmt_ci(row, 'final_kl'):>16s}  tok/s {_fmt(row['tokens_per_second_mean'])}"
              + ("  <- best" if row["best"] else ""), file=log)
    for t in failed:
        print(f"  FAILED {t['trial_id']} {config_label(t['algorithm'], t['env'], t['params'])} "
              f"seed={t['seed']} after {t['attempts']} attempt(s): {t['error']}", file=log)
    print(result.summary(), file=log)
    print(f"results: {os.path.join(out, 'results.csv')}, results.jsonl, trials.csv, best.json"
          + (f", {os.path.basename(result.plot)}" if result.plot else ""), file=log)
    return result


def _run_on_ray(ray, todo, trials_dir, cfg, workers, threads, faults, log) -> int:
    """One Ray task per trial, at most ``workers`` in flight (Ray's pattern for limiting pending
    tasks with ``ray.wait``); Ray places them and retries them; write the failed results."""
    from ._atomic import atomic_write_text

    remote = ray.remote(run_trial).options(num_cpus=threads, max_retries=cfg.max_retries,
                                           retry_exceptions=True)
    queue, pending = list(todo), {}

    def submit():
        trial = queue.pop(0)
        folder = os.path.join(trials_dir, trial.trial_id)
        ref = remote.remote(trial.spec(), folder, cfg.checkpoint_every, threads, faults,
                            os.getpid())
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
            msg = (f"finished: final reward {_fmt(res['final_reward'])}, "
                   f"{res['iterations']} iterations (attempt {res['attempts']}"
                   + (f", resumed at {res['resumed_from']}" if res["resumed_from"] else "")
                   + f"), {res['attempt_seconds']:.1f} s in the worker, "
                   f"{time.perf_counter() - submitted:.1f} s since submission")
        except ray.exceptions.RayError as exc:
            line, full = _error_text(exc)
            attempts = len(_read_jsonl(os.path.join(folder, "attempts.jsonl")))
            record = {**trial.spec(), "status": "failed", "attempts": attempts,
                      "iterations": None, "reward_metric": None, "final_reward": None,
                      "final_kl": None, "tokens": None, "train_seconds": None,
                      "tokens_per_second": None, "threads": threads, "error": line,
                      "traceback": full, "finished_at": time.time()}
            atomic_write_text(os.path.join(folder, "result.json"),
                              json.dumps(record, indent=1) + "\n")
            msg = f"FAILED after {attempts} attempt(s): {line}"
        print(f"[{done}/{len(todo)}] {trial.trial_id} {trial.label} seed={trial.seed}: {msg}",
              file=log, flush=True)
    return done

