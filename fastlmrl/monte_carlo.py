r"""Tabular Monte Carlo: discounted returns of whole episodes and Monte Carlo control.

Episodes are passed flat, in one batch, with CSR offsets: ``states``, ``actions``, ``rewards`` hold
the T steps of all episodes concatenated and ``episode_offsets`` (length E + 1, ``offsets[0] == 0``,
``offsets[-1] == T``, non-decreasing) delimits them: episode ``e`` is steps
``offsets[e] .. offsets[e+1] - 1`` (empty episodes are allowed).  Time indices follow Sutton &
Barto (2018): step ``t`` of an episode is the decision :math:`(S_t, A_t)` and ``rewards[t]`` is the
reward :math:`R_{t+1}` that followed it, so the return from step ``t`` of an episode of length
:math:`T_e` is (eq. 3.8/3.9)

.. math::  G_t = R_{t+1} + \gamma R_{t+2} + \dots = R_{t+1} + \gamma\,G_{t+1},
           \qquad G_{T_e} = \text{final value}

computed backward in float64 as ``G = gamma * G + rewards[t]`` and rounded once when stored.

Numerics: float64 arithmetic whatever the dtype; each stored value (return, table entry) is rounded
once, identically in every backend, so all backends agree bit for bit.  Every argument is checked
before anything is written: on error ``q`` and ``counts`` are unchanged.  The kernels, their
arguments and statuses: :data:`CONTRACT`.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING

import numpy as np

from . import _backend
from . import _validation as check
from ._contract import Arg, Kernel, Kind, Topic
from ._shared_memory import refuse_shared_memory
from ._status import Status

if TYPE_CHECKING:  # what readers and tools follow: the reference kernels
    from ._python import monte_carlo as _kernels
else:  # the active backend's kernels, rebound by set_backend (fastlmrl._backend.bind)
    _kernels = _backend.bind(__name__, "_kernels")

__all__ = ["episode_returns", "mc_control_update"]


# ----------------------------------------------------------------------------- the contract
def _bad_count(args, shown) -> str:
    """BAD_COUNT_VALUES: the first step whose pair's visit count is negative or so large that
    ``count + 1`` could overflow within the batch."""
    counts, states, actions = args["counts"], args["states"], args["actions"]
    n = states.shape[0]
    c = counts[states, actions]
    t = int(np.flatnonzero((c < 0) | (c > np.iinfo(np.int64).max - n))[0])
    s, a = int(states[t]), int(actions[t])
    return (
        f"{shown('counts')}[{s}, {a}] = {int(counts[s, a])} is not a visit count "
        f"(must be in [0, 2**63 - 1 - T], T = {n}); nothing was modified"
    )


def _bad_counts(args, shown) -> str:
    return f"invalid {shown('counts')} (shape must be that of q; required when alpha is None)"


def _bad_scratch(args, shown) -> str:  # the wrapper sizes the scratch itself: never expected
    return (
        "internal error: first-visit hash scratch too small "
        f"({shown('slot_keys')}, {shown('slot_first')}: one length, a power of two >= 2 x the "
        "longest episode)"
    )


_REWARDS = Arg("rewards", Kind.REALS, status=Status.BAD_REWARDS)
#: CSR offsets; BAD_OFFSETS also for array lengths that do not match them
_OFFSETS = Arg("episode_offsets", Kind.ARRAY, status=Status.BAD_OFFSETS, ctype="int64_t[::1]")
_GAMMA = Arg("gamma", Kind.REAL)  # checked by the wrappers
_RETURNS_OUT = Arg("returns_out", Kind.REALS, written=True)


def _scratch(name: str) -> Arg:  # one half of the first-visit hash scratch
    return Arg(name, Kind.ARRAY, written=True, status=Status.BAD_SCRATCH, ctype="int64_t[::1]")


#: The kernels of this topic, in every backend (``fastlmrl._python/_numba/_cython.monte_carlo``);
#: tests/test_contract.py checks each implementation against it.
CONTRACT = Topic(
    "monte_carlo",
    (
        Kernel(
            "episode_returns",
            (
                _REWARDS,
                _OFFSETS,
                _GAMMA,
                Arg(
                    "final_values", Kind.ARRAY, status=Status.BAD_FINAL_VALUES, ctype="double[::1]"
                ),
                _RETURNS_OUT,
            ),
            (Status.OVERLAPPING_ARRAYS,),
        ),
        Kernel(
            "mc_control_update",
            (
                Arg("q", Kind.TABLE, written=True),
                Arg("states", Kind.IDS, status=Status.BAD_STATES, bound=("q", 0)),
                Arg("actions", Kind.IDS, status=Status.BAD_ACTIONS, bound=("q", 1)),
                _REWARDS,
                _OFFSETS,
                _GAMMA,
                Arg("first_visit", Kind.FLAG),
                Arg("alpha", Kind.REAL),  # 0: the sample average (needs counts); checked by wrapper
                #: (0, 0): no counts; BAD_COUNT_VALUES: a count of a pair of the batch that
                #: ``+ 1`` could overflow (or negative)
                Arg(
                    "counts",
                    Kind.ARRAY,
                    written=True,
                    status=Status.BAD_COUNTS,
                    ctype="int64_t[:, ::1]",
                    other_statuses=(Status.BAD_COUNT_VALUES,),
                ),
                _scratch("slot_keys"),
                _scratch("slot_first"),
                _RETURNS_OUT,
            ),
            (Status.OVERLAPPING_ARRAYS,),
            messages={
                Status.BAD_COUNT_VALUES: _bad_count,
                Status.BAD_COUNTS: _bad_counts,
                Status.BAD_SCRATCH: _bad_scratch,
            },
        ),
    ),
)


def _offsets(episode_offsets, n_steps: int) -> np.ndarray:
    """CSR offsets as a contiguous int64 array, fully validated (ValueError naming the problem)."""
    offsets = check.ids(episode_offsets, "episode_offsets").astype(np.int64, copy=False)
    if offsets.shape[0] == 0:
        raise ValueError("episode_offsets must have length E + 1 >= 1 (it starts with 0)")
    if offsets[0] != 0:
        raise ValueError(f"episode_offsets[0] must be 0, got {int(offsets[0])}")
    if offsets[-1] != n_steps:
        raise ValueError(
            f"episode_offsets[-1] must equal the number of steps {n_steps}, got {int(offsets[-1])}"
        )
    drops = np.flatnonzero(np.diff(offsets) < 0)
    if drops.size:
        e = int(drops[0])
        raise ValueError(
            f"episode_offsets must be non-decreasing: episode_offsets[{e + 1}] = "
            f"{int(offsets[e + 1])} < episode_offsets[{e}] = {int(offsets[e])}"
        )
    return offsets


def _gamma(gamma) -> float:
    return check.real(gamma, "gamma", 0.0, 1.0)


def episode_returns(rewards, episode_offsets, gamma, final_values=None) -> np.ndarray:
    r"""Discounted returns :math:`G_t` of every step of every episode (Sutton & Barto eq. 3.9).

    Within episode ``e``, backward from its last step:
    :math:`G_t = R_{t+1} + \gamma\,G_{t+1}` (``rewards[t]`` is :math:`R_{t+1}`), with the value
    after the last step :math:`G_{T_e} =` ``final_values[e]`` (default 0).  A terminated episode
    passes 0; a truncated one (time limit) may pass a bootstrap estimate :math:`\hat v(S_{T_e})`,
    which gives the n-step return of S&B eq. 7.1 with n = the remaining length.

    Parameters
    ----------
    rewards : 1-D real array of length T (float32 stays float32; anything else becomes float64)
    episode_offsets : 1-D integer array of length E + 1 (CSR offsets, see the module docstring)
    gamma : discount in [0, 1]
    final_values : None or 1-D real array of length E (finite; used in float64)

    Returns
    -------
    G : array of length T, dtype of ``rewards`` (float32 or float64)
    """
    gamma = _gamma(gamma)
    arr = np.asarray(rewards)
    dtype = np.float32 if arr.dtype == np.float32 else np.float64
    rewards = check.values(arr, "rewards", None, dtype)
    offsets = _offsets(episode_offsets, rewards.shape[0])
    n_episodes = offsets.shape[0] - 1
    if final_values is None:
        final_values = np.zeros(n_episodes)
    else:
        final_values = check.values(final_values, "final_values", n_episodes, np.float64)
    out = np.empty(rewards.shape[0], dtype=dtype)
    status = _kernels.episode_returns(rewards, offsets, gamma, final_values, out)
    if status:
        CONTRACT["episode_returns"].raise_for_call(
            status, (rewards, offsets, gamma, final_values, out)
        )
    return out


def _hash_size(offsets: np.ndarray) -> int:
    """Smallest power of two >= 2 * (longest episode), at least 2."""
    longest = int(np.diff(offsets).max()) if offsets.shape[0] > 1 else 0
    size = 2
    while size < 2 * longest:
        size *= 2
    return size


def mc_control_update(
    q,
    states,
    actions,
    rewards,
    episode_offsets,
    gamma,
    *,
    first_visit=True,
    alpha=None,
    counts=None,
) -> np.ndarray:
    r"""Monte Carlo control update of ``q`` in place from complete episodes; returns :math:`G_t`.

    Sutton & Barto (2018) §5.3 (Monte Carlo ES) and §5.4 (on-policy first-visit MC control); with
    ``first_visit=False`` the every-visit variant (§5.1).  Episodes are processed in order; within
    episode ``e`` the step index ``t`` walks backward from its last step with
    :math:`G \leftarrow \gamma G + R_{t+1}` (``G`` starts at 0: episodes are complete, the state
    after the last step is terminal), and :math:`Q(S_t, A_t)` is updated with that :math:`G_t`
    unless ``first_visit`` and the pair :math:`(S_t, A_t)` also occurs at an earlier step of the
    same episode:

    * ``alpha=None`` — sample average (S&B §2.4 incremental mean):
      :math:`N(s,a) \leftarrow N(s,a) + 1`,
      :math:`Q(s,a) \leftarrow Q(s,a) + (G - Q(s,a)) / N(s,a)`, so :math:`Q(s,a)` is the mean
      of every return credited to it (if ``counts`` started at 0).
      ``counts`` (int64, shape of ``q``, C-contiguous, non-negative) is then required.  The
      counts of the pairs of the batch are checked before anything is written: a negative count
      (or one within T of the int64 limit) is refused with a ValueError naming ``counts``.
    * ``alpha`` in (0, 1] — constant step :math:`Q(s,a) \leftarrow Q(s,a) + \alpha (G - Q(s,a))`
      (``counts``, if given, is still incremented).

    Every-visit updates of a repeated pair are applied in backward step order.  First visits are
    found with an open-addressing hash set of the keys ``s * V + a`` of one episode (scratch of a
    power of two >= 2 × the longest episode, allocated here and passed to the kernel), so the work
    is O(T) expected and needs no (S, V) scratch.

    Parameters
    ----------
    q : (S, V) float32/float64, C-contiguous, updated in place
    states, actions : 1-D integer arrays of length T (ids in [0, S) and [0, V))
    rewards : 1-D real array of length T (finite), converted to ``q``'s dtype
    episode_offsets : 1-D integer array of length E + 1 (CSR offsets)
    gamma : discount in [0, 1]
    first_visit : bool
    alpha : None (sample average) or a float in (0, 1]
    counts : None or int64 (S, V) C-contiguous visit counts, updated in place

    Returns
    -------
    G : returns of every step (length T, dtype of ``q``), whether or not the step was credited.
    """
    q = check.table(q)
    gamma = _gamma(gamma)
    if not isinstance(first_visit, (bool, np.bool_)):
        raise TypeError(f"first_visit must be a bool, got {type(first_visit).__name__}")
    first_visit = bool(first_visit)
    if alpha is None:
        step = 0.0  # the kernels' code for "sample average"
        if counts is None:
            raise ValueError("counts is required for the sample average (alpha=None)")
    else:
        if not isinstance(alpha, numbers.Real) or isinstance(alpha, (bool, np.bool_)):
            raise TypeError(f"alpha must be None or a real number, got {type(alpha).__name__}")
        step = check.real(alpha, "alpha", 0.0, 1.0, low_open=True)
    if counts is None:
        counts = np.empty((0, 0), dtype=np.int64)
    else:
        if not isinstance(counts, np.ndarray):
            raise TypeError(f"counts must be a numpy.ndarray, got {type(counts).__name__}")
        if counts.dtype != np.int64:
            raise TypeError(f"counts must have dtype int64, got {counts.dtype}")
        if counts.shape != q.shape:
            raise ValueError(f"counts must have the shape of q {q.shape}, got {counts.shape}")
        if not counts.flags.c_contiguous:
            raise ValueError("counts must be C-contiguous (use numpy.ascontiguousarray)")
        if not counts.flags.writeable:
            raise ValueError("counts is read-only but is updated in place")
    states = check.ids(states, "states")
    n = states.shape[0]
    actions = check.ids(actions, "actions", n)
    states, actions = check.same_index_dtype(states, actions)
    rewards = check.values(rewards, "rewards", n, q.dtype)
    offsets = _offsets(episode_offsets, n)
    refuse_shared_memory(
        {"q": q, "counts": counts},
        {"states": states, "actions": actions, "rewards": rewards, "episode_offsets": offsets},
    )
    if first_visit:
        size = _hash_size(offsets)
        slot_keys = np.empty(size, dtype=np.int64)
        slot_first = np.empty(size, dtype=np.int64)
    else:
        slot_keys = slot_first = np.empty(0, dtype=np.int64)
    out = np.empty(n, dtype=q.dtype)
    args = (q, states, actions, rewards, offsets, gamma, first_visit, step, counts)
    status = _kernels.mc_control_update(*args, slot_keys, slot_first, out)
    if status:
        CONTRACT["mc_control_update"].raise_for_call(status, (*args, slot_keys, slot_first, out))
    return out
