"""Numba table optimisers: sparse SGD and lazy Adam.

Same semantics, same rounding as the reference.

Rows are visited group by group through ``order`` (the stable argsort of ``rows``): a group of one
id is applied straight from its gradient row; a group of several is first summed in index order
into the float64 scratch ``acc`` (length >= V), so no (U, V) buffer is ever needed.
"""

__all__ = ["adam_step", "sgd_step"]
import math

import numpy as np
from numba import njit

from ._common import NJIT, out_of_range

# error_model="numpy": IEEE division without Python's zero-divisor check, which would stop LLVM from
# vectorising the row loops.  It changes no result: the divisors 1 - beta^t and sqrt(v_hat) + eps
# are > 0 for valid arguments (beta in [0, 1), t >= 1, eps > 0, v >= 0).  No fastmath.
KERNEL = dict(NJIT, error_model="numpy")

BAD_ROWS = 30
BAD_GRADS = 31
BAD_SHAPES = 32
BAD_ORDER = 33


@njit(**KERNEL)
def _check(table, rows, grads, order, acc, m, v, check_moments):
    n_states, n_cols = table.shape
    n = rows.shape[0]
    if (grads.shape[0] != n or grads.shape[1] != n_cols or order.shape[0] != n
            or acc.shape[0] < n_cols):
        return BAD_SHAPES
    if check_moments and (m.shape[0] != n_states or m.shape[1] != n_cols
                          or v.shape[0] != n_states or v.shape[1] != n_cols):
        return BAD_SHAPES
    if out_of_range(rows, n_states):
        return BAD_ROWS
    if out_of_range(order, n):
        return BAD_ORDER
    for k in range(1, n):
        prev = order[k - 1]
        cur = order[k]
        if not (rows[prev] < rows[cur] or (rows[prev] == rows[cur] and prev < cur)):
            return BAD_ORDER
    for i in range(n):
        for j in range(n_cols):
            if not np.isfinite(grads[i, j]):
                return BAD_GRADS
    return 0


@njit(**KERNEL)
def _group_end(rows, order, k):
    """First position after k in ``order`` whose id differs from rows[order[k]]."""
    r = rows[order[k]]
    end = k + 1
    while end < order.shape[0] and rows[order[end]] == r:
        end += 1
    return end


@njit(**KERNEL)
def _sum_group(grads, order, k, end, acc):
    """acc[:V] = grads[order[k]] + grads[order[k+1]] + ... (float64, index order)."""
    first = order[k]
    for j in range(grads.shape[1]):
        acc[j] = grads[first, j]
    for p in range(k + 1, end):
        i = order[p]
        for j in range(grads.shape[1]):
            acc[j] += grads[i, j]


@njit(**KERNEL)
def _sgd_row(theta, g, lr, sign):
    for j in range(theta.shape[0]):
        theta[j] = theta[j] - lr * (sign * np.float64(g[j]))


@njit(**KERNEL)
def sgd_step(table, rows, grads, order, lr, maximize, acc):
    status = _check(table, rows, grads, order, acc, table, table, False)
    if status != 0:
        return status
    sign = -1.0 if maximize else 1.0
    k = 0
    while k < order.shape[0]:
        end = _group_end(rows, order, k)
        r = rows[order[k]]
        if end == k + 1:
            _sgd_row(table[r], grads[order[k]], lr, sign)
        else:
            _sum_group(grads, order, k, end, acc)
            _sgd_row(table[r], acc, lr, sign)
        k = end
    return 0


@njit(**KERNEL)
def _adam_row(theta, m, v, g, lr, beta1, beta2, eps, bias1, bias2, sign):
    for j in range(theta.shape[0]):
        gj = sign * np.float64(g[j])
        m_new = beta1 * np.float64(m[j]) + (1.0 - beta1) * gj
        v_new = beta2 * np.float64(v[j]) + (1.0 - beta2) * (gj * gj)
        m_hat = m_new / bias1
        v_hat = v_new / bias2
        theta[j] = theta[j] - lr * m_hat / (math.sqrt(v_hat) + eps)
        m[j] = m_new
        v[j] = v_new


@njit(**KERNEL)
def adam_step(table, rows, grads, order, m, v, step, lr, beta1, beta2, eps, maximize, acc):
    status = _check(table, rows, grads, order, acc, m, v, True)
    if status != 0:
        return status
    bias1 = 1.0 - math.pow(beta1, np.float64(step))
    bias2 = 1.0 - math.pow(beta2, np.float64(step))
    sign = -1.0 if maximize else 1.0
    k = 0
    while k < order.shape[0]:
        end = _group_end(rows, order, k)
        r = rows[order[k]]
        if end == k + 1:
            _adam_row(table[r], m[r], v[r], grads[order[k]], lr, beta1, beta2, eps, bias1, bias2,
                      sign)
        else:
            _sum_group(grads, order, k, end, acc)
            _adam_row(table[r], m[r], v[r], acc, lr, beta1, beta2, eps, bias1, bias2, sign)
        k = end
    return 0
