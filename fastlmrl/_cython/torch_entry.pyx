"""Entry points of :mod:`fastlmrl.torch`'s eager fast paths: CPU tensors straight to the Cython
kernel cores.  One per op: ``ppo_loss``, ``reinforce_loss``, ``kl_penalty_loss``, ``a2c_loss``,
``token_log_probs``, ``entropy``, ``logsumexp``, ``sample_tokens``.

Each reads every tensor's device, dtype, shape, strides, negation bit and data pointer through
torch's DLPack C exchange API or the tensor's Python attributes (torch is neither imported nor
needed at build time: the tensor type, dtypes, autograd nodes and callbacks are handed over by the
``configure*`` functions), builds the kernel's typed memoryviews over those pointers without any
Python object, allocates the outputs with NumPy's C API and calls the core (``policy_losses.pxd``,
``log_probs.pxd``, ``sampling.pxd``) without the GIL.  That skips what the general path pays per
call: the wrapper's and the NumPy API's checks, one ``Tensor.numpy()`` per input (~0.7 us each),
the ``def`` wrapper's buffer acquisition, and for the losses the result tensors nobody reads (a
lazy result builds them when read).  The shared pieces are ``_view`` (one tensor), ``_logits`` /
``_ids`` / ``_reals`` (what each argument must be), ``_eager``, ``_constant`` (default weights and
baselines), ``_gradient``, ``_outputs``, ``_loss_array``, ``_lazy``, :class:`OptionCache` and
``_run`` (the core of an op for the logits' and ids' dtypes).

Logits of any rank from 2 to ``MAX_DIMS`` are read as (N, V) (N the product of the batch
dimensions), each per-row argument of the logits' batch shape or flat (N,) (what
``fastlmrl.torch._tensors.per_token`` / ``ids`` accept); per-row results get the batch shape, a
gradient the shape of its input.  Any tensor it cannot take as it is (another type or device,
another dtype, layout or shape, a non-contiguous tensor, a negated view, an attribute that
raises), any option the general path would refuse, and any traced or transformed call make it
return None: the caller then runs the general path, which converts, or raises the error naming
the argument.  It returns the
kernel's status when that is not 0 (nothing the caller sees was written, no random counter
consumed); the caller then runs the general path on the same arguments, which raises the NumPy
API's error.

Memoryviews over raw pointers: a Cython typed memoryview is a ``__Pyx_memviewslice`` struct
(``memview``, ``data``, ``shape``, ``strides``, ``suboffsets``).  ``FASTLMRL_SLICE1/2`` fill one
whose ``memview`` is ``Py_None`` -- what Cython stores for a ``None`` memoryview: its reference
counting (``__Pyx_INC_MEMVIEW`` / ``__Pyx_XCLEAR_MEMVIEW``) skips such a slice, so passing it,
slicing it or dropping it touches no Python object and is safe without the GIL.  The kernels
never test their arrays against ``None`` (``initializedcheck=False``, no ``nonecheck``); the
tensors stay referenced by the caller for the whole call.
"""

from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset
from cpython.exc cimport PyErr_Clear
from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_IsValid

cimport numpy as cnp

from fastlmrl._cython._common cimport THREAD_LIMIT, index_t, real_t
from fastlmrl._cython.log_probs cimport entropy_core, logsumexp_core, token_log_probs_core
from fastlmrl._cython.policy_losses cimport (
    a2c_loss_core,
    kl_penalty_loss_core,
    ppo_loss_core,
    reinforce_loss_core,
)
from fastlmrl._cython.sampling cimport sample_tokens_core

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

cdef enum:
    # slots of a2c_loss's statistics (loss, policy_loss, value_loss, mean_entropy); reinforce_loss
    # and kl_penalty_loss have one (the loss)
    A2C_STATS = 4

#: the number of statistics slots this module was built for
STATS_SLOTS = N_STATS
#: the same for a2c_loss
A2C_STATS_SLOTS = A2C_STATS


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


cdef enum:
    # the most dimensions of a tensor the entries read (logits (..., V) of more: the general path)
    MAX_DIMS = 8


cdef struct View:
    uintptr_t data
    Py_ssize_t rows  # the product of all dimensions but the last (shape[0] of a 1-D tensor)
    Py_ssize_t cols  # the last dimension (1 for a 1-D tensor)
    int kind
    int ndim


cdef struct Call:
    View x, tok  # logits as (N, V), token ids (N,)
    cnp.npy_intp shape[MAX_DIMS]  # the logits' shape
    int nd  # and their number of dimensions
    View a, b, c, d, e, f  # the op's (N,) inputs in the core's order
    double* out  # the float64 outputs (a loss's per-token results, then its statistics)
    uintptr_t g  # the (N, V) gradient
    uintptr_t r1, r2, r3  # (N,) outputs in the logits' dtype or int64 (row ops, sampling)
    double s[4]  # real options
    int64_t k  # an integer option (kl_estimator, top_k)
    uint64_t key, counter  # sampling's random stream
    int threads

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


cdef inline bint _compact(int nd, cnp.npy_intp* shape, int64_t* strides) noexcept:
    """Row-major contiguous: each stride the product of the later dimensions, except where a
    dimension has size 1 (any stride, as for torch's ``is_contiguous``)."""
    cdef int64_t step = 1
    cdef int i
    for i in range(nd - 1, -1, -1):
        if shape[i] != 1 and strides[i] != step:
            return False
        step *= shape[i]
    return True


cdef bint _view(object t, int max_nd, View* out, cnp.npy_intp* shape):
    """Fill ``out`` and ``shape[:ndim]`` from a contiguous CPU tensor of 1 to ``max_nd`` (at most
    MAX_DIMS) dimensions (True), or False when ``t`` needs the general path.  ``out.rows`` x
    ``out.cols`` is the tensor as a matrix of its last dimension's rows.  An empty tensor may
    have any strides (nothing is read).  Through torch's DLPack C exchange API when it has one,
    else the tensor's Python attributes."""
    cdef fl_DLTensor d
    cdef int64_t strides[MAX_DIMS]
    cdef int64_t* st
    cdef int nd, i
    if type(t) is not _Tensor:
        return False
    if _dltensor_from_py != NULL:
        if _dltensor_from_py(<void*>t, &d) != 0:  # a layout DLPack cannot describe
            PyErr_Clear()
            return False
        nd = d.ndim
        if d.device.device_type != kDLCPU or nd < 1 or nd > max_nd:
            return False
        out.kind = _dl_kind(d.dtype)
        if out.kind == OTHER:
            return False
        for i in range(nd):
            shape[i] = d.shape[i]
        st = d.strides  # (NULL: compact row-major)
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
            size = t.shape
            nd = len(size)
            if nd < 1 or nd > max_nd:
                return False
            stride = t.stride()
            for i in range(nd):
                shape[i], strides[i] = size[i], stride[i]
            st = strides
            if t.is_neg():  # a lazily negated view (e.g. .imag of a conjugate): memory is -x
                return False
            out.data = <uintptr_t>t.data_ptr()
        except Exception:  # a layout without strides or storage (sparse, mkldnn, nested, ...)
            return False
    out.ndim = nd
    out.rows, out.cols = shape[0], (shape[nd - 1] if nd > 1 else 1)
    for i in range(1, nd - 1):
        out.rows *= shape[i]
    if out.rows * out.cols == 0:  # empty: any strides; no storage needed (any address will do)
        if out.data == 0:
            out.data = <uintptr_t>&_empty_target
        return True
    # (a ZeroTensor has no storage)
    return out.data != 0 and (st == NULL or _compact(nd, shape, st))


# --- shared pieces of every entry --------------------------------------------------------------

cdef inline object _empty(int nd, cnp.npy_intp* dims, int typenum):
    return cnp.PyArray_EMPTY(nd, dims, typenum, 0)


cdef inline object _vector(Py_ssize_t n, int typenum):
    cdef cnp.npy_intp dims[1]
    dims[0] = n
    return cnp.PyArray_EMPTY(1, dims, typenum, 0)


cdef inline int _typenum(int kind) noexcept:
    return cnp.NPY_FLOAT32 if kind == F32 else cnp.NPY_FLOAT64


cdef inline Py_ssize_t _item(int kind) noexcept:
    return 4 if kind == F32 else 8


cdef bint _eager() except -1:
    """Eager mode (:func:`fastlmrl.torch._tensors.eager_mode`): not under torch.compile, a
    dispatch mode, a functorch transform or the jit tracer."""
    return not (_is_compiling() or _dispatch_modes() or _peek_transforms() is not None
                or _jit_tracing() is not None)


cdef inline bint _logits(object t, Call* c) except -1:
    """(..., V) float32/float64 logits of 2 to MAX_DIMS dimensions with V >= 1, read in place
    as (N, V) (``c.x``; their shape in ``c.shape``, ``c.nd``)."""
    if not _view(t, MAX_DIMS, &c.x, c.shape) or c.x.ndim < 2:
        return False
    c.nd = c.x.ndim
    return c.x.kind <= F64 and c.x.cols != 0


cdef bint _per_row(object t, Call* c, View* out) except -1:
    """A per-row argument of (..., V) logits read in place as (N,): of the logits' batch shape
    or flat (N,), as the general path takes it (``fastlmrl.torch._tensors.per_token``)."""
    cdef cnp.npy_intp shape[MAX_DIMS]
    cdef int i
    if not _view(t, c.nd - 1, out, shape):
        return False
    if out.ndim == 1:
        return shape[0] == c.x.rows
    if out.ndim != c.nd - 1:
        return False
    for i in range(out.ndim):
        if shape[i] != c.shape[i]:
            return False
    out.rows, out.cols = c.x.rows, 1
    return True


cdef inline bint _ids(object t, Call* c, View* out) except -1:
    """Per-row int32/int64 ids (:func:`_per_row`)."""
    return _per_row(t, c, out) and out.kind >= I32


cdef inline bint _reals(object t, Call* c, View* out) except -1:
    """Per-row reals of the logits' dtype (:func:`_per_row`)."""
    return _per_row(t, c, out) and out.kind == c.x.kind


cdef void* _constant(View* out, Py_ssize_t n, int kind, double value) except NULL:
    """``out`` over a fresh C array of ``n`` copies of ``value`` rounded once to ``kind`` (the
    general path's ``np.full`` / ``np.zeros``); returns the block, which the caller frees."""
    cdef Py_ssize_t i
    cdef void* block = malloc(n * _item(kind) + 8)
    if block == NULL:
        raise MemoryError()
    out.data, out.rows, out.cols, out.kind, out.ndim = <uintptr_t>block, n, 1, kind, 1
    if kind == F32:
        for i in range(n):
            (<float*>block)[i] = <float>value
    else:
        for i in range(n):
            (<double*>block)[i] = value
    return block


cdef object _gradient(Call* c, bint keep, void** scratch):
    """The gradient a loss kernel writes (N, V), at ``c.g``: an array of the logits' shape when
    autograd keeps it (``keep``) or from the buffer cache when large (a tensor over it only if
    kept); else C scratch that nobody sees (``*scratch``, which the caller frees) and None."""
    cdef Py_ssize_t size = c.x.rows * c.x.cols * _item(c.x.kind)
    cdef object arr
    if size >= _large_bytes:
        arr = _large_scratch(_shape(c, c.nd), _np_f32 if c.x.kind == F32 else _np_f64)
    elif keep:
        arr = _empty(c.nd, c.shape, _typenum(c.x.kind))
    else:
        scratch[0] = malloc(size + 8)
        if scratch[0] == NULL:
            raise MemoryError()
        c.g = <uintptr_t>scratch[0]
        return None
    c.g = <uintptr_t>cnp.PyArray_DATA(arr)
    return arr


cdef tuple _shape(Call* c, int nd):
    """The first ``nd`` dimensions of the logits (``c.nd``: their shape, ``c.nd - 1``: the
    batch shape) as a tuple."""
    cdef int i
    return tuple([c.shape[i] for i in range(nd)])


cdef inline object _per_row_output(Call* c, int typenum):
    """An uninitialised array of the logits' batch shape (a per-row result)."""
    return _empty(c.nd - 1, c.shape, typenum)


cdef object _outputs(Py_ssize_t size, double** data):
    """A float64 buffer of ``size`` entries for a loss kernel's (N,) outputs and statistics."""
    cdef object buf = _vector(size, cnp.NPY_FLOAT64)
    data[0] = <double*>cnp.PyArray_DATA(buf)
    return buf


cdef object _loss_array(double value, int kind):
    """The loss: a 0-dim array of the logits' dtype (the general path's ``tt.scalar``)."""
    cdef cnp.npy_intp dims[1]
    cdef object arr = _empty(0, dims, _typenum(kind))
    if kind == F32:
        (<float*>cnp.PyArray_DATA(arr))[0] = <float>value
    else:
        (<double*>cnp.PyArray_DATA(arr))[0] = value
    return arr


cdef object _lazy(object cls, object loss, object buf, Call* c):
    """A lazily built loss result (``fastlmrl.torch.policy_losses._LazyResult``): ``loss`` now,
    the other fields' tensors over ``buf`` when read, per-row ones in the logits' batch shape
    (None: 2-D logits, flat)."""
    cdef list values = [None] * len(cls._fields)
    values[0] = loss
    result = cls.__new__(cls)
    result._values = values
    result._arrays = (buf, c.x.rows, None if c.nd == 2 else _shape(c, c.nd - 1))
    return result


cdef inline int _threads(Py_ssize_t work) except? -1:
    """The thread count the general path passes (``fastlmrl.torch._tensors.num_threads``)."""
    return _small_threads() if work < _small_work else _large_threads()


cdef tuple _PLAIN_VALUES = (float, int, str, bool, type(None))  # immutable: kept by identity


cdef class OptionCache:
    """The last call's checked options, remembered by the identity of its option arguments
    when each is a plain float, int, str, bool or None (a float subclass may change its value):
    ``get(args)`` is ``check(*args)`` (None: the general path handles, or raises for, these
    options) without the call when ``args`` are the last call's objects.  One tuple, replaced
    whole: safe across threads."""

    cdef object check
    cdef tuple last  # (args, checked)

    def __init__(self, check):
        self.check = check
        self.last = ((), None)

    cdef object get(self, tuple args):
        cdef tuple last = self.last, previous = <tuple>last[0]
        cdef Py_ssize_t i, k = len(args)
        if len(previous) == k:
            for i in range(k):
                if args[i] is not previous[i]:
                    break
            else:
                return last[1]
        checked = self.check(*args)
        if checked is not None:
            for a in args:
                if type(a) not in _PLAIN_VALUES:
                    return checked
            self.last = (args, checked)
        return checked


# --- the kernel calls: the cores' fused types chosen from the tensors' dtypes -------------------

cdef enum:  # ops
    OP_PPO = 0
    OP_REINFORCE = 1
    OP_KL = 2
    OP_A2C = 3
    OP_TOKEN_LOG_PROBS = 4
    OP_ENTROPY = 5
    OP_LOGSUMEXP = 6
    OP_SAMPLE = 7

cdef int64_t _token_level = 0  # ppo_loss's sequence_offsets at token level


cdef inline real_t[:, ::1] _rows(uintptr_t p, Py_ssize_t n, Py_ssize_t v,
                                 real_t tag) noexcept nogil:
    if real_t is float:
        return rows_f(p, n, v, 4)
    else:
        return rows_d(p, n, v, 8)


cdef inline real_t[::1] _vec(View* a, real_t tag) noexcept nogil:
    if real_t is float:
        return vec_f(a.data, a.rows, 4)
    else:
        return vec_d(a.data, a.rows, 8)


cdef inline real_t[::1] _out(uintptr_t p, Py_ssize_t n, real_t tag) noexcept nogil:
    if real_t is float:
        return vec_f(p, n, 4)
    else:
        return vec_d(p, n, 8)


cdef inline index_t[::1] _idx(View* a, index_t tag) noexcept nogil:
    if index_t is int32_t:
        return vec_i32(a.data, a.rows, 4)
    else:
        return vec_i64(a.data, a.rows, 8)


cdef inline double[::1] _doubles(double* p, Py_ssize_t n) noexcept nogil:
    return vec_d(<uintptr_t>p, n, 8)


cdef int _by_op(int op, Call* c, real_t r, index_t i) noexcept nogil:
    cdef Py_ssize_t n = c.x.rows, v = c.x.cols
    cdef double* out = c.out
    if op == OP_PPO:  # out: [log_probs | token_loss | ratios | stats]
        return ppo_loss_core(
            _rows(c.x.data, n, v, r), _idx(&c.tok, i), _vec(&c.a, r), _vec(&c.b, r),
            _vec(&c.c, r), _vec(&c.d, r), vec_i64(<uintptr_t>&_token_level, 1, 8), c.s[0],
            c.s[1], c.s[2], c.s[3], c.k, 0, _doubles(out + n, n), _doubles(out, n),
            _doubles(out + 2 * n, n), _rows(c.g, n, v, r), _doubles(out + 3 * n, N_STATS), c.threads)
    if op == OP_REINFORCE:  # out: [log_probs | token_loss | stats]
        return reinforce_loss_core(
            _rows(c.x.data, n, v, r), _idx(&c.tok, i), _vec(&c.a, r), _vec(&c.b, r),
            _vec(&c.c, r), _doubles(out + n, n), _doubles(out, n), _rows(c.g, n, v, r),
            _doubles(out + 2 * n, 1), c.threads)
    if op == OP_KL:  # out: [log_probs | token_kl | stats]
        return kl_penalty_loss_core(
            _rows(c.x.data, n, v, r), _idx(&c.tok, i), _vec(&c.a, r), _vec(&c.b, r), c.k,
            _doubles(out + n, n), _doubles(out, n), _rows(c.g, n, v, r), _doubles(out + 2 * n, 1),
            c.threads)
    if op == OP_A2C:  # out: [log_probs | entropy | token_loss | stats | grad_values]
        return a2c_loss_core(
            _rows(c.x.data, n, v, r), _idx(&c.tok, i), _vec(&c.a, r), _vec(&c.b, r),
            _vec(&c.c, r), _vec(&c.d, r), _vec(&c.e, r), c.s[0], c.s[1], c.s[2],
            _doubles(out + 2 * n, n), _doubles(out, n), _doubles(out + n, n), _rows(c.g, n, v, r),
            _doubles(out + 3 * n + A2C_STATS, n), _doubles(out + 3 * n, A2C_STATS), c.threads)
    if op == OP_TOKEN_LOG_PROBS:
        return token_log_probs_core(_rows(c.x.data, n, v, r), _idx(&c.tok, i),
                                    _out(c.r1, n, r), c.threads)
    if op == OP_ENTROPY:
        return entropy_core(_rows(c.x.data, n, v, r), _out(c.r1, n, r), c.threads)
    if op == OP_LOGSUMEXP:
        return logsumexp_core(_rows(c.x.data, n, v, r), _out(c.r1, n, r), c.threads)
    if op == OP_SAMPLE:
        return sample_tokens_core(
            _rows(c.x.data, n, v, r), c.s[0], c.k, c.s[1], c.s[2], c.key, c.counter,
            vec_i64(c.r1, n, 8), _out(c.r2, n, r), _out(c.r3, n, r), c.threads)
    return -1


cdef int _run(int op, Call* c) noexcept nogil:
    """Op ``op``'s core on ``c``, specialised for the logits' and ids' dtypes."""
    if c.x.kind == F32:
        if c.tok.kind == I32:
            return _by_op(op, c, <float>0, <int32_t>0)
        return _by_op(op, c, <float>0, <int64_t>0)
    if c.tok.kind == I32:
        return _by_op(op, c, <double>0, <int32_t>0)
    return _by_op(op, c, <double>0, <int64_t>0)


# --- PPO ----------------------------------------------------------------------------------------

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
    """``forward`` of the eager paths' autograd nodes of a loss with a gradient w.r.t. the
    logits only (``fastlmrl_ppo_loss_fast`` and its subclasses): keeps the gradient array
    ``state[0]`` on ``ctx`` and returns the loss ``state[1]`` (a 0-dim array) as a tensor (a C
    function: no Python frame inside ``Function.apply``)."""
    ctx.grad = state[0]
    return _from_numpy(state[1])


def node_forward2(ctx, logits, values, tuple grads, loss):
    """``forward`` of the autograd node of a loss with gradients w.r.t. the logits and the
    values (``fastlmrl_a2c_loss_fast``): keeps the pair of gradient arrays ``grads`` on ``ctx``
    and returns ``loss`` (a 0-dim array) as a tensor."""
    ctx.grads = grads
    return _from_numpy(loss)


cdef object _ppo_loss(logits, tokens, old_log_probs, advantages, weights, ref_log_probs,
                      tuple options):
    cdef Call c
    cdef Py_ssize_t n
    cdef void* weights_block = NULL
    if not _logits(logits, &c):
        return None
    n = c.x.rows
    if (not _ids(tokens, &c, &c.tok) or not _reals(old_log_probs, &c, &c.a)
            or not _reals(advantages, &c, &c.b)):
        return None
    if weights is not None and not _reals(weights, &c, &c.c):
        return None
    if ref_log_probs is None:  # (empty)
        c.d.data, c.d.rows = <uintptr_t>&_empty_target, 0
    elif not _reals(ref_log_probs, &c, &c.d):
        return None
    if not _eager() or <int>options[5] != 0:
        return None
    c.s[0], c.s[1], c.s[2], c.s[3], c.k = options[0], options[1], options[2], options[3], options[4]
    if weights is None:  # the default weights 1/N (the general path's np.full)
        weights_block = _constant(&c.c, n, c.x.kind, 1.0 / n if n else 0.0)
    # [log_probs | token_loss | ratios | stats (N_STATS)], float64 (the PPOLossResult's layout)
    return _logits_loss(OP_PPO, logits, &c, 3 * n + N_STATS, 3 * n, N_STATS, _apply,
                        _result_class, weights_block)


# --- REINFORCE, KL penalty, A2C -----------------------------------------------------------------

cdef object _reinforce_apply = None, _kl_apply = None, _a2c_apply = None  # nodes' Function.apply
cdef object _reinforce_result = None, _kl_result = None, _a2c_result = None  # lazy result types
cdef dict _kl_estimators = {}  # kl_estimator -> the kernels' code
cdef OptionCache _a2c_options = None  # (value_coef, entropy_coef, value_clip, has_old) -> doubles


def configure_losses(reinforce_apply, kl_apply, a2c_apply, reinforce_result, kl_result,
                     a2c_result, dict kl_estimators, a2c_options):
    """Hand over the autograd nodes' ``apply``, the lazy result types, the KL estimators' codes
    and ``a2c_options(value_coef, entropy_coef, value_clip, has_old)`` -> ``(value_clip (0:
    none), value_coef, entropy_coef)`` as the kernel takes them, or None where the general path
    raises (once, at the import of fastlmrl.torch.policy_losses, after :func:`configure`)."""
    global _reinforce_apply, _kl_apply, _a2c_apply, _reinforce_result, _kl_result, _a2c_result
    global _kl_estimators, _a2c_options
    _reinforce_apply, _kl_apply, _a2c_apply = reinforce_apply, kl_apply, a2c_apply
    _reinforce_result, _kl_result, _a2c_result = reinforce_result, kl_result, a2c_result
    _kl_estimators, _a2c_options = dict(kl_estimators), OptionCache(a2c_options)


cdef object _logits_loss(int op, object logits, Call* c, Py_ssize_t n_out, Py_ssize_t loss_slot,
                         Py_ssize_t n_stats, object apply, object result_class, void* block):
    """Shared tail of the PPO, REINFORCE and KL entries: the outputs (the ``n_stats`` statistics
    from ``loss_slot`` on start at zero, as np.zeros), the gradient, the core (op), the loss
    through ``apply`` when autograd needs it.  ``block``: a C array to free after the call
    (default weights or baselines).  A result, or the core's non-zero status."""
    cdef Py_ssize_t n = c.x.rows
    cdef void* scratch = NULL
    cdef int status
    cdef bint grad
    try:
        grad = logits.requires_grad and _grad_enabled()
        c.threads = _threads(n * c.x.cols)
        buf = _outputs(n_out, &c.out)
        memset(c.out + loss_slot, 0, n_stats * sizeof(double))
        grad_array = _gradient(c, grad, &scratch)
        with nogil:
            status = _run(op, c)
    finally:
        free(block)
        free(scratch)
    if status:
        return status
    loss = _loss_array(c.out[loss_slot], c.x.kind)
    loss = apply(logits, (grad_array, loss)) if grad else _from_numpy(loss)
    return _lazy(result_class, loss, buf, c)


def reinforce_loss(logits, tokens, returns, weights, baseline):
    """:func:`fastlmrl.torch.reinforce_loss` on plain contiguous float32/float64 CPU tensors
    (logits of rank >= 2, per-row arguments of their batch shape or flat) in eager mode,
    ``baseline`` None or a tensor: a ``ReinforceLossResult`` (lazy), the kernel's non-zero
    status (an int: the caller raises through the general path), or None (the general path
    handles these arguments)."""
    cdef Call c
    cdef Py_ssize_t n
    cdef void* block = NULL
    cdef void* block2 = NULL
    if not _logits(logits, &c):
        return None
    n = c.x.rows
    if not _ids(tokens, &c, &c.tok) or not _reals(returns, &c, &c.a):
        return None
    if baseline is not None and not _reals(baseline, &c, &c.b):
        return None  # (a str too: "mean" is the general path's)
    if weights is not None and not _reals(weights, &c, &c.c):
        return None
    if not _eager():
        return None
    try:
        if baseline is None:  # b = 0 (np.zeros)
            block = _constant(&c.b, n, c.x.kind, 0.0)
        if weights is None:  # 1/N (np.full)
            block2 = _constant(&c.c, n, c.x.kind, 1.0 / n if n else 0.0)
    except BaseException:
        free(block)
        raise
    try:
        return _logits_loss(OP_REINFORCE, logits, &c, 2 * n + 1, 2 * n, 1, _reinforce_apply,
                            _reinforce_result, block)
    finally:
        free(block2)


def kl_penalty_loss(logits, tokens, ref_log_probs, weights, kl_estimator):
    """:func:`fastlmrl.torch.kl_penalty_loss` on plain contiguous float32/float64 CPU tensors
    in eager mode: a ``KLPenaltyResult`` (lazy), the kernel's non-zero status, or None (as
    :func:`reinforce_loss`)."""
    cdef Call c
    cdef Py_ssize_t n
    cdef void* block = NULL
    if type(kl_estimator) is not str:
        return None
    estimator = _kl_estimators.get(kl_estimator)
    if estimator is None or not _logits(logits, &c):
        return None
    n = c.x.rows
    if not _ids(tokens, &c, &c.tok) or not _reals(ref_log_probs, &c, &c.a):
        return None
    if weights is not None and not _reals(weights, &c, &c.b):
        return None
    if not _eager():
        return None
    c.k = <int64_t>estimator
    if weights is None:
        block = _constant(&c.b, n, c.x.kind, 1.0 / n if n else 0.0)
    return _logits_loss(OP_KL, logits, &c, 2 * n + 1, 2 * n, 1, _kl_apply, _kl_result, block)


def a2c_loss(logits, tokens, advantages, values, returns, weights, value_coef, entropy_coef,
             old_values, value_clip):
    """:func:`fastlmrl.torch.a2c_loss` on plain contiguous float32/float64 CPU tensors in eager
    mode (``values`` of the logits' dtype): an ``A2CLossResult`` (lazy), the kernel's non-zero
    status, or None (as :func:`reinforce_loss`).  A gradient w.r.t. the logits and the values
    (in the values' own shape) through one node, ``apply(logits, values, (grad_logits,
    grad_values), loss)`` (None for an input that needs none)."""
    cdef Call c
    cdef Py_ssize_t n, i
    cdef bint grad_x, grad_v, enabled
    cdef int status
    cdef void* scratch = NULL
    cdef void* block = NULL
    cdef void* values_block = NULL
    cdef double* gv
    options = _a2c_options.get((value_coef, entropy_coef, value_clip, old_values is not None))
    if options is None or not _logits(logits, &c):
        return None
    n = c.x.rows
    if (not _ids(tokens, &c, &c.tok) or not _reals(advantages, &c, &c.a)
            or not _reals(values, &c, &c.b) or not _reals(returns, &c, &c.c)):
        return None
    if old_values is None:  # (without clipping the values stand in for them)
        c.d = c.b
    elif not _reals(old_values, &c, &c.d):
        return None
    if weights is not None and not _reals(weights, &c, &c.e):
        return None
    if not _eager():
        return None
    c.s[0], c.s[1], c.s[2] = options
    enabled = _grad_enabled()
    grad_x = enabled and logits.requires_grad
    grad_v = enabled and values.requires_grad
    c.threads = _threads(n * c.x.cols)
    # [log_probs | entropy | token_loss | stats (A2C_STATS) | grad_values]
    buf = _outputs(4 * n + A2C_STATS, &c.out)
    memset(c.out + 3 * n, 0, A2C_STATS * sizeof(double))
    try:
        if weights is None:
            block = _constant(&c.e, n, c.x.kind, 1.0 / n if n else 0.0)
        grad_array = _gradient(&c, grad_x, &scratch)
        with nogil:
            status = _run(OP_A2C, &c)
    finally:
        free(block)
        free(scratch)
    if status:
        return status
    loss = _loss_array(c.out[3 * n], c.x.kind)
    if grad_x or grad_v:
        values_grad = None
        if grad_v:  # in the values' dtype (the general path's copy to it)
            gv = c.out + 3 * n + A2C_STATS  # (in the values' shape)
            values_grad = (_vector(n, _typenum(c.x.kind)) if c.b.ndim == 1
                           else _per_row_output(&c, _typenum(c.x.kind)))
            if c.x.kind == F32:
                for i in range(n):
                    (<float*>cnp.PyArray_DATA(values_grad))[i] = <float>gv[i]
            else:
                memcpy(cnp.PyArray_DATA(values_grad), gv, n * sizeof(double))
        loss = _a2c_apply(logits, values, (grad_array if grad_x else None, values_grad), loss)
    else:
        loss = _from_numpy(loss)
    return _lazy(_a2c_result, loss, buf, &c)


# --- token_log_probs, entropy, logsumexp ------------------------------------------------------

cdef object _tlp_apply = None, _entropy_apply = None, _lse_apply = None


def configure_rows(token_log_probs_apply, entropy_apply, logsumexp_apply):
    """Hand over the autograd nodes' ``apply`` of the row ops: ``(logits, tokens, out)`` for
    token_log_probs, ``(logits, out)`` for the others, ``out`` the (N,) result array (once, at
    the import of fastlmrl.torch.log_probs, after :func:`configure`)."""
    global _tlp_apply, _entropy_apply, _lse_apply
    _tlp_apply, _entropy_apply, _lse_apply = (
        token_log_probs_apply, entropy_apply, logsumexp_apply)


cdef object _row_op(int op, object logits, object tokens, object apply):
    cdef Call c
    cdef int status
    cdef Py_ssize_t n
    if not _logits(logits, &c):
        return None
    n = c.x.rows
    if tokens is None:
        c.tok.kind = I64  # (unused)
    elif not _ids(tokens, &c, &c.tok):
        return None
    if not _eager():
        return None
    grad = logits.requires_grad and _grad_enabled()
    c.threads = _threads(n * c.x.cols)
    out = _per_row_output(&c, _typenum(c.x.kind))
    c.r1 = <uintptr_t>cnp.PyArray_DATA(out)
    with nogil:
        status = _run(op, &c)
    if status:
        return status
    if not grad:
        return _from_numpy(out)
    if tokens is None:
        return apply(logits, out)
    return apply(logits, tokens, out)


def saved_inputs_forward(ctx, logits, tokens, out):
    """``forward`` of ``fastlmrl_token_log_probs_fast`` as a C function: saves the logits and
    ids for backward, returns the (N,) array ``out`` as a tensor."""
    ctx.save_for_backward(logits, tokens)
    return _from_numpy(out)


def saved_output_forward(ctx, logits, out):
    """``forward`` of ``fastlmrl_entropy_fast`` / ``fastlmrl_logsumexp_fast`` as a C function:
    returns the (N,) array ``out`` as a tensor, saved with the logits for backward."""
    result = _from_numpy(out)
    ctx.save_for_backward(logits, result)
    return result


def token_log_probs(logits, tokens):
    """:func:`fastlmrl.torch.token_log_probs` on a plain contiguous (..., V) float32/float64 CPU
    tensor (rank >= 2) and int32/int64 ids of its batch shape or flat in eager mode: the tensor
    of the batch shape, the kernel's non-zero status (an int: the caller raises through the
    general path) or None (the general path handles these arguments)."""
    return _row_op(OP_TOKEN_LOG_PROBS, logits, tokens, _tlp_apply)


def entropy(logits):
    """:func:`fastlmrl.torch.entropy`, as :func:`token_log_probs`."""
    return _row_op(OP_ENTROPY, logits, None, _entropy_apply)


def logsumexp(logits):
    """:func:`fastlmrl.torch.logsumexp`, as :func:`token_log_probs`."""
    return _row_op(OP_LOGSUMEXP, logits, None, _lse_apply)


# --- sample_tokens -----------------------------------------------------------------------------

cdef OptionCache _sampling_options = None  # (temperature, top_k, top_p, min_p) -> checked
cdef object _check_capacity = None, _advance = None, _sampled = None
cdef tuple _last_seed = (None, 0, 0)  # (an int seed, its key, its first counter)


def configure_sampling(sampling_options, check_capacity, advance, sampled):
    """Hand over ``sampling_options(temperature, top_k, top_p, min_p)`` -> ``(temperature,
    top_k, top_p, min_p)`` checked (top_k not yet capped by V) or None where the general path
    raises, fastlmrl.rng's ``check_capacity`` and ``advance``, and the result type
    (``SampledTokens``)."""
    global _sampling_options, _check_capacity, _advance, _sampled, _last_seed
    _sampling_options = OptionCache(sampling_options)
    _check_capacity, _advance, _sampled = check_capacity, advance, sampled
    _last_seed = (None, 0, 0)


def sample_tokens(logits, seed, temperature, top_k, top_p, min_p):
    """:func:`fastlmrl.torch.sample_tokens` on a plain contiguous (..., V) float32/float64 CPU
    tensor (rank >= 2) in eager mode: ``SampledTokens`` of the batch shape, the kernel's
    non-zero status (nothing consumed from ``seed``; the caller raises through the general
    path) or None (the general path handles these arguments, or raises)."""
    cdef Call c
    cdef Py_ssize_t n
    cdef int status, typenum
    cdef tuple last
    global _last_seed
    options = _sampling_options.get((temperature, top_k, top_p, min_p))
    if options is None or not _logits(logits, &c) or not _eager():
        return None
    n = c.x.rows
    c.s[0], c.k, c.s[1], c.s[2] = options
    if c.k > c.x.cols:
        c.k = c.x.cols
    last = _last_seed
    if type(seed) is int and seed == last[0]:  # (an int seed is a fresh stream: no state)
        c.key, c.counter = last[1], last[2]
    else:
        try:
            key, counter = _check_capacity(seed, n)
        except Exception:  # the general path raises it
            return None
        c.key, c.counter = key, counter
        if type(seed) is int:
            _last_seed = (seed, key, counter)
    c.threads = _threads(n * c.x.cols)
    c.tok.kind = I64  # (unused)
    typenum = _typenum(c.x.kind)
    tokens, log_probs, model_log_probs = (
        _per_row_output(&c, cnp.NPY_INT64), _per_row_output(&c, typenum),
        _per_row_output(&c, typenum))
    c.r1 = <uintptr_t>cnp.PyArray_DATA(tokens)
    c.r2 = <uintptr_t>cnp.PyArray_DATA(log_probs)
    c.r3 = <uintptr_t>cnp.PyArray_DATA(model_log_probs)
    with nogil:
        status = _run(OP_SAMPLE, &c)
    if status:
        return status
    if type(seed) is not int:
        _advance(seed, n)
    return tuple.__new__(_sampled, (_from_numpy(tokens), _from_numpy(log_probs),
                                    _from_numpy(model_log_probs)))


# --- scaling a kept gradient in place ------------------------------------------------------------

cdef enum:
    SCALE_CHUNK = 1 << 15  # elements per chunk of scale_in_place's parallel loop (128 KiB f32)


cdef void _scale(real_t* p, Py_ssize_t n, real_t factor, int threads) noexcept nogil:
    cdef Py_ssize_t chunks = (n + SCALE_CHUNK - 1) // SCALE_CHUNK, k, i, end
    if threads <= 1 or chunks <= 1:
        for i in range(n):
            p[i] = p[i] * factor
        return
    if threads > chunks:  # (as the kernels' n_threads: never more threads than work items)
        threads = <int>chunks
    if threads > THREAD_LIMIT:
        threads = THREAD_LIMIT
    for k in prange(chunks, num_threads=threads, schedule="dynamic"):
        end = (k + 1) * SCALE_CHUNK
        if end > n:
            end = n
        for i in range(k * SCALE_CHUNK, end):
            p[i] = p[i] * factor


def scale_in_place(cnp.ndarray grad not None, double value, int threads):
    """``grad *= value`` in place: every element of a C-contiguous, aligned, writeable float32 or
    float64 array (native byte order) times ``value`` rounded once to the array's dtype -- the
    IEEE products of ``np.multiply(grad, grad.dtype.type(value), out=grad)``, bit for bit -- on
    ``threads`` threads (chunks of SCALE_CHUNK elements, dynamic schedule, without the GIL; one
    thread for a single chunk).  TypeError / ValueError for another array."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(grad)
    cdef int typenum = cnp.PyArray_TYPE(grad)
    cdef void* data = cnp.PyArray_DATA(grad)
    cdef float factor32
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        raise TypeError(f"grad must be a float32 or float64 array, got {grad.dtype}")
    if not (cnp.PyArray_ISCARRAY(grad) and cnp.PyArray_ISNOTSWAPPED(grad)):
        raise ValueError("grad must be C-contiguous, aligned, writeable and in native byte order")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if typenum == cnp.NPY_FLOAT32:
        factor32 = <float>value
        with nogil:
            _scale(<float*>data, n, factor32, threads)
    else:
        with nogil:
            _scale(<double*>data, n, value, threads)

