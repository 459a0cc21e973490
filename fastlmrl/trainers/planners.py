r"""Planners: value iteration and policy iteration on a token MDP whose dynamics and rewards are
known (a :class:`fastlmrl.ContextMDP`, via :meth:`~fastlmrl.ContextMDP.to_token_mdp`).

They share the trainer interface (``iteration()``, ``train()``, ``save()`` / ``load()``,
``greedy_actions()``) but "train" in one iteration: the MDP is solved exactly (to the solver's
tolerance) by :func:`fastlmrl.value_iteration` (Sutton & Barto 2018, §4.4, eq. 4.10) or
:func:`fastlmrl.policy_iteration` (S&B §4.3), giving :math:`v_*` (``values``), the action values

.. math::  q_*(s, a) = r(s, a) + \gamma\, v_*(\text{next\_state}[s, a])\qquad(\text{0 for a
           terminal } s)

(``q``, S&B eq. 3.20 for deterministic transitions) and the greedy policy
:math:`\pi_*(s) = \min\arg\max_a q_*(s, a)` (``policy``; ties to the lowest token id).  Later
iterations solve again (same result).  Each iteration then *evaluates* ``policy`` on the
environment: one batch of B episodes played greedily (starts from the trainer's stream), whose
mean undiscounted return is the ``reward`` metric.  Metrics also include ``iterations`` (sweeps
for VI, evaluations for PI), ``converged``, ``value`` (mean :math:`v_*` of the start contexts the
batch used) and ``tokens`` (evaluation steps).

A :class:`fastlmrl.TextGenerationEnv` has no reward table (its reward is a function of whole
sequences) and is refused.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _validation as check
from ..dynamic_programming import policy_iteration, value_iteration
from ..environments import ContextMDP
from ._value_base import DTYPES, _choice, play_episodes
from .base import Trainer

__all__ = ["PolicyIterationConfig", "PolicyIterationPlanner", "ValueIterationConfig",
           "ValueIterationPlanner"]


@dataclass
class ValueIterationConfig:
    """``gamma`` ∈ [0, 1] (1 only for acyclic MDPs), ``epsilon`` > 0 (VI stops when the greedy
    policy is ε-optimal, see :func:`fastlmrl.value_iteration`), ``max_iter`` sweeps, table
    ``dtype`` of ``q``, ``max_episode_steps`` cut of the evaluation episodes."""

    gamma: float = 0.99
    epsilon: float = 1e-6
    max_iter: int = 10_000
    dtype: str = "float64"
    max_episode_steps: int = 10_000


@dataclass
class PolicyIterationConfig:
    """``gamma`` ∈ [0, 1], ``max_iter`` policy evaluations, ``dtype`` of ``q``,
    ``max_episode_steps`` cut of the evaluation episodes."""

    gamma: float = 0.99
    max_iter: int = 1_000
    dtype: str = "float64"
    max_episode_steps: int = 10_000


class _Planner(Trainer):
    def __init__(self, env, config=None, seed: int = 0):
        if config is None:
            config = self.Config()
        super().__init__(config, seed)
        if not isinstance(env, ContextMDP):
            raise TypeError(
                f"{type(self).__name__} needs an environment whose transition and reward tables "
                f"are known (a fastlmrl.ContextMDP, see ContextMDP.to_token_mdp()), got "
                f"{type(env).__name__}")
        self.validate_config(config)
        self.env = env
        self.mdp = env.to_token_mdp()
        self.num_states, self.num_actions = self.mdp.num_states, self.mdp.num_actions
        self.q = np.zeros((self.num_states, self.num_actions), dtype=np.dtype(config.dtype))
        self.values = np.zeros(self.num_states)
        self.policy = np.zeros(self.num_states, dtype=np.int64)

    def validate_config(self, cfg) -> None:
        check.real(cfg.gamma, "config.gamma", 0.0, 1.0)
        check.positive_int(cfg.max_iter, "config.max_iter", 1)
        _choice(cfg.dtype, "dtype", DTYPES)
        check.positive_int(cfg.max_episode_steps, "config.max_episode_steps", 1)

    def solve(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def arrays(self) -> dict:
        return {"q": self.q, "values": self.values, "policy": self.policy}

    def iteration(self) -> dict:
        result = self.solve()
        self.q[...] = result.q
        self.values[...] = result.values
        self.policy[...] = result.policy
        starts = []

        def act(states):
            if not starts:
                starts.append(states.copy())
            return self.policy[states]

        batch = play_episodes(self.env, self.stream, self.config.max_episode_steps, act)
        metrics = batch.metrics()
        metrics["iterations"] = int(result.num_iter)
        metrics["converged"] = bool(result.converged)
        metrics["value"] = float(self.values[starts[0]].mean())
        return metrics

    def greedy_actions(self, states) -> np.ndarray:
        """:math:`\\pi_*(s)` for each state (the planned policy; all zeros before training)."""
        states = check.ids(states, "states").astype(np.int64, copy=False)
        if states.size and (states.min() < 0 or states.max() >= self.num_states):
            i = int(np.flatnonzero((states < 0) | (states >= self.num_states))[0])
            raise ValueError(f"states[{i}] = {int(states[i])} is out of range "
                             f"[0, {self.num_states})")
        return self.policy[states]

    def greedy_policy(self) -> np.ndarray:
        """(S,) int64: the planned policy (a copy)."""
        return self.policy.copy()


class ValueIterationPlanner(_Planner):
    """Value iteration on the environment's known MDP:
    ``ValueIterationPlanner(env, config=None, seed=0)``; ``q``, ``values``, ``policy``."""

    algorithm = "value_iteration"
    Config = ValueIterationConfig

    def validate_config(self, cfg) -> None:
        super().validate_config(cfg)
        check.real(cfg.epsilon, "config.epsilon", 0.0, None, low_open=True)

    def solve(self):
        cfg = self.config
        return value_iteration(self.mdp, cfg.gamma, epsilon=cfg.epsilon, max_iter=cfg.max_iter)


class PolicyIterationPlanner(_Planner):
    """Howard's policy iteration on the environment's known MDP:
    ``PolicyIterationPlanner(env, config=None, seed=0)``; ``q``, ``values``, ``policy``."""

    algorithm = "policy_iteration"
    Config = PolicyIterationConfig

    def solve(self):
        return policy_iteration(self.mdp, self.config.gamma, max_iter=self.config.max_iter)
