"""Contract cases of fastlmrl.group_advantages (see README.md): N = 6 rewards in G = 2 groups
(dense ids), per-group workspaces of length G; a (B, T) = (3, 4) token mask whose inactive
entries hold NaN in the log-probabilities (never read).

Arguments that share one code (``scale``/``eps``/``ddof``; ``mode`` and the counts: BAD_OPTION)
are broken one at a time only for the first of them, which the contract's error names (the others
are checked per backend in tests/test_group_advantages.py and tests/test_kernel_robustness.py).

``rloo_advantages`` fills its workspaces ``group_sum`` / ``group_count`` (the per-group values it
reports) before it can see a group of one sample; the BAD_GROUP_SIZE case passes them holding the
values the kernel writes, so that what it checks is that ``advantages_out`` stays unwritten.
"""

import numpy as np

from fastlmrl._status import Status

from ._common import changed, in_order, sharing, shortened

N, G = 6, 2
B, T = 3, 4


def valid_args(kernel, dtype):
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], np.uint8)
    rng = np.random.default_rng(0)
    log_probs = -rng.random((B, T)).astype(dtype)
    old = -rng.random((B, T)).astype(dtype)
    log_probs[mask == 0] = np.nan
    old[mask == 0] = np.nan
    args = dict(
        rewards=np.linspace(-1.0, 1.5, N).astype(dtype),
        group_ids=np.array([0, 1, 0, 1, 1, 0], np.int64),
        scale=1,
        eps=1e-4,
        ddof=1,
        group_mean=np.full(G, -7.0),
        group_std=np.full(G, -7.0),
        group_sum=np.full(G, -7.0),
        group_count=np.full(G, -7, np.int64),
        advantages_out=np.full(N, -7.0, dtype),
        mask=mask,
        mode=0,
        num_sequences=3.0,
        num_tokens=6.0,
        max_length=4.0,
        out=np.full((B, T), -7.0, dtype),
        log_probs=log_probs,
        old_log_probs=old,
        ratio_out=np.full(B, -7.0, dtype),
        grad_out=np.full((B, T), -7.0, dtype),
    )
    return in_order(kernel, args)


def breakages(kernel, args):
    names = kernel.arg_names
    if "rewards" in names:
        bad = args["rewards"].copy()
        bad[4] = np.nan
        yield "rewards", changed(args, rewards=bad), Status.BAD_REWARDS
        for value in (-1, G):
            ids = args["group_ids"].copy()
            ids[3] = value
            yield f"group_ids {value}", changed(args, group_ids=ids), Status.BAD_GROUP_IDS
    for name, values in (("scale", (-1, 3, 2**40)), ("mode", (-1, 4, 2**40))):
        if name in names:
            for value in values:
                yield f"{name} {value}", changed(args, **{name: value}), Status.BAD_OPTION
    for name, status in (
        ("log_probs", Status.BAD_LOG_PROBS),
        ("old_log_probs", Status.BAD_OLD_LOG_PROBS),
    ):
        if name in names:
            bad = args[name].copy()
            bad[1, 1] = -np.inf  # an active token
            yield name, changed(args, **{name: bad}), status
    if kernel.name == "rloo_advantages":
        ids = np.array([0, 1, 0, 1, 1, 1], np.int64)  # group 0 has two samples, group 1 four
        ids[2] = 1  # now group 0 has one sample (index 0)
        sums = np.zeros(G)
        for i, g in enumerate(ids):  # in index order, in float64, as the kernels add
            sums[g] += float(args["rewards"][i])
        counts = np.bincount(ids, minlength=G).astype(np.int64)
        yield (
            "group of one",
            changed(args, group_ids=ids, group_sum=sums, group_count=counts),
            Status.BAD_GROUP_SIZE,
        )
    written = kernel.written
    yield (
        f"{written[-1]} short",
        shortened(args, written[-1]),
        (Status.BAD_SHAPES),
    )
    # an input that is a written array (same dtype and shape)
    if "rewards" in names:
        yield (
            "rewards is advantages_out",
            sharing(args, "rewards", "advantages_out"),
            (Status.OVERLAPPING_ARRAYS),
        )
        if kernel.name == "grpo_advantages":  # two float64 workspaces
            yield (
                "group_std is group_mean",
                sharing(args, "group_std", "group_mean"),
                (Status.OVERLAPPING_ARRAYS),
            )
    elif "log_probs" in names:
        yield (
            "log_probs is grad_out",
            sharing(args, "log_probs", "grad_out"),
            (Status.OVERLAPPING_ARRAYS),
        )
    else:
        flat = np.zeros(B * T * 8, np.uint8)  # the output over the mask's bytes
        out = flat.view(args["out"].dtype)[: B * T].reshape(B, T)
        yield (
            "mask is out",
            changed(args, mask=flat[: B * T].reshape(B, T), out=out),
            (Status.OVERLAPPING_ARRAYS),
        )
