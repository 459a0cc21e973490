"""The trainer loop shared by every algorithm: iterations, metrics history, callbacks, checkpoints.

A trainer owns all of its state in arrays and plain values — tables, optimiser moments, the
position of its :class:`fastlmrl.RandomStream`, its iteration count — so that
:meth:`Trainer.save` / :meth:`Trainer.load` capture a run exactly: a run resumed from a checkpoint
ends bit-identical to one that never stopped (the timing metrics aside).

Subclasses implement :meth:`Trainer.iteration` (one update from fresh experience, returning a dict
of metrics) and list their arrays in :meth:`Trainer.arrays`, their scalars in
:meth:`Trainer.scalars`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

import numpy as np

from ..checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..rng import RandomStream

__all__ = ["Trainer", "explained_variance"]


def explained_variance(predicted: np.ndarray, target: np.ndarray) -> float:
    r"""1 - Var[target - predicted] / Var[target] (nan when Var[target] = 0), as in cleanrl."""
    var = float(np.var(target))
    if var == 0.0 or target.size == 0:
        return math.nan
    return 1.0 - float(np.var(target - predicted)) / var


class Trainer:
    """Base class: ``train(iterations)`` runs :meth:`iteration` and records its metrics.

    Parameters common to all trainers: ``seed`` (int) — the only source of randomness — and
    ``config`` (the algorithm's dataclass of hyper-parameters).
    """

    algorithm = "base"
    Config: type[Any] | None = None  # the dataclass of hyper-parameters, set by subclasses

    def __init__(self, config: Any, seed: int = 0):
        if self.Config is not None and not isinstance(config, self.Config):
            raise TypeError(f"config must be a {self.Config.__name__}, got {type(config).__name__}")
        self.config = config
        self.seed = seed
        self.stream = RandomStream(seed)
        self.iterations_done = 0
        self.history: list[dict] = []
        self.task_spec: dict = {}  # how to rebuild the task (set by the CLI); saved in checkpoints

    # --- to implement ---------------------------------------------------------------------------
    def iteration(self) -> dict:  # pragma: no cover - abstract
        """One update from fresh experience; returns metrics (``tokens`` = environment steps)."""
        raise NotImplementedError

    def arrays(self) -> dict:
        """The arrays that make up the trainer's state (saved and restored in place)."""
        return {}

    def scalars(self) -> dict:
        """JSON-serialisable state beyond the arrays (e.g. a KL coefficient)."""
        return {}

    def load_scalars(self, scalars: dict) -> None:
        """Restore what :meth:`scalars` returned."""

    # --- the loop -------------------------------------------------------------------------------
    def train(
        self,
        iterations: int,
        callbacks: Iterable[Callable[[Trainer, dict], object]] = (),
        log_every: int = 0,
        out: TextIO | None = None,
    ) -> list[dict]:
        """Run ``iterations`` iterations; call each callback as ``cb(trainer, metrics)`` after
        each one (a callback returning False stops training early).  Returns the history."""
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
            raise ValueError(f"iterations must be a non-negative int, got {iterations!r}")
        for _ in range(iterations):
            start = time.perf_counter()
            metrics = self.iteration()
            seconds = time.perf_counter() - start
            metrics["iteration"] = self.iterations_done
            metrics["seconds"] = seconds
            metrics["tokens_per_second"] = metrics.get("tokens", 0) / seconds if seconds else 0.0
            self.iterations_done += 1
            self.history.append(metrics)
            if log_every and out is not None and self.iterations_done % log_every == 0:
                print(self.format_metrics(metrics), file=out)
            if any(cb(self, metrics) is False for cb in callbacks):
                break
        return self.history

    @staticmethod
    def format_metrics(metrics: dict) -> str:
        keys = [
            k
            for k in (
                "iteration",
                "reward",
                "score",
                "kl",
                "entropy",
                "clip_fraction",
                "approx_kl",
                "explained_variance",
                "tokens_per_second",
            )
            if k in metrics
        ]
        parts = []
        for k in keys:
            v = metrics[k]
            parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
        return "  ".join(parts)

    # --- checkpoints ----------------------------------------------------------------------------
    def _meta(self) -> dict:
        return {
            "algorithm": self.algorithm,
            # a config is a dataclass instance, never the class (mypy cannot tell them apart)
            "config": dataclasses.asdict(self.config)  # type: ignore[arg-type]
            if dataclasses.is_dataclass(self.config)
            else {},
            "seed": self.seed,
            "rng": self.stream.state(),
            "iterations_done": self.iterations_done,
            "scalars": self.scalars(),
            "history": _json_safe(self.history),
            "task": _json_safe(self.task_spec),
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the whole state to ``path`` atomically (see :mod:`fastlmrl.checkpoint`)."""
        save_checkpoint(path, {k: np.asarray(v) for k, v in self.arrays().items()}, self._meta())

    def load(self, path: str | os.PathLike[str]) -> Trainer:
        """Restore a checkpoint written by :meth:`save` of the same algorithm and configuration.

        Everything is checked before anything changes: a checkpoint of another algorithm, another
        configuration or other table shapes raises :class:`fastlmrl.checkpoint.CheckpointError`
        and leaves this trainer untouched.
        """
        arrays, meta = load_checkpoint(path)
        where = repr(os.fspath(path))
        if meta.get("algorithm") != self.algorithm:
            raise CheckpointError(
                f"{where} is a checkpoint of algorithm {meta.get('algorithm')!r}, not "
                f"{self.algorithm!r}"
            )
        mine = _json_safe(self._meta()["config"])
        saved_config = meta.get("config")
        if saved_config != mine:
            if isinstance(saved_config, dict):
                keys = sorted(set(saved_config) | set(mine), key=str)
                diffs = ", ".join(
                    f"{k} (checkpoint {saved_config.get(k, '-')!r}, this trainer "
                    f"{mine.get(k, '-')!r})"
                    for k in keys
                    if saved_config.get(k, "-") != mine.get(k, "-")
                )
            else:
                diffs = repr(saved_config)
            raise CheckpointError(
                f"{where}: the checkpoint's configuration differs in {diffs}; load it into a "
                "trainer with the same configuration"
            )
        targets = self.arrays()
        if set(arrays) != set(targets):
            raise CheckpointError(
                f"{where} holds arrays {sorted(arrays)}, expected {sorted(targets)}"
            )
        for name, target in targets.items():
            if arrays[name].shape != target.shape or arrays[name].dtype != target.dtype:
                raise CheckpointError(
                    f"{where}: array {name!r} is {arrays[name].dtype}{arrays[name].shape}, "
                    f"expected {target.dtype}{target.shape} (another task or vocabulary?)"
                )
        try:
            stream = RandomStream.from_state(meta["rng"])
            iterations = int(meta["iterations_done"])
            history = meta.get("history", [])
            scalars = meta.get("scalars", {})
            if iterations < 0 or not isinstance(history, list) or not isinstance(scalars, dict):
                raise ValueError("iterations_done, history or scalars of the wrong kind")
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise CheckpointError(f"{where}: checkpoint metadata is incomplete: {exc}") from None
        saved = {name: target.copy() for name, target in targets.items()}
        previous = (self.stream, self.seed, self.iterations_done, self.history, self.scalars())
        for name, target in targets.items():
            target[...] = arrays[name]
        self.stream = stream
        self.seed = meta.get("seed", self.seed)
        self.iterations_done = iterations
        self.history = list(history)
        try:
            self.load_scalars(scalars)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            for name, target in targets.items():  # leave the trainer as it was
                target[...] = saved[name]
            self.stream, self.seed, self.iterations_done, self.history = previous[:4]
            self.load_scalars(previous[4])
            raise CheckpointError(f"{where}: checkpoint scalars are incomplete: {exc}") from None
        return self


def _json_safe(value):
    """Replace non-finite floats (not valid JSON) by None, recursively; tuples become lists."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return (
        json.loads(json.dumps(value))
        if isinstance(value, (str, int, bool, type(None)))
        else str(value)
    )
