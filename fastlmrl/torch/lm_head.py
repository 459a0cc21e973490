r"""Fused LM head + loss: ``hidden @ weight.T (+ bias)`` and the token log-probabilities or the PPO
loss of the resulting logits, in chunks of rows, never materialising the (N, V) logits.

For rows ``[a, b)`` (``chunk_size`` rows, the last chunk shorter) the logits
:math:`Z_c = H_c W^T + b` go into one reused (chunk, V) buffer through PyTorch's BLAS
(``torch.mm`` / ``torch.addmm`` with ``out=``); the fused kernel of :mod:`fastlmrl.policy_losses`
then overwrites that buffer with :math:`G_c = \partial L/\partial Z_c` (in place: the kernels of
all three backends finish reading a row -- max, exponentials into a row buffer, the sampled
token's logit -- before they write its gradient row, and only that row; tested bit for bit against
a separate output in ``tests/test_torch_ops.py``), and

.. math::  \partial L/\partial H_c = G_c W,\qquad \partial L/\partial W \mathrel{+}= G_c^T H_c,
           \qquad \partial L/\partial b \mathrel{+}= \textstyle\sum_{rows} G_c

are accumulated chunk by chunk (as Liger-Kernel's fused linear cross-entropy does on GPUs).  Peak
extra memory is one (chunk, V) buffer plus the gradients of ``hidden``, ``weight`` and ``bias``
themselves: O(chunk * V), never O(N * V).  The kernel is called directly on the chunk (the NumPy
API refuses an ``out`` that overlaps the logits); every input it reads is checked by the NumPy
API's own checks before the first chunk, and a kernel status (e.g. NaN logits) is turned into the
NumPy API's error by recomputing that chunk's logits and calling the NumPy API on them.

* :func:`linear_ppo_loss` computes the gradients during the forward pass (the loss is a scalar), and
  the backward pass multiplies them by the upstream gradient.
* :func:`linear_reinforce_loss` likewise (REINFORCE with baseline; with returns 1 and the default
  weights 1/N the mean cross-entropy): three GEMMs per chunk in all, as eager PyTorch's
  ``F.cross_entropy(F.linear(...))`` needs over the whole batch.
* :func:`linear_token_log_probs` returns (N,) values whose upstream gradient is only known in the
  backward pass, which therefore recomputes each chunk's logits (one more GEMM per chunk) and
  applies the fused ``g_i (onehot - p)`` kernel pass: four GEMMs.  When the whole batch is one
  chunk (N <= ``chunk_size``, e.g. N <= 170 at V = 49152 by default) and a gradient will be
  needed, the forward pass keeps its logits for the backward pass instead (at most one chunk's
  buffer held in between; three GEMMs).  Keeping more would take the (N, V) memory the fused
  head avoids, so for a loss whose per-token weights are known in the forward pass
  (cross-entropy, REINFORCE) use :func:`linear_reinforce_loss` (or :func:`linear_ppo_loss`).

Cross-chunk coupling.  Per-token weights are given by the caller for the whole batch (e.g.
:func:`fastlmrl.torch.loss_weights`), so every chunk uses its slice and the chunk losses add up.
Sequence-level ratios (GSPO, ``ratio_level="sequence"``) couple all tokens of a sequence: chunks
are then cut only at ``sequence_offsets`` (whole sequences per chunk; a sequence longer than
``chunk_size`` is processed as one chunk of its length).  The scalar diagnostics (weighted
fractions and means) are combined over chunks with the chunks' weight sums.  Scalars are summed
per chunk and then over chunks (float64), so they equal the unfused ``ppo_loss`` to rounding, not
bit for bit.

dtypes: float32 / float64, or bfloat16 (``hidden``, ``weight`` and ``bias`` copied to float32,
gradients computed in float32 and returned in bfloat16).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from .. import _backend
from .. import _validation as check
from .. import log_probs as _np_lp
from .. import policy_losses as _np
from . import _tensors as tt
from .policy_losses import (
    PPO_ECOSYSTEM_NAMES,
    PPO_STATS_SLOTS,
    PPOLossResult,
    ReinforceLossResult,
    ppo_arguments,
    ppo_result,
)

if TYPE_CHECKING:  # what readers and tools follow: the reference kernels
    from .._python import policy_losses as _kernels
else:  # the active backend's kernels, rebound by set_backend (fastlmrl._backend.bind)
    _kernels = _backend.bind(__name__, "_kernels")

#: where the REINFORCE kernel writes the loss in its statistics output (the contract's slot)
_REINFORCE_LOSS_SLOT = _np.CONTRACT["reinforce_loss"].results["stats"].index("loss")
#: the PPO statistics slots summed over chunks (loss, pg_loss, kl_loss) and those averaged with
#: the chunks' weight sums (the clip fractions and approximate KLs), by the contract's names
_PPO_SUMMED = slice(0, PPO_STATS_SLOTS.index("clip_fraction"))
_PPO_AVERAGED = slice(PPO_STATS_SLOTS.index("clip_fraction"), len(PPO_STATS_SLOTS))

__all__ = ["linear_ppo_loss", "linear_reinforce_loss", "linear_token_log_probs"]

CHUNK_ELEMENTS = 1 << 23  # default chunk: about 8 M logits (32 MiB of float32) per buffer


def default_chunk_size(n_vocab: int) -> int:
    """Rows per chunk: about 8 M logits (170 rows at V = 49152), between 8 and 4096 rows."""
    return int(min(4096, max(8, CHUNK_ELEMENTS // max(n_vocab, 1))))


def _chunk_size(chunk_size, n_vocab):
    if chunk_size is None:
        return default_chunk_size(n_vocab)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError(f"chunk_size must be an int or None, got {type(chunk_size).__name__}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return chunk_size


class _Head:
    """The chunked logits ``hidden[a:b] @ weight.T + bias`` in the kernels' dtype, in one reused
    (chunk, V) buffer that the kernels then overwrite with the chunk's gradient."""

    def __init__(self, hidden: Tensor, weight: Tensor, bias: Tensor | None, chunk: int):
        self.dtype = tt.compute_dtype(hidden.dtype)
        self.h = hidden.to(self.dtype)
        self.w = weight.to(self.dtype)
        self.b = None if bias is None else bias.to(self.dtype)
        self.n, self.v = hidden.shape[0], weight.shape[0]
        self.buffer = tt.empty((min(chunk, max(self.n, 1)), self.v), self.dtype)

    def logits(self, a: int, b: int) -> Tensor:
        if b - a > self.buffer.shape[0]:  # a sequence longer than chunk_size
            self.buffer = None  # the old buffer is free before the new one is mapped
            self.buffer = tt.empty((b - a, self.v), self.dtype)
        out = self.buffer[: b - a]
        if self.b is None:
            torch.mm(self.h[a:b], self.w.t(), out=out)
        else:
            torch.addmm(self.b, self.h[a:b], self.w.t(), out=out)
        return out

    def accumulate(self, g: Tensor, a: int, b: int, grads) -> None:
        """grad_hidden[a:b] = g W; grad_weight += g^T H[a:b]; grad_bias += column sums of g."""
        grad_hidden, grad_weight, grad_bias = grads
        if grad_hidden is not None:
            torch.mm(g, self.w, out=grad_hidden[a:b])
        if grad_weight is not None:
            grad_weight.addmm_(g.t(), self.h[a:b])
        if grad_bias is not None:
            grad_bias.add_(g.sum(0))

    def new_grads(self, needs):
        shapes = (self.h.shape, self.w.shape, (self.v,))
        return [tt.empty(s, self.dtype).zero_() if need else None for s, need in zip(shapes, needs)]


def _check_ids(tokens: np.ndarray, n_vocab: int) -> np.ndarray:
    ids = np.asarray(tokens).astype(np.int64, copy=False)
    bad = np.flatnonzero((ids < 0) | (ids >= n_vocab))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"tokens[{i}] = {int(ids[i])} is out of range [0, {n_vocab})")
    return ids


def _check_finite(name: str, arr, nonnegative: bool = False) -> None:
    if arr is None:
        return
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{name}[{i}] = {arr[i]} is not finite")
    if nonnegative:
        bad = np.flatnonzero(arr < 0)
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"{name}[{i}] = {arr[i]} is negative")


def _rows_error(exc: ValueError, a: int, b: int) -> ValueError:
    return ValueError(f"rows {a}:{b} of hidden @ weight.T (chunk-local row numbers): {exc}")


def _outputs(head: _Head, grads, hidden, weight, bias):
    grad_hidden, grad_weight, grad_bias = grads

    def empty():  # a distinct tensor per output (outputs of a custom op may not alias)
        return hidden.new_empty((0,))

    return (
        empty() if grad_hidden is None else tt.as_dtype(grad_hidden, hidden.dtype),
        empty() if grad_weight is None else tt.as_dtype(grad_weight, weight.dtype),
        empty() if grad_bias is None else tt.as_dtype(grad_bias, bias.dtype),
    )


def _fake_grads(hidden, weight, bias, needs):
    like = (hidden, weight, bias)
    return tuple(
        torch.empty_like(t) if need and t is not None else hidden.new_empty((0,))
        for t, need in zip(like, needs)
    )


# --- linear_token_log_probs --------------------------------------------------------------------


@torch.library.custom_op("fastlmrl::linear_token_log_probs", mutates_args=(), device_types="cpu")
def _linear_token_log_probs(
    hidden: Tensor,
    weight: Tensor,
    tokens: Tensor,
    bias: Tensor | None,
    chunk_size: int,
    keep_logits: bool,
) -> tuple[Tensor, Tensor]:
    # keep_logits (the wrapper sets it when a gradient will be needed and the batch is one
    # chunk): the chunk's logits are returned too, for the backward pass to reuse
    head = _Head(hidden, weight, bias, chunk_size)
    ids = _check_ids(tt.array(tokens), head.v)
    out = np.empty(head.n, dtype=tt.array(head.buffer[:0]).dtype)
    for a in range(0, head.n, chunk_size):
        b = min(head.n, a + chunk_size)
        try:
            out[a:b] = _np_lp.token_log_probs(head.logits(a, b).numpy(), ids[a:b])
        except ValueError as exc:
            raise _rows_error(exc, a, b) from None
    kept = (
        head.buffer
        if keep_logits and head.n <= chunk_size
        else hidden.new_empty((0, head.v), dtype=head.dtype)
    )  # (not a view: the buffer dies)
    return tt.as_dtype(torch.from_numpy(out), hidden.dtype), kept


@_linear_token_log_probs.register_fake
def _(hidden, weight, tokens, bias, chunk_size, keep_logits):
    rows = hidden.shape[0] if keep_logits and hidden.shape[0] <= chunk_size else 0
    return (
        hidden.new_empty(hidden.shape[:1]),
        hidden.new_empty((rows, weight.shape[0]), dtype=tt.compute_dtype(hidden.dtype)),
    )


@torch.library.custom_op(
    "fastlmrl::linear_token_log_probs_backward", mutates_args=(), device_types="cpu"
)
def _linear_token_log_probs_backward(
    hidden: Tensor,
    weight: Tensor,
    tokens: Tensor,
    bias: Tensor | None,
    grad_output: Tensor,
    chunk_size: int,
    needs_hidden: bool,
    needs_weight: bool,
    needs_bias: bool,
    logits: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    # logits: the forward pass's logits of the whole batch (one chunk), or (0, V): computed again
    head = _Head(hidden, weight, bias, chunk_size)
    needs = (needs_hidden, needs_weight, needs_bias and bias is not None)
    grads = head.new_grads(needs)
    ids = _check_ids(tt.array(tokens), head.v)
    g = tt.array(grad_output.to(head.dtype))
    fused = bool(np.isfinite(g).all())
    ones = np.ones(min(chunk_size, head.n), dtype=g.dtype)
    neg_g = -g
    kept = 0 < head.n <= chunk_size and logits.shape[0] == head.n and logits.shape[1] == head.v
    for a in range(0, head.n, chunk_size):
        b = min(head.n, a + chunk_size)
        if kept:  # one chunk, its logits from the forward pass: no GEMM, the gradient beside them
            x = tt.array(logits.to(head.dtype))
            grad = head.buffer[: b - a]
            status = _reinforce_kernel(x, ids, neg_g, ones[: b - a], grad.numpy()) if fused else 1
        else:
            grad = head.logits(a, b)
            # g (onehot - p) in one pass, in place over the chunk's logits: REINFORCE with
            # return -g, weight 1
            status = (
                _reinforce_kernel(grad.numpy(), ids[a:b], neg_g[a:b], ones[: b - a], grad.numpy())
                if fused
                else 1
            )
        if status:
            grad = _unfused_log_prob_grad(head, a, b, ids[a:b], g[a:b], fused)
        head.accumulate(grad, a, b, grads)
    return _outputs(head, grads, hidden, weight, bias)


def _reinforce_kernel(
    x: np.ndarray, ids: np.ndarray, returns: np.ndarray, ones: np.ndarray, out: np.ndarray
) -> int:
    """The REINFORCE kernel over the chunk ``x`` with its gradient written to ``out`` (which may
    be ``x`` itself); the kernel's status (0: done)."""
    n = x.shape[0]
    stats = np.zeros(1)
    return _kernels.reinforce_loss(
        x,
        ids,
        returns,
        np.zeros(n, dtype=x.dtype),
        ones,
        np.empty(n),
        np.empty(n),
        out,
        stats,
        tt.num_threads(x.size),
    )


def _unfused_log_prob_grad(head, a, b, ids, g, try_fused) -> Tensor:
    """The rare path (a non-finite upstream gradient, or a kernel status): the chunk's logits
    again and ``g * (onehot - p)`` into a separate buffer through the NumPy API (its errors)."""
    x = head.logits(a, b).numpy()
    grad = tt.empty(x.shape, head.dtype)
    if try_fused:
        try:
            _np.reinforce_loss(x, ids, -g, np.ones(b - a, dtype=g.dtype), out=grad.numpy())
            return grad
        except ValueError:
            pass
    _np_lp.log_prob_grad(x, ids, out=grad.numpy())
    return grad.mul_(torch.from_numpy(g).unsqueeze(1))


@_linear_token_log_probs_backward.register_fake
def _(
    hidden,
    weight,
    tokens,
    bias,
    grad_output,
    chunk_size,
    needs_hidden,
    needs_weight,
    needs_bias,
    logits,
):
    return _fake_grads(hidden, weight, bias, (needs_hidden, needs_weight, needs_bias))


def _ltlp_setup(ctx, inputs, output):
    hidden, weight, tokens, bias, chunk_size, _ = inputs
    ctx.save_for_backward(hidden, weight, tokens, bias, output[1])
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)  # no (N, V) zeros for the kept logits
    ctx.chunk_size = chunk_size


def _ltlp_grad(ctx, grad_output, unused=None):
    if grad_output is None:
        return (None,) * 6
    hidden, weight, tokens, bias, logits = ctx.saved_tensors
    nh, nw, _, nb, _, _ = ctx.needs_input_grad
    gh, gw, gb = _linear_token_log_probs_backward_call(
        hidden, weight, tokens, bias, grad_output, ctx.chunk_size, nh, nw, nb, logits
    )
    return (gh if nh else None, gw if nw else None, None, gb if nb else None, None, None)


_linear_token_log_probs_backward_call = tt.EagerOp(
    _linear_token_log_probs_backward, differentiable=(0, 1, 3, 4)
)
_linear_token_log_probs_call = tt.autograd(
    _linear_token_log_probs, _ltlp_grad, _ltlp_setup, differentiable=(0, 1, 3)
)


def _head_arguments(hidden, weight, bias):
    h = tt.tensor(hidden, "hidden")
    w = tt.tensor(weight, "weight")
    if h.dtype not in tt.LOGIT_DTYPES:
        raise TypeError(f"hidden must have dtype float32, float64 or bfloat16, got {h.dtype}")
    if w.dtype != h.dtype:
        raise TypeError(f"weight must have the dtype of hidden ({h.dtype}), got {w.dtype}")
    if h.ndim < 1:
        raise ValueError("hidden must have shape (..., H), got a 0-dimensional tensor")
    if w.ndim != 2 or w.shape[1] != h.shape[-1] or w.shape[0] == 0:
        raise ValueError(
            f"weight must have shape (V, H) = (V, {h.shape[-1]}) with V >= 1, got {tuple(w.shape)}"
        )
    if bias is not None:
        bias = tt.tensor(bias, "bias")
        if bias.dtype != h.dtype:
            raise TypeError(f"bias must have the dtype of hidden ({h.dtype}), got {bias.dtype}")
        if tuple(bias.shape) != (w.shape[0],):
            raise ValueError(f"bias must have shape ({w.shape[0]},), got {tuple(bias.shape)}")
    return (h if h.ndim == 2 else h.reshape(-1, h.shape[-1])), w, bias


def linear_token_log_probs(
    hidden: Tensor,
    weight: Tensor,
    tokens: Tensor,
    bias: Tensor | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    r""":math:`\log\pi(a_i|s_i)` of the logits ``hidden @ weight.T + bias`` without forming them.

    ``hidden`` (..., H), ``weight`` (V, H) (an ``nn.Linear(H, V)``'s weight), ``tokens`` (...,),
    ``bias`` (V,) or None.  Returns (...,) in the dtype of ``hidden``, differentiable w.r.t.
    ``hidden``, ``weight`` and ``bias``; equal to
    ``token_log_probs(F.linear(hidden, weight, bias), tokens)`` to float rounding (the GEMM
    blocking may differ).  ``chunk_size``: rows per chunk (default about 8 M logits per chunk).
    """
    h, w, bias = _head_arguments(hidden, weight, bias)
    batch = hidden.shape[:-1]
    ids = tt.ids(tokens, "tokens", batch)
    chunk = _chunk_size(chunk_size, w.shape[0])
    # one chunk and a gradient to come: the forward pass's logits are kept for the backward pass
    # (one (N, V) buffer, at most a chunk's worth, held in between: one GEMM fewer)
    keep = (
        h.shape[0] <= chunk
        and torch.is_grad_enabled()
        and (h.requires_grad or w.requires_grad or (bias is not None and bias.requires_grad))
    )
    return tt.unflat(_linear_token_log_probs_call(h, w, ids, bias, chunk, keep)[0], batch)


# --- linear_reinforce_loss (and the cross-entropy) --------------------------------------------


@torch.library.custom_op("fastlmrl::linear_reinforce_loss", mutates_args=(), device_types="cpu")
def _linear_reinforce_loss(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    tokens: Tensor,
    returns: Tensor,
    weights: Tensor | None,
    baseline: Tensor | None,
    baseline_mode: str,
    chunk_size: int,
    needs_hidden: bool,
    needs_weight: bool,
    needs_bias: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    head = _Head(hidden, weight, bias, chunk_size)
    n, dt = head.n, tt.array(head.buffer[:0]).dtype
    ids = _check_ids(tt.array(tokens), head.v)
    ret = tt.array(returns).astype(dt, copy=False)
    w = (
        np.full(n, 1.0 / n if n else 0.0, dtype=dt)
        if weights is None
        else tt.array(weights).astype(dt, copy=False)
    )
    _check_finite("returns", ret)
    _check_finite("weights", w, nonnegative=True)
    if baseline_mode == "mean":
        base = np.full(n, _np.mean_baseline(ret, w), dtype=dt)
    elif baseline is None:
        base = np.zeros(n, dtype=dt)
    else:
        base = tt.array(baseline).astype(dt, copy=False)
        _check_finite("baseline", base)
    needs = (needs_hidden, needs_weight, needs_bias and bias is not None)
    grads = head.new_grads(needs)
    log_probs, token_loss = np.empty(n), np.empty(n)
    loss, stats = 0.0, np.zeros(7)
    for a in range(0, n, chunk_size):
        b = min(n, a + chunk_size)
        x = head.logits(a, b)
        # the fused REINFORCE kernel, its gradient written over the chunk's logits
        status = _kernels.reinforce_loss(
            x.numpy(),
            ids[a:b],
            ret[a:b],
            base[a:b],
            w[a:b],
            token_loss[a:b],
            log_probs[a:b],
            x.numpy(),
            stats,
            tt.num_threads(x.numel()),
        )
        if status:  # the NumPy API's error for these rows, from their logits computed again
            try:
                _np.reinforce_loss(
                    head.logits(a, b).numpy(), ids[a:b], ret[a:b], w[a:b], baseline=base[a:b]
                )
            except ValueError as exc:
                raise _rows_error(exc, a, b) from None
            raise RuntimeError(
                f"the reinforce_loss kernel returned status {status} on rows "
                f"{a}:{b} but the NumPy API accepted them"
            )  # pragma: no cover
        head.accumulate(x, a, b, grads)
        loss += float(stats[_REINFORCE_LOSS_SLOT])
    return (
        tt.scalar(loss, tt.loss_dtype(hidden.dtype)),
        *_outputs(head, grads, hidden, weight, bias),
        torch.from_numpy(log_probs),
        torch.from_numpy(token_loss),
    )


@_linear_reinforce_loss.register_fake
def _(
    hidden,
    weight,
    bias,
    tokens,
    returns,
    weights,
    baseline,
    baseline_mode,
    chunk_size,
    needs_hidden,
    needs_weight,
    needs_bias,
):
    n = hidden.shape[0]
    return (
        hidden.new_empty((), dtype=tt.loss_dtype(hidden.dtype)),
        *_fake_grads(hidden, weight, bias, (needs_hidden, needs_weight, needs_bias)),
        hidden.new_empty((n,), dtype=torch.float64),
        hidden.new_empty((n,), dtype=torch.float64),
    )


def _lrl_setup(ctx, inputs, output):
    ctx.save_for_backward(*output[1:4])
    ctx.mark_non_differentiable(*output[1:])
    ctx.set_materialize_grads(False)  # no zeros for the unused outputs


def _lrl_grad(ctx, grad_loss, *unused):
    gh, gw, gb = ctx.saved_tensors
    nh, nw, nb = ctx.needs_input_grad[:3]
    return (
        tt.scale(gh, grad_loss) if nh else None,
        tt.scale(gw, grad_loss) if nw else None,
        tt.scale(gb, grad_loss) if nb else None,
    ) + (None,) * 9


_linear_reinforce_loss_call = tt.autograd(
    _linear_reinforce_loss, _lrl_grad, _lrl_setup, differentiable=(0, 1, 2)
)


def linear_reinforce_loss(
    hidden, weight, tokens, returns, weights=None, baseline=None, *, bias=None, chunk_size=None
) -> ReinforceLossResult:
    r""":func:`fastlmrl.torch.reinforce_loss` of the logits ``hidden @ weight.T + bias`` without
    forming them: :math:`L = \sum_i w_i\,\ell_i`, :math:`\ell_i = -(G_i - b_i)\log\pi(a_i|s_i)`
    (Williams 1992; Sutton & Barto 2018, eq. 13.11), differentiable w.r.t. ``hidden`` (..., H),
    ``weight`` (V, H) and ``bias`` (V,); same result fields (``loss``, ``log_probs``,
    ``token_loss``).  ``weights`` default to :math:`1/N`; ``baseline``: None, ``"mean"`` (the
    weighted batch mean of the returns) or a tensor (no gradient flows into it).

    The gradients are computed during the forward pass, chunk by chunk (three GEMMs per chunk:
    the logits, ``G_c W`` and ``G_c^T H_c``), and the backward pass only scales them by the
    upstream gradient; peak extra memory is one (chunk, V) buffer plus the gradients of
    ``hidden``, ``weight`` and ``bias``.  With ``returns`` all 1 and the default weights the loss
    is the mean cross-entropy: ``linear_reinforce_loss(h, W, t, torch.ones(N)).loss`` equals
    ``F.cross_entropy(F.linear(h, W), t)`` (the fused equivalent of
    ``torch.nn.functional.linear_cross_entropy``); prefer it to
    ``-linear_token_log_probs(...).mean()``, whose backward (an upstream gradient known only
    then) has to compute every chunk's logits a second time.
    """
    h, w, bias = _head_arguments(hidden, weight, bias)
    batch = hidden.shape[:-1]
    if isinstance(baseline, str):
        if baseline != "mean":
            raise ValueError(f"baseline must be None, 'mean' or a tensor, got {baseline!r}")
        mode, base = baseline, None
    else:
        mode, base = "", tt.per_token(baseline, "baseline", batch, optional=True)
    chunk = _chunk_size(chunk_size, w.shape[0])
    grad_on = torch.is_grad_enabled()
    needs = (
        grad_on and h.requires_grad,
        grad_on and w.requires_grad,
        grad_on and bias is not None and bias.requires_grad,
    )
    out = _linear_reinforce_loss_call(
        h,
        w,
        bias,
        tt.ids(tokens, "tokens", batch),
        tt.per_token(returns, "returns", batch),
        tt.per_token(weights, "weights", batch, optional=True),
        base,
        mode,
        chunk,
        *needs,
    )
    return ReinforceLossResult(out[0], tt.unflat(out[4], batch), tt.unflat(out[5], batch))


# --- linear_ppo_loss ---------------------------------------------------------------------------


def _chunks(n: int, chunk: int, offsets: np.ndarray | None):
    """(a, b, local sequence offsets or None): row ranges, cut at sequence ends when given."""
    if offsets is None:
        for a in range(0, n, chunk):
            yield a, min(n, a + chunk), None
        return
    k, n_seq = 0, offsets.shape[0] - 1
    while k < n_seq:
        a = int(offsets[k])
        j = k + 1  # take sequence k, then more while the chunk stays within chunk_size rows
        while j < n_seq and offsets[j + 1] - a <= chunk:
            j += 1
        yield a, int(offsets[j]), offsets[k : j + 1] - a
        k = j


@torch.library.custom_op("fastlmrl::linear_ppo_loss", mutates_args=(), device_types="cpu")
def _linear_ppo_loss(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    tokens: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    weights: Tensor | None,
    clip_low: float,
    clip_high: float | None,
    dual_clip: float | None,
    ratio_level: str,
    sequence_offsets: Tensor | None,
    ref_log_probs: Tensor | None,
    kl_coef: float,
    kl_estimator: str,
    chunk_size: int,
    needs_hidden: bool,
    needs_weight: bool,
    needs_bias: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    head = _Head(hidden, weight, bias, chunk_size)
    n, dt = head.n, tt.array(head.buffer[:0]).dtype
    ids = _check_ids(tt.array(tokens), head.v)
    old = tt.array(old_log_probs).astype(dt, copy=False)
    adv = tt.array(advantages).astype(dt, copy=False)
    ref = None if ref_log_probs is None else tt.array(ref_log_probs).astype(dt, copy=False)
    w = (
        np.full(n, 1.0 / n if n else 0.0, dtype=dt)
        if weights is None
        else tt.array(weights).astype(dt, copy=False)
    )
    for name, arr in (("old_log_probs", old), ("advantages", adv), ("ref_log_probs", ref)):
        _check_finite(name, arr)
    _check_finite("weights", w, nonnegative=True)
    options = dict(
        clip_low=clip_low,
        clip_high=clip_high,
        dual_clip=dual_clip,
        ratio_level=ratio_level,
        kl_coef=kl_coef,
        kl_estimator=kl_estimator,
    )
    if ratio_level == "sequence":
        if sequence_offsets is None:
            raise ValueError("ratio_level='sequence' needs sequence_offsets")
        offs = _np._offsets(tt.array(sequence_offsets), n)
    else:
        # options are checked once on an empty batch (so that a bad option fails before work)
        offs = None
    _np.ppo_loss(
        np.empty((0, head.v), dtype=dt),
        ids[:0],
        old[:0],
        adv[:0],
        w[:0],
        sequence_offsets=None if offs is None else np.zeros(1, dtype=np.int64),
        ref_log_probs=None if ref is None else ref[:0],
        **options,
    )
    needs = (needs_hidden, needs_weight, needs_bias and bias is not None)
    grads = head.new_grads(needs)
    log_probs, token_loss, ratios = np.empty(n), np.empty(n), np.empty(n)
    sums = np.zeros(3)  # loss, pg_loss, kl_loss
    weighted = np.zeros(4)  # clip, dual clip, k1, k3 -- times the chunk's weight sum
    total_w = 0.0
    kernel_options = (
        clip_low,
        clip_low if clip_high is None else clip_high,
        0.0 if dual_clip is None else dual_clip,
        kl_coef,
        _np.KL_ESTIMATORS[kl_estimator],
        int(offs is not None),
    )
    no_ref, token_level = np.empty(0, dtype=dt), np.zeros(1, dtype=np.int64)
    stats = np.zeros(7)
    for a, b, local in _chunks(n, chunk_size, offs):
        x = head.logits(a, b)
        # the fused kernel, its gradient over the chunk's logits
        status = _kernels.ppo_loss(
            x.numpy(),
            ids[a:b],
            old[a:b],
            adv[a:b],
            w[a:b],
            no_ref if ref is None else ref[a:b],
            token_level if local is None else local,
            *kernel_options,
            token_loss[a:b],
            log_probs[a:b],
            ratios[a:b],
            x.numpy(),
            stats,
            tt.num_threads(x.numel()),
        )
        if status:  # the NumPy API's error for these rows, from their logits computed again
            try:
                _np.ppo_loss(
                    head.logits(a, b).numpy(),
                    ids[a:b],
                    old[a:b],
                    adv[a:b],
                    w[a:b],
                    sequence_offsets=local,
                    ref_log_probs=None if ref is None else ref[a:b],
                    **options,
                )
            except ValueError as exc:
                raise _rows_error(exc, a, b) from None
            raise RuntimeError(
                f"the ppo_loss kernel returned status {status} on rows {a}:{b} "
                "but the NumPy API accepted them"
            )  # pragma: no cover
        head.accumulate(x, a, b, grads)
        sums += stats[_PPO_SUMMED]
        sw = math.fsum(w[a:b].astype(np.float64).tolist())
        total_w += sw
        weighted += stats[_PPO_AVERAGED] * sw
    means = weighted / total_w if total_w > 0 else np.zeros(4)
    stats = torch.from_numpy(np.concatenate([sums[1:], means]))
    return (
        tt.scalar(float(sums[0]), tt.loss_dtype(hidden.dtype)),
        *_outputs(head, grads, hidden, weight, bias),
        torch.from_numpy(log_probs),
        torch.from_numpy(token_loss),
        torch.from_numpy(ratios),
        stats,
    )


@_linear_ppo_loss.register_fake
def _(
    hidden,
    weight,
    bias,
    tokens,
    old_log_probs,
    advantages,
    weights,
    clip_low,
    clip_high,
    dual_clip,
    ratio_level,
    sequence_offsets,
    ref_log_probs,
    kl_coef,
    kl_estimator,
    chunk_size,
    needs_hidden,
    needs_weight,
    needs_bias,
):
    n = hidden.shape[0]
    per = tuple(hidden.new_empty((n,), dtype=torch.float64) for _ in range(3))
    return (
        hidden.new_empty((), dtype=tt.loss_dtype(hidden.dtype)),
        *_fake_grads(hidden, weight, bias, (needs_hidden, needs_weight, needs_bias)),
        *per,
        hidden.new_empty((6,), dtype=torch.float64),
    )


def _lppo_setup(ctx, inputs, output):
    ctx.save_for_backward(*output[1:4])
    ctx.mark_non_differentiable(*output[1:])
    ctx.set_materialize_grads(False)  # no (N, V) zeros for the unused outputs


def _lppo_grad(ctx, grad_loss, *unused):
    gh, gw, gb = ctx.saved_tensors
    nh, nw, nb = ctx.needs_input_grad[:3]
    return (
        tt.scale(gh, grad_loss) if nh else None,
        tt.scale(gw, grad_loss) if nw else None,
        tt.scale(gb, grad_loss) if nb else None,
    ) + (None,) * 16


_linear_ppo_loss_call = tt.autograd(
    _linear_ppo_loss, _lppo_grad, _lppo_setup, differentiable=(0, 1, 2)
)


@check.renamed(ecosystem=PPO_ECOSYSTEM_NAMES)
def linear_ppo_loss(
    hidden,
    weight,
    tokens,
    old_log_probs,
    advantages,
    weights=None,
    clip_low=0.2,
    clip_high=None,
    dual_clip=None,
    ratio_level="token",
    sequence_offsets=None,
    ref_log_probs=None,
    kl_coef=0.0,
    kl_estimator="k3",
    *,
    bias=None,
    chunk_size=None,
) -> PPOLossResult:
    r""":func:`fastlmrl.torch.ppo_loss` of the logits ``hidden @ weight.T + bias`` without forming
    them: same options, same result fields; differentiable w.r.t. ``hidden`` (..., H),
    ``weight`` (V, H) and ``bias`` (V,).  The gradients are computed during the forward pass
    (only those that are needed: ``requires_grad`` and grad mode).  ``chunk_size``: rows per chunk
    (default about 8 M logits); with ``ratio_level="sequence"`` chunks hold whole sequences.
    """
    h, w, bias = _head_arguments(hidden, weight, bias)
    tensors, o = ppo_arguments(
        hidden.shape[:-1],
        tokens,
        old_log_probs,
        advantages,
        weights,
        clip_low,
        clip_high,
        dual_clip,
        ratio_level,
        sequence_offsets,
        ref_log_probs,
        kl_coef,
        kl_estimator,
    )
    tok, old, adv, wts, offs, ref = tensors
    chunk = _chunk_size(chunk_size, w.shape[0])
    grad_on = torch.is_grad_enabled()
    needs = (
        grad_on and h.requires_grad,
        grad_on and w.requires_grad,
        grad_on and bias is not None and bias.requires_grad,
    )
    out = _linear_ppo_loss_call(
        h,
        w,
        bias,
        tok,
        old,
        adv,
        wts,
        o["clip_low"],
        o["clip_high"],
        o["dual_clip"],
        o["ratio_level"],
        offs,
        ref,
        o["kl_coef"],
        o["kl_estimator"],
        chunk,
        *needs,
    )
    return ppo_result(out[0], out[4:7], out[7], hidden.shape[:-1])
