# cython: language_level=3
from libc.stdint cimport int64_t, uint64_t
from fastlmrl._cython._common cimport real_t, index_t

cdef int64_t n_contexts(int64_t n_vocab, int64_t order) noexcept nogil
cdef int draw_ids_core(int64_t bound, uint64_t key, uint64_t counter, const unsigned char[::1] mask,
                       int64_t[::1] out) noexcept nogil
cdef int tabular_mdp_step_core(const int64_t[::1] offsets, const double[::1] cdf,
                               const int64_t[::1] next_states, const double[::1] rewards,
                               const unsigned char[::1] ends, int64_t n_actions,
                               int64_t max_steps, uint64_t key, uint64_t counter,
                               const int64_t[::1] actions, const unsigned char[::1] active,
                               int64_t[::1] states, int64_t[::1] steps, double[::1] rewards_out,
                               unsigned char[::1] terminated_out,
                               unsigned char[::1] truncated_out) noexcept nogil
cdef int context_mdp_step_core(const index_t[:, ::1] next_state, const real_t[:, ::1] reward,
                               const unsigned char[::1] terminal, int64_t max_steps,
                               const index_t[::1] actions, const unsigned char[::1] active,
                               index_t[::1] contexts, int64_t[::1] steps, real_t[::1] rewards_out,
                               unsigned char[::1] terminated_out,
                               unsigned char[::1] truncated_out) noexcept nogil
cdef int text_env_reset_core(const index_t[::1] prompt_tokens, const index_t[::1] prompt_offsets,
                             int64_t n_vocab, int64_t order, int64_t bos_id,
                             const index_t[::1] prompt_ids, const unsigned char[::1] mask,
                             int64_t[::1] contexts, int64_t[::1] lengths) noexcept nogil
cdef int text_env_step_core(int64_t n_vocab, int64_t order, int64_t eos_id, int64_t max_new_tokens,
                            const index_t[::1] actions, const unsigned char[::1] active,
                            int64_t[::1] contexts, int64_t[::1] lengths, int64_t[:, ::1] tokens,
                            unsigned char[::1] terminated_out,
                            unsigned char[::1] truncated_out) noexcept nogil
cdef int topk_topp_mask_core(const real_t[:, ::1] mask_logits, const index_t[::1] contexts,
                             int64_t top_k, double top_p, unsigned char[:, ::1] out) noexcept nogil
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
                               unsigned char[:, ::1] mask_table) noexcept nogil
