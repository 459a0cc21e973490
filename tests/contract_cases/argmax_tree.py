"""Contract cases of fastlmrl.argmax_tree (tests/test_contract.py): a table q (3, 5) with the
tree of block size 2 (nodes (3, 8) int32, built by the reference kernel), per-item arrays of three
transitions, and for every declared status one broken call."""

import numpy as np

from fastlmrl._python import argmax_tree as reference
from fastlmrl._status import Status

from ._common import in_order

SHAPE, BLOCK = (3, 5), 2
LEAVES = 4  # ceil(5 / 2) = 3 blocks, rounded up to a power of two


def _table(dtype, sign=1.0):
    return (sign * np.linspace(-1.0, 1.0, 15).reshape(SHAPE)).astype(dtype)


def _tree(q):
    nodes = np.full((SHAPE[0], 2 * LEAVES), -7, np.int32)
    assert reference.argmax_tree_build(q, nodes, BLOCK) == 0
    return nodes


def valid_args(kernel, dtype):
    q = _table(dtype)
    args = dict(
        q=q,
        nodes=_tree(q),
        block_size=BLOCK,
        states=np.array([0, 2, 1], np.int64),
        actions=np.array([1, 4, 0], np.int64),
        rewards=np.array([1.0, -0.5, 0.25], dtype),
        next_states=np.array([2, 0, 1], np.int64),
        terminated=np.array([0, 1, 0], np.uint8),
        alpha=0.5,
        gamma=0.9,
        epsilon=0.5,
        key=np.uint64(5),
        counter=np.uint64(0),
        td_out=np.full(3, -7.0, dtype),
    )
    if kernel.name == "argmax_tree_max":
        args["out"] = np.full(3, -7.0, dtype)
    else:
        args["out"] = np.full(3, -7, np.int64)
    if kernel.name == "double_q_learning_update_tree":
        q2 = _table(dtype, -1.0)
        args.update(q1=q, q2=q2, nodes1=args["nodes"], nodes2=_tree(q2))
        args.update(block_size1=BLOCK, block_size2=BLOCK)
    if kernel.name == "argmax_tree_build":
        args["nodes"] = np.full_like(args["nodes"], -7)
    return in_order(kernel, args)


def _damaged(nodes, row):
    nodes = nodes.copy()
    nodes[row] = 2**31 - 1  # every node of the row: the root and every path's siblings
    return nodes


def _sharing_q(q, nodes_shape):
    """(q', nodes') with the values of q, nodes' a view of q's first bytes."""
    size = max(q.nbytes, 4 * nodes_shape[0] * nodes_shape[1])
    buf = np.zeros(size, np.uint8)
    q2 = buf[: q.nbytes].view(q.dtype).reshape(q.shape)
    q2[:] = q
    return q2, buf[: 4 * nodes_shape[0] * nodes_shape[1]].view(np.int32).reshape(nodes_shape)


def breakages(kernel, args):
    names = kernel.arg_names
    two = "nodes1" in names

    def broken(**changes):
        return dict(args, **changes)

    # BAD_SHAPES: every per-item array one short
    if Status.BAD_SHAPES in kernel.statuses:
        for name in ("actions", "rewards", "next_states", "terminated", "td_out", "out"):
            if name in names:
                short = args[name][:-1].copy()
                yield f"{name} short", broken(**{name: short}), Status.BAD_SHAPES
    # OVERLAPPING_ARRAYS: an input over an array the call writes
    if kernel.name == "argmax_tree_build":
        q, nodes = _sharing_q(args["q"], args["nodes"].shape)
        yield "q is nodes", broken(q=q, nodes=nodes), Status.OVERLAPPING_ARRAYS
    elif kernel.name == "argmax_tree_refresh":
        nodes = args["nodes"].copy()
        states = nodes.ravel()[:6].view(np.int64)  # ids 0 .. (the first nodes) in range
        yield "states is nodes", broken(nodes=nodes, states=states), Status.OVERLAPPING_ARRAYS
    elif kernel.name == "argmax_tree_max":
        out = args["q"].copy()
        yield "q is out", broken(q=out, out=out.ravel()[:3]), Status.OVERLAPPING_ARRAYS
    elif "td_out" in names:
        td = args["td_out"].copy()
        yield "rewards is td_out", broken(rewards=td, td_out=td), Status.OVERLAPPING_ARRAYS
    else:
        out = np.array([0, 2, 1], np.int64)
        yield "states is out", broken(states=out, out=out), Status.OVERLAPPING_ARRAYS
    # the scalars
    for name in ("alpha", "gamma", "epsilon"):
        if name in names:
            yield name, broken(**{name: float("nan")}), kernel.arg(name).status
    # BAD_TREE: a block size the nodes' shape does not fit
    block = "block_size2" if two else "block_size"
    yield block, broken(**{block: 1}), Status.BAD_TREE
    # ids out of range, a non-finite reward
    for name, axis in (("states", 0), ("actions", 1), ("next_states", 0)):
        if name in names:
            ids = args[name].copy()
            ids[-1] = SHAPE[axis]
            yield name, broken(**{name: ids}), kernel.arg(name).status
    if "rewards" in names:
        rewards = args["rewards"].copy()
        rewards[1] = np.nan
        yield "rewards", broken(rewards=rewards), Status.BAD_REWARDS
    # CORRUPT_TREE: the row of states[0] damaged (both trees of a two-tree kernel)
    if Status.CORRUPT_TREE not in kernel.returned_statuses():
        return
    row = int(args["states"][0])
    if two:
        damaged = dict(nodes1=_damaged(args["nodes1"], row), nodes2=_damaged(args["nodes2"], row))
        yield "nodes1", broken(**damaged), Status.CORRUPT_TREE
    else:
        yield "nodes", broken(nodes=_damaged(args["nodes"], row)), Status.CORRUPT_TREE
