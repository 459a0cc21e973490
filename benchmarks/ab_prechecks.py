"""Old tree vs new tree, one raw kernel at a time: what the robustness pre-passes cost.

The machine these numbers come from is shared and loaded, so only ratios measured in one run mean
anything: each round runs the base tree's kernel and the new tree's kernel in two fresh
subprocesses, one after the other (the order alternates), and each child times ``--reps`` repeats
of one call after a warm-up, in thread CPU time (on two cores shared by a dozen processes the wall
time of a 3 ms call varied 3-30 ms with the time the thread waited for a core).  Reported per
case: the median over rounds of each tree's best time, their ratio (new / base), and whether both
trees wrote bit-identical outputs.  The pre-passes came with 996e717 (Adam's v check, MC visit
counts), so the base is its parent:

    git worktree add --detach /tmp/base 996e717^
    (cd /tmp/base && FASTLMRL_CYTHON_ONLY=optimizers,monte_carlo \
        python setup.py build_ext --inplace)
    python benchmarks/ab_prechecks.py --base /tmp/base --new . [--cases adam,mc] [--rounds 7]

Cases: ``adam`` / ``sgd`` at the sizes of ``bench_optimizers.py`` (float32 tables, V = 50257 with
64 random rows, V = 64 with 4096 random rows, V = 52 with 300 sorted rows) and ``mc`` (Monte Carlo
control, sample average with counts, first and every visit, the sizes of
``bench_monte_carlo.py``), each for numba and cython.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np

OPT_CASES = [((4096, 50257), 64, False), ((65536, 64), 4096, False), ((2704, 52), 300, True)]
MC_SIZES = [(1024, 16), (65536, 64)]
MC_STEPS = 1_000_000
EPISODE = 32


def _optimizer_args(kind, size, n, sorted_rows):
    rng = np.random.default_rng(0)
    if sorted_rows:
        rows = np.sort(rng.choice(size[0], n, replace=False))
        order = np.empty(0, np.int64)
    else:
        rows = rng.integers(0, size[0], n)
        order = np.argsort(rows, kind="stable").astype(np.int64)
    grads = rng.standard_normal((n, size[1]), dtype=np.float32)
    table = np.random.default_rng(1).random(size, dtype=np.float32) - np.float32(0.5)
    acc = np.empty(size[1])
    if kind == "sgd":
        return (table, rows, grads, order, 1e-3, False, acc), (table,)
    m = np.zeros(size, np.float32)
    v = np.zeros(size, np.float32)
    return (
        (table, rows, grads, order, m, v, np.int64(10), 1e-3, 0.9, 0.999, 1e-8, False, acc),
        (table, m, v),
    )


def _mc_args(size, first_visit):
    rng = np.random.default_rng(0)
    offsets = np.arange(0, MC_STEPS + 1, EPISODE, dtype=np.int64)
    states = rng.integers(0, size[0], MC_STEPS)
    actions = rng.integers(0, size[1], MC_STEPS)
    rewards = rng.standard_normal(MC_STEPS)
    q = np.random.default_rng(1).standard_normal(size)
    counts = np.zeros(size, np.int64)
    h = 64 if first_visit else 0
    keys, first = np.empty(h, np.int64), np.empty(h, np.int64)
    out = np.empty(MC_STEPS)
    return (
        (q, states, actions, rewards, offsets, 0.99, first_visit, 0.0, counts, keys, first, out),
        (q, counts, out),
    )


def cases():
    for backend in ("numba", "cython"):
        for kind in ("adam", "sgd"):
            for size, n, sorted_rows in OPT_CASES:
                yield f"{kind} {backend} S{size[0]}xV{size[1]}-{'U' if sorted_rows else 'N'}{n}"
        for size in MC_SIZES:
            for fv in ("first", "every"):
                yield f"mc {backend} S{size[0]}xV{size[1]} {fv}-visit"


def child(root, case, reps):
    sys.path.insert(0, root)
    import importlib

    kind, backend, size_s = case.split()[:3]
    s, rest = size_s[1:].split("x")
    size = (int(s), int(rest[1:].split("-")[0]))
    if backend == "cython":  # the topic's extension alone (the base tree builds just these)
        import types

        import fastlmrl

        package = types.ModuleType("fastlmrl._cython")
        package.__path__ = [os.path.join(root, "fastlmrl", "_cython")]
        sys.modules["fastlmrl._cython"] = package
        fastlmrl._cython = package
    module = importlib.import_module(
        f"fastlmrl._{backend}.{'monte_carlo' if kind == 'mc' else 'optimizers'}"
    )
    assert module.__file__.startswith(root), module.__file__
    if kind == "mc":
        fn = module.mc_control_update
        args, outputs = _mc_args(size, case.endswith("first-visit"))
    else:
        n = int(size_s.split("-")[1][1:])
        fn = module.adam_step if kind == "adam" else module.sgd_step
        args, outputs = _optimizer_args(kind, size, n, size_s.split("-")[1][0] == "U")
    assert fn(*args) == 0  # compile / page in
    digest = hashlib.sha256()
    for o in outputs:
        digest.update(o.tobytes())
    times = []
    for _ in range(reps):
        t0 = time.thread_time()  # CPU time: a descheduled thread (2 loaded cores) is not counted
        fn(*args)
        times.append(time.thread_time() - t0)
    print(json.dumps({"best": min(times), "sha": digest.hexdigest()}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--new", required=True)
    p.add_argument("--cases", default="adam,sgd,mc", help="kinds (adam, sgd, mc) or backends")
    p.add_argument("--match", default="", help="only cases containing this text")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reps", type=int, default=15)
    a = p.parse_args()
    keys = set(a.cases.split(","))
    for case in cases():
        kind, backend = case.split()[:2]
        if not ({kind, backend} & keys) or a.match not in case:
            continue
        best = {"base": [], "new": []}
        shas = {}
        for r in range(a.rounds):
            order = ("base", "new") if r % 2 == 0 else ("new", "base")
            for tree in order:
                root = os.path.abspath(getattr(a, tree))
                out = subprocess.run(
                    [sys.executable, __file__, "--child", root, case, str(a.reps)],
                    capture_output=True,
                    text=True,
                    cwd=root,
                )
                if out.returncode:
                    sys.exit(f"{tree} {case}: {out.stderr[-800:]}")
                res = json.loads(out.stdout.strip().splitlines()[-1])
                best[tree].append(res["best"])
                shas[tree] = res["sha"]
        b, n = float(np.median(best["base"])), float(np.median(best["new"]))
        same = "bit-identical" if shas["base"] == shas["new"] else "OUTPUTS DIFFER"
        print(
            f"{case:40s} base {b * 1e3:9.3f} ms  new {n * 1e3:9.3f} ms  new/base {n / b:5.3f}"
            f"  {same}",
            flush=True,
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
