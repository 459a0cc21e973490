# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython table optimisers: sparse SGD and lazy Adam.

Same semantics, same rounding as the reference.

Rows are visited group by group through ``order`` (the stable argsort of ``rows``): a group of one
id is applied straight from its gradient row; a group of several is first summed in index order
into the float64 scratch ``acc`` (length >= V), so no (U, V) buffer is ever needed.

Built with ``-fno-math-errno`` (one of the common flags in setup.py): ``sqrt`` then need not set
``errno``, so gcc can vectorise the Adam row loop.  It changes no value (it is not
part of ``-ffast-math``'s value-changing flags; ``-ffp-contract=off`` still holds).
"""

__all__ = ["adam_step", "sgd_step"]
from libc.math cimport isfinite, pow, sqrt
from libc.stdint cimport int64_t

from fastlmrl._cython._common cimport real_t, index_t, out_of_range

ctypedef fused grad_t:  # a gradient row read straight from grads, or the float64 sum in acc
    float
    double

cdef enum:
    BAD_ROWS = 30
    BAD_GRADS = 31
    BAD_SHAPES = 32
    BAD_ORDER = 33


cdef int _check(real_t[:, ::1] table, const index_t[::1] rows, const real_t[:, ::1] grads,
                const int64_t[::1] order, double[::1] acc) noexcept nogil:
    cdef Py_ssize_t n_states = table.shape[0], n_cols = table.shape[1], n = rows.shape[0]
    cdef Py_ssize_t i, j, k
    cdef int64_t prev, cur
    if (grads.shape[0] != n or grads.shape[1] != n_cols or order.shape[0] != n
            or acc.shape[0] < n_cols):
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
            if not isfinite(grads[i, j]):
                return BAD_GRADS
    return 0


cdef inline Py_ssize_t _group_end(const index_t[::1] rows, const int64_t[::1] order,
                                  Py_ssize_t k) noexcept nogil:
    cdef index_t r = rows[order[k]]
    cdef Py_ssize_t end = k + 1
    while end < order.shape[0] and rows[order[end]] == r:
        end += 1
    return end


cdef inline void _sum_group(const real_t[:, ::1] grads, const int64_t[::1] order, Py_ssize_t k,
                            Py_ssize_t end, double* acc) noexcept nogil:
    cdef Py_ssize_t j, p, n_cols = grads.shape[1]
    cdef const real_t* g = &grads[order[k], 0]
    for j in range(n_cols):
        acc[j] = g[j]
    for p in range(k + 1, end):
        g = &grads[order[p], 0]
        for j in range(n_cols):
            acc[j] += g[j]


cdef inline void _sgd_row(real_t* theta, const grad_t* g, Py_ssize_t n_cols, double lr,
                          double sign) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n_cols):
        theta[j] = <real_t>(theta[j] - lr * (sign * <double>g[j]))


cdef int sgd_step_core(real_t[:, ::1] table, const index_t[::1] rows,
                       const real_t[:, ::1] grads, const int64_t[::1] order, double lr,
                       bint maximize, double[::1] acc) noexcept nogil:
    cdef Py_ssize_t k = 0, end, n_cols = table.shape[1]
    cdef double sign = -1.0 if maximize else 1.0
    cdef int status = _check(table, rows, grads, order, acc)
    if status:
        return status
    while k < order.shape[0]:
        end = _group_end(rows, order, k)
        if end == k + 1:
            _sgd_row(&table[rows[order[k]], 0], &grads[order[k], 0], n_cols, lr, sign)
        else:
            _sum_group(grads, order, k, end, &acc[0])
            _sgd_row(&table[rows[order[k]], 0], &acc[0], n_cols, lr, sign)
        k = end
    return 0


cdef inline void _adam_row(real_t* theta, real_t* m, real_t* v, const grad_t* g,
                           Py_ssize_t n_cols, double lr, double beta1, double beta2, double eps,
                           double bias1, double bias2, double sign) noexcept nogil:
    cdef Py_ssize_t j
    cdef double gj, m_new, v_new, m_hat, v_hat
    for j in range(n_cols):
        gj = sign * <double>g[j]
        m_new = beta1 * <double>m[j] + (1.0 - beta1) * gj
        v_new = beta2 * <double>v[j] + (1.0 - beta2) * (gj * gj)
        m_hat = m_new / bias1
        v_hat = v_new / bias2
        theta[j] = <real_t>(theta[j] - lr * m_hat / (sqrt(v_hat) + eps))
        m[j] = <real_t>m_new
        v[j] = <real_t>v_new


cdef int adam_step_core(real_t[:, ::1] table, const index_t[::1] rows,
                        const real_t[:, ::1] grads, const int64_t[::1] order, real_t[:, ::1] m,
                        real_t[:, ::1] v, int64_t step, double lr, double beta1, double beta2,
                        double eps, bint maximize, double[::1] acc) noexcept nogil:
    cdef Py_ssize_t k = 0, end, r, n_cols = table.shape[1]
    cdef double sign = -1.0 if maximize else 1.0
    cdef double bias1 = 1.0 - pow(beta1, <double>step)
    cdef double bias2 = 1.0 - pow(beta2, <double>step)
    cdef int status
    if (m.shape[0] != table.shape[0] or m.shape[1] != n_cols or v.shape[0] != table.shape[0]
            or v.shape[1] != n_cols):
        return BAD_SHAPES
    status = _check(table, rows, grads, order, acc)
    if status:
        return status
    while k < order.shape[0]:
        end = _group_end(rows, order, k)
        r = rows[order[k]]
        if end == k + 1:
            _adam_row(&table[r, 0], &m[r, 0], &v[r, 0], &grads[order[k], 0], n_cols, lr, beta1,
                      beta2, eps, bias1, bias2, sign)
        else:
            _sum_group(grads, order, k, end, &acc[0])
            _adam_row(&table[r, 0], &m[r, 0], &v[r, 0], &acc[0], n_cols, lr, beta1, beta2, eps,
                      bias1, bias2, sign)
        k = end
    return 0


def sgd_step(real_t[:, ::1] table, const index_t[::1] rows, const real_t[:, ::1] grads,
             const int64_t[::1] order, double lr, bint maximize, double[::1] acc):
    cdef int status
    with nogil:
        status = sgd_step_core(table, rows, grads, order, lr, maximize, acc)
    return status


def adam_step(real_t[:, ::1] table, const index_t[::1] rows, const real_t[:, ::1] grads,
              const int64_t[::1] order, real_t[:, ::1] m, real_t[:, ::1] v, int64_t step,
              double lr, double beta1, double beta2, double eps, bint maximize,
              double[::1] acc):
    cdef int status
    with nogil:
        status = adam_step_core(table, rows, grads, order, m, v, step, lr, beta1, beta2, eps,
                                maximize, acc)
    return status
