"""Reference temporal-difference updates (plain Python).

Arithmetic is done in double precision on Python floats and each result is rounded once when it is
stored into the table (or ``td_out``); the compiled backends do exactly the same.
"""

__all__ = [
    "double_q_learning_update",
    "expected_sarsa_update",
    "q_learning_update",
    "q_learning_update_one",
    "sarsa_update",
]
from operator import index

# The codes these kernels return (fastlmrl._status.Status; the contract is
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
from ..rng import uniform
from ._common import all_finite, first_out_of_range, row_argmax, row_max, written_overlaps  # noqa: F401 - re-exported


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


def kernel_types(written=(), ids=()):
    """What the compiled kernels' signatures refuse at dispatch, refused here before anything is
    written (the reference reads its inputs through ``tolist()``, so it would otherwise accept
    them and fail half-way): a read-only array the kernel writes (ValueError), ids that are not
    integers (TypeError)."""
    for name, arr in written:
        if not arr.flags.writeable:
            raise ValueError(f"{name} is read-only but the kernel writes it")
    for name, arr in ids:
        if arr.dtype.kind not in "iu":
            raise TypeError(f"{name} must hold integer ids, got dtype {arr.dtype}")


def _batch_overlaps(tables, inputs, td_out):
    for k, w in enumerate(tables):
        if written_overlaps(w, *tables[k + 1 :], *inputs, td_out):
            return True
    return written_overlaps(td_out, *inputs)


def rates_status(alpha, gamma, epsilon=0.0):
    """The step size, discount (and epsilon) a kernel is given, checked like the public API."""
    if not 0.0 < alpha <= 1.0:
        return BAD_ALPHA
    if not 0.0 <= gamma <= 1.0:
        return BAD_GAMMA
    if not 0.0 <= epsilon <= 1.0:
        return BAD_EPSILON
    return 0


def _check(q, states, actions, rewards, next_states, next_actions=None):
    n_states, n_actions = q.shape
    if first_out_of_range(states, n_states):
        return BAD_STATES
    if first_out_of_range(actions, n_actions):
        return BAD_ACTIONS
    if first_out_of_range(next_states, n_states):
        return BAD_NEXT_STATES
    if next_actions is not None and first_out_of_range(next_actions, n_actions):
        return BAD_NEXT_ACTIONS
    if not all_finite(rewards):
        return BAD_REWARDS
    return 0


def q_learning_update(q, states, actions, rewards, next_states, terminated, alpha, gamma, td_out):
    kernel_types(
        (("q", q), ("td_out", td_out)),
        (("states", states), ("actions", actions), ("next_states", next_states)),
    )
    if not _shapes_ok(q, q, states, actions, rewards, next_states, states, terminated, td_out):
        return BAD_SHAPES
    if _batch_overlaps((q,), (states, actions, rewards, next_states, terminated), td_out):
        return OVERLAPPING_ARRAYS
    status = rates_status(alpha, gamma)
    if status:
        return status
    s_, a_, r_, n_, t_ = (x.tolist() for x in (states, actions, rewards, next_states, terminated))
    status = _check(q, s_, a_, r_, n_)
    if status:
        return status
    for i in range(len(s_)):
        s, a = s_[i], a_[i]
        q_sa = float(q[s, a])
        target = r_[i] if t_[i] else r_[i] + gamma * row_max(q[n_[i]].tolist())
        td = target - q_sa
        q[s, a] = q_sa + alpha * td
        td_out[i] = td
    return 0


def as_table_dtype(q, x: float) -> float:
    """``x`` rounded to the table's dtype (float32 or float64), as a Python float."""
    return float(q.dtype.type(x))


def q_learning_update_one(q, state, action, reward, next_state, terminated, alpha, gamma):
    """One transition: ``q_learning_update`` of a batch of one, with O(1) checks.

    Returns ``(status, td)``: td is the TD error rounded to the table's dtype (what the batched
    kernel stores in ``td_out``), 0.0 when the status is not 0.  ``reward`` is rounded to the
    table's dtype first (the public API converts rewards to it).  Checks, in order: alpha, gamma,
    state, action, next_state, reward; nothing is written unless all pass.
    """
    kernel_types((("q", q),), ())
    status = rates_status(alpha, gamma)
    if status:
        return status, 0.0
    n_states, n_actions = q.shape
    s, a, s2 = index(state), index(action), index(next_state)  # TypeError for a non-integer
    if not 0 <= s < n_states:
        return BAD_STATES, 0.0
    if not 0 <= a < n_actions:
        return BAD_ACTIONS, 0.0
    if not 0 <= s2 < n_states:
        return BAD_NEXT_STATES, 0.0
    r = as_table_dtype(q, reward)
    if not all_finite((r,)):
        return BAD_REWARDS, 0.0
    q_sa = float(q[s, a])
    target = r if terminated else r + gamma * row_max(q[s2].tolist())
    td = target - q_sa
    q[s, a] = q_sa + alpha * td
    return 0, as_table_dtype(q, td)


def sarsa_update(
    q, states, actions, rewards, next_states, next_actions, terminated, alpha, gamma, td_out
):
    kernel_types(
        (("q", q), ("td_out", td_out)),
        (
            ("states", states),
            ("actions", actions),
            ("next_states", next_states),
            ("next_actions", next_actions),
        ),
    )
    if not _shapes_ok(
        q, q, states, actions, rewards, next_states, next_actions, terminated, td_out
    ):
        return BAD_SHAPES
    if _batch_overlaps(
        (q,), (states, actions, rewards, next_states, next_actions, terminated), td_out
    ):
        return OVERLAPPING_ARRAYS
    status = rates_status(alpha, gamma)
    if status:
        return status
    s_, a_, r_, n_, b_, t_ = (
        x.tolist() for x in (states, actions, rewards, next_states, next_actions, terminated)
    )
    status = _check(q, s_, a_, r_, n_, b_)
    if status:
        return status
    for i in range(len(s_)):
        s, a = s_[i], a_[i]
        q_sa = float(q[s, a])
        target = r_[i] if t_[i] else r_[i] + gamma * float(q[n_[i], b_[i]])
        td = target - q_sa
        q[s, a] = q_sa + alpha * td
        td_out[i] = td
    return 0


def expected_sarsa_update(
    q, states, actions, rewards, next_states, terminated, alpha, gamma, epsilon, td_out
):
    kernel_types(
        (("q", q), ("td_out", td_out)),
        (("states", states), ("actions", actions), ("next_states", next_states)),
    )
    if not _shapes_ok(q, q, states, actions, rewards, next_states, states, terminated, td_out):
        return BAD_SHAPES
    if _batch_overlaps((q,), (states, actions, rewards, next_states, terminated), td_out):
        return OVERLAPPING_ARRAYS
    status = rates_status(alpha, gamma, epsilon)
    if status:
        return status
    s_, a_, r_, n_, t_ = (x.tolist() for x in (states, actions, rewards, next_states, terminated))
    status = _check(q, s_, a_, r_, n_)
    if status:
        return status
    n_actions = q.shape[1]
    for i in range(len(s_)):
        s, a = s_[i], a_[i]
        q_sa = float(q[s, a])
        if t_[i]:
            target = r_[i]
        else:
            row = q[n_[i]].tolist()
            total = 0.0
            for v in row:
                total += v
            expectation = (1.0 - epsilon) * row_max(row) + epsilon * (total / n_actions)
            target = r_[i] + gamma * expectation
        td = target - q_sa
        q[s, a] = q_sa + alpha * td
        td_out[i] = td
    return 0


def double_q_learning_update(
    q1, q2, states, actions, rewards, next_states, terminated, alpha, gamma, key, counter, td_out
):
    kernel_types(
        (("q1", q1), ("q2", q2), ("td_out", td_out)),
        (("states", states), ("actions", actions), ("next_states", next_states)),
    )
    if not _shapes_ok(q1, q2, states, actions, rewards, next_states, states, terminated, td_out):
        return BAD_SHAPES
    if _batch_overlaps((q1, q2), (states, actions, rewards, next_states, terminated), td_out):
        return OVERLAPPING_ARRAYS
    status = rates_status(alpha, gamma)
    if status:
        return status
    s_, a_, r_, n_, t_ = (x.tolist() for x in (states, actions, rewards, next_states, terminated))
    status = _check(q1, s_, a_, r_, n_)
    if status:
        return status
    key, counter = int(key), int(counter)
    for i in range(len(s_)):
        if uniform(key, counter + i) < 0.5:
            learner, evaluator = q1, q2
        else:
            learner, evaluator = q2, q1
        s, a = s_[i], a_[i]
        q_sa = float(learner[s, a])
        if t_[i]:
            target = r_[i]
        else:
            s2 = n_[i]
            best = row_argmax(learner[s2].tolist())
            target = r_[i] + gamma * float(evaluator[s2, best])
        td = target - q_sa
        learner[s, a] = q_sa + alpha * td
        td_out[i] = td
    return 0
