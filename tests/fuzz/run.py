"""Command line of the fuzz campaign.

python -m tests.fuzz                       # the CI subset, all backends, table of counts
python -m tests.fuzz --full --out report.json --findings DIR
python -m tests.fuzz --root /path/to/other/checkout --full   # fuzz another tree's fastlmrl
python -m tests.fuzz --case 'kernel/numba/greedy_tree/0/q/short1'   # one case, verbose
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a script: python tests/fuzz/run.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "fuzz"  # noqa: A001

from .campaign import (  # noqa: E402
    bad_results,
    case_id,
    enumerate_cases,
    fingerprint,
    format_table,
    run_cases,
    select_cases,
    write_findings,
)


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m tests.fuzz",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--full", action="store_true", help="every case (default: the CI subset)")
    p.add_argument("--root", help="checkout whose fastlmrl is fuzzed (default: the installed one)")
    p.add_argument("--backends", default="python,numba,cython")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per case before 'hang'")
    p.add_argument("--kinds", default="api,kernel", help="api, kernel or both")
    p.add_argument("--only", default="", help="comma-separated targets to run (default all)")
    p.add_argument("--out", help="write every case's result to this JSON file")
    p.add_argument("--findings", help="write per-topic markdown findings to this folder")
    p.add_argument("--label", default="", help="label for the findings files")
    p.add_argument("--known", help="write the failing cases as a KNOWN_FAILURES dict to this file")
    p.add_argument("--case", help="run one case by its id and print the result")
    p.add_argument("--quiet", action="store_true")
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the cases already in OUT.partial (an interrupted run)",
    )
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("BEFORE.json", "AFTER.json"),
        help="print the tables of two --out reports over the cases both ran",
    )
    a = p.parse_args(argv)
    if a.compare:
        runs = []
        for path in a.compare:
            with open(path) as f:
                runs.append(json.load(f))
        common = set.intersection(*({case_id(r) for r in run["results"]} for run in runs))
        for path, run in zip(a.compare, runs):
            kept = [r for r in run["results"] if case_id(r) in common]
            print(
                f"{path}: {run['fastlmrl']}, {run['mode']} mode, {len(kept)} common cases "
                f"(of {len(run['results'])})"
            )
            print(format_table(kept))
        return
    backends = tuple(b for b in a.backends.split(",") if b)
    log = open(os.devnull, "w") if not a.case else None
    t0 = time.time()
    tmp = tempfile.mkdtemp(prefix="fastlmrl-fuzz-run-")
    corpus = os.path.join(tmp, "kernel_calls.pickle")
    listing = enumerate_cases(a.root, backends, log=log, corpus=corpus)
    cases = listing["public"] + listing["kernel"]
    if a.case:
        chosen = [c for c in cases if case_id(c) == a.case]
        if not chosen:
            sys.exit(f"no case {a.case!r}")
        r = run_cases(chosen, a.root, timeout=a.timeout, log=None, corpus=corpus)[0]
        print(json.dumps(r, indent=1))
        return
    print(f"fastlmrl under test: {listing['fastlmrl']}")
    kinds = set(a.kinds.split(","))
    only = set(filter(None, a.only.split(",")))
    cases = [
        c
        for c in select_cases(cases, "full" if a.full else "ci")
        if c["kind"] in kinds and (not only or c["target"] in only)
    ]
    print(f"{len(cases)} cases ({'full' if a.full else 'ci'} mode), {a.jobs} worker(s)")

    def progress(done, total, r):
        if not a.quiet and (done % 500 == 0 or done == total):
            print(f"  {done}/{total} cases, {time.time() - t0:.0f} s", flush=True)

    done = {}
    partial = a.out + ".partial" if a.out else None
    if a.resume and partial and os.path.exists(partial):
        with open(partial) as f:
            for line in f:
                r = json.loads(line)
                done[case_id(r)] = r
        print(f"resuming: {len(done)} cases already done")
    todo = [c for c in cases if case_id(c) not in done]
    fresh = run_cases(
        todo,
        a.root,
        jobs=a.jobs,
        timeout=a.timeout,
        log=log,
        progress=progress,
        corpus=corpus,
        partial=partial,
    )
    fresh = {case_id(r): r for r in fresh}
    results = [done.get(case_id(c)) or fresh[case_id(c)] for c in cases]
    shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.time() - t0
    print(format_table(results))
    bad = bad_results(results)
    print(
        f"{len(results)} cases in {elapsed:.0f} s; {len(bad)} failing "
        f"(fingerprint {fingerprint(results):08x})"
    )
    if a.out:
        with open(a.out, "w") as f:
            json.dump(
                {
                    "fastlmrl": listing["fastlmrl"],
                    "mode": "full" if a.full else "ci",
                    "seconds": elapsed,
                    "results": results,
                },
                f,
            )
    if a.known:
        with open(a.known, "w") as f:
            f.write("KNOWN_FAILURES: dict[str, str] = {\n")
            for r, what in sorted(bad, key=lambda x: case_id(x[0])):
                reason = f"{what}: {r['detail']}"[:110].replace("\\", "/")
                f.write(f"    {case_id(r)!r}:\n        {reason!r},\n")
            f.write("}\n")
    if a.findings:
        cmd = "python -m tests.fuzz" + (f" --root {a.root}" if a.root else "")
        for path in write_findings(results, a.findings, a.label, cmd):
            print("wrote", path)


if __name__ == "__main__":
    main()
