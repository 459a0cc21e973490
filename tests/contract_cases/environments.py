"""Contract cases of the environment kernels (see README.md): V = 3 tokens, order 1 (S = 3
contexts), B = 2 rows, T = 3 steps; a two-state, two-action TabularMDP with one outcome per pair.

The valid call of a stepping kernel moves its state (contexts, steps, lengths) in place after the
breakages are made from the arguments: a breakage breaks what every row reads, or copies the state
it breaks.  A rollout checks a logits row
when it first visits it, after clearing its row cache: those breakages pass fresh (zero) caches
and break the first row visited, so nothing is written."""

import numpy as np

from fastlmrl._status import Status

from ._common import changed, sharing, with_entry

I64, U8 = np.int64, np.uint8
N, T, S = 2, 3, 3


def _flags():
    return dict(terminated_out=np.full(N, 7, U8), truncated_out=np.full(N, 7, U8))


def _prompts():
    return dict(prompt_tokens=np.array([1, 2, 0], I64), prompt_offsets=np.array([0, 2, 3], I64))


def _seed():
    return dict(key=np.uint64(5), counter=np.uint64(0))


def valid_args(kernel, dtype):
    table = np.linspace(-1.0, 1.0, S * S).reshape(S, S).astype(dtype)
    values = {
        "draw_ids": lambda: dict(bound=3, **_seed(), mask=np.ones(N, U8), out=np.full(N, -7, I64)),
        "context_mdp_step": lambda: dict(
            next_state=np.array([[1, 2, 0], [2, 0, 1], [0, 0, 0]], I64),
            reward=table,
            terminal=np.array([0, 0, 1], U8),
            max_steps=5,
            actions=np.array([0, 2], I64),
            active=np.ones(N, U8),
            contexts=np.array([0, 1], I64),
            steps=np.array([0, 1], I64),
            rewards_out=np.full(N, -7.0, dtype),
            **_flags(),
        ),
        "tabular_mdp_step": lambda: dict(
            offsets=np.array([0, 1, 2, 3, 4], I64),
            cdf=np.ones(4),
            next_states=np.array([1, 0, 1, 0], I64),
            rewards=np.array([1.0, 2.0, 3.0, 4.0]),
            ends=np.array([0, 0, 0, 1], U8),
            n_actions=2,
            max_steps=5,
            **_seed(),
            actions=np.array([0, 1], I64),
            active=np.ones(N, U8),
            states=np.array([0, 1], I64),
            steps=np.array([0, 1], I64),
            rewards_out=np.full(N, -7.0),
            **_flags(),
        ),
        "text_env_reset": lambda: dict(
            **_prompts(),
            n_vocab=S,
            order=1,
            bos_id=0,
            prompt_ids=np.array([1, 0], I64),
            mask=np.ones(N, U8),
            contexts=np.full(N, -7, I64),
            lengths=np.full(N, -7, I64),
        ),
        "text_env_step": lambda: dict(
            n_vocab=S,
            order=1,
            eos_id=2,
            max_new_tokens=T,
            actions=np.array([0, 1], I64),
            active=np.ones(N, U8),
            contexts=np.array([0, 1], I64),
            lengths=np.array([0, 1], I64),
            tokens=np.full((N, T), -7, I64),
            **_flags(),
        ),
        "topk_topp_mask": lambda: dict(
            mask_logits=table,
            contexts=np.array([0, 2], I64),
            top_k=2,
            top_p=1.0,
            out=np.full((N, S), 7, U8),
        ),
        "text_env_rollout": lambda: dict(
            logits=table,
            mask_logits=table.copy(),
            top_k=2,
            top_p=1.0,
            **_prompts(),
            prompt_ids=np.array([1, 0], I64),
            order=1,
            bos_id=0,
            eos_id=2,
            **_seed(),
            contexts_out=np.full((N, T), -7, I64),
            actions_out=np.full((N, T), -7, I64),
            logprobs_out=np.full((N, T), -7.0, dtype),
            valid_out=np.full((N, T), 7, U8),
            lengths_out=np.full(N, -7, I64),
            **_flags(),
            final_contexts_out=np.full(N, -7, I64),
            cdf=np.zeros((S, S)),
            row_stats=np.zeros((S, 3)),
            row_built=np.zeros(S, U8),
            mask_table=np.zeros((S, S), U8),
        ),
    }[kernel.name]()
    assert tuple(values) == kernel.arg_names, kernel.name
    return values


def breakages(kernel, args):
    name = kernel.name
    if name == "draw_ids":
        yield "bound", changed(args, bound=0), Status.BAD_CONFIG
        mask = args["out"].view(U8)[:N]  # the bytes of out
        yield "mask is out", changed(args, mask=mask), Status.OVERLAPPING_ARRAYS
    elif name == "context_mdp_step":
        # every transition broken: the valid call has moved the contexts in place
        bad_next = np.full_like(args["next_state"], S)
        yield "next_state", changed(args, next_state=bad_next), Status.BAD_NEXT_STATES
        bad_reward = np.full_like(args["reward"], np.nan)
        yield "reward", changed(args, reward=bad_reward), Status.BAD_REWARDS
        yield "max_steps", changed(args, max_steps=-1), Status.BAD_CONFIG
        yield "actions", with_entry(args, "actions", 1, S), Status.BAD_ACTIONS
        yield "contexts terminal", with_entry(args, "contexts", 0, 2), Status.BAD_STATES
        yield "contexts", with_entry(args, "contexts", 0, S), Status.BAD_STATES
        yield "steps", with_entry(args, "steps", 0, -1), Status.BAD_STEPS
        short = args["reward"][:, :-1].copy()
        yield "reward narrower", changed(args, reward=short), Status.BAD_SHAPES
        yield (
            "actions is contexts",
            sharing(args, "actions", "contexts"),
            (Status.OVERLAPPING_ARRAYS),
        )
    elif name == "tabular_mdp_step":
        no_outcomes = np.zeros_like(args["offsets"])  # whatever pair a row takes
        yield "offsets", changed(args, offsets=no_outcomes), Status.BAD_OFFSETS
        yield "next_states", changed(args, next_states=np.full(4, 2, I64)), Status.BAD_NEXT_STATES
        yield "rewards", changed(args, rewards=np.full(4, np.nan)), Status.BAD_REWARDS
        yield "max_steps", changed(args, max_steps=-1), Status.BAD_CONFIG
        yield "actions", with_entry(args, "actions", 1, 2), Status.BAD_ACTIONS
        yield "states", with_entry(args, "states", 0, 2), Status.BAD_STATES
        yield "steps", with_entry(args, "steps", 0, -1), Status.BAD_STEPS
        yield "cdf short", changed(args, cdf=args["cdf"][:-1].copy()), Status.BAD_SHAPES
        yield "actions is states", sharing(args, "actions", "states"), Status.OVERLAPPING_ARRAYS
    elif name == "text_env_reset":
        yield "prompt_tokens", with_entry(args, "prompt_tokens", 0, S), Status.BAD_PROMPT_TOKENS
        yield "prompt_offsets", with_entry(args, "prompt_offsets", 1, 4), Status.BAD_OFFSETS
        yield "n_vocab", changed(args, n_vocab=0), Status.BAD_CONFIG
        yield "prompt_ids", with_entry(args, "prompt_ids", 0, 2), Status.BAD_PROMPT_IDS
        yield (
            "prompt_ids is contexts",
            sharing(args, "prompt_ids", "contexts"),
            (Status.OVERLAPPING_ARRAYS),
        )
    elif name == "text_env_step":
        yield "n_vocab", changed(args, n_vocab=0), Status.BAD_CONFIG
        yield "actions", with_entry(args, "actions", 1, S), Status.BAD_ACTIONS
        yield "contexts", with_entry(args, "contexts", 0, S), Status.BAD_STATES
        yield "lengths", with_entry(args, "lengths", 0, T), Status.BAD_LENGTHS
        yield (
            "actions is contexts",
            sharing(args, "actions", "contexts"),
            (Status.OVERLAPPING_ARRAYS),
        )
    elif name == "topk_topp_mask":
        row = int(args["contexts"][0])
        yield (
            "mask_logits",
            with_entry(args, "mask_logits", (row, 1), np.nan),
            Status.BAD_MASK_LOGITS,
        )
        yield "contexts", with_entry(args, "contexts", 1, S), Status.BAD_STATES
        yield "top_k", changed(args, top_k=-1), Status.BAD_CONFIG
        buffer = np.zeros(64, U8)  # out and the contexts in one buffer
        out, contexts = buffer[: N * S].reshape(N, S), buffer.view(I64)[:N]
        yield (
            "contexts is out",
            changed(args, out=out, contexts=contexts),
            (Status.OVERLAPPING_ARRAYS),
        )
    elif name == "text_env_rollout":
        fresh = dict(row_built=np.zeros(S, U8), mask_table=np.zeros((S, S), U8))
        first = 0  # prompt 1 = [0] after the bos padding: context 0 is visited first
        logits = args["logits"].copy()
        logits[first] = np.nan
        yield "logits", changed(args, logits=logits, top_k=0, **fresh), Status.BAD_LOGITS
        mask_logits = args["mask_logits"].copy()
        mask_logits[first] = np.nan
        yield (
            "mask_logits",
            changed(args, mask_logits=mask_logits, **fresh),
            (Status.BAD_MASK_LOGITS),
        )
        yield "prompt_tokens", with_entry(args, "prompt_tokens", 0, S), Status.BAD_PROMPT_TOKENS
        yield "prompt_offsets", with_entry(args, "prompt_offsets", 1, 4), Status.BAD_OFFSETS
        yield "prompt_ids", with_entry(args, "prompt_ids", 0, 2), Status.BAD_PROMPT_IDS
        yield "top_k", changed(args, top_k=-1), Status.BAD_CONFIG
        yield (
            "prompt_ids is lengths_out",
            sharing(args, "prompt_ids", "lengths_out"),
            (Status.OVERLAPPING_ARRAYS),
        )
