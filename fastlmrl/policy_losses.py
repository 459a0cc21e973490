r"""Fused policy-gradient losses over logits, with their gradients with respect to the logits.

Inputs: ``logits`` (N, V) -- row i holds the logits :math:`z_i` of the current policy
:math:`\pi_\theta` at token position (context, state) i, ``tokens`` (N,) -- the sampled actions
:math:`a_i` -- and per-token arrays (advantages, returns, old/reference log-probs, ...), all indexed
by the same i: the quantities of the decision at position i (S&B's :math:`S_t, A_t`; the
advantage :math:`\hat A_i` of taking :math:`a_i` there).

Every loss is a **weighted sum of per-token losses**, :math:`L = \sum_i w_i\,\ell_i`, with caller
chosen ``weights`` :math:`w_i \ge 0` (default :math:`1/N`, a token mean).  They carry the mask and
the normalisation: e.g. ``mask / mask.sum()`` (token mean over the batch), ``mask / (G * len_seq)``
(sequence mean, GRPO), ``mask / max_len`` (Dr. GRPO) -- see :mod:`fastlmrl.group_advantages`.

Each function makes **one fused pass per row** (two for sequence-level ratios): log-sum-exp (max,
then exponentials into a per-thread row buffer), :math:`\log\pi(a_i)`, the per-token loss, and the
gradient row, written straight into ``grad_logits`` (no other (N, V) array): a new array, or
``out=`` -- a preallocated (N, V) array of the logits' dtype, or a :class:`fastlmrl.OutputBuffer`
that keeps one from call to call (a fresh (4096, 50257) float32 gradient costs as much again in
page faults as the pass itself).  For the pure
policy-gradient terms
:math:`\partial L/\partial z_i = w_i\,\frac{\partial \ell_i}{\partial\log\pi(a_i)}\,
(\mathrm{onehot}(a_i) - \pi(\cdot|s_i))`.  Arithmetic, fast exp for float32 and error rules are
those of :mod:`fastlmrl.log_probs`; per-token inputs are converted to the dtype of ``logits``;
per-token outputs are float64.  Scalar results (of :func:`reinforce_loss`, :func:`ppo_loss`,
:func:`kl_penalty_loss`) are float64 sums over fixed blocks of
:math:`B = \min(256, 1 + \lfloor 65536 / V\rfloor)` consecutive rows: each sum is accumulated in
row order within a block, then the block sums are added in block order (``reduce_rows`` in
:mod:`fastlmrl._python.policy_losses`); the blocks do not depend on the thread count, so every
backend and thread count gives the same bits.  (:func:`a2c_loss` reduces in plain index order after
the parallel pass.)  A sampled token whose logit is -inf raises ValueError naming ``tokens`` (its
loss would be infinite).  All per-token arguments are checked before anything is written; as in
:mod:`fastlmrl.log_probs`, a NaN/+inf logit is
detected during the pass, so an ``out`` array you pass may hold partial results on that error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from . import _backend, _free_cores
from . import _validation as check
from ._contract import Arg, Kernel, Kind, Topic
from ._status import Status
from ._validation_logits import as_logits, as_out, as_tokens, explain_bad_logits, refuse_shared

if TYPE_CHECKING:  # what readers and tools follow: the reference kernels
    from ._python import policy_losses as _kernels
else:  # the active backend's kernels, rebound by set_backend (fastlmrl._backend.bind)
    _kernels = _backend.bind(__name__, "_kernels")

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

KL_ESTIMATORS = {"k1": 1, "k2": 2, "k3": 3}


# ----------------------------------------------------------------------------- the contract
def _bad_tokens_message(args: Mapping[str, Any], shown: Callable[[str], str]) -> str:
    """BAD_TOKENS: the first id outside [0, V), else the first token selecting a -inf logit."""
    logits, tokens, name = np.asarray(args["logits"]), np.asarray(args["tokens"]), shown("tokens")
    n_vocab = logits.shape[1]
    bad = np.flatnonzero((tokens < 0) | (tokens >= n_vocab))
    if bad.size:
        i = int(bad[0])
        return f"{name}[{i}] = {int(tokens[i])} is out of range [0, {n_vocab})"
    masked = np.flatnonzero(np.isneginf(logits[np.arange(tokens.shape[0]), tokens]))
    i = int(masked[0]) if masked.size else 0
    return (
        f"{name}[{i}] = {int(tokens[i])} selects a masked (-inf) logit: its log-probability is -inf"
    )


def bad_weights_message(args: Mapping[str, Any], shown: Callable[[str], str]) -> str:
    """BAD_WEIGHTS: the first weight that is not finite, else the first negative one (also the
    message of fastlmrl.tabular_losses)."""
    weights, name = np.asarray(args["weights"]), shown("weights")
    for bad, what in ((~np.isfinite(weights), "is not finite"), (weights < 0, "is negative")):
        found = np.flatnonzero(bad)
        if found.size:
            i = int(found[0])
            return f"{name}[{i}] = {weights[i]} {what}"
    return f"invalid {name}"


def _per_token_arg(name: str, status: Status) -> Arg:
    """A per-token input (N,) in the logits' dtype (``real_t[::1]``)."""
    return Arg(name, Kind.REALS, status=status)


def output_arg(name: str) -> Arg:
    """A float64 output the kernel writes: (N,) per token, or the statistics."""
    return Arg(name, Kind.ARRAY, written=True, ctype="double[::1]")


#: The losses of this topic and of fastlmrl.tabular_losses (kernels ``<loss>_loss`` and
#: ``<loss>_loss_tabular``), and the named slots of their ``stats``.
LOSS_STATS = {
    "a2c": ("loss", "policy_loss", "value_loss", "mean_entropy"),
    "kl_penalty": ("loss",),
    "ppo": (
        "loss",
        "pg_loss",
        "kl_loss",
        "clip_fraction",
        "dual_clip_fraction",
        "approx_kl_k1",
        "approx_kl_k3",
    ),
    "reinforce": ("loss",),
}


def loss_inputs(loss: str, per_token: Callable[[str, Status], Arg]) -> tuple[Arg, ...]:
    """The arguments of loss ``loss`` (a key of LOSS_STATS) after the logits and tokens and before
    the outputs: the same in this topic and in fastlmrl.tabular_losses, whose per-token inputs
    (made by ``per_token(name, status)``) differ in type."""
    weights = per_token("weights", Status.BAD_WEIGHTS)
    kl_estimator = Arg("kl_estimator", Kind.SCALAR, ctype="int64_t")  # KL_ESTIMATORS: 1, 2, 3
    if loss == "a2c":
        return (
            per_token("advantages", Status.BAD_ADVANTAGES),
            per_token("values", Status.BAD_VALUES),
            per_token("returns", Status.BAD_RETURNS),
            per_token("old_values", Status.BAD_OLD_VALUES),  # read with value_clip > 0
            weights,
            Arg("value_clip", Kind.REAL),  # 0: no value clipping
            Arg("value_coef", Kind.REAL),
            Arg("entropy_coef", Kind.REAL),
        )
    if loss == "kl_penalty":
        return (per_token("ref_log_probs", Status.BAD_REF_LOG_PROBS), weights, kl_estimator)
    if loss == "ppo":
        return (
            per_token("old_log_probs", Status.BAD_OLD_LOG_PROBS),
            per_token("advantages", Status.BAD_ADVANTAGES),
            weights,
            per_token("ref_log_probs", Status.BAD_REF_LOG_PROBS),  # empty: no KL term
            Arg(
                "sequence_offsets",
                Kind.ARRAY,
                status=Status.BAD_SEQUENCE_OFFSETS,
                ctype="int64_t[::1]",
            ),  # read with sequence_level
            Arg("clip_low", Kind.REAL),
            Arg("clip_high", Kind.REAL),
            Arg("dual_clip", Kind.REAL),  # 0: none
            Arg("kl_coef", Kind.REAL),
            kl_estimator,
            Arg("sequence_level", Kind.SCALAR, ctype="int64_t"),  # 0: token, else sequence
        )
    assert loss == "reinforce", loss
    return (
        per_token("returns", Status.BAD_RETURNS),
        per_token("baselines", Status.BAD_BASELINES),
        weights,
    )


def loss_outputs(loss: str) -> tuple[Arg, ...]:
    """The last arguments of loss ``loss``'s kernel, in both topics: what it writes, the threads.
    ``grad`` has the logits' (table's) dtype and V columns."""
    per_token = {"a2c": ("entropies",), "ppo": ("ratios",)}.get(loss, ())
    return (
        output_arg("token_loss"),
        output_arg("log_probs"),
        *(output_arg(name) for name in per_token),
        Arg("grad", Kind.TABLE, written=True),
        *((output_arg("value_grad"),) if loss == "a2c" else ()),
        output_arg("stats"),
        Arg("num_threads", Kind.THREADS),
    )


_HEAD = (
    Arg("logits", Kind.TABLE, status=Status.BAD_LOGITS),
    Arg("tokens", Kind.IDS, status=Status.BAD_TOKENS, bound=("logits", 1)),
)
_CALL = (Status.BAD_SHAPES, Status.OVERLAPPING_ARRAYS)
_MESSAGES = {
    Status.BAD_LOGITS: explain_bad_logits,  # names the first invalid row
    Status.BAD_TOKENS: _bad_tokens_message,
    Status.BAD_WEIGHTS: bad_weights_message,
}
#: grad (N, V) like the logits may be them exactly, but not in a2c_loss
_DOCS = {"a2c": "grad may not be the logits (the entropy gradient reads the row after writing it)"}


#: The kernels of this topic, in every backend (``fastlmrl._python/_numba/_cython.policy_losses``);
#: tests/test_contract.py checks each implementation against it.  Per-token inputs have the
#: logits' dtype, per-token outputs and ``stats`` are float64; ``stats`` is at least as long as its
#: named slots.  Every argument is checked before the first write, but a NaN/+inf logit row or a
#: token of logit -inf, found during the pass (``grad`` may then hold rows).  A kernel that cannot
#: allocate its row buffers returns ``NO_MEMORY`` (``raise_for_status``: MemoryError).
CONTRACT = Topic(
    "policy_losses",
    tuple(
        Kernel(
            f"{loss}_loss",
            (*_HEAD, *loss_inputs(loss, _per_token_arg), *loss_outputs(loss)),
            _CALL,
            results={"stats": stats},
            doc=_DOCS.get(loss, ""),
            messages=_MESSAGES,
        )
        for loss, stats in LOSS_STATS.items()
    ),
)

#: the public names of kernel arguments, for the messages
_PUBLIC = {"baselines": "baseline"}


def _results(name: str, status: int, args: tuple) -> Any:
    """After kernel ``name`` ran on positional ``args``: the error naming the argument for a
    non-zero ``status``, else the named slots of its ``stats`` (``stats.loss``)."""
    kernel = CONTRACT[name]
    kernel.raise_for_call(status, args, _PUBLIC)
    return kernel.read_results("stats", args[kernel.arg_names.index("stats")])


def _stats(name: str) -> np.ndarray:
    """A zeroed statistics output of kernel ``name``: one float64 per named slot."""
    return np.zeros(len(CONTRACT[name].results["stats"]))


class ReinforceLossResult(NamedTuple):
    r"""Result of :func:`reinforce_loss`: REINFORCE with baseline (Williams 1992).

    ``loss`` :math:`L = \sum_i w_i \ell_i` (float), with
    :math:`\ell_i = -(G_i - b_i)\log\pi(a_i|s_i)` for the sampled token :math:`a_i` at position
    i; ``grad_logits`` :math:`\partial L/\partial z`, shape (N, V) in the dtype of the logits;
    ``log_probs`` :math:`\log\pi(a_i|s_i)`, (N,) float64; ``token_loss`` :math:`\ell_i`,
    (N,) float64 (unweighted).
    """

    loss: float  #: sum_i w_i l_i
    grad_logits: np.ndarray  #: dL/dlogits, (N, V), dtype of logits
    log_probs: np.ndarray  #: log pi(a_i|s_i), (N,) float64
    token_loss: np.ndarray  #: l_i, (N,) float64


class PPOLossResult(NamedTuple):
    r"""Result of :func:`ppo_loss`: the PPO clipped surrogate (Schulman et al. 2017, eq. 7), with
    an optional KL penalty to a reference policy (GRPO, Shao et al. 2024, eq. 4).

    ``loss`` :math:`L = \sum_i w_i(\ell^{CLIP}_i + \beta D_i)` (``kl_coef`` :math:`\beta`,
    TRL's ``beta``); ``grad_logits`` :math:`\partial L/\partial z`, (N, V) in the logits' dtype;
    ``log_probs`` :math:`\log\pi_\theta(a_i|s_i)`, (N,) float64; ``token_loss``
    :math:`\ell^{CLIP}_i + \beta D_i`, (N,) float64 (unweighted); ``ratios`` the importance ratio
    :math:`\rho_i` each token used (token level, or the sequence's :math:`s_k` with
    ``ratio_level="sequence"``), (N,) float64; ``pg_loss`` :math:`\sum_i w_i\ell^{CLIP}_i`;
    ``kl_loss`` :math:`\sum_i w_i D_i` (0 without ``ref_log_probs``; not multiplied by
    :math:`\beta`); ``clip_fraction`` the weighted fraction of tokens whose gradient the
    :math:`\epsilon`-clip zeroes; ``dual_clip_fraction`` the weighted fraction held at the dual-clip
    bound; ``approx_kl_k1`` and ``approx_kl_k3`` the weighted means of :math:`-\log\rho_i` and
    :math:`\rho_i - 1 - \log\rho_i` (estimates of KL(old || new), token-level :math:`\rho`).
    Scalars are Python floats.
    """

    loss: float  #: sum_i w_i (l^CLIP_i + kl_coef * D_i)
    grad_logits: np.ndarray  #: dL/dlogits, (N, V)
    log_probs: np.ndarray  #: log pi_theta(a_i|s_i), (N,) float64
    token_loss: np.ndarray  #: l^CLIP_i + kl_coef * D_i, (N,) float64
    ratios: np.ndarray  #: the importance ratio used per token (token or sequence level), float64
    pg_loss: float  #: sum_i w_i l^CLIP_i
    kl_loss: float  #: sum_i w_i D_i (0 without ref_log_probs), not multiplied by kl_coef
    clip_fraction: float  #: weighted fraction of tokens whose gradient the eps-clip zeroes
    dual_clip_fraction: float  #: weighted fraction held at the dual-clip bound
    approx_kl_k1: float  #: weighted mean of log pi_old - log pi_theta
    approx_kl_k3: float  #: weighted mean of (rho - 1) - log rho, rho = pi_theta / pi_old


class KLPenaltyResult(NamedTuple):
    r"""Result of :func:`kl_penalty_loss`: the KL penalty to a reference policy as a loss term
    (GRPO, Shao et al. 2024, eq. 4; estimators k1/k2/k3 of Schulman 2020).

    ``loss`` :math:`L = \sum_i w_i D_i` (float, not multiplied by any coefficient);
    ``grad_logits`` :math:`\partial L/\partial z`, (N, V) in the logits' dtype; ``log_probs``
    :math:`\log\pi_\theta(a_i|s_i)`, (N,) float64; ``token_kl`` the per-token estimate
    :math:`D_i` of :math:`\mathrm{KL}(\pi_\theta\,\|\,\pi_{ref})`, (N,) float64 (unweighted).
    """

    loss: float  #: sum_i w_i D_i
    grad_logits: np.ndarray  #: dL/dlogits, (N, V)
    log_probs: np.ndarray  #: (N,) float64
    token_kl: np.ndarray  #: D_i, (N,) float64


class A2CLossResult(NamedTuple):
    r"""Result of :func:`a2c_loss`: advantage actor-critic loss (Mnih et al. 2016), policy term,
    value term and entropy bonus combined as in the PPO paper's eq. 9.

    ``loss`` :math:`L = \sum_i w_i\ell_i`, :math:`\ell_i = -\hat A_i\log\pi(a_i|s_i) + c_v L^V_i
    - c_e H_i` (``value_coef`` :math:`c_v`, ``entropy_coef`` :math:`c_e`); ``grad_logits``
    :math:`\partial L/\partial z`, (N, V) in the logits' dtype; ``grad_values``
    :math:`\partial L/\partial V_i` for the critic, (N,) float64; ``log_probs``
    :math:`\log\pi(a_i|s_i)`, (N,) float64; ``entropy`` :math:`H_i` of :math:`\pi(\cdot|s_i)` in
    nats, (N,) float64; ``token_loss`` :math:`\ell_i`, (N,) float64 (unweighted);
    ``policy_loss`` :math:`\sum_i w_i(-\hat A_i\log\pi(a_i|s_i))`; ``value_loss``
    :math:`\sum_i w_i L^V_i` (squared error, clipped with ``value_clip``); ``mean_entropy``
    :math:`\sum_i w_i H_i / \sum_i w_i`.  Scalars are Python floats.
    """

    loss: float  #: policy_loss + value_coef * value_loss - entropy_coef * sum_i w_i H_i
    grad_logits: np.ndarray  #: dL/dlogits, (N, V)
    grad_values: np.ndarray  #: dL/dvalues, (N,) float64
    log_probs: np.ndarray  #: (N,) float64
    entropy: np.ndarray  #: H_i per token, (N,) float64
    token_loss: np.ndarray  #: -A_i log pi(a_i) + value_coef L^V_i - entropy_coef H_i, float64
    policy_loss: float  #: sum_i w_i (-A_i log pi(a_i))
    value_loss: float  #: sum_i w_i L^V_i
    mean_entropy: float  #: sum_i w_i H_i / sum_i w_i


def _per_token(x, name, n, dtype):
    arr = check.values(x, name, n, dtype)
    return arr


def _weights(weights, n, dtype):
    if weights is None:
        return np.full(n, 1.0 / n if n else 0.0, dtype=dtype)
    return check.values(weights, "weights", n, dtype)


def _prepare(logits, tokens, weights):
    logits = as_logits(logits)
    n = logits.shape[0]
    tokens = as_tokens(tokens, n)
    return logits, tokens, _weights(weights, n, logits.dtype), n


def _outputs(n):
    return np.empty(n), np.empty(n)


def reinforce_loss(
    logits, tokens, returns, weights=None, baseline=None, out=None
) -> ReinforceLossResult:
    r"""REINFORCE with baseline (Williams 1992; Sutton & Barto 2018, §13.4, eq. 13.11).

    :math:`\ell_i = -(G_i - b_i)\log\pi(a_i|s_i)`, so that
    :math:`-\partial L/\partial\theta = \sum_i w_i (G_i - b_i)\nabla\log\pi(a_i|s_i)` is the
    REINFORCE-with-baseline update direction; :math:`G_i` is the return that followed the action at
    position i (S&B's :math:`G_t`).

    ``baseline``: ``None`` (:math:`b = 0`), ``"mean"`` (the batch baseline
    :math:`b = \sum_i w_i G_i / \sum_i w_i`, computed with ``math.fsum`` over the converted values,
    0 when all weights are 0), or an (N,) array of learned values :math:`\hat v(s_i)` (no gradient
    flows into it here; train it with :func:`a2c_loss` or your own value loss).
    """
    logits, tokens, w, n = _prepare(logits, tokens, weights)
    returns = _per_token(returns, "returns", n, logits.dtype)
    if baseline is None:
        base = np.zeros(n, dtype=logits.dtype)
    elif isinstance(baseline, str):
        if baseline != "mean":
            raise ValueError(f"baseline must be None, 'mean' or an array, got {baseline!r}")
        base = np.full(n, mean_baseline(returns, w), dtype=logits.dtype)
    else:
        base = _per_token(baseline, "baseline", n, logits.dtype)
    grad = as_out(out, logits)
    refuse_shared(grad, {"tokens": tokens, "returns": returns, "baseline": base, "weights": w})
    token_loss, log_probs = _outputs(n)
    args = (
        logits,
        tokens,
        returns,
        base,
        w,
        token_loss,
        log_probs,
        grad,
        _stats("reinforce_loss"),
        _free_cores.threads(),
    )
    status = _kernels.reinforce_loss(*args)
    stats = _results("reinforce_loss", status, args)
    return ReinforceLossResult(float(stats.loss), grad, log_probs, token_loss)


def mean_baseline(returns: np.ndarray, weights: np.ndarray) -> float:
    """The batch baseline sum_i w_i G_i / sum_i w_i of the (converted) values, by math.fsum in
    float64 (0.0 when the weights sum to 0, or when an input is not finite: the kernel then
    reports the bad argument)."""
    if not (np.isfinite(returns).all() and np.isfinite(weights).all()):
        return 0.0
    r64 = returns.astype(np.float64)
    w64 = weights.astype(np.float64)
    sw = math.fsum(w64.tolist())
    return math.fsum((w64 * r64).tolist()) / sw if sw > 0 else 0.0


def _offsets(sequence_offsets, n):
    if sequence_offsets is None:
        raise ValueError("ratio_level='sequence' needs sequence_offsets")
    offs = check.ids(sequence_offsets, "sequence_offsets").astype(np.int64)
    if offs.shape[0] < 1 or offs[0] != 0 or offs[-1] != n or (np.diff(offs) < 0).any():
        raise ValueError(
            f"sequence_offsets must start at 0, end at N = {n} and be non-decreasing, got "
            f"{offs[:8].tolist()}{'...' if offs.shape[0] > 8 else ''}"
        )
    return offs


@check.renamed(
    ecosystem={
        "beta": "kl_coef",
        "epsilon": "clip_low",
        "cliprange": "clip_low",
        "epsilon_high": "clip_high",
        "importance_sampling_level": "ratio_level",
    }
)
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
    out=None,
) -> PPOLossResult:
    r"""PPO clipped surrogate (Schulman et al. 2017, eq. 7) with asymmetric clipping, optional dual
    clip, sequence-level ratios (GSPO) and a KL penalty to a reference policy (GRPO).

    Per token, with :math:`\rho_i = \exp(\log\pi_\theta(a_i|s_i) - \log\pi_{old}(a_i|s_i))`:

    .. math::  \ell^{CLIP}_i = -\min\big(\rho_i \hat A_i,\;
               \mathrm{clip}(\rho_i, 1-\epsilon_{low}, 1+\epsilon_{high})\,\hat A_i\big)

    (:math:`\epsilon_{high} > \epsilon_{low}` is DAPO's "clip-higher", Yu et al. 2025).  Its
    derivative wrt :math:`\log\pi_\theta(a_i)` is :math:`-\rho_i\hat A_i` when the unclipped term
    is the minimum (ties included) and 0 otherwise.  ``dual_clip`` = c > 1 (Ye et al. 2020,
    "Mastering complex control in MOBA games", eq. 5): for :math:`\hat A_i < 0` the loss is capped
    at :math:`-c\hat A_i` (zero gradient there).

    ``ratio_level="sequence"`` (GSPO, Zheng et al. 2025, eq. 7 and the GSPO-token form eq. 13):
    rows ``sequence_offsets[k]:sequence_offsets[k+1]`` form sequence k and every token of it uses
    :math:`s_k = \exp(\frac{1}{|y_k|}\sum_{t}(\log\pi_\theta - \log\pi_{old}))`, the mean running
    over the sequence's tokens with non-zero weight, with gradient
    :math:`\partial s_{k,t}/\partial\log\pi_\theta(a_t) = s_k` (GSPO-token).  With per-sequence
    advantages and weights :math:`1/(G |y_k|)` this is GSPO's objective and gradient exactly.

    KL penalty (``ref_log_probs`` given): :math:`+\beta D_i` with ``kl_coef`` :math:`\beta` and
    ``kl_estimator`` k1 :math:`= \log\pi_\theta - \log\pi_{ref}`, k2 :math:`=
    \tfrac12(\log\pi_\theta
    - \log\pi_{ref})^2` or k3 :math:`= e^{u} - 1 - u`, :math:`u = \log\pi_{ref} - \log\pi_\theta`
    (Schulman 2020, "Approximating KL divergence"; GRPO, Shao et al. 2024, eq. 4 uses k3).

    Diagnostics (weighted means over tokens, weights as given): ``clip_fraction``,
    ``dual_clip_fraction``, ``approx_kl_k1`` = mean of :math:`-\log\rho_i`, ``approx_kl_k3`` =
    mean of :math:`\rho_i - 1 - \log\rho_i` (token-level :math:`\rho`, KL(old || new)).  The ratio
    is not clamped: a huge log-ratio gives an infinite loss, as the formula says.

    TRL's spellings are accepted too: ``epsilon`` / ``cliprange`` (``clip_low``), ``epsilon_high``
    (``clip_high``), ``beta`` (``kl_coef``), ``importance_sampling_level`` (``ratio_level``).
    """
    logits, tokens, w, n = _prepare(logits, tokens, weights)
    old = _per_token(old_log_probs, "old_log_probs", n, logits.dtype)
    adv = _per_token(advantages, "advantages", n, logits.dtype)
    clip_low = check.real(clip_low, "clip_low", 0.0, 1.0, high_open=True)
    clip_high = clip_low if clip_high is None else check.real(clip_high, "clip_high", 0.0)
    dual = 0.0 if dual_clip is None else check.real(dual_clip, "dual_clip", 1.0, low_open=True)
    kl_coef = check.real(kl_coef, "kl_coef", 0.0)
    check.choice(kl_estimator, "kl_estimator", KL_ESTIMATORS)
    check.choice(ratio_level, "ratio_level", ("token", "sequence"))
    if ref_log_probs is None:
        if kl_coef != 0.0:
            raise ValueError("kl_coef > 0 needs ref_log_probs")
        ref = np.empty(0, dtype=logits.dtype)
    else:
        ref = _per_token(ref_log_probs, "ref_log_probs", n, logits.dtype)
    seq = ratio_level == "sequence"
    offs = _offsets(sequence_offsets, n) if seq else np.zeros(1, dtype=np.int64)
    grad = as_out(out, logits)
    refuse_shared(
        grad,
        {
            "tokens": tokens,
            "old_log_probs": old,
            "advantages": adv,
            "weights": w,
            "ref_log_probs": ref,
            "sequence_offsets": offs,
        },
    )
    token_loss, log_probs = _outputs(n)
    ratios = np.empty(n)
    args = (
        logits,
        tokens,
        old,
        adv,
        w,
        ref,
        offs,
        clip_low,
        clip_high,
        dual,
        kl_coef,
        KL_ESTIMATORS[kl_estimator],
        int(seq),
        token_loss,
        log_probs,
        ratios,
        grad,
        _stats("ppo_loss"),
        _free_cores.threads(),
    )
    status = _kernels.ppo_loss(*args)
    stats = _results("ppo_loss", status, args)
    return PPOLossResult(
        float(stats.loss),
        grad,
        log_probs,
        token_loss,
        ratios,
        float(stats.pg_loss),
        float(stats.kl_loss),
        float(stats.clip_fraction),
        float(stats.dual_clip_fraction),
        float(stats.approx_kl_k1),
        float(stats.approx_kl_k3),
    )


@check.renamed(deprecated={"estimator": "kl_estimator"})
def kl_penalty_loss(
    logits, tokens, ref_log_probs, weights=None, kl_estimator="k3", out=None
) -> KLPenaltyResult:
    r"""KL penalty to a reference policy as a loss term (GRPO style, Shao et al. 2024, eq. 4).

    :math:`L = \sum_i w_i D_i` with the per-token estimator of
    :math:`\mathrm{KL}(\pi_\theta\,\|\,\pi_{ref})` at the sampled token (Schulman 2020):
    k1 :math:`= \log\pi_\theta - \log\pi_{ref}` (:math:`\partial D/\partial\log\pi_\theta = 1`),
    k2 :math:`= \tfrac12(\log\pi_\theta - \log\pi_{ref})^2` (derivative
    :math:`\log\pi_\theta - \log\pi_{ref}`), k3 :math:`= e^u - 1 - u`,
    :math:`u = \log\pi_{ref} - \log\pi_\theta` (derivative :math:`1 - e^u`; k3 >= 0).
    Gradient wrt the logits: :math:`w_i\,\partial D_i/\partial\log\pi_\theta\,(\mathrm{onehot} -
    p)`. ``kl_estimator`` was called ``estimator`` (deprecated keyword).
    """
    logits, tokens, w, n = _prepare(logits, tokens, weights)
    ref = _per_token(ref_log_probs, "ref_log_probs", n, logits.dtype)
    check.choice(kl_estimator, "kl_estimator", KL_ESTIMATORS)
    grad = as_out(out, logits)
    refuse_shared(grad, {"tokens": tokens, "ref_log_probs": ref, "weights": w})
    token_kl, log_probs = _outputs(n)
    estimator = KL_ESTIMATORS[kl_estimator]
    args = (
        logits,
        tokens,
        ref,
        w,
        estimator,
        token_kl,
        log_probs,
        grad,
        _stats("kl_penalty_loss"),
        _free_cores.threads(),
    )
    status = _kernels.kl_penalty_loss(*args)
    stats = _results("kl_penalty_loss", status, args)
    return KLPenaltyResult(float(stats.loss), grad, log_probs, token_kl)


def a2c_arguments(value_coef, entropy_coef, value_clip, old_values, values, dtype):
    """Checked (value_coef, entropy_coef, value_clip (0.0 = none), old values) of an A2C loss;
    without clipping the values stand in for the unused old values."""
    value_coef = check.real(value_coef, "value_coef", 0.0)
    entropy_coef = check.real(entropy_coef, "entropy_coef")
    if value_clip is None:
        if old_values is not None:
            raise ValueError("old_values is only used with value_clip")
        return value_coef, entropy_coef, 0.0, values
    clip = check.real(value_clip, "value_clip", 0.0, low_open=True)
    if old_values is None:
        raise ValueError("value_clip needs old_values")
    return (
        value_coef,
        entropy_coef,
        clip,
        check.values(old_values, "old_values", values.shape[0], dtype),
    )


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
    out=None,
) -> A2CLossResult:
    r"""Advantage actor-critic loss (Mnih et al. 2016, A3C; the PPO paper's eq. 9 combination).

    .. math::  \ell_i = -\hat A_i\log\pi(a_i|s_i) + c_v L^V_i - c_e H_i

    ``advantages`` :math:`\hat A_i` (e.g. GAE, Schulman et al. 2016, from
    :mod:`fastlmrl.advantages`; treated as constants), ``values`` :math:`V(s_i)` (the critic's
    current predictions, which receive the gradient ``grad_values``), ``returns`` :math:`R_i` (the
    value targets).  Value loss :math:`L^V_i = (V_i - R_i)^2`; with ``value_clip`` = ε and
    ``old_values`` :math:`V^{old}_i` (OpenAI baselines' PPO2):
    :math:`L^V_i = \max\big((V_i - R_i)^2, (V^{old}_i + \mathrm{clip}(V_i - V^{old}_i, -ε, ε) -
    R_i)^2\big)`; the clipped branch passes gradient only when :math:`|V_i - V^{old}_i| \le ε`.
    (Baselines' extra factor 1/2 corresponds to ``value_coef`` = 0.25 here.)  Entropy bonus
    :math:`H_i` as in :func:`fastlmrl.entropy`, with
    :math:`\partial H/\partial z_j = -p_j(\log p_j + H)`.
    """
    logits, tokens, w, n = _prepare(logits, tokens, weights)
    dt = logits.dtype
    adv = _per_token(advantages, "advantages", n, dt)
    vals = _per_token(values, "values", n, dt)
    rets = _per_token(returns, "returns", n, dt)
    value_coef, entropy_coef, clip, old = a2c_arguments(
        value_coef, entropy_coef, value_clip, old_values, vals, dt
    )
    grad = as_out(out, logits)
    refuse_shared(
        grad,
        {
            "tokens": tokens,
            "advantages": adv,
            "values": vals,
            "returns": rets,
            "old_values": old,
            "weights": w,
        },
    )
    token_loss, log_probs = _outputs(n)
    entropies = np.empty(n)
    grad_values = np.empty(n)
    args = (
        logits,
        tokens,
        adv,
        vals,
        rets,
        old,
        w,
        clip,
        value_coef,
        entropy_coef,
        token_loss,
        log_probs,
        entropies,
        grad,
        grad_values,
        _stats("a2c_loss"),
        _free_cores.threads(),
    )
    status = _kernels.a2c_loss(*args)
    stats = _results("a2c_loss", status, args)
    return A2CLossResult(
        float(stats.loss),
        grad,
        grad_values,
        log_probs,
        entropies,
        token_loss,
        float(stats.policy_loss),
        float(stats.value_loss),
        float(stats.mean_entropy),
    )
