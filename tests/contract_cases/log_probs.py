"""Contract cases of fastlmrl.log_probs (see README.md): the generic (3, 4) logits, (3,) tokens
and outputs are valid; the breakages are written here because the generic ones cannot break a
table of logits, and because an (N, V) ``out`` may be the logits exactly (in place) -- only a
partial overlap is refused."""

import numpy as np

from fastlmrl._status import Status

from ._common import changed


def valid_args(kernel, dtype):
    return None  # the generic builder's arguments are valid


def breakages(kernel, args):
    names = kernel.arg_names
    logits, out = args["logits"], args["out"]
    n, v = logits.shape
    table_out = out.ndim == 2
    bad = logits.copy()
    if table_out:
        # the (N, V) kernels write each valid row as they go (documented in fastlmrl.log_probs):
        # with every row invalid nothing is written
        bad[:, 0] = np.nan
    else:
        bad[1, 2] = np.nan
    yield "logits", changed(args, logits=bad), Status.BAD_LOGITS
    if "tokens" in names:
        tokens = args["tokens"].copy()
        tokens[-1] = v
        yield "tokens", changed(args, tokens=tokens), Status.BAD_TOKENS
        yield "tokens short", changed(args, tokens=args["tokens"][:-1].copy()), Status.BAD_SHAPES
    yield "out short", changed(args, out=out[:-1].copy()), Status.BAD_SHAPES
    if table_out:
        # out one row further in the same memory as the logits: a partial overlap
        buffer = np.zeros((n + 1) * v, logits.dtype)
        shared = buffer[: n * v].reshape(n, v)
        shared[...] = logits
        later = buffer[v:].reshape(n, v)
        yield "logits is out", changed(args, logits=shared, out=later), Status.OVERLAPPING_ARRAYS
        if "tokens" in names:
            ids = out.reshape(-1).view(np.uint8)[: 8 * n].view(np.int64)  # ids in out's memory
            yield "tokens is out", changed(args, tokens=ids), Status.OVERLAPPING_ARRAYS
    else:
        inside = logits.copy()
        yield (
            "logits is out",
            changed(args, logits=inside, out=inside.reshape(-1)[:n]),
            Status.OVERLAPPING_ARRAYS,
        )
