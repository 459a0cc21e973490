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
for a local instance, every CPU of a cluster). Each trial sets ``fastlmrl.set_num_threads(T)``
(which also sets Numba's) with ``T = threads_per_trial`` or, by default, ``max(1, cores //
workers)`` (local: the cores of this machine; a cluster: its CPUs, at most those of its largest
node), and asks Ray for ``num_cpus=T``, so that the trials on a node never use more threads than it
has CPUs. A local instance is started with ``num_cpus = workers × T``. The setting is printed and
saved (``sweep.json``, and ``threads`` in each ``result.json``).

Aggregation (per configuration = algorithm, env, params, steps, task; over its finished seeds):
the *final reward* of a trial is the mean over its last 10% of iterations (at least one) of
``score`` (text tasks: the task reward per sequence, without the KL penalty) or of ``reward``
(value methods: return per episode); the final KL likewise (text only); tokens/s is the trained
tokens over the training seconds.  The interval is the two-sided 95% Student t interval
``mean ± t(0.975, n-1) · s / sqrt(n)`` with the sample standard deviation ``s`` (none for n = 1)
and the quantile from ``scipy.stats.t`` (SciPy comes with the ``distributed`` extra); for a
quantity that cannot be negative (KL, tokens/s, the text task's keyword score) the interval and
the plotted band are cut at 0.
The best configuration is the one with the highest mean final reward in each environment (rewards
of different environments are not comparable; a tie goes to the first in label order).

Callbacks: ``sweep(..., trial_callbacks=[cb])`` runs ``cb(attempt, trainer, metrics)`` inside
every trial when an attempt starts (``metrics`` None) and after each iteration
(:class:`TrialAttempt` says which trial and attempt, and
``attempt.checkpoint(trainer)`` saves a resumable checkpoint); an exception fails the attempt.

The package: :mod:`~fastlmrl.sweep.config` (the grid), :mod:`~fastlmrl.sweep.trials` (expansion,
one trial), :mod:`~fastlmrl.sweep.statistics` (final reward, Student t intervals),
:mod:`~fastlmrl.sweep.report` (tables, best configurations, plot) and
:mod:`~fastlmrl.sweep.runner` (the Ray driver).  Runs are built by :mod:`fastlmrl.runs`, as for
``fastlmrl train``.
"""

from __future__ import annotations

from .config import ENVS, SweepConfig, load_config
from .report import RESULT_COLUMNS, STATS, TRIAL_COLUMNS, aggregate
from .runner import SweepResult, sweep
from .statistics import FINAL_FRACTION, mean_ci, student_t_ppf, summarize_history
from .trials import (
    Trial,
    TrialAttempt,
    TrialCallback,
    check_buildable,
    config_label,
    expand_trials,
    run_trial,
)

__all__ = [
    "ENVS",
    "FINAL_FRACTION",
    "RESULT_COLUMNS",
    "STATS",
    "TRIAL_COLUMNS",
    "SweepConfig",
    "SweepResult",
    "Trial",
    "TrialAttempt",
    "TrialCallback",
    "aggregate",
    "check_buildable",
    "config_label",
    "expand_trials",
    "load_config",
    "mean_ci",
    "run_trial",
    "student_t_ppf",
    "summarize_history",
    "sweep",
]
