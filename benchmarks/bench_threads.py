"""One and two threads, on idle cores and with one core kept busy by another process.

    python benchmarks/bench_threads.py [--backends numba,cython] [--kernels a,b] [--seconds 0.4]

The process is pinned to two cores.  Every parallel kernel of the
selection, log_probs, policy_losses and sampling topics runs through
the public API with ``fastlmrl.set_num_threads(1)`` and ``(2)``, first on idle cores, then while a
busy-loop process pinned to one core (``os.sched_setaffinity`` in a spinning subprocess) competes
with it, as on a shared machine, a laptop or a Ray worker next to another one.  The table gives the
four rates (M items/s: states, tokens or rows per second) and the ratios 2T/1T.  The one-thread and
two-thread calls alternate within each measurement (A B C, B C A, C A B, ...), so a ratio is taken
under the same conditions even on a machine with other load; each rate is the median over the
rounds.

The kernels claim small chunks of rows from a shared counter (dynamic schedule), so a thread
slowed by another process takes fewer chunks; but a call still joins its threads, and a thread
waiting for a busy core makes the call wait.  So the public functions use only as many threads as
there are cores other processes leave free (``fastlmrl/_free_cores.py``): two threads should
never be slower than one (ratio ~1.0 under load), and keep their speed-up on idle cores (~1.6-2.0).
The ``fixed`` columns give 2T/1T with exactly two threads (no cap: the kernels' own scheduling), in
the same alternating rounds.  Results are bit-identical at every thread count (checked here too,
once per kernel).

Not a pytest-benchmark module (it needs the process-level setup of the busy core); pytest collects
nothing from it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import fastlmrl  # noqa: E402
from fastlmrl import _free_cores  # noqa: E402

ADAPTIVE = _free_cores.enabled

SPIN = "import os, sys\nos.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True:\n    pass\n"


def _cases():
    """name -> (items per call, size label, call())."""
    rng = np.random.default_rng(0)
    cases = {}

    q = rng.normal(size=(1024, 16))
    states = rng.integers(0, 1024, size=1_000_000)
    cases["greedy"] = (states.size, "1024x16, 1M states", lambda: fastlmrl.greedy(q, states))
    cases["epsilon_greedy"] = (
        states.size,
        "1024x16, 1M states",
        lambda: fastlmrl.epsilon_greedy(q, states, 0.1, 7),
    )
    states_b = states[:262_144]
    cases["boltzmann"] = (
        states_b.size,
        "1024x16, 256k states",
        lambda: fastlmrl.boltzmann(q, states_b, 0.5, 7),
    )

    n, v = 65536, 64
    logits = rng.normal(size=(n, v)).astype(np.float32)
    tokens = rng.integers(0, v, size=n)
    old = (rng.normal(size=n) * 0.1 - 4.0).astype(np.float32)
    adv = rng.normal(size=n).astype(np.float32)
    grad = np.empty_like(logits)
    label = "65536x64 f32"
    cases["token_log_probs"] = (n, label, lambda: fastlmrl.token_log_probs(logits, tokens))
    cases["logsumexp"] = (n, label, lambda: fastlmrl.logsumexp(logits))
    cases["entropy"] = (n, label, lambda: fastlmrl.entropy(logits))
    cases["log_softmax"] = (n, label, lambda: fastlmrl.log_softmax(logits, out=grad))
    cases["log_prob_grad"] = (n, label, lambda: fastlmrl.log_prob_grad(logits, tokens, out=grad))
    cases["ppo_loss"] = (n, label, lambda: fastlmrl.ppo_loss(logits, tokens, old, adv, out=grad))
    cases["reinforce_loss"] = (
        n,
        label,
        lambda: fastlmrl.reinforce_loss(logits, tokens, adv, out=grad),
    )
    cases["kl_penalty_loss"] = (
        n,
        label,
        lambda: fastlmrl.kl_penalty_loss(logits, tokens, old, out=grad),
    )
    cases["a2c_loss"] = (
        n,
        label,
        lambda: fastlmrl.a2c_loss(logits, tokens, adv, old, adv, out=grad),
    )

    ns, vs = 256, 50257
    big = rng.normal(size=(ns, vs)).astype(np.float32)
    cases["sample_tokens"] = (ns, "256x50257 f32", lambda: fastlmrl.sample_tokens(big, 7))
    cases["sample_tokens_top_p"] = (
        ns,
        "256x50257 f32 T0.7 k50 p0.9",
        lambda: fastlmrl.sample_tokens(big, 7, temperature=0.7, top_k=50, top_p=0.9),
    )
    return cases


def _bits(result):
    """Every array / float of a result, as bytes (for the thread-count comparison)."""
    if isinstance(result, np.ndarray):
        return [result.tobytes()]
    if isinstance(result, tuple):
        return [b for x in result for b in _bits(x)]
    return [np.float64(result).tobytes()]


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# (threads, capped by the free cores): one thread, two as the public API runs them, two exactly
MODES = ((1, True), (2, True), (2, False))


def _measure(fn, items, seconds):
    """Rates in M items/s of the MODES: calls alternating A B C, B C A, C A B, ..., medians of
    the rounds."""
    times = {m: [] for m in MODES}
    end = time.perf_counter() + seconds
    rounds = 0
    try:
        while rounds < 6 or time.perf_counter() < end:
            # the order rotates every round: on a loaded machine a call's position after the
            # others decides whether its thread still has its scheduler time slice
            order = MODES[rounds % len(MODES) :] + MODES[: rounds % len(MODES)]
            for threads, capped in order:
                fastlmrl.set_num_threads(threads)
                _free_cores.enabled = capped and ADAPTIVE
                times[threads, capped].append(_timed(fn))
            rounds += 1
    finally:
        _free_cores.enabled = ADAPTIVE
    return tuple(items / statistics.median(times[m]) / 1e6 for m in MODES)


def _busy_core():
    return sorted(os.sched_getaffinity(0))[-1]


def run(backends, kernels, seconds):
    cases = _cases()
    names = [k for k in cases if not kernels or k in kernels]
    rows = {}
    for backend in backends:
        with fastlmrl.use_backend(backend):
            for name in names:  # compile / warm up; bit-identical results at 1 and 2 threads
                items, label, fn = cases[name]
                fastlmrl.set_num_threads(1)
                one = _bits(fn())
                fastlmrl.set_num_threads(2)
                two = _bits(fn())
                if one != two:
                    raise AssertionError(
                        f"{backend} {name}: results differ between 1 and 2 threads"
                    )
    for phase in ("idle", "busy"):
        spinner = None
        if phase == "busy":
            spinner = subprocess.Popen([sys.executable, "-c", SPIN, str(_busy_core())])
            time.sleep(0.5)
        try:
            for backend in backends:
                with fastlmrl.use_backend(backend):
                    for name in names:
                        items, label, fn = cases[name]
                        rows.setdefault((name, backend, label), {})[phase] = _measure(
                            fn, items, seconds
                        )
                        print(".", end="", file=sys.stderr, flush=True)
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()
    print(file=sys.stderr)
    fastlmrl.set_num_threads(None)
    head = (
        f"{'kernel':<20} {'backend':<7} {'size':<28} {'1T idle':>8} {'2T idle':>8} "
        f"{'1T busy':>8} {'2T busy':>8} {'2T/1T idle':>10} {'2T/1T busy':>10} "
        f"{'fixed idle':>10} {'fixed busy':>10}"
    )
    cap = "capped by the free cores" if ADAPTIVE else "FASTLMRL_ADAPTIVE_THREADS=0: not capped"
    print(
        f"M items/s; busy = a spinning process pinned to core {_busy_core()} of "
        f"{sorted(os.sched_getaffinity(0))}; medians over >= 6 rotating rounds; 2T = two "
        f"threads as the public API runs them ({cap}); fixed = 2T/1T with exactly two threads "
        "(the kernels' scheduling alone)"
    )
    print(head)
    print("-" * len(head))
    for (name, backend, label), r in rows.items():
        (i1, i2, i2f), (b1, b2, b2f) = r["idle"], r["busy"]
        print(
            f"{name:<20} {backend:<7} {label:<28} {i1:8.3g} {i2:8.3g} {b1:8.3g} {b2:8.3g} "
            f"{i2 / i1:10.2f} {b2 / b1:10.2f} {i2f / i1:10.2f} {b2f / b1:10.2f}"
        )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default="numba,cython")
    p.add_argument("--kernels", default="", help="comma-separated subset (default: all)")
    p.add_argument("--seconds", type=float, default=0.4, help="time per rate (at least 6 rounds)")
    a = p.parse_args(argv)
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("bench_threads needs at least two cores")
    # two cores for this process (before any worker thread exists: they inherit it); the busy
    # phase spins on the second
    os.sched_setaffinity(0, cores[:2])
    run(a.backends.split(","), [k for k in a.kernels.split(",") if k], a.seconds)


if __name__ == "__main__":
    main()
