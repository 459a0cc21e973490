"""Compare the kernel benchmarks of two checkouts in alternating rounds (before/after a change).

    python benchmarks/ab_trees.py OLD_CHECKOUT [--new NEW_CHECKOUT] [--rounds 2] \
        [--files bench_td_learning.py,bench_selection.py] [-k "not python and not 50257"]

Each round runs the same pytest-benchmark files once in each checkout (order alternating between
rounds, each in a fresh process with that checkout first on ``sys.path``, its own Cython
extensions and its own Numba cache entries), and records every benchmark's median.  The table
lists, per benchmark present in both, the best median of each tree over the rounds and the ratio
new / old of the time per item (below 1: the new tree is faster), then the geometric mean ratio
of each file.  The checkouts need their Cython extensions built (``python setup.py build_ext
--inplace`` in each).  On a noisy machine only ratios of one run mean anything; run it quiet.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

#: The batched kernel benchmarks (one file per topic); torch, trainers, sweeps and pretraining
#: have their own comparisons.
KERNEL_FILES = (
    "bench_td_learning.py",
    "bench_selection.py",
    "bench_monte_carlo.py",
    "bench_dynamic_programming.py",
    "bench_argmax_tree.py",
    "bench_log_probs.py",
    "bench_policy_losses.py",
    "bench_tabular_losses.py",
    "bench_advantages.py",
    "bench_group_advantages.py",
    "bench_kl_divergence.py",
    "bench_optimizers.py",
    "bench_environments.py",
    "bench_keyword_scores.py",
    "bench_sampling.py",
)


def run_tree(tree: str, files: list[str], select: str, out: str) -> dict[str, float]:
    """{benchmark full name: median seconds (per item)} of one pytest-benchmark run in ``tree``."""
    paths = [os.path.join("benchmarks", f) for f in files]
    paths = [p for p in paths if os.path.exists(os.path.join(tree, p))]
    command = [
        sys.executable,
        "-m",
        "pytest",
        *paths,
        "-q",
        "-p",
        "no:cacheprovider",
        "--benchmark-enable",
        "--benchmark-only",
        "--benchmark-min-rounds=3",
        "--benchmark-max-time=0.1",
        f"--benchmark-json={out}",
    ]
    if select:
        command += ["-k", select]
    env = dict(os.environ, PYTHONPATH=tree)
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    if not os.path.exists(out):
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"benchmarks failed in {tree} (exit {done.returncode})")
    with open(out) as handle:
        data = json.load(handle)
    return {b["fullname"]: b["stats"]["median"] for b in data["benchmarks"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", help="checkout to compare against (Cython extensions built)")
    parser.add_argument("--new", default=os.path.dirname(HERE), help="default: this checkout")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--files", default=",".join(KERNEL_FILES))
    parser.add_argument(
        "-k",
        dest="select",
        default="not python and not 50257",
        help="pytest -k expression (default: the compiled backends; the (4096, 50257) "
        "cases take minutes per file)",
    )
    args = parser.parse_args(argv)
    files = [f for f in args.files.split(",") if f]
    trees = {"old": os.path.abspath(args.old), "new": os.path.abspath(args.new)}
    best: dict[str, dict[str, float]] = {"old": {}, "new": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = ("old", "new") if r % 2 == 0 else ("new", "old")
            for which in order:
                found = run_tree(trees[which], files, args.select, f"{tmp}/{which}{r}.json")
                for name, median in found.items():
                    prev = best[which].get(name)
                    best[which][name] = median if prev is None else min(prev, median)
                print(f"round {r + 1}: {which} done ({len(found)} benchmarks)", file=sys.stderr)
    common = sorted(set(best["old"]) & set(best["new"]))
    by_file: dict[str, list[float]] = {}
    print(f"{'benchmark':<100} {'new/old':>8}")
    for name in common:
        ratio = best["new"][name] / best["old"][name]
        by_file.setdefault(name.split("::")[0], []).append(ratio)
        print(f"{name:<100} {ratio:8.3f}")
    print()
    print(f"{'file':<50} {'n':>4} {'geomean new/old':>16} {'min':>7} {'max':>7}")
    for file, ratios in sorted(by_file.items()):
        geo = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
        print(f"{file:<50} {len(ratios):4d} {geo:16.3f} {min(ratios):7.3f} {max(ratios):7.3f}")
    only = sorted(set(best["old"]) ^ set(best["new"]))
    if only:
        print(f"\n{len(only)} benchmarks ran in one tree only (renamed or new)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
