"""Contract cases of the dynamic-programming kernels (see README.md): the token layout
(``next_state`` (S, A) ids, ``reward`` (S, A), ``terminal`` (S,)) and the dense one (``P``
(S, A, S), ``R`` (S, A)) with S = 3 states, A = 2 actions, state 2 terminal; float64 values."""

import numpy as np

from fastlmrl._status import Status

from ._common import changed, in_order, sharing

S, A = 3, 2


def valid_args(kernel, dtype):
    values = dict(
        next_state=np.array([[1, 2], [2, 0], [0, 0]], np.int64),
        reward=np.linspace(-1.0, 1.0, S * A).reshape(S, A).astype(dtype),
        terminal=np.array([0, 0, 1], np.uint8),
        P=np.full((S, A, S), 1.0 / S, dtype),
        R=np.linspace(-1.0, 1.0, S * A).reshape(S, A).astype(dtype),
        gamma=0.9,
        tol=1e-6,
        k=3,
        max_iter=50,
        policy=np.array([1, 0, 0], np.int64),
        v=np.array([0.5, -1.0, 0.0]),
        v_out=np.full(S, -7.0),
        v_tmp=np.full(S, -7.0),
        q_out=np.full((S, A), -7.0),
        policy_out=np.full(S, -7, np.int64),
        info_out=np.full(2, -7, np.int64),
        found_out=np.full(1, -7, np.int64),
        work=np.full((3 if kernel.name == "token_mdp_find_cycle" else 2) * S, -7, np.int64),
    )
    return in_order(kernel, values)


def breakages(kernel, args):
    names = kernel.arg_names
    if "next_state" in names:
        bad = args["next_state"].copy()
        bad[0, 1] = S  # state 0 is not terminal
        yield "next_state", changed(args, next_state=bad), Status.BAD_NEXT_STATES
    for table in ("reward", "R"):
        if table in names:
            bad = args[table].copy()
            bad[1, 0] = np.nan
            yield table, changed(args, **{table: bad}), Status.BAD_REWARDS
    if "policy" in names:
        bad = args["policy"].copy()
        bad[1] = A
        yield "policy", changed(args, policy=bad), Status.BAD_ACTIONS
    elif "reward" in names or "R" in names:  # no actions at all (A == 0), a state not terminal
        empty = {}
        for name in ("next_state", "reward", "R", "q_out"):
            if name in names:
                empty[name] = np.zeros((S, 0), args[name].dtype)
        if "P" in names:
            empty["P"] = np.zeros((S, 0, S), args["P"].dtype)
        yield "no actions", changed(args, **empty), Status.BAD_ACTIONS
    for name in ("k", "max_iter"):
        if name in names:
            yield f"{name} < 0", changed(args, **{name: -1}), Status.BAD_ITERATIONS
            yield f"{name} >= 2**31", changed(args, **{name: 2**31}), Status.BAD_ITERATIONS
    first_written = kernel.written[0]
    short = args[first_written][:-1].copy()
    yield f"{first_written} short", changed(args, **{first_written: short}), Status.BAD_SHAPES
    # overlaps of the same dtype: "<input> is <written>" (the error names the pair)
    if "v_tmp" in names:
        yield "v_tmp is v", sharing(args, "v_tmp", "v"), Status.OVERLAPPING_ARRAYS
    elif "v_out" in names and "policy" in names:  # policy_value: the policy over the scratch
        work = args["work"]
        yield "policy is work", changed(args, policy=work[:S]), Status.OVERLAPPING_ARRAYS
    elif "v_out" in names:
        yield "v is v_out", sharing(args, "v", "v_out"), Status.OVERLAPPING_ARRAYS
    elif "q_out" in names:
        q_out = args["q_out"]
        yield "v is q_out", changed(args, v=q_out.reshape(-1)[:S]), Status.OVERLAPPING_ARRAYS
    else:  # find_cycle
        yield "work is found_out", sharing(args, "work", "found_out"), Status.OVERLAPPING_ARRAYS
