"""Building one training run from typed settings: the task, the algorithm's config, the trainer.

``fastlmrl train`` (:mod:`fastlmrl.cli`) and sweeps (:mod:`fastlmrl.sweep`) both build their runs
here, with typed values: a :class:`TaskSpec` for the task and a ``{field: value}`` dict of the
algorithm's config dataclass for the hyper-parameters.  The command line turns its ``--set
KEY=VALUE`` strings into such a dict once (:func:`parse_overrides`); a sweep's grid values are
already typed.  A trainer built by :func:`build_run` records how to rebuild it
(``trainer.task_spec``: the task's fields, ``algo`` and ``params``), which its checkpoints keep,
so that ``fastlmrl sample RUN`` and ``fastlmrl train --resume`` rebuild the same run.

This module imports neither the command line nor the sweeps (no import cycle).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

import numpy as np

__all__ = [
    "FALSE_WORDS",
    "TRUE_WORDS",
    "Progress",
    "TaskSpec",
    "build_run",
    "build_task",
    "field_kinds",
    "make_config",
    "make_trainer",
    "parse_overrides",
    "saved_params",
    "write_metrics",
]

#: the ``--env`` values of the tabular tasks besides ``gym:<id>``
GYM_SHORT_NAMES = ("frozenlake", "cliffwalking", "taxi")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """How to build a task (:func:`build_task`).

    ``env``: ``"text"`` (n-gram LM and lexicon reward), ``"toy"`` (the seed
    :class:`fastlmrl.ContextMDP`), ``"frozenlake"``, ``"cliffwalking"``, ``"taxi"`` or
    ``"gym:<Gymnasium id>"``; ``corpus``: a UTF-8 text file for the text task (``None``: the
    built-in corpus); ``order``: the context length k of the text policy; ``max_new_tokens``: tokens
    generated per episode at most (text); ``num_envs``: episodes stepped together (``None``: 256 on
    text, 64 otherwise).
    """

    env: str = "text"
    corpus: str | None = None
    order: int = 2
    max_new_tokens: int = 48
    num_envs: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (what checkpoints and sweep specs store)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any] | TaskSpec) -> TaskSpec:
        """A TaskSpec from a stored dict; keys that are not fields (``algo``, ``params``) and
        missing ones (a toy task's ``order``) are ignored / defaulted."""
        if isinstance(spec, TaskSpec):
            return spec
        if not isinstance(spec, Mapping):
            raise TypeError(f"task spec must be a TaskSpec or a mapping, got {type(spec).__name__}")
        if "env" not in spec:
            raise ValueError("task spec has no 'env'")
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in spec.items() if k in names and v is not None}
        return cls(**values)


def build_task(spec: TaskSpec | Mapping[str, Any]) -> Any:
    """The task of ``spec`` (a :class:`TaskSpec` or its dict): a :class:`fastlmrl.tasks.TextTask`,
    :class:`~fastlmrl.tasks.ToyTask` or :class:`~fastlmrl.tasks.GymTask`."""
    from .tasks import make_text_task, make_toy_task

    spec = TaskSpec.from_dict(spec)
    if spec.env == "toy":
        return make_toy_task(num_envs=spec.num_envs or 64)
    if spec.env == "text":
        return make_text_task(
            spec.corpus,
            order=spec.order,
            max_new_tokens=spec.max_new_tokens,
            num_envs=spec.num_envs or 256,
        )
    if spec.env in GYM_SHORT_NAMES or (spec.env.startswith("gym:") and len(spec.env) > 4):
        from .tasks import make_gym_task

        name = spec.env[4:] if spec.env.startswith("gym:") else spec.env
        return make_gym_task(name, num_envs=spec.num_envs or 64)
    raise ValueError(
        f"unknown env {spec.env!r}: choose 'text', 'toy', 'frozenlake', "
        "'cliffwalking', 'taxi' or 'gym:<Gymnasium id>'"
    )


# ---------------------------------------------------------------------------------------------
# hyper-parameters

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def field_kinds(field: Any) -> set[str]:
    """The type names a config field accepts (``{'float', 'None'}`` for ``float | None``); read
    from the annotation, or from the default for an unusual annotation."""
    annotation = (
        field.type
        if isinstance(field.type, str)
        else getattr(field.type, "__name__", str(field.type))
    )
    annotation = annotation.replace("Optional[", "").replace("]", "|None")
    kinds = {part.strip() for part in annotation.split("|") if part.strip()}
    if not kinds & {"bool", "int", "float", "str"}:  # unusual annotation: go by the default
        default = field.default
        kinds = {type(default).__name__} if default is not None else {"float", "None"}
    return kinds


def typed_value(key: str, raw: str, kinds: set[str]) -> Any:
    """The ``--set KEY=VALUE`` text ``raw`` as a value of ``kinds`` (from :func:`field_kinds`):
    ``none``/``null`` for None, a true/false word for a bool, else an int, a float or the text
    itself (``raw`` as given); a ValueError naming the key when the text fits none of the field's
    kinds."""
    text = raw.strip().lower()
    if text in ("none", "null"):
        if "None" not in kinds:
            raise ValueError(f"--set {key}={raw}: {key} cannot be None")
        return None
    if "bool" in kinds and text in TRUE_WORDS + FALSE_WORDS:
        return text in TRUE_WORDS
    if "int" in kinds and "float" not in kinds:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"--set {key}={raw}: {key} must be an integer") from None
    if "float" in kinds:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"--set {key}={raw}: {key} must be a number") from None
    if "bool" in kinds and "str" not in kinds and "object" not in kinds:
        raise ValueError(f"--set {key}={raw}: {key} is true or false, got {raw!r}")
    return raw


def parse_overrides(pairs: Iterable[str] | None, config_cls: type) -> dict[str, Any]:
    """``KEY=VALUE`` strings (``fastlmrl train --set``) -> ``{field: typed value}`` for the config
    dataclass ``config_cls``.

    The value is parsed by the field's type; a value of the wrong kind (``first_visit=maybe``,
    ``epochs=abc``) or an unknown key raises a ValueError naming the key (unknown keys: with the
    list of valid ones)."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    out: dict[str, Any] = {}
    for pair in pairs or ():
        if "=" not in pair:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        key, raw = pair.split("=", 1)
        key = key.strip()
        if key not in fields:
            raise ValueError(
                f"--set {key}: {config_cls.__name__} has no such field; choose from "
                f"{', '.join(sorted(fields))}"
            )
        out[key] = typed_value(key, raw, field_kinds(fields[key]))
    return out


def algorithm_class(algorithm: str) -> Any:
    """The trainer class of ``algorithm`` (a name of :data:`fastlmrl.trainers.ALGORITHMS`)."""
    from .trainers import ALGORITHMS

    if algorithm not in ALGORITHMS:
        raise ValueError(
            f"unknown algorithm {algorithm!r}: choose from {', '.join(sorted(ALGORITHMS))}"
        )
    return ALGORITHMS[algorithm]


def make_config(
    algorithm: str, params: Mapping[str, Any] | None = None, *, option: str = "--set"
) -> Any:
    """The config dataclass of ``algorithm`` with the typed ``params`` applied (checked by the
    config itself).  An unknown field or a value of the wrong type is a ValueError that starts
    with ``option`` (how the caller's user gave the values)."""
    cls = algorithm_class(algorithm)
    params = dict(params or {})
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    for key in params:
        if key not in fields:
            raise ValueError(
                f"{option} {key}: {cls.Config.__name__} has no such field; choose from "
                f"{', '.join(sorted(fields))}"
            )
    try:
        return cls.Config(**params)
    except TypeError as exc:  # a value of the wrong type (reported by the config's checks)
        raise ValueError(f"{option}: {exc}") from None


def make_trainer(algorithm: str, task: Any, seed: int, config: Any = None) -> Any:
    """The trainer of ``algorithm`` on ``task`` (from :func:`build_task`) with ``config`` (default:
    the algorithm's defaults).  Policy-gradient methods need the text task; value methods train
    on a tabular environment, or around the language model of a text task."""
    from .trainers import TEXT_ALGORITHMS

    cls = algorithm_class(algorithm)
    if config is None:
        config = cls.Config()
    if algorithm in TEXT_ALGORITHMS:
        if getattr(task, "name", "") != "text":
            raise ValueError(
                f"algorithm {algorithm!r} trains a softmax policy on the text task (--env text)"
            )
        return cls(task, config, seed=seed)
    if getattr(task, "name", "") == "text":  # value methods start from the language model
        return cls(task, config, seed=seed)
    return cls(task.env, config, seed=seed)


def build_run(
    algorithm: str,
    task_spec: TaskSpec | Mapping[str, Any],
    seed: int,
    params: Mapping[str, Any] | None = None,
    *,
    task: Any = None,
    option: str = "--set",
) -> Any:
    """A trainer for one run: ``algorithm`` with the typed ``params`` on the task of
    ``task_spec`` (``task``: the already built task, to share one between runs), with
    ``trainer.task_spec`` recording how to rebuild it (saved in its checkpoints)."""
    spec = TaskSpec.from_dict(task_spec)
    config = make_config(algorithm, params, option=option)
    if task is None:
        task = build_task(spec)
    trainer = make_trainer(algorithm, task, seed, config)
    trainer.task_spec = dict(spec.to_dict(), algo=algorithm, params=dict(params or {}))
    return trainer


def saved_params(task_spec: Mapping[str, Any], algorithm: str) -> dict[str, Any]:
    """The typed hyper-parameters a checkpoint's task description records: ``params``, or, in a
    checkpoint of an earlier version, its ``overrides`` (``KEY=VALUE`` strings) parsed."""
    params = task_spec.get("params")
    if isinstance(params, Mapping):
        return dict(params)
    overrides = task_spec.get("overrides") or []
    return parse_overrides([str(pair) for pair in overrides], algorithm_class(algorithm).Config)


# ---------------------------------------------------------------------------------------------
# a run's files and progress


def write_metrics(
    history: list[dict[str, Any]], jsonl_path: str, csv_path: str | None = None
) -> None:
    """Rewrite the metrics files from the full history (atomic replace: no partial files);
    non-finite floats are written as null."""
    from ._atomic import atomic_write_text

    atomic_write_text(jsonl_path, "".join(json.dumps(_clean(m)) + "\n" for m in history))
    if csv_path:
        keys = sorted({k for m in history for k in m})
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys)
        writer.writeheader()
        for m in history:
            writer.writerow(_clean(m))
        atomic_write_text(csv_path, buffer.getvalue())


def _clean(metrics: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, (float, np.floating)):
            v = float(v)
            out[k] = v if np.isfinite(v) else None
        elif isinstance(v, np.integer):
            out[k] = int(v)
        else:
            out[k] = v
    return out


class Progress:
    """A training callback that shows progress on a stream (default stderr).

    On a terminal: a bar redrawn in place (carriage returns).  Elsewhere (a log file, a pipe, a
    CI log) no carriage returns: a plain line every ``lines_every`` iterations (default: about
    ten lines per run) and one at the end."""

    def __init__(
        self,
        total: int,
        stream: TextIO | None = None,
        width: int = 28,
        lines_every: int | None = None,
    ) -> None:
        self.total, self.stream, self.width = max(total, 1), stream or sys.stderr, width
        self.start = time.perf_counter()
        isatty = getattr(self.stream, "isatty", None)
        try:
            self.interactive = bool(isatty()) if isatty is not None else False
        except (ValueError, OSError):  # closed or detached stream
            self.interactive = False
        self.lines_every = lines_every or max(1, -(-self.total // 10))

    def __call__(self, trainer: Any, metrics: Mapping[str, Any]) -> None:
        done = metrics["iteration"] + 1
        elapsed = time.perf_counter() - self.start
        extra = "  ".join(
            f"{k}={metrics[k]:.3g}"
            for k in ("score", "reward", "kl")
            if k in metrics and isinstance(metrics[k], float)
        )
        if self.interactive:
            filled = int(self.width * min(done, self.total) / self.total)
            bar = "#" * filled + "-" * (self.width - filled)
            self.stream.write(f"\r[{bar}] {done}/{self.total} {elapsed:5.1f}s  {extra}   ")
            if done >= self.total:
                self.stream.write("\n")
        elif done % self.lines_every == 0 or done >= self.total:
            self.stream.write(
                f"iteration {done}/{self.total}  {elapsed:.1f}s  {extra}".rstrip() + "\n"
            )
        else:
            return
        self.stream.flush()
