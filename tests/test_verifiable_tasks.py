"""Verifiable tasks: generators checked against answers computed here, strict exact-match reward."""

import numpy as np
import pytest

from fastlmrl.verifiable_tasks import (
    TASKS,
    ArithmeticTask,
    CopyTask,
    ReasoningGymTask,
    ReverseTask,
    SortDigitsTask,
    exact_match_reward,
    get_task,
)


def test_arithmetic_answers_match_python_ints():
    task = ArithmeticTask(max_digits=3, ops="+-*")
    prompts = task.prompts(300, seed=5)
    seen_ops = set()
    for p, a in zip(prompts, task.answers(prompts)):
        assert p.endswith("=")
        body = p[:-1]
        op = next(c for c in body if c in "+-*")
        x, y = body.split(op)
        seen_ops.add(op)
        assert 0 <= int(x) < 1000 and 0 <= int(y) < 1000
        assert str(int(x)) == x and str(int(y)) == y  # no leading zeros
        expected = {"+": int(x) + int(y), "-": int(x) - int(y), "*": int(x) * int(y)}[op]
        assert a == str(expected) and expected >= 0
    assert seen_ops == {"+", "-", "*"}


def test_arithmetic_hand_cases():
    task = ArithmeticTask()
    assert task.answer("12+35=") == "47"
    assert task.answer("99+99=") == "198"
    assert task.answer("0+0=") == "0"
    for bad in ("12+35", "012+3=", "123+4=", "1-2=", "12 + 35=", "a+b="):
        with pytest.raises(ValueError):
            task.answer(bad)


def test_string_tasks_against_independent_answers():
    for task, solve in (
        (ReverseTask(), lambda s: "".join(reversed(list(s)))),
        (CopyTask(), lambda s: s),
        (
            SortDigitsTask(min_len=3, max_len=6),
            lambda s: "".join(str(d) for d in sorted(int(c) for c in s)),
        ),
    ):
        prompts = task.prompts(200, seed=1)
        lengths = set()
        for p, a in zip(prompts, task.answers(prompts)):
            word, rest = p.split(" ")
            assert word == task.name and rest.endswith("=")
            s = rest[:-1]
            lengths.add(len(s))
            assert a == solve(s)
        assert lengths == set(range(task.min_len, task.max_len + 1))
    assert ReverseTask().answer("reverse abc=") == "cba"
    assert SortDigitsTask().answer("sort 3141=") == "1134"
    with pytest.raises(ValueError):
        SortDigitsTask().answer("sort 3a=")
    with pytest.raises(ValueError):
        ReverseTask(max_len=3).answer("reverse abcd=")


def test_prompts_are_deterministic_and_prefix_stable():
    task = ArithmeticTask()
    assert task.prompts(50, seed=2) == task.prompts(50, seed=2)
    assert task.prompts(50, seed=2)[:20] == task.prompts(20, seed=2)
    assert task.prompts(50, seed=2) != task.prompts(50, seed=3)
    assert task.prompts(0) == []


@pytest.mark.parametrize("name", sorted(TASKS))
def test_splits_are_disjoint_and_sized(name):
    task = get_task(name)
    train = task.prompts(400, seed=0, split="train")
    test = task.prompts(200, seed=0, split="test")
    assert not set(train) & set(test)
    assert not any(task.is_held_out(p) for p in train)
    assert all(task.is_held_out(p) for p in test)
    everything = task.prompts(3000, seed=9, split="all")
    frac = np.mean([task.is_held_out(p) for p in everything])
    assert 0.07 < frac < 0.13  # 10 % held out


def test_reward_is_strict():
    task = ArithmeticTask()
    prompts = ["12+35="] * 10
    completions = ["47", "47\n", "47\nanything", "4", "470", " 47", "47 ", "", "\n", "74"]
    r = task.reward(prompts, completions)
    assert r.dtype == np.float64
    assert r.tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    # a completion that hit the length limit without stopping earns nothing ...
    term = [False, False, False, True, True, True, True, True, True, True]
    assert task.reward(prompts, completions, term).tolist() == [0, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert task.success(prompts, completions) == pytest.approx(0.3)
    assert task.success([], []) == 0.0


def test_reward_checks_everything_first():
    task = ArithmeticTask()
    with pytest.raises(ValueError, match="same length"):
        task.reward(["1+1="], ["2", "2"])
    with pytest.raises(ValueError, match=r"prompts\[1\]"):
        task.reward(["1+1=", "oops"], ["2", "2"])
    with pytest.raises(TypeError, match=r"completions\[0\]"):
        task.reward(["1+1="], [2])
    with pytest.raises(ValueError, match="terminated"):
        task.reward(["1+1="], ["2"], terminated=[True, False])
    with pytest.raises(TypeError, match="terminated"):
        task.reward(["1+1="], ["2"], terminated=[0.5])
    assert exact_match_reward(["2"], ["2"], np.array([1], dtype=np.int8)).tolist() == [1.0]
    with pytest.raises(ValueError, match="unknown task"):
        get_task("poetry")


def test_task_arguments_are_checked():
    with pytest.raises(ValueError, match="ops"):
        ArithmeticTask(ops="/")
    with pytest.raises(ValueError, match="max_len"):
        ReverseTask(min_len=4, max_len=2)
    with pytest.raises(TypeError, match="n must be an int"):
        ArithmeticTask().prompts(2.0)
    with pytest.raises(ValueError, match="split"):
        ArithmeticTask().prompts(2, split="valid")
    with pytest.raises(ValueError, match="held_out_fraction"):
        ArithmeticTask(held_out_fraction=1.0)


def test_reasoning_gym_adapter_or_clear_import_error():
    try:
        import reasoning_gym  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install reasoning-gym"):
            ReasoningGymTask("basic_arithmetic")
        return
    task = ReasoningGymTask("basic_arithmetic", size=50, seed=1)
    prompts = task.prompts(5, seed=0, split="all")
    answers = task.answers(prompts)
    assert task.reward(prompts, answers).tolist() == [1.0] * 5
    assert task.reward(prompts, answers, terminated=[False] * 5).tolist() == [0.0] * 5
