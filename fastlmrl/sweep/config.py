"""The grid of a sweep: :class:`SweepConfig` and :func:`load_config` (TOML, YAML or a dict),
validated key by key before anything runs (see :mod:`fastlmrl.sweep` for the keys)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from typing import Any

__all__ = ["ENVS", "SweepConfig", "load_config"]

#: environments a sweep trains on
ENVS = ("text", "toy")
_TOP_KEYS = {
    "algorithms",
    "envs",
    "seeds",
    "steps",
    "params",
    "task",
    "checkpoint_every",
    "max_retries",
    "workers",
    "threads_per_trial",
    "backend",
    "out",
}
_TASK_KEYS = {"corpus", "order", "max_new_tokens", "num_envs"}


@dataclasses.dataclass
class SweepConfig:
    """A validated grid (see :mod:`fastlmrl.sweep` for the keys).

    ``algorithms``: names of :data:`fastlmrl.trainers.ALGORITHMS`; ``envs``: environments (None:
    text for policy-gradient methods, toy for value methods); ``seeds``: the seeds of every
    configuration; ``steps``: training iterations per trial; ``params``: hyper-parameter -> list
    of typed values; ``task``: the text task's options and ``num_envs``; ``checkpoint_every``,
    ``max_retries``, ``workers``, ``threads_per_trial``, ``backend``, ``out``: as in the grid;
    ``source``: the file the grid came from (None for a dict).
    """

    algorithms: list[str]
    envs: list[str] | None
    seeds: list[int]
    steps: int
    params: dict[str, list[Any]]
    task: dict[str, Any]
    checkpoint_every: int = 10
    max_retries: int = 2
    workers: int | None = None
    threads_per_trial: int | None = None
    backend: str | None = None
    out: str | None = None
    source: str | None = None  # the file the grid came from

    def to_dict(self) -> dict[str, Any]:
        """The grid as a JSON-ready dict (saved in ``sweep.json``)."""
        return dataclasses.asdict(self)


def load_config(config: Any) -> SweepConfig:
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
            tomllib = _toml_reader(path)
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
                    "does not depend on; or write the grid as TOML"
                ) from None
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


def _toml_reader(path: str) -> Any:
    """The standard library's ``tomllib`` (Python >= 3.11), else the ``tomli`` package."""
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    try:
        import tomli
    except ImportError:
        raise RuntimeError(
            f"{path}: reading TOML on Python 3.10 needs tomli, part of the distributed extra: "
            "pip install 'fastlmrl[distributed]'"
        ) from None
    return tomli


def is_int(v: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(v, int) and not isinstance(v, bool)


def _int_key(
    raw: dict[str, Any], key: str, default: int | None, minimum: int, allow_none: bool = False
) -> Any:
    v: Any = raw.get(key, default)
    if v is None and allow_none:
        return None
    if not is_int(v):
        raise TypeError(f"sweep config {key!r} must be an int, got {v!r}")
    if v < minimum:
        raise ValueError(f"sweep config {key!r} must be >= {minimum}, got {v}")
    return v


def _str_list(raw: dict[str, Any], key: str, choices: Any = None) -> list[str]:
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
            raise ValueError(
                f"sweep config {key!r}: unknown {key[:-1]} {item!r}; choose from "
                f"{', '.join(sorted(choices))}"
            )
    if len(set(v)) != len(v):
        raise ValueError(f"sweep config {key!r} lists a name twice: {v}")
    return list(v)


def _validate(raw: dict[str, Any], base_dir: str, source: str | None) -> SweepConfig:
    from .. import _backend
    from ..trainers import ALGORITHMS

    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ValueError(
            f"sweep config: unknown key(s) {sorted(unknown)}; allowed: "
            f"{', '.join(sorted(_TOP_KEYS))}"
        )
    if "algorithms" not in raw:
        raise ValueError("sweep config: 'algorithms' is required")
    algorithms = _str_list(raw, "algorithms", ALGORITHMS)
    envs = _str_list(raw, "envs", ENVS) if raw.get("envs") is not None else None

    seeds = raw.get("seeds", 1)
    if is_int(seeds):
        if seeds < 1:
            raise ValueError(f"sweep config 'seeds': a count must be >= 1, got {seeds}")
        seeds = list(range(seeds))
    elif isinstance(seeds, list):
        if not seeds:
            raise ValueError("sweep config 'seeds' is empty")
        for s in seeds:
            if not is_int(s) or s < 0:
                raise TypeError(f"sweep config 'seeds': {s!r} is not a non-negative int")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"sweep config 'seeds' lists a seed twice: {seeds}")
    else:
        raise TypeError(
            f"sweep config 'seeds' must be an int count or a list of ints, got {seeds!r}"
        )

    steps = _int_key(raw, "steps", 100, 1)
    checkpoint_every = _int_key(raw, "checkpoint_every", 10, 0)
    max_retries = _int_key(raw, "max_retries", 2, 0)
    workers = _int_key(raw, "workers", None, 1, allow_none=True)
    threads = _int_key(raw, "threads_per_trial", None, 1, allow_none=True)
    backend = raw.get("backend")
    if backend is not None and backend not in _backend.BACKENDS:
        raise ValueError(
            f"sweep config 'backend': unknown backend {backend!r}; choose from "
            f"{', '.join(_backend.BACKENDS)}"
        )
    out = raw.get("out")
    if out is not None and not isinstance(out, str):
        raise TypeError(f"sweep config 'out' must be a path string, got {out!r}")

    task_raw = raw.get("task") or {}
    if not isinstance(task_raw, dict):
        raise TypeError(f"sweep config 'task' must be a table, got {task_raw!r}")
    unknown = set(task_raw) - _TASK_KEYS
    if unknown:
        raise ValueError(
            f"sweep config 'task': unknown key(s) {sorted(unknown)}; allowed: "
            f"{', '.join(sorted(_TASK_KEYS))}"
        )
    task = {
        "corpus": None,
        "order": _int_key(task_raw, "order", 2, 1),
        "max_new_tokens": _int_key(task_raw, "max_new_tokens", 48, 1),
        "num_envs": _int_key(task_raw, "num_envs", None, 1, allow_none=True),
    }
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
        raise TypeError(
            f"sweep config 'params' must be a table of name -> list, got {params_raw!r}"
        )
    fields = {a: {f.name: f for f in dataclasses.fields(ALGORITHMS[a].Config)} for a in algorithms}
    params = {}
    for name, values in params_raw.items():
        if not isinstance(values, list):
            values = [values]
        if not values:
            raise ValueError(f"sweep config 'params.{name}' is an empty list")
        owners = [a for a in algorithms if name in fields[a]]
        if not owners:
            raise ValueError(
                f"sweep config 'params.{name}': none of {algorithms} has a hyper-parameter {name!r}"
            )
        for a in owners:  # the value must fit the field of every algorithm that has it
            for v in values:
                _coerce(name, v, fields[a][name], a)
        coerced = [_coerce(name, v, fields[owners[0]][name], owners[0]) for v in values]
        if len({json.dumps(v) for v in coerced}) != len(coerced):
            raise ValueError(f"sweep config 'params.{name}' lists a value twice: {values}")
        params[name] = coerced

    if envs is not None:
        from ..trainers import TEXT_ALGORITHMS

        for a in algorithms:
            if a in TEXT_ALGORITHMS and "text" not in envs:
                raise ValueError(
                    f"sweep config: algorithm {a!r} trains a text policy and needs "
                    f"env 'text', but envs = {envs}"
                )
    return SweepConfig(
        algorithms=algorithms,
        envs=envs,
        seeds=list(seeds),
        steps=steps,
        params=params,
        task=task,
        checkpoint_every=checkpoint_every,
        max_retries=max_retries,
        workers=workers,
        threads_per_trial=threads,
        backend=backend,
        out=out,
        source=source,
    )


def _coerce(name: str, value: Any, field: dataclasses.Field[Any], algorithm: str) -> Any:
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
    if is_int(default):
        if not is_int(value):
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
