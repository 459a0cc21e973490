"""Numba keyword / lexicon scores: one pass over each row per keyword (same semantics and rounding
as the reference, fastlmrl/_python/keyword_scores.py).

Row ``b`` of ``out`` is zeroed, then for k = 0 .. K-1 every start ``s`` with
``s + len(gram_k) <= lengths[b]`` whose first token matches is compared with the rest of the
gram, and a match adds ``gram_weights[k]`` at its last position ``s + len(gram_k) - 1`` (with
``presence`` the scan of that key stops at the first match).  So each ``out[b, t]`` is
``0.0 + w_k1 + w_k2 + ...`` over its matching keys in key order, as in the reference.  Without
``presence``, keywords of 1-4 tokens are scanned branch-free instead (``acc[s + n - 1] += w if
match else 0.0``, which vectorises): adding 0.0 to a sum that starts at +0.0 changes nothing, so
the result is the same bit for bit.  With word tokens (``word_flags`` non-empty) each keyword is
scanned once per row in time order, as in the reference: an occurrence with a whole left side
that ends at the prefix's edge counts (+w) and is taken back (-w) when a word token follows it.
"""

__all__ = ["keyword_scores"]
import numpy as np
from numba import njit

# the codes these kernels return (fastlmrl._status.Status; fastlmrl.keyword_scores.CONTRACT)
from .._status import (
    BAD_GRAM_OFFSETS,
    BAD_GRAM_TOKENS,
    BAD_GRAM_WEIGHTS,
    BAD_LENGTHS,
    BAD_OUT,
    OVERLAPPING_ARRAYS,
)
from ._common import NJIT
from .overlap import written_overlaps


@njit(**NJIT)
def _check(tokens, lengths, gram_tokens, gram_offsets, gram_weights, out):
    n_rows, horizon = tokens.shape
    if out.shape[0] != n_rows or out.shape[1] != horizon:
        return BAD_OUT
    if lengths.shape[0] != n_rows:
        return BAD_LENGTHS
    n_offsets = gram_offsets.shape[0]
    if n_offsets < 1 or gram_offsets[0] != 0 or gram_offsets[n_offsets - 1] != gram_tokens.shape[0]:
        return BAD_GRAM_OFFSETS
    for k in range(n_offsets - 1):
        if gram_offsets[k + 1] <= gram_offsets[k]:
            return BAD_GRAM_OFFSETS
    if gram_weights.shape[0] != n_offsets - 1:
        return BAD_GRAM_WEIGHTS
    for k in range(gram_weights.shape[0]):
        if not np.isfinite(gram_weights[k]):
            return BAD_GRAM_WEIGHTS
    for i in range(gram_tokens.shape[0]):
        if gram_tokens[i] < 0:
            return BAD_GRAM_TOKENS
    for b in range(n_rows):
        if lengths[b] < 0 or lengths[b] > horizon:
            return BAD_LENGTHS
    return 0


@njit(**NJIT)
def _is_word(word_flags, token):
    return token >= 0 and token < word_flags.shape[0] and word_flags[token] != 0


@njit(**NJIT)
def _whole_word_row(row, length, gram_tokens, start, size, w, first_only, word_flags, acc):
    """Add one keyword's increments over the prefixes of a row (the reference's scan)."""
    closed = 0
    open_end = 0
    previous = 0
    g0 = gram_tokens[start]
    for t in range(length):
        if open_end != 0:
            if not _is_word(word_flags, row[t]):
                closed += 1
            open_end = 0
        s = t - size + 1
        if s >= 0 and row[s] == g0:
            j = 1
            while j < size and row[s + j] == gram_tokens[start + j]:
                j += 1
            if j == size and (s == 0 or not _is_word(word_flags, row[s - 1])):
                open_end = 1
        count = closed + open_end
        if first_only and count > 1:
            count = 1
        if count != previous:
            acc[t] += w * np.float64(count - previous)
            previous = count


@njit(**NJIT)
def keyword_scores(
    tokens, lengths, gram_tokens, gram_offsets, gram_weights, presence, word_flags, out
):
    if written_overlaps(
        out, tokens, lengths, gram_tokens, gram_offsets, gram_weights, word_flags, word_flags[:0]
    ):
        return OVERLAPPING_ARRAYS
    status = _check(tokens, lengths, gram_tokens, gram_offsets, gram_weights, out)
    if status != 0:
        return status
    n_rows, horizon = tokens.shape
    n_keys = gram_offsets.shape[0] - 1
    first_only = presence != 0
    whole_words = word_flags.shape[0] > 0
    for b in range(n_rows):
        row = tokens[b]
        acc = out[b]
        for t in range(horizon):
            acc[t] = 0.0
        length = lengths[b]
        for k in range(n_keys):
            if whole_words:
                start = gram_offsets[k]
                _whole_word_row(
                    row,
                    length,
                    gram_tokens,
                    start,
                    gram_offsets[k + 1] - start,
                    gram_weights[k],
                    first_only,
                    word_flags,
                    acc,
                )
                continue
            start = gram_offsets[k]
            size = gram_offsets[k + 1] - start
            w = gram_weights[k]
            g0 = gram_tokens[start]
            n_starts = length - size + 1  # starts whose occurrence fits in the response
            if not first_only and size <= 4:
                # branch-free (vectorised) scans; adding 0.0 leaves acc unchanged (acc starts at
                # +0.0 and so is never -0.0), so the sums are those of the scan below
                if size == 1:
                    for s in range(n_starts):
                        acc[s] += w if row[s] == g0 else 0.0
                elif size == 2:
                    g1 = gram_tokens[start + 1]
                    for s in range(n_starts):
                        acc[s + 1] += w if (row[s] == g0) & (row[s + 1] == g1) else 0.0
                elif size == 3:
                    g1 = gram_tokens[start + 1]
                    g2 = gram_tokens[start + 2]
                    for s in range(n_starts):
                        hit = (row[s] == g0) & (row[s + 1] == g1) & (row[s + 2] == g2)
                        acc[s + 2] += w if hit else 0.0
                else:
                    g1 = gram_tokens[start + 1]
                    g2 = gram_tokens[start + 2]
                    g3 = gram_tokens[start + 3]
                    for s in range(n_starts):
                        hit = (
                            (row[s] == g0)
                            & (row[s + 1] == g1)
                            & (row[s + 2] == g2)
                            & (row[s + 3] == g3)
                        )
                        acc[s + 3] += w if hit else 0.0
                continue
            for s in range(n_starts):
                if row[s] == g0:
                    j = 1
                    while j < size and row[s + j] == gram_tokens[start + j]:
                        j += 1
                    if j == size:
                        acc[s + size - 1] += w
                        if first_only:
                            break
    return 0
