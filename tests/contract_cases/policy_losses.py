"""Contract cases of the policy_losses kernels (tests/test_contract.py): a valid call of each kernel
and one breakage per declared status.

N = 4 tokens over (4, 3) logits; per-token inputs in the logits' dtype, per-token outputs and
``stats`` (exactly its named slots) float64.  PPO runs with a reference policy, a dual clip and
sequence-level ratios (so every argument is read); A2C with value clipping (so ``old_values`` is).
Logits and token breakages spoil every row: the compiled kernels find them during the fused pass,
and a row found valid would be written before the status returns (documented).
"""

import numpy as np

from fastlmrl._status import Status

from ._common import LOSS_OUTPUTS, LOSS_SCALARS, bad_token_inputs, changed, sharing, shortened

N, V = 4, 3


def valid_args(kernel, dtype):
    rng = np.random.default_rng(7)
    args = {}
    for arg in kernel.args:
        name = arg.name
        if name in ("logits", "grad"):
            args[name] = rng.standard_normal((N, V)).astype(dtype)
            if name == "grad":
                args[name][...] = -7.0
        elif name == "tokens":
            args[name] = np.array([1, 2, 0, 1], np.int64)
        elif name == "weights":
            args[name] = np.full(N, 1.0 / N, dtype)
        elif name == "sequence_offsets":
            args[name] = np.array([0, 2, N], np.int64)
        elif name in LOSS_SCALARS:
            args[name] = LOSS_SCALARS[name]
        elif name in LOSS_OUTPUTS:
            args[name] = np.full(N, -7.0)
        elif name == "stats":
            args[name] = np.full(len(kernel.results["stats"]), -7.0)
        elif arg.status is not None:  # a per-token input
            shift = 2.0 if "log_probs" in name else 0.0
            args[name] = (rng.standard_normal(N) - shift).astype(dtype)
        else:
            raise AssertionError(f"no valid value for {kernel.name}.{name}")
    return args


def breakages(kernel, args):
    logits, tokens = args["logits"], args["tokens"]
    for arg in kernel.args:
        if arg.status is None:
            continue
        name = arg.name
        if name == "logits":
            for bad, what in ((np.nan, "a NaN"), (np.inf, "a +inf")):
                x = logits.copy()
                x[:, 0] = bad
                yield f"every row holds {what}", changed(args, logits=x), arg.status
            x = np.full_like(logits, -np.inf)
            yield "no row holds a finite entry", changed(args, logits=x), arg.status
        elif name == "tokens":
            ids = tokens.copy()
            ids[-1] = V
            yield "tokens out of range", changed(args, tokens=ids), arg.status
            masked = logits.copy()
            masked[np.arange(N), tokens] = -np.inf
            yield "every token selects a -inf logit", changed(args, logits=masked), arg.status
        elif name == "sequence_offsets":
            offsets = np.array([0, 2, N + 1], np.int64)
            yield "offsets past N", changed(args, sequence_offsets=offsets), arg.status
            offsets = np.array([0, 3, 2, N], np.int64)
            yield "offsets decreasing", changed(args, sequence_offsets=offsets), arg.status
        else:  # a per-token input
            yield from bad_token_inputs(args, name, arg.status)
    for arg in kernel.args:
        if arg.kind.is_array and arg.name not in ("logits", "sequence_offsets"):
            yield f"{arg.name} short", shortened(args, arg.name), Status.BAD_SHAPES
    overlap = Status.OVERLAPPING_ARRAYS
    ids = args["token_loss"].view(np.int64)  # token ids in the memory of an output
    yield "tokens is token_loss", changed(args, tokens=ids), overlap
    # the gradient one row further in the same memory as the logits: a partial overlap
    buffer = np.zeros((N + 1) * V, logits.dtype)
    shared = buffer[: N * V].reshape(N, V)
    shared[...] = logits
    later = buffer[V:].reshape(N, V)
    yield "logits is grad", changed(args, logits=shared, grad=later), overlap
    if logits.dtype == np.float64:  # a float64 per-token input over a float64 output
        yield "weights is log_probs", sharing(args, "weights", "log_probs"), overlap
