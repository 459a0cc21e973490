"""What the policy-gradient trainers share: a tabular softmax policy over k-gram contexts, Adam on
its rows, rollouts from a :class:`fastlmrl.TextGenerationEnv`, and the diagnostics.

The policy is a logits table ``policy`` (S = V**k contexts, V tokens):
:math:`\\pi(a \\mid s) = \\mathrm{softmax}(\\text{policy}[s])_a`, initialised from the n-gram LM
(:attr:`fastlmrl.tasks.TextTask.initial_policy`); the frozen reference :math:`\\pi_{\\mathrm{ref}}`
is the LM itself (:attr:`~fastlmrl.tasks.TextTask.reference`).  The losses of
:mod:`fastlmrl.tabular_losses` give the gradient per distinct visited context (one softmax per
context, not per token), which :class:`fastlmrl.Adam` applies to those rows only.  The KL to the
reference reported as ``kl`` is exact: the mean over sequences of :math:`\\sum_t
\\mathrm{KL}(\\pi(\\cdot|s_t)\\,\\|\\,\\pi_{\\mathrm{ref}}(\\cdot|s_t))` over the generated tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _backend, _free_cores
from .. import _validation as check
from ..kl_divergence import AdaptiveKLController, FixedKLController
from ..log_probs import log_softmax
from ..optimizers import Adam
from ..permutations import permutation
from ..policy_losses import KL_ESTIMATORS
from ..rng import advance, check_capacity
from ..tabular_losses import CONTRACT as _LOSS_CONTRACT
from ..tabular_losses import ppo_loss_tabular, token_log_probs_tabular
from .base import Trainer, explained_variance

if TYPE_CHECKING:  # what readers and tools follow: the reference kernels (and the task type)
    from .._python import permutations as _permutation_kernels
    from .._python import tabular_losses as _loss_kernels
    from ..tasks import TextTask
else:  # the active backend's kernels, rebound by set_backend (fastlmrl._backend.bind)
    _permutation_kernels = _loss_kernels = _backend.bind(
        __name__, "_permutation_kernels", "_loss_kernels"
    )

__all__ = ["PolicyGradientTrainer", "check_config", "explained_variance"]


def check_config(
    config, *, positive_ints=(), positive=(), nonnegative=(), unit=(), choices=None
) -> None:
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


# The reference's log-probabilities are kept for every (context, token) pair when the table has at
# most this many entries (32 MiB of float64); larger tables compute them per batch.
REFERENCE_CACHE_ENTRIES = 1 << 22
_NO_REF = np.empty(0)
_NO_OFFSETS = np.zeros(1, dtype=np.int64)


#: the PPO loss kernel the trainers call with reused buffers (its ``stats`` slots are read by name)
_PPO_KERNEL = _LOSS_CONTRACT["ppo_loss_tabular"]


class _LossBuffers:
    """Outputs and work arrays of the tabular PPO kernel, reused by every call of an iteration
    (fresh arrays per minibatch cost page faults: glibc returns freed memory to the OS)."""

    def __init__(self, n: int, table: np.ndarray):
        n_rows = min(n, table.shape[0])
        self.capacity = n
        self.index = np.empty(table.shape[0], dtype=np.int64)
        self.rows = np.empty(n_rows, dtype=np.int64)
        self.num_rows = np.zeros(1, dtype=np.int64)
        self.grad = np.empty((n_rows, table.shape[1]), dtype=table.dtype)
        self.token_loss = np.empty(n)
        self.log_probs = np.empty(n)
        self.ratios = np.empty(n)
        self.stats = np.zeros(len(_PPO_KERNEL.results["stats"]))


class PolicyGradientTrainer(Trainer):
    r"""Base of REINFORCE, A2C, PPO, GRPO and RLOO on a :class:`fastlmrl.tasks.TextTask`.

    ``config`` must have ``lr`` (Adam step size), ``num_sequences`` (B per iteration) and the KL
    leash ``kl_coef``, ``kl_target``, ``kl_horizon`` (below).  A learned value table (A2C, PPO,
    REINFORCE with ``baseline="value"``) is created when :meth:`uses_values` says so, with its own
    Adam (``value_lr``).  The algorithms' configs (:class:`fastlmrl.trainers.A2CConfig`, ...)
    document their own fields and point here for the shared ones.

    The fields shared by every config (each algorithm's config lists its own default):

    lr : float > 0
        Adam step size of the policy table (TRL: ``learning_rate``).
    kl_coef : float >= 0
        β, the weight of the KL leash to the reference policy :math:`\pi_{ref}` (TRL: ``beta``);
        the initial value when ``kl_target`` is set.  REINFORCE, A2C and PPO subtract
        :math:`\beta(\log\pi - \log\pi_{ref})` from the per-token rewards, RLOO folds its sum
        into the sequence reward, GRPO instead adds β times the k3 KL penalty to the loss (each
        module docstring).
    kl_target : float > 0 or None
        None: β stays fixed.  Else the adaptive controller of Ziegler et al. 2019, §2.2
        (:class:`fastlmrl.AdaptiveKLController`) moves β after every iteration so that the
        measured KL per sequence approaches this target (nats).
    kl_horizon : float > 0
        The controller's horizon, in sequences: its gain is :math:`K_\beta` = B / ``kl_horizon``.

    Parameters
    ----------
    task : fastlmrl.tasks.TextTask
        The environment, the initial policy table and the reference policy.
    config : the algorithm's config dataclass or None
        Hyper-parameters (None: the defaults).
    seed : int
        The only source of randomness; the same seed gives the same run.
    """

    def __init__(self, task: TextTask, config: Any, seed: int = 0):
        super().__init__(config, seed)
        policy = task.initial_policy
        if policy.shape != task.reference.shape:
            raise ValueError(
                f"vocabulary mismatch: policy table {policy.shape} vs reference "
                f"{task.reference.shape}"
            )
        self.task = task
        self.env = task.env
        self.policy = np.array(policy, copy=True)
        self.reference = task.reference
        self.optimizer = Adam(self.policy, lr=config.lr)
        self.values: np.ndarray | None = None  # (S, 1) V(s) of the trainers that use values
        if self.uses_values():
            self.values = np.zeros((self.policy.shape[0], 1), dtype=self.policy.dtype)
            self.value_optimizer = Adam(self.values, lr=config.value_lr)
        self._ref_log_softmax: np.ndarray | None = None
        # (S * V,) log pi_ref of every pair, when small enough
        self._ref_log_probs: np.ndarray | None = None
        self._loss_buffers: _LossBuffers | None = None
        self._weights: dict[int, np.ndarray] = {}  # n -> the token-mean weights 1/n (read-only)
        # (order, uniforms, bucket starts) of the minibatch permutation
        self._shuffle: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.kl_controller: FixedKLController | AdaptiveKLController
        if config.kl_target is None:
            self.kl_controller = FixedKLController(config.kl_coef)
        else:
            self.kl_controller = AdaptiveKLController(
                config.kl_coef, config.kl_target, config.kl_horizon
            )

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
        log_ratio = token_log_probs_tabular(
            self.policy, contexts, tokens
        ) - self.reference_log_probs(contexts, tokens)
        rewards[batch.valid] -= kl_coef * log_ratio
        return rewards

    def state_values(self, batch):
        """(values (B, T) of V(S_t) with 0 on padding, bootstrap (B,) = V(S_{L_b}))."""
        assert self.values is not None, "a trainer without a value table"
        v = self.values[:, 0].astype(np.float64)
        values = np.where(batch.valid, v[batch.contexts], 0.0)
        return values, v[batch.final_contexts]

    def sum_by_context(
        self, contexts: np.ndarray, values: np.ndarray, rows: np.ndarray
    ) -> np.ndarray:
        """sum_{i: contexts[i] = r} values[i] for each r of ``rows`` (float64, in token order)."""
        return np.bincount(contexts, weights=values, minlength=self.policy.shape[0])[rows]

    def update_policy(self, rows: np.ndarray, grad_rows: np.ndarray) -> None:
        """One optimizer step on the policy table's ``rows`` with their gradient ``grad_rows``
        (a tabular loss's ``rows`` / ``grad_rows``)."""
        self.optimizer.step(rows, grad_rows)

    def update_values(self, contexts: np.ndarray, grad_values: np.ndarray) -> None:
        assert self.values is not None, "a trainer without a value table"
        grads = np.ascontiguousarray(grad_values, dtype=self.values.dtype).reshape(-1, 1)
        self.value_optimizer.step(contexts, grads)

    def minibatches(self, n: int, count: int):
        """(order, parts): a random order of range(n) (:func:`fastlmrl.permutation` from the
        stream; range(n) itself for one minibatch) and ``count`` consecutive slices of it with
        ``numpy.array_split``'s sizes (empty ones dropped): minibatch k is ``order[parts[k]]``.

        The order is the permutation kernel's answer in a buffer the trainer reuses (valid until
        the next call)."""
        if count <= 1:
            return np.arange(n), [slice(0, n)]
        size, extra = divmod(n, count)
        bounds = [0]
        for k in range(count):
            bounds.append(bounds[-1] + size + (k < extra))
        return self.permutation(n), [
            slice(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo
        ]

    def permutation(self, n: int) -> np.ndarray:
        """:func:`fastlmrl.permutation` ``(self.stream, n)``, the same kernel and counters, into
        buffers kept across calls (the order is valid until the next call)."""
        shuffle = self._shuffle
        if shuffle is None or shuffle[0].shape[0] < n:
            shuffle = self._shuffle = (
                np.empty(n, dtype=np.int64),
                np.empty(n),
                np.empty(n + 1, dtype=np.int64),
            )
        key, counter = check_capacity(self.stream, n)  # before anything is written
        out = shuffle[0][:n]
        status = _permutation_kernels.random_permutation(
            np.uint64(key), np.uint64(counter), out, shuffle[1][:n], shuffle[2][: n + 1]
        )
        if status:  # the public function's error (or its internal-error message)
            return permutation(self.stream, n)
        advance(self.stream, n)
        return out

    def token_mean_weights(self, n: int) -> np.ndarray:
        """(n,) weights 1/n (the token mean; ``weights=None`` of the losses), kept per n."""
        w = self._weights.get(n)
        if w is None:
            if len(self._weights) > 8:
                self._weights.clear()
            w = np.full(n, 1.0 / n if n else 0.0)
            w.flags.writeable = False
            self._weights[n] = w
        return w

    def ppo_loss_rows(
        self,
        contexts,
        tokens,
        old_log_probs,
        advantages,
        weights,
        clip_low,
        clip_high,
        ref_log_probs=None,
        kl_coef=0.0,
        sequence_offsets=None,
    ):
        """(rows, grad_rows, stats) of :func:`fastlmrl.ppo_loss_tabular` on the policy table
        (k3 KL estimator, no dual clip; ``stats`` a named tuple of the kernel's statistics slots:
        loss, pg_loss, kl_loss, clip_fraction, dual_clip_fraction, approx_kl_k1, approx_kl_k3),
        computed by the same kernel with the trainer's reused buffers: ``rows`` and ``grad_rows``
        are valid until the next call.

        The per-token arrays must already be what the public function would pass: contexts and
        tokens int64, the others float64, 1-D contiguous, of one length; the trainer builds them
        so.  Any kernel status (a bad id, a NaN row, ...) is raised by the public function on the
        same arguments, with its message."""
        # the scalar checks of the public function (the kernel trusts its options)
        clip_low = check.real(clip_low, "clip_low", 0.0, 1.0, high_open=True)
        clip_high = check.real(clip_high, "clip_high", 0.0)
        kl_coef = check.real(kl_coef, "kl_coef", 0.0)
        if ref_log_probs is None and kl_coef != 0.0:
            raise ValueError("kl_coef > 0 needs ref_log_probs")
        n = contexts.shape[0]
        buffers = self._loss_buffers
        if buffers is None or buffers.capacity < n:
            buffers = self._loss_buffers = _LossBuffers(n, self.policy)
        seq = sequence_offsets is not None
        status = _loss_kernels.ppo_loss_tabular(
            self.policy,
            contexts,
            tokens,
            old_log_probs,
            advantages,
            weights,
            _NO_REF if ref_log_probs is None else ref_log_probs,
            sequence_offsets if seq else _NO_OFFSETS,
            clip_low,
            clip_high,
            0.0,
            kl_coef,
            KL_ESTIMATORS["k3"],
            int(seq),
            buffers.index,
            buffers.rows,
            buffers.num_rows,
            buffers.token_loss[:n],
            buffers.log_probs[:n],
            buffers.ratios[:n],
            buffers.grad,
            buffers.stats,
            _free_cores.threads(),
        )
        if status:
            ppo_loss_tabular(
                self.policy,
                contexts,
                tokens,
                old_log_probs,
                advantages,
                weights=weights,
                clip_low=clip_low,
                clip_high=clip_high,
                ratio_level="sequence" if seq else "token",
                sequence_offsets=sequence_offsets,
                ref_log_probs=ref_log_probs,
                kl_coef=kl_coef,
                kl_estimator="k3",
            )
            raise RuntimeError(f"ppo_loss_tabular kernel returned status {status}")
        u = int(buffers.num_rows[0])
        return buffers.rows[:u], buffers.grad[:u], _PPO_KERNEL.read_results("stats", buffers.stats)

    # --- diagnostics ----------------------------------------------------------------------------
    def reference_log_softmax(self) -> np.ndarray:
        if self._ref_log_softmax is None:
            self._ref_log_softmax = log_softmax(np.ascontiguousarray(self.reference))
        return self._ref_log_softmax

    def reference_log_probs(self, contexts: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """log pi_ref(a | s) of the given pairs (float64), by the formula of the loss kernels'
        log pi (:func:`fastlmrl.token_log_probs_tabular`): equal bits when pi equals pi_ref.

        The reference is frozen: for a table of at most ``REFERENCE_CACHE_ENTRIES`` entries the
        log-probabilities of all (s, a) pairs are computed once by that function (a row's
        statistics do not depend on the batch, so the bits are the same) and gathered."""
        cache = self._ref_log_probs
        if cache is None:
            cache = self._ref_log_probs = self._reference_pairs()
        n_contexts, n_vocab = self.reference.shape
        if (
            cache is not False
            and type(contexts) is np.ndarray
            and type(tokens) is np.ndarray
            and contexts.ndim == 1
            and contexts.shape == tokens.shape
            and contexts.dtype.kind == "i"
            and tokens.dtype.kind == "i"
        ):
            if contexts.size == 0 or (
                0 <= contexts.min()
                and contexts.max() < n_contexts
                and 0 <= tokens.min()
                and tokens.max() < n_vocab
            ):
                return cache[contexts.astype(np.int64) * n_vocab + tokens]
        return token_log_probs_tabular(self.reference, contexts, tokens)  # (or its error)

    def _reference_pairs(self):
        """log pi_ref of every (s, a) pair, flat (S * V,), or False when the table is too large
        or holds a row the function refuses (then each batch asks it, naming only its own)."""
        n_contexts, n_vocab = self.reference.shape
        if n_contexts * n_vocab > REFERENCE_CACHE_ENTRIES:
            return False
        all_contexts = np.repeat(np.arange(n_contexts, dtype=np.int64), n_vocab)
        all_tokens = np.tile(np.arange(n_vocab, dtype=np.int64), n_contexts)
        try:
            pairs = token_log_probs_tabular(self.reference, all_contexts, all_tokens)
        except ValueError:
            return False
        pairs.flags.writeable = False
        return pairs

    def policy_diagnostics(self, batch, contexts=None) -> dict:
        """Exact KL to the reference (per sequence, summed over tokens) and mean token entropy
        (``contexts``: ``self.flat(batch, batch.contexts)`` when the caller has it)."""
        if contexts is None:
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
        return {
            "kl": float(kl_rows @ visits[rows]) / n_sequences,
            "entropy": float(entropy_rows @ visits[rows]) / contexts.size,
        }

    def finish(self, batch, metrics: dict, contexts=None) -> dict:
        """Add the common diagnostics; let the KL controller see this batch's exact KL."""
        metrics.update(self.policy_diagnostics(batch, contexts))
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
            arrays.update(
                values=self.values,
                value_adam_m=self.value_optimizer.m,
                value_adam_v=self.value_optimizer.v,
            )
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
        """Generate with the current policy (a fresh RandomStream or int seed; not the
        trainer's)."""
        table = self.policy if greedy_temperature is None else self.policy / greedy_temperature
        return self.env.rollout(np.ascontiguousarray(table), seed, num_sequences=num_sequences)
