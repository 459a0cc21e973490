r"""Policy-gradient losses of a **tabular** softmax policy, with one gradient row per visited
context.

A tabular policy is a logits table :math:`\theta` of shape (S, V):
:math:`\pi(a \mid s) = \mathrm{softmax}(\theta[s])_a`.  Token i of a batch was sampled in context
:math:`s_i` = ``contexts[i]`` (S&B's :math:`S_t`) and is :math:`a_i` = ``tokens[i]``
(:math:`A_t`); the per-token arrays (advantages, returns, old/reference log-probs, weights) are
indexed by the same i, exactly as in :mod:`fastlmrl.policy_losses`.

The losses are those of :mod:`fastlmrl.policy_losses` (REINFORCE, PPO with every option, the KL
penalty, A2C with its entropy bonus) evaluated at ``logits = table[contexts]``; the difference is
the gradient's form.  Every
token of context s contributes :math:`c_i\,(\mathrm{onehot}(a_i) - \pi(\cdot|s))` with
:math:`c_i = w_i\,\partial\ell_i/\partial\log\pi(a_i|s)`, so the gradient with respect to row s
of the table is

.. math::  \frac{\partial L}{\partial\theta[s]} = \sum_{i: s_i = s} c_i\,\mathrm{onehot}(a_i)
           \;-\; \Big(\sum_{i: s_i = s} c_i\Big)\,\pi(\cdot|s)

One softmax per distinct context instead of one per token: O(U·V + N) work for N tokens over U
distinct contexts, against O(N·V) for the gathered logits.  The result gives ``rows`` (the
distinct contexts, increasing) and ``grad_rows`` (U, V), ready for
:meth:`fastlmrl.Adam.step` ``(rows, grad_rows)`` -- the same update as applying the per-token
gradient of :mod:`fastlmrl.policy_losses` with repeated rows accumulated, up to float rounding.

Numerics: row statistics (max, sum of exponentials, the float32 fast exp) are those of
:mod:`fastlmrl.log_probs`, so ``log_probs`` equal ``fastlmrl.token_log_probs(table[contexts],
tokens)`` bit for bit.  Per-token inputs are used in float64 (not rounded to the table's dtype).
Sums over tokens (of ``c_i`` per context and entry, and the batch sums) run in float64 in token
order; a gradient entry :math:`(-C_s)\,p_{s,j} + A_{s,j}` is rounded once to the table's dtype.
Every backend and thread count gives the same bits.  Unvisited rows are never read.  All
arguments are checked before anything is written; a visited row with NaN/+inf (or no finite
entry) raises ValueError naming it.

The kernels' contract (arguments, statuses, the slots of ``stats``) is :data:`CONTRACT`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from . import _backend, _free_cores
from . import _validation as check
from ._contract import Arg, Kernel, Kind, Topic, raise_for_status
from ._status import Status
from .policy_losses import (
    KL_ESTIMATORS,
    LOSS_STATS,
    _offsets,
    a2c_arguments,
    bad_weights_message,
    loss_inputs,
    loss_outputs,
    mean_baseline,
    output_arg,
)

if TYPE_CHECKING:  # what readers and tools follow: the reference kernels
    from ._python import tabular_losses as _kernels
else:
    _kernels = _backend.bind(__name__, "_kernels")

__all__ = [
    "TabularA2CLossResult",
    "TabularKLPenaltyResult",
    "TabularPPOLossResult",
    "TabularReinforceLossResult",
    "a2c_loss_tabular",
    "kl_penalty_loss_tabular",
    "ppo_loss_tabular",
    "reinforce_loss_tabular",
    "token_log_probs_tabular",
]


def _bad_row_message(args, shown) -> str:
    table, contexts = np.asarray(args["table"]), np.asarray(args["contexts"])
    for s in np.unique(contexts):
        row = table[s]
        if np.isnan(row).any() or np.isposinf(row).any() or not np.isfinite(row).any():
            return (
                f"{shown('table')} row {int(s)} (a visited context) holds NaN or +inf or no "
                "finite entry"
            )
    return f"invalid {shown('table')}"


def _bad_token_message(args, shown) -> str:
    table, contexts = np.asarray(args["table"]), np.asarray(args["contexts"])
    tokens, name = np.asarray(args["tokens"]), shown("tokens")
    n_vocab = table.shape[1]
    bad = np.flatnonzero((tokens < 0) | (tokens >= n_vocab))
    if bad.size:
        i = int(bad[0])
        return f"{name}[{i}] = {int(tokens[i])} is out of range [0, {n_vocab})"
    masked = np.flatnonzero(np.isneginf(table[contexts, tokens]))
    if not masked.size:  # x - lse overflowed (float64 logits near -1e308)
        return f"{name}: a log-probability overflows to -inf"
    i = int(masked[0])
    return (
        f"{name}[{i}] = {int(tokens[i])} selects a masked (-inf) logit of "
        f"{shown('table')} row {int(contexts[i])}: its log-probability is -inf"
    )


def _token_arg(name: str, status: Status | None = None) -> Arg:
    """A float64 per-token input (N,)."""
    return Arg(name, Kind.ARRAY, status=status, ctype="double[::1]")


_HEAD = (
    Arg("table", Kind.TABLE, status=Status.BAD_LOGITS),
    Arg("contexts", Kind.IDS, status=Status.BAD_CONTEXTS, bound=("table", 0)),
    Arg("tokens", Kind.IDS, status=Status.BAD_TOKENS, bound=("table", 1)),
)
#: index (S,): position of each context among the distinct ones (-1: not visited); rows: the
#: distinct contexts, increasing (at least min(N, S) long); num_rows (1,): their number U
_WORK = tuple(
    Arg(n, Kind.ARRAY, written=True, ctype="int64_t[::1]") for n in ("index", "rows", "num_rows")
)
_CALL = (Status.BAD_SHAPES, Status.OVERLAPPING_ARRAYS)
_MESSAGES = {
    Status.BAD_LOGITS: _bad_row_message,
    Status.BAD_TOKENS: _bad_token_message,
    Status.BAD_WEIGHTS: bad_weights_message,
}


def _loss_kernel(loss: str) -> Kernel:
    """``<loss>_loss_tabular``: the arguments of fastlmrl.policy_losses' ``<loss>_loss`` with the
    table and contexts for the logits, float64 per-token inputs and the work arrays."""
    args = (*_HEAD, *loss_inputs(loss, _token_arg), *_WORK, *loss_outputs(loss))
    return Kernel(
        f"{loss}_loss_tabular", args, _CALL, results={"stats": LOSS_STATS[loss]}, messages=_MESSAGES
    )


#: The kernels of this topic (fastlmrl/_contract.py): arguments in order, statuses, stats slots.
#: Per-token inputs and outputs are float64 whatever the table's dtype; ``grad`` (at least U rows,
#: V) and the table share theirs.  Every check comes before the first write (but a float64
#: log-probability that overflows to -inf, found in the token pass).
CONTRACT = Topic(
    "tabular_losses",
    (
        *(_loss_kernel(loss) for loss in LOSS_STATS),
        Kernel(
            "token_log_probs_tabular",
            (*_HEAD, *_WORK, output_arg("log_probs"), Arg("num_threads", Kind.THREADS)),
            _CALL,
            messages=_MESSAGES,
        ),
    ),
)

#: the public names of kernel arguments, for the messages
_PUBLIC = {"grad": "grad_rows", "baselines": "baseline"}


def _fail(status: int, name: str, args: tuple) -> None:
    """Kernel ``name``'s non-zero status on positional ``args`` as the exception naming the
    argument (:func:`fastlmrl._contract.raise_for_status`)."""
    CONTRACT[name].raise_for_call(status, args, _PUBLIC)


def _stats(name: str, stats: np.ndarray):
    """The ``stats`` output of kernel ``name`` by slot name (``.loss``, ...)."""
    return CONTRACT[name].read_results("stats", stats)


class TabularReinforceLossResult(NamedTuple):
    r"""Result of :func:`reinforce_loss_tabular`: REINFORCE with baseline (Williams 1992) for a
    tabular softmax policy :math:`\pi(a|s) = \mathrm{softmax}(\theta[s])_a`.

    ``loss`` :math:`L = \sum_i w_i\ell_i`, :math:`\ell_i = -(G_i - b_i)\log\pi(a_i|s_i)` (float);
    ``rows`` are the U distinct contexts of the batch, increasing, (U,) int64, and ``grad_rows``
    :math:`\partial L/\partial\theta[\mathrm{rows}]`, (U, V) in the table's dtype (pass both to
    :meth:`fastlmrl.Adam.step`); rows of the table not in ``rows`` have zero gradient.
    ``log_probs`` :math:`\log\pi(a_i|s_i)`, (N,) float64; ``token_loss`` :math:`\ell_i`, (N,)
    float64 (unweighted).  Same values as :class:`fastlmrl.ReinforceLossResult` for
    ``logits = table[contexts]``.
    """

    loss: float  #: sum_i w_i l_i
    rows: np.ndarray  #: the distinct contexts, increasing, (U,) int64
    grad_rows: np.ndarray  #: dL/dtable[rows], (U, V), dtype of the table
    log_probs: np.ndarray  #: log pi(a_i|s_i), (N,) float64
    token_loss: np.ndarray  #: l_i, (N,) float64


class TabularPPOLossResult(NamedTuple):
    r"""Result of :func:`ppo_loss_tabular`: the PPO clipped surrogate (Schulman et al. 2017, eq. 7)
    with an optional KL penalty (GRPO, Shao et al. 2024, eq. 4) for a tabular softmax policy.

    ``loss`` :math:`L = \sum_i w_i(\ell^{CLIP}_i + \beta D_i)` (``kl_coef`` :math:`\beta`, TRL's
    ``beta``);
    ``rows`` are the U distinct contexts of the batch, increasing, (U,) int64, and ``grad_rows``
    :math:`\partial L/\partial\theta[\mathrm{rows}]`, (U, V) in the table's dtype (pass both to
    :meth:`fastlmrl.Adam.step`); rows of the table not in ``rows`` have zero gradient.
    ``log_probs`` :math:`\log\pi_\theta(a_i|s_i)`, (N,) float64; ``token_loss``
    :math:`\ell^{CLIP}_i + \beta D_i`, (N,) float64; ``ratios`` the ratio :math:`\rho_i` each token
    used (token or sequence level), (N,) float64; ``pg_loss``, ``kl_loss`` (not multiplied by
    :math:`\beta`), ``clip_fraction``, ``dual_clip_fraction``, ``approx_kl_k1`` and
    ``approx_kl_k3``: the float diagnostics of :class:`fastlmrl.PPOLossResult`, the same values as
    there for ``logits = table[contexts]``.
    """

    loss: float  #: sum_i w_i (l^CLIP_i + kl_coef * D_i)
    rows: np.ndarray  #: the distinct contexts, increasing, (U,) int64
    grad_rows: np.ndarray  #: dL/dtable[rows], (U, V)
    log_probs: np.ndarray  #: log pi_theta(a_i|s_i), (N,) float64
    token_loss: np.ndarray  #: l^CLIP_i + kl_coef * D_i, (N,) float64
    ratios: np.ndarray  #: the importance ratio used per token (token or sequence level), float64
    pg_loss: float  #: sum_i w_i l^CLIP_i
    kl_loss: float  #: sum_i w_i D_i (0 without ref_log_probs), not multiplied by kl_coef
    clip_fraction: float  #: weighted fraction of tokens whose gradient the eps-clip zeroes
    dual_clip_fraction: float  #: weighted fraction held at the dual-clip bound
    approx_kl_k1: float  #: weighted mean of log pi_old - log pi_theta
    approx_kl_k3: float  #: weighted mean of (rho - 1) - log rho, rho = pi_theta / pi_old


class TabularKLPenaltyResult(NamedTuple):
    r"""Result of :func:`kl_penalty_loss_tabular`: the KL penalty to a reference policy (GRPO,
    Shao et al. 2024, eq. 4; estimators of Schulman 2020) for a tabular softmax policy.

    ``loss`` :math:`L = \sum_i w_i D_i` (float);
    ``rows`` are the U distinct contexts of the batch, increasing, (U,) int64, and ``grad_rows``
    :math:`\partial L/\partial\theta[\mathrm{rows}]`, (U, V) in the table's dtype (pass both to
    :meth:`fastlmrl.Adam.step`); rows of the table not in ``rows`` have zero gradient.
    ``log_probs`` :math:`\log\pi_\theta(a_i|s_i)`, (N,) float64; ``token_kl`` the per-token
    estimate :math:`D_i` of :math:`\mathrm{KL}(\pi_\theta\,\|\,\pi_{ref})`, (N,) float64.
    """

    loss: float  #: sum_i w_i D_i
    rows: np.ndarray  #: the distinct contexts, increasing, (U,) int64
    grad_rows: np.ndarray  #: dL/dtable[rows], (U, V)
    log_probs: np.ndarray  #: (N,) float64
    token_kl: np.ndarray  #: D_i, (N,) float64


class TabularA2CLossResult(NamedTuple):
    r"""Result of :func:`a2c_loss_tabular`: advantage actor-critic loss (Mnih et al. 2016) for a
    tabular softmax policy, :math:`\ell_i = -\hat A_i\log\pi(a_i|s_i) + c_v L^V_i - c_e H_i`.

    ``loss`` :math:`L = \sum_i w_i\ell_i` (float);
    ``rows`` are the U distinct contexts of the batch, increasing, (U,) int64, and ``grad_rows``
    :math:`\partial L/\partial\theta[\mathrm{rows}]`, (U, V) in the table's dtype (pass both to
    :meth:`fastlmrl.Adam.step`); rows of the table not in ``rows`` have zero gradient.
    ``grad_values`` :math:`\partial L/\partial V_i`, (N,) float64; ``log_probs``
    :math:`\log\pi(a_i|s_i)`, (N,) float64; ``entropy`` :math:`H(\pi(\cdot|s_i))` in nats, (N,)
    float64; ``token_loss`` :math:`\ell_i`, (N,) float64; ``policy_loss``,
    ``value_loss`` and ``mean_entropy``: the float terms of :class:`fastlmrl.A2CLossResult`.
    """

    loss: float  #: policy_loss + value_coef * value_loss - entropy_coef * sum_i w_i H_i
    rows: np.ndarray  #: the distinct contexts, increasing, (U,) int64
    grad_rows: np.ndarray  #: dL/dtable[rows], (U, V)
    grad_values: np.ndarray  #: dL/dvalues, (N,) float64
    log_probs: np.ndarray  #: (N,) float64
    entropy: np.ndarray  #: H(pi(.|s_i)) per token, (N,) float64
    token_loss: np.ndarray  #: -A_i log pi(a_i) + value_coef L^V_i - entropy_coef H_i, float64
    policy_loss: float  #: sum_i w_i (-A_i log pi(a_i))
    value_loss: float  #: sum_i w_i L^V_i
    mean_entropy: float  #: sum_i w_i H_i / sum_i w_i


def _prepare(table, contexts, tokens, weights):
    """(table, contexts, tokens, weights float64, n, buffers) validated and allocated."""
    table = check.table(table, "table", writeable=False)
    contexts = check.ids(contexts, "contexts")
    n = contexts.shape[0]
    tokens = check.ids(tokens, "tokens", n)
    contexts, tokens = check.same_index_dtype(contexts, tokens)
    if weights is None:
        w = np.full(n, 1.0 / n if n else 0.0)
    else:
        w = check.values(weights, "weights", n, np.float64)
    n_rows = min(n, table.shape[0])
    buffers = (
        np.empty(table.shape[0], dtype=np.int64),
        np.empty(n_rows, dtype=np.int64),
        np.zeros(1, dtype=np.int64),
    )
    return table, contexts, tokens, w, n, buffers


def _per_token(x, name, n):
    return check.values(x, name, n, np.float64)


def _outputs(table, n):
    grad = np.empty((min(n, table.shape[0]), table.shape[1]), dtype=table.dtype)
    return grad, np.empty(n), np.empty(n)


def _raise(status, table, contexts, tokens, extra, written=None):
    """The pre-contract spelling of :func:`_fail`, kept for the tests that call it: ``extra``
    maps statuses to ``(name, per-token array)``, ``written`` names arrays a kernel writes
    (``grad_rows``, ``stats``, ...).  Explained as the PPO kernel's status."""
    args = {"table": table, "contexts": contexts, "tokens": tokens}
    args.update(dict(extra.values()))
    args.update({("grad" if k == "grad_rows" else k): v for k, v in (written or {}).items()})
    raise_for_status(status, CONTRACT["ppo_loss_tabular"], args, public=_PUBLIC)


def reinforce_loss_tabular(
    table, contexts, tokens, returns, weights=None, baseline=None
) -> TabularReinforceLossResult:
    r"""REINFORCE with baseline (Williams 1992; Sutton & Barto 2018, §13.4, eq. 13.11) on a
    tabular policy: :math:`\ell_i = -(G_i - b_i)\log\pi(a_i|s_i)`, :math:`c_i = -w_i(G_i - b_i)`.

    ``returns`` :math:`G_i` (the return that followed the action at position i); ``baseline``:
    None (0), ``"mean"`` (the batch baseline :math:`b = \sum_i w_i G_i / \sum_i w_i` by
    ``math.fsum``, 0 when all weights are 0) or an (N,) array :math:`b_i` (e.g. learned values
    :math:`\hat v(s_i)`; for RLOO pass the advantages as ``returns`` and no baseline).
    See :func:`fastlmrl.reinforce_loss` for the same loss over gathered logits.
    """
    table, contexts, tokens, w, n, (index, rows, num_rows) = _prepare(
        table, contexts, tokens, weights
    )
    returns = _per_token(returns, "returns", n)
    if baseline is None:
        base = np.zeros(n)
    elif isinstance(baseline, str):
        if baseline != "mean":
            raise ValueError(f"baseline must be None, 'mean' or an array, got {baseline!r}")
        base = np.full(n, mean_baseline(returns, w))
    else:
        base = _per_token(baseline, "baseline", n)
    grad, token_loss, log_probs = _outputs(table, n)
    stats = np.zeros(1)
    args: tuple[Any, ...] = (
        *(table, contexts, tokens, returns, base, w, index, rows, num_rows, token_loss),
        *(log_probs, grad, stats, _free_cores.threads()),
    )
    status = _kernels.reinforce_loss_tabular(*args)
    if status:
        _fail(status, "reinforce_loss_tabular", args)
    u = int(num_rows[0])
    loss = float(_stats("reinforce_loss_tabular", stats).loss)
    return TabularReinforceLossResult(loss, rows[:u], grad[:u], log_probs, token_loss)


@check.renamed(
    ecosystem={
        "beta": "kl_coef",
        "epsilon": "clip_low",
        "cliprange": "clip_low",
        "epsilon_high": "clip_high",
        "importance_sampling_level": "ratio_level",
    }
)
def ppo_loss_tabular(
    table,
    contexts,
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
) -> TabularPPOLossResult:
    r"""PPO clipped surrogate (Schulman et al. 2017, eq. 7) on a tabular policy, with the options
    of :func:`fastlmrl.ppo_loss`: asymmetric clipping (DAPO's clip-higher), dual clip (Ye et al.
    2020), sequence-level ratios (GSPO, Zheng et al. 2025) and a KL penalty to a reference policy
    with the k1/k2/k3 estimators (GRPO, Shao et al. 2024, eq. 4).

    .. math::  \ell_i = -\min\big(\rho_i\hat A_i,\ \mathrm{clip}(\rho_i, 1-\epsilon_{low},
               1+\epsilon_{high})\hat A_i\big) + \beta D_i,\qquad
               \rho_i = \exp(\log\pi_\theta(a_i|s_i) - \log\pi_{old}(a_i|s_i))

    ``old_log_probs`` :math:`\log\pi_{old}(a_i|s_i)` (the behaviour policy at sampling time),
    ``advantages`` :math:`\hat A_i`, ``ref_log_probs`` :math:`\log\pi_{ref}(a_i|s_i)`.
    Per-token semantics, diagnostics and error rules are those of :func:`fastlmrl.ppo_loss`; the
    gradient comes back per distinct context (module docstring).
    TRL's spellings ``epsilon`` / ``cliprange``, ``epsilon_high``, ``beta`` and
    ``importance_sampling_level`` are accepted as in :func:`fastlmrl.ppo_loss`.
    """
    table, contexts, tokens, w, n, (index, rows, num_rows) = _prepare(
        table, contexts, tokens, weights
    )
    old = _per_token(old_log_probs, "old_log_probs", n)
    adv = _per_token(advantages, "advantages", n)
    clip_low = check.real(clip_low, "clip_low", 0.0, 1.0, high_open=True)
    clip_high = clip_low if clip_high is None else check.real(clip_high, "clip_high", 0.0)
    dual = 0.0 if dual_clip is None else check.real(dual_clip, "dual_clip", 1.0, low_open=True)
    kl_coef = check.real(kl_coef, "kl_coef", 0.0)
    check.choice(kl_estimator, "kl_estimator", KL_ESTIMATORS)
    check.choice(ratio_level, "ratio_level", ("token", "sequence"))
    if ref_log_probs is None:
        if kl_coef != 0.0:
            raise ValueError("kl_coef > 0 needs ref_log_probs")
        ref = np.empty(0)
    else:
        ref = _per_token(ref_log_probs, "ref_log_probs", n)
    seq = ratio_level == "sequence"
    offs = _offsets(sequence_offsets, n) if seq else np.zeros(1, dtype=np.int64)
    grad, token_loss, log_probs = _outputs(table, n)
    ratios = np.empty(n)
    stats = np.zeros(7)
    args: tuple[Any, ...] = (
        *(table, contexts, tokens, old, adv, w, ref, offs, clip_low, clip_high, dual, kl_coef),
        *(KL_ESTIMATORS[kl_estimator], int(seq), index, rows, num_rows, token_loss, log_probs),
        *(ratios, grad, stats, _free_cores.threads()),
    )
    status = _kernels.ppo_loss_tabular(*args)
    if status:
        _fail(status, "ppo_loss_tabular", args)
    u = int(num_rows[0])
    st = _stats("ppo_loss_tabular", stats)
    return TabularPPOLossResult(
        float(st.loss),
        rows[:u],
        grad[:u],
        log_probs,
        token_loss,
        ratios,
        float(st.pg_loss),
        float(st.kl_loss),
        float(st.clip_fraction),
        float(st.dual_clip_fraction),
        float(st.approx_kl_k1),
        float(st.approx_kl_k3),
    )


def token_log_probs_tabular(table, contexts, tokens) -> np.ndarray:
    r""":math:`\log\pi(a_i|s_i)` = ``table[contexts[i], tokens[i]] - lse(table[contexts[i]])``,
    (N,) float64, with the row statistics of the losses above (one per distinct context), so it
    equals their ``log_probs`` bit for bit (e.g. reference log-probs for a KL term that is
    exactly 0 when the policy equals the reference)."""
    table, contexts, tokens, _, n, (index, rows, num_rows) = _prepare(table, contexts, tokens, None)
    log_probs = np.empty(n)
    threads = _free_cores.threads()
    args: tuple[Any, ...] = (table, contexts, tokens, index, rows, num_rows, log_probs, threads)
    status = _kernels.token_log_probs_tabular(*args)
    if status:
        _fail(status, "token_log_probs_tabular", args)
    return log_probs


@check.renamed(deprecated={"estimator": "kl_estimator"})
def kl_penalty_loss_tabular(
    table, contexts, tokens, ref_log_probs, weights=None, kl_estimator="k3"
) -> TabularKLPenaltyResult:
    r"""KL penalty to a reference policy as a loss term on a tabular policy (Shao et al. 2024,
    eq. 4; Schulman 2020): :math:`L = \sum_i w_i D_i` with the k1, k2 or k3 estimator of
    :math:`\mathrm{KL}(\pi_\theta(\cdot|s_i)\,\|\,\pi_{ref}(\cdot|s_i))` at the sampled token
    (formulas in :func:`fastlmrl.kl_penalty_loss`; ``kl_estimator`` was called ``estimator``, a
    deprecated keyword now)."""
    table, contexts, tokens, w, n, (index, rows, num_rows) = _prepare(
        table, contexts, tokens, weights
    )
    ref = _per_token(ref_log_probs, "ref_log_probs", n)
    check.choice(kl_estimator, "kl_estimator", KL_ESTIMATORS)
    grad, token_kl, log_probs = _outputs(table, n)
    stats = np.zeros(1)
    args: tuple[Any, ...] = (
        *(table, contexts, tokens, ref, w, KL_ESTIMATORS[kl_estimator], index, rows, num_rows),
        *(token_kl, log_probs, grad, stats, _free_cores.threads()),
    )
    status = _kernels.kl_penalty_loss_tabular(*args)
    if status:
        _fail(status, "kl_penalty_loss_tabular", args)
    u = int(num_rows[0])
    loss = float(_stats("kl_penalty_loss_tabular", stats).loss)
    return TabularKLPenaltyResult(loss, rows[:u], grad[:u], log_probs, token_kl)


def a2c_loss_tabular(
    table,
    contexts,
    tokens,
    advantages,
    values,
    returns,
    weights=None,
    value_coef=0.5,
    entropy_coef=0.01,
    old_values=None,
    value_clip=None,
) -> TabularA2CLossResult:
    r"""Advantage actor-critic loss (Mnih et al. 2016) on a tabular policy: the loss of
    :func:`fastlmrl.a2c_loss`,

    .. math::  \ell_i = -\hat A_i\log\pi(a_i|s_i) + c_v L^V_i - c_e H(\pi(\cdot|s_i)),

    with the gradient per distinct context: the policy terms as in the module docstring plus the
    entropy bonus :math:`E_s\,\partial H_s/\partial\theta[s]`, :math:`E_s = c_e\sum_{i: s_i = s}
    w_i`, :math:`\partial H/\partial z_j = -p_j(\log p_j + H)`.  ``values`` :math:`V(s_i)` receive
    ``grad_values`` per token (sum them per context for a value table); ``returns`` are the
    targets; ``value_clip`` with ``old_values`` clips the value loss as in
    :func:`fastlmrl.a2c_loss`.
    """
    table, contexts, tokens, w, n, (index, rows, num_rows) = _prepare(
        table, contexts, tokens, weights
    )
    adv = _per_token(advantages, "advantages", n)
    vals = _per_token(values, "values", n)
    rets = _per_token(returns, "returns", n)
    value_coef, entropy_coef, clip, old = a2c_arguments(
        value_coef, entropy_coef, value_clip, old_values, vals, np.float64
    )
    grad, token_loss, log_probs = _outputs(table, n)
    entropies = np.empty(n)
    grad_values = np.empty(n)
    stats = np.zeros(4)
    args: tuple[Any, ...] = (
        *(table, contexts, tokens, adv, vals, rets, old, w, clip, value_coef, entropy_coef),
        *(index, rows, num_rows, token_loss, log_probs, entropies, grad, grad_values, stats),
        _free_cores.threads(),
    )
    status = _kernels.a2c_loss_tabular(*args)
    if status:
        _fail(status, "a2c_loss_tabular", args)
    u = int(num_rows[0])
    st = _stats("a2c_loss_tabular", stats)
    return TabularA2CLossResult(
        float(st.loss),
        rows[:u],
        grad[:u],
        grad_values,
        log_probs,
        entropies,
        token_loss,
        float(st.policy_loss),
        float(st.value_loss),
        float(st.mean_entropy),
    )
