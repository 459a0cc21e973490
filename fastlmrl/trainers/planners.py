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
sequences) and is refused.  A :class:`fastlmrl.tasks.TextTask` (a language model with its
environment) is planned for with a *learned model* (certainty-equivalence planning, Sutton &
Barto 2018, §8.1): the transitions of the k-gram context are known, :math:`s' = (sV + a) \bmod
V^k` (EOS leads to a terminal END state), and the reward model :math:`\hat r(s, a)` is the mean
per-token task reward observed after token ``a`` in context ``s``: first in ``model_sequences``
samples of the reference LM (drawn from ``RandomStream(seed, 1)``, a stream of its own), then also
in every iteration's episodes (model learning from experience, Dyna, S&B §8.2: a plan that relies
on a reward the aliased k-gram context does not deliver sees it fail and is corrected); 0 for
pairs never seen.  The planned :math:`q_*` of that model drives the same policy as the value
methods' around the LM, :math:`\pi(a|s) \propto \pi_{ref}(a|s)\,e^{q_*(s,a)/\beta}`
(:mod:`fastlmrl.trainers._value_base`), which plays the episodes on the real environment
(``policy`` holds its mode); ``model_sums`` and ``model_counts`` are part of the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .. import _validation as check
from ..dynamic_programming import DenseMDP, TokenMDP, policy_iteration, value_iteration
from ..environments import ContextMDP
from ..log_probs import log_softmax
from ..rng import RandomStream
from ..selection import boltzmann, greedy
from ..tabular_mdp import TabularMDP
from ._value_base import DTYPES, _choice, play_episodes
from .base import Trainer

__all__ = [
    "PolicyIterationConfig",
    "PolicyIterationPlanner",
    "ValueIterationConfig",
    "ValueIterationPlanner",
]


@dataclass
class ValueIterationConfig:
    """Hyper-parameters of :class:`ValueIterationPlanner` (JSON-serialisable).

    Attributes
    ----------
    gamma : discount :math:`\\gamma \\in [0, 1]` (1 only for an MDP whose episodes always end,
        e.g. an acyclic one; a :class:`fastlmrl.TabularMDP` needs gamma < 1 here).
    epsilon : > 0; value iteration stops when the greedy policy is ε-optimal (the stopping rule
        of :func:`fastlmrl.value_iteration`, Puterman 1994, Thm 6.3.1), in reward units.
    max_iter : the most sweeps (Bellman optimality backups of every state) per solve.
    dtype : dtype of the ``q`` table, ``"float32"`` or ``"float64"`` (``values`` are float64).
    max_episode_steps : steps after which an evaluation episode is cut (a truncation).
    model_sequences : TextTask only: samples of the reference LM that seed the learned reward
        model before the first solve (module docstring).
    kl_coef : TextTask only: β > 0 of the played policy
        :math:`\\pi \\propto \\pi_{ref}\\, e^{q_*/\\beta}` (the coefficient TRL calls ``beta``;
        only ``kl_coef`` is accepted here).
    """

    gamma: float = 0.9
    epsilon: float = 1e-6
    max_iter: int = 10_000
    dtype: str = "float64"
    max_episode_steps: int = 10_000
    model_sequences: int = 1024
    kl_coef: float = 0.02


@dataclass
class PolicyIterationConfig:
    """Hyper-parameters of :class:`PolicyIterationPlanner` (JSON-serialisable).

    Attributes
    ----------
    gamma : discount :math:`\\gamma \\in [0, 1]` (as :class:`ValueIterationConfig`).
    max_iter : the most policy evaluations (each followed by a greedy improvement, S&B §4.3).
    dtype : dtype of the ``q`` table, ``"float32"`` or ``"float64"``.
    max_episode_steps : steps after which an evaluation episode is cut (a truncation).
    model_sequences : TextTask only: reference-LM samples seeding the learned reward model.
    kl_coef : TextTask only: β > 0 of the played policy around the reference (TRL's ``beta``;
        only ``kl_coef`` is accepted here).
    """

    gamma: float = 0.9
    max_iter: int = 1_000
    dtype: str = "float64"
    max_episode_steps: int = 10_000
    model_sequences: int = 1024
    kl_coef: float = 0.02


def text_transitions(env: Any) -> tuple[np.ndarray, np.ndarray]:
    """(next_state (S+1, V) int64, terminal (S+1,) bool) of a text environment's k-gram contexts:
    :math:`s' = (sV + a) \\bmod V^k`, EOS -> the terminal END state S (absorbing)."""
    n_ctx, vocab = env.num_contexts, env.vocab_size
    next_state = np.empty((n_ctx + 1, vocab), dtype=np.int64)
    next_state[:n_ctx] = (np.arange(n_ctx)[:, None] * vocab + np.arange(vocab)[None, :]) % n_ctx
    if env.eos_id >= 0:
        next_state[:n_ctx, env.eos_id] = n_ctx
    next_state[n_ctx] = n_ctx
    terminal = np.zeros(n_ctx + 1, dtype=bool)
    terminal[n_ctx] = True
    return next_state, terminal


class _Planner(Trainer):
    """The shared planner: builds the known (or learned) MDP, solves it, evaluates the policy."""

    # the config dataclass of the subclass (Any: trainers/base.py declares Trainer.Config = None)
    Config: Any = None
    mdp: TokenMDP | DenseMDP
    prior: np.ndarray | None

    def __init__(self, env: Any, config: Any = None, seed: int = 0) -> None:
        if config is None:
            config = self.Config()
        super().__init__(config, seed)
        self.prior = None
        if hasattr(env, "env") and hasattr(env, "reference"):  # a TextTask: a learned model
            self.validate_config(config)
            task = env
            env = task.env
            self.prior = log_softmax(np.asarray(task.reference, dtype=np.float64))
            self._transitions = text_transitions(env)
            # reward-model statistics: sum and count of the rewards seen after (s, a), first
            # from samples of the reference LM, then from every iteration's episodes
            self.model_sums = np.zeros((env.num_contexts + 1, env.vocab_size))
            self.model_counts = np.zeros((env.num_contexts + 1, env.vocab_size), dtype=np.int64)
            batch = env.rollout(
                np.ascontiguousarray(task.reference),
                RandomStream(seed, 1),
                num_sequences=config.model_sequences,
            )
            self._observe(
                batch.contexts[batch.valid], batch.actions[batch.valid], batch.rewards[batch.valid]
            )
            self.mdp = self.text_model()
        elif isinstance(env, TabularMDP):  # stochastic: planned on its DenseMDP (gamma < 1)
            self.validate_config(config)
            if float(config.gamma) == 1.0:
                raise ValueError(
                    "config.gamma = 1: the planners solve a TabularMDP as a DenseMDP, "
                    "which needs gamma < 1; TabularMDP.value_iteration(1.0) solves "
                    "an episodic one at gamma = 1"
                )
            self.mdp = env.to_dense()
        elif not isinstance(env, ContextMDP):
            raise TypeError(
                f"{type(self).__name__} needs an environment whose transition and reward tables "
                f"are known (a fastlmrl.ContextMDP, see ContextMDP.to_token_mdp(), or a "
                f"fastlmrl.tasks.TextTask, planned for with a learned reward model), got "
                f"{type(env).__name__}"
            )
        else:
            self.validate_config(config)
            self.mdp = env.to_token_mdp()
        self.env = env
        self.num_states, self.num_actions = self.mdp.num_states, self.mdp.num_actions
        self.q = np.zeros((self.num_states, self.num_actions), dtype=np.dtype(config.dtype))
        self.values = np.zeros(self.num_states)
        self.policy = np.zeros(self.num_states, dtype=np.int64)

    def validate_config(self, cfg: Any) -> None:
        check.real(cfg.gamma, "config.gamma", 0.0, 1.0)
        check.positive_int(cfg.max_iter, "config.max_iter", 1)
        _choice(cfg.dtype, "dtype", DTYPES)
        check.positive_int(cfg.max_episode_steps, "config.max_episode_steps", 1)
        check.positive_int(cfg.model_sequences, "config.model_sequences", 1)
        check.real(cfg.kl_coef, "config.kl_coef", 0.0, None, low_open=True)

    # --- the learned model of a text task -------------------------------------------------------
    def _observe(self, states: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        np.add.at(self.model_sums, (states, actions), rewards)
        np.add.at(self.model_counts, (states, actions), 1)

    def text_model(self) -> TokenMDP:
        """The current learned token MDP: known transitions, :math:`\\hat r` = mean observed
        reward per (s, a) (0 where none was observed)."""
        reward = self.model_sums / np.maximum(self.model_counts, 1)
        return TokenMDP(self._transitions[0], reward, self._transitions[1])

    def arrays(self) -> dict:
        arrays = {"q": self.q, "values": self.values, "policy": self.policy}
        if self.prior is not None:
            arrays.update(model_sums=self.model_sums, model_counts=self.model_counts)
        return arrays

    def policy_logits(self, states: ArrayLike) -> np.ndarray:
        """(n, A) logits :math:`\\log\\pi_{ref}(\\cdot|s) + q_*(s, \\cdot)/\\beta` (text)."""
        if self.prior is None:
            raise ValueError("policy_logits needs a planner of a TextTask")
        states = np.asarray(states, dtype=np.int64)
        return self.prior[states] + self.q[states].astype(np.float64) / self.config.kl_coef

    def sample(self, num_sequences: int, seed: Any) -> Any:
        """Generate with the planned policy around the reference (a TextTask planner only)."""
        if self.prior is None:
            raise ValueError("sample needs a planner of a TextTask")
        logits = self.policy_logits(np.arange(self.env.num_contexts, dtype=np.int64))
        return self.env.rollout(logits, seed, num_sequences=num_sequences)

    def solve(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def iteration(self) -> dict:
        if self.prior is not None:
            self.mdp = self.text_model()
        result = self.solve()
        self.q[...] = result.q
        self.values[...] = result.values
        self.policy[...] = result.policy
        starts: list[np.ndarray] = []
        if self.prior is not None:  # the policy around the LM, its mode as ``policy``
            n_ctx = self.env.num_contexts
            self.policy[:n_ctx] = greedy(self.policy_logits(np.arange(n_ctx)), np.arange(n_ctx))

        def act(states: np.ndarray) -> np.ndarray:
            if not starts:
                starts.append(states.copy())
            if self.prior is not None:
                logits = self.policy_logits(states)
                return boltzmann(logits, np.arange(logits.shape[0]), 1.0, self.stream)
            return self.policy[states]

        def observe(  # model learning from experience (Dyna)
            rows: np.ndarray,
            s: np.ndarray,
            a: np.ndarray,
            r: np.ndarray,
            s2: np.ndarray,
            te: np.ndarray,
            tr: np.ndarray,
        ) -> None:
            self._observe(s, a, np.asarray(r, dtype=np.float64))

        batch = play_episodes(
            self.env,
            self.stream,
            self.config.max_episode_steps,
            act,
            observe if self.prior is not None else None,
        )
        metrics = batch.metrics()
        metrics["iterations"] = int(result.num_iter)
        metrics["converged"] = bool(result.converged)
        metrics["value"] = float(self.values[starts[0]].mean())
        return metrics

    def greedy_actions(self, states: ArrayLike) -> np.ndarray:
        """:math:`\\pi_*(s)` for each state (the planned policy; all zeros before training)."""
        states = check.ids(states, "states").astype(np.int64, copy=False)
        if states.size and (states.min() < 0 or states.max() >= self.num_states):
            i = int(np.flatnonzero((states < 0) | (states >= self.num_states))[0])
            raise ValueError(
                f"states[{i}] = {int(states[i])} is out of range [0, {self.num_states})"
            )
        return self.policy[states]

    def greedy_policy(self) -> np.ndarray:
        """(S,) int64: the planned policy (a copy)."""
        return self.policy.copy()


class ValueIterationPlanner(_Planner):
    """Value iteration (S&B 2018, §4.4, eq. 4.10) on the environment's known MDP:
    ``ValueIterationPlanner(env, config=None, seed=0)``.

    Attributes: ``q`` (S, A) :math:`q_*` in ``config.dtype``, ``values`` (S,) float64
    :math:`v_*`, ``policy`` (S,) int64 the greedy policy, ``mdp`` the MDP solved (a
    :class:`fastlmrl.TokenMDP` or :class:`fastlmrl.DenseMDP`), ``env`` the environment the
    evaluation episodes are played on; for a TextTask also ``prior`` (log π_ref) and the reward
    model ``model_sums`` / ``model_counts`` (S+1, V).
    """

    algorithm = "value_iteration"
    Config = ValueIterationConfig

    def validate_config(self, cfg: Any) -> None:
        super().validate_config(cfg)
        check.real(cfg.epsilon, "config.epsilon", 0.0, None, low_open=True)

    def solve(self) -> Any:
        cfg = self.config
        return value_iteration(self.mdp, cfg.gamma, epsilon=cfg.epsilon, max_iter=cfg.max_iter)


class PolicyIterationPlanner(_Planner):
    """Howard's policy iteration (S&B 2018, §4.3; Puterman 1994, §6.4) on the environment's
    known MDP: ``PolicyIterationPlanner(env, config=None, seed=0)``.

    Attributes as :class:`ValueIterationPlanner` (``q``, ``values``, ``policy``, ``mdp``).
    """

    algorithm = "policy_iteration"
    Config = PolicyIterationConfig

    def solve(self) -> Any:
        return policy_iteration(self.mdp, self.config.gamma, max_iter=self.config.max_iter)
