"""Numba environment kernels (same semantics and rounding as the reference)."""

__all__ = [
    "context_mdp_step",
    "draw_ids",
    "tabular_mdp_step",
    "text_env_reset",
    "text_env_rollout",
    "text_env_step",
    "topk_topp_mask",
]
import math

import numpy as np
from numba import njit

# the statuses these kernels return (fastlmrl._status.Status, declared per kernel in
# fastlmrl.environments.CONTRACT; plain ints: Numba globals)
from .._status import (
    BAD_ACTIONS,
    BAD_CONFIG,
    BAD_LENGTHS,
    BAD_LOGITS,
    BAD_MASK_LOGITS,
    BAD_NEXT_STATES,
    BAD_OFFSETS,
    BAD_PROMPT_IDS,
    BAD_PROMPT_TOKENS,
    BAD_REWARDS,
    BAD_SHAPES,
    BAD_STATES,
    BAD_STEPS,
    OVERLAPPING_ARRAYS,
)
from ._common import NJIT, uniform
from .overlap import _bounds, spans_overlap

INT64_MAX = 2**63 - 1

CONTEXT_LIMIT = 2**62
MAX_ORDER = 62


@njit(**NJIT)
def n_contexts(n_vocab, order):
    """V**k, or -1 when V < 1, k < 1, k > MAX_ORDER or V**(k+1) > 2**62."""
    if n_vocab < 1 or order < 1 or order > MAX_ORDER:
        return np.int64(-1)
    p = np.int64(1)
    v = np.int64(n_vocab)
    for _ in range(order):
        if p > CONTEXT_LIMIT // v // v:
            return np.int64(-1)
        p *= v
    return p


@njit(**NJIT)
def _bos_context(n_vocab, order, bos_id, n_states):
    ctx = np.int64(0)
    for _ in range(order):
        ctx = (ctx * n_vocab + bos_id) % n_states
    return ctx


@njit(**NJIT)
def _check_prompts(tokens, offsets, ids, mask, use_mask, n_vocab):
    n_prompts = offsets.shape[0] - 1
    if n_prompts < 1 or offsets[0] != 0 or offsets[n_prompts] != tokens.shape[0]:
        return BAD_OFFSETS
    for p in range(n_prompts):
        if offsets[p + 1] < offsets[p]:
            return BAD_OFFSETS
    for b in range(ids.shape[0]):
        if use_mask and not mask[b]:
            continue
        if ids[b] < 0 or ids[b] >= n_prompts:
            return BAD_PROMPT_IDS
    for b in range(ids.shape[0]):
        if use_mask and not mask[b]:
            continue
        p = ids[b]
        for j in range(offsets[p], offsets[p + 1]):
            if tokens[j] < 0 or tokens[j] >= n_vocab:
                return BAD_PROMPT_TOKENS
    return 0


@njit(**NJIT)
def _prompt_context(tokens, offsets, p, n_vocab, n_states, start):
    ctx = start
    for j in range(offsets[p], offsets[p + 1]):
        ctx = (ctx * n_vocab + np.int64(tokens[j])) % n_states
    return ctx


@njit(**NJIT)
def draw_ids(bound, key, counter, mask, out):
    if spans_overlap((_bounds(out), _bounds(mask)), 1):
        return OVERLAPPING_ARRAYS  # a write could change a value already checked
    n = out.shape[0]
    if bound < 1 or mask.shape[0] != n:
        return BAD_CONFIG
    key = np.uint64(key)
    counter = np.uint64(counter)
    for i in range(n):
        if mask[i]:
            out[i] = np.int64(uniform(key, counter + np.uint64(i)) * bound)
    return 0


@njit(**NJIT)
def tabular_mdp_step(
    offsets,
    cdf,
    next_states,
    rewards,
    ends,
    n_actions,
    max_steps,
    key,
    counter,
    actions,
    active,
    states,
    steps,
    rewards_out,
    terminated_out,
    truncated_out,
):
    if spans_overlap(
        (
            _bounds(states),
            _bounds(steps),
            _bounds(rewards_out),
            _bounds(terminated_out),
            _bounds(truncated_out),
            _bounds(offsets),
            _bounds(cdf),
            _bounds(next_states),
            _bounds(rewards),
            _bounds(ends),
            _bounds(actions),
            _bounds(active),
        ),
        5,
    ):
        return OVERLAPPING_ARRAYS  # a write could change a value already checked
    n_pairs = offsets.shape[0] - 1
    n_out = cdf.shape[0]
    if (
        n_actions < 1
        or n_pairs < 1
        or n_pairs % n_actions != 0
        or next_states.shape[0] != n_out
        or rewards.shape[0] != n_out
        or ends.shape[0] != n_out
    ):
        return BAD_SHAPES
    n_states = n_pairs // n_actions
    n = states.shape[0]
    if (
        actions.shape[0] != n
        or active.shape[0] != n
        or steps.shape[0] != n
        or rewards_out.shape[0] != n
        or terminated_out.shape[0] != n
        or truncated_out.shape[0] != n
    ):
        return BAD_SHAPES
    if max_steps < 0:
        return BAD_CONFIG
    for b in range(n):
        if active[b] and (states[b] < 0 or states[b] >= n_states):
            return BAD_STATES
    for b in range(n):
        if active[b] and (actions[b] < 0 or actions[b] >= n_actions):
            return BAD_ACTIONS
    for b in range(n):
        if active[b]:
            i = states[b] * n_actions + actions[b]
            if not (0 <= offsets[i] and offsets[i] < offsets[i + 1] and offsets[i + 1] <= n_out):
                return BAD_OFFSETS
    for b in range(n):
        if active[b]:
            i = states[b] * n_actions + actions[b]
            for k in range(offsets[i], offsets[i + 1]):
                if next_states[k] < 0 or next_states[k] >= n_states:
                    return BAD_NEXT_STATES
    for b in range(n):
        if active[b]:
            i = states[b] * n_actions + actions[b]
            for k in range(offsets[i], offsets[i + 1]):
                if not np.isfinite(rewards[k]):
                    return BAD_REWARDS
    for b in range(n):
        if active[b] and (steps[b] < 0 or steps[b] >= INT64_MAX):
            return BAD_STEPS
    key = np.uint64(key)
    counter = np.uint64(counter)
    for b in range(n):
        if not active[b]:
            rewards_out[b] = 0.0
            terminated_out[b] = 0
            truncated_out[b] = 0
            continue
        i = states[b] * n_actions + actions[b]
        u = uniform(key, counter + np.uint64(b))
        k = offsets[i]
        last = offsets[i + 1] - 1
        while k < last and not u < cdf[k]:
            k += 1
        rewards_out[b] = rewards[k]
        states[b] = next_states[k]
        t = steps[b] + 1
        steps[b] = t
        done = ends[k] != 0
        terminated_out[b] = 1 if done else 0
        truncated_out[b] = 1 if (not done and max_steps > 0 and t >= max_steps) else 0
    return 0


@njit(**NJIT)
def context_mdp_step(
    next_state,
    reward,
    terminal,
    max_steps,
    actions,
    active,
    contexts,
    steps,
    rewards_out,
    terminated_out,
    truncated_out,
):
    if spans_overlap(
        (
            _bounds(contexts),
            _bounds(steps),
            _bounds(rewards_out),
            _bounds(terminated_out),
            _bounds(truncated_out),
            _bounds(next_state),
            _bounds(reward),
            _bounds(terminal),
            _bounds(actions),
            _bounds(active),
        ),
        5,
    ):
        return OVERLAPPING_ARRAYS  # a write could change a value already checked
    if reward.shape[0] != next_state.shape[0] or reward.shape[1] != next_state.shape[1]:
        return BAD_SHAPES
    n_states, n_actions = next_state.shape
    n = contexts.shape[0]
    if (
        terminal.shape[0] != n_states
        or max_steps < 0
        or actions.shape[0] != n
        or active.shape[0] != n
        or steps.shape[0] != n
        or rewards_out.shape[0] != n
        or terminated_out.shape[0] != n
        or truncated_out.shape[0] != n
    ):
        return BAD_CONFIG
    for b in range(n):
        if active[b]:
            s = contexts[b]
            if s < 0 or s >= n_states or terminal[s]:
                return BAD_STATES
    for b in range(n):
        if active[b] and (actions[b] < 0 or actions[b] >= n_actions):
            return BAD_ACTIONS
    for b in range(n):
        if active[b]:
            s2 = next_state[contexts[b], actions[b]]
            if s2 < 0 or s2 >= n_states:
                return BAD_NEXT_STATES
    for b in range(n):
        if active[b] and not np.isfinite(reward[contexts[b], actions[b]]):
            return BAD_REWARDS
    for b in range(n):
        if active[b] and (steps[b] < 0 or steps[b] >= INT64_MAX):
            return BAD_STEPS
    for b in range(n):
        if not active[b]:
            rewards_out[b] = 0.0
            terminated_out[b] = 0
            truncated_out[b] = 0
            continue
        s = contexts[b]
        a = actions[b]
        s2 = next_state[s, a]
        rewards_out[b] = reward[s, a]
        contexts[b] = s2
        k = steps[b] + 1
        steps[b] = k
        done = terminal[s2] != 0
        terminated_out[b] = 1 if done else 0
        truncated_out[b] = 1 if (not done and max_steps > 0 and k >= max_steps) else 0
    return 0


@njit(**NJIT)
def text_env_reset(
    prompt_tokens, prompt_offsets, n_vocab, order, bos_id, prompt_ids, mask, contexts, lengths
):
    if spans_overlap(
        (
            _bounds(contexts),
            _bounds(lengths),
            _bounds(prompt_tokens),
            _bounds(prompt_offsets),
            _bounds(prompt_ids),
            _bounds(mask),
        ),
        2,
    ):
        return OVERLAPPING_ARRAYS  # a write could change a value already checked
    n_states = n_contexts(n_vocab, order)
    n = prompt_ids.shape[0]
    if (
        n_states < 0
        or bos_id < 0
        or bos_id >= n_vocab
        or mask.shape[0] != n
        or contexts.shape[0] != n
        or lengths.shape[0] != n
    ):
        return BAD_CONFIG
    status = _check_prompts(prompt_tokens, prompt_offsets, prompt_ids, mask, True, n_vocab)
    if status != 0:
        return status
    start = _bos_context(np.int64(n_vocab), order, np.int64(bos_id), n_states)
    for b in range(n):
        if mask[b]:
            contexts[b] = _prompt_context(
                prompt_tokens, prompt_offsets, prompt_ids[b], np.int64(n_vocab), n_states, start
            )
            lengths[b] = 0
    return 0


@njit(**NJIT)
def text_env_step(
    n_vocab,
    order,
    eos_id,
    max_new_tokens,
    actions,
    active,
    contexts,
    lengths,
    tokens,
    terminated_out,
    truncated_out,
):
    if spans_overlap(
        (
            _bounds(contexts),
            _bounds(lengths),
            _bounds(tokens),
            _bounds(terminated_out),
            _bounds(truncated_out),
            _bounds(actions),
            _bounds(active),
        ),
        5,
    ):
        return OVERLAPPING_ARRAYS  # a write could change a value already checked
    n_states = n_contexts(n_vocab, order)
    n = actions.shape[0]
    if (
        n_states < 0
        or eos_id < -1
        or eos_id >= n_vocab
        or max_new_tokens < 1
        or tokens.shape[0] != n
        or tokens.shape[1] < max_new_tokens
        or active.shape[0] != n
        or contexts.shape[0] != n
        or lengths.shape[0] != n
        or terminated_out.shape[0] != n
        or truncated_out.shape[0] != n
    ):
        return BAD_CONFIG
    for b in range(n):
        if active[b] and (actions[b] < 0 or actions[b] >= n_vocab):
            return BAD_ACTIONS
    for b in range(n):
        if active[b] and (contexts[b] < 0 or contexts[b] >= n_states):
            return BAD_STATES
    for b in range(n):
        if active[b] and (lengths[b] < 0 or lengths[b] >= max_new_tokens):
            return BAD_LENGTHS
    v = np.int64(n_vocab)
    for b in range(n):
        if not active[b]:
            terminated_out[b] = 0
            truncated_out[b] = 0
            continue
        a = np.int64(actions[b])
        tokens[b, lengths[b]] = a
        k = lengths[b] + 1
        lengths[b] = k
        contexts[b] = (np.int64(contexts[b]) * v + a) % n_states
        done = a == eos_id
        terminated_out[b] = 1 if done else 0
        truncated_out[b] = 1 if (not done and k >= max_new_tokens) else 0
    return 0


@njit(**NJIT)
def _row_ok(table, s):
    m = -np.inf
    for a in range(table.shape[1]):
        v = np.float64(table[s, a])
        if v != v:
            return False
        if v > m:
            m = v
    return -np.inf < m < np.inf


@njit(**NJIT)
def _build_mask(table, s, top_k, top_p, out, row):
    """Top-k / top-p mask of softmax(table[s]) into out[row] (see the reference's build_mask)."""
    n = table.shape[1]
    if top_k == 0 and top_p >= 1.0:
        for a in range(n):
            out[row, a] = 1
        return
    m = -np.inf
    for a in range(n):
        v = np.float64(table[s, a])
        if v > m:
            m = v
    total = 0.0
    for a in range(n):
        total += math.exp(np.float64(table[s, a]) - m)
    threshold = top_p * total
    for a in range(n):
        out[row, a] = 0
    limit = top_k if top_k > 0 else n
    kept = 0
    cumulative = 0.0
    while kept < limit:
        best = -1
        best_value = -np.inf
        for a in range(n):
            v = np.float64(table[s, a])
            if out[row, a] == 0 and v > best_value:
                best = a
                best_value = v
        if best < 0:
            break
        w = math.exp(best_value - m)
        if w == 0.0:
            break
        out[row, best] = 1
        kept += 1
        cumulative += w
        if top_p < 1.0 and cumulative >= threshold:
            break


@njit(**NJIT)
def _build_cdf(logits, s, use_mask, mask_table, cdf, row_stats):
    """cdf[s] = running sums of exp(x - max) over allowed tokens; row_stats[s] = (max, log total,
    last positive).  False when the allowed part of the row is unusable."""
    n = logits.shape[1]
    m = -np.inf
    for a in range(n):
        if not use_mask or mask_table[s, a]:
            v = np.float64(logits[s, a])
            if v != v:
                return False
            if v > m:
                m = v
    if not (-np.inf < m < np.inf):
        return False
    cumulative = 0.0
    last_positive = 0
    for a in range(n):
        if not use_mask or mask_table[s, a]:
            w = math.exp(np.float64(logits[s, a]) - m)
            if w > 0.0:
                last_positive = a
            cumulative += w
        cdf[s, a] = cumulative
    row_stats[s, 0] = m
    row_stats[s, 1] = math.log(cumulative)
    row_stats[s, 2] = last_positive
    return True


@njit(**NJIT)
def _sample(cdf, s, last_positive, u):
    """First a with u * total < cdf[s, a] (binary search: cdf[s] is non-decreasing)."""
    n = cdf.shape[1]
    target = u * cdf[s, n - 1]
    if not target < cdf[s, n - 1]:
        return last_positive
    lo = 0
    hi = n - 1
    while lo < hi:
        mid = (lo + hi) >> 1
        if target < cdf[s, mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit(**NJIT)
def topk_topp_mask(mask_logits, contexts, top_k, top_p, out):
    if spans_overlap((_bounds(out), _bounds(mask_logits), _bounds(contexts)), 1):
        return OVERLAPPING_ARRAYS  # a write could change a value already checked
    n_states, n_vocab = mask_logits.shape
    n = contexts.shape[0]
    if (
        top_k < 0
        or top_k > n_vocab
        or not (0.0 < top_p <= 1.0)
        or out.shape[0] != n
        or out.shape[1] != n_vocab
    ):
        return BAD_CONFIG
    for b in range(n):
        if contexts[b] < 0 or contexts[b] >= n_states:
            return BAD_STATES
    for b in range(n):
        if not _row_ok(mask_logits, contexts[b]):
            return BAD_MASK_LOGITS
    for b in range(n):
        _build_mask(mask_logits, contexts[b], top_k, top_p, out, b)
    return 0


@njit(**NJIT)
def _rollout_config(
    logits,
    mask_logits,
    top_k,
    top_p,
    order,
    bos_id,
    eos_id,
    n,
    contexts_out,
    actions_out,
    logprobs_out,
    valid_out,
    lengths_out,
    terminated_out,
    truncated_out,
    final_contexts_out,
    cdf,
    row_stats,
    row_built,
    mask_table,
):
    n_states, n_vocab = logits.shape
    horizon = actions_out.shape[1]
    if n_contexts(n_vocab, order) != n_states:
        return BAD_CONFIG
    if bos_id < 0 or bos_id >= n_vocab or eos_id < -1 or eos_id >= n_vocab:
        return BAD_CONFIG
    if top_k < 0 or top_k > n_vocab or not (0.0 < top_p <= 1.0) or horizon < 1:
        return BAD_CONFIG
    if (
        contexts_out.shape[0] != n
        or contexts_out.shape[1] != horizon
        or actions_out.shape[0] != n
        or logprobs_out.shape[0] != n
        or logprobs_out.shape[1] != horizon
        or valid_out.shape[0] != n
        or valid_out.shape[1] != horizon
    ):
        return BAD_CONFIG
    if (
        lengths_out.shape[0] != n
        or terminated_out.shape[0] != n
        or truncated_out.shape[0] != n
        or final_contexts_out.shape[0] != n
    ):
        return BAD_CONFIG
    if (
        cdf.shape[0] != n_states
        or cdf.shape[1] != n_vocab
        or row_stats.shape[0] != n_states
        or row_stats.shape[1] != 3
        or row_built.shape[0] != n_states
    ):
        return BAD_CONFIG
    if top_k > 0 or top_p < 1.0:
        if (
            mask_logits.shape[0] != n_states
            or mask_logits.shape[1] != n_vocab
            or mask_table.shape[0] != n_states
            or mask_table.shape[1] != n_vocab
        ):
            return BAD_CONFIG
    return 0


@njit(**NJIT)
def text_env_rollout(
    logits,
    mask_logits,
    top_k,
    top_p,
    prompt_tokens,
    prompt_offsets,
    prompt_ids,
    order,
    bos_id,
    eos_id,
    key,
    counter,
    contexts_out,
    actions_out,
    logprobs_out,
    valid_out,
    lengths_out,
    terminated_out,
    truncated_out,
    final_contexts_out,
    cdf,
    row_stats,
    row_built,
    mask_table,
):
    if spans_overlap(
        (
            _bounds(contexts_out),
            _bounds(actions_out),
            _bounds(logprobs_out),
            _bounds(valid_out),
            _bounds(lengths_out),
            _bounds(terminated_out),
            _bounds(truncated_out),
            _bounds(final_contexts_out),
            _bounds(cdf),
            _bounds(row_stats),
            _bounds(row_built),
            _bounds(mask_table),
            _bounds(logits),
            _bounds(mask_logits),
            _bounds(prompt_tokens),
            _bounds(prompt_offsets),
            _bounds(prompt_ids),
        ),
        12,
    ):
        return OVERLAPPING_ARRAYS  # a write could change a value already checked
    n_states, n_vocab = logits.shape
    n = prompt_ids.shape[0]
    status = _rollout_config(
        logits,
        mask_logits,
        top_k,
        top_p,
        order,
        bos_id,
        eos_id,
        n,
        contexts_out,
        actions_out,
        logprobs_out,
        valid_out,
        lengths_out,
        terminated_out,
        truncated_out,
        final_contexts_out,
        cdf,
        row_stats,
        row_built,
        mask_table,
    )
    if status != 0:
        return status
    status = _check_prompts(prompt_tokens, prompt_offsets, prompt_ids, row_built, False, n_vocab)
    if status != 0:
        return status
    use_mask = top_k > 0 or top_p < 1.0
    key = np.uint64(key)
    counter = np.uint64(counter)
    horizon = actions_out.shape[1]
    v = np.int64(n_vocab)
    row_built[:] = 0
    if use_mask:
        mask_table[:, :] = 0
    start = _bos_context(v, order, np.int64(bos_id), n_states)
    for b in range(n):
        ctx = _prompt_context(prompt_tokens, prompt_offsets, prompt_ids[b], v, n_states, start)
        length = 0
        done = False
        base = counter + np.uint64(b) * np.uint64(horizon)
        for t in range(horizon):
            if row_built[ctx] == 0:
                if use_mask:
                    if not _row_ok(mask_logits, ctx):
                        return BAD_MASK_LOGITS
                    _build_mask(mask_logits, ctx, top_k, top_p, mask_table, ctx)
                if not _build_cdf(logits, ctx, use_mask, mask_table, cdf, row_stats):
                    return BAD_LOGITS
                row_built[ctx] = 1
            u = uniform(key, base + np.uint64(t))
            a = _sample(cdf, ctx, np.int64(row_stats[ctx, 2]), u)
            contexts_out[b, t] = ctx
            actions_out[b, t] = a
            logprobs_out[b, t] = (np.float64(logits[ctx, a]) - row_stats[ctx, 0]) - row_stats[
                ctx, 1
            ]
            valid_out[b, t] = 1
            ctx = (ctx * v + a) % n_states
            length += 1
            if a == eos_id:
                done = True
                break
        for t in range(length, horizon):
            contexts_out[b, t] = 0
            actions_out[b, t] = 0
            logprobs_out[b, t] = 0.0
            valid_out[b, t] = 0
        lengths_out[b] = length
        terminated_out[b] = 1 if done else 0
        truncated_out[b] = 0 if done else 1
        final_contexts_out[b] = ctx
    return 0
