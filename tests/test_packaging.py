"""The project's metadata agrees with its files: the license, the typing marker, the extras that
the optional features name in their errors, the lint and type-check configuration."""

import os
import stat
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_license_file_matches_the_declared_license():
    assert PYPROJECT["project"]["license"] == {"text": "BSD-3-Clause"}
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.splitlines()[0] == "BSD 3-Clause License"
    # the three clauses of the SPDX BSD-3-Clause text
    for clause in (
        "Redistributions of source code must retain",
        "Redistributions in binary form must reproduce",
        "Neither the name of the copyright holder",
    ):
        assert clause in text


def test_typing_marker_is_shipped():
    assert (ROOT / "fastlmrl" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["fastlmrl"]


def test_extras_hold_what_the_error_messages_promise():
    extras = PYPROJECT["project"]["optional-dependencies"]
    names = {
        extra: {req.split(">")[0].split("=")[0].split(";")[0].split("[")[0].strip() for req in reqs}
        for extra, reqs in extras.items()
    }
    # sweeps: "pip install 'fastlmrl[distributed]'" for Ray and for SciPy's Student t
    assert {"ray", "scipy"} <= names["distributed"]
    # the test extra installs them too: CI runs the sweep tests, never skips them
    assert {"ray", "scipy"} <= names["test"]
    assert "pre-commit" in names["dev"]


def test_lint_configuration():
    ruff = PYPROJECT["tool"]["ruff"]
    assert ruff["line-length"] == 100
    assert set(ruff["lint"]["select"]) >= {"E", "F", "W", "I", "B", "UP"}
    for path in PYPROJECT["tool"]["mypy"]["files"]:  # a renamed module must be renamed here too
        assert (ROOT / path).exists(), f"[tool.mypy] files lists {path}, which does not exist"
    lint = ROOT / ".ci" / "lint"
    assert lint.is_file() and os.stat(lint).st_mode & stat.S_IXUSR
    assert (ROOT / ".pre-commit-config.yaml").is_file()


def test_ci_lints_with_the_pinned_tools():
    """CI runs .ci/lint after the tests, with the ruff and mypy the test extra pins exactly
    (another ruff formats differently); pre-commit's ruff hook is the same version."""
    test_extra = PYPROJECT["project"]["optional-dependencies"]["test"]
    pins = {r.split("==")[0]: r.split("==")[1] for r in test_extra if "==" in r}
    assert set(pins) >= {"ruff", "mypy"}
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "bash .ci/lint" in ci
    hooks = (ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8")
    assert f"rev: v{pins['ruff']}" in hooks
