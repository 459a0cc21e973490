"""Contract cases of fastlmrl.kl_divergence (see README.md): N = 5 flat tokens, the mask off at
positions 1 and 3 (which hold NaN: the kernels never read them), estimator k3."""

import numpy as np

from fastlmrl._status import Status

from ._common import changed, in_order, sharing, shortened

N = 5


def valid_args(kernel, dtype):
    mask = np.array([1, 0, 1, 0, 1], np.uint8)

    def reals(start):
        x = np.linspace(start, start - 1.0, N).astype(dtype)
        x[mask == 0] = np.nan
        return x

    args = dict(
        rewards=reals(0.5),
        log_probs=reals(-0.5),
        ref_log_probs=reals(-1.0),
        mask=mask,
        estimator=3,
        beta=0.1,
        rewards_out=np.full(N, -7.0, dtype),
        kl_out=np.full(N, -7.0, dtype),
        grad_out=np.full(N, -7.0, dtype),
    )
    return in_order(kernel, args)


def breakages(kernel, args):
    names = kernel.arg_names
    for name in ("rewards", "log_probs", "ref_log_probs"):
        if name in names:
            bad = args[name].copy()
            bad[2] = -np.inf  # a masked-in token
            yield name, changed(args, **{name: bad}), kernel.arg(name).status
    for estimator in (0, 4, 2**40):
        yield f"estimator {estimator}", changed(args, estimator=estimator), Status.BAD_ESTIMATOR
    for name in ("mask", kernel.written[0]):
        yield f"{name} short", shortened(args, name), Status.BAD_SHAPES
    first, second = kernel.written
    yield f"log_probs is {first}", changed(args, log_probs=args[first]), Status.OVERLAPPING_ARRAYS
    yield f"{second} is {first}", sharing(args, second, first), Status.OVERLAPPING_ARRAYS
