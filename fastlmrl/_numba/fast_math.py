"""Inline helpers for the kernels over logits (``log_probs``, ``policy_losses``,
``tabular_losses``).

``fast_exp32``: a vectorisable exp in float32 arithmetic, used on float32 logits (d = x - m <= 0)::

    t = fma(d, log2e, 1.5*2**23)     (shifter trick: k = t - 1.5*2**23 = round_half_even(d log2e),
                                      log2e rounded to float32; d clamped to >= -87 first)
    r = fma(-k, LN2_HI, d)           (Cody-Waite: exact, LN2_HI = float32(ln 2), |k| <= 126)
    r = fma(-k, LN2_LO, r)           (LN2_LO = float32(ln 2 - LN2_HI); |r| <= ln2/2 + 3e-6)
    exp(d) ~ 2**k * P7(r),  P7 = the degree-7 Taylor polynomial of exp in Horner form with fused
             multiply-adds: p = C7; p = fma(p, r, c) for c = C6, ..., C2, 1, 1 (C_n = float32(1/n!))
    2**k is built in the exponent bits (k >= -126: always a normal float32, no subnormals)
    exp(d) := 0 for d < -87 (so exp(-inf) = 0: masked logits), NaN stays NaN

Error: the Taylor remainder is (ln2/2)**8 / 8! = 5.3e-9 relative, the rounding of the Horner steps
and of r below 1 ulp in total; measured on 2e7 equally spaced float32 arguments in [-87, 88]:
at most 1 ulp of float32 from the correctly rounded exp (relative error <= 7.9e-8), at most 2 ulp
from NumPy's float32 ``np.exp`` (which is itself up to 3 ulp from the correctly rounded value).
Below -87 the exact value is < 1.7e-38 (< 2**-125 of the row maximum's term, which is 1): 0 loses
nothing a float64 sum of the row could hold next to that 1.  ``fma`` is the correctly rounded
fused multiply-add of IEEE 754 (``llvm.fma.f32``: one instruction on FMA hardware, libm's
``fmaf`` elsewhere), every other operation a plain IEEE single operation, so the Python reference
(``fastlmrl._python.log_probs.fast_exp32``, exact rounding to float32) and the Cython twin
(``fastlmrl/_cython/fast_math.pxd``, C99 ``fmaf``) reproduce it bit for bit.  Eight float32 lanes
per 256-bit vector make it ~2.2x faster per entry than the former float64 polynomial (4 lanes)
when the results are stored as float32.

The row difference ``d = x - m`` is the float32 subtraction (correctly rounded), exactly what a
float32 NumPy softmax computes; the row statistics (sums, lse, probabilities, gradients) stay in
float64.  Float64 logits use ``math.exp`` of the double difference.

Row statistics (order of operations: fastlmrl/_python/log_probs.py): a max pass (``row_max_vec``:
LLVM ``maxnum`` on 64-byte vectors, then a tree), ``e_j = EXP(x_j - m)`` into a per-thread row
buffer of the logits' dtype (a map LLVM vectorises; the gradient pass reuses it instead of a second
exp), then ``LANES`` float64 partial sums of the buffer (lane ``j % LANES``; ``lane_sums``: one
<8 x double> add per 8 entries), combined as ``((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7))``.  Loops
index the 2-D arrays from 0 (LLVM then drops numba's negative-index wraparound and vectorises
without gathers) and take no per-row views (a view costs an atomic reference-count update).
Gradient rows of large outputs are written with non-temporal (streaming) stores: the same values,
without reading the destination into the cache first (measured 2x faster writes at (4096, 50257)).
"""

import math

import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import cgutils, types
from numba.extending import intrinsic

from ._common import NJIT

LANES = 8
# Gradient outputs of at least this many bytes (more than a last-level cache holds) are written with
# streaming stores (they would not stay in the cache anyway); smaller ones with ordinary stores
# (measured: a 16 MB output stays in a 32 MB L3 and is faster so).  Results are identical.
NT_MIN_BYTES = 1 << 26
NT_MIN_ROW_BYTES = 1 << 12  # and rows of at least 4 KiB (short rows: measured slower)
NT_BYTES = 64  # bytes per streaming store (one cache line)

# fast_exp32 (float32 arithmetic throughout; see the module docstring)
F32 = np.float32
LOG2E_32 = F32(1.4426950408889634)  # log2(e) rounded to float32
SHIFT_32 = F32(12582912.0)  # 1.5 * 2**23
NEG_LN2_HI_32 = F32(-0.6931471824645996)  # -ln 2 rounded to float32 (0x3f317218)
NEG_LN2_LO_32 = F32(1.9046542121259336e-09)  # -(ln 2 - LN2_HI) rounded to float32
EXP_LO_32 = F32(-87.0)
ONE_32 = F32(1.0)
ZERO_32 = F32(0.0)
C2_32 = F32(1.0 / 2.0)
C3_32 = F32(1.0 / 6.0)
C4_32 = F32(1.0 / 24.0)
C5_32 = F32(1.0 / 120.0)
C6_32 = F32(1.0 / 720.0)
C7_32 = F32(1.0 / 5040.0)
_SHIFT_BITS_32 = np.int32(0x4B400000)
_BIAS_32 = np.int32(127)

INLINE = dict(NJIT, inline="always")


@intrinsic
def f32_as_i32(typingctx, x):
    """Reinterpret the bits of a float32 as an int32."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def i32_as_f32(typingctx, x):
    """Reinterpret the bits of an int32 as a float32."""
    if x != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c rounded once (IEEE 754 fusedMultiplyAdd), all three float64 or all float32."""
    if not (a == b == c and a in (types.float64, types.float32)):
        return None
    suffix, lty = ("f64", ir.DoubleType()) if a == types.float64 else ("f32", ir.FloatType())

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(lty, [lty] * 3)
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.fma.{suffix}")
        return builder.call(fn, args)

    return a(a, a, a), codegen


@intrinsic
def store_fence(typingctx):
    """A full memory fence: orders the streaming stores before whatever follows (thread join)."""

    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def nt_store_scaled(typingctx, out, k, e, j, g, nc):
    """out.flat[k:k+W] = nc * (e[j:j+W] * g) (float64 arithmetic, rounded to out's dtype), one
    64-byte streaming store.

    W = 64 / itemsize; the address of out.flat[k] must be 64-byte aligned (C-contiguous ``out``).
    """
    if not (
        isinstance(out, types.Array)
        and isinstance(e, types.Array)
        and e.dtype in (types.float32, types.float64)
        and out.dtype in (types.float32, types.float64)
    ):
        return None
    width = NT_BYTES // (4 if out.dtype == types.float32 else 8)

    def codegen(context, builder, signature, args):
        out_v, k_v, e_v, j_v, g_v, nc_v = args
        out_a = cgutils.create_struct_proxy(signature.args[0])(context, builder, value=out_v)
        e_a = cgutils.create_struct_proxy(signature.args[2])(context, builder, value=e_v)
        dvec = ir.VectorType(ir.DoubleType(), width)
        e_elem = e_a.data.type.pointee
        src = builder.bitcast(
            builder.gep(e_a.data, [j_v]), ir.VectorType(e_elem, width).as_pointer()
        )
        x = builder.load(src, align=4 if e_elem == ir.FloatType() else 8)
        if e_elem != ir.DoubleType():
            x = builder.fpext(x, dvec)
        zero = ir.Constant(ir.VectorType(ir.IntType(32), width), [0] * width)

        def splat(v):
            one = builder.insert_element(
                ir.Constant(dvec, ir.Undefined), v, ir.Constant(ir.IntType(32), 0)
            )
            return builder.shuffle_vector(one, ir.Constant(dvec, ir.Undefined), zero)

        y = builder.fmul(splat(nc_v), builder.fmul(x, splat(g_v)))
        elem = out_a.data.type.pointee
        if elem != ir.DoubleType():
            y = builder.fptrunc(y, ir.VectorType(elem, width))
        dst = builder.bitcast(builder.gep(out_a.data, [k_v]), y.type.as_pointer())
        st = builder.store(y, dst, align=NT_BYTES)
        st.set_metadata("nontemporal", builder.module.add_metadata([ir.IntType(32)(1)]))
        return context.get_dummy_value()

    return types.none(out, k, e, j, g, nc), codegen


@intrinsic
def fetch_add(typingctx, counter, k):
    """Atomically counter[0] += k (int64 array, sequentially consistent); the previous value."""
    if not (
        isinstance(counter, types.Array)
        and counter.dtype == types.int64
        and isinstance(k, types.Integer)
    ):
        return None

    def codegen(context, builder, signature, args):
        arr = cgutils.create_struct_proxy(signature.args[0])(context, builder, value=args[0])
        kv = context.cast(builder, args[1], signature.args[1], types.int64)
        return builder.atomic_rmw("add", arr.data, kv, "seq_cst")

    return types.int64(counter, k), codegen


def _vec_loop(builder, n, width, body):
    """Emit ``for j in range(0, n - n % width, width): body(j)`` (j an i64)."""
    i64 = ir.IntType(64)
    nfull = builder.sub(n, builder.srem(n, ir.Constant(i64, width)))
    with cgutils.for_range_slice(
        builder, ir.Constant(i64, 0), nfull, ir.Constant(i64, width), intp=i64
    ) as (j, _):
        body(j)
    return nfull


@intrinsic
def lane_sums(typingctx, e, n):
    """(s0, ..., s7): s_l = sum of e[j] for j < n, j % 8 == l, each added in index order (float64
    sums; a float32 ``e`` is widened exactly).

    The same additions as eight scalar running sums, done as one <8 x double> add per 8 entries
    (LLVM does not vectorise the scalar form: the FP adds may not be reassociated).
    """
    if not (
        isinstance(e, types.Array)
        and e.dtype in (types.float32, types.float64)
        and e.ndim == 1
        and isinstance(n, types.Integer)
    ):
        return None
    ret = types.UniTuple(types.float64, LANES)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        dbl = ir.DoubleType()
        vty = ir.VectorType(dbl, LANES)
        data = cgutils.create_struct_proxy(signature.args[0])(context, builder, value=args[0]).data
        elem = data.type.pointee
        n_v = context.cast(builder, args[1], signature.args[1], types.int64)
        acc = cgutils.alloca_once_value(builder, ir.Constant(vty, [0.0] * LANES))

        def widen(v, ty):
            return v if elem == dbl else builder.fpext(v, ty)

        def body(j):
            v = builder.load(
                builder.bitcast(builder.gep(data, [j]), ir.VectorType(elem, LANES).as_pointer()),
                align=4 if elem != dbl else 8,
            )
            builder.store(builder.fadd(builder.load(acc), widen(v, vty)), acc)

        nfull = _vec_loop(builder, n_v, LANES, body)
        lanes = [
            builder.extract_element(builder.load(acc), ir.Constant(ir.IntType(32), l))
            for l in range(LANES)
        ]
        out = []
        for l in range(LANES):
            slot = cgutils.alloca_once_value(builder, lanes[l])
            idx = builder.add(nfull, ir.Constant(i64, l))
            with builder.if_then(builder.icmp_signed("<", idx, n_v)):
                builder.store(
                    builder.fadd(
                        builder.load(slot), widen(builder.load(builder.gep(data, [idx])), dbl)
                    ),
                    slot,
                )
            out.append(builder.load(slot))
        return context.make_tuple(builder, ret, out)

    return ret(e, n), codegen


@intrinsic
def row_max_vec(typingctx, x, i):
    """max of the non-NaN entries of row i of the C-contiguous 2-D ``x`` (NaN when all are NaN),
    as a float64: 64-byte maxnum vectors, then a tree of maxnum (max is exact and
    order-independent, up to the sign of a zero maximum, which no result depends on)."""
    if not (
        isinstance(x, types.Array)
        and x.ndim == 2
        and x.layout == "C"
        and x.dtype in (types.float32, types.float64)
        and isinstance(i, types.Integer)
    ):
        return None
    width = NT_BYTES // (4 if x.dtype == types.float32 else 8)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        i32 = ir.IntType(32)
        arr = cgutils.create_struct_proxy(signature.args[0])(context, builder, value=args[0])
        fty = arr.data.type.pointee
        vty = ir.VectorType(fty, width)
        suffix = "f32" if fty == ir.FloatType() else "f64"
        vmax = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vty, [vty, vty]), f"llvm.maxnum.v{width}{suffix}"
        )
        smax = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(fty, [fty, fty]), f"llvm.maxnum.{suffix}"
        )
        n_v = builder.extract_value(arr.shape, 1)
        i_v = context.cast(builder, args[1], signature.args[1], types.int64)
        row = builder.gep(arr.data, [builder.mul(i_v, n_v)])
        first = builder.load(row)
        splat = builder.insert_element(ir.Constant(vty, ir.Undefined), first, ir.Constant(i32, 0))
        splat = builder.shuffle_vector(
            splat,
            ir.Constant(vty, ir.Undefined),
            ir.Constant(ir.VectorType(i32, width), [0] * width),
        )
        acc = cgutils.alloca_once_value(builder, splat)

        def body(j):
            v = builder.load(
                builder.bitcast(builder.gep(row, [j]), vty.as_pointer()),
                align=4 if fty == ir.FloatType() else 8,
            )
            builder.store(builder.call(vmax, [builder.load(acc), v]), acc)

        nfull = _vec_loop(builder, n_v, width, body)
        vec = builder.load(acc)
        half = width // 2
        while half >= 1:
            lo = builder.shuffle_vector(
                vec,
                ir.Constant(vec.type, ir.Undefined),
                ir.Constant(ir.VectorType(i32, half), list(range(half))),
            )
            hi = builder.shuffle_vector(
                vec,
                ir.Constant(vec.type, ir.Undefined),
                ir.Constant(ir.VectorType(i32, half), list(range(half, 2 * half))),
            )
            if half > 1:
                hty = ir.VectorType(fty, half)
                hmax = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(hty, [hty, hty]), f"llvm.maxnum.v{half}{suffix}"
                )
                vec = builder.call(hmax, [lo, hi])
            else:
                vec = builder.call(
                    smax,
                    [
                        builder.extract_element(lo, ir.Constant(i32, 0)),
                        builder.extract_element(hi, ir.Constant(i32, 0)),
                    ],
                )
            half //= 2
        m = cgutils.alloca_once_value(builder, vec)
        with cgutils.for_range_slice(builder, nfull, n_v, ir.Constant(i64, 1), intp=i64) as (j, _):
            x_j = builder.load(builder.gep(row, [j]))
            builder.store(builder.call(smax, [builder.load(m), x_j]), m)
        res = builder.load(m)
        return builder.fpext(res, ir.DoubleType()) if fty != ir.DoubleType() else res

    return types.float64(x, i), codegen


@njit(**INLINE)
def fast_exp32(d):
    """exp(d) for a float32 d <= 88, in float32 arithmetic, within 1 ulp of float32 of the exact
    exp (0 below -87; see the module docstring)."""
    dc = EXP_LO_32 if d < EXP_LO_32 else d
    t = fma(dc, LOG2E_32, SHIFT_32)
    kf = t - SHIFT_32
    r = fma(kf, NEG_LN2_HI_32, dc)
    r = fma(kf, NEG_LN2_LO_32, r)
    p = fma(C7_32, r, C6_32)
    p = fma(p, r, C5_32)
    p = fma(p, r, C4_32)
    p = fma(p, r, C3_32)
    p = fma(p, r, C2_32)
    p = fma(p, r, ONE_32)
    p = fma(p, r, ONE_32)
    scale = i32_as_f32(np.int32((f32_as_i32(t) - _SHIFT_BITS_32 + _BIAS_32) << 23))
    return ZERO_32 if d < EXP_LO_32 else p * scale


@njit(**INLINE)
def row_max(x, i):
    """max of the non-NaN entries of row i (NaN when all are NaN), as a float64; vectorised."""
    return row_max_vec(x, i)


@njit(**INLINE)
def row_exp(x, i, m, e):
    """e[j] = EXP(x[i, j] - m): fast_exp32(x[i, j] - m) in float32 arithmetic for float32 logits
    (``e`` float32), math.exp in float64 for float64 logits (``e`` float64); vectorised."""
    if x.itemsize == 4:
        m32 = F32(m)
        for j in range(x.shape[1]):
            e[j] = fast_exp32(F32(x[i, j]) - m32)  # (F32: typed for float64 x too)
    else:
        for j in range(x.shape[1]):
            e[j] = math.exp(np.float64(x[i, j]) - m)


@njit(**INLINE)
def combine(s0, s1, s2, s3, s4, s5, s6, s7):
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


# The helpers below take the 2-D arrays and a row index (no per-row views: a view costs an atomic
# reference-count update, which dominated short rows and bounced between threads).


@njit(**NJIT)
def row_stats(x, i, e):
    """(m, S, ok) of row i of ``x``; e[j] = EXP(x[i, j] - m) stored in the buffer ``e`` (of x's
    dtype, see ``work``); S is summed in float64.

    ``ok`` is False when the row holds NaN or +inf or has no finite entry (then ``e`` is
    unspecified).  lse = m + log(S); softmax p_j = e_j * (1 / S).
    Order of operations: fastlmrl/_python/log_probs.py.
    """
    n = x.shape[1]
    m = row_max(x, i)
    if not (m > -np.inf and m < np.inf):
        return m, np.nan, False
    row_exp(x, i, m, e)
    s0, s1, s2, s3, s4, s5, s6, s7 = lane_sums(e, n)
    s = combine(s0, s1, s2, s3, s4, s5, s6, s7)
    return m, s, s == s


@njit(**NJIT)
def streaming_base(out2d):
    """-1 for ordinary stores, else the address of ``out2d`` modulo 64 (streaming stores).

    Streaming stores for outputs of at least NT_MIN_BYTES with rows of at least NT_MIN_ROW_BYTES.
    """
    row_bytes = out2d.shape[1] * out2d.itemsize
    if row_bytes >= NT_MIN_ROW_BYTES and out2d.shape[0] * row_bytes >= NT_MIN_BYTES:
        return np.int64(out2d.ctypes.data % NT_BYTES)
    return np.int64(-1)


@njit(**NJIT)
def grad_fill(e, g, a, c, out, i, nt_base):
    """out[i] = c * (onehot(a) - p), p_j = e_j * g: out[i, j] = (-c) * p_j, then
    out[i, a] = c * (1 - p_a).

    ``nt_base`` >= 0 (see streaming_base): 64-byte streaming stores (ordinary stores before the
    first aligned address and after the last full line); the caller issues ``store_fence`` after
    its rows.
    """
    n = out.shape[1]
    nc = -c
    if nt_base >= 0:
        w = NT_BYTES // out.itemsize
        k0 = i * n
        j0 = ((NT_BYTES - (nt_base + k0 * out.itemsize) % NT_BYTES) % NT_BYTES) // out.itemsize
        if j0 > n:
            j0 = n
        j1 = j0 + (n - j0) // w * w
        for j in range(j0):
            out[i, j] = nc * (e[j] * g)
        for j in range(j0, j1, w):
            nt_store_scaled(out, k0 + j, e, j, g, nc)
        for j in range(j1, n):
            out[i, j] = nc * (e[j] * g)
    else:
        for j in range(n):
            out[i, j] = nc * (e[j] * g)
    out[i, a] = c * (1.0 - e[a] * g)


@njit(**INLINE)
def _plogp(p, x, lse):
    return p * (np.float64(x) - lse) if p > 0.0 else 0.0


@njit(**NJIT)
def row_entropy(x, i, e, g, lse):
    """H = -sum_j p_j (x_j - lse), p_j = e_j * g, terms with p_j = 0 omitted (lane j % 8)."""
    n = x.shape[1]
    t0 = t1 = t2 = t3 = t4 = t5 = t6 = t7 = 0.0
    k8 = n - n % LANES
    for j in range(0, k8, LANES):
        t0 += _plogp(e[j] * g, x[i, j], lse)
        t1 += _plogp(e[j + 1] * g, x[i, j + 1], lse)
        t2 += _plogp(e[j + 2] * g, x[i, j + 2], lse)
        t3 += _plogp(e[j + 3] * g, x[i, j + 3], lse)
        t4 += _plogp(e[j + 4] * g, x[i, j + 4], lse)
        t5 += _plogp(e[j + 5] * g, x[i, j + 5], lse)
        t6 += _plogp(e[j + 6] * g, x[i, j + 6], lse)
        t7 += _plogp(e[j + 7] * g, x[i, j + 7], lse)
    rem = n - k8
    if rem > 0:
        t0 += _plogp(e[k8] * g, x[i, k8], lse)
    if rem > 1:
        t1 += _plogp(e[k8 + 1] * g, x[i, k8 + 1], lse)
    if rem > 2:
        t2 += _plogp(e[k8 + 2] * g, x[i, k8 + 2], lse)
    if rem > 3:
        t3 += _plogp(e[k8 + 3] * g, x[i, k8 + 3], lse)
    if rem > 4:
        t4 += _plogp(e[k8 + 4] * g, x[i, k8 + 4], lse)
    if rem > 5:
        t5 += _plogp(e[k8 + 5] * g, x[i, k8 + 5], lse)
    if rem > 6:
        t6 += _plogp(e[k8 + 6] * g, x[i, k8 + 6], lse)
    return -combine(t0, t1, t2, t3, t4, t5, t6, t7)
