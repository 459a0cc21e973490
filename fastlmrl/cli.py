"""The ``fastlmrl`` command.

    fastlmrl demo                 fit an n-gram LM, RL-fine-tune it with PPO and GRPO, show the result
    fastlmrl train --algo ALGO    train one algorithm, with metrics (JSONL/CSV) and checkpoints
    fastlmrl sample RUN           generate from a trained policy (a run folder or checkpoint file)
    fastlmrl sweep CONFIG         seeds × hyper-parameters × algorithms on Ray (local or a cluster)
    fastlmrl bench                kernel throughput of each backend against the reference
    fastlmrl info                 backends, versions, threads
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import sys
import time

import numpy as np

from . import _backend

DEMO_ALGORITHMS = ("ppo", "grpo")


# ---------------------------------------------------------------------------------------------
# tasks and trainers from command-line arguments


def task_spec_from_args(args) -> dict:
    return {"env": args.env, "corpus": args.corpus, "order": args.order,
            "max_new_tokens": args.max_new_tokens, "num_envs": args.num_envs}


def build_task(spec: dict):
    from .tasks import make_text_task, make_toy_task

    if spec["env"] == "toy":
        return make_toy_task(num_envs=spec.get("num_envs") or 64)
    if spec["env"] == "text":
        corpus = spec.get("corpus")
        return make_text_task(corpus, order=spec.get("order", 2),
                              max_new_tokens=spec.get("max_new_tokens", 48),
                              num_envs=spec.get("num_envs") or 256)
    raise ValueError(f"unknown env {spec['env']!r}: choose 'text' or 'toy'")


def _parse_overrides(pairs, config_cls):
    """``key=value`` strings -> {field: typed value} for the algorithm's config dataclass."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    out = {}
    for pair in pairs or ():
        if "=" not in pair:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        if key not in fields:
            raise ValueError(f"--set {key}: {config_cls.__name__} has no such field; choose from "
                             f"{', '.join(sorted(fields))}")
        default = fields[key].default
        if raw.lower() in ("none", "null"):
            out[key] = None
        elif isinstance(default, bool):
            out[key] = raw.lower() in ("1", "true", "yes")
        elif isinstance(default, int) and not isinstance(default, bool):
            out[key] = int(raw)
        elif isinstance(default, float) or default is None:
            out[key] = float(raw)
        else:
            out[key] = raw
    return out


def make_trainer(algo: str, task, seed: int, overrides=None):
    from .trainers import ALGORITHMS, TEXT_ALGORITHMS

    if algo not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algo!r}: choose from {', '.join(sorted(ALGORITHMS))}")
    cls = ALGORITHMS[algo]
    config = cls.Config(**_parse_overrides(overrides, cls.Config))
    if algo in TEXT_ALGORITHMS:
        if getattr(task, "name", "") != "text":
            raise ValueError(f"algorithm {algo!r} trains a softmax policy on the text task "
                             "(--env text)")
        return cls(task, config, seed=seed)
    return cls(task.env, config, seed=seed)


# ---------------------------------------------------------------------------------------------
# output helpers


def write_metrics(history: list, jsonl_path: str, csv_path: str | None = None) -> None:
    """Rewrite the metrics files from the full history (atomic replace: no partial files)."""
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


def _clean(metrics: dict) -> dict:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, (float, np.floating)):
            v = float(v)
            out[k] = v if np.isfinite(v) else None
        elif isinstance(v, (np.integer,)):
            out[k] = int(v)
        else:
            out[k] = v
    return out


class Progress:
    """A one-line progress bar on stderr (nothing when stderr is not a terminal and quiet)."""

    def __init__(self, total: int, stream=None, width: int = 28):
        self.total, self.stream, self.width = max(total, 1), stream or sys.stderr, width
        self.start = time.perf_counter()

    def __call__(self, trainer, metrics) -> None:
        done = metrics["iteration"] + 1
        filled = int(self.width * min(done, self.total) / self.total)
        elapsed = time.perf_counter() - self.start
        bar = "#" * filled + "-" * (self.width - filled)
        extra = "  ".join(f"{k}={metrics[k]:.3g}" for k in ("score", "reward", "kl")
                          if k in metrics and isinstance(metrics[k], float))
        self.stream.write(f"\r[{bar}] {done}/{self.total} {elapsed:5.1f}s  {extra}   ")
        if done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def _samples(trainer, task, n: int, seed: int) -> list:
    batch = trainer.sample(n, seed)
    out = []
    for b in range(n):
        prompt = task.prompt_text(int(batch.prompt_ids[b]))
        out.append(prompt + task.decode(batch.actions[b, :batch.lengths[b]]))
    return out


# ---------------------------------------------------------------------------------------------
# commands


def cmd_demo(args, out=None) -> dict:
    """Fit the LM, fine-tune it with PPO and GRPO toward the lexicon under a KL leash."""
    out = out or sys.stdout
    import fastlmrl
    from .tasks import make_text_task

    if args.backend:
        fastlmrl.set_backend(args.backend)
    started = time.perf_counter()
    task = make_text_task(args.corpus)
    print(f"fastlmrl {fastlmrl.__version__} demo — backend {fastlmrl.get_backend()}, "
          f"{_backend.get_num_threads()} threads", file=out)
    print(f"language model: character {task.lm.order}-gram, {task.lm.smoothing} smoothing, "
          f"V={task.vocab_size}, {task.num_contexts} contexts; held-out perplexity "
          f"{task.lm.perplexity(task.tokenizer.encode_lines(task.held_out)):.2f}", file=out)
    print(f"reward: +1 per lexicon word generated {list(task.lexicon)}", file=out)
    results = {}
    for algo in DEMO_ALGORITHMS:
        trainer = make_trainer(algo, task, args.seed)
        if algo == DEMO_ALGORITHMS[0]:
            print("\nreference LM samples:", file=out)
            for text in _samples(trainer, task, 4, seed=12345):
                print(f"  {text!r}", file=out)
        print(f"\n{algo.upper()}: {args.iterations} iterations, KL coefficient "
              f"{trainer.kl_controller.value}", file=out)
        history = trainer.train(args.iterations)
        for m in history[:: max(1, args.iterations // 6)] + [history[-1]]:
            print(f"  iter {m['iteration']:4d}  score {m['score']:6.3f}  KL {m['kl']:7.3f}  "
                  f"entropy {m['entropy']:.3f}  {m['tokens_per_second'] / 1e6:5.2f} M tok/s",
                  file=out)
        print(f"{algo.upper()} samples after training:", file=out)
        for text in _samples(trainer, task, 4, seed=12345):
            print(f"  {text!r}", file=out)
        tokens = sum(m["tokens"] for m in history)
        seconds = sum(m["seconds"] for m in history)
        summary = f"{algo.upper()}: {tokens} tokens trained in {seconds:.2f} s"
        if len(history) > 1:  # the first iteration includes compiling (Numba JIT) and warm-up
            rest = sum(m["seconds"] for m in history[1:])
            summary += (f"; first iteration {history[0]['seconds']:.2f} s (with any kernel "
                        f"compilation), then {(tokens - history[0]['tokens']) / rest / 1e6:.2f}"
                        " M tokens/s")
        else:
            summary += f" ({tokens / seconds / 1e6:.2f} M tokens/s)"
        print(summary, file=out)
        results[algo] = history
    if args.plot:
        _plot(results, args.plot, out)
    print(f"\ndemo finished in {time.perf_counter() - started:.1f} s", file=out)
    return results


def _plot(results: dict, path: str, out) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no learning-curve plot; pip install "
              "'fastlmrl[plot]')", file=out)
        return
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for algo, history in results.items():
        it = [m["iteration"] for m in history]
        axes[0].plot(it, [m["score"] for m in history], label=algo.upper())
        axes[1].plot(it, [m["kl"] for m in history], label=algo.upper())
    axes[0].set(xlabel="iteration", ylabel="lexicon words per sample", title="reward")
    axes[1].set(xlabel="iteration", ylabel="nats per sequence", title="KL to the reference LM")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    print(f"learning curves written to {path}", file=out)


def cmd_train(args, out=None) -> int:
    out = out or sys.stdout
    import fastlmrl

    if args.backend:
        fastlmrl.set_backend(args.backend)
    spec = task_spec_from_args(args)
    task = build_task(spec)
    trainer = make_trainer(args.algo, task, args.seed, args.set)
    trainer.task_spec = dict(spec, algo=args.algo, overrides=list(args.set or ()))
    folder = args.out or os.path.join("runs", f"{args.algo}-{args.env}-seed{args.seed}")
    os.makedirs(folder, exist_ok=True)
    checkpoint = os.path.join(folder, "checkpoint.ckpt")
    if args.resume and os.path.exists(checkpoint):
        trainer.load(checkpoint)
        print(f"resumed {checkpoint} at iteration {trainer.iterations_done}", file=out)
    remaining = args.steps - trainer.iterations_done
    jsonl, csv_path = os.path.join(folder, "metrics.jsonl"), os.path.join(folder, "metrics.csv")
    callbacks = [] if args.quiet else [Progress(args.steps)]

    def save(tr, metrics):
        if args.checkpoint_every and tr.iterations_done % args.checkpoint_every == 0:
            tr.save(checkpoint)
            write_metrics(tr.history, jsonl)

    trainer.train(max(0, remaining), callbacks=callbacks + [save])
    trainer.save(checkpoint)
    write_metrics(trainer.history, jsonl, csv_path)
    last = trainer.history[-1] if trainer.history else {}
    print(f"{args.algo}: {trainer.iterations_done} iterations; last: "
          f"{trainer.format_metrics(last) if last else '-'}", file=out)
    print(f"checkpoint {checkpoint}; metrics {jsonl}, {csv_path}", file=out)
    return 0


def cmd_sample(args, out=None) -> int:
    out = out or sys.stdout
    from .checkpoint import load_checkpoint

    path = args.run
    if os.path.isdir(path):
        path = os.path.join(path, "checkpoint.ckpt")
    _, meta = load_checkpoint(path)
    spec = meta.get("task") or {}
    if "algo" not in spec:
        raise ValueError(f"{path!r} was not written by `fastlmrl train` (no task description)")
    task = build_task(spec)
    trainer = make_trainer(spec["algo"], task, 0, spec.get("overrides"))
    trainer.load(path)
    if getattr(task, "name", "") != "text":
        print(trainer.q if hasattr(trainer, "q") else "(no text policy)", file=out)
        return 0
    for text in _samples(trainer, task, args.num, args.seed):
        print(text, file=out)
    return 0


def cmd_sweep(args, out=None) -> int:
    """Run a sweep grid on Ray (see :mod:`fastlmrl.sweep`); exit status 1 when a trial failed."""
    from .sweep import sweep

    result = sweep(args.config, out=args.out, address=args.address, workers=args.workers,
                   retry_failed=args.retry_failed, plot=not args.no_plot, log=out or sys.stdout)
    return 1 if result.failed else 0


def cmd_bench(args, out=None) -> int:
    out = out or sys.stdout
    from .bench import run_benchmarks

    rows = run_benchmarks(quick=args.quick)
    print(f"{'kernel':34s} {'backend':8s} {'M items/s':>10s} {'vs python':>10s}", file=out)
    for row in rows:
        ratio = f"{row['speedup']:.0f}x" if row.get("speedup") else "-"
        print(f"{row['kernel']:34s} {row['backend']:8s} {row['rate'] / 1e6:10.3f} {ratio:>10s}",
              file=out)
    return 0


def main(argv=None) -> int:
    from .trainers import ALGORITHMS

    parser = argparse.ArgumentParser(prog="fastlmrl", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="fine-tune an n-gram LM with PPO and GRPO")
    demo.add_argument("--backend", choices=_backend.BACKENDS)
    demo.add_argument("--iterations", type=int, default=150)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--corpus", help="a UTF-8 text file (default: the built-in corpus)")
    demo.add_argument("--plot", default="fastlmrl-demo.png",
                      help="learning-curve PNG (needs matplotlib); '' for none")

    train = sub.add_parser("train", help="train one algorithm")
    train.add_argument("--algo", required=True, choices=sorted(ALGORITHMS))
    train.add_argument("--env", default="text", choices=("text", "toy"))
    train.add_argument("--steps", type=int, default=100, help="training iterations")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--backend", choices=_backend.BACKENDS)
    train.add_argument("--corpus", help="a UTF-8 text file (default: the built-in corpus)")
    train.add_argument("--order", type=int, default=2, help="context length k of the policy")
    train.add_argument("--max-new-tokens", type=int, default=48)
    train.add_argument("--num-envs", type=int, default=None)
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a hyper-parameter of the algorithm's config")
    train.add_argument("--out", help="run folder (default runs/ALGO-ENV-seedSEED)")
    train.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    train.add_argument("--checkpoint-every", type=int, default=10)
    train.add_argument("--quiet", action="store_true")

    sample = sub.add_parser("sample", help="generate from a trained policy")
    sample.add_argument("run", help="a run folder or a checkpoint file")
    sample.add_argument("--num", type=int, default=5)
    sample.add_argument("--seed", type=int, default=0)

    sweep = sub.add_parser(
        "sweep", help="run a grid of algorithms × hyper-parameters × seeds on Ray",
        description="Run every trial of a TOML (or YAML, with PyYAML) grid as a Ray task; a "
                    "restarted sweep skips finished trials and resumes the others from their "
                    "checkpoints.  Exit status 1 when a trial failed for good.")
    sweep.add_argument("config", help="the grid: a .toml (or .yaml/.yml) file")
    sweep.add_argument("--address", help="join this Ray cluster (e.g. 'auto', 'host:6379'); "
                                         "default: a local Ray instance")
    sweep.add_argument("--workers", type=int, help="concurrent trials (default: the config's, "
                                                   "else all cores)")
    sweep.add_argument("--out", help="output folder (default: the config's out, else "
                                     "sweeps/CONFIG-NAME)")
    sweep.add_argument("--retry-failed", action="store_true",
                       help="run again the trials recorded as failed")
    sweep.add_argument("--no-plot", action="store_true", help="no learning-curve PNG")

    bench = sub.add_parser("bench", help="kernel throughput per backend vs the reference")
    bench.add_argument("--quick", action="store_true", help="smaller sizes")
    sub.add_parser("info", help="show backends, versions and threads")

    args = parser.parse_args(argv)
    from ._allocator import keep_freed_memory

    keep_freed_memory()  # per-iteration arrays stay in the process (see fastlmrl/_allocator.py)
    try:
        if args.command == "info":
            _backend.show_config()
            return 0
        if args.command == "demo":
            if args.iterations < 1:
                parser.error("--iterations must be >= 1")
            cmd_demo(args)
            return 0
        if args.command == "train":
            if args.steps < 0:
                parser.error("--steps must be >= 0")
            return cmd_train(args)
        if args.command == "sample":
            return cmd_sample(args)
        if args.command == "sweep":
            if args.workers is not None and args.workers < 1:
                parser.error("--workers must be >= 1")
            return cmd_sweep(args)
        return cmd_bench(args)
    except KeyboardInterrupt:
        if args.command != "sweep":
            raise
        print("fastlmrl sweep: interrupted; run the same command again to resume",
              file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        print(f"fastlmrl {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
