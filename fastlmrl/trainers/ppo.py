r"""PPO on a text task (Schulman et al. 2017), in the RLHF form of Ziegler et al. (2019).

One iteration, top to bottom:

1. Generate B sequences with the current policy (the behaviour policy :math:`\pi_{\theta_{old}}`).
2. Per-token reward :math:`r_t = R_{t+1} - \beta\,(\log\pi_{old}(a_t|s_t) -
\log\pi_{ref}(a_t|s_t))`:
   the task reward (paid at the last token) minus the KL leash, with β from an adaptive controller
   that steers the KL per sequence toward ``kl_target`` (Ziegler et al. §2.2).
3. GAE(γ, λ) advantages and returns (Schulman et al. 2016) with a learned tabular value
   :math:`V(s)` over the same contexts; EOS → terminated (bootstrap 0), length limit → truncated
   (bootstrap :math:`V(S_{L})`).  Advantages are whitened over the batch.
4. ``epochs`` passes over the tokens in ``minibatches`` random minibatches: the clipped surrogate
   :math:`-\min(\rho A, \mathrm{clip}(\rho, 1-\epsilon, 1+\epsilon) A)` with its gradient with
   respect to the policy table's visited rows (:func:`fastlmrl.ppo_loss_tabular`: one softmax per
   distinct context), Adam on those rows; the value table regresses on the returns.
5. Log reward, KL, entropy, clip fraction, approximate KL (k3), explained variance, tokens/s.

The config also accepts TRL's spellings of its fields: ``cliprange``, ``learning_rate``,
``num_ppo_epochs``, ``num_mini_batches`` (DEVELOPING.md, Names).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .. import _validation as check
from ..advantages import gae, masked_whiten
from ._policy_base import PolicyGradientTrainer, check_config

if TYPE_CHECKING:
    from ..tasks import TextTask

__all__ = ["PPOConfig", "PPOTrainer"]


@check.renamed(
    ecosystem={
        "cliprange": "clip",
        "learning_rate": "lr",
        "num_ppo_epochs": "epochs",
        "num_mini_batches": "minibatches",
    }
)
@dataclass
class PPOConfig:
    r"""Hyper-parameters of :class:`PPOTrainer` (PPO, Schulman et al. 2017, in the RLHF form of
    Ziegler et al. 2019).

    The policy loss per token is the clipped surrogate (Schulman et al. 2017, eq. 7)
    :math:`-\min(\rho_t\hat A_t, \mathrm{clip}(\rho_t, 1-\epsilon, 1+\epsilon)\hat A_t)`,
    :math:`\rho_t = \pi_\theta(a_t|s_t)/\pi_{old}(a_t|s_t)`, with whitened GAE(γ, λ) advantages
    :math:`\hat A_t`; the tabular value :math:`V(s)` regresses on the GAE returns with its own
    Adam.  The KL leash :math:`-\beta(\log\pi_{old} - \log\pi_{ref})` is folded into the
    per-token rewards.  TRL's spellings are accepted too: ``cliprange`` (``clip``),
    ``learning_rate`` (``lr``), ``num_ppo_epochs`` (``epochs``), ``num_mini_batches``
    (``minibatches``).

    Attributes
    ----------
    num_sequences : int > 0
        B, the sequences generated per iteration.
    value_lr : float > 0
        Adam step size of the value table.
    gamma : float in [0, 1]
        Discount γ per token.
    lam : float in [0, 1]
        GAE's λ.
    clip : float > 0
        ε of the clipped surrogate (TRL: ``cliprange``).
    epochs : int > 0
        Passes over the batch's tokens per iteration (TRL: ``num_ppo_epochs``).
    minibatches : int > 0
        Random minibatches per epoch, one Adam step each (TRL: ``num_mini_batches``); at most the
        number of tokens in a batch.
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
    clip: float = 0.2
    epochs: int = 4
    minibatches: int = 4
    kl_coef: float = 0.2
    kl_target: float | None = None
    kl_horizon: float = 256.0

    def __post_init__(self):
        check_config(
            self,
            positive_ints=("num_sequences", "epochs", "minibatches"),
            positive=("lr", "value_lr", "clip"),
            nonnegative=("kl_coef",),
            unit=("gamma", "lam"),
        )
        if self.epochs * self.minibatches > 2**31:  # refused at once, not a run that never ends
            raise ValueError(
                f"epochs * minibatches = {self.epochs * self.minibatches} optimiser "
                "steps per iteration is more than 2**31"
            )


class PPOTrainer(PolicyGradientTrainer):
    r"""PPO (Schulman et al. 2017) with a KL leash to the reference policy (Ziegler et al. 2019)
    on a :class:`fastlmrl.tasks.TextTask`, with a tabular softmax policy and a tabular critic.

    Each :meth:`iteration` generates ``num_sequences`` sequences with the current policy (the
    behaviour policy :math:`\pi_{old}`), computes KL-shaped rewards and whitened GAE advantages,
    then makes ``epochs`` passes of ``minibatches`` Adam steps on the clipped surrogate
    (:func:`fastlmrl.ppo_loss_tabular`) and on the value regression (see the module docstring).

    Parameters
    ----------
    task, config, seed
        As for :class:`~fastlmrl.trainers._policy_base.PolicyGradientTrainer`; ``config`` is a
        :class:`PPOConfig` (None: the defaults).
    """

    algorithm = "ppo"
    Config = PPOConfig

    def __init__(self, task: TextTask, config: PPOConfig | None = None, seed: int = 0):
        super().__init__(task, config or PPOConfig(), seed)
        most = self.config.num_sequences * self.env.max_new_tokens
        if self.config.minibatches > most:
            raise ValueError(
                f"minibatches = {self.config.minibatches} is more than the tokens of "
                f"one batch (at most num_sequences * max_new_tokens = {most})"
            )

    def uses_values(self) -> bool:
        return True

    def iteration(self) -> dict:
        cfg = self.config
        beta = self.kl_controller.value
        # 1-2. experience, with the KL leash folded into the per-token rewards
        batch = self.rollout()
        rewards = self.kl_shaped_rewards(batch, beta)
        # 3. advantages from the value table
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
        old_log_probs = self.flat(batch, batch.log_probs).astype(np.float64)  # exact
        adv = self.flat(batch, masked_whiten(advantages, batch.valid)).astype(
            np.float64, copy=False
        )
        ret = self.flat(batch, returns)
        # 4. clipped-surrogate epochs over random minibatches
        clip_fractions, approx_kls = [], []
        per_token = (contexts, tokens, old_log_probs, adv, ret)
        shuffled = [np.empty_like(x) for x in per_token]  # reused by every epoch
        assert self.values is not None  # uses_values(): PPO always has its value table
        state_values = self.values[:, 0]
        clip = float(cfg.clip)
        for _ in range(cfg.epochs):
            order, parts = self.minibatches(contexts.size, cfg.minibatches)
            for x, out in zip(per_token, shuffled):
                np.take(x, order, out=out, mode="clip")  # (order is in range: no buffering)
            for part in parts:
                ctx, tok, old, a, r = (x[part] for x in shuffled)
                # weights 1/n: the token mean (ppo_loss_tabular's weights=None)
                rows, grad_rows, stats = self.ppo_loss_rows(
                    ctx, tok, old, a, self.token_mean_weights(ctx.size), clip, clip
                )
                clip_fractions.append(float(stats.clip_fraction))
                approx_kls.append(float(stats.approx_kl_k3))
                self.update_policy(rows, grad_rows)
                # d/dV(s) of 0.5 * mean (V - R)^2, summed per distinct context
                value_error = state_values[ctx] - r  # float64 (exact promotion)
                self.update_values(rows, self.sum_by_context(ctx, value_error / ctx.size, rows))
        # 5. diagnostics (the KL controller adapts β to this batch's KL)
        metrics = self.base_metrics(batch, rewards)
        metrics.update(self.value_metrics(self.flat(batch, values), ret))
        metrics.update(
            clip_fraction=float(np.mean(clip_fractions)), approx_kl=float(np.mean(approx_kls))
        )
        return self.finish(batch, metrics, contexts)
