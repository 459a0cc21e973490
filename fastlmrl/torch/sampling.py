r"""Next-token sampling from (..., V) CPU logits: the torch face of :mod:`fastlmrl.sampling`
(temperature, top-k, top-p, min-p; equations, order of the filters and numerics there).

``sample_tokens(logits, seed, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)`` returns
``(tokens, log_probs, model_log_probs)`` of the logits' batch shape: int64 token ids, their
log-probability under the distribution sampled from and under the model (temperature-1 softmax of
the raw logits).  The draw is a function of ``(logits, seed)`` only: the same tokens as the NumPy
API in every backend and at every thread count.

The op ``torch.ops.fastlmrl.sample_tokens(logits, key, counter, temperature, top_k, top_p,
min_p)`` is functional: the random stream position is an argument (the stream's 64-bit ``key``,
:func:`fastlmrl.rng.stream_key`, and its first ``counter``, each as the int64 with the same 64
bits).  It has a fake implementation and no gradient (it returns ids and log-probabilities of a
draw), calls the active backend's raw kernel (which checks the scalars and rows before writing)
and needs (N, V) logits; :func:`sample_tokens` validates everything first and takes (..., V).
Contiguous float32/float64 logits reach the kernel as a view, a non-contiguous tensor is copied
once, bfloat16 is sampled in float32 (log-probs returned in float32).  Tensors on another device
raise ValueError naming it.

In eager mode plain contiguous (..., V) float32/float64 logits skip the wrapper's checks and the
dispatcher: under the Cython backend :mod:`fastlmrl._cython.torch_entry` reads the tensor in C and
calls the kernel core (~2 us over the raw kernel at (1, 8); the options' check and an int seed's
key remembered from the last call), under the others ``_sample_fast`` calls the kernel on a
``Tensor.numpy()`` view (~10 us).  Any error, and a kernel status, is left to the general path
(nothing consumed from the seed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .. import _backend
from .. import _validation as check
from .. import sampling as _np
from ..rng import MASK64, advance, check_capacity
from . import _tensors as tt
from .policy_losses import _cython_kernels, _entry

if TYPE_CHECKING:  # what readers and tools follow: the reference kernels
    from .._python import sampling as _kernels
else:  # the active backend's kernels, rebound by set_backend (fastlmrl._backend.bind)
    _kernels = _backend.bind(__name__, "_kernels")

__all__ = ["SampledTokens", "sample_tokens"]

_LOGIT_DTYPES = (torch.float32, torch.float64, torch.bfloat16)


class SampledTokens(NamedTuple):
    """What :func:`sample_tokens` returns: tensors of the logits' batch shape, without gradient.

    * ``tokens``: the sampled token ids, int64;
    * ``log_probs``: the log-probability of each sampled token under the distribution it was
      drawn from (after temperature, top-k, top-p and min-p, renormalised over the kept tokens;
      0 for greedy decoding, ``temperature=0``),
      in the logits' dtype (float32 for bfloat16 logits);
    * ``model_log_probs``: its log-probability under the model, the temperature-1 softmax of the
      raw logits (what PPO / GRPO use as ``old_log_probs``), same dtype.
    """

    tokens: Tensor
    log_probs: Tensor
    model_log_probs: Tensor


def _signed(value: int) -> int:
    """The int64 with the bits of a uint64 (the op schema's ints are int64)."""
    return value - (1 << 64) if value >= (1 << 63) else value


def _log_prob_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype == torch.bfloat16 else dtype


@torch.library.custom_op("fastlmrl::sample_tokens", mutates_args=(), device_types="cpu")
def _sample_tokens(
    logits: Tensor,
    key: int,
    counter: int,
    temperature: float,
    top_k: int,
    top_p: float,
    min_p: float,
) -> tuple[Tensor, Tensor, Tensor]:

    x = logits.detach()
    if x.dtype == torch.bfloat16:
        x = x.float()
    elif not x.is_contiguous():
        x = x.contiguous()
    if x.dtype not in (torch.float32, torch.float64) or x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(
            f"logits must be an (N, V) float32/float64/bfloat16 tensor with V >= 1, "
            f"got {x.dtype} of shape {tuple(x.shape)}"
        )
    x_np = x.numpy()
    n = x_np.shape[0]
    tokens = torch.empty(n, dtype=torch.int64)
    log_probs = torch.empty(n, dtype=x.dtype)
    model_log_probs = torch.empty(n, dtype=x.dtype)
    # the raw kernel checks its scalar arguments and the rows before writing (status codes)
    status = _kernels.sample_tokens(
        x_np,
        temperature,
        top_k,
        top_p,
        min_p,
        np.uint64(key & MASK64),
        np.uint64(counter & MASK64),
        tokens.numpy(),
        log_probs.numpy(),
        model_log_probs.numpy(),
        tt.num_threads(x_np.size),
    )
    _np.raise_for_status(status, x_np)
    return tokens, log_probs, model_log_probs


@_sample_tokens.register_fake
def _(logits, key, counter, temperature, top_k, top_p, min_p):
    n = logits.shape[0]
    lp_dtype = _log_prob_dtype(logits.dtype)
    return (
        logits.new_empty(n, dtype=torch.int64),
        logits.new_empty(n, dtype=lp_dtype),
        logits.new_empty(n, dtype=lp_dtype),
    )


def _as_logits(logits) -> Tensor:
    if not isinstance(logits, Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.device.type != "cpu":
        raise ValueError(
            f"logits is on device '{logits.device}', but fastlmrl.torch runs on CPU tensors only "
            f"(no {logits.device.type} backend yet): pass logits.cpu()"
        )
    if logits.dtype not in _LOGIT_DTYPES:
        raise TypeError(f"logits must have dtype float32, float64 or bfloat16, got {logits.dtype}")
    if logits.ndim < 1:
        raise ValueError("logits must have shape (..., V), got a 0-dimensional tensor")
    if logits.shape[-1] == 0:
        raise ValueError(
            f"logits must have at least one column (V >= 1), got shape {tuple(logits.shape)}"
        )
    x = logits.detach() if logits.requires_grad else logits
    return x if x.ndim == 2 else x.reshape(-1, x.shape[-1])  # (a reshape call costs ~2 us)


def _options(temperature, top_k, top_p, min_p) -> tuple[float, int, float, float]:
    """The checked ``(temperature, top_k, top_p, min_p)`` (``top_k`` not yet capped by V)."""
    temperature = _np._temperature(temperature)
    if isinstance(top_k, (bool, np.bool_)) or not isinstance(top_k, (int, np.integer)):
        raise TypeError(f"top_k must be an int, got {type(top_k).__name__}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 disables top-k), got {top_k}")
    top_p = check.real(top_p, "top_p", 0.0, 1.0, low_open=True)
    min_p = check.real(min_p, "min_p", 0.0, 1.0)
    return temperature, int(top_k), top_p, min_p


def _entry_options(temperature, top_k, top_p, min_p):
    """:func:`_options`, None where they raise (the general path raises the error)."""
    try:
        temperature, top_k, top_p, min_p = _options(temperature, top_k, top_p, min_p)
    except (TypeError, ValueError, OverflowError):
        return None
    return temperature, min(top_k, 1 << 62), top_p, min_p  # (an int64; capped by V after)


def _sample_fast(logits, seed, temperature, top_k, top_p, min_p):
    """:func:`sample_tokens` on a plain contiguous (..., V) float32/float64 CPU tensor of rank
    >= 2 in eager mode under a backend without the Cython entry point: the kernel on
    ``Tensor.numpy()`` views, ``seed`` advanced after success.  None when anything needs the
    general path (which raises the errors; a kernel status consumes nothing)."""
    if not tt.eager_mode() or logits.dtype not in _FAST_DTYPES or not logits.is_cpu:
        return None
    options = _entry_options(temperature, top_k, top_p, min_p)
    if options is None:
        return None
    try:
        x = logits.numpy(force=True) if logits.requires_grad else logits.numpy()
    except (TypeError, RuntimeError):  # conjugate / negative bit
        return None
    if x.ndim < 2 or x.shape[-1] == 0 or not x.flags.c_contiguous:
        return None
    batch = x.shape[:-1]
    x = x if x.ndim == 2 else x.reshape(-1, x.shape[-1])  # (a view: C-contiguous)
    n = x.shape[0]
    try:
        key, counter = check_capacity(seed, n)
    except (TypeError, ValueError):
        return None
    tokens, log_probs, model_log_probs = (
        np.empty(n, dtype=np.int64),
        np.empty(n, dtype=x.dtype),
        np.empty(n, dtype=x.dtype),
    )
    temperature, top_k, top_p, min_p = options
    status = _kernels.sample_tokens(
        x,
        temperature,
        min(top_k, x.shape[1]),
        top_p,
        min_p,
        np.uint64(key),
        np.uint64(counter),
        tokens,
        log_probs,
        model_log_probs,
        tt.num_threads(x.size),
    )
    if status:
        return None
    advance(seed, n)
    if len(batch) != 1:  # (the batch shape)
        tokens, log_probs, model_log_probs = (
            a.reshape(batch) for a in (tokens, log_probs, model_log_probs)
        )
    return SampledTokens(
        torch.from_numpy(tokens), torch.from_numpy(log_probs), torch.from_numpy(model_log_probs)
    )


_FAST_DTYPES = (torch.float32, torch.float64)


def sample_tokens(
    logits: Tensor,
    seed,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
) -> SampledTokens:
    r"""One token per row of (..., V) CPU logits (see :func:`fastlmrl.sample_tokens`).

    ``seed``: an int (a fresh stream) or a :class:`fastlmrl.RandomStream`, advanced by the number
    of rows after success (row i uses counter ``c + i``).  Returns :class:`SampledTokens` of the
    batch shape ``logits.shape[:-1]``: int64 ``tokens``, ``log_probs`` (distribution sampled
    from) and ``model_log_probs`` (temperature-1 model), float32 for bfloat16 logits, else the
    logits' dtype.
    """
    if tt._kernels is _cython_kernels and not _is_compiling():  # (None: no entry point)
        # tensors straight to the Cython core (plain contiguous (..., V) float32/64 logits)
        result = _entry_sample_tokens(logits, seed, temperature, top_k, top_p, min_p)
        if result.__class__ is SampledTokens:
            return result
    elif type(logits) is Tensor:  # the eager NumPy-view path
        result = _sample_fast(logits, seed, temperature, top_k, top_p, min_p)
        if result is not None:
            return result
    x = _as_logits(logits)
    batch = logits.shape[:-1]
    temperature, top_k, top_p, min_p = _options(temperature, top_k, top_p, min_p)
    top_k = min(top_k, x.shape[1])
    n = x.shape[0]
    key, counter = check_capacity(seed, n)
    tokens, log_probs, model_log_probs = _sample_tokens(
        x, _signed(key), _signed(counter), temperature, top_k, top_p, min_p
    )
    advance(seed, n)
    if len(batch) != 1:
        tokens, log_probs, model_log_probs = (
            t.reshape(batch) for t in (tokens, log_probs, model_log_probs)
        )
    return SampledTokens(tokens, log_probs, model_log_probs)


_is_compiling = torch.compiler.is_compiling
# the Cython entry point (fastlmrl._cython.torch_entry; None without it): plain CPU tensors
# straight to the kernel core in eager mode, the general path for anything else
_entry_sample_tokens: Any = None
if _entry is not None:
    _entry.configure_sampling(_entry_options, check_capacity, advance, SampledTokens)
    _entry_sample_tokens = _entry.sample_tokens
