"""Tokenizers: text <-> token ids, for token-level environments and the n-gram language model.

Two tokenizers share one vocabulary layout::

    id 0  "<bos>"   beginning of sequence: pads the context before the first token
    id 1  "<eos>"   end of sequence: an environment terminates when it is emitted
    id 2  "<unk>"   any character / word that is not in the vocabulary
    id 3… regular tokens

* :class:`CharTokenizer`: one token per Unicode character (code point).
* :class:`WordTokenizer`: whitespace-separated words (``str.split()``); decoding joins words with
  single spaces.

Both are fitted on a text (:meth:`fit`, or the constructor's ``text=``), with optional
``min_count`` (drop rarer tokens, they become ``<unk>``) and ``max_vocab_size`` (keep the most
frequent, ties broken by the token's string order; the limit counts the 3 special tokens).
Line breaks separate *sequences* (:meth:`encode_lines`): they are never tokens.

Because ``<bos>`` has id 0, the context of ``k`` ``<bos>`` tokens (the start state of every
episode) has context id 0 (see :func:`fastlmrl.ngram.context_id`).

Tokenizers are saved as JSON with an atomic write (temporary file in the same directory, fsync,
``os.replace``): a crash never leaves a half-written file at ``path``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any, TypeVar

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from ._atomic import atomic_write_text

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "UNK_ID",
    "CharTokenizer",
    "WordTokenizer",
    "load_tokenizer",
]

BOS_ID = 0
EOS_ID = 1
UNK_ID = 2
BOS, EOS, UNK = "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (BOS, EOS, UNK)
_LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines() splits on
_FORMAT = "fastlmrl.tokenizer"
_ID_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))
_INT64_MAX = 2**63 - 1
_T = TypeVar("_T", bound="_Tokenizer")


def _check_text(text: object, name: str = "text") -> str:
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, got {type(text).__name__}")
    return text


def _check_optional_int(x: Any, name: str, minimum: int) -> int | None:
    if x is None:
        return None
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"{name} must be an int or None, got {type(x).__name__}")
    if x < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {x}")
    if x > _INT64_MAX:
        raise ValueError(f"{name} must be <= 2**63 - 1, got {x}")
    return int(x)


def _check_bool(x: object, name: str) -> bool:
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(x).__name__}")
    return bool(x)


class _Tokenizer:
    """Shared vocabulary logic (not public)."""

    kind = ""
    bos_id, eos_id, unk_id = BOS_ID, EOS_ID, UNK_ID
    bos_token, eos_token, unk_token = BOS, EOS, UNK

    def __init__(
        self,
        text: str | None = None,
        *,
        tokens: Any = None,
        min_count: int = 1,
        max_vocab_size: int | None = None,
    ) -> None:
        checked = _check_optional_int(min_count, "min_count", 1)
        if checked is None:
            raise TypeError("min_count must be an int")
        self.min_count: int = checked
        self.max_vocab_size = _check_optional_int(
            max_vocab_size, "max_vocab_size", len(SPECIAL_TOKENS) + 1
        )
        if text is not None and tokens is not None:
            raise ValueError("give either text or tokens, not both")
        self._set_tokens([])
        if tokens is not None:
            self._set_tokens(self._check_tokens(tokens))
        elif text is not None:
            self.fit(text)

    # -- vocabulary -------------------------------------------------------------------------
    def _split(self, text: str) -> list:
        raise NotImplementedError

    def _order(self, tokens: list) -> list:
        """Final order of the selected regular tokens."""
        return tokens

    def _check_tokens(self, tokens: Any) -> list:
        tokens = list(tokens)
        for t in tokens:
            if not isinstance(t, str):
                raise TypeError(f"tokens must be strings, got {type(t).__name__}")
            if t in SPECIAL_TOKENS:
                raise ValueError(f"tokens must not contain the special token {t!r}")
            if t == "" or any(c in _LINE_BREAKS for c in t):
                raise ValueError(f"token {t!r} is empty or contains a line break")
        if len(set(tokens)) != len(tokens):
            raise ValueError("tokens must be unique")
        return tokens

    def _set_tokens(self, regular: list) -> None:
        self._id_to_token = list(SPECIAL_TOKENS) + list(regular)
        self._token_to_id = {t: i for i, t in enumerate(self._id_to_token)}

    def fit(self: _T, text: str) -> _T:
        """(Re)build the vocabulary from ``text``; returns ``self``.

        Tokens are counted over the lines of ``text`` (line breaks are sequence separators, never
        tokens); those seen fewer than ``min_count`` times are dropped; if more than
        ``max_vocab_size - 3`` remain, the most frequent are kept (ties: lower string first).
        """
        text = _check_text(text)
        counts: Counter[str] = Counter()
        for line in text.splitlines():
            counts.update(self._split(line))
        for special in SPECIAL_TOKENS:  # a literal "<unk>" word in the text is the special token
            counts.pop(special, None)
        kept = [(-c, t) for t, c in counts.items() if c >= self.min_count]
        kept.sort()
        if self.max_vocab_size is not None:
            kept = kept[: self.max_vocab_size - len(SPECIAL_TOKENS)]
        self._set_tokens(self._order([t for _, t in kept]))
        return self

    @property
    def vocab_size(self) -> int:
        """Number of ids, the 3 special tokens included (V)."""
        return len(self._id_to_token)

    @property
    def tokens(self) -> list[str]:
        """Every token string, in id order (a copy)."""
        return list(self._id_to_token)

    def get_vocab(self) -> dict[str, int]:
        """``{token: id}`` (a copy)."""
        return dict(self._token_to_id)

    def token_to_id(self, token: str) -> int | None:
        """The id of ``token``, or None when it is not in the vocabulary."""
        return self._token_to_id.get(_check_text(token, "token"))

    def id_to_token(self, token_id: int) -> str | None:
        """The string of id ``token_id``, or None when it is out of range."""
        if isinstance(token_id, (bool, np.bool_)) or not isinstance(token_id, (int, np.integer)):
            raise TypeError(f"token_id must be an int, got {type(token_id).__name__}")
        if 0 <= token_id < len(self._id_to_token):
            return self._id_to_token[int(token_id)]
        return None

    def __len__(self) -> int:
        return self.vocab_size

    def __eq__(self, other: object) -> bool:
        return (
            type(self) is type(other)
            and self._id_to_token == other._id_to_token
            and self.min_count == other.min_count
            and self.max_vocab_size == other.max_vocab_size
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"

    # -- encoding ---------------------------------------------------------------------------
    def _encode_body(self, text: str) -> np.ndarray:
        ids = [self._token_to_id.get(t, UNK_ID) for t in self._split(text)]
        return np.array(ids, dtype=np.int64)

    def encode(
        self,
        text: str,
        *,
        add_bos: bool = False,
        add_eos: bool = False,
        dtype: DTypeLike = np.int64,
    ) -> np.ndarray:
        """Token ids of ``text`` (unknown tokens -> ``<unk>`` = 2), as a 1-D int32/int64 array.

        ``add_bos`` prepends one ``<bos>``, ``add_eos`` appends ``<eos>``.  Line-break characters
        are not in any vocabulary: a char tokenizer maps them to ``<unk>``, a word tokenizer
        treats them as whitespace; use :meth:`encode_lines` for one sequence per line.
        """
        text = _check_text(text)
        add_bos, add_eos = _check_bool(add_bos, "add_bos"), _check_bool(add_eos, "add_eos")
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype must be int32 or int64, got {dtype!r}") from None
        if dtype not in _ID_DTYPES:
            raise TypeError(f"dtype must be int32 or int64, got {dtype}")
        body = self._encode_body(text)
        parts = (
            ([np.array([BOS_ID])] if add_bos else [])
            + [body]
            + ([np.array([EOS_ID])] if add_eos else [])
        )
        return np.concatenate(parts).astype(dtype, copy=False)

    def encode_lines(self, text: str, *, dtype: DTypeLike = np.int64) -> list[np.ndarray]:
        """One id array per non-blank line of ``text`` (lines stripped of surrounding whitespace),
        without ``<bos>``/``<eos>``: the sequences that :meth:`fastlmrl.NGramLM.fit` pads."""
        text = _check_text(text)
        return [
            self.encode(line.strip(), dtype=dtype) for line in text.splitlines() if line.strip()
        ]

    def _join(self, tokens: list) -> str:
        raise NotImplementedError

    def decode(self, ids: ArrayLike, *, skip_special: bool = True) -> str:
        """The text of ``ids`` (1-D integer ids in [0, vocab_size)).

        With ``skip_special`` (default) ``<bos>`` and ``<eos>`` are dropped; ``<unk>`` is always
        written as the string ``"<unk>"``.
        """
        skip_special = _check_bool(skip_special, "skip_special")
        arr = np.asarray(ids)
        if arr.dtype.kind not in "iu":
            if not (arr.size == 0 and arr.dtype.kind == "f"):
                raise TypeError(f"ids must hold integer ids, got dtype {arr.dtype}")
            arr = arr.astype(np.int64)
        if arr.ndim != 1:
            raise ValueError(f"ids must be 1-dimensional, got shape {arr.shape}")
        bad = np.flatnonzero((arr < 0) | (arr >= self.vocab_size))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"ids[{i}] = {int(arr[i])} is out of range [0, {self.vocab_size})")
        out = []
        for i in arr.tolist():
            if skip_special and (i == BOS_ID or i == EOS_ID):
                continue
            out.append(self._id_to_token[i])
        return self._join(out)

    # -- persistence ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "version": 1,
            "type": self.kind,
            "min_count": self.min_count,
            "max_vocab_size": self.max_vocab_size,
            "tokens": self._id_to_token,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the tokenizer to ``path`` as JSON (atomically)."""
        atomic_write_text(path, json.dumps(self.to_dict(), ensure_ascii=True, indent=1) + "\n")

    @classmethod
    def load(cls: type[_T], path: str | os.PathLike[str]) -> _T:
        """Read a tokenizer saved by :meth:`save` (it must be of this class)."""
        tok = load_tokenizer(path)
        if not isinstance(tok, cls):
            raise ValueError(
                f"{os.fspath(path)!r} holds a {type(tok).__name__}, not a {cls.__name__}"
            )
        return tok


class CharTokenizer(_Tokenizer):
    """One token per character (Unicode code point); regular tokens ordered by code point.

    ``CharTokenizer(text)`` fits on ``text``; ``CharTokenizer(tokens=[...])`` uses the given
    characters (ids 3, 4, ... in that order).  Encoding is vectorised (NumPy ``searchsorted`` over
    the code points), so encoding a large corpus has no Python loop per character.

    Parameters
    ----------
    text : str or None
        Fit the vocabulary on ``text`` (:meth:`fit`); give ``text`` or ``tokens``, not both.
    tokens : iterable of str, keyword-only
        The regular tokens, in id order from 3 (unique, no special token, no line break).
    min_count : int >= 1
        Tokens seen fewer times in ``text`` are dropped (``<unk>``).
    max_vocab_size : int >= 4 or None
        The most ids, the 3 special tokens included (the most frequent tokens are kept).

    Attributes
    ----------
    vocab_size : the number of ids ``V`` (the 3 special tokens included).
    bos_id, eos_id, unk_id : 0, 1, 2: the ids of ``<bos>``, ``<eos>``, ``<unk>`` (also
        ``bos_token``, ``eos_token``, ``unk_token``: the strings, as in Hugging Face tokenizers).
    kind : ``"char"`` or ``"word"``, the type recorded by :meth:`save`.
    """

    kind = "char"

    def _split(self, text: str) -> list:
        return [c for c in text if c not in _LINE_BREAKS]

    def _order(self, tokens: list) -> list:
        return sorted(tokens)

    def _check_tokens(self, tokens: Any) -> list:
        tokens = super()._check_tokens(tokens)
        for t in tokens:
            if len(t) != 1:
                raise ValueError(f"a CharTokenizer token must be one character, got {t!r}")
        return tokens

    def _set_tokens(self, regular: list) -> None:
        super()._set_tokens(regular)
        cps = np.array([ord(t) for t in regular], dtype=np.int64)
        order = np.argsort(cps, kind="stable")
        self._cps = cps[order]
        self._cp_ids = (order + len(SPECIAL_TOKENS)).astype(np.int64)

    def _encode_body(self, text: str) -> np.ndarray:
        if not text:
            return np.empty(0, dtype=np.int64)
        cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.int64)
        if self._cps.size == 0:
            return np.full(cps.shape, UNK_ID, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self._cps, cps), self._cps.size - 1)
        return np.where(self._cps[pos] == cps, self._cp_ids[pos], UNK_ID)

    def _join(self, tokens: list) -> str:
        return "".join(tokens)


class WordTokenizer(_Tokenizer):
    """Whitespace-separated words (``str.split()``); unseen words become ``<unk>``.

    Regular tokens are ordered by decreasing count in the fitting text (ties: string order), so
    ``max_vocab_size`` keeps the most frequent words.  ``decode`` joins words with one space, so
    ``decode(encode(t)) == " ".join(t.split())`` when every word is in the vocabulary.

    Parameters
    ----------
    text : str or None
        Fit the vocabulary on ``text`` (:meth:`fit`); give ``text`` or ``tokens``, not both.
    tokens : iterable of str, keyword-only
        The regular tokens, in id order from 3 (unique, no special token, no line break).
    min_count : int >= 1
        Tokens seen fewer times in ``text`` are dropped (``<unk>``).
    max_vocab_size : int >= 4 or None
        The most ids, the 3 special tokens included (the most frequent tokens are kept).

    Attributes
    ----------
    vocab_size : the number of ids ``V`` (the 3 special tokens included).
    bos_id, eos_id, unk_id : 0, 1, 2: the ids of ``<bos>``, ``<eos>``, ``<unk>`` (also
        ``bos_token``, ``eos_token``, ``unk_token``: the strings, as in Hugging Face tokenizers).
    kind : ``"char"`` or ``"word"``, the type recorded by :meth:`save`.
    """

    kind = "word"

    def _split(self, text: str) -> list:
        return text.split()

    def _join(self, tokens: list) -> str:
        return " ".join(tokens)


_KINDS: dict[str, type[CharTokenizer] | type[WordTokenizer]] = {
    "char": CharTokenizer,
    "word": WordTokenizer,
}


def load_tokenizer(path: str | os.PathLike[str]) -> CharTokenizer | WordTokenizer:
    """Read a :class:`CharTokenizer` or :class:`WordTokenizer` saved with ``save(path)``.

    Raises ValueError naming the file when it is missing, not UTF-8 JSON, or not a fastlmrl
    tokenizer.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ValueError(f"tokenizer file {name!r} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"tokenizer file {name!r} is a directory") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"tokenizer file {name!r} is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise ValueError(f"{name!r} is not a fastlmrl tokenizer file")
    if data.get("version") != 1:
        raise ValueError(f"{name!r}: unsupported tokenizer version {data.get('version')!r}")
    kind = data.get("type")
    if kind not in _KINDS:
        raise ValueError(f"{name!r}: unknown tokenizer type {kind!r}")
    tokens = data.get("tokens")
    if not isinstance(tokens, list) or tuple(tokens[:3]) != SPECIAL_TOKENS:
        raise ValueError(f"{name!r}: 'tokens' must be a list starting with {list(SPECIAL_TOKENS)}")
    try:
        return _KINDS[kind](
            tokens=tokens[3:],
            min_count=data.get("min_count", 1),
            max_vocab_size=data.get("max_vocab_size"),
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name!r}: invalid tokenizer: {exc}") from None
