"""Contract cases of fastlmrl.advantages (see README.md): (B, T) = (3, 4) sequences whose mask
marks a prefix of each row; row 0 terminated, rows 1 and 2 truncated (bootstrap from
``bootstrap_values``); padding entries hold NaN, which the kernels never read."""

import numpy as np

from fastlmrl._status import Status

from ._common import changed, in_order, sharing, shortened

B, T = 3, 4


def valid_args(kernel, dtype):
    rng = np.random.default_rng(0)
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], np.uint8)
    rewards = rng.standard_normal((B, T)).astype(dtype)
    values = rng.standard_normal((B, T)).astype(dtype)
    rewards[mask == 0] = np.nan  # padding is never read
    values[mask == 0] = np.nan
    boot = np.array([np.nan, 0.5, -1.0], dtype)  # row 0 is terminated: its value is not read
    args = dict(
        rewards=rewards,
        values=values,
        advantages=rewards,
        mask=mask,
        terminated=np.array([1, 0, 0], np.uint8),
        truncated=np.array([0, 1, 1], np.uint8),
        bootstrap_values=boot,
        gamma=0.9,
        lam=0.8,
        eps=1e-8,
        returns_out=np.full((B, T), -7.0, dtype),
        advantages_out=np.full((B, T), -7.0, dtype),
        out=np.full((B, T), -7.0, dtype),
        num_threads=1,
    )
    return in_order(kernel, args)


def breakages(kernel, args):
    names = kernel.arg_names
    for name, status in (
        ("rewards", Status.BAD_REWARDS),
        ("values", Status.BAD_VALUES),
        ("advantages", Status.BAD_ADVANTAGES),
    ):
        if name in names:
            bad = args[name].copy()
            bad[2, 1] = np.inf  # a valid step
            yield name, changed(args, **{name: bad}), status
    if "truncated" in names:
        yield "truncated", changed(args, truncated=np.array([0, 0, 1], np.uint8)), Status.BAD_ENDS
        boot = args["bootstrap_values"].copy()
        boot[2] = np.nan
        yield "bootstrap_values", changed(args, bootstrap_values=boot), Status.BAD_BOOTSTRAP
    written = kernel.written
    yield (
        f"{written[0]} short",
        shortened(args, written[0]),
        (Status.BAD_SHAPES),
    )
    if "bootstrap_values" in names:
        short = args["bootstrap_values"][:-1].copy()
        yield "bootstrap_values short", changed(args, bootstrap_values=short), Status.BAD_SHAPES
    # an input that is a written array (same dtype, same shape)
    first = names[0]
    yield (
        f"{first} is {written[0]}",
        sharing(args, first, written[0]),
        (Status.OVERLAPPING_ARRAYS),
    )
    if len(written) == 2:
        yield (
            f"{written[1]} is {written[0]}",
            sharing(args, written[1], written[0]),
            (Status.OVERLAPPING_ARRAYS),
        )
