"""Status codes returned by the kernels' input pre-pass (0 = success): one enum for the package.

A kernel checks its arguments *before* it writes anything and returns 0 or the code of the first
bad argument, so a refused call leaves every table untouched; the public wrappers turn a non-zero
code into a ValueError that names the argument (:func:`fastlmrl._contract.raise_for_status`, which
reads the argument each code names from the topic's kernel contract).

:class:`Status` is public as ``fastlmrl.Status`` and ``fastlmrl.numba_kernels.Status``.  Every code
has one value across the package (``@enum.unique``).  Inside Numba code compare with the module
constants below (one plain int per member, e.g. ``BAD_SHAPES``); Cython code cimports the same
values from ``fastlmrl/_cython/status.pxd``.  Both are generated from this enum (``python -m
fastlmrl._status --write``; ``tests/test_contract.py`` checks they are current).

Migration note (issue 14): the topics listed in ``fastlmrl._contract.MIGRATED`` return these
values; the other topics still define local numbers (some may reuse a value for another meaning;
``optimizers`` had ``BAD_SHAPES = 32`` until it migrated) until they migrate.
"""

from __future__ import annotations

import enum
import sys

__all__ = ["Status", "pxd_text"]


@enum.unique
class Status(enum.IntEnum):
    """Every status code a fastlmrl kernel returns (0 = success)."""

    OK = 0
    # --- 1-8: shared by every topic -------------------------------------------------------------
    BAD_STATES = 1  #: a state id outside [0, S)
    BAD_ACTIONS = 2  #: an action id outside [0, V)
    BAD_NEXT_STATES = 3  #: a next-state id outside [0, S)
    BAD_NEXT_ACTIONS = 4  #: a next-action id outside [0, V)
    BAD_REWARDS = 5  #: a reward that is NaN or infinite
    BAD_OFFSETS = 6  #: episode offsets not increasing from 0 to N
    #: array arguments of inconsistent shapes (a too-short output, per-item input, ...): checked
    #: first, before any other check.  The public wrappers always pass consistent shapes; only a
    #: direct Numba/Cython caller gets it.
    BAD_SHAPES = 7
    #: an array the kernel writes shares memory with another array argument (a write could change
    #: an id after its range check).  O(1) address-range check, after BAD_SHAPES.
    OVERLAPPING_ARRAYS = 8
    # --- scalar hyper-parameters ------------------------------------------------------------------
    BAD_EPSILON = 10  #: epsilon outside [0, 1] (or NaN)
    BAD_TEMPERATURE = 11  #: a temperature that is not positive and finite
    BAD_ALPHA = 12  #: step size alpha outside (0, 1] (or NaN)
    BAD_GAMMA = 13  #: discount gamma outside [0, 1] (or NaN)
    # --- log-probabilities, losses, advantages ----------------------------------------------------
    BAD_LOGITS = 20
    BAD_TOKENS = 21
    BAD_WEIGHTS = 22
    BAD_COUNT_VALUES = 23  #: a negative or overflowing Monte Carlo visit count
    BAD_OLD_LOG_PROBS = 24
    BAD_REF_LOG_PROBS = 25
    BAD_SEQUENCE_OFFSETS = 26
    BAD_BASELINES = 27
    BAD_VALUES = 28
    BAD_RETURNS = 29
    BAD_OLD_VALUES = 30
    BAD_CONTEXTS = 31
    BAD_TREE = 32  #: an ArgmaxTree's nodes do not fit its table (shape / block size)
    CORRUPT_TREE = 33  #: an ArgmaxTree node read by the call lies outside its span of the table
    UNSORTED = 34
    BAD_MOMENTS = 35  #: Adam's second moment v < 0
    BAD_HYPERPARAMETERS = 36
    # --- environments, advantages, groups ---------------------------------------------------------
    BAD_PROMPT_IDS = 40
    BAD_PROMPT_TOKENS = 41
    BAD_BOOTSTRAP = 42
    BAD_ENDS = 43
    BAD_CONFIG = 44
    BAD_LOG_PROBS = 45
    BAD_STEPS = 46
    BAD_ESTIMATOR = 47
    BAD_GROUP_IDS = 48
    BAD_GROUP_SIZE = 49
    BAD_OPTION = 50
    # --- iteration counts, keyword scores ---------------------------------------------------------
    BAD_ITERATIONS = 60  #: an iteration count of 2**31 or more
    BAD_GRAM_TOKENS = 61
    BAD_GRAM_OFFSETS = 62
    BAD_GRAM_WEIGHTS = 63
    BAD_OUT = 64
    # --- codes that topics still number differently (their new, unique values) --------------------
    BAD_COUNTS = 65
    BAD_SCRATCH = 66
    BAD_FINAL_VALUES = 67
    BAD_ADVANTAGES = 68
    BAD_ROWS = 69
    BAD_GRADS = 70
    BAD_TOP_K = 71
    BAD_TOP_P = 72
    BAD_MIN_P = 73
    BAD_ORDER = 74
    BAD_MASK_LOGITS = 75
    BAD_LENGTHS = 76
    OVERLAPPING_SCRATCH = 77
    NO_MEMORY = 99  #: a kernel could not allocate its scratch memory

    @property
    def argument(self) -> str:
        """The argument this code names by default (a kernel's contract may name another)."""
        return ARGUMENT.get(self, self.name.lower().removeprefix("bad_"))


#: Local spellings still used by unmigrated topics, and the member they become on migration.
RENAMED = {
    "BAD_LOGP": Status.BAD_LOG_PROBS,
    "BAD_OLD_LOGP": Status.BAD_OLD_LOG_PROBS,
    "BAD_REF_LOGP": Status.BAD_REF_LOG_PROBS,
}

# Every member as a plain module-level int (Numba reads module globals as compile-time constants;
# the kernel modules import the codes they return from here: ``from .._status import BAD_SHAPES``).
# Written out so that tools and mypy see them; tests/test_contract.py checks that they match.
# BEGIN GENERATED by `python -m fastlmrl._status --write`; do not edit.
OK = 0
BAD_STATES = 1
BAD_ACTIONS = 2
BAD_NEXT_STATES = 3
BAD_NEXT_ACTIONS = 4
BAD_REWARDS = 5
BAD_OFFSETS = 6
BAD_SHAPES = 7
OVERLAPPING_ARRAYS = 8
BAD_EPSILON = 10
BAD_TEMPERATURE = 11
BAD_ALPHA = 12
BAD_GAMMA = 13
BAD_LOGITS = 20
BAD_TOKENS = 21
BAD_WEIGHTS = 22
BAD_COUNT_VALUES = 23
BAD_OLD_LOG_PROBS = 24
BAD_REF_LOG_PROBS = 25
BAD_SEQUENCE_OFFSETS = 26
BAD_BASELINES = 27
BAD_VALUES = 28
BAD_RETURNS = 29
BAD_OLD_VALUES = 30
BAD_CONTEXTS = 31
BAD_TREE = 32
CORRUPT_TREE = 33
UNSORTED = 34
BAD_MOMENTS = 35
BAD_HYPERPARAMETERS = 36
BAD_PROMPT_IDS = 40
BAD_PROMPT_TOKENS = 41
BAD_BOOTSTRAP = 42
BAD_ENDS = 43
BAD_CONFIG = 44
BAD_LOG_PROBS = 45
BAD_STEPS = 46
BAD_ESTIMATOR = 47
BAD_GROUP_IDS = 48
BAD_GROUP_SIZE = 49
BAD_OPTION = 50
BAD_ITERATIONS = 60
BAD_GRAM_TOKENS = 61
BAD_GRAM_OFFSETS = 62
BAD_GRAM_WEIGHTS = 63
BAD_OUT = 64
BAD_COUNTS = 65
BAD_SCRATCH = 66
BAD_FINAL_VALUES = 67
BAD_ADVANTAGES = 68
BAD_ROWS = 69
BAD_GRADS = 70
BAD_TOP_K = 71
BAD_TOP_P = 72
BAD_MIN_P = 73
BAD_ORDER = 74
BAD_MASK_LOGITS = 75
BAD_LENGTHS = 76
OVERLAPPING_SCRATCH = 77
NO_MEMORY = 99
# END GENERATED

ARGUMENT = {
    Status.BAD_STATES: "states",
    Status.BAD_ACTIONS: "actions",
    Status.BAD_NEXT_STATES: "next_states",
    Status.BAD_NEXT_ACTIONS: "next_actions",
    Status.BAD_REWARDS: "rewards",
    Status.BAD_OFFSETS: "episode_offsets",
    Status.BAD_SHAPES: "array shapes",
    Status.OVERLAPPING_ARRAYS: "array arguments (one written shares memory with another)",
}


def pxd_text() -> str:
    """The text of ``fastlmrl/_cython/status.pxd``: :class:`Status` as a Cython enum."""
    lines = [
        "# cython: language_level=3",
        "# GENERATED from fastlmrl/_status.py by `python -m fastlmrl._status --write`; "
        "do not edit.",
        "# tests/test_contract.py checks that it matches the enum.  Use:",
        "#     from fastlmrl._cython cimport status",
        "#     return status.BAD_SHAPES",
        "",
        "cdef enum Status:",
    ]
    lines += [f"    {member.name} = {member.value}" for member in Status]
    return "\n".join(lines) + "\n"


BEGIN_CONSTANTS = "# BEGIN GENERATED by `python -m fastlmrl._status --write`; do not edit.\n"
END_CONSTANTS = "# END GENERATED\n"


def constants_text() -> str:
    """The generated block of this module: one ``NAME = value`` line per :class:`Status` member."""
    lines = [f"{member.name} = {member.value}\n" for member in Status]
    return BEGIN_CONSTANTS + "".join(lines) + END_CONSTANTS


def with_constants(source: str) -> str:
    """``source`` (this module's text) with its generated block replaced."""
    start = source.index(BEGIN_CONSTANTS)
    end = source.index(END_CONSTANTS, start) + len(END_CONSTANTS)
    return source[:start] + constants_text() + source[end:]


def _main(argv) -> int:
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    if argv[1:] == ["--write"]:
        path = os.path.join(here, "_cython", "status.pxd")
        with open(path, "w") as handle:
            handle.write(pxd_text())
        print(f"wrote {path}")
        path = os.path.join(here, "_status.py")
        with open(path) as handle:
            source = handle.read()
        if with_constants(source) != source:
            with open(path, "w") as handle:
                handle.write(with_constants(source))
            print(f"wrote the constants of {path}")
        return 0
    sys.stdout.write(pxd_text())
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
