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

``--wrappers COMMIT`` instead compares the public wrappers (``fastlmrl.optimizers``,
``fastlmrl.monte_carlo``) of a past commit with the current ones, in this process, on the current
kernels and the same arrays, interleaved (what the wrapper around a small batch costs; e.g. the
kernel-contract migration, issue 14: ``--wrappers 0b987ab``).  The old module's source comes from
``git show COMMIT:fastlmrl/<topic>.py``; it must still run against the current kernels.
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


def _old_module(commit, topic):
    """``fastlmrl/<topic>.py`` of ``commit``, imported as ``fastlmrl._old_<topic>``."""
    import importlib.util

    source = subprocess.run(
        ["git", "show", f"{commit}:fastlmrl/{topic}.py"],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.abspath(__file__)),
    ).stdout
    spec = importlib.util.spec_from_loader(f"fastlmrl._old_{topic}", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "fastlmrl"
    exec(compile(source, f"{commit}:fastlmrl/{topic}.py", "exec"), module.__dict__)
    return module


def _wrapper_cases(opt, mc, arrays):
    a = arrays
    return {
        "sgd_step 4 sorted rows": lambda: opt.sgd_step(a["table"], a["rows"], a["grads"], 1e-3),
        "sgd_step 4 unsorted rows": lambda: opt.sgd_step(
            a["table"], a["unsorted"], a["grads"], 1e-3
        ),
        "adam_step 4 sorted rows": lambda: opt.adam_step(
            a["table"], a["rows"], a["grads"], a["m"], a["v"], 3, 1e-3
        ),
        "adam_step 1024 rows V=64": lambda: opt.adam_step(
            a["big"], a["big_rows"], a["big_grads"], a["big_m"], a["big_v"], 3, 1e-3
        ),
        "episode_returns T=16": lambda: mc.episode_returns(a["rewards"], a["offsets"], 0.9),
        "mc_control_update T=16": lambda: mc.mc_control_update(
            a["q"], a["states"], a["actions"], a["rewards"], a["offsets"], 0.9, counts=a["counts"]
        ),
    }


def wrappers(commit, rounds, calls=400):
    """Old vs current public wrappers: best per-call time over ``rounds`` interleaved rounds."""
    import fastlmrl
    import fastlmrl.monte_carlo as new_mc
    import fastlmrl.optimizers as new_opt

    old_opt, old_mc = _old_module(commit, "optimizers"), _old_module(commit, "monte_carlo")
    rng = np.random.default_rng(0)
    table = rng.standard_normal((64, 8))
    big = rng.standard_normal((4096, 64))
    arrays = dict(
        table=table,
        m=np.zeros_like(table),
        v=np.zeros_like(table),
        rows=np.array([1, 5, 9, 12]),
        unsorted=np.array([9, 1, 5, 1]),
        grads=rng.standard_normal((4, 8)) * 1e-3,
        big=big,
        big_m=np.zeros_like(big),
        big_v=np.zeros_like(big),
        big_rows=rng.integers(0, 4096, 1024),
        big_grads=rng.standard_normal((1024, 64)) * 1e-3,
        rewards=rng.standard_normal(16),
        offsets=np.array([0, 8, 16]),
        q=np.zeros((16, 4)),
        counts=np.zeros((16, 4), np.int64),
        states=rng.integers(0, 16, 16),
        actions=rng.integers(0, 4, 16),
    )
    for backend in ("cython", "numba"):
        fastlmrl.set_backend(backend)
        impls = {
            "old": _wrapper_cases(old_opt, old_mc, arrays),
            "new": _wrapper_cases(new_opt, new_mc, arrays),
        }
        best = {}
        for r in range(rounds):
            for name in impls["old"]:
                for tree in ("old", "new") if r % 2 == 0 else ("new", "old"):
                    call = impls[tree][name]
                    call()  # compile / warm
                    t0 = time.perf_counter()
                    for _ in range(calls):
                        call()
                    per_call = (time.perf_counter() - t0) / calls
                    best[tree, name] = min(best.get((tree, name), per_call), per_call)
        for name in impls["old"]:
            o, n = best["old", name], best["new", name]
            print(
                f"{backend:7s} {name:26s} {commit} {o * 1e6:8.2f} us  now {n * 1e6:8.2f} us  "
                f"now/{commit} {n / o:5.3f}",
                flush=True,
            )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base")
    p.add_argument("--new")
    p.add_argument("--wrappers", metavar="COMMIT", help="compare the public wrappers instead")
    p.add_argument("--cases", default="adam,sgd,mc", help="kinds (adam, sgd, mc) or backends")
    p.add_argument("--match", default="", help="only cases containing this text")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reps", type=int, default=15)
    a = p.parse_args()
    if a.wrappers:
        wrappers(a.wrappers, a.rounds)
        return
    if not (a.base and a.new):
        p.error("--base and --new are required (or --wrappers COMMIT)")
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
