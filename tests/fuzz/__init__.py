"""fastlmrl's own fuzz campaign (issue 11): malformed calls to the public API and to the raw
kernels of every backend, each case in a worker subprocess (a crash or a hang is attributed to
the case that was running), every array inside a guard band, the state snapshotted around each
call.  ``python -m tests.fuzz --help`` (from the repository root) runs it; ``tests/test_fuzz.py``
is the CI subset."""
