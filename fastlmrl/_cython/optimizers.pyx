# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython table optimisers: sparse SGD and lazy Adam.

Same semantics, same operation order and rounding as the reference (``fastlmrl._python.optimizers``
has the Adam formula: per-step scalars ``step_size = lr / (1 - beta1^t)`` and
``scale2 = 1 / sqrt(1 - beta2^t)``, then one division and one square root per entry).

Rows are visited group by group through ``order`` (the stable argsort of ``rows``, or, when
``order`` is empty, the identity, checked to be one: ``rows`` non-decreasing): a group of one id is
applied straight from its gradient row; a group of several is first summed in index order into the
float64 scratch ``acc`` (length >= V), so no (U, V) buffer is ever needed.  A one-column table
(the value tables) takes a scalar path without the vector loop's set-up.

Built with ``-fno-math-errno`` (one of the common flags in setup.py): ``sqrt`` then need not set
``errno``, so gcc can vectorise the Adam row loop.  It changes no value (it is not
part of ``-ffast-math``'s value-changing flags; ``-ffp-contract=off`` still holds).
"""

__all__ = ["adam_step", "sgd_step"]
from libc.math cimport pow, sqrt, isfinite, INFINITY
from libc.stdint cimport int64_t

from fastlmrl._cython._common cimport real_t, index_t, out_of_range
from fastlmrl._cython.overlap cimport span_1d, span_2d, written_overlap
# status codes: fastlmrl._status.Status (status.pxd is generated from it)
from fastlmrl._cython cimport status as st

ctypedef fused grad_t:  # a gradient row read straight from grads, or the float64 sum in acc
    float
    double



cdef int _check(real_t[:, ::1] table, const index_t[::1] rows, const real_t[:, ::1] grads,
                const int64_t[::1] order, double[::1] acc) noexcept nogil:
    cdef Py_ssize_t n_states = table.shape[0], n_cols = table.shape[1], n = rows.shape[0]
    cdef Py_ssize_t n_order = order.shape[0], k
    cdef int64_t prev, cur
    if (grads.shape[0] != n or grads.shape[1] != n_cols or (n_order != n and n_order != 0)
            or acc.shape[0] < n_cols):
        return st.BAD_SHAPES
    if out_of_range(rows, n_states):
        return st.BAD_ROWS
    if n_order == 0:
        for k in range(1, n):
            if rows[k - 1] > rows[k]:
                return st.UNSORTED
    else:
        if out_of_range(order, n):
            return st.BAD_ORDER
        for k in range(1, n):
            prev = order[k - 1]
            cur = order[k]
            if not (rows[prev] < rows[cur] or (rows[prev] == rows[cur] and prev < cur)):
                return st.BAD_ORDER
    return 0


cdef int _check_values(const index_t[::1] rows, const real_t[:, ::1] grads,
                       const int64_t[::1] order, const real_t[:, ::1] v,
                       bint check_moments) noexcept nogil:
    """BAD_GRADS when a gradient entry is not finite, else BAD_MOMENTS when an entry of ``v`` in a
    row of the batch is negative or NaN (sqrt(v_new) must not turn into NaN mid-update); ids and
    order already checked.  One pass over the batch, a gradient row and its moment row in one
    loop with one flag (no exit per row; branch-free tests that vectorise: x - x is NaN for +-inf
    and NaN, 0 for every finite x), in the reverse of the update's order, so the rows it loads
    last are the ones the update needs first, still in cache.  A run of equal ids reads its moment
    row once.  Which check failed is found again on a refused call only."""
    cdef Py_ssize_t k, i, j, n_cols = grads.shape[1]
    cdef bint has_order = order.shape[0] != 0, bad = False
    cdef int64_t r, previous = -1
    cdef const real_t* g
    cdef const real_t* row
    cdef real_t x
    for k in range(rows.shape[0] - 1, -1, -1):
        i = _position(order, has_order, k)
        g = &grads[i, 0]
        r = rows[i]
        if check_moments and r != previous:
            previous = r
            row = &v[r, 0]
            for j in range(n_cols):
                x = g[j] - g[j]
                bad = bad | (x != 0) | (not (row[j] >= 0))
        else:
            for j in range(n_cols):
                x = g[j] - g[j]
                bad = bad | (x != 0)
    if not bad:
        return 0
    for i in range(grads.shape[0]):
        for j in range(n_cols):
            if not isfinite(grads[i, j]):
                return st.BAD_GRADS
    return st.BAD_MOMENTS


cdef inline Py_ssize_t _position(const int64_t[::1] order, bint has_order,
                                 Py_ssize_t k) noexcept nogil:
    return order[k] if has_order else k


cdef inline Py_ssize_t _group_end(const index_t[::1] rows, const int64_t[::1] order,
                                  bint has_order, Py_ssize_t k) noexcept nogil:
    """First position after k whose id differs from the id at position k."""
    cdef index_t r = rows[_position(order, has_order, k)]
    cdef Py_ssize_t end = k + 1, n = rows.shape[0]
    while end < n and rows[_position(order, has_order, end)] == r:
        end += 1
    return end


cdef inline void _sum_group(const real_t[:, ::1] grads, const int64_t[::1] order, bint has_order,
                            Py_ssize_t k, Py_ssize_t end, double* acc) noexcept nogil:
    cdef Py_ssize_t j, p, n_cols = grads.shape[1]
    cdef const real_t* g = &grads[_position(order, has_order, k), 0]
    for j in range(n_cols):
        acc[j] = g[j]
    for p in range(k + 1, end):
        g = &grads[_position(order, has_order, p), 0]
        for j in range(n_cols):
            acc[j] += g[j]


cdef inline void _sgd_row(real_t* theta, const grad_t* g, Py_ssize_t n_cols, double lr,
                          double sign) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n_cols):
        theta[j] = <real_t>(<double>theta[j] - lr * (sign * <double>g[j]))


cdef inline double _column_sum(const real_t[:, ::1] grads, const int64_t[::1] order,
                               bint has_order, Py_ssize_t k, Py_ssize_t end) noexcept nogil:
    """grads[order[k], 0] + ... + grads[order[end - 1], 0] (float64, index order): the summed
    gradient of a group of a one-column table."""
    cdef double g = grads[_position(order, has_order, k), 0]
    cdef Py_ssize_t p
    for p in range(k + 1, end):
        g += grads[_position(order, has_order, p), 0]
    return g


cdef inline bint _bad_lr(double lr) noexcept nogil:
    return not (0.0 <= lr < INFINITY)


cdef inline bint _bad_adam_scalars(int64_t step, double lr, double beta1, double beta2,
                                   double eps) noexcept nogil:
    return (step < 1 or _bad_lr(lr) or not (0.0 <= beta1 < 1.0) or not (0.0 <= beta2 < 1.0)
            or not (0.0 < eps < INFINITY))


cdef bint _overlaps(real_t[:, ::1] table, const index_t[::1] rows, const real_t[:, ::1] grads,
                    const int64_t[::1] order, real_t[:, ::1] m, real_t[:, ::1] v,
                    bint has_moments, double[::1] acc) noexcept nogil:
    """OVERLAPPING_ARRAYS: a written array (table, m, v, the scratch acc) sharing
    memory with another argument.  O(1) address ranges."""
    cdef const char* start[7]
    cdef size_t size[7]
    span_2d(&table[0, 0], table.shape[0], table.shape[1], sizeof(real_t), start, size, 0)
    span_2d(&m[0, 0], m.shape[0] if has_moments else 0, m.shape[1], sizeof(real_t), start, size, 1)
    span_2d(&v[0, 0], v.shape[0] if has_moments else 0, v.shape[1], sizeof(real_t), start, size, 2)
    span_1d(&acc[0], acc.shape[0], sizeof(double), start, size, 3)
    span_1d(&rows[0], rows.shape[0], sizeof(index_t), start, size, 4)
    span_2d(&grads[0, 0], grads.shape[0], grads.shape[1], sizeof(real_t), start, size, 5)
    span_1d(&order[0], order.shape[0], sizeof(int64_t), start, size, 6)
    return written_overlap(4, 7, start, size)


cdef int sgd_step_core(real_t[:, ::1] table, const index_t[::1] rows,
                       const real_t[:, ::1] grads, const int64_t[::1] order, double lr,
                       bint maximize, double[::1] acc) noexcept nogil:
    cdef Py_ssize_t k = 0, end, i, p, n = rows.shape[0], n_cols = table.shape[1]
    cdef double sign = -1.0 if maximize else 1.0, g
    cdef bint has_order = order.shape[0] != 0
    cdef int status
    if _bad_lr(lr):
        return st.BAD_HYPERPARAMETERS
    if _overlaps(table, rows, grads, order, table, table, False, acc):
        return st.OVERLAPPING_ARRAYS
    status = _check(table, rows, grads, order, acc)
    if status == 0:
        status = _check_values(rows, grads, order, table, False)
    if status:
        return status
    if n_cols == 1:  # one column: scalar path
        while k < n:
            end = _group_end(rows, order, has_order, k)
            g = _column_sum(grads, order, has_order, k, end)
            _sgd_row(&table[rows[_position(order, has_order, k)], 0], &g, 1, lr, sign)
            k = end
        return 0
    while k < n:
        end = _group_end(rows, order, has_order, k)
        i = _position(order, has_order, k)
        if end == k + 1:
            _sgd_row(&table[rows[i], 0], &grads[i, 0], n_cols, lr, sign)
        else:
            _sum_group(grads, order, has_order, k, end, &acc[0])
            _sgd_row(&table[rows[i], 0], &acc[0], n_cols, lr, sign)
        k = end
    return 0


cdef inline void _adam_entry(real_t* theta, real_t* m, real_t* v, double g, double step_size,
                             double scale2, double beta1, double beta2, double eps,
                             double sign) noexcept nogil:
    """One entry, in the reference's order (Kingma & Ba 2015, Algorithm 1, folded scalars)."""
    cdef double gj = sign * g
    cdef double m_new = beta1 * <double>m[0] + (1.0 - beta1) * gj
    cdef double v_new = beta2 * <double>v[0] + (1.0 - beta2) * (gj * gj)
    theta[0] = <real_t>(<double>theta[0] - (step_size * m_new) / (sqrt(v_new) * scale2 + eps))
    m[0] = <real_t>m_new
    v[0] = <real_t>v_new


cdef inline void _adam_row(real_t* theta, real_t* m, real_t* v, const grad_t* g,
                           Py_ssize_t n_cols, double step_size, double scale2, double beta1,
                           double beta2, double eps, double sign) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n_cols):
        _adam_entry(&theta[j], &m[j], &v[j], <double>g[j], step_size, scale2, beta1, beta2, eps,
                    sign)


cdef int adam_step_core(real_t[:, ::1] table, const index_t[::1] rows,
                        const real_t[:, ::1] grads, const int64_t[::1] order, real_t[:, ::1] m,
                        real_t[:, ::1] v, int64_t step, double lr, double beta1, double beta2,
                        double eps, bint maximize, double[::1] acc) noexcept nogil:
    cdef Py_ssize_t k = 0, end, i, p, r, n = rows.shape[0], n_cols = table.shape[1]
    cdef double sign = -1.0 if maximize else 1.0, g
    # per-step scalars: step_size = lr / (1 - beta1^t), scale2 = 1 / sqrt(1 - beta2^t)
    cdef double step_size = lr / (1.0 - pow(beta1, <double>step))
    cdef double scale2 = 1.0 / sqrt(1.0 - pow(beta2, <double>step))
    cdef bint has_order = order.shape[0] != 0
    cdef int status
    if _bad_adam_scalars(step, lr, beta1, beta2, eps):
        return st.BAD_HYPERPARAMETERS
    if _overlaps(table, rows, grads, order, m, v, True, acc):
        return st.OVERLAPPING_ARRAYS
    if (m.shape[0] != table.shape[0] or m.shape[1] != n_cols or v.shape[0] != table.shape[0]
            or v.shape[1] != n_cols):
        return st.BAD_SHAPES
    status = _check(table, rows, grads, order, acc)
    if status == 0:
        status = _check_values(rows, grads, order, v, True)
    if status:
        return status
    if n_cols == 1:  # one column (value tables): scalar path, same formula
        while k < n:
            end = _group_end(rows, order, has_order, k)
            g = _column_sum(grads, order, has_order, k, end)
            r = rows[_position(order, has_order, k)]
            _adam_entry(&table[r, 0], &m[r, 0], &v[r, 0], g, step_size, scale2, beta1, beta2, eps,
                        sign)
            k = end
        return 0
    while k < n:
        end = _group_end(rows, order, has_order, k)
        i = _position(order, has_order, k)
        r = rows[i]
        if end == k + 1:
            _adam_row(&table[r, 0], &m[r, 0], &v[r, 0], &grads[i, 0], n_cols, step_size, scale2,
                      beta1, beta2, eps, sign)
        else:
            _sum_group(grads, order, has_order, k, end, &acc[0])
            _adam_row(&table[r, 0], &m[r, 0], &v[r, 0], &acc[0], n_cols, step_size, scale2,
                      beta1, beta2, eps, sign)
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
