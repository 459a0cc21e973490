r"""Stochastic tabular MDPs, batched: :class:`TabularMDP` (e.g. Gymnasium's toy-text tables).

A finite MDP given by its outcome lists (Sutton & Barto 2018, §3.1, the four-argument
:math:`p(s', r \mid s, a)`): for every state ``s`` and action ``a`` a list of outcomes
``(probability, next_state, reward, terminated)`` -- exactly Gymnasium's toy-text
``env.unwrapped.P[s][a]`` (FrozenLake, CliffWalking, Taxi; see
:func:`fastlmrl.gym_adapters.tabular_mdp_from_gymnasium`).

**How an episode ends.**  Termination is a property of the *transition*: an outcome with
``terminated=True`` ends the episode when it is drawn (:math:`S_{t+1}` is terminal: its value is
0 and learners do not bootstrap from it).  There is no hidden state: an MDP of S states has S rows,
observations are the ``next_state`` ids of the table.  (:class:`fastlmrl.ContextMDP`, the
deterministic table, instead marks an ended episode with an extra absorbing state END = S.)
A time limit (``max_steps``) *truncates* instead (bootstrap from :math:`S_{t+1}`; Pardo et al.
2018).

Storage (CSR): the outcomes of the pair ``i = s * A + a`` are ``k`` in
``[offsets[i], offsets[i + 1])`` of the flat arrays ``probabilities``, ``next_states``,
``rewards`` (float64) and ``terminated``.  Outcomes of probability 0 are dropped; every pair has
at least one outcome; the probabilities of a pair sum to 1 within
:func:`fastlmrl.dynamic_programming.row_sum_tolerance` (they are used as given, not
renormalised).  ``cdf[k]`` is the float64 running sum of the pair's probabilities up to ``k``.

Randomness (:mod:`fastlmrl.rng`, counter-based): a :meth:`~TabularMDP.step` of B rows draws
**one uniform per row**, row ``b`` at counter ``c + b`` (B counters per step, whether a row is
running or not), and takes the first outcome ``k`` of its pair with ``u < cdf[k]`` (the pair's
last outcome if rounding leaves ``u`` above the last running sum) -- inverse-CDF sampling.  A
reset (and the next-step autoreset of finished rows) draws the start state the same way from the
initial distribution, B counters at ``c + b``, before the step's own counters; with a single
start state no counter is used.  Same seed → same episodes in every backend (kernel
``tabular_mdp_step``, topic ``environments``).

Planning: :meth:`TabularMDP.to_dense` gives the :class:`fastlmrl.DenseMDP` for
:func:`fastlmrl.value_iteration` / :func:`fastlmrl.policy_iteration` (γ < 1);
:meth:`TabularMDP.episodic_problem` says whether γ = 1 is well defined (stochastic shortest
path conditions, Bertsekas & Tsitsiklis 1991); :meth:`TabularMDP.value_iteration` solves the
outcome model itself, γ = 1 included (bounded by ``max_iter``, reports convergence).  The
tabular trainers refuse ``gamma = 1`` with :meth:`~TabularMDP.episodic_problem`'s reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from . import _backend
from . import _validation as check
from .dynamic_programming import DenseMDP, row_sum_tolerance
from .environments import _INT64_MAX, _int64, _num_envs, _raise, _state_property, _stream
from .rng import MASK64, RandomStream, advance, check_capacity, uniforms

if TYPE_CHECKING:  # what readers and tools follow: the reference kernels
    from ._python import environments as _env_kernels
else:  # the active backend's kernels, rebound by set_backend (fastlmrl._backend.bind)
    _env_kernels = _backend.bind(__name__, "_env_kernels")

__all__ = ["SSPResult", "TabularMDP"]


@dataclass
class SSPResult:
    """What :meth:`TabularMDP.value_iteration` returns (stochastic-shortest-path value iteration).

    Attributes
    ----------
    values : (S,) float64, :math:`v_k` after the last sweep (0 is the value after termination).
    q : (S, A) float64, :math:`r(s, a) + \\gamma \\sum_{s'} P_{continue}[s, a, s']\\, v_k(s')`.
    policy : (S,) int64, greedy in ``q`` (ties: the lowest action).
    num_iter : the number of sweeps done.
    converged : whether the stopping rule was met within ``max_iter``.
    """

    values: np.ndarray  #: (S,) float64 v_k (0 is the value after termination)
    q: np.ndarray  #: (S, A) float64 r(s, a) + gamma * sum_s' P_continue[s, a, s'] v_k(s')
    policy: np.ndarray  #: (S,) int64 greedy in q (ties: lowest action)
    num_iter: int  #: sweeps done
    converged: bool  #: the stopping rule was met within max_iter


def _outcome_list(transitions: Any, s: int, a: int) -> list[Any] | tuple[Any, ...]:
    try:
        outs = transitions[s][a]
    except (KeyError, IndexError, TypeError) as exc:
        raise ValueError(
            f"transitions[{s}][{a}] is missing: every state needs every action "
            f"({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(outs, (list, tuple)) or len(outs) == 0:
        raise ValueError(
            f"transitions[{s}][{a}] must be a non-empty list of "
            "(probability, next_state, reward, terminated) tuples"
        )
    return outs


class TabularMDP:
    r"""A stochastic finite MDP stepped in batches (module docstring for the conventions).

    Parameters
    ----------
    transitions : ``transitions[s][a]`` = list of ``(probability, next_state, reward,
        terminated)`` for ``s`` in ``range(S)``, ``a`` in ``range(A)`` (a dict or a sequence, as
        Gymnasium's ``env.unwrapped.P``).  Probabilities in [0, 1] summing to 1 per pair, next
        states in ``range(S)``, finite rewards, ``terminated`` a bool.
    initial_distribution : None, int or (S,) probabilities
        :math:`S_0`: None = state 0; an int = that state; an array = the distribution (sums to 1).
    num_envs : int, default 1
        B, sequences stepped together.
    max_steps : int, optional
        Time limit: an episode still running after ``max_steps`` steps is truncated.

    The Gymnasium-style API is :class:`fastlmrl.ContextMDP`'s: ``reset(seed) -> (obs, info)``,
    ``step(actions) -> (obs, rewards, terminated, truncated, info)`` with next-step autoreset.
    """

    def __init__(
        self,
        transitions: Any,
        initial_distribution: int | ArrayLike | None = None,
        *,
        num_envs: int = 1,
        max_steps: int | None = None,
    ) -> None:
        try:
            n_states = len(transitions)
        except TypeError:
            raise TypeError(
                "transitions must be a dict or a sequence indexed by state "
                f"(transitions[s][a]), got {type(transitions).__name__}"
            ) from None
        if n_states == 0:
            raise ValueError("transitions is empty: an MDP needs at least one state")
        try:
            n_actions = len(transitions[0])
        except (KeyError, IndexError, TypeError):
            raise ValueError("transitions[0] must list the outcomes of every action") from None
        if n_actions == 0:
            raise ValueError("transitions[0] has no action")
        probs, nexts, rewards, ends, counts = [], [], [], [], []
        for s in range(n_states):
            try:
                n_here = len(transitions[s])
            except (KeyError, IndexError, TypeError):
                raise ValueError(f"transitions[{s}] is missing (states must be 0 .. S-1)") from None
            if n_here != n_actions:
                raise ValueError(
                    f"transitions[{s}] has {n_here} actions, transitions[0] has {n_actions}"
                )
            for a in range(n_actions):
                outs = _outcome_list(transitions, s, a)
                for j, out in enumerate(outs):
                    if not isinstance(out, (tuple, list)) or len(out) != 4:
                        raise ValueError(
                            f"transitions[{s}][{a}][{j}] must be a tuple "
                            "(probability, next_state, reward, terminated)"
                        )
                    p, s2, r, end = out
                    probs.append(p)
                    nexts.append(s2)
                    rewards.append(r)
                    ends.append(end)
                counts.append(len(outs))
        self._build(
            n_states, n_actions, np.asarray(counts, dtype=np.int64), probs, nexts, rewards, ends
        )
        self._set_initial(initial_distribution)
        self._num_envs = _num_envs(num_envs)
        self._max_steps = 0 if max_steps is None else _int64(max_steps, "max_steps", 1)
        self._states = np.zeros(self._num_envs, dtype=np.int64)
        self._steps = np.zeros(self._num_envs, dtype=np.int64)
        self._needs_reset = np.ones(self._num_envs, dtype=bool)
        self._stream = None

    # --- construction ---------------------------------------------------------------------------
    def _build(
        self,
        n_states: int,
        n_actions: int,
        counts: np.ndarray,
        probs: list[Any],
        nexts: list[Any],
        rewards: list[Any],
        ends: list[Any],
    ) -> None:
        where = np.repeat(np.arange(n_states * n_actions), counts)

        def at(k: int) -> str:
            pair = int(where[k])
            return f"transitions[{pair // n_actions}][{pair % n_actions}]"

        p = np.asarray(probs)
        if p.dtype.kind not in "biuf":
            raise TypeError(f"transition probabilities must be real numbers, got dtype {p.dtype}")
        p64 = p.astype(np.float64)
        bad = ~np.isfinite(p64) | (p64 < 0) | (p64 > 1)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{at(k)}: probability {p64[k]} is not in [0, 1]")
        s2 = np.asarray(nexts)
        if s2.dtype.kind not in "iu":
            raise TypeError(f"next states must be integer state ids, got dtype {s2.dtype}")
        s2 = s2.astype(np.int64)
        bad = (s2 < 0) | (s2 >= n_states)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{at(k)}: next state {int(s2[k])} is out of range [0, {n_states})")
        r = np.asarray(rewards)
        if r.dtype.kind not in "biuf":
            raise TypeError(f"rewards must be real numbers, got dtype {r.dtype}")
        r = r.astype(np.float64)
        if not np.isfinite(r).all():
            k = int(np.flatnonzero(~np.isfinite(r))[0])
            raise ValueError(f"{at(k)}: reward {r[k]} is not finite")
        e = np.asarray(ends)
        if e.dtype.kind not in "bui":
            raise TypeError(f"terminated flags must be bools, got dtype {e.dtype}")
        if ((e != 0) & (e != 1)).any():
            k = int(np.flatnonzero((e != 0) & (e != 1))[0])
            raise ValueError(f"{at(k)}: terminated = {e[k]} is not a bool")
        sums = np.bincount(where, weights=p64, minlength=n_states * n_actions)
        atol = row_sum_tolerance(p.dtype if p.dtype.kind == "f" else np.float64, n_states)
        bad = ~(np.abs(sums - 1.0) <= atol)
        if bad.any():
            pair = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"transitions[{pair // n_actions}][{pair % n_actions}]: the "
                f"probabilities sum to {sums[pair]!r}, not 1 (tolerance {atol:g})"
            )
        keep = p64 > 0
        where = where[keep]
        self._num_states, self._num_actions = n_states, n_actions
        self._probabilities = p64[keep]
        self._next_states = s2[keep]
        self._rewards = r[keep]
        self._terminated = e[keep] != 0
        counts = np.bincount(where, minlength=n_states * n_actions)
        self._offsets = np.zeros(n_states * n_actions + 1, dtype=np.int64)
        np.cumsum(counts, out=self._offsets[1:])
        self._pair = where
        # running sum within each pair, accumulated left to right in float64
        self._cdf = np.empty_like(self._probabilities)
        for i in range(n_states * n_actions):
            lo, hi = self._offsets[i], self._offsets[i + 1]
            np.cumsum(self._probabilities[lo:hi], out=self._cdf[lo:hi])
        for arr in (
            self._offsets,
            self._cdf,
            self._next_states,
            self._rewards,
            self._probabilities,
            self._terminated,
        ):
            arr.flags.writeable = False
        # writeable aliases for the kernel (Numba compiles another specialisation for read-only
        # arrays); kernels never write their inputs
        self._kernel_tables = tuple(
            check.kernel_input(a)
            for a in (
                self._offsets,
                self._cdf,
                self._next_states,
                self._rewards,
                self._terminated.view(np.uint8),
            )
        )

    def _set_initial(self, init: Any) -> None:
        n = self._num_states
        if init is None:
            init = 0
        if isinstance(init, (int, np.integer)) and not isinstance(init, (bool, np.bool_)):
            if not 0 <= init < n:
                raise ValueError(f"initial_distribution: state {init} is out of range [0, {n})")
            dist = np.zeros(n)
            dist[int(init)] = 1.0
        else:
            d = np.asarray(init)
            if d.dtype.kind not in "biuf":
                raise TypeError(
                    "initial_distribution must be a state id or (S,) probabilities, "
                    f"got dtype {d.dtype}"
                )
            if d.shape != (n,):
                raise ValueError(f"initial_distribution must have shape ({n},), got {d.shape}")
            dist = d.astype(np.float64)
            if not np.isfinite(dist).all() or (dist < 0).any():
                raise ValueError("initial_distribution must hold finite nonnegative numbers")
            atol = row_sum_tolerance(d.dtype if d.dtype.kind == "f" else np.float64, n)
            if not abs(dist.sum() - 1.0) <= atol:
                raise ValueError(f"initial_distribution sums to {dist.sum()!r}, not 1")
        self._initial = dist
        self._initial.flags.writeable = False
        support = np.flatnonzero(dist > 0)
        self._start_states = support
        self._start_cdf = np.cumsum(dist[support])

    # --- configuration (read-only) and state ----------------------------------------------------
    num_states = property(lambda self: self._num_states, doc="S, the number of states (rows).")
    num_actions = property(lambda self: self._num_actions, doc="A, the number of actions.")
    num_envs = property(lambda self: self._num_envs, doc="B, the number of sequences.")
    max_steps = property(lambda self: self._max_steps, doc="The time limit (0: none).")
    offsets = property(
        lambda self: self._offsets,
        doc="(S*A + 1,) int64: pair i = s*A + a has offsets[i]:offsets[i+1].",
    )
    probabilities = property(lambda self: self._probabilities, doc="(K,) float64 outcome p.")
    next_states = property(lambda self: self._next_states, doc="(K,) int64 outcome S_{t+1}.")
    rewards = property(lambda self: self._rewards, doc="(K,) float64 outcome R_{t+1}.")
    terminated = property(
        lambda self: self._terminated, doc="(K,) bool: the outcome ends the episode."
    )
    cdf = property(lambda self: self._cdf, doc="(K,) float64 running sums within each pair.")
    initial_distribution = property(lambda self: self._initial, doc="(S,) float64 p(S_0).")

    states = _state_property(
        "states",
        lambda self: self._num_states - 1,
        "(B,) int64 current states (assigning checks and copies).",
    )

    contexts = states  # the name the token environments use

    steps = _state_property(
        "steps", lambda self: _INT64_MAX - 1, "(B,) int64 steps taken in the current episodes."
    )

    def __repr__(self) -> str:
        return (
            f"TabularMDP(num_states={self._num_states}, num_actions={self._num_actions}, "
            f"outcomes={self._probabilities.size}, num_envs={self._num_envs}, "
            f"max_steps={self._max_steps})"
        )

    # --- the model ------------------------------------------------------------------------------
    def expected_rewards(self) -> np.ndarray:
        r""":math:`r(s, a) = \sum_{s', r} p(s', r \mid s, a)\, r` (S&B eq. 3.5), (S, A) float64."""
        n_pairs = self._num_states * self._num_actions
        return np.bincount(
            self._pair, weights=self._probabilities * self._rewards, minlength=n_pairs
        ).reshape(self._num_states, self._num_actions)

    def transition_matrices(self) -> tuple[np.ndarray, np.ndarray]:
        r"""``(P, P_continue)``, both (S, A, S) float64: :math:`P[s, a, s'] = p(s' \mid s, a)`
        and its part through outcomes that do not terminate (the substochastic matrix of the
        stochastic-shortest-path form, :math:`Q(s,a) = r(s,a) + \gamma \sum_{s'}
        P_{\text{continue}}[s, a, s']\, V(s')`)."""
        n, m = self._num_states, self._num_actions
        flat = self._pair * n + self._next_states
        P = np.bincount(flat, weights=self._probabilities, minlength=n * m * n)
        cont = np.bincount(
            flat, weights=self._probabilities * ~self._terminated, minlength=n * m * n
        )
        return P.reshape(n, m, n), cont.reshape(n, m, n)

    def terminal_states(self) -> np.ndarray:
        """(S,) bool: the states some terminating outcome enters."""
        out = np.zeros(self._num_states, dtype=bool)
        out[self._next_states[self._terminated]] = True
        return out

    def to_dense(self) -> DenseMDP:
        """The same MDP as a :class:`fastlmrl.DenseMDP` (S states) for planning with γ < 1.

        Termination is on transitions here and on states there: every state entered by a
        terminating outcome becomes absorbing with reward 0 in the dense model (its own outgoing
        rows, which no episode uses, are replaced).  Refused (ValueError) when such a state is
        also entered by a non-terminating outcome or is a start state: the two models would then
        differ (use :meth:`transition_matrices` with your own solver).
        """
        ends = self.terminal_states()
        entered_alive = np.zeros(self._num_states, dtype=bool)
        alive = ~self._terminated
        entered_alive[self._next_states[alive]] = True
        clash = ends & (entered_alive | (self._initial > 0))
        if clash.any():
            s = int(np.flatnonzero(clash)[0])
            raise ValueError(
                f"state {s} is entered by a terminating outcome but also by a "
                "non-terminating one (or is a start state): termination is not a "
                "property of the state, so no DenseMDP of S states represents it"
            )
        P, _ = self.transition_matrices()
        R = self.expected_rewards()
        idx = np.flatnonzero(ends)
        P[idx] = 0.0
        P[idx, :, idx] = 1.0
        R[idx] = 0.0
        return DenseMDP(P, R)

    def episodic_problem(self) -> str | None:
        r"""None when :math:`\gamma = 1` is well defined, else the reason (a str).

        The stochastic-shortest-path conditions (Bertsekas & Tsitsiklis 1991; Bertsekas,
        *Dynamic Programming and Optimal Control* vol. II, §3.1), checked on the graph of the
        outcomes of positive probability:

        1. from every state some policy terminates with probability 1 -- equivalently (finite
           MDP), a terminating outcome is reachable from every state;
        2. every policy that may never terminate has return :math:`-\infty`: let W be the
           largest set of states in which some action keeps the process (no terminating
           outcome, every next state in W); every such "trapping" pair (s, a) must have
           expected reward :math:`r(s, a) < 0`.  (Sufficient: a policy that fails to terminate
           ends in a closed class of trapping pairs and collects a negative expected reward at
           each of its infinitely many steps.)

        CliffWalking and Taxi pass (every non-terminating step costs at least 1); FrozenLake does
        not (walking into a wall earns 0 forever: use γ < 1).
        """
        n, m = self._num_states, self._num_actions
        src = self._pair // m
        n_pairs = n * m
        # 1. backward reachability of termination
        can = np.zeros(n, dtype=bool)
        can[src[self._terminated]] = True
        for _ in range(n):
            new = can.copy()
            new[src[can[self._next_states]]] = True
            if (new == can).all():
                break
            can = new
        if not can.all():
            s = int(np.flatnonzero(~can)[0])
            return (
                f"from state {s} no action sequence ever terminates: its return at gamma = 1 "
                "is undefined (use gamma < 1)"
            )
        # 2. the largest trapping set and its pairs
        inside = np.ones(n, dtype=bool)
        while True:
            leaves = self._terminated | ~inside[self._next_states]
            stay = np.bincount(self._pair, weights=leaves, minlength=n_pairs) == 0
            stay = stay.reshape(n, m) & inside[:, None]
            new = stay.any(axis=1)
            if (new == inside).all():
                break
            inside = new
        r = self.expected_rewards()
        bad = stay & (r >= 0)
        if bad.any():
            s, a = (int(i) for i in np.argwhere(bad)[0])
            return (
                f"taking action {a} in state {s} can keep an episode going forever with "
                f"expected reward {r[s, a]:g} >= 0 per step: a policy that never terminates "
                "has a finite return, so gamma = 1 is not a proper episodic problem (use "
                "gamma < 1)"
            )
        return None

    def value_iteration(
        self, gamma: float, *, epsilon: float = 1e-9, max_iter: int = 100_000
    ) -> SSPResult:
        r"""Value iteration on the outcome model itself, :math:`\gamma = 1` included.

        .. math::  v_{k+1}(s) = \max_a \Big[r(s, a) + \gamma \sum_{s'}
                   P_{\text{continue}}[s, a, s']\, v_k(s')\Big],\qquad v_0 = 0

        (terminating outcomes contribute their reward only: the value after termination is 0).
        For :math:`\gamma < 1` it stops when :math:`\lVert v_{k+1} - v_k\rVert_\infty <
        \varepsilon(1-\gamma)/(2\gamma)` (Puterman Thm 6.3.1, as
        :func:`fastlmrl.value_iteration`).  :math:`\gamma = 1` is the stochastic shortest
        path problem: refused (ValueError with the reason) unless :meth:`episodic_problem` finds
        none, and then it converges (Bertsekas & Tsitsiklis 1991, Prop. 2); it stops when
        :math:`\lVert v_{k+1} - v_k\rVert_\infty < \varepsilon`.  Either way at most
        ``max_iter`` sweeps: a run that has not met the rule returns ``converged=False``.
        NumPy, float64 (a planning utility, not a kernel).
        """
        gamma = check.real(gamma, "gamma", 0.0, 1.0)
        epsilon = check.real(epsilon, "epsilon", 0.0, None, low_open=True)
        max_iter = check.positive_int(max_iter, "max_iter", 1)
        if gamma == 1.0:
            problem = self.episodic_problem()
            if problem is not None:
                raise ValueError(f"gamma = 1: {problem}")
            tol = epsilon
        elif gamma == 0.0:
            tol = math.inf
        else:
            tol = epsilon * (1.0 - gamma) / (2.0 * gamma)
        _, cont = self.transition_matrices()
        r = self.expected_rewards()
        v = np.zeros(self._num_states)
        converged = False
        k = 0
        while k < max_iter:
            q = r + gamma * (cont @ v)
            v_new = q.max(axis=1)
            k += 1
            delta = float(np.abs(v_new - v).max())
            v = v_new
            if delta < tol:
                converged = True
                break
        q = r + gamma * (cont @ v)
        return SSPResult(
            values=v, q=q, policy=q.argmax(axis=1).astype(np.int64), num_iter=k, converged=converged
        )

    # --- stepping -------------------------------------------------------------------------------
    def _plan_reset(self, mask: np.ndarray, stream: RandomStream) -> tuple[np.ndarray, int]:
        """(start states (B,), counters used) for the rows in ``mask``; nothing committed."""
        n = mask.shape[0]
        if self._start_states.size == 1:
            return np.full(n, self._start_states[0]), 0
        check_capacity(stream, n)
        # a copy of the stream: the environment's advances only when the reset is committed
        u = uniforms(RandomStream(stream.seed, stream.stream, stream.counter), n)
        idx = np.minimum(
            np.searchsorted(self._start_cdf, u, side="right"), self._start_states.size - 1
        )
        return self._start_states[idx], n

    def _commit_reset(
        self, mask: np.ndarray, stream: RandomStream, plan: tuple[np.ndarray, int]
    ) -> None:
        starts, used = plan
        self._states[mask] = starts[mask]
        self._steps[mask] = 0
        self._needs_reset[mask] = False
        advance(stream, used)

    def _check_state(self) -> None:
        for name in ("_states", "_steps"):
            arr = getattr(self, name)
            if (
                not isinstance(arr, np.ndarray)
                or arr.dtype != np.int64
                or arr.shape != (self._num_envs,)
                or not arr.flags.c_contiguous
                or not arr.flags.writeable
            ):
                raise ValueError(
                    f"the environment's {name[1:]} array was replaced or damaged: "
                    "assign a (num_envs,) integer array to it, or call reset()"
                )

    def reset(
        self, seed: int | RandomStream | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every sequence: ``(obs (B,) int64 states S_0, info {})``; ``seed`` None (continue
        the stream), an int or a :class:`fastlmrl.RandomStream` (used and advanced)."""
        self._check_state()
        stream = _stream(seed, self._stream)
        mask = np.ones(self._num_envs, dtype=bool)
        plan = self._plan_reset(mask, stream)
        self._stream = stream
        self._commit_reset(mask, stream, plan)
        return self._states.copy(), {}

    def step(
        self, actions: ArrayLike
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every sequence: ``(obs, rewards, terminated, truncated, info)`` ((B,) arrays).

        Next-step autoreset as :class:`fastlmrl.ContextMDP`.  Bad actions or an exhausted stream
        raise a ValueError and nothing changes."""
        if self._stream is None:
            raise RuntimeError("call reset() before step()")
        self._check_state()
        acts = check.ids(actions, "actions", self._num_envs).astype(np.int64, copy=False)
        active = ~self._needs_reset
        idle = self._needs_reset.copy()
        plan = self._plan_reset(idle, self._stream) if idle.any() else None
        n = self._num_envs
        used = plan[1] if plan is not None else 0
        key, counter = check_capacity(self._stream, used + n)
        states, steps = self._states.copy(), self._steps.copy()
        rewards = np.empty(n, dtype=np.float64)
        terminated = np.empty(n, dtype=np.uint8)
        truncated = np.empty(n, dtype=np.uint8)
        status = _env_kernels.tabular_mdp_step(
            *self._kernel_tables,
            self._num_actions,
            self._max_steps,
            np.uint64(key),
            np.uint64((counter + used) & MASK64),
            acts,
            active.view(np.uint8),
            states,
            steps,
            rewards,
            terminated,
            truncated,
        )
        _raise(status, {"actions": (np.where(active, acts, 0), self._num_actions)})
        self._states[:] = states
        self._steps[:] = steps
        if plan is not None:
            self._commit_reset(idle, self._stream, plan)
        advance(self._stream, n)
        terminated = terminated.view(bool)
        truncated = truncated.view(bool)
        self._needs_reset = terminated | truncated
        return self._states.copy(), rewards, terminated, truncated, {}
