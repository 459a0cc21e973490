r"""Advantage actor-critic (A2C, the synchronous A3C of Mnih et al. 2016) on a text task.

One iteration, top to bottom:

1. Generate B sequences; per-token rewards are the task reward minus the KL leash
   :math:`\beta(\log\pi - \log\pi_{ref})`.
2. GAE(γ, λ) advantages and returns from the tabular critic :math:`V(s)` (Schulman et al. 2016).
3. One gradient step on :math:`-\hat A_t\log\pi(a_t|s_t) + c_v (V(s_t) - \hat R_t)^2 - c_e
H(\pi(\cdot|s_t))`
   averaged over tokens (:func:`fastlmrl.a2c_loss_tabular`: one softmax per distinct context):
   the actor's gradient with respect to the visited rows of the policy table and the critic's
   with respect to V (summed per context), each applied by Adam to those rows.

The config also accepts TRL's spellings of its fields: ``beta``, ``learning_rate``, ``vf_coef``
(DEVELOPING.md, Names).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .. import _validation as check
from ..advantages import gae
from ..tabular_losses import a2c_loss_tabular
from ._policy_base import PolicyGradientTrainer, check_config

if TYPE_CHECKING:
    from ..tasks import TextTask

__all__ = ["A2CConfig", "A2CTrainer"]


@check.renamed(ecosystem={"beta": "kl_coef", "learning_rate": "lr", "vf_coef": "value_coef"})
@dataclass
class A2CConfig:
    r"""Hyper-parameters of :class:`A2CTrainer` (advantage actor-critic, Mnih et al. 2016).

    The loss per token is
    :math:`-\hat A_t\log\pi(a_t|s_t) + c_v (V(s_t) - \hat R_t)^2 - c_e H(\pi(\cdot|s_t))`,
    averaged over the tokens of the batch, with GAE(γ, λ) advantages :math:`\hat A_t` and returns
    :math:`\hat R_t` (Schulman et al. 2016).  TRL's spellings are accepted too: ``beta``
    (``kl_coef``), ``learning_rate`` (``lr``), ``vf_coef`` (``value_coef``).

    Attributes
    ----------
    num_sequences : int > 0
        B, the sequences generated per iteration (one gradient step per iteration).
    value_lr : float > 0
        Adam step size of the tabular critic :math:`V(s)`.
    gamma : float in [0, 1]
        Discount γ per token.
    lam : float in [0, 1]
        GAE's λ (0: one-step TD advantages, 1: Monte Carlo returns minus :math:`V`).
    value_coef : float >= 0
        :math:`c_v`, the weight of the squared value error (TRL: ``vf_coef``).
    entropy_coef : float >= 0
        :math:`c_e`, the weight of the entropy bonus (nats).
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
    lam: float = 0.95
    value_coef: float = 0.5
    entropy_coef: float = 0.001
    kl_coef: float = 0.1
    kl_target: float | None = None
    kl_horizon: float = 256.0

    def __post_init__(self):
        check_config(
            self,
            positive_ints=("num_sequences",),
            positive=("lr", "value_lr"),
            nonnegative=("kl_coef", "value_coef", "entropy_coef"),
            unit=("gamma", "lam"),
        )


class A2CTrainer(PolicyGradientTrainer):
    r"""Advantage actor-critic (A2C, the synchronous form of A3C, Mnih et al. 2016) on a
    :class:`fastlmrl.tasks.TextTask` with a tabular softmax policy and a tabular critic.

    Each :meth:`iteration` generates ``num_sequences`` sequences, shapes the per-token rewards with
    the KL leash :math:`-\beta(\log\pi - \log\pi_{ref})`, computes GAE advantages and returns
    from the critic and takes one Adam step on the actor and the critic with
    :func:`fastlmrl.a2c_loss_tabular` (see the module docstring for the steps).

    Parameters
    ----------
    task, config, seed
        As for :class:`~fastlmrl.trainers._policy_base.PolicyGradientTrainer`; ``config`` is a
        :class:`A2CConfig` (None: the defaults).
    """

    algorithm = "a2c"
    Config = A2CConfig

    def __init__(self, task: TextTask, config: A2CConfig | None = None, seed: int = 0):
        super().__init__(task, config or A2CConfig(), seed)

    def uses_values(self) -> bool:
        return True

    def iteration(self) -> dict:
        cfg = self.config
        # 1. experience
        batch = self.rollout()
        rewards = self.kl_shaped_rewards(batch, self.kl_controller.value)
        # 2. GAE from the critic
        values, bootstrap = self.state_values(batch)
        advantages, returns = gae(
            rewards,
            values,
            batch.valid,
            batch.terminated,
            batch.truncated,
            bootstrap,
            gamma=cfg.gamma,
            lam=cfg.lam,
        )
        contexts = self.flat(batch, batch.contexts)
        tokens = self.flat(batch, batch.actions)
        v = self.flat(batch, values)
        ret = self.flat(batch, returns)
        # 3. actor and critic step
        result = a2c_loss_tabular(
            self.policy,
            contexts,
            tokens,
            self.flat(batch, advantages),
            v,
            ret,
            weights=np.full(contexts.size, 1.0 / max(contexts.size, 1)),
            value_coef=cfg.value_coef,
            entropy_coef=cfg.entropy_coef,
        )
        self.update_policy(result.rows, result.grad_rows)
        self.update_values(
            result.rows, self.sum_by_context(contexts, result.grad_values, result.rows)
        )
        metrics = self.base_metrics(batch, rewards)
        metrics.update(self.value_metrics(v, ret))
        metrics.update(value_loss=float(result.value_loss))
        return self.finish(batch, metrics, contexts)
