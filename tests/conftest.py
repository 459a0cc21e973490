"""Shared fixtures: every compiled backend must load (a missing one fails, it is never skipped)."""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import fastlmrl
from fastlmrl import _backend

settings.register_profile(
    "fastlmrl",
    max_examples=60,
    deadline=None,  # the first call of a Numba kernel compiles or loads its cache
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
# CI (CI=true) replays the same examples every run, so a red CI is reproducible; local runs
# keep exploring new random examples.
settings.register_profile(
    "ci", parent=settings.get_profile("fastlmrl"), derandomize=True, database=None
)
settings.load_profile("ci" if os.environ.get("CI") else "fastlmrl")

COMPILED = ("numba", "cython")
FLOATS = (np.float32, np.float64)
INDEX = (np.int32, np.int64)


@pytest.fixture(params=COMPILED)
def compiled(request):
    """The module of a compiled backend (raw kernels)."""
    return _backend.backend_module(request.param)


@pytest.fixture
def reference():
    """The module of the pure-Python reference backend (raw kernels)."""
    return _backend.backend_module("python")


@pytest.fixture(params=fastlmrl.BACKENDS)
def backend(request):
    """Run the test body with each backend active in turn (public API)."""
    with fastlmrl.use_backend(request.param):
        yield request.param


@pytest.fixture(params=FLOATS, ids=lambda t: np.dtype(t).name)
def float_dtype(request):
    return np.dtype(request.param)


@pytest.fixture(params=INDEX, ids=lambda t: np.dtype(t).name)
def index_dtype(request):
    return np.dtype(request.param)
