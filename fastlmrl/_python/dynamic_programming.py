"""Reference dynamic-programming kernels for finite MDPs (plain Python).

Two layouts (see :mod:`fastlmrl.dynamic_programming`):

* token / deterministic: ``next_state`` (S, A) ids, ``reward`` (S, A), ``terminal`` (S,) uint8.
  Rows of terminal states are never read: a terminal state has value 0, action values 0, policy 0.
* dense: ``P`` (S, A, S) with ``P[s, a, t]`` = p(t | s, a), ``R`` (S, A).

Values (``v``, ``v_out``, ``v_tmp``, ``q_out``) are float64 whatever the table dtype; every sum is
accumulated in float64 in the order written here (``t = 0 .. S-1``), and the compiled backends do
exactly the same, so their results are bit-identical.  Every kernel checks its arguments first and
returns a status code (``fastlmrl._status``) before writing anything:

* 2 (``actions``): an id of ``policy`` outside [0, A), or A == 0 with S > 0;
* 3 (``next_states``): a ``next_state`` entry of a non-terminal state outside [0, S);
* 5 (``rewards``): a non-finite ``reward`` entry of a non-terminal state (dense: of ``R``).

``token_mdp_find_cycle`` checks ``next_state`` only (code 3).  Before all of these, every kernel
checks that its arrays have the shapes it reads and writes (``reward`` (S, A), per-state arrays
(S,), ``q_out`` (S, A), ``P`` (S, A, S), ``work`` 2 S or 3 S, ``info_out`` >= 2, ``found_out``
>= 1) and returns 7 (``fastlmrl._status.BAD_SHAPES``) otherwise.
"""

import math

# the statuses these kernels return (fastlmrl._status.Status; plain ints)
from .._status import (
    BAD_ACTIONS,  # a policy id outside [0, A), or A == 0
    BAD_ITERATIONS,  # k or max_iter outside [0, 2**31 - 1]
    BAD_NEXT_STATES,  # a next_state id outside [0, S)
    BAD_REWARDS,  # a non-finite reward
    BAD_SHAPES,
    OVERLAPPING_ARRAYS,
)
from ._common import overlapping

MAX_ITERATIONS = 2**31 - 1

__all__ = [
    "dense_mdp_action_values",
    "dense_mdp_bellman_backup",
    "dense_mdp_policy_sweeps",
    "dense_mdp_value_iteration",
    "token_mdp_action_values",
    "token_mdp_bellman_backup",
    "token_mdp_find_cycle",
    "token_mdp_policy_sweeps",
    "token_mdp_policy_value",
    "token_mdp_value_iteration",
]


# ---------------------------------------------------------------------------------------------
# argument checks (pre-pass)


def _arrays_ok(vectors, outputs) -> bool:
    """The per-state arrays are 1-D (a (S, 1) array would pass the length checks and fail half-way
    through the update); an output that is read-only raises ValueError before anything is written,
    as the compiled kernels' typed signatures refuse it at the call."""
    for arr in vectors:
        if arr.ndim != 1:
            return False
    for name, arr in outputs.items():
        if not arr.flags.writeable:
            raise ValueError(f"{name} is read-only")
    return True


def _token_shapes_ok(next_state, reward, terminal, n1, n2, n3):
    """The shape check (first) of the token layout: ``reward`` of next_state's shape (S, A),
    ``terminal`` and the lengths n1..n3 of the kernel's per-state arrays S (a kernel with fewer
    per-state arrays passes a length again)."""
    n_states = next_state.shape[0]
    return (
        reward.shape == next_state.shape
        and terminal.shape == (n_states,)
        and n1 == n_states
        and n2 == n_states
        and n3 == n_states
    )


def _dense_shapes_ok(P, R, n1, n2, n3):
    """The shape check (first) of the dense layout: ``P`` (S, A, S) for ``R`` (S, A), and the
    lengths n1..n3 of the kernel's per-state arrays S."""
    n_states, n_actions = R.shape
    return (
        P.shape == (n_states, n_actions, n_states)
        and n1 == n_states
        and n2 == n_states
        and n3 == n_states
    )


def _check_token(next_state, reward, terminal, n_states, n_actions):
    if n_actions == 0:
        for s in range(n_states):
            if not terminal[s]:
                return BAD_ACTIONS
        return 0
    for s in range(n_states):
        if terminal[s]:
            continue
        for t in next_state[s]:
            if t < 0 or t >= n_states:
                return BAD_NEXT_STATES
    for s in range(n_states):
        if terminal[s]:
            continue
        for r in reward[s]:
            if not math.isfinite(r):
                return BAD_REWARDS
    return 0


def _check_dense(R, n_states, n_actions):
    if n_actions == 0 and n_states > 0:
        return BAD_ACTIONS
    for row in R:
        for r in row:
            if not math.isfinite(r):
                return BAD_REWARDS
    return 0


def _check_policy(policy, n_actions):
    for a in policy:
        if a < 0 or a >= n_actions:
            return BAD_ACTIONS
    return 0


def _token_lists(next_state, reward, terminal):
    return next_state.tolist(), reward.tolist(), terminal.tolist()


# ---------------------------------------------------------------------------------------------
# sweeps on lists (v: list of floats) -> (new values, greedy actions, sup-norm of the change)


def _token_sweep(ns, rw, term, gamma, v):
    new = [0.0] * len(v)
    pol = [0] * len(v)
    change = 0.0
    for s in range(len(v)):
        best = 0.0
        best_a = 0
        if not term[s]:
            row_n = ns[s]
            row_r = rw[s]
            best = row_r[0] + gamma * v[row_n[0]]
            for a in range(1, len(row_n)):
                q = row_r[a] + gamma * v[row_n[a]]
                if q > best:
                    best = q
                    best_a = a
        d = abs(best - v[s])
        if d > change:
            change = d
        new[s] = best
        pol[s] = best_a
    return new, pol, change


def _dense_q(P_sa, r, gamma, v):
    acc = 0.0
    for t in range(len(v)):
        acc += P_sa[t] * v[t]
    return r + gamma * acc


def _dense_sweep(P, R, gamma, v):
    new = [0.0] * len(v)
    pol = [0] * len(v)
    change = 0.0
    for s in range(len(v)):
        P_s = P[s]
        R_s = R[s]
        best = _dense_q(P_s[0], R_s[0], gamma, v)
        best_a = 0
        for a in range(1, len(R_s)):
            q = _dense_q(P_s[a], R_s[a], gamma, v)
            if q > best:
                best = q
                best_a = a
        d = abs(best - v[s])
        if d > change:
            change = d
        new[s] = best
        pol[s] = best_a
    return new, pol, change


def _value_iteration(sweep, gamma, tol, max_iter, v):
    """Shared VI loop: v_{k+1} = T v_k until ||v_{k+1} - v_k||_inf < tol (or == 0)."""
    n_iter = 0
    converged = 0
    for it in range(max_iter):
        v, _, change = sweep(gamma, v)
        n_iter = it + 1
        if change < tol or change == 0.0:
            converged = 1
            break
    _, pol, _ = sweep(gamma, v)  # greedy policy with respect to the returned values
    return v, pol, n_iter, converged


# ---------------------------------------------------------------------------------------------
# token (deterministic) layout


def token_mdp_bellman_backup(next_state, reward, terminal, gamma, v, v_out, policy_out):
    if not _arrays_ok((terminal, v, v_out, policy_out), dict(v_out=v_out, policy_out=policy_out)):
        return BAD_SHAPES
    if overlapping((v_out, policy_out), (next_state, reward, terminal, v)):
        return OVERLAPPING_ARRAYS
    if not _token_shapes_ok(next_state, reward, terminal, len(v), len(v_out), len(policy_out)):
        return BAD_SHAPES
    n_states, n_actions = next_state.shape
    ns, rw, term = _token_lists(next_state, reward, terminal)
    status = _check_token(ns, rw, term, n_states, n_actions)
    if status or n_states == 0:
        return status
    new, pol, _ = _token_sweep(ns, rw, term, gamma, v.tolist())
    v_out[:] = new
    policy_out[:] = pol
    return 0


def token_mdp_action_values(next_state, reward, terminal, gamma, v, q_out):
    if not _arrays_ok((terminal, v), dict(q_out=q_out)):
        return BAD_SHAPES
    if overlapping((q_out,), (next_state, reward, terminal, v)):
        return OVERLAPPING_ARRAYS
    if (
        not _token_shapes_ok(next_state, reward, terminal, len(v), len(v), len(v))
        or q_out.shape != next_state.shape
    ):
        return BAD_SHAPES
    n_states, n_actions = next_state.shape
    ns, rw, term = _token_lists(next_state, reward, terminal)
    status = _check_token(ns, rw, term, n_states, n_actions)
    if status or n_states == 0:
        return status
    v_ = v.tolist()
    for s in range(n_states):
        if term[s]:
            q_out[s] = [0.0] * n_actions
        else:
            q_out[s] = [rw[s][a] + gamma * v_[ns[s][a]] for a in range(n_actions)]
    return 0


def token_mdp_policy_sweeps(next_state, reward, terminal, policy, gamma, k, v, v_tmp):
    if not _arrays_ok((terminal, policy, v, v_tmp), dict(v=v, v_tmp=v_tmp)):
        return BAD_SHAPES
    if overlapping((v, v_tmp), (next_state, reward, terminal, policy)):
        return OVERLAPPING_ARRAYS
    if k < 0 or k > MAX_ITERATIONS:  # 2**31 sweeps would run for days
        return BAD_ITERATIONS
    if not _token_shapes_ok(next_state, reward, terminal, len(policy), len(v), len(v_tmp)):
        return BAD_SHAPES
    n_states, n_actions = next_state.shape
    ns, rw, term = _token_lists(next_state, reward, terminal)
    pol = policy.tolist()
    status = _check_token(ns, rw, term, n_states, n_actions) or _check_policy(pol, n_actions)
    if status or n_states == 0:
        return status
    v_ = v.tolist()
    for _ in range(k):
        new = [0.0] * n_states
        for s in range(n_states):
            if not term[s]:
                a = pol[s]
                new[s] = rw[s][a] + gamma * v_[ns[s][a]]
        v_ = new
    v[:] = v_
    return 0


def token_mdp_policy_value(next_state, reward, terminal, policy, gamma, v_out, work):
    """Exact v_pi = r_pi + gamma P_pi v_pi on the functional graph s -> next_state[s, pi(s)].

    Each path is followed until it meets a terminal state (value 0), a state already solved, or a
    state on the path itself (a cycle c_0 -> ... -> c_{L-1} -> c_0, solved in closed form
    v(c_0) = sum_j gamma^j r(c_j) / (1 - gamma^L); NaN when gamma^L == 1).  The path is then
    unwound backwards with v(s) = r(s) + gamma v(next).  ``work``: int64 scratch of length 2 S.
    """
    if not _arrays_ok((terminal, policy, v_out, work), dict(v_out=v_out, work=work)):
        return BAD_SHAPES
    if overlapping((v_out, work), (next_state, reward, terminal, policy)):
        return OVERLAPPING_ARRAYS
    if (
        not _token_shapes_ok(next_state, reward, terminal, len(policy), len(v_out), len(v_out))
        or len(work) != 2 * next_state.shape[0]
    ):
        return BAD_SHAPES
    n_states, n_actions = next_state.shape
    ns, rw, term = _token_lists(next_state, reward, terminal)
    pol = policy.tolist()
    status = _check_token(ns, rw, term, n_states, n_actions) or _check_policy(pol, n_actions)
    if status or n_states == 0:
        return status
    path = [0] * n_states
    mark = [-1] * n_states  # -1 unvisited, -2 solved, >= 0 position on the current path
    val_of = [0.0] * n_states
    for s0 in range(n_states):
        if mark[s0] != -1:
            continue
        n = 0
        s = s0
        while True:
            if mark[s] == -2:
                val = val_of[s]
                break
            if mark[s] >= 0:
                p = mark[s]
                acc = 0.0
                g = 1.0
                for j in range(p, n):
                    c = path[j]
                    acc += g * rw[c][pol[c]]
                    g *= gamma
                denom = 1.0 - g
                val = acc / denom if denom != 0.0 else math.nan
                head = path[p]
                val_of[head] = val
                mark[head] = -2
                nxt = val
                for j in range(n - 1, p, -1):
                    c = path[j]
                    nxt = rw[c][pol[c]] + gamma * nxt
                    val_of[c] = nxt
                    mark[c] = -2
                n = p
                break
            if term[s]:
                val = 0.0
                val_of[s] = 0.0
                mark[s] = -2
                break
            mark[s] = n
            path[n] = s
            n += 1
            s = ns[s][pol[s]]
        for j in range(n - 1, -1, -1):
            c = path[j]
            val = rw[c][pol[c]] + gamma * val
            val_of[c] = val
            mark[c] = -2
    v_out[:] = val_of
    work[:n_states] = path
    work[n_states:] = mark
    return 0


def token_mdp_find_cycle(next_state, terminal, found_out, work):
    """Is the graph s -> next_state[s, a] (every a) on the non-terminal states acyclic?

    Iterative depth-first search from every non-terminal state in index order, actions in index
    order, terminal states ignored.  ``found_out[0]`` = -1 when acyclic, else the first state met
    again while it is on the current search path (a state on a cycle).  ``work``: int64 scratch of
    length 3 S (colour, path states, next action on the path).
    """
    if not _arrays_ok((terminal, found_out, work), dict(found_out=found_out, work=work)):
        return BAD_SHAPES
    if overlapping((found_out, work), (next_state, terminal)):
        return OVERLAPPING_ARRAYS
    if (
        not _token_shapes_ok(
            next_state, next_state, terminal, len(terminal), len(terminal), len(terminal)
        )
        or len(found_out) < 1
        or len(work) != 3 * next_state.shape[0]
    ):
        return BAD_SHAPES
    n_states, n_actions = next_state.shape
    ns = next_state.tolist()
    term = terminal.tolist()
    for s in range(n_states):
        if term[s]:
            continue
        for t in ns[s]:
            if t < 0 or t >= n_states:
                return BAD_NEXT_STATES
    colour = [0] * n_states  # 0 unvisited, 1 on the current path, 2 finished
    stack_s = [0] * n_states
    stack_a = [0] * n_states
    found = -1
    for root in range(n_states):
        if term[root] or colour[root] != 0:
            continue
        top = 0
        stack_s[0] = root
        stack_a[0] = 0
        colour[root] = 1
        while top >= 0:
            s = stack_s[top]
            a = stack_a[top]
            if a == n_actions:
                colour[s] = 2
                top -= 1
                continue
            stack_a[top] = a + 1
            t = ns[s][a]
            if term[t] or colour[t] == 2:
                continue
            if colour[t] == 1:
                found = t
                break
            top += 1
            stack_s[top] = t
            stack_a[top] = 0
            colour[t] = 1
        if found >= 0:
            break
    found_out[0] = found
    return 0


def token_mdp_value_iteration(
    next_state, reward, terminal, gamma, tol, max_iter, v, v_tmp, policy_out, info_out
):
    if not _arrays_ok(
        (terminal, v, v_tmp, policy_out, info_out),
        dict(v=v, v_tmp=v_tmp, policy_out=policy_out, info_out=info_out),
    ):
        return BAD_SHAPES
    if overlapping((v, v_tmp, policy_out, info_out), (next_state, reward, terminal)):
        return OVERLAPPING_ARRAYS
    if max_iter < 0 or max_iter > MAX_ITERATIONS:  # 2**31 sweeps would run for days
        return BAD_ITERATIONS
    if (
        not _token_shapes_ok(next_state, reward, terminal, len(v), len(v_tmp), len(policy_out))
        or len(info_out) < 2
    ):
        return BAD_SHAPES
    n_states, n_actions = next_state.shape
    ns, rw, term = _token_lists(next_state, reward, terminal)
    status = _check_token(ns, rw, term, n_states, n_actions)
    if status:
        return status

    def sweep(g, vals):
        return _token_sweep(ns, rw, term, g, vals)

    vals, pol, n_iter, converged = _value_iteration(sweep, gamma, tol, max_iter, v.tolist())
    v[:] = vals
    policy_out[:] = pol
    info_out[0] = n_iter
    info_out[1] = converged
    return 0


# ---------------------------------------------------------------------------------------------
# dense layout


def dense_mdp_bellman_backup(P, R, gamma, v, v_out, policy_out):
    if not _arrays_ok((v, v_out, policy_out), dict(v_out=v_out, policy_out=policy_out)):
        return BAD_SHAPES
    if overlapping((v_out, policy_out), (P, R, v)):
        return OVERLAPPING_ARRAYS
    if not _dense_shapes_ok(P, R, len(v), len(v_out), len(policy_out)):
        return BAD_SHAPES
    n_states, n_actions = R.shape
    R_ = R.tolist()
    status = _check_dense(R_, n_states, n_actions)
    if status or n_states == 0:
        return status
    new, pol, _ = _dense_sweep(P.tolist(), R_, gamma, v.tolist())
    v_out[:] = new
    policy_out[:] = pol
    return 0


def dense_mdp_action_values(P, R, gamma, v, q_out):
    if not _arrays_ok((v,), dict(q_out=q_out)):
        return BAD_SHAPES
    if overlapping((q_out,), (P, R, v)):
        return OVERLAPPING_ARRAYS
    if not _dense_shapes_ok(P, R, len(v), len(v), len(v)) or q_out.shape != R.shape:
        return BAD_SHAPES
    n_states, n_actions = R.shape
    R_ = R.tolist()
    status = _check_dense(R_, n_states, n_actions)
    if status or n_states == 0:
        return status
    P_ = P.tolist()
    v_ = v.tolist()
    for s in range(n_states):
        q_out[s] = [_dense_q(P_[s][a], R_[s][a], gamma, v_) for a in range(n_actions)]
    return 0


def dense_mdp_policy_sweeps(P, R, policy, gamma, k, v, v_tmp):
    if not _arrays_ok((policy, v, v_tmp), dict(v=v, v_tmp=v_tmp)):
        return BAD_SHAPES
    if overlapping((v, v_tmp), (P, R, policy)):
        return OVERLAPPING_ARRAYS
    if k < 0 or k > MAX_ITERATIONS:  # 2**31 sweeps would run for days
        return BAD_ITERATIONS
    if not _dense_shapes_ok(P, R, len(policy), len(v), len(v_tmp)):
        return BAD_SHAPES
    n_states, n_actions = R.shape
    R_ = R.tolist()
    pol = policy.tolist()
    status = _check_dense(R_, n_states, n_actions) or _check_policy(pol, n_actions)
    if status or n_states == 0:
        return status
    P_ = P.tolist()
    v_ = v.tolist()
    for _ in range(k):
        v_ = [_dense_q(P_[s][pol[s]], R_[s][pol[s]], gamma, v_) for s in range(n_states)]
    v[:] = v_
    return 0


def dense_mdp_value_iteration(P, R, gamma, tol, max_iter, v, v_tmp, policy_out, info_out):
    if not _arrays_ok(
        (v, v_tmp, policy_out, info_out),
        dict(v=v, v_tmp=v_tmp, policy_out=policy_out, info_out=info_out),
    ):
        return BAD_SHAPES
    if overlapping((v, v_tmp, policy_out, info_out), (P, R)):
        return OVERLAPPING_ARRAYS
    if max_iter < 0 or max_iter > MAX_ITERATIONS:  # 2**31 sweeps would run for days
        return BAD_ITERATIONS
    if not _dense_shapes_ok(P, R, len(v), len(v_tmp), len(policy_out)) or len(info_out) < 2:
        return BAD_SHAPES
    n_states, n_actions = R.shape
    R_ = R.tolist()
    status = _check_dense(R_, n_states, n_actions)
    if status:
        return status
    P_ = P.tolist()

    def sweep(g, vals):
        return _dense_sweep(P_, R_, g, vals)

    vals, pol, n_iter, converged = _value_iteration(sweep, gamma, tol, max_iter, v.tolist())
    v[:] = vals
    policy_out[:] = pol
    info_out[0] = n_iter
    info_out[1] = converged
    return 0
