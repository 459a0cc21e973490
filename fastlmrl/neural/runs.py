"""Run folders of the neural trainers: what ``fastlmrl train --policy neural`` does.

:func:`train_neural_run` builds (or resumes) a neural trainer on a verifiable task and writes a
run folder:

* ``initial_model/`` -- the starting model and tokenizer (:func:`fastlmrl.neural.save_model`): the
  frozen reference, and what a resumed run rebuilds the trainer from;
* ``checkpoint.ckpt`` -- the trainer's whole state (:meth:`NeuralTrainer.save`: atomic);
* ``model/`` -- the trained model and tokenizer (loadable by :func:`fastlmrl.neural.load_model`
  and ``fastlmrl sample RUN``);
* ``metrics.jsonl`` / ``metrics.csv`` -- one line per iteration;
* ``run.json`` -- algorithm, task, seed and settings (what ``--resume`` needs).

The starting model is a local model folder (``model=``; our folders or any local Hugging Face
folder) or, by default, :func:`fastlmrl.neural.pretrained_model` (pretrained on the built-in
corpus and the verifiable tasks, cached on disk).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TextIO, cast

from .._atomic import atomic_write_text
from ..neural_folders import NEURAL_RUN_FILES, is_neural_run, neural_task, saved_spec

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from ..trainers._neural_base import NeuralTrainer

__all__ = [
    "NEURAL_RUN_FILES",
    "load_run_trainer",
    "make_neural_trainer",
    "sample_neural_run",
    "train_neural_run",
]


def _algorithms() -> dict:
    from ..trainers import NEURAL_ALGORITHMS

    return NEURAL_ALGORITHMS


def make_neural_trainer(
    algo: str, task, model, tokenizer, *, seed: int = 0, settings: dict | None = None
) -> NeuralTrainer:
    """A neural trainer of ``algo`` (``reinforce``, ``ppo``, ``grpo``, ``rloo``) with its config
    built from ``settings`` (config field names, TRL aliases included)."""
    from .policy import NeuralPolicy

    algorithms = _algorithms()
    if algo not in algorithms:
        raise ValueError(
            f"--algo must be one of {', '.join(sorted(algorithms))} with --policy "
            f"neural, got {algo!r}"
        )
    cls = algorithms[algo]
    settings = dict(settings or {})
    names = {f.name for f in dataclasses.fields(cls.Config)} | set(
        getattr(cls.Config, "__dataclass_fields__", {})
    )
    unknown = sorted(set(settings) - names)
    if unknown:
        raise ValueError(
            f"unknown {algo} setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}"
        )
    config = cls.Config(**settings)
    value_head = bool(getattr(config, "value_head", False))
    return cls(NeuralPolicy(model, tokenizer, value_head=value_head), task, config, seed)


def train_neural_run(
    algo: str,
    task_name: str,
    folder: str,
    *,
    steps: int,
    seed: int = 0,
    model: str | None = None,
    settings: dict | None = None,
    resume: bool = False,
    checkpoint_every: int = 0,
    out: TextIO | None = None,
    callbacks: Iterable[Callable[[Any, dict], object]] = (),
) -> NeuralTrainer:
    """Train (or resume, up to ``steps`` iterations in all) and write the run folder (see the
    module docstring).  Returns the trainer."""
    from ..runs import write_metrics
    from .model import load_model, save_model

    out = out or sys.stdout
    run_json = os.path.join(folder, "run.json")
    checkpoint = os.path.join(folder, "checkpoint.ckpt")
    initial = os.path.join(folder, "initial_model")
    spec: dict[str, Any] = {
        "algo": algo,
        "task": task_name,
        "seed": seed,
        "settings": dict(settings or {}),
        "model": model,
    }
    if resume and os.path.exists(run_json):
        with open(run_json, encoding="utf-8") as handle:
            saved = json.load(handle)
        if saved.get("algo") != algo or saved.get("task") != task_name:
            raise ValueError(
                f"{folder!r} is a run of --algo {saved.get('algo')} on --task "
                f"{saved.get('task')}, not --algo {algo} --task {task_name}"
            )
        spec = saved
        net, tok = load_model(initial)
    elif model is not None:
        net, tok = load_model(model)
    else:
        from .pretraining import pretrained_model

        result = pretrained_model(log=lambda line: print(line, file=out))
        net, tok = result.model, result.tokenizer
    task = neural_task(spec["task"])
    trainer = make_neural_trainer(
        algo, task, net, tok, seed=spec["seed"], settings=spec["settings"]
    )
    os.makedirs(folder, exist_ok=True)
    if resume and os.path.exists(checkpoint):
        trainer.load(checkpoint)
        print(f"resumed {checkpoint} at iteration {trainer.iterations_done}", file=out)
    else:
        save_model(net, tok, initial)
        atomic_write_text(run_json, json.dumps(spec, indent=1, sort_keys=True))
    jsonl, csv_path = os.path.join(folder, "metrics.jsonl"), os.path.join(folder, "metrics.csv")

    def save(tr, metrics):
        if checkpoint_every and tr.iterations_done % checkpoint_every == 0:
            tr.save(checkpoint)
            write_metrics(tr.history, jsonl)

    trainer.train(max(0, steps - trainer.iterations_done), callbacks=list(callbacks) + [save])
    trainer.save(checkpoint)
    save_model(
        cast("PreTrainedModel", trainer.policy.model),  # the model loaded above, trained in place
        tok,
        os.path.join(folder, "model"),
        metadata={
            "algorithm": trainer.algorithm,
            "task": spec["task"],
            "iterations": trainer.iterations_done,
        },
    )
    write_metrics(trainer.history, jsonl, csv_path)
    last = trainer.history[-1] if trainer.history else {}
    print(
        f"{trainer.algorithm}: {trainer.iterations_done} iterations; last: "
        f"{trainer.format_metrics(last) if last else '-'}",
        file=out,
    )
    return trainer


def load_run_trainer(folder: str) -> tuple[NeuralTrainer, Any, dict]:
    """The trainer of a run folder as of its checkpoint (its initial model when it has none yet),
    with the run's task and settings.  Returns ``(trainer, task, spec)``."""
    from .model import load_model

    folder = os.fspath(folder)
    if not is_neural_run(folder):
        raise ValueError(f"{folder!r} is not a neural run folder (run.json and initial_model/)")
    spec = saved_spec(folder)
    task = neural_task(spec["task"])
    model, tokenizer = load_model(os.path.join(folder, "initial_model"))
    trainer = make_neural_trainer(
        spec["algo"],
        task,
        model,
        tokenizer,
        seed=int(spec["seed"]),
        settings=spec.get("settings") or {},
    )
    checkpoint = os.path.join(folder, "checkpoint.ckpt")
    if os.path.isfile(checkpoint):
        trainer.load(checkpoint)
    return trainer, task, spec


def sample_neural_run(folder, *, num: int = 4, seed: int = 0, prompts=None, **overrides) -> list:
    """Completions by the policy of a run folder as of its checkpoint (what ``fastlmrl sample
    RUN`` prints for a neural run): ``prompts`` (default: ``num`` held-out problems of the run's
    task, drawn with ``seed``), sampled with the run's settings unless ``overrides``
    (``max_new_tokens``, ``temperature``, ``top_k``, ``top_p``) say otherwise.  Returns
    ``[(prompt, completion, reward, terminated)]``."""
    trainer, task, _ = load_run_trainer(folder)
    if prompts is None:
        prompts = task.prompts(num, seed=seed, split="test")
    prompts = list(prompts)
    texts, rollout = trainer.sample(prompts, seed=seed, **overrides)
    terminated = rollout.terminated.numpy()
    rewards = task.reward(prompts, texts, terminated)
    return [(p, t, float(r), bool(e)) for p, t, r, e in zip(prompts, texts, rewards, terminated)]
