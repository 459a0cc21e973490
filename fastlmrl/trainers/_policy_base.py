"""What the policy-gradient trainers share: a tabular softmax policy over k-gram contexts, Adam on
its rows, rollouts from a :class:`fastlmrl.TextGenerationEnv`, and the diagnostics.

The policy is a logits table ``policy`` (S = V**k contexts, V tokens):
:math:`\\pi(a \\mid s) = \\mathrm{softmax}(\\text{policy}[s])_a`, initialised from the n-gram LM
(:attr:`fastlmrl.tasks.TextTask.initial_policy`); the frozen reference :math:`\\pi_{\\mathrm{ref}}`
is the LM itself (:attr:`~fastlmrl.tasks.TextTask.reference`).  The losses of
:mod:`fastlmrl.tabular_losses` give the gradient per distinct visited context (one softmax per
context, not per token), which :class:`fastlmrl.Adam` applies to those rows only.  The KL to the reference reported as ``kl`` is exact: the mean
over sequences of :math:`\\sum_t \\mathrm{KL}(\\pi(\\cdot|s_t)\\,\\|\\,\\pi_{\\mathrm{ref}}(\\cdot|s_t))`
over the generated tokens.
"""
from __future__ import annotations

import numpy as np

from ..kl_divergence import AdaptiveKLController, FixedKLController
from ..log_probs import log_softmax
from ..optimizers import Adam
from ..permutations import permutation
from ..tabular_losses import token_log_probs_tabular
from .base import Trainer, explained_variance

__all__ = ["PolicyGradientTrainer", "check_config", "explained_variance"]


def check_config(config, *, positive_ints=(), positive=(), nonnegative=(), unit=(),
                 choices=None) -> None:
    """Validate a trainer config dataclass (ValueError naming the field)."""
    from .. import _validation as check

    for name in positive_ints:
        check.positive_int(getattr(config, name), name)
    for name in positive:
        check.real(getattr(config, name), name, 0.0, None, low_open=True)
    for name in nonnegative:
        check.real(getattr(config, name), name, 0.0, None)
    for name in unit:
        check.real(getattr(config, name), name, 0.0, 1.0)
    for name, options in (choices or {}).items():
        if getattr(config, name) not in options:
            raise ValueError(f"{name} must be one of {options}, got {getattr(config, name)!r}")
    target = getattr(config, "kl_target", None)
    if target is not None:
        check.real(target, "kl_target", 0.0, None, low_open=True)
        check.real(config.kl_horizon, "kl_horizon", 0.0, None, low_open=True)


class PolicyGradientTrainer(Trainer):
    """Base of REINFORCE, A2C, PPO, GRPO and RLOO on a :class:`fastlmrl.tasks.TextTask`.

    ``config`` must have ``lr`` (Adam step size), ``num_sequences`` (B per iteration) and the KL
    leash: ``kl_coef`` (β, initial value), ``kl_target`` (None: β stays fixed; else the adaptive
    controller of Ziegler et al. 2019 moves β after every iteration so that the measured KL per
    sequence approaches the target) and ``kl_horizon`` (its K_β = B / horizon).  A learned value
    table (A2C, PPO, REINFORCE with ``baseline="value"``) is created when :meth:`uses_values` says
    so, with its own Adam (``value_lr``).
    """

    def __init__(self, task, config, seed: int = 0):
        super().__init__(config, seed)
        policy = task.initial_policy
        if policy.shape != task.reference.shape:
            raise ValueError(f"vocabulary mismatch: policy table {policy.shape} vs reference "
                             f"{task.reference.shape}")
        self.task = task
        self.env = task.env
        self.policy = np.array(policy, copy=True)
        self.reference = task.reference
        self.optimizer = Adam(self.policy, lr=config.lr)
        self.values = None
        if self.uses_values():
            self.values = np.zeros((self.policy.shape[0], 1), dtype=self.policy.dtype)
            self.value_optimizer = Adam(self.values, lr=config.value_lr)
        self._ref_log_softmax = None
        if config.kl_target is None:
            self.kl_controller = FixedKLController(config.kl_coef)
        else:
            self.kl_controller = AdaptiveKLController(config.kl_coef, config.kl_target,
                                                      config.kl_horizon)

    def uses_values(self) -> bool:
        return False

    # --- experience -----------------------------------------------------------------------------
    def rollout(self, **kwargs):
        """B fresh sequences from the current policy, randomness from the trainer's stream."""
        kwargs.setdefault("num_sequences", self.config.num_sequences)
        return self.env.rollout(self.policy, self.stream, **kwargs)

    @staticmethod
    def flat(batch, array: np.ndarray) -> np.ndarray:
        """The valid entries of a (B, T) array, sequence by sequence (row-major order)."""
        return array[batch.valid]

    def kl_shaped_rewards(self, batch, kl_coef: float) -> np.ndarray:
        r"""(B, T) rewards :math:`r_t - \beta(\log\pi(a_t|s_t) - \log\pi_{ref}(a_t|s_t))`,
        :math:`\beta` = ``kl_coef``.

        Both log-probabilities come from the same float64 formula
        (:func:`fastlmrl.token_log_probs_tabular`), so a policy equal to the reference gets exactly
        zero shaping (no rounding noise for Adam to amplify).
        """
        rewards = np.array(batch.rewards, dtype=np.float64)
        if kl_coef == 0.0 or not batch.valid.any():
            return rewards
        contexts, tokens = self.flat(batch, batch.contexts), self.flat(batch, batch.actions)
        log_ratio = (token_log_probs_tabular(self.policy, contexts, tokens)
                     - self.reference_log_probs(contexts, tokens))
        rewards[batch.valid] -= kl_coef * log_ratio
        return rewards

    def state_values(self, batch):
        """(values (B, T) of V(S_t) with 0 on padding, bootstrap (B,) = V(S_{L_b}))."""
        v = self.values[:, 0].astype(np.float64)
        values = np.where(batch.valid, v[batch.contexts], 0.0)
        return values, v[batch.final_contexts]

    def sum_by_context(self, contexts: np.ndarray, values: np.ndarray,
                       rows: np.ndarray) -> np.ndarray:
        """sum_{i: contexts[i] = r} values[i] for each r of ``rows`` (float64, in token order)."""
        return np.bincount(contexts, weights=values, minlength=self.policy.shape[0])[rows]

    def update_policy(self, rows: np.ndarray, grad_rows: np.ndarray) -> None:
        """One optimizer step on the policy table's ``rows`` with their gradient ``grad_rows``
        (a tabular loss's ``rows`` / ``grad_rows``)."""
        self.optimizer.step(rows, grad_rows)

    def update_values(self, contexts: np.ndarray, grad_values: np.ndarray) -> None:
        grads = np.ascontiguousarray(grad_values, dtype=self.values.dtype).reshape(-1, 1)
        self.value_optimizer.step(contexts, grads)

    def minibatches(self, n: int, count: int):
        """(order, parts): a random order of range(n) (:func:`fastlmrl.permutation` from the
        stream; range(n) itself for one minibatch) and ``count`` consecutive slices of it with
        ``numpy.array_split``'s sizes (empty ones dropped): minibatch k is ``order[parts[k]]``."""
        if count <= 1:
            return np.arange(n), [slice(0, n)]
        size, extra = divmod(n, count)
        bounds = np.cumsum([0] + [size + 1] * extra + [size] * (count - extra))
        return permutation(self.stream, n), [slice(lo, hi) for lo, hi in zip(bounds[:-1],
                                                                              bounds[1:]) if hi > lo]

    # --- diagnostics ----------------------------------------------------------------------------
    def reference_log_softmax(self) -> np.ndarray:
        if self._ref_log_softmax is None:
            self._ref_log_softmax = log_softmax(np.ascontiguousarray(self.reference))
        return self._ref_log_softmax

    def reference_log_probs(self, contexts: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """log pi_ref(a | s) of the given pairs (float64), by the formula of the loss kernels'
        log pi (:func:`fastlmrl.token_log_probs_tabular`): equal bits when pi equals pi_ref."""
        return token_log_probs_tabular(self.reference, contexts, tokens)

    def policy_diagnostics(self, batch) -> dict:
        """Exact KL to the reference (per sequence, summed over tokens) and mean token entropy."""
        contexts = self.flat(batch, batch.contexts)
        if contexts.size == 0:
            return {"kl": 0.0, "entropy": 0.0}
        visits = np.bincount(contexts, minlength=self.policy.shape[0])
        rows = np.flatnonzero(visits)
        logp = log_softmax(np.ascontiguousarray(self.policy[rows])).astype(np.float64)
        ref = self.reference_log_softmax()[rows].astype(np.float64)
        p = np.exp(logp)
        kl_rows = np.sum(p * (logp - ref), axis=1)
        entropy_rows = -np.sum(p * logp, axis=1)
        n_sequences = batch.valid.shape[0]
        # every visit of a context adds its KL: the sum over tokens, averaged over sequences
        return {"kl": float(kl_rows @ visits[rows]) / n_sequences,
                "entropy": float(entropy_rows @ visits[rows]) / contexts.size}

    def finish(self, batch, metrics: dict) -> dict:
        """Add the common diagnostics; let the KL controller see this batch's exact KL."""
        metrics.update(self.policy_diagnostics(batch))
        metrics["kl_coef"] = self.kl_controller.value
        if isinstance(self.kl_controller, AdaptiveKLController):
            self.kl_controller.update(metrics["kl"], batch.valid.shape[0])
        return metrics

    def base_metrics(self, batch, rewards=None) -> dict:
        """``score``: task reward per sequence; ``reward``: the (KL-shaped) reward optimised."""
        rewards = batch.rewards if rewards is None else rewards
        metrics = {
            "score": float(batch.scores.mean()),
            "reward": float(rewards.sum(axis=1).mean()),
            "length": float(batch.lengths.mean()),
            "tokens": int(batch.num_tokens),
        }
        return metrics

    @staticmethod
    def value_metrics(predicted: np.ndarray, returns: np.ndarray) -> dict:
        return {"explained_variance": explained_variance(predicted, returns)}

    # --- checkpoints ----------------------------------------------------------------------------
    def arrays(self) -> dict:
        arrays = {"policy": self.policy, "adam_m": self.optimizer.m, "adam_v": self.optimizer.v}
        if self.values is not None:
            arrays.update(values=self.values, value_adam_m=self.value_optimizer.m,
                          value_adam_v=self.value_optimizer.v)
        return arrays

    def scalars(self) -> dict:
        scalars = {"adam_t": self.optimizer.t, "kl_coef": self.kl_controller.value}
        if self.values is not None:
            scalars["value_adam_t"] = self.value_optimizer.t
        return scalars

    def load_scalars(self, scalars: dict) -> None:
        self.optimizer.t = int(scalars["adam_t"])
        self.kl_controller.value = float(scalars["kl_coef"])
        if self.values is not None:
            self.value_optimizer.t = int(scalars["value_adam_t"])

    # --- using the policy -----------------------------------------------------------------------
    def sample(self, num_sequences: int, seed, greedy_temperature: float | None = None):
        """Generate with the current policy (a fresh RandomStream or int seed; not the trainer's)."""
        table = self.policy if greedy_temperature is None else self.policy / greedy_temperature
        return self.env.rollout(np.ascontiguousarray(table), seed, num_sequences=num_sequences)
