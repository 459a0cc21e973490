"""Building blocks shared by the Numba kernels: the RNG, a vectorisable row max, range checks."""
import numpy as np
from numba import njit
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, overload

from ..rng import GOLDEN, INV_2_53, MIX1, MIX2

_G = np.uint64(GOLDEN)
_M1 = np.uint64(MIX1)
_M2 = np.uint64(MIX2)
_ONE = np.uint64(1)
_S11 = np.uint64(11)
_S27 = np.uint64(27)
_S30 = np.uint64(30)
_S31 = np.uint64(31)

NJIT = dict(cache=True, nogil=True)


@intrinsic
def maxnum(typingctx, a, b):
    """LLVM's ``maxnum``: the larger of a and b, ignoring a NaN operand. Unlike ``max`` it vectorises."""
    if not (isinstance(a, types.Float) and a == b):
        return None
    sig = a(a, b)

    def codegen(context, builder, signature, args):
        ty = args[0].type
        suffix = "f32" if ty == ir.FloatType() else "f64"
        fnty = ir.FunctionType(ty, [ty, ty])
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.maxnum.{suffix}")
        return builder.call(fn, args)

    return sig, codegen


@njit(**NJIT)
def mix64(z):
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(**NJIT)
def uniform(key, counter):
    """Double in [0, 1): SplitMix64 output ``counter`` of ``key`` (both uint64), top 53 bits."""
    # < 2**53 after the shift: converting through int64 is exact and avoids the slow uint64->double
    return np.float64(np.int64(mix64(key + (counter + _ONE) * _G) >> _S11)) * INV_2_53


def neg_inf(arr):
    """-inf in the dtype of ``arr`` (so float32 loops stay float32)."""
    return arr.dtype.type(-np.inf)


@overload(neg_inf)
def _neg_inf_overload(arr):
    if arr.dtype == types.float32:
        return lambda arr: np.float32(-np.inf)
    return lambda arr: -np.inf


# Below this many actions a single branch-free pass (compare + select) is fastest; above it, a
# vectorised maxnum pass followed by a search for the first maximum wins (measured: V=16 ~3x,
# V=4096 ~2x the other way).
SELECT_ARGMAX_MAX_V = 256


@njit(**NJIT)
def row_max(q, s):
    """max of the non-NaN entries of q[s] (maxnum skips NaN); -inf when there are none.

    Short rows: a scalar compare-and-select chain (measured faster than the vector loop's
    set-up at V = 16); long rows: the vectorised maxnum loop.
    """
    m = neg_inf(q)
    n = q.shape[1]
    if n < 64:
        for a in range(n):
            v = q[s, a]
            m = v if v > m else m  # a NaN never compares greater: skipped
        return np.float64(m)
    for a in range(n):
        m = maxnum(m, q[s, a])
    return np.float64(m)


@njit(**NJIT)
def row_argmax(q, s):
    """Lowest index of the maximum of the non-NaN entries of q[s]; 0 when all are NaN."""
    n = q.shape[1]
    m = neg_inf(q)
    if n < SELECT_ARGMAX_MAX_V:
        best = 0
        for a in range(n):
            v = q[s, a]
            greater = v > m  # False for NaN: skipped; strict: ties keep the lowest index
            m = v if greater else m
            best = a if greater else best
        if m > -np.inf:
            return best
        # nothing above -inf: the answer is the first -inf entry (0 if the row is all NaN)
    else:
        for a in range(n):
            m = maxnum(m, q[s, a])
    for a in range(n):
        if q[s, a] == m:
            return a
    return 0


@njit(**NJIT)
def out_of_range(ids, bound):
    for i in range(ids.shape[0]):
        if ids[i] < 0 or ids[i] >= bound:
            return True
    return False


@njit(**NJIT)
def not_all_finite(values):
    for i in range(values.shape[0]):
        if not np.isfinite(values[i]):
            return True
    return False
