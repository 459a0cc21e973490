r"""REINFORCE on a neural causal LM (Williams 1992; Sutton & Barto 2018, §13.3-13.4) -- the neural
twin of :mod:`.reinforce`.

One iteration, top to bottom:

1. Generate B completions (``num_sequences`` prompts) with the current policy.
2. Per-token rewards :math:`r_t = R\,[t = L-1] - \beta(\log\pi(a_t|s_t) - \log\pi_{ref}(a_t|s_t))`
   (task reward at the last token, k1 KL leash).
3. Returns :math:`G_t = \sum_{k \ge t}\gamma^{k-t} r_k` within each completion
   (:func:`fastlmrl.discounted_returns`; EOS terminated, length limit truncated, no bootstrap).
4. Baseline ``"none"`` or ``"mean"`` (the mean return over the batch's tokens).  (The table
   trainer's ``"value"`` baseline is PPO's value head here: use :mod:`.neural_ppo`.)
5. Loss :math:`-\frac1N\sum_t (G_t - b)\log\pi_\theta(a_t|s_t)` over the N completion tokens, with
   :math:`\log\pi_\theta` from :func:`fastlmrl.torch.linear_token_log_probs` (fused head) or
   :func:`fastlmrl.torch.token_log_probs`; one AdamW step per iteration (``grad_accumulation``
   micro-batches allowed; ``epochs``/``minibatches`` are fixed at 1: REINFORCE is on-policy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..advantages import discounted_returns
from ._neural_base import NeuralConfig, NeuralTrainer, Stopwatch

if TYPE_CHECKING:
    from torch import nn

    from ..neural.policy import NeuralPolicy

__all__ = ["NeuralReinforceConfig", "NeuralReinforceTrainer"]

BASELINES = ("none", "mean")


@dataclass
class NeuralReinforceConfig(NeuralConfig):
    r"""Hyper-parameters of :class:`NeuralReinforceTrainer` (REINFORCE, Williams 1992; Sutton &
    Barto 2018, §13.3-13.4, on a neural causal LM).

    The loss is :math:`-\frac1N\sum_t (G_t - b)\log\pi_\theta(a_t|s_t)` over the N completion
    tokens of the batch, :math:`G_t = \sum_{k \ge t}\gamma^{k-t} r_k` with the k1 KL leash
    :math:`-\beta(\log\pi - \log\pi_{ref})` in the per-token rewards (see the module docstring).

    Attributes
    ----------
    num_sequences : int > 0
        B, the prompts drawn (one completion each) per iteration.
    gamma : float in [0, 1]
        Discount γ per token.
    baseline : {"none", "mean"}
        b: 0, or the mean return over the batch's tokens (a learned value is
        :class:`NeuralPPOConfig`'s value head).
    kl_coef : float >= 0
        β, the weight of the KL leash in the rewards
        to the frozen initial model :math:`\pi_{ref}` (TRL: ``beta``)
        (0 and no ``kl_target``: no reference model is kept).

    The inherited settings (optimiser, KL controller, sampling) are described once on
    :class:`~fastlmrl.trainers._neural_base.NeuralConfig`; here:

    epochs : int
        Must be 1: the algorithm is on-policy (one AdamW step per iteration).
    minibatches : int
        Must be 1 (use ``grad_accumulation`` to split a batch).
    kl_estimator : str
        Not used by this trainer: the reward's leash is always k1, the per-token
        log-ratio :math:`\log\pi_{old} - \log\pi_{ref}`.
    """

    num_sequences: int = 32
    gamma: float = 1.0
    baseline: str = "mean"
    kl_coef: float = 0.05

    def __post_init__(self):
        self.check_common()
        from ._policy_base import check_config

        check_config(
            self, positive_ints=("num_sequences",), unit=("gamma",), choices={"baseline": BASELINES}
        )
        if self.epochs != 1 or self.minibatches != 1:
            raise ValueError(
                "REINFORCE is on-policy: epochs and minibatches must be 1 (use "
                "grad_accumulation to split a batch)"
            )


class NeuralReinforceTrainer(NeuralTrainer):
    """REINFORCE on a :class:`~fastlmrl.neural.NeuralPolicy` (see the module docstring)."""

    algorithm = "neural_reinforce"
    Config = NeuralReinforceConfig

    def __init__(
        self,
        policy: NeuralPolicy | nn.Module,
        task,
        config: NeuralReinforceConfig | None = None,
        seed: int = 0,
        *,
        tokenizer=None,
    ):
        super().__init__(policy, task, config or NeuralReinforceConfig(), seed, tokenizer=tokenizer)

    def iteration(self) -> dict:
        cfg = self.config
        watch = self.watch = Stopwatch()
        prompts = self.draw_prompts(cfg.num_sequences)
        with watch("generation"):
            rollout = self.rollout(prompts)
        scores, success = self.score(prompts, rollout)
        with watch("train"):
            ref_log_probs = self.reference_log_probs(rollout)
            rewards = self.kl_shaped_rewards(rollout, scores, ref_log_probs)
            mask = rollout.completion_mask
            discounted = discounted_returns(
                rewards.numpy(),
                mask.numpy(),
                rollout.terminated.numpy(),
                rollout.truncated.numpy(),
                np.zeros(mask.shape[0]),
                gamma=cfg.gamma,
            )
            returns = torch.from_numpy(np.asarray(discounted, dtype=np.float64))
            n_tokens = max(int(mask.sum()), 1)
            baseline = float(returns[mask].mean()) if cfg.baseline == "mean" and mask.any() else 0.0
            advantages = (returns - baseline) * mask

            def micro_step(minibatch, micro, first):
                rows = torch.as_tensor(micro, dtype=torch.long)
                logp, _ = self.token_log_probs(self.policy, rollout, micro)
                a = advantages[rows][mask[rows]]
                loss = -(a.to(logp.dtype) * logp).sum() / n_tokens
                loss.backward()
                out = {"loss": float(loss.detach())}
                self.mismatch(out, logp, rollout.log_probs[rows][mask[rows]], first)
                return out

            train_metrics = self.optimize(len(prompts), micro_step)
        metrics = self.rollout_metrics(rollout, scores, success, ref_log_probs)
        metrics["reward"] = float(rewards.sum(1).mean())
        metrics.update(train_metrics)
        metrics.update(watch.metrics())
        return self.finish(rollout, metrics)
