r"""RLOO on a neural causal LM (Ahmadian et al. 2024, "Back to basics: revisiting REINFORCE-style
optimization for learning from human feedback in LLMs") -- the neural twin of :mod:`.rloo`.

One iteration, top to bottom:

1. Draw G prompts (``num_prompts``) and sample K completions of each (``group_size``).
2. Sequence reward with the KL leash folded in (the paper's eq. 5 setting):
   :math:`R_i = r(x, y_i) - \beta\sum_t(\log\pi_{old}(a_t|s_t) - \log\pi_{ref}(a_t|s_t))`.
3. Leave-one-out baseline (:func:`fastlmrl.rloo_advantages`):
   :math:`\hat A_i = R_i - \frac{1}{K-1}\sum_{j\ne i} R_j`.
4. REINFORCE: :math:`-\frac1B\sum_i \hat A_i \sum_t \log\pi_\theta(y_{i,t}|x, y_{i,<t})` (a weight
   of 1/B on each sequence's tokens), :math:`\log\pi_\theta` from the fastlmrl ops (fused LM head
   or logits); one AdamW step per iteration (``grad_accumulation`` allowed).

TRL names accepted: ``num_generations`` (``group_size``), ``beta`` (``kl_coef``),
``learning_rate``, ``max_completion_length``, ``gradient_accumulation_steps``.  (TRL's current
``RLOOTrainer`` adds a PPO-style clipped ratio over ``num_iterations``; this is the paper's
on-policy REINFORCE estimator, as the table trainer.)
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass, fields
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..group_advantages import rloo_advantages
from ._neural_base import NeuralConfig, NeuralTrainer, Stopwatch, resolve_aliases

if TYPE_CHECKING:
    from torch import nn

    from ..neural.policy import NeuralPolicy

__all__ = ["NeuralRLOOConfig", "NeuralRLOOTrainer"]

_ALIASES = {
    "num_generations": "group_size",
    "beta": "kl_coef",
    "learning_rate": "lr",
    "max_completion_length": "max_new_tokens",
    "gradient_accumulation_steps": "grad_accumulation",
}


@dataclass
class NeuralRLOOConfig(NeuralConfig):
    r"""Hyper-parameters of :class:`NeuralRLOOTrainer` (REINFORCE Leave-One-Out, Ahmadian et al.
    2024, on a neural causal LM).

    Completion :math:`y_i` of a group of K gets :math:`\hat A_i = R_i - \frac{1}{K-1}\sum_{j\ne
    i} R_j` with :math:`R_i = r(x, y_i) - \beta\sum_t(\log\pi_{old} - \log\pi_{ref})`; the loss
    is :math:`-\frac1B\sum_i\hat A_i\sum_t\log\pi_\theta(y_{i,t}|x, y_{i,<t})`.
    ``num_sequences`` (a read-only property) is B = ``num_prompts * group_size``.  TRL's names are
    accepted as keyword aliases: ``num_generations``, ``beta``, ``learning_rate``,
    ``max_completion_length``, ``gradient_accumulation_steps``.

    Attributes
    ----------
    num_prompts : int > 0
        G, the prompts drawn per iteration.
    group_size : int >= 2
        K, the completions sampled per prompt (TRL: ``num_generations``).
    kl_coef : float >= 0
        β, the weight of the KL leash in the sequence reward
        to the frozen initial model :math:`\pi_{ref}` (TRL: ``beta``)
        (0 and no ``kl_target``: no reference model is kept).

    The inherited settings (optimiser, KL controller, sampling) are described once on
    :class:`~fastlmrl.trainers._neural_base.NeuralConfig`.  As in
    :class:`~fastlmrl.trainers.NeuralReinforceConfig`, ``epochs`` and ``minibatches`` must be 1
    (on-policy: one AdamW step per iteration; use ``grad_accumulation`` to split a batch), and
    ``kl_estimator`` is not used (the leash in the sequence reward is always k1, the per-token
    log-ratio :math:`\log\pi_{old} - \log\pi_{ref}`).
    """

    num_prompts: int = 8
    group_size: int = 4
    kl_coef: float = 0.05
    num_generations: InitVar[int | None] = None
    beta: InitVar[float | None] = None
    learning_rate: InitVar[float | None] = None
    max_completion_length: InitVar[int | None] = None
    gradient_accumulation_steps: InitVar[int | None] = None

    def __post_init__(
        self,
        num_generations,
        beta,
        learning_rate,
        max_completion_length,
        gradient_accumulation_steps,
    ):
        given = dict(
            num_generations=num_generations,
            beta=beta,
            learning_rate=learning_rate,
            max_completion_length=max_completion_length,
            gradient_accumulation_steps=gradient_accumulation_steps,
        )
        resolve_aliases(self, _ALIASES, given, {f.name: f.default for f in fields(self)})
        self.check_common()
        from ._policy_base import check_config

        check_config(self, positive_ints=("num_prompts",))
        if (
            isinstance(self.group_size, bool)
            or not isinstance(self.group_size, int)
            or self.group_size < 2
        ):
            raise ValueError(
                f"group_size must be an int >= 2 (leave-one-out needs two), got {self.group_size!r}"
            )
        if self.epochs != 1 or self.minibatches != 1:
            raise ValueError(
                "RLOO is on-policy REINFORCE: epochs and minibatches must be 1 "
                "(use grad_accumulation to split a batch)"
            )

    @property
    def num_sequences(self) -> int:
        return self.num_prompts * self.group_size


class NeuralRLOOTrainer(NeuralTrainer):
    """RLOO on a :class:`~fastlmrl.neural.NeuralPolicy` (see the module docstring)."""

    algorithm = "neural_rloo"
    Config = NeuralRLOOConfig

    def __init__(
        self,
        policy: NeuralPolicy | nn.Module,
        task,
        config: NeuralRLOOConfig | None = None,
        seed: int = 0,
        *,
        tokenizer=None,
    ):
        super().__init__(policy, task, config or NeuralRLOOConfig(), seed, tokenizer=tokenizer)

    def iteration(self) -> dict:
        cfg = self.config
        watch = self.watch = Stopwatch()
        prompts = [p for p in self.draw_prompts(cfg.num_prompts) for _ in range(cfg.group_size)]
        with watch("generation"):
            rollout = self.rollout(prompts)
        scores, success = self.score(prompts, rollout)
        with watch("train"):
            ref_log_probs = self.reference_log_probs(rollout)
            mask = rollout.completion_mask
            rewards = self.kl_shaped_rewards(rollout, scores, ref_log_probs)
            sequence_reward = rewards.sum(1).numpy()
            seq_adv = torch.from_numpy(
                np.asarray(
                    rloo_advantages(sequence_reward, group_size=cfg.group_size), dtype=np.float64
                )
            )
            n_seq = len(prompts)

            def micro_step(minibatch, micro, first):
                rows = torch.as_tensor(micro, dtype=torch.long)
                m = mask[rows]
                logp, _ = self.token_log_probs(self.policy, rollout, micro)
                a = seq_adv[rows][:, None].expand(m.shape)[m]
                loss = -(a.to(logp.dtype) * logp).sum() / n_seq
                loss.backward()
                out = {"loss": float(loss.detach())}
                self.mismatch(out, logp, rollout.log_probs[rows][m], first)
                return out

            train_metrics = self.optimize(n_seq, micro_step)
        metrics = self.rollout_metrics(rollout, scores, success, ref_log_probs)
        metrics["reward"] = float(sequence_reward.mean())
        metrics.update(train_metrics)
        metrics.update(watch.metrics())
        return self.finish(rollout, metrics)
