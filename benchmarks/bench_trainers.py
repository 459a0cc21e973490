"""End-to-end PPO and GRPO training throughput: trained tokens per second, per implementation.

Target (the "environments, LM, trainers, CLI" issue; one run, 2 cores): end-to-end PPO and GRPO
on :class:`fastlmrl.TextGenerationEnv` with a tabular policy over a character vocabulary
(V ~ 64-128, k = 2) at >= 2 M trained tokens/s (sampling + reward + advantages + update), and
>= 10x the NumPy-vectorised implementation of the same loop (``numpy_trainers.py``, checked
against fastlmrl by ``tests/test_numpy_trainers.py``).  Two NumPy twins: ``numpy`` writes the
update the way the loss is written for any model's logits (per-token gradient rows of the
gathered ``policy[contexts]``, summed per context); ``numpy_grouped`` uses fastlmrl's own
tabular algorithm (one softmax per distinct context, :func:`fastlmrl.ppo_loss_tabular`) in
NumPy.  Report the ratio to both.

One timed call = one ``iteration()`` of :class:`fastlmrl.PPOTrainer` / :class:`fastlmrl.GRPOTrainer`
(default configs: PPO 4 epochs x 4 minibatches with a value table and KL-shaped rewards; GRPO
groups of 8, 1 epoch, k3 KL penalty) or of its NumPy twin.  Items = tokens generated and used in
the update in that iteration (``metrics["tokens"]``, the sum of the sequence lengths; sequences
end at EOS or T = 48).  The trainers keep learning between rounds, so the token count of an
iteration varies a little: ``extra_info`` records the tokens actually trained in the timed rounds
(``items`` = their mean, ``M_items_per_s`` = their total / the total time; the median and best
per-round rates are recorded too, ``M_items_per_s_median`` / ``_max``, as a shared machine's
load spikes hit the mean).

Tasks: ``text52`` = :func:`fastlmrl.tasks.make_text_task` (the default corpus, V = 52,
S = V**2 = 2704 contexts); ``text98`` = the same corpus plus lines using every printable ASCII
character (V = 98, S = 9604), inside the issue's V = 64-128 range.  B = 256 and 1024 sequences.
The pure-Python reference backend runs 8 sequences (its rate per token is what compares).  The
compiled backends run with fastlmrl's default thread count (all cores) and with one thread.

Run:  pytest benchmarks/bench_trainers.py --benchmark-enable --benchmark-group-by=group \\
          --benchmark-columns=mean,rounds -p no:cacheprovider
Phase profile (where an iteration spends its time, fastlmrl and NumPy):
      python benchmarks/bench_trainers.py [--batch 1024] [--task text52]
Old vs new in one run (alternating rounds, phase profile of both, throughput ratio):
      git worktree add /tmp/old COMMIT   # + build its extensions (or copy the .so files)
      python benchmarks/bench_trainers.py --compare /tmp/old [--rounds 8]
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import numpy as np
import pytest

# run as a script: the checkout this file belongs to, after PYTHONPATH (--compare points each of
# its processes at one tree that way) and before nothing else that provides fastlmrl
sys.path.append(str(Path(__file__).resolve().parent.parent))
import fastlmrl  # noqa: E402
from fastlmrl.corpus import default_corpus  # noqa: E402
from fastlmrl.tasks import make_text_task  # noqa: E402
from fastlmrl.trainers.grpo import GRPOConfig, GRPOTrainer  # noqa: E402
from fastlmrl.trainers.ppo import PPOConfig, PPOTrainer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import measure  # noqa: E402
from numpy_trainers import NumpyGRPO, NumpyPPO  # noqa: E402

T = 48
GROUP = 8
BATCHES = (256, 1024)
PYTHON_BATCH = 8
IMPLS = ("numba", "cython", "numpy", "numpy_grouped", "python")
NUMPY_IMPLS = ("numpy", "numpy_grouped")
ROUNDS = {"numba": 15, "cython": 15, "numpy": 7, "numpy_grouped": 10, "python": 2}
TASKS = ("text52", "text98")
# fastlmrl's parallel kernels (the PPO/GRPO loss) on all cores (None, the default) and on one:
# on a shared machine whose other processes occupy a core, the threaded kernels wait for it.
THREADS = (None, 1)

_TASKS: dict = {}


def ascii_corpus() -> str:
    """The default corpus plus 200 lines that use all 95 printable ASCII characters."""
    base = default_corpus()
    printable = "".join(chr(c) for c in range(32, 127))
    extra = []
    for i, line in enumerate(base.splitlines()[:200]):
        k = i % len(printable)
        extra.append(f"{i:03d}) {line.upper()} [{printable[k:] + printable[:k]}] ~{i * 7 % 100}%")
    return base + "\n".join(extra) + "\n"


def get_task(name: str):
    """The benchmark task (built once per process)."""
    if name not in _TASKS:
        if name == "text52":
            task = make_text_task(max_new_tokens=T, reward_per_token=False)
        elif name == "text98":
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "ascii_corpus.txt"
                path.write_text(ascii_corpus(), encoding="utf-8")
                task = make_text_task(str(path), max_new_tokens=T, reward_per_token=False)
        else:
            raise ValueError(name)
        _TASKS[name] = task
    return _TASKS[name]


def make_trainer(impl: str, algo: str, task, num_sequences: int, seed: int = 0):
    """A fastlmrl trainer (impl = a backend name) or its NumPy twin (impl = "numpy": per-token
    gradients of the gathered logits, summed per context; "numpy_grouped": fastlmrl's algorithm,
    one softmax per distinct context, in NumPy)."""
    if algo == "ppo":
        config = PPOConfig(num_sequences=num_sequences)
    else:
        config = GRPOConfig(num_prompts=num_sequences // GROUP, group_size=GROUP)
    if impl in NUMPY_IMPLS:
        cls = NumpyPPO if algo == "ppo" else NumpyGRPO
        return cls(task, config, seed=seed, grouped=impl == "numpy_grouped")
    return (PPOTrainer if algo == "ppo" else GRPOTrainer)(task, config, seed=seed)


def backend_for(impl: str):
    """The fastlmrl backend an implementation runs under (NumPy calls no kernel)."""
    return fastlmrl.use_backend(impl) if impl not in NUMPY_IMPLS else contextlib.nullcontext()


@contextlib.contextmanager
def num_threads(n):
    """fastlmrl's kernel thread count set to ``n`` (None: all cores, the default) for the block."""
    from fastlmrl import _backend

    previous = _backend._num_threads
    fastlmrl.set_num_threads(n)
    try:
        yield
    finally:
        fastlmrl.set_num_threads(previous)


@pytest.mark.parametrize("threads", THREADS, ids=lambda n: "1thread" if n == 1 else "allthreads")
@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"B{b}")
@pytest.mark.parametrize("task_name", TASKS)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("algo", ("ppo", "grpo"))
def test_train_iteration(benchmark, algo, impl, task_name, batch, threads):
    """One training iteration; items = tokens trained in it."""
    if impl == "python" and batch != BATCHES[0]:
        pytest.skip("the reference runs one small batch (rate per token is what compares)")
    if impl not in ("numba", "cython") and threads is not None:
        pytest.skip("only the compiled kernels use threads")
    task = get_task(task_name)
    n = PYTHON_BATCH if impl == "python" else batch
    trainer = make_trainer(impl, algo, task, n)
    tokens = []

    def run():
        tokens.append(trainer.iteration()["tokens"])

    rounds = ROUNDS[impl]
    with backend_for(impl), num_threads(threads):
        used_threads = fastlmrl.get_num_threads() if impl in ("numba", "cython") else 1
        run()  # JIT / caches; measure() warms up once more
        measure(
            benchmark,
            run,
            items=tokens[0],
            group=f"train {algo} {task_name} (V={task.vocab_size}, k=2, T={T}) B{batch}",
            rounds=rounds,
        )
    timed = np.array(tokens[2:], dtype=np.float64)
    # measure() stored seconds per item (items = tokens[0]): back to seconds per iteration
    seconds = np.array(benchmark.stats.stats.data, dtype=np.float64) * tokens[0]
    assert timed.shape == seconds.shape == (rounds,) and timed.min() > 0
    rates = timed / seconds / 1e6
    benchmark.extra_info.update(
        impl=impl,
        algo=algo,
        task=task_name,
        vocab=task.vocab_size,
        sequences=n,
        threads=used_threads,
        items=float(timed.mean()),
        M_items_per_s=round(timed.sum() / seconds.sum() / 1e6, 6),
        # per-round rates: the median and the best resist a loaded (shared) machine
        M_items_per_s_median=round(float(np.median(rates)), 6),
        M_items_per_s_max=round(float(rates.max()), 6),
    )


# ---------------------------------------------------------------------------------------------
# phase profile (python benchmarks/bench_trainers.py)


class _Timer:
    def __init__(self):
        self.seconds: dict = {}

    def wrap(self, name, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

        return timed


class _TimedReward:
    """Stands in for the environment's reward function, timing its calls."""

    def __init__(self, reward, timer):
        self.reward = reward
        self.per_token = reward.per_token
        self.call = timer.wrap("reward", reward.__call__)

    def __call__(self, *args):
        return self.call(*args)


@contextlib.contextmanager
def fastlmrl_phases(trainer, timer):
    """Time the phases of a fastlmrl trainer's real ``iteration`` by wrapping what it calls.

    rollout = the rollout kernel call and its wrapper (reward and KL shaping excluded);
    reward = keyword reward (+ reference log-probs and KL shaping for PPO); advantages = values
    gather + GAE + whitening (PPO) or group advantages + loss weights + reference log-probs
    (GRPO); loss = the tabular PPO loss; optimizer = Adam on the policy (+ the value table, PPO);
    permutation = minibatch shuffles; diagnostics = KL / entropy / metrics; the rest of the
    iteration (gathers ``policy[ctx]``, flattening, Python) is reported as "other".
    """
    from fastlmrl import environments
    from fastlmrl.trainers import grpo, ppo

    env = trainer.env
    saved_env_reward = env.reward
    # (what a checkout has: --compare times an older tree with the same wrappers)
    saved = [
        (mod, name)
        for mod, name in [
            (environments, "kl_shaped"),
            (ppo, "gae"),
            (ppo, "masked_whiten"),
            (ppo, "ppo_loss_tabular"),
            (grpo, "ppo_loss_tabular"),
            (grpo, "grpo_advantages"),
            (grpo, "loss_weights"),
        ]
        if hasattr(mod, name)
    ]
    originals = [getattr(mod, name) for mod, name in saved]
    phase_of = {
        "kl_shaped": "reward",
        "gae": "advantages",
        "masked_whiten": "advantages",
        "ppo_loss_tabular": "loss",
        "grpo_advantages": "advantages",
        "loss_weights": "advantages",
    }
    methods = {
        "rollout": "rollout",
        "state_values": "advantages",
        "reference_log_probs": "advantages",
        "update_policy": "optimizer",
        "update_values": "optimizer",
        "minibatches": "permutation",
        "ppo_loss_rows": "loss",
        "finish": "diagnostics",
        "base_metrics": "diagnostics",
        "value_metrics": "diagnostics",
    }
    methods = {name: phase for name, phase in methods.items() if hasattr(trainer, name)}
    try:
        env.reward = _TimedReward(saved_env_reward, timer)
        env._ref_logprobs = timer.wrap("reward", environments.TextGenerationEnv._ref_logprobs)
        for (mod, name), fn in zip(saved, originals):
            setattr(mod, name, timer.wrap(phase_of[name], fn))
        for name, phase in methods.items():
            setattr(trainer, name, timer.wrap(phase, getattr(trainer, name)))
        yield
    finally:
        env.reward = saved_env_reward
        del env._ref_logprobs
        for (mod, name), fn in zip(saved, originals):
            setattr(mod, name, fn)
        for name in methods:
            delattr(trainer, name)


def _nested(seconds):
    """The rollout timer includes the reward calls made inside it: report them apart."""
    out = dict(seconds)
    if "rollout" in out:
        out["rollout"] -= out.get("reward", 0.0)
    return out


def profile(task_name="text52", batch=1024, iterations=10, threads=None, out=sys.stdout):
    task = get_task(task_name)
    with num_threads(threads):
        print(
            f"task {task_name}: V={task.vocab_size}, S={task.num_contexts}, T={T}, B={batch}, "
            f"{fastlmrl.get_num_threads()} kernel thread(s), {iterations} iterations after 2 "
            "warm-up ones (ms per iteration)",
            file=out,
        )
        _profile(task, batch, iterations, out)


def _profile(task, batch, iterations, out):
    phases = (
        "rollout",
        "reward",
        "advantages",
        "permutation",
        "loss",
        "optimizer",
        "diagnostics",
        "other",
    )
    print(
        f"{'':16s}" + "".join(f"{p:>12s}" for p in phases) + f"{'total':>10s}{'Mtok/s':>9s}",
        file=out,
    )
    for algo in ("ppo", "grpo"):
        for impl in ("numba", "cython") + NUMPY_IMPLS:
            trainer = make_trainer(impl, algo, task, batch)
            timer = _Timer()
            with backend_for(impl):
                for _ in range(2):
                    trainer.iteration()
                tokens = 0
                if impl in NUMPY_IMPLS:
                    trainer.record_phases = True
                    start = time.perf_counter()
                    for _ in range(iterations):
                        tokens += trainer.iteration()["tokens"]
                    total = time.perf_counter() - start
                    seconds = dict(trainer.phase_seconds)
                else:
                    with fastlmrl_phases(trainer, timer):
                        start = time.perf_counter()
                        for _ in range(iterations):
                            tokens += trainer.iteration()["tokens"]
                        total = time.perf_counter() - start
                    seconds = _nested(timer.seconds)
            seconds["other"] = total - sum(seconds.values())
            row = "".join(f"{1e3 * seconds.get(p, 0.0) / iterations:12.2f}" for p in phases)
            print(
                f"{algo + ' ' + impl:16s}{row}{1e3 * total / iterations:10.2f}"
                f"{tokens / total / 1e6:9.3f}",
                file=out,
            )


# ---------------------------------------------------------------------------------------------
# old vs new in one run (python benchmarks/bench_trainers.py --compare OLD_CHECKOUT)

PHASES = (
    "rollout",
    "reward",
    "advantages",
    "permutation",
    "loss",
    "optimizer",
    "diagnostics",
    "other",
)


def serve(task_name, batch):
    """Child of --compare: keeps one trainer per (algo, backend, threads) and answers each line
    ``algo impl threads iterations`` on stdin with one JSON line (seconds per phase, tokens)."""
    import json

    task = get_task(task_name)
    trainers = {}
    for line in sys.stdin:
        algo, impl, threads, iterations = line.split()
        threads = None if threads == "all" else int(threads)
        key = (algo, impl, threads)
        with backend_for(impl), num_threads(threads):
            if key not in trainers:
                trainers[key] = make_trainer(impl, algo, task, batch)
            trainer = trainers[key]
            timer = _Timer()
            tokens = 0
            with fastlmrl_phases(trainer, timer):
                cpu = time.process_time()
                start = time.perf_counter()
                for _ in range(int(iterations)):
                    tokens += trainer.iteration()["tokens"]
                total = time.perf_counter() - start
                cpu = time.process_time() - cpu
        seconds = _nested(timer.seconds)
        seconds["other"] = total - sum(seconds.values())
        print(
            json.dumps({"seconds": seconds, "total": total, "cpu": cpu, "tokens": tokens}),
            flush=True,
        )


def compare(
    old_root,
    task_name="text52",
    batch=1024,
    iterations=3,
    rounds=8,
    threads=("all", "1"),
    out=sys.stdout,
):
    """The phase profile of this checkout and of ``old_root`` (another checkout of fastlmrl, e.g.
    ``git worktree add /tmp/old <commit>`` with its extensions built), measured in one run:
    rounds of ``iterations`` iterations alternate between the two trees (each in its own process,
    trainers kept warm), so that load on a shared machine hits both alike.  Prints ms per
    iteration and phase, M tokens/s, and new/old throughput (total time ratio, and the median of
    the per-round ratios), and the ratio of CPU time per token (``cpu``: the process's CPU time,
    less sensitive to other processes than wall time; with one kernel thread it is the work)."""
    import json
    import os
    import subprocess

    here = str(Path(__file__).resolve().parent.parent)
    procs = {}
    for name, root in (("old", old_root), ("new", here)):
        env = dict(os.environ, PYTHONPATH=str(Path(root).resolve()))
        procs[name] = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--serve",
                "--task",
                task_name,
                "--batch",
                str(batch),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=str(Path(root).resolve()),
        )

    def ask(name, command):
        proc = procs[name]
        proc.stdin.write(command + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {name} benchmark process ended (see its stderr)")
        return json.loads(line)

    print(
        f"task {task_name}, B={batch}: old = {old_root}, new = {here}; {rounds} alternating "
        f"rounds of {iterations} iterations each (ms per iteration)",
        file=out,
    )
    print(
        f"{'':22s}" + "".join(f"{p:>12s}" for p in PHASES) + f"{'total':>10s}{'Mtok/s':>9s}"
        f"{'new/old':>9s}{'median':>8s}{'cpu':>7s}",
        file=out,
    )
    try:
        for algo in ("ppo", "grpo"):
            for impl in ("numba", "cython"):
                for nt in threads:
                    command = f"{algo} {impl} {nt}"
                    for name in procs:  # JIT, caches, warm trainers
                        ask(name, f"{command} 2")
                    sums = {
                        name: {"seconds": {}, "total": 0.0, "cpu": 0.0, "tokens": 0}
                        for name in procs
                    }
                    per_round = {name: [] for name in procs}
                    for r in range(rounds):
                        for name in ("old", "new") if r % 2 == 0 else ("new", "old"):
                            res = ask(name, f"{command} {iterations}")
                            acc = sums[name]
                            for phase, sec in res["seconds"].items():
                                acc["seconds"][phase] = acc["seconds"].get(phase, 0.0) + sec
                            acc["total"] += res["total"]
                            acc["cpu"] += res["cpu"]
                            acc["tokens"] += res["tokens"]
                            per_round[name].append(res["tokens"] / res["total"])
                    n_iter = rounds * iterations
                    rates = {
                        name: sums[name]["tokens"] / sums[name]["total"] / 1e6 for name in procs
                    }
                    ratio = rates["new"] / rates["old"]
                    cpu_ratio = (sums["old"]["cpu"] / sums["old"]["tokens"]) / (
                        sums["new"]["cpu"] / sums["new"]["tokens"]
                    )
                    median = float(
                        np.median(np.array(per_round["new"]) / np.array(per_round["old"]))
                    )
                    for name in procs:
                        acc = sums[name]
                        row = "".join(
                            f"{1e3 * acc['seconds'].get(p, 0.0) / n_iter:12.2f}" for p in PHASES
                        )
                        label = f"{algo} {impl} t={nt} {name}"
                        tail = f"{ratio:9.2f}{median:8.2f}{cpu_ratio:7.2f}" if name == "new" else ""
                        print(
                            f"{label:22s}{row}{1e3 * acc['total'] / n_iter:10.2f}"
                            f"{rates[name]:9.3f}{tail}",
                            file=out,
                            flush=True,
                        )
    finally:
        for proc in procs.values():
            proc.stdin.close()
            proc.wait()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="text52", choices=TASKS)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="kernel threads (default all)")
    parser.add_argument(
        "--compare",
        metavar="OLD_CHECKOUT",
        default=None,
        help="time this checkout against another one in one run (alternating)",
    )
    parser.add_argument("--rounds", type=int, default=8, help="--compare: rounds per tree")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.task, args.batch)
    elif args.compare:
        compare(
            args.compare,
            args.task,
            args.batch,
            min(args.iterations, 3),
            args.rounds,
            threads=("all", "1") if args.threads is None else (str(args.threads),),
        )
    else:
        profile(args.task, args.batch, args.iterations, args.threads)
