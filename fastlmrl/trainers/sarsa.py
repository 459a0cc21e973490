r"""SARSA trainer (Rummery & Niranjan 1994; Sutton & Barto 2018, §6.4, eq. 6.7).

On-policy TD control: in :math:`S_{t+1}` the next action :math:`A_{t+1}` is chosen first from the
behaviour policy (ε-greedy or Boltzmann in :math:`Q`, *before* the update, as in S&B's box on
p. 130), then

.. math::  Q(S_t, A_t) \leftarrow Q(S_t, A_t) + \alpha\,\big[R_{t+1}
           + \gamma\,(1 - \text{terminated})\,Q(S_{t+1}, A_{t+1}) - Q(S_t, A_t)\big]

and :math:`A_{t+1}` is the action taken at the next step.  No next action is drawn after a
termination; after a time-limit truncation one is drawn for the bootstrap only.  With the
exploration annealed toward greedy (GLIE) SARSA converges to :math:`Q^*` (S&B §6.4; Singh et al.
2000).  Loop and conventions: :mod:`fastlmrl.trainers._value_base`; update:
:func:`fastlmrl.sarsa_update`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..td_learning import sarsa_update
from ._value_base import TabularValueTrainer, ValueConfig

__all__ = ["SarsaConfig", "SarsaTrainer"]


@dataclass
class SarsaConfig(ValueConfig):
    """Hyper-parameters of :class:`SarsaTrainer` (update: S&B eq. 6.7, module docstring).

    The shared settings (step size, discount, exploration schedule, ...) are those of
    :class:`~fastlmrl.trainers._value_base.ValueConfig`, documented there.
    """


class SarsaTrainer(TabularValueTrainer):
    """Tabular SARSA: ``SarsaTrainer(env, config=None, seed=0)``; ``q`` is the table."""

    algorithm = "sarsa"
    Config = SarsaConfig
    select_next = True

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
    ) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.config
        a2 = np.zeros(s2.shape[0], dtype=np.int64)
        need = ~terminated
        if need.any():
            a2[need] = self.select(s2[need], param)
        td = sarsa_update(self.q, s, a, r, s2, a2, terminated, cfg.alpha, cfg.gamma)
        return td, a2
