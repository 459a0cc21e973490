# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Entry point of :mod:`fastlmrl.torch`'s eager ``ppo_loss`` fast path: CPU tensors straight to
the Cython kernel core.

:func:`ppo_loss` reads each tensor's device, dtype, shape, strides, negation bit and data pointer
through its Python attributes (torch is neither imported nor needed at build time: the tensor
type and dtypes are handed over by :func:`configure`), builds the kernel's typed memoryviews over
those pointers without any Python object, allocates the outputs with NumPy's C API and calls
``ppo_loss_core`` (``policy_losses.pxd``) without the GIL.  That skips what the general fast path
pays per call: one ``Tensor.numpy()`` per input (~0.7 us each) and the ``def`` wrapper's buffer
acquisition of ten arrays.

Any tensor it cannot take as it is (another type or device, another dtype or layout, a
non-contiguous or empty tensor, a negated view, an attribute that raises) makes it return None:
the caller then runs the general path, which converts, or raises the error naming the argument.
It returns the kernel's status when that is not 0 (nothing the caller sees was written); the
caller then runs the general path on the same arguments, which raises the NumPy API's error.

Memoryviews over raw pointers: a Cython typed memoryview is a ``__Pyx_memviewslice`` struct
(``memview``, ``data``, ``shape``, ``strides``, ``suboffsets``).  ``FASTLMRL_SLICE1/2`` fill one
whose ``memview`` is ``Py_None`` -- what Cython stores for a ``None`` memoryview: its reference
counting (``__Pyx_INC_MEMVIEW`` / ``__Pyx_XCLEAR_MEMVIEW``) skips such a slice, so passing it,
slicing it or dropping it touches no Python object and is safe without the GIL.  The kernels
never test their arrays against ``None`` (``initializedcheck=False``, no ``nonecheck``); the
tensors stay referenced by the caller for the whole call.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset
from cpython.exc cimport PyErr_Clear
from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_IsValid

cimport numpy as cnp

from fastlmrl._cython.policy_losses cimport ppo_loss_core

cnp.import_array()

cdef extern from *:
    """
    #define FASTLMRL_SLICE1(p, n, item) ((__Pyx_memviewslice){ \\
        (struct __pyx_memoryview_obj *)Py_None, (char *)(p), {(n)}, {(item)}, {-1}})
    #define FASTLMRL_SLICE2(p, n, v, item) ((__Pyx_memviewslice){ \\
        (struct __pyx_memoryview_obj *)Py_None, (char *)(p), {(n), (v)}, \\
        {(Py_ssize_t)(v) * (Py_ssize_t)(item), (item)}, {-1, -1}})
    """
    float[:, ::1] rows_f "FASTLMRL_SLICE2"(uintptr_t p, Py_ssize_t n, Py_ssize_t v,
                                          Py_ssize_t item) noexcept nogil
    double[:, ::1] rows_d "FASTLMRL_SLICE2"(uintptr_t p, Py_ssize_t n, Py_ssize_t v,
                                           Py_ssize_t item) noexcept nogil
    float[::1] vec_f "FASTLMRL_SLICE1"(uintptr_t p, Py_ssize_t n, Py_ssize_t item) noexcept nogil
    double[::1] vec_d "FASTLMRL_SLICE1"(uintptr_t p, Py_ssize_t n, Py_ssize_t item) noexcept nogil
    int32_t[::1] vec_i32 "FASTLMRL_SLICE1"(uintptr_t p, Py_ssize_t n,
                                           Py_ssize_t item) noexcept nogil
    int64_t[::1] vec_i64 "FASTLMRL_SLICE1"(uintptr_t p, Py_ssize_t n,
                                           Py_ssize_t item) noexcept nogil

# DLPack (https://dmlc.github.io/dlpack): the structs of its ABI that the C exchange API fills,
# declared here from the specification (torch's headers are not needed to build)
cdef extern from *:
    """
    typedef struct { uint32_t major; uint32_t minor; } fl_DLPackVersion;
    typedef struct { int32_t device_type; int32_t device_id; } fl_DLDevice;
    typedef struct { uint8_t code; uint8_t bits; uint16_t lanes; } fl_DLDataType;
    typedef struct {
        void *data;
        fl_DLDevice device;
        int32_t ndim;
        fl_DLDataType dtype;
        int64_t *shape;
        int64_t *strides;
        uint64_t byte_offset;
    } fl_DLTensor;
    typedef struct fl_DLPackExchangeAPIHeader {
        fl_DLPackVersion version;
        struct fl_DLPackExchangeAPIHeader *prev_api;
    } fl_DLPackExchangeAPIHeader;
    typedef int (*fl_DLTensorFromPyObject)(void *py_object, fl_DLTensor *out);
    typedef struct {
        fl_DLPackExchangeAPIHeader header;
        void *managed_tensor_allocator;
        void *managed_tensor_from_py_object_no_sync;
        void *managed_tensor_to_py_object_no_sync;
        fl_DLTensorFromPyObject dltensor_from_py_object_no_sync;
        void *current_work_stream;
    } fl_DLPackExchangeAPI;
    """
    ctypedef struct fl_DLPackVersion:
        uint32_t major
        uint32_t minor
    ctypedef struct fl_DLDevice:
        int32_t device_type
        int32_t device_id
    ctypedef struct fl_DLDataType:
        uint8_t code
        uint8_t bits
        uint16_t lanes
    ctypedef struct fl_DLTensor:
        void* data
        fl_DLDevice device
        int32_t ndim
        fl_DLDataType dtype
        int64_t* shape
        int64_t* strides
        uint64_t byte_offset
    ctypedef struct fl_DLPackExchangeAPIHeader:
        fl_DLPackVersion version
    ctypedef int (*fl_DLTensorFromPyObject)(void* py_object, fl_DLTensor* out)
    ctypedef struct fl_DLPackExchangeAPI:
        fl_DLPackExchangeAPIHeader header
        fl_DLTensorFromPyObject dltensor_from_py_object_no_sync

cdef enum:
    # slots of ppo_loss's statistics output (fastlmrl.policy_losses.CONTRACT["ppo_loss"]
    # .results["stats"]; fastlmrl.torch checks the count at import before using this module)
    N_STATS = 7

#: the number of statistics slots this module was built for
STATS_SLOTS = N_STATS


cdef enum:  # DLPack codes
    kDLCPU = 1
    kDLInt = 0
    kDLFloat = 2

# torch's DLTensor-from-tensor function (DLPack >= 1.2 exchange API), NULL when torch has none
cdef fl_DLTensorFromPyObject _dltensor_from_py = NULL
cdef double _empty_target = 0.0  # the address given for an empty tensor without storage

cdef enum:  # dtype kinds
    F32 = 0
    F64 = 1
    I32 = 2
    I64 = 3
    OTHER = -1

cdef object _Tensor = None  # torch.Tensor (exact type only: subclasses take the general path)
cdef object _f32 = None, _f64 = None, _i32 = None, _i64 = None  # torch dtypes
cdef object _from_numpy = None  # torch.from_numpy
cdef object _apply = None  # the autograd node's Function.apply: (logits, (grad, loss) arrays)
cdef object _grad_enabled = None  # torch.is_grad_enabled
# eager mode (fastlmrl.torch._tensors.eager_mode): not compiling, no dispatch mode, no functorch
# transform, no jit tracer
cdef object _is_compiling = None, _dispatch_modes = None, _peek_transforms = None
cdef object _jit_tracing = None
cdef object _small_threads = None  # () -> threads of a small call (fastlmrl.get_num_threads)
cdef object _large_threads = None  # () -> threads capped by the free cores
cdef object _large_scratch = None  # (shape, numpy dtype) -> array no tensor will see
cdef object _result_class = None  # PPOLossResult
cdef object _options_of = None  # (options..., has_ref) -> the kernel's options or None
cdef Py_ssize_t _large_bytes = 1 << 24  # buffers of this size or more come from the callbacks
cdef Py_ssize_t _small_work = 1 << 16  # elements: below, the thread count is the setting as is
cdef object _np_f32 = None, _np_f64 = None


def configure(tensor_type, float32, float64, int32, int64, from_numpy, apply, grad_enabled,
              tuple eager_checks, small_threads, large_threads, large_scratch, result_class,
              Py_ssize_t large_bytes, Py_ssize_t small_work, options_of, dlpack_api=None):
    """Hand over the torch objects and fastlmrl.torch callbacks the entry point uses (once, at
    the import of fastlmrl.torch.policy_losses).  ``dlpack_api``: torch's
    ``Tensor.__dlpack_c_exchange_api__`` capsule (None: read the tensors' attributes)."""
    global _Tensor, _f32, _f64, _i32, _i64, _from_numpy, _apply, _grad_enabled
    global _is_compiling, _dispatch_modes, _peek_transforms, _jit_tracing
    global _small_threads, _large_threads, _large_scratch, _result_class
    global _large_bytes, _small_work, _np_f32, _np_f64, _options_of, _last
    _Tensor, _f32, _f64, _i32, _i64 = tensor_type, float32, float64, int32, int64
    _from_numpy, _apply, _grad_enabled = from_numpy, apply, grad_enabled
    _is_compiling, _dispatch_modes, _peek_transforms, _jit_tracing = eager_checks
    _small_threads, _large_threads = small_threads, large_threads
    _large_scratch, _result_class = large_scratch, result_class
    _large_bytes, _small_work = large_bytes, small_work
    _options_of, _last = options_of, (None,) * 8
    import numpy
    _np_f32, _np_f64 = numpy.dtype(numpy.float32), numpy.dtype(numpy.float64)
    use_dlpack(dlpack_api)


def use_dlpack(api) -> bool:
    """Read tensors through ``api`` (a DLPack C exchange API capsule of major version 1 with a
    DLTensor-from-object function) or, for None or any other object, through their attributes;
    returns whether the capsule is used."""
    global _dltensor_from_py
    cdef fl_DLPackExchangeAPI* table
    _dltensor_from_py = NULL
    if api is None or not PyCapsule_IsValid(api, "dlpack_exchange_api"):
        return False
    table = <fl_DLPackExchangeAPI*>PyCapsule_GetPointer(api, "dlpack_exchange_api")
    if table == NULL or table.header.version.major != 1:
        return False
    _dltensor_from_py = table.dltensor_from_py_object_no_sync
    return _dltensor_from_py != NULL


cdef struct View:
    uintptr_t data
    Py_ssize_t rows  # shape[0]
    Py_ssize_t cols  # shape[1] (2-D tensors)
    int kind


cdef inline int _kind(object dtype):
    if dtype is _f32:
        return F32
    if dtype is _f64:
        return F64
    if dtype is _i64:
        return I64
    if dtype is _i32:
        return I32
    return OTHER


cdef inline int _dl_kind(fl_DLDataType dtype) noexcept:
    if dtype.lanes != 1:
        return OTHER
    if dtype.code == kDLFloat:
        return F32 if dtype.bits == 32 else (F64 if dtype.bits == 64 else OTHER)
    if dtype.code == kDLInt:
        return I32 if dtype.bits == 32 else (I64 if dtype.bits == 64 else OTHER)
    return OTHER


cdef bint _view(object t, int ndim, View* out):
    """Fill ``out`` from a contiguous CPU tensor of ``ndim`` dimensions (True), or False when
    ``t`` needs the general path.  A dimension of size 1 may have any stride (as for torch's
    ``is_contiguous``).  Through torch's DLPack C exchange API when it has one, else the
    tensor's Python attributes."""
    cdef fl_DLTensor d
    cdef Py_ssize_t rows, cols = 1
    if type(t) is not _Tensor:
        return False
    if _dltensor_from_py != NULL:
        if _dltensor_from_py(<void*>t, &d) != 0:  # a layout DLPack cannot describe
            PyErr_Clear()
            return False
        if d.device.device_type != kDLCPU or d.ndim != ndim:
            return False
        out.kind = _dl_kind(d.dtype)
        if out.kind == OTHER:
            return False
        rows = d.shape[0]
        if ndim == 2:
            cols = d.shape[1]
        if d.strides != NULL:  # (NULL: compact row-major)
            if ndim == 2:
                if (cols != 1 and d.strides[1] != 1) or (rows != 1 and d.strides[0] != cols):
                    return False
            elif rows != 1 and d.strides[0] != 1:
                return False
        out.data = <uintptr_t>d.data + <uintptr_t>d.byte_offset
        try:
            if t.is_neg():  # a lazily negated view (DLPack does not say): its memory is -x
                return False
        except Exception:
            return False
    else:
        try:
            if not t.is_cpu:
                return False
            out.kind = _kind(t.dtype)
            if out.kind == OTHER:
                return False
            shape = t.shape
            if len(shape) != ndim:
                return False
            strides = t.stride()
            rows = shape[0]
            if ndim == 2:
                cols = shape[1]
                if cols != 1 and <Py_ssize_t>strides[1] != 1:
                    return False
                if rows != 1 and <Py_ssize_t>strides[0] != cols:
                    return False
            elif rows != 1 and <Py_ssize_t>strides[0] != 1:
                return False
            if t.is_neg():  # a lazily negated view (e.g. .imag of a conjugate): memory is -x
                return False
            out.data = <uintptr_t>t.data_ptr()
        except Exception:  # a layout without strides or storage (sparse, mkldnn, nested, ...)
            return False
    out.rows, out.cols = rows, cols
    if out.data == 0:  # no storage: an empty tensor (any address will do), or a ZeroTensor
        if rows * cols != 0:
            return False
        out.data = <uintptr_t>&_empty_target
    return True


cdef inline object _empty(int nd, cnp.npy_intp* dims, int typenum):
    return cnp.PyArray_EMPTY(nd, dims, typenum, 0)


# the last call's options: (clip_low, clip_high, dual_clip, ratio_level, kl_coef, kl_estimator,
# has_ref, the kernel's options), one tuple (replaced whole: safe across threads)
cdef tuple _last = (None,) * 8
cdef tuple _IMMUTABLE = (float, int, str, type(None))


def ppo_loss(logits, tokens, old_log_probs, advantages, weights, ref_log_probs, clip_low,
             clip_high, dual_clip, ratio_level, kl_coef, kl_estimator):
    """:func:`fastlmrl.torch.ppo_loss` (without ``sequence_offsets``): :func:`ppo_loss_checked`
    with the kernel's options, which ``options_of(clip_low, clip_high, dual_clip, ratio_level,
    kl_coef, kl_estimator, has_ref)`` (:func:`configure`) gives -- None for options the general
    path must handle (errors, sequence-level ratios).  The last call's options are remembered
    by the identity of its arguments when each is a plain float, int, str or None (a float
    subclass may change its value)."""
    cdef bint has_ref = ref_log_probs is not None
    cdef tuple last = _last
    global _last
    if (clip_low is last[0] and clip_high is last[1] and dual_clip is last[2]
            and ratio_level is last[3] and kl_coef is last[4] and kl_estimator is last[5]
            and last[6] is (True if has_ref else False)):
        options = last[7]
    else:
        options = _options_of(clip_low, clip_high, dual_clip, ratio_level, kl_coef, kl_estimator,
                              has_ref)
        if options is None:
            return None
        if (type(clip_low) in _IMMUTABLE and type(clip_high) in _IMMUTABLE
                and type(dual_clip) in _IMMUTABLE and type(ratio_level) in _IMMUTABLE
                and type(kl_coef) in _IMMUTABLE and type(kl_estimator) in _IMMUTABLE):
            _last = (clip_low, clip_high, dual_clip, ratio_level, kl_coef, kl_estimator,
                     True if has_ref else False, options)
    return _ppo_loss(logits, tokens, old_log_probs, advantages, weights, ref_log_probs, options)


def ppo_loss_checked(logits, tokens, old_log_probs, advantages, weights, ref_log_probs,
                     tuple options):
    """:func:`fastlmrl.torch.ppo_loss` at token level on plain contiguous CPU tensors in eager
    mode: a ``PPOLossResult`` (lazy), the kernel's non-zero status (an int: the caller raises
    through the general path), or None (the general path handles these arguments).

    ``options``: the kernel's ``(clip_low, clip_high, dual_clip, kl_coef, kl_estimator,
    sequence_level)``, checked by the caller; ``sequence_level`` must be 0."""
    return _ppo_loss(logits, tokens, old_log_probs, advantages, weights, ref_log_probs, options)


def node_forward(ctx, logits, tuple state):
    """``forward`` of the eager paths' autograd node (``fastlmrl_ppo_loss_fast``): keeps the
    gradient array ``state[0]`` on ``ctx`` and returns the loss ``state[1]`` (a 0-dim array)
    as a tensor (a C function: no Python frame inside ``Function.apply``)."""
    ctx.grad = state[0]
    return _from_numpy(state[1])


cdef object _ppo_loss(logits, tokens, old_log_probs, advantages, weights, ref_log_probs,
                      tuple options):
    cdef View x, tok, old, adv, w, ref
    cdef Py_ssize_t n, v, i
    cdef bint has_w = weights is not None, has_ref = ref_log_probs is not None, grad
    cdef double clip_low, clip_high, dual_clip, kl_coef
    cdef int estimator, threads, status, typenum
    cdef int64_t token_level = 0
    cdef double no_ref = 0.0  # the (empty) ref_log_probs' address without them
    cdef cnp.npy_intp dims[2]
    cdef void* scratch = NULL
    cdef object buf, grad_array = None, loss_array
    cdef double* out
    cdef uintptr_t g
    cdef Py_ssize_t item
    if not _view(logits, 2, &x) or x.kind > F64 or x.cols == 0:
        return None
    n, v = x.rows, x.cols
    if not _view(tokens, 1, &tok) or tok.kind < I32 or tok.rows != n:
        return None
    if not _view(old_log_probs, 1, &old) or old.kind != x.kind or old.rows != n:
        return None
    if not _view(advantages, 1, &adv) or adv.kind != x.kind or adv.rows != n:
        return None
    if has_w and (not _view(weights, 1, &w) or w.kind != x.kind or w.rows != n):
        return None
    if has_ref and (not _view(ref_log_probs, 1, &ref) or ref.kind != x.kind or ref.rows != n):
        return None
    if (_is_compiling() or _dispatch_modes() or _peek_transforms() is not None
            or _jit_tracing() is not None):  # torch.compile, dispatch mode, functorch, jit tracer
        return None
    if <int>options[5] != 0:
        return None
    clip_low, clip_high, dual_clip, kl_coef = options[0], options[1], options[2], options[3]
    estimator = options[4]
    grad = logits.requires_grad and _grad_enabled()
    item = 4 if x.kind == F32 else 8
    typenum = cnp.NPY_FLOAT32 if x.kind == F32 else cnp.NPY_FLOAT64
    threads = _small_threads() if n * v < _small_work else _large_threads()

    # [log_probs | token_loss | ratios | stats (N_STATS)], float64 (the PPOLossResult's layout)
    dims[0] = 3 * n + N_STATS
    buf = _empty(1, dims, cnp.NPY_FLOAT64)
    out = <double*>cnp.PyArray_DATA(buf)
    memset(out + 3 * n, 0, N_STATS * sizeof(double))
    if not has_w:  # the default weights 1/N (the general path's np.full)
        w.data = <uintptr_t>malloc(n * item + 8)
        if w.data == 0:
            raise MemoryError()
        if x.kind == F32:
            for i in range(n):
                (<float*>w.data)[i] = <float>(1.0 / n)
        else:
            for i in range(n):
                (<double*>w.data)[i] = 1.0 / n
    try:
        # the gradient: a tensor when autograd needs it, else scratch nobody sees
        if n * v * item >= _large_bytes:  # from the buffer cache (a tensor over it if needed)
            grad_array = _large_scratch((n, v), _np_f32 if x.kind == F32 else _np_f64)
            g = <uintptr_t>cnp.PyArray_DATA(grad_array)
        elif grad:
            dims[0], dims[1] = n, v
            grad_array = _empty(2, dims, typenum)
            g = <uintptr_t>cnp.PyArray_DATA(grad_array)
        else:
            scratch = malloc(n * v * item + 8)
            if scratch == NULL:
                raise MemoryError()
            g = <uintptr_t>scratch
        with nogil:
            if x.kind == F32:
                if tok.kind == I64:
                    status = ppo_loss_core(
                        rows_f(x.data, n, v, 4), vec_i64(tok.data, n, 8), vec_f(old.data, n, 4),
                        vec_f(adv.data, n, 4), vec_f(w.data, n, 4),
                        vec_f(ref.data if has_ref else <uintptr_t>&no_ref, n if has_ref else 0, 4),
                        vec_i64(<uintptr_t>&token_level, 1, 8), clip_low, clip_high, dual_clip,
                        kl_coef, estimator, 0, vec_d(<uintptr_t>(out + n), n, 8),
                        vec_d(<uintptr_t>out, n, 8), vec_d(<uintptr_t>(out + 2 * n), n, 8),
                        rows_f(g, n, v, 4), vec_d(<uintptr_t>(out + 3 * n), N_STATS, 8), threads)
                else:
                    status = ppo_loss_core(
                        rows_f(x.data, n, v, 4), vec_i32(tok.data, n, 4), vec_f(old.data, n, 4),
                        vec_f(adv.data, n, 4), vec_f(w.data, n, 4),
                        vec_f(ref.data if has_ref else <uintptr_t>&no_ref, n if has_ref else 0, 4),
                        vec_i64(<uintptr_t>&token_level, 1, 8), clip_low, clip_high, dual_clip,
                        kl_coef, estimator, 0, vec_d(<uintptr_t>(out + n), n, 8),
                        vec_d(<uintptr_t>out, n, 8), vec_d(<uintptr_t>(out + 2 * n), n, 8),
                        rows_f(g, n, v, 4), vec_d(<uintptr_t>(out + 3 * n), N_STATS, 8), threads)
            else:
                if tok.kind == I64:
                    status = ppo_loss_core(
                        rows_d(x.data, n, v, 8), vec_i64(tok.data, n, 8), vec_d(old.data, n, 8),
                        vec_d(adv.data, n, 8), vec_d(w.data, n, 8),
                        vec_d(ref.data if has_ref else <uintptr_t>&no_ref, n if has_ref else 0, 8),
                        vec_i64(<uintptr_t>&token_level, 1, 8), clip_low, clip_high, dual_clip,
                        kl_coef, estimator, 0, vec_d(<uintptr_t>(out + n), n, 8),
                        vec_d(<uintptr_t>out, n, 8), vec_d(<uintptr_t>(out + 2 * n), n, 8),
                        rows_d(g, n, v, 8), vec_d(<uintptr_t>(out + 3 * n), N_STATS, 8), threads)
                else:
                    status = ppo_loss_core(
                        rows_d(x.data, n, v, 8), vec_i32(tok.data, n, 4), vec_d(old.data, n, 8),
                        vec_d(adv.data, n, 8), vec_d(w.data, n, 8),
                        vec_d(ref.data if has_ref else <uintptr_t>&no_ref, n if has_ref else 0, 8),
                        vec_i64(<uintptr_t>&token_level, 1, 8), clip_low, clip_high, dual_clip,
                        kl_coef, estimator, 0, vec_d(<uintptr_t>(out + n), n, 8),
                        vec_d(<uintptr_t>out, n, 8), vec_d(<uintptr_t>(out + 2 * n), n, 8),
                        rows_d(g, n, v, 8), vec_d(<uintptr_t>(out + 3 * n), N_STATS, 8), threads)
    finally:
        if not has_w:
            free(<void*>w.data)
        free(scratch)
    if status:
        return status
    # the loss: a 0-dim array of the logits' dtype, as a tensor (through autograd when needed)
    loss_array = _empty(0, dims, typenum)
    if x.kind == F32:
        (<float*>cnp.PyArray_DATA(loss_array))[0] = <float>out[3 * n]
    else:
        (<double*>cnp.PyArray_DATA(loss_array))[0] = out[3 * n]
    if grad:  # the autograd node keeps the gradient array (a tensor in its backward)
        loss = _apply(logits, (grad_array, loss_array))
    else:
        loss = _from_numpy(loss_array)
    result = _result_class.__new__(_result_class)
    result._values = [loss, None, None, None, None, None, None, None, None, None]
    result._arrays = (buf, n)
    return result
