r"""Double Q-learning trainer (van Hasselt 2010; Sutton & Barto 2018, §6.7, eq. 6.10).

Two tables :math:`Q_1, Q_2`; for each transition a fair coin picks the learner :math:`Q_L` (the
other one, :math:`Q_E`, evaluates):

.. math::  Q_L(S_t, A_t) \leftarrow Q_L(S_t, A_t) + \alpha\,\big[R_{t+1}
           + \gamma\,(1 - \text{terminated})\,Q_E\big(S_{t+1}, \arg\max_a Q_L(S_{t+1}, a)\big)
           - Q_L(S_t, A_t)\big]

(:func:`fastlmrl.double_q_learning_update`; the coins come from the trainer's stream).  The
behaviour policy is ε-greedy / Boltzmann in :math:`(Q_1 + Q_2)/2` (S&B's box on p. 136 uses
:math:`Q_1 + Q_2`, which has the same greedy action), kept in ``q``: after each step the
average is recomputed in float64 and rounded once at the updated cells only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..td_learning import double_q_learning_update
from ._value_base import TabularValueTrainer, ValueConfig

__all__ = ["DoubleQLearningConfig", "DoubleQLearningTrainer"]


@dataclass
class DoubleQLearningConfig(ValueConfig):
    """Hyper-parameters of :class:`DoubleQLearningTrainer` (update: S&B eq. 6.10, module
    docstring).

    The shared settings (step size, discount, exploration schedule, ...) are those of
    :class:`~fastlmrl.trainers._value_base.ValueConfig`, documented there.
    """


class DoubleQLearningTrainer(TabularValueTrainer):
    """Tabular double Q-learning: ``DoubleQLearningTrainer(env, config=None, seed=0)``.

    ``q1``, ``q2`` the two estimates; ``q`` = their average (exploration and greedy actions).
    """

    algorithm = "double_q_learning"
    Config = DoubleQLearningConfig

    def init_tables(self) -> None:
        self.q1 = self.new_table()
        self.q2 = self.new_table()
        self.q = self.new_table()

    def arrays(self) -> dict:
        return {"q1": self.q1, "q2": self.q2, "q": self.q}

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
        td = double_q_learning_update(
            self.q1, self.q2, s, a, r, s2, terminated, cfg.alpha, cfg.gamma, self.stream
        )
        mean = (self.q1[s, a].astype(np.float64) + self.q2[s, a].astype(np.float64)) * 0.5
        self.q[s, a] = mean
        return td
