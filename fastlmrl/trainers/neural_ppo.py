r"""PPO on a neural causal LM (Schulman et al. 2017) in the RLHF form of Ziegler et al. (2019) --
the neural twin of :mod:`.ppo`, with a value head (a critic sharing the trunk) or critic-free.

One iteration, top to bottom:

1. Generate B completions (``num_sequences`` prompts) from :math:`\pi_{\theta_{old}}`.
2. Per-token rewards :math:`r_t = R\,[t = L-1] - \beta(\log\pi_{old}(a_t|s_t) -
   \log\pi_{ref}(a_t|s_t))`: the task reward at the last token minus the KL leash (k1), β fixed or
   adapted toward ``kl_target`` (Ziegler et al. §2.2).
3. Advantages.  ``value_head=True``: GAE(γ, λ) (Schulman et al. 2016,
   :func:`fastlmrl.gae`) with :math:`V(s_t)` from the value head on the last hidden state at the
   position of token :math:`a_{t-1}` (the state before :math:`a_t`); EOS → terminated (bootstrap
   0), length limit → truncated (bootstrap :math:`V(s_L)`, the state after the last token).
   Critic-free (``value_head=False``): the discounted returns :math:`G_t`
   (:func:`fastlmrl.discounted_returns`).  Either way whitened over the batch's tokens.
4. ``epochs`` x ``minibatches`` AdamW steps on
   :math:`\frac1N\sum_t -\min(\rho_t\hat A_t, \mathrm{clip}(\rho_t, 1-\epsilon, 1+\epsilon)\hat A_t)
   + c_V\,\frac1N\sum_t \tfrac12 (V_\theta(s_t) - G^\lambda_t)^2` (the token mean over the
   minibatch; ``value_coef`` :math:`c_V`; ``value_clip``: TRL's ``cliprange_value``, the clipped
   value loss :math:`\max((V-G)^2, (V_{old} + \mathrm{clip}(V - V_{old}, \pm c) - G)^2)`).  The
   policy term is :func:`fastlmrl.torch.linear_ppo_loss` (fused head) or
   :func:`fastlmrl.torch.ppo_loss`.

TRL names accepted: ``cliprange`` (``clip``), ``vf_coef`` (``value_coef``), ``cliprange_value``
(``value_clip``), ``learning_rate``, ``num_ppo_epochs`` (``epochs``), ``num_mini_batches``
(``minibatches``), ``gradient_accumulation_steps``, ``response_length`` (``max_new_tokens``),
``kl_coef``, ``gamma``, ``lam``.
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass, fields
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..advantages import discounted_returns, gae, masked_whiten
from ..torch import linear_ppo_loss, ppo_loss
from ._neural_base import NeuralConfig, NeuralTrainer, Stopwatch, resolve_aliases

if TYPE_CHECKING:
    from torch import nn

    from ..neural.policy import NeuralPolicy

__all__ = ["NeuralPPOConfig", "NeuralPPOTrainer"]

_ALIASES = {
    "cliprange": "clip",
    "vf_coef": "value_coef",
    "cliprange_value": "value_clip",
    "learning_rate": "lr",
    "num_ppo_epochs": "epochs",
    "num_mini_batches": "minibatches",
    "gradient_accumulation_steps": "grad_accumulation",
    "response_length": "max_new_tokens",
}


@dataclass
class NeuralPPOConfig(NeuralConfig):
    r"""Hyper-parameters of :class:`NeuralPPOTrainer` (PPO, Schulman et al. 2017, in the RLHF form
    of Ziegler et al. 2019, on a neural causal LM, with a value head or critic-free).

    The loss is the token mean of
    :math:`-\min(\rho_t\hat A_t, \mathrm{clip}(\rho_t, 1-\epsilon, 1+\epsilon)\hat A_t) +
    c_V\,\tfrac12(V_\theta(s_t) - G^\lambda_t)^2` with whitened advantages and the k1 KL leash
    :math:`-\beta(\log\pi_{old} - \log\pi_{ref})` folded into the per-token rewards (see the
    module docstring).  TRL's names are accepted as keyword aliases: ``cliprange``, ``vf_coef``,
    ``cliprange_value``, ``learning_rate``, ``num_ppo_epochs``, ``num_mini_batches``,
    ``gradient_accumulation_steps``, ``response_length``.

    Attributes
    ----------
    num_sequences : int > 0
        B, the prompts drawn (one completion each) per iteration.
    value_head : bool
        True: a value head on the trunk, GAE(γ, λ) advantages (Schulman et al. 2016); False:
        critic-free, the discounted returns as advantages.
    gamma : float in [0, 1]
        Discount γ per token.
    lam : float in [0, 1]
        GAE's λ (used with the value head).
    clip : float > 0
        ε of the clipped surrogate (TRL: ``cliprange``).
    value_coef : float >= 0
        :math:`c_V`, the weight of the value loss (TRL: ``vf_coef``).
    value_clip : float > 0 or None
        Clip range c of the clipped value loss
        :math:`\max((V-G)^2, (V_{old} + \mathrm{clip}(V - V_{old}, \pm c) - G)^2)` (TRL:
        ``cliprange_value``; None: unclipped).
    kl_coef : float >= 0
        β, the weight of the KL leash in the rewards
        to the frozen initial model :math:`\pi_{ref}`
        (0 and no ``kl_target``: no reference model is kept).

    The inherited settings (optimiser, KL controller, sampling) are described once on
    :class:`~fastlmrl.trainers._neural_base.NeuralConfig`; here:

    epochs : int > 0
        TRL: ``num_ppo_epochs``.
    minibatches : int > 0
        At most ``num_sequences`` (TRL: ``num_mini_batches``).
    kl_estimator : str
        Not used by this trainer: the reward's leash is always k1, the per-token
        log-ratio :math:`\log\pi_{old} - \log\pi_{ref}`.
    """

    num_sequences: int = 32
    value_head: bool = True
    gamma: float = 1.0
    lam: float = 0.95
    clip: float = 0.2
    value_coef: float = 0.1
    value_clip: float | None = None
    epochs: int = 4
    minibatches: int = 4
    kl_coef: float = 0.05
    cliprange: InitVar[float | None] = None
    vf_coef: InitVar[float | None] = None
    cliprange_value: InitVar[float | None] = None
    learning_rate: InitVar[float | None] = None
    num_ppo_epochs: InitVar[int | None] = None
    num_mini_batches: InitVar[int | None] = None
    gradient_accumulation_steps: InitVar[int | None] = None
    response_length: InitVar[int | None] = None

    def __post_init__(
        self,
        cliprange,
        vf_coef,
        cliprange_value,
        learning_rate,
        num_ppo_epochs,
        num_mini_batches,
        gradient_accumulation_steps,
        response_length,
    ):
        given = dict(
            cliprange=cliprange,
            vf_coef=vf_coef,
            cliprange_value=cliprange_value,
            learning_rate=learning_rate,
            num_ppo_epochs=num_ppo_epochs,
            num_mini_batches=num_mini_batches,
            gradient_accumulation_steps=gradient_accumulation_steps,
            response_length=response_length,
        )
        resolve_aliases(self, _ALIASES, given, {f.name: f.default for f in fields(self)})
        self.check_common()
        from ._policy_base import check_config

        check_config(
            self,
            positive_ints=("num_sequences",),
            positive=("clip",),
            nonnegative=("value_coef",),
            unit=("gamma", "lam"),
        )
        if not isinstance(self.value_head, bool):
            raise TypeError(f"value_head must be a bool, got {type(self.value_head).__name__}")
        if self.value_clip is not None:
            from .. import _validation as check

            check.real(self.value_clip, "value_clip", 0.0, None, low_open=True)
        if self.minibatches > self.num_sequences:
            raise ValueError(
                f"minibatches = {self.minibatches} is more than num_sequences = "
                f"{self.num_sequences}"
            )


class NeuralPPOTrainer(NeuralTrainer):
    """PPO on a :class:`~fastlmrl.neural.NeuralPolicy` (see the module docstring); a policy
    given as a bare model gets a value head when ``config.value_head``."""

    algorithm = "neural_ppo"
    Config = NeuralPPOConfig

    def __init__(
        self,
        policy: NeuralPolicy | nn.Module,
        task,
        config: NeuralPPOConfig | None = None,
        seed: int = 0,
        *,
        tokenizer=None,
    ):
        self.config = config or NeuralPPOConfig()  # uses_values() reads it before super()
        super().__init__(policy, task, self.config, seed, tokenizer=tokenizer)

    def uses_values(self) -> bool:
        return self.config.value_head

    @torch.no_grad()
    def old_values(self, rollout):
        """(values (B, T) of V(s_t), bootstrap (B,) = V(s_L)) from the value head, float64."""
        p = rollout.prompt_ids.shape[1]
        out = self.policy(rollout.input_ids(), rollout.attention_mask(), hidden=True, logits=False)
        v = self.policy.values(out.hidden).double()
        mask = rollout.completion_mask
        values = v[:, p - 1 : -1] * mask
        lengths = mask.sum(1)
        bootstrap = v[torch.arange(v.shape[0]), p - 1 + lengths]
        return values, bootstrap

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
            mask_np = mask.numpy()
            terminated, truncated = rollout.terminated.numpy(), rollout.truncated.numpy()
            if cfg.value_head:
                values, bootstrap = self.old_values(rollout)
                adv, returns = gae(
                    rewards.numpy(),
                    values.numpy(),
                    mask_np,
                    terminated,
                    truncated,
                    bootstrap.numpy(),
                    gamma=cfg.gamma,
                    lam=cfg.lam,
                )
            else:
                values = None
                returns = discounted_returns(
                    rewards.numpy(),
                    mask_np,
                    terminated,
                    truncated,
                    np.zeros(mask.shape[0]),
                    gamma=cfg.gamma,
                )
                adv = returns
            adv = torch.from_numpy(masked_whiten(adv, mask_np))
            returns = torch.from_numpy(np.asarray(returns, dtype=np.float64))

            def micro_step(minibatch, micro, first):
                rows = torch.as_tensor(micro, dtype=torch.long)
                m = mask[rows]
                n_tokens = max(int(mask[torch.as_tensor(minibatch)].sum()), 1)
                w = torch.full((int(m.sum()),), 1.0 / n_tokens, dtype=torch.float64)
                tokens = rollout.completion_ids[rows][m]
                old = rollout.log_probs[rows][m].double()
                a = adv[rows][m]
                logits, hidden, _, _ = self.completion_states(
                    self.policy,
                    rollout,
                    micro,
                    need_logits=not self.fused,
                    need_hidden=self.fused or cfg.value_head,
                )
                if self.fused:
                    weight, bias = self.head(self.policy)
                    result = linear_ppo_loss(
                        hidden[m],
                        weight,
                        tokens,
                        old,
                        a,
                        w,
                        bias=bias,
                        clip_low=cfg.clip,
                        clip_high=cfg.clip,
                    )
                else:
                    result = ppo_loss(
                        logits[m], tokens, old, a, w, clip_low=cfg.clip, clip_high=cfg.clip
                    )
                loss = result.loss
                out = {
                    "clip_fraction": float(result.clip_fraction),
                    "approx_kl": float(result.approx_kl_k3),
                    "policy_loss": float(result.loss.detach()),
                }
                if cfg.value_head:
                    v = self.policy.values(hidden[m]).double()
                    target = returns[rows][m]
                    error = (v - target) ** 2
                    if cfg.value_clip is not None:
                        v_old = values[rows][m]
                        clipped = v_old + (v - v_old).clamp(-cfg.value_clip, cfg.value_clip)
                        error = torch.maximum(error, (clipped - target) ** 2)
                    value_loss = 0.5 * (error * w).sum()
                    loss = loss + cfg.value_coef * value_loss.to(loss.dtype)
                    out["value_loss"] = float(value_loss.detach())
                loss.backward()
                out["loss"] = float(loss.detach())
                self.mismatch(out, result.log_probs, old, first)
                return out

            train_metrics = self.optimize(len(prompts), micro_step)
        metrics = self.rollout_metrics(rollout, scores, success, ref_log_probs)
        metrics["reward"] = float(rewards.sum(1).mean())
        if values is not None:
            from .base import explained_variance

            metrics["explained_variance"] = explained_variance(
                values.numpy()[mask_np], returns.numpy()[mask_np]
            )
        metrics.update(train_metrics)
        metrics.update(watch.metrics())
        return self.finish(rollout, metrics)
