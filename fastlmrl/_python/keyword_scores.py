"""Reference keyword / lexicon scores (plain Python): the semantics every backend reproduces.

Keyword ``k`` is ``gram_tokens[gram_offsets[k]:gram_offsets[k + 1]]`` (CSR form, length >= 1,
ids >= 0) with weight ``gram_weights[k]``.  Row ``b`` is ``y = tokens[b, :lengths[b]]``.  An
occurrence of keyword ``k`` is a start ``s`` with ``y[s + j] == gram[j]`` for every ``j``, lying in
the row; it is *whole* when the tokens around it are not word tokens: ``s == 0`` or ``y[s - 1]``
is not a word token, and ``s + len(gram) == len(y)`` or ``y[s + len(gram)]`` is not a word token
(``word_flags`` (W,) uint8: token ``i`` is a word token iff ``0 <= i < W`` and
``word_flags[i] != 0``; an empty ``word_flags`` makes every occurrence whole: plain substring
counting).  The count ``c_k(y)`` is the number of whole occurrences (overlaps all count), or with
``presence`` nonzero ``min(1, number)``.  Per token, ``out`` holds the increments of the score
over the prefixes ``y[:t + 1]`` (each scored as a sequence of its own, so its edge is a
delimiter):

    out[b, t] = sum over k = 0 .. K-1 of gram_weights[k] * (c_k(y[:t + 1]) - c_k(y[:t]))

accumulated in float64 in key order starting from 0.0 (keys whose count does not change add
nothing); every ``t >= lengths[b]`` is 0, and ``out[b].sum()`` telescopes to the score of the row.
Without word tokens an increment is +1 exactly where an occurrence ends (with ``presence``: the
first); with them it can be -1: ``"kind"`` pays at ``d`` and is taken back at the ``l`` of
``"kindly"``.  Status codes (0 = ok; ``fastlmrl._status.Status``, declared in
``fastlmrl.keyword_scores.CONTRACT``): BAD_LENGTHS (76; shape (B,) or a value outside [0, T]),
BAD_GRAM_TOKENS (61; a negative id), BAD_GRAM_OFFSETS (62; not [0, ..., len(gram_tokens)]
strictly increasing), BAD_GRAM_WEIGHTS (63; shape (K,) or a non-finite weight), BAD_OUT (64;
shape (B, T)), and first of all OVERLAPPING_ARRAYS (8: ``out`` shares memory with another
argument, e.g. ``lengths`` or the grams it would overwrite mid-scan).  All are checked before
anything is written.
"""

import math

from .._status import (
    BAD_GRAM_OFFSETS,
    BAD_GRAM_TOKENS,
    BAD_GRAM_WEIGHTS,
    BAD_LENGTHS,
    BAD_OUT,
    OVERLAPPING_ARRAYS,
)
from ._common import written_overlaps

__all__ = ["keyword_scores"]


def _check(tokens_shape, l_, g_, o_, w_, out_shape):
    n_rows, horizon = tokens_shape
    if tuple(out_shape) != (n_rows, horizon):
        return BAD_OUT
    if len(l_) != n_rows:
        return BAD_LENGTHS
    if len(o_) < 1 or o_[0] != 0 or o_[-1] != len(g_):
        return BAD_GRAM_OFFSETS
    for k in range(len(o_) - 1):
        if o_[k + 1] <= o_[k]:
            return BAD_GRAM_OFFSETS
    if len(w_) != len(o_) - 1:
        return BAD_GRAM_WEIGHTS
    for w in w_:
        if not math.isfinite(w):
            return BAD_GRAM_WEIGHTS
    for g in g_:
        if g < 0:
            return BAD_GRAM_TOKENS
    for length in l_:
        if length < 0 or length > horizon:
            return BAD_LENGTHS
    return 0


def _is_word(flags, token):
    """Whether ``token`` is a word character: ``flags[token] != 0`` for ids in [0, len(flags))."""
    return 0 <= token < len(flags) and flags[token] != 0


def keyword_scores(
    tokens, lengths, gram_tokens, gram_offsets, gram_weights, presence, word_flags, out
):
    if written_overlaps(out, tokens, lengths, gram_tokens, gram_offsets, gram_weights, word_flags):
        return OVERLAPPING_ARRAYS
    t_, l_, g_ = tokens.tolist(), lengths.tolist(), gram_tokens.tolist()
    o_, w_, f_ = gram_offsets.tolist(), gram_weights.tolist(), word_flags.tolist()
    status = _check(tokens.shape, l_, g_, o_, w_, out.shape)
    if status:
        return status
    n_rows, horizon = tokens.shape
    grams = [g_[o_[k] : o_[k + 1]] for k in range(len(o_) - 1)]
    for b in range(n_rows):
        seq = t_[b][: l_[b]]
        row = [0.0] * horizon
        for gram, w in zip(grams, w_):
            size = len(gram)
            closed = 0  # whole occurrences already followed by a non-word token
            open_end = 0  # 1 if an occurrence with a whole left side ends at the prefix's edge
            previous = 0  # the keyword's count in the previous prefix
            for t in range(len(seq)):
                if open_end:  # token t decides whether the occurrence ending at t-1 is whole
                    if not _is_word(f_, seq[t]):
                        closed += 1
                    open_end = 0
                s = t - size + 1
                if s >= 0 and seq[s : t + 1] == gram and (s == 0 or not _is_word(f_, seq[s - 1])):
                    open_end = 1
                count = closed + open_end
                if presence:
                    count = min(count, 1)
                if count != previous:
                    row[t] += w * (count - previous)
                    previous = count
        for t in range(horizon):
            out[b, t] = row[t]
    return 0
