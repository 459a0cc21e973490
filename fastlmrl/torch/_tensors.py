"""Checks and conversions between CPU torch tensors and the NumPy arrays the kernels read.

Every check here runs on metadata only (device, dtype, shape), so it also runs while
``torch.compile`` traces a wrapper; value checks (ids in range, finite inputs) happen in the
NumPy API that each op calls, before its kernel writes anything.
"""

from __future__ import annotations

import math
import os
import sys
import threading

import numpy as np
import torch
from torch import Tensor

from .. import _backend, _free_cores

LOGIT_DTYPES = (torch.float32, torch.float64, torch.bfloat16)
REAL_DTYPES = LOGIT_DTYPES + (torch.float16,)
INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def tensor(x, name: str) -> Tensor:
    """``x`` itself when it is a CPU tensor; TypeError / ValueError naming ``name`` otherwise."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_cpu:  # (x.device.type builds a device object: 5x slower)
        raise ValueError(
            f"{name} is on device '{x.device}', but fastlmrl.torch runs on CPU tensors only (no "
            f"{x.device.type} backend yet): pass {name}.cpu()"
        )
    return x


def logits_2d(logits, name: str = "logits") -> Tensor:
    """(..., V) float32/float64/bfloat16 logits as an (N, V) tensor (a view when possible)."""
    x = tensor(logits, name)
    if x.dtype not in LOGIT_DTYPES:
        raise TypeError(f"{name} must have dtype float32, float64 or bfloat16, got {x.dtype}")
    if x.ndim < 1:
        raise ValueError(f"{name} must have shape (..., V), got a 0-dimensional tensor")
    if x.shape[-1] == 0:
        raise ValueError(
            f"{name} must have at least one column (V >= 1), got shape {tuple(x.shape)}"
        )
    return x if x.ndim == 2 else x.reshape(-1, x.shape[-1])


def per_token(x, name: str, batch_shape, optional: bool = False):
    """A real tensor of shape ``batch_shape`` (or already flat, (N,)) as a 1-D tensor."""
    if x is None:
        if optional:
            return None
        raise TypeError(f"{name} is required")
    x = tensor(x, name)
    if x.dtype not in REAL_DTYPES:
        raise TypeError(f"{name} must hold real numbers (a floating tensor), got {x.dtype}")
    return _flat(x, name, batch_shape)


def ids(x, name: str, batch_shape) -> Tensor:
    x = tensor(x, name)
    if x.dtype not in INT_DTYPES:
        raise TypeError(f"{name} must hold integer ids, got dtype {x.dtype}")
    return _flat(x, name, batch_shape)


def _flat(x: Tensor, name: str, batch_shape) -> Tensor:
    if x.ndim == 1 and len(batch_shape) == 1 and x.shape[0] == batch_shape[0]:
        return x
    n = 1
    for s in batch_shape:
        n *= s
    if tuple(x.shape) != tuple(batch_shape) and tuple(x.shape) != (n,):
        raise ValueError(
            f"{name} must have shape {tuple(batch_shape)} (the batch shape of the "
            f"logits) or ({n},), got {tuple(x.shape)}"
        )
    return x.reshape(n)


def offsets(x, name: str = "sequence_offsets"):
    if x is None:
        return None
    x = tensor(x, name)
    if x.dtype not in INT_DTYPES:
        raise TypeError(f"{name} must hold integer offsets, got dtype {x.dtype}")
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {tuple(x.shape)}")
    return x


def unflat(x: Tensor, batch_shape) -> Tensor:
    """A flat (N,) result in the logits' batch shape (no reshape call when it is already 1-D)."""
    return x if len(batch_shape) == 1 else x.reshape(batch_shape)


def flat_rows(x: np.ndarray, per_row) -> tuple | None:
    """For the eager NumPy-view paths: C-contiguous (..., V) logits ``x`` of rank > 2 as an
    (N, V) view and each per-row array of ``per_row`` (None passes) of the batch shape as an
    (N,) view (flat (N,) ones as they are), or None when one has another shape or is a
    non-contiguous batch-shaped view (the general path takes it, or raises its error)."""
    batch = x.shape[:-1]
    n = math.prod(batch)
    flat = []
    for a in per_row:
        if a is not None and a.shape != (n,):
            if a.shape != batch or not a.flags.c_contiguous:
                return None
            a = a.reshape(n)
        flat.append(a)
    return x.reshape(n, x.shape[-1]), flat


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels see: bfloat16 is computed in float32."""
    return torch.float32 if dtype == torch.bfloat16 else dtype


def loss_dtype(dtype: torch.dtype) -> torch.dtype:
    """Scalar losses: the logits dtype, float32 for bfloat16 logits."""
    return compute_dtype(dtype)


def array(x: Tensor) -> np.ndarray:
    """A NumPy view of a CPU tensor: no copy when it is contiguous, one copy otherwise;
    bfloat16 / float16 are converted to float32 (the kernels compute in float32 or float64); a
    lazily negated or conjugated view (``torch._neg_view``, ``.conj()``) is materialised."""
    if x.dtype in (torch.bfloat16, torch.float16):
        x = x.float()
    elif not x.is_contiguous():
        x = x.contiguous()
    if x.requires_grad:
        x = x.detach()
    try:
        return x.numpy()
    except RuntimeError:  # negative / conjugate bit (resolve_*: a copy only when the bit is set)
        return x.resolve_neg().resolve_conj().numpy()


def optional_array(x):
    return None if x is None else array(x)


_NUMPY_DTYPE = {torch.float32: np.float32, torch.float64: np.float64, torch.bfloat16: np.uint16}


class _BufferCache:
    """Large buffers kept after their tensors die, handed out again for the same size.

    A training step allocates an (N, V) gradient, the optimizer drops it (``zero_grad`` sets
    ``.grad`` to None) and the next step allocates one of the same size: freshly mapped memory
    is page-faulted in on first write, which measured up to as long as the fused kernel pass
    itself at (4096, 50257).  This cache (like PyTorch's CUDA caching allocator) keeps up to
    ``max_bytes`` of such buffers (default 4 GiB; only buffers of >= 16 MiB) and reuses one whose
    tensors are all gone -- known from the NumPy array's reference count, which every tensor
    and view over it holds through ``torch.from_numpy``.  :func:`fastlmrl.torch.empty_cache`
    releases the free ones; ``fastlmrl.torch.set_buffer_cache(0)`` turns it off.
    """

    MIN_BYTES = 1 << 24

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.entries: list[np.ndarray] = []  # 1-D uint8 owners, least recently used first
        self.lock = threading.Lock()

    # sys.getrefcount of a buffer no tensor uses, read from a loop variable over the entries:
    # the entries list, the loop variable and getrefcount's own argument
    FREE_REFS = 3

    def take(self, nbytes: int) -> np.ndarray:
        with self.lock:
            for i in range(len(self.entries)):
                arr = self.entries[i]
                if arr.nbytes == nbytes and sys.getrefcount(arr) <= self.FREE_REFS:
                    self.entries.append(self.entries.pop(i))
                    return arr
            arr = np.empty(nbytes, dtype=np.uint8)
            self.entries.append(arr)
            self._trim(self.max_bytes)
            return arr

    def _trim(self, limit: int) -> None:
        total = sum(a.nbytes for a in self.entries)
        for arr in list(self.entries):
            if total <= limit:
                break
            self.entries.remove(arr)  # a buffer still in use is freed with its last tensor
            total -= arr.nbytes

    def clear(self) -> None:
        with self.lock:
            self.entries = [a for a in self.entries if sys.getrefcount(a) > self.FREE_REFS]


LARGE_BYTES = _BufferCache.MIN_BYTES  # smaller buffers never come from the cache
_cache = _BufferCache(int(os.environ.get("FASTLMRL_TORCH_CACHE_BYTES", 4 << 30)))


def set_buffer_cache(max_bytes: int) -> None:
    """Keep at most ``max_bytes`` of large freed gradient / chunk buffers for reuse (0: none)."""
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
        raise ValueError(f"max_bytes must be an int >= 0, got {max_bytes!r}")
    with _cache.lock:
        _cache.max_bytes = max_bytes
        _cache._trim(max_bytes)


def empty_cache() -> None:
    """Release the cached buffers that no tensor uses any more (as ``torch.cuda.empty_cache``)."""
    _cache.clear()


def empty(shape, dtype: torch.dtype) -> Tensor:
    return empty_pair(shape, dtype)[0]


def empty_pair(shape, dtype: torch.dtype) -> tuple[Tensor, np.ndarray]:
    """An uninitialised CPU tensor whose memory NumPy allocates (or the buffer cache reuses).

    NumPy advises the kernel to back large arrays with transparent huge pages
    (``madvise(MADV_HUGEPAGE)``) and PyTorch's CPU allocator does not (unless
    ``THP_MEM_ALLOC_ENABLE=1``): with THP in ``madvise`` mode, the first write to a fresh (N, V)
    tensor from ``torch.empty`` page-faults 4 KiB at a time and measured ~5x slower here (200 MB:
    375 vs 75 ms).  bfloat16 storage is a uint16 array viewed as bfloat16.
    """
    shape = tuple(shape)
    np_dtype = np.dtype(_NUMPY_DTYPE[dtype])
    nbytes = math.prod(shape) * np_dtype.itemsize
    if nbytes >= _cache.MIN_BYTES and _cache.max_bytes > 0:
        arr = _cache.take(nbytes).view(np_dtype).reshape(shape)
    else:
        arr = np.empty(shape, dtype=np_dtype)
    t = torch.from_numpy(arr)
    return (t.view(torch.bfloat16), arr) if dtype == torch.bfloat16 else (t, arr)


def scratch_like(x: np.ndarray) -> np.ndarray:
    """An uninitialised array of ``x``'s shape and dtype that no tensor will see (a gradient
    nobody asked for); large ones come from the buffer cache."""
    return scratch(x.shape, x.dtype)


def scratch(shape, dtype: np.dtype) -> np.ndarray:
    """:func:`scratch_like` by shape and NumPy dtype."""
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < _cache.MIN_BYTES or _cache.max_bytes <= 0:
        return np.empty(shape, dtype=dtype)
    return _cache.take(nbytes).view(dtype).reshape(shape)


def kernel_logits(logits: Tensor) -> tuple[Tensor, np.ndarray]:
    """(tensor, array) of the logits as the kernels read them (float32 copy for bfloat16; a
    copy of a non-contiguous or lazily negated view, ``torch._neg_view``)."""
    if logits.dtype == torch.bfloat16:
        x = empty(logits.shape, torch.float32)
        x.copy_(logits)
    elif not logits.is_contiguous() or logits.is_neg():
        x = empty(logits.shape, logits.dtype)
        x.copy_(logits)
    else:
        x = logits
    return x, (x.detach() if x.requires_grad else x).numpy()


def grad_buffer(like: Tensor) -> tuple[Tensor, np.ndarray]:
    """An uninitialised (N, V) tensor of the kernels' dtype and its NumPy view (for ``out=``)."""
    return empty_pair(like.shape, compute_dtype(like.dtype))


def as_dtype(grad: Tensor, dtype: torch.dtype) -> Tensor:
    if grad.dtype == dtype:
        return grad
    out = empty(grad.shape, dtype)
    out.copy_(grad)
    return out


def scalar(value: float, dtype: torch.dtype) -> Tensor:
    return torch.from_numpy(np.array(value, dtype=_NUMPY_DTYPE[dtype]))


def is_traced(t: Tensor) -> bool:
    """True unless ``t`` is a plain eager tensor: under torch.compile / AOT autograd / opcheck
    (fake or functional tensors, an active dispatch mode) or a functorch transform."""
    if torch.compiler.is_compiling() or type(t) is not Tensor:
        return True
    if torch._is_functional_tensor(t) or torch._C._functorch.is_functorch_wrapped_tensor(t):
        return True
    return torch._C._len_torch_dispatch_stack() > 0


_is_compiling = torch.compiler.is_compiling


def eager_mode() -> bool:
    """True in plain eager mode: not under torch.compile, a dispatch mode (fake / functional
    tensors, opcheck), a functorch transform or the TorchScript tracer.  The arguments' types
    are the caller's to check (``type(t) is Tensor``)."""
    return not (
        _is_compiling()
        or _dispatch_modes()
        or _peek_transforms() is not None
        or _jit_tracing() is not None
    )  # is_compiling first: dynamo folds it to True


_PLAIN = (Tensor, torch.nn.Parameter)
_peek_transforms = torch._C._functorch.peek_interpreter_stack
_dispatch_modes = torch._C._len_torch_dispatch_stack
_jit_tracing = torch._C._get_tracing_state
#: eager_mode()'s four tests as functions, for the Cython entry point: eager when the first
#: three return false / 0 / None and the last None
EAGER_CHECKS = (_is_compiling, _dispatch_modes, _peek_transforms, _jit_tracing)


def traced_call(args) -> bool:
    """True when a call with these arguments must go through the registered custom op: under
    torch.compile / AOT autograd / opcheck (fake or functional tensors, a dispatch mode), a
    functorch transform (vmap, grad) or the TorchScript tracer; False for plain eager tensors."""
    if (
        torch.compiler.is_compiling()
        or _dispatch_modes() > 0
        or _peek_transforms() is not None
        or _jit_tracing() is not None
    ):
        return True
    for a in args:
        if isinstance(a, Tensor) and type(a) not in _PLAIN:
            return True
    return False


EAGER_OPS: dict = {}  # op name -> its EagerOp (tests compare both paths of every op)


class EagerOp:
    """A registered custom op, called without the dispatcher in eager mode.

    ``torch.library.custom_op`` routes every call through the dispatcher and the autograd
    kernel it builds from ``register_autograd``, which costs ~100-500 us per call of a loss op
    with a dozen arguments (argument defaults and schema checks in Python) -- far more than the
    fused kernel itself on a small batch.  For plain eager tensors (:func:`traced_call` False)
    this calls the op's own implementation directly -- inside a ``torch.autograd.Function`` made
    of the same ``setup_context`` and ``backward`` when a gradient is needed -- so both paths run
    the same code and give identical results (tested); anything traced, transformed or compiled
    goes through the custom op, whose fake implementation and opcheck stay as they are.
    """

    def __init__(self, op, setup_context=None, backward=None, differentiable=(0,)):
        self.op = op
        self.impl = op._init_fn
        self.differentiable = differentiable  # positions of the inputs that may need a gradient
        EAGER_OPS[op._name] = self
        self.function = self.apply = None
        if backward is not None:
            impl = self.impl

            def forward(ctx, *args):
                output = impl(*args)
                setup_context(ctx, args, output)
                return output

            # forward(ctx, ...) rather than a separate setup_context: Function.apply binds the
            # arguments with inspect.signature when setup_context is defined (~100 us a call)
            self.function = type(
                f"{op._namespace}_{op._name}",
                (torch.autograd.Function,),
                {
                    "forward": staticmethod(forward),
                    "backward": staticmethod(backward),
                },
            )
            # torch.autograd.Function.apply without its Python prologue (argument binding, dead
            # functorch wrappers): never under functorch transforms here (traced_call)
            self.apply = super(torch.autograd.Function, self.function).apply

    def __call__(self, *args):
        if traced_call(args):
            return self.op(*args)
        if torch.is_grad_enabled():
            for i in self.differentiable:
                a = args[i]
                if a is not None and a.requires_grad:
                    # an op without a backward (the backward ops) keeps the custom op's error
                    # if a gradient is asked through it (double backward)
                    return self.op(*args) if self.apply is None else self.apply(*args)
        return self.impl(*args)


def autograd(op, backward, setup_context, differentiable=(0,)) -> EagerOp:
    """``op.register_autograd(backward, setup_context=setup_context)`` and the op's eager caller
    (:class:`EagerOp`) with the same formulas; ``differentiable``: the inputs' positions."""
    op.register_autograd(backward, setup_context=setup_context)
    return EagerOp(op, setup_context, backward, differentiable)


# the active backend's kernels, rebound by fastlmrl._backend when the backend changes (a
# dispatcher to the calling thread's backend while use_backend() is open anywhere)
_kernels = _backend.bind(__name__, "_kernels")


def kernels():
    """The active backend's kernels (``fastlmrl._backend.bind``: no lookup per call)."""
    return _kernels


SMALL_WORK = 1 << 16  # elements: below this a kernel's thread count is fastlmrl's setting as is


def num_threads(elements: int) -> int:
    """The thread count for a kernel call over ``elements`` logits, as the NumPy API passes it:
    ``fastlmrl.get_num_threads()`` capped by the cores other processes leave free
    (``fastlmrl._free_cores``: a two-thread kernel waits for a busy second core); a small call
    skips the cap (reading the free cores costs a few microseconds)."""
    if elements < SMALL_WORK:
        return _backend.get_num_threads()
    return _free_cores.threads()


small_threads = _backend.get_num_threads  # num_threads() below SMALL_WORK
large_threads = _free_cores.threads  # num_threads() from SMALL_WORK on


def unbind(stats: Tensor) -> tuple:
    """``stats.unbind()`` -- the 0-dim views of a 1-D tensor of diagnostics; for a plain eager
    tensor built from NumPy views (about 1 us each instead of ~2.5 us through the dispatcher)."""
    if (
        type(stats) is not Tensor
        or stats.requires_grad
        or torch.compiler.is_compiling()
        or _dispatch_modes() > 0
    ):
        return stats.unbind()
    arr = stats.numpy()
    return tuple(torch.from_numpy(arr[i, ...]) for i in range(arr.shape[0]))


_keep_graph = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)


def graph_is_freed_after_this_backward() -> bool:
    """True inside a backward pass that frees the graph (no ``retain_graph``); False when it
    keeps it or torch cannot tell."""
    return _keep_graph is not None and not _keep_graph()


_NUMPY_SCALAR = {torch.float32: np.float32, torch.float64: np.float64}

#: gradients of this many elements or more are scaled on ``large_threads()`` threads (fewer: one)
SCALE_PARALLEL_ELEMENTS = 1 << 18
# (fastlmrl._cython.torch_entry.scale_in_place, the Cython backend's kernels module), set by
# fastlmrl.torch.policy_losses when the entry point is built
_parallel_scale: tuple = (None, None)


def use_parallel_scale(scale_in_place, cython_kernels) -> None:
    """Scale kept gradients with ``scale_in_place(grad, value, threads)`` (the Cython entry
    point's parallel loop) while ``cython_kernels`` is the active backend's kernels."""
    global _parallel_scale
    _parallel_scale = (scale_in_place, cython_kernels)


def scale_in_place(grad: np.ndarray, value: float) -> None:
    """``grad *= value`` in place, ``value`` rounded to ``grad``'s dtype: the IEEE products of
    ``np.multiply(grad, grad.dtype.type(value), out=grad)`` either way.  Under the Cython backend
    the entry point's parallel loop (``fastlmrl._cython.torch_entry.scale_in_place``): from
    :data:`SCALE_PARALLEL_ELEMENTS` elements on over :func:`large_threads` threads (the free-core
    cap: one while the other core is busy), below that one thread; under the other backends (or
    without the entry point) NumPy, one thread."""
    parallel, cython_kernels = _parallel_scale
    if parallel is not None and _kernels is cython_kernels:
        size = grad.size
        parallel(grad, value, 1 if size < SCALE_PARALLEL_ELEMENTS else large_threads())
    else:
        np.multiply(grad, grad.dtype.type(value), out=grad)


def scale_eager(grad: np.ndarray, upstream):
    """:func:`scale` for a node made by an eager fast path (plain tensors), whose gradient
    ``grad`` (a NumPy array) no one else holds: the same values as a tensor, with the checks
    that can still apply in its backward pass (a dispatch mode around ``backward``).

    When the graph is freed after this backward pass, nothing reads ``grad`` again: an upstream
    gradient of 1 returns it as is, and any other (a scaled loss, ``(loss / k).backward()``)
    multiplies it in place (:func:`scale_in_place`: in parallel under the Cython backend, capped
    by the free cores): the same float products as ``grad * upstream`` without a fresh (N, V)
    tensor (whose first touch page-faults ~4100 pages at (65536, 64) float32), and without
    torch's two-thread ``mul_``, which took 8.6 ms instead of 0.8 ms there with the other core
    busy.  An upstream that requires a gradient
    (``create_graph``) or of another dtype gets the out-of-place product.
    """
    if upstream is None:
        return None
    tensor = torch.from_numpy(grad)
    if (
        type(upstream) is Tensor and not _dispatch_modes() and graph_is_freed_after_this_backward()
    ):  # (a scalar loss: its upstream gradient has one element)
        value = float(upstream)
        if value == 1.0:
            return tensor
        scalar = _NUMPY_SCALAR.get(upstream.dtype)
        if not upstream.requires_grad and scalar is grad.dtype.type:
            scale_in_place(grad, value)
            return tensor
    return tensor * upstream


def scale(grad: Tensor, upstream):
    """``grad * upstream`` for the scalar upstream gradient of a loss.

    In eager mode an upstream gradient of exactly 1 (``loss.backward()``) returns the gradient
    computed in the forward pass as is -- no (N, V) copy -- when the graph is freed after this
    backward pass (no ``retain_graph`` / ``create_graph``): autograd may then accumulate into it,
    and nothing reads it again.  ``upstream`` None (no gradient reached the loss) gives None.
    """
    if upstream is None:
        return None
    if (
        not is_traced(upstream)
        and upstream.numel() == 1
        and float(upstream) == 1.0
        and graph_is_freed_after_this_backward()
    ):
        return grad
    return grad * upstream  # a 0-dim upstream keeps the gradient's dtype
