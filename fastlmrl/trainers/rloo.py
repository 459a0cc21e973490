r"""RLOO on a text task (Ahmadian et al. 2024, "Back to basics: revisiting REINFORCE-style
optimization for learning from human feedback in LLMs").

One iteration, top to bottom:

1. Draw G prompts and generate K completions of each.
2. Sequence reward with the KL leash folded in (the paper's eq. 5 setting):
   :math:`R_i = r(x, y_i) - \beta \sum_t (\log\pi(a_t|s_t) - \log\pi_{ref}(a_t|s_t))`.
3. Leave-one-out baseline: :math:`\hat A_i = R_i - \frac{1}{K-1}\sum_{j \ne i} R_j`.
4. REINFORCE: :math:`-\hat A_i \log\pi(y_i|x)`, i.e. every token of completion i carries
   :math:`\hat A_i`; the loss is averaged over sequences (a weight of 1/B on each sequence's
   tokens).
5. Log reward, KL, entropy, tokens/s.

The config also accepts TRL's spellings of its fields: ``beta``, ``num_generations`` / ``rloo_k``,
``learning_rate`` (DEVELOPING.md, Names).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .. import _validation as check
from ..group_advantages import rloo_advantages
from ..rng import uniforms
from ..tabular_losses import reinforce_loss_tabular
from ._policy_base import PolicyGradientTrainer, check_config

if TYPE_CHECKING:
    from ..tasks import TextTask

__all__ = ["RLOOConfig", "RLOOTrainer"]


@check.renamed(
    ecosystem={
        "beta": "kl_coef",
        "num_generations": "group_size",
        "rloo_k": "group_size",
        "learning_rate": "lr",
    }
)
@dataclass
class RLOOConfig:
    r"""Hyper-parameters of :class:`RLOOTrainer` (REINFORCE Leave-One-Out, Ahmadian et al. 2024).

    Each of the K completions :math:`y_i` of a prompt gets the advantage
    :math:`\hat A_i = R_i - \frac{1}{K-1}\sum_{j \ne i} R_j`, where :math:`R_i` is its reward
    minus :math:`\beta\sum_t(\log\pi - \log\pi_{ref})`; the loss is
    :math:`-\hat A_i\log\pi(y_i|x)` averaged over sequences.  ``num_sequences`` (a read-only
    property) is B = ``num_prompts * group_size``.  TRL's spellings are accepted too: ``beta``
    (``kl_coef``), ``num_generations`` / ``rloo_k`` (``group_size``), ``learning_rate`` (``lr``).

    Attributes
    ----------
    num_prompts : int > 0
        G, the prompts drawn per iteration.
    group_size : int >= 2
        K, the completions generated per prompt (TRL: ``num_generations``, ``rloo_k``).
    lr, kl_coef, kl_target, kl_horizon
        The policy table's Adam step size (TRL: ``learning_rate``) and the KL leash (β's initial
        value, TRL: ``beta``; the adaptive controller's target and horizon), shared by the tabular
        policy-gradient trainers and documented once on
        :class:`~fastlmrl.trainers._policy_base.PolicyGradientTrainer`.
    """

    num_prompts: int = 32
    group_size: int = 8
    lr: float = 0.02
    kl_coef: float = 0.1
    kl_target: float | None = None
    kl_horizon: float = 256.0

    def __post_init__(self):
        check_config(
            self, positive_ints=("num_prompts",), positive=("lr",), nonnegative=("kl_coef",)
        )
        if self.group_size < 2:
            raise ValueError(
                f"group_size must be >= 2 (leave-one-out needs two), got {self.group_size}"
            )

    @property
    def num_sequences(self) -> int:
        return self.num_prompts * self.group_size


class RLOOTrainer(PolicyGradientTrainer):
    r"""RLOO (REINFORCE Leave-One-Out, Ahmadian et al. 2024) on a
    :class:`fastlmrl.tasks.TextTask` with a tabular softmax policy; no value function.

    Each :meth:`iteration` draws ``num_prompts`` prompts, generates ``group_size`` completions of
    each, forms the KL-shaped sequence rewards and their leave-one-out advantages
    (:func:`fastlmrl.rloo_advantages`) and takes one Adam step on
    :func:`fastlmrl.reinforce_loss_tabular` with every token carrying its sequence's advantage.

    Parameters
    ----------
    task, config, seed
        As for :class:`~fastlmrl.trainers._policy_base.PolicyGradientTrainer`; ``config`` is a
        :class:`RLOOConfig` (None: the defaults).
    """

    algorithm = "rloo"
    Config = RLOOConfig

    def __init__(self, task: TextTask, config: RLOOConfig | None = None, seed: int = 0):
        super().__init__(task, config or RLOOConfig(), seed)

    def iteration(self) -> dict:
        cfg = self.config
        # 1. G groups of K completions, KL-shaped per-token rewards (k1 with the sampled tokens)
        prompts = np.floor(uniforms(self.stream, cfg.num_prompts) * self.env.num_prompts)
        batch = self.rollout(
            prompt_ids=np.repeat(prompts.astype(np.int64), cfg.group_size), num_sequences=None
        )
        # 2. the sequence reward is the sum of the shaped per-token rewards
        rewards = self.kl_shaped_rewards(batch, self.kl_controller.value)
        sequence_reward = rewards.sum(axis=1)
        # 3. leave-one-out baseline
        seq_adv = rloo_advantages(sequence_reward, group_size=cfg.group_size)
        # 4. REINFORCE on every token with its sequence's advantage, mean over sequences
        contexts = self.flat(batch, batch.contexts)
        tokens = self.flat(batch, batch.actions)
        adv = self.flat(batch, np.broadcast_to(seq_adv[:, None], batch.valid.shape))
        weights = np.full(contexts.size, 1.0 / batch.valid.shape[0])
        result = reinforce_loss_tabular(self.policy, contexts, tokens, adv, weights=weights)
        self.update_policy(result.rows, result.grad_rows)
        # 5. diagnostics
        metrics = self.base_metrics(batch, rewards)
        return self.finish(batch, metrics, contexts)
