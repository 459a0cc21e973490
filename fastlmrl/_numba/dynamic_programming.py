"""Numba dynamic-programming kernels (same semantics, same operation order as the reference).

Values are float64; every sum is accumulated in float64 in the reference's order, so results are
bit-identical to :mod:`fastlmrl._python.dynamic_programming`.
"""

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
import numpy as np
from numba import njit

# the statuses these kernels return (fastlmrl._status.Status; plain ints: Numba globals)
from .._status import (
    BAD_ACTIONS,  # a policy id outside [0, A), or A == 0
    BAD_ITERATIONS,  # k or max_iter outside [0, 2**31 - 1]
    BAD_NEXT_STATES,  # a next_state id outside [0, S)
    BAD_REWARDS,  # a non-finite reward
    BAD_SHAPES,
    OVERLAPPING_ARRAYS,
)
from ._common import NJIT
from .overlap import written_overlaps

MAX_ITERATIONS = 2**31 - 1

# ---------------------------------------------------------------------------------------------
# argument checks (pre-pass)


@njit(**NJIT)
def _written_overlap(w1, w2, w3, w4, r1, r2, r3, r4):
    """Status 8 (OVERLAPPING_ARRAYS): does a written array w1..w4 share memory with another
    written one or with a read one r1..r4 (unused slots: an empty array)?  O(1) address ranges,
    checked first: a sweep writing over ``next_state`` or ``policy`` would index with values it
    never checked."""
    e = r4[:0]
    return (
        written_overlaps(w1, w2, w3, w4, r1, r2, r3, r4)
        or written_overlaps(w2, w3, w4, r1, r2, r3, r4, e)
        or written_overlaps(w3, w4, r1, r2, r3, r4, e, e)
        or written_overlaps(w4, r1, r2, r3, r4, e, e, e)
    )


@njit(**NJIT)
def _token_shapes_ok(next_state, reward, terminal, n1, n2, n3):
    """The shape check (first) of the token layout: ``reward`` of next_state's shape (S, A),
    ``terminal`` and the lengths n1..n3 of the kernel's per-state arrays S (a kernel with fewer
    per-state arrays passes a length again)."""
    n_states = next_state.shape[0]
    return (
        reward.shape[0] == n_states
        and reward.shape[1] == next_state.shape[1]
        and terminal.shape[0] == n_states
        and n1 == n_states
        and n2 == n_states
        and n3 == n_states
    )


@njit(**NJIT)
def _dense_shapes_ok(P, R, n1, n2, n3):
    """The shape check (first) of the dense layout: ``P`` (S, A, S) for ``R`` (S, A), and the
    lengths n1..n3 of the kernel's per-state arrays S."""
    n_states, n_actions = R.shape
    return (
        P.shape[0] == n_states
        and P.shape[1] == n_actions
        and P.shape[2] == n_states
        and n1 == n_states
        and n2 == n_states
        and n3 == n_states
    )


@njit(**NJIT)
def _check_token(next_state, reward, terminal):
    n_states, n_actions = next_state.shape
    if n_actions == 0:
        for s in range(n_states):
            if terminal[s]:
                continue
            return BAD_ACTIONS
        return 0
    for s in range(n_states):
        if terminal[s]:
            continue
        for a in range(n_actions):
            t = next_state[s, a]
            if t < 0 or t >= n_states:
                return BAD_NEXT_STATES
    for s in range(n_states):
        if terminal[s]:
            continue
        for a in range(n_actions):
            if not np.isfinite(reward[s, a]):
                return BAD_REWARDS
    return 0


@njit(**NJIT)
def _check_dense(R):
    n_states, n_actions = R.shape
    if n_actions == 0 and n_states > 0:
        return BAD_ACTIONS
    for s in range(n_states):
        for a in range(n_actions):
            if not np.isfinite(R[s, a]):
                return BAD_REWARDS
    return 0


@njit(**NJIT)
def _check_policy(policy, n_actions):
    for s in range(policy.shape[0]):
        if policy[s] < 0 or policy[s] >= n_actions:
            return BAD_ACTIONS
    return 0


# ---------------------------------------------------------------------------------------------
# sweeps: write T v into v_out and the greedy actions into policy_out, return ||T v - v||_inf


@njit(**NJIT)
def _token_sweep(next_state, reward, terminal, gamma, v, v_out, policy_out):
    n_states, n_actions = next_state.shape
    change = 0.0
    for s in range(n_states):
        best = 0.0
        best_a = 0
        if not terminal[s]:
            best = np.float64(reward[s, 0]) + gamma * v[next_state[s, 0]]
            for a in range(1, n_actions):
                q = np.float64(reward[s, a]) + gamma * v[next_state[s, a]]
                if q > best:
                    best = q
                    best_a = a
        d = abs(best - v[s])
        if d > change:
            change = d
        v_out[s] = best
        policy_out[s] = best_a
    return change


@njit(**NJIT)
def _dense_dot(P, s, a, v):
    row = P[s, a]
    acc = 0.0
    for t in range(v.shape[0]):
        acc += np.float64(row[t]) * v[t]
    return acc


@njit(**NJIT)
def _dense_dot4(P, s, a, v):
    """Four dot products P[s, a + j] . v (j < 4), each summed in index order: the four
    independent chains only add instruction-level parallelism, the rounding is unchanged."""
    p0 = P[s, a]
    p1 = P[s, a + 1]
    p2 = P[s, a + 2]
    p3 = P[s, a + 3]
    acc0 = 0.0
    acc1 = 0.0
    acc2 = 0.0
    acc3 = 0.0
    for t in range(v.shape[0]):
        vt = v[t]
        acc0 += np.float64(p0[t]) * vt
        acc1 += np.float64(p1[t]) * vt
        acc2 += np.float64(p2[t]) * vt
        acc3 += np.float64(p3[t]) * vt
    return acc0, acc1, acc2, acc3


@njit(**NJIT)
def _dense_q_row(P, R, s, gamma, v, q_row):
    """q_row[a] = R[s, a] + gamma * (P[s, a] . v) for every action a."""
    n_actions = R.shape[1]
    a = 0
    while a + 4 <= n_actions:
        d0, d1, d2, d3 = _dense_dot4(P, s, a, v)
        q_row[a] = np.float64(R[s, a]) + gamma * d0
        q_row[a + 1] = np.float64(R[s, a + 1]) + gamma * d1
        q_row[a + 2] = np.float64(R[s, a + 2]) + gamma * d2
        q_row[a + 3] = np.float64(R[s, a + 3]) + gamma * d3
        a += 4
    while a < n_actions:
        q_row[a] = np.float64(R[s, a]) + gamma * _dense_dot(P, s, a, v)
        a += 1


@njit(**NJIT)
def _better(best, best_a, q, a):
    """Running argmax in action order: the first action, then strictly larger values only."""
    if a == 0 or q > best:
        return q, a
    return best, best_a


@njit(**NJIT)
def _dense_sweep(P, R, gamma, v, v_out, policy_out):
    n_states, n_actions = R.shape
    change = 0.0
    for s in range(n_states):
        best = 0.0
        best_a = 0
        a = 0
        while a + 4 <= n_actions:
            d0, d1, d2, d3 = _dense_dot4(P, s, a, v)
            best, best_a = _better(best, best_a, np.float64(R[s, a]) + gamma * d0, a)
            best, best_a = _better(best, best_a, np.float64(R[s, a + 1]) + gamma * d1, a + 1)
            best, best_a = _better(best, best_a, np.float64(R[s, a + 2]) + gamma * d2, a + 2)
            best, best_a = _better(best, best_a, np.float64(R[s, a + 3]) + gamma * d3, a + 3)
            a += 4
        while a < n_actions:
            best, best_a = _better(
                best, best_a, np.float64(R[s, a]) + gamma * _dense_dot(P, s, a, v), a
            )
            a += 1
        d = abs(best - v[s])
        if d > change:
            change = d
        v_out[s] = best
        policy_out[s] = best_a
    return change


# ---------------------------------------------------------------------------------------------
# token (deterministic) layout


@njit(**NJIT)
def token_mdp_bellman_backup(next_state, reward, terminal, gamma, v, v_out, policy_out):
    if _written_overlap(v_out, policy_out, v_out[:0], v_out[:0], next_state, reward, terminal, v):
        return OVERLAPPING_ARRAYS
    if not _token_shapes_ok(
        next_state, reward, terminal, v.shape[0], v_out.shape[0], policy_out.shape[0]
    ):
        return BAD_SHAPES
    status = _check_token(next_state, reward, terminal)
    if status != 0:
        return status
    _token_sweep(next_state, reward, terminal, gamma, v, v_out, policy_out)
    return 0


@njit(**NJIT)
def token_mdp_action_values(next_state, reward, terminal, gamma, v, q_out):
    if _written_overlap(q_out, q_out[:0], q_out[:0], q_out[:0], next_state, reward, terminal, v):
        return OVERLAPPING_ARRAYS
    n = v.shape[0]
    if (
        not _token_shapes_ok(next_state, reward, terminal, n, n, n)
        or q_out.shape[0] != next_state.shape[0]
        or q_out.shape[1] != next_state.shape[1]
    ):
        return BAD_SHAPES
    status = _check_token(next_state, reward, terminal)
    if status != 0:
        return status
    n_states, n_actions = next_state.shape
    for s in range(n_states):
        if terminal[s]:
            for a in range(n_actions):
                q_out[s, a] = 0.0
        else:
            for a in range(n_actions):
                q_out[s, a] = np.float64(reward[s, a]) + gamma * v[next_state[s, a]]
    return 0


@njit(**NJIT)
def _token_policy_sweep(next_state, reward, terminal, policy, gamma, src, dst):
    for s in range(src.shape[0]):
        if terminal[s]:
            dst[s] = 0.0
        else:
            a = policy[s]
            dst[s] = np.float64(reward[s, a]) + gamma * src[next_state[s, a]]


@njit(**NJIT)
def token_mdp_policy_sweeps(next_state, reward, terminal, policy, gamma, k, v, v_tmp):
    if _written_overlap(v, v_tmp, v[:0], v[:0], next_state, reward, terminal, policy):
        return OVERLAPPING_ARRAYS
    if not _token_shapes_ok(
        next_state, reward, terminal, policy.shape[0], v.shape[0], v_tmp.shape[0]
    ):
        return BAD_SHAPES
    if k < 0 or k > MAX_ITERATIONS:  # 2**31 sweeps would run for days
        return BAD_ITERATIONS
    status = _check_token(next_state, reward, terminal)
    if status == 0:
        status = _check_policy(policy, next_state.shape[1])
    if status != 0:
        return status
    for it in range(k):
        if it % 2 == 0:
            _token_policy_sweep(next_state, reward, terminal, policy, gamma, v, v_tmp)
        else:
            _token_policy_sweep(next_state, reward, terminal, policy, gamma, v_tmp, v)
    if k > 0 and k % 2 == 1:
        v[:] = v_tmp
    return 0


@njit(**NJIT)
def token_mdp_policy_value(next_state, reward, terminal, policy, gamma, v_out, work):
    if _written_overlap(v_out, work, v_out[:0], v_out[:0], next_state, reward, terminal, policy):
        return OVERLAPPING_ARRAYS
    if (
        not _token_shapes_ok(
            next_state, reward, terminal, policy.shape[0], v_out.shape[0], v_out.shape[0]
        )
        or work.shape[0] != 2 * next_state.shape[0]
    ):
        return BAD_SHAPES
    status = _check_token(next_state, reward, terminal)
    if status == 0:
        status = _check_policy(policy, next_state.shape[1])
    if status != 0:
        return status
    n_states = next_state.shape[0]
    path = work[:n_states]
    mark = work[n_states:]  # -1 unvisited, -2 solved, >= 0 position on the current path
    for s in range(n_states):
        mark[s] = -1
    for s0 in range(n_states):
        if mark[s0] != -1:
            continue
        n = 0
        s = s0
        val = 0.0
        while True:
            if mark[s] == -2:
                val = v_out[s]
                break
            if mark[s] >= 0:
                p = mark[s]
                acc = 0.0
                g = 1.0
                for j in range(p, n):
                    c = path[j]
                    acc += g * np.float64(reward[c, policy[c]])
                    g *= gamma
                denom = 1.0 - g
                if denom != 0.0:
                    val = acc / denom
                else:
                    val = np.nan
                head = path[p]
                v_out[head] = val
                mark[head] = -2
                nxt = val
                for j in range(n - 1, p, -1):
                    c = path[j]
                    nxt = np.float64(reward[c, policy[c]]) + gamma * nxt
                    v_out[c] = nxt
                    mark[c] = -2
                n = p
                break
            if terminal[s]:
                val = 0.0
                v_out[s] = 0.0
                mark[s] = -2
                break
            mark[s] = n
            path[n] = s
            n += 1
            s = next_state[s, policy[s]]
        for j in range(n - 1, -1, -1):
            c = path[j]
            val = np.float64(reward[c, policy[c]]) + gamma * val
            v_out[c] = val
            mark[c] = -2
    return 0


@njit(**NJIT)
def token_mdp_find_cycle(next_state, terminal, found_out, work):
    if _written_overlap(
        found_out,
        work,
        found_out[:0],
        found_out[:0],
        next_state,
        terminal,
        found_out[:0],
        found_out[:0],
    ):
        return OVERLAPPING_ARRAYS
    n = terminal.shape[0]
    if (
        not _token_shapes_ok(next_state, next_state, terminal, n, n, n)
        or found_out.shape[0] < 1
        or work.shape[0] != 3 * next_state.shape[0]
    ):
        return BAD_SHAPES
    n_states, n_actions = next_state.shape
    for s in range(n_states):
        if terminal[s]:
            continue
        for a in range(n_actions):
            t = next_state[s, a]
            if t < 0 or t >= n_states:
                return BAD_NEXT_STATES
    colour = work[:n_states]  # 0 unvisited, 1 on the current path, 2 finished
    stack_s = work[n_states : 2 * n_states]
    stack_a = work[2 * n_states :]
    for s in range(n_states):
        colour[s] = 0
    found = -1
    for root in range(n_states):
        if terminal[root] or colour[root] != 0:
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
            t = next_state[s, a]
            if terminal[t] or colour[t] == 2:
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


@njit(**NJIT)
def token_mdp_value_iteration(
    next_state, reward, terminal, gamma, tol, max_iter, v, v_tmp, policy_out, info_out
):
    if _written_overlap(v, v_tmp, policy_out, info_out, next_state, reward, terminal, info_out[:0]):
        return OVERLAPPING_ARRAYS
    if (
        not _token_shapes_ok(
            next_state, reward, terminal, v.shape[0], v_tmp.shape[0], policy_out.shape[0]
        )
        or info_out.shape[0] < 2
    ):
        return BAD_SHAPES
    if max_iter < 0 or max_iter > MAX_ITERATIONS:  # 2**31 sweeps would run for days
        return BAD_ITERATIONS
    status = _check_token(next_state, reward, terminal)
    if status != 0:
        return status
    n_iter = 0
    converged = 0
    for it in range(max_iter):
        # even sweeps v -> v_tmp, odd sweeps v_tmp -> v
        if it % 2 == 0:
            change = _token_sweep(next_state, reward, terminal, gamma, v, v_tmp, policy_out)
        else:
            change = _token_sweep(next_state, reward, terminal, gamma, v_tmp, v, policy_out)
        n_iter = it + 1
        if change < tol or change == 0.0:
            converged = 1
            break
    if n_iter % 2 == 1:
        v[:] = v_tmp
    _token_sweep(next_state, reward, terminal, gamma, v, v_tmp, policy_out)
    info_out[0] = n_iter
    info_out[1] = converged
    return 0


# ---------------------------------------------------------------------------------------------
# dense layout


@njit(**NJIT)
def dense_mdp_bellman_backup(P, R, gamma, v, v_out, policy_out):
    if _written_overlap(v_out, policy_out, v_out[:0], v_out[:0], P, R, v, v_out[:0]):
        return OVERLAPPING_ARRAYS
    if not _dense_shapes_ok(P, R, v.shape[0], v_out.shape[0], policy_out.shape[0]):
        return BAD_SHAPES
    status = _check_dense(R)
    if status != 0:
        return status
    _dense_sweep(P, R, gamma, v, v_out, policy_out)
    return 0


@njit(**NJIT)
def dense_mdp_action_values(P, R, gamma, v, q_out):
    if _written_overlap(q_out, q_out[:0], q_out[:0], q_out[:0], P, R, v, q_out[:0]):
        return OVERLAPPING_ARRAYS
    n = v.shape[0]
    if (
        not _dense_shapes_ok(P, R, n, n, n)
        or q_out.shape[0] != R.shape[0]
        or q_out.shape[1] != R.shape[1]
    ):
        return BAD_SHAPES
    status = _check_dense(R)
    if status != 0:
        return status
    for s in range(R.shape[0]):
        _dense_q_row(P, R, s, gamma, v, q_out[s])
    return 0


@njit(**NJIT)
def _dense_policy_sweep(P, R, policy, gamma, src, dst):
    for s in range(src.shape[0]):
        a = policy[s]
        dst[s] = np.float64(R[s, a]) + gamma * _dense_dot(P, s, a, src)


@njit(**NJIT)
def dense_mdp_policy_sweeps(P, R, policy, gamma, k, v, v_tmp):
    if _written_overlap(v, v_tmp, v[:0], v[:0], P, R, policy, v[:0]):
        return OVERLAPPING_ARRAYS
    if not _dense_shapes_ok(P, R, policy.shape[0], v.shape[0], v_tmp.shape[0]):
        return BAD_SHAPES
    if k < 0 or k > MAX_ITERATIONS:  # 2**31 sweeps would run for days
        return BAD_ITERATIONS
    status = _check_dense(R)
    if status == 0:
        status = _check_policy(policy, R.shape[1])
    if status != 0:
        return status
    for it in range(k):
        if it % 2 == 0:
            _dense_policy_sweep(P, R, policy, gamma, v, v_tmp)
        else:
            _dense_policy_sweep(P, R, policy, gamma, v_tmp, v)
    if k > 0 and k % 2 == 1:
        v[:] = v_tmp
    return 0


@njit(**NJIT)
def dense_mdp_value_iteration(P, R, gamma, tol, max_iter, v, v_tmp, policy_out, info_out):
    if _written_overlap(v, v_tmp, policy_out, info_out, P, R, info_out[:0], info_out[:0]):
        return OVERLAPPING_ARRAYS
    if (
        not _dense_shapes_ok(P, R, v.shape[0], v_tmp.shape[0], policy_out.shape[0])
        or info_out.shape[0] < 2
    ):
        return BAD_SHAPES
    if max_iter < 0 or max_iter > MAX_ITERATIONS:  # 2**31 sweeps would run for days
        return BAD_ITERATIONS
    status = _check_dense(R)
    if status != 0:
        return status
    n_iter = 0
    converged = 0
    for it in range(max_iter):
        if it % 2 == 0:
            change = _dense_sweep(P, R, gamma, v, v_tmp, policy_out)
        else:
            change = _dense_sweep(P, R, gamma, v_tmp, v, policy_out)
        n_iter = it + 1
        if change < tol or change == 0.0:
            converged = 1
            break
    if n_iter % 2 == 1:
        v[:] = v_tmp
    _dense_sweep(P, R, gamma, v, v_tmp, policy_out)
    info_out[0] = n_iter
    info_out[1] = converged
    return 0
