# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython environment kernels (same semantics and rounding as the reference)."""

__all__ = [
    "context_mdp_step",
    "draw_ids",
    "tabular_mdp_step",
    "text_env_reset",
    "text_env_rollout",
    "text_env_step",
    "topk_topp_mask",
]
from libc.math cimport INFINITY, exp, log, isfinite
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memset

from fastlmrl._cython cimport status as st
from fastlmrl._cython._common cimport real_t, index_t, uniform
from fastlmrl._cython.overlap cimport span_1d, span_2d, written_overlap

cdef int64_t CONTEXT_LIMIT = (<int64_t>1) << 62
cdef int64_t MAX_ORDER = 62
cdef int64_t INT64_MAX = 0x7FFFFFFFFFFFFFFF


cdef int64_t n_contexts(int64_t n_vocab, int64_t order) noexcept nogil:
    """V**k, or -1 when V < 1, k < 1, k > MAX_ORDER or V**(k+1) > 2**62."""
    cdef int64_t p = 1, i
    if n_vocab < 1 or order < 1 or order > MAX_ORDER:
        return -1
    for i in range(order):
        if p > CONTEXT_LIMIT // n_vocab // n_vocab:
            return -1
        p *= n_vocab
    return p


cdef inline int64_t _bos_context(int64_t n_vocab, int64_t order, int64_t bos_id,
                                 int64_t n_states) noexcept nogil:
    cdef int64_t ctx = 0, i
    for i in range(order):
        ctx = (ctx * n_vocab + bos_id) % n_states
    return ctx


cdef inline int _check_prompts(const index_t[::1] tokens, const index_t[::1] offsets,
                               const index_t[::1] ids, const unsigned char* mask,
                               int64_t n_vocab) noexcept nogil:
    cdef Py_ssize_t n_prompts = offsets.shape[0] - 1, p, b, j
    if n_prompts < 1 or offsets[0] != 0 or offsets[n_prompts] != tokens.shape[0]:
        return st.BAD_OFFSETS
    for p in range(n_prompts):
        if offsets[p + 1] < offsets[p]:
            return st.BAD_OFFSETS
    for b in range(ids.shape[0]):
        if mask != NULL and not mask[b]:
            continue
        if ids[b] < 0 or ids[b] >= n_prompts:
            return st.BAD_PROMPT_IDS
    for b in range(ids.shape[0]):
        if mask != NULL and not mask[b]:
            continue
        p = ids[b]
        for j in range(offsets[p], offsets[p + 1]):
            if tokens[j] < 0 or tokens[j] >= n_vocab:
                return st.BAD_PROMPT_TOKENS
    return 0


cdef inline int64_t _prompt_context(const index_t[::1] tokens, const index_t[::1] offsets,
                                    Py_ssize_t p, int64_t n_vocab, int64_t n_states,
                                    int64_t start) noexcept nogil:
    cdef int64_t ctx = start
    cdef Py_ssize_t j
    for j in range(offsets[p], offsets[p + 1]):
        ctx = (ctx * n_vocab + <int64_t>tokens[j]) % n_states
    return ctx


cdef int draw_ids_core(int64_t bound, uint64_t key, uint64_t counter, const unsigned char[::1] mask,
                       int64_t[::1] out) noexcept nogil:
    cdef Py_ssize_t i, n = out.shape[0]
    cdef const char* spans[2]
    cdef size_t sizes[2]
    span_1d(&out[0], out.shape[0], sizeof(int64_t), spans, sizes, 0)
    span_1d(&mask[0], mask.shape[0], sizeof(unsigned char), spans, sizes, 1)
    if written_overlap(1, 2, spans, sizes):  # a write could change a checked value
        return st.OVERLAPPING_ARRAYS
    if bound < 1 or mask.shape[0] != n:
        return st.BAD_CONFIG
    for i in range(n):
        if mask[i]:
            out[i] = <int64_t>(uniform(key, counter + <uint64_t>i) * <double>bound)
    return 0


cdef int tabular_mdp_step_core(const int64_t[::1] offsets, const double[::1] cdf,
                               const int64_t[::1] next_states, const double[::1] rewards,
                               const unsigned char[::1] ends, int64_t n_actions,
                               int64_t max_steps, uint64_t key, uint64_t counter,
                               const int64_t[::1] actions, const unsigned char[::1] active,
                               int64_t[::1] states, int64_t[::1] steps, double[::1] rewards_out,
                               unsigned char[::1] terminated_out,
                               unsigned char[::1] truncated_out) noexcept nogil:
    cdef Py_ssize_t n_pairs = offsets.shape[0] - 1, n_out = cdf.shape[0]
    cdef Py_ssize_t b, n = states.shape[0]
    cdef int64_t n_states, i, k, last, t
    cdef double u
    cdef bint done
    cdef const char* spans[12]
    cdef size_t sizes[12]
    span_1d(&states[0], states.shape[0], sizeof(int64_t), spans, sizes, 0)
    span_1d(&steps[0], steps.shape[0], sizeof(int64_t), spans, sizes, 1)
    span_1d(&rewards_out[0], rewards_out.shape[0], sizeof(double), spans, sizes, 2)
    span_1d(&terminated_out[0], terminated_out.shape[0], sizeof(unsigned char), spans, sizes, 3)
    span_1d(&truncated_out[0], truncated_out.shape[0], sizeof(unsigned char), spans, sizes, 4)
    span_1d(&offsets[0], offsets.shape[0], sizeof(int64_t), spans, sizes, 5)
    span_1d(&cdf[0], cdf.shape[0], sizeof(double), spans, sizes, 6)
    span_1d(&next_states[0], next_states.shape[0], sizeof(int64_t), spans, sizes, 7)
    span_1d(&rewards[0], rewards.shape[0], sizeof(double), spans, sizes, 8)
    span_1d(&ends[0], ends.shape[0], sizeof(unsigned char), spans, sizes, 9)
    span_1d(&actions[0], actions.shape[0], sizeof(int64_t), spans, sizes, 10)
    span_1d(&active[0], active.shape[0], sizeof(unsigned char), spans, sizes, 11)
    if written_overlap(5, 12, spans, sizes):  # a write could change a checked value
        return st.OVERLAPPING_ARRAYS
    if (n_actions < 1 or n_pairs < 1 or n_pairs % n_actions != 0
            or next_states.shape[0] != n_out or rewards.shape[0] != n_out
            or ends.shape[0] != n_out):
        return st.BAD_SHAPES
    n_states = n_pairs // n_actions
    if (actions.shape[0] != n or active.shape[0] != n or steps.shape[0] != n
            or rewards_out.shape[0] != n or terminated_out.shape[0] != n
            or truncated_out.shape[0] != n):
        return st.BAD_SHAPES
    if max_steps < 0:
        return st.BAD_CONFIG
    for b in range(n):
        if active[b] and (states[b] < 0 or states[b] >= n_states):
            return st.BAD_STATES
    for b in range(n):
        if active[b] and (actions[b] < 0 or actions[b] >= n_actions):
            return st.BAD_ACTIONS
    for b in range(n):
        if active[b]:
            i = states[b] * n_actions + actions[b]
            if not (0 <= offsets[i] and offsets[i] < offsets[i + 1]
                    and offsets[i + 1] <= n_out):
                return st.BAD_OFFSETS
    for b in range(n):
        if active[b]:
            i = states[b] * n_actions + actions[b]
            for k in range(offsets[i], offsets[i + 1]):
                if next_states[k] < 0 or next_states[k] >= n_states:
                    return st.BAD_NEXT_STATES
    for b in range(n):
        if active[b]:
            i = states[b] * n_actions + actions[b]
            for k in range(offsets[i], offsets[i + 1]):
                if not isfinite(rewards[k]):
                    return st.BAD_REWARDS
    for b in range(n):
        if active[b] and (steps[b] < 0 or steps[b] == INT64_MAX):
            return st.BAD_STEPS
    for b in range(n):
        if not active[b]:
            rewards_out[b] = 0.0
            terminated_out[b] = 0
            truncated_out[b] = 0
            continue
        i = states[b] * n_actions + actions[b]
        u = uniform(key, counter + <uint64_t>b)
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


cdef int context_mdp_step_core(const index_t[:, ::1] next_state, const real_t[:, ::1] reward,
                               const unsigned char[::1] terminal, int64_t max_steps,
                               const index_t[::1] actions, const unsigned char[::1] active,
                               index_t[::1] contexts, int64_t[::1] steps, real_t[::1] rewards_out,
                               unsigned char[::1] terminated_out,
                               unsigned char[::1] truncated_out) noexcept nogil:
    cdef Py_ssize_t n_states = next_state.shape[0], n_actions = next_state.shape[1]
    cdef Py_ssize_t b, n = contexts.shape[0]
    cdef index_t s, a, s2
    cdef int64_t k
    cdef bint done
    cdef const char* spans[10]
    cdef size_t sizes[10]
    span_1d(&contexts[0], contexts.shape[0], sizeof(index_t), spans, sizes, 0)
    span_1d(&steps[0], steps.shape[0], sizeof(int64_t), spans, sizes, 1)
    span_1d(&rewards_out[0], rewards_out.shape[0], sizeof(real_t), spans, sizes, 2)
    span_1d(&terminated_out[0], terminated_out.shape[0], sizeof(unsigned char), spans, sizes, 3)
    span_1d(&truncated_out[0], truncated_out.shape[0], sizeof(unsigned char), spans, sizes, 4)
    span_2d(&next_state[0, 0], next_state.shape[0], next_state.shape[1], sizeof(index_t), spans,
            sizes, 5)
    span_2d(&reward[0, 0], reward.shape[0], reward.shape[1], sizeof(real_t), spans, sizes, 6)
    span_1d(&terminal[0], terminal.shape[0], sizeof(unsigned char), spans, sizes, 7)
    span_1d(&actions[0], actions.shape[0], sizeof(index_t), spans, sizes, 8)
    span_1d(&active[0], active.shape[0], sizeof(unsigned char), spans, sizes, 9)
    if written_overlap(5, 10, spans, sizes):  # a write could change a checked value
        return st.OVERLAPPING_ARRAYS
    if reward.shape[0] != n_states or reward.shape[1] != n_actions:
        return st.BAD_SHAPES
    if (terminal.shape[0] != n_states or max_steps < 0 or actions.shape[0] != n
            or active.shape[0] != n or steps.shape[0] != n or rewards_out.shape[0] != n
            or terminated_out.shape[0] != n or truncated_out.shape[0] != n):
        return st.BAD_CONFIG
    for b in range(n):
        if active[b]:
            s = contexts[b]
            if s < 0 or s >= n_states or terminal[s]:
                return st.BAD_STATES
    for b in range(n):
        if active[b] and (actions[b] < 0 or actions[b] >= n_actions):
            return st.BAD_ACTIONS
    for b in range(n):
        if active[b]:
            s2 = next_state[contexts[b], actions[b]]
            if s2 < 0 or s2 >= n_states:
                return st.BAD_NEXT_STATES
    for b in range(n):
        if active[b] and not isfinite(reward[contexts[b], actions[b]]):
            return st.BAD_REWARDS
    for b in range(n):
        if active[b] and (steps[b] < 0 or steps[b] == INT64_MAX):
            return st.BAD_STEPS
    for b in range(n):
        if not active[b]:
            rewards_out[b] = 0
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


cdef int text_env_reset_core(const index_t[::1] prompt_tokens, const index_t[::1] prompt_offsets,
                             int64_t n_vocab, int64_t order, int64_t bos_id,
                             const index_t[::1] prompt_ids, const unsigned char[::1] mask,
                             int64_t[::1] contexts, int64_t[::1] lengths) noexcept nogil:
    cdef int64_t n_states = n_contexts(n_vocab, order), start
    cdef Py_ssize_t b, n = prompt_ids.shape[0]
    cdef int status
    cdef const char* spans[6]
    cdef size_t sizes[6]
    span_1d(&contexts[0], contexts.shape[0], sizeof(int64_t), spans, sizes, 0)
    span_1d(&lengths[0], lengths.shape[0], sizeof(int64_t), spans, sizes, 1)
    span_1d(&prompt_tokens[0], prompt_tokens.shape[0], sizeof(index_t), spans, sizes, 2)
    span_1d(&prompt_offsets[0], prompt_offsets.shape[0], sizeof(index_t), spans, sizes, 3)
    span_1d(&prompt_ids[0], prompt_ids.shape[0], sizeof(index_t), spans, sizes, 4)
    span_1d(&mask[0], mask.shape[0], sizeof(unsigned char), spans, sizes, 5)
    if written_overlap(2, 6, spans, sizes):  # a write could change a checked value
        return st.OVERLAPPING_ARRAYS
    if (n_states < 0 or bos_id < 0 or bos_id >= n_vocab or mask.shape[0] != n
            or contexts.shape[0] != n or lengths.shape[0] != n):
        return st.BAD_CONFIG
    status = _check_prompts(prompt_tokens, prompt_offsets, prompt_ids, &mask[0] if n else NULL,
                            n_vocab)
    if status:
        return status
    start = _bos_context(n_vocab, order, bos_id, n_states)
    for b in range(n):
        if mask[b]:
            contexts[b] = _prompt_context(prompt_tokens, prompt_offsets, prompt_ids[b], n_vocab,
                                          n_states, start)
            lengths[b] = 0
    return 0


cdef int text_env_step_core(int64_t n_vocab, int64_t order, int64_t eos_id, int64_t max_new_tokens,
                            const index_t[::1] actions, const unsigned char[::1] active,
                            int64_t[::1] contexts, int64_t[::1] lengths, int64_t[:, ::1] tokens,
                            unsigned char[::1] terminated_out,
                            unsigned char[::1] truncated_out) noexcept nogil:
    cdef int64_t n_states = n_contexts(n_vocab, order), a, k
    cdef Py_ssize_t b, n = actions.shape[0]
    cdef bint done
    cdef const char* spans[7]
    cdef size_t sizes[7]
    span_1d(&contexts[0], contexts.shape[0], sizeof(int64_t), spans, sizes, 0)
    span_1d(&lengths[0], lengths.shape[0], sizeof(int64_t), spans, sizes, 1)
    span_2d(&tokens[0, 0], tokens.shape[0], tokens.shape[1], sizeof(int64_t), spans, sizes, 2)
    span_1d(&terminated_out[0], terminated_out.shape[0], sizeof(unsigned char), spans, sizes, 3)
    span_1d(&truncated_out[0], truncated_out.shape[0], sizeof(unsigned char), spans, sizes, 4)
    span_1d(&actions[0], actions.shape[0], sizeof(index_t), spans, sizes, 5)
    span_1d(&active[0], active.shape[0], sizeof(unsigned char), spans, sizes, 6)
    if written_overlap(5, 7, spans, sizes):  # a write could change a checked value
        return st.OVERLAPPING_ARRAYS
    if (n_states < 0 or eos_id < -1 or eos_id >= n_vocab or max_new_tokens < 1
            or tokens.shape[0] != n or tokens.shape[1] < max_new_tokens or active.shape[0] != n
            or contexts.shape[0] != n or lengths.shape[0] != n or terminated_out.shape[0] != n
            or truncated_out.shape[0] != n):
        return st.BAD_CONFIG
    for b in range(n):
        if active[b] and (actions[b] < 0 or actions[b] >= n_vocab):
            return st.BAD_ACTIONS
    for b in range(n):
        if active[b] and (contexts[b] < 0 or contexts[b] >= n_states):
            return st.BAD_STATES
    for b in range(n):
        if active[b] and (lengths[b] < 0 or lengths[b] >= max_new_tokens):
            return st.BAD_LENGTHS
    for b in range(n):
        if not active[b]:
            terminated_out[b] = 0
            truncated_out[b] = 0
            continue
        a = actions[b]
        tokens[b, lengths[b]] = a
        k = lengths[b] + 1
        lengths[b] = k
        contexts[b] = (contexts[b] * n_vocab + a) % n_states
        done = a == eos_id
        terminated_out[b] = 1 if done else 0
        truncated_out[b] = 1 if (not done and k >= max_new_tokens) else 0
    return 0


cdef inline bint _row_ok(const real_t* row, Py_ssize_t n) noexcept nogil:
    cdef double m = -INFINITY, v
    cdef Py_ssize_t a
    for a in range(n):
        v = row[a]
        if v != v:
            return False
        if v > m:
            m = v
    return -INFINITY < m < INFINITY


cdef inline void _build_mask(const real_t* row, Py_ssize_t n, int64_t top_k, double top_p,
                             unsigned char* out) noexcept nogil:
    """Top-k / top-p mask of softmax(row) into out (see the reference's build_mask)."""
    cdef double m = -INFINITY, v, total = 0.0, threshold, cumulative = 0.0, best_value, w
    cdef Py_ssize_t a, best, kept = 0, limit
    if top_k == 0 and top_p >= 1.0:
        for a in range(n):
            out[a] = 1
        return
    for a in range(n):
        v = row[a]
        if v > m:
            m = v
    for a in range(n):
        total += exp(<double>row[a] - m)
    threshold = top_p * total
    for a in range(n):
        out[a] = 0
    limit = top_k if top_k > 0 else n
    while kept < limit:
        best = -1
        best_value = -INFINITY
        for a in range(n):
            v = row[a]
            if out[a] == 0 and v > best_value:
                best = a
                best_value = v
        if best < 0:
            break
        w = exp(best_value - m)
        if w == 0.0:
            break
        out[best] = 1
        kept += 1
        cumulative += w
        if top_p < 1.0 and cumulative >= threshold:
            break


cdef inline bint _build_cdf(const real_t* row, Py_ssize_t n, bint use_mask,
                            const unsigned char* allowed, double* cdf,
                            double* stats) noexcept nogil:
    cdef double m = -INFINITY, v, cumulative = 0.0, w
    cdef Py_ssize_t a, last_positive = 0
    for a in range(n):
        if not use_mask or allowed[a]:
            v = row[a]
            if v != v:
                return False
            if v > m:
                m = v
    if not (-INFINITY < m < INFINITY):
        return False
    for a in range(n):
        if not use_mask or allowed[a]:
            w = exp(<double>row[a] - m)
            if w > 0.0:
                last_positive = a
            cumulative += w
        cdf[a] = cumulative
    stats[0] = m
    stats[1] = log(cumulative)
    stats[2] = <double>last_positive
    return True


cdef inline int64_t _sample(const double* cdf, Py_ssize_t n, int64_t last_positive,
                            double u) noexcept nogil:
    cdef double target = u * cdf[n - 1]
    cdef Py_ssize_t lo = 0, hi = n - 1, mid
    if not target < cdf[n - 1]:
        return last_positive
    while lo < hi:
        mid = (lo + hi) >> 1
        if target < cdf[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


cdef int topk_topp_mask_core(const real_t[:, ::1] mask_logits, const index_t[::1] contexts,
                             int64_t top_k, double top_p, unsigned char[:, ::1] out) noexcept nogil:
    cdef Py_ssize_t n_states = mask_logits.shape[0], n_vocab = mask_logits.shape[1]
    cdef Py_ssize_t b, n = contexts.shape[0]
    cdef const char* spans[3]
    cdef size_t sizes[3]
    span_2d(&out[0, 0], out.shape[0], out.shape[1], sizeof(unsigned char), spans, sizes, 0)
    span_2d(&mask_logits[0, 0], mask_logits.shape[0], mask_logits.shape[1], sizeof(real_t), spans,
            sizes, 1)
    span_1d(&contexts[0], contexts.shape[0], sizeof(index_t), spans, sizes, 2)
    if written_overlap(1, 3, spans, sizes):  # a write could change a checked value
        return st.OVERLAPPING_ARRAYS
    if (top_k < 0 or top_k > n_vocab or not (0.0 < top_p <= 1.0) or out.shape[0] != n
            or out.shape[1] != n_vocab):
        return st.BAD_CONFIG
    for b in range(n):
        if contexts[b] < 0 or contexts[b] >= n_states:
            return st.BAD_STATES
    for b in range(n):
        if not _row_ok(&mask_logits[contexts[b], 0], n_vocab):
            return st.BAD_MASK_LOGITS
    for b in range(n):
        _build_mask(&mask_logits[contexts[b], 0], n_vocab, top_k, top_p, &out[b, 0])
    return 0


cdef int text_env_rollout_core(const real_t[:, ::1] logits, const real_t[:, ::1] mask_logits,
                               int64_t top_k, double top_p, const index_t[::1] prompt_tokens,
                               const index_t[::1] prompt_offsets, const index_t[::1] prompt_ids,
                               int64_t order, int64_t bos_id, int64_t eos_id, uint64_t key,
                               uint64_t counter, int64_t[:, ::1] contexts_out,
                               int64_t[:, ::1] actions_out, real_t[:, ::1] logprobs_out,
                               unsigned char[:, ::1] valid_out, int64_t[::1] lengths_out,
                               unsigned char[::1] terminated_out, unsigned char[::1] truncated_out,
                               int64_t[::1] final_contexts_out, double[:, ::1] cdf,
                               double[:, ::1] row_stats, unsigned char[::1] row_built,
                               unsigned char[:, ::1] mask_table) noexcept nogil:
    cdef int64_t n_states = logits.shape[0], n_vocab = logits.shape[1]
    cdef Py_ssize_t n = prompt_ids.shape[0], horizon = actions_out.shape[1], b, t
    cdef bint use_mask = top_k > 0 or top_p < 1.0, done
    cdef int64_t ctx, start, a, length
    cdef int status
    cdef uint64_t base
    cdef double u
    # configuration and shapes
    cdef const char* spans[17]
    cdef size_t sizes[17]
    span_2d(&contexts_out[0, 0], contexts_out.shape[0], contexts_out.shape[1], sizeof(int64_t),
            spans, sizes, 0)
    span_2d(&actions_out[0, 0], actions_out.shape[0], actions_out.shape[1], sizeof(int64_t),
            spans, sizes, 1)
    span_2d(&logprobs_out[0, 0], logprobs_out.shape[0], logprobs_out.shape[1], sizeof(real_t),
            spans, sizes, 2)
    span_2d(&valid_out[0, 0], valid_out.shape[0], valid_out.shape[1], sizeof(unsigned char),
            spans, sizes, 3)
    span_1d(&lengths_out[0], lengths_out.shape[0], sizeof(int64_t), spans, sizes, 4)
    span_1d(&terminated_out[0], terminated_out.shape[0], sizeof(unsigned char), spans, sizes, 5)
    span_1d(&truncated_out[0], truncated_out.shape[0], sizeof(unsigned char), spans, sizes, 6)
    span_1d(&final_contexts_out[0], final_contexts_out.shape[0], sizeof(int64_t), spans, sizes, 7)
    span_2d(&cdf[0, 0], cdf.shape[0], cdf.shape[1], sizeof(double), spans, sizes, 8)
    span_2d(&row_stats[0, 0], row_stats.shape[0], row_stats.shape[1], sizeof(double), spans,
            sizes, 9)
    span_1d(&row_built[0], row_built.shape[0], sizeof(unsigned char), spans, sizes, 10)
    span_2d(&mask_table[0, 0], mask_table.shape[0], mask_table.shape[1], sizeof(unsigned char),
            spans, sizes, 11)
    span_2d(&logits[0, 0], logits.shape[0], logits.shape[1], sizeof(real_t), spans, sizes, 12)
    span_2d(&mask_logits[0, 0], mask_logits.shape[0], mask_logits.shape[1], sizeof(real_t), spans,
            sizes, 13)
    span_1d(&prompt_tokens[0], prompt_tokens.shape[0], sizeof(index_t), spans, sizes, 14)
    span_1d(&prompt_offsets[0], prompt_offsets.shape[0], sizeof(index_t), spans, sizes, 15)
    span_1d(&prompt_ids[0], prompt_ids.shape[0], sizeof(index_t), spans, sizes, 16)
    if written_overlap(12, 17, spans, sizes):  # a write could change a checked value
        return st.OVERLAPPING_ARRAYS
    if n_contexts(n_vocab, order) != n_states:
        return st.BAD_CONFIG
    if bos_id < 0 or bos_id >= n_vocab or eos_id < -1 or eos_id >= n_vocab:
        return st.BAD_CONFIG
    if top_k < 0 or top_k > n_vocab or not (0.0 < top_p <= 1.0) or horizon < 1:
        return st.BAD_CONFIG
    if (contexts_out.shape[0] != n or contexts_out.shape[1] != horizon
            or actions_out.shape[0] != n
            or logprobs_out.shape[0] != n or logprobs_out.shape[1] != horizon
            or valid_out.shape[0] != n or valid_out.shape[1] != horizon):
        return st.BAD_CONFIG
    if (lengths_out.shape[0] != n or terminated_out.shape[0] != n
            or truncated_out.shape[0] != n or final_contexts_out.shape[0] != n):
        return st.BAD_CONFIG
    if (cdf.shape[0] != n_states or cdf.shape[1] != n_vocab or row_stats.shape[0] != n_states
            or row_stats.shape[1] != 3 or row_built.shape[0] != n_states):
        return st.BAD_CONFIG
    if use_mask:
        if (mask_logits.shape[0] != n_states or mask_logits.shape[1] != n_vocab
                or mask_table.shape[0] != n_states or mask_table.shape[1] != n_vocab):
            return st.BAD_CONFIG
    status = _check_prompts(prompt_tokens, prompt_offsets, prompt_ids, NULL, n_vocab)
    if status:
        return status
    memset(&row_built[0], 0, n_states)
    if use_mask:
        memset(&mask_table[0, 0], 0, n_states * n_vocab)
    start = _bos_context(n_vocab, order, bos_id, n_states)
    for b in range(n):
        ctx = _prompt_context(prompt_tokens, prompt_offsets, prompt_ids[b], n_vocab, n_states,
                              start)
        length = 0
        done = False
        base = counter + <uint64_t>b * <uint64_t>horizon
        for t in range(horizon):
            if row_built[ctx] == 0:
                if use_mask:
                    if not _row_ok(&mask_logits[ctx, 0], n_vocab):
                        return st.BAD_MASK_LOGITS
                    _build_mask(&mask_logits[ctx, 0], n_vocab, top_k, top_p, &mask_table[ctx, 0])
                    if not _build_cdf(&logits[ctx, 0], n_vocab, True, &mask_table[ctx, 0],
                                      &cdf[ctx, 0], &row_stats[ctx, 0]):
                        return st.BAD_LOGITS
                elif not _build_cdf(&logits[ctx, 0], n_vocab, False, NULL, &cdf[ctx, 0],
                                    &row_stats[ctx, 0]):
                    return st.BAD_LOGITS
                row_built[ctx] = 1
            u = uniform(key, base + <uint64_t>t)
            a = _sample(&cdf[ctx, 0], n_vocab, <int64_t>row_stats[ctx, 2], u)
            contexts_out[b, t] = ctx
            actions_out[b, t] = a
            logprobs_out[b, t] = <real_t>((<double>logits[ctx, a] - row_stats[ctx, 0])
                                          - row_stats[ctx, 1])
            valid_out[b, t] = 1
            ctx = (ctx * n_vocab + a) % n_states
            length += 1
            if a == eos_id:
                done = True
                break
        for t in range(length, horizon):
            contexts_out[b, t] = 0
            actions_out[b, t] = 0
            logprobs_out[b, t] = 0
            valid_out[b, t] = 0
        lengths_out[b] = length
        terminated_out[b] = 1 if done else 0
        truncated_out[b] = 0 if done else 1
        final_contexts_out[b] = ctx
    return 0


# --- Python-visible wrappers (same names and signatures as the other backends) -----------------

def draw_ids(int64_t bound, uint64_t key, uint64_t counter, const unsigned char[::1] mask,
             int64_t[::1] out):
    cdef int status
    with nogil:
        status = draw_ids_core(bound, key, counter, mask, out)
    return status


def tabular_mdp_step(const int64_t[::1] offsets, const double[::1] cdf,
                     const int64_t[::1] next_states, const double[::1] rewards,
                     const unsigned char[::1] ends, int64_t n_actions, int64_t max_steps,
                     uint64_t key, uint64_t counter, const int64_t[::1] actions,
                     const unsigned char[::1] active, int64_t[::1] states, int64_t[::1] steps,
                     double[::1] rewards_out, unsigned char[::1] terminated_out,
                     unsigned char[::1] truncated_out):
    cdef int status
    with nogil:
        status = tabular_mdp_step_core(offsets, cdf, next_states, rewards, ends, n_actions,
                                       max_steps, key, counter, actions, active, states, steps,
                                       rewards_out, terminated_out, truncated_out)
    return status


def context_mdp_step(const index_t[:, ::1] next_state, const real_t[:, ::1] reward,
                     const unsigned char[::1] terminal, int64_t max_steps,
                     const index_t[::1] actions, const unsigned char[::1] active,
                     index_t[::1] contexts, int64_t[::1] steps, real_t[::1] rewards_out,
                     unsigned char[::1] terminated_out, unsigned char[::1] truncated_out):
    cdef int status
    with nogil:
        status = context_mdp_step_core(next_state, reward, terminal, max_steps, actions, active,
                                       contexts, steps, rewards_out, terminated_out,
                                       truncated_out)
    return status


def text_env_reset(const index_t[::1] prompt_tokens, const index_t[::1] prompt_offsets,
                   int64_t n_vocab, int64_t order, int64_t bos_id, const index_t[::1] prompt_ids,
                   const unsigned char[::1] mask, int64_t[::1] contexts, int64_t[::1] lengths):
    cdef int status
    with nogil:
        status = text_env_reset_core(prompt_tokens, prompt_offsets, n_vocab, order, bos_id,
                                     prompt_ids, mask, contexts, lengths)
    return status


def text_env_step(int64_t n_vocab, int64_t order, int64_t eos_id, int64_t max_new_tokens,
                  const index_t[::1] actions, const unsigned char[::1] active,
                  int64_t[::1] contexts, int64_t[::1] lengths, int64_t[:, ::1] tokens,
                  unsigned char[::1] terminated_out, unsigned char[::1] truncated_out):
    cdef int status
    with nogil:
        status = text_env_step_core(n_vocab, order, eos_id, max_new_tokens, actions, active,
                                    contexts, lengths, tokens, terminated_out, truncated_out)
    return status


def topk_topp_mask(const real_t[:, ::1] mask_logits, const index_t[::1] contexts, int64_t top_k,
                   double top_p, unsigned char[:, ::1] out):
    cdef int status
    with nogil:
        status = topk_topp_mask_core(mask_logits, contexts, top_k, top_p, out)
    return status


def text_env_rollout(const real_t[:, ::1] logits, const real_t[:, ::1] mask_logits, int64_t top_k,
                     double top_p, const index_t[::1] prompt_tokens,
                     const index_t[::1] prompt_offsets, const index_t[::1] prompt_ids,
                     int64_t order, int64_t bos_id, int64_t eos_id, uint64_t key, uint64_t counter,
                     int64_t[:, ::1] contexts_out, int64_t[:, ::1] actions_out,
                     real_t[:, ::1] logprobs_out, unsigned char[:, ::1] valid_out,
                     int64_t[::1] lengths_out, unsigned char[::1] terminated_out,
                     unsigned char[::1] truncated_out, int64_t[::1] final_contexts_out,
                     double[:, ::1] cdf, double[:, ::1] row_stats, unsigned char[::1] row_built,
                     unsigned char[:, ::1] mask_table):
    cdef int status
    with nogil:
        status = text_env_rollout_core(logits, mask_logits, top_k, top_p, prompt_tokens,
                                       prompt_offsets, prompt_ids, order, bos_id, eos_id, key,
                                       counter, contexts_out, actions_out, logprobs_out, valid_out,
                                       lengths_out, terminated_out, truncated_out,
                                       final_contexts_out, cdf, row_stats, row_built, mask_table)
    return status
