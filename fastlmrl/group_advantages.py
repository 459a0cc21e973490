r"""Group-relative methods for LM RL: GRPO and RLOO advantages, the loss normalisations of GRPO and
its variants as per-token weights, and GSPO's sequence-level importance ratio.

Groups
------
``rewards`` (B,) holds one scalar reward per sampled sequence.  Groups (the K completions sampled
for one prompt) are given either by ``group_size=K`` (rows ``[g*K, (g+1)*K)`` form group ``g``; B
must be a multiple of K — the (G, K) layout flattened) or by ``group_ids`` (B,) integer labels (any
values, any order, unequal group sizes allowed).  Group sums run in index order in float64.

Advantages
----------
* GRPO (Shao et al. 2024, "DeepSeekMath", §4.1.2 outcome supervision):
  :math:`\hat A_i = (r_i - \mathrm{mean}_{\text{group}(i)}) / (\mathrm{std} + \varepsilon)`.
  The paper does not say which standard deviation; TRL's ``GRPOTrainer`` and verl use
  ``torch.std`` (the *sample* std, ddof = 1) and add ε to it (TRL: ε = 1e-4), which is the default
  here (``ddof`` selects 0 or 1).  ``scale``: ``"group"`` (per-group std, GRPO), ``"batch"`` (the
  std of all B rewards, TRL's ``scale_rewards="batch"``) or ``"none"`` (no division: Dr. GRPO, Liu
  et al. 2025, "Understanding R1-Zero-Like Training").  A group with ≤ ddof members has std 0
  (its single member gets advantage 0).
* RLOO (Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization ...", eq. 7;
  Kool et al. 2019): :math:`\hat A_i = r_i - \frac{1}{K_g - 1}\sum_{j \ne i} r_j`, computed as
  :math:`r_i - (S_g - r_i)/(K_g - 1)` with :math:`S_g` the group sum (as TRL's RLOO).  Every
  group needs at least two members.  For K = 2 it is the pairwise difference :math:`r_1 - r_2`.

Broadcast a sequence advantage over its tokens with ``adv[:, None] * mask``.

Loss normalisation
------------------
:func:`loss_weights` turns a (B, T) token mask into weights ``w`` such that
``loss = sum(w * per_token_loss)`` is each method's aggregation.

Sequence-level ratio (GSPO)
---------------------------
:func:`sequence_importance_ratio`: Zheng et al. 2025, "Group Sequence Policy Optimization", eq. 7:
:math:`s_i = \exp\big(\frac{1}{|y_i|}\sum_t (\log\pi(y_{i,t}) - \log\pi_{old}(y_{i,t}))\big)`
over the
active tokens, with its gradient :math:`\partial s_i/\partial\log\pi(y_{i,t}) = s_i/|y_i|`.  The
token-level ratio is :math:`\exp(\log\pi - \log\pi_{old})` per token (gradient: itself).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import _backend
from . import _validation as check
from ._contract import Arg, Kernel, Kind, Topic, raise_for_status
from ._status import Status

if TYPE_CHECKING:  # what readers and tools follow: the reference kernels
    from ._python import group_advantages as _kernels
else:  # the active backend's kernels, rebound by set_backend (fastlmrl._backend.bind)
    _kernels = _backend.bind(__name__, "_kernels")

__all__ = ["grpo_advantages", "loss_weights", "rloo_advantages", "sequence_importance_ratio"]


# ----------------------------------------------------------------------------- the contract
def _masked(name):
    """The message of a non-finite entry of ``name`` on an active token (``mask`` non-zero)."""

    def explain(args, shown):
        return check.not_finite(shown(name), args[name], args["mask"])

    return explain


def _explain_group_size(args, shown):
    """A group of one sample (RLOO needs two).  ``group_ids`` in ``args`` may be the caller's own
    labels (the kernel got them as dense ids, same groups) or None when the caller gave
    ``group_size`` (every group has ``group_size`` samples)."""
    count = np.asarray(args["group_count"])
    labels = args["group_ids"]
    if labels is None:
        size = int(count[np.flatnonzero(count == 1)[0]])
        return (
            f"group_size must be >= 2 for RLOO (it needs at least 2 samples per group), got {size}"
        )
    labels = np.asarray(labels).reshape(-1)
    _, dense, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    g = int(np.flatnonzero(sizes == 1)[0])
    i = int(np.flatnonzero(dense.reshape(-1) == g)[0])
    return (
        f"{shown('group_ids')}[{i}] = {labels[i]}: RLOO needs at least 2 samples per group; "
        f"the group of rewards[{i}] has 1"
    )


_REWARDS = Arg("rewards", Kind.REALS, status=Status.BAD_REWARDS)
_BATCH = (Status.BAD_SHAPES, Status.OVERLAPPING_ARRAYS)
_OPTION = Status.BAD_OPTION
_COUNT = Arg("group_count", Kind.ARRAY, written=True, ctype="int64_t[::1]")
_ADVANTAGES_OUT = Arg("advantages_out", Kind.REALS, written=True)
_MASK = Arg("mask", Kind.ARRAY, ctype="unsigned char[:, ::1]")


def _statistic(name):
    return Arg(name, Kind.ARRAY, written=True, ctype="double[::1]")


def _positive_real(name):
    return Arg(name, Kind.REAL, status=_OPTION, domain="(0, inf)")


#: The kernels of this topic, in every backend
#: (``fastlmrl._python/_numba/_cython.group_advantages``); tests/test_contract.py checks each
#: implementation against it.  ``group_ids`` are dense ids in [0, G) (G: the length of the group
#: statistics, which the kernels fill: workspaces that also report the per-group values); option
#: codes: ``scale`` 0 none / 1 group / 2 batch, ``mode`` 0 grpo / 1 bnpo / 2 dr_grpo / 3 dapo.
CONTRACT = Topic(
    "group_advantages",
    (
        Kernel(
            "grpo_advantages",
            (
                _REWARDS,
                Arg("group_ids", Kind.IDS, status=Status.BAD_GROUP_IDS, bound=("group_mean", 0)),
                Arg("scale", Kind.SCALAR, status=_OPTION, domain="[0, 2]", ctype="int64_t"),
                Arg("eps", Kind.REAL, status=_OPTION, domain="(0, inf)"),
                Arg("ddof", Kind.SCALAR, status=_OPTION, domain="[0, inf)", ctype="int64_t"),
                _statistic("group_mean"),
                _statistic("group_std"),
                _COUNT,
                _ADVANTAGES_OUT,
            ),
            _BATCH,
        ),
        Kernel(
            "loss_weights",
            (
                _MASK,
                Arg("mode", Kind.SCALAR, status=_OPTION, domain="[0, 3]", ctype="int64_t"),
                _positive_real("num_sequences"),
                _positive_real("num_tokens"),
                _positive_real("max_length"),
                Arg("out", Kind.TABLE, written=True),
            ),
            _BATCH,
        ),
        Kernel(
            "rloo_advantages",
            (
                _REWARDS,
                Arg(
                    "group_ids",
                    Kind.IDS,
                    status=Status.BAD_GROUP_IDS,
                    bound=("group_sum", 0),
                    other_statuses=(Status.BAD_GROUP_SIZE,),
                ),
                _statistic("group_sum"),
                _COUNT,
                _ADVANTAGES_OUT,
            ),
            _BATCH,
            messages={Status.BAD_GROUP_SIZE: _explain_group_size},
        ),
        Kernel(
            "sequence_importance_ratio",
            (
                Arg("log_probs", Kind.TABLE, status=Status.BAD_LOG_PROBS),
                Arg("old_log_probs", Kind.TABLE, status=Status.BAD_OLD_LOG_PROBS),
                _MASK,
                Arg("ratio_out", Kind.REALS, written=True),
                Arg("grad_out", Kind.TABLE, written=True),
            ),
            _BATCH,
            messages={
                Status.BAD_LOG_PROBS: _masked("log_probs"),
                Status.BAD_OLD_LOG_PROBS: _masked("old_log_probs"),
            },
        ),
    ),
)


def _raise(status, kernel, call, **caller):
    """The error of a non-zero kernel status; ``call``: the kernel's arguments in order,
    ``caller``: arguments to show as the caller gave them (see _explain_group_size)."""
    args = CONTRACT[kernel].bind(*call)
    args.update(caller)
    raise_for_status(status, CONTRACT[kernel], args)


SCALES = {"none": 0, "group": 1, "batch": 2}
MODES = {"grpo": 0, "bnpo": 1, "dr_grpo": 2, "dapo": 3}


def _choice(x, name, options):
    if not isinstance(x, str):
        raise TypeError(f"{name} must be a str, got {type(x).__name__}")
    key = x.strip().lower()
    if key not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}; got {x!r}")
    return options[key]


def _groups(rewards, group_size, group_ids):
    """Validated rewards (B,) and dense group ids in [0, G); returns (rewards, ids, G)."""
    r = check.real_array(rewards, "rewards", 1)
    r = check.as_dtype(r, check.work_dtype(r))
    n = r.shape[0]
    if (group_size is None) == (group_ids is None):
        raise ValueError("give exactly one of group_size and group_ids")
    if group_size is not None:
        k = check.positive_int(group_size, "group_size")
        if n % k:
            raise ValueError(f"rewards has length {n}, not a multiple of group_size={k}")
        ids = np.arange(n, dtype=np.int64) // k
        return r, ids, n // k
    ids = check.ids(group_ids, "group_ids", n)
    uniq, dense = np.unique(ids, return_inverse=True)
    return r, np.ascontiguousarray(dense.reshape(-1).astype(ids.dtype)), uniq.shape[0]


def grpo_advantages(
    rewards,
    group_size=None,
    group_ids=None,
    *,
    scale: str = "group",
    eps: float = 1e-4,
    ddof: int = 1,
) -> np.ndarray:
    r"""GRPO advantages :math:`(r_i - \mu_g) / (\sigma + \varepsilon)` (Shao et al. 2024).

    Parameters
    ----------
    rewards : (B,) real array, finite
    group_size : K (B a multiple of K), or
    group_ids : (B,) integer group labels
    scale : ``"group"`` (σ = std of the group), ``"batch"`` (σ = std of all B rewards) or
        ``"none"`` (no division; Dr. GRPO)
    eps : > 0, added to σ (TRL's 1e-4 by default; unused with ``scale="none"``)
    ddof : 1 (sample std, as ``torch.std`` in TRL / verl; default) or 0 (population std)

    Returns
    -------
    (B,) advantages (float32 for float32 rewards, else float64).
    """
    code = _choice(scale, "scale", SCALES)
    eps = check.real(eps, "eps", 0.0, None, low_open=True)
    if isinstance(ddof, (bool, np.bool_)) or not isinstance(ddof, (int, np.integer)):
        raise TypeError(f"ddof must be an int, got {type(ddof).__name__}")
    if ddof not in (0, 1):
        raise ValueError(f"ddof must be 0 or 1, got {ddof}")
    r, ids, n_groups = _groups(rewards, group_size, group_ids)
    mean = np.empty(n_groups, dtype=np.float64)
    std = np.empty(n_groups, dtype=np.float64)
    count = np.empty(n_groups, dtype=np.int64)
    out = np.empty(r.shape[0], dtype=r.dtype)
    call = (r, ids, code, eps, int(ddof), mean, std, count, out)
    status = _kernels.grpo_advantages(*call)
    if status:
        _raise(status, "grpo_advantages", call)
    return out


def rloo_advantages(rewards, group_size=None, group_ids=None) -> np.ndarray:
    r"""RLOO advantages :math:`r_i - \frac{1}{K-1}\sum_{j\ne i} r_j` (Ahmadian et al. 2024).

    Groups as in :func:`grpo_advantages`; every group needs ≥ 2 members.  Returns (B,).
    """
    r, ids, n_groups = _groups(rewards, group_size, group_ids)
    total = np.empty(n_groups, dtype=np.float64)
    count = np.empty(n_groups, dtype=np.int64)
    out = np.empty(r.shape[0], dtype=r.dtype)
    call = (r, ids, total, count, out)
    status = _kernels.rloo_advantages(*call)
    if status:
        _raise(status, "rloo_advantages", call, group_ids=group_ids)
    return out


def _count(x, name):
    """None, or an integer count >= 1 (as a float for the kernel)."""
    if x is None:
        return None
    return float(check.positive_int(x, name))


def loss_weights(
    mask, mode: str, *, num_sequences=None, num_tokens=None, max_length=None, dtype=np.float64
) -> np.ndarray:
    r"""Per-token loss weights ``w`` (B, T) so that ``loss = sum(w * per_token_loss)`` aggregates
    as:

    ``"grpo"``
        per-sequence token mean, then mean over sequences (Shao et al. 2024, eq. 3):
        :math:`w_{b,t} = 1 / (N_{seq}\,|o_b|)`; a row without active tokens contributes 0 but is
        counted in :math:`N_{seq}` (as TRL's ``clamp(min=1)``).
    ``"bnpo"``
        mean over the active tokens of this batch (TRL's ``loss_type="bnpo"``):
        :math:`w = 1 / \sum_b |o_b|`.
    ``"dr_grpo"``
        constant normaliser (Liu et al. 2025, Dr. GRPO: "MAX_TOKENS"):
        :math:`w = 1 / (N_{seq}\,T_{max})`.
    ``"dapo"``
        token-level mean over the *global* batch (Yu et al. 2025, DAPO, eq. 8 / §3.3):
        :math:`w = 1/N_{tok}`, with :math:`N_{tok}` the active tokens of all micro-batches /
        devices of the optimisation step (``num_tokens``; defaults to this batch's count, i.e.
        bnpo).

    Parameters
    ----------
    mask : (B, T) bool, active (completion) tokens
    mode : one of the above
    num_sequences : N_seq for grpo / dr_grpo (default B)
    num_tokens : N_tok for dapo (default: the active tokens in ``mask``, at least 1)
    max_length : T_max for dr_grpo (default T, the padded width)
    dtype : float32 or float64 (default) output

    Inactive tokens get weight 0.  Each weight is computed in float64 (``1.0 / denominator``) and
    rounded once.
    """
    code = _choice(mode, "mode", MODES)
    dtype = np.dtype(dtype)
    if dtype not in check.FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"mask must be 2-dimensional, got shape {arr.shape}")
    m = check.mask(arr, arr.shape)
    n_rows, n_steps = m.shape
    n_seq = _count(num_sequences, "num_sequences")
    n_tok = _count(num_tokens, "num_tokens")
    t_max = _count(max_length, "max_length")
    n_seq = float(max(n_rows, 1)) if n_seq is None else n_seq
    n_tok = float(max(int(np.count_nonzero(m)), 1)) if n_tok is None else n_tok
    t_max = float(max(n_steps, 1)) if t_max is None else t_max
    out = np.empty(m.shape, dtype=dtype)
    call = (m, code, n_seq, n_tok, t_max, out)
    status = _kernels.loss_weights(*call)
    if status:
        _raise(status, "loss_weights", call)
    return out


@check.renamed(deprecated={"logp": "log_probs", "old_logp": "old_log_probs"})
def sequence_importance_ratio(log_probs, old_log_probs, mask=None):
    r"""GSPO's sequence-level importance ratio and its gradient (Zheng et al. 2025, eq. 7).

    .. math:: s_b = \exp\Big(\frac{1}{|y_b|}\sum_{t\,\text{active}}
              \big(\log\pi(y_{b,t}) - \log\pi_{old}(y_{b,t})\big)\Big),\qquad
              \frac{\partial s_b}{\partial \log\pi(y_{b,t})} = \frac{s_b}{|y_b|}\ \text{(active t)}

    Parameters
    ----------
    log_probs, old_log_probs : (B, T) real, log-probabilities of the sampled tokens under the
        current and the sampling policy (finite where active; deprecated keywords: ``logp``,
        ``old_logp``)
    mask : (B, T) bool or None (all active)

    Returns
    -------
    (ratio (B,), grad (B, T)).  A row without active tokens has ratio 1 and zero gradient.
    The sum runs in t order in float64; ``exp`` is the C library's.
    """
    lp = check.real_array(log_probs, "log_probs", 2)
    old = check.real_array(old_log_probs, "old_log_probs", 2, lp.shape)
    dtype = check.work_dtype(lp, old)
    m = check.mask(mask, lp.shape)
    lp = check.as_dtype(lp, dtype)
    old = check.as_dtype(old, dtype)
    ratio = np.empty(lp.shape[0], dtype=dtype)
    grad = np.empty(lp.shape, dtype=dtype)
    call = (lp, old, m, ratio, grad)
    status = _kernels.sequence_importance_ratio(*call)
    if status:
        _raise(status, "sequence_importance_ratio", call)
    return ratio, grad
