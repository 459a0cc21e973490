"""The `fastlmrl` command: demo, train (metrics, checkpoints, resume), sample, bench, info and
errors."""

import json
import subprocess
import sys

import pytest

from fastlmrl import cli


def test_train_resume_and_sample(tmp_path, capsys):
    run = tmp_path / "run"
    base = [
        "train",
        "--algo",
        "grpo",
        "--seed",
        "1",
        "--out",
        str(run),
        "--quiet",
        "--set",
        "num_prompts=4",
        "--set",
        "group_size=4",
    ]
    assert cli.main(base + ["--steps", "3"]) == 0
    assert cli.main(base + ["--steps", "5", "--resume"]) == 0
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["iteration"] for l in lines] == [0, 1, 2, 3, 4]  # nothing counted twice
    assert (run / "metrics.csv").read_text().startswith("approx_kl,")
    straight = tmp_path / "straight"
    assert (
        cli.main(
            [
                "train",
                "--algo",
                "grpo",
                "--seed",
                "1",
                "--out",
                str(straight),
                "--quiet",
                "--set",
                "num_prompts=4",
                "--set",
                "group_size=4",
                "--steps",
                "5",
            ]
        )
        == 0
    )
    a = [json.loads(l)["score"] for l in (run / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(l)["score"] for l in (straight / "metrics.jsonl").read_text().splitlines()]
    assert a == b
    capsys.readouterr()
    assert cli.main(["sample", str(run), "--num", "3"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--algo", "ppo", "--set", "nonsense=1", "--quiet"], "has no such field"),
        (["train", "--algo", "ppo", "--corpus", "/nonexistent.txt", "--quiet"], "does not exist"),
        (["sample", "/nonexistent/run"], "does not exist"),
    ],
)
def test_errors_are_reported_cleanly(tmp_path, capsys, argv, message):
    if argv[0] == "train":
        argv = argv + ["--out", str(tmp_path / "r"), "--steps", "1"]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_binary_corpus_is_refused(tmp_path, capsys):
    corpus = tmp_path / "corpus.bin"
    corpus.write_bytes(b"\x00\x01\x02binary")
    assert (
        cli.main(
            [
                "train",
                "--algo",
                "ppo",
                "--corpus",
                str(corpus),
                "--quiet",
                "--steps",
                "1",
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    assert "binary" in capsys.readouterr().err
    assert not (tmp_path / "r" / "checkpoint.ckpt").exists()


def test_argparse_rejects_unknown_names():
    for argv in (["train", "--algo", "dqn"], ["demo", "--backend", "fortran"], ["nope"]):
        with pytest.raises(SystemExit):
            cli.main(argv)


def test_bench_and_info(capsys):
    # the ahead-of-time backend only: no Numba compilation in the test suite's time (the Numba
    # kernels have their own tests); the python reference is always timed for the ratio
    assert cli.main(["bench", "--quick", "--backend", "cython"]) == 0
    out = capsys.readouterr().out
    assert "q_learning_update" in out and "cython" in out and "python" in out
    assert "numba" not in out
    assert cli.main(["info"]) == 0


def test_console_script_module_runs():
    result = subprocess.run(
        [sys.executable, "-m", "fastlmrl.cli", "info"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "numba" in result.stdout


def test_train_value_method_on_the_toy_reaches_q_star(tmp_path, capsys):
    """Q-learning from the command line on the seed toy (gamma = 0.9): Q* = [[2.8, 3.8], [1, 2]]."""
    import numpy as np

    from fastlmrl.checkpoint import load_checkpoint

    run = tmp_path / "q"
    assert (
        cli.main(
            [
                "train",
                "--algo",
                "q_learning",
                "--env",
                "toy",
                "--steps",
                "200",
                "--quiet",
                "--out",
                str(run),
                "--set",
                "alpha=0.5",
                "--set",
                "gamma=0.9",
            ]
        )
        == 0
    )
    arrays, meta = load_checkpoint(run / "checkpoint.ckpt")
    np.testing.assert_allclose(arrays["q"][:2], [[2.8, 3.8], [1.0, 2.0]], atol=1e-3)
    assert meta["task"]["algo"] == "q_learning"
    assert (
        cli.main(
            [
                "train",
                "--algo",
                "ppo",
                "--env",
                "toy",
                "--steps",
                "1",
                "--quiet",
                "--out",
                str(tmp_path / "bad"),
            ]
        )
        == 2
    )
    assert "--env text" in capsys.readouterr().err


def test_allocator_tuning_is_applied_on_glibc_and_can_be_turned_off(monkeypatch):
    import platform

    from fastlmrl._allocator import keep_freed_memory

    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is glibc
    monkeypatch.setenv("FASTLMRL_KEEP_FREED_MEMORY", "0")
    assert keep_freed_memory() is False
