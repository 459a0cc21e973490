"""Numba table optimisers: sparse SGD and lazy Adam.

Same semantics, same operation order and rounding as the reference (``fastlmrl._python.optimizers``
has the Adam formula: per-step scalars ``step_size = lr / (1 - beta1^t)`` and
``scale2 = 1 / sqrt(1 - beta2^t)``, then one division and one square root per entry).

Rows are visited group by group through ``order`` (the stable argsort of ``rows``, or, when
``order`` is empty, the identity, checked to be one: ``rows`` non-decreasing): a group of one id is
applied straight from its gradient row; a group of several is first summed in index order into the
float64 scratch ``acc`` (length >= V), so no (U, V) buffer is ever needed.

Speed: the row loops index the 2-D arrays with ``range`` loop variables (no row views, so no
reference counting per row and no negative-index wrap inside the inner loop) and vectorise;
the finiteness check is a branch-free ``x - x != 0`` per row (NaN for inf and NaN) that vectorises
too; a one-column table (the value tables) takes a scalar path without the vector loop's set-up.
"""

__all__ = ["adam_step", "sgd_step"]
import math

import numpy as np
from numba import njit
from numba.extending import overload

# status codes (fastlmrl.Status; plain ints, Numba globals)
from .._status import (
    BAD_GRADS,
    BAD_HYPERPARAMETERS,
    BAD_MOMENTS,
    BAD_ORDER,
    BAD_ROWS,
    BAD_SHAPES,
    OVERLAPPING_ARRAYS,
    UNSORTED,
)
from ._common import NJIT, out_of_range
from .overlap import written_overlaps

# error_model="numpy": IEEE division without Python's zero-divisor check, which would stop LLVM from
# vectorising the row loops.  It changes no result: the divisors 1 - beta^t, sqrt(1 - beta2^t) and
# sqrt(v) * scale2 + eps are > 0 for valid arguments (beta in [0, 1), t >= 1, eps > 0, v >= 0).
# No fastmath.
KERNEL = dict(NJIT, error_model="numpy")


@njit(**KERNEL)
def _check(table, rows, grads, order, acc, m, v, check_moments):
    n_states, n_cols = table.shape
    n = rows.shape[0]
    n_order = order.shape[0]
    if (
        grads.shape[0] != n
        or grads.shape[1] != n_cols
        or (n_order != n and n_order != 0)
        or acc.shape[0] < n_cols
    ):
        return BAD_SHAPES
    if check_moments and (
        m.shape[0] != n_states
        or m.shape[1] != n_cols
        or v.shape[0] != n_states
        or v.shape[1] != n_cols
    ):
        return BAD_SHAPES
    if out_of_range(rows, n_states):
        return BAD_ROWS
    if n_order == 0:
        for k in range(1, n):
            if rows[k - 1] > rows[k]:
                return UNSORTED
    else:
        if out_of_range(order, n):
            return BAD_ORDER
        for k in range(1, n):
            prev = order[k - 1]
            cur = order[k]
            if not (rows[prev] < rows[cur] or (rows[prev] == rows[cur] and prev < cur)):
                return BAD_ORDER
    if _bad_values(rows, grads, order, v, check_moments):
        return _bad_values_status(grads)
    return 0


@njit(**KERNEL)
def _bad_values(rows, grads, order, v, check_moments):
    """Is a gradient entry not finite, or (Adam) an entry of ``v`` in a row of the batch negative
    or NaN (ids and order already checked)?  A second moment is >= 0: sqrt(v_new) must not turn
    into NaN mid-update.  Which of the two is found again by :func:`_bad_values_status` (on a bad
    call only).

    One pass over the batch, a gradient row and its moment row in one loop with one flag (no
    exit per row; branch-free tests that vectorise: ``x - x`` is NaN for +-inf and NaN, 0 for
    every finite x), and in the reverse of the update's order, so the rows it loads last are the
    ones the update needs first, still in cache.  A run of equal ids reads its moment row once."""
    n = rows.shape[0]
    n_cols = grads.shape[1]
    has_order = order.shape[0] != 0
    bad = False
    previous = -1
    for k in range(n - 1, -1, -1):
        i = _position(order, has_order, k)
        r = rows[i]
        if check_moments and r != previous:
            previous = r
            for j in range(n_cols):
                x = grads[i, j]
                y = v[r, j]
                bad |= ((x - x) != 0.0) | (y < 0.0) | (y != y)
        else:
            for j in range(n_cols):
                x = grads[i, j]
                bad |= (x - x) != 0.0
    return bad


@njit(**KERNEL)
def _bad_values_status(grads):
    """BAD_GRADS when a gradient entry is not finite, else BAD_MOMENTS (the call was refused)."""
    for i in range(grads.shape[0]):
        for j in range(grads.shape[1]):
            if not math.isfinite(grads[i, j]):
                return BAD_GRADS
    return BAD_MOMENTS


def _at(g, i, j):
    """g[i, j] of the 2-D gradients, or g[j] of the 1-D float64 scratch ``acc`` (i ignored)."""
    return g[i, j] if g.ndim == 2 else g[j]


@overload(_at)
def _at_overload(g, i, j):
    if g.ndim == 2:
        return lambda g, i, j: g[i, j]
    return lambda g, i, j: g[j]


@njit(**KERNEL)
def _position(order, has_order, k):
    return order[k] if has_order else k


@njit(**KERNEL)
def _group_end(rows, order, has_order, k):
    """First position after k whose id differs from the id at position k."""
    n = rows.shape[0]
    r = rows[_position(order, has_order, k)]
    end = k + 1
    while end < n and rows[_position(order, has_order, end)] == r:
        end += 1
    return end


@njit(**KERNEL)
def _sum_group(grads, order, has_order, k, end, acc):
    """acc[:V] = grads[i_k] + grads[i_k+1] + ... (float64, index order)."""
    first = _position(order, has_order, k)
    for j in range(grads.shape[1]):
        acc[j] = grads[first, j]
    for p in range(k + 1, end):
        i = _position(order, has_order, p)
        for j in range(grads.shape[1]):
            acc[j] += grads[i, j]


@njit(**KERNEL)
def _sgd_row(table, r, g, i, lr, sign):
    """table[r] -= lr * (sign * g[i]) (g: grads, or the 1-D scratch acc, i ignored)."""
    for j in range(table.shape[1]):
        table[r, j] = np.float64(table[r, j]) - lr * (sign * np.float64(_at(g, i, j)))


@njit(**KERNEL)
def _column_sum(grads, order, has_order, k, end):
    """grads[order[k], 0] + grads[order[k + 1], 0] + ... + grads[order[end - 1], 0] (float64,
    index order): the summed gradient of a group of a one-column table."""
    g = np.float64(grads[_position(order, has_order, k), 0])
    for p in range(k + 1, end):
        g += grads[_position(order, has_order, p), 0]
    return g


@njit(**KERNEL)
def _walk_sgd(table, rows, grads, order, lr, sign, acc):
    has_order = order.shape[0] != 0
    n = rows.shape[0]
    if table.shape[1] == 1:  # one column: scalar path
        k = 0
        while k < n:
            end = _group_end(rows, order, has_order, k)
            r = rows[_position(order, has_order, k)]
            g = _column_sum(grads, order, has_order, k, end)
            table[r, 0] = np.float64(table[r, 0]) - lr * (sign * g)
            k = end
        return
    k = 0
    while k < n:
        end = _group_end(rows, order, has_order, k)
        i = _position(order, has_order, k)
        if end == k + 1:
            _sgd_row(table, rows[i], grads, i, lr, sign)
        else:
            _sum_group(grads, order, has_order, k, end, acc)
            _sgd_row(table, rows[i], acc, 0, lr, sign)
        k = end


@njit(**KERNEL)
def _bad_lr(lr):
    return not (0.0 <= lr < math.inf)


@njit(**KERNEL)
def _bad_adam_scalars(step, lr, beta1, beta2, eps):
    return (
        step < 1
        or _bad_lr(lr)
        or not (0.0 <= beta1 < 1.0)
        or not (0.0 <= beta2 < 1.0)
        or not (0.0 < eps < math.inf)
    )


@njit(**KERNEL)
def _overlaps(table, rows, grads, order, m, v, acc):
    """A written array (table, m, v -- empty for SGD -- and the scratch acc) sharing memory with
    another argument (OVERLAPPING_ARRAYS).  O(1) address ranges."""
    return (
        written_overlaps(table, m, v, acc, rows, grads, order, order[:0])
        or written_overlaps(m, v, acc, rows, grads, order, order[:0], order[:0])
        or written_overlaps(v, acc, rows, grads, order, order[:0], order[:0], order[:0])
        or written_overlaps(acc, rows, grads, order, order[:0], order[:0], order[:0], order[:0])
    )


@njit(**KERNEL)
def sgd_step(table, rows, grads, order, lr, maximize, acc):
    if _bad_lr(lr):
        return BAD_HYPERPARAMETERS
    if _overlaps(table, rows, grads, order, table[:0], table[:0], acc):
        return OVERLAPPING_ARRAYS
    status = _check(table, rows, grads, order, acc, table, table, False)
    if status != 0:
        return status
    _walk_sgd(table, rows, grads, order, lr, -1.0 if maximize else 1.0, acc)
    return 0


@njit(**KERNEL)
def _adam_scalars(step, lr, beta1, beta2):
    """(step_size, scale2) = (lr / (1 - beta1^t), 1 / sqrt(1 - beta2^t)), t = float(step)."""
    bias1 = 1.0 - math.pow(beta1, np.float64(step))
    bias2 = 1.0 - math.pow(beta2, np.float64(step))
    return lr / bias1, 1.0 / math.sqrt(bias2)


@njit(**KERNEL)
def _adam_row(table, m, v, r, g, i, step_size, scale2, beta1, beta2, eps, sign):
    """Adam on table[r], m[r], v[r] with the gradient row g[i] (g: grads, or the 1-D scratch acc,
    i ignored); the reference's formula and order."""
    c1 = 1.0 - beta1
    c2 = 1.0 - beta2
    for j in range(table.shape[1]):
        gj = sign * np.float64(_at(g, i, j))
        m_new = beta1 * np.float64(m[r, j]) + c1 * gj
        v_new = beta2 * np.float64(v[r, j]) + c2 * (gj * gj)
        step = (step_size * m_new) / (math.sqrt(v_new) * scale2 + eps)
        table[r, j] = np.float64(table[r, j]) - step
        m[r, j] = m_new
        v[r, j] = v_new


@njit(**KERNEL)
def _walk_adam(table, rows, grads, order, m, v, step_size, scale2, beta1, beta2, eps, sign, acc):
    has_order = order.shape[0] != 0
    n = rows.shape[0]
    if table.shape[1] == 1:  # one column (value tables): scalar path, same formula
        c1 = 1.0 - beta1
        c2 = 1.0 - beta2
        k = 0
        while k < n:
            end = _group_end(rows, order, has_order, k)
            r = rows[_position(order, has_order, k)]
            gj = sign * _column_sum(grads, order, has_order, k, end)
            m_new = beta1 * np.float64(m[r, 0]) + c1 * gj
            v_new = beta2 * np.float64(v[r, 0]) + c2 * (gj * gj)
            step = (step_size * m_new) / (math.sqrt(v_new) * scale2 + eps)
            table[r, 0] = np.float64(table[r, 0]) - step
            m[r, 0] = m_new
            v[r, 0] = v_new
            k = end
        return
    k = 0
    while k < n:
        end = _group_end(rows, order, has_order, k)
        i = _position(order, has_order, k)
        if end == k + 1:
            _adam_row(table, m, v, rows[i], grads, i, step_size, scale2, beta1, beta2, eps, sign)
        else:
            _sum_group(grads, order, has_order, k, end, acc)
            _adam_row(table, m, v, rows[i], acc, 0, step_size, scale2, beta1, beta2, eps, sign)
        k = end


@njit(**KERNEL)
def adam_step(table, rows, grads, order, m, v, step, lr, beta1, beta2, eps, maximize, acc):
    if _bad_adam_scalars(step, lr, beta1, beta2, eps):
        return BAD_HYPERPARAMETERS
    if _overlaps(table, rows, grads, order, m, v, acc):
        return OVERLAPPING_ARRAYS
    status = _check(table, rows, grads, order, acc, m, v, True)
    if status != 0:
        return status
    step_size, scale2 = _adam_scalars(step, lr, beta1, beta2)
    _walk_adam(
        table,
        rows,
        grads,
        order,
        m,
        v,
        step_size,
        scale2,
        beta1,
        beta2,
        eps,
        -1.0 if maximize else 1.0,
        acc,
    )
    return 0
