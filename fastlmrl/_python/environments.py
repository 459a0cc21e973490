"""Reference environment kernels (plain Python): the semantics every backend reproduces.

Context ids (k-gram contexts, ``V`` tokens, order ``k``, ``S = V**k`` contexts): the context of a
history ``h`` is the id of its last ``k`` tokens, oldest most significant,
``id = sum_j t_j * V**(k-1-j)``, where the history is left-padded with ``k`` copies of ``bos_id``
(so the empty history has id ``bos_id * (V**(k-1) + ... + V + 1)``).  Appending token ``t`` gives
``(id * V + t) mod V**k``.  Status codes: see ``fastlmrl.environments`` (0 = success); every
argument is checked before anything is written, except that a rollout checks a logits row when it
first visits it (its outputs are then partly written; nothing passed in as input is modified).
"""

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

# the statuses these kernels return (fastlmrl._status.Status, declared per kernel in
# fastlmrl.environments.CONTRACT; plain ints); BAD_SHAPES: the arrays the kernels' other checks do
# not already size, checked first
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
from ..rng import uniform
from ._common import overlapping

INT64_MAX = 2**63 - 1

CONTEXT_LIMIT = 2**62
MAX_ORDER = 62  # V**(k+1) <= 2**62 needs k <= 61 for V >= 2; also bounds the loops for V = 1
INF = math.inf


def _writeable(**outputs):
    """The reference writes its outputs with Python item assignment: refuse a read-only one
    before anything is written (the compiled backends refuse it when the call is dispatched)."""
    for name, arr in outputs.items():
        if not arr.flags.writeable:
            raise ValueError(f"{name} is read-only but is written by the kernel")


def n_contexts(n_vocab, order):
    """V**k, or -1 when V < 1, k < 1, k > MAX_ORDER or V**(k+1) > 2**62 (so ctx * V + t never
    overflows int64; at most MAX_ORDER iterations whatever ``order``)."""
    if n_vocab < 1 or order < 1 or order > MAX_ORDER:
        return -1
    p = 1
    for _ in range(order):
        if p > CONTEXT_LIMIT // n_vocab // n_vocab:
            return -1
        p *= n_vocab
    return p


def _bos_context(n_vocab, order, bos_id, n_states):
    ctx = 0
    for _ in range(order):
        ctx = (ctx * n_vocab + bos_id) % n_states
    return ctx


def _check_prompts(tokens, offsets, ids, mask, n_vocab):
    """Status of the prompt set (flat tokens + offsets) and of the prompt ids used (where mask)."""
    n_prompts = len(offsets) - 1
    if n_prompts < 1 or offsets[0] != 0 or offsets[-1] != len(tokens):
        return BAD_OFFSETS
    for p in range(n_prompts):
        if offsets[p + 1] < offsets[p]:
            return BAD_OFFSETS
    for b, p in enumerate(ids):
        if mask is not None and not mask[b]:
            continue
        if p < 0 or p >= n_prompts:
            return BAD_PROMPT_IDS
    for b, p in enumerate(ids):
        if mask is not None and not mask[b]:
            continue
        for j in range(offsets[p], offsets[p + 1]):
            if tokens[j] < 0 or tokens[j] >= n_vocab:
                return BAD_PROMPT_TOKENS
    return 0


def _prompt_context(tokens, offsets, p, n_vocab, n_states, start):
    ctx = start
    for j in range(offsets[p], offsets[p + 1]):
        ctx = (ctx * n_vocab + tokens[j]) % n_states
    return ctx


def draw_ids(bound, key, counter, mask, out):
    """out[i] = floor(uniform(key, counter + i) * bound) where mask[i]; other entries untouched."""
    if overlapping((out,), (mask,)):
        return OVERLAPPING_ARRAYS  # a write could change a value already checked
    n = out.shape[0]
    if bound < 1 or mask.shape[0] != n:
        return BAD_CONFIG
    _writeable(out=out)
    key, counter = int(key), int(counter)
    m = mask.tolist()
    for i in range(n):
        if m[i]:
            out[i] = int(uniform(key, counter + i) * bound)
    return 0


def _tabular_shapes_ok(offsets, cdf, next_states, rewards, ends, n_actions):
    """(S, K) of a stochastic tabular MDP's CSR outcome arrays, or None when inconsistent."""
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
        return None
    return n_pairs // n_actions, n_out


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
    """One step of every active sequence of a stochastic tabular MDP
    (see fastlmrl.tabular_mdp.TabularMDP): the outcomes of (s, a) are ``k`` in
    ``[offsets[s*A + a], offsets[s*A + a + 1])``; row ``b`` takes the first ``k`` with
    ``u < cdf[k]`` (the last one if none), ``u`` the uniform at counter ``counter + b``."""
    if overlapping(
        (states, steps, rewards_out, terminated_out, truncated_out),
        (offsets, cdf, next_states, rewards, ends, actions, active),
    ):
        return OVERLAPPING_ARRAYS  # a write could change a value already checked
    sizes = _tabular_shapes_ok(offsets, cdf, next_states, rewards, ends, n_actions)
    if sizes is None:
        return BAD_SHAPES
    n_states, n_out = sizes
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
    _writeable(
        states=states,
        steps=steps,
        rewards_out=rewards_out,
        terminated_out=terminated_out,
        truncated_out=truncated_out,
    )
    act, on, st, stp = actions.tolist(), active.tolist(), states.tolist(), steps.tolist()
    off = offsets.tolist()
    for b in range(n):
        if on[b] and not 0 <= st[b] < n_states:
            return BAD_STATES
    for b in range(n):
        if on[b] and not 0 <= act[b] < n_actions:
            return BAD_ACTIONS
    for b in range(n):
        if on[b]:
            i = st[b] * n_actions + act[b]
            if not 0 <= off[i] < off[i + 1] <= n_out:
                return BAD_OFFSETS
    for b in range(n):
        if on[b]:
            i = st[b] * n_actions + act[b]
            for k in range(off[i], off[i + 1]):
                if not 0 <= int(next_states[k]) < n_states:
                    return BAD_NEXT_STATES
    for b in range(n):
        if on[b]:
            i = st[b] * n_actions + act[b]
            for k in range(off[i], off[i + 1]):
                if not math.isfinite(float(rewards[k])):
                    return BAD_REWARDS
    for b in range(n):
        if on[b] and not 0 <= stp[b] < INT64_MAX:
            return BAD_STEPS
    key, counter = int(key), int(counter)
    for b in range(n):
        if not on[b]:
            rewards_out[b] = 0.0
            terminated_out[b] = 0
            truncated_out[b] = 0
            continue
        i = st[b] * n_actions + act[b]
        u = uniform(key, (counter + b) & 0xFFFFFFFFFFFFFFFF)
        k = off[i]
        while k < off[i + 1] - 1 and not u < float(cdf[k]):
            k += 1
        rewards_out[b] = float(rewards[k])
        states[b] = int(next_states[k])
        steps[b] = stp[b] + 1
        done = ends[k] != 0
        terminated_out[b] = 1 if done else 0
        truncated_out[b] = 1 if (not done and max_steps > 0 and stp[b] + 1 >= max_steps) else 0
    return 0


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
    """One step of every active sequence of a table MDP (see fastlmrl.environments.ContextMDP)."""
    if overlapping(
        (contexts, steps, rewards_out, terminated_out, truncated_out),
        (next_state, reward, terminal, actions, active),
    ):
        return OVERLAPPING_ARRAYS  # a write could change a value already checked
    if reward.shape != next_state.shape or next_state.ndim != 2:
        return BAD_SHAPES
    if any(
        a.ndim != 1
        for a in (
            terminal,
            actions,
            active,
            contexts,
            steps,
            rewards_out,
            terminated_out,
            truncated_out,
        )
    ):
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
    _writeable(
        contexts=contexts,
        steps=steps,
        rewards_out=rewards_out,
        terminated_out=terminated_out,
        truncated_out=truncated_out,
    )
    act, on, ctx, stp = actions.tolist(), active.tolist(), contexts.tolist(), steps.tolist()
    term = terminal.tolist()
    for b in range(n):
        if on[b]:
            s = ctx[b]
            if s < 0 or s >= n_states or term[s]:
                return BAD_STATES
    for b in range(n):
        if on[b] and (act[b] < 0 or act[b] >= n_actions):
            return BAD_ACTIONS
    for b in range(n):
        if on[b]:
            s2 = int(next_state[ctx[b], act[b]])
            if s2 < 0 or s2 >= n_states:
                return BAD_NEXT_STATES
    for b in range(n):
        if on[b] and not math.isfinite(float(reward[ctx[b], act[b]])):
            return BAD_REWARDS
    for b in range(n):
        if on[b] and not 0 <= stp[b] < INT64_MAX:
            return BAD_STEPS
    for b in range(n):
        if not on[b]:
            rewards_out[b] = 0.0
            terminated_out[b] = 0
            truncated_out[b] = 0
            continue
        s, a = ctx[b], act[b]
        s2 = int(next_state[s, a])
        rewards_out[b] = float(reward[s, a])
        contexts[b] = s2
        k = stp[b] + 1
        steps[b] = k
        done = term[s2]
        terminated_out[b] = 1 if done else 0
        truncated_out[b] = 1 if (not done and max_steps > 0 and k >= max_steps) else 0
    return 0


def text_env_reset(
    prompt_tokens, prompt_offsets, n_vocab, order, bos_id, prompt_ids, mask, contexts, lengths
):
    """Where mask: contexts[b] = context of bos padding + prompt prompt_ids[b]; lengths[b] = 0."""
    if overlapping((contexts, lengths), (prompt_tokens, prompt_offsets, prompt_ids, mask)):
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
    _writeable(contexts=contexts, lengths=lengths)
    tokens, offsets = prompt_tokens.tolist(), prompt_offsets.tolist()
    ids, m = prompt_ids.tolist(), mask.tolist()
    status = _check_prompts(tokens, offsets, ids, m, n_vocab)
    if status:
        return status
    start = _bos_context(n_vocab, order, bos_id, n_states)
    for b in range(n):
        if m[b]:
            contexts[b] = _prompt_context(tokens, offsets, ids[b], n_vocab, n_states, start)
            lengths[b] = 0
    return 0


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
    """Append actions[b] to every active sequence (see fastlmrl.environments.TextGenerationEnv)."""
    if overlapping((contexts, lengths, tokens, terminated_out, truncated_out), (actions, active)):
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
    _writeable(
        contexts=contexts,
        lengths=lengths,
        tokens=tokens,
        terminated_out=terminated_out,
        truncated_out=truncated_out,
    )
    if (
        any(
            a.ndim != 1 for a in (actions, active, contexts, lengths, terminated_out, truncated_out)
        )
        or tokens.ndim != 2
    ):
        return BAD_SHAPES
    act, on, ctx, lens = actions.tolist(), active.tolist(), contexts.tolist(), lengths.tolist()
    for b in range(n):
        if on[b] and (act[b] < 0 or act[b] >= n_vocab):
            return BAD_ACTIONS
    for b in range(n):
        if on[b] and (ctx[b] < 0 or ctx[b] >= n_states):
            return BAD_STATES
    for b in range(n):
        if on[b] and (lens[b] < 0 or lens[b] >= max_new_tokens):
            return BAD_LENGTHS
    for b in range(n):
        if not on[b]:
            terminated_out[b] = 0
            truncated_out[b] = 0
            continue
        a = act[b]
        tokens[b, lens[b]] = a
        k = lens[b] + 1
        lengths[b] = k
        contexts[b] = (ctx[b] * n_vocab + a) % n_states
        done = a == eos_id
        terminated_out[b] = 1 if done else 0
        truncated_out[b] = 1 if (not done and k >= max_new_tokens) else 0
    return 0


# --- rows of a policy table -----------------------------------------------------------------


def row_ok(row):
    """A usable row: no NaN, no +inf, at least one entry above -inf."""
    m = -INF
    for v in row:
        if v != v:
            return False
        if v > m:
            m = v
    return -INF < m < INF


def build_mask(row, top_k, top_p, mask_row):
    """Top-k / top-p (nucleus) mask of the softmax of ``row`` (a usable row) into ``mask_row``.

    Tokens are taken in decreasing order of logit (ties: lowest index first), skipping tokens of
    probability 0, until ``top_k`` are kept (``top_k > 0``) or the kept probability mass reaches
    ``top_p`` of the total (``top_p < 1``), whichever comes first.  Both off: every token is kept.
    Mass in float64: ``w_a = exp(x_a - max)``, total summed in index order, kept mass summed in
    the order taken, compared with ``top_p * total``.
    """
    n = len(row)
    if top_k == 0 and top_p >= 1.0:
        for a in range(n):
            mask_row[a] = 1
        return
    m = -INF
    for v in row:
        if v > m:
            m = v
    total = 0.0
    for v in row:
        total += math.exp(v - m)
    threshold = top_p * total
    for a in range(n):
        mask_row[a] = 0
    taken = [False] * n
    limit = top_k if top_k > 0 else n
    kept = 0
    cumulative = 0.0
    while kept < limit:
        best = -1
        best_value = -INF
        for a in range(n):
            if not taken[a] and row[a] > best_value:
                best = a
                best_value = row[a]
        if best < 0:
            break
        w = math.exp(best_value - m)
        if w == 0.0:
            break
        taken[best] = True
        mask_row[best] = 1
        kept += 1
        cumulative += w
        if top_p < 1.0 and cumulative >= threshold:
            break


def build_cdf(row, allowed):
    """(cdf list, max, log(total), last positive index) of softmax(row) restricted to ``allowed``.

    None when the allowed part of the row holds a NaN or +inf or nothing above -inf.
    """
    n = len(row)
    m = -INF
    for a in range(n):
        if allowed is None or allowed[a]:
            v = row[a]
            if v != v:
                return None
            if v > m:
                m = v
    if not (-INF < m < INF):
        return None
    cdf = [0.0] * n
    cumulative = 0.0
    last_positive = 0
    for a in range(n):
        if allowed is None or allowed[a]:
            w = math.exp(row[a] - m)
            if w > 0.0:
                last_positive = a
            cumulative += w
        cdf[a] = cumulative
    return cdf, m, math.log(cumulative), last_positive


def sample_cdf(cdf, last_positive, u):
    """First a with u * total < cdf[a] (total = cdf[-1]); last_positive if there is none."""
    target = u * cdf[-1]
    for a, c in enumerate(cdf):
        if target < c:
            return a
    return last_positive


def topk_topp_mask(mask_logits, contexts, top_k, top_p, out):
    """out[b] = top-k / top-p mask of the softmax of mask_logits[contexts[b]] (1 = kept)."""
    if overlapping((out,), (mask_logits, contexts)):
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
    _writeable(out=out)
    ctx = contexts.tolist()
    for s in ctx:
        if s < 0 or s >= n_states:
            return BAD_STATES
    for s in ctx:
        if not row_ok(mask_logits[s].tolist()):
            return BAD_MASK_LOGITS
    for b, s in enumerate(ctx):
        build_mask(mask_logits[s].tolist(), top_k, top_p, out[b])
    return 0


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
    """B = len(prompt_ids) fresh episodes of at most T = actions_out.shape[1] tokens each.

    Token t of sequence b is sampled from softmax(logits[ctx]) restricted to the mask (when
    top_k > 0 or top_p < 1; mask of mask_logits[ctx], written to mask_table[ctx]) by inverse CDF
    with u = uniform(key, counter + b * T + t).  cdf / row_stats / row_built are scratch.
    """
    if overlapping(
        (
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
        ),
        (logits, mask_logits, prompt_tokens, prompt_offsets, prompt_ids),
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
    if status:
        return status
    _writeable(
        contexts_out=contexts_out,
        actions_out=actions_out,
        logprobs_out=logprobs_out,
        valid_out=valid_out,
        lengths_out=lengths_out,
        terminated_out=terminated_out,
        truncated_out=truncated_out,
        final_contexts_out=final_contexts_out,
        cdf=cdf,
        row_stats=row_stats,
        row_built=row_built,
    )
    if top_k > 0 or top_p < 1.0:
        _writeable(mask_table=mask_table)
    tokens, offsets, ids = prompt_tokens.tolist(), prompt_offsets.tolist(), prompt_ids.tolist()
    status = _check_prompts(tokens, offsets, ids, None, n_vocab)
    if status:
        return status
    use_mask = top_k > 0 or top_p < 1.0
    key, counter = int(key), int(counter)
    horizon = actions_out.shape[1]
    for s in range(n_states):
        row_built[s] = 0
    if use_mask:
        mask_table[:, :] = 0
    rows = {}
    start = _bos_context(n_vocab, order, bos_id, n_states)
    for b in range(n):
        ctx = _prompt_context(tokens, offsets, ids[b], n_vocab, n_states, start)
        length = 0
        done = False
        for t in range(horizon):
            if ctx not in rows:
                row = logits[ctx].tolist()
                allowed = None
                if use_mask:
                    mrow = mask_logits[ctx].tolist()
                    if not row_ok(mrow):
                        return BAD_MASK_LOGITS
                    build_mask(mrow, top_k, top_p, mask_table[ctx])
                    allowed = mask_table[ctx].tolist()
                built = build_cdf(row, allowed)
                if built is None:
                    return BAD_LOGITS
                rows[ctx] = (row,) + built
                row_built[ctx] = 1
            row, row_cdf, m, log_total, last_positive = rows[ctx]
            a = sample_cdf(row_cdf, last_positive, uniform(key, counter + b * horizon + t))
            contexts_out[b, t] = ctx
            actions_out[b, t] = a
            logprobs_out[b, t] = (row[a] - m) - log_total
            valid_out[b, t] = 1
            ctx = (ctx * n_vocab + a) % n_states
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
    for arr in (contexts_out, actions_out, logprobs_out, valid_out):
        if arr.shape[0] != n or arr.shape[1] != horizon:
            return BAD_CONFIG
    for arr in (lengths_out, terminated_out, truncated_out, final_contexts_out):
        if arr.shape[0] != n:
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
