r"""Differentiable fused policy-gradient losses over (..., V) logits: PPO (with clip-higher, dual
clip, GSPO sequence ratios and a KL penalty), REINFORCE, A2C and the KL penalty -- the torch face
of :mod:`fastlmrl.policy_losses` (equations, papers and index conventions there).

Each op makes one call of the fused kernel, which returns the loss *and* its gradient with
respect to the logits in the same pass; the gradient is written straight into a tensor (``out=``),
saved, and the backward pass multiplies it by the upstream gradient (returned as is when that is
exactly 1, the usual ``loss.backward()``).  In eager mode the wrappers call the ops'
implementations without torch's dispatcher (:class:`fastlmrl.torch._tensors.EagerOp`); the PPO op
calls the backend's kernel directly, its options checked once per distinct set by the NumPy API
(see ``_ppo_loss``), and every loss on plain contiguous (..., V) tensors skips even that: under the
Cython backend :mod:`fastlmrl._cython.torch_entry` reads the tensors in C and calls the kernel
core (a (1, 8) call ~1-1.5 us over the raw kernel without a gradient, ~4-5 us with one), under
the others ``_ppo_fast``, ``_reinforce_fast``, ``_kl_fast`` and ``_a2c_fast`` call the kernel on
``Tensor.numpy()`` views (~8-13 us; A2C ~13-19).  Both keep the forward pass's gradients as
arrays in an autograd node of their own (``fastlmrl_<op>_fast``).  The forward pass therefore
allocates one (N, V) tensor -- the gradient -- and the backward pass nothing more (a scaled loss
scales the gradient in place in eager mode).

Results are records with a NamedTuple's interface (``_LazyResult``: fields by name or position,
unpacking, ``_fields``, ``_asdict``, ``_replace``; not ``tuple`` subclasses, so that the fast
paths build the tensors of the fields other than ``loss`` only when they are read) mirroring the
NumPy results, without ``grad_logits`` (autograd carries it):
``loss`` is a 0-dim tensor in the logits' dtype (float32 for bfloat16 logits), differentiable;
per-token outputs (``log_probs``, ``token_loss``, ...) are float64 tensors of the logits' batch
shape and the scalar diagnostics 0-dim float64 tensors, all without gradient.

bfloat16 logits are copied to float32 for the kernel and the float32 gradient is converted to
bfloat16: two (N, V) float32 temporaries besides the bfloat16 gradient.  A non-contiguous logits
tensor is copied once; contiguous ones are read in place.

Per-token arguments may have the logits' batch shape (...,) or be flat (N,).  TRL spellings are
accepted silently (:func:`fastlmrl._validation.renamed`; giving two spellings of one parameter is
a TypeError naming both): ``epsilon`` / ``cliprange`` (``clip_low``), ``epsilon_high``
(``clip_high``), ``beta`` (``kl_coef``), ``importance_sampling_level`` (``ratio_level``),
``vf_coef`` (``value_coef``), ``cliprange_value`` (``value_clip``); ``estimator`` is the
deprecated spelling of ``kl_estimator``.
"""

from __future__ import annotations

import functools
import numbers
import warnings
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from .. import _backend
from .. import _validation as check
from .. import policy_losses as _np
from . import _tensors as tt

if TYPE_CHECKING:  # what readers and tools follow: the reference kernels
    from .._python import policy_losses as _kernels
else:  # the active backend's kernels, rebound by set_backend (fastlmrl._backend.bind)
    _kernels = _backend.bind(__name__, "_kernels")

#: the slots of the PPO kernel's statistics output, by the contract's names: the loss, and the
#: diagnostics the op returns after it (PPOLossResult's fields from pg_loss on, in slot order;
#: tests/test_torch_ops.py checks the two orders agree)
PPO_STATS_SLOTS = _np.CONTRACT["ppo_loss"].results["stats"]
_PPO_LOSS_SLOT = PPO_STATS_SLOTS.index("loss")
_PPO_DIAGNOSTICS = slice(PPO_STATS_SLOTS.index("pg_loss"), len(PPO_STATS_SLOTS))

__all__ = [
    "A2CLossResult",
    "KLPenaltyResult",
    "PPOLossResult",
    "ReinforceLossResult",
    "a2c_loss",
    "kl_penalty_loss",
    "ppo_loss",
    "reinforce_loss",
]


class _LazyResult:
    """A loss op's result: a read-only record with the interface of a NamedTuple (fields by
    name or position, ``_fields``, ``_asdict()``, ``_replace()``, iteration and unpacking,
    ``len``), not a ``tuple`` subclass.

    The eager fast paths build only ``loss`` at once and each other field's tensor when it is
    first read (then the same tensor every time): creating the other tensors costs more than the
    fused kernel on a small batch.  The kernel's outputs are then ``(buffer, N, batch)``: one
    float64 buffer holding the first ``_blocks`` fields after the loss as (N,) blocks, in field
    order (each given the logits' batch shape ``batch`` when read; None: kept flat), then the
    kernel's statistics slots (slot 0 the loss, slots 1, 2, ... the remaining fields); or
    ``_blocks`` (N,) arrays and the statistics array.
    """

    __slots__ = ("_values", "_arrays")
    _fields: tuple[str, ...] = ()
    _blocks = 0  # the (N,) fields after the loss; the fields after them are statistics slots

    def _set(self, values: list) -> None:
        self._values = values
        self._arrays = None

    @classmethod
    def _lazy(cls, loss: Tensor, buffer: np.ndarray, n: int, batch: tuple | None = None):
        """``loss`` and the kernel's outputs in one float64 ``buffer`` (class docstring), turned
        into tensors when read, the (N,) fields in the logits' ``batch`` shape (None: flat);
        :mod:`fastlmrl._cython.torch_entry` builds the same."""
        result = cls.__new__(cls)
        result._values = [loss] + [None] * (len(cls._fields) - 1)
        result._arrays = (buffer, n, batch)
        return result

    @classmethod
    def _lazy_arrays(cls, loss: Tensor, *arrays):
        """``loss`` and the kernel's outputs as ``_blocks`` (N,) float64 arrays (field order)
        and its statistics array (the NumPy-view path: Numba types separate arrays faster than
        views of one buffer)."""
        result = cls.__new__(cls)
        result._values = [loss] + [None] * (len(cls._fields) - 1)
        result._arrays = arrays
        return result

    def _get(self, i: int):
        value = self._values[i]
        if value is None:  # not built yet (the eager fast paths)
            arrays = self._arrays
            k = self._blocks
            assert arrays is not None
            if type(arrays[1]) is int:  # (buffer, N, batch shape or None)
                buffer, n, batch = arrays
                if i <= k:
                    block = buffer[(i - 1) * n : i * n]
                    value = torch.from_numpy(block if batch is None else block.reshape(batch))
                else:
                    value = torch.from_numpy(buffer[k * n + i - k, ...])
            elif i <= k:
                value = torch.from_numpy(arrays[i - 1])
            else:
                value = torch.from_numpy(arrays[k][i - k, ...])
            self._values[i] = value
        return value

    def __len__(self) -> int:
        return len(self._fields)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return tuple(self._get(i) for i in range(len(self._fields))[index])
        return self._get(range(len(self._fields))[index])

    def __iter__(self):
        return (self._get(i) for i in range(len(self._fields)))

    def _asdict(self) -> dict:
        return {name: self._get(i) for i, name in enumerate(self._fields)}

    def _replace(self, **changes):
        values = self._asdict()
        unknown = set(changes) - set(values)
        if unknown:
            raise ValueError(f"Got unexpected field names: {sorted(unknown)!r}")
        values.update(changes)
        return type(self)(**values)

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={self._get(i)!r}" for i, name in enumerate(self._fields))
        return f"{type(self).__name__}({inner})"

    loss = property(lambda self: self._values[0], doc="the loss, differentiable")


class ReinforceLossResult(_LazyResult):
    r"""The result of :func:`reinforce_loss`: REINFORCE with baseline (Williams 1992), the torch
    face of :class:`fastlmrl.ReinforceLossResult` without ``grad_logits`` (autograd carries it);
    a record with a NamedTuple's interface (:class:`_LazyResult`; fields but ``loss`` are built
    when first read on the eager fast path).

    * ``loss``: :math:`L = \sum_i w_i \ell_i`, a 0-dim tensor in the logits' dtype (float32 for
      bfloat16 logits), differentiable w.r.t. the logits;
    * ``log_probs``: :math:`\log\pi(a_i|s_i)` of the sampled token :math:`a_i` at position i,
      float64, the logits' batch shape, no gradient;
    * ``token_loss``: :math:`\ell_i = -(G_i - b_i)\log\pi(a_i|s_i)` (unweighted), float64, the
      logits' batch shape, no gradient.
    """

    __slots__ = ()
    _fields = ("loss", "log_probs", "token_loss")
    __match_args__ = _fields
    _blocks = 2

    def __init__(self, loss, log_probs, token_loss):
        self._set([loss, log_probs, token_loss])

    log_probs = property(lambda self: self._get(1), doc="log pi(a_i|s_i), float64")
    token_loss = property(lambda self: self._get(2), doc="l_i, float64")


class PPOLossResult(_LazyResult):
    """The result of :func:`ppo_loss` / :func:`~fastlmrl.torch.linear_ppo_loss`: a read-only
    record with the interface of a NamedTuple (fields by name or position, ``_fields``,
    ``_asdict()``, ``_replace()``, iteration and unpacking, ``len``), not a ``tuple`` subclass.

    The eager fast path of :func:`ppo_loss` builds only ``loss`` at once and each other field's
    tensor when it is first read (then the same tensor every time): creating the nine other
    tensors costs more than the fused kernel on a small batch.  Fields:

    * ``loss``: sum_i w_i (l^CLIP_i + kl_coef * D_i), differentiable w.r.t. the logits;
    * ``log_probs``: log pi_theta(a_i|s_i), float64, the logits' batch shape;
    * ``token_loss``: l^CLIP_i + kl_coef * D_i, float64;
    * ``ratios``: the importance ratio used per token (token or sequence level), float64;
    * ``pg_loss``: sum_i w_i l^CLIP_i;
    * ``kl_loss``: sum_i w_i D_i (0 without ref_log_probs), not multiplied by kl_coef;
    * ``clip_fraction``: weighted fraction of tokens whose gradient the eps-clip zeroes;
    * ``dual_clip_fraction``: weighted fraction held at the dual-clip bound;
    * ``approx_kl_k1``: weighted mean of log pi_old - log pi_theta;
    * ``approx_kl_k3``: weighted mean of (rho - 1) - log rho.

    The diagnostics are 0-dim float64 tensors without gradient.
    """

    __slots__ = ()
    _fields = (
        "loss",
        "log_probs",
        "token_loss",
        "ratios",
        "pg_loss",
        "kl_loss",
        "clip_fraction",
        "dual_clip_fraction",
        "approx_kl_k1",
        "approx_kl_k3",
    )
    __match_args__ = _fields
    _blocks = 3

    def __init__(
        self,
        loss,
        log_probs,
        token_loss,
        ratios,
        pg_loss,
        kl_loss,
        clip_fraction,
        dual_clip_fraction,
        approx_kl_k1,
        approx_kl_k3,
    ):
        self._set(
            [
                loss,
                log_probs,
                token_loss,
                ratios,
                pg_loss,
                kl_loss,
                clip_fraction,
                dual_clip_fraction,
                approx_kl_k1,
                approx_kl_k3,
            ]
        )

    loss = property(lambda self: self._values[0], doc="sum_i w_i (l^CLIP_i + kl_coef D_i)")
    log_probs = property(lambda self: self._get(1), doc="log pi_theta(a_i|s_i), float64")
    token_loss = property(lambda self: self._get(2), doc="l^CLIP_i + kl_coef D_i, float64")
    ratios = property(lambda self: self._get(3), doc="the importance ratio per token, float64")
    pg_loss = property(lambda self: self._get(4), doc="sum_i w_i l^CLIP_i")
    kl_loss = property(lambda self: self._get(5), doc="sum_i w_i D_i (not times kl_coef)")
    clip_fraction = property(lambda self: self._get(6), doc="weighted fraction eps-clipped")
    dual_clip_fraction = property(
        lambda self: self._get(7), doc="weighted fraction at the dual-clip bound"
    )
    approx_kl_k1 = property(
        lambda self: self._get(8), doc="weighted mean of log pi_old - log pi_theta"
    )
    approx_kl_k3 = property(lambda self: self._get(9), doc="weighted mean of (rho - 1) - log rho")


class KLPenaltyResult(_LazyResult):
    r"""The result of :func:`kl_penalty_loss`: the KL penalty to a reference policy as a loss
    term (GRPO, Shao et al. 2024, eq. 4; Schulman's estimators k1 / k2 / k3), the torch face of
    :class:`fastlmrl.KLPenaltyResult` without ``grad_logits``; a record with a NamedTuple's
    interface (:class:`_LazyResult`).

    * ``loss``: :math:`L = \sum_i w_i D_i` (not multiplied by any coefficient), a 0-dim tensor in
      the logits' dtype (float32 for bfloat16 logits), differentiable w.r.t. the logits;
    * ``log_probs``: :math:`\log\pi_\theta(a_i|s_i)` of the sampled tokens, float64, the
      logits' batch shape, no gradient;
    * ``token_kl``: the per-token estimate :math:`D_i` of
      :math:`\mathrm{KL}(\pi_\theta\,\|\,\pi_{ref})` (unweighted), float64, the logits'
      batch shape, no gradient.
    """

    __slots__ = ()
    _fields = ("loss", "log_probs", "token_kl")
    __match_args__ = _fields
    _blocks = 2

    def __init__(self, loss, log_probs, token_kl):
        self._set([loss, log_probs, token_kl])

    log_probs = property(lambda self: self._get(1), doc="log pi_theta(a_i|s_i), float64")
    token_kl = property(lambda self: self._get(2), doc="D_i, float64")


class A2CLossResult(_LazyResult):
    r"""The result of :func:`a2c_loss`: advantage actor-critic loss (Mnih et al. 2016) with the
    value term and entropy bonus of the PPO paper's eq. 9, the torch face of
    :class:`fastlmrl.A2CLossResult` without ``grad_logits`` / ``grad_values`` (autograd carries
    them); a record with a NamedTuple's interface (:class:`_LazyResult`).

    * ``loss``: :math:`L = \sum_i w_i \ell_i`, :math:`\ell_i = -\hat A_i\log\pi(a_i|s_i) +
      c_v L^V_i - c_e H_i`, a 0-dim tensor in the logits' dtype (float32 for bfloat16 logits),
      differentiable w.r.t. the logits and the values;
    * ``log_probs``: :math:`\log\pi(a_i|s_i)`, float64, the logits' batch shape;
    * ``entropy``: :math:`H_i` of :math:`\pi(\cdot|s_i)` in nats, float64, the batch shape;
    * ``token_loss``: :math:`\ell_i` (unweighted), float64, the batch shape;
    * ``policy_loss``: :math:`\sum_i w_i(-\hat A_i\log\pi(a_i|s_i))`, 0-dim float64;
    * ``value_loss``: :math:`\sum_i w_i L^V_i` (squared error, clipped with ``value_clip``),
      0-dim float64;
    * ``mean_entropy``: :math:`\sum_i w_i H_i / \sum_i w_i`, 0-dim float64.

    Every field but ``loss`` is without gradient.
    """

    __slots__ = ()
    _fields = (
        "loss",
        "log_probs",
        "entropy",
        "token_loss",
        "policy_loss",
        "value_loss",
        "mean_entropy",
    )
    __match_args__ = _fields
    _blocks = 3

    def __init__(self, loss, log_probs, entropy, token_loss, policy_loss, value_loss, mean_entropy):
        self._set([loss, log_probs, entropy, token_loss, policy_loss, value_loss, mean_entropy])

    log_probs = property(lambda self: self._get(1), doc="log pi(a_i|s_i), float64")
    entropy = property(lambda self: self._get(2), doc="H_i per token, float64")
    token_loss = property(lambda self: self._get(3), doc="l_i, float64")
    policy_loss = property(lambda self: self._get(4), doc="sum_i w_i (-A_i log pi(a_i))")
    value_loss = property(lambda self: self._get(5), doc="sum_i w_i L^V_i")
    mean_entropy = property(lambda self: self._get(6), doc="sum_i w_i H_i / sum_i w_i")


#: TRL's spellings of the PPO options (ppo_loss and linear_ppo_loss), as the NumPy API's
PPO_ECOSYSTEM_NAMES = {
    "beta": "kl_coef",
    "epsilon": "clip_low",
    "cliprange": "clip_low",
    "epsilon_high": "clip_high",
    "importance_sampling_level": "ratio_level",
}


def _vec(values, dtype=torch.float64) -> Tensor:
    return tt.as_dtype(torch.from_numpy(values), dtype)


def _stats(*values: float) -> Tensor:
    return torch.from_numpy(np.array(values))


def _per_token(x):
    return None if x is None else tt.array(x)


def _grad_only(ctx, inputs, output):
    """Save the gradient computed in the forward pass (output 1); the rest is diagnostics."""
    ctx.save_for_backward(output[1])
    ctx.mark_non_differentiable(*output[1:])
    ctx.set_materialize_grads(False)  # no (N, V) zeros for the unused outputs


def _logits_backward(n_inputs):
    def backward(ctx, grad_loss, *unused):
        (grad,) = ctx.saved_tensors
        return (tt.scale(grad, grad_loss),) + (None,) * (n_inputs - 1)

    return backward


def _fake_loss(logits, n_per_token, n_stats):
    n = logits.shape[0]
    per = tuple(logits.new_empty((n,), dtype=torch.float64) for _ in range(n_per_token))
    return (
        logits.new_empty((), dtype=tt.loss_dtype(logits.dtype)),
        torch.empty_like(logits),
        *per,
        logits.new_empty((n_stats,), dtype=torch.float64),
    )


# --- PPO ---------------------------------------------------------------------------------------

_INDEX_DTYPES = (np.dtype(np.int64), np.dtype(np.int32))
_TOKEN_LEVEL = np.zeros(1, dtype=np.int64)  # the kernels' sequence_offsets at token level
_NO_REF = {
    np.dtype(np.float32): np.empty(0, dtype=np.float32),
    np.dtype(np.float64): np.empty(0, dtype=np.float64),
}


def _ids(t: Tensor) -> np.ndarray:
    """Token ids as the NumPy API's checks give them to the kernels: int32/int64 as they are,
    other integer dtypes as int64."""
    a = tt.array(t)
    return a if a.dtype in _INDEX_DTYPES else a.astype(np.int64)


def _values(t: Tensor, dtype: np.dtype) -> np.ndarray:
    """Per-token reals in the kernels' dtype (the NumPy API converts the same way)."""
    a = tt.array(t)
    return a if a.dtype == dtype else a.astype(dtype)


@functools.lru_cache(maxsize=256)
def _ppo_options(clip_low, clip_high, dual_clip, ratio_level, kl_coef, kl_estimator, has_ref):
    """The PPO kernel's option arguments, checked once per distinct set of options by the NumPy
    API itself on an empty batch (its errors; an invalid set raises and is not cached)."""
    empty = np.empty(0)
    seq = ratio_level == "sequence"
    _np.ppo_loss(
        np.empty((0, 1)),
        np.empty(0, dtype=np.int64),
        empty,
        empty,
        empty,
        clip_low=clip_low,
        clip_high=clip_high,
        dual_clip=dual_clip,
        ratio_level=ratio_level,
        sequence_offsets=_TOKEN_LEVEL if seq else None,
        ref_log_probs=empty if has_ref else None,
        kl_coef=kl_coef,
        kl_estimator=kl_estimator,
    )
    return (
        float(clip_low),
        float(clip_low if clip_high is None else clip_high),
        0.0 if dual_clip is None else float(dual_clip),
        float(kl_coef),
        _np.KL_ESTIMATORS[kl_estimator],
        int(seq),
    )


@torch.library.custom_op("fastlmrl::ppo_loss", mutates_args=(), device_types="cpu")
def _ppo_loss(
    logits: Tensor,
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
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    # The kernel of fastlmrl.ppo_loss called directly (the NumPy API's per-call checks cost ~10 us
    # on a tiny batch, five times the kernel): the options are checked by the NumPy API once per
    # distinct set (_ppo_options), the arrays are converted as it converts them, and every value
    # check is the kernel's own, before it writes; a non-zero status is turned into the NumPy
    # API's error by calling it on the same arrays.
    options = _ppo_options(
        clip_low,
        clip_high,
        dual_clip,
        ratio_level,
        kl_coef,
        kl_estimator,
        ref_log_probs is not None,
    )
    _, x = tt.kernel_logits(logits)
    n, dt = x.shape[0], x.dtype
    tok, old, adv = _ids(tokens), _values(old_log_probs, dt), _values(advantages, dt)
    w = np.full(n, 1.0 / n if n else 0.0, dtype=dt) if weights is None else _values(weights, dt)
    ref = _NO_REF[dt] if ref_log_probs is None else _values(ref_log_probs, dt)
    offs = (
        _np._offsets(tt.array(sequence_offsets) if sequence_offsets is not None else None, n)
        if options[5]
        else _TOKEN_LEVEL
    )
    grad, out = tt.grad_buffer(logits)
    token_loss, log_probs, ratios, stats = np.empty(n), np.empty(n), np.empty(n), np.zeros(7)
    status = _kernels.ppo_loss(
        x,
        tok,
        old,
        adv,
        w,
        ref,
        offs,
        *options,
        token_loss,
        log_probs,
        ratios,
        out,
        stats,
        tt.num_threads(x.size),
    )
    if status:
        _np.ppo_loss(
            x,
            tok,
            old,
            adv,
            w,
            clip_low=clip_low,
            clip_high=clip_high,
            dual_clip=dual_clip,
            ratio_level=ratio_level,
            sequence_offsets=offs if options[5] else None,
            ref_log_probs=None if ref_log_probs is None else ref,
            kl_coef=kl_coef,
            kl_estimator=kl_estimator,
        )
        raise RuntimeError(
            f"the ppo_loss kernel returned status {status} on arguments the NumPy API accepts"
        )  # pragma: no cover
    return (
        tt.scalar(stats[_PPO_LOSS_SLOT], tt.loss_dtype(logits.dtype)),
        tt.as_dtype(grad, logits.dtype),
        torch.from_numpy(log_probs),
        torch.from_numpy(token_loss),
        torch.from_numpy(ratios),
        torch.from_numpy(stats[_PPO_DIAGNOSTICS]),
    )


@_ppo_loss.register_fake
def _(
    logits,
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
):
    return _fake_loss(logits, 3, 6)


_ppo_loss_call = tt.autograd(_ppo_loss, _logits_backward(13), _grad_only)


def ppo_arguments(
    batch,
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
):
    """Checked tensors and options of :func:`ppo_loss` (also used by the LM-head op);
    ``batch``: the batch shape of the logits."""
    tensors = (
        tt.ids(tokens, "tokens", batch),
        tt.per_token(old_log_probs, "old_log_probs", batch),
        tt.per_token(advantages, "advantages", batch),
        tt.per_token(weights, "weights", batch, optional=True),
        tt.offsets(sequence_offsets),
        tt.per_token(ref_log_probs, "ref_log_probs", batch, optional=True),
    )
    options = dict(
        clip_low=_real(clip_low, "clip_low"),
        clip_high=None if clip_high is None else _real(clip_high, "clip_high"),
        dual_clip=None if dual_clip is None else _real(dual_clip, "dual_clip"),
        ratio_level=_str(ratio_level, "ratio_level"),
        kl_coef=_real(kl_coef, "kl_coef"),
        kl_estimator=_str(kl_estimator, "kl_estimator"),
    )
    return tensors, options


def _real(x, name):
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        if isinstance(x, Tensor) and x.numel() == 1 and not x.dtype.is_complex:
            raise TypeError(f"{name} must be a Python number, not a tensor (use {name}.item())")
        raise TypeError(f"{name} must be a real number, got {type(x).__name__}")
    return float(x)


def _str(x, name):
    if not isinstance(x, str):
        raise TypeError(f"{name} must be a str, got {type(x).__name__}")
    return x


# --- PPO: the eager fast path ------------------------------------------------------------------

_FAST_DTYPES = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}
_I64, _I32 = np.dtype(np.int64), np.dtype(np.int32)
_LARGE_BYTES = tt.LARGE_BYTES


@functools.lru_cache(maxsize=256, typed=True)
def _fast_options(clip_low, clip_high, dual_clip, ratio_level, kl_coef, kl_estimator, has_ref):
    """The kernel's options for the eager fast path (token-level ratios only), checked as the
    general path checks them; typed: ``clip_low=1`` and ``clip_low=True`` are separate keys."""
    if _str(ratio_level, "ratio_level") != "token":
        return None
    return _ppo_options(
        _real(clip_low, "clip_low"),
        None if clip_high is None else _real(clip_high, "clip_high"),
        None if dual_clip is None else _real(dual_clip, "dual_clip"),
        ratio_level,
        _real(kl_coef, "kl_coef"),
        _str(kl_estimator, "kl_estimator"),
        has_ref,
    )


class fastlmrl_ppo_loss_fast(torch.autograd.Function):
    """The autograd node of the eager fast paths: the kernel already ran.  ``forward(ctx,
    logits, (grad, loss))`` keeps the gradient (an (N, V) NumPy array) and returns the loss (a
    0-dim array) as a tensor; ``backward`` makes the gradient a tensor and scales it by the
    upstream gradient as the custom op's backward does (:func:`_tensors.scale_eager`: as it is
    for an upstream 1 when the graph is freed, which autograd then takes as ``.grad`` without a
    copy).

    Written for a cheap ``apply`` (~3 us of a (1, 8) call's ~5): one tensor input (the
    arguments' pair is not a tensor, so autograd does not inspect it), the gradient kept as an
    attribute rather than through ``save_for_backward`` and made a tensor only if a backward
    pass runs.  The attribute is dropped by the backward pass that frees the graph; a later one
    raises autograd's error.  (The gradient is no input or output of the node, so keeping it on
    ``ctx`` makes no reference cycle.)
    """

    @staticmethod
    def forward(ctx, logits, state):
        ctx.grad = state[0]
        return torch.from_numpy(state[1])

    @staticmethod
    def backward(ctx, grad_loss):
        grad = ctx.grad
        if grad is None:
            raise RuntimeError(
                "Trying to backward through the graph a second time (or directly access saved "
                "tensors after they have already been freed). Specify retain_graph=True if you "
                "need to backward through the graph a second time."
            )
        if tt.graph_is_freed_after_this_backward():
            ctx.grad = None
        return tt.scale_eager(grad, grad_loss), None


class fastlmrl_reinforce_loss_fast(fastlmrl_ppo_loss_fast):
    """The autograd node of :func:`reinforce_loss`'s eager fast path (the PPO node's
    formulas: the kernel's gradient w.r.t. the logits, kept as an array)."""


class fastlmrl_kl_penalty_loss_fast(fastlmrl_ppo_loss_fast):
    """The autograd node of :func:`kl_penalty_loss`'s eager fast path (as
    :class:`fastlmrl_reinforce_loss_fast`)."""


class fastlmrl_a2c_loss_fast(torch.autograd.Function):
    """The autograd node of :func:`a2c_loss`'s eager fast path: ``forward(ctx, logits, values,
    (grad_logits, grad_values), loss)`` keeps the two gradient arrays (None for an input that
    needs none; ``grad_values`` already in the values' dtype) and returns the loss (a 0-dim
    array) as a tensor (the entry point's C function when it is built); ``backward`` scales
    each as :class:`fastlmrl_ppo_loss_fast` does."""

    @staticmethod
    def forward(ctx, logits, values, grads, loss):
        ctx.grads = grads
        return torch.from_numpy(loss)

    @staticmethod
    def backward(ctx, grad_loss):
        grads = ctx.grads
        if grads is None:
            raise RuntimeError(
                "Trying to backward through the graph a second time (or directly access saved "
                "tensors after they have already been freed). Specify retain_graph=True if you "
                "need to backward through the graph a second time."
            )
        if tt.graph_is_freed_after_this_backward():
            ctx.grads = None
        grad, grad_values = grads
        return (
            None if grad is None else tt.scale_eager(grad, grad_loss),
            None if grad_values is None else tt.scale_eager(grad_values, grad_loss),
            None,
            None,
        )


# torch.autograd.Function.apply without its Python prologue (never under functorch here)
_apply_ppo = super(torch.autograd.Function, fastlmrl_ppo_loss_fast).apply


def _entry_options(clip_low, clip_high, dual_clip, ratio_level, kl_coef, kl_estimator, has_ref):
    """:func:`_fast_options`, None where they raise (the general path raises the error)."""
    try:
        return _fast_options(
            clip_low, clip_high, dual_clip, ratio_level, kl_coef, kl_estimator, has_ref
        )
    except (TypeError, ValueError, RuntimeError):  # unhashable or bad options
        return None


def _a2c_entry_options(value_coef, entropy_coef, value_clip, has_old):
    """The A2C kernel's ``(value_clip (0: none), value_coef, entropy_coef)``, checked as the
    general path checks them (:func:`_real`, then the NumPy API's ``a2c_arguments``), or None
    where they raise (the general path raises the error)."""
    try:
        value_coef, entropy_coef, clip, _ = _np.a2c_arguments(
            _real(value_coef, "value_coef"),
            _real(entropy_coef, "entropy_coef"),
            None if value_clip is None else _real(value_clip, "value_clip"),
            _NO_VALUES if has_old else None,
            _NO_VALUES,
            _NO_VALUES.dtype,
        )
    except (TypeError, ValueError):
        return None
    return clip, value_coef, entropy_coef


_NO_VALUES = np.empty(0)


def _load_entry():
    """(the Cython backend's module, fastlmrl._cython.torch_entry), or (None, None) when either
    is unavailable: without the Cython backend (fastlmrl._backend reports that) silently, with a
    BackendUnavailableWarning naming the rebuild when only the entry point is missing or was
    built against other kernel declarations (its import checks the cores' C signatures)."""
    try:
        import fastlmrl._cython as cython_kernels
    except Exception:  # (not built, or broken: reported by fastlmrl._backend when used)
        return None, None
    try:
        from fastlmrl._cython import torch_entry

        if torch_entry.STATS_SLOTS != len(PPO_STATS_SLOTS):
            raise ImportError(
                f"built for {torch_entry.STATS_SLOTS} statistics slots, the ppo_loss contract "
                f"has {len(PPO_STATS_SLOTS)}"
            )
    except Exception as exc:
        warnings.warn(
            f"fastlmrl.torch: the Cython entry point of ppo_loss is unavailable "
            f"({type(exc).__name__}: {exc}); the slower NumPy-view path runs instead. "
            "Rebuild the extensions: pip install -e . (or, in a checkout, "
            "FASTLMRL_CYTHON_ONLY=torch_entry python setup.py build_ext --inplace)",
            _backend.BackendUnavailableWarning,
            stacklevel=3,
        )
        return None, None
    return cython_kernels, torch_entry


# the Cython entry point: CPU tensors straight to the Cython kernel core (tt._kernels is never
# None: without the entry point the NumPy-view fast path serves every backend)
_cython_kernels, _entry = _load_entry()
_entry_ppo_loss = _entry_reinforce = _entry_kl = _entry_a2c = None
if _entry is not None:
    _entry.configure(
        Tensor,
        torch.float32,
        torch.float64,
        torch.int32,
        torch.int64,
        torch.from_numpy,
        _apply_ppo,
        torch.is_grad_enabled,
        tt.EAGER_CHECKS,
        tt.small_threads,
        tt.large_threads,
        tt.scratch,
        PPOLossResult,
        tt.LARGE_BYTES,
        tt.SMALL_WORK,
        _entry_options,
        getattr(Tensor, "__dlpack_c_exchange_api__", None),  # (recent torch: DLPack >= 1.2)
    )
    _entry_ppo_loss = _entry.ppo_loss
    tt.use_parallel_scale(_entry.scale_in_place, _cython_kernels)
    _entry.configure_losses(
        super(torch.autograd.Function, fastlmrl_reinforce_loss_fast).apply,
        super(torch.autograd.Function, fastlmrl_kl_penalty_loss_fast).apply,
        super(torch.autograd.Function, fastlmrl_a2c_loss_fast).apply,
        ReinforceLossResult,
        KLPenaltyResult,
        A2CLossResult,
        _np.KL_ESTIMATORS,
        _a2c_entry_options,
    )
    _entry_reinforce, _entry_kl, _entry_a2c = (
        _entry.reinforce_loss,
        _entry.kl_penalty_loss,
        _entry.a2c_loss,
    )
    # the same forward as a C function (~0.1 us less inside apply)
    fastlmrl_ppo_loss_fast.forward = staticmethod(_entry.node_forward)
    fastlmrl_a2c_loss_fast.forward = staticmethod(_entry.node_forward2)

_BAD = object()  # options the fast path leaves to the general path (its errors)
_is_compiling = torch.compiler.is_compiling
_IMMUTABLE = (float, int, str, type(None))
_last_options: tuple = (_BAD,) * 8


def _remember_options(clip_low, clip_high, dual_clip, ratio_level, kl_coef, kl_estimator, has_ref):
    """:func:`_fast_options` (``_BAD`` where they raise), remembered for the next call when every
    option is a plain immutable float / int / str / None: a call with the same objects is the same
    call (~0.1 us instead of ~0.5 us for the cache's typed key)."""
    global _last_options
    try:
        options = _fast_options(
            clip_low, clip_high, dual_clip, ratio_level, kl_coef, kl_estimator, has_ref
        )
    except (TypeError, ValueError, RuntimeError):  # unhashable or bad options
        return _BAD
    key = (clip_low, clip_high, dual_clip, ratio_level, kl_coef, kl_estimator)
    if all(type(v) in _IMMUTABLE for v in key):
        _last_options = (*key, has_ref, options)  # (one tuple: safe across threads)
    return options


def _ppo_fast(
    logits,
    tokens,
    old_log_probs,
    advantages,
    weights,
    ref_log_probs,
    clip_low,
    clip_high,
    dual_clip,
    ratio_level,
    kl_coef,
    kl_estimator,
):
    """:func:`ppo_loss` on plain contiguous float32/float64 CPU tensors (logits (..., V) of rank
    >= 2, per-row arguments of their batch shape or flat) in eager mode, token-level ratios:
    the backend's kernel on NumPy views of the tensors, no dispatcher and the result tensors
    built when read (:class:`PPOLossResult`).  None when any argument needs
    the general path (conversions, traced or transformed calls, errors): every check it makes is
    one that the general path makes too, so it never changes which calls succeed.  Under the
    Cython backend :func:`fastlmrl._cython.torch_entry.ppo_loss` does the same without the
    NumPy views (this path serves the other backends).

    The kernel checks the ids, the finiteness of every per-token input, the weights and the
    logits before it writes anything; a non-zero status is turned into the NumPy API's error by
    calling the NumPy API on the same arrays (as the custom op does).

    Written for a ~10 us call: one ``Tensor.numpy()`` per argument (it refuses a tensor off the
    CPU, one that requires a gradient, a conjugate or negative view: the general path handles
    those), all inside one ``try``; the views' dtype, shape and layout checked on the NumPy side
    (cheaper than a tensor's attributes); no helper calls in between.
    """
    if not tt.eager_mode():  # (the arguments' types are checked below)
        return None
    dtype = _FAST_DTYPES.get(logits.dtype)
    if (
        dtype is None
        or type(tokens) is not Tensor
        or type(old_log_probs) is not Tensor
        or type(advantages) is not Tensor
        or (weights is not None and type(weights) is not Tensor)
        or (ref_log_probs is not None and type(ref_log_probs) is not Tensor)
    ):
        return None
    grad = logits.requires_grad
    has_ref = ref_log_probs is not None
    last = _last_options  # the options of the last call, if its arguments were the same objects
    if (
        clip_low is last[0]
        and clip_high is last[1]
        and dual_clip is last[2]
        and ratio_level is last[3]
        and kl_coef is last[4]
        and kl_estimator is last[5]
        and has_ref is last[6]
    ):
        options = last[7]
    else:
        options = _remember_options(
            clip_low, clip_high, dual_clip, ratio_level, kl_coef, kl_estimator, has_ref
        )
    if options is _BAD or options is None:  # bad options, or sequence-level ratios
        return None
    try:
        x = logits.numpy(force=True) if grad else logits.numpy()
        tok = tokens.numpy()
        old = old_log_probs.numpy()
        adv = advantages.numpy()
        w = None if weights is None else weights.numpy()
        ref = _NO_REF[dtype] if ref_log_probs is None else ref_log_probs.numpy()
    except (TypeError, RuntimeError):  # not on the CPU, requires a gradient, conjugate / negative
        return None
    shape = x.shape
    if len(shape) < 2 or shape[-1] == 0 or not x.flags.c_contiguous:
        return None
    logits_array = x
    if len(shape) != 2:  # (..., V): (N, V) and (N,) views
        flat = tt.flat_rows(x, (tok, old, adv, w, ref if has_ref else None))
        if flat is None:
            return None
        x, (tok, old, adv, w, flat_ref) = flat
        ref = flat_ref if has_ref else ref
    n = x.shape[0]
    vec = x.shape[:1]
    if (
        tok.shape != vec
        or (tok.dtype is not _I64 and tok.dtype is not _I32)
        or old.shape != vec
        or old.dtype is not dtype
        or adv.shape != vec
        or adv.dtype is not dtype
    ):
        return None
    if w is None:
        w = np.empty(n, dtype=dtype)
        w.fill(1.0 / n if n else 0.0)  # = the general path's np.full
    elif w.shape != vec or w.dtype is not dtype or not w.flags.c_contiguous:
        return None
    if ref_log_probs is not None and (
        ref.shape != vec or ref.dtype is not dtype or not ref.flags.c_contiguous
    ):
        return None
    if not (tok.flags.c_contiguous and old.flags.c_contiguous and adv.flags.c_contiguous):
        return None
    # the gradient in the logits' shape (a tensor over it only when it is needed)
    grad_array = (
        np.empty_like(logits_array)
        if logits_array.nbytes < _LARGE_BYTES
        else tt.scratch_like(logits_array)
    )
    out = grad_array if len(shape) == 2 else grad_array.reshape(x.shape)
    token_loss, log_probs, ratios, stats = np.empty(n), np.empty(n), np.empty(n), np.zeros(7)
    status = _kernels.ppo_loss(
        x,
        tok,
        old,
        adv,
        w,
        ref,
        _TOKEN_LEVEL,
        *options,
        token_loss,
        log_probs,
        ratios,
        out,
        stats,
        tt.num_threads(x.size),
    )
    if status:
        _np.ppo_loss(
            x,
            tok,
            old,
            adv,
            w,
            clip_low=clip_low,
            clip_high=clip_high,
            dual_clip=dual_clip,
            ratio_level=ratio_level,
            ref_log_probs=None if ref_log_probs is None else ref,
            kl_coef=kl_coef,
            kl_estimator=kl_estimator,
        )
        raise RuntimeError(
            f"the ppo_loss kernel returned status {status} on arguments the NumPy API accepts"
        )  # pragma: no cover
    loss = np.array(stats[_PPO_LOSS_SLOT], dtype=dtype)
    if grad and torch.is_grad_enabled():
        loss = _apply_ppo(logits, (grad_array, loss))
    else:
        loss = torch.from_numpy(loss)
    if len(shape) == 2:
        return PPOLossResult._lazy_arrays(loss, log_probs, token_loss, ratios, stats)
    blocks = _batch_shaped((log_probs, token_loss, ratios), logits_array)
    return PPOLossResult._lazy_arrays(loss, *blocks, stats)


# --- REINFORCE, KL, A2C: the eager NumPy-view paths (backends without the Cython entry) -------


def _loss_views(logits, tokens, reals):
    """NumPy views for the losses' eager NumPy-view paths: ``(logits (N, V), ids (N,), [each
    of ``reals`` (N,) in the logits' dtype, or None], logits as they are)`` of plain contiguous
    float32/float64 CPU tensors in eager mode (logits (..., V) of rank >= 2, per-row arguments
    of their batch shape or flat: :func:`_tensors.flat_rows`), or None when any argument needs
    the general path.  Every check is one the general path makes too, so it never changes which
    calls succeed."""
    if not tt.eager_mode():  # (first: dynamo folds it, and traces nothing below)
        return None
    dtype = _FAST_DTYPES.get(logits.dtype)
    if dtype is None or type(logits) is not Tensor or type(tokens) is not Tensor:
        return None
    if not logits.is_cpu or any(
        t is not None and (type(t) is not Tensor or not t.is_cpu) for t in reals
    ):
        return None  # (before numpy(force=True), which would copy another device's tensor)
    try:
        x = logits.numpy(force=True) if logits.requires_grad else logits.numpy()
        ids = tokens.numpy()
        arrays = [None if t is None else t.numpy(force=t.requires_grad) for t in reals]
    except (TypeError, RuntimeError):  # not on the CPU, conjugate / negative bit, ...
        return None
    if x.ndim < 2 or x.shape[-1] == 0 or not x.flags.c_contiguous:
        return None
    whole = x
    if x.ndim != 2:
        flat = tt.flat_rows(x, (ids, *arrays))
        if flat is None:
            return None
        x, (ids, *arrays) = flat
    vec = x.shape[:1]
    if ids.shape != vec or ids.dtype not in _INDEX_DTYPES or not ids.flags.c_contiguous:
        return None
    for a in arrays:
        if a is not None and (a.shape != vec or a.dtype is not dtype or not a.flags.c_contiguous):
            return None
    return x, ids, arrays, whole


def _default_weights(n: int, dtype) -> np.ndarray:
    return np.full(n, 1.0 / n if n else 0.0, dtype=dtype)  # (the NumPy API's default)


def _gradient_out(x: np.ndarray) -> np.ndarray:
    """The gradient a loss kernel writes, in the shape of the logits ``x`` (large ones from
    the buffer cache)."""
    return np.empty_like(x) if x.nbytes < _LARGE_BYTES else tt.scratch_like(x)


def _rows(grad: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The gradient as the kernel writes it: an (N, V) view like ``x``."""
    return grad if grad.ndim == 2 else grad.reshape(x.shape)


def _batch_shaped(blocks, whole: np.ndarray):
    """(N,) per-row results in the batch shape of the logits ``whole``."""
    return blocks if whole.ndim == 2 else [b.reshape(whole.shape[:-1]) for b in blocks]


def _logits_loss_result(cls, logits, whole, grad, stats, blocks, apply):
    """The lazy result of a loss whose gradient is w.r.t. the logits only (``stats[0]`` the
    loss), through its node (``apply``) when autograd needs the gradient; ``whole``: the logits'
    array, ``grad`` of its shape."""
    loss = np.array(stats[0], dtype=whole.dtype)
    if logits.requires_grad and torch.is_grad_enabled():
        loss = apply(logits, (grad, loss))
    else:
        loss = torch.from_numpy(loss)
    return cls._lazy_arrays(loss, *_batch_shaped(blocks, whole), stats)


def _reinforce_fast(logits, tokens, returns, weights, baseline):
    """:func:`reinforce_loss` on NumPy views (``baseline`` None or a tensor), or None."""
    if isinstance(baseline, str):
        return None
    views = _loss_views(logits, tokens, (returns, weights, baseline))
    if views is None:
        return None
    x, ids, (ret, w, base), whole = views
    n = x.shape[0]
    w = _default_weights(n, x.dtype) if w is None else w
    base = np.zeros(n, dtype=x.dtype) if base is None else base
    grad, token_loss, log_probs, stats = _gradient_out(whole), np.empty(n), np.empty(n), np.zeros(1)
    if _kernels.reinforce_loss(
        x, ids, ret, base, w, token_loss, log_probs, _rows(grad, x), stats, tt.num_threads(x.size)
    ):
        return None  # (the general path raises the error)
    return _logits_loss_result(
        ReinforceLossResult, logits, whole, grad, stats, (log_probs, token_loss), _apply_reinforce
    )


def _kl_fast(logits, tokens, ref_log_probs, weights, kl_estimator):
    """:func:`kl_penalty_loss` on NumPy views, or None."""
    estimator = _np.KL_ESTIMATORS.get(kl_estimator) if type(kl_estimator) is str else None
    views = None if estimator is None else _loss_views(logits, tokens, (ref_log_probs, weights))
    if views is None:
        return None
    x, ids, (ref, w), whole = views
    n = x.shape[0]
    w = _default_weights(n, x.dtype) if w is None else w
    grad, token_kl, log_probs, stats = _gradient_out(whole), np.empty(n), np.empty(n), np.zeros(1)
    if _kernels.kl_penalty_loss(
        x,
        ids,
        ref,
        w,
        estimator,
        token_kl,
        log_probs,
        _rows(grad, x),
        stats,
        tt.num_threads(x.size),
    ):
        return None
    return _logits_loss_result(
        KLPenaltyResult, logits, whole, grad, stats, (log_probs, token_kl), _apply_kl
    )


_a2c_last: tuple = ((), None)  # the last call's (option objects, checked options)


def _a2c_fast(
    logits,
    tokens,
    advantages,
    values,
    returns,
    weights,
    value_coef,
    entropy_coef,
    old_values,
    value_clip,
):
    """:func:`a2c_loss` on NumPy views (``values`` in the logits' dtype), or None; the options'
    check remembered for the same objects (plain floats, ints, None)."""
    global _a2c_last
    key = (value_coef, entropy_coef, value_clip, old_values is not None)
    last = _a2c_last
    if len(last[0]) == 4 and all(a is b for a, b in zip(key, last[0])):
        options = last[1]
    else:
        options = _a2c_entry_options(*key)
        if options is not None and all(type(a) in _IMMUTABLE + (bool,) for a in key):
            _a2c_last = (key, options)
    if options is None:
        return None
    views = _loss_views(logits, tokens, (advantages, values, returns, old_values, weights))
    if views is None:
        return None
    x, ids, (adv, vals, rets, old, w), whole = views
    n = x.shape[0]
    w = _default_weights(n, x.dtype) if w is None else w
    old = vals if old is None else old  # (without clipping the values stand in for them)
    grad, stats = _gradient_out(whole), np.zeros(4)
    token_loss, log_probs, entropies, grad_values = (np.empty(n) for _ in range(4))
    if _kernels.a2c_loss(
        x,
        ids,
        adv,
        vals,
        rets,
        old,
        w,
        *options,
        token_loss,
        log_probs,
        entropies,
        _rows(grad, x),
        grad_values,
        stats,
        tt.num_threads(x.size),
    ):
        return None
    loss = np.array(stats[0], dtype=x.dtype)
    enabled = torch.is_grad_enabled()
    grad_x, grad_v = enabled and logits.requires_grad, enabled and values.requires_grad
    if grad_x or grad_v:
        gv = None
        if grad_v:  # (in the values' dtype and shape)
            gv = grad_values.astype(x.dtype, copy=False)
            gv = gv if values.ndim == 1 else gv.reshape(tuple(values.shape))
        loss = _apply_a2c(logits, values, (grad if grad_x else None, gv), loss)
    else:
        loss = torch.from_numpy(loss)
    blocks = _batch_shaped((log_probs, entropies, token_loss), whole)
    return A2CLossResult._lazy_arrays(loss, *blocks, stats)


_apply_reinforce = super(torch.autograd.Function, fastlmrl_reinforce_loss_fast).apply
_apply_kl = super(torch.autograd.Function, fastlmrl_kl_penalty_loss_fast).apply
_apply_a2c = super(torch.autograd.Function, fastlmrl_a2c_loss_fast).apply


@check.renamed(ecosystem=PPO_ECOSYSTEM_NAMES)
def ppo_loss(
    logits,
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
) -> PPOLossResult:
    r"""PPO clipped surrogate of (..., V) logits, differentiable w.r.t. ``logits``
    (:func:`fastlmrl.ppo_loss`: Schulman et al. 2017 eq. 7; DAPO clip-higher; dual clip; GSPO
    ``ratio_level="sequence"`` with ``sequence_offsets`` over the flattened rows; GRPO's KL
    penalty with ``ref_log_probs``, ``kl_coef`` and ``kl_estimator``).

    ``weights`` (default :math:`1/N`) carry the mask and the normalisation: see
    :func:`fastlmrl.torch.loss_weights` for GRPO / BNPO / Dr. GRPO / DAPO.
    """
    if (
        sequence_offsets is None
        and tt._kernels is _cython_kernels  # (None: no entry point)
        and not _is_compiling()  # (folded by dynamo: it traces the general path)
    ):
        result = _entry_ppo_loss(  # tensors straight to the Cython core (token-level ratios)
            logits,
            tokens,
            old_log_probs,
            advantages,
            weights,
            ref_log_probs,
            clip_low,
            clip_high,
            dual_clip,
            ratio_level,
            kl_coef,
            kl_estimator,
        )
        if result.__class__ is PPOLossResult:
            return result
    elif sequence_offsets is None and type(logits) is Tensor:  # the eager NumPy-view path
        result = _ppo_fast(
            logits,
            tokens,
            old_log_probs,
            advantages,
            weights,
            ref_log_probs,
            clip_low,
            clip_high,
            dual_clip,
            ratio_level,
            kl_coef,
            kl_estimator,
        )
        if result is not None:
            return result
    x = tt.logits_2d(logits)
    tensors, o = ppo_arguments(
        logits.shape[:-1],
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
    tok, old, adv, w, offs, ref = tensors
    out = _ppo_loss_call(
        x,
        tok,
        old,
        adv,
        w,
        o["clip_low"],
        o["clip_high"],
        o["dual_clip"],
        o["ratio_level"],
        offs,
        ref,
        o["kl_coef"],
        o["kl_estimator"],
    )
    return ppo_result(out[0], out[2:5], out[5], logits.shape[:-1])


def ppo_result(loss, per_token, stats, batch) -> PPOLossResult:
    log_probs, token_loss, ratios = (tt.unflat(t, batch) for t in per_token)
    return PPOLossResult(loss, log_probs, token_loss, ratios, *tt.unbind(stats))


# --- REINFORCE ---------------------------------------------------------------------------------


@torch.library.custom_op("fastlmrl::reinforce_loss", mutates_args=(), device_types="cpu")
def _reinforce_loss(
    logits: Tensor,
    tokens: Tensor,
    returns: Tensor,
    weights: Tensor | None,
    baseline: Tensor | None,
    baseline_mode: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    _, x = tt.kernel_logits(logits)
    grad, out = tt.grad_buffer(logits)
    base = baseline_mode if baseline_mode else _per_token(baseline)
    r = _np.reinforce_loss(
        x, tt.array(tokens), tt.array(returns), _per_token(weights), baseline=base, out=out
    )
    return (
        tt.scalar(r.loss, tt.loss_dtype(logits.dtype)),
        tt.as_dtype(grad, logits.dtype),
        _vec(r.log_probs),
        _vec(r.token_loss),
    )


@_reinforce_loss.register_fake
def _(logits, tokens, returns, weights, baseline, baseline_mode):
    return _fake_loss(logits, 2, 0)[:4]


def _reinforce_setup(ctx, inputs, output):
    ctx.save_for_backward(output[1])
    ctx.mark_non_differentiable(*output[1:])
    ctx.set_materialize_grads(False)  # no (N, V) zeros for the unused outputs


_reinforce_loss_call = tt.autograd(_reinforce_loss, _logits_backward(6), _reinforce_setup)


def reinforce_loss(logits, tokens, returns, weights=None, baseline=None) -> ReinforceLossResult:
    r"""REINFORCE with baseline, :math:`\ell_i = -(G_i - b_i)\log\pi(a_i|s_i)`
    (:func:`fastlmrl.reinforce_loss`); ``baseline``: None, ``"mean"`` or a tensor (no gradient
    flows into it)."""
    if (
        tt._kernels is _cython_kernels  # (None: no entry point)
        and not _is_compiling()  # (folded by dynamo: it traces the general path)
    ):  # tensors straight to the Cython core
        result = _entry_reinforce(logits, tokens, returns, weights, baseline)
        if result.__class__ is ReinforceLossResult:
            return result
    elif type(logits) is Tensor:  # the eager NumPy-view path
        result = _reinforce_fast(logits, tokens, returns, weights, baseline)
        if result is not None:
            return result
    x = tt.logits_2d(logits)
    batch = logits.shape[:-1]
    if isinstance(baseline, str):
        if baseline != "mean":
            raise ValueError(f"baseline must be None, 'mean' or a tensor, got {baseline!r}")
        mode, base = baseline, None
    else:
        mode, base = "", tt.per_token(baseline, "baseline", batch, optional=True)
    out = _reinforce_loss_call(
        x,
        tt.ids(tokens, "tokens", batch),
        tt.per_token(returns, "returns", batch),
        tt.per_token(weights, "weights", batch, optional=True),
        base,
        mode,
    )
    return ReinforceLossResult(out[0], tt.unflat(out[2], batch), tt.unflat(out[3], batch))


# --- KL penalty --------------------------------------------------------------------------------


@torch.library.custom_op("fastlmrl::kl_penalty_loss", mutates_args=(), device_types="cpu")
def _kl_penalty_loss(
    logits: Tensor, tokens: Tensor, ref_log_probs: Tensor, weights: Tensor | None, kl_estimator: str
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    _, x = tt.kernel_logits(logits)
    grad, out = tt.grad_buffer(logits)
    r = _np.kl_penalty_loss(
        x,
        tt.array(tokens),
        tt.array(ref_log_probs),
        _per_token(weights),
        kl_estimator=kl_estimator,
        out=out,
    )
    return (
        tt.scalar(r.loss, tt.loss_dtype(logits.dtype)),
        tt.as_dtype(grad, logits.dtype),
        _vec(r.log_probs),
        _vec(r.token_kl),
    )


@_kl_penalty_loss.register_fake
def _(logits, tokens, ref_log_probs, weights, kl_estimator):
    return _fake_loss(logits, 2, 0)[:4]


_kl_penalty_loss_call = tt.autograd(_kl_penalty_loss, _logits_backward(5), _reinforce_setup)


@check.renamed(deprecated={"estimator": "kl_estimator"})
def kl_penalty_loss(
    logits, tokens, ref_log_probs, weights=None, kl_estimator="k3"
) -> KLPenaltyResult:
    r"""KL penalty to a reference policy, :math:`L = \sum_i w_i D_i` with Schulman's estimator
    k1 / k2 / k3 at the sampled token (:func:`fastlmrl.kl_penalty_loss`)."""
    if tt._kernels is _cython_kernels and not _is_compiling():  # (as reinforce_loss)
        result = _entry_kl(logits, tokens, ref_log_probs, weights, kl_estimator)
        if result.__class__ is KLPenaltyResult:
            return result
    elif type(logits) is Tensor:  # the eager NumPy-view path
        result = _kl_fast(logits, tokens, ref_log_probs, weights, kl_estimator)
        if result is not None:
            return result
    x = tt.logits_2d(logits)
    batch = logits.shape[:-1]
    out = _kl_penalty_loss_call(
        x,
        tt.ids(tokens, "tokens", batch),
        tt.per_token(ref_log_probs, "ref_log_probs", batch),
        tt.per_token(weights, "weights", batch, optional=True),
        _str(kl_estimator, "kl_estimator"),
    )
    return KLPenaltyResult(out[0], tt.unflat(out[2], batch), tt.unflat(out[3], batch))


# --- A2C ---------------------------------------------------------------------------------------


@torch.library.custom_op("fastlmrl::a2c_loss", mutates_args=(), device_types="cpu")
def _a2c_loss(
    logits: Tensor,
    tokens: Tensor,
    advantages: Tensor,
    values: Tensor,
    returns: Tensor,
    weights: Tensor | None,
    value_coef: float,
    entropy_coef: float,
    old_values: Tensor | None,
    value_clip: float | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    _, x = tt.kernel_logits(logits)
    grad, out = tt.grad_buffer(logits)
    r = _np.a2c_loss(
        x,
        tt.array(tokens),
        tt.array(advantages),
        tt.array(values),
        tt.array(returns),
        _per_token(weights),
        value_coef=value_coef,
        entropy_coef=entropy_coef,
        old_values=_per_token(old_values),
        value_clip=value_clip,
        out=out,
    )
    return (
        tt.scalar(r.loss, tt.loss_dtype(logits.dtype)),
        tt.as_dtype(grad, logits.dtype),
        _vec(r.grad_values, values.dtype),
        _vec(r.log_probs),
        _vec(r.entropy),
        _vec(r.token_loss),
        _stats(r.policy_loss, r.value_loss, r.mean_entropy),
    )


@_a2c_loss.register_fake
def _(
    logits,
    tokens,
    advantages,
    values,
    returns,
    weights,
    value_coef,
    entropy_coef,
    old_values,
    value_clip,
):
    loss, grad, *per, stats = _fake_loss(logits, 4, 3)
    return (loss, grad, torch.empty_like(values), *per[1:], stats)


def _a2c_setup(ctx, inputs, output):
    ctx.save_for_backward(output[1], output[2])
    ctx.mark_non_differentiable(*output[1:])
    ctx.set_materialize_grads(False)  # no (N, V) zeros for the unused outputs


def _a2c_grad(ctx, grad_loss, *unused):
    grad_logits, grad_values = ctx.saved_tensors
    return (
        tt.scale(grad_logits, grad_loss),
        None,
        None,
        tt.scale(grad_values, grad_loss),
        None,
        None,
        None,
        None,
        None,
        None,
    )


_a2c_loss_call = tt.autograd(_a2c_loss, _a2c_grad, _a2c_setup, differentiable=(0, 3))


@check.renamed(ecosystem={"vf_coef": "value_coef", "cliprange_value": "value_clip"})
def a2c_loss(
    logits,
    tokens,
    advantages,
    values,
    returns,
    weights=None,
    value_coef=0.5,
    entropy_coef=0.01,
    old_values=None,
    value_clip=None,
) -> A2CLossResult:
    r"""Advantage actor-critic loss :math:`-\hat A_i\log\pi(a_i) + c_v L^V_i - c_e H_i`
    (:func:`fastlmrl.a2c_loss`), differentiable w.r.t. ``logits`` and ``values`` (a floating
    tensor of the batch shape; its gradient has its dtype)."""
    if tt._kernels is _cython_kernels and not _is_compiling():  # (as reinforce_loss)
        result = _entry_a2c(
            logits,
            tokens,
            advantages,
            values,
            returns,
            weights,
            value_coef,
            entropy_coef,
            old_values,
            value_clip,
        )
        if result.__class__ is A2CLossResult:
            return result
    elif type(logits) is Tensor and type(values) is Tensor:  # the eager NumPy-view path
        result = _a2c_fast(
            logits,
            tokens,
            advantages,
            values,
            returns,
            weights,
            value_coef,
            entropy_coef,
            old_values,
            value_clip,
        )
        if result is not None:
            return result
    x = tt.logits_2d(logits)
    batch = logits.shape[:-1]
    vals = tt.per_token(values, "values", batch)
    out = _a2c_loss_call(
        x,
        tt.ids(tokens, "tokens", batch),
        tt.per_token(advantages, "advantages", batch),
        vals,
        tt.per_token(returns, "returns", batch),
        tt.per_token(weights, "weights", batch, optional=True),
        _real(value_coef, "value_coef"),
        _real(entropy_coef, "entropy_coef"),
        tt.per_token(old_values, "old_values", batch, optional=True),
        None if value_clip is None else _real(value_clip, "value_clip"),
    )
    per = (tt.unflat(t, batch) for t in out[3:6])
    return A2CLossResult(out[0], *per, *tt.unbind(out[6]))
