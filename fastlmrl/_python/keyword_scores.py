"""Reference keyword / lexicon scores (plain Python): the semantics every backend reproduces.

Keyword ``k`` is ``gram_tokens[gram_offsets[k]:gram_offsets[k + 1]]`` (CSR form, length >= 1,
ids >= 0) with weight ``gram_weights[k]``.  Row ``b`` is ``tokens[b, :lengths[b]]``.  An occurrence
of keyword ``k`` is a start ``s`` with ``tokens[b, s + j] == gram[j]`` for every ``j`` and
``s + len(gram) <= lengths[b]`` (overlapping occurrences all count); it *ends* at
``t = s + len(gram) - 1``.  With ``presence`` nonzero only the first occurrence of each keyword in
each row counts.  Then

    out[b, t] = sum over k = 0 .. K-1 of gram_weights[k] * [an occurrence of k counted at (b, t)]

accumulated in float64 in key order starting from 0.0 (keys that do not end at ``t`` add nothing);
every ``t >= lengths[b]`` is 0.  Status codes (0 = ok, mirrored in ``fastlmrl.keyword_scores``):
60 lengths (shape (B,) or a value outside [0, T]), 61 gram_tokens (a negative id), 62
gram_offsets (not [0, ..., len(gram_tokens)] strictly increasing), 63 gram_weights (shape (K,) or
a non-finite weight), 64 out (shape (B, T)).  All are checked before anything is written.
"""
import math

__all__ = ["keyword_scores"]

BAD_LENGTHS = 60
BAD_GRAM_TOKENS = 61
BAD_GRAM_OFFSETS = 62
BAD_GRAM_WEIGHTS = 63
BAD_OUT = 64


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


def keyword_scores(tokens, lengths, gram_tokens, gram_offsets, gram_weights, presence, out):
    t_, l_, g_ = tokens.tolist(), lengths.tolist(), gram_tokens.tolist()
    o_, w_ = gram_offsets.tolist(), gram_weights.tolist()
    status = _check(tokens.shape, l_, g_, o_, w_, out.shape)
    if status:
        return status
    n_rows, horizon = tokens.shape
    grams = [g_[o_[k]:o_[k + 1]] for k in range(len(o_) - 1)]
    for b in range(n_rows):
        seq = t_[b][:l_[b]]
        row = [0.0] * horizon
        for gram, w in zip(grams, w_):
            size = len(gram)
            for s in range(len(seq) - size + 1):
                if seq[s:s + size] == gram:
                    row[s + size - 1] += w
                    if presence:
                        break
        for t in range(horizon):
            out[b, t] = row[t]
    return 0
