"""Contract cases of the optimizers topic (sgd_step, adam_step): gradients are (N, V) rows of the
(S, V) table, ``order`` is the stable argsort of ``rows`` (or empty: rows sorted), ``acc`` a
float64 scratch of length >= V, Adam's ``step`` an int64 and its ``v`` >= 0."""

import numpy as np

from fastlmrl._status import Status


def valid_args(kernel, dtype):
    rng = np.random.default_rng(0)
    args = dict(
        table=rng.standard_normal((3, 4)).astype(dtype),
        rows=np.array([2, 0, 2], np.int64),  # a repeated id, not sorted
        grads=rng.standard_normal((3, 4)).astype(dtype),
        order=np.array([1, 0, 2], np.int64),  # the stable argsort of rows
        lr=0.1,
        maximize=False,
        acc=np.zeros(4),
    )
    if kernel.name == "adam_step":
        args.update(
            m=rng.standard_normal((3, 4)).astype(dtype),
            v=rng.random((3, 4)).astype(dtype),
            step=np.int64(3),
            beta1=0.9,
            beta2=0.999,
            eps=1e-8,
        )
    return args


def breakages(kernel, args):
    def broken(**change):
        return dict(args, **change)

    rows = args["rows"].copy()
    rows[-1] = args["table"].shape[0]
    yield "rows", broken(rows=rows), Status.BAD_ROWS
    yield "rows unsorted, order empty", broken(order=np.empty(0, np.int64)), Status.UNSORTED
    yield "order not the argsort", broken(order=np.array([0, 1, 2], np.int64)), Status.BAD_ORDER
    grads = args["grads"].copy()
    grads[1, 2] = np.nan
    yield "grads", broken(grads=grads), Status.BAD_GRADS
    yield "acc short", broken(acc=np.zeros(3)), Status.BAD_SHAPES
    yield "grads is table", broken(grads=args["table"]), Status.OVERLAPPING_ARRAYS
    if kernel.name == "adam_step":
        # several arguments share BAD_HYPERPARAMETERS: the contract names the first (step)
        yield "step", broken(step=np.int64(0)), Status.BAD_HYPERPARAMETERS
        v = args["v"].copy()
        v[0, 1] = -1.0  # row 0 is in the batch
        yield "v", broken(v=v), Status.BAD_MOMENTS
    else:
        yield "lr", broken(lr=float("nan")), Status.BAD_HYPERPARAMETERS
