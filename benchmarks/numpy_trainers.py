r"""NumPy-vectorised PPO and GRPO iterations on a :class:`fastlmrl.tasks.TextTask` (a baseline).

The same loops as :class:`fastlmrl.PPOTrainer` and :class:`fastlmrl.GRPOTrainer`
(``fastlmrl/trainers/ppo.py``, ``grpo.py``, ``_policy_base.py``), written the way one would write
them with NumPy alone: every step is a whole-array operation over the batch, Python loops run only
over the time axis (T steps of the rollout and of GAE) and over epochs / minibatches.  No fastlmrl
kernel is called.  Used by ``benchmarks/bench_trainers.py`` (the ">= 10x a NumPy-vectorised
implementation" target) and checked against fastlmrl by ``tests/test_numpy_trainers.py``.

Shared with fastlmrl on purpose (so that both implementations see the same random numbers and
hence the same rollouts, and the comparison measures the same work):

* the counter-based uniforms of :mod:`fastlmrl.rng` (``uniforms``, vectorised NumPy), with
  fastlmrl's counter layout: prompts at ``c + b``, token ``t`` of sequence ``b`` at
  ``c + B_draw + b*T + t`` (:meth:`fastlmrl.TextGenerationEnv.rollout`); minibatch orders are
  ``np.argsort(uniforms, kind="stable")``, the permutation :func:`fastlmrl.permutation` defines;
* the scalar KL-coefficient controllers (:mod:`fastlmrl.kl_divergence`; a few float operations
  per iteration).

Phases of one iteration (the names used by the benchmark's phase profile):

1. ``rollout`` -- softmax CDF of every context row (the table is tiny: S = V**k rows, cheaper than
   one CDF per token; fastlmrl caches visited rows the same way), then per time step ``t``
   inverse-CDF sampling of the still-running sequences: token = first ``a`` with
   ``u * total < cdf[s, a]`` (count of ``cdf <= u * total``), ``log mu(a|s) = (x_a - max) -
   log total``.  Sampling semantics identical to fastlmrl's kernel.
2. ``reward`` -- :class:`fastlmrl.rewards.KeywordReward` (terminal): occurrences of each lexicon
   n-gram lying inside the response, by shifted comparisons over the (B, T) token array; paid at
   the last token.  PPO folds the KL leash into it: :math:`r_t - \beta(\log\pi - \log\pi_{ref})`
   (Ziegler et al. 2019).
3. ``advantages`` -- PPO: GAE(γ, λ) (Schulman et al. 2016, eqs. 11-16) backwards over t,
   vectorised over B, EOS = terminated (bootstrap 0), length limit = truncated (bootstrap
   :math:`V(S_{L})`), then batch whitening (population std, ε added to σ).  GRPO (Shao et al.
   2024, §4.1.2): :math:`(R_i - \mathrm{mean}_g)/(\mathrm{std}_g + 10^{-4})`, sample std.
4. ``loss`` -- PPO clipped surrogate (Schulman et al. 2017, eq. 7); GRPO adds the k3 KL penalty
   (Shao et al. 2024, eq. 4).  Two formulations (constructor argument ``grouped``):

   * dense (default; how the loss is written for any model's logits): gathered logits rows
     ``policy[contexts]`` (N, V), gradient rows
     :math:`w_i\,\partial\ell_i/\partial\log\pi\,(\mathrm{onehot}(a_i) - \pi(\cdot|s_i))`,
     summed per context in the ``optimizer`` phase (stable argsort + ``np.add.reduceat``, the
     fastest NumPy scatter; ``np.add.at`` as ``scatter="add.at"``);
   * ``grouped=True``: fastlmrl's own algorithm (:func:`fastlmrl.ppo_loss_tabular`) in NumPy --
     one softmax per distinct context and the gradient sums by ``np.bincount``
     (:func:`ppo_loss_grouped`).
5. ``optimizer`` -- lazy Adam (Kingma & Ba 2015, Algorithm 1) on the distinct visited rows; PPO
   also regresses the value table on the returns (per-context sums by ``np.bincount``).
6. ``diagnostics`` -- exact KL to the reference per sequence and mean entropy over the visited
   rows, score / reward / length, clip fraction, approximate KL, explained variance.

Numerics follow fastlmrl's (float64 arithmetic and per-token inputs, gradient sums per context
rounded once to the table dtype, results stored in the table dtype), so the two agree to float
rounding; the rollout is token-for-token identical.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager

import numpy as np

from fastlmrl.kl_divergence import AdaptiveKLController, FixedKLController
from fastlmrl.rewards import KeywordReward
from fastlmrl.rng import RandomStream, uniforms

__all__ = [
    "NumpyGRPO",
    "NumpyPPO",
    "Rollout",
    "adam_step",
    "gae",
    "scatter_rows",
    "scatter_rows_add_at",
    "grpo_advantages",
    "keyword_scores",
    "loss_weights",
    "masked_whiten",
    "ppo_loss",
]

F64 = np.float64


# ---------------------------------------------------------------------------------------------
# the vectorised pieces (pure functions, tested one by one against fastlmrl)


def keyword_scores(tokens, lengths, grams, word_flags=None):
    """Terminal keyword score per row: sum over ``grams`` [(ids tuple, weight)] of weight x the
    number of occurrences lying entirely within ``tokens[b, :lengths[b]]``.  (B,) float64.
    With ``word_flags`` ((W,) 0/1 per token id; ids outside [0, W) are not word tokens) only whole
    words count: the token before the occurrence (if any) and the one after it (if inside the
    row) are not word tokens."""
    n, horizon = tokens.shape
    scores = np.zeros(n)
    if word_flags is not None and len(word_flags):
        flags = np.asarray(word_flags).astype(bool)
        inside_ids = (tokens >= 0) & (tokens < flags.size)
        is_word = np.zeros(tokens.shape, dtype=bool)
        is_word[inside_ids] = flags[tokens[inside_ids]]
    else:
        is_word = np.zeros(tokens.shape, dtype=bool)
    for gram, weight in grams:
        size = len(gram)
        if size > horizon:
            continue
        width = horizon - size + 1
        match = tokens[:, :width] == gram[0]
        for j in range(1, size):
            match &= tokens[:, j : j + width] == gram[j]
        # an occurrence starting at s ends at s + size - 1, which must be < L
        starts = np.arange(width)[None, :]
        inside = starts + (size - 1) < lengths[:, None]
        left = np.ones((n, width), dtype=bool)
        left[:, 1:] = ~is_word[:, : width - 1]
        right = np.ones((n, width), dtype=bool)
        right[:, : width - 1] = ~is_word[:, size:]
        right |= starts + size == lengths[:, None]
        scores += weight * np.count_nonzero(match & inside & left & right, axis=1)
    return scores


def keyword_scores_per_token(tokens, lengths, grams, weights, presence=False):
    """(B, T) float64: w_k paid at the last token of every occurrence of key k lying within
    ``tokens[b, :lengths[b]]`` (with ``presence`` the first occurrence only), keys added in order:
    the per-token output of KeywordReward in NumPy (its formula before the keyword_scores
    kernels), key by key."""
    tokens = np.asarray(tokens)
    lengths = np.asarray(lengths)
    n, horizon = tokens.shape
    valid = np.arange(horizon)[None, :] < lengths[:, None]
    out = np.zeros((n, horizon))
    for gram, w in zip(grams, weights):
        size = len(gram)
        hits = np.zeros((n, horizon), dtype=bool)
        if size <= horizon:
            width = horizon - size + 1
            match = np.ones((n, width), dtype=bool)
            for j, g in enumerate(gram):
                match &= tokens[:, j : j + width] == g
            hits[:, size - 1 :] = match
        hits &= valid
        if presence:
            hits &= np.cumsum(hits, axis=1) == 1
        out += w * hits
    return out


def gae(rewards, values, valid, terminated, bootstrap, gamma, lam):
    r"""GAE(γ, λ) over (B, T) float64 arrays, one backward loop over t vectorised over B.

    :math:`\delta_t = r_t + \gamma v'_t - V(s_t)`, :math:`\hat A_t = \delta_t + \gamma\lambda
    \hat A_{t+1}`, returns :math:`\hat A_t + V(s_t)`; after the last valid step :math:`v'` is 0
    (terminated) or ``bootstrap`` (truncated).  Padding outputs 0.  Same operation order as
    fastlmrl's kernels (``gamma * lam`` formed once).
    """
    n, horizon = rewards.shape
    gl = gamma * lam
    adv = np.zeros((n, horizon))
    ret = np.zeros((n, horizon))
    a = np.zeros(n)
    v_next = np.where(terminated, 0.0, bootstrap)
    for t in range(horizon - 1, -1, -1):
        m = valid[:, t]
        v = values[:, t]
        delta = rewards[:, t] + gamma * v_next - v
        a_new = delta + gl * a
        adv[:, t] = np.where(m, a_new, 0.0)
        ret[:, t] = np.where(m, a_new + v, 0.0)
        a = np.where(m, a_new, a)
        v_next = np.where(m, v, v_next)
    return adv, ret


def masked_whiten(adv, valid, eps=1e-8):
    r""":math:`(A - \mu)/(\sigma + \varepsilon)` over the valid entries (population σ).

    Padding entries output 0.
    """
    x = adv[valid]
    if x.size == 0:
        return np.zeros_like(adv)
    mean = x.mean()
    std = math.sqrt(np.mean((x - mean) ** 2))
    out = np.zeros_like(adv)
    out[valid] = (x - mean) / (std + eps)
    return out


def grpo_advantages(scores, group_size, scale="group", eps=1e-4):
    r"""GRPO advantages of (B,) scores in consecutive groups of K (sample std, ε added to σ)."""
    r = scores.reshape(-1, group_size)
    mean = r.mean(axis=1, keepdims=True)
    centred = r - mean
    if scale == "none":
        return centred.reshape(-1)
    if scale == "group":
        std = (
            np.sqrt((centred * centred).sum(axis=1, keepdims=True) / (group_size - 1))
            if group_size > 1
            else np.zeros_like(mean)
        )
    elif scale == "batch":
        flat = scores - scores.mean()
        std = math.sqrt((flat * flat).sum() / (flat.size - 1)) if flat.size > 1 else 0.0
    else:
        raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}")
    return (centred / (std + eps)).reshape(-1)


def loss_weights(lengths, horizon, mode):
    """Per-sequence token weight (B,) of GRPO's loss normalisations (see fastlmrl.loss_weights)."""
    n = lengths.shape[0]
    lengths = lengths.astype(F64)
    if mode == "grpo":
        return np.where(lengths > 0, 1.0 / (max(n, 1) * np.maximum(lengths, 1.0)), 0.0)
    if mode in ("bnpo", "dapo"):
        return np.full(n, 1.0 / max(lengths.sum(), 1.0))
    if mode == "dr_grpo":
        return np.full(n, 1.0 / (max(n, 1) * float(horizon)))
    raise ValueError(f"unknown loss normalisation {mode!r}")


def ppo_loss(
    logits,
    tokens,
    old_log_probs,
    advantages,
    weights,
    clip_low,
    clip_high,
    ref_log_probs=None,
    kl_coef=0.0,
):
    r"""Clipped surrogate :math:`\ell_i = -\min(\rho_i A_i, \mathrm{clip}(\rho_i, 1-\epsilon_l,
    1+\epsilon_h) A_i)` (+ :math:`\beta` k3 KL to the reference), summed with ``weights``.

    ``logits`` (N, V) gathered rows (table dtype); per-token inputs in float64 (as fastlmrl's
    tabular losses use them).  Returns ``(loss, grad (N, V) float64, clip_fraction,
    approx_kl_k3, kl_loss)``: the per-token gradient rows, unrounded (their sums per context are
    rounded once to the table dtype, as fastlmrl's ``grad_rows`` are).
    """
    n = tokens.shape[0]
    x = logits.astype(F64)
    m = x.max(axis=1)
    e = np.exp(x - m[:, None])
    total = e.sum(axis=1)
    rows = np.arange(n)
    logp = x[rows, tokens] - (m + np.log(total))
    p = e * (1.0 / total)[:, None]
    loss, c, clip_fraction, approx_kl, kl_loss = token_coefficients(
        logp, old_log_probs, advantages, weights, clip_low, clip_high, ref_log_probs, kl_coef
    )
    grad = p * (-c)[:, None]
    grad[rows, tokens] = c * (1.0 - p[rows, tokens])
    return loss, grad, clip_fraction, approx_kl, kl_loss


def token_coefficients(
    logp, old_log_probs, advantages, weights, clip_low, clip_high, ref_log_probs=None, kl_coef=0.0
):
    r"""The per-token part of the loss given log pi(a_i|s_i) (float64): ``(loss, c (N,), clip
    fraction, approx KL k3, KL loss)`` with :math:`c_i = w_i\,\partial\ell_i/\partial\log\pi`."""
    old = old_log_probs.astype(F64)
    adv = advantages.astype(F64)
    w = weights.astype(F64)
    log_ratio = logp - old
    rho = np.exp(log_ratio)
    un = -adv * rho
    cl = -adv * np.clip(rho, 1.0 - clip_low, 1.0 + clip_high)
    use_un = un >= cl
    token_loss = np.where(use_un, un, cl)
    dloss = np.where(use_un, un, 0.0)
    kl_loss = 0.0
    if ref_log_probs is not None:
        u = ref_log_probs.astype(F64) - logp
        eu = np.exp(u)
        kl = (eu - 1.0) - u
        token_loss = token_loss + kl_coef * kl
        dloss = dloss + kl_coef * (1.0 - eu)
        kl_loss = float(w @ kl)
    sw = w.sum()
    clip_fraction = float(w @ ~use_un) / sw if sw > 0 else 0.0
    approx_kl = float(w @ ((rho - 1.0) - log_ratio)) / sw if sw > 0 else 0.0
    return float(w @ token_loss), w * dloss, clip_fraction, approx_kl, kl_loss


def ppo_loss_grouped(
    table,
    contexts,
    tokens,
    old_log_probs,
    advantages,
    weights,
    clip_low,
    clip_high,
    ref_log_probs=None,
    kl_coef=0.0,
):
    r""":func:`ppo_loss` with the gradient summed per distinct context, computed the way
    fastlmrl's tabular loss computes it -- one softmax per visited context, not per token:
    :math:`\partial L/\partial\theta[s] = \sum_{i: s_i = s} c_i\,\mathrm{onehot}(a_i) -
    (\sum_{i: s_i = s} c_i)\,\pi(\cdot|s)` (distinct contexts and sums by ``np.bincount``).

    Returns ``(loss, rows (U,), grad (U, V) float64, clip_fraction, approx_kl_k3, kl_loss)``.
    """
    # distinct contexts by counting (O(N + S), faster than np.unique's sort for a tabular policy)
    rows = np.flatnonzero(np.bincount(contexts, minlength=table.shape[0]))
    index = np.empty(table.shape[0], dtype=np.int64)
    index[rows] = np.arange(rows.shape[0])
    inverse = index[contexts]
    u, v = rows.shape[0], table.shape[1]
    x = table[rows].astype(F64)
    m = x.max(axis=1)
    e = np.exp(x - m[:, None])
    total = e.sum(axis=1)
    logp = x[inverse, tokens] - (m + np.log(total))[inverse]
    loss, c, clip_fraction, approx_kl, kl_loss = token_coefficients(
        logp, old_log_probs, advantages, weights, clip_low, clip_high, ref_log_probs, kl_coef
    )
    csum = np.bincount(inverse, weights=c, minlength=u)
    onehot = np.bincount(inverse * v + tokens, weights=c, minlength=u * v).reshape(u, v)
    grad = onehot - csum[:, None] * (e / total[:, None])
    return loss, rows, grad, clip_fraction, approx_kl, kl_loss


def scatter_rows(rows, grads):
    """(ids (U,), sums (U, V) float64): the gradient rows of each distinct id summed.

    A stable argsort groups equal ids, ``np.add.reduceat`` sums each run in float64.  The sums
    equal those of ``g = zeros((U, V)); np.add.at(g, inverse, grads)`` (``scatter="add.at"``,
    strict index order, fastlmrl's order) up to rounding (reduceat may not add a run strictly
    left to right), about 2x faster on the benchmark's batches (8x faster than ``np.add.at``
    fed float32 rows).
    """
    order = np.argsort(rows, kind="stable")
    ids = rows[order]
    if ids.size == 0:
        return ids, np.zeros((0, grads.shape[1]))
    starts = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))
    return ids[starts], np.add.reduceat(grads[order].astype(F64), starts, axis=0)


def scatter_rows_add_at(rows, grads):
    """As :func:`scatter_rows`, with ``np.unique`` and ``np.add.at`` (the textbook scatter)."""
    uniq, inverse = np.unique(rows, return_inverse=True)
    g = np.zeros((uniq.shape[0], grads.shape[1]))
    np.add.at(g, inverse.reshape(-1), grads.astype(F64))
    return uniq, g


SCATTER = {"reduceat": scatter_rows, "add.at": scatter_rows_add_at}


def adam_step(
    table, m, v, step, rows, grads, lr, beta1=0.9, beta2=0.999, eps=1e-8, scatter="reduceat"
):
    r"""Lazy Adam (Kingma & Ba 2015, Algorithm 1) on the rows present, in place: gradient rows of
    equal ids are summed (:func:`scatter_rows`), then :math:`m, v, \theta` of those
    rows are updated in float64 and stored in the table dtype; bias correction with the global
    ``step``, folded into two scalars as :func:`fastlmrl.adam_step` does (same operation order):
    :math:`\theta \leftarrow \theta - (\alpha_t m_t) / (\sqrt{v_t}\,c_t + \epsilon)` with
    :math:`\alpha_t = \mathrm{lr}/(1-\beta_1^t)`, :math:`c_t = 1/\sqrt{1-\beta_2^t}`, i.e.
    :math:`\mathrm{lr}\,\hat m/(\sqrt{\hat v} + \epsilon)`.
    """
    uniq, g = SCATTER[scatter](rows, grads)
    step_size = lr / (1.0 - beta1 ** float(step))
    scale2 = 1.0 / np.sqrt(1.0 - beta2 ** float(step))
    m_t = beta1 * m[uniq].astype(F64) + (1.0 - beta1) * g
    v_t = beta2 * v[uniq].astype(F64) + (1.0 - beta2) * (g * g)
    table[uniq] = table[uniq].astype(F64) - (step_size * m_t) / (np.sqrt(v_t) * scale2 + eps)
    m[uniq] = m_t
    v[uniq] = v_t


class _Adam:
    scatter = "reduceat"

    def __init__(self, table, lr):
        self.table, self.lr = table, lr
        self.m = np.zeros_like(table)
        self.v = np.zeros_like(table)
        self.t = 0

    def step(self, rows, grads):
        self.t += 1
        adam_step(self.table, self.m, self.v, self.t, rows, grads, self.lr, scatter=self.scatter)


class Rollout:
    """The (B, T) arrays of one batch (padding 0), as :class:`fastlmrl.RolloutBatch`."""

    def __init__(self, contexts, actions, logprobs, valid, lengths, terminated, final, ids):
        self.contexts, self.actions, self.log_probs, self.valid = contexts, actions, logprobs, valid
        self.lengths, self.terminated, self.final_contexts = lengths, terminated, final
        self.prompt_ids = ids
        self.scores = None
        self.rewards = None

    @property
    def num_tokens(self):
        return int(self.lengths.sum())


# ---------------------------------------------------------------------------------------------
# trainers


class _NumpyPolicyTrainer:
    """State and shared steps: policy table + lazy Adam, rollouts, rewards, diagnostics."""

    def __init__(self, task, config, seed=0, grouped=False):
        env = task.env
        self.grouped = grouped
        if (
            not isinstance(env.reward, KeywordReward)
            or env.reward.per_token
            or env.reward.presence
            or env.reward.normalize
        ):
            raise ValueError("the NumPy baseline implements the terminal KeywordReward only")
        self.config = config
        self.env = env
        self.vocab_size = env.vocab_size
        self.num_contexts = env.num_contexts
        self.horizon = env.max_new_tokens
        self.eos_id = env.eos_id
        self.grams = [(tuple(g), float(w)) for g, w in env.reward.grams]
        self.word_flags = getattr(env.reward, "_word_flags", None)  # whole words (fastlmrl.tasks)
        self.policy = np.array(task.initial_policy, copy=True)
        self.dtype = self.policy.dtype
        self.optimizer = _Adam(self.policy, config.lr)
        self.stream = RandomStream(seed)
        ref = np.asarray(task.reference).astype(F64)
        ref_max = ref.max(axis=1)
        # the frozen reference: log-sum-exp of every row (float64) and its log-softmax table
        self.ref_lse = ref_max + np.log(np.exp(ref - ref_max[:, None]).sum(axis=1))
        self.reference = ref
        self.ref_log_softmax = (ref - self.ref_lse[:, None]).astype(self.dtype)
        v = self.vocab_size
        start = 0
        for _ in range(env.order):
            start = (start * v + env.bos_id) % self.num_contexts
        ctx = []
        for p in range(env.num_prompts):
            c = start
            for tok in env.prompt_tokens[env.prompt_offsets[p] : env.prompt_offsets[p + 1]]:
                c = (c * v + int(tok)) % self.num_contexts
            ctx.append(c)
        self.prompt_context = np.array(ctx, dtype=np.int64)
        if config.kl_target is None:
            self.kl_controller = FixedKLController(config.kl_coef)
        else:
            self.kl_controller = AdaptiveKLController(
                config.kl_coef, config.kl_target, config.kl_horizon
            )
        self.iterations_done = 0
        self.history = []
        self.phase_seconds = {}
        self.record_phases = False

    @contextmanager
    def phase(self, name):
        if not self.record_phases:
            yield
            return
        start = time.perf_counter()
        yield
        self.phase_seconds[name] = self.phase_seconds.get(name, 0.0) + time.perf_counter() - start

    # --- rollout ---------------------------------------------------------------------------------
    def rollout(self, prompt_ids=None, num_sequences=None):
        """B sequences sampled from softmax(policy) by inverse CDF, vectorised over B."""
        n_states, n_vocab, horizon = self.num_contexts, self.vocab_size, self.horizon
        if prompt_ids is None:
            n = num_sequences
            ids = (uniforms(self.stream, n) * self.env.num_prompts).astype(np.int64)
        else:
            ids = np.asarray(prompt_ids, dtype=np.int64)
            n = ids.shape[0]
        u = uniforms(self.stream, n * horizon).reshape(n, horizon)
        x = self.policy.astype(F64)
        row_max = x.max(axis=1)
        cdf = np.cumsum(np.exp(x - row_max[:, None]), axis=1)
        total = cdf[:, -1]
        log_total = np.log(total)
        contexts = np.zeros((n, horizon), dtype=np.int64)
        actions = np.zeros((n, horizon), dtype=np.int64)
        logprobs = np.zeros((n, horizon), dtype=self.dtype)
        valid = np.zeros((n, horizon), dtype=bool)
        ctx = self.prompt_context[ids]
        alive = np.arange(n)
        for t in range(horizon):
            if alive.size == 0:
                break
            c = ctx[alive]
            target = u[alive, t] * total[c]
            a = np.count_nonzero(cdf[c] <= target[:, None], axis=1)
            over = a == n_vocab  # u * total rounded up to total: the last positive token
            if over.any():
                w = np.diff(cdf[c[over]], axis=1, prepend=0.0) > 0
                a[over] = n_vocab - 1 - np.argmax(w[:, ::-1], axis=1)
            contexts[alive, t] = c
            actions[alive, t] = a
            logprobs[alive, t] = (x[c, a] - row_max[c]) - log_total[c]
            valid[alive, t] = True
            ctx[alive] = (c * n_vocab + a) % n_states
            alive = alive[a != self.eos_id]
        lengths = valid.sum(axis=1)
        last = actions[np.arange(n), np.maximum(lengths - 1, 0)]
        terminated = (lengths > 0) & (last == self.eos_id)
        return Rollout(contexts, actions, logprobs, valid, lengths, terminated, ctx, ids)

    def score(self, batch):
        batch.scores = keyword_scores(batch.actions, batch.lengths, self.grams, self.word_flags)
        rewards = np.zeros(batch.valid.shape)
        rows = np.flatnonzero(batch.lengths > 0)
        rewards[rows, batch.lengths[rows] - 1] = batch.scores[rows]
        batch.rewards = rewards

    # --- the update -----------------------------------------------------------------------------
    def policy_step(
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
    ):
        """Loss, gradient and Adam step; returns (loss, rows updated, clip fraction, approx KL,
        KL loss).  Dense (default): per-token gradients of the gathered logits rows, summed per
        context (:func:`scatter_rows`); ``grouped``: :func:`ppo_loss_grouped`.  Either way the
        summed rows are rounded once to the table dtype and applied to the distinct rows."""
        if self.grouped:
            with self.phase("loss"):
                loss, rows, grad, clip_fraction, approx_kl, kl_loss = ppo_loss_grouped(
                    self.policy,
                    contexts,
                    tokens,
                    old_log_probs,
                    advantages,
                    weights,
                    clip_low,
                    clip_high,
                    ref_log_probs,
                    kl_coef,
                )
        else:
            with self.phase("loss"):
                loss, grad, clip_fraction, approx_kl, kl_loss = ppo_loss(
                    self.policy[contexts],
                    tokens,
                    old_log_probs,
                    advantages,
                    weights,
                    clip_low,
                    clip_high,
                    ref_log_probs,
                    kl_coef,
                )
            with self.phase("optimizer"):
                rows, grad = scatter_rows(contexts, grad)
        with self.phase("optimizer"):
            self.optimizer.step(rows, grad.astype(self.dtype))
        return loss, rows, clip_fraction, approx_kl, kl_loss

    def permutation(self, n):
        """fastlmrl's minibatch order: the stable argsort of n uniforms of the stream."""
        return np.argsort(uniforms(self.stream, n), kind="stable")

    # --- diagnostics -----------------------------------------------------------------------------
    def policy_diagnostics(self, batch, contexts):
        if contexts.size == 0:
            return {"kl": 0.0, "entropy": 0.0}
        rows, inverse = np.unique(contexts, return_inverse=True)
        x = self.policy[rows].astype(F64)
        m = x.max(axis=1)
        lse = m + np.log(np.exp(x - m[:, None]).sum(axis=1))
        logp = (x - lse[:, None]).astype(self.dtype).astype(F64)
        ref = self.ref_log_softmax[rows].astype(F64)
        p = np.exp(logp)
        kl_rows = np.sum(p * (logp - ref), axis=1)
        entropy_rows = -np.sum(p * logp, axis=1)
        n = batch.valid.shape[0]
        seq = np.repeat(np.arange(n), batch.lengths)
        kl_seq = np.bincount(seq, weights=kl_rows[inverse], minlength=n)
        return {"kl": float(kl_seq.mean()), "entropy": float(entropy_rows[inverse].mean())}

    def finish(self, batch, contexts, metrics):
        metrics.update(self.policy_diagnostics(batch, contexts))
        metrics["kl_coef"] = self.kl_controller.value
        if isinstance(self.kl_controller, AdaptiveKLController):
            self.kl_controller.update(metrics["kl"], batch.valid.shape[0])
        return metrics

    @staticmethod
    def base_metrics(batch):
        return {
            "score": float(batch.scores.mean()),
            "reward": float(batch.rewards.sum(axis=1).mean()),
            "length": float(batch.lengths.mean()),
            "tokens": batch.num_tokens,
        }

    def train(self, iterations):
        for _ in range(iterations):
            start = time.perf_counter()
            metrics = self.iteration()
            seconds = time.perf_counter() - start
            metrics.update(
                iteration=self.iterations_done,
                seconds=seconds,
                tokens_per_second=metrics["tokens"] / seconds if seconds else 0.0,
            )
            self.iterations_done += 1
            self.history.append(metrics)
        return self.history


class NumpyPPO(_NumpyPolicyTrainer):
    """One PPO iteration of :class:`fastlmrl.PPOTrainer` (same config class), in NumPy."""

    def __init__(self, task, config, seed=0, grouped=False):
        super().__init__(task, config, seed, grouped)
        self.values = np.zeros((self.num_contexts, 1), dtype=self.dtype)
        self.value_optimizer = _Adam(self.values, config.value_lr)
        self.last = {}

    def iteration(self):
        cfg = self.config
        beta = self.kl_controller.value
        with self.phase("rollout"):
            batch = self.rollout(num_sequences=cfg.num_sequences)
        valid = batch.valid
        with self.phase("reward"):
            self.score(batch)
            # log pi and log pi_ref by one float64 formula (as fastlmrl's trainers do)
            pol = self.policy.astype(F64)
            pol_max = pol.max(axis=1)
            pol_lse = pol_max + np.log(np.exp(pol - pol_max[:, None]).sum(axis=1))
            log_ratio = (pol[batch.contexts, batch.actions] - pol_lse[batch.contexts]) - (
                self.reference[batch.contexts, batch.actions] - self.ref_lse[batch.contexts]
            )
            shaped = batch.rewards - beta * log_ratio
            batch.rewards = np.where(valid, shaped, 0.0)
        with self.phase("advantages"):
            v = self.values[:, 0].astype(F64)
            values = np.where(valid, v[batch.contexts], 0.0)
            bootstrap = v[batch.final_contexts]
            advantages, returns = gae(
                batch.rewards, values, valid, batch.terminated, bootstrap, cfg.gamma, cfg.lam
            )
            contexts = batch.contexts[valid]
            tokens = batch.actions[valid]
            old_log_probs = batch.log_probs[valid]
            adv = masked_whiten(advantages, valid)[valid]
            ret = returns[valid]
        self.last = {
            "batch": batch,
            "values": values,
            "bootstrap": bootstrap,
            "advantages": advantages,
            "returns": returns,
            "adv": adv,
            "losses": [],
        }
        clip_fractions, approx_kls = [], []
        per_token = (contexts, tokens, old_log_probs, adv, ret)
        shuffled = [np.empty_like(x) for x in per_token]  # reused by every epoch
        for _ in range(cfg.epochs):
            n = contexts.size
            with self.phase("permutation"):
                order = np.arange(n) if cfg.minibatches <= 1 else self.permutation(n)
                for x, out in zip(per_token, shuffled):
                    np.take(x, order, out=out)
                parts = [p for p in np.array_split(np.arange(n), max(cfg.minibatches, 1)) if p.size]
            for part in parts:
                ctx, tok, old, a, r = (x[part[0] : part[-1] + 1] for x in shuffled)
                loss, rows, clip_fraction, approx_kl, _ = self.policy_step(
                    ctx, tok, old, a, np.full(ctx.size, 1.0 / ctx.size), cfg.clip, cfg.clip
                )
                with self.phase("optimizer"):
                    value_error = self.values[:, 0][ctx] - r  # float64 (exact promotion)
                    sums = np.bincount(
                        ctx, weights=value_error / ctx.size, minlength=self.num_contexts
                    )[rows]
                    self.value_optimizer.step(rows, sums.astype(self.dtype).reshape(-1, 1))
                self.last["losses"].append(loss)
                clip_fractions.append(clip_fraction)
                approx_kls.append(approx_kl)
        with self.phase("diagnostics"):
            metrics = self.base_metrics(batch)
            predicted = values[valid]
            var = float(np.var(ret))
            metrics["explained_variance"] = (
                math.nan
                if var == 0.0 or ret.size == 0
                else 1.0 - float(np.var(ret - predicted)) / var
            )
            metrics.update(
                clip_fraction=float(np.mean(clip_fractions)), approx_kl=float(np.mean(approx_kls))
            )
            metrics = self.finish(batch, contexts, metrics)
        return metrics


class NumpyGRPO(_NumpyPolicyTrainer):
    """One GRPO iteration of :class:`fastlmrl.GRPOTrainer` (same config class), in NumPy.

    Token-level ratios only (``ratio_level="token"``, the default).
    """

    def __init__(self, task, config, seed=0, grouped=False):
        if config.ratio_level != "token":
            raise ValueError("the NumPy baseline implements ratio_level='token' only")
        super().__init__(task, config, seed, grouped)
        self.last = {}

    def iteration(self):
        cfg = self.config
        with self.phase("rollout"):
            prompts = uniforms(self.stream, cfg.num_prompts) * self.env.num_prompts
            batch = self.rollout(prompt_ids=np.repeat(prompts.astype(np.int64), cfg.group_size))
        valid = batch.valid
        with self.phase("reward"):
            self.score(batch)
        with self.phase("advantages"):
            seq_adv = grpo_advantages(batch.scores, cfg.group_size, cfg.scale)
            adv = np.repeat(seq_adv, batch.lengths)
            weights = np.repeat(
                loss_weights(batch.lengths, self.horizon, cfg.loss_normalization), batch.lengths
            )
            contexts = batch.contexts[valid]
            tokens = batch.actions[valid]
            old_log_probs = batch.log_probs[valid]
            ref_log_probs = self.reference[contexts, tokens] - self.ref_lse[contexts]
        self.last = {"batch": batch, "seq_adv": seq_adv, "weights": weights, "losses": []}
        clip_fractions, approx_kls = [], []
        for _ in range(cfg.epochs):
            loss, _, clip_fraction, approx_kl, kl_loss = self.policy_step(
                contexts,
                tokens,
                old_log_probs,
                adv,
                weights,
                cfg.clip,
                cfg.clip_high,
                ref_log_probs,
                self.kl_controller.value,
            )
            self.last["losses"].append(loss)
            clip_fractions.append(clip_fraction)
            approx_kls.append(approx_kl)
        with self.phase("diagnostics"):
            metrics = self.base_metrics(batch)
            metrics.update(
                clip_fraction=float(np.mean(clip_fractions)),
                approx_kl=float(np.mean(approx_kls)),
                kl_loss=kl_loss,
            )
            metrics = self.finish(batch, contexts, metrics)
        return metrics
