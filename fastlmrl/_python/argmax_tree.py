"""Reference per-row argmax tournament trees (plain Python); see :mod:`fastlmrl.argmax_tree`.

Layout of ``nodes`` (int32, shape ``(S, 2 * P)``) for a table ``q`` of shape ``(S, V)`` and a block
size ``B``: the row's ``n_blocks = ceil(V / B)`` blocks of columns ``[b*B, min((b+1)*B, V))`` are
the leaves ``P + b`` (``P`` = ``n_blocks`` rounded up to a power of two); node ``k`` in ``[1, P)``
has children ``2k`` and ``2k + 1``; node 1 is the root; node 0 and the padding leaves
``P + n_blocks .. 2P - 1`` (and internal nodes above padding only) hold -1.  Every other node holds
the column that wins its span under the order "non-NaN beats NaN, then the larger value, then the
lower column" -- the column that ``row_argmax`` returns for that span.  So the root is the greedy
action (0 when the whole row is NaN) and ``q[s, root]`` the row max (-inf when the row is all NaN).

The kernels never trust the *contents* of ``nodes``: every node a kernel reads as a column
index is checked before the first write (status 33, ``CORRUPT_TREE``, nothing written) to hold a
column of its own span of the table -- ``[lo, hi)`` with ``lo`` the first column of its first block
and ``hi = min(end of its last block, V)``, or -1 when the span is all padding.  The nodes checked
are the ones the call reads: the root of every row whose max/argmax is read, and for an updated or
refreshed cell ``(s, a)`` the leaf of ``a``'s block (updates only) and the sibling of every node on
the path from that leaf to the root -- O(log P) per cell, before anything is written.  So no input
makes a kernel read or write outside its arrays, a tree of a wider table is refused as soon as a
node read names a column the table does not have, and a stale tree (cells edited without
``refresh``) still gives in-bounds (if stale) answers.  Before that, the shape of ``nodes`` is
checked against ``q`` and ``block_size`` (status 32, ``BAD_TREE``; also for ``V = 0``, ``V >=
2**31`` or ``block_size < 1``), and every per-item array (``actions``, ``rewards``,
``next_states``, ``terminated``, ``out`` / ``td_out``) must have the length of ``states`` (status
7, ``fastlmrl._status.BAD_SHAPES``).  A written array (``q``, ``nodes``, ``out`` / ``td_out``)
sharing memory with another argument is status 8 (``OVERLAPPING_ARRAYS``); ``epsilon`` outside
[0, 1] status 10; ``alpha`` outside (0, 1] 12, ``gamma`` outside [0, 1] 13.  Order: 7, 8, the
scalars, 32, the id/reward checks (1, 2, 3, 5), then 33; nothing is written before all pass.
"""

__all__ = [
    "argmax_tree_build",
    "argmax_tree_max",
    "argmax_tree_refresh",
    "double_q_learning_update_tree",
    "epsilon_greedy_tree",
    "greedy_tree",
    "q_learning_update_tree",
]
import math

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
from ..rng import uniform
from ._common import all_finite, first_out_of_range
from .td_learning import kernel_types, rates_status, written_overlaps

INT32_MAX = 2**31 - 1


def n_blocks_of(n_actions, block_size):
    """ceil(V / B) for V >= 1 (written so that it cannot overflow a 64-bit integer)."""
    return (n_actions - 1) // block_size + 1


def n_leaves(n_actions, block_size):
    """P: the number of blocks ceil(V / B) rounded up to a power of two."""
    n_blocks = n_blocks_of(n_actions, block_size)
    p = 1
    while p < n_blocks:
        p *= 2
    return p


def _bad_tree(q, nodes, block_size):
    n_actions = q.shape[1]
    if block_size < 1 or n_actions < 1 or n_actions > INT32_MAX:
        return True
    return nodes.shape[0] != q.shape[0] or nodes.shape[1] != 2 * n_leaves(n_actions, block_size)


def _span_ok(w, n_actions, block_size, n_blocks, first_block, width):
    """May a node covering blocks [first_block, first_block + width) hold column w?"""
    if first_block >= n_blocks:
        return w == -1
    lo = first_block * block_size
    hi = n_actions if first_block + width >= n_blocks else (first_block + width) * block_size
    return lo <= w < hi


def _path_ok(nodes, s, n_actions, block_size, a, check_leaf):
    """The nodes an update (check_leaf) or a refresh of cell (s, a) reads as columns: the leaf of
    a's block and the sibling of every node on the path to the root."""
    p = nodes.shape[1] // 2
    n_blocks = n_blocks_of(n_actions, block_size)
    k = p + a // block_size
    if check_leaf and not _span_ok(int(nodes[s, k]), n_actions, block_size, n_blocks, k - p, 1):
        return False
    width = 1
    while k > 1:
        sibling = k ^ 1
        if not _span_ok(
            int(nodes[s, sibling]), n_actions, block_size, n_blocks, sibling * width - p, width
        ):
            return False
        k >>= 1
        width <<= 1
    return True


def _root_ok(nodes, s, n_actions):
    return 0 <= int(nodes[s, 1]) < n_actions


def _roots_ok(nodes, states, n_actions):
    for s in states:
        if not _root_ok(nodes, s, n_actions):
            return False
    return True


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


def _overlaps(written, inputs):
    """Some written array shares memory with another written array or with an input."""
    for k, w in enumerate(written):
        if written_overlaps(w, *written[k + 1 :], *inputs):
            return True
    return False


def _better(v_right, v_left):
    """Does a later column with value v_right beat an earlier one with value v_left?"""
    return v_right > v_left or (v_left != v_left and v_right == v_right)


def _block_argmax(row, lo, hi):
    best, best_v = lo, row[lo]
    for c in range(lo + 1, hi):
        v = row[c]
        if _better(v, best_v):
            best, best_v = c, v
    return best


def _pick(row, left, right):
    if right < 0:
        return left
    if left < 0:
        return right
    return right if _better(row[right], row[left]) else left


def _build_row(q, nodes, s, block_size):
    row = q[s].tolist()
    n_actions = len(row)
    p = nodes.shape[1] // 2
    n_blocks = n_blocks_of(n_actions, block_size)
    tree = [-1] * (2 * p)
    for b in range(n_blocks):
        tree[p + b] = _block_argmax(row, b * block_size, min((b + 1) * block_size, n_actions))
    for k in range(p - 1, 0, -1):
        tree[k] = _pick(row, tree[2 * k], tree[2 * k + 1])
    nodes[s] = tree


def _value(q, s, c):
    return float(q[s, c])


def _walk_up(q, nodes, s, k, a, old, new, early_exit):
    """Replay the matches above node k, whose winner went from ``old`` to ``new``.

    With ``early_exit`` (only cell (s, a) changed since the row's tree was last consistent) stop at
    the first node whose winner neither was nor is column ``a``: that node's winner is unchanged
    (it is the best of the span without ``a``) and so is its value, hence everything above it.
    """
    while k > 1 and (not early_exit or old == a or new == a):
        k //= 2
        old = int(nodes[s, k])
        left, right = int(nodes[s, 2 * k]), int(nodes[s, 2 * k + 1])
        if right < 0:
            new = left
        elif _better(_value(q, s, right), _value(q, s, left)):
            new = right
        else:
            new = left
        nodes[s, k] = new


def _block_scan(q, s, a, block_size):
    lo = (a // block_size) * block_size
    hi = min(lo + block_size, q.shape[1])
    best, best_v = lo, _value(q, s, lo)
    for c in range(lo + 1, hi):
        v = _value(q, s, c)
        if _better(v, best_v):
            best, best_v = c, v
    return best


def _refresh_cell(q, nodes, s, a, block_size):
    """Rescan the block of column a and replay every match up to the root (any edits allowed)."""
    k = nodes.shape[1] // 2 + a // block_size
    new = _block_scan(q, s, a, block_size)
    nodes[s, k] = new
    _walk_up(q, nodes, s, k, a, -1, new, False)


def _update_cell(q, nodes, s, a, old_value, block_size):
    """After q[s, a] changed from ``old_value`` (and nothing else since the tree was consistent).

    The leaf is settled in O(1) unless its winner ``a`` got worse (then its block is rescanned):
    a column other than the winner w beats w iff its new value does (ties -> lower column); the
    winner stays the winner when its value does not decrease (or was NaN).
    """
    k = nodes.shape[1] // 2 + a // block_size
    old = int(nodes[s, k])
    v = _value(q, s, a)
    if old == a:
        if v >= old_value or old_value != old_value:
            new = a
        else:
            new = _block_scan(q, s, a, block_size)
    else:
        w_v = _value(q, s, old)
        a_wins = _better(v, w_v) if a > old else not _better(w_v, v)
        if not a_wins:
            return
        new = a
    nodes[s, k] = new
    _walk_up(q, nodes, s, k, a, old, new, True)


def _root(q, nodes, s):
    """(greedy action, row max) of row s read from its root."""
    w = int(nodes[s, 1])
    v = _value(q, s, w)
    if v != v:
        return 0, -math.inf
    return w, v


def argmax_tree_build(q, nodes, block_size):
    """Build every row's tree from q."""
    kernel_types((("nodes", nodes),))
    if written_overlaps(nodes, q):
        return OVERLAPPING_ARRAYS
    if _bad_tree(q, nodes, block_size):
        return BAD_TREE
    for s in range(q.shape[0]):
        _build_row(q, nodes, s, block_size)
    return 0


def argmax_tree_refresh(q, nodes, block_size, states, actions):
    """Bring the trees up to date after the cells (states[i], actions[i]) of q were changed."""
    kernel_types((("nodes", nodes),), (("states", states), ("actions", actions)))
    if actions.shape[0] != states.shape[0]:
        return BAD_SHAPES
    if written_overlaps(nodes, q, states, actions):
        return OVERLAPPING_ARRAYS
    s_, a_ = states.tolist(), actions.tolist()
    if _bad_tree(q, nodes, block_size):
        return BAD_TREE
    if first_out_of_range(s_, q.shape[0]):
        return BAD_STATES
    if first_out_of_range(a_, q.shape[1]):
        return BAD_ACTIONS
    for i in range(len(s_)):
        if not _path_ok(nodes, s_[i], q.shape[1], block_size, a_[i], False):
            return CORRUPT_TREE
    for i in range(len(s_)):
        _refresh_cell(q, nodes, s_[i], a_[i], block_size)
    return 0


def greedy_tree(q, nodes, block_size, states, out):
    """out[i] = argmax_a q[states[i], a], read from the root of the row's tree."""
    kernel_types((("out", out),), (("states", states),))
    if out.shape[0] != states.shape[0]:
        return BAD_SHAPES
    if written_overlaps(out, q, nodes, states):
        return OVERLAPPING_ARRAYS
    s_ = states.tolist()
    if _bad_tree(q, nodes, block_size):
        return BAD_TREE
    if first_out_of_range(s_, q.shape[0]):
        return BAD_STATES
    if not _roots_ok(nodes, s_, q.shape[1]):
        return CORRUPT_TREE
    for i, s in enumerate(s_):
        out[i] = _root(q, nodes, s)[0]
    return 0


def argmax_tree_max(q, nodes, block_size, states, out):
    """out[i] = max of the non-NaN entries of q[states[i]] (-inf if none), read from the root."""
    kernel_types((("out", out),), (("states", states),))
    if out.shape[0] != states.shape[0]:
        return BAD_SHAPES
    if written_overlaps(out, q, nodes, states):
        return OVERLAPPING_ARRAYS
    s_ = states.tolist()
    if _bad_tree(q, nodes, block_size):
        return BAD_TREE
    if first_out_of_range(s_, q.shape[0]):
        return BAD_STATES
    if not _roots_ok(nodes, s_, q.shape[1]):
        return CORRUPT_TREE
    for i, s in enumerate(s_):
        out[i] = _root(q, nodes, s)[1]
    return 0


def epsilon_greedy_tree(q, nodes, block_size, states, epsilon, key, counter, out):
    """Item i uses counter + 2i (explore?) and counter + 2i + 1 (which action): epsilon_greedy's."""
    kernel_types((("out", out),), (("states", states),))
    if out.shape[0] != states.shape[0]:
        return BAD_SHAPES
    if written_overlaps(out, q, nodes, states):
        return OVERLAPPING_ARRAYS
    s_ = states.tolist()
    if not 0.0 <= epsilon <= 1.0:
        return BAD_EPSILON
    key, counter = int(key), int(counter)
    if _bad_tree(q, nodes, block_size):
        return BAD_TREE
    if first_out_of_range(s_, q.shape[0]):
        return BAD_STATES
    if not _roots_ok(nodes, s_, q.shape[1]):
        return CORRUPT_TREE
    n_actions = q.shape[1]
    for i, s in enumerate(s_):
        c = counter + 2 * i
        if uniform(key, c) < epsilon:
            out[i] = int(uniform(key, c + 1) * n_actions)
        else:
            out[i] = _root(q, nodes, s)[0]
    return 0


def _check(q, nodes, block_size, states, actions, rewards, next_states):
    if _bad_tree(q, nodes, block_size):
        return BAD_TREE
    n_states, n_actions = q.shape
    if first_out_of_range(states, n_states):
        return BAD_STATES
    if first_out_of_range(actions, n_actions):
        return BAD_ACTIONS
    if first_out_of_range(next_states, n_states):
        return BAD_NEXT_STATES
    if not all_finite(rewards):
        return BAD_REWARDS
    return 0


def q_learning_update_tree(
    q, nodes, block_size, states, actions, rewards, next_states, terminated, alpha, gamma, td_out
):
    """q_learning_update with max_a' Q(s', a') read from the tree; the tree follows each update."""
    kernel_types(
        (("q", q), ("nodes", nodes), ("td_out", td_out)),
        (("states", states), ("actions", actions), ("next_states", next_states)),
    )
    if not _batch_ok(states, actions, rewards, next_states, terminated, td_out):
        return BAD_SHAPES
    if _overlaps((q, nodes, td_out), (states, actions, rewards, next_states, terminated)):
        return OVERLAPPING_ARRAYS
    status = rates_status(alpha, gamma)
    if status:
        return status
    s_, a_, r_, n_, t_ = (x.tolist() for x in (states, actions, rewards, next_states, terminated))
    status = _check(q, nodes, block_size, s_, a_, r_, n_)
    if status:
        return status
    for i in range(len(s_)):
        if not (
            _path_ok(nodes, s_[i], q.shape[1], block_size, a_[i], True)
            and _root_ok(nodes, n_[i], q.shape[1])
        ):
            return CORRUPT_TREE
    for i in range(len(s_)):
        s, a = s_[i], a_[i]
        q_sa = float(q[s, a])
        target = r_[i] if t_[i] else r_[i] + gamma * _root(q, nodes, n_[i])[1]
        td = target - q_sa
        q[s, a] = q_sa + alpha * td
        td_out[i] = td
        _update_cell(q, nodes, s, a, q_sa, block_size)
    return 0


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
    """double_q_learning_update with the learner's argmax read from its tree (same coins)."""
    kernel_types(
        (("q1", q1), ("q2", q2), ("nodes1", nodes1), ("nodes2", nodes2), ("td_out", td_out)),
        (("states", states), ("actions", actions), ("next_states", next_states)),
    )
    if not _batch_ok(states, actions, rewards, next_states, terminated, td_out):
        return BAD_SHAPES
    if _overlaps(
        (q1, q2, nodes1, nodes2, td_out), (states, actions, rewards, next_states, terminated)
    ):
        return OVERLAPPING_ARRAYS
    status = rates_status(alpha, gamma)
    if status:
        return status
    s_, a_, r_, n_, t_ = (x.tolist() for x in (states, actions, rewards, next_states, terminated))
    if q2.shape != q1.shape or _bad_tree(q2, nodes2, block_size2):
        return BAD_TREE
    status = _check(q1, nodes1, block_size1, s_, a_, r_, n_)
    if status:
        return status
    key, counter = int(key), int(counter)
    n_actions = q1.shape[1]
    for i in range(len(s_)):  # the learner's tree (same coins as below)
        if uniform(key, counter + i) < 0.5:
            nodes, block_size = nodes1, block_size1
        else:
            nodes, block_size = nodes2, block_size2
        if not (
            _path_ok(nodes, s_[i], n_actions, block_size, a_[i], True)
            and _root_ok(nodes, n_[i], n_actions)
        ):
            return CORRUPT_TREE
    for i in range(len(s_)):
        if uniform(key, counter + i) < 0.5:
            learner, evaluator, nodes, block_size = q1, q2, nodes1, block_size1
        else:
            learner, evaluator, nodes, block_size = q2, q1, nodes2, block_size2
        s, a = s_[i], a_[i]
        q_sa = float(learner[s, a])
        if t_[i]:
            target = r_[i]
        else:
            s2 = n_[i]
            best = _root(learner, nodes, s2)[0]
            target = r_[i] + gamma * float(evaluator[s2, best])
        td = target - q_sa
        learner[s, a] = q_sa + alpha * td
        td_out[i] = td
        _update_cell(learner, nodes, s, a, q_sa, block_size)
    return 0
