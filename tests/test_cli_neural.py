"""The command line of the neural trainers: ``fastlmrl train --policy neural``, ``fastlmrl sample``
on a neural run, ``fastlmrl demo --neural`` (fastlmrl/neural_run.py).

Everything runs on a tiny random GPT-2 saved into a temporary folder (``--model``), a few
iterations: these tests check the plumbing (run folder, metrics, resume, samples, one-line
errors); the learning itself is tested in tests/test_neural_trainers.py.
"""

import json
import re
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from fastlmrl.cli import main  # noqa: E402
from fastlmrl.neural import build_model, load_model, save_model  # noqa: E402
from fastlmrl.tokenizers import CharTokenizer  # noqa: E402
from fastlmrl.verifiable_tasks import get_task  # noqa: E402

SMALL = ["--set", "num_prompts=2", "--set", "num_generations=2", "--set", "max_completion_length=4"]


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    """A tiny random GPT-2 with a character tokenizer covering the copy task."""
    folder = tmp_path_factory.mktemp("model") / "start"
    tok = CharTokenizer(get_task("copy").alphabet + "\n")
    save_model(
        build_model(tok.vocab_size, n_layer=1, n_embd=16, n_head=2, n_positions=64, seed=0),
        tok,
        folder,
    )
    return str(folder)


def train(start, run, steps, *extra):
    return main(
        [
            "train",
            "--policy",
            "neural",
            "--algo",
            "grpo",
            "--task",
            "copy",
            "--steps",
            str(steps),
            "--out",
            str(run),
            "--quiet",
            *extra,
        ]
    )


def weights(folder):
    model, _ = load_model(folder)
    return model.state_dict()


def error_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_train_writes_the_run_and_resume_equals_an_uninterrupted_run(start, tmp_path, capsys):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train(start, straight, 3, "--model", start, *SMALL) == 0
    for name in ("run.json", "checkpoint.ckpt", "metrics.jsonl", "metrics.csv"):
        assert (straight / name).is_file(), name
    rows = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    for key in ("reward", "success_rate", "kl", "entropy", "logprob_mismatch_max"):
        assert key in rows[0], key
    assert (straight / "metrics.csv").read_text().splitlines()[0].count(",") > 5
    # interrupted after 2 iterations, resumed to 3 (the run's own --set options are reused)
    assert train(start, split, 2, "--model", start, "--checkpoint-every", "1", *SMALL) == 0
    capsys.readouterr()
    assert train(start, split, 3, "--resume") == 0
    out = capsys.readouterr().out
    assert "using the run's settings" in out and "resumed" in out
    a, b = weights(straight / "model"), weights(split / "model")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [
        json.loads(x)["iteration"] for x in (split / "metrics.jsonl").read_text().splitlines()
    ] == [0, 1, 2]
    # nothing left to do, an existing run without --resume, a changed --set
    assert train(start, split, 3, "--resume") == 0
    assert "nothing to do" in capsys.readouterr().out
    assert train(start, split, 4, "--model", start) == 2
    assert "already holds a run" in error_line(capsys)
    assert train(start, split, 4, "--resume", "--set", "lr=0.5") == 2
    assert "--set" in error_line(capsys)
    # --overwrite replaces it
    assert train(start, split, 1, "--model", start, "--overwrite", *SMALL) == 0
    assert len((split / "metrics.jsonl").read_text().splitlines()) == 1


def test_sample_prints_completions_rewards_and_the_success_rate(start, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(start, run, 1, "--model", start, *SMALL) == 0
    capsys.readouterr()
    assert main(["sample", str(run), "--num", "6", "--seed", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 7, lines
    task = get_task("copy")
    held_out = task.prompts(6, seed=3, split="test")
    rewards = []
    for line, prompt in zip(lines, held_out):
        assert line.startswith(repr(prompt) + " -> "), (line, prompt)
        rewards.append(float(re.search(r"reward (\S+)", line).group(1)))
    assert set(rewards) <= {0.0, 1.0}
    # the summary agrees with the printed rewards (and the checkpoint file works as RUN too)
    assert f"success rate {sum(rewards) / 6:.3f} ({int(sum(rewards))}/6 held-out" in lines[-1]
    assert main(["sample", str(run / "checkpoint.ckpt"), "--num", "6", "--seed", "3"]) == 0
    assert capsys.readouterr().out.strip().splitlines() == lines
    assert main(["sample", str(run), "--epsilon", "0.1"]) == 2
    assert "--epsilon" in error_line(capsys)


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--algo", "grpo"], "--task"),
        (["--algo", "grpo", "--task", "nonsense"], "--task nonsense"),
        (["--algo", "sarsa", "--task", "copy"], "--algo sarsa"),
        (["--algo", "grpo", "--task", "copy", "--set", "nope=1"], "--set nope"),
        (["--algo", "grpo", "--task", "copy", "--set", "num_generations=abc"], "integer"),
        (["--algo", "grpo", "--task", "copy", "--set", "num_generations=1"], "group_size"),
        (["--algo", "ppo", "--task", "copy", "--set", "value_head=maybe"], "value_head"),
        (["--algo", "grpo", "--task", "copy", "--model", "/nonexistent/folder"], "--model"),
    ],
)
def test_errors_are_one_line_naming_the_option(argv, named, tmp_path, capsys):
    assert main(["train", "--policy", "neural", "--out", str(tmp_path / "r"), *argv]) == 2
    assert named in error_line(capsys)
    assert not (tmp_path / "r").exists()


def test_neural_options_need_policy_neural(tmp_path, capsys):
    assert main(["train", "--algo", "grpo", "--task", "copy", "--out", str(tmp_path)]) == 2
    assert "--task applies to --policy neural" in error_line(capsys)
    assert main(["demo", "--task", "copy"]) == 2
    assert "--task applies to the demo with --neural" in error_line(capsys)


def test_missing_torch_names_the_install_command(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)
    assert (
        main(
            [
                "train",
                "--policy",
                "neural",
                "--algo",
                "grpo",
                "--task",
                "copy",
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    assert "pip install 'fastlmrl[neural]'" in error_line(capsys)
    assert main(["demo", "--neural"]) == 2
    assert "pip install 'fastlmrl[neural]'" in error_line(capsys)


def test_demo_neural_prints_before_and_after(start, capsys):
    threads = torch.get_num_threads()
    assert main(["demo", "--neural", "--model", start, "--task", "copy", "--iterations", "2"]) == 0
    assert torch.get_num_threads() == threads  # restored
    out = capsys.readouterr().out
    assert "before GRPO:" in out and "after GRPO:" in out
    match = re.search(
        r"success rate (\d\.\d+) -> (\d\.\d+); KL to the starting model "
        r"(-?\d\.\d+) -> (-?\d+\.\d+)",
        out,
    )
    assert match, out
    assert float(match.group(3)) == 0.0  # the starting policy is the reference (to 3 decimals)
    assert re.search(r"iter +2 +training success", out)
    assert out.count(" -> '") >= 12  # samples before and after


def test_lexicon_task_counts_whole_words():
    from fastlmrl.lexicon_task import LexiconTask, count_whole_words

    lexicon = ("kind", "brave")
    assert count_whole_words("a kind owl.", lexicon) == 1
    assert count_whole_words("kindly skind kinds", lexicon) == 0
    assert count_whole_words("kind,brave kind", lexicon) == 3
    assert count_whole_words("", lexicon) == 0
    task = LexiconTask(lexicon=lexicon)
    train, test = task.prompts(50, seed=1), task.prompts(50, seed=1, split="test")
    assert task.prompts(5, seed=1) == train[:5]
    assert all(p.endswith(" ") and " " not in p[:-1] for p in train + test)
    assert task.reward(train[:3], ["so kind", "brave, kind", "kindly"]).tolist() == [1.0, 2.0, 0.0]
    assert task.success(train[:3], ["so kind", "brave, kind", "kindly"]) == pytest.approx(2 / 3)


def test_demo_neural_on_the_lexicon_task(tmp_path, capsys):
    from fastlmrl.corpus import load_corpus

    tok = CharTokenizer(load_corpus())
    save_model(
        build_model(tok.vocab_size, n_layer=1, n_embd=16, n_head=2, n_positions=64, seed=0),
        tok,
        tmp_path / "m",
    )
    assert (
        main(
            [
                "demo",
                "--neural",
                "--model",
                str(tmp_path / "m"),
                "--task",
                "lexicon",
                "--iterations",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "lexicon words" in out and "before GRPO:" in out and "after GRPO:" in out
    # the same task trains as a run (a run folder, then `fastlmrl sample` on it)
    run = str(tmp_path / "r")
    assert (
        main(
            [
                "train",
                "--policy",
                "neural",
                "--algo",
                "grpo",
                "--task",
                "lexicon",
                "--out",
                run,
                "--model",
                str(tmp_path / "m"),
                "--steps",
                "1",
                "--quiet",
                "--set",
                "num_prompts=2",
                "--set",
                "num_generations=2",
                "--set",
                "max_new_tokens=4",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["sample", run, "--num", "2"]) == 0
    assert "success rate" in capsys.readouterr().out
