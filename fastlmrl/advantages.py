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

import numpy as np

from . import _backend, _free_cores
from . import _validation as check
from ._status import BAD_SHAPES, OVERLAPPING_ARRAYS

__all__ = ["discounted_returns", "gae", "lambda_returns", "masked_whiten"]

BAD_REWARDS = 5
BAD_VALUES = 41
BAD_BOOTSTRAP = 42
BAD_ENDS = 43
BAD_ADVANTAGES = 44


# --------------------------------------------------------------------------- shared validation
# (also used by fastlmrl.group_advantages and fastlmrl.kl_divergence)


def _real_array(x, name: str, ndim: int | None = None, shape=None) -> np.ndarray:
    """An array of real numbers (bool/int/float) with ``ndim`` dims / this ``shape`` (not
    converted)."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {arr.shape}")
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {arr.shape}")
    return arr


def _work_dtype(*arrays) -> np.dtype:
    """float32 when every given array is float32, else float64."""
    if all(a.dtype == np.float32 for a in arrays if a is not None):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _as(arr: np.ndarray, dtype) -> np.ndarray:
    """C-contiguous copy in ``dtype`` unless ``arr`` already is one (a read-only one is passed as
    a writeable alias, :func:`fastlmrl._validation.kernel_input`: no new Numba specialisation)."""
    return check.kernel_input(np.ascontiguousarray(arr, dtype=dtype))


def _mask(mask, shape, name: str = "mask") -> np.ndarray:
    """A boolean (or 0/1 integer) array of ``shape`` as a C-contiguous uint8 view; None = all
    True."""
    if mask is None:
        return np.ones(shape, dtype=np.uint8)
    arr = np.asarray(mask)
    if arr.dtype != np.bool_:
        if arr.dtype.kind in "iu" or (arr.size == 0 and arr.dtype.kind == "f"):
            if arr.size and not np.isin(arr, (0, 1)).all():
                raise ValueError(f"{name} must be boolean (or 0/1 integers)")
            arr = arr.astype(np.bool_)
        else:
            raise TypeError(f"{name} must be a boolean array, got dtype {arr.dtype}")
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {arr.shape}")
    return check.kernel_input(np.ascontiguousarray(arr).view(np.uint8))


def _fail(status: int, known: dict) -> None:
    """Raise the ValueError for a non-zero kernel status.

    ``known`` maps a status code to ``(name, array, where)`` (the first non-finite entry of
    ``array`` where ``where`` is true is reported) or to a message string.
    """
    if status == 0:
        return
    if status == BAD_SHAPES:  # the wrappers always pass consistent shapes
        raise ValueError(
            f"internal error: array arguments of inconsistent shapes (status {BAD_SHAPES})"
        )
    if status == OVERLAPPING_ARRAYS:  # the wrappers allocate every array a kernel writes
        raise ValueError(
            "internal error: an array the kernel writes shares memory with another "
            f"argument (status {OVERLAPPING_ARRAYS})"
        )
    entry = known.get(status)
    if isinstance(entry, str):
        raise ValueError(entry)
    if entry is not None:
        name, arr, where = entry
        bad = ~np.isfinite(arr)
        if where is not None:
            bad &= where.astype(bool)
        idx = np.argwhere(bad)
        if idx.size:
            pos = tuple(int(i) for i in idx[0])
            raise ValueError(f"{name}[{', '.join(map(str, pos))}] = {arr[pos]} is not finite")
        raise ValueError(f"invalid {name}")
    raise ValueError(f"kernel rejected its arguments (status {status})")


# --------------------------------------------------------------------------- sequences


def _sequences(rewards, values, mask, terminated, truncated, bootstrap_values):
    """Validate the per-step and per-sequence arguments; return kernel-ready arrays."""
    r = _real_array(rewards, "rewards", 2)
    shape = r.shape
    n_rows = shape[0]
    v = None if values is None else _real_array(values, "values", 2, shape)
    boot = (
        None
        if bootstrap_values is None
        else _real_array(bootstrap_values, "bootstrap_values", 1, (n_rows,))
    )
    dtype = _work_dtype(r, v, boot)
    m = _mask(mask, shape)
    term = check.flags(terminated, "terminated", n_rows)
    trunc = (
        np.ascontiguousarray(1 - term)
        if truncated is None
        else check.flags(truncated, "truncated", n_rows)
    )
    r = _as(r, dtype)
    if v is not None:
        v = _as(v, dtype)
    # a missing bootstrap value is NaN: the kernel then rejects any row that needs one
    boot_arr = np.full(n_rows, np.nan, dtype) if boot is None else _as(boot, dtype)
    return r, v, m, term, trunc, boot_arr, dtype


def _raise_sequences(status, r, v, m, term, trunc, boot, boot_given):
    if status == BAD_ENDS:
        rows = np.flatnonzero(m.any(axis=1) & (term == 0) & (trunc == 0))
        raise ValueError(
            f"sequence {int(rows[0])} has valid steps but is neither terminated nor "
            "truncated (set terminated[b] or truncated[b])"
        )
    if status == BAD_BOOTSTRAP and not boot_given:
        rows = np.flatnonzero(m.any(axis=1) & (term == 0) & (trunc != 0))
        raise ValueError(f"bootstrap_values is required: sequence {int(rows[0])} is truncated")
    needs = m.any(axis=1) & (term == 0) & (trunc != 0)
    _fail(
        status,
        {
            BAD_REWARDS: ("rewards", r, m),
            BAD_VALUES: ("values", v, m),
            BAD_BOOTSTRAP: ("bootstrap_values", boot, needs),
        },
    )


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
    status = _backend.kernels().discounted_returns(
        r, m, term, trunc, boot, gamma, out, _free_cores.threads()
    )
    _raise_sequences(status, r, None, m, term, trunc, boot, bootstrap_values is not None)
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
    status = _backend.kernels().lambda_returns(
        r, v, m, term, trunc, boot, gamma, lam, out, _free_cores.threads()
    )
    _raise_sequences(status, r, v, m, term, trunc, boot, bootstrap_values is not None)
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
    status = _backend.kernels().gae(
        r, v, m, term, trunc, boot, gamma, lam, adv, ret, _free_cores.threads()
    )
    _raise_sequences(status, r, v, m, term, trunc, boot, bootstrap_values is not None)
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
    a = _real_array(advantages, "advantages", 2)
    m = _mask(mask, a.shape)
    dtype = _work_dtype(a)
    a = _as(a, dtype)
    out = np.empty(a.shape, dtype=dtype)
    status = _backend.kernels().masked_whiten(a, m, eps, out)
    _fail(status, {BAD_ADVANTAGES: ("advantages", a, m)})
    return out
