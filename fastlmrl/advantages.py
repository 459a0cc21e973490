r"""Returns and advantages over (B, T) batches of sequences: discounted returns, λ-returns, GAE,
masked advantage whitening.

Layout and time-index convention
--------------------------------
Every per-step array is (B, T): ``B`` sequences (rows) of at most ``T`` steps, padded.

* ``rewards[b, t]`` is the reward received **after** the action at step ``t`` (Sutton & Barto's
  :math:`R_{t+1}`; for a language model, the reward attributed to token ``t``, e.g. a final score on
  the last token and per-token penalties elsewhere).
* ``values[b, t]`` is :math:`V(s_t)`, the value of the state in which action ``t`` was taken.
* ``mask[b, t]`` is True for a valid step.  Any pattern is allowed: the valid steps of a row, in
  increasing ``t``, form that row's episode :math:`t_0 < t_1 < \dots < t_{n-1}`, the state after
  step :math:`t_k` is the state of step :math:`t_{k+1}`, and padding steps in between (e.g. tool
  output in a multi-turn completion) are skipped: they are not discounted over, their rewards and
  values are never read (they may hold anything, NaN included) and their outputs are 0.  ``None``
  means every step is valid.  One episode per row (pack several episodes as several rows).
* After the last valid step of row ``b`` the episode ends (Gymnasium's convention, termination and
  truncation separate):

  - ``terminated[b]``: it reached a terminal state (e.g. an EOS token): :math:`V(s_{T_b}) = 0`;
  - ``truncated[b]`` (and not terminated): it was cut off (length / time limit, or the rollout
    stopped): bootstrap from ``bootstrap_values[b]`` :math:`= V(s_{T_b})`, the value of the state
    after the last valid step.  Terminated wins when both are set.

  ``truncated=None`` means ``~terminated``.  A row with at least one valid step that is neither
  terminated nor truncated is an error; so is a missing or non-finite bootstrap value for a row
  that needs it.  Rows without valid steps output zeros.

Writing :math:`v'_t` for the value of the next state (:math:`V(s_{t+1})`, or the bootstrap value
after the last valid step: 0 if terminated, ``bootstrap_values[b]`` if truncated):

* discounted return (Sutton & Barto 2018, eq. 3.9): :math:`G_t = R_{t+1} + \gamma G_{t+1}`, with
  :math:`G` after the last valid step equal to the bootstrap value;
* λ-return (S&B eq. 12.3, recursive form of §12.5):
  :math:`G^\lambda_t = R_{t+1} + \gamma[(1-\lambda)\,v'_t + \lambda\,G^\lambda_{t+1}]`,
  :math:`G^\lambda` after the last valid step equal to the bootstrap value;
* GAE (Schulman, Moritz, Levine, Jordan & Abbeel 2016, "High-Dimensional Continuous Control Using
  Generalized Advantage Estimation", eqs. 11-16):
  :math:`\delta_t = R_{t+1} + \gamma v'_t - V(s_t)`,
  :math:`\hat A_t = \sum_{l\ge0} (\gamma\lambda)^l \delta_{t+l}
  = \delta_t + \gamma\lambda\hat A_{t+1}`
  (0 after the last valid step), and returns :math:`\hat A_t + V(s_t)` (the λ-return).
  With λ = 1 the advantages are the discounted returns minus the values; with λ = 0 they are the
  one-step TD errors.

Numerics: float64 arithmetic whatever the input dtype, recursion carried in float64, each output
rounded once on store; identical operation order in every backend (results agree bit for bit).
Rows run in parallel in the compiled backends (:func:`fastlmrl.set_num_threads`, capped by the
cores other processes leave free, :mod:`fastlmrl._free_cores`; batches of at least 2**16 steps),
each row by the same code whichever thread takes it: results do not depend on the thread count.
The output dtype is float32 when every real input is float32, else float64.  All arguments are
checked before anything is written.

Memory: the functions allocate their outputs, so an output never shares memory with an input.
The raw kernels (``fastlmrl.numba_kernels``, the Cython modules) take preallocated outputs and
refuse, with status 8 (``OVERLAPPING_ARRAYS``) before any write, an output that shares memory with
an input or with the other output -- also one that *is* an input: there is no in-place mode (the
backward recursions stay element-wise safe in place, but a shifted view would not, and the
blocked kernels read a tile of steps before they write it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import _backend, _free_cores
from . import _validation as check
from ._contract import Arg, Kernel, Kind, Topic, raise_for_status
from ._status import Status

if TYPE_CHECKING:  # what readers and tools follow: the reference kernels
    from ._python import advantages as _kernels
else:  # the active backend's kernels, rebound by set_backend (fastlmrl._backend.bind)
    _kernels = _backend.bind(__name__, "_kernels")

__all__ = ["discounted_returns", "gae", "lambda_returns", "masked_whiten"]


# ----------------------------------------------------------------------------- error messages
# (the kernels check only the steps they read: valid steps, and the bootstrap value of a row
# that needs one)


def _masked(name):
    """The message of a non-finite entry of ``name`` on a valid step (``mask`` non-zero)."""

    def explain(args, shown):
        return check.not_finite(shown(name), args[name], args["mask"])

    return explain


def _row_ends(args):
    """(rows with a valid step, terminated, truncated) as booleans per row."""
    valid = np.asarray(args["mask"]).astype(bool).any(axis=1)
    return valid, np.asarray(args["terminated"]) != 0, np.asarray(args["truncated"]) != 0


def _explain_ends(args, shown):
    valid, term, trunc = _row_ends(args)
    b = int(np.flatnonzero(valid & ~term & ~trunc)[0])
    return (
        f"sequence {b} has valid steps but is neither {shown('terminated')} nor "
        f"{shown('truncated')} (set terminated[b] or truncated[b])"
    )


def _explain_bootstrap(args, shown):
    """A truncated row's bootstrap value that is not finite; ``bootstrap_values`` None in
    ``args``: the caller gave none (the kernel got NaN), and a row is truncated."""
    valid, term, trunc = _row_ends(args)
    needs = valid & ~term & trunc
    name = shown("bootstrap_values")
    if args["bootstrap_values"] is None:
        return f"{name} is required: sequence {int(np.flatnonzero(needs)[0])} is truncated"
    return check.not_finite(name, args["bootstrap_values"], needs)


# ----------------------------------------------------------------------------- the contract
_REWARDS = Arg("rewards", Kind.TABLE, status=Status.BAD_REWARDS)
_VALUES = Arg("values", Kind.TABLE, status=Status.BAD_VALUES)
_MASK = Arg("mask", Kind.ARRAY, ctype="unsigned char[:, ::1]")
_ENDS = (
    Arg("terminated", Kind.FLAGS),
    Arg("truncated", Kind.FLAGS, status=Status.BAD_ENDS),
    Arg("bootstrap_values", Kind.REALS, status=Status.BAD_BOOTSTRAP),
)
_GAMMA, _LAM = Arg("gamma", Kind.REAL), Arg("lam", Kind.REAL)
_RETURNS_OUT = Arg("returns_out", Kind.TABLE, written=True)
_THREADS = Arg("num_threads", Kind.THREADS)
_BATCH = (Status.BAD_SHAPES, Status.OVERLAPPING_ARRAYS)
_SEQUENCE_MESSAGES = {
    Status.BAD_REWARDS: _masked("rewards"),
    Status.BAD_VALUES: _masked("values"),
    Status.BAD_ENDS: _explain_ends,
    Status.BAD_BOOTSTRAP: _explain_bootstrap,
}

#: The kernels of this topic, in every backend (``fastlmrl._python/_numba/_cython.advantages``);
#: tests/test_contract.py checks each implementation against it.  Rewards, values and the mask are
#: (B, T); the ends (B,).  The kernels read only valid steps (``mask`` non-zero) and the bootstrap
#: values of truncated rows.
CONTRACT = Topic(
    "advantages",
    (
        Kernel(
            "discounted_returns",
            (_REWARDS, _MASK, *_ENDS, _GAMMA, _RETURNS_OUT, _THREADS),
            _BATCH,
            messages=_SEQUENCE_MESSAGES,
        ),
        Kernel(
            "gae",
            (
                _REWARDS,
                _VALUES,
                _MASK,
                *_ENDS,
                _GAMMA,
                _LAM,
                Arg("advantages_out", Kind.TABLE, written=True),
                _RETURNS_OUT,
                _THREADS,
            ),
            _BATCH,
            messages=_SEQUENCE_MESSAGES,
        ),
        Kernel(
            "lambda_returns",
            (_REWARDS, _VALUES, _MASK, *_ENDS, _GAMMA, _LAM, _RETURNS_OUT, _THREADS),
            _BATCH,
            messages=_SEQUENCE_MESSAGES,
        ),
        Kernel(
            "masked_whiten",
            (
                Arg("advantages", Kind.TABLE, status=Status.BAD_ADVANTAGES),
                _MASK,
                Arg("eps", Kind.REAL),
                Arg("out", Kind.TABLE, written=True),
            ),
            _BATCH,
            messages={Status.BAD_ADVANTAGES: _masked("advantages")},
        ),
    ),
)


# --------------------------------------------------------------------------- sequences


def _sequences(rewards, values, mask, terminated, truncated, bootstrap_values):
    """Validate the per-step and per-sequence arguments; return kernel-ready arrays."""
    r = check.real_array(rewards, "rewards", 2)
    shape = r.shape
    n_rows = shape[0]
    v = None if values is None else check.real_array(values, "values", 2, shape)
    boot = (
        None
        if bootstrap_values is None
        else check.real_array(bootstrap_values, "bootstrap_values", 1, (n_rows,))
    )
    dtype = check.work_dtype(r, v, boot)
    m = check.mask(mask, shape)
    term = check.flags(terminated, "terminated", n_rows)
    trunc = (
        np.ascontiguousarray(1 - term)
        if truncated is None
        else check.flags(truncated, "truncated", n_rows)
    )
    r = check.as_dtype(r, dtype)
    if v is not None:
        v = check.as_dtype(v, dtype)
    # a missing bootstrap value is NaN: the kernel then rejects any row that needs one
    boot_arr = np.full(n_rows, np.nan, dtype) if boot is None else check.as_dtype(boot, dtype)
    return r, v, m, term, trunc, boot_arr, dtype


def _raise(status, kernel, call, bootstrap_given):
    """The error of a kernel status (a non-zero one), the kernel's arguments ``call`` by name;
    without the caller's bootstrap values the message says they are required."""
    args = CONTRACT[kernel].bind(*call)
    if not bootstrap_given:
        args["bootstrap_values"] = None
    raise_for_status(status, CONTRACT[kernel], args)


def _discount(gamma, lam):
    return check.real(gamma, "gamma", 0.0, 1.0), check.real(lam, "lam", 0.0, 1.0)


def discounted_returns(
    rewards, mask, terminated, truncated=None, bootstrap_values=None, *, gamma: float
) -> np.ndarray:
    r"""Discounted returns :math:`G_t = R_{t+1} + \gamma G_{t+1}` (Sutton & Barto 2018, eq. 3.9).

    Parameters
    ----------
    rewards : (B, T) real array; ``rewards[b, t]`` follows the action at step t (:math:`R_{t+1}`)
    mask : (B, T) bool array of valid steps, or None (all valid); padding outputs 0
    terminated : (B,) bool: the last valid step reached a terminal state (bootstrap 0)
    truncated : (B,) bool or None (= ``~terminated``): cut off, bootstrap from ``bootstrap_values``
    bootstrap_values : (B,) real or None: :math:`V(s_{T_b})` for truncated rows (read only there)
    gamma : discount in [0, 1]

    Returns
    -------
    (B, T) returns (float32 when every real input is float32, else float64).
    """
    gamma = check.real(gamma, "gamma", 0.0, 1.0)
    r, _, m, term, trunc, boot, dtype = _sequences(
        rewards, None, mask, terminated, truncated, bootstrap_values
    )
    out = np.empty(r.shape, dtype=dtype)
    call = (r, m, term, trunc, boot, gamma, out, _free_cores.threads())
    status = _kernels.discounted_returns(*call)
    if status:
        _raise(status, "discounted_returns", call, bootstrap_values is not None)
    return out


def lambda_returns(
    rewards,
    values,
    mask,
    terminated,
    truncated=None,
    bootstrap_values=None,
    *,
    gamma: float,
    lam: float,
) -> np.ndarray:
    r"""λ-returns, recursive form (Sutton & Barto 2018, eq. 12.3 and §12.5):

    .. math:: G^\lambda_t = R_{t+1} + \gamma\,[(1-\lambda)\,V(s_{t+1}) + \lambda\,G^\lambda_{t+1}]

    evaluated in exactly that form; after the last valid step both :math:`V(s_{t+1})` and
    :math:`G^\lambda_{t+1}` are the bootstrap value (0 if terminated).  λ = 1 gives the discounted
    return, λ = 0 the one-step target :math:`R_{t+1} + \gamma V(s_{t+1})`.  Mathematically equal
    to the ``returns`` of :func:`gae` (rounding differs).  Arguments as in
    :func:`discounted_returns`, plus ``values`` (B, T) = :math:`V(s_t)` and ``lam`` in [0, 1].
    """
    gamma, lam = _discount(gamma, lam)
    if values is None:
        raise TypeError("values must be an array, got None")
    r, v, m, term, trunc, boot, dtype = _sequences(
        rewards, values, mask, terminated, truncated, bootstrap_values
    )
    out = np.empty(r.shape, dtype=dtype)
    call = (r, v, m, term, trunc, boot, gamma, lam, out, _free_cores.threads())
    status = _kernels.lambda_returns(*call)
    if status:
        _raise(status, "lambda_returns", call, bootstrap_values is not None)
    return out


def gae(
    rewards,
    values,
    mask,
    terminated,
    truncated=None,
    bootstrap_values=None,
    *,
    gamma: float,
    lam: float,
):
    r"""Generalized advantage estimation, GAE(γ, λ) (Schulman et al. 2016, eqs. 11-16).

    .. math:: \delta_t = R_{t+1} + \gamma\,V(s_{t+1}) - V(s_t),\qquad
              \hat A_t = \delta_t + \gamma\lambda\,\hat A_{t+1},\qquad
              \text{returns}_t = \hat A_t + V(s_t)

    with :math:`V(s_{t+1})` the bootstrap value after the last valid step (0 if terminated,
    ``bootstrap_values[b]`` if truncated) and :math:`\hat A` = 0 after it.  ``gamma * lam`` is
    formed once in float64.  Arguments as in :func:`lambda_returns`.

    Returns
    -------
    (advantages, returns), both (B, T); padding steps are 0 in both.
    """
    gamma, lam = _discount(gamma, lam)
    if values is None:
        raise TypeError("values must be an array, got None")
    r, v, m, term, trunc, boot, dtype = _sequences(
        rewards, values, mask, terminated, truncated, bootstrap_values
    )
    adv = np.empty(r.shape, dtype=dtype)
    ret = np.empty(r.shape, dtype=dtype)
    call = (r, v, m, term, trunc, boot, gamma, lam, adv, ret, _free_cores.threads())
    status = _kernels.gae(*call)
    if status:
        _raise(status, "gae", call, bootstrap_values is not None)
    return adv, ret


def masked_whiten(advantages, mask=None, eps: float = 1e-8) -> np.ndarray:
    r"""Whiten advantages over the valid entries of the whole batch:

    .. math:: \tilde A = \frac{A - \mu}{\sigma + \varepsilon},\quad
              \mu = \frac1n \sum_{\text{valid}} A,\quad
              \sigma = \sqrt{\tfrac1n \sum_{\text{valid}} (A-\mu)^2}

    the population standard deviation (ddof = 0) with ε added to σ, as in OpenAI Baselines' PPO2
    (``(advs - advs.mean()) / (advs.std() + 1e-8)``; Huang et al. 2022, "The 37 implementation
    details of PPO").  TRL/verl's ``masked_whiten`` instead multiplies by
    :math:`1/\sqrt{\mathrm{var}_{ddof=1} + 10^{-8}}`.  Two passes in float64; each sum runs over
    the row-major flattened batch with 4 interleaved accumulators (entry i goes to lane i mod 4,
    lanes combined as (s0 + s1) + (s2 + s3)), the same order in every backend.  Padding entries
    are ignored (may hold anything) and output 0; with no valid
    entry the result is all zeros.

    Parameters
    ----------
    advantages : (B, T) real array (finite on valid entries)
    mask : (B, T) bool or None (all valid)
    eps : > 0
    """
    eps = check.real(eps, "eps", 0.0, None, low_open=True)
    a = check.real_array(advantages, "advantages", 2)
    m = check.mask(mask, a.shape)
    dtype = check.work_dtype(a)
    a = check.as_dtype(a, dtype)
    out = np.empty(a.shape, dtype=dtype)
    status = _kernels.masked_whiten(a, m, eps, out)
    if status:
        raise_for_status(status, CONTRACT["masked_whiten"], dict(advantages=a, mask=m, out=out))
    return out
