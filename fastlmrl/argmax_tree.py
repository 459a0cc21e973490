r"""Per-row argmax tournament trees: greedy actions and row maxima in O(1), updates in O(B + log V).

For a large action space (V = 50257 tokens) every greedy choice
:math:`\arg\max_a Q(s,a)` and every Q-learning target :math:`\max_{a'} Q(s',a')` (Sutton & Barto
2018, eq. 6.8) scans a whole row, O(V).  An :class:`ArgmaxTree` keeps, for each state, a tournament
tree over blocks of ``block_size`` (B) columns, so that

* the greedy action and the row max are read from the root, O(1);
* after one cell :math:`Q(s_t, a_t)` changes, its block is rescanned (O(B)) and the path to the
  root is replayed (at most :math:`\lceil\log_2(V/B)\rceil` levels, usually stopping at once: a node
  whose winner neither was nor is :math:`a_t` is unchanged, and so is everything above it).

Pass the tree as ``argmax_tree=`` to :func:`fastlmrl.greedy`, :func:`fastlmrl.epsilon_greedy`,
:func:`fastlmrl.q_learning_update` (its max is read from the tree), :func:`fastlmrl.sarsa_update`
and :func:`fastlmrl.expected_sarsa_update` (not accelerated; the tree is refreshed at the touched
cells after the batch), or a pair as ``argmax_trees=`` to :func:`fastlmrl.double_q_learning_update`.
Results -- tables, TD errors, actions, random-stream positions -- are *exactly* those of the plain
full-row path, with the same tie and NaN rules: the greedy action is the lowest column holding the
maximum of the row's non-NaN entries (0 if all are NaN) and the row max ignores NaN (-inf if all are
NaN).

Layout: ``nodes`` is int32 of shape ``(S, 2P)`` with P = ``ceil(V / B)`` rounded up to a power of
two; leaf ``P + b`` is the winning column of block ``b`` (columns ``[bB, min((b+1)B, V))``), node
``k < P`` the winner of children ``2k`` and ``2k+1``, node 1 the root; node 0 and padding hold -1.
"Winning" orders columns by: non-NaN before NaN, then larger value, then lower column.  Memory is
``8 P S`` bytes: 64 MiB for (4096, 50257) with B = 32 (the float32 table itself is 823 MB).

Keeping the tree in sync: every fastlmrl function that receives the tree updates it.  If ``q`` is
changed in any other way (direct assignment, another fastlmrl update called without the tree), call
:meth:`ArgmaxTree.refresh` with the changed cells or :meth:`ArgmaxTree.rebuild`; a stale tree gives
wrong (though in-bounds) answers.

Damaged trees: the kernels never trust the node values.  Every node a call reads as a column is
checked, before anything is written, to hold a column of its own span of the table (or -1 for an
all-padding span); otherwise the call raises ``ValueError`` naming ``argmax_tree`` and changes
nothing (status 33 for a direct kernel caller; see :mod:`fastlmrl._python.argmax_tree`).
:meth:`ArgmaxTree.rebuild` repairs a damaged tree.  The check costs O(1) per read root and
O(log2 P) per updated cell.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from . import _backend
from . import _validation as check
from ._contract import Arg, Kernel, Kind, Topic, raise_for_status
from ._status import Status

if TYPE_CHECKING:  # what readers and tools follow: the reference kernels
    from ._python import argmax_tree as _kernels
else:  # the active backend's kernels, rebound by set_backend (fastlmrl._backend.bind)
    _kernels = _backend.bind(__name__, "_kernels")

__all__ = ["ArgmaxTree"]

#: Kernel status code for a ``nodes`` array whose shape does not fit ``q`` and ``block_size``.
BAD_TREE = int(Status.BAD_TREE)
#: Kernel status code for a node read by the call that holds a column outside its span of ``q``
#: (a damaged tree, or the tree of a wider table).
CORRUPT_TREE = int(Status.CORRUPT_TREE)
INT64_MAX = 2**63 - 1


# ----------------------------------------------------------------------------- the contract
def _tree_messages(nodes: str = "nodes", block_size: str = "block_size", second: str = ""):
    """Kernel.messages of BAD_TREE and CORRUPT_TREE for the tree passed as ``nodes`` (and
    ``block_size``); ``second``: the other tree's nodes of a two-tree kernel."""

    def tree(shown):
        return shown(nodes) + (f" or {shown(second)}" if second else "")

    return {
        Status.BAD_TREE: lambda args, shown: (
            f"{tree(shown)} does not fit its table (nodes shape / {block_size})"
        ),
        Status.CORRUPT_TREE: lambda args, shown: (
            f"{tree(shown)} is damaged: a node it reads holds a column outside its span "
            "of the table (its nodes were edited, or it belongs to another table); "
            "nothing was changed; call rebuild()"
        ),
    }


def _nodes(name: str = "nodes", written: bool = False, checked: bool = True) -> Arg:
    """The (S, 2P) int32 nodes of a tree; ``checked``: the call reads nodes as columns
    (CORRUPT_TREE when one lies outside its span)."""
    status = Status.CORRUPT_TREE if checked else None
    return Arg(name, Kind.ARRAY, written=written, status=status, ctype="int32_t[:, ::1]")


def _block_size(name: str = "block_size") -> Arg:
    """Columns per leaf; BAD_TREE when it (or V) does not fit the nodes' shape."""
    return Arg(name, Kind.INDEX, status=Status.BAD_TREE)


def _ids(name: str, status: Status, table: str, axis: int) -> Arg:
    return Arg(name, Kind.IDS, status=status, bound=(table, axis))


_Q, _QW = Arg("q", Kind.TABLE), Arg("q", Kind.TABLE, written=True)
_STATES = _ids("states", Status.BAD_STATES, "q", 0)
_KEY, _COUNTER = Arg("key", Kind.UINT64), Arg("counter", Kind.UINT64)
_TERMINATED = Arg("terminated", Kind.FLAGS)
_REWARDS = Arg("rewards", Kind.REALS, status=Status.BAD_REWARDS)
_ALPHA = Arg("alpha", Kind.REAL, status=Status.BAD_ALPHA, domain="(0, 1]")
_GAMMA = Arg("gamma", Kind.REAL, status=Status.BAD_GAMMA, domain="[0, 1]")
_TD_OUT = Arg("td_out", Kind.REALS, written=True)
_ACTIONS_OUT = Arg("out", Kind.ACTIONS, written=True)
_CALL = (Status.BAD_SHAPES, Status.OVERLAPPING_ARRAYS)

#: The kernels of this topic, in every backend (``fastlmrl._python/_numba/_cython.argmax_tree``;
#: layout and checks in :mod:`fastlmrl._python.argmax_tree`); tests/test_contract.py checks each
#: implementation against it.  Checks in order: BAD_SHAPES, OVERLAPPING_ARRAYS, the scalars,
#: BAD_TREE, the ids and rewards, CORRUPT_TREE; nothing is written before all pass.
CONTRACT = Topic(
    "argmax_tree",
    (
        Kernel(
            "argmax_tree_build",
            (_Q, _nodes(written=True, checked=False), _block_size()),
            (Status.OVERLAPPING_ARRAYS,),
            messages=_tree_messages(),
            doc="every row's tree from q",
        ),
        Kernel(
            "argmax_tree_max",
            (_Q, _nodes(), _block_size(), _STATES, Arg("out", Kind.REALS, written=True)),
            _CALL,
            messages=_tree_messages(),
            doc="out[i] = max of the non-NaN entries of q[states[i]] (-inf if none)",
        ),
        Kernel(
            "argmax_tree_refresh",
            (
                _Q,
                _nodes(written=True),
                _block_size(),
                _STATES,
                _ids("actions", Status.BAD_ACTIONS, "q", 1),
            ),
            _CALL,
            messages=_tree_messages(),
            doc="the trees brought up to date after cells (states[i], actions[i]) changed",
        ),
        Kernel(
            "double_q_learning_update_tree",
            (
                Arg("q1", Kind.TABLE, written=True),
                Arg("q2", Kind.TABLE, written=True),
                _nodes("nodes1", written=True),
                _nodes("nodes2", written=True),
                _block_size("block_size1"),
                _block_size("block_size2"),
                _ids("states", Status.BAD_STATES, "q1", 0),
                _ids("actions", Status.BAD_ACTIONS, "q1", 1),
                _REWARDS,
                _ids("next_states", Status.BAD_NEXT_STATES, "q1", 0),
                _TERMINATED,
                _ALPHA,
                _GAMMA,
                _KEY,
                _COUNTER,
                _TD_OUT,
            ),
            _CALL,
            messages=_tree_messages("nodes1", "block_size1, block_size2", "nodes2"),
            doc="double_q_learning_update with the learner's argmax read from its tree",
        ),
        Kernel(
            "epsilon_greedy_tree",
            (
                _Q,
                _nodes(),
                _block_size(),
                _STATES,
                Arg("epsilon", Kind.REAL, status=Status.BAD_EPSILON, domain="[0, 1]"),
                _KEY,
                _COUNTER,
                _ACTIONS_OUT,
            ),
            _CALL,
            messages=_tree_messages(),
            doc="epsilon_greedy's draws, the greedy action read from the tree",
        ),
        Kernel(
            "greedy_tree",
            (_Q, _nodes(), _block_size(), _STATES, _ACTIONS_OUT),
            _CALL,
            messages=_tree_messages(),
            doc="out[i] = argmax_a q[states[i], a], read from the root of the row's tree",
        ),
        Kernel(
            "q_learning_update_tree",
            (
                _QW,
                _nodes(written=True),
                _block_size(),
                _STATES,
                _ids("actions", Status.BAD_ACTIONS, "q", 1),
                _REWARDS,
                _ids("next_states", Status.BAD_NEXT_STATES, "q", 0),
                _TERMINATED,
                _ALPHA,
                _GAMMA,
                _TD_OUT,
            ),
            _CALL,
            messages=_tree_messages(),
            doc="q_learning_update with max_a' Q(s', a') read from the tree",
        ),
    ),
)


def _raise(status: int, kernel: str, args: dict, name: str = "argmax_tree") -> None:
    """raise_for_status of a call of tree kernel ``kernel`` (no-op for 0); ``name``: the argument
    that passed the tree (its nodes are "the tree's nodes" in an overlap message)."""
    if status:
        overlap = status == Status.OVERLAPPING_ARRAYS
        public = {"nodes": "the tree's nodes" if overlap else name}
        raise_for_status(status, CONTRACT[kernel], args, public)


def _n_leaves(n_actions: int, block_size: int) -> int:
    n_blocks = -(-n_actions // block_size)
    return 1 << (n_blocks - 1).bit_length()


class ArgmaxTree:
    """A per-row max/argmax tournament tree over the table ``q`` (S, V), kept alongside ``q``.

    Parameters
    ----------
    q : ndarray (S, V), float32 or float64, C-contiguous
        The table.  The tree references it: ``tree.table is q``; it is never copied.
    block_size : int >= 1
        Columns per leaf (B).  An update costs O(B + log2(V / B)); 32 suits float32 rows
        (128-byte blocks).

    The tree is built at construction (O(S V)).
    """

    __slots__ = ("_q", "_nodes", "_block_size")

    def __init__(self, q, block_size: int = 32):
        check.table(q, "q", writeable=False)  # q itself is kept: ``tree.table is q``
        block_size = check.positive_int(block_size, "block_size")
        if block_size > INT64_MAX:
            raise ValueError(f"block_size must be <= 2**63 - 1, got {block_size}")
        if q.shape[1] > np.iinfo(np.int32).max:
            raise ValueError(f"q has {q.shape[1]} columns; an ArgmaxTree holds int32 column ids")
        shape = (q.shape[0], 2 * _n_leaves(q.shape[1], block_size))
        if 4 * shape[0] * shape[1] > _physical_memory():
            raise ValueError(
                f"block_size = {block_size}: the tree of a {q.shape} table needs "
                f"{4 * shape[0] * shape[1]} bytes of int32 nodes {shape}, more than "
                "this machine's memory; use a larger block_size"
            )
        self._q = q
        self._block_size = block_size
        self._nodes = np.empty(shape, dtype=np.int32)
        self.rebuild()

    @property
    def table(self) -> np.ndarray:
        """The table ``q`` the tree was built for (the same object)."""
        return self._q

    @property
    def block_size(self) -> int:
        return self._block_size

    @property
    def n_blocks(self) -> int:
        """Leaves in use per row: ``ceil(V / block_size)``."""
        return -(-self._q.shape[1] // self._block_size)

    @property
    def nodes(self) -> np.ndarray:
        """A read-only view of the (S, 2P) int32 node array (layout in the module docstring)."""
        view = self._nodes.view()
        view.flags.writeable = False
        return view

    @property
    def nbytes(self) -> int:
        return self._nodes.nbytes

    def __repr__(self) -> str:
        return (
            f"ArgmaxTree(table shape={self._q.shape}, dtype={self._q.dtype}, "
            f"block_size={self._block_size}, nodes={self._nodes.shape})"
        )

    def _args(self, q=None, name: str = "argmax_tree"):
        """(nodes, block_size) for a kernel, after checking the tree still fits its table."""
        q = self._q if q is None else q
        if q.shape[0] != self._nodes.shape[0] or (
            self._nodes.shape[1] != 2 * _n_leaves(q.shape[1], self._block_size)
        ):
            raise ValueError(
                f"{name} no longer fits its table: q has shape {q.shape}, the tree "
                f"{self._nodes.shape}; build a new ArgmaxTree"
            )
        return self._nodes, self._block_size

    def rebuild(self) -> ArgmaxTree:
        """Recompute every row from ``table`` (after arbitrary direct edits of the table)."""
        q = check.table(self._q, "q", writeable=False)
        nodes, block_size = self._args()
        status = _kernels.argmax_tree_build(q, nodes, block_size)
        _raise(status, "argmax_tree_build", {"q": q, "nodes": nodes, "block_size": block_size})
        return self

    def refresh(self, states, actions) -> None:
        """Update the tree after the cells ``(states[i], actions[i])`` of the table changed.

        Costs O(B + log2 P) per cell.  Ids are checked first: on error nothing is modified.
        """
        q = check.table(self._q, "q", writeable=False)
        states = check.ids(states, "states")
        actions = check.ids(actions, "actions", states.shape[0])
        states, actions = check.same_index_dtype(states, actions)
        nodes, block_size = self._args()
        args = (q, nodes, block_size, states, actions)
        status = _kernels.argmax_tree_refresh(*args)
        _raise(status, "argmax_tree_refresh", CONTRACT["argmax_tree_refresh"].bind(*args))

    def argmax(self, states) -> np.ndarray:
        r"""Greedy actions :math:`\arg\max_a Q(s_i, a)` (int64), same as ``greedy(q, states)``."""
        q = check.table(self._q, "q", writeable=False)
        states = check.ids(states, "states")
        out = np.empty(states.shape[0], dtype=np.int64)
        nodes, block_size = self._args()
        args = (q, nodes, block_size, states, out)
        status = _kernels.greedy_tree(*args)
        _raise(status, "greedy_tree", CONTRACT["greedy_tree"].bind(*args))
        return out

    def max(self, states) -> np.ndarray:
        r""":math:`\max_a Q(s_i, a)` of the non-NaN entries (-inf if none), in the table's dtype."""
        q = check.table(self._q, "q", writeable=False)
        states = check.ids(states, "states")
        out = np.empty(states.shape[0], dtype=q.dtype)
        nodes, block_size = self._args()
        args = (q, nodes, block_size, states, out)
        status = _kernels.argmax_tree_max(*args)
        _raise(status, "argmax_tree_max", CONTRACT["argmax_tree_max"].bind(*args))
        return out


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover (not POSIX)
        return INT64_MAX


def raise_for_tree_status(status: int, bounds: dict, name: str = "argmax_tree") -> None:
    """The error of a tree kernel's status for a caller that has the bounds of its ids rather than
    the call's arguments (``{"states": (states, S), "actions": (actions, V)}``; used by
    :mod:`fastlmrl.selection`): :func:`fastlmrl._contract.raise_for_status` through the contract
    of ``argmax_tree_refresh`` (with actions) or ``epsilon_greedy_tree``; ``name`` is the
    argument that passed the tree."""
    if status == 0:
        return
    if status == Status.BAD_EPSILON:  # epsilon_greedy_tree (the wrappers check epsilon first)
        raise ValueError("epsilon must be in [0, 1]")
    states, n_states = bounds.get("states", (None, 0))
    actions, n_actions = bounds.get("actions", (None, 0))
    kernel = "argmax_tree_refresh" if "actions" in bounds else "epsilon_greedy_tree"
    table = np.broadcast_to(0.0, (n_states, n_actions))  # the bounds, no memory
    _raise(status, kernel, {"q": table, "states": states, "actions": actions}, name)


def tree_args(tree, q, name: str = "argmax_tree", table_name: str = "q"):
    """Check that ``tree`` is an ArgmaxTree built for exactly ``q``; return (nodes, block_size).

    Used by the public selection / TD functions (internal).
    """
    if not isinstance(tree, ArgmaxTree):
        raise TypeError(f"{name} must be an ArgmaxTree, got {type(tree).__name__}")
    if tree.table is not q:
        raise ValueError(
            f"{name} was built for another table ({name}.table is not "
            f"{table_name}): pass the table the tree was built for, or build a new "
            "ArgmaxTree"
        )
    return tree._args(q, name)
