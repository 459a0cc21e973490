"""``fastlmrl bench``: a quick throughput table of a few kernels in every backend.

For careful measurements use the pytest-benchmark suite in ``benchmarks/``; this command is a
sanity check that the compiled backends are loaded and fast on this machine.  Each kernel is timed
on the same kind of input per backend (the reference on a smaller batch: rates are per item), JIT
warmed first, best of a few repetitions.
"""

from __future__ import annotations

import time

import numpy as np

from . import _backend
from .rng import stream_key


def _best_rate(fn, items: int, repeat: int) -> float:
    fn()  # warm-up: JIT compilation / cache load
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return items / best


def _cases(quick: bool):
    rng = np.random.default_rng(0)
    key = np.uint64(stream_key(0))

    def q_learning(k, n):
        q = rng.standard_normal((1024, 16)).astype(np.float32)
        s, a, s2 = rng.integers(0, 1024, n), rng.integers(0, 16, n), rng.integers(0, 1024, n)
        r = rng.standard_normal(n).astype(np.float32)
        t = (rng.random(n) < 0.05).view(np.uint8)
        td = np.empty(n, np.float32)
        return lambda: k.q_learning_update(q, s, a, r, s2, t, 0.1, 0.9, td)

    def epsilon_greedy(k, n):
        q = rng.standard_normal((1024, 16)).astype(np.float32)
        s = rng.integers(0, 1024, n)
        out = np.empty(n, np.int64)
        return lambda: k.epsilon_greedy(q, s, 0.1, key, np.uint64(0), out, 1)

    def token_log_probs(k, n):
        logits = rng.standard_normal((n, 64)).astype(np.float32)
        tokens = rng.integers(0, 64, n)
        from . import log_probs

        return lambda: log_probs.token_log_probs(logits, tokens)

    def gae(k, n):  # n sequences of 256 steps
        from . import advantages

        r = rng.standard_normal((n, 256)).astype(np.float32)
        v = rng.standard_normal((n, 256)).astype(np.float32)
        mask = np.ones((n, 256), bool)
        done = np.ones(n, bool)
        return lambda: advantages.gae(r, v, mask, done, gamma=0.99, lam=0.95)

    def ppo(k, n):
        from . import policy_losses

        logits = rng.standard_normal((n, 64)).astype(np.float32)
        tokens = rng.integers(0, 64, n)
        old = rng.standard_normal(n).astype(np.float32) - 4
        adv = rng.standard_normal(n).astype(np.float32)
        return lambda: policy_losses.ppo_loss(logits, tokens, old, adv)

    def ppo_tabular(k, n):  # n tokens over 330 contexts of a (2704, 52) table
        from . import tabular_losses

        table = rng.standard_normal((2704, 52)).astype(np.float32)
        contexts = rng.choice(2704, 330, replace=False)[rng.integers(0, 330, n)]
        tokens = rng.integers(0, 52, n)
        old = rng.standard_normal(n) - 4
        adv = rng.standard_normal(n)
        return lambda: tabular_losses.ppo_loss_tabular(table, contexts, tokens, old, adv)

    big = 1 if quick else 4
    return [
        ("q_learning_update (1024x16 f32)", q_learning, 250_000 * big, 2_000),
        ("epsilon_greedy (1024x16 f32)", epsilon_greedy, 250_000 * big, 2_000),
        ("token_log_probs (N x 64 f32)", token_log_probs, 16_384 * big, 256),
        ("ppo_loss + grad (N x 64 f32)", ppo, 16_384 * big, 256),
        ("ppo_loss_tabular (2704x52 f32)", ppo_tabular, 8_192 * big, 256),
        ("gae (B x 256 f32), per step", gae, 256 * big, 4),
    ]


COMPILED = ("numba", "cython")


def run_benchmarks(quick: bool = False, repeat: int = 3, backends=None) -> list:
    """Rows ``{"kernel", "backend", "rate", "speedup"}`` (items per second, vs the reference).

    ``backends``: the compiled backends to time (default both); the python reference is always
    timed first (the ratio's denominator)."""
    backends = COMPILED if backends is None else tuple(backends)
    unknown = [b for b in backends if b not in COMPILED]
    if unknown:
        raise ValueError(f"backends: {unknown} are not compiled backends; choose from {COMPILED}")
    rows = []
    for name, make, n_fast, n_ref in _cases(quick):
        per_step = 256 if "per step" in name else 1
        reference_rate = 1.0  # the python reference runs first
        for backend in ("python",) + backends:
            module = _backend.backend_module(backend)
            n = n_ref if backend == "python" else n_fast
            with _backend.use_backend(backend):
                rate = _best_rate(make(module, n), n * per_step, repeat)
            if backend == "python":
                reference_rate = rate
            rows.append(
                {
                    "kernel": name,
                    "backend": backend,
                    "rate": rate,
                    "speedup": rate / reference_rate if backend != "python" else None,
                }
            )
    return rows
