r"""What the neural policy-gradient trainers share: a PyTorch causal LM (:class:`~fastlmrl.neural.
NeuralPolicy`) fine-tuned with ``torch.optim.AdamW`` on a task with a programmatic reward.

The four trainers (:mod:`.neural_reinforce`, :mod:`.neural_ppo`, :mod:`.neural_grpo`,
:mod:`.neural_rloo`) follow the table trainers of the same names (same algorithms, config names,
metrics and checkpoint semantics); what differs is the policy: a neural network whose weights are
updated by back-propagation through the fastlmrl loss ops (:mod:`fastlmrl.torch`).

**Task.**  Any object with ``prompts(n, seed) -> list[str]`` and ``reward(prompts, completions,
terminated) -> (B,) array`` -- e.g. :mod:`fastlmrl.verifiable_tasks` (exact-match rewards; their
``success`` gives the success rate, reported as ``success_rate``).  The prompts of an iteration
are ``task.prompts(n, seed=s)`` with ``s`` drawn from the trainer's stream.

**Rollouts.**  :func:`fastlmrl.neural.generate` (KV cache, :func:`fastlmrl.torch.sample_tokens`
with the trainer's :class:`~fastlmrl.RandomStream`), ``max_new_tokens``, ``temperature``,
``top_k``, ``top_p``.  The policy being optimised is :math:`\mathrm{softmax}(\text{logits}/\tau)`
(TRL's convention: the trainer's forward pass divides the logits by the sampling temperature).
:math:`\log\pi_{old}` is the rollout's log-probability of each sampled token (under the
distribution sampled from; with ``top_k``/``top_p`` filters that is not the unfiltered policy, and
the ratio :math:`\pi_\theta/\pi_{old}` carries the difference, as it does for a vLLM sampler).

**Loss path.**  ``fused_head=None`` (default) uses the fused LM head
(:func:`fastlmrl.torch.linear_ppo_loss` / :func:`~fastlmrl.torch.linear_token_log_probs` on the
last hidden states and the output layer's weight) when :meth:`NeuralPolicy.fused_head` holds, the
logits path (:func:`fastlmrl.torch.ppo_loss` / :func:`~fastlmrl.torch.token_log_probs`)
otherwise; ``True`` / ``False`` force one (``True`` on a model without it is a ValueError).

**Optimisation.**  ``epochs`` passes over the iteration's sequences, each in ``minibatches``
random minibatches (a permutation from the trainer's stream); one AdamW step per minibatch
(``lr``, ``weight_decay``, betas (0.9, 0.999), eps 1e-8) after clipping the global gradient norm
to ``max_grad_norm`` (None: no clipping).  ``grad_accumulation`` splits each minibatch into that
many micro-batches, each forward/backward on its own rows: the loss weights are those of the whole
minibatch, so the accumulated gradient equals the minibatch's (TRL instead averages the
micro-batch losses, which differs when micro-batches hold different token counts).

**KL to the reference.**  A frozen deep copy of the initial model (made when ``kl_coef > 0`` or
``kl_target`` is set) gives :math:`\log\pi_{ref}` of the sampled tokens.  ``kl_coef`` (β), with
``kl_target``/``kl_horizon`` the adaptive controller of Ziegler et al. 2019, as the table
trainers; the estimator (``kl_estimator``: k1, k2, k3, Schulman 2020) enters the loss (GRPO) or the
reward (REINFORCE, PPO, RLOO: k1, the per-token log-ratio, as the table trainers).

**Metrics** (per iteration): ``score`` (mean task reward per sequence), ``reward`` (the reward
optimised, KL-shaped where the algorithm shapes it), ``success_rate`` (when the task has
``success``), ``kl`` (exact, as the table trainers: the mean over sequences of
:math:`\sum_t \mathrm{KL}(\pi_{old}(\cdot|s_t)\,\|\,\pi_{ref}(\cdot|s_t)) = \sum_t \sum_v
\pi_{old}(v|s_t)(\log\pi_{old}(v|s_t) - \log\pi_{ref}(v|s_t))` over the generated tokens, both
distributions :math:`\mathrm{softmax}(\text{logits}/\tau)` over the whole vocabulary -- the
policy's from the rollout's logits (:attr:`~fastlmrl.neural.Rollout.logits`), the reference's from
its forward pass; the adaptive KL controller sees this value), ``kl_sampled`` (its k1 estimate
from the sampled tokens, :math:`\sum_t \log\pi_{old}(a_t|s_t) - \log\pi_{ref}(a_t|s_t)`,
averaged over sequences: the number TRL logs; with ``top_k`` / ``top_p`` its
:math:`\log\pi_{old}` is that of the filtered sampling distribution), both only with a reference
(the exact one costs the rollout's (B, T, V) logits in memory and, in the reference pass, the
reference's logits chunk by chunk -- on the fused path one more (N, H) x (H, V) product),
``entropy`` (mean over tokens of the sampling distribution's entropy), ``clip_fraction``,
``approx_kl`` (k3 of :math:`\pi_\theta` vs :math:`\pi_{old}`, weighted as the loss), ``length``,
``tokens``, ``tokens_per_second``, ``grad_norm`` (before clipping), ``loss``, and the
rollout/trainer **log-prob mismatch** ``logprob_mismatch_max`` / ``logprob_mismatch_mean``:
:math:`|\log\pi_{old} - \log\pi_\theta|` over the tokens of the iteration's first optimizer step
(all of them when ``minibatches = 1``), whose weights are still those that generated -- the
sampler/trainer drift (cache vs full recompute, kernels, filters); ``generation_seconds``,
``train_seconds`` (everything after the rollout, of which ``reference_seconds`` for the
reference's forward pass and ``optimizer_seconds`` for the AdamW steps; the rest is the policy's
forward pass, the loss and the backward pass).

**Atomic iterations.**  An iteration that raises (a task reward, a loss on non-finite logits, a
KeyboardInterrupt between two minibatch steps) leaves the trainer as it was before it: the
reward is checked before any weight changes, and :meth:`NeuralTrainer.optimize` restores the
weights (value head included), AdamW's state and the random stream when anything fails after the
first optimizer step (it keeps a copy of them for the iteration: parameters plus AdamW state
once more in memory).

**Checkpoints** (:meth:`NeuralTrainer.save`): a :mod:`fastlmrl.checkpoint` file (atomic,
SHA-256 per array) with the policy's (and value head's) weights, the reference weights, AdamW's
state, the RandomStream position, the KL coefficient, the iteration count and the history.
A run resumed from it is bit-identical to one that never stopped at the same
``torch.get_num_threads()`` (PyTorch's CPU kernels split reductions by thread).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from ..checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..kl_divergence import AdaptiveKLController, FixedKLController
from ..permutations import permutation
from ..rng import RandomStream, uniforms
from ..torch import linear_token_log_probs, token_log_probs
from .base import Trainer, _json_safe

if TYPE_CHECKING:
    from torch import nn

    from ..neural.policy import NeuralPolicy

__all__ = ["NeuralConfig", "NeuralTrainer", "resolve_aliases"]

KL_ESTIMATORS = ("k1", "k2", "k3")


def resolve_aliases(config, aliases: dict, given: dict, defaults: dict) -> None:
    """Set ``config.<ours>`` from a TRL-spelled alias (``aliases``: theirs -> ours); giving both
    spellings (ours other than its default) is a TypeError naming them."""
    for theirs, ours in aliases.items():
        value = given.get(theirs)
        if value is None:
            continue
        if getattr(config, ours) != defaults[ours]:
            raise TypeError(f"give only one of {ours} and {theirs} (its TRL spelling)")
        if theirs == "scale_rewards" and isinstance(value, bool):
            value = "group" if value else "none"  # TRL's older boolean form
        setattr(config, ours, value)


@dataclass
class NeuralConfig:
    r"""The settings every neural trainer has; each algorithm's config
    (:class:`~fastlmrl.trainers.NeuralGRPOConfig`, :class:`~fastlmrl.trainers.NeuralPPOConfig`,
    :class:`~fastlmrl.trainers.NeuralReinforceConfig`, :class:`~fastlmrl.trainers.NeuralRLOOConfig`)
    adds its own and says where it uses one of these differently.

    Each field is described by its ``#:`` comment below (meaning, range, units, TRL name).
    B is the number of completions sampled per iteration.
    """

    #: float > 0: AdamW step size (TRL: ``learning_rate``).
    lr: float = 1e-4
    #: float >= 0: AdamW's decoupled weight decay.
    weight_decay: float = 0.0
    #: float > 0 or None: the global gradient norm is clipped to this before each AdamW step
    #: (None: no clipping).
    max_grad_norm: float | None = 1.0
    #: int > 0: passes over the iteration's sequences (REINFORCE and RLOO: must be 1, the
    #: algorithm is on-policy, one AdamW step per iteration).
    epochs: int = 1
    #: int > 0: random minibatches per epoch (a permutation from the trainer's stream), one AdamW
    #: step each (REINFORCE and RLOO: must be 1, use ``grad_accumulation`` to split a batch).
    minibatches: int = 1
    #: int > 0: micro-batches per minibatch, each its own forward/backward, with the minibatch's
    #: loss weights, so the accumulated gradient equals the minibatch's (TRL:
    #: ``gradient_accumulation_steps``).
    grad_accumulation: int = 1
    #: float >= 0: β, the weight of the KL term to the frozen initial model :math:`\pi_{ref}`
    #: (where it enters -- loss, per-token or sequence reward -- is the algorithm's; 0 and no
    #: ``kl_target``: no reference model is kept).
    kl_coef: float = 0.0
    #: str: "k1", "k2" or "k3" (Schulman 2020), the per-token estimator :math:`D` of the KL
    #: penalty in the loss (GRPO; k3 is its paper's eq. 4).  Not used by REINFORCE, PPO and RLOO:
    #: their reward's leash is always k1, the per-token log-ratio
    #: :math:`\log\pi_{old} - \log\pi_{ref}`.
    kl_estimator: str = "k3"
    #: float > 0 or None: None: β stays fixed; else the adaptive controller of Ziegler et al.
    #: 2019, §2.2 moves β after every iteration toward this KL per sequence (nats).
    kl_target: float | None = None
    #: float > 0: the controller's horizon, in sequences (gain :math:`K_\beta` = B /
    #: ``kl_horizon``).
    kl_horizon: float = 256.0
    #: int > 0: the length limit of a completion, in tokens (TRL: ``max_completion_length``).
    max_new_tokens: int = 16
    #: float > 0: sampling temperature τ; the policy optimised is
    #: :math:`\mathrm{softmax}(z/\tau)` (TRL's convention).
    temperature: float = 1.0
    #: int >= 0: sample from the k most likely tokens only (0: no filter).
    top_k: int = 0
    #: float in (0, 1]: nucleus sampling, the smallest set of tokens with this much probability
    #: (1: no filter).
    top_p: float = 1.0
    #: bool or None: generate with the key/value cache (None: when the model supports it).
    use_cache: bool | None = None
    #: bool or None: compute the loss with the fused LM head (:mod:`fastlmrl.torch.lm_head`) from
    #: the last hidden states instead of materialising the logits (None: when the model allows
    #: it; True on a model without an ``nn.Linear`` output layer is a ValueError).
    fused_head: bool | None = None

    def check_common(self) -> None:
        from .. import _validation as check
        from ._policy_base import check_config

        check_config(
            self,
            positive_ints=("epochs", "minibatches", "grad_accumulation", "max_new_tokens"),
            positive=("lr", "temperature"),
            nonnegative=("kl_coef", "weight_decay"),
            choices={"kl_estimator": KL_ESTIMATORS},
        )
        if self.max_grad_norm is not None:
            check.real(self.max_grad_norm, "max_grad_norm", 0.0, None, low_open=True)
        check.real(self.top_p, "top_p", 0.0, 1.0, low_open=True)
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an int >= 0, got {self.top_k!r}")
        for name in ("use_cache", "fused_head"):
            if getattr(self, name) not in (None, True, False):
                raise ValueError(f"{name} must be None, True or False, got {getattr(self, name)!r}")
        if self.epochs * self.minibatches * self.grad_accumulation > 2**31:
            raise ValueError("epochs * minibatches * grad_accumulation is more than 2**31")


def _split(rows: np.ndarray, parts: int) -> list:
    """``rows`` in ``parts`` consecutive pieces of ``numpy.array_split`` sizes (empty dropped)."""
    return [p for p in np.array_split(rows, parts) if p.size]


class NeuralTrainer(Trainer):
    """Base of the neural trainers (see the module docstring).

    Parameters
    ----------
    policy : :class:`~fastlmrl.neural.NeuralPolicy`, or an ``nn.Module`` together with
        ``tokenizer``
    task : prompts + reward (see the module docstring)
    config : the algorithm's config dataclass
    seed : the trainer's RandomStream seed (prompts, sampling, minibatch orders)
    """

    algorithm = "neural_base"

    def __init__(
        self, policy: NeuralPolicy | nn.Module, task, config, seed: int = 0, *, tokenizer=None
    ):
        super().__init__(config, seed)
        from ..neural.policy import NeuralPolicy

        if not isinstance(policy, NeuralPolicy):
            if tokenizer is None:
                raise TypeError(
                    "policy must be a fastlmrl.neural.NeuralPolicy, or give the "
                    "model's tokenizer: Trainer(model, task, tokenizer=...)"
                )
            policy = NeuralPolicy(policy, tokenizer, value_head=self.uses_values())
        elif tokenizer is not None:
            raise TypeError("tokenizer is given by the NeuralPolicy; do not pass it again")
        if self.uses_values() and policy.value_head is None:
            raise ValueError(
                f"{self.algorithm} with a value head needs "
                "NeuralPolicy(model, tokenizer, value_head=True)"
            )
        for name in ("prompts", "reward"):
            if not callable(getattr(task, name, None)):
                raise TypeError(
                    f"task must have a {name}() method (e.g. a "
                    f"fastlmrl.verifiable_tasks task), got {type(task).__name__}"
                )
        self.policy = policy
        self.task = task
        self.tokenizer = policy.tokenizer
        cfg = self.config
        if cfg.fused_head is None:
            self.fused = policy.fused_head()
        elif cfg.fused_head:
            if not policy.fused_head():
                raise ValueError(
                    "fused_head=True: this model exposes no nn.Linear output layer "
                    "whose weights give its logits from its last hidden states"
                )
            self.fused = True
        else:
            self.fused = False
        self.use_cache = policy.supports_cache if cfg.use_cache is None else cfg.use_cache
        self.watch = Stopwatch()  # this iteration's phases (generation, reference, optimizer)
        self.reference = None
        if cfg.kl_coef > 0 or cfg.kl_target is not None:
            self.reference = policy.with_model(policy.frozen_copy())
        self.parameters = [p for p in policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.parameters, lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.kl_controller: FixedKLController | AdaptiveKLController
        if cfg.kl_target is None:
            self.kl_controller = FixedKLController(cfg.kl_coef)
        else:
            self.kl_controller = AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)

    def uses_values(self) -> bool:
        return False

    # --- experience -----------------------------------------------------------------------------
    def draw_prompts(self, n: int) -> list:
        """``n`` task prompts; the task's seed is drawn from the trainer's stream (whose position
        here is restored if the task's reward fails later in the iteration)."""
        self._stream_at_start = self.stream.state()
        task_seed = int(uniforms(self.stream, 1)[0] * 2.0**53)
        return list(self.task.prompts(n, seed=task_seed))

    def rollout(self, prompts: list):
        """Generate one completion per prompt with the trainer's stream and sampling settings."""
        from ..neural.rollout import generate

        cfg = self.config
        ids, mask = self.tokenizer.encode_prompts(prompts)
        return generate(
            self.policy,
            ids,
            mask,
            self.stream,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            top_p=cfg.top_p,
            use_cache=self.use_cache,
            return_logits=self.reference is not None,
        )

    def score(self, prompts: list, rollout) -> tuple:
        """(task rewards (B,) float64, success rate or None)."""
        texts = rollout.texts(self.tokenizer)
        terminated = rollout.terminated.numpy()
        try:  # a failing reward leaves the trainer as it was (no weight has changed yet)
            rewards = np.asarray(self.task.reward(prompts, texts, terminated), dtype=np.float64)
            if rewards.shape != (len(prompts),) or not np.isfinite(rewards).all():
                raise ValueError(
                    f"task.reward must return {len(prompts)} finite rewards, got "
                    f"shape {rewards.shape}: {rewards.ravel()[:4]}"
                )
            success = None
            if callable(getattr(self.task, "success", None)):
                success = float(self.task.success(prompts, texts, terminated))
        except BaseException:
            saved = getattr(self, "_stream_at_start", None)
            if saved is not None:
                self.stream = RandomStream.from_state(saved)
            raise
        return rewards, success

    # --- forward passes -------------------------------------------------------------------------
    def completion_states(self, policy, rollout, rows, *, need_logits: bool, need_hidden: bool):
        """Forward the full sequences of ``rows``; returns ``(logits, hidden, mask)`` at the
        positions that predict each completion token (``(R, T, V)`` / ``(R, T, H)``, logits
        divided by the temperature; None when not needed) and the ``(R, T)`` completion mask."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        ids = rollout.input_ids()[rows]
        attention = rollout.attention_mask()[rows]
        p, t = rollout.prompt_ids.shape[1], rollout.completion_ids.shape[1]
        out = policy(ids, attention, hidden=need_hidden, logits=need_logits)
        window = slice(p - 1, p + t - 1)
        logits = None
        if need_logits:
            logits = out.logits[:, window]
            if self.config.temperature != 1.0:
                logits = logits / self.config.temperature
        hidden = out.hidden[:, window] if need_hidden else None
        return logits, hidden, rollout.completion_mask[rows], out

    def head(self, policy):
        """(weight, bias) of the output layer scaled by 1/temperature (fused path)."""
        layer = policy.output_layer()
        weight, bias = layer.weight, layer.bias
        if self.config.temperature != 1.0:
            weight = weight / self.config.temperature
            bias = None if bias is None else bias / self.config.temperature
        return weight, bias

    def token_log_probs(self, policy, rollout, rows, *, need_hidden: bool = False):
        """Differentiable :math:`\\log\\pi(a_t|s_t)` of the completion tokens of ``rows``, flat
        (N,) in row-major order over the mask, via the fastlmrl ops; also returns the
        ``(R, T, H)`` hidden states when ``need_hidden`` (else None)."""
        logits, hidden, mask, _ = self.completion_states(
            policy, rollout, rows, need_logits=not self.fused, need_hidden=self.fused or need_hidden
        )
        tokens = rollout.completion_ids[torch.as_tensor(rows, dtype=torch.long)][mask]
        if self.fused:
            weight, bias = self.head(policy)
            logp = linear_token_log_probs(hidden[mask], weight, tokens, bias=bias)
        else:
            logp = token_log_probs(logits[mask], tokens)
        return logp, hidden

    @torch.no_grad()
    def reference_log_probs(self, rollout) -> Tensor | None:
        """(B, T) float64 :math:`\\log\\pi_{ref}` of the sampled tokens (0 on padding), or None
        without a reference.  Also sets ``self.exact_kl`` ((B, T) float64, the per-token exact
        :math:`\\mathrm{KL}(\\pi_{old}\\|\\pi_{ref})` over the vocabulary; 0 on padding) when
        the rollout kept its logits, else None."""
        self.exact_kl = None
        if self.reference is None:
            return None
        rows = np.arange(rollout.completion_ids.shape[0])
        mask = rollout.completion_mask
        with self.watch("reference"):
            logits, hidden, _, _ = self.completion_states(
                self.reference, rollout, rows, need_logits=not self.fused, need_hidden=self.fused
            )
            tokens = rollout.completion_ids[mask]
            if self.fused:
                weight, bias = self.head(self.reference)
                states = hidden[mask]
                logp = linear_token_log_probs(states, weight, tokens, bias=bias)

                def ref_logits(rows):  # (rows, V) logits / temperature, a chunk at a time
                    return torch.nn.functional.linear(states[rows], weight, bias)
            else:
                flat = logits[mask]
                logp = token_log_probs(flat, tokens)

                def ref_logits(rows):
                    return flat[rows]

            if rollout.logits is not None:
                self.exact_kl = torch.zeros(mask.shape, dtype=torch.float64)
                self.exact_kl[mask] = exact_kl_rows(
                    rollout.logits[mask], ref_logits, self.config.temperature
                )
        out = torch.zeros(mask.shape, dtype=torch.float64)
        out[mask] = logp.double()
        return out

    # --- optimisation ---------------------------------------------------------------------------
    def minibatch_orders(self, n: int):
        """A permutation of ``n`` sequences from the stream and its ``minibatches`` slices."""
        count = self.config.minibatches
        if count <= 1:
            return [np.arange(n)]
        order = permutation(self.stream, n)
        return [order[part] for part in np.array_split(np.arange(n), count) if part.size]

    def optimize(self, num_sequences: int, micro_step, prepare=None) -> dict:
        """``epochs`` x ``minibatches`` AdamW steps.  ``prepare(minibatch_rows)`` (optional) runs
        once per minibatch; ``micro_step(prepared, micro_rows, first_step)`` runs forward and
        backward of one micro-batch (``prepared``: what ``prepare`` returned, else the minibatch's
        rows) and returns a dict of floats (averaged over the micro-batches in the returned
        metrics; keys starting with ``_`` are the log-prob mismatch records)."""
        cfg = self.config
        records: list = []
        grad_norms = []
        first = True
        # the state before the first step: restored when anything fails (atomic iteration)
        saved = self._snapshot()
        self.policy.train()
        try:
            for _ in range(cfg.epochs):
                for rows in self.minibatch_orders(num_sequences):
                    self.optimizer.zero_grad(set_to_none=True)
                    prepared = rows if prepare is None else prepare(rows)
                    for micro in _split(rows, cfg.grad_accumulation):
                        records.append(micro_step(prepared, micro, first))
                    if cfg.max_grad_norm is not None:
                        norm = torch.nn.utils.clip_grad_norm_(self.parameters, cfg.max_grad_norm)
                    else:
                        norm = torch.linalg.vector_norm(
                            torch.stack(
                                [
                                    torch.linalg.vector_norm(p.grad)
                                    for p in self.parameters
                                    if p.grad is not None
                                ]
                            )
                        )
                    grad_norms.append(float(norm))
                    with self.watch("optimizer"):
                        self.optimizer.step()
                    first = False
        except BaseException:
            self._restore(saved)
            raise
        finally:
            self.policy.eval()
        keys = [k for k in records[0] if not k.startswith("_")] if records else []
        metrics = {k: float(np.mean([r[k] for r in records])) for k in keys}
        metrics.update(self.collect_mismatch(records))
        metrics["grad_norm"] = float(np.mean(grad_norms))
        return metrics

    def _snapshot(self) -> tuple:
        """Copies of what an iteration changes: weights, AdamW state, the stream at the
        iteration's start."""
        stream = getattr(self, "_stream_at_start", None)
        return (
            {k: v.detach().clone() for k, v in self.policy.state_dict().items()},
            _clone_optimizer_state(self.optimizer.state_dict()),
            self.stream.state() if stream is None else stream,
        )

    def _restore(self, saved: tuple) -> None:
        weights, optimizer_state, stream = saved
        with torch.no_grad():
            self.policy.load_state_dict(weights)
        self.optimizer.load_state_dict(optimizer_state)
        self.optimizer.zero_grad(set_to_none=True)
        self.stream = RandomStream.from_state(stream)

    @staticmethod
    def mismatch(stats_out: dict, logp: Tensor, old: Tensor, first: bool) -> None:
        """Record |Δ log p| between the rollout and this forward pass (first step only)."""
        if first and logp.numel():
            diff = (logp.detach().double() - old.double()).abs()
            stats_out["_mismatch_max"] = float(diff.max())
            stats_out["_mismatch_sum"] = float(diff.sum())
            stats_out["_mismatch_n"] = int(diff.numel())

    def collect_mismatch(self, records: list) -> dict:
        records = [r for r in records if "_mismatch_n" in r]
        if not records:
            return {}
        n = sum(r["_mismatch_n"] for r in records)
        return {
            "logprob_mismatch_max": max(r["_mismatch_max"] for r in records),
            "logprob_mismatch_mean": sum(r["_mismatch_sum"] for r in records) / max(n, 1),
        }

    # --- metrics --------------------------------------------------------------------------------
    def rollout_metrics(self, rollout, scores, success, ref_log_probs) -> dict:
        mask = rollout.completion_mask
        n_tok = max(int(mask.sum()), 1)
        metrics = {
            "score": float(scores.mean()),
            "length": float(mask.sum(1).double().mean()),
            "tokens": int(mask.sum()),
            "entropy": float(rollout.entropies[mask].double().sum()) / n_tok,
        }
        if success is not None:
            metrics["success_rate"] = success
        if ref_log_probs is not None:
            log_ratio = (rollout.log_probs.double() - ref_log_probs) * mask
            metrics["kl_sampled"] = float(log_ratio.sum(1).mean())
            exact = getattr(self, "exact_kl", None)
            metrics["kl"] = (
                float(exact.sum(1).mean()) if exact is not None else metrics["kl_sampled"]
            )
        return metrics

    def finish(self, rollout, metrics: dict) -> dict:
        metrics["kl_coef"] = self.kl_controller.value
        if isinstance(self.kl_controller, AdaptiveKLController) and "kl" in metrics:
            self.kl_controller.update(metrics["kl"], int(rollout.completion_ids.shape[0]))
        return metrics

    def kl_shaped_rewards(self, rollout, scores: np.ndarray, ref_log_probs) -> Tensor:
        r"""(B, T) float64 per-token rewards :math:`r_t = R\,[t = L-1] - \beta(\log\pi_{old} -
        \log\pi_{ref})` (the task reward paid at the last token; k1 leash, as the table
        trainers)."""
        mask = rollout.completion_mask
        rewards = torch.zeros(mask.shape, dtype=torch.float64)
        last = (mask.sum(1) - 1).clamp(min=0)
        rewards[torch.arange(mask.shape[0]), last] = torch.from_numpy(scores)
        beta = self.kl_controller.value
        if beta and ref_log_probs is not None:
            rewards -= beta * (rollout.log_probs.double() - ref_log_probs) * mask
        return rewards

    # --- using the policy -----------------------------------------------------------------------
    def sample(self, prompts: list, seed, **overrides):
        """Complete ``prompts`` with the current policy (``seed``: an int or a RandomStream, not
        the trainer's; ``overrides``: ``max_new_tokens``, ``temperature``, ``top_k``, ``top_p``,
        ``return_logits``).
        Returns ``(texts, rollout)``."""
        from ..neural.rollout import generate

        cfg = self.config
        options = dict(
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            top_p=cfg.top_p,
        )
        options.update(overrides)
        ids, mask = self.tokenizer.encode_prompts(list(prompts))
        rollout = generate(self.policy, ids, mask, seed, use_cache=self.use_cache, **options)
        return rollout.texts(self.tokenizer), rollout

    # --- checkpoints ----------------------------------------------------------------------------
    def _state_tensors(self) -> dict:
        """Every tensor of the state, by name (model, value head, reference, AdamW)."""
        tensors = {f"policy:{k}": v for k, v in self.policy.state_dict().items()}
        if self.reference is not None:
            tensors.update(
                {f"reference:{k}": v for k, v in self.reference.model.state_dict().items()}
            )
        opt = self.optimizer.state_dict()
        for index, state in opt["state"].items():
            for k, v in state.items():
                tensors[f"adamw:{index}:{k}"] = v if isinstance(v, Tensor) else torch.tensor(v)
        return tensors

    def save(self, path) -> None:
        """Write the whole state to ``path`` atomically (a :mod:`fastlmrl.checkpoint` file)."""
        arrays, dtypes, shapes = {}, {}, {}
        for name, t in self._state_tensors().items():
            t = t.detach().cpu().contiguous()
            dtypes[name] = str(t.dtype).replace("torch.", "")
            shapes[name] = list(t.shape)
            t = t.reshape(-1)  # 0-dim tensors (AdamW's step) travel as (1,)
            if t.dtype == torch.bfloat16:
                t = t.view(torch.int16)
            arrays[name] = t.numpy().copy()
        meta = self._meta()
        meta["torch"] = {
            "dtypes": dtypes,
            "shapes": shapes,
            "param_groups": self.optimizer.state_dict()["param_groups"],
            "threads": torch.get_num_threads(),
        }
        save_checkpoint(path, arrays, _json_safe(meta))

    def load(self, path) -> NeuralTrainer:
        """Restore a checkpoint of :meth:`save` (same algorithm, configuration and model
        shapes); anything else raises :class:`~fastlmrl.checkpoint.CheckpointError` and leaves
        the trainer as it was."""
        arrays, meta = load_checkpoint(path)
        where = repr(os.fspath(path))
        if meta.get("algorithm") != self.algorithm:
            raise CheckpointError(
                f"{where} is a checkpoint of algorithm "
                f"{meta.get('algorithm')!r}, not {self.algorithm!r}"
            )
        mine = _json_safe(dataclasses.asdict(self.config))
        if meta.get("config") != mine:
            config = meta.get("config")
            saved: dict = config if isinstance(config, dict) else {}
            diffs = ", ".join(
                f"{k} (checkpoint {saved.get(k, '-')!r}, this trainer {mine.get(k, '-')!r})"
                for k in sorted(set(saved) | set(mine))
                if saved.get(k, "-") != mine.get(k, "-")
            )
            raise CheckpointError(
                f"{where}: the checkpoint's configuration differs in "
                f"{diffs or meta.get('config')!r}"
            )
        try:
            dtypes = meta["torch"]["dtypes"]
            shapes = meta["torch"]["shapes"]
            param_groups = meta["torch"]["param_groups"]
            stream = RandomStream.from_state(meta["rng"])
            iterations = int(meta["iterations_done"])
            history = list(meta.get("history", []))
            kl_coef = float(meta["scalars"]["kl_coef"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: checkpoint metadata is incomplete: {exc}") from None
        current = self._state_tensors()
        model_keys = {k for k in current if not k.startswith("adamw:")}
        saved_model_keys = {k for k in arrays if not k.startswith("adamw:")}
        if model_keys != saved_model_keys:
            differ = sorted(saved_model_keys ^ model_keys)[:6]
            raise CheckpointError(
                f"{where}: its tensors {differ} do not match this trainer's model"
            )
        tensors = {}
        for name, arr in arrays.items():
            dtype = getattr(torch, str(dtypes.get(name, "")), None)
            if not isinstance(dtype, torch.dtype):
                raise CheckpointError(f"{where}: tensor {name!r} has no recorded dtype")
            t = torch.from_numpy(arr.copy())
            if dtype == torch.bfloat16:
                t = t.view(torch.bfloat16)
            try:
                t = t.reshape(shapes[name])
            except (KeyError, TypeError, RuntimeError):
                raise CheckpointError(
                    f"{where}: tensor {name!r} has no valid recorded shape"
                ) from None
            if t.dtype != dtype:
                raise CheckpointError(f"{where}: tensor {name!r} is {t.dtype}, recorded {dtype}")
            if name in current and name in model_keys and current[name].shape != t.shape:
                raise CheckpointError(
                    f"{where}: tensor {name!r} has shape {tuple(t.shape)}, "
                    f"this model {tuple(current[name].shape)}"
                )
            tensors[name] = t
        opt_state: dict = {}
        for name, t in tensors.items():
            if name.startswith("adamw:"):
                _, index, key = name.split(":", 2)
                opt_state.setdefault(int(index), {})[key] = t
        # apply, restoring everything when any part is refused
        backup = (
            {k: v.clone() for k, v in self.policy.state_dict().items()},
            None
            if self.reference is None
            else {k: v.clone() for k, v in self.reference.model.state_dict().items()},
            _clone_optimizer_state(self.optimizer.state_dict()),
        )
        try:
            self.policy.load_state_dict(
                {k[len("policy:") :]: v for k, v in tensors.items() if k.startswith("policy:")}
            )
            if self.reference is not None:
                self.reference.model.load_state_dict(
                    {
                        k[len("reference:") :]: v
                        for k, v in tensors.items()
                        if k.startswith("reference:")
                    }
                )
            self.optimizer.load_state_dict({"state": opt_state, "param_groups": param_groups})
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            self.policy.load_state_dict(backup[0])
            if backup[1] is not None and self.reference is not None:  # backup[1]: its state
                self.reference.model.load_state_dict(backup[1])
            self.optimizer.load_state_dict(backup[2])
            raise CheckpointError(
                f"{where}: cannot restore the model or optimizer: {exc}"
            ) from None
        self.stream = stream
        self.seed = meta.get("seed", self.seed)
        self.iterations_done = iterations
        self.history = history
        self.kl_controller.value = kl_coef
        return self

    def scalars(self) -> dict:
        return {"kl_coef": self.kl_controller.value}


def exact_kl(logits: Tensor, ref_logits: Tensor, temperature: float = 1.0) -> Tensor:
    r"""(N,) float64 :math:`\mathrm{KL}(p\,\|\,q) = \sum_v p_v (\log p_v - \log q_v)` of
    :math:`p = \mathrm{softmax}(\text{logits}/\tau)` and :math:`q =
    \mathrm{softmax}(\text{ref\_logits}/\tau)` per row (``ref_logits`` already divided by
    :math:`\tau`: the trainers' reference pass divides them), computed in float64."""
    logp = torch.log_softmax(logits.double() / temperature, dim=-1)
    logq = torch.log_softmax(ref_logits.double(), dim=-1)
    return (logp.exp() * (logp - logq)).sum(-1)


def exact_kl_rows(
    logits: Tensor, ref_logits, temperature: float = 1.0, *, chunk_entries: int = 1 << 21
) -> Tensor:
    """:func:`exact_kl` of the rows of ``logits`` (N, V) against ``ref_logits(rows)`` (a callable
    giving the reference's (n, V) logits, already divided by the temperature, of a slice of
    rows), in chunks of about ``chunk_entries`` entries: float64 temporaries of a few chunk
    sizes, never (N, V) ones."""
    n, v = logits.shape
    out = torch.empty(n, dtype=torch.float64)
    step = max(1, chunk_entries // max(v, 1))
    for lo in range(0, n, step):
        rows = slice(lo, min(n, lo + step))
        out[rows] = exact_kl(logits[rows], ref_logits(rows), temperature)
    return out


def _clone_optimizer_state(state: dict) -> dict:
    return {
        "state": {
            i: {k: v.clone() if isinstance(v, Tensor) else v for k, v in s.items()}
            for i, s in state["state"].items()
        },
        "param_groups": [dict(g) for g in state["param_groups"]],
    }


class Stopwatch:
    """Seconds spent in named phases, which may nest: ``with watch("train"): ...``."""

    def __init__(self):
        self.seconds: dict = {}
        self._open: list = []

    def __call__(self, name: str) -> Stopwatch:
        self._open.append([name, None])
        return self

    def __enter__(self):
        self._open[-1][1] = time.perf_counter()
        return self

    def __exit__(self, *exc):
        name, start = self._open.pop()
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        return False

    def metrics(self) -> dict:
        return {f"{k}_seconds": v for k, v in self.seconds.items()}
