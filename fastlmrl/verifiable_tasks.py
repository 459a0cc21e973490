"""Tasks with verifiable rewards: problems generated offline, answers checked by exact match.

Each task is a family of text problems whose answer a program can compute:

====================  =================  ==========  =============================================
task                  prompt             answer      problem space (defaults)
====================  =================  ==========  =============================================
``arithmetic``        ``12+35=``         ``47``      ``a op b``, ``0 <= a, b < 10**max_digits``
``reverse``           ``reverse abc=``   ``cba``     strings of ``min_len..max_len`` letters
``sort``              ``sort 3141=``     ``1134``    digit strings of ``min_len..max_len``
``copy``              ``copy abc=``      ``abc``     strings of ``min_len..max_len`` letters
====================  =================  ==========  =============================================

A language model sees the prompt and must continue with the answer and then stop (emit its
end-of-sequence token, or a newline).

**Reward** (:meth:`VerifiableTask.reward`): 1 when the completion is *exactly* the answer and the
completion ended -- it stopped at end-of-sequence (``terminated[i]`` True), or the answer is
followed by a newline (what follows the newline is ignored, like a stop string) -- else 0.  No
partial credit: a prefix of the answer, the answer followed by more characters, an answer with
extra spaces, an empty completion and a completion cut by the length limit all score 0.
:meth:`VerifiableTask.success` is the mean reward (the success rate).

**Splits**: every problem belongs to the training or to the held-out split, fixed by a hash of its
prompt (SHA-256; ``held_out_fraction`` of the problem space, default 10 %).  ``prompts(n, seed,
split="train")`` draws training problems only; ``split="test"`` only held-out ones, so an
evaluation on ``"test"`` measures problems never used for pretraining or RL.

**Randomness**: problems are drawn with fastlmrl's counter-based generator
(:mod:`fastlmrl.rng`), so ``prompts(n, seed)`` is the same on every machine; the first ``m``
prompts of ``prompts(n, seed)`` are ``prompts(m, seed)``.

The answers are computed from the parsed prompt (:meth:`VerifiableTask.answer`), so any prompt of
the task's format is accepted, not only generated ones; a prompt not of the format is a
ValueError naming it.

Optional: :class:`ReasoningGymTask` wraps a dataset of the ``reasoning-gym`` package (offline
generators, its own ``score_answer``) behind the same interface.
"""

from __future__ import annotations

import hashlib
import numbers
import re
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from .rng import stream_key, uniform

__all__ = [
    "ArithmeticTask",
    "CopyTask",
    "ReasoningGymTask",
    "ReverseTask",
    "SortDigitsTask",
    "TASKS",
    "VerifiableTask",
    "exact_match_reward",
    "get_task",
]

_SPLITS = ("train", "test", "all")
_MAX_PROMPTS = 2**24


def _int(x, name: str, lo: int, hi: int | None = None) -> int:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(x).__name__}")
    x = int(x)
    if x < lo or (hi is not None and x > hi):
        raise ValueError(f"{name} must be in [{lo}, {hi if hi is not None else 'inf'}], got {x}")
    return x


def _str_list(x, name: str) -> list:
    if isinstance(x, str):
        raise TypeError(f"{name} must be a list of str, got a single str")
    try:
        x = list(x)
    except TypeError:
        raise TypeError(f"{name} must be a list of str, got {type(x).__name__}") from None
    for i, s in enumerate(x):
        if not isinstance(s, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(s).__name__}")
    return x


def _terminated(terminated, n: int) -> np.ndarray:
    if terminated is None:
        return np.ones(n, dtype=bool)
    if hasattr(terminated, "detach"):  # a torch tensor
        terminated = terminated.detach().cpu().numpy()
    arr = np.asarray(terminated)
    if arr.shape != (n,):
        raise ValueError(f"terminated must have shape ({n},) like completions, got {arr.shape}")
    if arr.dtype != np.bool_:
        if arr.dtype.kind not in "iu" or np.any((arr != 0) & (arr != 1)):
            raise TypeError(f"terminated must hold booleans, got dtype {arr.dtype}")
        arr = arr.astype(bool)
    return arr


def exact_match_reward(
    answers: Sequence[str], completions: Sequence[str], terminated: ArrayLike | None = None
) -> np.ndarray:
    """Strict exact-match reward, float64 array of 0/1 (see the module docstring).

    ``completions[i]`` is the generated text after the prompt, special tokens removed and cut
    before the end-of-sequence token; ``terminated[i]`` says whether generation stopped at that
    token (None: every completion did).  Reward 1 iff the text up to the first newline equals
    ``answers[i]`` and the completion ended there (a newline follows, or ``terminated[i]``).
    """
    answers = _str_list(answers, "answers")
    completions = _str_list(completions, "completions")
    if len(answers) != len(completions):
        raise ValueError(
            f"answers and completions must have the same length, got "
            f"{len(answers)} and {len(completions)}"
        )
    ended = _terminated(terminated, len(completions))
    out = np.zeros(len(completions), dtype=np.float64)
    for i, (a, c) in enumerate(zip(answers, completions)):
        cut = c.find("\n")
        if cut >= 0:
            text, done = c[:cut], True
        else:
            text, done = c, bool(ended[i])
        out[i] = 1.0 if (done and text == a and a != "") else 0.0
    return out


class VerifiableTask:
    """Base class: a family of prompts with a computable answer (see the module docstring).

    Subclasses define ``name``, :meth:`_draw` (one random problem's prompt from uniforms) and
    :meth:`answer` (parse a prompt, compute its answer; ValueError for a malformed prompt).
    """

    name = ""
    #: the characters that prompts and answers use (for building a tokenizer's vocabulary)
    alphabet = ""
    #: the share of the problem space in the held-out split, in (0, 1)
    held_out_fraction: float

    def __init__(self, *, held_out_fraction: float = 0.1):
        if isinstance(held_out_fraction, bool) or not isinstance(held_out_fraction, numbers.Real):
            raise TypeError(
                f"held_out_fraction must be a float, got {type(held_out_fraction).__name__}"
            )
        if not 0.0 < float(held_out_fraction) < 1.0:
            raise ValueError(f"held_out_fraction must be in (0, 1), got {held_out_fraction}")
        self.held_out_fraction = float(held_out_fraction)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._describe()})"

    def _describe(self) -> str:
        return f"held_out_fraction={self.held_out_fraction}"

    def config(self) -> dict:
        """The task's parameters (JSON values), e.g. for a cache key."""
        return {"name": self.name, "held_out_fraction": self.held_out_fraction}

    # -- problems ---------------------------------------------------------------------------
    def _draw(self, u) -> str:
        raise NotImplementedError

    def answer(self, prompt: str) -> str:
        """The exact answer to ``prompt`` (ValueError when ``prompt`` is not of the format)."""
        raise NotImplementedError

    def answers(self, prompts: Sequence[str]) -> list[str]:
        """:meth:`answer` of each prompt (all prompts are checked before any answer is given)."""
        prompts = _str_list(prompts, "prompts")
        out: list[str] = []
        for i, p in enumerate(prompts):
            try:
                out.append(self.answer(p))
            except ValueError as exc:
                raise ValueError(f"prompts[{i}]: {exc}") from None
        return out

    def is_held_out(self, prompt: str) -> bool:
        """Whether ``prompt`` is in the held-out split (a hash of the prompt text)."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        h = int.from_bytes(hashlib.sha256(f"{self.name}:{prompt}".encode()).digest()[:8], "big")
        return h < self.held_out_fraction * 2.0**64

    def prompts(self, n: int, seed: int = 0, *, split: str = "train") -> list:
        """``n`` prompts drawn at random (with replacement) from ``split`` (``"train"``,
        ``"test"`` = held-out, or ``"all"``); deterministic in ``(n, seed, split)``."""
        n = _int(n, "n", 0, _MAX_PROMPTS)
        seed = _int(seed, "seed", 0, 2**64 - 1)
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
        draw = _Uniforms(stream_key(seed, 0x7461736B))  # stream "task"; sequential counters
        out: list[str] = []
        tries = 0
        while len(out) < n:
            prompt = self._draw(draw)
            tries += 1
            if tries > 1000 * (n + 10):
                raise RuntimeError(f"{self!r}: could not draw {n} prompts of split {split!r}")
            if split == "all" or self.is_held_out(prompt) == (split == "test"):
                out.append(prompt)
        return out

    def examples(self, n: int, seed: int = 0, *, split: str = "train") -> list:
        """``n`` solved problems as text lines ``prompt + answer`` (for pretraining)."""
        ps = self.prompts(n, seed, split=split)
        return [p + self.answer(p) for p in ps]

    # -- scoring ----------------------------------------------------------------------------
    def reward(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        terminated: ArrayLike | None = None,
    ) -> np.ndarray:
        """Exact-match reward (float64 0/1 per completion): :func:`exact_match_reward` against
        :meth:`answers` of ``prompts``."""
        prompts = _str_list(prompts, "prompts")
        completions = _str_list(completions, "completions")
        if len(prompts) != len(completions):
            raise ValueError(
                f"prompts and completions must have the same length, got "
                f"{len(prompts)} and {len(completions)}"
            )
        return exact_match_reward(self.answers(prompts), completions, terminated)

    def success(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        terminated: ArrayLike | None = None,
    ) -> float:
        """Success rate: the fraction of completions with reward 1 (0.0 for an empty batch)."""
        r = self.reward(prompts, completions, terminated)
        return float(r.mean()) if r.size else 0.0


_LETTERS = "abcdefghijklmnopqrstuvwxyz"


class _Uniforms:
    """Uniform floats in [0, 1) from counters 0, 1, 2, ... of one key (call the object)."""

    def __init__(self, key: int):
        self.key, self.counter = key, 0

    def __call__(self) -> float:
        v = uniform(self.key, self.counter)
        self.counter += 1
        return v


def _length(u, lo: int, hi: int) -> int:
    return lo + min(int(u() * (hi - lo + 1)), hi - lo)


def _choice(u, seq):
    return seq[min(int(u() * len(seq)), len(seq) - 1)]


class ArithmeticTask(VerifiableTask):
    """``a op b=`` -> the decimal result: ``12+35=`` -> ``47``.

    ``0 <= a, b < 10**max_digits`` (uniform), ``ops`` a string of ``+``, ``-``, ``*``; for ``-``
    the larger operand comes first (the answer is never negative).  Numbers are written in
    decimal without leading zeros.
    """

    name = "arithmetic"
    alphabet = "0123456789+-*="

    def __init__(self, *, max_digits: int = 2, ops: str = "+", held_out_fraction: float = 0.1):
        super().__init__(held_out_fraction=held_out_fraction)
        self.max_digits = _int(max_digits, "max_digits", 1, 9)
        if (
            not isinstance(ops, str)
            or not ops
            or any(o not in "+-*" for o in ops)
            or len(set(ops)) != len(ops)
        ):
            raise ValueError(
                f"ops must be a non-empty string of distinct '+', '-', '*', got {ops!r}"
            )
        self.ops = ops
        self._pattern = re.compile(
            f"(0|[1-9][0-9]{{0,{self.max_digits - 1}}})([{re.escape(ops)}])"
            f"(0|[1-9][0-9]{{0,{self.max_digits - 1}}})="
        )

    def _describe(self) -> str:
        return f"max_digits={self.max_digits}, ops={self.ops!r}"

    def config(self) -> dict:
        return {**super().config(), "max_digits": self.max_digits, "ops": self.ops}

    def _draw(self, u) -> str:
        top = 10**self.max_digits
        a = min(int(u() * top), top - 1)
        b = min(int(u() * top), top - 1)
        op = _choice(u, self.ops)
        if op == "-" and b > a:
            a, b = b, a
        return f"{a}{op}{b}="

    def answer(self, prompt: str) -> str:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        m = self._pattern.fullmatch(prompt)
        if m is None:
            raise ValueError(
                f"{prompt!r} is not an arithmetic prompt like '12+35=' "
                f"(operands < 10**{self.max_digits}, ops {self.ops!r})"
            )
        a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
        if op == "+":
            return str(a + b)
        if op == "*":
            return str(a * b)
        if b > a:
            raise ValueError(f"{prompt!r}: subtraction prompts have a >= b")
        return str(a - b)


class _StringTask(VerifiableTask):
    """Prompts ``"<word> <s>="`` over strings ``s`` of ``min_len..max_len`` symbols."""

    word = ""
    symbols = _LETTERS

    def __init__(
        self,
        *,
        min_len: int = 2,
        max_len: int = 5,
        symbols: str | None = None,
        held_out_fraction: float = 0.1,
    ):
        super().__init__(held_out_fraction=held_out_fraction)
        self.min_len = _int(min_len, "min_len", 1, 64)
        self.max_len = _int(max_len, "max_len", 1, 64)
        if self.max_len < self.min_len:
            raise ValueError(f"max_len = {max_len} must be >= min_len = {min_len}")
        if symbols is not None:
            if (
                not isinstance(symbols, str)
                or not symbols
                or len(set(symbols)) != len(symbols)
                or any(not c.isalnum() or not c.isascii() for c in symbols)
            ):
                raise ValueError(
                    f"symbols must be a non-empty string of distinct ASCII letters "
                    f"or digits, got {symbols!r}"
                )
            self.symbols = symbols
        self.alphabet = "".join(sorted(set(self.word + " =" + self.symbols)))
        self._pattern = re.compile(
            f"{self.word} ([{re.escape(self.symbols)}]{{{self.min_len},{self.max_len}}})="
        )

    def _describe(self) -> str:
        return f"min_len={self.min_len}, max_len={self.max_len}, symbols={self.symbols!r}"

    def config(self) -> dict:
        return {
            **super().config(),
            "min_len": self.min_len,
            "max_len": self.max_len,
            "symbols": self.symbols,
        }

    def _draw(self, u) -> str:
        n = _length(u, self.min_len, self.max_len)
        return f"{self.word} {''.join(_choice(u, self.symbols) for _ in range(n))}="

    def _solve(self, s: str) -> str:
        raise NotImplementedError

    def answer(self, prompt: str) -> str:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        m = self._pattern.fullmatch(prompt)
        if m is None:
            raise ValueError(
                f"{prompt!r} is not a {self.name} prompt like "
                f"'{self.word} {self.symbols[:3]}=' ({self.min_len}..{self.max_len} "
                f"of {self.symbols!r})"
            )
        return self._solve(m.group(1))


class ReverseTask(_StringTask):
    """``reverse abc=`` -> ``cba``: the string reversed."""

    name = "reverse"
    word = "reverse"

    def _solve(self, s: str) -> str:
        return s[::-1]


class CopyTask(_StringTask):
    """``copy abc=`` -> ``abc``: the string itself."""

    name = "copy"
    word = "copy"

    def _solve(self, s: str) -> str:
        return s


class SortDigitsTask(_StringTask):
    """``sort 3141=`` -> ``1134``: the digits in ascending order."""

    name = "sort"
    word = "sort"
    symbols = "0123456789"

    def __init__(self, *, min_len: int = 2, max_len: int = 5, held_out_fraction: float = 0.1):
        super().__init__(min_len=min_len, max_len=max_len, held_out_fraction=held_out_fraction)

    def _solve(self, s: str) -> str:
        return "".join(sorted(s))


#: The built-in verifiable tasks by name.
TASKS = {
    "arithmetic": ArithmeticTask,
    "reverse": ReverseTask,
    "sort": SortDigitsTask,
    "copy": CopyTask,
}


def get_task(name: str, **kwargs) -> VerifiableTask:
    """A built-in task by name (``TASKS``), or ``"reasoning_gym:<dataset>"`` for
    :class:`ReasoningGymTask`; ``kwargs`` go to the constructor."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if name.startswith("reasoning_gym:"):
        return ReasoningGymTask(name.split(":", 1)[1], **kwargs)
    if name not in TASKS:
        raise ValueError(
            f"unknown task {name!r}: choose one of {sorted(TASKS)} or 'reasoning_gym:<dataset>'"
        )
    return TASKS[name](**kwargs)


class ReasoningGymTask(VerifiableTask):
    """A ``reasoning-gym`` dataset behind the :class:`VerifiableTask` interface.

    ``reasoning_gym.create_dataset(dataset, size=size, seed=seed)`` generates the problems offline;
    prompts are their ``question`` fields and the reward is the dataset's own
    ``score_answer(completion, entry)`` (a float in [0, 1]; not necessarily 0/1).  Completions cut
    by the length limit (``terminated`` False) score 0.  The train / held-out split is
    :meth:`VerifiableTask.is_held_out` on the question text.  Needs ``pip install reasoning-gym``.
    """

    def __init__(
        self,
        dataset: str,
        *,
        size: int = 1000,
        seed: int = 0,
        held_out_fraction: float = 0.1,
        **dataset_kwargs,
    ):
        super().__init__(held_out_fraction=held_out_fraction)
        try:
            import reasoning_gym
        except ImportError as exc:
            raise ImportError(
                "ReasoningGymTask needs the reasoning-gym package: pip install reasoning-gym"
            ) from exc
        if not isinstance(dataset, str) or not dataset:
            raise TypeError(f"dataset must be a non-empty str, got {dataset!r}")
        self.name = f"reasoning_gym:{dataset}"
        self.size = _int(size, "size", 1, _MAX_PROMPTS)
        self.seed = _int(seed, "seed", 0, 2**64 - 1)
        self._data = reasoning_gym.create_dataset(
            dataset, size=self.size, seed=self.seed, **dataset_kwargs
        )
        self._entries: dict[str, dict] = {}
        for entry in self._data:
            self._entries.setdefault(entry["question"], entry)

    def config(self) -> dict:
        return {**super().config(), "size": self.size, "seed": self.seed}

    def prompts(self, n: int, seed: int = 0, *, split: str = "train") -> list:
        n = _int(n, "n", 0, _MAX_PROMPTS)
        seed = _int(seed, "seed", 0, 2**64 - 1)
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
        pool = [
            q for q in self._entries if split == "all" or self.is_held_out(q) == (split == "test")
        ]
        if not pool and n:
            raise ValueError(f"{self.name}: split {split!r} is empty (size = {self.size})")
        key = stream_key(seed, 0x7461736B)
        return [pool[min(int(uniform(key, i) * len(pool)), len(pool) - 1)] for i in range(n)]

    def answer(self, prompt: str) -> str:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        entry = self._entries.get(prompt)
        if entry is None:
            raise ValueError(f"{prompt[:60]!r} is not a question of {self.name}")
        return str(entry["answer"])

    def reward(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        terminated: ArrayLike | None = None,
    ) -> np.ndarray:
        prompts = _str_list(prompts, "prompts")
        completions = _str_list(completions, "completions")
        if len(prompts) != len(completions):
            raise ValueError(
                f"prompts and completions must have the same length, got "
                f"{len(prompts)} and {len(completions)}"
            )
        self.answers(prompts)  # every prompt checked before scoring
        ended = _terminated(terminated, len(completions))
        out = np.zeros(len(completions), dtype=np.float64)
        for i, (p, c) in enumerate(zip(prompts, completions)):
            if ended[i]:
                out[i] = float(self._data.score_answer(c, self._entries[p]))
        return out
