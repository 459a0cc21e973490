"""Neural run folders and task names, without torch: what :mod:`fastlmrl.cli` needs to recognise
a run of ``fastlmrl train --policy neural`` and what both :mod:`fastlmrl.neural_run` (the command
line) and :mod:`fastlmrl.neural.runs` (the run folders, with torch) share."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .lexicon_task import LexiconTask
    from .verifiable_tasks import VerifiableTask

__all__ = ["NEURAL_RUN_FILES", "is_neural_run", "neural_task", "saved_spec"]

#: the files of a neural run folder (besides the ``initial_model/`` and ``model/`` folders)
NEURAL_RUN_FILES = ("run.json", "checkpoint.ckpt", "metrics.jsonl", "metrics.csv")


def neural_task(name: str) -> VerifiableTask | LexiconTask:
    """A task by its ``--task`` name: a verifiable task (:func:`fastlmrl.verifiable_tasks.get_task`)
    or ``lexicon`` (:class:`fastlmrl.lexicon_task.LexiconTask`)."""
    if name == "lexicon":
        from .lexicon_task import LexiconTask

        return LexiconTask()
    from .verifiable_tasks import get_task

    return get_task(name)


def is_neural_run(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` (a run folder, or a file in one) is a run written by
    :func:`fastlmrl.neural.runs.train_neural_run`: its ``run.json`` and ``initial_model/`` are
    written first, so an interrupted run counts too."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        folder = os.path.dirname(os.path.abspath(folder))
    return os.path.isfile(os.path.join(folder, "run.json")) and os.path.isdir(
        os.path.join(folder, "initial_model")
    )


def saved_spec(folder: str) -> dict:
    """The ``run.json`` of a neural run folder (algorithm, task, seed, settings); ValueError when it
    is missing or is not a neural run description."""
    try:
        with open(os.path.join(folder, "run.json"), encoding="utf-8") as handle:
            spec = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{folder!r}: cannot read run.json ({exc})") from None
    if not isinstance(spec, dict) or not {"algo", "task", "seed"} <= set(spec):
        raise ValueError(f"{folder!r}: run.json is not a neural run description")
    return spec
