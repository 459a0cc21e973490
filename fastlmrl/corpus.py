"""Training text for the n-gram language model: a built-in corpus, user files, a held-out split.

The default corpus (:func:`default_corpus`) is generated, not shipped: a small English grammar
written for fastlmrl (agents, objects, places, times; statements, questions, plurals, subordinate
clauses) is expanded with fastlmrl's counter-based generator (:mod:`fastlmrl.rng`), which is pure
integer arithmetic, so the text is the same on every machine, Python version and hash seed.  It is
plain ASCII, one sentence per line (a line is one training sequence, see
:meth:`fastlmrl.CharTokenizer.encode_lines`), about 110 KB for the default 2000 sentences.  No
third-party prose is involved.

:func:`load_corpus` returns the default corpus or reads a user file (the ``--corpus FILE`` option)
with strict UTF-8 decoding; :func:`train_test_split` splits a text into training and held-out
lines, deterministically.
"""

from __future__ import annotations

import functools
import numbers
import os
from collections.abc import Sequence
from typing import TypeVar

from . import _validation as check
from .rng import MASK64, stream_key, uniform

__all__ = [
    "DEFAULT_SENTENCES",
    "default_corpus",
    "generate_corpus",
    "load_corpus",
    "train_test_split",
]

_T = TypeVar("_T")

#: Number of sentences of :func:`default_corpus`.
DEFAULT_SENTENCES = 2000
#: The most sentences :func:`generate_corpus` makes in one call.
MAX_SENTENCES = 2**22

# --- the grammar's lexicon ------------------------------------------------------------------
_NAMES = (
    "Ada",
    "Bruno",
    "Clara",
    "Dario",
    "Elin",
    "Farah",
    "Greta",
    "Hugo",
    "Ines",
    "Jonas",
    "Kira",
    "Lena",
    "Milo",
    "Nora",
    "Otto",
    "Pia",
)
_AGENTS = (
    ("fox", "foxes"),
    ("robot", "robots"),
    ("teacher", "teachers"),
    ("baker", "bakers"),
    ("cat", "cats"),
    ("farmer", "farmers"),
    ("bird", "birds"),
    ("child", "children"),
    ("owl", "owls"),
    ("sailor", "sailors"),
    ("student", "students"),
    ("neighbour", "neighbours"),
    ("painter", "painters"),
    ("dog", "dogs"),
)
_THINGS = (
    ("river", "rivers"),
    ("boat", "boats"),
    ("lamp", "lamps"),
    ("garden", "gardens"),
    ("bridge", "bridges"),
    ("letter", "letters"),
    ("apple", "apples"),
    ("kettle", "kettles"),
    ("window", "windows"),
    ("map", "maps"),
    ("engine", "engines"),
    ("story", "stories"),
    ("song", "songs"),
    ("puzzle", "puzzles"),
    ("key", "keys"),
    ("book", "books"),
    ("stone", "stones"),
    ("tree", "trees"),
    ("clock", "clocks"),
    ("basket", "baskets"),
    ("umbrella", "umbrellas"),
    ("island", "islands"),
)
_ADJECTIVES = (
    "quiet",
    "curious",
    "small",
    "old",
    "bright",
    "tired",
    "clever",
    "gentle",
    "brave",
    "patient",
    "noisy",
    "young",
    "careful",
    "lazy",
    "happy",
    "green",
    "red",
    "wooden",
    "silver",
    "round",
    "tiny",
    "enormous",
    "friendly",
    "strange",
)
_TRANSITIVE = (
    ("finds", "find", "found"),
    ("watches", "watch", "watched"),
    ("builds", "build", "built"),
    ("paints", "paint", "painted"),
    ("carries", "carry", "carried"),
    ("repairs", "repair", "repaired"),
    ("reads", "read", "read"),
    ("follows", "follow", "followed"),
    ("opens", "open", "opened"),
    ("counts", "count", "counted"),
    ("cleans", "clean", "cleaned"),
    ("draws", "draw", "drew"),
    ("sells", "sell", "sold"),
    ("hides", "hide", "hid"),
    ("remembers", "remember", "remembered"),
    ("explores", "explore", "explored"),
)
_INTRANSITIVE = (
    ("sleeps", "sleep", "slept"),
    ("sings", "sing", "sang"),
    ("waits", "wait", "waited"),
    ("laughs", "laugh", "laughed"),
    ("walks", "walk", "walked"),
    ("listens", "listen", "listened"),
    ("dreams", "dream", "dreamed"),
    ("works", "work", "worked"),
    ("rests", "rest", "rested"),
    ("dances", "dance", "danced"),
)
_PLACES = (
    "near the river",
    "in the garden",
    "under the bridge",
    "behind the old mill",
    "on the hill",
    "at the market",
    "by the window",
    "inside the library",
    "across the field",
    "along the road",
    "in the kitchen",
    "beside the lake",
)
_TIMES = (
    "in the morning",
    "after the rain",
    "before dinner",
    "at night",
    "every day",
    "on Sunday",
    "during the winter",
    "at noon",
    "once a week",
    "in the evening",
)
_ADVERBS = ("slowly", "quickly", "carefully", "quietly", "happily", "again", "proudly", "early")
_NUMBERS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve")
_DETERMINERS = ("the", "the", "a", "my", "our", "that", "every")


class _Chooser:
    """Choices driven by the counter-based generator: draw ``i`` uses counter ``i``."""

    def __init__(self, seed: int):
        self.key = stream_key(seed, 0x636F72707573)  # stream "corpus"
        self.counter = 0

    def u(self) -> float:
        v = uniform(self.key, self.counter)
        self.counter += 1
        return v

    def pick(self, seq: Sequence[_T]) -> _T:
        return seq[int(self.u() * len(seq))]

    def chance(self, p: float) -> bool:
        return self.u() < p


def _article(word: str, det: str) -> str:
    if det == "a" and word[0] in "aeiou":
        return "an"
    return det


def _np_singular(
    r: _Chooser, nouns: Sequence[tuple[str, str]] = _AGENTS, allow_name: bool = True
) -> str:
    if allow_name and r.chance(0.2):
        return r.pick(_NAMES)
    noun = r.pick(nouns)[0]
    det = r.pick(_DETERMINERS)
    if r.chance(0.6):
        adj = r.pick(_ADJECTIVES)
        return f"{_article(adj, det)} {adj} {noun}"
    return f"{_article(noun, det)} {noun}"


def _np_object(r: _Chooser) -> str:
    if r.chance(0.25):
        return _np_singular(r, _AGENTS, allow_name=True)
    return _np_singular(r, _THINGS, allow_name=False)


def _np_plural(r: _Chooser, nouns: Sequence[tuple[str, str]] = _AGENTS) -> str:
    noun = r.pick(nouns)[1]
    det = r.pick(("the", "some", "our", r.pick(_NUMBERS)))
    if r.chance(0.5):
        return f"{det} {r.pick(_ADJECTIVES)} {noun}"
    return f"{det} {noun}"


def _sentence(r: _Chooser) -> str:
    kind = int(r.u() * 10)
    if kind == 0:
        s = f"{_np_singular(r)} {r.pick(_TRANSITIVE)[0]} {_np_object(r)}"
        if r.chance(0.5):
            s += f" {r.pick(_PLACES)}"
        if r.chance(0.3):
            s += f" {r.pick(_TIMES)}"
        return s + "."
    if kind == 1:
        return (
            f"{r.pick(_TIMES)}, {_np_singular(r)} {r.pick(_TRANSITIVE)[0]} "
            f"{_np_object(r)} {r.pick(_ADVERBS)}."
        )
    if kind == 2:
        return f"{_np_singular(r)} {r.pick(_INTRANSITIVE)[0]} {r.pick(_ADVERBS)} {r.pick(_PLACES)}."
    if kind == 3:
        aux, form = (("does", 1), ("did", 1))[int(r.u() * 2)]
        s = f"{aux} {_np_singular(r)} {r.pick(_TRANSITIVE)[form]} {_np_object(r)}"
        if r.chance(0.5):
            s += f" {r.pick(_PLACES)}"
        return s + "?"
    if kind == 4:
        return (
            f"{_np_singular(r)} {r.pick(_TRANSITIVE)[2]} {_np_object(r)} and "
            f"{r.pick(_TRANSITIVE)[2]} {_np_object(r)}."
        )
    if kind == 5:
        return (
            f"there are {r.pick(_NUMBERS)} {r.pick(_ADJECTIVES)} {r.pick(_THINGS)[1]} "
            f"{r.pick(_PLACES)}."
        )
    if kind == 6:
        return (
            f"{_np_singular(r)} is {r.pick(_ADJECTIVES)} because {_np_singular(r)} "
            f"{r.pick(_TRANSITIVE)[2]} {_np_object(r)}."
        )
    if kind == 7:
        return (
            f"when {_np_singular(r)} {r.pick(_INTRANSITIVE)[0]}, {_np_singular(r)} "
            f"{r.pick(_TRANSITIVE)[0]} {_np_object(r)}."
        )
    if kind == 8:
        s = f"{_np_plural(r)} {r.pick(_TRANSITIVE)[1]} {_np_object(r)} {r.pick(_PLACES)}"
        return s + ("!" if r.chance(0.2) else ".")
    return (
        f"{r.pick(_NAMES)} says that {_np_singular(r)} {r.pick(_INTRANSITIVE)[0]} {r.pick(_TIMES)}."
    )


def generate_corpus(n_sentences: int = DEFAULT_SENTENCES, seed: int = 0) -> str:
    """``n_sentences`` sentences of the built-in grammar, one per line (ends with a newline).

    Deterministic: a pure function of ``(n_sentences, seed)`` (the first ``m`` sentences of a
    longer corpus are the ``m``-sentence corpus).
    """
    n = check.positive_int(n_sentences, "n_sentences", 1)
    if n > MAX_SENTENCES:  # ~45 bytes and ~5 us each: more would exhaust memory or take hours
        raise ValueError(f"n_sentences = {n} is too large: at most 2**22 = {MAX_SENTENCES}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if seed > MASK64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    r = _Chooser(seed)
    lines = []
    for _ in range(n):
        s = _sentence(r)
        lines.append(s[0].upper() + s[1:])
    return "\n".join(lines) + "\n"


@functools.lru_cache(maxsize=1)
def default_corpus() -> str:
    """The built-in corpus: ``generate_corpus(DEFAULT_SENTENCES, seed=0)`` (~110 KB, ASCII)."""
    return generate_corpus(DEFAULT_SENTENCES, 0)


def load_corpus(path: str | os.PathLike[str] | None = None) -> str:
    """The default corpus (``path=None``) or the text of the file ``path``.

    The file is decoded as strict UTF-8 (a leading byte-order mark is dropped; ``\\r\\n`` and
    ``\\r`` line ends become ``\\n``).  Raises ValueError naming the file when it does not exist,
    is a directory or unreadable, is empty or holds only whitespace, looks binary (contains NUL
    bytes) or is not valid UTF-8.
    """
    if path is None:
        return default_corpus()
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path must be a str or path-like, got {type(path).__name__}")
    name = os.fsdecode(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ValueError(f"corpus file {name!r} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"corpus file {name!r} is a directory, not a text file") from None
    except OSError as exc:
        raise ValueError(f"corpus file {name!r} cannot be read: {exc.strerror or exc}") from None
    if not raw:
        raise ValueError(f"corpus file {name!r} is empty")
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise ValueError(
            f"corpus file {name!r} looks binary: it contains a NUL byte at offset "
            f"{nul}; a corpus must be UTF-8 text"
        )
    try:
        text = raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"corpus file {name!r} is not valid UTF-8: byte "
            f"0x{raw[exc.start]:02x} at offset {exc.start} ({exc.reason})"
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise ValueError(f"corpus file {name!r} holds only whitespace: no text to train on")
    return text


def train_test_split(text: str, test_fraction: float = 0.1) -> tuple[str, str]:
    """Split ``text`` into ``(train, test)`` by lines, deterministically.

    The non-blank lines are kept in order; the last ``round(test_fraction * n)`` (at least one,
    and leaving at least one for training) are the held-out text.  Both parts are returned as
    newline-terminated text.  A contiguous split keeps neighbouring lines together, so
    held-out text is not a shuffled copy of training text.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    frac = check.real(test_fraction, "test_fraction", 0.0, 1.0, low_open=True, high_open=True)
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        raise ValueError(f"text must hold at least 2 non-blank lines to split, got {len(lines)}")
    n_test = min(max(1, round(frac * len(lines))), len(lines) - 1)
    cut = len(lines) - n_test
    return "\n".join(lines[:cut]) + "\n", "\n".join(lines[cut:]) + "\n"
