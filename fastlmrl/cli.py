"""The ``fastlmrl`` command.

fastlmrl demo                 fit an n-gram LM, RL-fine-tune it with PPO and GRPO, show the result
fastlmrl train --algo ALGO    train one algorithm, with metrics (JSONL/CSV) and checkpoints
fastlmrl sample RUN           generate from a trained policy (a run folder or checkpoint file)
fastlmrl sweep CONFIG         seeds × hyper-parameters × algorithms on Ray (local or a cluster)
fastlmrl bench                kernel throughput of each backend against the reference
fastlmrl pretrain             pretrain a small transformers LM from scratch (needs [neural])
fastlmrl info                 backends, versions, threads
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import numpy as np

from . import _backend
from .demo import DEMO_ALGORITHMS, add_demo_arguments, cmd_demo  # noqa: F401
from .demo import samples as _samples
from .runs import (  # noqa: F401
    FALSE_WORDS,
    TRUE_WORDS,
    Progress,
    TaskSpec,
    algorithm_class,
    build_run,
    build_task,
    field_kinds,
    parse_overrides,
    saved_params,
    write_metrics,
)
from .runs import make_config as runs_make_config
from .runs import make_trainer as runs_make_trainer

# ---------------------------------------------------------------------------------------------
# tasks and trainers from command-line arguments


def _env_option(value: str) -> str:
    """--env: text, toy, a Gymnasium toy-text short name, or gym:<id>."""
    if value in ("text", "toy", "frozenlake", "cliffwalking", "taxi") or (
        value.startswith("gym:") and len(value) > 4
    ):
        return value
    raise argparse.ArgumentTypeError(
        f"invalid choice {value!r} (choose text, toy, frozenlake, cliffwalking, taxi or gym:<id>)"
    )


def task_spec_from_args(args) -> TaskSpec:
    """The task options of ``fastlmrl train`` as a :class:`fastlmrl.runs.TaskSpec`."""
    return TaskSpec(
        env=args.env,
        corpus=args.corpus,
        order=args.order,
        max_new_tokens=args.max_new_tokens,
        num_envs=args.num_envs,
    )


# the command line's ``--set`` parser (``KEY=VALUE`` strings -> typed values); kept under its
# former name for neural_run.py and the tests
_parse_overrides = parse_overrides
_field_kinds = field_kinds


def make_config(algo: str, overrides=None):
    """The algorithm's config dataclass with the ``--set`` strings applied (validated)."""
    cls = algorithm_class(algo)
    return runs_make_config(algo, parse_overrides(overrides, cls.Config), option="--set")


def make_trainer(algo: str, task, seed: int, overrides=None, config=None):
    """The trainer of ``algo`` on ``task``, with ``config`` or else the ``--set`` strings
    ``overrides`` (see :func:`fastlmrl.runs.make_trainer`)."""
    if config is None:
        config = make_config(algo, overrides)
    return runs_make_trainer(algo, task, seed, config)


# ---------------------------------------------------------------------------------------------
# commands


RUN_FILES = ("checkpoint.ckpt", "metrics.jsonl", "metrics.csv")


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return None


#: bytes per (sequence, token) slot of one batch, counted generously: the environment's token
#: buffer, the rollout's arrays (contexts, actions, log-probs, rewards, reference log-probs,
#: validity) and the trainers' per-token copies.
BYTES_PER_TOKEN_SLOT = 128


def check_sizes(spec, config) -> None:
    """Refuse at once (ValueError naming the option and the number) a batch that cannot fit in
    this machine's memory, before anything is allocated (instead of a MemoryError later).
    ``spec``: a :class:`fastlmrl.runs.TaskSpec` or its dict."""
    memory = _physical_memory()
    if memory is None:
        return
    spec = TaskSpec.from_dict(spec).to_dict()
    env_rows = spec.get("num_envs") or 256
    options = [("--num-envs", env_rows)]
    sequences = getattr(config, "num_sequences", None)
    if isinstance(sequences, int) and not isinstance(sequences, bool):
        if "num_sequences" in {f.name for f in dataclasses.fields(config)}:
            options.append(("--set num_sequences", sequences))
        else:  # GRPO / RLOO: num_prompts groups of group_size
            options.append(
                (
                    f"--set num_prompts={config.num_prompts} x group_size={config.group_size} =",
                    sequences,
                )
            )
    if spec["env"] == "text":
        horizon = spec.get("max_new_tokens") or 48
        for option, rows in options:
            need = BYTES_PER_TOKEN_SLOT * rows * horizon
            if need > memory:
                raise ValueError(
                    f"{option} {rows} x --max-new-tokens {horizon} needs about "
                    f"{need / 2**30:.3g} GiB per batch; this machine has {memory / 2**30:.3g} GiB"
                )
    elif BYTES_PER_TOKEN_SLOT * env_rows > memory:
        raise ValueError(
            f"--num-envs {env_rows} needs about "
            f"{BYTES_PER_TOKEN_SLOT * env_rows / 2**30:.3g} GiB; this machine has "
            f"{memory / 2**30:.3g} GiB"
        )


def cmd_train(args, out=None) -> int:
    out = out or sys.stdout
    import fastlmrl

    if getattr(args, "policy", "table") == "neural":  # fastlmrl/neural_run.py
        from .neural_run import cmd_train_neural

        return cmd_train_neural(args, out)
    for option, value in (
        ("--task", getattr(args, "task", None)),
        ("--model", getattr(args, "model", None)),
    ):
        if value is not None:
            raise ValueError(
                f"{option} applies to --policy neural (the table policies train on --env)"
            )

    if args.backend:
        fastlmrl.set_backend(args.backend)
    spec = task_spec_from_args(args)
    folder = args.out or os.path.join("runs", f"{args.algo}-{args.env}-seed{args.seed}")
    checkpoint = os.path.join(folder, "checkpoint.ckpt")
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ValueError(f"--out {folder!r} is a file, not a run folder")
    existing = [name for name in RUN_FILES if os.path.exists(os.path.join(folder, name))]
    if existing and not (args.resume or args.overwrite):
        raise ValueError(
            f"{folder!r} already holds a run ({', '.join(existing)}): continue it "
            "with --resume, replace it with --overwrite, or choose another --out"
        )
    if args.resume and args.overwrite:
        raise ValueError("give --resume or --overwrite, not both")
    params = parse_overrides(args.set, algorithm_class(args.algo).Config)  # typed from here on
    if args.resume and not args.set and os.path.exists(checkpoint):
        from .checkpoint import load_checkpoint

        meta = load_checkpoint(checkpoint)[1]
        if meta.get("algorithm") != args.algo:
            raise ValueError(
                f"{checkpoint!r} is a run of --algo {meta.get('algorithm')}, not {args.algo}"
            )
        saved = saved_params(meta.get("task") or {}, args.algo)
        if saved:  # the run's own --set options, so that `--resume --steps N` is enough
            params = saved
            print(
                "using the run's settings: "
                + " ".join(f"--set {k}={v}" for k, v in sorted(saved.items())),
                file=out,
            )
    check_sizes(spec, runs_make_config(args.algo, params))
    trainer = build_run(args.algo, spec, args.seed, params)
    if args.resume:
        if os.path.exists(checkpoint):
            trainer.load(checkpoint)
            print(f"resumed {checkpoint} at iteration {trainer.iterations_done}", file=out)
        else:
            print(f"no checkpoint in {folder!r} yet: starting a new run", file=out)
    if args.overwrite:
        for name in existing:
            os.unlink(os.path.join(folder, name))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise ValueError(
            f"--out {folder!r}: cannot create the run folder ({exc.strerror or exc})"
        ) from None
    jsonl, csv_path = os.path.join(folder, "metrics.jsonl"), os.path.join(folder, "metrics.csv")
    remaining = args.steps - trainer.iterations_done
    if args.resume and remaining <= 0:
        print(
            f"nothing to do: the run has done {trainer.iterations_done} iterations and --steps "
            f"{args.steps} is the total, not a number of further iterations (give --steps "
            f"{trainer.iterations_done + args.steps} for {args.steps} more)",
            file=out,
        )
        return 0
    callbacks = [] if args.quiet else [Progress(args.steps)]

    def save(tr, metrics):
        if args.checkpoint_every and tr.iterations_done % args.checkpoint_every == 0:
            tr.save(checkpoint)
            write_metrics(tr.history, jsonl)

    trainer.train(max(0, remaining), callbacks=callbacks + [save])
    trainer.save(checkpoint)
    write_metrics(trainer.history, jsonl, csv_path)
    last = trainer.history[-1] if trainer.history else {}
    print(
        f"{args.algo}: {trainer.iterations_done} iterations; last: "
        f"{trainer.format_metrics(last) if last else '-'}",
        file=out,
    )
    print(f"checkpoint {checkpoint}; metrics {jsonl}, {csv_path}", file=out)
    return 0


def _value_samples(trainer, task, num: int, seed: int, epsilon: float) -> list:
    """Episodes of a value method's policy from a fresh stream of ``seed``: the trainer's greedy
    action (``trainer.greedy_actions``: argmax of Q, ties to the lowest id; for a trainer started
    from a language model the mode of its policy around the reference) with probability 1 - ε,
    a uniform action with probability ε (ε-greedy, S&B §2.2: uniforms ``2t`` / ``2t+1`` of each
    step decide and pick).  On the text task: prompt + generated text; on a
    :class:`fastlmrl.ContextMDP`: the trajectory ``s=.. a=.. r=..`` and the return."""
    from .environments import TextGenerationEnv
    from .rng import RandomStream, uniforms

    env, stream = task.env, RandomStream(seed)
    if env.num_envs != num:
        raise ValueError(f"the task was built for {env.num_envs} sequences, not {num}")
    obs, info = env.reset(seed=stream)
    prompts = info.get("prompt_ids")
    text = isinstance(env, TextGenerationEnv)
    steps: list[list[tuple[int, int, float]]] = [[] for _ in range(num)]
    running = np.ones(num, dtype=bool)
    ended = [""] * num
    limit = env.max_new_tokens if text else trainer.config.max_episode_steps
    for _ in range(limit):
        rows = np.flatnonzero(running)
        if rows.size == 0:
            break
        actions = np.zeros(num, dtype=np.int64)
        actions[rows] = trainer.greedy_actions(obs[rows])
        if epsilon > 0.0:
            draws = uniforms(stream, 2 * rows.size).reshape(rows.size, 2)
            explore = draws[:, 0] < epsilon
            uniform_actions = np.minimum(
                (draws[:, 1] * trainer.num_actions).astype(np.int64), trainer.num_actions - 1
            )
            actions[rows[explore]] = uniform_actions[explore]
        nxt, rewards, terminated, truncated, _ = env.step(actions)
        for b in rows.tolist():
            steps[b].append((int(obs[b]), int(actions[b]), float(rewards[b])))
            if terminated[b] or truncated[b]:
                running[b] = False
                ended[b] = "terminated" if terminated[b] else "truncated"
        obs = nxt
    out = []
    for i in range(num):
        if text:
            tokens = [a for _, a, _ in steps[i]]
            out.append(task.prompt_text(int(prompts[i])) + task.decode(tokens))
        else:
            path = " | ".join(f"s={s} a={a} r={r:g}" for s, a, r in steps[i])
            total = sum(r for _, _, r in steps[i])
            out.append(f"{path} | {ended[i] or 'cut'}, return {total:g}")
    return out


def cmd_sample(args, out=None) -> int:
    out = out or sys.stdout
    from .checkpoint import CheckpointError, load_checkpoint
    from .trainers import TEXT_ALGORITHMS

    path = args.run
    from .neural_run import is_neural_run

    if is_neural_run(path):  # a run of `fastlmrl train --policy neural`
        from .neural_run import cmd_sample_neural

        return cmd_sample_neural(args, out)
    if os.path.isdir(path):
        path = os.path.join(path, "checkpoint.ckpt")
    _, meta = load_checkpoint(path)
    spec = meta.get("task") or {}
    if not isinstance(spec, dict) or "algo" not in spec:
        raise CheckpointError(f"{path!r} was not written by `fastlmrl train` (no task description)")
    algo = spec["algo"]
    if algo in TEXT_ALGORITHMS and args.epsilon:
        raise ValueError(
            f"--epsilon applies to value methods; {algo} samples from its softmax policy"
        )
    if algo not in TEXT_ALGORITHMS:  # value methods: one environment row per sample
        spec = dict(spec, num_envs=args.num)
    task = build_task(spec)
    trainer = runs_make_trainer(
        algo, task, 0, runs_make_config(algo, saved_params(spec, algo), option="--set")
    )
    trainer.load(path)
    if algo in TEXT_ALGORITHMS:
        texts = _samples(trainer, task, args.num, args.seed)
    else:
        texts = _value_samples(trainer, task, args.num, args.seed, args.epsilon)
    for text in texts:
        print(text, file=out)
    return 0


def cmd_sweep(args, out=None) -> int:
    """Run a sweep grid on Ray (see :mod:`fastlmrl.sweep`); exit status 1 when a trial failed."""
    from .sweep import sweep

    result = sweep(
        args.config,
        out=args.out,
        address=args.address,
        workers=args.workers,
        retry_failed=args.retry_failed,
        plot=not args.no_plot,
        progress=out or sys.stdout,
    )
    return 1 if result.failed else 0


def cmd_pretrain(args, out=None) -> int:
    """Pretrain (or load from the cache) the default small model; print its held-out perplexity
    beside the n-gram LM's; save it atomically into --out (see
    :mod:`fastlmrl.neural.pretraining`)."""
    out = out or sys.stdout
    try:
        from .neural.model import save_model
        from .neural.pretraining import pretrained_model
    except ImportError as exc:
        raise RuntimeError(str(exc)) from None
    from .corpus import load_corpus

    log = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    result = pretrained_model(
        None if args.corpus is None else load_corpus(args.corpus),
        cache=not args.no_cache,
        seconds=args.seconds,
        steps=args.steps,
        seed=args.seed,
        architecture=args.architecture,
        threads=args.threads,
        eval_problems=args.eval_problems,
        log=log,
    )
    if args.out:
        save_model(result.model, result.tokenizer, args.out, metadata={"result": result.metrics()})
        result.folder = os.path.abspath(args.out)
    print(result.summary(), file=out)
    return 0


def cmd_bench(args, out=None) -> int:
    out = out or sys.stdout
    from .bench import run_benchmarks

    compiled = tuple(args.backend) if args.backend else None
    rows = run_benchmarks(quick=args.quick, backends=compiled)
    print(f"{'kernel':34s} {'backend':8s} {'M items/s':>10s} {'vs python':>10s}", file=out)
    for row in rows:
        ratio = f"{row['speedup']:.0f}x" if row.get("speedup") else "-"
        print(
            f"{row['kernel']:34s} {row['backend']:8s} {row['rate'] / 1e6:10.3f} {ratio:>10s}",
            file=out,
        )
    return 0


class _HelpFormatter(argparse.HelpFormatter):
    """Plain-text help: a description or epilog with line breaks is kept as written, one without
    is wrapped; every option's help ends with its default (when it has a meaningful one: not
    None, not a flag's False)."""

    def _fill_text(self, text, width, indent):
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action):
        text = action.help or ""
        if (
            "%(default)" in text
            or action.default is None
            or action.default is False
            or action.default is argparse.SUPPRESS
            or not action.option_strings
            or action.nargs == 0
        ):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``fastlmrl train: error: ... (see fastlmrl train --help)``
    instead of the usage block (the exit status stays 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int_option(low: int, high: int | None = None):
    """argparse ``type=`` for an integer option in [low, high] (the error names the option)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _float_option(low: float, high: float):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in [{low}, {high}], got {text}")
        return value

    parse.__name__ = "number"
    return parse


DESCRIPTION = """\
commands:
  fastlmrl demo               fit an n-gram LM, RL-fine-tune it with PPO and GRPO, show the result
  fastlmrl train --algo ALGO  train one algorithm, with metrics (JSONL/CSV) and checkpoints
  fastlmrl sample RUN         generate from a trained policy (a run folder or checkpoint file)
  fastlmrl sweep CONFIG       seeds x hyper-parameters x algorithms on Ray (local or a cluster)
  fastlmrl bench              kernel throughput of each backend against the reference
  fastlmrl pretrain           pretrain a small transformers LM; perplexity vs the n-gram LM
  fastlmrl info               backends, versions, threads

'fastlmrl COMMAND --help' describes a command's options."""

SEED_MAX = 2**64 - 1
MAX_ITERATIONS = 2**31  # iteration counts beyond this are refused at once


def main(argv=None) -> int:
    import fastlmrl

    from .trainers import ALGORITHMS

    parser = _Parser(
        prog="fastlmrl",
        description="Reinforcement learning for language models "
        "on tabular policies: kernels in Python, Numba and Cython.",
        formatter_class=_HelpFormatter,
        epilog=DESCRIPTION,
    )
    parser.add_argument("--version", action="version", version=f"fastlmrl {fastlmrl.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="fine-tune an n-gram LM with PPO and GRPO")
    add_demo_arguments(demo)  # fastlmrl/demo.py

    train = sub.add_parser(
        "train",
        help="train one algorithm",
        description="Train one algorithm; write metrics (JSONL and CSV) and a checkpoint into the "
        "run folder.  An existing run is continued with --resume (--steps is the "
        "total number of iterations) or replaced with --overwrite.",
    )
    train.add_argument(
        "--algo",
        required=True,
        choices=sorted(ALGORITHMS),
        metavar="ALGO",
        help=f"the algorithm: {', '.join(sorted(ALGORITHMS))} (the policy-gradient "
        "methods need --env text)",
    )
    train.add_argument(
        "--policy",
        choices=("table", "neural"),
        default="table",
        help="table: a logits/Q table over n-gram contexts (on --env); neural: "
        "fine-tune a transformers causal LM (reinforce, ppo, grpo, rloo) on "
        "--task; needs pip install 'fastlmrl[neural]'",
    )
    train.add_argument(
        "--task",
        metavar="TASK",
        help="--policy neural: the verifiable task (arithmetic, copy, reverse, "
        "sort, or reasoning_gym:<dataset>); held-out problems are never "
        "trained on",
    )
    train.add_argument(
        "--model",
        metavar="FOLDER",
        help="--policy neural: the starting model, a local folder (ours or a "
        "Hugging Face save_pretrained one; never downloaded); default: the "
        "cached pretrained default model (fastlmrl pretrain)",
    )
    train.add_argument(
        "--env",
        default="text",
        type=_env_option,
        metavar="ENV",
        help="the task: text (n-gram LM, lexicon reward), toy (the seed MDP), "
        "frozenlake, cliffwalking, taxi, or gym:<id> (a Gymnasium toy-text "
        "environment's table; value methods; needs the gym extra)",
    )
    train.add_argument(
        "--steps",
        type=_int_option(0, MAX_ITERATIONS),
        default=100,
        help="total training iterations (a resumed run counts the ones done)",
    )
    train.add_argument(
        "--seed", type=_int_option(0, SEED_MAX), default=0, help="the only source of randomness"
    )
    train.add_argument(
        "--backend",
        choices=_backend.BACKENDS,
        help="kernel backend (default: "
        "$FASTLMRL_BACKEND, else the first that loads of "
        f"{', '.join(_backend.BACKENDS)})",
    )
    train.add_argument("--corpus", help="a UTF-8 text file (default: the built-in corpus)")
    train.add_argument(
        "--order", type=_int_option(1), default=2, help="context length k of the policy"
    )
    train.add_argument(
        "--max-new-tokens",
        type=_int_option(1),
        default=48,
        help="tokens generated per episode at most (text task)",
    )
    train.add_argument(
        "--num-envs",
        type=_int_option(1),
        default=None,
        help="episodes stepped together (default: 256 on text, 64 on the toy)",
    )
    train.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a hyper-parameter of the algorithm's config (repeatable)",
    )
    train.add_argument("--out", help="run folder (default: runs/ALGO-ENV-seedSEED)")
    train.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    train.add_argument(
        "--overwrite", action="store_true", help="replace the run already in the run folder"
    )
    train.add_argument(
        "--checkpoint-every",
        type=_int_option(0, MAX_ITERATIONS),
        default=10,
        help="iterations between checkpoints (0: only at the end)",
    )
    train.add_argument("--quiet", action="store_true", help="no progress output")

    sample = sub.add_parser(
        "sample",
        help="generate from a trained policy",
        description="Generate from a run's policy: text (prompt + generated text) on the text "
        "task, the trajectory (states, actions, rewards) on the toy.  Value methods "
        "act greedily in their Q table, or epsilon-greedily with --epsilon.",
    )
    sample.add_argument("run", help="a run folder or a checkpoint file")
    sample.add_argument(
        "--num", type=_int_option(1, 1_000_000), default=5, help="number of samples"
    )
    sample.add_argument(
        "--seed",
        type=_int_option(0, SEED_MAX),
        default=0,
        help="seed of the sampling (not the training) stream",
    )
    sample.add_argument(
        "--epsilon",
        type=_float_option(0.0, 1.0),
        default=0.0,
        help="value methods: probability of a uniform action instead of the greedy one",
    )

    sweep = sub.add_parser(
        "sweep",
        help="run a grid of algorithms × hyper-parameters × seeds on Ray",
        description="Run every trial of a TOML (or YAML, with PyYAML) grid as a Ray task; a "
        "restarted sweep skips finished trials and resumes the others from their "
        "checkpoints.  Exit status 1 when a trial failed for good.",
    )
    sweep.add_argument("config", help="the grid: a .toml (or .yaml/.yml) file")
    sweep.add_argument(
        "--address",
        help="join this Ray cluster (e.g. 'auto', 'host:6379'); default: a local Ray instance",
    )
    sweep.add_argument(
        "--workers", type=int, help="concurrent trials (default: the config's, else all cores)"
    )
    sweep.add_argument(
        "--out", help="output folder (default: the config's out, else sweeps/CONFIG-NAME)"
    )
    sweep.add_argument(
        "--retry-failed", action="store_true", help="run again the trials recorded as failed"
    )
    sweep.add_argument("--no-plot", action="store_true", help="no learning-curve PNG")

    bench = sub.add_parser("bench", help="kernel throughput per backend vs the reference")
    bench.add_argument("--quick", action="store_true", help="smaller sizes")
    bench.add_argument(
        "--backend",
        action="append",
        choices=[b for b in _backend.BACKENDS if b != "python"],
        help="a compiled backend to time (repeatable; default: all of them); the "
        "python reference is always timed, for the ratio",
    )
    pre = sub.add_parser(
        "pretrain",
        help="pretrain a small transformers LM on the built-in corpus",
        description="Pretrain a transformers GPT-2 (2 layers, 96 wide, character vocabulary) "
        "from scratch on the corpus plus solved problems of the verifiable tasks; "
        "print its held-out perplexity beside the n-gram LM's and the tasks' "
        "success rates.  The model is cached (~/.cache/fastlmrl/models) and, with "
        "--out, saved atomically into a folder that `fastlmrl.neural.load_model` and "
        "transformers' from_pretrained read.  Needs pip install 'fastlmrl[neural]'.",
    )
    pre.add_argument(
        "--seconds",
        type=_float_option(1e-3, 1e9),
        default=48.0,
        help="training time limit in seconds",
    )
    pre.add_argument(
        "--steps",
        type=_int_option(1, 10**9),
        default=1200,
        help="optimizer steps (training stops at --steps or --seconds)",
    )
    pre.add_argument(
        "--seed",
        type=_int_option(0, 2**63 - 1),
        default=0,
        help="seed of the weights and the batches",
    )
    pre.add_argument(
        "--architecture",
        choices=("gpt2", "llama"),
        default="gpt2",
        help="transformers architecture",
    )
    pre.add_argument(
        "--threads",
        type=_int_option(1, 4096),
        default=1,
        help="torch threads while training (the result depends on it)",
    )
    pre.add_argument(
        "--eval-problems",
        type=_int_option(0, 10**6),
        default=200,
        help="held-out problems per task for the success rates (0: none)",
    )
    pre.add_argument("--corpus", help="a UTF-8 text file (default: the built-in corpus)")
    pre.add_argument("--out", help="also save the model and tokenizer into this folder")
    pre.add_argument(
        "--no-cache",
        action="store_true",
        help="train even when the cache holds this model, and do not cache it",
    )
    pre.add_argument("--quiet", action="store_true", help="no progress output")
    sub.add_parser("info", help="show backends, versions and threads")
    for command in sub.choices.values():  # every command: one-line errors, defaults in --help
        command.formatter_class = _HelpFormatter
        for action in command._actions:
            if (
                action.help is None
                and action.option_strings
                and action.nargs != 0
                and action.default is not None
            ):
                action.help = "default: %(default)s"

    args = parser.parse_args(argv)
    from ._allocator import keep_freed_memory

    keep_freed_memory()  # per-iteration arrays stay in the process (see fastlmrl/_allocator.py)
    try:
        if args.command == "info":
            _backend.show_config()
            return 0
        if args.command == "demo":
            if args.iterations is not None and args.iterations < 1:
                parser.error("--iterations must be >= 1")
            cmd_demo(args)
            return 0
        if args.command == "train":
            return cmd_train(args)
        if args.command == "sample":
            return cmd_sample(args)
        if args.command == "pretrain":
            return cmd_pretrain(args)
        if args.command == "sweep":
            if args.workers is not None and args.workers < 1:
                parser.error("--workers must be >= 1")
            return cmd_sweep(args)
        return cmd_bench(args)
    except KeyboardInterrupt:
        hint = {
            "sweep": "; run the same command again to resume",
            "train": "; continue from the last checkpoint with --resume",
        }
        print(f"fastlmrl {args.command}: interrupted{hint.get(args.command, '')}", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, RuntimeError, ArithmeticError, LookupError) as exc:
        print(f"fastlmrl {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(
            f"fastlmrl {args.command}: error: out of memory; lower --num-envs, "
            "--max-new-tokens, --order or --set num_sequences",
            file=sys.stderr,
        )
        return 1


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, (ValueError, TypeError, OSError)):
        text = f"{type(exc).__name__}: {text}"
    return text


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
