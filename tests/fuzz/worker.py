"""The worker process of the fuzz campaign: reads one JSON request per line on stdin, answers one
JSON line on its protocol pipe (the original stdout; whatever the targets print goes to stderr).

Run as a script: ``python tests/fuzz/worker.py``.  ``FASTLMRL_FUZZ_ROOT`` (optional) is put first
on ``sys.path`` so that the fastlmrl under test is the one of that tree.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))


def _setup_path():
    root = os.environ.get("FASTLMRL_FUZZ_ROOT")
    if root:
        sys.path.insert(0, os.path.abspath(root))
    sys.path.insert(1 if root else 0, os.path.dirname(_HERE))  # tests/ -> "fuzz" package


class Worker:
    def __init__(self):
        import numpy as np

        import fastlmrl

        self.np = np
        self.fastlmrl = fastlmrl
        self.recorded = None

    def _recorded(self):
        """The recorded kernel calls; cached in ``FASTLMRL_FUZZ_CORPUS`` (a pickle written by the
        first worker of a campaign) so that a worker restarted after a crash need not record."""
        if self.recorded is None:
            import pickle

            path = os.environ.get("FASTLMRL_FUZZ_CORPUS")
            if path and os.path.exists(path):
                with open(path, "rb") as f:
                    self.recorded = pickle.load(f)
            else:
                from fuzz.cases import record_kernel_calls

                self.recorded = record_kernel_calls()
                if path:
                    with open(path + ".tmp", "wb") as f:
                        pickle.dump(self.recorded, f)
                    os.replace(path + ".tmp", path)
        return self.recorded

    def enumerate(self, backends):
        from fuzz.cases import kernel_cases, public_cases

        recorded = self._recorded()
        return {
            "public": public_cases(backends),
            "kernel": kernel_cases(recorded, backends),
            "fastlmrl": self.fastlmrl.__file__,
            "kernels_recorded": sorted(recorded),
        }

    def run(self, case):
        np = self.np
        from fuzz import harness
        from fuzz.cases import (
            PLANTED,
            RELATIONAL,
            SPECS,
            case_seed,
            is_type_level,
            kernel_output_names,
            mutate,
        )

        G = harness.Guards()
        r = np.random.default_rng(case["seed"])
        backend = case["backend"]
        target, arg, mutation = case["target"], case["arg"], case["mutation"]
        exc = result = None
        if case["kind"] == "api":
            with self.fastlmrl.use_backend(backend):
                _, build = SPECS[target] if target in SPECS else PLANTED[target]
                built = build(np.random.default_rng(case_seed(target)), G)
                if arg == "<special>":
                    names, apply = built.specials[mutation]
                    apply(built.kwargs, r, G)
                else:
                    names = built.message_names(arg)
                    if mutation in RELATIONAL:  # a length mismatch names either side
                        names = names + [
                            n for k in built.kwargs if k != arg for n in built.message_names(k)
                        ]
                    built.kwargs[arg] = mutate(built.kwargs[arg], mutation, r, G)
                watched = [built.kwargs, built.extras]
                before = harness.snapshot(watched)
                try:
                    built.fn(**built.kwargs)
                except Exception as e:  # noqa: BLE001 - classified below
                    exc = e
                guards_ok = G.intact()
                changed = harness.diff_path(before, harness.snapshot(watched)) if exc else ""
                return harness.classify_api(exc, names, guards_ok, changed)
        from fastlmrl import _backend

        _, params, args = self._recorded()[target][case["variant"]]
        args = [G.g(a) if isinstance(a, np.ndarray) else a for a in copy.deepcopy(args)]
        i = params.index(arg)
        args[i] = mutate(args[i], mutation, r, G, kernel=True)
        outputs = kernel_output_names()
        watched = {
            p: a
            for p, a in zip(params, args)
            if not (p in outputs or p.endswith("_out"))
            or (p == "rows" and not target.endswith("_tabular"))
            or (p == "order" and target not in ("adam_step", "sgd_step"))
        }
        fn = getattr(_backend.backend_module(backend), target)
        before = harness.snapshot(watched)
        try:
            result = fn(*args)
        except Exception as e:  # noqa: BLE001
            exc = e
        guards_ok = G.intact()
        after = harness.snapshot(watched)
        changed = harness.diff_path(before, after)
        status_nonzero = True
        if exc is None:
            try:
                status_nonzero = int(result[0] if isinstance(result, tuple) else result) != 0
            except Exception:  # noqa: BLE001
                status_nonzero = True
        if not status_nonzero:
            changed = ""
        return harness.classify_kernel(result, exc, is_type_level(mutation), guards_ok, changed)


def main():
    _setup_path()
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    worker = Worker()
    proto.write(json.dumps({"ready": worker.fastlmrl.__file__}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        t0 = time.perf_counter()
        if request["cmd"] == "enumerate":
            reply = worker.enumerate(request["backends"])
        elif request["cmd"] == "run":
            try:
                outcome, detail = worker.run(request["case"])
            except Exception as e:  # noqa: BLE001 - the case could not even be built
                outcome, detail = "setup-error", f"{type(e).__name__}: {e}"[:400]
            reply = {"outcome": outcome, "detail": detail}
        else:
            reply = {"error": f"unknown command {request['cmd']!r}"}
        reply["seconds"] = time.perf_counter() - t0
        proto.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
