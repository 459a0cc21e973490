"""The parent side of the fuzz campaign: worker processes, per-case time limits, crash
attribution, case selection and the report (counts per backend and outcome, findings)."""

from __future__ import annotations

import collections
import json
import os
import select
import subprocess
import sys
import threading
import time
import zlib

from .cases import NUMBA_COMPILES, is_type_level
from .harness import BAD, CRASH, HANG, OK, OUTCOMES

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
#: Mutations by which a public wrapper may hand a Numba kernel a new dtype, rank or layout.
RETYPES = {
    "readonly",
    "noncontig",
    "dtype_float",
    "dtype_int",
    "dtype_f16",
    "dtype_u64",
    "extra_dim",
    "zero_dim",
}
MEMORY_LIMIT = 6 * 2**30  # address space of a worker: a 2**31-sized allocation fails fast


def _limits():  # pragma: no cover - runs in the child
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


class WorkerProcess:
    """One worker; restarted after a crash or a hang."""

    def __init__(self, root=None, env=None, log=None, corpus=None):
        self.root = root
        self.env = dict(os.environ if env is None else env)
        if root:
            self.env["FASTLMRL_FUZZ_ROOT"] = root
        if corpus:
            self.env["FASTLMRL_FUZZ_CORPUS"] = corpus
        self.log = log
        self.proc = None
        self.fastlmrl_file = None
        self.used = set()

    def start(self):
        self.proc = subprocess.Popen(
            [sys.executable, WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log if self.log is not None else subprocess.DEVNULL,
            env=self.env,
            preexec_fn=_limits,
            text=True,
            bufsize=1,
        )
        self.used = set()
        ready = self._read(300)
        if ready is None or "ready" not in ready:
            raise RuntimeError(f"fuzz worker did not start (exit {self.proc.poll()})")
        self.fastlmrl_file = ready["ready"]

    def _read(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                line = self.proc.stdout.readline()
                if not line:
                    return {"died": True}
                return json.loads(line)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # only the worker this object started
        if self.proc is not None:
            self.proc.wait()
            for f in (self.proc.stdin, self.proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass
        self.proc = None

    def request(self, obj, timeout):
        """(reply, None) or (None, 'hang' | 'crash: <signal>')."""
        if self.proc is None:
            self.start()
        try:
            self.proc.stdin.write(json.dumps(obj) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        reply = self._read(timeout)
        if reply is None:
            self.stop()
            return None, HANG
        if reply.get("died"):
            code = self.proc.wait()
            self.stop()
            return None, f"{CRASH}: exit {code}" + (f" (signal {-code})" if code < 0 else "")
        return reply, None


def case_id(case) -> str:
    parts = [case["kind"], case["backend"], case["target"]]
    if case["kind"] == "kernel":
        parts.append(str(case["variant"]))
    return "/".join(parts + [case["arg"], case["mutation"]])


def enumerate_cases(root=None, backends=("python", "numba", "cython"), log=None, corpus=None):
    """Every case (``public`` and ``kernel`` lists of dicts); ``corpus``: a file where the
    recorded kernel calls are kept for the workers of :func:`run_cases`."""
    w = WorkerProcess(root, log=log, corpus=corpus)
    try:
        reply, err = w.request({"cmd": "enumerate", "backends": list(backends)}, 600)
    finally:
        w.stop()
    if reply is None:
        raise RuntimeError(f"enumeration failed: {err}")
    return reply


def select_cases(cases, mode: str, max_numba_compiles_per_target: int = 1):
    """The cases of a mode.

    ``full``: everything, except that for the numba backend at most
    ``max_numba_compiles_per_target`` mutations per target that make Numba compile a new
    specialisation (seconds each: for raw kernels every type-changing mutation, for the public
    API read-only and non-contiguous arrays, which the wrappers pass through) are run, chosen by
    the case seed.
    ``ci``: none of those numba cases, and a fixed sample of the rest (one public case in
    seven, one kernel case in twelve, chosen by the case seed, so every backend runs the same
    (target, argument, mutation) triples and outcomes can be compared across backends)."""
    out = []
    per_target = collections.Counter()
    for c in sorted(cases, key=lambda c: (c["kind"], c["target"], c["seed"], c["backend"])):
        compiles = c["backend"] == "numba" and (
            c["mutation"] in NUMBA_COMPILES
            if c["kind"] == "kernel"
            else c["mutation"] in ("readonly", "noncontig")
        )
        if mode == "ci":
            if compiles:
                continue
            if c["seed"] % (7 if c["kind"] == "api" else 12) != 0:
                continue
        if compiles:
            key = (c["kind"], c["target"])
            if per_target[key] >= max_numba_compiles_per_target:
                continue
            per_target[key] += 1
        out.append(c)
    return out


def run_cases(
    cases,
    root=None,
    jobs=1,
    timeout=10.0,
    compile_timeout=180.0,
    log=None,
    progress=None,
    corpus=None,
    partial=None,
):
    """Run ``cases`` on ``jobs`` workers; returns the cases with ``outcome``, ``detail``,
    ``seconds`` filled in (same order).  ``partial``: a file that gets one JSON line per
    finished case as the campaign goes."""
    results = [None] * len(cases)
    # each worker gets whole targets, so that its numba kernels are loaded once
    by_target = collections.defaultdict(list)
    for i, c in enumerate(cases):
        by_target[(c["backend"], c["target"])].append(i)
    groups = sorted(by_target.values(), key=len, reverse=True)
    queues = [[] for _ in range(jobs)]
    for g in groups:
        min(queues, key=len).extend(g)
    done = [0]
    lock = threading.Lock()

    def drive(indices):
        w = WorkerProcess(root, log=log, corpus=corpus)
        try:
            for i in indices:
                c = cases[i]
                first = (c["backend"], c["target"]) not in w.used
                slow = c["backend"] == "numba" and (
                    first
                    or c["kind"] == "kernel"
                    and c["mutation"] in NUMBA_COMPILES
                    or c["mutation"] in ("readonly", "noncontig")
                )
                limit = compile_timeout if slow else timeout
                t0 = time.monotonic()
                reply, err = w.request({"cmd": "run", "case": c}, limit)
                if (
                    err == HANG
                    and c["backend"] == "numba"
                    and c["kind"] == "api"
                    and c["mutation"] in RETYPES
                    and limit < compile_timeout
                ):
                    # Numba may be compiling a new specialisation (a public wrapper can pass a
                    # new dtype or layout): once more, with the compilation's time limit
                    limit = compile_timeout
                    reply, err = w.request({"cmd": "run", "case": c}, limit)
                r = dict(c)
                if reply is None:
                    r.update(
                        outcome=err.split(":")[0],
                        detail=err if err != HANG else f"no answer in {limit:.0f} s",
                        seconds=time.monotonic() - t0,
                    )
                else:
                    w.used.add((c["backend"], c["target"]))
                    r.update(
                        outcome=reply["outcome"], detail=reply["detail"], seconds=reply["seconds"]
                    )
                results[i] = r
                with lock:
                    done[0] += 1
                    if partial:
                        with open(partial, "a") as f:
                            f.write(json.dumps(r) + "\n")
                    if progress:
                        progress(done[0], len(cases), r)
        finally:
            w.stop()

    threads = [threading.Thread(target=drive, args=(q,)) for q in queues if q]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # A call that times out under numba but not under the python reference (the same
    # validation code and kernel semantics) is most likely Numba compiling (a new specialisation,
    # or a kernel whose source changed, which a loaded machine can stretch past ``timeout``): run
    # it once more in a fresh worker with the compilation's time limit.  A real hang still hangs.
    python_hangs = {
        case_id(r).replace("/python/", "/", 1)
        for r in results
        if r["backend"] == "python" and r["outcome"] == HANG
    }
    again = [
        i
        for i, r in enumerate(results)
        if r["backend"] == "numba"
        and r["outcome"] == HANG
        and case_id(r).replace("/numba/", "/", 1) not in python_hangs
        and "180" not in r["detail"]
    ]
    if again:
        w = WorkerProcess(root, log=log, corpus=corpus)
        try:
            for i in again:
                c = cases[i]
                t0 = time.monotonic()
                reply, err = w.request({"cmd": "run", "case": c}, compile_timeout)
                r = dict(c)
                if reply is None:
                    r.update(
                        outcome=err.split(":")[0],
                        seconds=time.monotonic() - t0,
                        detail=err
                        if err != HANG
                        else f"no answer in {timeout:.0f} s, nor in {compile_timeout:.0f} s",
                    )
                else:
                    r.update(
                        outcome=reply["outcome"], detail=reply["detail"], seconds=reply["seconds"]
                    )
                results[i] = r
                if partial:
                    with open(partial, "a") as f:
                        f.write(json.dumps(r) + "\n")
        finally:
            w.stop()
    return results


def disagreements(results):
    """Cases where a compiled backend accepts what the python reference rejects, or the other way
    round (same target, argument, mutation and mutated values): {case_id: python outcome}."""
    ref = {}
    for r in results:
        if r["backend"] == "python":
            ref[case_id(r).replace("/python/", "/", 1)] = r["outcome"]
    out = {}
    for r in results:
        if r["backend"] == "python":
            continue
        key = case_id(r).replace(f"/{r['backend']}/", "/", 1)
        if r["kind"] == "kernel" and is_type_level(r["mutation"]):
            continue  # the reference takes any sequence; compiled dispatchers refuse other types
        if (
            key in ref
            and (ref[key] == OK) != (r["outcome"] == OK)
            and r["outcome"] not in BAD
            and ref[key] not in BAD
        ):
            out[case_id(r)] = ref[key]
    return out


COLUMNS = OUTCOMES + ("setup-error", "disagree")


def table(results, kinds=("api", "kernel")):
    """counts[(kind, backend)][outcome] (+ 'disagree': outcome differs in acceptance from the
    python reference's on the same case)."""
    counts = collections.defaultdict(collections.Counter)
    dis = disagreements(results)
    for r in results:
        if r["kind"] not in kinds:
            continue
        counts[(r["kind"], r["backend"])][r["outcome"]] += 1
        counts[(r["kind"], r["backend"])]["total"] += 1
        if case_id(r) in dis:
            counts[(r["kind"], r["backend"])]["disagree"] += 1
    return counts


def format_table(results) -> str:
    counts = table(results)
    cols = [
        c for c in COLUMNS if c != "setup-error" or any(v["setup-error"] for v in counts.values())
    ]
    head = f"{'kind':7} {'backend':8} {'total':>6} " + " ".join(f"{c:>12}" for c in cols)
    lines = [head, "-" * len(head)]
    for kind, backend in sorted(
        counts, key=lambda k: (k[0], ("python", "numba", "cython").index(k[1]))
    ):
        row = counts[(kind, backend)]
        lines.append(
            f"{kind:7} {backend:8} {row['total']:>6} " + " ".join(f"{row[c]:>12}" for c in cols)
        )
    return "\n".join(lines)


def bad_results(results):
    dis = disagreements(results)
    out = []
    for r in results:
        if r["outcome"] in BAD or r["outcome"] == "setup-error":
            out.append((r, r["outcome"]))
        elif case_id(r) in dis:
            out.append((r, f"disagree (python: {dis[case_id(r)]}, here: {r['outcome']})"))
    return out


def write_findings(results, folder, label, command):
    """One markdown file per topic with every failing case and its one-line repro."""
    os.makedirs(folder, exist_ok=True)
    by_topic = collections.defaultdict(list)
    for r, what in bad_results(results):
        by_topic[r["topic"]].append((r, what))
    written = []
    for topic, rows in sorted(by_topic.items()):
        path = os.path.join(folder, f"{topic}.md")
        with open(path, "w") as f:
            f.write(f"# fuzz findings: {topic} ({label})\n\n")
            f.write(
                f"{len(rows)} failing cases.  Repro one case: `{command} --case 'ID'` "
                "(prints the outcome; kernel cases drive `fastlmrl._backend.backend_module("
                "backend).<kernel>` with the arrays the public API passes, one argument "
                "mutated).\n\n"
            )
            summary = collections.Counter(
                (r["kind"], r["target"], what.split(" (")[0]) for r, what in rows
            )
            f.write("## summary (kind, target, outcome: count)\n\n")
            for (kind, target, what), n in sorted(summary.items()):
                f.write(f"- {kind} {target}: {what} x{n}\n")
            f.write("\n## cases\n\n")
            for r, what in rows:
                f.write(f"- `{case_id(r)}` **{what}**: {r['detail']}\n")
        written.append(path)
    return written


def fingerprint(results) -> int:
    return zlib.crc32(json.dumps([(case_id(r), r["outcome"]) for r in results]).encode())
