"""Numba temporal-difference updates (same semantics, same rounding as the reference)."""

__all__ = [
    "double_q_learning_update",
    "expected_sarsa_update",
    "q_learning_update",
    "q_learning_update_one",
    "sarsa_update",
]
import numpy as np
from numba import njit, types
from numba.core.errors import TypingError
from numba.extending import overload

# The codes these kernels return (plain ints: Numba globals; the contract is
# fastlmrl.td_learning.CONTRACT).
from .._status import (
    BAD_ACTIONS,
    BAD_ALPHA,  # alpha outside (0, 1] (or NaN)
    BAD_EPSILON,  # expected SARSA: epsilon outside [0, 1]
    BAD_GAMMA,  # gamma outside [0, 1]
    BAD_NEXT_ACTIONS,
    BAD_NEXT_STATES,
    BAD_REWARDS,
    BAD_SHAPES,
    BAD_STATES,
    OVERLAPPING_ARRAYS,
)
from ._common import NJIT, out_of_range, row_argmax, row_max, uniform
from .overlap import overlap, written_overlaps  # noqa: F401 - re-exported for older imports


@njit(**NJIT)
def _shapes_ok(q, q2, states, actions, rewards, next_states, next_actions, terminated, td_out):
    """The shape check (first): q2 of q's shape, every per-transition array of states' length N.
    A kernel without a second table (next actions) passes q (states) again."""
    n = states.shape[0]
    return (
        q2.shape == q.shape
        and actions.shape[0] == n
        and rewards.shape[0] == n
        and next_states.shape[0] == n
        and next_actions.shape[0] == n
        and terminated.shape[0] == n
        and td_out.shape[0] == n
    )


@njit(**NJIT)
def _batch_overlaps(q, q2, states, actions, rewards, next_states, next_actions, terminated, td_out):
    """Written arrays (q, q2 -- empty when there is one table -- and td_out) sharing memory with
    each other or with an input."""
    return (
        written_overlaps(q, q2, states, actions, rewards, next_states, next_actions, terminated)
        or written_overlaps(
            q2, states, actions, rewards, next_states, next_actions, terminated, td_out
        )
        or written_overlaps(
            td_out, q, states, actions, rewards, next_states, next_actions, terminated
        )
    )


@njit(**NJIT)
def rates_status(alpha, gamma, epsilon):
    """The step size, discount (and epsilon) a kernel is given, checked like the public API."""
    if not (alpha > 0.0 and alpha <= 1.0):
        return BAD_ALPHA
    if not (gamma >= 0.0 and gamma <= 1.0):
        return BAD_GAMMA
    if not (epsilon >= 0.0 and epsilon <= 1.0):
        return BAD_EPSILON
    return 0


@njit(**NJIT)
def _check(q, states, actions, rewards, next_states, next_actions):
    """0, or the status code of the first bad argument (see fastlmrl._status).

    One branch-free pass over the batch; only a failing batch pays for finding which argument.
    """
    n_states, n_actions = q.shape
    ok = True
    for i in range(states.shape[0]):
        ok &= (
            (states[i] >= 0)
            & (states[i] < n_states)
            & (actions[i] >= 0)
            & (actions[i] < n_actions)
            & (next_states[i] >= 0)
            & (next_states[i] < n_states)
            & np.isfinite(rewards[i])
        )
    for i in range(next_actions.shape[0]):
        ok &= (next_actions[i] >= 0) & (next_actions[i] < n_actions)
    if ok:
        return 0
    if out_of_range(states, n_states):
        return BAD_STATES
    if out_of_range(actions, n_actions):
        return BAD_ACTIONS
    if out_of_range(next_states, n_states):
        return BAD_NEXT_STATES
    if out_of_range(next_actions, n_actions):
        return BAD_NEXT_ACTIONS
    return BAD_REWARDS


@njit(**NJIT)
def _q_learning_loop(q, states, actions, rewards, next_states, terminated, alpha, gamma, td_out):
    for i in range(states.shape[0]):
        s = np.uint64(states[i])  # checked: unsigned indexing skips the wraparound test
        a = np.uint64(actions[i])
        q_sa = np.float64(q[s, a])
        target = np.float64(rewards[i])
        if not terminated[i]:
            target = target + gamma * row_max(q, np.uint64(next_states[i]))
        td = target - q_sa
        q[s, a] = q_sa + alpha * td
        td_out[i] = td


@njit(**NJIT)
def q_learning_update(q, states, actions, rewards, next_states, terminated, alpha, gamma, td_out):
    if not _shapes_ok(q, q, states, actions, rewards, next_states, states, terminated, td_out):
        return BAD_SHAPES
    if _batch_overlaps(
        q, q[:0], states, actions, rewards, next_states, states[:0], terminated, td_out
    ):
        return OVERLAPPING_ARRAYS
    status = rates_status(alpha, gamma, 0.0)
    if status != 0:
        return status
    status = _check(q, states, actions, rewards, next_states, states[:0])
    if status == 0:
        _q_learning_loop(q, states, actions, rewards, next_states, terminated, alpha, gamma, td_out)
    return status


def as_table_dtype(q, x):
    """``x`` rounded to the dtype of the table ``q`` (float32 or float64), as a float64."""
    return np.float64(q.dtype.type(x))


@overload(as_table_dtype)
def _as_table_dtype_overload(q, x):
    if q.dtype == types.float32:
        return lambda q, x: np.float64(np.float32(x))
    return lambda q, x: np.float64(x)


def integer_id(x):
    """``x`` itself; a non-integer id is a compile-time TypingError (never truncated)."""
    return x


@overload(integer_id)
def _integer_id_overload(x):
    if isinstance(x, types.Integer):
        return lambda x: x
    raise TypingError(f"ids must be integers, got {x}")


@njit(**NJIT)
def q_learning_update_one(q, state, action, reward, next_state, terminated, alpha, gamma):
    """One transition: ``q_learning_update`` of a batch of one, with O(1) checks (for a user's
    ``@njit`` loop; no arrays to allocate).

    Returns ``(status, td)``: td is the TD error rounded to the table's dtype (what the batched
    kernel stores in ``td_out``), 0.0 when the status is not 0.  ``reward`` is rounded to the
    table's dtype first (the public API converts rewards to it).  Checks, in order: alpha
    (BAD_ALPHA), gamma (BAD_GAMMA), state (BAD_STATES), action (BAD_ACTIONS), next_state
    (BAD_NEXT_STATES), reward (BAD_REWARDS); nothing is written unless all pass.
    """
    status = rates_status(alpha, gamma, 0.0)
    if status != 0:
        return status, 0.0
    n_states, n_actions = q.shape
    state, action, next_state = integer_id(state), integer_id(action), integer_id(next_state)
    if not (state >= 0 and state < n_states):
        return BAD_STATES, 0.0
    if not (action >= 0 and action < n_actions):
        return BAD_ACTIONS, 0.0
    if not (next_state >= 0 and next_state < n_states):
        return BAD_NEXT_STATES, 0.0
    r = as_table_dtype(q, reward)
    if not np.isfinite(r):
        return BAD_REWARDS, 0.0
    s = np.uint64(state)  # checked: unsigned indexing skips the wraparound test
    a = np.uint64(action)
    q_sa = np.float64(q[s, a])
    target = r
    if not terminated:
        target = target + gamma * row_max(q, np.uint64(next_state))
    td = target - q_sa
    q[s, a] = q_sa + alpha * td
    return 0, as_table_dtype(q, td)


@njit(**NJIT)
def sarsa_update(
    q, states, actions, rewards, next_states, next_actions, terminated, alpha, gamma, td_out
):
    if not _shapes_ok(
        q, q, states, actions, rewards, next_states, next_actions, terminated, td_out
    ):
        return BAD_SHAPES
    if _batch_overlaps(
        q, q[:0], states, actions, rewards, next_states, next_actions, terminated, td_out
    ):
        return OVERLAPPING_ARRAYS
    status = rates_status(alpha, gamma, 0.0)
    if status != 0:
        return status
    status = _check(q, states, actions, rewards, next_states, next_actions)
    if status != 0:
        return status
    for i in range(states.shape[0]):
        s = np.uint64(states[i])  # checked above: unsigned indexing skips the wraparound test
        a = np.uint64(actions[i])
        q_sa = np.float64(q[s, a])
        target = np.float64(rewards[i])
        if not terminated[i]:
            target = target + gamma * np.float64(
                q[np.uint64(next_states[i]), np.uint64(next_actions[i])]
            )
        td = target - q_sa
        q[s, a] = q_sa + alpha * td
        td_out[i] = td
    return 0


@njit(**NJIT)
def expected_sarsa_update(
    q, states, actions, rewards, next_states, terminated, alpha, gamma, epsilon, td_out
):
    if not _shapes_ok(q, q, states, actions, rewards, next_states, states, terminated, td_out):
        return BAD_SHAPES
    if _batch_overlaps(
        q, q[:0], states, actions, rewards, next_states, states[:0], terminated, td_out
    ):
        return OVERLAPPING_ARRAYS
    status = rates_status(alpha, gamma, epsilon)
    if status != 0:
        return status
    status = _check(q, states, actions, rewards, next_states, states[:0])
    if status != 0:
        return status
    n_actions = q.shape[1]
    for i in range(states.shape[0]):
        s = np.uint64(states[i])  # checked above: unsigned indexing skips the wraparound test
        a = np.uint64(actions[i])
        q_sa = np.float64(q[s, a])
        target = np.float64(rewards[i])
        if not terminated[i]:
            s2 = np.uint64(next_states[i])
            total = 0.0
            for b in range(n_actions):
                total += q[s2, b]
            expectation = (1.0 - epsilon) * row_max(q, s2) + epsilon * (total / n_actions)
            target = target + gamma * expectation
        td = target - q_sa
        q[s, a] = q_sa + alpha * td
        td_out[i] = td
    return 0


@njit(**NJIT)
def _double_q_step(learner, evaluator, s, a, r, s2, terminal, alpha, gamma):
    q_sa = np.float64(learner[s, a])
    target = np.float64(r)
    if not terminal:
        target = target + gamma * np.float64(evaluator[s2, row_argmax(learner, s2)])
    td = target - q_sa
    learner[s, a] = q_sa + alpha * td
    return td


@njit(**NJIT)
def double_q_learning_update(
    q1, q2, states, actions, rewards, next_states, terminated, alpha, gamma, key, counter, td_out
):
    if not _shapes_ok(q1, q2, states, actions, rewards, next_states, states, terminated, td_out):
        return BAD_SHAPES
    if _batch_overlaps(
        q1, q2, states, actions, rewards, next_states, states[:0], terminated, td_out
    ):
        return OVERLAPPING_ARRAYS
    status = rates_status(alpha, gamma, 0.0)
    if status != 0:
        return status
    status = _check(q1, states, actions, rewards, next_states, states[:0])
    if status != 0:
        return status
    key = np.uint64(key)
    counter = np.uint64(counter)
    for i in range(states.shape[0]):
        if uniform(key, counter + np.uint64(i)) < 0.5:
            td = _double_q_step(
                q1,
                q2,
                states[i],
                actions[i],
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
                states[i],
                actions[i],
                rewards[i],
                next_states[i],
                terminated[i],
                alpha,
                gamma,
            )
        td_out[i] = td
    return 0
