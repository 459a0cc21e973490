"""The CI subset of fastlmrl's fuzz campaign (issue 11; the harness is ``tests/fuzz/``).

A few thousand malformed calls, over the public API and the raw kernels of all three backends,
each in a worker subprocess (a crash or a hang is attributed to the case that was running), every
array inside a guard band, the state snapshotted around each call.  Expected: no crash, no
out-of-bounds write, no hang, no half-applied update, and only ValueError/TypeError naming the
argument (public API) or a non-zero status (raw kernels, for value-level mutations).

The full campaign (every case, a table of counts per backend and outcome) runs outside CI:
``python -m tests.fuzz --full`` from the repository root.

Cases of the full campaign that still fail are listed in ``KNOWN_FAILURES`` with the reason
(``python -m tests.fuzz --full --known FILE`` writes the list); they run in CI too, and each is an
``xfail(strict=True)`` test of its own, so fixing one without updating the list fails CI.
"""

from __future__ import annotations

import collections

import pytest
from fuzz import campaign
from fuzz.cases import PLANTED
from fuzz.harness import CRASH, HALF, HANG, OK, OOB, REJECTED, UNNAMED, WRONG_EXC

#: case id -> why it still fails (failing cases of the full campaign, 2026-12-06 05:00 UTC).
KNOWN_FAILURES: dict[str, str] = {}

JOBS = 2
TIMEOUT = 10.0


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    corpus = str(tmp_path_factory.mktemp("fuzz") / "kernel_calls.pickle")
    listing = campaign.enumerate_cases(corpus=corpus)
    every = listing["public"] + listing["kernel"]
    cases = campaign.select_cases(every, "ci")
    assert len(cases) > 1000
    out = campaign.run_cases(cases, jobs=JOBS, timeout=TIMEOUT, corpus=corpus)
    # the known failures run too, also those outside the sample (a hang shows in 3 s; a valid
    # call takes milliseconds, a Numba kernel's first load from its cache well under 30 s)
    sampled = {campaign.case_id(c) for c in cases}
    known = [
        c
        for c in every
        if campaign.case_id(c) in KNOWN_FAILURES and campaign.case_id(c) not in sampled
    ]
    out += campaign.run_cases(known, jobs=JOBS, timeout=3.0, compile_timeout=30.0, corpus=corpus)
    return {campaign.case_id(r): r for r in out}


@pytest.fixture(scope="module")
def bad(results):
    """case id -> what went wrong, for every failing case of the CI subset."""
    return {
        campaign.case_id(r): f"{what}: {r['detail']}"
        for r, what in campaign.bad_results(list(results.values()))
    }


@pytest.mark.parametrize("backend", ["python", "numba", "cython"])
@pytest.mark.parametrize("kind", ["api", "kernel"])
def test_no_bad_outcome(results, bad, kind, backend):
    ran = [r for r in results.values() if r["kind"] == kind and r["backend"] == backend]
    assert ran, "no case ran"
    counts = collections.Counter(r["outcome"] for r in ran)
    assert counts[OK] + counts[REJECTED] > 0, counts
    failures = {
        cid: what
        for cid, what in bad.items()
        if cid not in KNOWN_FAILURES
        and results[cid]["kind"] == kind
        and results[cid]["backend"] == backend
    }
    assert not failures, (
        f"{len(failures)} failing fuzz cases (repro: python -m tests.fuzz "
        f"--case ID):\n" + "\n".join(f"{k}  {v}" for k, v in sorted(failures.items())[:60])
    )


_KNOWN = [
    pytest.param(cid, marks=pytest.mark.xfail(strict=True, reason=reason))
    for cid, reason in sorted(KNOWN_FAILURES.items())
]


@pytest.mark.parametrize(
    "cid", _KNOWN or [pytest.param("-", marks=pytest.mark.skip(reason="no known failures"))]
)
def test_known_failure(results, bad, cid):
    """A case listed in KNOWN_FAILURES passes (and, being a strict xfail, fails the run) once
    it is fixed."""
    assert cid not in bad, bad.get(cid)


def test_known_failures_still_exist(results):
    missing = sorted(set(KNOWN_FAILURES) - set(results))
    assert not missing, f"no such fuzz cases any more, update KNOWN_FAILURES: {missing}"


# ------------------------------------------------------------------------ the harness itself
PLANTED_OUTCOMES = {
    "segfault": CRASH,
    "sleeps": HANG,
    "writes_past_end": OOB,
    "half_applies": HALF,
    "wrong_exception": WRONG_EXC,
    "unnamed_message": UNNAMED,
    "clean": REJECTED,
}


def _planted_case(target, arg="rows", mutation="none"):
    return dict(
        kind="api",
        backend="python",
        target=target,
        topic="_selftest",
        arg=arg,
        mutation=mutation,
        seed=1,
    )


@pytest.fixture(scope="module")
def planted():
    """Every planted fault, each followed by a clean case (the campaign must go on after a crash
    or a hang: the next case runs in a fresh worker); plus a valid call of writes_past_end (NaN
    in x, y >= 0) that must come back OK."""
    cases = []
    for target in PLANTED_OUTCOMES:
        if target == "writes_past_end":  # a negative y writes one element past the end of x
            cases.append(_planted_case(target, "y", "s_neg"))
        else:
            cases.append(_planted_case(target, "x" if target in ("segfault", "sleeps") else "rows"))
        cases.append(_planted_case("clean"))
    cases.append(_planted_case("writes_past_end", "x", "nan"))
    return campaign.run_cases(cases, timeout=3.0)


@pytest.mark.parametrize("target", sorted(PLANTED_OUTCOMES))
def test_harness_reports_planted_fault(planted, target):
    """Each planted fault (``fuzz.cases.PLANTED``) is reported as its outcome."""
    assert target in PLANTED
    i = list(PLANTED_OUTCOMES).index(target)
    assert planted[2 * i]["target"] == target
    assert planted[2 * i]["outcome"] == PLANTED_OUTCOMES[target], planted[2 * i]
    assert planted[2 * i + 1]["outcome"] == REJECTED, planted[2 * i + 1]  # the campaign went on


def test_harness_accepts_a_valid_call(planted):
    assert planted[-1]["outcome"] == OK, planted[-1]


# ------------------------------------------------------------------------ the specs themselves
#: kernels that no public spec reaches (they are fuzzed elsewhere or not at all)
UNREACHED_KERNELS: set[str] = set()


@pytest.mark.parametrize("backend_name", ["python", "numba", "cython"])
def test_every_spec_is_a_valid_call(backend_name):
    """Each unmutated spec call succeeds, so a rejection in the campaign is the mutation's."""
    import numpy as np
    from fuzz.cases import SPECS, case_seed
    from fuzz.harness import Guards

    import fastlmrl

    failed = {}
    with fastlmrl.use_backend(backend_name):
        for name, (_, build) in SPECS.items():
            try:
                built = build(np.random.default_rng(case_seed(name)), Guards())
                built.fn(**built.kwargs)
            except Exception as exc:  # noqa: BLE001
                failed[name] = f"{type(exc).__name__}: {exc}"
    assert not failed, failed


def test_specs_reach_every_kernel():
    from fuzz.cases import record_kernel_calls

    from fastlmrl import _backend

    reached = set(record_kernel_calls())
    kernels = set(_backend.backend_module("python").__all__)
    assert kernels - reached - UNREACHED_KERNELS == set(), "add a spec in tests/fuzz/cases.py"


def _kernels_the_specs_call():
    """The python-backend kernels the public specs call, seen by a profiler instead of the
    recorder: every call of a kernel function made from outside ``fastlmrl/_python``."""
    import os
    import sys

    import numpy as np
    from fuzz.cases import SPECS, case_seed
    from fuzz.harness import Guards

    import fastlmrl
    from fastlmrl import _backend

    module = _backend.backend_module("python")
    codes = {getattr(module, n).__code__: n for n in module.__all__}
    inside = os.path.dirname(module.__file__) + os.sep
    called = set()

    def profile(frame, event, arg):
        if event == "call" and frame.f_code in codes:
            if not frame.f_back.f_code.co_filename.startswith(inside):
                called.add(codes[frame.f_code])

    with fastlmrl.use_backend("python"):
        sys.setprofile(profile)
        try:
            for name, (_, build) in SPECS.items():
                try:
                    built = build(np.random.default_rng(case_seed(name)), Guards())
                    built.fn(**built.kwargs)
                except Exception:  # noqa: BLE001 - test_every_spec_is_a_valid_call reports it
                    pass
        finally:
            sys.setprofile(None)
    return called


@pytest.mark.parametrize("backend_name", ["python", "numba", "cython"])
def test_recorder_sees_every_kernel_call_of_the_specs(backend_name):
    """The recorder (which the kernel cases and the alias probe replay) sees each kernel the
    public specs call, bound topics (``_backend.bind``) and unbound ones alike, in every backend;
    and the specs reach every migrated topic's kernels but the documented unreached ones."""
    import importlib
    import warnings

    from fuzz.cases import record_kernel_calls

    from fastlmrl._topics import TOPICS

    with warnings.catch_warnings():  # the specs also call deprecated spellings on purpose
        warnings.simplefilter("ignore", DeprecationWarning)
        called = _kernels_the_specs_call()
        recorded = record_kernel_calls(per_kernel=1, backend=backend_name)
    assert called - set(recorded) == set(), "calls the recorder missed"
    assert all(recorded[name] for name in called), "kernels never recorded with status 0"
    for topic in TOPICS:
        names = set(importlib.import_module(f"fastlmrl.{topic}").CONTRACT.names)
        assert names - called - UNREACHED_KERNELS == set(), topic
