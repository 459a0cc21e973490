"""The command-line side of the neural trainers: ``fastlmrl train --policy neural``,
``fastlmrl sample RUN`` on a neural run, and ``fastlmrl demo --neural``.

:mod:`fastlmrl.cli` stays thin: it parses the options and calls :func:`cmd_train_neural`,
:func:`cmd_sample_neural` or :func:`cmd_demo_neural`.  This module imports neither torch nor
transformers at import time; each command first checks that both are installed and otherwise
stops with one line naming ``pip install 'fastlmrl[neural]'``.

The run folder is the one of :func:`fastlmrl.neural.runs.train_neural_run` (``run.json``,
``initial_model/``, ``checkpoint.ckpt``, ``model/``, ``metrics.jsonl``, ``metrics.csv``).
``--set KEY=VALUE`` sets a field of the algorithm's neural config, typed by the field (TRL's
spellings, e.g. ``beta`` or ``num_generations``, are accepted as the config accepts them).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import shutil
import sys
import time
from typing import TextIO

from .neural_folders import NEURAL_RUN_FILES, is_neural_run, neural_task, saved_spec

__all__ = [
    "NEURAL_TASK_NAMES",
    "cmd_demo_neural",
    "cmd_sample_neural",
    "cmd_train_neural",
    "is_neural_run",
    "neural_overrides",
    "neural_task",
    "require_neural",
]

#: what ``--task`` accepts (besides ``reasoning_gym:<dataset>`` with the reasoning-gym package)
NEURAL_TASK_NAMES = ("arithmetic", "copy", "reverse", "sort")
#: the demo's default task (the default pretrained model solves 34/128 = 0.27 of the demo's
#: held-out problems sampled; 60 GRPO iterations took that to 0.46, measured)
DEMO_TASK = "sort"
DEMO_ITERATIONS = 60  #: the demo's default GRPO iterations
DEMO_PROMPTS = 16  #: training prompts per GRPO iteration (x 8 completions each)
DEMO_LR = 5e-4  #: AdamW learning rate of the demo (1e-3 made the policy collapse)
#: pretraining time limit when the cache holds no default model (the default 1200 steps take
#: ~45-52 s of CPU; on a busy machine the limit may stop it earlier, and a weaker model learns less)
DEMO_PRETRAIN_SECONDS = 240.0
DEMO_EVAL_PROMPTS = 128  #: held-out prompts of the before/after evaluation
DEMO_EVAL_SEED = 12345  #: their problems and sampling stream (the same before and after)
_RUN_DIRS = ("initial_model", "model")


def require_neural(option: str) -> None:
    """RuntimeError (one line, the install command) when torch or transformers is missing."""
    missing = [name for name in ("torch", "transformers") if _find_spec(name) is None]
    if missing:
        raise RuntimeError(
            f"{option} needs {' and '.join(missing)}: pip install 'fastlmrl[neural]'"
        )


def _find_spec(name: str):
    try:
        return importlib.util.find_spec(name)
    except (ValueError, ImportError):  # a module set to None in sys.modules, a broken package
        return None


def _task(name: str):
    try:
        return neural_task(name)
    except (ValueError, TypeError, ImportError) as exc:
        raise ValueError(f"--task {name}: {exc}") from None


def _config_class(algo: str):
    from .trainers import NEURAL_ALGORITHMS

    if algo not in NEURAL_ALGORITHMS:
        raise ValueError(
            f"--algo {algo} has no neural trainer; with --policy neural choose "
            f"{', '.join(sorted(NEURAL_ALGORITHMS))}"
        )
    return NEURAL_ALGORITHMS[algo].Config


@dataclasses.dataclass
class _Field:  # what runs.field_kinds reads of a dataclass field
    name: str
    type: object
    default: object


def neural_overrides(pairs, config_cls) -> dict:
    """``--set KEY=VALUE`` strings -> typed settings of a neural config: its fields and its
    TRL-spelled init-only aliases (``beta``, ``num_generations``, ...), each parsed by its type;
    the config is built once to check the values (errors name ``--set``)."""
    from .runs import field_kinds, typed_value

    known = {}
    for name, f in config_cls.__dataclass_fields__.items():
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if kind.startswith("InitVar[") or type(f.type).__name__ == "InitVar":
            inner = getattr(f.type, "type", None)
            kind = (
                kind[len("InitVar[") : -1]
                if kind.startswith("InitVar[")
                else getattr(inner, "__name__", str(inner))
            )
            known[name] = _Field(name, kind, None)
        # dataclasses' private field markers are not in typeshed; ClassVars are skipped
        elif f._field_type is dataclasses._FIELD:  # type: ignore[attr-defined]  # noqa: SLF001
            known[name] = _Field(name, kind, f.default)
    out = {}
    for pair in pairs or ():
        if "=" not in pair:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        key, raw = (part.strip() for part in pair.split("=", 1))
        if key not in known:
            raise ValueError(
                f"--set {key}: {config_cls.__name__} has no such field; choose from "
                f"{', '.join(sorted(known))}"
            )
        kinds = {"bool", "str", "None"} if known[key].type == "object" else field_kinds(known[key])
        out[key] = typed_value(key, raw, kinds)
    try:
        config_cls(**out)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"--set: {exc}") from None
    return out


# ---------------------------------------------------------------------------------------------
# fastlmrl train --policy neural


def cmd_train_neural(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """``fastlmrl train --policy neural --algo ALGO --task TASK`` (see the module docstring)."""
    out = out or sys.stdout
    require_neural("--policy neural")
    from .runs import Progress

    if not args.task:
        raise ValueError(
            "--task is required with --policy neural: "
            f"{', '.join(NEURAL_TASK_NAMES)} or reasoning_gym:<dataset>"
        )
    config_cls = _config_class(args.algo)
    _task(args.task)  # a bad --task is refused before anything is loaded
    if args.backend:
        import fastlmrl

        fastlmrl.set_backend(args.backend)
    safe_task = args.task.replace(":", "-").replace("/", "-")
    folder = args.out or os.path.join("runs", f"neural-{args.algo}-{safe_task}-seed{args.seed}")
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ValueError(f"--out {folder!r} is a file, not a run folder")
    if args.resume and args.overwrite:
        raise ValueError("give --resume or --overwrite, not both")
    existing = [
        name for name in NEURAL_RUN_FILES + _RUN_DIRS if os.path.exists(os.path.join(folder, name))
    ]
    if existing and not (args.resume or args.overwrite):
        raise ValueError(
            f"{folder!r} already holds a run ({', '.join(existing)}): continue it "
            "with --resume, replace it with --overwrite, or choose another --out"
        )
    settings = neural_overrides(args.set, config_cls)
    if args.model is not None and not os.path.isdir(args.model):
        raise ValueError(
            f"--model {args.model!r} is not a folder (a model saved by "
            "fastlmrl.neural.save_model, fastlmrl pretrain --out or "
            "save_pretrained)"
        )
    checkpoint = os.path.join(folder, "checkpoint.ckpt")
    resuming = bool(args.resume and os.path.isfile(os.path.join(folder, "run.json")))
    if resuming:
        saved = saved_spec(folder)
        if saved["algo"] != args.algo or saved["task"] != args.task:
            raise ValueError(
                f"{folder!r} is a run of --algo {saved['algo']} --task "
                f"{saved['task']}, not --algo {args.algo} --task {args.task}"
            )
        if args.set and settings != saved.get("settings"):
            raise ValueError(
                f"--set differs from the run's settings {saved.get('settings')}: a "
                "resumed run keeps its own (leave out --set)"
            )
        if args.model is not None:
            raise ValueError(
                "--model does not apply with --resume: the run continues from "
                "its own initial_model and checkpoint"
            )
        if saved.get("settings"):
            print(
                "using the run's settings: --set "
                + " --set ".join(f"{k}={v}" for k, v in saved["settings"].items()),
                file=out,
            )
        if os.path.isfile(checkpoint):
            from .checkpoint import load_checkpoint

            done = int(load_checkpoint(checkpoint)[1].get("iterations_done", 0))
            if args.steps - done <= 0:
                print(
                    f"nothing to do: the run has done {done} iterations and --steps "
                    f"{args.steps} is the total, not a number of further iterations (give "
                    f"--steps {done + args.steps} for {args.steps} more)",
                    file=out,
                )
                return 0
    elif args.resume:
        print(f"no run in {folder!r} yet: starting a new run", file=out)
    if args.overwrite:
        for name in existing:
            target = os.path.join(folder, name)
            if os.path.isdir(target):
                shutil.rmtree(target)
            else:
                os.unlink(target)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise ValueError(
            f"--out {folder!r}: cannot create the run folder ({exc.strerror or exc})"
        ) from None
    from .neural.runs import train_neural_run

    callbacks = [] if args.quiet else [Progress(args.steps)]
    train_neural_run(
        args.algo,
        args.task,
        folder,
        steps=args.steps,
        seed=args.seed,
        model=args.model,
        settings=settings,
        resume=resuming,
        checkpoint_every=args.checkpoint_every,
        out=out,
        callbacks=callbacks,
    )
    print(
        f"checkpoint {checkpoint}; model {os.path.join(folder, 'model')}; metrics "
        f"{os.path.join(folder, 'metrics.jsonl')}, {os.path.join(folder, 'metrics.csv')}",
        file=out,
    )
    return 0


# ---------------------------------------------------------------------------------------------
# fastlmrl sample RUN (a neural run)


def cmd_sample_neural(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Complete ``--num`` held-out prompts of the run's task with its policy (the checkpoint's
    weights, the run's sampling settings) and print ``prompt -> completion``, the reward and the
    success rate."""
    out = out or sys.stdout
    require_neural("sampling a neural run")
    if args.epsilon:
        raise ValueError(
            "--epsilon applies to value methods; a neural run samples from its "
            "model's softmax policy"
        )
    path = args.run
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    from .neural.runs import load_run_trainer

    trainer, task, spec = load_run_trainer(folder)
    prompts = list(task.prompts(args.num, seed=args.seed, split="test"))
    texts, rollout = trainer.sample(prompts, seed=args.seed)
    terminated = rollout.terminated.numpy()
    rewards = task.reward(prompts, texts, terminated)
    for prompt, text, reward, ended in zip(prompts, texts, rewards, terminated):
        print(
            f"{prompt!r} -> {text!r}  reward {float(reward):g}"
            f"{'' if ended else '  (cut at max_new_tokens)'}",
            file=out,
        )
    cfg = trainer.config
    solved = rewards > 0
    print(
        f"success rate {float(solved.mean()):.3f} ({int(solved.sum())}/{len(prompts)} "
        f"held-out prompts; {spec['algo']} on {spec['task']} after {trainer.iterations_done} "
        f"iterations; temperature {cfg.temperature:g}, sampling seed {args.seed})",
        file=out,
    )
    return 0


# ---------------------------------------------------------------------------------------------
# fastlmrl demo --neural


def _evaluate(trainer, task, prompts) -> dict:
    """Success rate and exact KL(pi || pi_ref) (nats per sequence: the sum over the generated
    tokens of the KL over the vocabulary, as the trainers' ``kl`` metric) of the policy's
    completions of ``prompts`` (the same problems and sampling stream each time)."""
    texts, rollout = trainer.sample(
        prompts, seed=DEMO_EVAL_SEED, return_logits=trainer.reference is not None
    )
    terminated = rollout.terminated.numpy()
    rewards = task.reward(prompts, texts, terminated)
    result = {
        "success": float((rewards > 0).mean()),
        "texts": texts,
        "rewards": rewards,
        "length": float(rollout.completion_mask.sum(1).double().mean()),
    }
    if trainer.reference_log_probs(rollout) is not None:
        result["kl"] = float(trainer.exact_kl.sum(1).mean())
    return result


def _show(name: str, result: dict, prompts: list, out, n: int = 6) -> None:
    kl = f"   KL to the reference {result['kl']:.3f} nats/sequence" if "kl" in result else ""
    print(
        f"  {name}: success rate {result['success']:.3f} "
        f"({int((result['rewards'] > 0).sum())}/{len(prompts)}){kl}",
        file=out,
    )
    for prompt, text, reward in list(zip(prompts, result["texts"], result["rewards"]))[:n]:
        print(f"    {prompt!r} -> {text!r}  reward {float(reward):g}", file=out)


def cmd_demo_neural(args: argparse.Namespace, out: TextIO | None = None) -> dict:
    """Load (or pretrain, ~1 minute) the default small model, or ``--model``; GRPO on a
    verifiable task; success rate on held-out problems, samples and the KL to the starting
    model before and after.  Torch runs on one thread (like ``fastlmrl pretrain``: faster on a
    busy 2-core machine, and the result does not depend on the core count)."""
    out = out or sys.stdout
    require_neural("--neural")
    import torch

    import fastlmrl

    from .neural.policy import NeuralPolicy
    from .trainers import NEURAL_ALGORITHMS

    if args.backend:
        fastlmrl.set_backend(args.backend)
    iterations = DEMO_ITERATIONS if args.iterations is None else args.iterations
    task_name = args.task or DEMO_TASK
    task = _task(task_name)
    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        print(
            f"fastlmrl {fastlmrl.__version__} demo --neural: GRPO on a transformers model — "
            f"backend {fastlmrl.get_backend()}, torch {torch.__version__} on 1 thread",
            file=out,
        )
        if args.model:
            from .neural.model import load_model

            if not os.path.isdir(args.model):
                raise ValueError(f"--model {args.model!r} is not a folder")
            model, tokenizer = load_model(args.model)
            n_params = sum(p.numel() for p in model.parameters())
            print(
                f"model: {args.model} ({type(model).__name__}, {n_params:,} parameters)", file=out
            )
        else:
            from .neural.pretraining import pretrained_model

            quiet = getattr(args, "quiet", False)
            log = None if quiet else (lambda line: print(line, file=sys.stderr, flush=True))
            result = pretrained_model(seconds=DEMO_PRETRAIN_SECONDS, log=log)
            model, tokenizer = result.model, result.tokenizer
            how = (
                "loaded from the cache"
                if result.from_cache
                else f"pretrained now in {result.seconds:.0f} s"
            )
            print(f"model: the default pretrained model ({how}: {result.folder})", file=out)
            print("  " + result.summary().replace("\n", "\n  "), file=out)
        cls = NEURAL_ALGORITHMS["grpo"]
        config = cls.Config(num_prompts=DEMO_PROMPTS, group_size=8, max_new_tokens=8, lr=DEMO_LR)
        trainer = cls(NeuralPolicy(model, tokenizer), task, config, seed=args.seed)
        prompts = list(task.prompts(DEMO_EVAL_PROMPTS, seed=DEMO_EVAL_SEED, split="test"))
        print(
            f"task: {task_name} ({task!r}); "
            + (
                "reward: lexicon words written (whole words); success: at least one"
                if task_name == "lexicon"
                else "reward 1 for exactly the answer then stop, else 0; success: reward 1"
            ),
            file=out,
        )
        print(
            f"evaluation: {len(prompts)} held-out problems (never trained on), one sample "
            f"each at temperature {config.temperature:g}, the same sampling stream before "
            "and after; KL = sum over the sample's tokens of the exact KL(pi || pi_ref) over "
            "the vocabulary (nats per sequence; the training lines show the same metric)",
            file=out,
        )
        before = _evaluate(trainer, task, prompts)
        print("\nbefore GRPO:", file=out)
        _show("start", before, prompts, out)
        print(
            f"\nGRPO: {iterations} iterations of {config.num_prompts} training prompts x "
            f"{config.group_size} completions, lr {config.lr:g}, beta (KL coefficient) "
            f"{config.kl_coef:g}",
            file=out,
            flush=True,
        )
        every = max(1, iterations // 8)

        window: list = []

        def progress(tr, m):  # means over the iterations since the previous line
            window.append(m)
            if (m["iteration"] + 1) % every == 0 or m["iteration"] + 1 == iterations:

                def mean(key):
                    return sum(x.get(key, 0.0) for x in window) / len(window)

                tokens = sum(x["tokens"] for x in window)
                seconds = sum(x["seconds"] for x in window)
                print(
                    f"  iter {m['iteration'] + 1:4d}  training success {mean('success_rate'):.3f}"
                    f"  KL {mean('kl'):6.3f}  entropy {mean('entropy'):.3f}  "
                    f"{tokens / max(seconds, 1e-9):5.0f} tokens/s  (means of iterations "
                    f"{window[0]['iteration'] + 1}-{m['iteration'] + 1})",
                    file=out,
                    flush=True,
                )
                window.clear()

        history = trainer.train(iterations, callbacks=[progress])
        after = _evaluate(trainer, task, prompts)
        print("\nafter GRPO:", file=out)
        _show("GRPO", after, prompts, out)
        seconds = sum(m["seconds"] for m in history)
        print(
            f"\nbefore -> after (held-out, same problems and sampling stream): success rate "
            f"{before['success']:.3f} -> {after['success']:.3f}; KL to the starting model "
            f"{before.get('kl', 0.0):.3f} -> {after.get('kl', float('nan')):.3f} nats/sequence",
            file=out,
        )
        print(
            f"GRPO trained {sum(m['tokens'] for m in history)} tokens in {seconds:.1f} s; demo "
            f"finished in {time.perf_counter() - started:.1f} s",
            file=out,
        )
    finally:
        torch.set_num_threads(threads)
    return {"before": before, "after": after, "history": history}
