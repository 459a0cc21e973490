r"""KL divergence to a reference policy: the k1 / k2 / k3 estimators, their gradients, KL-penalised
rewards, and the adaptive KL coefficient.

For a sampled token :math:`a \sim \pi(\cdot|s)` write the log-ratio
:math:`r = \log\pi_{\text{ref}}(a|s) - \log\pi(a|s)` (``ref_log_probs - log_probs``).  J. Schulman,
"Approximating KL Divergence" (2020, http://joschu.net/blog/kl-approx.html) gives three
single-sample estimators of :math:`\mathrm{KL}(\pi\,\|\,\pi_{\text{ref}})`:

============  =======================================  ====================================
estimator     value                                    d value / d log π(a)
============  =======================================  ====================================
``"k1"``      :math:`-r`  (unbiased, high variance,    :math:`1`
              can be negative)
``"k2"``      :math:`r^2/2` (biased, low variance)     :math:`-r`
``"k3"``      :math:`(e^{r} - 1) - r` (unbiased,       :math:`1 - e^{r}`
              always ≥ 0; GRPO's estimator)
============  =======================================  ====================================

The gradient is that of the per-token estimate with respect to the log-probability of the sampled
token, the sample held fixed — what autograd gives for a loss term ``kl_coef * k(log_probs)``
(GRPO, Shao et al. 2024, eq. 4 uses k3 as a loss term); chain it through the logits with
:mod:`fastlmrl.log_probs`.  ``e^r - 1`` is evaluated with ``expm1`` (same formula, no cancellation
for small ``r``), so k3 ≥ 0 holds exactly in floating point.

Two uses:

* **loss term** (GRPO style): :func:`kl_penalty` gives per-token values and gradients; weight them
  with :func:`fastlmrl.loss_weights` and add ``kl_coef * sum(w * kl)`` to the loss.
* **reward shaping** (PPO-RLHF / RLOO style, Ziegler et al. 2019; Stiennon et al. 2020):
  :func:`kl_penalized_rewards` gives :math:`r_t \leftarrow r_t - \beta\,\mathrm{kl}_t` (no gradient
  flows through the reward).

:class:`AdaptiveKLController` adapts β toward a target KL (Ziegler et al. 2019, "Fine-Tuning
Language Models from Human Preferences", §2.2).

Numerics: float64 arithmetic, each output rounded once; ``log_probs`` / ``ref_log_probs`` /
``rewards`` must be finite on unmasked entries (masked entries are never read and output 0).
``exp`` / ``expm1`` come from the platform's C math library in every backend (glibc here: results
agree bit for bit).  Log-probabilities are not required to be ≤ 0.

Names: ``log_probs``, ``ref_log_probs``, ``kl_coef`` (β) and ``kl_estimator`` as in the rest of
fastlmrl; the earlier spellings ``logp``, ``ref_logp`` and ``estimator`` are deprecated keyword
aliases, TRL's ``beta`` is accepted for ``kl_coef``.  ``kl_estimator`` defaults to ``"k3"`` for the
loss term (GRPO) and to ``"k1"`` for reward shaping (PPO-RLHF, TRL's ``PPOConfig``).
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING

import numpy as np

from . import _backend
from . import _validation as check
from ._contract import Arg, Kernel, Kind, Topic
from ._status import Status

if TYPE_CHECKING:  # what readers and tools follow: the reference kernels
    from ._python import kl_divergence as _kernels
else:  # the active backend's kernels, rebound by set_backend (fastlmrl._backend.bind)
    _kernels = _backend.bind(__name__, "_kernels")

__all__ = ["AdaptiveKLController", "FixedKLController", "kl_penalized_rewards", "kl_penalty"]

ESTIMATORS = {"k1": 1, "k2": 2, "k3": 3}


# ----------------------------------------------------------------------------- the contract
def _masked(name):
    """The message of a non-finite entry of ``name`` that the kernel reads (``mask`` non-zero)."""

    def explain(args, shown):
        return check.not_finite(shown(name), args[name], args["mask"])

    return explain


_LOG_PROBS = Arg("log_probs", Kind.REALS, status=Status.BAD_LOG_PROBS)
_REF_LOG_PROBS = Arg("ref_log_probs", Kind.REALS, status=Status.BAD_REF_LOG_PROBS)
_MASK = Arg("mask", Kind.FLAGS)
_ESTIMATOR = Arg(
    "estimator", Kind.SCALAR, status=Status.BAD_ESTIMATOR, domain="{1, 2, 3}", ctype="int64_t"
)
_BATCH = (Status.BAD_SHAPES, Status.OVERLAPPING_ARRAYS)
_MESSAGES = {
    Status.BAD_REWARDS: _masked("rewards"),
    Status.BAD_LOG_PROBS: _masked("log_probs"),
    Status.BAD_REF_LOG_PROBS: _masked("ref_log_probs"),
}

#: The kernels of this topic, in every backend (``fastlmrl._python/_numba/_cython.kl_divergence``);
#: tests/test_contract.py checks each implementation against it.  Every array is flat (N,) (the
#: public functions ravel any shape); ``estimator`` is 1, 2 or 3 (k1, k2, k3); the kernels read
#: only the entries where ``mask`` is non-zero.
CONTRACT = Topic(
    "kl_divergence",
    (
        Kernel(
            "kl_penalized_rewards",
            (
                Arg("rewards", Kind.REALS, status=Status.BAD_REWARDS),
                _LOG_PROBS,
                _REF_LOG_PROBS,
                _MASK,
                _ESTIMATOR,
                Arg("beta", Kind.REAL),
                Arg("rewards_out", Kind.REALS, written=True),
                Arg("kl_out", Kind.REALS, written=True),
            ),
            _BATCH,
            messages=_MESSAGES,
        ),
        Kernel(
            "kl_penalty",
            (
                _LOG_PROBS,
                _REF_LOG_PROBS,
                _MASK,
                _ESTIMATOR,
                Arg("kl_out", Kind.REALS, written=True),
                Arg("grad_out", Kind.REALS, written=True),
            ),
            _BATCH,
            messages=_MESSAGES,
        ),
    ),
)
#: the names the errors print (the public functions pass flattened arrays)
_SHOWN = {name: f"{name} (flattened)" for name in ("rewards", "log_probs", "ref_log_probs", "mask")}


def _estimator(estimator) -> int:
    if not isinstance(estimator, str):
        raise TypeError(f"kl_estimator must be a str, got {type(estimator).__name__}")
    key = estimator.strip().lower()
    if key not in ESTIMATORS:
        raise ValueError(f"kl_estimator must be one of 'k1', 'k2', 'k3'; got {estimator!r}")
    return ESTIMATORS[key]


def _tokens(logp, ref_logp, mask, rewards=None, with_rewards=False):
    lp = check.real_array(logp, "log_probs")
    shape = lp.shape
    ref = check.real_array(ref_logp, "ref_log_probs", shape=shape)
    rw = check.real_array(rewards, "rewards", shape=shape) if with_rewards else None
    dtype = check.work_dtype(lp, ref, rw)
    m = check.mask(mask, shape).ravel()
    lp = check.as_dtype(lp, dtype).ravel()
    ref = check.as_dtype(ref, dtype).ravel()
    if rw is not None:
        rw = check.as_dtype(rw, dtype).ravel()
    return lp, ref, rw, m, shape, dtype


def _raise(status, kernel, call):
    """The error of a non-zero kernel status; ``call``: the kernel's arguments in order."""
    CONTRACT[kernel].raise_for_call(status, call, _SHOWN)


@check.renamed(
    deprecated={"logp": "log_probs", "ref_logp": "ref_log_probs", "estimator": "kl_estimator"}
)
def kl_penalty(log_probs, ref_log_probs, mask=None, kl_estimator: str = "k3"):
    r"""Per-token KL estimates and their gradients with respect to ``log_probs``.

    Parameters
    ----------
    log_probs : real array (any shape, e.g. (B, T)): :math:`\log\pi(a_t|s_t)` of the sampled
        tokens (deprecated keyword: ``logp``)
    ref_log_probs : same shape: :math:`\log\pi_{\text{ref}}(a_t|s_t)` (deprecated: ``ref_logp``)
    mask : bool array of that shape or None (all valid); masked entries output 0 and are not read
    kl_estimator : ``"k1"`` (:math:`-r`), ``"k2"`` (:math:`r^2/2`) or ``"k3"`` (:math:`e^r-1-r`),
        with :math:`r` = ``ref_log_probs - log_probs`` (see the module docstring; deprecated
        keyword: ``estimator``)

    Returns
    -------
    (kl, grad), both of ``log_probs``' shape; ``grad`` = d kl / d log_probs (1, :math:`-r`,
    :math:`1 - e^r` respectively; 0 where masked).
    """
    code = _estimator(kl_estimator)
    lp, ref, _, m, shape, dtype = _tokens(log_probs, ref_log_probs, mask)
    kl = np.empty(lp.shape[0], dtype=dtype)
    grad = np.empty(lp.shape[0], dtype=dtype)
    call = (lp, ref, m, code, kl, grad)
    status = _kernels.kl_penalty(*call)
    if status:
        _raise(status, "kl_penalty", call)
    return kl.reshape(shape), grad.reshape(shape)


@check.renamed(
    deprecated={"logp": "log_probs", "ref_logp": "ref_log_probs", "estimator": "kl_estimator"},
    ecosystem={"beta": "kl_coef"},
)
def kl_penalized_rewards(
    rewards, log_probs, ref_log_probs, mask=None, *, kl_coef: float, kl_estimator: str = "k1"
):
    r"""KL-shaped per-token rewards :math:`r_t - \beta\,\mathrm{kl}_t` (Ziegler et al. 2019, eq. 2;
    Stiennon et al. 2020; Ahmadian et al. 2024 for RLOO).

    ``rewards[b, t]`` is the environment/reward-model reward of token t (typically the sequence
    score on the last valid token, 0 elsewhere); the result feeds :func:`fastlmrl.gae` or
    :func:`fastlmrl.discounted_returns`.  ``kl_estimator`` defaults to ``"k1"``
    (``log π - log π_ref``, the penalty of Ziegler et al. and TRL's PPO default).
    ``kl_coef`` = β ≥ 0 (TRL's ``beta`` is accepted too; ``logp``, ``ref_logp`` and ``estimator``
    are deprecated keywords).

    Returns
    -------
    (shaped_rewards, kl), both of ``rewards``' shape; masked entries are 0.
    """
    beta = check.real(kl_coef, "kl_coef", 0.0, None)
    code = _estimator(kl_estimator)
    lp, ref, rw, m, shape, dtype = _tokens(
        log_probs, ref_log_probs, mask, rewards, with_rewards=True
    )
    out = np.empty(lp.shape[0], dtype=dtype)
    kl = np.empty(lp.shape[0], dtype=dtype)
    call = (rw, lp, ref, m, code, beta, out, kl)
    status = _kernels.kl_penalized_rewards(*call)
    if status:
        _raise(status, "kl_penalized_rewards", call)
    return out.reshape(shape), kl.reshape(shape)


class FixedKLController:
    """A constant KL coefficient with the same interface as :class:`AdaptiveKLController`."""

    def __init__(self, kl_coef: float):
        self.value = check.real(kl_coef, "kl_coef", 0.0, None)

    def update(self, current_kl: float, n_steps: int) -> float:
        check.real(current_kl, "current_kl")
        check.positive_int(n_steps, "n_steps", 0)
        return self.value


class AdaptiveKLController:
    r"""Adaptive KL coefficient (Ziegler et al. 2019, §2.2; as in TRL's ``AdaptiveKLController``).

    .. math:: e_t = \mathrm{clip}\!\left(\frac{\mathrm{KL}_t}{\mathrm{KL}_{\text{target}}} - 1,
              -0.2, 0.2\right),\qquad \beta_{t+1} = \beta_t\,(1 + K_\beta\,e_t),\qquad
              K_\beta = \frac{n\_steps}{\text{horizon}}

    ``current_kl`` is the measured KL of the batch (e.g. the mean over sequences of the summed
    per-token estimates), ``n_steps`` the number of samples (or steps) it covers.  The paper uses
    :math:`K_\beta = 0.1`; here it scales with ``n_steps / horizon`` (keep it below 5, or a
    clipped error of -0.2 would make β negative; nothing clamps it, as in the paper and TRL).

    Parameters
    ----------
    init_kl_coef : initial β ≥ 0
    target : target KL > 0
    horizon : > 0 (in the units of ``n_steps``)
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        self.value = check.real(init_kl_coef, "init_kl_coef", 0.0, None)
        self.target = check.real(target, "target", 0.0, None, low_open=True)
        self.horizon = check.real(horizon, "horizon", 0.0, None, low_open=True)

    def update(self, current_kl: float, n_steps: int) -> float:
        """Apply one update; returns the new β (also stored in ``self.value``)."""
        current_kl = check.real(current_kl, "current_kl")
        if isinstance(n_steps, (bool, np.bool_)) or not isinstance(n_steps, numbers.Integral):
            raise TypeError(f"n_steps must be an int, got {type(n_steps).__name__}")
        if n_steps < 0:
            raise ValueError(f"n_steps must be >= 0, got {n_steps}")
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value = self.value * (1.0 + error * (int(n_steps) / self.horizon))
        return self.value

    def state(self) -> dict:
        """Checkpointable state (restore with ``AdaptiveKLController(**state)``)."""
        return {"init_kl_coef": self.value, "target": self.target, "horizon": self.horizon}
