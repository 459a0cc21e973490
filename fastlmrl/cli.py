"""The ``fastlmrl`` command.

    fastlmrl demo [--backend NAME] [--episodes N] [--seed S]   train a tabular agent, print the result
    fastlmrl info                                              backends, versions, threads
"""
from __future__ import annotations

import argparse
import string
import sys
import time

import numpy as np

from . import _backend


class SpellingTask:
    """A token MDP: emit the characters of ``target`` one at a time.

    State ``k`` = the number of characters emitted correctly so far (the context, as a prefix id);
    action = a character of ``alphabet``.  The right character moves to ``k + 1`` with reward 1;
    a wrong one ends the episode (terminated) with reward 0; state ``len(target)`` is terminal.
    Episodes are also truncated after ``2 * len(target)`` steps (they cannot be longer here, but
    the bookkeeping shows how a time limit is kept apart from termination).
    """

    def __init__(self, target: str, alphabet: str):
        self.target = target
        self.alphabet = alphabet
        self.n_states = len(target) + 1
        self.n_actions = len(alphabet)
        self.correct = np.array([alphabet.index(c) for c in target], dtype=np.int64)

    def step(self, states: np.ndarray, actions: np.ndarray):
        right = actions == self.correct[np.minimum(states, len(self.target) - 1)]
        rewards = right.astype(np.float64)
        next_states = np.where(right, states + 1, states)
        terminated = ~right | (next_states == len(self.target))
        return next_states, rewards, terminated

    def decode(self, q: np.ndarray) -> str:
        """The greedy policy's output, stopping at the first wrong character."""
        import fastlmrl

        out, s = [], 0
        while s < len(self.target):
            a = int(fastlmrl.greedy(q, [s])[0])
            out.append(self.alphabet[a])
            if a != self.correct[s]:
                break
            s += 1
        return "".join(out)


def run_demo(backend: str | None, episodes: int, batch: int, seed: int, out=sys.stdout) -> dict:
    """Q-learning with annealed ε-greedy exploration and optimistic initial values (Sutton & Barto
    §2.6: every untried token looks worth 1, so the agent tries each once) on :class:`SpellingTask`."""
    import fastlmrl

    if backend is not None:
        fastlmrl.set_backend(backend)
    task = SpellingTask("reinforcement learning", string.ascii_lowercase + " ")
    q = np.ones((task.n_states, task.n_actions), dtype=np.float32)
    stream = fastlmrl.RandomStream(seed)
    epsilon = fastlmrl.LinearSchedule(0.5, 0.01, max(1, episodes // 2))
    gamma, alpha = 0.99, 1.0  # a deterministic task: a full step is the right size
    print(f"fastlmrl {fastlmrl.__version__} demo — backend: {fastlmrl.get_backend()}", file=out)
    print(f"task: spell {task.target!r} over {task.n_actions} tokens "
          f"({task.n_states} contexts); Q-learning, ε-greedy {epsilon}", file=out)
    print(f"before training the greedy policy writes: {task.decode(q)!r}", file=out)
    transitions, start = 0, time.perf_counter()
    history = []
    for round_ in range(0, episodes, batch):
        eps = epsilon(round_)
        states = np.zeros(batch, dtype=np.int64)
        alive = np.ones(batch, dtype=bool)
        returns = np.zeros(batch)
        for _ in range(2 * len(task.target)):
            idx = np.flatnonzero(alive)
            if idx.size == 0:
                break
            s = states[idx]
            a = fastlmrl.epsilon_greedy(q, s, eps, stream)
            s2, r, terminated = task.step(s, a)
            fastlmrl.q_learning_update(q, s, a, r, s2, terminated, alpha, gamma)
            transitions += idx.size
            returns[idx] += r
            states[idx] = s2
            alive[idx] = ~terminated
        history.append(float(returns.mean()))
        if len(history) % max(1, (episodes // batch) // 8) == 0:
            print(f"  episodes {round_ + batch:6d}  ε={eps:.3f}  mean return {history[-1]:6.2f}",
                  file=out)
    elapsed = time.perf_counter() - start
    result = task.decode(q)
    print(f"after training the greedy policy writes:  {result!r}", file=out)
    print(f"{transitions} transitions in {elapsed:.2f} s "
          f"({transitions / elapsed / 1e6:.2f} M transitions/s including Python glue)", file=out)
    return {"output": result, "target": task.target, "history": history,
            "transitions": transitions, "seconds": elapsed}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastlmrl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train a tabular agent on a token task and show the result")
    demo.add_argument("--backend", choices=_backend.BACKENDS, default=None)
    demo.add_argument("--episodes", type=int, default=20000)
    demo.add_argument("--batch", type=int, default=64)
    demo.add_argument("--seed", type=int, default=0)
    sub.add_parser("info", help="show backends, versions and threads")
    args = parser.parse_args(argv)
    if args.command == "info":
        _backend.show_config()
        return 0
    if args.episodes < 1 or args.batch < 1:
        parser.error("--episodes and --batch must be >= 1")
    result = run_demo(args.backend, args.episodes, args.batch, args.seed)
    return 0 if result["output"] == result["target"] else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
