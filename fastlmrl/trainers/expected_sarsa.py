r"""Expected SARSA trainer (van Seijen et al. 2009; Sutton & Barto 2018, §6.6, eq. 6.9).

.. math::  Q(S_t, A_t) \leftarrow Q(S_t, A_t) + \alpha\,\big[R_{t+1}
           + \gamma\,(1 - \text{terminated})\sum_a \pi(a \mid S_{t+1})\,Q(S_{t+1}, a)
           - Q(S_t, A_t)\big]

with :math:`\pi` the ε-greedy policy of the current iteration (the behaviour policy, so this is
the on-policy form): :math:`\sum_a \pi(a|s) Q(s,a) = (1-\varepsilon)\max_a Q(s,a) +
\varepsilon\,\frac1V \sum_a Q(s,a)` (:func:`fastlmrl.expected_sarsa_update`).  With a fixed ε the
fixed point is :math:`q_{\pi_\varepsilon}`; with ε → 0 it is :math:`Q^*` (ε = 0 is Q-learning).
The expectation is only implemented for ε-greedy, so ``exploration`` must be
``"epsilon_greedy"``.  Started from a language model (a :class:`fastlmrl.tasks.TextTask`), the
behaviour policy is the Boltzmann policy around the reference (see
:mod:`fastlmrl.trainers._value_base`) and the target policy ε-greedy with ε = ``epsilon_end``
(off-policy expected SARSA, S&B §6.6).  Loop and conventions: :mod:`fastlmrl.trainers._value_base`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..td_learning import expected_sarsa_update
from ._value_base import TabularValueTrainer, ValueConfig

__all__ = ["ExpectedSarsaConfig", "ExpectedSarsaTrainer"]


@dataclass
class ExpectedSarsaConfig(ValueConfig):
    """Hyper-parameters of :class:`ExpectedSarsaTrainer` (update: S&B eq. 6.9, module docstring).

    The shared settings (step size, discount, exploration schedule, ...) are those of
    :class:`~fastlmrl.trainers._value_base.ValueConfig`, documented there; ``exploration`` must be
    ``"epsilon_greedy"`` (the expectation is taken under the ε-greedy target policy).
    """


class ExpectedSarsaTrainer(TabularValueTrainer):
    """Tabular expected SARSA: ``ExpectedSarsaTrainer(env, config=None, seed=0)``."""

    algorithm = "expected_sarsa"
    Config = ExpectedSarsaConfig

    def validate_config(self, cfg: Any) -> None:
        super().validate_config(cfg)
        if cfg.exploration != "epsilon_greedy":
            raise ValueError(
                "expected SARSA averages over the epsilon-greedy policy: "
                f"config.exploration must be 'epsilon_greedy', got "
                f"{cfg.exploration!r}"
            )

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
        # Around a language model the ε schedule does not drive the behaviour (the reference
        # does); the target policy is then ε-greedy in Q with ε = epsilon_end.  (An ε-greedy
        # target with ε near 1, the start of the schedule, would average Q over every token of
        # the vocabulary: the value of writing letter salad, ~0, and nothing would be learnt.)
        epsilon = cfg.epsilon_end if self.prior is not None else param
        return expected_sarsa_update(self.q, s, a, r, s2, terminated, cfg.alpha, cfg.gamma, epsilon)
