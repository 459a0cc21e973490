r"""Keyword / lexicon scores of token sequences: the per-token form of
:class:`fastlmrl.rewards.KeywordReward`, in one compiled pass; optionally of whole words only.

Rows: ``tokens`` (B, T) holds responses left-aligned; row ``b`` is
:math:`y_{b,0}, \dots, y_{b,L_b-1}` with :math:`L_b` = ``lengths[b]`` :math:`\in [0, T]`
(entries from :math:`L_b` on are padding and never read).  Keywords: :math:`K` n-grams
:math:`g_k = (g_{k,0}, \dots, g_{k,n_k-1})` of token ids :math:`\ge 0` (:math:`n_k \ge 1`) with
real weights :math:`w_k`.  An *occurrence* of :math:`g_k` in row :math:`b` is a start :math:`s`
with :math:`y_{b,s+j} = g_{k,j}` for all :math:`j < n_k` lying entirely inside the response,
:math:`s + n_k \le L_b`; overlapping occurrences all count ("aaa" holds two "aa").

Whole words (``word_tokens``, a set :math:`W` of token ids, e.g. the letters of a character
tokenizer): an occurrence counts only when it is delimited by tokens outside :math:`W` or by the
edges of the response: :math:`s = 0` or :math:`y_{b,s-1} \notin W`, and :math:`s + n_k = L_b` or
:math:`y_{b,s+n_k} \notin W` (so "kind" counts in "a kind cat" and "kind." but not in "kindly"
or "unkind").  Without ``word_tokens`` (:math:`W = \emptyset`) every occurrence counts: substring
matching.  Let :math:`c_k(y)` be the number of counted occurrences of :math:`g_k` in :math:`y`
(with ``presence=True``: :math:`\min(1, \cdot)`, each keyword at most once per row).  Per token,
the score is paid as it changes over the prefixes :math:`y_{b,0..t}` of the response, each scored
as a response of its own:

.. math::  \mathrm{out}[b, t] = \sum_{k=0}^{K-1} w_k\,\big(c_k(y_{b,0..t}) - c_k(y_{b,0..t-1})\big)

which is causal (a reward for token :math:`t` depends on tokens up to :math:`t` only) and sums
over :math:`t` to the row's score.  Without word tokens the increment is 1 exactly at the last
token :math:`t = s + n_k - 1` of each counted occurrence; with them a word is paid at its last
token and taken back (:math:`-w_k`) if a word token follows ("kind" then "l").  The sum runs over
:math:`k` in order in float64 from 0.0, exactly as ``out += w_k * h_k`` key by key (keys whose
count does not change add nothing), so without word tokens the result is bit-identical to that
NumPy formula; ``out[b, t] = 0`` for :math:`t \ge L_b`.  ``out.sum(axis=1)`` is the keyword
score of each row.  Negative ids in ``tokens`` are allowed, never match and are not word tokens.

The kernels take the keywords flattened (CSR form): ``gram_tokens`` (all grams concatenated, of
the id dtype of ``tokens``), ``gram_offsets`` (K + 1,) int64 with :math:`g_k` =
``gram_tokens[gram_offsets[k]:gram_offsets[k+1]]`` (``gram_offsets[0] == 0``, strictly
increasing, ``gram_offsets[K] == len(gram_tokens)``), ``gram_weights`` (K,) float64 (finite),
``presence`` (nonzero: first occurrence only), ``lengths`` (B,) int64, ``word_flags`` (W,)
uint8 (token ``i`` is a word token iff ``i < W`` and ``word_flags[i] != 0``; empty: substring
matching) and the output ``out`` (B, T) float64, and return a status code (0 = ok; the codes below;
8 = ``fastlmrl._status.OVERLAPPING_ARRAYS`` when ``out`` shares memory with another argument,
checked first in O(1)), checked in a pre-pass before anything is written.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING

import numpy as np

from . import _backend
from . import _validation as check
from ._contract import Arg, Kernel, Kind, Topic, raise_for_status
from ._status import Status

if TYPE_CHECKING:  # what readers and tools follow: the reference kernel
    from ._python import keyword_scores as _kernels
else:  # the active backend's kernels, rebound by set_backend (fastlmrl._backend.bind)
    _kernels = _backend.bind(__name__, "_kernels")

__all__ = ["keyword_scores"]

# Kernel status codes (fastlmrl._status.Status; BAD_LENGTHS was 60 before the contract).
BAD_LENGTHS = Status.BAD_LENGTHS
BAD_GRAM_TOKENS = Status.BAD_GRAM_TOKENS
BAD_GRAM_OFFSETS = Status.BAD_GRAM_OFFSETS
BAD_GRAM_WEIGHTS = Status.BAD_GRAM_WEIGHTS
BAD_OUT = Status.BAD_OUT


def _message(name: str, text: str):
    """A Kernel.messages entry: ``invalid keyword_scores argument: <name> <text>``."""
    return lambda args, shown: f"invalid keyword_scores argument: {shown(name)} {text}"


def _overlap_message(args, shown) -> str:
    """OVERLAPPING_ARRAYS: the input that shares memory with ``out`` (nothing was written)."""
    out = args.get("out")
    for name, x in args.items():
        if name != "out" and isinstance(x, np.ndarray) and x.size and np.may_share_memory(out, x):
            return (
                f"{shown(name)} shares memory with {shown('out')}, which this call writes; "
                f"pass a copy of {shown(name)}"
            )
    return (
        f"invalid keyword_scores argument: {shown('out')} shares memory with another argument "
        "(the kernel refuses to overwrite its inputs)"
    )


def _array(name: str, ctype: str, status: Status | None = None, written: bool = False) -> Arg:
    return Arg(name, Kind.ARRAY, written=written, status=status, ctype=ctype)


#: The kernel of this topic, in every backend (``fastlmrl._python/_numba/_cython.keyword_scores``;
#: arguments in the module docstring); tests/test_contract.py checks each implementation
#: against it.
CONTRACT = Topic(
    "keyword_scores",
    (
        Kernel(
            "keyword_scores",
            (
                _array("tokens", "index_t[:, ::1]"),
                _array("lengths", "int64_t[::1]", Status.BAD_LENGTHS),
                _array("gram_tokens", "index_t[::1]", Status.BAD_GRAM_TOKENS),
                _array("gram_offsets", "int64_t[::1]", Status.BAD_GRAM_OFFSETS),
                _array("gram_weights", "double[::1]", Status.BAD_GRAM_WEIGHTS),
                Arg("presence", Kind.SCALAR, ctype="int64_t"),
                _array("word_flags", "uint8_t[::1]"),
                _array("out", "double[:, ::1]", Status.BAD_OUT, written=True),
            ),
            (Status.OVERLAPPING_ARRAYS,),
            messages={
                Status.OVERLAPPING_ARRAYS: _overlap_message,
                Status.BAD_LENGTHS: _message(
                    "lengths", "must have one entry per row of tokens, each in [0, T]"
                ),
                Status.BAD_GRAM_TOKENS: _message("gram_tokens", "must hold keyword token ids >= 0"),
                Status.BAD_GRAM_OFFSETS: _message(
                    "gram_offsets", "must start at 0, increase strictly and end at len(gram_tokens)"
                ),
                Status.BAD_GRAM_WEIGHTS: _message(
                    "gram_weights", "must hold one finite weight per keyword"
                ),
                Status.BAD_OUT: _message("out", "must have the shape (B, T) of tokens"),
            },
            doc="per-token keyword scores of tokens (B, T) into out (B, T) float64",
        ),
    ),
)

_INT32_MAX = int(np.iinfo(np.int32).max)
_INT64_MAX = int(np.iinfo(np.int64).max)


def _raise_for_status(status: int, args=None) -> None:
    """A ValueError naming the kernel argument behind a non-zero status (``args``: the call's
    arguments by name, when known)."""
    if status:
        raise_for_status(status, CONTRACT["keyword_scores"], args or {})


def _token_grid(tokens) -> np.ndarray:
    """(B, T) int32/int64 C-contiguous ids (other integer dtypes become int64)."""
    arr = np.asarray(tokens)
    if arr.dtype.kind not in "iu":
        if not (arr.size == 0 and arr.dtype.kind == "f"):
            raise TypeError(f"tokens must hold integer token ids, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
    if arr.ndim != 2:
        raise ValueError(f"tokens must be 2-dimensional (B, T), got shape {arr.shape}")
    if arr.dtype not in check.INDEX_DTYPES:
        if arr.dtype.kind == "u" and arr.size and arr.max() > _INT64_MAX:
            raise ValueError("tokens holds ids too large for int64")
        arr = arr.astype(np.int64)
    return np.ascontiguousarray(arr)


def _lengths(lengths, n_rows: int, horizon: int) -> np.ndarray:
    lens = check.ids(lengths, "lengths", n_rows).astype(np.int64, copy=False)
    bad = np.flatnonzero((lens < 0) | (lens > horizon))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"lengths[{i}] = {int(lens[i])} is out of range [0, {horizon}]")
    return lens


def _gram(key, i: int) -> list:
    """Keyword ``i`` as a non-empty list of ids >= 0: a token id or a sequence of token ids."""
    what = f"grams[{i}] must be a token id or a non-empty sequence of token ids, got {key!r}"
    if isinstance(key, (numbers.Integral, np.integer)) and not isinstance(key, (bool, np.bool_)):
        ids = [key]
    elif isinstance(key, (list, tuple)) or (isinstance(key, np.ndarray) and key.ndim == 1):
        ids = list(key)
        if not ids:
            raise ValueError(what)
    else:
        raise TypeError(what)
    for g in ids:
        if isinstance(g, (bool, np.bool_)) or not isinstance(g, (numbers.Integral, np.integer)):
            raise TypeError(what)
        value = int(g)
        if value < 0:
            raise ValueError(f"grams[{i}] holds a negative token id {value}")
        if value > _INT64_MAX:
            raise ValueError(f"grams[{i}] holds a token id too large for int64: {value}")
    return [int(g) for g in ids]


def _flatten_grams(grams) -> tuple[np.ndarray, np.ndarray]:
    """Validate keywords and return them in CSR form ``(gram_tokens, gram_offsets)``, both int64.

    ``grams``: a sequence (list, tuple, 1-D or 2-D array) of keywords, each a token id or a
    non-empty sequence of token ids (>= 0).
    """
    if not (
        isinstance(grams, (list, tuple)) or (isinstance(grams, np.ndarray) and grams.ndim >= 1)
    ):
        raise TypeError(f"grams must be a sequence of keywords, got {type(grams).__name__}")
    flat, offsets = [], [0]
    for i, key in enumerate(grams):
        flat.extend(_gram(key, i))
        offsets.append(len(flat))
    return np.array(flat, dtype=np.int64), np.array(offsets, dtype=np.int64)


def _weights(weights, n_keys: int) -> np.ndarray:
    if weights is None:
        return np.ones(n_keys, dtype=np.float64)
    w = check.values(weights, "weights", n_keys, np.float64)
    bad = np.flatnonzero(~np.isfinite(w))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"weights[{i}] = {w[i]} is not finite")
    return w


def _presence(presence) -> int:
    if isinstance(presence, (bool, np.bool_)):
        return int(presence)
    if isinstance(presence, (numbers.Integral, np.integer)) and presence in (0, 1):
        return int(presence)
    raise TypeError(f"presence must be a bool, got {presence!r}")


_NO_WORD_FLAGS = np.zeros(0, dtype=np.uint8)


def word_flags(word_tokens) -> np.ndarray:
    """(W,) uint8 flags of a set of word token ids (ids >= 0); None or empty: (0,)."""
    if word_tokens is None:
        return _NO_WORD_FLAGS
    ids = np.asarray(list(word_tokens) if not isinstance(word_tokens, np.ndarray) else word_tokens)
    if ids.size == 0:
        return _NO_WORD_FLAGS
    if ids.dtype.kind not in "iu" or ids.ndim != 1:
        raise TypeError("word_tokens must be a 1-D sequence of integer token ids")
    if ids.min() < 0:
        raise ValueError(f"word_tokens holds a negative token id {int(ids.min())}")
    if ids.max() >= 2**31:
        raise ValueError(f"word_tokens holds a token id too large: {int(ids.max())}")
    flags = np.zeros(int(ids.max()) + 1, dtype=np.uint8)
    flags[ids] = 1
    return flags


def _scores(
    tokens, lengths, gram_tokens, gram_offsets, gram_weights, presence, flags=_NO_WORD_FLAGS
) -> np.ndarray:
    """Allocate ``out``, run the active backend's kernel, raise for a status (arrays prepared:
    ``tokens`` (B, T) int32/int64, ``gram_tokens`` of the same dtype, the rest int64/float64,
    ``flags`` from :func:`word_flags`)."""
    out = np.empty(tokens.shape, dtype=np.float64)
    args = (tokens, lengths, gram_tokens, gram_offsets, gram_weights, presence, flags, out)
    status = _kernels.keyword_scores(*args)
    if status:
        _raise_for_status(status, CONTRACT["keyword_scores"].bind(*args))
    return out


def keyword_scores(
    tokens, lengths, grams, weights=None, presence: bool = False, word_tokens=None
) -> np.ndarray:
    r"""Per-token keyword scores: (B, T) float64, ``out[b, t]`` = the change of row ``b``'s
    weighted keyword count when token ``t`` is appended (without ``word_tokens``: the summed
    weights of the keyword occurrences ending at token ``t``; see the module docstring).

    Parameters
    ----------
    tokens : (B, T) integer array of token ids (negative ids never match)
    lengths : (B,) integers in [0, T]; only ``tokens[b, :lengths[b]]`` is read and an occurrence
        must lie entirely inside it
    grams : sequence of K keywords, each a token id or a non-empty sequence of ids >= 0 (an
        n-gram); or a dict ``{keyword: weight}`` (then ``weights`` must be None)
    weights : (K,) finite reals, default 1 for every keyword
    presence : count only the first occurrence of each keyword in each row
    word_tokens : ids of the word tokens (e.g. letters), or None; when given, only whole-word
        occurrences count (delimited by other tokens or by the edges of the response)

    Returns
    -------
    (B, T) float64; ``out.sum(axis=1)`` is the score of each row.
    """
    if isinstance(grams, dict):
        if weights is not None:
            raise ValueError(
                "give the weights either as the values of the grams dict or as weights, not both"
            )
        grams, weights = list(grams.keys()), list(grams.values())
    ids = _token_grid(tokens)
    n_rows, horizon = ids.shape
    lens = _lengths(lengths, n_rows, horizon)
    gram_tokens, gram_offsets = _flatten_grams(grams)
    w = _weights(weights, gram_offsets.shape[0] - 1)
    flag = _presence(presence)
    if ids.dtype == np.int32 and (gram_tokens.size == 0 or gram_tokens.max() <= _INT32_MAX):
        gram_tokens = gram_tokens.astype(np.int32)
    else:
        ids = ids.astype(np.int64, copy=False)
    return _scores(ids, lens, gram_tokens, gram_offsets, w, flag, word_flags(word_tokens))
