r"""REINFORCE on a text task (Williams 1992; Sutton & Barto 2018, §13.3–13.4).

One iteration, top to bottom:

1. Generate B sequences with the current policy; per-token rewards are the task reward (paid at
   the last token) minus the KL leash :math:`\beta(\log\pi - \log\pi_{ref})` of each token.
2. Returns :math:`G_t = \sum_{k \ge t} \gamma^{k-t} r_k` within each sequence (EOS → terminated,
   length limit → truncated; the truncated tail is not bootstrapped unless a value table exists).
3. Baseline ``"none"``, ``"mean"`` (the batch mean return) or ``"value"`` (a learned tabular
   :math:`V(s)`, S&B eq. 13.11, regressed on the returns).
4. The loss :math:`-\sum_t (G_t - b_t)\log\pi(a_t|s_t)`, averaged over tokens, with its gradient
   with respect to the logits (:func:`fastlmrl.reinforce_loss`); Adam on the visited rows.

The config also accepts TRL's spellings of its fields: ``beta``, ``learning_rate``
(DEVELOPING.md, Names).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .. import _validation as check
from ..advantages import discounted_returns
from ..tabular_losses import reinforce_loss_tabular
from ._policy_base import PolicyGradientTrainer, check_config

if TYPE_CHECKING:
    from ..tasks import TextTask

__all__ = ["ReinforceConfig", "ReinforceTrainer"]

BASELINES = ("none", "mean", "value")


@check.renamed(ecosystem={"beta": "kl_coef", "learning_rate": "lr"})
@dataclass
class ReinforceConfig:
    r"""Hyper-parameters of :class:`ReinforceTrainer` (REINFORCE, Williams 1992; Sutton & Barto
    2018, §13.3-13.4).

    The loss is :math:`-\sum_t (G_t - b_t)\log\pi(a_t|s_t)` averaged over the tokens of the
    batch, with :math:`G_t = \sum_{k \ge t}\gamma^{k-t} r_k` the return from token t of its
    sequence.  TRL's spellings are accepted too: ``beta`` (``kl_coef``), ``learning_rate``
    (``lr``).

    Attributes
    ----------
    num_sequences : int > 0
        B, the sequences generated per iteration (one gradient step per iteration).
    value_lr : float > 0
        Adam step size of the value table (used only with ``baseline="value"``).
    gamma : float in [0, 1]
        Discount γ per token.
    baseline : {"none", "mean", "value"}
        :math:`b_t`: 0, the batch mean return, or a learned tabular :math:`V(s_t)` regressed on
        the returns (S&B eq. 13.11).
    lr, kl_coef, kl_target, kl_horizon
        The policy table's Adam step size (TRL: ``learning_rate``) and the KL leash (β's initial
        value, TRL: ``beta``; the adaptive controller's target and horizon), shared by the tabular
        policy-gradient trainers and documented once on
        :class:`~fastlmrl.trainers._policy_base.PolicyGradientTrainer`.
    """

    num_sequences: int = 256
    lr: float = 0.02
    value_lr: float = 0.1
    gamma: float = 1.0
    baseline: str = "mean"
    kl_coef: float = 0.1
    kl_target: float | None = None
    kl_horizon: float = 256.0

    def __post_init__(self):
        check_config(
            self,
            positive_ints=("num_sequences",),
            positive=("lr", "value_lr"),
            nonnegative=("kl_coef",),
            unit=("gamma",),
            choices={"baseline": BASELINES},
        )


class ReinforceTrainer(PolicyGradientTrainer):
    r"""REINFORCE with an optional baseline (Williams 1992; Sutton & Barto 2018, §13.4) on a
    :class:`fastlmrl.tasks.TextTask` with a tabular softmax policy.

    Each :meth:`iteration` generates ``num_sequences`` sequences, shapes the per-token rewards with
    the KL leash :math:`-\beta(\log\pi - \log\pi_{ref})`, computes the discounted returns and
    takes one Adam step on :func:`fastlmrl.reinforce_loss_tabular` (and on the value table with
    ``baseline="value"``).

    Parameters
    ----------
    task, config, seed
        As for :class:`~fastlmrl.trainers._policy_base.PolicyGradientTrainer`; ``config`` is a
        :class:`ReinforceConfig` (None: the defaults).
    """

    algorithm = "reinforce"
    Config = ReinforceConfig

    def __init__(self, task: TextTask, config: ReinforceConfig | None = None, seed: int = 0):
        super().__init__(task, config or ReinforceConfig(), seed)

    def uses_values(self) -> bool:
        return self.config.baseline == "value"

    def iteration(self) -> dict:
        cfg = self.config
        # 1. experience with KL-shaped per-token rewards
        batch = self.rollout()
        rewards = self.kl_shaped_rewards(batch, self.kl_controller.value)
        # 2. Monte Carlo returns (the truncated tail bootstraps from V when there is one)
        if self.values is not None:
            values, bootstrap = self.state_values(batch)
        else:
            values, bootstrap = None, np.zeros(batch.valid.shape[0])
        returns = discounted_returns(
            rewards, batch.valid, batch.terminated, batch.truncated, bootstrap, gamma=cfg.gamma
        )
        contexts = self.flat(batch, batch.contexts)
        tokens = self.flat(batch, batch.actions)
        ret = self.flat(batch, returns)
        # 3. baseline
        weights = np.full(contexts.size, 1.0 / max(contexts.size, 1))
        baseline: str | np.ndarray | None = {"none": None, "mean": "mean"}.get(cfg.baseline)
        if cfg.baseline == "value":
            baseline = self.flat(batch, values)
        # 4. policy-gradient step (and the value regression)
        result = reinforce_loss_tabular(
            self.policy, contexts, tokens, ret, weights=weights, baseline=baseline
        )
        self.update_policy(result.rows, result.grad_rows)
        metrics = self.base_metrics(batch, rewards)
        if self.values is not None:
            self.update_values(contexts, (self.flat(batch, values) - ret) * weights)
            metrics.update(self.value_metrics(self.flat(batch, values), ret))
        return self.finish(batch, metrics, contexts)
