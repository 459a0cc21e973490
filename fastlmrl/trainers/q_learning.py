r"""Q-learning trainer (Watkins 1989; Sutton & Barto 2018, §6.5, eq. 6.8).

For every transition :math:`(S_t, A_t, R_{t+1}, S_{t+1})` of a batch of episodes (time index
``t`` = step within the episode, :math:`R_{t+1}` the reward that followed :math:`A_t`):

.. math::  Q(S_t, A_t) \leftarrow Q(S_t, A_t) + \alpha\,\big[R_{t+1}
           + \gamma\,(1 - \text{terminated})\,\max_a Q(S_{t+1}, a) - Q(S_t, A_t)\big]

with the behaviour policy ε-greedy or Boltzmann in :math:`Q` (off-policy: the target is greedy).
A time-limit truncation bootstraps (``terminated = 0``).  The loop and its conventions are in
:mod:`fastlmrl.trainers._value_base`; the update is :func:`fastlmrl.q_learning_update`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..td_learning import q_learning_update
from ._value_base import TabularValueTrainer, ValueConfig

__all__ = ["QLearningConfig", "QLearningTrainer"]


@dataclass
class QLearningConfig(ValueConfig):
    """Hyper-parameters of :class:`QLearningTrainer` (update: S&B eq. 6.8, module docstring).

    The shared settings (step size, discount, exploration schedule, ...) are those of
    :class:`~fastlmrl.trainers._value_base.ValueConfig`, documented there.
    """


class QLearningTrainer(TabularValueTrainer):
    r"""Tabular Q-learning on a token environment: ``QLearningTrainer(env, config=None, seed=0)``.

    Attributes: ``q`` (S, A) the action-value table; ``history`` the metrics of each iteration
    (``reward``, ``episode_length``, ``truncated``, ``episodes``, ``tokens``, ``td_error`` = mean
    :math:`|\delta_t|`, ``epsilon`` / ``temperature``, ``tokens_per_second``, ...).
    """

    algorithm = "q_learning"
    Config = QLearningConfig

    def learn(
        self,
        rows: np.ndarray,
        s: np.ndarray,
        a: np.ndarray,
        r: np.ndarray,
        s2: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        param: float,
    ) -> np.ndarray:
        cfg = self.config
        return q_learning_update(self.q, s, a, r, s2, terminated, cfg.alpha, cfg.gamma)
