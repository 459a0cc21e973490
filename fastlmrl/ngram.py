r"""An n-gram language model (add-k or interpolated Kneser–Ney) and the k-gram context ids.

Context ids
-----------
The state of a token environment is the last ``k`` tokens :math:`(t_1, \dots, t_k)` (:math:`t_1`
oldest) over a vocabulary of ``V`` ids.  It is numbered by its base-``V`` digits, oldest token most
significant:

.. math:: \mathrm{ctx}(t_1, \dots, t_k) = \sum_{j=1}^{k} t_j\, V^{k-j} \in [0, V^k),

a bijection between k-grams and ``[0, V**k)`` (:func:`context_id`, inverse :func:`context_tokens`).
Appending token ``a`` drops the oldest one:

.. math:: \mathrm{next}(c, a) = (c \cdot V + a) \bmod V^k        \qquad\text{(:func:`next_context`)}

and the start state, ``k`` copies of ``<bos>`` (id 0 in :mod:`fastlmrl.tokenizers`), is context 0.
For ``k = 0`` there is one context, 0.  A dense (S, V) table has ``V**(k+1)`` entries;
:func:`num_contexts` refuses more than ``2**26`` (:data:`MAX_TABLE_ENTRIES`).

The language model
------------------
:class:`NGramLM` of order ``n`` predicts token :math:`w_i` (position ``i`` of a sequence) from
the previous ``n - 1`` tokens :math:`h = w_{i-n+1}^{i-1}` (positions ``i-n+1 .. i-1``, oldest
first).  Training sequences are left-padded with ``n - 1`` ``<bos>`` and end
with ``<eos>``; every real token and the ``<eos>`` are *targets* (``<bos>`` is never one), so every
target has a full history and all counts below are over target positions.

* ``smoothing="add_k"`` (additive / Lidstone smoothing; Chen & Goodman, §2.1)::

      P(w | h) = (c(h w) + k) / (c(h) + k V),      c(h) = sum_w c(h w)

  (an unseen history gives the uniform 1/V).
* ``smoothing="kneser_ney"``: interpolated Kneser–Ney with one absolute discount ``D`` for all
  orders (Kneser & Ney 1995; Chen & Goodman, "An empirical study of smoothing techniques for
  language modeling", Computer Speech & Language 13, 1999 (TR-10-98, 1998): §2.6 absolute
  discounting, §2.7 Kneser–Ney, in its interpolated form)::

      P_m(w | h) = max(c_m(h w) - D, 0) / c_m(h)  +  D N1+(h •) / c_m(h) * P_{m-1}(w | h')

  for orders m = 1..n, where h' is h without its oldest token, c_m(h) = sum_w c_m(h w) and
  N1+(h •) = #{w : c_m(h w) > 0}.  The highest order uses the counts c_n = c; a lower order
  m < n uses *continuation counts* c_m(g) = N1+(• g) = #{v : c_{m+1}(v g) > 0} (the number of
  distinct tokens seen before g).  The recursion ends at P_0(w) = 1/V (uniform); a history with
  c_m(h) = 0 passes P_{m-1} through unchanged.  With 0 < D <= 1 every row sums to 1 and every
  probability is > 0.

``<bos>`` (and any id absent from the training data, e.g. ``<unk>``) is never a target, so it
only receives smoothing mass (add-k: k / (c(h) + k V); Kneser–Ney: its share of the uniform
P_0): every log-probability is finite, and a policy started from the table can emit it, rarely.

Both are vectorised: n-grams are packed into int64 codes (base-V digits) and counted with
``np.unique``; a probability is a ``searchsorted`` lookup per order.  Every probability — one
:meth:`NGramLM.log_prob`, a whole :meth:`NGramLM.logits_table`, :meth:`NGramLM.perplexity` — is
computed by the same float64 expressions in the same order, so they agree bit for bit.

The logits table
----------------
:meth:`NGramLM.logits_table` returns the (V**k, V) table of :math:`\log P(w \mid \mathrm{ctx})`
(rows are log-probabilities, so ``softmax(row)`` is the model's conditional distribution): the
initial policy of a tabular softmax agent and its frozen reference for a KL penalty
(:meth:`NGramLM.policy_tables`).  :meth:`NGramLM.sample` draws from that table with
:func:`fastlmrl.boltzmann` at temperature 1, so a seed gives the same text in every backend.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from . import _validation as check
from .rng import RandomStream, advance, check_capacity
from .tokenizers import BOS_ID, EOS_ID

if TYPE_CHECKING:
    from .tokenizers import _Tokenizer

__all__ = [
    "MAX_TABLE_ENTRIES",
    "NGramLM",
    "context_id",
    "context_ids",
    "context_tokens",
    "next_context",
    "num_contexts",
]

#: The largest dense (S, V) table :func:`num_contexts` and :meth:`NGramLM.logits_table` allow.
MAX_TABLE_ENTRIES = 2**26
_INT64_LIMIT = 2**63
#: The longest context (and the largest order - 1) whose ids fit in int64 for V >= 2.
MAX_CONTEXT_LENGTH = 62
_CHUNK = 1 << 20  # (context, token) pairs per vectorised block when building a table


# ---------------------------------------------------------------------------------------------
# context ids
# ---------------------------------------------------------------------------------------------
def _vocab(vocab_size: object) -> int:
    V = check.positive_int(vocab_size, "vocab_size", 1)
    if V >= _INT64_LIMIT:
        raise ValueError(f"vocab_size = {V} does not fit in int64 (must be < 2**63)")
    return V


def _k(k: object, name: str = "k") -> int:
    k = check.positive_int(k, name, 0)
    if k > MAX_CONTEXT_LENGTH:
        raise ValueError(
            f"{name} = {k} is too large: context ids of more than "
            f"{MAX_CONTEXT_LENGTH} tokens do not fit in int64"
        )
    return k


def _power(V: int, k: int) -> int:
    """V**k for V < 2**63 and k <= 63: at most a few hundred bytes of Python int."""
    return V**k


def _check_code_range(V: int, k: int, extra: int = 0) -> None:
    """Refuse V**(k + extra) >= 2**63 (without computing a huge power: V < 2**63 here)."""
    if (V >= 2 and k + extra >= 63) or _power(V, k + extra) >= _INT64_LIMIT:
        raise ValueError(
            f"vocab_size**{k + extra} = {V}**{k + extra} does not fit in int64: "
            "use a smaller vocabulary or a shorter context"
        )


def _id_array(x: ArrayLike, name: str, bound: int, bound_text: str = "") -> NDArray[np.int64]:
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu":
        if arr.size == 0 and arr.dtype.kind == "f":
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"{name} must hold integer ids, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} holds ids too large for int64")
    arr = arr.astype(np.int64)
    flat = arr.reshape(-1)
    bad = np.flatnonzero((flat < 0) | (flat >= bound))
    if bad.size:
        i = int(bad[0])
        where = f"[{i}]" if arr.ndim == 1 else f" (flat index {i})" if arr.ndim else ""
        raise ValueError(f"{name}{where} = {int(flat[i])} is out of range [0, {bound_text}{bound})")
    return arr


def num_contexts(vocab_size: int, k: int) -> int:
    """``V**k``, the number of k-gram contexts, after checking that a dense (V**k, V) table
    (``V**(k+1)`` entries) stays within :data:`MAX_TABLE_ENTRIES` = 2**26; else ValueError."""
    V, k = _vocab(vocab_size), _k(k)
    entries = _power(V, k + 1)
    if entries > MAX_TABLE_ENTRIES:
        raise ValueError(
            f"a dense logits table over {V}-token contexts of length k={k} would have "
            f"V**(k+1) = {entries} entries, more than 2**26 = {MAX_TABLE_ENTRIES}: use a smaller "
            "vocabulary (e.g. WordTokenizer(max_vocab_size=...) or characters) or a smaller k"
        )
    return V**k


def context_id(tokens: ArrayLike, vocab_size: int) -> int:
    r"""The id :math:`\sum_j t_j V^{k-j}` of the k-gram ``tokens`` (oldest first; k = len)."""
    V = _vocab(vocab_size)
    arr = _id_array(tokens, "tokens", V)
    if arr.ndim != 1:
        raise ValueError(f"tokens must be 1-dimensional, got shape {arr.shape}")
    _check_code_range(V, arr.shape[0])
    c = 0
    for t in arr.tolist():
        c = c * V + t
    return c


def context_tokens(ctx: int, k: int, vocab_size: int) -> NDArray[np.int64]:
    """Inverse of :func:`context_id`: the k tokens (oldest first, int64) of context ``ctx``."""
    V, k = _vocab(vocab_size), _k(k)
    _check_code_range(V, k)
    if isinstance(ctx, (bool, np.bool_)) or not isinstance(ctx, (int, np.integer)):
        raise TypeError(f"ctx must be an int, got {type(ctx).__name__}")
    ctx = int(ctx)
    if not 0 <= ctx < V**k:
        raise ValueError(f"ctx = {ctx} is out of range [0, vocab_size**k = {V}**{k} = {V**k})")
    out = np.empty(k, dtype=np.int64)
    for j in range(k - 1, -1, -1):
        ctx, out[j] = divmod(ctx, V)
    return out


def context_ids(
    tokens: ArrayLike, k: int, vocab_size: int, bos_id: int | None = None
) -> NDArray[np.int64]:
    """Context ids of the sliding k-token windows of ``tokens`` (vectorised; int64).

    ``seq = tokens`` (or ``[bos_id] * k + tokens`` when ``bos_id`` is given) and
    ``out[i] = context_id(seq[i:i+k])`` for ``i = 0 .. len(seq) - k``.  With ``bos_id``,
    ``out[i]`` is the state *before* token ``tokens[i]`` is emitted and ``out[-1]`` the state after
    the last one (``len(tokens) + 1`` entries).  Consecutive entries satisfy
    ``out[i+1] == next_context(out[i], seq[i+k], V, k)``.
    """
    V, k = _vocab(vocab_size), _k(k)
    _check_code_range(V, k)
    arr = _id_array(tokens, "tokens", V)
    if arr.ndim != 1:
        raise ValueError(f"tokens must be 1-dimensional, got shape {arr.shape}")
    if bos_id is not None:
        bos = _id_array(bos_id, "bos_id", V)
        if bos.ndim != 0:
            raise TypeError("bos_id must be an int")
        arr = np.concatenate([np.full(k, int(bos), dtype=np.int64), arr])
    n = arr.shape[0] - k + 1
    if n <= 0:
        return np.empty(0, dtype=np.int64)
    out = np.zeros(n, dtype=np.int64)
    for j in range(k):
        out = out * V + arr[j : j + n]
    return out


def next_context(
    ctx: ArrayLike, token: ArrayLike, vocab_size: int, k: int
) -> int | NDArray[np.int64]:
    r"""The context after emitting ``token`` in context ``ctx``: :math:`(c V + a) \bmod V^k`.

    The one formula every environment kernel uses (the oldest token falls off the front).
    ``ctx`` and ``token`` are ints or integer arrays (broadcast); ids are range-checked
    (``ctx`` in [0, V**k), ``token`` in [0, V)).  Returns an int for scalars, else int64 array.
    """
    V, k = _vocab(vocab_size), _k(k)
    _check_code_range(V, k, extra=1)
    scalar = np.ndim(ctx) == 0 and np.ndim(token) == 0
    for x, name in ((ctx, "ctx"), (token, "token")):
        if isinstance(x, (bool, np.bool_)):
            raise TypeError(f"{name} must be an int or an integer array, got bool")
    c = _id_array(ctx, "ctx", V**k, f"vocab_size**k = {V}**{k} = ")
    a = _id_array(token, "token", V)
    try:
        np.broadcast_shapes(c.shape, a.shape)
    except ValueError:
        raise ValueError(
            f"ctx and token must broadcast together, got shapes {c.shape} and {a.shape}"
        ) from None
    out = (c * V + a) % (V**k)
    return int(out) if scalar else out


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------
class _Level:
    """Statistics of one order m: sorted m-gram codes with their (continuation) counts, and per
    history (m-1 gram) the total count c_m(h) and the number of distinct followers N1+(h .)."""

    __slots__ = ("codes", "counts", "hist", "hist_total", "hist_types")

    def __init__(self, codes: NDArray[np.int64], counts: np.ndarray, V: int) -> None:
        self.codes = codes
        self.counts = counts.astype(np.float64)
        hist = codes // V  # sorted, since codes are
        self.hist, start, types = np.unique(hist, return_index=True, return_counts=True)
        self.hist_total = np.add.reduceat(self.counts, start) if codes.size else self.counts[:0]
        self.hist_types = types.astype(np.float64)


def _lookup(sorted_codes: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(found mask, index) of ``queries`` in ``sorted_codes``."""
    if sorted_codes.size == 0:
        return np.zeros(queries.shape, dtype=bool), np.zeros(queries.shape, dtype=np.int64)
    pos = np.minimum(np.searchsorted(sorted_codes, queries), sorted_codes.size - 1)
    return sorted_codes[pos] == queries, pos


SMOOTHINGS = ("kneser_ney", "add_k")
_NOT_FITTED = "the NGramLM is not fitted: call fit(sequences, vocab_size) first"


class NGramLM:
    r"""An n-gram language model over ids ``0 .. V-1`` with add-k or interpolated Kneser–Ney
    smoothing (equations in the module docstring).

    Parameters
    ----------
    order : int >= 1
        ``n``: each token is predicted from the previous ``n - 1`` (the context length ``k``).
    smoothing : ``"kneser_ney"`` (default) or ``"add_k"``
    k : float > 0
        The pseudo-count of add-k smoothing (``k = 1``: Laplace).  Unused by Kneser–Ney.
    discount : float in (0, 1]
        The absolute discount ``D`` of Kneser–Ney.  Unused by add-k.

    Example
    -------
    >>> text = fastlmrl.default_corpus()
    >>> tok = fastlmrl.CharTokenizer(text)
    >>> lm = fastlmrl.NGramLM(order=3).fit(tok.encode_lines(text), tok.vocab_size)
    >>> policy, reference = lm.policy_tables()      # (V**2, V) log-probability tables

    Attributes
    ----------
    order, smoothing, k, discount : the parameters above (validated).
    vocab_size : int, or None before :meth:`fit`: the number of token ids ``V``.
    bos_id, eos_id : int or None: the padding ids given to :meth:`fit` (None: no padding).
    n_targets : int, the number of target positions counted by the last :meth:`fit`.
    """

    vocab_size: int | None
    bos_id: int | None
    eos_id: int | None
    _levels: list[_Level] | None
    _table: NDArray[np.float64] | None

    def __init__(
        self, order: int = 3, smoothing: str = "kneser_ney", k: float = 1.0, discount: float = 0.75
    ) -> None:
        self.order = check.positive_int(order, "order", 1)
        if self.order > MAX_CONTEXT_LENGTH + 1:
            raise ValueError(
                f"order = {self.order} is too large: n-gram codes of more than "
                f"{MAX_CONTEXT_LENGTH + 1} tokens do not fit in int64"
            )
        if not isinstance(smoothing, str):
            raise TypeError(f"smoothing must be a str, got {type(smoothing).__name__}")
        if smoothing not in SMOOTHINGS:
            raise ValueError(f"smoothing must be one of {SMOOTHINGS}, got {smoothing!r}")
        self.smoothing = smoothing
        self.k = check.real(k, "k", 0.0, None, low_open=True)
        self.discount = check.real(discount, "discount", 0.0, 1.0, low_open=True)
        self.vocab_size = None
        self.bos_id = None
        self.eos_id = None
        self.n_targets = 0
        self._levels = None
        self._table = None  # cached float64 (V**(n-1), V) log-probabilities for sampling

    def __repr__(self) -> str:
        extra = f"k={self.k}" if self.smoothing == "add_k" else f"discount={self.discount}"
        fitted = f", vocab_size={self.vocab_size}" if self.is_fitted else ", unfitted"
        return f"NGramLM(order={self.order}, smoothing={self.smoothing!r}, {extra}{fitted})"

    @property
    def context_length(self) -> int:
        """``order - 1``: the number of previous tokens a prediction reads."""
        return self.order - 1

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` has built the model."""
        return self._levels is not None

    def _require_fit(self) -> None:
        if not self.is_fitted:
            raise RuntimeError(_NOT_FITTED)

    def _V(self) -> int:
        """``vocab_size`` once set by :meth:`fit` (for the type checker; no other effect)."""
        if self.vocab_size is None:
            raise RuntimeError(_NOT_FITTED)
        return self.vocab_size

    def _fitted_levels(self) -> list[_Level]:
        """The statistics of a fitted model (RuntimeError before :meth:`fit`)."""
        if self._levels is None:
            raise RuntimeError(_NOT_FITTED)
        return self._levels

    # -- fitting ----------------------------------------------------------------------------
    def _sequences(self, sequences: object, V: int, name: str) -> list[NDArray[np.int64]]:
        """A list of 1-D int64 id arrays in [0, V) from one sequence or a list of them."""
        if isinstance(sequences, np.ndarray) and sequences.ndim == 1:
            seqs = [sequences]
        elif isinstance(sequences, np.ndarray) and sequences.ndim == 2:
            seqs = list(sequences)
        elif isinstance(sequences, (list, tuple)):
            if sequences and all(isinstance(s, numbers.Integral) for s in sequences):
                seqs = [np.asarray(sequences)]
            else:
                seqs = list(sequences)
        else:
            raise TypeError(
                f"{name} must be an id array or a list of id arrays, got {type(sequences).__name__}"
            )
        out: list[Any] = []
        for i, s in enumerate(seqs):
            if isinstance(s, str):
                raise TypeError(f"{name}[{i}] is a str: encode text with a tokenizer first")
            arr = np.asarray(s)
            if arr.dtype.kind in "iu" and arr.ndim == 1:
                out.append(arr)
                continue
            arr = _id_array(s, f"{name}[{i}]", V)  # raises the precise error
            if arr.ndim != 1:
                raise ValueError(f"{name}[{i}] must be 1-dimensional, got shape {arr.shape}")
            out.append(arr)
        if out:  # one vectorised range check over everything
            flat = np.concatenate(out) if len(out) > 1 else out[0]
            if flat.size and (flat.min() < 0 or flat.max() >= V):
                for i, arr in enumerate(out):
                    _id_array(arr, f"{name}[{i}]", V)
            out = [a.astype(np.int64, copy=False) for a in out]
        return out

    def _targets(self, seqs: list[NDArray[np.int64]]) -> tuple[np.ndarray, np.ndarray]:
        """The n-gram codes at every target position of the padded sequences (int64), and the
        history codes (n-1 grams) at the same positions (vectorised over all sequences)."""
        n, V = self.order, self._V()
        if not seqs:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        bos, eos = self.bos_id, self.eos_id
        pad = n - 1 if bos is not None else 0
        e = 1 if eos is not None else 0
        lengths = np.array([s.shape[0] for s in seqs], dtype=np.int64)
        padded = lengths + pad + e
        offsets = np.concatenate([[0], np.cumsum(padded)[:-1]])
        total = int(padded.sum())
        flat = np.full(total, bos if pad and bos is not None else 0, dtype=np.int64)
        body = np.concatenate(seqs) if len(seqs) > 1 else seqs[0]
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        flat[np.repeat(offsets + pad - starts, lengths) + np.arange(body.shape[0])] = body
        if eos is not None:  # e == 1
            flat[offsets + pad + lengths] = eos
        within = np.arange(total) - np.repeat(offsets, padded)
        pos = np.flatnonzero(within >= n - 1)  # each target has n-1 tokens of its own sequence
        hist = np.zeros(pos.shape, dtype=np.int64)
        for j in range(n - 1):
            hist = hist * V + flat[pos - (n - 1) + j]
        return hist * V + flat[pos], hist

    def fit(
        self,
        sequences: ArrayLike | list[ArrayLike],
        vocab_size: int,
        bos_id: int | None = BOS_ID,
        eos_id: int | None = EOS_ID,
    ) -> NGramLM:
        """Count the n-grams of ``sequences`` and build the smoothed model; returns ``self``.

        ``sequences``: one 1-D id array or a list of them (e.g. ``tokenizer.encode_lines(text)``),
        ids in [0, vocab_size), without ``<bos>``/``<eos>``: each is padded with ``order - 1``
        ``bos_id`` on the left and one ``eos_id`` on the right (pass None to skip a padding; then
        the first ``order - 1`` tokens of a sequence only serve as history).  Refitting replaces
        the model.
        """
        V = _vocab(vocab_size)
        _check_code_range(V, self.order)
        for x, name in ((bos_id, "bos_id"), (eos_id, "eos_id")):
            if x is not None:
                if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
                    raise TypeError(f"{name} must be an int or None, got {type(x).__name__}")
                if not 0 <= x < V:
                    raise ValueError(f"{name} = {x} is out of range [0, {V})")
        seqs = self._sequences(sequences, V, "sequences")
        saved = (self.vocab_size, self.bos_id, self.eos_id)
        self.vocab_size, self.bos_id = V, None if bos_id is None else int(bos_id)
        self.eos_id = None if eos_id is None else int(eos_id)
        codes, _ = self._targets(seqs)
        if codes.size == 0:
            self.vocab_size, self.bos_id, self.eos_id = saved
            raise ValueError("sequences hold no token to predict (empty training data)")
        uniq, counts = np.unique(codes, return_counts=True)
        levels = [_Level(uniq, counts, V)]
        if self.smoothing == "kneser_ney":
            for m in range(self.order - 1, 0, -1):  # continuation counts N1+(. g) for m-grams g
                suffix = levels[0].codes % (V**m)
                g, cont = np.unique(suffix, return_counts=True)
                levels.insert(0, _Level(g, cont, V))
        self._levels = levels  # levels[m-1] is order m (KN); add-k keeps only order n
        self.n_targets = int(codes.size)
        self._table = None
        return self

    def fit_text(self, text: str, tokenizer: _Tokenizer) -> NGramLM:
        """``fit(tokenizer.encode_lines(text), tokenizer.vocab_size, tokenizer.bos_id,
        tokenizer.eos_id)``: one training sequence per non-blank line."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        missing = [
            a
            for a in ("encode_lines", "vocab_size", "bos_id", "eos_id")
            if not hasattr(tokenizer, a)
        ]
        if missing:
            raise TypeError(
                f"tokenizer must be a fastlmrl tokenizer (CharTokenizer, "
                f"WordTokenizer), got {type(tokenizer).__name__} without "
                f"{', '.join(missing)}"
            )
        seqs = tokenizer.encode_lines(text)
        return self.fit(seqs, tokenizer.vocab_size, tokenizer.bos_id, tokenizer.eos_id)

    # -- probabilities ----------------------------------------------------------------------
    def _prob(self, hist: np.ndarray, tok: np.ndarray) -> np.ndarray:
        """P(tok | hist) in float64 for int64 arrays of full (n-1)-gram history codes."""
        V, levels = self._V(), self._fitted_levels()
        if self.smoothing == "add_k":
            lev = levels[0]
            found_h, ih = _lookup(lev.hist, hist)
            found_g, ig = _lookup(lev.codes, hist * V + tok)
            den = np.where(found_h, lev.hist_total[ih], 0.0)
            c = np.where(found_g, lev.counts[ig], 0.0)
            return (c + self.k) / (den + self.k * V)
        D = self.discount
        p = np.full(hist.shape, 1.0 / V)
        for m, lev in enumerate(levels, start=1):
            h = hist % (V ** (m - 1))
            found_h, ih = _lookup(lev.hist, h)
            found_g, ig = _lookup(lev.codes, h * V + tok)
            den = np.where(found_h, lev.hist_total[ih], 1.0)
            gamma = np.where(found_h, (D * lev.hist_types[ih]) / den, 1.0)
            c = np.where(found_g, lev.counts[ig], 0.0)
            alpha = np.where(found_h, np.maximum(c - D, 0.0) / den, 0.0)
            p = gamma * p + alpha
        return p

    def _lower_dense(self) -> np.ndarray | None:
        """The dense (V**(n-2), V) table of P_{n-1} (KN; (1, V) uniform for n = 1), or None
        for add-k (a single order)."""
        if self.smoothing == "add_k":
            return None
        V = self._V()
        p = np.full((1, V), 1.0 / V)
        for m, lev in enumerate(self._fitted_levels()[:-1], start=1):
            p = self._level_terms(lev, 0, V ** (m - 1), p)
        return p

    def _level_terms(self, lev: _Level, lo: int, hi: int, lower: np.ndarray | None) -> np.ndarray:
        """Rows h in [lo, hi) of one order: add-k probabilities (``lower`` None) or the KN
        interpolation ``gamma[h] * lower[h mod S_lower] + alpha[h, w]``.

        The same float64 expressions as :meth:`_prob`, element by element (gamma = 1, alpha = 0
        for an unseen history; alpha = 0 for an unseen n-gram), so a dense table is bit-identical
        to pointwise lookups."""
        V = self._V()
        H = hi - lo
        h_lo, h_hi = np.searchsorted(lev.hist, [lo, hi])
        hs = lev.hist[h_lo:h_hi] - lo
        g_lo, g_hi = np.searchsorted(lev.codes, [lo * V, hi * V])
        gs = lev.codes[g_lo:g_hi] - lo * V
        cs = lev.counts[g_lo:g_hi]
        if lower is None:  # add-k: (c + k) / (c(h) + k V)
            den = np.zeros(H)
            den[hs] = lev.hist_total[h_lo:h_hi]
            c = np.zeros(H * V)
            c[gs] = cs
            return (c.reshape(H, V) + self.k) / (den[:, None] + self.k * V)
        D = self.discount
        den = np.ones(H)
        den[hs] = lev.hist_total[h_lo:h_hi]
        gamma = np.ones(H)
        gamma[hs] = (D * lev.hist_types[h_lo:h_hi]) / den[hs]
        alpha = np.zeros(H * V)
        alpha[gs] = np.maximum(cs - D, 0.0) / den[gs // V]
        S = lower.shape[0]
        base = lower[np.arange(lo, hi, dtype=np.int64) % S]
        return gamma[:, None] * base + alpha.reshape(H, V)

    def _history_code(self, context: ArrayLike, name: str = "context") -> int:
        """The (n-1)-gram code of the last n-1 tokens of ``context`` (bos-padded on the left)."""
        V, k = self._V(), self.order - 1
        ctx = _id_array(context, name, V)
        if ctx.ndim != 1:
            raise ValueError(f"{name} must be 1-dimensional, got shape {ctx.shape}")
        if ctx.shape[0] < k:
            if self.bos_id is None:
                raise ValueError(
                    f"{name} must hold at least order - 1 = {k} tokens "
                    "(the model was fitted without <bos> padding)"
                )
            ctx = np.concatenate([np.full(k - ctx.shape[0], self.bos_id, np.int64), ctx])
        code = 0
        for t in ctx[ctx.shape[0] - k :].tolist():
            code = code * V + t
        return code

    def log_prob(self, token: ArrayLike, context: ArrayLike = ()) -> float | NDArray[np.float64]:
        """Natural log of P(token | context).

        ``context``: the preceding token ids, oldest first; only the last ``order - 1`` are read,
        and a shorter context is left-padded with ``<bos>`` (the start of a sequence).
        ``token``: an id, or an integer array of ids (then an array of log-probabilities).
        """
        self._require_fit()
        scalar = np.ndim(token) == 0
        if isinstance(token, (bool, np.bool_)):
            raise TypeError("token must be an int or an integer array, got bool")
        tok = _id_array(token, "token", self._V())
        hist = np.full(tok.shape, self._history_code(context), dtype=np.int64)
        out = np.log(self._prob(hist, tok))
        return float(out) if scalar else out

    def _table64(self, k: int) -> NDArray[np.float64]:
        V, n1 = self._V(), self.order - 1
        if k < n1:
            raise ValueError(
                f"k must be >= order - 1 = {n1} (the table needs the whole history "
                f"the model reads); got k={k}: fit a model of order k + 1"
            )
        S = num_contexts(V, k)
        if k == n1 and self._table is not None:
            return self._table
        base_s = V**n1
        base = np.empty((base_s, V), dtype=np.float64)
        lower, top = self._lower_dense(), self._fitted_levels()[-1]
        rows = max(1, _CHUNK // V)
        for r0 in range(0, base_s, rows):
            r1 = min(base_s, r0 + rows)
            np.log(self._level_terms(top, r0, r1, lower), out=base[r0:r1])
        if k == n1:
            self._table = base
            return base
        # a longer context: the model only reads its last n-1 tokens = ctx mod V**(n-1)
        return base[np.arange(S, dtype=np.int64) % base_s]

    def logits_table(self, k: int | None = None, dtype: DTypeLike = np.float64) -> np.ndarray:
        r"""The (V**k, V) table ``L[c, w] = log P(w | context c)`` (a new, writeable array).

        ``c`` is the :func:`context_id` of the last ``k`` tokens (``k`` defaults to
        ``order - 1``; a larger ``k`` repeats rows, as the model only reads the last
        ``order - 1`` tokens; a smaller one is refused).  Rows are normalised log-probabilities,
        so ``softmax(L[c]) = P(. | c)``; computed in float64 and rounded once to ``dtype``
        (float32 or float64).  Raises ValueError when ``V**(k+1) > 2**26``.
        """
        self._require_fit()
        k = self.order - 1 if k is None else _k(k)
        dt = np.dtype(dtype)
        if dt not in check.FLOAT_DTYPES:
            raise TypeError(f"dtype must be float32 or float64, got {dt}")
        return self._table64(k).astype(dt, copy=True)

    def policy_tables(
        self, k: int | None = None, dtype: DTypeLike = np.float32
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(policy, reference)``: two separate copies of :meth:`logits_table` — the initial
        policy logits to train in place, and the frozen reference policy (read-only) for the KL
        penalty."""
        policy = self.logits_table(k, dtype)
        reference = policy.copy()
        reference.flags.writeable = False
        return policy, reference

    def perplexity(self, sequences: ArrayLike | list[ArrayLike]) -> float:
        r"""Perplexity :math:`\exp(-\frac{1}{N}\sum_i \log P(w_i \mid h_i))` over the targets of
        ``sequences`` (padded exactly as in :meth:`fit`: every token and each ``<eos>``).

        A uniform model over V ids has perplexity V.
        """
        self._require_fit()
        V = self._V()
        seqs = self._sequences(sequences, V, "sequences")
        codes, hist = self._targets(seqs)
        if codes.size == 0:
            raise ValueError("sequences hold no token to score")
        logp = np.log(self._prob(hist, codes % V))
        return float(np.exp(-np.mean(logp)))

    # -- sampling ---------------------------------------------------------------------------
    def sample(
        self,
        n_tokens: int,
        seed: int | RandomStream,
        prompt: ArrayLike = (),
        n_sequences: int | None = None,
        stop_at_eos: bool = True,
    ) -> NDArray[np.int64]:
        """Sample continuations of ``prompt`` from the model (temperature 1).

        Step ``t`` draws the next token of every sequence with
        ``fastlmrl.boltzmann(L, contexts, 1.0, stream)`` on the float64 :meth:`logits_table`
        ``L``, so sequence ``i`` at step ``t`` uses counter ``c + t * B + i`` of ``seed``
        (``B`` = ``n_sequences`` or 1) and the call consumes exactly ``n_tokens * B`` counters —
        the same ids in every backend.  ``seed``: an int or a :class:`fastlmrl.RandomStream`
        (advanced).

        Parameters
        ----------
        n_tokens : int >= 0, tokens to generate (the prompt not included)
        prompt : token ids preceding the sample (left-padded with ``<bos>``; default: none)
        n_sequences : None for one sequence, or B >= 1
        stop_at_eos : stop a sequence after its first ``<eos>``

        Returns
        -------
        With ``n_sequences=None`` a 1-D int64 array (ending with the ``<eos>`` if one was drawn
        and ``stop_at_eos``); else a (B, n_tokens) int64 array where, with ``stop_at_eos``, the
        entries after a sequence's first ``<eos>`` are ``<eos>``.
        """
        from .selection import boltzmann

        self._require_fit()
        n_tokens = check.positive_int(n_tokens, "n_tokens", 0)
        B = 1 if n_sequences is None else check.positive_int(n_sequences, "n_sequences", 1)
        if not isinstance(stop_at_eos, (bool, np.bool_)):
            raise TypeError("stop_at_eos must be a bool")
        V, k = self._V(), self.order - 1
        check.size(n_tokens * B, "n_tokens", f"n_tokens * n_sequences = {n_tokens} * {B}")
        start = self._history_code(prompt, "prompt")
        check_capacity(seed, n_tokens * B)  # type, range and counters left, before any draw
        stream = seed if isinstance(seed, RandomStream) else RandomStream(int(seed))
        table = self._table64(k)
        first = stream.counter
        out = np.empty((B, n_tokens), dtype=np.int64)
        ctx = np.full(B, start, dtype=np.int64)
        done = np.zeros(B, dtype=bool)
        stop = stop_at_eos and self.eos_id is not None
        eos = -1 if self.eos_id is None else self.eos_id  # read only when stop
        try:
            for t in range(n_tokens):
                if stop and done.all():
                    out[:, t:] = eos
                    break
                tok = boltzmann(table, ctx, 1.0, stream)
                if stop:
                    tok = np.where(done, eos, tok)
                    done |= tok == eos
                out[:, t] = tok
                ctx = (ctx * V + tok) % (V**k)  # next_context
        finally:  # consume exactly n_tokens * B counters whatever happened (none on failure)
            stream.counter = first
        advance(stream, n_tokens * B)
        if n_sequences is not None:
            return out
        seq = out[0]
        if stop:
            hit = np.flatnonzero(seq == eos)
            if hit.size:
                seq = seq[: hit[0] + 1]
        return seq.copy()
