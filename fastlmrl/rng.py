"""Counter-based random numbers shared bit-for-bit by every backend.

Every random draw in fastlmrl is a pure function of three integers::

    bits(seed, stream, counter) = splitmix64_output(key(seed, stream), counter)
    key(seed, stream)           = mix64(seed XOR mix64(stream * G + C))
    splitmix64_output(k, i)     = mix64(k + (i + 1) * G)            (mod 2**64)
    uniform(seed, stream, i)    = (bits >> 11) * 2**-53              in [0, 1)

with ``G = 0x9E3779B97F4A7C15`` (the golden-ratio increment), ``C = 0x632BE59BD9B4E019`` and
``mix64`` the SplitMix64 finaliser (Steele, Lea & Flood, "Fast splittable pseudorandom number
generators", OOPSLA 2014).  ``splitmix64_output(k, i)`` is exactly the i-th output of a SplitMix64
generator seeded with ``k``, so the stream has SplitMix64's statistical quality, but any draw can be
computed directly from its counter.  That is what makes results independent of the backend and of
the number of threads: the kernel that handles item ``j`` of a batch uses counter ``start + j*d``
whichever thread runs it.

Continuing a stream
-------------------
Functions that draw random numbers take ``seed``: either an ``int`` or a :class:`RandomStream`.

* An ``int`` means "a fresh stream": counter 0 of stream 0 of that seed, every call.  Two calls with
  the same int seed draw the same numbers.
* A :class:`RandomStream` is used from its current ``counter``, which the call then advances by
  exactly the number of counters it consumed (each function documents how many).  A run that
  saves ``stream.state()`` in its checkpoint and restores it with ``RandomStream.from_state`` draws
  afterwards exactly what the uninterrupted run would have drawn.

Capacity and wrap-around
------------------------
A stream has exactly 2**64 counters, ``0 .. 2**64 - 1``; ``RandomStream.counter`` is the number
already used, in ``[0, 2**64]`` (``2**64``: exhausted).  A call that needs more counters than
remain raises :class:`RandomStreamExhausted` (a ``ValueError`` naming the argument) *before it
writes anything* (:func:`check_capacity`).  Inside the draw arithmetic (``key + (i + 1) * G``,
``counter + j``) every sum and product wraps modulo 2**64 in every backend, so the last counter
``2**64 - 1`` is an ordinary draw.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "RandomStream",
    "RandomStreamExhausted",
    "check_capacity",
    "mix64",
    "random_bits",
    "stream_key",
    "uniform",
]

MASK64 = (1 << 64) - 1
NUM_COUNTERS = 1 << 64  # counters of one stream: 0 .. 2**64 - 1
GOLDEN = 0x9E3779B97F4A7C15
STREAM_SALT = 0x632BE59BD9B4E019
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
INV_2_53 = 1.0 / 9007199254740992.0


def mix64(z: int) -> int:
    """The SplitMix64 output function (a bijection of 64-bit integers)."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * MIX1) & MASK64
    z = ((z ^ (z >> 27)) * MIX2) & MASK64
    return z ^ (z >> 31)


def stream_key(seed: int, stream: int = 0) -> int:
    """The 64-bit key of stream ``stream`` of seed ``seed``."""
    return mix64((seed & MASK64) ^ mix64((stream * GOLDEN + STREAM_SALT) & MASK64))


def random_bits(key: int, counter: int) -> int:
    """64 random bits: the ``counter``-th SplitMix64 output for ``key``."""
    return mix64((key + (counter + 1) * GOLDEN) & MASK64)


def uniform(key: int, counter: int) -> float:
    """A double in [0, 1) with 53 random bits."""
    return (random_bits(key, counter) >> 11) * INV_2_53


class RandomStreamExhausted(ValueError):
    """A call needs more counters than its RandomStream has left (a stream has 2**64)."""


def _check_uint64(value: object, name: str, top: int = MASK64, what: str = "an int") -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}")
    value = int(value)
    if not 0 <= value <= top:
        bound = "2**64]" if top == NUM_COUNTERS else "2**64)"
        raise ValueError(f"{name} must be in [0, {bound}, got {value}")
    return value


def _check_count(n_counters: object, name: str = "n_counters") -> int:
    if isinstance(n_counters, (bool, np.bool_)) or not isinstance(n_counters, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(n_counters).__name__}")
    n_counters = int(n_counters)
    if n_counters < 0:
        raise ValueError(f"{name} must be >= 0, got {n_counters}")
    return n_counters


def _exhausted(name: str, counter: int, n_counters: int) -> RandomStreamExhausted:
    return RandomStreamExhausted(
        f"{name}: RandomStream exhausted: the call needs {n_counters} counters but only "
        f"{NUM_COUNTERS - counter} of its 2**64 remain (counter={counter}); "
        "use another stream (RandomStream.spawn) or seed"
    )


class RandomStream:
    """A position in a counter-based random stream: ``(seed, stream, counter)``.

    Pass it as ``seed=`` to any fastlmrl function that draws random numbers; the call uses counters
    ``counter, counter + 1, ...`` and advances ``counter`` past them.  Save :meth:`state` with a
    checkpoint and restore with :meth:`from_state` to resume a run bit-identically.
    """

    __slots__ = ("seed", "stream", "counter", "key")

    def __init__(self, seed: int, stream: int = 0, counter: int = 0):
        self.seed = _check_uint64(seed, "seed")
        self.stream = _check_uint64(stream, "stream")
        self.counter = _check_uint64(counter, "counter", top=NUM_COUNTERS)
        self.key = stream_key(self.seed, self.stream)

    def remaining(self) -> int:
        """How many counters are left (a stream has 2**64)."""
        return NUM_COUNTERS - self.counter

    def take(self, n: int, name: str = "seed") -> int:
        """Reserve ``n`` counters; return the first one and advance past them.

        Raises :class:`RandomStreamExhausted` (a ``ValueError`` naming ``name``) and leaves the
        stream unchanged when fewer than ``n`` counters remain.
        """
        n = _check_count(n, "n")
        start = self.counter
        if n > NUM_COUNTERS - start:
            raise _exhausted(name, start, n)
        self.counter = start + n
        return start

    def spawn(self, stream: int) -> RandomStream:
        """An independent stream of the same seed (e.g. one per worker or per purpose)."""
        return RandomStream(self.seed, stream, 0)

    def state(self) -> dict:
        """A JSON-serialisable snapshot: ``{"seed": ..., "stream": ..., "counter": ...}``."""
        return {"seed": self.seed, "stream": self.stream, "counter": self.counter}

    @classmethod
    def from_state(cls, state: dict) -> RandomStream:
        """Rebuild a stream saved by :meth:`state`."""
        try:
            return cls(state["seed"], state["stream"], state["counter"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a RandomStream state: {state!r}") from exc

    def __repr__(self) -> str:
        return f"RandomStream(seed={self.seed}, stream={self.stream}, counter={self.counter})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RandomStream) and self.state() == other.state()


#: what functions that draw random numbers take as ``seed``: an int (a fresh stream: counter 0
#: of stream 0 of that seed) or a :class:`RandomStream` (used from its counter, then advanced)
Seed = int | np.integer | RandomStream


def resolve_seed(seed: Seed, name: str = "seed") -> tuple[int, int]:
    """(key, first counter) that a call draws from, without advancing anything (internal).

    The counter is returned modulo 2**64 (an exhausted stream, counter 2**64, gives 0: it can
    only be used by a call that draws nothing).
    """
    if isinstance(seed, RandomStream):
        return seed.key, seed.counter & MASK64
    seed = _check_uint64(seed, name, what="an int or a RandomStream")
    return stream_key(seed, 0), 0


def check_capacity(seed: Seed, n_counters: int, name: str = "seed") -> tuple[int, int]:
    """Validate ``seed`` for a call that will draw ``n_counters`` counters; return
    ``(key, first counter)`` like :func:`resolve_seed`.  Advances nothing.

    Call it before the first write: an int seed must be in ``[0, 2**64)`` (a fresh stream, so any
    ``n_counters <= 2**64`` fits); a :class:`RandomStream` must have ``n_counters`` counters left.
    Otherwise ``TypeError``/``ValueError`` (:class:`RandomStreamExhausted`) naming ``name``.
    After the call succeeded, :func:`advance` moves the stream past the counters.
    """
    n_counters = _check_count(n_counters)
    key, counter = resolve_seed(seed, name)
    used = seed.counter if isinstance(seed, RandomStream) else 0
    if n_counters > NUM_COUNTERS - used:
        raise _exhausted(name, used, n_counters)
    return key, counter


def advance(seed: Seed, n_counters: int, name: str = "seed") -> None:
    """After a successful call: move a RandomStream past the counters it consumed (internal)."""
    if isinstance(seed, RandomStream):
        seed.take(n_counters, name)


def uniforms(seed: Seed, n: int) -> np.ndarray:
    """``n`` doubles in [0, 1): the uniforms at counters ``c .. c + n - 1`` of ``seed``.

    Vectorised NumPy (uint64 arithmetic wraps modulo 2**64 exactly like the kernels), so it
    matches :func:`uniform` draw for draw.  Consumes ``n`` counters of a RandomStream.
    """
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    n = int(n)
    from ._validation import array_size

    array_size((n,), "n", itemsize=24)  # z, its float64 result and a temporary: refused at once
    key, counter = check_capacity(seed, n)
    # array arithmetic wraps modulo 2**64 (the scalar first term is reduced in Python)
    z = np.uint64(key) + (
        np.arange(n, dtype=np.uint64) + np.uint64((counter + 1) & MASK64)
    ) * np.uint64(GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
    z = z ^ (z >> np.uint64(31))
    advance(seed, n)
    return (z >> np.uint64(11)).astype(np.float64) * INV_2_53


def permutation(seed: Seed, n: int) -> np.ndarray:
    """A random permutation of ``range(n)`` (int64): the stable argsort of ``n`` uniforms
    (consumes ``n`` counters), computed here in NumPy, O(n log n).

    :func:`fastlmrl.permutation` (:mod:`fastlmrl.permutations`) returns the same permutation
    from the active backend's O(n) kernel and is the one to use in hot loops; this module stays
    below it (it imports nothing of fastlmrl's kernels: no import cycle)."""
    return np.argsort(uniforms(seed, n), kind="stable").astype(np.int64, copy=False)
