"""Aliasing probe: every recorded raw kernel call (tests/fuzz recorder: the arrays the public API
hands the kernels) re-run with each array the kernel writes sharing memory with each other array
argument.  Run standalone (each backend x kernel in its own subprocess so that a crash is
attributed):

    python tests/alias_probe.py [--topics a,b] [--backends numba,cython] [--json out.json]

The calls are recorded afresh at each run (``--corpus FILE`` keeps them in FILE and reuses it):
the recorder sees the kernels of every topic, bound ones (``fastlmrl._backend.bind``) included.

The written arrays are those a plain call changes and those the topic's contract declares
written (``Arg(written=True)``).  Outcomes per (kernel, written, read): ``refused`` (status 8),
``same`` (the aliased call gives the result of the same call on separate copies of the same
values), ``differs``, ``crash`` or ``hang`` (the child made no progress for ``--timeout``
seconds; the probe goes on with the next case).  A summary per backend and outcome ends the output.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from fastlmrl._status import Status
from fastlmrl._topics import TOPICS as _TOPICS

HERE = os.path.dirname(os.path.abspath(__file__))
TOPICS = _TOPICS  # every kernel topic (fastlmrl._topics)


def record(path):
    sys.path.insert(0, HERE)
    from fuzz.cases import record_kernel_calls

    rec = record_kernel_calls(per_kernel=1)
    with open(path, "wb") as f:
        pickle.dump(rec, f)


def _status(result):
    return int(result[0] if isinstance(result, tuple) else result)


def _arrays(args):
    return [i for i, a in enumerate(args) if isinstance(a, np.ndarray) and a.size > 0]


def declared_written(topic, kernel):
    """The arguments ``kernel`` writes by its topic's contract (``Arg(written=True)``: outputs,
    state and scratch); () for a topic without a contract."""
    import importlib

    contract = getattr(importlib.import_module(f"fastlmrl.{topic}"), "CONTRACT", None)
    if contract is None or kernel not in contract.names:
        return ()
    return contract[kernel].written


def alias_cases(fn, args, params=(), declared=()):
    """[(written index, read index)] where the written arrays are those a plain call changes and
    those the contract declares written (``declared``, names of ``params``: scratch a backend
    may leave alone)."""
    trial = copy.deepcopy(args)
    fn(*trial)
    idx = _arrays(args)
    written = [
        i
        for i in idx
        if not np.array_equal(trial[i], args[i], equal_nan=True)
        or trial[i].dtype != args[i].dtype
        or params[i] in declared
    ]
    return [(w, r) for w in written for r in idx if r != w]


def build(args, w, r):
    """(aliased args, separate args) with the same initial values."""
    W, R = args[w], args[r]
    if W.nbytes >= R.nbytes:
        buf = np.ascontiguousarray(W).copy()
        view = buf.reshape(-1).view(np.uint8)[: R.nbytes].view(R.dtype).reshape(R.shape)
        view[...] = R
        aliased = list(copy.deepcopy(args))
        aliased[w], aliased[r] = buf, view
        separate = list(copy.deepcopy(args))
        separate[w], separate[r] = buf.copy(), view.copy()
    else:
        buf = np.ascontiguousarray(R).copy()
        view = buf.reshape(-1).view(np.uint8)[: W.nbytes].view(W.dtype).reshape(W.shape)
        view[...] = W
        aliased = list(copy.deepcopy(args))
        aliased[w], aliased[r] = view, buf
        separate = list(copy.deepcopy(args))
        separate[w], separate[r] = view.copy(), buf.copy()
    return aliased, separate


def child(backend, kernel, corpus, start):
    from fastlmrl import _backend

    with open(corpus, "rb") as f:
        rec = pickle.load(f)
    topic, params, args = rec[kernel][0]
    fn = getattr(_backend.backend_module(backend), kernel)
    cases = alias_cases(fn, args, params, declared_written(topic, kernel))
    for k, (w, r) in enumerate(cases):
        if k < start:
            continue
        print(
            json.dumps({"k": k, "n": len(cases), "w": params[w], "r": params[r], "started": True}),
            flush=True,
        )
        aliased, separate = build(args, w, r)
        try:
            sa = _status(fn(*aliased))
        except Exception as e:  # noqa: BLE001
            sa = f"{type(e).__name__}: {e}"[:100]
        try:
            ss = _status(fn(*separate))
        except Exception as e:  # noqa: BLE001
            ss = f"{type(e).__name__}: {e}"[:100]
        if sa == Status.OVERLAPPING_ARRAYS:
            out = "refused"
        elif sa != ss:
            out = f"differs (status {sa} vs {ss})"
        else:
            same = all(
                np.array_equal(aliased[i], separate[i], equal_nan=True)
                for i in _arrays(args)
                if i != r or args[w].nbytes < args[r].nbytes
            )
            out = "same" if same else "differs (values)"
        print(
            json.dumps(
                {
                    "k": k,
                    "n": len(cases),
                    "w": params[w],
                    "r": params[r],
                    "status": [sa, ss],
                    "outcome": out,
                }
            ),
            flush=True,
        )
    print(json.dumps({"done": True, "n": len(cases)}), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--topics", default=",".join(TOPICS))
    p.add_argument("--backends", default="python,numba,cython")
    p.add_argument("--json")
    p.add_argument(
        "--corpus",
        help="pickle of recorded calls: read if it exists, else recorded into it (default: a "
        "fresh recording in a temporary folder, so the calls are those of this tree)",
    )
    p.add_argument(
        "--kernels",
        help="only these kernels (comma-separated; default: every kernel of the topics)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds a child may run (a hang is the case it had started)",
    )
    a = p.parse_args()
    scratch = None if a.corpus else tempfile.mkdtemp(prefix="alias_probe_")
    try:
        corpus = a.corpus or os.path.join(scratch, "corpus.pickle")
        if not os.path.exists(corpus):
            record(corpus)
        probe(a, corpus)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def probe(a, corpus):
    from fastlmrl import _backend

    with open(corpus, "rb") as f:
        rec = pickle.load(f)
    topics = a.topics.split(",")
    python = _backend.backend_module("python")
    unrecorded = sorted(
        n
        for n in python.__all__
        if getattr(python, n).__module__.rsplit(".", 1)[-1] in topics and n not in rec
    )
    print(f"corpus {corpus}: {len(rec)} kernels recorded", flush=True)
    if unrecorded:
        print("not recorded (no public spec reaches them):", ", ".join(unrecorded), flush=True)
    results = []
    for kernel in sorted(rec):
        if rec[kernel][0][0] not in topics or (a.kernels and kernel not in a.kernels.split(",")):
            continue
        for backend in a.backends.split(","):
            start = 0
            while True:
                hung = False
                try:
                    proc = subprocess.run(
                        [sys.executable, __file__, "--child", backend, kernel, corpus, str(start)],
                        capture_output=True,
                        text=True,
                        timeout=a.timeout,
                    )
                    stdout, stderr, code = proc.stdout, proc.stderr, proc.returncode
                except subprocess.TimeoutExpired as e:
                    hung = True
                    stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout or ""
                    stderr, code = "timeout", None
                lines = [json.loads(x) for x in stdout.splitlines() if x.startswith("{")]
                last = None
                for x in lines:
                    if "outcome" in x:
                        results.append(dict(backend=backend, kernel=kernel, **x))
                        if x["outcome"] != "same":
                            print(backend, kernel, x["w"], "<-", x["r"], x["outcome"], flush=True)
                    last = x
                if last is not None and last.get("done"):
                    break
                if last is not None and last.get("started"):
                    out = f"hang (> {a.timeout:g} s)" if hung else f"crash (exit {code})"
                    results.append(
                        dict(backend=backend, kernel=kernel, w=last["w"], r=last["r"], outcome=out)
                    )
                    print(backend, kernel, last["w"], "<-", last["r"], out, flush=True)
                    start = last["k"] + 1
                    continue
                print(backend, kernel, "child failed:", stderr[-500:], flush=True)
                results.append(
                    dict(backend=backend, kernel=kernel, w=None, r=None, outcome="child failed")
                )
                break
    summary = {}
    for x in results:
        key = (x["backend"], x["outcome"].split(" (")[0])
        summary[key] = summary.get(key, 0) + 1
    print("summary (backend, outcome, cases):")
    for (backend, outcome), n in sorted(summary.items()):
        print(f"  {backend:7s} {outcome:13s} {n}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        main()
