r"""GRPO on a neural causal LM (Shao et al. 2024, DeepSeekMath §4.1), with the DAPO / Dr. GRPO /
BNPO normalisations and GSPO's sequence-level ratio -- the neural twin of :mod:`.grpo`.

One iteration, top to bottom:

1. Draw G prompts (``num_prompts``) and sample K completions of each (``group_size``):
   B = G·K sequences from :math:`\pi_{\theta_{old}}` with the key/value cache
   (:func:`fastlmrl.neural.generate`); their log-probs are :math:`\log\pi_{old}`.
2. Task reward :math:`R_i` per completion and group-relative advantages
   :math:`\hat A_i = (R_i - \mathrm{mean}_g R)/(\mathrm{std}_g R + 10^{-4})`
   (:func:`fastlmrl.grpo_advantages`; ``scale``: ``"group"``, ``"batch"``, ``"none"`` = Dr.
   GRPO), the same for every token of completion i.
3. :math:`\log\pi_{ref}` of the sampled tokens from the frozen reference (when ``kl_coef > 0``).
4. ``epochs`` x ``minibatches`` AdamW steps on

   .. math:: \mathcal L = \sum_{i,t} w_{i,t}\Big[-\min\big(\rho_{i,t}\hat A_i,
             \mathrm{clip}(\rho_{i,t}, 1-\epsilon_{low}, 1+\epsilon_{high})\hat A_i\big)
             + \beta\,D_{i,t}\Big],\qquad \rho_{i,t} = \frac{\pi_\theta(o_{i,t}|q, o_{i,<t})}
             {\pi_{old}(o_{i,t}|q, o_{i,<t})}

   with :math:`D` the k3 estimator :math:`e^{\log\pi_{ref}-\log\pi_\theta} - (\log\pi_{ref} -
   \log\pi_\theta) - 1` (the paper's eq. 4; ``kl_estimator`` k1/k2 also accepted) and the weights
   :math:`w` of ``loss_normalization`` (:func:`fastlmrl.torch.loss_weights` over the minibatch):
   ``grpo`` :math:`1/(B|o_i|)`, ``bnpo``/``dapo`` :math:`1/\sum_i|o_i|`, ``dr_grpo``
   :math:`1/(B\cdot\text{max\_new\_tokens})`.  ``ratio_level="sequence"`` uses GSPO's
   length-normalised sequence ratio.  The loss and its gradient come from
   :func:`fastlmrl.torch.linear_ppo_loss` (fused LM head) or :func:`fastlmrl.torch.ppo_loss`.

**TRL names** (``trl.GRPOConfig``) are accepted as aliases: ``beta`` (``kl_coef``), ``epsilon``
(``clip``), ``epsilon_high`` (``clip_high``), ``num_generations`` (``group_size``), ``loss_type``
(``loss_normalization``), ``scale_rewards`` (``scale``; True/False mean "group"/"none"),
``learning_rate`` (``lr``), ``num_iterations`` (``epochs``), ``max_completion_length``
(``max_new_tokens``), ``gradient_accumulation_steps`` (``grad_accumulation``),
``importance_sampling_level`` (``ratio_level``).  Differences from TRL: TRL counts
``per_device_train_batch_size`` in completions and derives the prompts; here ``num_prompts`` x
``group_size`` completions per iteration.  With ``epochs = 1`` TRL uses the current log-probs as
:math:`\log\pi_{old}` (ratio exactly 1); here the rollout's (the ratio is 1 up to the
sampler/trainer mismatch, reported).  Gradient accumulation keeps the minibatch's weights (see
:mod:`._neural_base`).
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass, fields
from typing import TYPE_CHECKING

import torch

from ..group_advantages import grpo_advantages
from ..torch import linear_ppo_loss, loss_weights, ppo_loss
from ._neural_base import NeuralConfig, NeuralTrainer, Stopwatch, resolve_aliases

if TYPE_CHECKING:
    from torch import nn

    from ..neural.policy import NeuralPolicy

__all__ = ["NeuralGRPOConfig", "NeuralGRPOTrainer"]

_ALIASES = {
    "beta": "kl_coef",
    "epsilon": "clip",
    "epsilon_high": "clip_high",
    "num_generations": "group_size",
    "loss_type": "loss_normalization",
    "scale_rewards": "scale",
    "learning_rate": "lr",
    "num_iterations": "epochs",
    "max_completion_length": "max_new_tokens",
    "gradient_accumulation_steps": "grad_accumulation",
    "importance_sampling_level": "ratio_level",
}


@dataclass
class NeuralGRPOConfig(NeuralConfig):
    r"""Hyper-parameters of :class:`NeuralGRPOTrainer` (GRPO, Shao et al. 2024, DeepSeekMath
    §4.1, on a neural causal LM; DAPO / Dr. GRPO / BNPO normalisations, GSPO's sequence ratio).

    The loss is :math:`\sum_{i,t} w_{i,t}[-\min(\rho_{i,t}\hat A_i, \mathrm{clip}(\rho_{i,t},
    1-\epsilon_{low}, 1+\epsilon_{high})\hat A_i) + \beta D_{i,t}]` with group-relative
    advantages :math:`\hat A_i` (see the module docstring).  B = ``num_prompts * group_size``
    completions per iteration.  TRL's names (``trl.GRPOConfig``) are accepted as keyword aliases:
    ``beta``, ``epsilon``, ``epsilon_high``, ``num_generations``, ``loss_type``,
    ``scale_rewards`` (True/False mean "group"/"none"), ``learning_rate``, ``num_iterations``,
    ``max_completion_length``, ``gradient_accumulation_steps``, ``importance_sampling_level``.

    Attributes
    ----------
    num_prompts : int > 0
        G, the prompts drawn per iteration.
    group_size : int >= 2
        K, the completions sampled per prompt (TRL: ``num_generations``).
    clip : float > 0
        :math:`\epsilon_{low}` (TRL: ``epsilon``).
    clip_high : float > 0
        :math:`\epsilon_{high}` (TRL: ``epsilon_high``; larger than ``clip`` is DAPO's
        clip-higher).
    scale : {"group", "batch", "none"}
        The advantage's denominator: the group's std, the batch's std, or none (Dr. GRPO)
        (TRL: ``scale_rewards``).
    loss_normalization : {"grpo", "bnpo", "dr_grpo", "dapo"}
        The weights :math:`w` (TRL: ``loss_type``): :math:`1/(B|o_i|)`, :math:`1/\sum_i|o_i|`
        (bnpo, dapo), or :math:`1/(B\cdot` ``max_new_tokens``:math:`)` (dr_grpo).
    ratio_level : {"token", "sequence"}
        Token ratios, or GSPO's length-normalised sequence ratio (Zheng et al. 2025) (TRL:
        ``importance_sampling_level``).
    kl_coef : float >= 0
        β, the weight of the KL penalty in the loss
        to the frozen initial model :math:`\pi_{ref}` (TRL: ``beta``)
        (0 and no ``kl_target``: no reference model is kept).

    The inherited settings (optimiser, KL controller, sampling) are described once on
    :class:`~fastlmrl.trainers._neural_base.NeuralConfig`.  Here ``kl_estimator`` is the
    per-token estimator :math:`D` of the loss's KL penalty.
    """

    num_prompts: int = 8
    group_size: int = 8
    clip: float = 0.2
    clip_high: float = 0.2
    scale: str = "group"
    loss_normalization: str = "grpo"
    ratio_level: str = "token"
    kl_coef: float = 0.04
    beta: InitVar[float | None] = None
    epsilon: InitVar[float | None] = None
    epsilon_high: InitVar[float | None] = None
    num_generations: InitVar[int | None] = None
    loss_type: InitVar[str | None] = None
    scale_rewards: InitVar[object] = None
    learning_rate: InitVar[float | None] = None
    num_iterations: InitVar[int | None] = None
    max_completion_length: InitVar[int | None] = None
    gradient_accumulation_steps: InitVar[int | None] = None
    importance_sampling_level: InitVar[str | None] = None

    def __post_init__(
        self,
        beta,
        epsilon,
        epsilon_high,
        num_generations,
        loss_type,
        scale_rewards,
        learning_rate,
        num_iterations,
        max_completion_length,
        gradient_accumulation_steps,
        importance_sampling_level,
    ):
        given = dict(
            beta=beta,
            epsilon=epsilon,
            epsilon_high=epsilon_high,
            num_generations=num_generations,
            loss_type=loss_type,
            scale_rewards=scale_rewards,
            learning_rate=learning_rate,
            num_iterations=num_iterations,
            max_completion_length=max_completion_length,
            gradient_accumulation_steps=gradient_accumulation_steps,
            importance_sampling_level=importance_sampling_level,
        )
        defaults = {f.name: f.default for f in fields(self)}
        resolve_aliases(self, _ALIASES, given, defaults)
        self.check_common()
        from ._policy_base import check_config

        check_config(
            self,
            positive_ints=("num_prompts",),
            positive=("clip", "clip_high"),
            choices={
                "scale": ("group", "batch", "none"),
                "loss_normalization": ("grpo", "bnpo", "dr_grpo", "dapo"),
                "ratio_level": ("token", "sequence"),
            },
        )
        if (
            isinstance(self.group_size, bool)
            or not isinstance(self.group_size, int)
            or self.group_size < 2
        ):
            raise ValueError(
                f"group_size must be an int >= 2 (a group needs a comparison), "
                f"got {self.group_size!r}"
            )
        if self.minibatches > self.num_sequences:
            raise ValueError(
                f"minibatches = {self.minibatches} is more than the "
                f"{self.num_sequences} sequences of an iteration"
            )

    @property
    def num_sequences(self) -> int:
        return self.num_prompts * self.group_size


class NeuralGRPOTrainer(NeuralTrainer):
    """GRPO on a :class:`~fastlmrl.neural.NeuralPolicy` (see the module docstring)."""

    algorithm = "neural_grpo"
    Config = NeuralGRPOConfig

    def __init__(
        self,
        policy: NeuralPolicy | nn.Module,
        task,
        config: NeuralGRPOConfig | None = None,
        seed: int = 0,
        *,
        tokenizer=None,
    ):
        super().__init__(policy, task, config or NeuralGRPOConfig(), seed, tokenizer=tokenizer)

    def loss(self, rollout, rows, advantages, weights, ref_log_probs):
        """The GRPO loss of the sequences ``rows`` (a :class:`~fastlmrl.torch.PPOLossResult`,
        differentiable w.r.t. the policy's parameters).  ``advantages`` (B,) per sequence,
        ``weights`` (len(rows), T) per token, ``ref_log_probs`` (B, T) or None; all indexed by
        the rollout's rows."""
        cfg = self.config
        rows_t = torch.as_tensor(rows, dtype=torch.long)
        mask = rollout.completion_mask[rows_t]
        tokens = rollout.completion_ids[rows_t][mask]
        old = rollout.log_probs[rows_t][mask].double()
        adv = torch.as_tensor(advantages, dtype=torch.float64)[rows_t][:, None].expand(mask.shape)[
            mask
        ]
        w = torch.as_tensor(weights, dtype=torch.float64)[mask]
        options = dict(
            clip_low=cfg.clip,
            clip_high=cfg.clip_high,
            ratio_level=cfg.ratio_level,
            kl_coef=self.kl_controller.value,
            kl_estimator=cfg.kl_estimator,
        )
        if cfg.ratio_level == "sequence":
            options["sequence_offsets"] = torch.cat(
                [torch.zeros(1, dtype=torch.long), mask.sum(1).cumsum(0)]
            )
        ref = None
        if ref_log_probs is not None and self.kl_controller.value > 0:
            ref = ref_log_probs[rows_t][mask]
        logits, hidden, _, _ = self.completion_states(
            self.policy, rollout, rows, need_logits=not self.fused, need_hidden=self.fused
        )
        if self.fused:
            weight, bias = self.head(self.policy)
            return linear_ppo_loss(
                hidden[mask], weight, tokens, old, adv, w, bias=bias, ref_log_probs=ref, **options
            )
        return ppo_loss(logits[mask], tokens, old, adv, w, ref_log_probs=ref, **options)

    def minibatch_weights(self, rollout, rows) -> torch.Tensor:
        cfg = self.config
        mask = rollout.completion_mask[torch.as_tensor(rows, dtype=torch.long)]
        extra = {"max_length": cfg.max_new_tokens} if cfg.loss_normalization == "dr_grpo" else {}
        return loss_weights(mask, cfg.loss_normalization, **extra)

    def iteration(self) -> dict:
        cfg = self.config
        watch = self.watch = Stopwatch()
        # 1. G prompts x K completions
        prompts = [p for p in self.draw_prompts(cfg.num_prompts) for _ in range(cfg.group_size)]
        with watch("generation"):
            rollout = self.rollout(prompts)
        # 2. rewards and group-relative advantages
        scores, success = self.score(prompts, rollout)
        advantages = grpo_advantages(scores, group_size=cfg.group_size, scale=cfg.scale)
        with watch("train"):
            # 3. reference log-probs
            ref_log_probs = self.reference_log_probs(rollout)

            # 4. clipped surrogate + KL, epochs x minibatches (x micro-batches)
            def prepare(minibatch):
                weights = self.minibatch_weights(rollout, minibatch)
                return {int(r): weights[i] for i, r in enumerate(minibatch)}

            def micro_step(row_weights, micro, first):
                w = torch.stack([row_weights[int(r)] for r in micro])
                result = self.loss(rollout, micro, advantages, w, ref_log_probs)
                result.loss.backward()
                out = {
                    "loss": float(result.loss.detach()),
                    "clip_fraction": float(result.clip_fraction),
                    "approx_kl": float(result.approx_kl_k3),
                    "kl_loss": float(result.kl_loss),
                }
                micro_t = torch.as_tensor(micro, dtype=torch.long)
                mask = rollout.completion_mask[micro_t]
                self.mismatch(out, result.log_probs, rollout.log_probs[micro_t][mask], first)
                return out

            train_metrics = self.optimize(len(prompts), micro_step, prepare)
        metrics = self.rollout_metrics(rollout, scores, success, ref_log_probs)
        metrics["reward"] = metrics["score"]
        metrics.update(train_metrics)
        metrics.update(watch.metrics())
        return self.finish(rollout, metrics)
