r"""Reward functions over batches of generated token ids (vectorised NumPy), and KL shaping.

Every reward function is called on a batch of responses

* ``tokens`` — (B, T) integer array, row ``b`` holds the generated tokens
  :math:`y_{b,0}, \dots, y_{b,L_b-1}` left-aligned (entries from ``L_b`` on are padding and are
  never read);
* ``lengths`` — (B,) integers :math:`L_b \in [0, T]` (an emitted EOS token is counted);
* ``prompt_ids`` — (B,) integer ids of the prompts the responses continue (or None), so a reward
  can depend on the prompt (e.g. one target per prompt);

and returns float64 rewards in one of two forms (attribute ``per_token``):

* terminal (``per_token = False``): shape (B,), one score per sequence, received after its last
  token — in Sutton & Barto (2018, §3.1) terms the reward :math:`R_{L_b}` that follows the last
  action :math:`A_{L_b-1}`, every earlier :math:`R_{t+1}` being 0;
* per token (``per_token = True``): shape (B, T); entry ``[b, t]`` is :math:`R_{t+1}`, the reward
  that follows emitting token ``t`` (:math:`A_t`).  Entries ``t >= L_b`` are returned as 0.

The output of every reward function (built-in or user) is validated: wrong shape, a non-real
dtype or a NaN / infinite value in the valid region raises a ValueError / TypeError naming the
reward function and the problem.  Built-ins: :class:`TargetMatch`, :class:`KeywordReward`,
:class:`RepetitionPenalty`, :class:`LengthPenalty`; user code: :class:`CallableReward` (plain
Python on the batch, or a Numba-jitted function applied per sequence without Python per row).
Rewards combine with ``+`` and scale with ``*``.  :func:`kl_shaped` adds the per-token
KL-to-reference penalty of RLHF.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, cast

import numpy as np
from numpy.typing import ArrayLike

from . import _validation as check
from .keyword_scores import _flatten_grams, _scores, word_flags

__all__ = [
    "CallableReward",
    "KeywordReward",
    "LengthPenalty",
    "RepetitionPenalty",
    "RewardFunction",
    "TargetMatch",
    "as_reward",
    "kl_shaped",
    "terminal_to_per_token",
]


# ---------------------------------------------------------------------------------------------
# argument checks


def _token_batch(
    tokens: ArrayLike, lengths: ArrayLike, prompt_ids: ArrayLike | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate (tokens (B, T), lengths (B,), prompt_ids (B,) or None); return int64 arrays."""
    arr = np.asarray(tokens)
    if arr.dtype.kind not in "iu":
        if not (arr.size == 0 and arr.dtype.kind == "f"):
            raise TypeError(f"tokens must hold integer token ids, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"tokens must be 2-dimensional (B, T), got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    n, horizon = arr.shape
    lens = check.ids(lengths, "lengths", n).astype(np.int64, copy=False)
    if lens.size and (lens.min() < 0 or lens.max() > horizon):
        i = int(np.flatnonzero((lens < 0) | (lens > horizon))[0])
        raise ValueError(f"lengths[{i}] = {int(lens[i])} is out of range [0, {horizon}]")
    if prompt_ids is not None:
        prompt_ids = check.ids(prompt_ids, "prompt_ids", n).astype(np.int64, copy=False)
        if prompt_ids.size and prompt_ids.min() < 0:
            raise ValueError("prompt_ids must be non-negative")
    return arr, lens, prompt_ids


def _valid_mask(lengths: np.ndarray, horizon: int) -> np.ndarray:
    return np.arange(horizon)[None, :] < lengths[:, None]


def _finite_real(x: Any, name: str) -> float:
    return check.real(x, name)


def _validated(
    out: Any, fn: RewardFunction, per_token: bool, n: int, horizon: int, lengths: np.ndarray
) -> np.ndarray:
    """Check a reward function's output; return float64 (B,) or (B, T) with padding zeroed."""
    label = f"reward function {fn!r}"
    if out is None:
        raise TypeError(f"{label} returned None")
    try:
        arr = np.asarray(out)
    except Exception as exc:  # pragma: no cover - exotic objects
        raise TypeError(f"{label} returned an object that is not an array: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{label} must return real numbers, got dtype {arr.dtype}")
    expected = (n, horizon) if per_token else (n,)
    if arr.shape != expected:
        what = "(B, T): one reward per token" if per_token else "(B,): one reward per sequence"
        raise ValueError(f"{label} returned shape {arr.shape}, expected {expected} {what}")
    arr = np.array(arr, dtype=np.float64)  # a fresh copy: the caller owns it
    if per_token:
        valid = _valid_mask(lengths, horizon)
        bad = valid & ~np.isfinite(arr)
        if bad.any():
            b, t = (int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{label} returned a non-finite reward {arr[b, t]} at [{b}, {t}]")
        arr[~valid] = 0.0
    else:
        bad = ~np.isfinite(arr)
        if bad.any():
            b = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{label} returned a non-finite reward {arr[b]} at [{b}]")
    return arr


def terminal_to_per_token(scores: ArrayLike, lengths: ArrayLike, horizon: int) -> np.ndarray:
    r"""Place terminal scores at each sequence's last token: a (B, T) float64 array.

    ``out[b, L_b - 1] = scores[b]``, every other entry 0 (the reward :math:`R_{L_b}` after the last
    action).  A sequence of length 0 has no token to carry a score: its score must be 0.
    """
    horizon = check.positive_int(horizon, "horizon", 0)
    lengths = check.ids(lengths, "lengths").astype(np.int64, copy=False)
    scores = check.values(scores, "scores", lengths.shape[0], np.float64)
    if lengths.size and (lengths.min() < 0 or lengths.max() > horizon):
        raise ValueError(f"lengths must be in [0, {horizon}]")
    if not np.isfinite(scores).all():
        i = int(np.flatnonzero(~np.isfinite(scores))[0])
        raise ValueError(f"scores[{i}] = {scores[i]} is not finite")
    empty = (lengths == 0) & (scores != 0)
    if empty.any():
        i = int(np.flatnonzero(empty)[0])
        raise ValueError(f"sequence {i} is empty (length 0) but has a nonzero terminal score")
    out = np.zeros((lengths.shape[0], horizon), dtype=np.float64)
    rows = np.flatnonzero(lengths > 0)
    out[rows, lengths[rows] - 1] = scores[rows]
    return out


@check.renamed(
    deprecated={"logprobs": "log_probs", "ref_logprobs": "ref_log_probs"},
    ecosystem={"beta": "kl_coef"},
)
def kl_shaped(
    rewards: ArrayLike,
    log_probs: ArrayLike,
    ref_log_probs: ArrayLike,
    kl_coef: float,
    valid: ArrayLike | None = None,
) -> np.ndarray:
    r"""KL-to-reference reward shaping (Ziegler et al. 2019; Stiennon et al. 2020; Ouyang et al.
    2022, eq. 2): per token

    .. math::  \tilde r_t = r_t - \beta\,\big(\log\pi(y_t \mid x, y_{<t})
               - \log\pi_{\mathrm{ref}}(y_t \mid x, y_{<t})\big)

    where ``log_probs`` are the sampling policy's log-probabilities of the emitted tokens and
    ``ref_log_probs`` the reference policy's; :math:`\log\pi - \log\pi_{\mathrm{ref}}` is the
    single-sample estimate of the per-token KL.  All arrays (B, T); ``valid`` (B, T) bool marks
    real tokens (default all); entries outside it are returned as 0.  ``kl_coef`` = β >= 0
    (TRL's ``beta`` is accepted too; ``logprobs`` / ``ref_logprobs`` are deprecated keywords).
    Returns a new float64 array (computed in float64).
    """
    beta = check.real(kl_coef, "kl_coef", 0.0)
    r = _real_2d(rewards, "rewards")
    lp = _real_2d(log_probs, "log_probs", r.shape)
    ref = _real_2d(ref_log_probs, "ref_log_probs", r.shape)
    if valid is None:
        mask = np.ones(r.shape, dtype=bool)
    else:
        mask = np.asarray(valid)
        if mask.dtype != np.bool_:
            raise TypeError(f"valid must be a boolean array, got dtype {mask.dtype}")
        if mask.shape != r.shape:
            raise ValueError(f"valid must have shape {r.shape}, got {mask.shape}")
    for arr, name in ((r, "rewards"), (lp, "log_probs"), (ref, "ref_log_probs")):
        bad = mask & ~np.isfinite(arr)
        if bad.any():
            b, t = (int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{name}[{b}, {t}] = {arr[b, t]} is not finite")
    out = r - beta * (lp - ref)
    out[~mask] = 0.0
    return out


def _real_2d(x: ArrayLike, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-dimensional (B, T), got shape {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    return arr.astype(np.float64)


# ---------------------------------------------------------------------------------------------
# the interface


class RewardFunction:
    """Base class of the reward functions: subclasses set ``per_token`` and implement
    ``compute(tokens, lengths, prompt_ids)``.

    Call an instance as ``reward(tokens, lengths, prompt_ids=None)``: the arguments are validated,
    ``compute`` runs on int64 arrays, and its output is validated (shape, dtype, finiteness) and
    returned as float64 — (B,) when ``per_token`` is False, else (B, T) with padding zeroed.
    """

    per_token: bool = False

    def compute(  # pragma: no cover - abstract
        self, tokens: np.ndarray, lengths: np.ndarray, prompt_ids: np.ndarray | None
    ) -> ArrayLike:
        """The rewards of a validated batch (int64 ``tokens`` (B, T), ``lengths`` (B,),
        ``prompt_ids`` (B,) or None): (B,) or, with ``per_token``, (B, T)."""
        raise NotImplementedError

    def max_token_id(self) -> int:
        """Largest token id the reward refers to (-1 if none): environments check it fits V."""
        return -1

    def __call__(
        self, tokens: ArrayLike, lengths: ArrayLike, prompt_ids: ArrayLike | None = None
    ) -> np.ndarray:
        toks, lens, prompts = _token_batch(tokens, lengths, prompt_ids)
        out = self.compute(toks, lens, prompts)
        return _validated(out, self, self.per_token, toks.shape[0], toks.shape[1], lens)

    def __add__(self, other: object) -> RewardFunction:
        other = as_reward(other)
        if other is None:
            return NotImplemented
        return _SumReward(self, other)

    def __radd__(self, other: object) -> RewardFunction:
        # sum([...]) starts from int 0 (the ignore: numbers.Number declares no __eq__)
        if isinstance(other, numbers.Number) and other == 0:  # type: ignore[comparison-overlap]
            return self
        return NotImplemented

    def __mul__(self, scale: object) -> RewardFunction:
        if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, numbers.Real):
            return NotImplemented
        return _ScaledReward(self, _finite_real(scale, "scale"))

    __rmul__ = __mul__

    def __neg__(self) -> RewardFunction:
        return _ScaledReward(self, -1.0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def as_reward(reward: object) -> RewardFunction | None:
    """None -> None; a RewardFunction as is; any other callable -> ``CallableReward(reward)``."""
    if reward is None or isinstance(reward, RewardFunction):
        return reward
    if callable(reward):
        return CallableReward(reward)
    raise TypeError(f"reward must be a RewardFunction or a callable, got {type(reward).__name__}")


class _SumReward(RewardFunction):
    """``a + b + ...``: the sum of rewards (per-token when any part is)."""

    parts: tuple[RewardFunction, ...]

    def __init__(self, *parts: RewardFunction) -> None:
        flat: list[RewardFunction] = []
        for p in parts:
            flat.extend(p.parts if isinstance(p, _SumReward) else [p])
        self.parts = tuple(flat)
        self.per_token = any(p.per_token for p in self.parts)

    def compute(
        self, tokens: np.ndarray, lengths: np.ndarray, prompt_ids: np.ndarray | None
    ) -> ArrayLike:
        horizon = tokens.shape[1]
        total = np.zeros((tokens.shape[0], horizon) if self.per_token else tokens.shape[0])
        for part in self.parts:
            r = part(tokens, lengths, prompt_ids)
            if self.per_token and not part.per_token:
                r = terminal_to_per_token(r, lengths, horizon)
            total = total + r
        return total

    def max_token_id(self) -> int:
        return max(p.max_token_id() for p in self.parts)

    def __repr__(self) -> str:
        return " + ".join(repr(p) for p in self.parts)


class _ScaledReward(RewardFunction):
    def __init__(self, inner: RewardFunction, scale: float) -> None:
        self.inner = inner
        self.scale = scale
        self.per_token = inner.per_token

    def compute(
        self, tokens: np.ndarray, lengths: np.ndarray, prompt_ids: np.ndarray | None
    ) -> ArrayLike:
        return self.scale * self.inner(tokens, lengths, prompt_ids)

    def max_token_id(self) -> int:
        return self.inner.max_token_id()

    def __repr__(self) -> str:
        return f"{self.scale!r} * {self.inner!r}"


# ---------------------------------------------------------------------------------------------
# built-ins


def _effective_lengths(tokens: np.ndarray, lengths: np.ndarray, eos_id: int | None) -> np.ndarray:
    """Lengths without a final EOS token when ``eos_id`` is given."""
    if eos_id is None:
        return lengths
    has = lengths > 0
    last = tokens[np.arange(tokens.shape[0]), np.maximum(lengths - 1, 0)]
    return lengths - (has & (last == eos_id)).astype(np.int64)


def _check_eos(eos_id: Any) -> int | None:
    if eos_id is None:
        return None
    return check.positive_int(eos_id, "eos_id", 0)


def _id_sequence(x: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.size == 0 and arr.ndim == 1:
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu" or arr.ndim != 1:
        raise TypeError(f"{name} must be a 1-D sequence of integer token ids")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} holds a negative token id")
    return arr.astype(np.int64)


class TargetMatch(RewardFunction):
    r"""Match of the response :math:`y` against a target sequence :math:`g` (length :math:`L_g`).

    ``targets``: one target (a 1-D sequence of ids, used for every sequence) or a list of targets,
    one per prompt (row ``b`` is scored against ``targets[prompt_ids[b]]``).  With ``eos_id``
    a final EOS token of the response is not scored.  Let :math:`e_t = [t < L \wedge t < L_g
    \wedge y_t = g_t]` and :math:`\ell = \max\{j : e_0 = \dots = e_{j-1} = 1\}` (common prefix):

    * ``mode="fraction"``: :math:`\sum_t e_t / L_g`; per token :math:`r_t = e_t / L_g`;
    * ``mode="prefix"``:   :math:`\ell / L_g`; per token :math:`r_t = [t < \ell] / L_g`;
    * ``mode="exact"``:    :math:`[L = L_g \wedge \ell = L_g]` (terminal only).

    Per-token rewards sum to the terminal score.
    """

    MODES = ("fraction", "prefix", "exact")

    def __init__(
        self,
        targets: ArrayLike | list[ArrayLike],
        mode: str = "fraction",
        per_token: bool = False,
        eos_id: int | None = None,
    ) -> None:
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        if per_token and mode == "exact":
            raise ValueError("mode='exact' is a terminal reward (per_token=False)")
        self.mode = mode
        self.per_token = bool(per_token)
        self.eos_id = _check_eos(eos_id)
        seqs: list[Any]
        if isinstance(targets, np.ndarray) and targets.ndim == 1:
            seqs, self.per_prompt = [targets], False
        elif isinstance(targets, (list, tuple)) and targets and np.ndim(targets[0]) == 1:
            seqs, self.per_prompt = list(targets), True
        else:
            seqs, self.per_prompt = [targets], False
        seqs = [_id_sequence(s, "targets") for s in seqs]
        if any(s.size == 0 for s in seqs):
            raise ValueError("targets must not be empty")
        width = max(s.size for s in seqs)
        self._targets = np.full((len(seqs), width), -1, dtype=np.int64)
        for i, s in enumerate(seqs):
            self._targets[i, : s.size] = s
        self._target_lengths = np.array([s.size for s in seqs], dtype=np.int64)

    def max_token_id(self) -> int:
        return int(self._targets.max())

    def compute(
        self, tokens: np.ndarray, lengths: np.ndarray, prompt_ids: np.ndarray | None
    ) -> ArrayLike:
        n, horizon = tokens.shape
        if self.per_prompt:
            if prompt_ids is None:
                raise ValueError("TargetMatch with one target per prompt needs prompt_ids")
            if prompt_ids.size and prompt_ids.max() >= len(self._target_lengths):
                raise ValueError(
                    f"prompt_ids must be < {len(self._target_lengths)} (the number of targets)"
                )
            rows = prompt_ids
        else:
            rows = np.zeros(n, dtype=np.int64)
        goal = self._targets[rows]
        goal_len = self._target_lengths[rows]
        length = _effective_lengths(tokens, lengths, self.eos_id)
        width = min(horizon, goal.shape[1])
        t = np.arange(width)[None, :]
        eq = (
            (tokens[:, :width] == goal[:, :width]) & (t < length[:, None]) & (t < goal_len[:, None])
        )
        prefix = np.cumprod(eq, axis=1).astype(bool)
        if self.per_token:
            hits = eq if self.mode == "fraction" else prefix
            out = np.zeros((n, horizon))
            out[:, :width] = hits / goal_len[:, None]
            return out
        if self.mode == "fraction":
            return eq.sum(axis=1) / goal_len
        common = prefix.sum(axis=1)
        if self.mode == "prefix":
            return common / goal_len
        return ((length == goal_len) & (common == goal_len)).astype(np.float64)

    def __repr__(self) -> str:
        return f"TargetMatch(mode={self.mode!r}, per_token={self.per_token})"


class KeywordReward(RewardFunction):
    r"""Keyword / lexicon score:
    :math:`\sum_k w_k \cdot \#\{\text{occurrences of } k \text{ in } y\}`.

    ``weights``: a dict mapping a token id or a tuple of ids (an n-gram) to its weight, or a
    sequence of token ids (weight 1 each).  Every (overlapping) occurrence lying entirely within
    the response counts; ``presence=True`` counts each key at most once per sequence.
    ``word_tokens``: the ids of word tokens (e.g. a character tokenizer's letters): then only
    *whole words* count, occurrences delimited by other tokens or the response's edges ("kind"
    in "a kind cat", not in "kindly" or "unkind"); None counts every occurrence (substrings).
    ``normalize=True`` divides by the response length (0 for an empty response).  Per token
    (:func:`fastlmrl.keyword_scores`), the weight is paid at the occurrence's last token (with
    ``presence``, the first) and, with ``word_tokens``, taken back when a word token follows it,
    so the per-token rewards of every prefix sum to that prefix's score.
    """

    def __init__(
        self,
        weights: dict[Any, float] | ArrayLike,
        per_token: bool = False,
        presence: bool = False,
        normalize: bool = False,
        word_tokens: ArrayLike | None = None,
    ) -> None:
        if not isinstance(weights, dict):
            weights = {k: 1.0 for k in _id_sequence(weights, "weights").tolist()}
        if not weights:
            raise ValueError("weights must not be empty")
        self.per_token = bool(per_token)
        self.presence = bool(presence)
        self.normalize = bool(normalize)
        self.grams = []
        for key, w in weights.items():
            gram = (key,) if isinstance(key, (int, np.integer)) else tuple(key)
            if not gram or any(
                isinstance(g, (bool, np.bool_)) or not isinstance(g, (int, np.integer)) or g < 0
                for g in gram
            ):
                raise ValueError(f"keyword {key!r} must be a token id or a tuple of token ids")
            self.grams.append((tuple(int(g) for g in gram), _finite_real(w, f"weights[{key!r}]")))
        # the keywords flattened once (CSR form) for the compiled kernel (fastlmrl.keyword_scores)
        self._gram_tokens, self._gram_offsets = _flatten_grams([g for g, _ in self.grams])
        self._gram_weights = np.array([w for _, w in self.grams], dtype=np.float64)
        self._word_flags = word_flags(word_tokens)
        self.word_tokens = tuple(int(i) for i in np.flatnonzero(self._word_flags))

    def max_token_id(self) -> int:
        return max(max(g) for g, _ in self.grams)

    def compute(
        self, tokens: np.ndarray, lengths: np.ndarray, prompt_ids: np.ndarray | None
    ) -> ArrayLike:
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        lengths = np.ascontiguousarray(lengths, dtype=np.int64)
        out = _scores(
            tokens,
            lengths,
            self._gram_tokens,
            self._gram_offsets,
            self._gram_weights,
            int(self.presence),
            self._word_flags,
        )
        if self.normalize:
            out /= np.maximum(lengths, 1)[:, None]
        return out if self.per_token else out.sum(axis=1)

    def __repr__(self) -> str:
        whole = ", whole words" if self.word_tokens else ""
        return f"KeywordReward({len(self.grams)} keys, per_token={self.per_token}{whole})"


class RepetitionPenalty(RewardFunction):
    r"""Repetition penalty:
    :math:`-w \cdot \#\{\text{n-grams of } y \text{ that occurred earlier in } y\}`.

    An n-gram occurrence starting at position :math:`i` (:math:`i + n \le L`) is a repeat when the
    same n tokens start at some :math:`j < i` of the same response (overlaps count: "aaa" holds
    one repeated bigram).  Per token, :math:`-w` is paid at the last token of each repeat.
    """

    def __init__(self, n: int = 2, weight: float = 1.0, per_token: bool = False) -> None:
        self.n = check.positive_int(n, "n")
        self.weight = _finite_real(weight, "weight")
        self.per_token = bool(per_token)

    def compute(
        self, tokens: np.ndarray, lengths: np.ndarray, prompt_ids: np.ndarray | None
    ) -> ArrayLike:
        rows, horizon = tokens.shape
        n = self.n
        out = np.zeros((rows, horizon))
        width = horizon - n + 1
        if width > 0 and rows:
            starts = np.arange(width)
            ok = starts[None, :] + n <= lengths[:, None]
            b_idx, s_idx = np.nonzero(ok)
            if b_idx.size:
                grams = np.stack([tokens[b_idx, s_idx + j] for j in range(n)], axis=1)
                keys = np.concatenate([b_idx[:, None], grams], axis=1)
                _, code = np.unique(keys, axis=0, return_inverse=True)
                code = code.reshape(-1)
                order = np.lexsort((s_idx, code))
                repeat = np.zeros(code.size, dtype=bool)
                repeat[order[1:]] = code[order[1:]] == code[order[:-1]]
                out[b_idx[repeat], s_idx[repeat] + n - 1] = -self.weight
        return out if self.per_token else out.sum(axis=1)

    def __repr__(self) -> str:
        return f"RepetitionPenalty(n={self.n}, weight={self.weight}, per_token={self.per_token})"


class LengthPenalty(RewardFunction):
    r"""Length penalty: :math:`-w\,|L - L^*|` with a target length :math:`L^*`, else :math:`-w L`.

    With ``eos_id`` a final EOS token is not counted.  Per token (no target only): :math:`-w`
    for every token.
    """

    def __init__(
        self,
        weight: float = 1.0,
        target: int | None = None,
        per_token: bool = False,
        eos_id: int | None = None,
    ) -> None:
        self.weight = _finite_real(weight, "weight")
        self.target = None if target is None else check.positive_int(target, "target", 0)
        if per_token and self.target is not None:
            raise ValueError("a length penalty with a target length is terminal (per_token=False)")
        self.per_token = bool(per_token)
        self.eos_id = _check_eos(eos_id)

    def compute(
        self, tokens: np.ndarray, lengths: np.ndarray, prompt_ids: np.ndarray | None
    ) -> ArrayLike:
        length = _effective_lengths(tokens, lengths, self.eos_id)
        if self.per_token:
            return -self.weight * _valid_mask(length, tokens.shape[1]).astype(np.float64)
        if self.target is None:
            return -self.weight * length.astype(np.float64)
        return -self.weight * np.abs(length - self.target).astype(np.float64)

    def __repr__(self) -> str:
        return f"LengthPenalty(weight={self.weight}, target={self.target})"


# ---------------------------------------------------------------------------------------------
# user functions


def _is_numba_dispatcher(fn: object) -> bool:
    try:
        from numba.core.dispatcher import Dispatcher
    except Exception:  # pragma: no cover - numba is a dependency
        return False
    return isinstance(fn, Dispatcher)


_DRIVERS: dict[bool, Any] = {}  # per_token -> jitted driver


def _numba_driver(per_token: bool) -> Any:
    """A jitted loop calling a jitted per-sequence function on every row (no Python per row)."""
    if per_token in _DRIVERS:
        return _DRIVERS[per_token]
    from numba import njit

    if per_token:

        @njit
        def drive(fn: Any, tokens: Any, lengths: Any, out: Any) -> int:
            for b in range(tokens.shape[0]):
                length = lengths[b]
                r = fn(tokens[b, :length])
                if r.shape[0] != length:
                    return b
                for t in range(length):
                    out[b, t] = r[t]
            return -1
    else:

        @njit
        def drive(fn: Any, tokens: Any, lengths: Any, out: Any) -> int:
            for b in range(tokens.shape[0]):
                out[b] = fn(tokens[b, : lengths[b]])
            return -1

    _DRIVERS[per_token] = drive
    return drive


class CallableReward(RewardFunction):
    """A user reward function.

    * ``per_sequence=False`` (default): ``fn(tokens, lengths, prompt_ids)`` is called once on the
      whole batch (int64 arrays as described in the module docstring; ``prompt_ids`` may be None)
      and must return (B,) — or (B, T) with ``per_token=True``.
    * ``per_sequence=True``: ``fn(seq)`` is called on each response ``tokens[b, :L_b]`` (1-D int64)
      and returns a float — or, with ``per_token=True``, a 1-D array of length ``L_b``.  A
      Numba-jitted ``fn`` (``@numba.njit``) is driven by a jitted loop, so no Python runs per row.

    The output is validated like every reward's (shape, dtype, NaN / infinity).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        per_token: bool = False,
        per_sequence: bool = False,
        name: str | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.per_token = bool(per_token)
        self.per_sequence = bool(per_sequence)
        self.name = cast(str, name or getattr(fn, "__name__", type(fn).__name__))
        self.jitted = self.per_sequence and _is_numba_dispatcher(fn)

    def compute(
        self, tokens: np.ndarray, lengths: np.ndarray, prompt_ids: np.ndarray | None
    ) -> ArrayLike:
        if not self.per_sequence:
            return self.fn(tokens, lengths, prompt_ids)
        n, horizon = tokens.shape
        out = np.zeros((n, horizon) if self.per_token else n, dtype=np.float64)
        if self.jitted:
            bad = _numba_driver(self.per_token)(self.fn, tokens, lengths, out)
            if bad >= 0:
                raise ValueError(
                    f"reward function {self!r} returned the wrong number of "
                    f"per-token rewards for sequence {bad} (expected {lengths[bad]})"
                )
            return out
        for b in range(n):
            r = self.fn(tokens[b, : lengths[b]])
            if self.per_token:
                r = np.asarray(r)
                if r.shape != (lengths[b],):
                    raise ValueError(
                        f"reward function {self!r} returned shape {r.shape} for "
                        f"sequence {b}, expected ({lengths[b]},)"
                    )
                out[b, : lengths[b]] = r
            else:
                if np.ndim(r) != 0:
                    raise ValueError(
                        f"reward function {self!r} returned shape {np.shape(r)} for "
                        f"sequence {b}, expected a scalar"
                    )
                out[b] = r
        return out

    def __repr__(self) -> str:
        return self.name
