"""README.md: every ```python block runs as written, on its own (a fresh interpreter, imports
included), and the README's install/test commands are the ones CI runs (.ci/run)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def blocks(language):
    return [m.group(2) for m in FENCE.finditer(README) if m.group(1) == language]


def section(title):
    """The text of the README section whose heading is ``title`` (up to the next heading)."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert match, f"README has no section {title!r}"
    return match.group(1)


PYTHON_BLOCKS = blocks("python")


def test_there_are_blocks_to_run():
    assert len(PYTHON_BLOCKS) >= 5 and len(blocks("bash")) >= 3


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_python_block_runs_on_its_own(index, tmp_path):
    code = PYTHON_BLOCKS[index]
    env = dict(os.environ, MPLBACKEND="Agg")
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"README python block {index}:\n{code}\n{result.stderr}"
    if "print(q)  # [[2.8 3.8] [1.  2. ]]" in code:  # the quickstart prints the Q* it derives
        numbers = [float(x) for x in re.findall(r"[-\d.]+", result.stdout)]
        assert numbers == pytest.approx([2.8, 3.8, 1.0, 2.0], abs=1e-6)


def test_the_quickstart_block_is_checked():
    assert sum("print(q)  # [[2.8 3.8] [1.  2. ]]" in b for b in PYTHON_BLOCKS) == 1


def _command_lines(text):
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def test_test_command_is_what_ci_runs():
    ci = _command_lines((ROOT / ".ci" / "run").read_text(encoding="utf-8"))
    ci_test = [line for line in ci if re.search(r"\bpytest\b", line) and "echo" not in line]
    assert len(ci_test) == 1, ci_test
    readme_test = [
        line for b in FENCE.findall(section("Run the tests")) for line in _command_lines(b[1])
    ]
    assert readme_test == ci_test


def test_install_then_demo_then_tests_in_that_order():
    install = FENCE.findall(section("Install and run the demo"))
    assert [line for b in install for line in _command_lines(b[1])] == [
        "pip install . && fastlmrl demo"
    ]
    assert README.index("## Install and run the demo") < README.index("## Run the tests")
    # `fastlmrl demo` is a command of the installed entry point
    from fastlmrl import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--help"])
    assert exit_info.value.code == 0
