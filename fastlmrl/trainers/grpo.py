r"""GRPO on a text task (Shao et al. 2024, DeepSeekMath §4.1), with the DAPO/Dr. GRPO variants.

One iteration, top to bottom:

1. Draw G prompts and generate K completions of each (B = G·K sequences, a group per prompt).
2. Group-relative advantages: :math:`\hat A_i = (R_i - \mathrm{mean}_g R)/(\mathrm{std}_g R +
\epsilon)`
   for every token of completion i (``scale="group"``; ``"batch"`` or ``"none"``, the latter
   being Dr. GRPO, Liu et al. 2025) — no value function.
3. ``epochs`` passes of the clipped surrogate (token-level ratios, or sequence-level as in GSPO,
   Zheng et al. 2025) plus the KL penalty :math:`\beta\,D_{KL}(\pi\|\pi_{ref})` estimated per token
   with k3 (the paper's eq. 4), aggregated with the chosen loss normalisation (``grpo``: mean over
   each sequence's tokens, then over sequences; ``bnpo``/``dapo``: over all active tokens;
   ``dr_grpo``: a constant B·T).  With one epoch the ratio is 1 and the update is the on-policy
   policy gradient.
4. Log reward, KL, entropy, clip fraction, approximate KL, tokens/s.

The config also accepts TRL's spellings of its fields: ``beta``, ``epsilon``, ``epsilon_high``,
``num_generations``, ``learning_rate``, ``num_iterations``, ``loss_type``,
``importance_sampling_level`` (DEVELOPING.md, Names).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .. import _validation as check
from ..group_advantages import grpo_advantages, loss_weights
from ..rng import uniforms
from ._policy_base import PolicyGradientTrainer, check_config

if TYPE_CHECKING:
    from ..tasks import TextTask

__all__ = ["GRPOConfig", "GRPOTrainer"]


@check.renamed(
    ecosystem={
        "beta": "kl_coef",
        "epsilon": "clip",
        "epsilon_high": "clip_high",
        "num_generations": "group_size",
        "learning_rate": "lr",
        "num_iterations": "epochs",
        "loss_type": "loss_normalization",
        "importance_sampling_level": "ratio_level",
    }
)
@dataclass
class GRPOConfig:
    r"""Hyper-parameters of :class:`GRPOTrainer` (GRPO, Shao et al. 2024, DeepSeekMath §4.1, with
    the DAPO, Dr. GRPO and GSPO variants).

    Completion i of a group gets the advantage
    :math:`\hat A_i = (R_i - \mathrm{mean}_g R)/(\mathrm{std}_g R + \epsilon)` on all its tokens;
    the loss is the clipped surrogate
    :math:`-\min(\rho_t\hat A_i, \mathrm{clip}(\rho_t, 1-\epsilon_{low}, 1+\epsilon_{high})\hat A_i)
    + \beta D^{k3}_t` (the paper's eq. 3-4), aggregated by ``loss_normalization``.
    ``num_sequences`` (a read-only property) is B = ``num_prompts * group_size``.  TRL's spellings
    are accepted too: ``beta`` (``kl_coef``), ``epsilon`` (``clip``), ``epsilon_high``
    (``clip_high``), ``num_generations`` (``group_size``), ``learning_rate`` (``lr``),
    ``num_iterations`` (``epochs``), ``loss_type`` (``loss_normalization``),
    ``importance_sampling_level`` (``ratio_level``).

    Attributes
    ----------
    num_prompts : int > 0
        G, the prompts drawn per iteration.
    group_size : int >= 2
        K, the completions generated per prompt (TRL: ``num_generations``).
    clip : float > 0
        :math:`\epsilon_{low}`, the lower clip range (TRL: ``epsilon``).
    clip_high : float > 0
        :math:`\epsilon_{high}`, the upper clip range (TRL: ``epsilon_high``; larger than
        ``clip`` is DAPO's clip-higher, Yu et al. 2025).
    epochs : int > 0
        Gradient steps on each batch (TRL: ``num_iterations``); with 1 the ratio is 1 and the
        update is the on-policy policy gradient.
    lr, kl_coef, kl_target, kl_horizon
        The policy table's Adam step size (TRL: ``learning_rate``) and the KL leash (β's initial
        value, TRL: ``beta``; the adaptive controller's target and horizon), shared by the tabular
        policy-gradient trainers and documented once on
        :class:`~fastlmrl.trainers._policy_base.PolicyGradientTrainer`.  Here β weights the k3 KL
        penalty to :math:`\pi_{ref}` in the loss (not a reward shaping).
    scale : {"group", "batch", "none"}
        The advantage's denominator: the group's std, the batch's std, or none (Dr. GRPO, Liu et
        al. 2025).
    loss_normalization : {"grpo", "bnpo", "dr_grpo", "dapo"}
        How per-token losses are weighted (TRL: ``loss_type``; :func:`fastlmrl.loss_weights`):
        mean over each sequence's tokens then over sequences; over all active tokens
        (``bnpo``, ``dapo``); or a constant B·T (``dr_grpo``).
    ratio_level : {"token", "sequence"}
        Token-level ratios, or GSPO's length-normalised sequence ratio (Zheng et al. 2025)
        (TRL: ``importance_sampling_level``).
    """

    num_prompts: int = 32
    group_size: int = 8
    lr: float = 0.02
    clip: float = 0.2
    clip_high: float = 0.2
    epochs: int = 1
    kl_coef: float = 0.2
    kl_target: float | None = None
    kl_horizon: float = 256.0
    scale: str = "group"
    loss_normalization: str = "grpo"
    ratio_level: str = "token"

    def __post_init__(self):
        check_config(
            self,
            positive_ints=("num_prompts", "epochs"),
            positive=("lr", "clip", "clip_high"),
            nonnegative=("kl_coef",),
            choices={
                "scale": ("group", "batch", "none"),
                "loss_normalization": ("grpo", "bnpo", "dr_grpo", "dapo"),
                "ratio_level": ("token", "sequence"),
            },
        )
        if self.epochs > 2**31:  # refused at once, not a run that never ends
            raise ValueError(
                f"epochs = {self.epochs} optimiser steps per iteration is more than 2**31"
            )
        if self.group_size < 2:
            raise ValueError(
                f"group_size must be >= 2 (a group needs a comparison), got {self.group_size}"
            )

    @property
    def num_sequences(self) -> int:
        return self.num_prompts * self.group_size


class GRPOTrainer(PolicyGradientTrainer):
    r"""GRPO (Group Relative Policy Optimization, Shao et al. 2024) on a
    :class:`fastlmrl.tasks.TextTask` with a tabular softmax policy; no value function.

    Each :meth:`iteration` draws ``num_prompts`` prompts, generates ``group_size`` completions of
    each, computes group-relative advantages (:func:`fastlmrl.grpo_advantages`) and makes
    ``epochs`` Adam steps on the clipped surrogate plus the k3 KL penalty to the reference
    (:func:`fastlmrl.ppo_loss_tabular`), weighted by ``loss_normalization``.

    Parameters
    ----------
    task, config, seed
        As for :class:`~fastlmrl.trainers._policy_base.PolicyGradientTrainer`; ``config`` is a
        :class:`GRPOConfig` (None: the defaults).
    """

    algorithm = "grpo"
    Config = GRPOConfig

    def __init__(self, task: TextTask, config: GRPOConfig | None = None, seed: int = 0):
        super().__init__(task, config or GRPOConfig(), seed)

    def group_rollout(self):
        """G prompts drawn uniformly (from the stream), each generated K times."""
        cfg = self.config
        prompts = np.floor(uniforms(self.stream, cfg.num_prompts) * self.env.num_prompts)
        return self.rollout(
            prompt_ids=np.repeat(prompts.astype(np.int64), cfg.group_size), num_sequences=None
        )

    def iteration(self) -> dict:
        cfg = self.config
        # 1. G groups of K completions
        batch = self.group_rollout()
        # 2. group-relative advantages, one per sequence, broadcast to its tokens
        seq_adv = grpo_advantages(batch.scores, group_size=cfg.group_size, scale=cfg.scale)
        adv = self.flat(batch, np.broadcast_to(seq_adv[:, None], batch.valid.shape))
        weights = self.flat(batch, loss_weights(batch.valid, cfg.loss_normalization))
        contexts = self.flat(batch, batch.contexts)
        tokens = self.flat(batch, batch.actions)
        old_log_probs = self.flat(batch, batch.log_probs).astype(np.float64)  # exact
        adv = adv.astype(np.float64, copy=False)
        weights = weights.astype(np.float64, copy=False)
        ref_log_probs = self.reference_log_probs(contexts, tokens)
        offsets = None
        if cfg.ratio_level == "sequence":
            offsets = np.concatenate([[0], np.cumsum(batch.lengths)]).astype(np.int64)
        # 3. clipped surrogate + k3 KL penalty to the reference
        clip_fractions, approx_kls = [], []
        kl_coef = float(self.kl_controller.value)
        for _ in range(cfg.epochs):
            rows, grad_rows, stats = self.ppo_loss_rows(
                contexts,
                tokens,
                old_log_probs,
                adv,
                weights,
                float(cfg.clip),
                float(cfg.clip_high),
                ref_log_probs=ref_log_probs,
                kl_coef=kl_coef,
                sequence_offsets=offsets,
            )
            clip_fractions.append(float(stats.clip_fraction))
            approx_kls.append(float(stats.approx_kl_k3))
            kl_loss = float(stats.kl_loss)
            self.update_policy(rows, grad_rows)
        # 4. diagnostics
        metrics = self.base_metrics(batch)
        metrics.update(
            clip_fraction=float(np.mean(clip_fractions)),
            approx_kl=float(np.mean(approx_kls)),
            kl_loss=kl_loss,
        )
        return self.finish(batch, metrics, contexts)
