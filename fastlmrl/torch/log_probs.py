r"""Differentiable log-softmax statistics of (..., V) logits: selective log-probabilities, entropy,
log-sum-exp (the torch face of :mod:`fastlmrl.log_probs`; equations and numerics there).

Gradients (:math:`p = \mathrm{softmax}(z_i)`, :math:`g_i` the upstream gradient of row i):

* ``token_log_probs``: :math:`g_i(\mathrm{onehot}(a_i) - p)`, one fused kernel pass per row (the
  REINFORCE kernel with return :math:`-g_i` and weight 1; rows whose sampled token is masked, or a
  non-finite :math:`g`, take ``log_prob_grad`` followed by a row scaling);
* ``entropy``: :math:`-g_i\,p_j(\log p_j + H_i)` (kernel log-softmax, then in-place torch ops on
  chunks of rows: no (N, V) temporary besides the gradient);
* ``logsumexp``: :math:`g_i\,p` (:math:`\exp(z - \operatorname{lse})` written into the gradient by
  in-place torch ops, scaled in place).

The backward passes recompute the softmax from the saved logits (nothing (N, V) is saved) and are
custom ops themselves, so they are opaque to ``torch.compile`` as well.

Eager fast paths: plain contiguous (..., V) float32/float64 tensors (ids of their batch shape
or flat) reach the kernel without the wrapper's checks and the dispatcher -- under the Cython
backend through :mod:`fastlmrl._cython.torch_entry` (tensors read in C, ~1 us over the raw kernel
at (1, 8), ~4.4 us with a gradient), under the others through ``Tensor.numpy()`` views
(``_row_fast``) -- with an autograd node of their own (``fastlmrl_<op>_fast``) whose backward is
the custom op's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import log_probs as _np
from .. import policy_losses as _np_losses
from . import _tensors as tt
from .policy_losses import _cython_kernels, _entry

__all__ = ["entropy", "logsumexp", "token_log_probs"]

_ENTROPY_CHUNK_ELEMENTS = 1 << 20


def _row_output(values: np.ndarray, dtype: torch.dtype) -> Tensor:
    return tt.as_dtype(torch.from_numpy(values), dtype)


# --- token_log_probs ---------------------------------------------------------------------------


@torch.library.custom_op("fastlmrl::token_log_probs", mutates_args=(), device_types="cpu")
def _token_log_probs(logits: Tensor, tokens: Tensor) -> Tensor:
    _, x = tt.kernel_logits(logits)
    return _row_output(_np.token_log_probs(x, tt.array(tokens)), logits.dtype)


@_token_log_probs.register_fake
def _(logits, tokens):
    return logits.new_empty(logits.shape[:1])


@torch.library.custom_op("fastlmrl::token_log_probs_backward", mutates_args=(), device_types="cpu")
def _token_log_probs_backward(logits: Tensor, tokens: Tensor, grad_output: Tensor) -> Tensor:
    _, x = tt.kernel_logits(logits)
    ids = tt.array(tokens)
    g = tt.array(grad_output).astype(x.dtype, copy=False)
    grad, out = tt.grad_buffer(logits)
    fused = bool(np.isfinite(g).all())
    if fused:
        try:  # d(-G log pi)/dz with G = -g and weight 1 is g (onehot - p): one pass per row
            _np_losses.reinforce_loss(x, ids, -g, np.ones_like(g), out=out)
        except ValueError:  # a masked sampled token (its loss would be infinite) or bad logits
            fused = False
    if not fused:
        _np.log_prob_grad(x, ids, out=out)
        grad.mul_(torch.from_numpy(g).unsqueeze(1))
    return tt.as_dtype(grad, logits.dtype)


@_token_log_probs_backward.register_fake
def _(logits, tokens, grad_output):
    return torch.empty_like(logits)


def _save_inputs(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:2])


def _flat_backward(backward, logits: Tensor, *per_row: Tensor) -> Tensor:
    """``backward(logits, *per_row)`` (a row op's backward custom op, which takes (N, V) logits
    and (N,) tensors) for logits of any rank >= 2: the fast paths' nodes save (..., V) logits
    and per-row tensors of their batch shape (or flat), run on (N, V) / (N,) views, the
    gradient returned in the logits' shape."""
    if logits.ndim == 2:
        return backward(logits, *per_row)
    shape = logits.shape
    flat = (t.reshape(-1) for t in per_row)
    return backward(logits.reshape(-1, shape[-1]), *flat).reshape(shape)


def _token_log_probs_grad(ctx, grad_output):
    logits, tokens = ctx.saved_tensors
    return _flat_backward(_token_log_probs_backward_call, logits, tokens, grad_output), None


_token_log_probs_backward_call = tt.EagerOp(_token_log_probs_backward, differentiable=(0, 2))
_token_log_probs_call = tt.autograd(_token_log_probs, _token_log_probs_grad, _save_inputs)


class fastlmrl_token_log_probs_fast(torch.autograd.Function):
    """The autograd node of :func:`token_log_probs`'s eager fast path (the kernel already ran):
    ``forward(ctx, logits, tokens, out)`` saves the logits and ids, returns the (N,) array
    ``out`` as a tensor; ``backward`` is the custom op's (``token_log_probs_backward``)."""

    @staticmethod
    def forward(ctx, logits, tokens, out):
        ctx.save_for_backward(logits, tokens)
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad_output):
        return _token_log_probs_grad(ctx, grad_output) + (None,)


def token_log_probs(logits: Tensor, tokens: Tensor) -> Tensor:
    r"""Selective log-softmax :math:`\log\pi(a|s) = z_a - \operatorname{lse}(z)` of (..., V) logits
    at ``tokens`` (...,); returns (...,) in the logits' dtype, differentiable w.r.t. ``logits``.

    Equivalent to ``torch.log_softmax(logits, -1).gather(-1, tokens[..., None])[..., 0]`` without
    the (N, V) log-softmax.  A masked (-inf) sampled token gives -inf.
    """
    if tt._kernels is _cython_kernels and not _is_compiling():  # (None: no entry point)
        out = _entry_token_log_probs(logits, tokens)  # tensors straight to the Cython core
        if out.__class__ is Tensor:
            return out
    elif type(logits) is Tensor and type(tokens) is Tensor:  # the eager NumPy-view path
        out = _row_fast("token_log_probs", logits, tokens, _apply_token_log_probs)
        if out is not None:
            return out
    x = tt.logits_2d(logits)
    batch = logits.shape[:-1]
    ids = tt.ids(tokens, "tokens", batch)
    return tt.unflat(_token_log_probs_call(x, ids), batch)


# --- entropy -----------------------------------------------------------------------------------


@torch.library.custom_op("fastlmrl::entropy", mutates_args=(), device_types="cpu")
def _entropy(logits: Tensor) -> Tensor:
    _, x = tt.kernel_logits(logits)
    return _row_output(_np.entropy(x), logits.dtype)


@_entropy.register_fake
def _(logits):
    return logits.new_empty(logits.shape[:1])


@torch.library.custom_op("fastlmrl::entropy_backward", mutates_args=(), device_types="cpu")
def _entropy_backward(logits: Tensor, entropy: Tensor, grad_output: Tensor) -> Tensor:
    _, x = tt.kernel_logits(logits)
    grad, out = tt.grad_buffer(logits)
    _np.log_softmax(x, out=out)  # grad holds log p
    h = entropy.to(grad.dtype)
    g = grad_output.to(grad.dtype)
    n, v = grad.shape
    step = max(1, _ENTROPY_CHUNK_ELEMENTS // v)
    for a in range(0, n, step):
        rows = grad[a : a + step]
        p = torch.exp(rows)  # one (chunk, V) temporary
        # -g p (log p + H); p = 0 (masked: log p = -inf) contributes 0, not NaN
        rows.add_(h[a : a + step].unsqueeze(1)).mul_(p).nan_to_num_(nan=0.0)
        rows.mul_(g[a : a + step].neg().unsqueeze(1))
    return tt.as_dtype(grad, logits.dtype)


@_entropy_backward.register_fake
def _(logits, entropy, grad_output):
    return torch.empty_like(logits)


def _entropy_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], output)


def _entropy_grad(ctx, grad_output):
    logits, h = ctx.saved_tensors
    return _flat_backward(_entropy_backward_call, logits, h, grad_output)


_entropy_backward_call = tt.EagerOp(_entropy_backward, differentiable=(0, 1, 2))
_entropy_call = tt.autograd(_entropy, _entropy_grad, _entropy_setup)


class _SavedOutputNode(torch.autograd.Function):
    """The autograd node of a row op's eager fast path whose backward needs its output (the
    kernel already ran): ``forward(ctx, logits, out)`` returns the (N,) array ``out`` as a
    tensor and saves it with the logits; subclasses give the custom op's backward."""

    @staticmethod
    def forward(ctx, logits, out):
        result = torch.from_numpy(out)
        ctx.save_for_backward(logits, result)
        return result


class fastlmrl_entropy_fast(_SavedOutputNode):
    """:func:`entropy`'s node; ``backward`` is the custom op's (``entropy_backward``)."""

    @staticmethod
    def backward(ctx, grad_output):
        return _entropy_grad(ctx, grad_output), None


def entropy(logits: Tensor) -> Tensor:
    r"""Entropy :math:`H = -\sum_j p_j \log p_j` (nats) of each row of (..., V) logits; returns
    (...,) in the logits' dtype, differentiable (:math:`\partial H/\partial z_j = -p_j(\log p_j +
    H)`)."""
    if tt._kernels is _cython_kernels and not _is_compiling():  # (as token_log_probs)
        out = _entry_entropy(logits)
        if out.__class__ is Tensor:
            return out
    elif type(logits) is Tensor:  # the eager NumPy-view path
        out = _row_fast("entropy", logits, None, _apply_entropy)
        if out is not None:
            return out
    x = tt.logits_2d(logits)
    return tt.unflat(_entropy_call(x), logits.shape[:-1])


# --- logsumexp ---------------------------------------------------------------------------------


@torch.library.custom_op("fastlmrl::logsumexp", mutates_args=(), device_types="cpu")
def _logsumexp(logits: Tensor) -> Tensor:
    _, x = tt.kernel_logits(logits)
    return _row_output(_np.logsumexp(x), logits.dtype)


@_logsumexp.register_fake
def _(logits):
    return logits.new_empty(logits.shape[:1])


@torch.library.custom_op("fastlmrl::logsumexp_backward", mutates_args=(), device_types="cpu")
def _logsumexp_backward(logits: Tensor, lse: Tensor, grad_output: Tensor) -> Tensor:
    x, _ = tt.kernel_logits(logits)
    grad, _ = tt.grad_buffer(logits)
    torch.sub(x, lse.to(grad.dtype).unsqueeze(1), out=grad)  # log p, then p, then g p in place
    grad.exp_().mul_(grad_output.to(grad.dtype).unsqueeze(1))
    return tt.as_dtype(grad, logits.dtype)


@_logsumexp_backward.register_fake
def _(logits, lse, grad_output):
    return torch.empty_like(logits)


def _logsumexp_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], output)


def _logsumexp_grad(ctx, grad_output):
    logits, lse = ctx.saved_tensors
    return _flat_backward(_logsumexp_backward_call, logits, lse, grad_output)


_logsumexp_backward_call = tt.EagerOp(_logsumexp_backward, differentiable=(0, 1, 2))
_logsumexp_call = tt.autograd(_logsumexp, _logsumexp_grad, _logsumexp_setup)


class fastlmrl_logsumexp_fast(_SavedOutputNode):
    """:func:`logsumexp`'s node; ``backward`` is the custom op's (``logsumexp_backward``)."""

    @staticmethod
    def backward(ctx, grad_output):
        return _logsumexp_grad(ctx, grad_output), None


def logsumexp(logits: Tensor) -> Tensor:
    r""":math:`\log\sum_j e^{z_j}` of each row of (..., V) logits; returns (...,) in the logits'
    dtype, differentiable (gradient: the softmax)."""
    if tt._kernels is _cython_kernels and not _is_compiling():  # (as token_log_probs)
        out = _entry_logsumexp(logits)
        if out.__class__ is Tensor:
            return out
    elif type(logits) is Tensor:  # the eager NumPy-view path
        out = _row_fast("logsumexp", logits, None, _apply_logsumexp)
        if out is not None:
            return out
    x = tt.logits_2d(logits)
    return tt.unflat(_logsumexp_call(x), logits.shape[:-1])


# --- the eager fast paths ----------------------------------------------------------------------

_FAST_DTYPES = (torch.float32, torch.float64)
_ID_DTYPES = (np.dtype(np.int64), np.dtype(np.int32))


def _row_fast(name: str, logits: Tensor, tokens: Tensor | None, apply):
    """Row op ``name`` on a plain contiguous (..., V) float32/float64 CPU tensor of rank >= 2
    (and int32/int64 ids of its batch shape or flat) in eager mode under a backend without the
    Cython entry point: its kernel on ``Tensor.numpy()`` views, the result tensor (of the batch
    shape) through the op's node (``apply``) when a gradient is needed.  None when anything
    needs the general path (conversions, traced or transformed calls, a kernel status: the
    general path raises its error); every check it makes is one the general path makes too."""
    if logits.dtype not in _FAST_DTYPES or not logits.is_cpu or not tt.eager_mode():
        return None
    try:
        x = logits.numpy(force=True) if logits.requires_grad else logits.numpy()
        ids = None if tokens is None else tokens.numpy()
    except (TypeError, RuntimeError):  # requires a gradient (tokens), conjugate / negative bit
        return None
    if x.ndim < 2 or x.shape[-1] == 0 or not x.flags.c_contiguous:
        return None
    out = np.empty(x.shape[:-1], dtype=x.dtype)  # (the batch shape)
    rows = out
    if x.ndim != 2:  # (..., V): (N, V) and (N,) views
        flat = tt.flat_rows(x, (ids, out))
        if flat is None:
            return None
        x, (ids, rows) = flat
    n = x.shape[0]
    if ids is not None and (
        ids.shape != (n,) or ids.dtype not in _ID_DTYPES or not ids.flags.c_contiguous
    ):
        return None
    kernel = getattr(tt._kernels, name)
    threads = tt.num_threads(x.size)
    status = kernel(x, rows, threads) if ids is None else kernel(x, ids, rows, threads)
    if status:
        return None
    if not (logits.requires_grad and torch.is_grad_enabled()):
        return torch.from_numpy(out)
    return apply(logits, out) if tokens is None else apply(logits, tokens, out)


_apply_token_log_probs = super(torch.autograd.Function, fastlmrl_token_log_probs_fast).apply
_apply_entropy = super(torch.autograd.Function, fastlmrl_entropy_fast).apply
_apply_logsumexp = super(torch.autograd.Function, fastlmrl_logsumexp_fast).apply
_is_compiling = torch.compiler.is_compiling
# the Cython entry points (fastlmrl._cython.torch_entry; None without it): CPU tensors straight
# to the kernel cores in eager mode, the general path for anything else
_entry_token_log_probs: Any = None
_entry_entropy: Any = None
_entry_logsumexp: Any = None
if _entry is not None:
    # the nodes' forward passes as C functions (no Python frame inside apply; the same
    # formulas, so assigning over the methods is the point, hence the ignores)
    fastlmrl_token_log_probs_fast.forward = staticmethod(  # type: ignore[method-assign]
        _entry.saved_inputs_forward
    )
    _SavedOutputNode.forward = staticmethod(  # type: ignore[method-assign]
        _entry.saved_output_forward
    )
    _entry.configure_rows(_apply_token_log_probs, _apply_entropy, _apply_logsumexp)
    _entry_token_log_probs = _entry.token_log_probs
    _entry_entropy, _entry_logsumexp = _entry.entropy, _entry.logsumexp
