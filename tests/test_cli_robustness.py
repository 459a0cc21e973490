"""The `fastlmrl` command under misuse (issues 10 and 11): every error is one line on stderr naming
the option or key, with exit status 2 (argparse's) or 1, never a traceback; samples for every
algorithm; runs are not overwritten silently; plain help; progress without carriage returns in
logs."""

import io
import json
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from fastlmrl import cli
from fastlmrl.checkpoint import load_checkpoint, save_checkpoint


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _exit_code(argv) -> int:
    """cli.main's return value, or the status of the SystemExit argparse raises."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return exc.code


# --- --set values and sizes ------------------------------------------------------------------


@pytest.mark.parametrize(
    "algo, pair, words",
    [
        ("monte_carlo", "first_visit=maybe", ["first_visit", "maybe"]),  # was accepted as False
        ("ppo", "epochs=abc", ["epochs", "integer"]),
        ("ppo", "lr=abc", ["lr", "number"]),
        ("ppo", "epochs=none", ["epochs", "None"]),
        ("ppo", "nonsense=1", ["nonsense", "choose from", "minibatches", "lr"]),
        ("ppo", "lr", ["KEY=VALUE"]),
        ("ppo", "minibatches=1000000000", ["minibatches", "1000000000"]),  # ran > 120 s
        ("ppo", "minibatches=0", ["minibatches"]),
        ("grpo", "epochs=100000000000", ["epochs", "100000000000", "2**31"]),
    ],
)
def test_bad_set_values_are_refused_naming_the_key(tmp_path, capsys, algo, pair, words):
    env = ["--env", "toy"] if algo == "monte_carlo" else []
    argv = [
        "train",
        "--algo",
        algo,
        *env,
        "--set",
        pair,
        "--out",
        str(tmp_path / "r"),
        "--quiet",
        "--steps",
        "1",
    ]
    if pair.startswith("minibatches=1"):
        argv += ["--set", "epochs=1"]  # the per-batch bound, not the epochs * minibatches one
    assert _exit_code(argv) == 2
    line = _error_line(capsys)
    for word in words:
        assert word in line
    assert not (tmp_path / "r").exists()


def test_set_accepts_the_documented_spellings(tmp_path):
    from fastlmrl.trainers import MonteCarloConfig, PPOConfig

    parsed = cli._parse_overrides(
        ["first_visit=False", "alpha=none", "drop_truncated=yes"], MonteCarloConfig
    )
    assert parsed == {"first_visit": False, "alpha": None, "drop_truncated": True}
    assert cli._parse_overrides(["kl_target=6", "epochs=2"], PPOConfig) == {
        "kl_target": 6.0,
        "epochs": 2,
    }


@pytest.mark.parametrize(
    "option, value",
    [
        ("--num-envs", "100000000000"),
        ("--max-new-tokens", "100000000000"),
        ("--set", "num_sequences=100000000000"),
        ("--set", "num_prompts=100000000000"),
    ],
)
def test_huge_sizes_are_refused_with_the_number(tmp_path, capsys, option, value):
    """Issue 11 item 6: these printed MemoryError tracebacks."""
    algo = "grpo" if "num_prompts" in value else "ppo"
    assert (
        _exit_code(
            ["train", "--algo", algo, option, value, "--out", str(tmp_path / "r"), "--quiet"]
        )
        == 2
    )
    line = _error_line(capsys)
    assert value.split("=")[-1] in line and "GiB" in line
    assert (option if option != "--set" else value.split("=")[0]) in line


@pytest.mark.parametrize(
    "argv, option",
    [
        (["train", "--algo", "q_learning", "--checkpoint-every", "-1"], "--checkpoint-every"),
        (["train", "--algo", "q_learning", "--steps", "-3"], "--steps"),
        (["train", "--algo", "q_learning", "--steps", str(2**31 + 1)], "--steps"),
        (["train", "--algo", "q_learning", "--num-envs", "0"], "--num-envs"),
        (["train", "--algo", "q_learning", "--seed", "-1"], "--seed"),
        (["train", "--algo", "q_learning", "--order", "x"], "--order"),
        (["train", "--algo", "dqn"], "--algo"),
        (["sample", "somewhere", "--num", "-1"], "--num"),
        (["sample", "somewhere", "--epsilon", "2"], "--epsilon"),
    ],
)
def test_bad_options_exit_2_with_one_line(capsys, argv, option):
    """`--checkpoint-every -1` and `sample --num -1` exited 0 (issue 11 item 6)."""
    assert _exit_code(argv) == 2
    line = _error_line(capsys)
    assert option in line and line.startswith("fastlmrl ")


def test_out_that_is_a_file_is_refused_naming_the_option(tmp_path, capsys):
    (tmp_path / "afile").write_text("mine")
    for out in (tmp_path / "afile", tmp_path / "afile" / "run"):
        assert cli.main(_toy(out, "--steps", "1")) == 2
        assert "--out" in _error_line(capsys)
    assert (tmp_path / "afile").read_text() == "mine"


def test_interrupted_train_says_how_to_resume(monkeypatch, capsys, tmp_path):
    def interrupted(args, out=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_train", interrupted)
    assert cli.main(["train", "--algo", "ppo", "--out", str(tmp_path / "r")]) == 130
    assert "--resume" in _error_line(capsys)


def test_out_of_memory_is_one_line_exit_1(monkeypatch, capsys, tmp_path):
    def boom(args, out=None):
        raise MemoryError

    monkeypatch.setattr(cli, "cmd_train", boom)
    assert cli.main(["train", "--algo", "ppo", "--out", str(tmp_path / "r")]) == 1
    assert "out of memory" in _error_line(capsys)


# --- run folders: no silent overwrite; resume says what it does -------------------------------


def _toy(run, *extra):
    return [
        "train",
        "--algo",
        "q_learning",
        "--env",
        "toy",
        "--out",
        str(run),
        "--quiet",
        "--set",
        "alpha=0.5",
        "--set",
        "gamma=0.9",
        *extra,
    ]


def test_train_refuses_to_overwrite_a_run_unless_told(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(_toy(run, "--steps", "4")) == 0
    before = (run / "checkpoint.ckpt").read_bytes()
    capsys.readouterr()
    assert cli.main(_toy(run, "--steps", "2")) == 2
    line = _error_line(capsys)
    assert "--resume" in line and "--overwrite" in line and str(run) in line
    assert (run / "checkpoint.ckpt").read_bytes() == before
    assert cli.main(_toy(run, "--steps", "2", "--overwrite")) == 0
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [0, 1]
    assert load_checkpoint(run / "checkpoint.ckpt")[1]["iterations_done"] == 2


def test_resume_with_steps_already_done_says_why_nothing_happens(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(_toy(run, "--steps", "6")) == 0
    before = (run / "checkpoint.ckpt").read_bytes()
    capsys.readouterr()
    assert cli.main(_toy(run, "--steps", "4", "--resume")) == 0
    out = capsys.readouterr().out
    assert "nothing to do" in out and "6 iterations" in out and "total" in out
    assert "--steps 10" in out  # how to get 4 more
    assert (run / "checkpoint.ckpt").read_bytes() == before
    assert cli.main(_toy(run, "--steps", "8", "--resume")) == 0
    assert load_checkpoint(run / "checkpoint.ckpt")[1]["iterations_done"] == 8
    capsys.readouterr()
    # without the --set options: the run's own are used (and said); other ones are refused
    plain = ["train", "--algo", "q_learning", "--env", "toy", "--out", str(run), "--quiet"]
    assert cli.main(plain + ["--steps", "9", "--resume"]) == 0
    assert "--set alpha=0.5 --set gamma=0.9" in capsys.readouterr().out
    assert load_checkpoint(run / "checkpoint.ckpt")[1]["iterations_done"] == 9
    assert cli.main(plain + ["--steps", "10", "--resume", "--set", "alpha=0.2"]) == 2
    assert "alpha (checkpoint 0.5, this trainer 0.2)" in _error_line(capsys)
    other = ["train", "--algo", "sarsa", "--env", "toy", "--out", str(run), "--quiet"]
    assert cli.main(other + ["--steps", "10", "--resume"]) == 2
    assert "--algo q_learning, not sarsa" in _error_line(capsys)


# --- damaged checkpoints through the command ----------------------------------------------------


def test_damaged_checkpoint_is_one_line_naming_the_file(tmp_path, capsys):
    """A member marked with an unknown compression method made zipfile raise
    NotImplementedError, printed as a traceback."""
    run = tmp_path / "run"
    assert cli.main(_toy(run, "--steps", "2")) == 0
    path = run / "checkpoint.ckpt"
    data = bytearray(path.read_bytes())
    central = data.index(b"PK\x01\x02")
    data[central + 10] = 99  # compression method of the first member
    path.write_bytes(bytes(data))
    capsys.readouterr()
    for argv in (["sample", str(run)], _toy(run, "--steps", "4", "--resume")):
        assert cli.main(argv) == 2
        line = _error_line(capsys)
        assert "checkpoint.ckpt" in line


def test_damaged_checkpoint_in_a_subprocess_prints_no_traceback(tmp_path):
    path = tmp_path / "x.ckpt"
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    result = subprocess.run(
        [sys.executable, "-m", "fastlmrl.cli", "sample", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "x.ckpt" in result.stderr


# --- samples for every algorithm ----------------------------------------------------------------

VALUE_METHODS = [
    "q_learning",
    "sarsa",
    "expected_sarsa",
    "double_q_learning",
    "monte_carlo",
    "value_iteration",
    "policy_iteration",
]


@pytest.mark.parametrize("algo", VALUE_METHODS)
def test_sample_a_value_method_on_the_toy_prints_trajectories(tmp_path, capsys, algo):
    """`sample` crashed (no attribute 'sample') or printed the Q table (issue 10 item 5)."""
    run = tmp_path / algo
    argv = [
        "train",
        "--algo",
        algo,
        "--env",
        "toy",
        "--out",
        str(run),
        "--quiet",
        "--set",
        "gamma=0.9",
        "--steps",
        "1" if algo.endswith("iteration") else "60",
    ]
    if not algo.endswith("iteration"):
        argv += ["--set", "epsilon_end=0.2"]
    assert cli.main(argv) == 0
    capsys.readouterr()
    assert cli.main(["sample", str(run), "--num", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    # greedy in Q* (gamma 0.9): token v2 (id 1, reward 2) in both contexts
    assert lines == ["s=0 a=1 r=2 | s=1 a=1 r=2 | terminated, return 4"] * 3


def test_epsilon_is_refused_for_a_policy_method(tmp_path, capsys):
    run = tmp_path / "grpo"
    assert (
        cli.main(
            [
                "train",
                "--algo",
                "grpo",
                "--out",
                str(run),
                "--quiet",
                "--steps",
                "1",
                "--set",
                "num_prompts=2",
                "--set",
                "group_size=2",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert cli.main(["sample", str(run), "--epsilon", "0.1"]) == 2
    assert "--epsilon" in _error_line(capsys)
    assert cli.main(["sample", str(run), "--num", "2"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_sample_with_epsilon_explores(tmp_path, capsys):
    run = tmp_path / "q"
    assert cli.main(_toy(run, "--steps", "60")) == 0
    capsys.readouterr()
    assert cli.main(["sample", str(run), "--num", "40", "--epsilon", "1", "--seed", "5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 40 and len(set(lines)) == 4  # uniform actions: all four trajectories
    assert lines.count("s=0 a=1 r=2 | s=1 a=1 r=2 | terminated, return 4") < 25
    for line in lines:
        rewards = [int(r) for r in re.findall(r"r=(\d)", line)]
        assert line.endswith(f"terminated, return {sum(rewards)}")


def _greedy_text(task, q, prompt_id: int, kl_coef=None) -> str:
    """Greedy decoding written out by hand (lowest id among ties): argmax of q, or for a value
    method started from the language model, the mode of pi_ref(a|s) exp(q(s, a) / kl_coef)."""
    env = task.env
    scores = q.astype(np.float64)
    if kl_coef is not None:
        ref = task.reference.astype(np.float64)
        top = ref.max(axis=1, keepdims=True)
        log_ref = ref - top - np.log(np.exp(ref - top).sum(axis=1, keepdims=True))
        scores = log_ref + scores / kl_coef
    tokens = list(env.prompt(prompt_id))
    context, out = env.context_of(np.array(tokens, dtype=np.int64)), []
    for _ in range(env.max_new_tokens):
        action = int(np.argmax(scores[context]))
        out.append(action)
        if action == env.eos_id:
            break
        context = (context * env.vocab_size + action) % env.num_contexts
    return task.prompt_text(prompt_id) + task.decode(out)


@pytest.mark.parametrize("algo", ["q_learning", "double_q_learning"])
def test_sample_a_value_method_on_text_decodes_greedy_text(tmp_path, capsys, algo):
    run = tmp_path / algo
    assert (
        cli.main(
            [
                "train",
                "--algo",
                algo,
                "--out",
                str(run),
                "--quiet",
                "--steps",
                "1",
                "--num-envs",
                "4",
                "--max-new-tokens",
                "12",
            ]
        )
        == 0
    )
    path = run / "checkpoint.ckpt"
    arrays, meta = load_checkpoint(path)
    rng = np.random.default_rng(3)
    for name in arrays:  # a Q table whose greedy text is not trivial
        arrays[name] = rng.standard_normal(arrays[name].shape).astype(arrays[name].dtype)
    if algo == "double_q_learning":
        arrays["q"] = (arrays["q1"] + arrays["q2"]) / 2
    save_checkpoint(path, arrays, meta)
    capsys.readouterr()
    assert cli.main(["sample", str(run), "--num", "6", "--seed", "2"]) == 0
    lines = capsys.readouterr().out.rstrip("\n").split("\n")
    assert len(lines) == 6
    task = cli.build_task(meta["task"])
    kl_coef = meta["config"].get("kl_coef")  # value methods started from the LM
    expected = {_greedy_text(task, arrays["q"], p, kl_coef) for p in range(task.env.num_prompts)}
    assert set(lines) <= expected
    assert any(len(line) > 8 for line in lines)


# --- help, version, progress ------------------------------------------------------------------


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_help_is_plain_text_with_defaults(capsys):
    texts = {
        cmd: _help(([cmd] if cmd else []) + ["--help"], capsys)
        for cmd in ("", "train", "sample", "sweep", "bench", "demo")
    }
    for cmd, text in texts.items():
        for markup in ("``", ":func:", ":class:", ":mod:", ".. "):
            assert markup not in text, (cmd, markup)
    assert "(default: 100)" in texts["train"] and "(default: 10)" in texts["train"]
    assert "(default: 5)" in texts["sample"]
    assert "--version" in texts[""] and "fastlmrl train" in texts[""]


def test_version(capsys):
    import fastlmrl

    assert _help(["--version"], capsys).strip() == f"fastlmrl {fastlmrl.__version__}"


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _run_progress(stream, total=50):
    progress = cli.Progress(total, stream=stream)
    for i in range(total):
        progress(None, {"iteration": i, "reward": 0.5})
    return stream.getvalue()


def test_progress_writes_plain_lines_when_not_a_terminal():
    log = _run_progress(io.StringIO())
    assert "\r" not in log
    lines = log.splitlines()
    assert 5 <= len(lines) <= 11 and lines[-1].startswith("iteration 50/50")
    terminal = _run_progress(_Terminal())
    assert terminal.count("\r") == 50 and terminal.endswith("\n")


def test_train_progress_in_a_log_has_no_carriage_returns(tmp_path, capsys):
    assert (
        cli.main(
            [
                "train",
                "--algo",
                "q_learning",
                "--env",
                "toy",
                "--out",
                str(tmp_path / "r"),
                "--steps",
                "20",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err  # pytest's capture is not a terminal
    assert "\r" not in err and "iteration 20/20" in err


# --- files of a run honour the umask ----------------------------------------------------------


def test_run_files_honour_the_umask(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        assert cli.main(_toy(tmp_path / "run", "--steps", "2")) == 0
    finally:
        os.umask(old)
    for name in ("checkpoint.ckpt", "metrics.jsonl", "metrics.csv"):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o644, name
    assert zipfile.is_zipfile(tmp_path / "run" / "checkpoint.ckpt")
