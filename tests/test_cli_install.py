"""setup.py rebuilds only what changed (issue 10 item 6: `pip install '.[plot]'` after
`pip install .` re-cythonized and recompiled every extension, 4-5 minutes, because pip's fresh
isolated build environment has Cython include files newer than our generated .c files).

The staleness rules of setup.py are run here on a copy of two kernel sources, without building."""

import os
import shutil
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SETUP = ROOT / "setup.py"

pytest.importorskip("Cython")


def _rules(workdir: Path, monkeypatch) -> dict:
    """Run setup.py up to (not including) the build, in ``workdir``; its namespace."""
    source = SETUP.read_text()
    marker = "\n_update_build_stamp()\n"
    assert marker in source
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("FASTLMRL_CYTHON_ONLY", "selection")
    namespace = {"__name__": "setup_rules", "__file__": str(workdir / "setup.py")}
    exec(compile(source[: source.index(marker)], str(SETUP), "exec"), namespace)
    namespace["_update_build_stamp"]()
    return namespace


def _touch(path: Path, when: float) -> None:
    os.utime(path, (when, when))


def test_generated_c_is_reused_unless_our_sources_or_the_build_stamp_change(tmp_path, monkeypatch):
    kernels = tmp_path / "fastlmrl" / "_cython"
    kernels.mkdir(parents=True)
    for name in ("selection.pyx", "selection.pxd", "_common.pxd", "__init__.py"):
        shutil.copy(ROOT / "fastlmrl" / "_cython" / name, kernels / name)
    (tmp_path / "fastlmrl" / "__init__.py").write_text("")
    past = time.time() - 1000
    for path in kernels.iterdir():
        _touch(path, past)
    rules = _rules(tmp_path, monkeypatch)
    depends = rules["_own_dependencies"]("selection")
    assert {os.path.basename(p) for p in depends} >= {
        "selection.pyx",
        "selection.pxd",
        "_common.pxd",
    }
    assert all(os.path.abspath(p).startswith(str(tmp_path)) for p in depends)  # no Cython/Includes
    assert not rules["_c_is_current"]("selection", depends)  # no .c yet
    c_file = kernels / "selection.c"
    c_file.write_text("/* generated */")  # newer than the stamp and the sources
    assert rules["_c_is_current"]("selection", depends)
    # a new isolated build environment: same versions and flags -> the stamp is not rewritten
    stamp = tmp_path / rules["BUILD_STAMP"]
    before = stamp.stat().st_mtime_ns
    rules = _rules(tmp_path, monkeypatch)
    assert stamp.stat().st_mtime_ns == before
    assert rules["_c_is_current"]("selection", depends)
    # one of our .pxd edited -> regenerate
    _touch(kernels / "_common.pxd", time.time() + 10)
    assert not rules["_c_is_current"]("selection", depends)
    _touch(kernels / "_common.pxd", past)
    assert rules["_c_is_current"]("selection", depends)
    # other compiler flags (e.g. a portable build) -> the stamp changes -> regenerate, recompile
    monkeypatch.setenv("FASTLMRL_PORTABLE", "1")
    _touch(c_file, time.time() - 10)
    rules = _rules(tmp_path, monkeypatch)
    if stamp.stat().st_mtime_ns != before:  # -march=native was in the flags on this machine
        assert not rules["_c_is_current"]("selection", depends)
