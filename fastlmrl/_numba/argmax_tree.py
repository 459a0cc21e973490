"""Numba per-row argmax tournament trees (same layout, semantics and rounding as the reference)."""

__all__ = [
    "argmax_tree_build",
    "argmax_tree_max",
    "argmax_tree_refresh",
    "double_q_learning_update_tree",
    "epsilon_greedy_tree",
    "greedy_tree",
    "q_learning_update_tree",
]
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# the codes these kernels return (fastlmrl._status.Status; fastlmrl.argmax_tree.CONTRACT)
from .._status import (
    BAD_ACTIONS,
    BAD_EPSILON,  # epsilon_greedy_tree: epsilon outside [0, 1] (or NaN)
    BAD_NEXT_STATES,
    BAD_REWARDS,
    BAD_SHAPES,
    BAD_STATES,
    BAD_TREE,
    CORRUPT_TREE,
    OVERLAPPING_ARRAYS,
)
from ._common import NJIT, not_all_finite, out_of_range, uniform
from .overlap import written_overlaps
from .td_learning import rates_status

INT32_MAX = 2**31 - 1


@njit(**NJIT)
def _n_blocks(n_actions, block_size):
    """ceil(V / B) for V >= 1, without overflow for any block size."""
    return (n_actions - 1) // block_size + 1


@njit(**NJIT)
def _n_leaves(n_actions, block_size):
    n_blocks = _n_blocks(n_actions, block_size)
    p = 1
    while p < n_blocks:
        p *= 2
    return p


@njit(**NJIT)
def _bad_tree(q, nodes, block_size):
    n_actions = q.shape[1]
    if block_size < 1 or n_actions < 1 or n_actions > INT32_MAX:
        return True
    return nodes.shape[0] != q.shape[0] or nodes.shape[1] != 2 * _n_leaves(n_actions, block_size)


@njit(**NJIT)
def _span_ok(w, n_actions, block_size, n_blocks, first_block, width):
    """May a node covering blocks [first_block, first_block + width) hold column w?"""
    if first_block >= n_blocks:
        return w == -1
    lo = first_block * block_size
    if first_block + width >= n_blocks:
        hi = n_actions
    else:
        hi = (first_block + width) * block_size
    return lo <= w and w < hi


@njit(**NJIT)
def _path_ok(tree, n_actions, block_size, a, check_leaf):
    """The nodes an update (check_leaf) or a refresh of column a reads as columns (see the
    reference): the leaf of a's block and the sibling of every node on the path to the root."""
    p = tree.shape[0] // 2
    n_blocks = _n_blocks(n_actions, block_size)
    k = p + a // block_size
    if check_leaf and not _span_ok(np.int64(tree[k]), n_actions, block_size, n_blocks, k - p, 1):
        return False
    width = 1
    while k > 1:
        sibling = k ^ 1
        if not _span_ok(
            np.int64(tree[sibling]), n_actions, block_size, n_blocks, sibling * width - p, width
        ):
            return False
        k >>= 1
        width <<= 1
    return True


@njit(**NJIT)
def _states_roots_status(nodes, states, n_states, n_actions):
    """One pass: BAD_STATES if a state is out of range (first priority), else CORRUPT_TREE if the
    root of some state's row is not a column of the table, else 0."""
    damaged = False
    for i in range(states.shape[0]):
        s = states[i]
        if s < 0 or s >= n_states:
            return BAD_STATES
        w = nodes[np.uint64(s), 1]  # checked: unsigned indexing skips the wraparound test
        damaged |= (w < 0) | (w >= n_actions)
    return CORRUPT_TREE if damaged else 0


@intrinsic
def _prefetch(typingctx, arr, row, col):
    """Ask for the cache line of arr[row, col] (LLVM's prefetch: a hint, no load, no fault)."""
    if not isinstance(arr, types.Array) or arr.ndim != 2:
        return None
    sig = types.void(arr, row, col)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        index = [
            context.cast(builder, args[1], signature.args[1], types.intp),
            context.cast(builder, args[2], signature.args[2], types.intp),
        ]
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, index, wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@njit(**NJIT)
def _prefetch_path(nodes, s, k):
    """The cache lines of the nodes on the path from node k up (checked ids only)."""
    while k > 1:
        _prefetch(nodes, s, k)
        k >>= 1


@njit(**NJIT)
def _update_paths_ok(nodes, block_size, states, actions, next_states, n_actions):
    """The leaf and path siblings of every updated cell and the root of every next state (the
    path lines of the cell 16 ahead are prefetched: on a large table the check is a chain of
    cache misses otherwise)."""
    p = nodes.shape[1] // 2
    n = states.shape[0]
    for i in range(n):
        if i + 16 < n:
            _prefetch_path(nodes, states[i + 16], p + np.int64(actions[i + 16]) // block_size)
            _prefetch(nodes, next_states[i + 16], 0)
        if not _path_ok(nodes[states[i]], n_actions, block_size, np.int64(actions[i]), True):
            return False
        w = nodes[next_states[i], 1]
        if w < 0 or w >= n_actions:
            return False
    return True


@njit(**NJIT)
def _batch_ok(states, actions, rewards, next_states, terminated, td_out):
    """The shape check (first) of the update kernels: every per-transition array of states'
    length."""
    n = states.shape[0]
    return (
        actions.shape[0] == n
        and rewards.shape[0] == n
        and next_states.shape[0] == n
        and terminated.shape[0] == n
        and td_out.shape[0] == n
    )


# A later column with value vr beats an earlier one with value vl iff
#     vr > vl or (vl != vl and vr == vr)
# (non-NaN beats NaN, then the larger value; ties -> the earlier column).  The test is written out
# in each helper: as a separate @njit function it made the block scan twice as slow.
# The helpers take one row of q (``row = q[s]``) and of nodes (``tree = nodes[s]``): 1-D views
# index faster than 2-D arrays in Numba.


@njit(**NJIT)
def _block_argmax(row, lo, hi):
    best = lo
    best_v = row[lo]
    for c in range(lo + 1, hi):
        v = row[c]
        if v > best_v or (best_v != best_v and v == v):
            best = c
            best_v = v
    return best


@njit(**NJIT)
def _pick(row, left, right):
    if right < 0:
        return left
    if left < 0:
        return right
    vr = row[right]
    vl = row[left]
    if vr > vl or (vl != vl and vr == vr):
        return right
    return left


@njit(**NJIT)
def _build_row(row, tree, block_size):
    n_actions = row.shape[0]
    p = tree.shape[0] // 2
    n_blocks = _n_blocks(n_actions, block_size)
    tree[0] = -1
    for b in range(p):
        if b < n_blocks:
            tree[p + b] = _block_argmax(row, b * block_size, min((b + 1) * block_size, n_actions))
        else:
            tree[p + b] = -1
    for k in range(p - 1, 0, -1):
        tree[k] = _pick(row, np.int64(tree[2 * k]), np.int64(tree[2 * k + 1]))


@njit(**NJIT)
def _walk_up(row, tree, k, a, old, new, early_exit):
    """Replay the matches above node k (see the reference for early_exit)."""
    while k > 1 and (not early_exit or old == a or new == a):
        k >>= 1
        old = np.int64(tree[k])
        new = np.int64(_pick(row, np.int64(tree[2 * k]), np.int64(tree[2 * k + 1])))
        tree[k] = new


@njit(**NJIT)
def _block_scan(row, a, block_size):
    lo = (a // block_size) * block_size
    return np.int64(_block_argmax(row, lo, min(lo + block_size, row.shape[0])))


@njit(**NJIT)
def _refresh_cell(row, tree, a, block_size):
    k = tree.shape[0] // 2 + a // block_size
    new = _block_scan(row, a, block_size)
    tree[k] = new
    _walk_up(row, tree, k, a, np.int64(-1), new, False)


@njit(**NJIT)
def _update_cell(row, tree, a, old_value, block_size):
    """After row[a] changed from old_value alone (see the reference)."""
    k = tree.shape[0] // 2 + a // block_size
    old = np.int64(tree[k])
    v = row[a]
    if old == a:
        if v >= old_value or old_value != old_value:
            new = a
        else:
            new = _block_scan(row, a, block_size)
    else:
        w_v = row[old]
        if a > old:
            a_wins = v > w_v or (w_v != w_v and v == v)
        else:
            a_wins = not (w_v > v or (v != v and w_v == w_v))
        if not a_wins:
            return
        new = a
    tree[k] = new
    _walk_up(row, tree, k, a, old, new, True)


@njit(**NJIT)
def _root_argmax(row, tree):
    w = tree[1]
    if row[w] != row[w]:
        return np.int64(0)
    return np.int64(w)


@njit(**NJIT)
def _root_max(row, tree):
    v = row[tree[1]]
    if v != v:
        return -np.inf
    return np.float64(v)


@njit(**NJIT)
def argmax_tree_build(q, nodes, block_size):
    if written_overlaps(nodes, q, q[:0], q[:0], q[:0], q[:0], q[:0], q[:0]):
        return OVERLAPPING_ARRAYS
    if _bad_tree(q, nodes, block_size):
        return BAD_TREE
    for s in range(q.shape[0]):
        _build_row(q[s], nodes[s], block_size)
    return 0


@njit(**NJIT)
def argmax_tree_refresh(q, nodes, block_size, states, actions):
    if actions.shape[0] != states.shape[0]:
        return BAD_SHAPES
    if written_overlaps(nodes, q, states, actions, q[:0], q[:0], q[:0], q[:0]):
        return OVERLAPPING_ARRAYS
    if _bad_tree(q, nodes, block_size):
        return BAD_TREE
    if out_of_range(states, q.shape[0]):
        return BAD_STATES
    if out_of_range(actions, q.shape[1]):
        return BAD_ACTIONS
    for i in range(states.shape[0]):
        if not _path_ok(nodes[states[i]], q.shape[1], block_size, np.int64(actions[i]), False):
            return CORRUPT_TREE
    for i in range(states.shape[0]):
        s = states[i]
        _refresh_cell(q[s], nodes[s], np.int64(actions[i]), block_size)
    return 0


@njit(**NJIT)
def greedy_tree(q, nodes, block_size, states, out):
    if out.shape[0] != states.shape[0]:
        return BAD_SHAPES
    if written_overlaps(out, q, nodes, states, q[:0], q[:0], q[:0], q[:0]):
        return OVERLAPPING_ARRAYS
    if _bad_tree(q, nodes, block_size):
        return BAD_TREE
    status = _states_roots_status(nodes, states, q.shape[0], q.shape[1])
    if status != 0:
        return status
    for i in range(states.shape[0]):
        s = states[i]
        out[i] = _root_argmax(q[s], nodes[s])
    return 0


@njit(**NJIT)
def argmax_tree_max(q, nodes, block_size, states, out):
    if out.shape[0] != states.shape[0]:
        return BAD_SHAPES
    if written_overlaps(out, q, nodes, states, q[:0], q[:0], q[:0], q[:0]):
        return OVERLAPPING_ARRAYS
    if _bad_tree(q, nodes, block_size):
        return BAD_TREE
    status = _states_roots_status(nodes, states, q.shape[0], q.shape[1])
    if status != 0:
        return status
    for i in range(states.shape[0]):
        s = states[i]
        out[i] = _root_max(q[s], nodes[s])
    return 0


@njit(**NJIT)
def epsilon_greedy_tree(q, nodes, block_size, states, epsilon, key, counter, out):
    if out.shape[0] != states.shape[0]:
        return BAD_SHAPES
    if written_overlaps(out, q, nodes, states, q[:0], q[:0], q[:0], q[:0]):
        return OVERLAPPING_ARRAYS
    if not (epsilon >= 0.0 and epsilon <= 1.0):
        return BAD_EPSILON
    if _bad_tree(q, nodes, block_size):
        return BAD_TREE
    status = _states_roots_status(nodes, states, q.shape[0], q.shape[1])
    if status != 0:
        return status
    key = np.uint64(key)
    counter = np.uint64(counter)
    n_actions = q.shape[1]
    for i in range(states.shape[0]):
        c = counter + np.uint64(2) * np.uint64(i)
        if uniform(key, c) < epsilon:
            out[i] = np.int64(uniform(key, c + np.uint64(1)) * n_actions)
        else:
            s = states[i]
            out[i] = _root_argmax(q[s], nodes[s])
    return 0


@njit(**NJIT)
def _check(q, nodes, block_size, states, actions, rewards, next_states):
    if _bad_tree(q, nodes, block_size):
        return BAD_TREE
    n_states, n_actions = q.shape
    if out_of_range(states, n_states):
        return BAD_STATES
    if out_of_range(actions, n_actions):
        return BAD_ACTIONS
    if out_of_range(next_states, n_states):
        return BAD_NEXT_STATES
    if not_all_finite(rewards):
        return BAD_REWARDS
    return 0


@njit(**NJIT)
def q_learning_update_tree(
    q, nodes, block_size, states, actions, rewards, next_states, terminated, alpha, gamma, td_out
):
    if not _batch_ok(states, actions, rewards, next_states, terminated, td_out):
        return BAD_SHAPES
    if (
        written_overlaps(q, nodes, states, actions, rewards, next_states, terminated, td_out)
        or written_overlaps(nodes, states, actions, rewards, next_states, terminated, td_out, q[:0])
        or written_overlaps(td_out, states, actions, rewards, next_states, terminated, q[:0], q[:0])
    ):
        return OVERLAPPING_ARRAYS
    status = rates_status(alpha, gamma, 0.0)
    if status != 0:
        return status
    status = _check(q, nodes, block_size, states, actions, rewards, next_states)
    if status != 0:
        return status
    if not _update_paths_ok(nodes, block_size, states, actions, next_states, q.shape[1]):
        return CORRUPT_TREE
    for i in range(states.shape[0]):
        s = np.int64(states[i])
        a = np.int64(actions[i])
        q_sa = np.float64(q[s, a])
        target = np.float64(rewards[i])
        if not terminated[i]:
            s2 = next_states[i]
            target = target + gamma * _root_max(q[s2], nodes[s2])
        td = target - q_sa
        q[s, a] = q_sa + alpha * td
        td_out[i] = td
        _update_cell(q[s], nodes[s], a, q_sa, block_size)
    return 0


@njit(**NJIT)
def _double_q_step(learner, evaluator, nodes, block_size, s, a, r, s2, terminal, alpha, gamma):
    q_sa = np.float64(learner[s, a])
    target = np.float64(r)
    if not terminal:
        target = target + gamma * np.float64(evaluator[s2, _root_argmax(learner[s2], nodes[s2])])
    td = target - q_sa
    learner[s, a] = q_sa + alpha * td
    _update_cell(learner[s], nodes[s], a, q_sa, block_size)
    return td


@njit(**NJIT)
def double_q_learning_update_tree(
    q1,
    q2,
    nodes1,
    nodes2,
    block_size1,
    block_size2,
    states,
    actions,
    rewards,
    next_states,
    terminated,
    alpha,
    gamma,
    key,
    counter,
    td_out,
):
    if not _batch_ok(states, actions, rewards, next_states, terminated, td_out):
        return BAD_SHAPES
    if (
        written_overlaps(q1, q2, nodes1, nodes2, states, actions, rewards, next_states)
        or written_overlaps(q1, terminated, td_out, q1[:0], q1[:0], q1[:0], q1[:0], q1[:0])
        or written_overlaps(q2, nodes1, nodes2, states, actions, rewards, next_states, terminated)
        or written_overlaps(q2, td_out, q1[:0], q1[:0], q1[:0], q1[:0], q1[:0], q1[:0])
        or written_overlaps(
            nodes1, nodes2, states, actions, rewards, next_states, terminated, td_out
        )
        or written_overlaps(
            nodes2, states, actions, rewards, next_states, terminated, td_out, q1[:0]
        )
        or written_overlaps(
            td_out, states, actions, rewards, next_states, terminated, q1[:0], q1[:0]
        )
    ):
        return OVERLAPPING_ARRAYS
    status = rates_status(alpha, gamma, 0.0)
    if status != 0:
        return status
    if q2.shape[0] != q1.shape[0] or q2.shape[1] != q1.shape[1]:
        return BAD_TREE
    if _bad_tree(q2, nodes2, block_size2):
        return BAD_TREE
    status = _check(q1, nodes1, block_size1, states, actions, rewards, next_states)
    if status != 0:
        return status
    key = np.uint64(key)
    counter = np.uint64(counter)
    n_actions = q1.shape[1]
    n = states.shape[0]
    p1 = nodes1.shape[1] // 2
    p2 = nodes2.shape[1] // 2
    for i in range(n):  # the learner's tree (same coins as below)
        if i + 16 < n:  # fetch a later cell's path lines meanwhile (both trees)
            _prefetch_path(nodes1, states[i + 16], p1 + np.int64(actions[i + 16]) // block_size1)
            _prefetch_path(nodes2, states[i + 16], p2 + np.int64(actions[i + 16]) // block_size2)
        if uniform(key, counter + np.uint64(i)) < 0.5:
            ok = _path_ok(nodes1[states[i]], n_actions, block_size1, np.int64(actions[i]), True)
            w = nodes1[next_states[i], 1]
        else:
            ok = _path_ok(nodes2[states[i]], n_actions, block_size2, np.int64(actions[i]), True)
            w = nodes2[next_states[i], 1]
        if not ok or w < 0 or w >= n_actions:
            return CORRUPT_TREE
    for i in range(states.shape[0]):
        s = np.int64(states[i])
        a = np.int64(actions[i])
        if uniform(key, counter + np.uint64(i)) < 0.5:
            td = _double_q_step(
                q1,
                q2,
                nodes1,
                block_size1,
                s,
                a,
                rewards[i],
                next_states[i],
                terminated[i],
                alpha,
                gamma,
            )
        else:
            td = _double_q_step(
                q2,
                q1,
                nodes2,
                block_size2,
                s,
                a,
                rewards[i],
                next_states[i],
                terminated[i],
                alpha,
                gamma,
            )
        td_out[i] = td
    return 0
