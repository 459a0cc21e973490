r"""Reference table optimisers (plain Python): sparse SGD and lazy Adam over gradient rows.

Semantics shared by every backend (see :mod:`fastlmrl.optimizers` for the equations):

* Gradient rows with the same id are summed first, in float64, in index order:
  ``g = ((grads[i1] + grads[i2]) + grads[i3]) + ...`` with ``i1 < i2 < ...`` (no leading 0.0, so a
  single row is used exactly as given, -0.0 included).
* ``order`` is the stable argsort of ``rows`` computed by the caller, or an empty array, which
  stands for the identity ``arange(N)``: the stable argsort of ``rows`` exactly when ``rows`` is
  non-decreasing (sorted ids, the trainers' case), so no sort is needed.  The compiled kernels walk
  the groups of equal ids through it.  Every backend checks it (each ``(rows[order[k]], order[k])``
  strictly increasing; with an empty ``order``, ``rows[k - 1] <= rows[k]``), so a bad ``order``
  can never write out of bounds.
* ``acc`` is a float64 scratch of length >= V (the compiled kernels sum repeated rows into it).

Adam, per step (float64, in this order; ``pow`` and ``sqrt`` correctly rounded / libm)::

    bias1 = 1.0 - pow(beta1, float(step));    bias2 = 1.0 - pow(beta2, float(step))
    step_size = lr / bias1;                    scale2 = 1.0 / sqrt(bias2)

and per entry (one division and one square root)::

    g = sign * g_r[j]
    m_new = beta1 * m + (1.0 - beta1) * g
    v_new = beta2 * v + (1.0 - beta2) * (g * g)
    theta = theta - (step_size * m_new) / (sqrt(v_new) * scale2 + eps)

which is Kingma & Ba (2015), Algorithm 1, with its epsilon:
``lr * m_hat / (sqrt(v_hat) + eps)`` with ``m_hat = m_new / bias1``, ``v_hat = v_new / bias2``.

Status codes (:class:`fastlmrl.Status`; the contract is ``fastlmrl.optimizers.CONTRACT``), in
the order they are checked: BAD_HYPERPARAMETERS a hyper-parameter out of its domain (``lr``
finite >= 0; Adam: ``step`` >= 1, ``beta1``, ``beta2`` in [0, 1), ``eps`` finite > 0), checked
first: a zero divisor must not appear mid-update; OVERLAPPING_ARRAYS a written array (``table``,
``m``, ``v``, ``acc``) sharing memory with another argument; BAD_SHAPES inconsistent shapes;
BAD_ROWS a row id out of range; UNSORTED ``order`` empty but ``rows`` not sorted
(non-decreasing): pass the stable argsort; BAD_ORDER ``order`` not the stable argsort of
``rows``; BAD_GRADS a gradient not finite; BAD_MOMENTS (Adam) an entry of ``v`` in a row of the
batch is negative or NaN (a second moment is >= 0; checked in the pre-pass, so nothing is
written: the square root of a negative ``v`` would fail mid-update).
"""

__all__ = ["adam_step", "sgd_step"]
import math

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
from ._common import all_finite, first_out_of_range, written_overlaps


def _check(table, rows, grads, order, acc, moments=()):
    """Status of the pre-pass; with ``moments`` = (m, v), also every ``v`` entry of the rows of
    the batch is >= 0 (``not v >= 0`` catches NaN)."""
    n_states, n_cols = table.shape
    n = rows.shape[0]
    if (
        grads.shape[0] != n
        or grads.shape[1] != n_cols
        or order.shape[0] not in (0, n)
        or acc.shape[0] < n_cols
    ):
        return BAD_SHAPES
    for m in moments:
        if m.shape != table.shape:
            return BAD_SHAPES
    r_ = rows.tolist()
    if first_out_of_range(r_, n_states):
        return BAD_ROWS
    if order.shape[0] == 0:
        for k in range(1, n):
            if r_[k - 1] > r_[k]:
                return UNSORTED
    else:
        o_ = order.tolist()
        if first_out_of_range(o_, n):
            return BAD_ORDER
        for k in range(1, n):
            prev, cur = o_[k - 1], o_[k]
            if not (r_[prev] < r_[cur] or (r_[prev] == r_[cur] and prev < cur)):
                return BAD_ORDER
    for i in range(n):
        if not all_finite(grads[i].tolist()):
            return BAD_GRADS
    if moments:
        v = moments[1]
        for r in r_:
            for x in v[r].tolist():
                if not x >= 0.0:
                    return BAD_MOMENTS
    return 0


def _summed_rows(rows, grads):
    """{row id: float64 sum of its gradient rows, in index order} (first-appearance order)."""
    sums = {}
    for i, r in enumerate(rows.tolist()):
        g = grads[i].tolist()
        if r in sums:
            acc = sums[r]
            for j in range(len(g)):
                acc[j] = acc[j] + g[j]
        else:
            sums[r] = g
    return sums


def _writeable(**arrays) -> None:
    """A read-only table or moment raises ValueError before anything is written (the compiled
    kernels' typed signatures refuse it at the call), not after the first rows were updated."""
    for name, arr in arrays.items():
        if not arr.flags.writeable:
            raise ValueError(f"{name} is read-only")


def _overlaps(written, inputs) -> bool:
    """A written array (table, m, v, the scratch acc) sharing memory with another written array
    or an input (OVERLAPPING_ARRAYS): a write could change a row id after its range check."""
    return any(written_overlaps(w, *written[k + 1 :], *inputs) for k, w in enumerate(written))


def _bad_lr(lr) -> bool:
    return not (0.0 <= lr < math.inf)


def _bad_adam_scalars(step, lr, beta1, beta2, eps) -> bool:
    return (
        step < 1
        or _bad_lr(lr)
        or not (0.0 <= beta1 < 1.0)
        or not (0.0 <= beta2 < 1.0)
        or not (0.0 < eps < math.inf)
    )


def sgd_step(table, rows, grads, order, lr, maximize, acc):
    """table[r] <- table[r] - lr * g_r  (g_r multiplied by -1.0 first when maximize)."""
    if _bad_lr(lr):
        return BAD_HYPERPARAMETERS
    if _overlaps((table, acc), (rows, grads, order)):
        return OVERLAPPING_ARRAYS
    status = _check(table, rows, grads, order, acc)
    if status:
        return status
    sign = -1.0 if maximize else 1.0
    for r, g in _summed_rows(rows, grads).items():
        theta = table[r].tolist()
        for j in range(len(g)):
            gj = sign * g[j]
            theta[j] = theta[j] - lr * gj
        table[r] = theta
    return 0


def _adam_scalars(step, lr, beta1, beta2):
    """(step_size, scale2) = (lr / (1 - beta1^t), 1 / sqrt(1 - beta2^t)), t = float(step)."""
    bias1 = 1.0 - math.pow(beta1, float(step))
    bias2 = 1.0 - math.pow(beta2, float(step))
    return lr / bias1, 1.0 / math.sqrt(bias2)


def adam_step(table, rows, grads, order, m, v, step, lr, beta1, beta2, eps, maximize, acc):
    """Lazy Adam (Kingma & Ba 2015, Algorithm 1) on the rows present in the batch, with the bias
    corrections folded into the per-step scalars (see the module docstring for the order)."""
    if _bad_adam_scalars(step, lr, beta1, beta2, eps):
        return BAD_HYPERPARAMETERS
    _writeable(table=table, m=m, v=v)
    if _overlaps((table, m, v, acc), (rows, grads, order)):
        return OVERLAPPING_ARRAYS
    status = _check(table, rows, grads, order, acc, (m, v))
    if status:
        return status
    step_size, scale2 = _adam_scalars(step, lr, beta1, beta2)
    c1, c2 = 1.0 - beta1, 1.0 - beta2
    sign = -1.0 if maximize else 1.0
    for r, g in _summed_rows(rows, grads).items():
        theta, m_row, v_row = table[r].tolist(), m[r].tolist(), v[r].tolist()
        for j in range(len(g)):
            gj = sign * g[j]
            m_new = beta1 * m_row[j] + c1 * gj
            v_new = beta2 * v_row[j] + c2 * (gj * gj)
            theta[j] = theta[j] - (step_size * m_new) / (math.sqrt(v_new) * scale2 + eps)
            m_row[j] = m_new
            v_row[j] = v_new
        table[r], m[r], v[r] = theta, m_row, v_row
    return 0
