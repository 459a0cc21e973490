# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython keyword / lexicon scores: one pass over each row per keyword, branch-free for keywords
of 1-4 tokens without ``presence`` (same semantics and rounding as the reference; see
fastlmrl/_python/keyword_scores.py and fastlmrl/_numba/keyword_scores.py).  ``tokens`` and
``gram_tokens`` share one id dtype (int32 or int64); ``lengths`` and ``gram_offsets`` are int64,
``gram_weights`` and ``out`` float64, ``word_flags`` uint8 (empty: no word boundaries, the
branch-free scans; else each keyword is scanned once per row in time order, as in the
reference)."""

__all__ = ["keyword_scores"]
from libc.math cimport isfinite
from libc.stdint cimport int64_t, uint8_t

from fastlmrl._cython._common cimport index_t
from fastlmrl._cython.overlap cimport span_1d, span_2d, written_overlap
# status codes: fastlmrl._status.Status (status.pxd is generated from it;
# fastlmrl.keyword_scores.CONTRACT)
from fastlmrl._cython cimport status as st


cdef int _check(const index_t[:, ::1] tokens, const int64_t[::1] lengths,
                const index_t[::1] gram_tokens, const int64_t[::1] gram_offsets,
                const double[::1] gram_weights, double[:, ::1] out) noexcept nogil:
    cdef Py_ssize_t n_rows = tokens.shape[0], horizon = tokens.shape[1]
    cdef Py_ssize_t n_offsets = gram_offsets.shape[0], k, i, b
    if out.shape[0] != n_rows or out.shape[1] != horizon:
        return st.BAD_OUT
    if lengths.shape[0] != n_rows:
        return st.BAD_LENGTHS
    if (n_offsets < 1 or gram_offsets[0] != 0
            or gram_offsets[n_offsets - 1] != <int64_t>gram_tokens.shape[0]):
        return st.BAD_GRAM_OFFSETS
    for k in range(n_offsets - 1):
        if gram_offsets[k + 1] <= gram_offsets[k]:
            return st.BAD_GRAM_OFFSETS
    if gram_weights.shape[0] != n_offsets - 1:
        return st.BAD_GRAM_WEIGHTS
    for k in range(gram_weights.shape[0]):
        if not isfinite(gram_weights[k]):
            return st.BAD_GRAM_WEIGHTS
    for i in range(gram_tokens.shape[0]):
        if gram_tokens[i] < 0:
            return st.BAD_GRAM_TOKENS
    for b in range(n_rows):
        if lengths[b] < 0 or lengths[b] > horizon:
            return st.BAD_LENGTHS
    return 0


cdef inline bint _is_word(const uint8_t[::1] word_flags, index_t token) noexcept nogil:
    return token >= 0 and token < word_flags.shape[0] and word_flags[token] != 0


cdef void _whole_word_row(const index_t* row, Py_ssize_t length, const index_t* gram,
                          Py_ssize_t size, double w, int presence,
                          const uint8_t[::1] word_flags, double* acc) noexcept nogil:
    """Add one keyword's increments over the prefixes of a row (the reference's scan)."""
    cdef Py_ssize_t t, s, j
    cdef int64_t closed = 0, open_end = 0, previous = 0, count
    for t in range(length):
        if open_end:
            if not _is_word(word_flags, row[t]):
                closed += 1
            open_end = 0
        s = t - size + 1
        if s >= 0 and row[s] == gram[0]:
            j = 1
            while j < size and row[s + j] == gram[j]:
                j += 1
            if j == size and (s == 0 or not _is_word(word_flags, row[s - 1])):
                open_end = 1
        count = closed + open_end
        if presence and count > 1:
            count = 1
        if count != previous:
            acc[t] += w * <double>(count - previous)
            previous = count


cdef bint _out_overlaps(const index_t[:, ::1] tokens, const int64_t[::1] lengths,
                        const index_t[::1] gram_tokens, const int64_t[::1] gram_offsets,
                        const double[::1] gram_weights, const uint8_t[::1] word_flags,
                        const double[:, ::1] out) noexcept nogil:
    """Does ``out`` share memory with another argument (status 8; O(1), checked first)?"""
    cdef const char* start[7]
    cdef size_t size[7]
    span_2d(&out[0, 0], out.shape[0], out.shape[1], sizeof(double), start, size, 0)
    span_2d(&tokens[0, 0], tokens.shape[0], tokens.shape[1], sizeof(index_t), start, size, 1)
    span_1d(&lengths[0], lengths.shape[0], sizeof(int64_t), start, size, 2)
    span_1d(&gram_tokens[0], gram_tokens.shape[0], sizeof(index_t), start, size, 3)
    span_1d(&gram_offsets[0], gram_offsets.shape[0], sizeof(int64_t), start, size, 4)
    span_1d(&gram_weights[0], gram_weights.shape[0], sizeof(double), start, size, 5)
    span_1d(&word_flags[0], word_flags.shape[0], 1, start, size, 6)
    return written_overlap(1, 7, start, size)


cdef int keyword_scores_core(const index_t[:, ::1] tokens, const int64_t[::1] lengths,
                             const index_t[::1] gram_tokens, const int64_t[::1] gram_offsets,
                             const double[::1] gram_weights, int64_t presence,
                             const uint8_t[::1] word_flags,
                             double[:, ::1] out) noexcept nogil:
    # presence: any integer, true when non-zero (as in the other backends)
    cdef int first_only = presence != 0
    if _out_overlaps(tokens, lengths, gram_tokens, gram_offsets, gram_weights, word_flags, out):
        return st.OVERLAPPING_ARRAYS
    cdef int status = _check(tokens, lengths, gram_tokens, gram_offsets, gram_weights, out)
    if status:
        return status
    cdef bint whole_words = word_flags.shape[0] > 0
    cdef Py_ssize_t n_rows = tokens.shape[0], horizon = tokens.shape[1]
    cdef Py_ssize_t n_keys = gram_offsets.shape[0] - 1
    cdef Py_ssize_t b, t, k, s, j, start, size, n_starts
    cdef const index_t* row
    cdef const index_t* gram
    cdef double* acc
    cdef index_t g0, g1, g2, g3
    cdef double w
    for b in range(n_rows):
        acc = &out[b, 0] if horizon > 0 else NULL
        for t in range(horizon):
            acc[t] = 0.0
        if horizon == 0:
            continue
        row = &tokens[b, 0]
        for k in range(n_keys):
            start = gram_offsets[k]
            size = gram_offsets[k + 1] - start
            gram = &gram_tokens[start]
            w = gram_weights[k]
            g0 = gram[0]
            n_starts = lengths[b] - size + 1  # starts whose occurrence fits in the response
            if whole_words:
                _whole_word_row(row, lengths[b], gram, size, w, first_only, word_flags, acc)
                continue
            if not first_only and size <= 4:
                # branch-free (vectorised) scans; adding 0.0 leaves acc unchanged (acc starts at
                # +0.0 and so is never -0.0), so the sums are those of the scan below
                if size == 1:
                    for s in range(n_starts):
                        acc[s] += w if row[s] == g0 else 0.0
                elif size == 2:
                    g1 = gram[1]
                    for s in range(n_starts):
                        acc[s + 1] += w if (row[s] == g0) & (row[s + 1] == g1) else 0.0
                elif size == 3:
                    g1 = gram[1]
                    g2 = gram[2]
                    for s in range(n_starts):
                        acc[s + 2] += (w if (row[s] == g0) & (row[s + 1] == g1)
                                       & (row[s + 2] == g2) else 0.0)
                else:
                    g1 = gram[1]
                    g2 = gram[2]
                    g3 = gram[3]
                    for s in range(n_starts):
                        acc[s + 3] += (w if (row[s] == g0) & (row[s + 1] == g1)
                                       & (row[s + 2] == g2) & (row[s + 3] == g3) else 0.0)
                continue
            for s in range(n_starts):
                if row[s] == g0:
                    j = 1
                    while j < size and row[s + j] == gram[j]:
                        j += 1
                    if j == size:
                        acc[s + size - 1] += w
                        if first_only:
                            break
    return 0


def keyword_scores(const index_t[:, ::1] tokens, const int64_t[::1] lengths,
                   const index_t[::1] gram_tokens, const int64_t[::1] gram_offsets,
                   const double[::1] gram_weights, int64_t presence,
                   const uint8_t[::1] word_flags, double[:, ::1] out):
    # presence: any integer, true when non-zero (as in the other backends; an int64 so that a
    # Python int >= 2**31 is not an OverflowError)
    cdef int status
    with nogil:
        status = keyword_scores_core(tokens, lengths, gram_tokens, gram_offsets, gram_weights,
                                     presence, word_flags, out)
    return status
