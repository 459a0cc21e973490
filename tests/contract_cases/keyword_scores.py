"""Contract cases of fastlmrl.keyword_scores (tests/test_contract.py): token rows (B, T) with
lengths, keywords in CSR form (gram_tokens, gram_offsets, gram_weights), word flags, out (B, T)."""

import numpy as np

from fastlmrl._status import Status


def valid_args(kernel, dtype):  # the kernel is float64 only: dtype does not apply
    return dict(
        tokens=np.array([[1, 2, 2], [2, 1, 2]], np.int64),
        lengths=np.array([3, 2], np.int64),
        gram_tokens=np.array([1, 2, 2], np.int64),
        gram_offsets=np.array([0, 2, 3], np.int64),
        gram_weights=np.array([1.0, 0.5]),
        presence=0,
        word_flags=np.array([0, 1, 0], np.uint8),
        out=np.full((2, 3), -7.0),
    )


def breakages(kernel, args):
    def broken(**changes):
        return dict(args, **changes)

    yield "lengths", broken(lengths=np.array([3, 4], np.int64)), Status.BAD_LENGTHS
    yield "gram_tokens", broken(gram_tokens=np.array([1, -2, 2], np.int64)), Status.BAD_GRAM_TOKENS
    offsets = np.array([0, 3, 2], np.int64)
    yield "gram_offsets", broken(gram_offsets=offsets), Status.BAD_GRAM_OFFSETS
    yield "gram_weights", broken(gram_weights=np.array([1.0, np.nan])), Status.BAD_GRAM_WEIGHTS
    yield "out", broken(out=np.full((2, 4), -7.0)), Status.BAD_OUT
    # out over an input it would overwrite mid-scan (the bytes of gram_weights)
    buf = np.full(8, -7.0)
    weights = buf[:2]
    weights[:] = args["gram_weights"]
    out = buf[:6].reshape(2, 3)
    yield "gram_weights is out", broken(gram_weights=weights, out=out), Status.OVERLAPPING_ARRAYS
