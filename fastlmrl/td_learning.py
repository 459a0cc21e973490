r"""Tabular temporal-difference control: Q-learning, SARSA, expected SARSA, double Q-learning.

Each function applies a batch of transitions :math:`(s_i, a_i, r_i, s'_i, \text{terminated}_i)`
**in order** and **in place** to the table ``q`` (S states × V actions) and returns the TD errors
:math:`\delta_i`.  Order matters when a state repeats in a batch: transition ``i`` sees the table
after transitions ``0..i-1``.  The generic update (Sutton & Barto 2018, eq. 6.8) is

.. math::  Q(s_i,a_i) \leftarrow Q(s_i,a_i) + \alpha\,\delta_i,\qquad
           \delta_i = r_i + \gamma\,(1-\text{terminated}_i)\,\hat v(s'_i) - Q(s_i,a_i)

where :math:`r_i` is the reward that followed :math:`a_i` in :math:`s_i` (S&B's :math:`R_{t+1}`)
and :math:`\hat v` is the algorithm's estimate of the next state's value.  ``terminated`` means
:math:`s'_i` is terminal (its value is 0); a *truncated* transition (time limit) is passed with
``terminated=False`` and so still bootstraps.

Numerics: arithmetic is in float64 whatever the table's dtype; each new table entry and each TD
error is rounded once when stored, identically in every backend.  All arguments are checked before
anything is written: on error the table is unchanged.

Large action spaces: pass ``argmax_tree=`` (a :class:`fastlmrl.ArgmaxTree` built for ``q``;
a pair ``argmax_trees=`` for double Q-learning) and the tree is kept in step with every update.
Q-learning and double Q-learning then read :math:`\max_{a'}` / :math:`\arg\max_{a'}` from the
tree in O(1) and pay O(B + log V) per update instead of O(V); SARSA and expected SARSA (whose
targets do not need the max, or need a full-row sum anyway) just refresh the tree at the touched
cells after the batch.  Results are identical to the plain path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from . import _backend
from . import _validation as check
from ._contract import Arg, Kernel, Kind, Topic, raise_for_status
from ._status import OVERLAPPING_ARRAYS, Status
from .argmax_tree import CONTRACT as TREE_CONTRACT
from .argmax_tree import ArgmaxTree, tree_args
from .rng import RandomStream, advance, check_capacity

if TYPE_CHECKING:  # what readers and tools follow: the reference kernels
    from ._python import argmax_tree as _tree_kernels
    from ._python import td_learning as _kernels
else:  # the active backend's kernels, rebound by set_backend (fastlmrl._backend.bind)
    _kernels = _tree_kernels = _backend.bind(__name__, "_kernels", "_tree_kernels")

__all__ = [
    "double_q_learning_update",
    "expected_sarsa_update",
    "q_learning_update",
    "sarsa_update",
]


# ----------------------------------------------------------------------------- the contract
def _table(name="q"):
    return Arg(name, Kind.TABLE, written=True)


def _ids(name, status, axis, table="q"):
    return Arg(name, Kind.IDS, status=status, bound=(table, axis))


def _index(name, status, axis):
    return Arg(name, Kind.INDEX, status=status, bound=("q", axis))


_REWARDS = Arg("rewards", Kind.REALS, status=Status.BAD_REWARDS)
_TERMINATED = Arg("terminated", Kind.FLAGS)
_ALPHA = Arg("alpha", Kind.REAL, status=Status.BAD_ALPHA, domain="(0, 1]")
_GAMMA = Arg("gamma", Kind.REAL, status=Status.BAD_GAMMA, domain="[0, 1]")
_TD_OUT = Arg("td_out", Kind.REALS, written=True)
_BATCH = (Status.BAD_SHAPES, Status.OVERLAPPING_ARRAYS)

#: The kernels of this topic, in every backend (``fastlmrl._python/_numba/_cython.td_learning``);
#: tests/test_contract.py checks each implementation against it.
CONTRACT = Topic(
    "td_learning",
    (
        Kernel(
            "double_q_learning_update",
            (
                _table("q1"),
                _table("q2"),
                _ids("states", Status.BAD_STATES, 0, "q1"),
                _ids("actions", Status.BAD_ACTIONS, 1, "q1"),
                _REWARDS,
                _ids("next_states", Status.BAD_NEXT_STATES, 0, "q1"),
                _TERMINATED,
                _ALPHA,
                _GAMMA,
                Arg("key", Kind.UINT64),
                Arg("counter", Kind.UINT64),
                _TD_OUT,
            ),
            _BATCH,
        ),
        Kernel(
            "expected_sarsa_update",
            (
                _table(),
                _ids("states", Status.BAD_STATES, 0),
                _ids("actions", Status.BAD_ACTIONS, 1),
                _REWARDS,
                _ids("next_states", Status.BAD_NEXT_STATES, 0),
                _TERMINATED,
                _ALPHA,
                _GAMMA,
                Arg("epsilon", Kind.REAL, status=Status.BAD_EPSILON, domain="[0, 1]"),
                _TD_OUT,
            ),
            _BATCH,
        ),
        Kernel(
            "q_learning_update",
            (
                _table(),
                _ids("states", Status.BAD_STATES, 0),
                _ids("actions", Status.BAD_ACTIONS, 1),
                _REWARDS,
                _ids("next_states", Status.BAD_NEXT_STATES, 0),
                _TERMINATED,
                _ALPHA,
                _GAMMA,
                _TD_OUT,
            ),
            _BATCH,
        ),
        Kernel(
            "q_learning_update_one",
            (
                _table(),
                _index("state", Status.BAD_STATES, 0),
                _index("action", Status.BAD_ACTIONS, 1),
                Arg("reward", Kind.REAL, status=Status.BAD_REWARDS),
                _index("next_state", Status.BAD_NEXT_STATES, 0),
                Arg("terminated", Kind.FLAG),
                _ALPHA,
                _GAMMA,
            ),
            returns=("status", "td"),
            doc="one transition, O(1) checks; returns (status, td rounded to the table's dtype)",
        ),
        Kernel(
            "sarsa_update",
            (
                _table(),
                _ids("states", Status.BAD_STATES, 0),
                _ids("actions", Status.BAD_ACTIONS, 1),
                _REWARDS,
                _ids("next_states", Status.BAD_NEXT_STATES, 0),
                _ids("next_actions", Status.BAD_NEXT_ACTIONS, 1),
                _TERMINATED,
                _ALPHA,
                _GAMMA,
                _TD_OUT,
            ),
            _BATCH,
        ),
    ),
)


# ----------------------------------------------------------------------------- direct calls
# Arguments that already are exactly what a kernel takes go to it without conversion; the kernel
# checks every value (shapes, overlap, ids, rewards, alpha, gamma) before it writes.  Anything
# else, or a call the kernel refuses, takes the full validation below (which converts, or raises
# the error naming the argument).  Same kernels, same arrays: the same results bit for bit.
_ndarray = np.ndarray
_F64, _F32 = np.dtype(np.float64), np.dtype(np.float32)
_I64, _I32 = np.dtype(np.int64), np.dtype(np.int32)
_BOOL = np.dtype(np.bool_)


def _direct_table(q) -> bool:
    """q is a non-empty C-contiguous writeable float32/float64 matrix (used as is)."""
    return (
        type(q) is _ndarray
        and (q.dtype is _F64 or q.dtype is _F32)
        and q.ndim == 2
        and q.size != 0
        and q.flags.carray
    )


def _direct_batch(dtype, rewards, terminated, ids):
    """(ids, rewards, terminated as uint8) when they are exactly the kernels' arrays, else None."""
    index = ids[0].dtype if type(ids[0]) is _ndarray else None
    if index is not _I64 and index is not _I32:
        return None
    for x in ids:
        if type(x) is not _ndarray or x.dtype is not index or x.ndim != 1 or not x.flags.carray:
            return None
    if (
        type(rewards) is not _ndarray
        or rewards.dtype is not dtype
        or rewards.ndim != 1
        or not rewards.flags.carray
        or type(terminated) is not _ndarray
        or terminated.dtype is not _BOOL
        or terminated.ndim != 1
        or not terminated.flags.carray
    ):
        return None
    return ids, rewards, terminated.view(np.uint8)


def _one_id(x):
    """x[0] as a Python int when x is a length-1 int32/int64 array or a list of one int (that
    fits int64), else None."""
    t = type(x)
    if t is _ndarray:
        if x.shape == (1,) and (x.dtype is _I64 or x.dtype is _I32):
            return x.item()
    elif t is list and len(x) == 1:
        v = x[0]
        if type(v) is int and -_INT64_LIMIT <= v < _INT64_LIMIT:
            return v
    return None


def _one_real(x):
    """x[0] as a Python float when x is a length-1 float32/float64 array or a list of one
    float, else None."""
    t = type(x)
    if t is _ndarray:
        if x.shape == (1,) and (x.dtype is _F64 or x.dtype is _F32):
            return x.item()
    elif t is list and len(x) == 1 and type(x[0]) is float:
        return x[0]
    return None


def _one_flag(x):
    """x[0] as a Python bool when x is a length-1 bool array or a list of one bool, else None."""
    t = type(x)
    if t is _ndarray:
        if x.shape == (1,) and x.dtype is _BOOL:
            return x.item()
    elif t is list and len(x) == 1 and type(x[0]) is bool:
        return x[0]
    return None


_INT64_LIMIT = 2**63


_NO_NEXT_ACTIONS = object()


def _batch(q, states, actions, rewards, next_states, terminated, next_actions=_NO_NEXT_ACTIONS):
    """Validate a batch of transitions; return arrays in the dtypes the kernels take."""
    states = check.ids(states, "states")
    n = states.shape[0]
    actions = check.ids(actions, "actions", n)
    next_states = check.ids(next_states, "next_states", n)
    id_arrays = [states, actions, next_states]
    if next_actions is not _NO_NEXT_ACTIONS:  # SARSA: None is refused like any non-id array
        if next_actions is None:
            raise TypeError("next_actions must be an array of action ids, got None")
        id_arrays.append(check.ids(next_actions, "next_actions", n))
    id_arrays = check.same_index_dtype(*id_arrays)
    rewards = check.values(rewards, "rewards", n, q.dtype)
    terminated = check.flags(terminated, "terminated", n)
    return id_arrays, rewards, terminated


def refuse_shared_memory(written: dict, inputs: dict) -> None:
    """ValueError naming the input that shares memory with an array the call writes (a table, a
    tree's nodes): a write could change it after it was checked (the kernels return status 8,
    OVERLAPPING_ARRAYS, for a direct caller).  O(1) per pair (address ranges)."""
    for wname, w in written.items():
        for name, x in inputs.items():
            if x is not None and x.size and np.may_share_memory(w, x):
                raise ValueError(
                    f"{name} shares memory with {wname}, which this call writes in "
                    f"place; pass a copy of {name}"
                )


def _raise_overlap(status, written: dict, inputs: dict) -> None:
    """After status 8 (OVERLAPPING_ARRAYS, nothing written): the error naming the arrays.  Kept
    off the hot path: the kernels check the address ranges in O(1)."""
    if status == OVERLAPPING_ARRAYS:
        refuse_shared_memory(written, inputs)
        raise ValueError("array arguments share memory with an array this call writes")


def _inputs(ids, rewards, terminated, names=("states", "actions", "next_states", "next_actions")):
    inputs = dict(zip(names, ids))
    inputs["rewards"] = rewards
    inputs["terminated"] = terminated
    return inputs


def _tables(tables: dict, *trees) -> dict:
    for name, tree in trees:
        if tree is not None:
            tables[f"{name}.nodes"] = tree[0]
    return tables


def _rates(alpha, gamma):
    return check.real(alpha, "alpha", 0.0, 1.0, low_open=True), check.real(gamma, "gamma", 0.0, 1.0)


def _raise(
    status,
    q,
    ids,
    rewards,
    names=("states", "actions", "next_states", "next_actions"),
    tree_name="argmax_tree",
):
    """The error of a status of an ArgmaxTree kernel (no-op for 0), through the contract of
    :mod:`fastlmrl.argmax_tree`: ``argmax_tree_refresh`` for two id arrays (states, actions), else
    ``q_learning_update_tree``, whose arguments and statuses ``double_q_learning_update_tree``
    shares (its ids are bounded by ``q1``, passed as ``q``).  The tree is named ``tree_name``;
    overlaps were raised before, by _raise_overlap, with the tables' names."""
    if status:
        kernel = TREE_CONTRACT["argmax_tree_refresh" if len(ids) == 2 else "q_learning_update_tree"]
        args = dict(zip(names, ids), q=q, rewards=rewards)
        raise_for_status(status, kernel, args, {"nodes": tree_name})


def q_learning_update(
    q: np.ndarray,
    states: ArrayLike,
    actions: ArrayLike,
    rewards: ArrayLike,
    next_states: ArrayLike,
    terminated: ArrayLike,
    alpha: float,
    gamma: float,
    argmax_tree: ArgmaxTree | None = None,
) -> np.ndarray:
    r"""Q-learning (Watkins 1989; Sutton & Barto eq. 6.8): :math:`\hat v(s') = \max_{a'} Q(s', a')`.

    Returns the TD errors :math:`\delta_i` (dtype of ``q``).  ``alpha`` ∈ (0, 1], ``gamma`` ∈ [0,
    1]. With ``argmax_tree`` (an :class:`fastlmrl.ArgmaxTree` of ``q``) the max is read from the
    tree and the tree follows each update: O(B + log V) per transition instead of O(V), same
    results.
    """
    if (
        argmax_tree is None
        and isinstance(alpha, float)
        and isinstance(gamma, float)
        and _direct_table(q)
    ):
        # a batch of one: the single-transition kernel on the scalars (no arrays to pass)
        s, a, s2 = _one_id(states), _one_id(actions), _one_id(next_states)
        r, t = _one_real(rewards), _one_flag(terminated)
        if s is not None and a is not None and s2 is not None and r is not None and t is not None:
            status, delta = _kernels.q_learning_update_one(q, s, a, r, s2, t, alpha, gamma)
            if status == 0:
                td = np.empty(1, q.dtype)
                td[0] = delta
                return td
        else:
            direct = _direct_batch(q.dtype, rewards, terminated, (states, actions, next_states))
            if direct is not None:
                (s, a, s2), r, t = direct
                td = np.empty(s.shape[0], q.dtype)
                if _kernels.q_learning_update(q, s, a, r, s2, t, alpha, gamma, td) == 0:
                    return td
    # the full validation (and the error of a refused call: nothing was written)
    q = check.table(q)
    alpha, gamma = _rates(alpha, gamma)
    (s, a, s2), r, t = _batch(q, states, actions, rewards, next_states, terminated)
    tree = None if argmax_tree is None else tree_args(argmax_tree, q)
    td = np.empty(s.shape[0], dtype=q.dtype)
    if tree is None:
        args = (q, s, a, r, s2, t, alpha, gamma, td)
        status = _kernels.q_learning_update(*args)
        CONTRACT["q_learning_update"].raise_for_call(status, args)
    else:
        nodes, block_size = tree
        status = _tree_kernels.q_learning_update_tree(
            q, nodes, block_size, s, a, r, s2, t, alpha, gamma, td
        )
        _raise_overlap(status, _tables({"q": q}, ("argmax_tree", tree)), _inputs((s, a, s2), r, t))
        _raise(status, q, (s, a, s2), r)
    return td


def sarsa_update(
    q: np.ndarray,
    states: ArrayLike,
    actions: ArrayLike,
    rewards: ArrayLike,
    next_states: ArrayLike,
    next_actions: ArrayLike,
    terminated: ArrayLike,
    alpha: float,
    gamma: float,
    argmax_tree: ArgmaxTree | None = None,
) -> np.ndarray:
    r"""SARSA (Rummery & Niranjan 1994; Sutton & Barto eq. 6.7): :math:`\hat v(s') = Q(s', a')`.

    ``next_actions[i]`` is the action actually taken in ``next_states[i]`` (ignored when
    terminated). ``argmax_tree`` (an :class:`fastlmrl.ArgmaxTree` of ``q``) is refreshed at the
    updated cells.
    """
    if (
        argmax_tree is None
        and isinstance(alpha, float)
        and isinstance(gamma, float)
        and _direct_table(q)
    ):
        direct = _direct_batch(
            q.dtype, rewards, terminated, (states, actions, next_states, next_actions)
        )
        if direct is not None:
            (s, a, s2, a2), r, t = direct
            td = np.empty(s.shape[0], q.dtype)
            if _kernels.sarsa_update(q, s, a, r, s2, a2, t, alpha, gamma, td) == 0:
                return td
    q = check.table(q)
    alpha, gamma = _rates(alpha, gamma)
    (s, a, s2, a2), r, t = _batch(
        q, states, actions, rewards, next_states, terminated, next_actions
    )
    tree = None if argmax_tree is None else tree_args(argmax_tree, q)
    td = np.empty(s.shape[0], dtype=q.dtype)
    old = _cells(q, s, a, tree)
    args = (q, s, a, r, s2, a2, t, alpha, gamma, td)
    status = _kernels.sarsa_update(*args)
    CONTRACT["sarsa_update"].raise_for_call(status, args)
    _refresh(q, tree, s, a, old)
    return td


def _cells(q, s, a, tree):
    """q[s, a] before an update (ids clipped: out-of-range ones are refused by the kernel)."""
    if tree is None:
        return None
    return q[np.clip(s, 0, q.shape[0] - 1), np.clip(a, 0, q.shape[1] - 1)]


def _refresh(q, tree, s, a, old):
    """After a successful plain update: bring the tree up to date at cells (s[i], a[i]).

    The refresh kernel checks the tree's nodes on those paths before it writes; if it refuses a
    damaged tree, the table is put back (``old`` = q[s, a] before the update, taken before any
    write, so repeated cells get their original value) and the error raised: nothing changed.
    """
    if tree is not None:
        nodes, block_size = tree
        status = _tree_kernels.argmax_tree_refresh(q, nodes, block_size, s, a)
        if status != 0:
            q[s, a] = old
        _raise_overlap(status, {"argmax_tree.nodes": nodes}, {"states": s, "actions": a})
        _raise(status, q, (s, a), None)


def expected_sarsa_update(
    q: np.ndarray,
    states: ArrayLike,
    actions: ArrayLike,
    rewards: ArrayLike,
    next_states: ArrayLike,
    terminated: ArrayLike,
    alpha: float,
    gamma: float,
    epsilon: float,
    argmax_tree: ArgmaxTree | None = None,
) -> np.ndarray:
    r"""Expected SARSA (van Seijen et al. 2009; Sutton & Barto eq. 6.9) under the ε-greedy policy.

    :math:`\hat v(s') = \sum_a \pi(a|s') Q(s',a) = (1-\varepsilon)\max_a Q(s',a) + \varepsilon\,
    \tfrac{1}{V}\sum_a Q(s',a)`, evaluated in exactly that form.  With ε = 0 it is Q-learning.
    ``argmax_tree`` (an :class:`fastlmrl.ArgmaxTree` of ``q``) is refreshed at the updated cells
    (the row sum needs O(V) anyway, so the max is not read from the tree).
    """
    if (
        argmax_tree is None
        and isinstance(alpha, float)
        and isinstance(gamma, float)
        and isinstance(epsilon, float)
        and _direct_table(q)
    ):
        direct = _direct_batch(q.dtype, rewards, terminated, (states, actions, next_states))
        if direct is not None:
            (s, a, s2), r, t = direct
            td = np.empty(s.shape[0], q.dtype)
            if _kernels.expected_sarsa_update(q, s, a, r, s2, t, alpha, gamma, epsilon, td) == 0:
                return td
    q = check.table(q)
    alpha, gamma = _rates(alpha, gamma)
    epsilon = check.real(epsilon, "epsilon", 0.0, 1.0)
    (s, a, s2), r, t = _batch(q, states, actions, rewards, next_states, terminated)
    tree = None if argmax_tree is None else tree_args(argmax_tree, q)
    td = np.empty(s.shape[0], dtype=q.dtype)
    old = _cells(q, s, a, tree)
    args = (q, s, a, r, s2, t, alpha, gamma, epsilon, td)
    status = _kernels.expected_sarsa_update(*args)
    CONTRACT["expected_sarsa_update"].raise_for_call(status, args)
    _refresh(q, tree, s, a, old)
    return td


def double_q_learning_update(
    q1: np.ndarray,
    q2: np.ndarray,
    states: ArrayLike,
    actions: ArrayLike,
    rewards: ArrayLike,
    next_states: ArrayLike,
    terminated: ArrayLike,
    alpha: float,
    gamma: float,
    seed: int | RandomStream,
    argmax_trees: tuple[ArgmaxTree, ArgmaxTree] | None = None,
) -> np.ndarray:
    r"""Double Q-learning (van Hasselt 2010; Sutton & Barto §6.7).

    For each transition a fair coin (the uniform at counter ``c + i`` of ``seed`` below 0.5) picks
    ``q1`` as the learner, else ``q2``; the learner :math:`Q_L` is updated toward
    :math:`r + \gamma\,Q_E(s', \arg\max_{a'} Q_L(s', a'))` with the other table :math:`Q_E`
    as evaluator.  Consumes ``len(states)`` counters.  Returns the TD errors.

    ``argmax_trees``: optional pair ``(tree1, tree2)`` of :class:`fastlmrl.ArgmaxTree` built for
    ``q1`` and ``q2``; the learner's argmax is then read from its tree (same coins, same results).
    """
    q1 = check.table(q1, "q1")
    q2 = check.table(q2, "q2")
    if q1.shape != q2.shape or q1.dtype != q2.dtype:
        raise ValueError(
            f"q1 and q2 must have the same shape and dtype, got {q1.shape} {q1.dtype} and "
            f"{q2.shape} {q2.dtype}"
        )
    if np.shares_memory(q1, q2):
        raise ValueError("q1 and q2 must be two different tables")
    alpha, gamma = _rates(alpha, gamma)
    (s, a, s2), r, t = _batch(q1, states, actions, rewards, next_states, terminated)
    key, counter = check_capacity(seed, s.shape[0])  # before anything is written
    trees: tuple[Any, Any] = (None, None)
    if argmax_trees is not None:
        if not isinstance(argmax_trees, (tuple, list)) or len(argmax_trees) != 2:
            raise TypeError("argmax_trees must be a pair (tree of q1, tree of q2)")
        trees = (
            tree_args(argmax_trees[0], q1, "argmax_trees[0]", "q1"),
            tree_args(argmax_trees[1], q2, "argmax_trees[1]", "q2"),
        )
    td = np.empty(s.shape[0], dtype=q1.dtype)
    if argmax_trees is None:
        args = (q1, q2, s, a, r, s2, t, alpha, gamma, np.uint64(key), np.uint64(counter), td)
        status = _kernels.double_q_learning_update(*args)
        CONTRACT["double_q_learning_update"].raise_for_call(status, args)
    else:
        (nodes1, block_size1), (nodes2, block_size2) = trees
        status = _tree_kernels.double_q_learning_update_tree(
            q1,
            q2,
            nodes1,
            nodes2,
            block_size1,
            block_size2,
            s,
            a,
            r,
            s2,
            t,
            alpha,
            gamma,
            np.uint64(key),
            np.uint64(counter),
            td,
        )
        _raise_overlap(
            status,
            _tables(
                {"q1": q1, "q2": q2}, ("argmax_trees[0]", trees[0]), ("argmax_trees[1]", trees[1])
            ),
            _inputs((s, a, s2), r, t),
        )
        _raise(status, q1, (s, a, s2), r, tree_name="argmax_trees")
    advance(seed, s.shape[0])
    return td
