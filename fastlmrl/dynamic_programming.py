r"""Dynamic programming for finite MDPs: value, policy and modified policy iteration.

An MDP is given in one of two layouts (Sutton & Barto 2018, §3.1 and chapter 4; Puterman 1994,
chapter 6; the solvers and their result follow QuantEcon's ``DiscreteDP``):

:class:`TokenMDP` — the deterministic *token* layout
    ``next_state`` (S, A) integer ids and ``reward`` (S, A): taking token (action) ``a`` in
    context (state) ``s`` moves to context ``next_state[s, a]`` and yields ``reward[s, a]``.
    ``terminal`` (S,) bool marks end-of-sequence contexts: a terminal state has value 0, its
    action values are 0 and its greedy action is 0; its rows of ``next_state`` and ``reward`` are
    never read (they may hold padding such as -1 or NaN).  The transition *into* a terminal state
    still pays its reward.

:class:`DenseMDP` — the dense stochastic layout
    ``P`` (S, A, S) with ``P[s, a, t]`` = :math:`p(t \mid s, a)` (rows nonnegative and summing to
    1) and ``R`` (S, A).  There are no terminal states: model one as an absorbing state with
    reward 0 (:meth:`TokenMDP.to_dense` does exactly that).

In both layouts the reward is the *expected* reward of taking ``a`` in ``s``,
:math:`r(s,a) = \mathbb E[R_{t+1} \mid S_t = s, A_t = a]` (S&B eq. 3.5), received at time
:math:`t+1` on the transition :math:`S_t \to S_{t+1}`.  The Bellman optimality backup
(S&B eq. 4.10 / 3.20) computed by every solver is

.. math::  q(s,a) = r(s,a) + \gamma \sum_{s'} p(s' \mid s,a)\, v(s'),\qquad
           (Tv)(s) = \max_a q(s,a),\qquad \sigma_v(s) = \min \arg\max_a q(s,a)

(deterministic layout: :math:`q(s,a) = r(s,a) + \gamma\, v(\text{next\_state}[s,a])`, and 0 for a
terminal ``s``); ties in the greedy policy :math:`\sigma_v` go to the lowest action index.

Numerics: tables may be float32 or float64 (ids int32 or int64); every value, action value and sum
is computed and stored in float64 (values are float64 whatever the table dtype), sums over
:math:`s'` in index order, so all three backends return bit-identical results.  Nothing passed in
is ever modified; every argument is checked before any work.

Discounting: ``gamma`` ∈ [0, 1].  ``gamma == 1`` (undiscounted, episodic) is accepted only for a
:class:`TokenMDP` whose transition graph restricted to non-terminal states is acyclic — every
sequence of tokens from every context reaches a terminal context within S steps (the
finite-horizon token MDP, where each token extends the context).  Otherwise the values can be
infinite or undefined and a ValueError is raised (always for a :class:`DenseMDP`).  The
acyclicity test is a depth-first search kernel, O(S·A).

The ε-guarantees quoted below (Puterman) assume exactly stochastic rows; a float32 ``P`` sums to 1
only to about 1e-7 per row, which moves the fixed point by about
:math:`\gamma/(1-\gamma)\cdot\max|\sum_t P - 1|\cdot\lVert v\rVert_\infty`.

Iteration counts (``max_iter``, ``k``) are ints below 2**31 (a larger one is refused at once
with a ValueError that names it, instead of running for days).

Kernels (``fastlmrl.numba_kernels``, ``fastlmrl._cython.dynamic_programming``; identical
signatures in every backend, declared in :data:`CONTRACT`; ``terminal`` is a uint8 view, values
float64, policies int64; each returns a :class:`fastlmrl.Status` after a pre-pass that writes
nothing — 8 OVERLAPPING_ARRAYS (first): a written array shares memory with another argument,
7 BAD_SHAPES: array arguments of inconsistent shapes, 2 BAD_ACTIONS: a ``policy`` id outside
[0, A) (or A == 0 with a state that is not terminal), 3 BAD_NEXT_STATES: a ``next_state`` id of a
non-terminal state outside [0, S), 5 BAD_REWARDS: a non-finite reward of a non-terminal state /
of ``R``, 60 BAD_ITERATIONS: ``k`` or ``max_iter`` outside [0, 2**31 - 1])::

    token_mdp_bellman_backup(next_state, reward, terminal, gamma, v, v_out, policy_out)
    token_mdp_action_values(next_state, reward, terminal, gamma, v, q_out)
    token_mdp_policy_sweeps(next_state, reward, terminal, policy, gamma, k, v, v_tmp)  # T_pi^k
    token_mdp_policy_value(next_state, reward, terminal, policy, gamma, v_out, work)   # exact
    token_mdp_value_iteration(next_state, reward, terminal, gamma, tol, max_iter, v, v_tmp,
                              policy_out, info_out)   # info_out = [num_iter, converged]
    token_mdp_find_cycle(next_state, terminal, found_out, work)   # found_out[0]: -1 or a state
    dense_mdp_bellman_backup(P, R, gamma, v, v_out, policy_out)
    dense_mdp_action_values(P, R, gamma, v, q_out)
    dense_mdp_policy_sweeps(P, R, policy, gamma, k, v, v_tmp)
    dense_mdp_value_iteration(P, R, gamma, tol, max_iter, v, v_tmp, policy_out, info_out)

The value-iteration kernels loop until the sup norm of a sweep's change is below ``tol`` or exactly
0 (then ``converged``), or ``max_iter`` sweeps, and finish with one more sweep for the greedy
policy of the returned values; ``v`` and ``v_out`` must not overlap.  Scratch: ``work`` holds
2 S (policy_value) or 3 S (find_cycle) int64; ``v`` of value_iteration and policy_sweeps is
updated in place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _backend
from . import _validation as check
from ._contract import Arg, Kernel, Kind, Topic
from ._status import Status

if TYPE_CHECKING:  # what readers and tools follow: the reference kernels
    from ._python import dynamic_programming as _kernels
else:  # the active backend's kernels, rebound by set_backend (fastlmrl._backend.bind)
    _kernels = _backend.bind(__name__, "_kernels")

__all__ = [
    "DPResult",
    "DenseMDP",
    "TokenMDP",
    "action_values",
    "bellman_backup",
    "evaluate_policy",
    "modified_policy_iteration",
    "policy_iteration",
    "value_iteration",
]

#: Tolerance on ``|sum_t P[s, a, t] - 1|`` accepted by :class:`DenseMDP`, per dtype of ``P`` as
#: given (see :func:`row_sum_tolerance`).
ROW_SUM_ATOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-8}


def row_sum_tolerance(dtype, n_states: int) -> float:
    """The tolerance on ``|sum_t P[s, a, t] - 1|`` for a ``P`` *given* in ``dtype`` with
    ``n_states`` columns: ``max(ROW_SUM_ATOL, 4 * S * eps(dtype))``.

    A row normalised in a float format is off by up to about ``S * eps`` (each addition of the
    normalising sum rounds once), so the bound grows with S and follows the dtype the user
    built ``P`` in, not the one it is converted to: a float32 ``P`` keeps its float32 tolerance
    when a float64 ``R`` makes the tables float64; a float16 ``P`` gets float16's eps; integer
    and boolean ``P`` (exact) the float64 one."""
    dtype = np.dtype(dtype)
    eps = float(np.finfo(dtype).eps) if dtype.kind == "f" else 0.0
    base = ROW_SUM_ATOL.get(dtype, ROW_SUM_ATOL[np.dtype(np.float64)])
    return max(base, 4.0 * n_states * eps)


# ---------------------------------------------------------------------------------------------
# argument conversion


def _id_table(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer ids, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-dimensional (S, A), got shape {arr.shape}")
    if 0 in arr.shape:
        raise ValueError(f"{name} must not have an empty axis, got shape {arr.shape}")
    if arr.dtype not in check.INDEX_DTYPES:
        if arr.dtype.kind == "u" and arr.max() > np.iinfo(np.int64).max:
            raise ValueError(f"{name} holds ids too large for int64")
        arr = arr.astype(np.int64)
    return check.kernel_input(np.ascontiguousarray(arr))  # read-only: no new Numba compile


def _real_table(x, name: str, shape: tuple) -> np.ndarray:
    """A C-contiguous float32/float64 array of the given shape (other real dtypes -> float64)."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if arr.dtype not in check.FLOAT_DTYPES:
        arr = arr.astype(np.float64)
    return check.kernel_input(np.ascontiguousarray(arr))


def _first_index(mask: np.ndarray) -> tuple:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _where(idx: tuple) -> str:
    return ", ".join(str(i) for i in idx)


def _check_next_state(next_state, terminal):
    n_states = next_state.shape[0]
    bad = ((next_state < 0) | (next_state >= n_states)) & ~terminal[:, None]
    if bad.any():
        idx = _first_index(bad)
        raise ValueError(
            f"next_state[{_where(idx)}] = {int(next_state[idx])} is out of range [0, {n_states})"
        )


def _check_finite(arr, name, rows=None):
    bad = ~np.isfinite(arr)
    if rows is not None:
        bad &= rows[:, None]
    if bad.any():
        idx = _first_index(bad)
        raise ValueError(f"{name}[{_where(idx)}] = {arr[idx]} is not finite")


# ---------------------------------------------------------------------------------------------
# the kernel contract


def _explain_next_state(args, shown) -> str:
    """BAD_NEXT_STATES: the first ``next_state`` id of a non-terminal state outside [0, S)."""
    next_state, live = args["next_state"], args["terminal"] == 0
    n_states = next_state.shape[0]
    bad = ((next_state < 0) | (next_state >= n_states)) & live[:, None]
    if not bad.any():
        return f"{shown('next_state')} holds an id out of range [0, {n_states})"
    idx = _first_index(bad)
    return (
        f"{shown('next_state')}[{_where(idx)}] = {int(next_state[idx])} is out of range "
        f"[0, {n_states})"
    )


def _explain_rewards(args, shown) -> str:
    """BAD_REWARDS: the first non-finite reward (token layout: of a non-terminal state)."""
    name = "reward" if "reward" in args else "R"
    table = args[name]
    bad = ~np.isfinite(table)
    if "terminal" in args:
        bad &= (args["terminal"] == 0)[:, None]
    if not bad.any():
        return f"{shown(name)} holds a non-finite value"
    idx = _first_index(bad)
    return f"{shown(name)}[{_where(idx)}] = {table[idx]} is not finite"


def _explain_actions(args, shown) -> str:
    """BAD_ACTIONS: a ``policy`` id outside [0, A); without a policy, an MDP with no actions
    (A == 0) that has a non-terminal state."""
    n_actions = (args["reward"] if "reward" in args else args["R"]).shape[1]
    if "policy" not in args:
        name = "terminal" if "terminal" in args else "P"
        return f"{shown(name)}: the MDP has no actions (A == 0) but a state that is not terminal"
    policy = args["policy"]
    bad = np.flatnonzero((policy < 0) | (policy >= n_actions))
    if not bad.size:
        return f"{shown('policy')} holds an action out of range [0, {n_actions})"
    i = int(bad[0])
    return f"{shown('policy')}[{i}] = {int(policy[i])} is out of range [0, {n_actions})"


_MESSAGES = {
    Status.BAD_NEXT_STATES: _explain_next_state,
    Status.BAD_REWARDS: _explain_rewards,
    Status.BAD_ACTIONS: _explain_actions,
}
_NEXT_STATE = Arg("next_state", Kind.ARRAY, status=Status.BAD_NEXT_STATES, ctype="index_t[:, ::1]")
_REWARD = Arg("reward", Kind.TABLE, status=Status.BAD_REWARDS)
_TERMINAL = Arg("terminal", Kind.FLAGS)
#: a kernel without a policy blames A == 0 (with a non-terminal state) on ``terminal`` / ``P``
_TERMINAL_NO_ACTIONS = replace(_TERMINAL, status=Status.BAD_ACTIONS)
_TOKEN = (_NEXT_STATE, _REWARD, _TERMINAL)
_TOKEN_NO_POLICY = (_NEXT_STATE, _REWARD, _TERMINAL_NO_ACTIONS)
_P = Arg("P", Kind.ARRAY, ctype="real_t[:, :, ::1]")
_R = Arg("R", Kind.TABLE, status=Status.BAD_REWARDS)
_DENSE = (_P, _R)
_DENSE_NO_POLICY = (replace(_P, status=Status.BAD_ACTIONS), _R)
_GAMMA, _TOL = Arg("gamma", Kind.REAL), Arg("tol", Kind.REAL)
_POLICY = Arg("policy", Kind.ACTIONS, status=Status.BAD_ACTIONS)  # one action per state
_POLICY_OUT = Arg("policy_out", Kind.ACTIONS, written=True)
_K = Arg(
    "k", Kind.SCALAR, status=Status.BAD_ITERATIONS, domain="[0, 2**31 - 1]", ctype="Py_ssize_t"
)
_MAX_ITER = replace(_K, name="max_iter")


def _values(name: str, written: bool = True) -> Arg:
    """A float64 (S,) array of values (``v``, ``v_out``, ``v_tmp``)."""
    return Arg(name, Kind.ARRAY, written=written, ctype="double[::1]")


def _int64_out(name: str) -> Arg:
    """An int64 output or scratch array (``info_out``, ``found_out``, ``work``)."""
    return Arg(name, Kind.ARRAY, written=True, ctype="int64_t[::1]")


_V = _values("v", written=False)
_Q_OUT = Arg("q_out", Kind.ARRAY, written=True, ctype="double[:, ::1]")
_VI_OUT = (_values("v"), _values("v_tmp"), _POLICY_OUT, _int64_out("info_out"))
_BATCH = (Status.BAD_SHAPES, Status.OVERLAPPING_ARRAYS)
#: the slots of value iteration's ``info_out``
_INFO = {"info_out": ("num_iter", "converged")}


def _kernel(name: str, args: tuple, **kw) -> Kernel:
    return Kernel(name, args, _BATCH, messages=_MESSAGES, **kw)


#: The kernels of this topic, in every backend (``fastlmrl._python/_numba/_cython``
#: ``.dynamic_programming``); tests/test_contract.py checks each implementation against it.
CONTRACT = Topic(
    "dynamic_programming",
    (
        _kernel("dense_mdp_action_values", (*_DENSE_NO_POLICY, _GAMMA, _V, _Q_OUT)),
        _kernel(
            "dense_mdp_bellman_backup",
            (*_DENSE_NO_POLICY, _GAMMA, _V, _values("v_out"), _POLICY_OUT),
        ),
        _kernel(
            "dense_mdp_policy_sweeps",
            (*_DENSE, _POLICY, _GAMMA, _K, _values("v"), _values("v_tmp")),
            doc="v <- T_pi^k v in place (k synchronous sweeps)",
        ),
        _kernel(
            "dense_mdp_value_iteration",
            (*_DENSE_NO_POLICY, _GAMMA, _TOL, _MAX_ITER, *_VI_OUT),
            results=_INFO,
        ),
        _kernel("token_mdp_action_values", (*_TOKEN_NO_POLICY, _GAMMA, _V, _Q_OUT)),
        _kernel(
            "token_mdp_bellman_backup",
            (*_TOKEN_NO_POLICY, _GAMMA, _V, _values("v_out"), _POLICY_OUT),
        ),
        _kernel(
            "token_mdp_find_cycle",
            (_NEXT_STATE, _TERMINAL, _int64_out("found_out"), _int64_out("work")),
            results={"found_out": ("state",)},
            doc="found_out[0]: -1 when the graph on non-terminal states is acyclic, else a state "
            "on a cycle; work: 3 S",
        ),
        _kernel(
            "token_mdp_policy_sweeps",
            (*_TOKEN, _POLICY, _GAMMA, _K, _values("v"), _values("v_tmp")),
            doc="v <- T_pi^k v in place (k synchronous sweeps)",
        ),
        _kernel(
            "token_mdp_policy_value",
            (*_TOKEN, _POLICY, _GAMMA, _values("v_out"), _int64_out("work")),
            doc="exact v_pi on the functional graph; work: 2 S",
        ),
        _kernel(
            "token_mdp_value_iteration",
            (*_TOKEN_NO_POLICY, _GAMMA, _TOL, _MAX_ITER, *_VI_OUT),
            results=_INFO,
        ),
    ),
)


def _finish(status: int, kernel: str, args: tuple[Any, ...]) -> None:
    """The error of a kernel's status (no-op for 0), through the contract of ``kernel``."""
    CONTRACT[kernel].raise_for_call(status, args)


# ---------------------------------------------------------------------------------------------
# MDP descriptions


class TokenMDP:
    r"""A finite MDP with deterministic transitions (the token MDP: context = state, token =
    action).

    Parameters
    ----------
    next_state : (S, A) integer array
        ``next_state[s, a]`` is the context reached by emitting token ``a`` in context ``s``; ids
        in [0, S) for every non-terminal ``s``.  Kept as int32 or int64 (other integer dtypes
        become int64).
    reward : (S, A) real array
        ``reward[s, a]`` = :math:`r(s,a)`, the reward of that transition (S&B eq. 3.5); finite
        for every non-terminal ``s``.  Kept as float32 or float64 (other real dtypes become
        float64).
    terminal : (S,) bool array or None
        Terminal (end-of-sequence) contexts: value 0, their rows are never read.  None: no
        terminal state.

    The arrays are stored as given when they are C-contiguous with a supported dtype (otherwise
    as converted copies); do not modify them afterwards (the kernels re-check ids and rewards).
    """

    layout = "token"

    def __init__(self, next_state, reward, terminal=None):
        next_state = _id_table(next_state, "next_state")
        n_states, n_actions = next_state.shape
        reward = _real_table(reward, "reward", (n_states, n_actions))
        if terminal is None:
            terminal = np.zeros(n_states, dtype=np.bool_)
        else:
            terminal = check.flags(terminal, "terminal", n_states).view(np.bool_)
        _check_next_state(next_state, terminal)
        _check_finite(reward, "reward", ~terminal)
        self.next_state = next_state
        self.reward = reward
        self.terminal = terminal

    @property
    def num_states(self) -> int:
        return self.next_state.shape[0]

    @property
    def num_actions(self) -> int:
        return self.next_state.shape[1]

    @property
    def dtype(self) -> np.dtype:
        """The reward table's dtype (float32 or float64)."""
        return self.reward.dtype

    def to_dense(self) -> DenseMDP:
        """The same MDP in the dense layout: ``P[s, a, next_state[s, a]] = 1``; a terminal state
        becomes absorbing (``P[s, a, s] = 1``) with reward 0, so every value is unchanged."""
        n_states, n_actions = self.next_state.shape
        live = ~self.terminal
        P = np.zeros((n_states, n_actions, n_states), dtype=self.dtype)
        s_idx, a_idx = np.nonzero(np.broadcast_to(live[:, None], (n_states, n_actions)))
        P[s_idx, a_idx, self.next_state[s_idx, a_idx]] = 1
        dead = np.flatnonzero(self.terminal)
        P[dead, :, dead] = 1
        R = np.where(live[:, None], self.reward, 0).astype(self.dtype)
        return DenseMDP(P, R)

    def __repr__(self) -> str:
        return (
            f"TokenMDP(num_states={self.num_states}, num_actions={self.num_actions}, "
            f"terminal={int(self.terminal.sum())}, dtype={self.dtype})"
        )


class DenseMDP:
    r"""A finite MDP with a dense transition array.

    Parameters
    ----------
    P : (S, A, S) real array
        ``P[s, a, t]`` = :math:`p(t \mid s, a)`: finite, nonnegative, and each row ``P[s, a]`` sums
        to 1 within :func:`row_sum_tolerance` of the dtype ``P`` is given in:
        ``max(ROW_SUM_ATOL, 4·S·eps)`` (1e-4 for float32, 1e-8 for float64 up to S of about
        10**7; the rows are used as given, not renormalised).
    R : (S, A) real array
        ``R[s, a]`` = :math:`r(s,a)`, the expected reward (S&B eq. 3.5); finite.

    Both are kept in one dtype: float32 when both are float32, else float64.
    """

    layout = "dense"

    def __init__(self, P, R):
        P = np.asarray(P)
        if P.dtype.kind not in "biuf":
            raise TypeError(f"P must hold real numbers, got dtype {P.dtype}")
        if P.ndim != 3 or P.shape[0] != P.shape[2]:
            raise ValueError(f"P must have shape (S, A, S), got {P.shape}")
        if 0 in P.shape:
            raise ValueError(f"P must not have an empty axis, got shape {P.shape}")
        R = np.asarray(R)
        if R.dtype.kind not in "biuf":
            raise TypeError(f"R must hold real numbers, got dtype {R.dtype}")
        if R.shape != P.shape[:2]:
            raise ValueError(f"R must have shape {P.shape[:2]}, got {R.shape}")
        dtype = np.float32 if P.dtype == np.float32 and R.dtype == np.float32 else np.float64
        atol = row_sum_tolerance(P.dtype, P.shape[2])
        P = check.kernel_input(np.ascontiguousarray(P, dtype=dtype))
        R = check.kernel_input(np.ascontiguousarray(R, dtype=dtype))
        _check_finite(P, "P")
        if (P < 0).any():
            idx = _first_index(P < 0)
            raise ValueError(f"P[{_where(idx)}] = {P[idx]} is negative")
        sums = P.sum(axis=2, dtype=np.float64)
        bad = ~(np.abs(sums - 1.0) <= atol)
        if bad.any():
            idx = _first_index(bad)
            raise ValueError(f"P[{_where(idx)}, :] sums to {sums[idx]!r}, not 1 (tolerance {atol})")
        _check_finite(R, "R")
        self.P = P
        self.R = R

    @property
    def num_states(self) -> int:
        return self.R.shape[0]

    @property
    def num_actions(self) -> int:
        return self.R.shape[1]

    @property
    def dtype(self) -> np.dtype:
        return self.R.dtype

    def __repr__(self) -> str:
        return (
            f"DenseMDP(num_states={self.num_states}, num_actions={self.num_actions}, "
            f"dtype={self.dtype})"
        )


@dataclass(frozen=True, eq=False)
class DPResult:
    r"""The result of a solver (cf. QuantEcon's ``DPSolveResult``).

    Attributes
    ----------
    values : (S,) float64 — the value estimate (see each solver for its guarantee).
    policy : (S,) int64 — the greedy / final policy, one action per state.
    num_iter : int — iterations done (sweeps of T for VI, improvement steps for PI and MPI).
    converged : bool — the stopping rule was met within ``max_iter``.
    method : str — 'value iteration', 'policy iteration' or 'modified policy iteration'.
    gamma, max_iter, epsilon (None for PI), k (MPI only) — the settings used.
    q : (S, A) float64, computed on first access — the action values of ``values``,
        :math:`q(s,a) = r(s,a) + \gamma \sum_{s'} p(s'|s,a) v(s')`, so ``policy`` is its row argmax.
    mdp : TokenMDP or DenseMDP — the MDP that was solved (``q`` is computed from it).
    """

    values: np.ndarray
    policy: np.ndarray
    num_iter: int
    converged: bool
    method: str
    gamma: float
    max_iter: int
    epsilon: float | None = None
    k: int | None = None
    mdp: object = field(default=None, repr=False)

    @cached_property
    def q(self) -> np.ndarray:
        return action_values(self.mdp, self.values, self.gamma)


# ---------------------------------------------------------------------------------------------
# validation helpers


def _mdp(mdp):
    """The MDP, after an O(1) check that its arrays still have the types, dtypes and shapes its
    constructor gave them (an attribute replaced afterwards gets a ValueError naming it, not an
    IndexError or a Numba TypingError; the kernels re-check the ids and rewards themselves)."""
    if isinstance(mdp, TokenMDP):
        next_state = mdp.next_state
        _stored(next_state, "next_state", check.INDEX_DTYPES, None)
        shape = next_state.shape
        if len(shape) != 2 or 0 in shape:
            raise ValueError(
                f"mdp.next_state must have shape (S, A) with S, A >= 1, got {shape}"
                "; build a new TokenMDP"
            )
        _stored(mdp.reward, "reward", check.FLOAT_DTYPES, shape)
        _stored(mdp.terminal, "terminal", (np.dtype(np.bool_),), shape[:1])
        return mdp
    if isinstance(mdp, DenseMDP):
        R = mdp.R
        _stored(R, "R", check.FLOAT_DTYPES, None)
        if R.ndim != 2 or 0 in R.shape:
            raise ValueError(
                f"mdp.R must have shape (S, A) with S, A >= 1, got {R.shape}; build a new DenseMDP"
            )
        _stored(mdp.P, "P", (R.dtype,), R.shape + R.shape[:1])
        return mdp
    raise TypeError(f"mdp must be a TokenMDP or a DenseMDP, got {type(mdp).__name__}")


def _stored(arr, name: str, dtypes, shape) -> None:
    if not isinstance(arr, np.ndarray):
        raise TypeError(
            f"mdp.{name} must be a numpy.ndarray (as the constructor stored it), "
            f"got {type(arr).__name__}; build a new MDP instead of replacing it"
        )
    if arr.dtype not in dtypes or not arr.flags.c_contiguous:
        raise TypeError(
            f"mdp.{name} must be a C-contiguous array of dtype "
            f"{' or '.join(str(d) for d in dtypes)} (as the constructor stored it), "
            f"got {arr.dtype}; build a new MDP instead of replacing it"
        )
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(
            f"mdp.{name} must have shape {tuple(shape)}, got {arr.shape}; "
            "build a new MDP instead of replacing it"
        )


def _first_cyclic_state(next_state: np.ndarray, terminal: np.ndarray):
    """None when the graph s -> next_state[s, a] on non-terminal states is acyclic, else a state on
    a cycle (the kernel's depth-first search, O(S A))."""
    n_states = next_state.shape[0]
    found = np.full(1, -1, dtype=np.int64)
    work = np.empty(3 * n_states, dtype=np.int64)
    args = (next_state, terminal.view(np.uint8), found, work)
    _finish(_kernels.token_mdp_find_cycle(*args), "token_mdp_find_cycle", args)
    result: Any = CONTRACT["token_mdp_find_cycle"].read_results("found_out", found)
    state = result.state
    return None if state < 0 else int(state)


def _gamma(mdp, gamma, policy=None) -> float:
    gamma = check.real(gamma, "gamma", 0.0, 1.0)
    if gamma == 1.0:
        if isinstance(mdp, DenseMDP):
            raise ValueError(
                "gamma == 1 is not supported for a DenseMDP (no terminal states: the values of an "
                "undiscounted infinite horizon can be infinite); use gamma < 1, or a TokenMDP with "
                "terminal states"
            )
        table = mdp.next_state
        if policy is not None:
            table = np.take_along_axis(table, policy[:, None], axis=1)
        s = _first_cyclic_state(table, mdp.terminal)
        if s is not None:
            what = (
                "under this policy (its graph"
                if policy is not None
                else "whatever the actions (the transition graph"
            )
            raise ValueError(
                f"gamma == 1 requires every state to reach a terminal state {what} on non-terminal "
                f"states must be acyclic); state {s} lies on a cycle; use gamma < 1"
            )
    return gamma


def _state_values(x, name: str, mdp) -> np.ndarray:
    """A finite (S,) float64 copy; entries of terminal states are set to 0."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.shape != (mdp.num_states,):
        raise ValueError(f"{name} must have shape ({mdp.num_states},), got {arr.shape}")
    v = np.array(arr, dtype=np.float64, order="C")
    bad = np.flatnonzero(~np.isfinite(v))
    if bad.size:
        raise ValueError(f"{name}[{int(bad[0])}] = {v[bad[0]]} is not finite")
    if isinstance(mdp, TokenMDP):
        v[mdp.terminal] = 0.0
    return v


def _policy(x, mdp) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"policy must hold integer action ids, got dtype {arr.dtype}")
    if arr.shape != (mdp.num_states,):
        raise ValueError(f"policy must have shape ({mdp.num_states},), got {arr.shape}")
    bad = (arr < 0) | (arr >= mdp.num_actions)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"policy[{i}] = {int(arr[i])} is out of range [0, {mdp.num_actions})")
    return check.kernel_input(np.ascontiguousarray(arr, dtype=np.int64))


def _default_values(mdp) -> np.ndarray:
    """QuantEcon's start for VI and PI: v0(s) = max_a r(s,a) (0 for a terminal state)."""
    if isinstance(mdp, TokenMDP):
        v = np.zeros(mdp.num_states)
        live = ~mdp.terminal
        v[live] = mdp.reward[live].max(axis=1)
        return v
    return mdp.R.max(axis=1).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# dispatch to the kernels


def _backup(mdp, gamma, v, v_out, policy_out) -> None:
    args: tuple[Any, ...]
    if isinstance(mdp, TokenMDP):
        terminal = mdp.terminal.view(np.uint8)
        args = (mdp.next_state, mdp.reward, terminal, gamma, v, v_out, policy_out)
        _finish(_kernels.token_mdp_bellman_backup(*args), "token_mdp_bellman_backup", args)
    else:
        args = (mdp.P, mdp.R, gamma, v, v_out, policy_out)
        _finish(_kernels.dense_mdp_bellman_backup(*args), "dense_mdp_bellman_backup", args)


def _policy_sweeps(mdp, policy, gamma, k, v, v_tmp) -> None:
    args: tuple[Any, ...]
    if isinstance(mdp, TokenMDP):
        terminal = mdp.terminal.view(np.uint8)
        args = (mdp.next_state, mdp.reward, terminal, policy, gamma, k, v, v_tmp)
        _finish(_kernels.token_mdp_policy_sweeps(*args), "token_mdp_policy_sweeps", args)
    else:
        args = (mdp.P, mdp.R, policy, gamma, k, v, v_tmp)
        _finish(_kernels.dense_mdp_policy_sweeps(*args), "dense_mdp_policy_sweeps", args)


def _policy_value(mdp, policy, gamma) -> np.ndarray:
    """Exact v_pi (policy already checked; gamma == 1 only when the policy graph is acyclic)."""
    n_states = mdp.num_states
    if isinstance(mdp, TokenMDP):
        v = np.empty(n_states)
        work = np.empty(2 * n_states, dtype=np.int64)
        args = (mdp.next_state, mdp.reward, mdp.terminal.view(np.uint8), policy, gamma, v, work)
        _finish(_kernels.token_mdp_policy_value(*args), "token_mdp_policy_value", args)
        return v
    rows = np.arange(n_states)
    P_pi = mdp.P[rows, policy].astype(np.float64)
    r_pi = mdp.R[rows, policy].astype(np.float64)
    return np.linalg.solve(np.eye(n_states) - gamma * P_pi, r_pi)


# ---------------------------------------------------------------------------------------------
# single operators


def bellman_backup(mdp, values, gamma: float):
    r"""One Bellman optimality backup (S&B eq. 4.10): :math:`(Tv)(s) = \max_a q(s,a)`.

    Returns ``(Tv, policy)``: float64 (S,) and the greedy policy (int64 (S,), ties to the lowest
    action; 0 and value 0 for a terminal state).  ``values`` (S,) is finite; ``gamma`` ∈ [0, 1].
    """
    mdp = _mdp(mdp)
    gamma = check.real(gamma, "gamma", 0.0, 1.0)
    v = _state_values(values, "values", mdp)
    out = np.empty(mdp.num_states)
    policy = np.empty(mdp.num_states, dtype=np.int64)
    _backup(mdp, gamma, v, out, policy)
    return out, policy


def action_values(mdp, values, gamma: float) -> np.ndarray:
    r"""Action values of ``values``: :math:`q(s,a) = r(s,a) + \gamma \sum_{s'} p(s'|s,a)\,v(s')`
    (S&B eq. 4.6 with :math:`v` in place of :math:`v_\pi`); float64 (S, A), terminal rows 0.
    """
    mdp = _mdp(mdp)
    gamma = check.real(gamma, "gamma", 0.0, 1.0)
    v = _state_values(values, "values", mdp)
    q = np.empty((mdp.num_states, mdp.num_actions))
    args: tuple[Any, ...]
    if isinstance(mdp, TokenMDP):
        args = (mdp.next_state, mdp.reward, mdp.terminal.view(np.uint8), gamma, v, q)
        _finish(_kernels.token_mdp_action_values(*args), "token_mdp_action_values", args)
    else:
        args = (mdp.P, mdp.R, gamma, v, q)
        _finish(_kernels.dense_mdp_action_values(*args), "dense_mdp_action_values", args)
    return q


def evaluate_policy(mdp, policy, gamma: float) -> np.ndarray:
    r"""Exact value of a deterministic policy: the solution of :math:`v = r_\pi + \gamma P_\pi v`
    (S&B eq. 4.4; Puterman eq. 6.2.10), float64 (S,).

    Dense layout: ``numpy.linalg.solve`` of :math:`(I - \gamma P_\pi) v = r_\pi`.  Token layout:
    O(S) on the functional graph :math:`s \to` ``next_state[s, policy[s]]`` — each path is
    followed to a terminal state (value 0), a solved state or a cycle
    :math:`c_0 \to \dots \to c_{L-1} \to c_0` solved in closed form
    :math:`v(c_0) = \sum_{j<L} \gamma^j r(c_j) / (1 - \gamma^L)`, then unwound with
    :math:`v(s) = r(s) + \gamma v(\text{next})`.  ``gamma == 1`` needs a TokenMDP whose policy
    graph reaches a terminal state from every state.
    """
    mdp = _mdp(mdp)
    policy = _policy(policy, mdp)
    gamma = _gamma(mdp, gamma, policy)
    return _policy_value(mdp, policy, gamma)


# ---------------------------------------------------------------------------------------------
# solvers


def _solver_args(mdp, gamma, max_iter):
    mdp = _mdp(mdp)
    gamma = _gamma(mdp, gamma)
    max_iter = check.iterations(max_iter, "max_iter", 1)  # below 2**31
    return mdp, gamma, max_iter


def value_iteration(
    mdp, gamma: float, *, epsilon: float = 1e-6, max_iter: int = 10_000, v_init=None
) -> DPResult:
    r"""Value iteration (S&B §4.4, eq. 4.10; Puterman §6.3, Algorithm 6.3.1).

    :math:`v_{k+1} = T v_k` (synchronous sweeps, one full sweep per iteration), from ``v_init``
    (default QuantEcon's :math:`v_0(s) = \max_a r(s,a)`; entries of terminal states are taken as
    0), until

    .. math::  \lVert v_{k+1} - v_k \rVert_\infty < \varepsilon\,(1-\gamma) / (2\gamma)

    (the sup norm, as QuantEcon and Puterman Thm 6.3.1: then
    :math:`\lVert v_{k+1} - v^* \rVert_\infty < \varepsilon/2` and the greedy policy of
    :math:`v_{k+1}` is ε-optimal; the span would need a correction of the values).  ``gamma == 0``
    stops after one sweep.  ``gamma == 1`` (acyclic TokenMDP only) stops when a sweep changes
    nothing, :math:`v_{k+1} = v_k` exactly, which happens after at most H + 1 sweeps (H = the
    longest path to a terminal state): the values are then exact (backward induction), whereas a
    threshold ε could stop with an error up to H·ε.  Any exact fixed point also stops the loop.

    The loop runs inside the kernel.  Returns a :class:`DPResult` with ``values`` =
    :math:`v_{k+1}`, ``policy`` its greedy policy (one more sweep), ``num_iter`` = k+1 sweeps.
    """
    mdp, gamma, max_iter = _solver_args(mdp, gamma, max_iter)
    epsilon = check.real(epsilon, "epsilon", 0.0, None, low_open=True)
    v = _default_values(mdp) if v_init is None else _state_values(v_init, "v_init", mdp)
    if gamma == 0.0:
        tol = math.inf
    elif gamma == 1.0:
        tol = 0.0
    else:
        tol = epsilon * (1.0 - gamma) / (2.0 * gamma)
    n_states = mdp.num_states
    v_tmp = np.empty(n_states)
    policy = np.empty(n_states, dtype=np.int64)
    info = np.zeros(2, dtype=np.int64)
    args: tuple[Any, ...]
    if isinstance(mdp, TokenMDP):
        name = "token_mdp_value_iteration"
        terminal = mdp.terminal.view(np.uint8)
        args = (mdp.next_state, mdp.reward, terminal, gamma, tol, max_iter, v, v_tmp, policy, info)
        _finish(_kernels.token_mdp_value_iteration(*args), name, args)
    else:
        name = "dense_mdp_value_iteration"
        args = (mdp.P, mdp.R, gamma, tol, max_iter, v, v_tmp, policy, info)
        _finish(_kernels.dense_mdp_value_iteration(*args), name, args)
    done: Any = CONTRACT[name].read_results("info_out", info)
    return DPResult(
        values=v,
        policy=policy,
        num_iter=int(done.num_iter),
        converged=bool(done.converged),
        method="value iteration",
        gamma=gamma,
        max_iter=max_iter,
        epsilon=epsilon,
        mdp=mdp,
    )


def _stable(tv, v, tol) -> bool:
    """Puterman's stopping rule with a tolerance: the current policy pi is greedy for its own
    value v = v_pi when no action beats it by more than ``tol * max(1, max|Tv|, max|v|)``.  As
    v_pi is the fixed point of T_pi, q(s, pi(s)) = v(s) (to rounding), so the test reads
    max_s (Tv - v)(s) <= margin, with Tv = max_a q(s, a) from the backup kernel."""
    margin = tol * max(1.0, float(np.abs(tv).max(initial=0.0)), float(np.abs(v).max(initial=0.0)))
    return float((tv - v).max(initial=0.0)) <= margin


def policy_iteration(
    mdp, gamma: float, *, max_iter: int = 1_000, v_init=None, tol: float = 1e-10
) -> DPResult:
    r"""Howard's policy iteration (S&B §4.3; Puterman §6.4, Algorithm 6.4.1; QuantEcon).

    :math:`\pi_0` = greedy policy of ``v_init`` (default :math:`\max_a r(s,a)`; ties to the
    lowest action); then repeat: exact evaluation :math:`v_{\pi_n}` (see :func:`evaluate_policy`:
    ``numpy.linalg.solve`` for the dense layout, an O(S) functional-graph solve for the token
    layout), and improvement with Puterman's rule "set :math:`\pi_{n+1}(s) = \pi_n(s)` if
    possible": when in every state :math:`\pi_n(s)` maximises :math:`q_{\pi_n}(s, \cdot)`,
    the policy is stable, hence optimal, and the loop stops; otherwise
    :math:`\pi_{n+1}` is the greedy policy of :math:`v_{\pi_n}` (ties to the lowest action).
    "Maximises" allows a tolerance: since :math:`q(s, \pi_n(s)) = v_{\pi_n}(s)`, the test is
    :math:`\max_s (T v_{\pi_n} - v_{\pi_n})(s) \le` ``tol`` · max(1, max|T v|, max|v|),
    because actions that tie in exact arithmetic (e.g. the symmetric moves of Gymnasium's
    FrozenLake) differ by rounding in the evaluated values, and a policy compared exactly would
    flip between them forever.  Every policy change improves some action value by more than that
    margin, so the loop ends; the returned policy is optimal up to
    ``tol * max(1, max|v|) / (1 - gamma)``.  ``num_iter`` counts the evaluations.  ``values`` is
    the exact value of ``policy`` (also when ``converged`` is False: then ``policy`` is the last
    evaluated one).  ``tol`` >= 0 (0: exact comparisons).
    """
    mdp, gamma, max_iter = _solver_args(mdp, gamma, max_iter)
    tol = check.real(tol, "tol", 0.0, None)
    v = _default_values(mdp) if v_init is None else _state_values(v_init, "v_init", mdp)
    n_states = mdp.num_states
    scratch = np.empty(n_states)
    policy = np.empty(n_states, dtype=np.int64)
    new_policy = np.empty(n_states, dtype=np.int64)
    _backup(mdp, gamma, v, scratch, policy)
    converged = False
    for i in range(max_iter):
        v = _policy_value(mdp, policy, gamma)
        _backup(mdp, gamma, v, scratch, new_policy)  # T v_pi and its greedy policy
        if np.array_equal(new_policy, policy) or _stable(scratch, v, tol):
            converged = True
            break
        if i + 1 < max_iter:
            policy, new_policy = new_policy, policy
    return DPResult(
        values=v,
        policy=policy,
        num_iter=i + 1,
        converged=converged,
        method="policy iteration",
        gamma=gamma,
        max_iter=max_iter,
        mdp=mdp,
    )


def modified_policy_iteration(
    mdp, gamma: float, *, epsilon: float = 1e-6, k: int = 20, max_iter: int = 10_000, v_init=None
) -> DPResult:
    r"""Modified policy iteration (Puterman §6.5, Algorithm 6.5.1; QuantEcon's span-based version).

    From :math:`v_0` = ``v_init`` (default QuantEcon's :math:`\min_{s,a} r(s,a) / (1-\gamma)` on
    every state, with the minimum taken together with 0 — the reward of the absorbing terminal
    states — when the TokenMDP has terminal states; this makes :math:`T v_0 \ge v_0`, Puterman's
    condition for monotone convergence; 0 when ``gamma == 1``), repeat

    1. improvement: :math:`u = T v_n`, :math:`\sigma = \sigma_{v_n}` (greedy, ties to the lowest);
    2. stop if :math:`\operatorname{span}(u - v_n) < \varepsilon(1-\gamma)/\gamma` (span =
       max − min), returning :math:`u + \tfrac{\gamma}{1-\gamma}\,\operatorname{mid}(u - v_n)`
       (mid = (max + min)/2; by Puterman Prop. 6.6.5 within ε/2 of :math:`v^*` in sup norm;
       the shift is not applied to terminal states, whose value is exactly 0) and :math:`\sigma`;
    3. partial evaluation: :math:`v_{n+1} = T_\sigma^k u` (k synchronous sweeps of
       :math:`T_\sigma v = r_\sigma + \gamma P_\sigma v`, S&B eq. 4.5).

    ``k = 0`` is value iteration with the span rule; large ``k`` approaches policy iteration.
    ``gamma == 0`` stops at the first step; ``gamma == 1`` (acyclic TokenMDP only) stops when
    :math:`u = v_n` exactly.  ``num_iter`` counts improvement steps.
    """
    mdp, gamma, max_iter = _solver_args(mdp, gamma, max_iter)
    epsilon = check.real(epsilon, "epsilon", 0.0, None, low_open=True)
    k = check.iterations(k, "k", 0)  # sweeps per evaluation: below 2**31
    token = isinstance(mdp, TokenMDP)
    n_states = mdp.num_states
    if v_init is not None:
        v = _state_values(v_init, "v_init", mdp)
    elif gamma == 1.0:
        v = np.zeros(n_states)
    else:
        if token:
            live = ~mdp.terminal
            low = float(mdp.reward[live].min()) if live.any() else 0.0
            if not live.all():
                low = min(low, 0.0)
        else:
            low = float(mdp.R.min())
        v = np.full(n_states, low / (1.0 - gamma))
        if token:
            v[mdp.terminal] = 0.0
    if gamma == 0.0:
        tol = math.inf
    elif gamma == 1.0:
        tol = 0.0
    else:
        tol = epsilon * (1.0 - gamma) / gamma
    u = np.empty(n_states)
    v_tmp = np.empty(n_states)
    policy = np.empty(n_states, dtype=np.int64)
    converged = False
    num_iter = 0
    for _ in range(max_iter):
        num_iter += 1  # improvement steps done
        _backup(mdp, gamma, v, u, policy)
        diff = u - v
        low, high = float(diff.min()), float(diff.max())
        span = high - low
        if span < tol or span == 0.0:
            converged = True
            if gamma < 1.0:
                shift = (low + high) / 2.0 * gamma / (1.0 - gamma)
                if token:
                    u[~mdp.terminal] += shift
                else:
                    u += shift
            v = u
            break
        _policy_sweeps(mdp, policy, gamma, k, u, v_tmp)
        v, u = u, v
    return DPResult(
        values=v,
        policy=policy,
        num_iter=num_iter,
        converged=converged,
        method="modified policy iteration",
        gamma=gamma,
        max_iter=max_iter,
        epsilon=epsilon,
        k=k,
        mdp=mdp,
    )
