r"""Table optimisers: SGD and Adam steps that apply gradient rows to a table by state id.

A gradient for a table :math:`\theta` of shape (S, V) (e.g. logits or values per context id) is
passed *sparsely*: ``rows`` (N ids in [0, S)) and ``grads`` (N × V), row ``i`` being the gradient
with respect to :math:`\theta[\text{rows}_i]`.  The dense gradient is never built.  Rows with the
same id accumulate (scatter-add, like ``np.add.at``): for each distinct id ``r`` of the batch

.. math::  g_r = \sum_{i:\ \text{rows}_i = r} \text{grads}_i

summed in float64 in index order ``i`` (``((grads[i1] + grads[i2]) + grads[i3]) + ...``, no leading
0.0), and only those rows of the table (and of the optimiser state) are touched.  With
``maximize=True`` the step ascends: :math:`g_r` is multiplied by -1.0 before it is used.

Implementation: the kernels walk the rows through ``order``, the stable argsort of ``rows``, sum a
repeated id's rows into a float64 scratch row ``acc`` of length V and apply the step row by row
(no (U, V) buffer).  The wrapper first passes an empty ``order``, which the kernels read as the
identity: that *is* the stable argsort when ``rows`` is sorted (non-decreasing), e.g. the distinct
sorted rows of :func:`fastlmrl.ppo_loss_tabular`, so no sort is done; a kernel checks it in its
O(N) pre-pass and answers ``Status.UNSORTED`` when ``rows`` is not sorted, and only then does the
wrapper compute ``argsort(rows, kind="stable")`` (O(N log N)) and call again.  Before writing
anything a kernel checks that ``order`` really is the stable argsort of ``rows`` (so it cannot
write out of bounds, whoever calls it), that ids are in range, that every gradient is finite and
(Adam) that every entry of ``v`` in the rows of the batch is >= 0 (a negative or NaN second moment
is refused with a ValueError naming ``v``, ``Status.BAD_MOMENTS``, instead of turning the row into
NaN mid-update).  The kernels, their arguments and statuses: :data:`CONTRACT`.

Numerics: float64 arithmetic; each stored value (table, m, v entry) is rounded once, identically
in every backend, so the backends agree bit for bit.  On any error nothing is modified.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from . import _backend
from . import _validation as check
from ._contract import Arg, Kernel, Kind, Topic
from ._status import Status

if TYPE_CHECKING:  # what readers and tools follow: the reference kernels
    from ._python import optimizers as _kernels
else:  # the active backend's kernels, rebound by set_backend (fastlmrl._backend.bind)
    _kernels = _backend.bind(__name__, "_kernels")

__all__ = ["Adam", "SGD", "adam_step", "sgd_step"]


# ----------------------------------------------------------------------------- the contract
def _negative_moment(args, shown) -> str:
    """BAD_MOMENTS: the first entry of ``v`` in a row of the batch that is negative or NaN."""
    v, rows = np.asarray(args["v"]), np.asarray(args["rows"])
    bad = np.argwhere(~(v[rows] >= 0))
    if not bad.size:
        return f"invalid {shown('v')}"
    i, j = (int(k) for k in bad[0])
    return (
        f"{shown('v')}[{int(rows[i])}, {j}] = {v[rows[i], j]} is negative or NaN "
        "(a second moment is >= 0); nothing was modified"
    )


def _unsorted(args, shown) -> str:
    """UNSORTED (the wrappers sort and call again; a direct caller passes the stable argsort)."""
    return (
        f"{shown('rows')} is not sorted (non-decreasing) and {shown('order')} is empty; pass "
        f"{shown('order')} = argsort({shown('rows')}, kind='stable')"
    )


_TABLE = Arg("table", Kind.TABLE, written=True)
#: UNSORTED: ``order`` is empty (the identity) but ``rows`` is not sorted
_ROWS = Arg(
    "rows", Kind.IDS, status=Status.BAD_ROWS, bound=("table", 0), other_statuses=(Status.UNSORTED,)
)
_GRADS = Arg("grads", Kind.ARRAY, status=Status.BAD_GRADS, ctype="real_t[:, ::1]")
#: the stable argsort of rows, or empty: the identity (rows sorted)
_ORDER = Arg("order", Kind.ARRAY, status=Status.BAD_ORDER, ctype="int64_t[::1]")
_HYPER = Status.BAD_HYPERPARAMETERS  # checked first, before any other argument
_LR = Arg("lr", Kind.REAL, status=_HYPER, domain="[0, inf)")
_MAXIMIZE = Arg("maximize", Kind.FLAG)
_ACC = Arg("acc", Kind.ARRAY, written=True, ctype="double[::1]")  # float64 scratch, length >= V
_CALL = (Status.BAD_SHAPES, Status.OVERLAPPING_ARRAYS)
_MESSAGES = {Status.UNSORTED: _unsorted}

#: The kernels of this topic, in every backend (``fastlmrl._python/_numba/_cython.optimizers``);
#: tests/test_contract.py checks each implementation against it.
CONTRACT = Topic(
    "optimizers",
    (
        Kernel(
            "adam_step",
            (
                _TABLE,
                _ROWS,
                _GRADS,
                _ORDER,
                Arg("m", Kind.TABLE, written=True),
                Arg("v", Kind.TABLE, written=True, status=Status.BAD_MOMENTS),
                Arg("step", Kind.SCALAR, status=_HYPER, domain="[1, inf)", ctype="int64_t"),
                _LR,
                Arg("beta1", Kind.REAL, status=_HYPER, domain="[0, 1)"),
                Arg("beta2", Kind.REAL, status=_HYPER, domain="[0, 1)"),
                Arg("eps", Kind.REAL, status=_HYPER, domain="(0, inf)"),
                _MAXIMIZE,
                _ACC,
            ),
            _CALL,
            messages={**_MESSAGES, Status.BAD_MOMENTS: _negative_moment},
        ),
        Kernel(
            "sgd_step",
            (_TABLE, _ROWS, _GRADS, _ORDER, _LR, _MAXIMIZE, _ACC),
            _CALL,
            messages=_MESSAGES,
        ),
    ),
)

_UNSORTED = int(Status.UNSORTED)  # order empty but rows not sorted: the wrapper sorts, calls again
# An empty ``order``: "rows is sorted, walk it in index order" (checked by the kernels).
_NO_ORDER = np.empty(0, dtype=np.int64)
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_I32, _I64 = np.dtype(np.int32), np.dtype(np.int64)


# The scalar checks below take a fast path for the common exact types (float, int, bool) and
# otherwise defer to fastlmrl._validation, which raises the errors (same messages either way).
def _flag(x, name: str) -> bool:
    if x is False or x is True:
        return x
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(x).__name__}")
    return bool(x)


def _lr(lr) -> float:
    if type(lr) is float and 0.0 <= lr < math.inf:
        return lr
    return check.real(lr, "lr", 0.0, None)


def _betas(beta1, beta2) -> tuple[float, float]:
    if type(beta1) is float and type(beta2) is float and 0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0:
        return beta1, beta2
    return (
        check.real(beta1, "beta1", 0.0, 1.0, high_open=True),
        check.real(beta2, "beta2", 0.0, 1.0, high_open=True),
    )


def _eps(eps) -> float:
    if type(eps) is float and 0.0 < eps < math.inf:
        return eps
    return check.real(eps, "eps", 0.0, None, low_open=True)


def _step(step) -> int:
    if type(step) is int and 1 <= step <= check.INT64_MAX:
        return step
    return check.positive_int(step, "step")


def _table(table, name: str = "table") -> np.ndarray:
    """:func:`fastlmrl._validation.table` (2-D, float32/64, C-contiguous, writeable, not empty)."""
    if type(table) is np.ndarray and table.ndim == 2 and table.size:
        dtype = table.dtype
        if dtype is _F32 or dtype is _F64:
            flags = table.flags
            if flags.c_contiguous and flags.writeable:
                return table
    return check.table(table, name)


def _ids(rows) -> np.ndarray:
    """:func:`fastlmrl._validation.ids` (1-D contiguous int32/int64, others converted)."""
    if type(rows) is np.ndarray and rows.ndim == 1:
        dtype = rows.dtype
        flags = rows.flags
        if (dtype is _I64 or dtype is _I32) and flags.c_contiguous and flags.writeable:
            return rows
    return check.ids(rows, "rows")  # (a read-only input becomes a writeable alias, no copy)


def _stable_order(rows: np.ndarray, n_rows: int) -> np.ndarray:
    """``argsort(rows, kind="stable")`` as int64, for ids already checked to lie in [0, n_rows).
    When they fit in 16 bits NumPy's stable sort of a uint16 copy is a radix sort (~10x faster,
    same order)."""
    if n_rows <= 65536:
        return np.argsort(rows.astype(np.uint16), kind="stable").astype(np.int64)
    return np.argsort(rows, kind="stable").astype(np.int64, copy=False)


def _batch(table, rows, grads):
    """Validated (rows, grads, acc) for the kernels (the caller chooses ``order``)."""
    rows = _ids(rows)
    n, n_cols = rows.shape[0], table.shape[1]
    arr = grads if type(grads) is np.ndarray else np.asarray(grads)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"grads must hold real numbers, got dtype {arr.dtype}")
    if n == 0 and arr.size == 0:
        arr = arr.reshape(0, n_cols)
    if arr.ndim != 2:
        raise ValueError(f"grads must be 2-dimensional (N, V), got shape {arr.shape}")
    if arr.shape != (n, n_cols):
        raise ValueError(f"grads must have shape (len(rows), V) = {(n, n_cols)}, got {arr.shape}")
    grads = check.kernel_input(np.ascontiguousarray(arr, dtype=table.dtype))
    acc = np.empty(n_cols, dtype=np.float64)
    return rows, grads, acc


def _moments(table, m, v):
    m = _table(m, "m")
    v = _table(v, "v")
    shape, dtype = table.shape, table.dtype
    for name, arr in (("m", m), ("v", v)):
        if arr.shape != shape or arr.dtype != dtype:
            raise ValueError(
                f"{name} must have the shape and dtype of table {table.shape} {table.dtype}, "
                f"got {arr.shape} {arr.dtype}"
            )
    # Three distinct arrays that each own their buffer cannot overlap (the cheap common case).
    if (
        m is table
        or v is table
        or m is v
        or not table.flags.owndata
        or not m.flags.owndata
        or not v.flags.owndata
    ):
        if np.may_share_memory(m, table) or np.may_share_memory(v, table):
            raise ValueError("m and v must not share memory with table")
        if np.may_share_memory(m, v):
            raise ValueError("m and v must be two different arrays")
    return m, v


def sgd_step(table, rows, grads, lr, *, maximize=False) -> None:
    r"""One SGD step on the rows present in the batch, in place.

    .. math::  \theta[r] \leftarrow \theta[r] - \text{lr}\cdot g_r
               \qquad (g_r \text{ the float64 sum of the gradient rows of id } r)

    (Robbins & Monro 1951; Goodfellow, Bengio & Courville 2016, Algorithm 8.1.)  Equivalent to the
    dense step with ``G = zeros((S, V)); np.add.at(G, rows, grads)`` except that absent rows are
    not touched at all.

    Parameters
    ----------
    table : (S, V) float32/float64, C-contiguous, updated in place
    rows : 1-D integer ids in [0, S) (repeats allowed)
    grads : (len(rows), V) finite real array, converted to ``table``'s dtype
    lr : learning rate >= 0
    maximize : ascend instead of descend (the gradient is multiplied by -1.0)
    """
    table = _table(table)
    lr = _lr(lr)
    maximize = _flag(maximize, "maximize")
    rows, grads, acc = _batch(table, rows, grads)
    order = _NO_ORDER  # rows sorted: the identity; else the kernel says so and nothing is written
    status = _kernels.sgd_step(table, rows, grads, order, lr, maximize, acc)
    if status == _UNSORTED:  # ids are in range (checked before sortedness): sort, call again
        order = _stable_order(rows, table.shape[0])
        status = _kernels.sgd_step(table, rows, grads, order, lr, maximize, acc)
    if status:
        CONTRACT["sgd_step"].raise_for_call(status, (table, rows, grads, order, lr, maximize, acc))


def adam_step(
    table, rows, grads, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-8, *, maximize=False
) -> None:
    r"""One lazy ("sparse") Adam step on the rows present in the batch, in place.

    Kingma & Ba (2015), Algorithm 1, applied only to the rows ``r`` of the batch (as
    ``torch.optim.SparseAdam``): the moments of absent rows are untouched, while the bias correction
    uses the global step count ``step`` = t >= 1 (the number of steps taken so far, this one
    included).  Algorithm 1 reads

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g, \quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g^2, \quad
        \theta_t = \theta_{t-1} - \alpha\,\hat m_t / (\sqrt{\hat v_t} + \epsilon)

    with :math:`\hat m_t = m_t/(1-\beta_1^t)`, :math:`\hat v_t = v_t/(1-\beta_2^t)`.  As the paper
    remarks at the end of its §2, the bias corrections can be folded into per-step scalars; here
    they are folded *without* changing :math:`\epsilon` (the same update, to rounding):
    :math:`\alpha\hat m_t/(\sqrt{\hat v_t}+\epsilon) = \alpha_t m_t/(\sqrt{v_t}\,c_t+\epsilon)`
    with :math:`\alpha_t = \alpha/(1-\beta_1^t)` and :math:`c_t = 1/\sqrt{1-\beta_2^t}`, which
    costs one division and one square root per entry instead of three divisions and a root.
    Computed in float64, in this order, once per step:

    .. math::
        \alpha_t = \text{lr} / (1 - \beta_1^t), \qquad c_t = 1 / \sqrt{1 - \beta_2^t}

    then for each distinct id ``r`` and column ``j``:

    .. math::
        g &= g_r[j] \quad(\times -1.0 \text{ if maximize}) \\
        m_t &= \beta_1\,m_{t-1} + (1-\beta_1)\,g \\
        v_t &= \beta_2\,v_{t-1} + (1-\beta_2)\,(g \cdot g) \\
        \theta_t &= \theta_{t-1} - (\alpha_t\,m_t) / (\sqrt{v_t}\cdot c_t + \epsilon)

    with :math:`\beta^t` = ``pow(beta, float(t))`` (libm) and :math:`\theta, m, v` read from their
    tables and each rounded once on store (:math:`\theta_t` is computed from the unrounded
    :math:`m_t, v_t`).  This is Algorithm 1's :math:`\epsilon`, added to :math:`\sqrt{\hat v_t}`
    (as ``torch.optim.Adam`` does), not the paper's §2 variant with :math:`\hat\epsilon` added to
    :math:`\sqrt{v_t}` (which ``torch.optim.SparseAdam`` uses); the two differ only through
    :math:`\epsilon`.

    Parameters
    ----------
    table : (S, V) float32/float64, C-contiguous, updated in place
    rows, grads : as in :func:`sgd_step`
    m, v : first and second moment tables, shape and dtype of ``table`` (start at zeros; v >= 0)
    step : int >= 1, the global step number t used for bias correction
    lr : >= 0;  beta1, beta2 : in [0, 1);  eps : > 0
    """
    table = _table(table)
    m, v = _moments(table, m, v)
    step = _step(step)
    lr = _lr(lr)
    beta1, beta2 = _betas(beta1, beta2)
    eps = _eps(eps)
    maximize = _flag(maximize, "maximize")
    rows, grads, acc = _batch(table, rows, grads)
    args = (m, v, step, lr, beta1, beta2, eps, maximize, acc)
    order = _NO_ORDER  # as in sgd_step
    status = _kernels.adam_step(table, rows, grads, order, *args)
    if status == _UNSORTED:
        order = _stable_order(rows, table.shape[0])
        status = _kernels.adam_step(table, rows, grads, order, *args)
    if status:
        CONTRACT["adam_step"].raise_for_call(status, (table, rows, grads, order, *args))


def _state_mapping(state, kind: str) -> None:
    if not isinstance(state, Mapping):
        raise ValueError(
            f"not an {kind} state: state must be a dict from state_dict(), got "
            f"{type(state).__name__}"
        )


class SGD:
    """Plain SGD on a table: ``opt = SGD(table, lr=0.1); opt.step(rows, grads)``.

    See :func:`sgd_step`; :meth:`state_dict` / :meth:`load_state_dict` hold the hyper-parameters.
    """

    def __init__(self, table, lr, *, maximize=False):
        self.table = check.table(table, "table")
        self.lr = _lr(lr)
        self.maximize = _flag(maximize, "maximize")

    def step(self, rows, grads) -> None:
        sgd_step(self.table, rows, grads, self.lr, maximize=self.maximize)

    def state_dict(self) -> dict:
        return {"lr": self.lr, "maximize": self.maximize}

    def load_state_dict(self, state: dict) -> None:
        _state_mapping(state, "SGD")
        try:
            lr, maximize = state["lr"], state["maximize"]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not an SGD state: missing {exc}") from exc
        lr, maximize = _lr(lr), _flag(maximize, "maximize")
        self.lr, self.maximize = lr, maximize


class Adam:
    """Lazy Adam on a table, holding its moments and step count (see :func:`adam_step`).

    ``opt = Adam(table, lr=1e-3)``; each ``opt.step(rows, grads)`` takes step ``t = opt.t + 1``
    and, on success only, increments ``opt.t``.  ``m`` and ``v`` are zero tables of the table's
    shape and dtype.  :meth:`state_dict` / :meth:`load_state_dict` save and restore ``t``, the
    moments and the hyper-parameters, so a resumed run continues bit-identically.
    """

    def __init__(self, table, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, *, maximize=False):
        self.table = check.table(table, "table")
        self.lr = _lr(lr)
        self.betas = self._betas(betas)
        self.eps = _eps(eps)
        self.maximize = _flag(maximize, "maximize")
        self.m = np.zeros_like(self.table)
        self.v = np.zeros_like(self.table)
        self.t = 0

    @staticmethod
    def _betas(betas) -> tuple[float, float]:
        try:
            beta1, beta2 = betas
        except (TypeError, ValueError):
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
        return _betas(beta1, beta2)

    def step(self, rows, grads) -> None:
        adam_step(
            self.table,
            rows,
            grads,
            self.m,
            self.v,
            self.t + 1,
            self.lr,
            *self.betas,
            self.eps,
            maximize=self.maximize,
        )
        self.t += 1

    def state_dict(self, copy: bool = True) -> dict:
        """``{"t", "m", "v", "lr", "betas", "eps", "maximize"}``; ``copy=False`` returns the live
        moment tables instead of copies (as torch does; cheaper for very large tables)."""
        return {
            "t": self.t,
            "m": self.m.copy() if copy else self.m,
            "v": self.v.copy() if copy else self.v,
            "lr": self.lr,
            "betas": self.betas,
            "eps": self.eps,
            "maximize": self.maximize,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (moments are copied in); validated first, all or nothing."""
        _state_mapping(state, "Adam")
        try:
            t, m, v = state["t"], state["m"], state["v"]
            lr, betas, eps, maximize = state["lr"], state["betas"], state["eps"], state["maximize"]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not an Adam state: missing {exc}") from exc
        if (
            isinstance(t, (bool, np.bool_))
            or not isinstance(t, (numbers.Integral,))
            or not 0 <= int(t) < check.INT64_MAX
        ):  # the next step, t + 1, must fit in int64
            raise ValueError(f"state['t'] must be an int in [0, 2**63 - 2], got {t!r}")
        moments = []
        for name, arr in (("m", m), ("v", v)):
            arr = np.asarray(arr)
            if arr.shape != self.table.shape:
                raise ValueError(
                    f"state['{name}'] must have the table's shape "
                    f"{self.table.shape}, got {arr.shape}"
                )
            if arr.dtype.kind not in "biuf":
                raise TypeError(f"state['{name}'] must hold real numbers, got dtype {arr.dtype}")
            moments.append(arr)
        lr, betas, eps = _lr(lr), self._betas(betas), _eps(eps)
        maximize = _flag(maximize, "maximize")
        np.copyto(self.m, moments[0], casting="unsafe")
        np.copyto(self.v, moments[1], casting="unsafe")
        self.t, self.lr, self.betas, self.eps, self.maximize = int(t), lr, betas, eps, maximize
